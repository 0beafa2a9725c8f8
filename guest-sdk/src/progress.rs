//! Progress reports and leveled log lines.
//!
//! Both are streamed to the operator as the skill runs and, for background
//! tasks, stored as events. They are cheap, but every call crosses into the
//! host, so report progress per unit of work rather than per byte.
//!
//! ```no_run
//! use skillbox_sdk::progress::{self, Level};
//!
//! let files = ["a", "b", "c", "d"];
//! for (i, file) in files.iter().enumerate() {
//!     progress::report(i as f32 / files.len() as f32, format!("scanning {file}"));
//! }
//! progress::report(None, "finishing up"); // fraction unknown
//! progress::log(Level::Info, "scan complete");
//! skillbox_sdk::info!("scanned {} files", files.len());
//! ```

use crate::__private::skillbox::skill::progress as wit;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics for the skill's author.
    Debug,
    /// Normal operational messages.
    Info,
    /// Something unexpected that the skill worked around.
    Warn,
    /// Something went wrong.
    Error,
}

impl From<Level> for wit::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        }
    }
}

/// Reports progress: `fraction` is how much of the work is done, in
/// `0.0..=1.0` (clamped; `NaN` counts as unknown), or `None` when unknown.
///
/// Accepts a bare `f32` or an `Option<f32>`.
pub fn report(fraction: impl Into<Option<f32>>, message: impl AsRef<str>) {
    let fraction = fraction
        .into()
        .filter(|f| !f.is_nan())
        .map(|f| f.clamp(0.0, 1.0));
    wit::report(fraction, message.as_ref());
}

/// Emits one log line at `level`. See also the [`trace!`](crate::trace),
/// [`debug!`](crate::debug), [`info!`](crate::info), [`warn!`](crate::warn)
/// and [`error!`](crate::error) macros.
pub fn log(level: Level, message: impl AsRef<str>) {
    wit::log(level.into(), message.as_ref());
}

/// Logs a `format!`-style message at [`Level::Trace`].
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => {
        $crate::progress::log($crate::progress::Level::Trace, ::std::format!($($arg)+))
    };
}

/// Logs a `format!`-style message at [`Level::Debug`].
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::progress::log($crate::progress::Level::Debug, ::std::format!($($arg)+))
    };
}

/// Logs a `format!`-style message at [`Level::Info`].
///
/// ```no_run
/// let name = "world";
/// skillbox_sdk::info!("greeting {name}");
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::progress::log($crate::progress::Level::Info, ::std::format!($($arg)+))
    };
}

/// Logs a `format!`-style message at [`Level::Warn`].
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::progress::log($crate::progress::Level::Warn, ::std::format!($($arg)+))
    };
}

/// Logs a `format!`-style message at [`Level::Error`].
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::progress::log($crate::progress::Level::Error, ::std::format!($($arg)+))
    };
}
