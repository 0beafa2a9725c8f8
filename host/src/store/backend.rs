//! The store trait: every backend (SQLite, PostgreSQL) gives the same
//! semantics, checked by one conformance suite.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::error::StoreError;

use super::approval::{Approval, Ask, Decision};
use super::audit::{AuditFilter, AuditHead, AuditRecord};
use super::model::{Task, TaskEvent, TaskFilter, TaskId, TaskSpec, TaskState};
use super::outbox::{Attempt, Delivery, Verdict};
use super::schedule::{Schedule, ScheduleSpec, Slot};

/// A task claimed by a host: the lease generation fences every later write.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    /// The task as claimed (state `running`).
    pub task: Task,
    /// The claiming host.
    pub owner: String,
    /// The lease generation this claim holds.
    pub lease: i64,
}

/// A stored event with its position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Position within the task's events, from 1.
    pub seq: u64,
    /// When it was stored, Unix milliseconds.
    pub at_ms: i64,
    /// The event.
    #[serde(flatten)]
    pub event: TaskEvent,
}

/// How a task ends: its last events, terminal state and outcome.
#[derive(Clone, Debug)]
pub struct Ending<'a> {
    /// Events still buffered, stored before the final state.
    pub events: &'a [TaskEvent],
    /// A terminal state.
    pub state: TaskState,
    /// The summary or error.
    pub outcome: serde_json::Value,
    /// Why it ended, for the state event.
    pub reason: &'a str,
    /// Lease the notifications this end queues (those first in their
    /// sink's order) to the claim's owner for this long, in the same
    /// transaction, and return them: the host sends them at once, without
    /// claiming them in another.
    pub deliver: Option<Duration>,
}

/// What [`TaskStore::finish_and_claim`] did.
#[derive(Clone, Debug)]
pub struct Ended {
    /// The task as it ended.
    pub task: Task,
    /// The next task, claimed for the same owner.
    pub next: Option<Claim>,
    /// Notifications of the end, leased to the owner (see [`Ending::deliver`]).
    pub deliveries: Vec<Delivery>,
}

