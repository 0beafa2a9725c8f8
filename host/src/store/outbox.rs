//! The relay's outbox as the store keeps it: one row per notification of
//! one task's state change to one sink, with every delivery attempt.
//! The relay ([`crate::relay`]) claims rows, sends them and records attempts.

use serde::{Deserialize, Serialize};

use super::model::{TaskId, TaskState};

super::string_enum!(
    /// Where a notification stands.
    DeliveryState {
        /// Not delivered yet; it will be tried (again).
        Pending = "pending",
        /// A sink accepted it.
        Delivered = "delivered",
        /// Refused for good, or not accepted before the deadline.
        Failed = "failed",
        /// Not sent: the sink's filter does not take it.
        Skipped = "skipped",
    }
);

/// One notification of one task to one sink, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The outbox row.
    pub id: i64,
    /// The task.
    pub task_id: TaskId,
    /// The seq of the state event it announces.
    pub seq: u64,
    /// The sink's name.
    pub sink: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// The state the task left (`None` for its creation).
    pub from: Option<TaskState>,
    /// The state the task entered.
    pub to: TaskState,
    /// Why it changed.
    pub reason: String,
    /// When the change was stored, Unix milliseconds.
    pub created_ms: i64,
    /// Start of the current retry window (creation, or the last redeliver).
    pub window_ms: i64,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due, while pending.
    pub next_ms: Option<i64>,
    /// When a sink accepted it.
    pub delivered_ms: Option<i64>,
    /// The last attempt's HTTP status, if it got one.
    pub last_status: Option<u16>,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// Every attempt, oldest first (filled by [`TaskStore::deliveries`](super::TaskStore::deliveries)).
    #[serde(default)]
    pub history: Vec<Attempt>,
}

impl Delivery {
    /// The key a receiver drops duplicates by: the same for every attempt
    /// (and every sink) of one notification.
    pub fn idempotency_key(&self) -> String {
        self.change().idempotency_key(self.task_id)
    }
}

/// One delivery attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it started, Unix milliseconds.
    pub at_ms: i64,
    /// How long it took.
    pub duration_ms: u64,
    /// The HTTP status, if the receiver answered.
    pub status: Option<u16>,
    /// What went wrong, or what the receiver said.
    pub detail: Option<String>,
    /// Whether it was accepted.
    pub ok: bool,
}

/// What an attempt decides for its row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// Accepted: done.
    Delivered,
    /// Try again at this time (Unix milliseconds).
    Retry(i64),
    /// Give up.
    Failed,
    /// Not sent: the sink's filter does not take it.
    Skipped,
}

/// The state change a notification announces.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The seq of its state event: with the task id, the idempotency key.
    pub seq: u64,
    /// The state the task left.
    pub from: Option<TaskState>,
    /// The state it entered.
    pub to: TaskState,
    /// Why.
    pub reason: String,
    /// When, Unix milliseconds.
    pub at_ms: i64,
}

impl Change {
    /// The key a receiver drops duplicates by.
    pub fn idempotency_key(&self, task: TaskId) -> String {
        format!("skillbox-{task}-{}", self.seq)
    }
}

impl Delivery {
    /// The change this delivery announces.
    pub fn change(&self) -> Change {
        Change {
            seq: self.seq,
            from: self.from,
            to: self.to,
            reason: self.reason.clone(),
            at_ms: self.created_ms,
        }
    }
}

/// Whether a state change `from` → `to` is notified under `mode`.
pub(super) fn announced(mode: super::NotifyMode, from: Option<TaskState>, to: TaskState) -> bool {
    match mode {
        super::NotifyMode::Silent => false,
        // A request for approval needs an answer from the parent session.
        super::NotifyMode::DoneOnly => to.is_terminal() || to == TaskState::AwaitingApproval,
        super::NotifyMode::FailuresOnly => {
            (to.is_terminal() && to != TaskState::Succeeded) || to == TaskState::AwaitingApproval
        }
        // Its creation is no change: the spawner knows it.
        super::NotifyMode::StateChanges => from.is_some(),
    }
}

