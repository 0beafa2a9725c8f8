//! What a task is: identity, what it runs, where it stands.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::events::Level;
use crate::policy::{EffectivePolicy, ResumePolicy};

pub use crate::units::TaskId;
use crate::units::string_enum;

string_enum!(
    /// Where a task stands.
    TaskState {
        /// Waiting for a worker.
        Queued = "queued",
        /// A host is running it (and holds its lease).
        Running = "running",
        /// A host is running it, and it waits for the operator's decision
        /// on a call it asked approval for (the host holds its lease).
        AwaitingApproval = "awaiting_approval",
        /// Finished with a summary.
        Succeeded = "succeeded",
        /// Finished with an error.
        Failed = "failed",
        /// Stopped at its time limit.
        TimedOut = "timed_out",
        /// Stopped on request.
        Cancelled = "cancelled",
        /// Its host died while running it; it will be resumed or failed.
        Interrupted = "interrupted",
    }
);

impl TaskState {
    /// Whether the task is over for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::TimedOut | TaskState::Cancelled
        )
    }

    /// Whether a host holds the task's lease in this state.
    pub fn is_held(self) -> bool {
        matches!(self, TaskState::Running | TaskState::AwaitingApproval)
    }
}

string_enum!(
    /// Which state changes reach the parent session.
    NotifyMode {
        /// Only the final summary.
        DoneOnly = "done-only",
        /// The final summary of a task that did not succeed (failed,
        /// timed out, cancelled), and requests for approval.
        FailuresOnly = "failures-only",
        /// Every state change.
        StateChanges = "state-changes",
        /// Nothing.
        Silent = "silent",
    }
);

string_enum!(
    /// What happens to the task's scratch directory when it ends.
    CleanupMode {
        /// Keep it for inspection.
        Keep = "keep",
        /// Delete it.
        Delete = "delete",
    }
);

/// The messaging route of the conversation that spawned a task (an
/// OpenClaw delivery context: the channel, the recipient on it, and which
/// of the channel's accounts), so a sink can answer in that conversation
/// and not only in its session's transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentRoute {
    /// The channel, e.g. `telegram`.
    pub channel: String,
    /// The recipient on that channel (a chat, a user, a room).
    pub to: String,
    /// Which of the channel's configured accounts sends the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// Everything needed to run a task, fixed when it is spawned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Where the skill was found (directory, manifest or component path).
    pub skill: String,
    /// The skill's name.
    pub skill_name: String,
    /// The component's sha256: a task never runs another component.
    pub digest: String,
    /// JSON input.
    pub input: String,
    /// The effective policy, fixed at spawn time.
    pub policy: EffectivePolicy,
    /// Free-form label for humans and filters.
    pub label: Option<String>,
    /// The agent session that asked for it, where the result goes.
    pub parent_session: Option<String>,
    /// Where, in the parent session's messaging channel, the reply goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_route: Option<ParentRoute>,
    /// Wall-clock limit of one attempt.
    pub timeout: Duration,
    /// Scratch directory handling.
    pub cleanup: CleanupMode,
    /// Notification handling.
    pub notify: NotifyMode,
    /// The relay sinks its notifications go to, by name.
    #[serde(default)]
    pub notify_to: Vec<String>,
    /// Handling after a host crash.
    pub resume: ResumePolicy,
    /// Where the host makes this task's scratch directory: `<scratch>/<id>`,
    /// mounted read-write at [`SCRATCH_GUEST`] in the guest. `None` when
    /// the host keeps no scratch directories.
    #[serde(default)]
    pub scratch: Option<std::path::PathBuf>,
    /// The schedule that created it, and for which slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<super::schedule::ScheduleLink>,
    /// The W3C `traceparent` of the span of its spawn, when traces are
    /// exported: every later span of the task (claim, run, end, deliveries,
    /// on whichever host) continues that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// Where a task's scratch directory appears in the guest.
pub const SCRATCH_GUEST: &str = "/scratch";

impl Task {
    /// The task's scratch directory on the host, if it has one.
    pub fn scratch_dir(&self) -> Option<std::path::PathBuf> {
        self.spec
            .scratch
            .as_ref()
            .map(|root| root.join(self.id.to_string()))
    }
}

