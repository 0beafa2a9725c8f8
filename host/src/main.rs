//! The `skillbox` command line: a thin layer over the `skillbox` library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
