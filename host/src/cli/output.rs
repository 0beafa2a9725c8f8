//! Printing: events to stderr (a progress bar on a terminal), results to
//! stdout, errors as text or JSON, and the exit code each error maps to.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use skillbox::events::{Event, EventObserver, Level};

use super::exit;

/// Writes command output to stdout; exits quietly if stdout was closed.
pub fn emit(text: &str) {
    use std::io::Write;
    if let Err(e) = skillbox::caller::stdout().write_all(text.as_bytes()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            skillbox::caller::exit(0);
        }
        errln!("error: writing to stdout: {e}");
        skillbox::caller::exit(i32::from(exit::FAILED));
    }
}

/// The exit code for a library error.
pub fn code_of(e: &skillbox::Error) -> u8 {
    use skillbox::Error as E;
    match e {
        E::NotGranted(_) | E::Untrusted(_) | E::Locked(_) => exit::DENIED,
        E::Unreachable(_) => exit::UNREACHABLE,
        E::NotPulled(_) => exit::NOT_FOUND,
        E::Registry(_) => exit::INVALID,
        E::Manifest { .. }
        | E::Policy { .. }
        | E::Grant(_)
        | E::DigestMismatch { .. }
        | E::Unpinned { .. }
        | E::Component { .. }
        | E::Config(_)
        | E::Input(_) => exit::INVALID,
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => exit::NOT_FOUND,
        E::Store(
            skillbox::store::StoreError::NotFound(_) | skillbox::store::StoreError::Missing(_),
        ) => exit::NOT_FOUND,
        _ => exit::FAILED,
    }
}

/// Prints an error (as `{"error": …}` on stdout with `--json`) and returns
/// its exit code.
pub fn report_error(e: &skillbox::Error, json: bool) -> u8 {
    print_error(&e.to_string(), code_of(e), json)
}

/// Prints `message` as an error (JSON on stdout with `--json`, text on
/// stderr otherwise) and returns `code`.
pub fn print_error(message: &str, code: u8, json: bool) -> u8 {
    if json {
        outln!(
            "{}",
            serde_json::json!({ "error": { "exit_code": code, "message": message } })
        );
    } else {
        errln!("error: {message}");
    }
    code
}

/// Where a progress bar on `stderr` draws: this process's stderr, or a
/// handed-off run's caller's terminal.
fn draw_target(stderr: &skillbox::caller::Handle) -> indicatif::ProgressDrawTarget {
    if skillbox::caller::current().is_none() {
        return indicatif::ProgressDrawTarget::stderr();
    }
    let dup = |h: &skillbox::caller::Handle| h.try_clone().map(std::fs::File::from);
    match (dup(&skillbox::caller::stdin()), dup(stderr)) {
        (Ok(input), Ok(output)) => {
            indicatif::ProgressDrawTarget::term(console::Term::read_write_pair(input, output), 20)
        }
        _ => indicatif::ProgressDrawTarget::hidden(),
    }
}

/// Shows a run's events on stderr.
pub struct Console {
    bar: Option<ProgressBar>,
    verbose: bool,
    quiet: bool,
    partial_line: Mutex<bool>,
}

impl Console {
    /// A console; a progress bar only when stderr is a terminal.
    pub fn new(verbose: bool, quiet: bool) -> Console {
        let stderr = skillbox::caller::stderr();
        let bar = (stderr.is_terminal() && !quiet).then(|| {
            let b = ProgressBar::with_draw_target(Some(1000), draw_target(&stderr));
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {percent:>3}% {msg}",
                )
                .expect("valid template"),
            );
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        Console {
            bar,
            verbose,
            quiet,
            partial_line: Mutex::new(false),
        }
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => errln!("{s}"),
        }
    }

    /// Removes the progress bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl EventObserver for Console {
    fn event(&self, event: Event) {
        if self.quiet {
            return;
        }
        match event {
            Event::Progress { fraction, message } => match &self.bar {
                Some(b) => {
                    if let Some(f) = fraction {
                        b.set_position((f * 1000.0) as u64);
                    }
                    b.set_message(message);
                }
                None => match fraction {
                    Some(f) => errln!("[{:>3.0}%] {message}", f * 100.0),
                    None => errln!("[ ... ] {message}"),
                },
            },
            Event::Log { level, message } if level >= Level::Info || self.verbose => {
                let tag = format!("{level:?}").to_lowercase();
                self.line(&format!("{tag:>5}: {message}"));
            }
            Event::Output { stream: _, text } => {
                let mut partial = self.partial_line.lock().unwrap_or_else(|e| e.into_inner());
                match &self.bar {
                    Some(b) => b.suspend(|| err!("{text}")),
                    None => err!("{text}"),
                }
                *partial = !text.ends_with('\n');
            }
            Event::Audit {
                capability,
                detail,
                allowed,
                reason,
            } => {
                if !allowed {
                    self.line(&format!(" deny: [{capability}] {detail}: {reason}"));
                } else if self.verbose {
                    self.line(&format!("allow: [{capability}] {detail}: {reason}"));
                }
            }
            Event::Truncated { stream, cap } => {
                self.line(&format!(
                    " warn: {stream} reached its cap of {cap} bytes; the rest was dropped"
                ));
            }
            _ => {}
        }
    }
}
