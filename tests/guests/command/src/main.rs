//! `wasi-command`: a plain `wasi:cli/command` program, without the skillbox
//! SDK, for testing how the host runs ordinary WASI binaries.
//!
//! * prints `hello from a wasi command` followed by its arguments (excluding
//!   argv\[0\]), space-separated, on one line;
//! * if stdin has data, prints `stdin: <data>`;
//! * `exit CODE` exits with status `CODE`;
//! * `read PATH` prints the content of the file at `PATH` (to exercise
//!   preopened directories), failing with status 1 when it cannot.

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        println!("hello from a wasi command");
    } else {
        println!("hello from a wasi command {}", args.join(" "));
    }

    let mut stdin = String::new();
    if std::io::stdin().read_to_string(&mut stdin).is_ok() && !stdin.is_empty() {
        println!("stdin: {stdin}");
    }

    match args.first().map(String::as_str) {
        Some("exit") => {
            let code = args.get(1).and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
            std::process::exit(code);
        }
        Some("read") => {
            let Some(path) = args.get(1) else {
                eprintln!("usage: read PATH");
                return ExitCode::from(2);
            };
            match std::fs::read_to_string(path) {
                Ok(content) => print!("{content}"),
                Err(e) => {
                    eprintln!("cannot read {path}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => {}
    }
    ExitCode::SUCCESS
}