/// A task as the store knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// What it runs.
    pub spec: TaskSpec,
    /// Where it stands.
    pub state: TaskState,
    /// How many times a host started it.
    pub attempt: u32,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// Start of the current or last attempt.
    pub started_ms: Option<i64>,
    /// When it reached a terminal state.
    pub ended_ms: Option<i64>,
    /// The host holding its lease, while running.
    pub owner: Option<String>,
    /// Lease generation: bumped at every claim, checked on every write by
    /// the owner, so a host that lost its lease cannot write again.
    pub lease: i64,
    /// Lease expiry, Unix milliseconds.
    pub lease_until_ms: Option<i64>,
    /// Whether cancellation was requested.
    pub cancel_requested: bool,
    /// The run's outcome as JSON (summary or error), once terminal.
    pub outcome: Option<serde_json::Value>,
    /// Latest progress fraction, for listings.
    pub progress: Option<f32>,
    /// Latest progress message, for listings.
    pub progress_message: Option<String>,
    /// Events dropped because the task reached its event bound.
    pub events_dropped: u64,
}

/// One durable event of a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TaskEvent {
    /// The task changed state.
    State {
        /// Previous state.
        from: Option<TaskState>,
        /// New state.
        to: TaskState,
        /// Why.
        reason: String,
    },
    /// Progress report.
    Progress {
        /// 0.0..=1.0 when known.
        fraction: Option<f32>,
        /// What it is doing.
        message: String,
    },
    /// A log line.
    Log {
        /// Severity.
        level: Level,
        /// The line.
        message: String,
    },
    /// Guest output.
    Output {
        /// `stdout` or `stderr`.
        stream: String,
        /// The text.
        text: String,
    },
    /// A capability call, allowed or refused.
    Audit {
        /// Which capability.
        capability: String,
        /// What was asked.
        detail: String,
        /// Whether it was allowed.
        allowed: bool,
        /// The rule or reason.
        reason: String,
    },
    /// A checkpoint was saved (its bytes live in the checkpoint table).
    Checkpoint {
        /// Its key.
        key: String,
        /// Its size.
        bytes: usize,
    },
    /// Later events of a kind were dropped (stream cap or event bound).
    Truncated {
        /// What was dropped.
        what: String,
    },
}

impl TaskEvent {
    /// State changes are always kept; the rest counts against the bound.
    pub fn is_essential(&self) -> bool {
        matches!(
            self,
            TaskEvent::State { .. } | TaskEvent::Checkpoint { .. } | TaskEvent::Truncated { .. }
        )
    }

    /// The name of its kind, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            TaskEvent::State { .. } => "state",
            TaskEvent::Progress { .. } => "progress",
            TaskEvent::Log { .. } => "log",
            TaskEvent::Output { .. } => "output",
            TaskEvent::Audit { .. } => "audit",
            TaskEvent::Checkpoint { .. } => "checkpoint",
            TaskEvent::Truncated { .. } => "truncated",
        }
    }
}

/// Which tasks to list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFilter {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks with this label.
    pub label: Option<String>,
    /// Only tasks of this parent session.
    pub parent_session: Option<String>,
    /// Only tasks whose id starts with this (case-insensitive; letters and
    /// digits only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_prefix: Option<String>,
    /// At most this many (newest first); default 100.
    pub limit: Option<u32>,
}

impl TaskFilter {
    /// The id prefix as stored ids spell it (upper case).
    pub fn id_prefix(&self) -> Option<String> {
        self.id_prefix.as_ref().map(|p| p.to_ascii_uppercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_and_round_trip() {
        let a = TaskId::new();
        let b = TaskId::new();
        assert!(a < b, "monotonic within one millisecond");
        assert!(a.to_string() < b.to_string());
        assert_eq!(a.to_string().parse::<TaskId>().unwrap(), a);
        assert!("nope".parse::<TaskId>().is_err());
    }

    #[test]
    fn states_have_stable_names() {
        for s in [
            "queued",
            "running",
            "awaiting_approval",
            "succeeded",
            "failed",
            "timed_out",
            "cancelled",
            "interrupted",
        ] {
            assert_eq!(s.parse::<TaskState>().unwrap().as_str(), s);
        }
        assert!("done".parse::<TaskState>().unwrap_err().contains("queued"));
        assert!(TaskState::Cancelled.is_terminal() && !TaskState::Interrupted.is_terminal());
        assert_eq!(
            serde_json::to_string(&NotifyMode::DoneOnly).unwrap(),
            "\"done-only\""
        );
    }
}