/// What an attempt's verdict makes of a pending row: its state, when it is
/// next due, and when it was delivered.
pub(super) fn settled(verdict: Verdict, now: i64) -> (DeliveryState, Option<i64>, Option<i64>) {
    match verdict {
        Verdict::Delivered => (DeliveryState::Delivered, None, Some(now)),
        Verdict::Retry(at) => (DeliveryState::Pending, Some(at), None),
        Verdict::Failed => (DeliveryState::Failed, None, None),
        Verdict::Skipped => (DeliveryState::Skipped, None, None),
    }
}

/// A notification `o` is the first pending one of its task and sink: a
/// task's changes reach each sink in order.
pub(super) const FIRST_OF_ITS_SINK: &str = "NOT EXISTS (SELECT 1 FROM outbox p
    WHERE p.task_id = o.task_id AND p.sink = o.sink AND p.seq < o.seq AND p.state = 'pending')";

/// The columns of an outbox row, in the order [`DeliveryRow`] holds them.
pub(super) const COLUMNS: &str = "id, task_id, seq, sink, state, from_state, to_state, reason, \
     created_ms, window_ms, next_ms, attempts, delivered_ms, last_status, last_error";

/// An outbox row as a backend's client reads it ([`COLUMNS`]).
pub(super) struct DeliveryRow {
    pub(super) id: i64,
    pub(super) task_id: String,
    pub(super) seq: i64,
    pub(super) sink: String,
    pub(super) state: String,
    pub(super) from: Option<String>,
    pub(super) to: String,
    pub(super) reason: String,
    pub(super) created_ms: i64,
    pub(super) window_ms: i64,
    pub(super) next_ms: Option<i64>,
    pub(super) attempts: i64,
    pub(super) delivered_ms: Option<i64>,
    pub(super) last_status: Option<i64>,
    pub(super) last_error: Option<String>,
}

impl DeliveryRow {
    /// The notification, its history not yet read.
    pub(super) fn parse(self) -> Result<Delivery, super::StoreError> {
        let bad = super::StoreError::Backend;
        Ok(Delivery {
            id: self.id,
            task_id: self.task_id.parse().map_err(bad)?,
            seq: self.seq as u64,
            sink: self.sink,
            state: self.state.parse().map_err(bad)?,
            from: self.from.map(|f| f.parse()).transpose().map_err(bad)?,
            to: self.to.parse().map_err(bad)?,
            reason: self.reason,
            created_ms: self.created_ms,
            window_ms: self.window_ms,
            next_ms: self.next_ms,
            attempts: self.attempts as u32,
            delivered_ms: self.delivered_ms,
            last_status: self.last_status.map(|s| s as u16),
            last_error: self.last_error,
            history: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::NotifyMode;
    use super::*;

    #[test]
    fn each_mode_announces_its_changes() {
        use TaskState::*;
        let changes = [
            (None, Queued),
            (Some(Queued), Running),
            (Some(Running), AwaitingApproval),
            (Some(AwaitingApproval), Running),
            (Some(Running), Succeeded),
            (Some(Running), Failed),
            (Some(Running), TimedOut),
            (Some(Queued), Cancelled),
        ];
        let announced_by = |mode| {
            changes
                .iter()
                .filter(|(from, to)| announced(mode, *from, *to))
                .map(|(_, to)| *to)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            announced_by(NotifyMode::DoneOnly),
            [AwaitingApproval, Succeeded, Failed, TimedOut, Cancelled]
        );
        assert_eq!(
            announced_by(NotifyMode::FailuresOnly),
            [AwaitingApproval, Failed, TimedOut, Cancelled]
        );
        assert_eq!(
            announced_by(NotifyMode::StateChanges),
            [
                Running,
                AwaitingApproval,
                Running,
                Succeeded,
                Failed,
                TimedOut,
                Cancelled
            ]
        );
        assert!(announced_by(NotifyMode::Silent).is_empty());
    }
}
