//! `wasi-command`: a plain `wasi:cli/command` program, without the skillbox
//! SDK, for testing how the host runs ordinary WASI binaries.
//!
//! * prints `hello from a wasi command` followed by its arguments (excluding
//!   argv\[0\]), space-separated, on one line;
//! * if stdin has data, prints `stdin: <data>`;
//! * `exit CODE` exits with status `CODE` (through `wasi:cli/exit.exit-with-code`,
//!   so codes other than 0 and 1 survive);
//! * `read PATH` prints the content of the file at `PATH` (to exercise
//!   preopened directories), failing with status 1 when it cannot;
//! * `spin` prints `spinning` and then never ends (until it is stopped).

use std::io::Read;
use std::process::ExitCode;

// `std::process::exit` on wasm32-wasip2 can only report success or failure
// (`wasi:cli/exit.exit` takes a `result`), so any non-zero code arrives as 1.
// `exit-with-code` (WASI 0.2.12) carries the real code; std does not use it
// yet, so import it directly.
wit_bindgen::generate!({
    inline: r#"
        package wasi:cli@0.2.12;

        interface exit {
            exit: func(status: result);
            exit-with-code: func(status-code: u8);
        }

        world exit-code {
            import exit;
        }
    "#,
});

/// Exits the instance with `code` reported as is (truncated to 8 bits).
fn exit_with_code(code: i32) -> ! {
    std::io::Write::flush(&mut std::io::stdout()).ok();
    wasi::cli::exit::exit_with_code(code as u8);
    // `exit-with-code` does not return; should a host implement it as a
    // no-op, fall back to success/failure.
    std::process::exit(code)
}

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
            exit_with_code(code);
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
        Some("spin") => {
            println!("spinning");
            std::io::Write::flush(&mut std::io::stdout()).ok();
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        _ => {}
    }
    ExitCode::SUCCESS
}
