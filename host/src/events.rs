//! What a running skill reports as it goes: progress, logs, output, audit.
//!
//! The host hands every event to an [`EventObserver`]; the CLI prints them, a
//! task store persists them, an embedder does what it likes.

use serde::{Deserialize, Serialize};

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Very verbose.
    Trace,
    /// Verbose.
    Debug,
    /// Normal.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    /// The level's name, as logs show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One event of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Event {
    /// The skill reported progress.
    Progress {
        /// 0.0..=1.0 when known.
        fraction: Option<f32>,
        /// What it is doing.
        message: String,
    },
    /// The skill logged a line.
    Log {
        /// Severity.
        level: Level,
        /// The line.
        message: String,
    },
    /// Bytes the guest wrote to its stdout or stderr (a command
    /// component's stdout is its summary and is not streamed).
    Output {
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// Lossy UTF-8 text.
        text: String,
    },
    /// A capability call, allowed or refused: the audit trail.
    Audit {
        /// `exec`, `fs`, `net`, …
        capability: &'static str,
        /// What was asked.
        detail: String,
        /// Whether it was allowed.
        allowed: bool,
        /// The rule or reason.
        reason: String,
    },
    /// A byte stream reached its cap; later bytes were dropped.
    Truncated {
        /// `stdout`, `stderr` or `log`.
        stream: &'static str,
        /// The cap in bytes.
        cap: usize,
    },
}

/// A store whose host functions report to its run's [`EventObserver`]. Host
/// code that is generic over the store asks through this, never naming the
/// runtime's store type.
pub(crate) trait HasEvents {
    /// The run's observer.
    fn events(&self) -> &dyn EventObserver;
}

/// Receives the events of a run. Must be cheap: it is called from the run's
/// task.
pub trait EventObserver: Send + Sync {
    /// Handles one event.
    fn event(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync> EventObserver for F {
    fn event(&self, event: Event) {
        self(event)
    }
}

/// Discards everything.
pub struct Discard;

impl EventObserver for Discard {
    fn event(&self, _: Event) {}
}