/// Durable storage of tasks, their events and checkpoints.
///
/// Writes on behalf of a running task take its [`Claim`] and fail with
/// [`StoreError::LeaseLost`] once the claim is stale.
pub trait TaskStore: Send + Sync {
    /// Stores a new `queued` task.
    fn create(&self, spec: TaskSpec) -> Result<Task, StoreError>;
    /// Stores a new task as [`create`](Self::create) does and, when no
    /// older task is waiting, claims it for `owner` in the same
    /// transaction (a host with a free slot runs it one commit sooner).
    /// Backends without this return the task unclaimed.
    fn create_and_claim(
        &self,
        spec: TaskSpec,
        owner: &str,
        lease_for: Duration,
    ) -> Result<(Task, Option<Claim>), StoreError> {
        let _ = (owner, lease_for);
        Ok((self.create(spec)?, None))
    }
    /// One task.
    fn get(&self, id: TaskId) -> Result<Task, StoreError>;
    /// Tasks matching `filter`, newest first.
    fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError>;
    /// Takes the oldest runnable task (queued, or interrupted and
    /// resumable) for `owner`: `running`, attempt + 1, a new lease.
    fn claim(&self, owner: &str, lease_for: Duration) -> Result<Option<Claim>, StoreError>;
    /// Claims up to `max` tasks as [`claim`](Self::claim) does, oldest
    /// first; backends do it in one transaction.
    fn claim_many(
        &self,
        owner: &str,
        max: usize,
        lease_for: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.claim(owner, lease_for)? {
                Some(c) => out.push(c),
                None => break,
            }
        }
        Ok(out)
    }
    /// Extends the lease; `LeaseLost` if it is no longer ours.
    fn heartbeat(&self, claim: &Claim, lease_for: Duration) -> Result<(), StoreError>;
    /// Appends an event; returns its seq (0 when it was dropped at the bound).
    fn append(&self, claim: &Claim, event: TaskEvent) -> Result<u64, StoreError>;
    /// Appends events in order, in one transaction (a group commit).
    fn append_many(&self, claim: &Claim, events: &[TaskEvent]) -> Result<(), StoreError>;
    /// Saves a checkpoint (and a `checkpoint` event) atomically.
    fn save_checkpoint(&self, claim: &Claim, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// The task's checkpoints.
    fn checkpoints(&self, id: TaskId) -> Result<BTreeMap<String, Vec<u8>>, StoreError>;
    /// Ends the task in a terminal `state` with its outcome.
    fn finish(
        &self,
        claim: &Claim,
        state: TaskState,
        outcome: serde_json::Value,
        reason: &str,
    ) -> Result<Task, StoreError> {
        let end = Ending {
            events: &[],
            state,
            outcome,
            reason,
            deliver: None,
        };
        Ok(self.finish_and_claim(claim, end, None)?.task)
    }
    /// Ends the task in `end.state` with its outcome, after appending
    /// `end.events`, and with `next_lease`, claims the next runnable task
    /// for the same owner (the slot the ended task frees), all in one
    /// transaction; the end's notifications come back leased when
    /// `end.deliver` asks for it.
    fn finish_and_claim(
        &self,
        claim: &Claim,
        end: Ending<'_>,
        next_lease: Option<Duration>,
    ) -> Result<Ended, StoreError>;
    /// Events after `after` (exclusive), at most `limit`.
    fn events(&self, id: TaskId, after: u64, limit: u32) -> Result<Vec<EventRecord>, StoreError>;
    /// Records a running task's request for approval (see
    /// [`approval`](super::approval)): the stored request with the same key
    /// as it stands, or a new one, settled at once by an earlier "always"
    /// decision of its rule or else pending, with the task moved to
    /// `awaiting_approval`.
    fn ask(&self, claim: &Claim, ask: Ask) -> Result<Approval, StoreError>;
    /// The task's requests for approval, by number.
    fn approvals(&self, id: TaskId) -> Result<Vec<Approval>, StoreError>;
    /// Decides request `n` of task `id` (its only pending one when `None`);
    /// refuses one already decided, and a task that ended. The task goes
    /// back to `running` once nothing else is pending, and its host is woken.
    fn decide(
        &self,
        id: TaskId,
        n: Option<u32>,
        decision: Decision,
    ) -> Result<Approval, StoreError>;
    /// Cancels a queued or interrupted task at once; flags a running one for
    /// its owner to stop. Terminal tasks are left as they are.
    fn request_cancel(&self, id: TaskId, reason: &str) -> Result<Task, StoreError>;
    /// Marks `running` tasks whose lease expired before `now_ms`, or whose
    /// owner is `dead_owner`, as `interrupted`; fails those that cannot be
    /// resumed (no checkpoints and resume policy `fail`). Returns the ids
    /// that were interrupted.
    fn recover(&self, now_ms: i64, dead_owner: Option<&str>) -> Result<Vec<TaskId>, StoreError>;
    /// Deletes terminal tasks that ended before `before_ms` (only the task
    /// `only`, when given), with their events, checkpoints and
    /// notifications; returns their ids and scratch directories.
    fn prune(&self, before_ms: i64, only: Option<TaskId>) -> Result<Vec<Pruned>, StoreError>;

    // The relay's outbox. A state change stores the notifications its
    // task's notify mode calls for (one per sink) in its own transaction.

    /// Takes up to `max` due notifications for `owner`, leased for
    /// `lease_for`: pending, due, not leased by a live owner, and each the
    /// oldest pending one of its task and sink, so that one task's changes
    /// reach a sink in order.
    fn claim_deliveries(
        &self,
        owner: &str,
        max: usize,
        lease_for: Duration,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Records an attempt on notification `id` and settles it by `verdict`
    /// (a notification another owner already settled keeps its state).
    fn record_attempt(
        &self,
        id: i64,
        attempt: &Attempt,
        verdict: Verdict,
    ) -> Result<(), StoreError>;
    /// The task's notifications with every attempt, in order.
    fn deliveries(&self, id: TaskId) -> Result<Vec<Delivery>, StoreError>;
    /// Puts the task's failed notifications back in the queue, due now,
    /// with a fresh retry window; returns how many.
    fn redeliver(&self, id: TaskId) -> Result<usize, StoreError>;
    /// When the earliest pending notification is due (Unix milliseconds).
    fn next_delivery_ms(&self) -> Result<Option<i64>, StoreError>;

    /// How many tasks are in each state, and when the oldest waiting one
    /// (queued or interrupted) was created.
    fn counts(&self) -> Result<Counts, StoreError>;

    // Schedules (see [`schedule`](super::schedule)).

    /// Stores a new schedule (its task checked by the caller); refuses a
    /// name in use, a bad name, expression or zone.
    fn add_schedule(&self, spec: ScheduleSpec) -> Result<Schedule, StoreError>;
    /// One schedule.
    fn schedule(&self, name: &str) -> Result<Schedule, StoreError>;
    /// Every schedule, by name.
    fn schedules(&self) -> Result<Vec<Schedule>, StoreError>;
    /// The schedule's latest slots (at most `limit`), newest first.
    fn schedule_slots(&self, name: &str, limit: u32) -> Result<Vec<Slot>, StoreError>;
    /// Pauses (`true`) or resumes a schedule.
    fn pause_schedule(&self, name: &str, paused: bool) -> Result<Schedule, StoreError>;
    /// Deletes a schedule and its slots' records (its tasks stay).
    fn remove_schedule(&self, name: &str) -> Result<(), StoreError>;
    /// Fires what is due at `now_ms` (see [`schedule`](super::schedule));
    /// a slot that passed less than `grace_ms` ago is on time. Returns the
    /// tasks created.
    fn fire_schedules(&self, now_ms: i64, grace_ms: i64) -> Result<Vec<Task>, StoreError>;
    /// Creates the schedule's task now, outside its timetable.
    fn run_schedule_now(&self, name: &str) -> Result<Task, StoreError>;

    // The audit trail (see [`audit`](super::audit)).

    /// Audit records matching `filter`, in chain order.
    fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;
    /// The audit chain's head.
    fn audit_head(&self) -> Result<AuditHead, StoreError>;

    /// A counter that changes when another host may have made a task
    /// runnable (a backend shared by several hosts, e.g. PostgreSQL's
    /// `LISTEN/NOTIFY`), so that an idle worker claims at once instead of
    /// at its next poll. A hint: changes may be spurious or merged. `None`
    /// (the default) for a store only this host writes.
    fn task_wake_ups(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// As [`task_wake_ups`](Self::task_wake_ups), for notifications in the
    /// outbox that another host queued or released.
    fn outbox_wake_ups(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// A backend's migrations: (version, name, SQL), append only.
pub(crate) type Migrations = [(i64, &'static str, &'static str)];

/// The checksum recorded for an applied migration.
pub(crate) fn migration_checksum(sql: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(sql.as_bytes()))
}

/// Checks the migrations a database records as applied (version,
/// checksum) against the code's: one it does not know means a newer
/// skillbox wrote it, a changed checksum an edited migration; both are
/// refused, not "fixed". Returns the migrations still to apply, in order.
pub(crate) fn pending_migrations<'m>(
    migrations: &'m Migrations,
    applied: &[(i64, String)],
) -> Result<Vec<&'m (i64, &'static str, &'static str)>, StoreError> {
    for (version, sum) in applied {
        match migrations.iter().find(|(v, _, _)| v == version) {
            None => {
                return Err(StoreError::Schema(format!(
                    "the database has migration {version}, which this skillbox does not know: \
                     it was written by a newer version"
                )));
            }
            Some((_, name, sql)) if migration_checksum(sql) != *sum => {
                return Err(StoreError::Schema(format!(
                    "applied migration {version} ({name}) differs from this skillbox's; \
                     migrations must never be edited"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(migrations
        .iter()
        .filter(|(version, _, _)| !applied.iter().any(|(v, _)| v == version))
        .collect())
}

/// Resolves when `wake` changes; never for `None` or a closed channel.
pub(crate) async fn woken(wake: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(w) = wake
        && w.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// The store's tasks at a glance (see [`TaskStore::counts`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Tasks by state (states with none left out).
    pub by_state: Vec<(TaskState, u64)>,
    /// When the oldest task waiting for a worker was created, Unix ms.
    pub oldest_waiting_ms: Option<i64>,
}

/// A deleted task: its id and the scratch directory it may have left.
pub type Pruned = (TaskId, Option<std::path::PathBuf>);

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
