//! `skillbox run` on a thread of a daemon's run server, for a front end
//! in another process (see `skillbox::handoff`): the same command line
//! code as a run in its own process, with the caller's environment,
//! streams, working directory and umask.

use std::ffi::OsString;
use std::sync::OnceLock;

use clap::{CommandFactory, FromArgMatches};
use skillbox::handoff::{Ended, Handed};

use super::run::RunArgs;
use super::{Cli, exit};

/// The `run` subcommand of the command line, built once: building the
/// whole command line anew for each run took a third of a handed-off
/// run's time in the server.
fn run_command() -> &'static clap::Command {
    static RUN: OnceLock<clap::Command> = OnceLock::new();
    RUN.get_or_init(|| {
        let mut cli = Cli::command();
        // Names it `skillbox run` in usage and errors, as a full parse does.
        cli.build();
        cli.find_subcommand("run")
            .cloned()
            .expect("the command line has `run`")
    })
}

/// A flag of `run` that defaults to an environment variable.
struct EnvFlag {
    id: String,
    long: String,
    var: String,
}

fn env_flags() -> &'static [EnvFlag] {
    static FLAGS: OnceLock<Vec<EnvFlag>> = OnceLock::new();
    FLAGS.get_or_init(|| {
        run_command()
            .get_arguments()
            .filter_map(|a| {
                Some(EnvFlag {
                    id: a.get_id().to_string(),
                    long: a.get_long()?.to_string(),
                    var: a.get_env()?.to_str()?.to_string(),
                })
            })
            .collect()
    })
}

/// Prepares this process (a run server, still single-threaded) to parse
/// callers' command lines: clap reads the variables of [`env_flags`] from
/// this process's environment, so they are taken out of it; each caller's
/// own values are passed as flags instead ([`parse`]).
pub(super) fn prepare_process() {
    for flag in env_flags() {
        // SAFETY: called before the run server starts any thread.
        unsafe { std::env::remove_var(&flag.var) };
    }
}

/// `run`'s arguments from a command line `skillbox run …`, with the
/// caller's environment where the flags of [`env_flags`] are not given.
/// Those values go in as flags, in a second parse: had they been in the
/// first, an error's usage line would show them, as a parse with the
/// variables set in the environment does not.
fn parse(args: &[OsString]) -> Result<RunArgs, clap::Error> {
    let matches = run_command()
        .clone()
        .try_get_matches_from(args.iter().skip(1))?;
    let mut from_env: Vec<OsString> = Vec::new();
    for flag in env_flags() {
        if matches.value_source(&flag.id) == Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        if let Some(value) = skillbox::caller::var_set(&flag.var) {
            let mut given = OsString::from(format!("--{}=", flag.long));
            given.push(value);
            from_env.push(given);
        }
    }
    if from_env.is_empty() {
        return RunArgs::from_arg_matches(&matches);
    }
    let with_env = args
        .iter()
        .skip(1)
        .take(1)
        .cloned()
        .chain(from_env)
        .chain(args.iter().skip(2).cloned());
    RunArgs::from_arg_matches(&run_command().clone().try_get_matches_from(with_env)?)
}

/// The log lines of runs for callers, by filter and colour: one
/// subscriber for all the runs that ask for the same (it writes to
/// whichever caller the thread works for).
fn logs(filter: &str, ansi: bool) -> tracing::Dispatch {
    type Kept = Vec<((String, bool), tracing::Dispatch)>;
    static KEPT: std::sync::Mutex<Kept> = std::sync::Mutex::new(Vec::new());
    let key = (filter.to_string(), ansi);
    let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, d)) = kept.iter().find(|(k, _)| *k == key) {
        return d.clone();
    }
    let parsed = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let dispatch = skillbox::telemetry::logs_for_caller(parsed, ansi);
    if kept.len() >= 16 {
        kept.clear();
    }
    kept.push((key, dispatch.clone()));
    dispatch
}

/// Runs a handed-off `skillbox run` on this thread, which has entered its
/// caller; how it ended.
pub(super) fn run(handed: Handed) -> Ended {
    let args = match parse(&handed.args) {
        Ok(args) => args,
        Err(e) => {
            let stream = if e.use_stderr() {
                skillbox::caller::stderr()
            } else {
                skillbox::caller::stdout()
            };
            let text = if stream.is_terminal() {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            if e.use_stderr() {
                err!("{text}");
            } else {
                out!("{text}");
            }
            return Ended::Exited(e.exit_code());
        }
    };
    if let Err(e) = skillbox::profile::load() {
        errln!("error: {e}");
        return Ended::Exited(i32::from(exit::INVALID));
    }
    let filter = skillbox::caller::var("SKILLBOX_LOG").unwrap_or_else(|_| "warn".into());
    let logs = logs(&filter, super::colour());
    let _logs = tracing::dispatcher::set_default(&logs);
    let caller = handed.caller.clone();
    // A runtime of the run's own: its threads (for blocking work) are
    // started from this one, so they share its working directory and
    // umask, and each enters the caller.
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(move || {
            std::mem::forget(skillbox::caller::enter(caller.clone()));
            std::mem::forget(tracing::dispatcher::set_default(&logs));
        })
        .build();
    let runtime = match built {
        Ok(r) => r,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return Ended::Exited(i32::from(exit::FAILED));
        }
    };
    let ended = runtime.block_on(async {
        tokio::select! {
            code = super::run::run(args) => Ended::Exited(i32::from(code)),
            ended = handed.interrupted() => ended,
        }
    });
    // A thread still blocked in the host (a system call on a file system
    // that hangs) is left behind rather than waited for: the run has
    // ended, and its caller's streams are let go of all the same.
    runtime.shutdown_background();
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_callers_variables_fill_in_the_flags_the_command_line_does_not_give() {
        assert!(
            env_flags()
                .iter()
                .any(|f| f.long == "config" && f.var == "SKILLBOX_CONFIG"),
            "run's flags with a variable are found"
        );
        let null = || std::os::fd::OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let caller = std::sync::Arc::new(skillbox::caller::Caller::new(
            &[
                b"SKILLBOX_CONFIG=/c.toml".to_vec(),
                b"SKILLBOX_CACHE_DIR=/cache".to_vec(),
                b"SKILLBOX_KEYS=".to_vec(),
            ],
            [null(), null(), null()],
            0o022,
        ));
        let _in = skillbox::caller::enter(caller);
        let parsed = parse(&words(&["skillbox", "run", "--cache-dir=/mine", "x.wasm"])).unwrap();
        let path = |p: &str| Some(std::path::PathBuf::from(p));
        assert_eq!(parsed.config, path("/c.toml"));
        assert_eq!(parsed.cache_dir, path("/mine"));
        assert_eq!(parsed.keys_dir, None, "an empty variable is unset");
        let usage = parse(&words(&["skillbox", "run", "--no-such-flag", "x.wasm"]))
            .err()
            .unwrap()
            .render()
            .to_string();
        assert!(
            usage.contains("Usage: skillbox run [OPTIONS] <SKILL>"),
            "{usage}"
        );
    }
}
