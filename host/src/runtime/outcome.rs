//! How a run ends: the outcome and report of one run, from what the guest
//! returned or how it trapped.

use std::collections::BTreeMap;

use serde::Serialize;
use wasmtime::Trap;

use super::SkillKind;
use crate::bindings::skillbox::skill::types::{Failure, Summary};
use crate::caps::limits::Limit;
use crate::caps::sandbox::SandboxStatus;
use crate::engine::CacheOutcome;

/// Why a run did not succeed in the skill's own terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The skill could not do its work.
    Failed,
    /// The sandbox refused something the skill needed.
    Denied,
    /// The input did not parse or did not make sense.
    InvalidInput,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// The skill returned a summary.
    Succeeded {
        /// Markdown for the parent session.
        text: String,
        /// Structured result.
        data: serde_json::Value,
    },
    /// The skill returned a failure (or a command exited non-zero).
    Failed {
        /// Failed, denied or invalid input.
        kind: FailureKind,
        /// The reason.
        message: String,
        /// Structured detail.
        data: Option<serde_json::Value>,
    },
    /// The run hit its wall-clock limit and was stopped.
    TimedOut {
        /// The limit, in milliseconds.
        limit_ms: u64,
    },
    /// A resource limit stopped the run.
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// What happened.
        message: String,
    },
    /// The guest trapped (a panic, an invalid operation).
    Crashed {
        /// The trap, and the guest's last stderr line when there is one.
        message: String,
    },
    /// The run was stopped on request.
    Cancelled,
}

impl Outcome {
    /// This outcome with every text `r` hides replaced.
    pub fn redacted(self, r: &crate::secrets::Redactor) -> Outcome {
        if r.is_empty() {
            return self;
        }
        match self {
            Outcome::Succeeded { text, data } => Outcome::Succeeded {
                text: r.text(&text),
                data: r.json(&data),
            },
            Outcome::Failed {
                kind,
                message,
                data,
            } => Outcome::Failed {
                kind,
                message: r.text(&message),
                data: data.map(|d| r.json(&d)),
            },
            Outcome::LimitExceeded { limit, message } => Outcome::LimitExceeded {
                limit,
                message: r.text(&message),
            },
            Outcome::Crashed { message } => Outcome::Crashed {
                message: r.text(&message),
            },
            other => other,
        }
    }
}

/// Everything about one finished run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The skill's name.
    pub skill: String,
    /// The component's sha256.
    pub digest: String,
    /// Skill or command.
    pub kind: SkillKind,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Wall-clock time of the run, in milliseconds.
    pub duration_ms: u64,
    /// Whether the compiled component came from the cache.
    pub cache: CacheOutcome,
    /// How the run's exec'd programs were confined; `None` when it
    /// started none.
    pub sandbox: Option<SandboxStatus>,
    /// The guest's stdout (capped; for a command this is also the summary).
    pub stdout: String,
    /// The guest's stderr (capped).
    pub stderr: String,
    /// Whether stdout or stderr hit the output cap.
    pub output_truncated: bool,
    /// Checkpoints as the run left them.
    #[serde(skip)]
    pub checkpoints: BTreeMap<String, Vec<u8>>,
}

/// What the guest's entry point returned.
pub(super) enum CallResult {
    /// A skill's `run`.
    Skill(Result<Summary, Failure>),
    /// A command's exit status.
    Exit(i32),
}

pub(super) fn parse_data(text: &str) -> Result<serde_json::Value, String> {
    if text.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(text)
        .map_err(|e| format!("the skill returned summary data that is not JSON: {e}"))
}

/// The guest's explanation of a trap: a Rust panic's location and message,
/// or else its last meaningful stderr line.
fn last_words(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(i) = lines.iter().rposition(|l| l.contains("panicked at")) {
        return lines[i..]
            .iter()
            .take(2)
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
    }
    lines
        .iter()
        .rev()
        .find(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
        .map(|l| l.to_string())
        .unwrap_or_default()
}

pub(super) fn classify_trap(
    e: &wasmtime::Error,
    limit: Option<(Limit, String)>,
    stderr: &str,
    timed_out: Outcome,
) -> Outcome {
    if let Some((limit, message)) = limit {
        return Outcome::LimitExceeded { limit, message };
    }
    let last_line = last_words(stderr);
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => timed_out,
        Some(Trap::OutOfFuel) => Outcome::LimitExceeded {
            limit: Limit::Fuel,
            message: "fuel exhausted (raise it with --fuel)".into(),
        },
        Some(Trap::StackOverflow) => Outcome::LimitExceeded {
            limit: Limit::Stack,
            message: "stack overflow: the guest recursed too deeply; it was stopped cleanly".into(),
        },
        Some(trap) => Outcome::Crashed {
            message: if last_line.is_empty() {
                format!("the guest trapped: {trap}")
            } else {
                format!("the guest trapped: {trap}; its last words: {last_line}")
            },
        },
        None => Outcome::Crashed {
            message: format!("{e:#}"),
        },
    }
}
