//! `skillbox` subcommands. Each is a few lines over a public library call.

/// `println!` for command output: a closed stdout (`skillbox … | head`) ends
/// the process quietly instead of panicking. SIGPIPE stays ignored, because
/// the host writes to the stdin pipes of programs that may exit early.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}

macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::emit(&format!($($arg)*))
    };
}

/// `eprintln!` to the standard error of the process the command runs for
/// (see `skillbox::caller`): this one's, or a handed-off run's caller's.
macro_rules! errln {
    ($($arg:tt)*) => {
        skillbox::caller::eprint(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!`, as [`errln!`].
macro_rules! err {
    ($($arg:tt)*) => {
        skillbox::caller::eprint(&format!($($arg)*))
    };
}

mod approve;
mod audit;
mod build;
mod bundled_sdk;
mod distribute;
mod docs;
mod grants;
mod handed;
mod inspect;
mod installed;
mod keys;
mod listing;
mod mcp;
mod new;
mod output;
mod run;
mod schedule;
mod serve;
mod show;
mod tasks;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes, distinct per kind of outcome so scripts can branch on them.
pub mod exit {
    /// The skill succeeded.
    pub const OK: u8 = 0;
    /// The skill or task failed, crashed or was cancelled, or the command
    /// could not do what it was asked.
    pub const FAILED: u8 = 1;
    /// Bad command-line usage (clap exits with it itself).
    #[expect(dead_code, reason = "documented here; clap uses the same value")]
    pub const USAGE: u8 = 2;
    /// Refused by policy: ungranted capabilities, or the skill reported a denial.
    pub const DENIED: u8 = 3;
    /// Invalid input: manifest, policy, component, digest, configuration or
    /// JSON input.
    pub const INVALID: u8 = 4;
    /// The run hit its wall-clock limit.
    pub const TIMED_OUT: u8 = 5;
    /// A resource limit stopped the run (memory, fuel, stack, output).
    pub const LIMIT: u8 = 6;
    /// No such task, skill, file or directory.
    pub const NOT_FOUND: u8 = 7;
    /// No daemon answers at the address, or it went away and did not come
    /// back in time.
    pub const UNREACHABLE: u8 = 8;
}

const EXIT_CODES: &str = "\
Exit codes:
  0  succeeded
  1  the skill or task failed, crashed or was cancelled; or the command
     could not do what it was asked (e.g. `tasks rm` of a running task)
  2  usage error
  3  denied: a requested capability was not granted, or the skill hit a denial
  4  invalid: manifest, policy, component, digest, configuration or input
  5  timed out
  6  a resource limit stopped the run (memory, fuel, stack, output)
  7  not found: no such task, skill, file or directory
  8  no daemon answers (not started, or gone and not back within --reconnect)";

/// Run untrusted agent skills as sandboxed WebAssembly components.
///
/// A skill can touch only what it was granted: directories (--allow-read,
/// --allow-write), host programs (--allow-exec), environment variables
/// (--allow-env), network endpoints (--allow-net), within memory, time and
/// output limits. Everything else is refused with an error naming the rule.
#[derive(Parser)]
#[command(name = "skillbox", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(run::RunArgs),
    Inspect(inspect::InspectArgs),
    Build(build::BuildArgs),
    New(new::NewArgs),
    Serve(serve::ServeArgs),
    Worker(serve::WorkerArgs),
    Spawn(tasks::SpawnArgs),
    Tasks(tasks::TasksArgs),
    Schedule(schedule::ScheduleArgs),
    Audit(audit::AuditArgs),
    Mcp(mcp::McpArgs),
    Keys(keys::KeysArgs),
    Sign(keys::SignArgs),
    Push(distribute::PushArgs),
    Pull(distribute::PullArgs),
    Completions(docs::CompletionsArgs),
    Man(docs::ManArgs),
    #[command(hide = true)]
    RunServer(serve::RunServerArgs),
}

/// Whether stderr gets colours: only on a terminal, and never with
/// `NO_COLOR` set (<https://no-color.org>).
fn colour() -> bool {
    skillbox::caller::stderr().is_terminal() && skillbox::caller::var_set("NO_COLOR").is_none()
}

/// Parses arguments, runs the command, maps the result to an exit code.
pub fn main() -> ExitCode {
    ExitCode::from(main_with(std::env::args_os().collect()))
}

/// [`main`] for these arguments.
fn main_with(args: Vec<std::ffi::OsString>) -> u8 {
    let cli = Cli::parse_from(args);
    if let Err(e) = skillbox::profile::load() {
        errln!("error: {e}");
        return exit::INVALID;
    }
    // Before any thread exists: the run server changes its environment.
    if let Command::RunServer(a) = &cli.command {
        return serve::run_server(a, handed::run);
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let runtime = match built {
        Ok(r) => r,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return exit::FAILED;
        }
    };
    let log = tracing_subscriber::EnvFilter::try_from_env("SKILLBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Traces are the daemon's and the workers': a short command does not
    // wait for a collector on its way out.
    let traces = matches!(cli.command, Command::Serve(_) | Command::Worker(_));
    let handle = runtime.handle().clone();
    let telemetry = match skillbox::telemetry::Telemetry::init(log, colour(), handle, traces) {
        Ok(t) => t,
        Err(e) => {
            errln!("error: {e}");
            return exit::INVALID;
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Run(a) => run::run(a).await,
            Command::Inspect(a) => inspect::inspect(a),
            Command::Build(a) => build::build(a),
            Command::New(a) => new::new(a),
            Command::Serve(a) => serve::serve(a).await,
            Command::Worker(a) => serve::worker(a).await,
            Command::Spawn(a) => tasks::spawn(a).await,
            Command::Tasks(a) => tasks::tasks(a).await,
            Command::Schedule(a) => schedule::schedule(a).await,
            Command::Audit(a) => audit::audit(a).await,
            Command::Mcp(a) => mcp::mcp(a).await,
            Command::Keys(a) => keys::keys(a),
            Command::Sign(a) => keys::sign(a),
            Command::Push(a) => distribute::push(a).await,
            Command::Pull(a) => distribute::pull(a).await,
            Command::Completions(a) => docs::completions(a),
            Command::Man(a) => docs::man(a),
            Command::RunServer(_) => unreachable!("handled before the runtime starts"),
        }
    });
    telemetry.shutdown();
    // A thread still blocked in the host (a system call on a file system
    // that hangs, past the run's timeout, which has already been reported)
    // must not keep the process alive: dropping the runtime would wait for
    // it without end.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}
