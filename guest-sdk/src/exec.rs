//! Run host programs on the skill's behalf.
//!
//! There is no shell: the program and every argument must match an `[exec]`
//! allow rule in the skill's `skill.toml`, as granted by the operator, or the
//! call fails with [`Error::Denied`] naming the rule.
//!
//! Arguments are passed to the program verbatim; they are **not** translated
//! from guest paths to host paths. Only the working directory is: set
//! [`Command::cwd`] to a guest path inside a granted directory and pass paths
//! relative to it.
//!
//! ```no_run
//! use std::time::Duration;
//! use skillbox_sdk::exec::Command;
//!
//! # fn main() -> skillbox_sdk::Result<()> {
//! let out = Command::new("du")
//!     .args(["-k", "-d", "1", "."])
//!     .cwd("/data")
//!     .timeout(Duration::from_secs(10))
//!     .output()?;
//! if out.success() {
//!     for line in out.stdout_str().lines() {
//!         skillbox_sdk::info!("{line}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::__private::skillbox::skill::exec as wit;

/// A program to run, built up like [`std::process::Command`].
///
/// Builder methods take and return `self`, so a command can be built in one
/// expression and stored, or rebuilt step by step with `cmd = cmd.arg(..)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a Command does nothing until `.output()` is called"]
pub struct Command {
    program: String,
    args: Vec<String>,
    cwd: Option<String>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

impl Command {
    /// A command running `program`: a bare name (resolved against the host's
    /// fixed search path) or an absolute host path.
    pub fn new(program: impl Into<String>) -> Self {
        Command {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            stdin: None,
            timeout: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several arguments.
    pub fn args<I>(mut self, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the working directory, as a guest path inside a granted
    /// directory (for example `/data/logs`). Defaults to the first granted
    /// directory, or `/` when there is none.
    pub fn cwd(mut self, guest_path: impl Into<String>) -> Self {
        self.cwd = Some(guest_path.into());
        self
    }

    /// Adds an environment variable for the program. The name must be
    /// granted to the skill in `[env]`.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Bytes to feed the program on stdin (by default it gets none).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// A per-call timeout (millisecond resolution), capped by the host's own
    /// limit. When it expires the program's whole process group is killed
    /// and [`output`](Command::output) returns [`Error::TimedOut`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Runs the program to completion and collects its output.
    ///
    /// A program that runs and exits non-zero is still `Ok`: check
    /// [`Output::success`].
    pub fn output(&self) -> Result<Output, Error> {
        let cmd = wit::Command {
            program: self.program.clone(),
            args: self.args.clone(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            stdin: self.stdin.clone(),
            timeout_ms: self
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        match wit::run(&cmd) {
            Ok(out) => Ok(Output {
                status: out.status,
                stdout: out.stdout,
                stderr: out.stderr,
                truncated: out.truncated,
            }),
            Err(wit::ExecError::Denied(reason)) => Err(Error::Denied(reason)),
            Err(wit::ExecError::NotFound(reason)) => Err(Error::NotFound(reason)),
            Err(wit::ExecError::TimedOut) => Err(Error::TimedOut),
            Err(wit::ExecError::Failed(reason)) => Err(Error::Failed(reason)),
        }
    }
}

/// What a finished program produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit status; `-1` when the process was killed by a signal.
    pub status: i32,
    /// Everything written to stdout (up to the host's cap).
    pub stdout: Vec<u8>,
    /// Everything written to stderr (up to the host's cap).
    pub stderr: Vec<u8>,
    /// True when stdout or stderr was cut at the host's cap.
    pub truncated: bool,
}

impl Output {
    /// True when the program exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Stdout as text, with invalid UTF-8 replaced by `U+FFFD`.
    pub fn stdout_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// Stderr as text, with invalid UTF-8 replaced by `U+FFFD`.
    pub fn stderr_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }
}

/// Why a program could not be run to completion.
///
/// Converts into [`crate::Error`] with `?`: `Denied` becomes
/// [`ErrorKind::Denied`](crate::ErrorKind::Denied), the rest
/// [`ErrorKind::Failed`](crate::ErrorKind::Failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The policy refused the call; the text names the rule.
    Denied(String),
    /// The program does not exist on the host.
    NotFound(String),
    /// The call ran past its timeout; its whole process group was killed.
    TimedOut,
    /// The host could not run the program.
    Failed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Denied(reason) => write!(f, "exec denied: {reason}"),
            Error::NotFound(reason) => write!(f, "exec program not found: {reason}"),
            Error::TimedOut => f.write_str("exec timed out"),
            Error::Failed(reason) => write!(f, "exec failed: {reason}"),
        }
    }
}

impl std::error::Error for Error {}
