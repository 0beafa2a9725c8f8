//! The task state machine, once for every backend: the rules of create,
//! claim, events and their bound, checkpoints, finish, cancel and
//! recovery, the reasons their state events give, and the `Task` values
//! they return.
//!
//! A backend supplies one [`Transaction`]: its SQL dialect and client, row
//! by row. Every function here runs inside one transaction of the caller;
//! the backend commits it. The SQLite backend's transactions never wait
//! (its futures are ready at once, so it drives them on its writer thread
//! with a trivial executor); PostgreSQL's do.

use std::time::Duration;

use super::approval::Approval;
use super::audit::{self, AuditFilter, AuditHead, AuditRecord, Entry, Linked};
use super::backend::{Claim, Ended, StoreError, now_ms};
use super::model::{Task, TaskEvent, TaskId, TaskSpec, TaskState};
use super::outbox::Delivery;
use super::schedule::{Schedule, Slot, SlotOutcome};
use crate::policy::ResumePolicy;

/// The columns of a task row, in the order backends read them.
pub(super) const TASK_COLUMNS: &str = "id, spec, state, attempt, created_ms, started_ms, ended_ms, owner, lease, \
     lease_until_ms, cancel_requested, outcome, progress, progress_message, events_dropped";

/// A task row as a lease check sees it: state, lease generation, owner.
pub(super) type Holder = (TaskState, i64, Option<String>);

/// What one update of a task's row stores: a batch of events (with their
/// seqs), the row's event counters and progress, and a new state.
pub(super) struct Stored<'e> {
    /// When the events happened.
    pub(super) at_ms: i64,
    pub(super) events: Vec<(i64, &'e TaskEvent)>,
    /// The task's event count after the batch.
    pub(super) count: i64,
    /// Events dropped at the bound, besides those dropped before.
    pub(super) newly_dropped: i64,
    /// The latest progress (fraction kept when `None`).
    pub(super) progress: Option<(Option<f32>, &'e str)>,
    /// The state the task moves to, set in the same update.
    pub(super) state: Option<NewState<'e>>,
}

/// A task's new state. A state other than `running` or
/// `awaiting_approval` clears owner and lease expiry; `ended_ms` and
/// `outcome` are set when given.
pub(super) struct NewState<'a> {
    pub(super) to: TaskState,
    pub(super) ended_ms: Option<i64>,
    pub(super) outcome: Option<&'a serde_json::Value>,
}

/// A task a claim started.
pub(super) struct Started {
    /// The state it left.
    pub(super) from: TaskState,
    /// The task as it is now.
    pub(super) task: Task,
    /// The seq of the claim's state event when the backend stored it with
    /// the claim; `None` when it is left to the machine.
    pub(super) stored: Option<i64>,
}

/// One transaction of a backend: the operations the state machine needs,
/// each one statement or a few. Row locks are the backend's business
/// (PostgreSQL takes them where noted; SQLite has one writer).
pub(super) trait Transaction {
    /// The task; with `lock`, its row is locked until the transaction ends.
    async fn task(&self, id: TaskId, lock: bool) -> Result<Task, StoreError>;
    /// The task's state, lease and owner, its row locked until the
    /// transaction ends; `None` if there is no such task.
    async fn holder(&self, id: TaskId) -> Result<Option<Holder>, StoreError>;
    /// How many events the task has stored and dropped; `None` if there is
    /// no such task.
    async fn event_count(&self, id: TaskId) -> Result<Option<(i64, i64)>, StoreError>;
    /// Stores a batch: its events, and in one update of the task's row
    /// its counters, progress and, when the batch carries one, its new
    /// state.
    async fn store_events(&self, id: TaskId, batch: &Stored<'_>) -> Result<(), StoreError>;
    /// Queues the notifications of state change `seq` (one per sink the
    /// task's notify mode calls for).
    async fn enqueue(
        &self,
        id: TaskId,
        seq: i64,
        from: Option<TaskState>,
        to: TaskState,
        reason: &str,
    ) -> Result<(), StoreError>;
    /// [`Transaction::store_events`], then the task as it is now.
    async fn store_events_then_read(
        &self,
        id: TaskId,
        batch: &Stored<'_>,
    ) -> Result<Task, StoreError> {
        self.store_events(id, batch).await?;
        self.task(id, false).await
    }
    /// Inserts a new `queued` task.
    async fn insert_task(
        &self,
        id: TaskId,
        spec: &TaskSpec,
        created_ms: i64,
    ) -> Result<(), StoreError>;
    /// Makes the task `running` for `owner`: attempt + 1, a new lease
    /// generation, started now; returns the state it left and the task as
    /// it is now.
    async fn start(
        &self,
        id: TaskId,
        now: i64,
        owner: &str,
        lease_until_ms: i64,
    ) -> Result<(TaskState, Task), StoreError>;
    /// Flags the task for cancellation, with its outcome when given.
    async fn flag_cancel(
        &self,
        id: TaskId,
        outcome: Option<&serde_json::Value>,
    ) -> Result<(), StoreError>;
    /// Whether the task saved any checkpoint.
    async fn has_checkpoints(&self, id: TaskId) -> Result<bool, StoreError>;
    /// Saves (or replaces) a checkpoint.
    async fn put_checkpoint(
        &self,
        id: TaskId,
        key: &str,
        value: &[u8],
        at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Extends the lease to `until_ms`.
    async fn extend_lease(&self, id: TaskId, until_ms: i64) -> Result<(), StoreError>;
    /// [`start`](Self::start)s up to `max` of the oldest runnable tasks
    /// (queued, or interrupted; not flagged for cancellation), skipping
    /// those another transaction is claiming; returns them oldest first.
    /// A backend may store `first` (a state event, which the bound never
    /// drops) as the next event of each task it starts from `queued`, in
    /// the same statement, and says so in [`Started::stored`].
    async fn start_runnable(
        &self,
        max: usize,
        now: i64,
        owner: &str,
        lease_until_ms: i64,
        first: &TaskEvent,
    ) -> Result<Vec<Started>, StoreError>;
    /// Whether any task is runnable.
    async fn any_runnable(&self) -> Result<bool, StoreError>;
    /// The running tasks whose lease expired before `now`, or whose owner
    /// is `dead_owner`, oldest first, their rows locked.
    async fn orphans(&self, now: i64, dead_owner: Option<&str>) -> Result<Vec<TaskId>, StoreError>;
    /// Releases the notifications leased by owners that are gone.
    async fn release_deliveries(
        &self,
        now: i64,
        dead_owner: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Leases the task's due notifications (the first of each sink) to
    /// `owner` and returns them.
    async fn lease_deliveries(
        &self,
        id: TaskId,
        owner: &str,
        now: i64,
        lease_for: Duration,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Tells other hosts sharing the store, once the transaction commits,
    /// that a task may be runnable (or that one of their tasks' requests
    /// for approval was decided).
    async fn wake_workers(&self) -> Result<(), StoreError>;
    /// The task's requests for approval, by number.
    async fn approvals(&self, id: TaskId) -> Result<Vec<Approval>, StoreError>;
    /// Stores (or replaces) one request for approval.
    async fn put_approval(&self, approval: &Approval) -> Result<(), StoreError>;

    /// The audit chain's head, held (PostgreSQL: its row locked) until the
    /// transaction ends, so that records are chained one writer at a time.
    async fn audit_head(&self) -> Result<AuditHead, StoreError>;
    /// Stores audit records and the chain's new head.
    async fn put_audit(&self, records: &[Linked<'_>], head: &AuditHead) -> Result<(), StoreError>;
    /// One audit record.
    async fn audit_record(&self, seq: u64) -> Result<Option<AuditRecord>, StoreError>;
    /// Audit records matching `filter`, in seq order.
    async fn audit_records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;
    /// The first seq of an audit record whose task is still stored.
    async fn audit_kept_from(&self) -> Result<Option<u64>, StoreError>;
    /// Deletes the audit records up to `seq`; returns how many.
    async fn delete_audit_through(&self, seq: u64) -> Result<u64, StoreError>;

    /// The schedule named `name`; with `lock`, its row is held until the
    /// transaction ends.
    async fn schedule(&self, name: &str, lock: bool) -> Result<Option<Schedule>, StoreError>;
    /// Every schedule, by name.
    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError>;
    /// The schedules due at `now` that no other transaction holds, held.
    async fn due_schedules(&self, now: i64) -> Result<Vec<Schedule>, StoreError>;
    /// Stores a new schedule; `false` if the name is taken.
    async fn insert_schedule(&self, schedule: &Schedule) -> Result<bool, StoreError>;
    /// Stores a schedule's new state.
    async fn update_schedule(&self, schedule: &Schedule) -> Result<(), StoreError>;
    /// Deletes a schedule and its slots; `false` if there was none.
    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError>;
    /// Records what became of a slot; `false` (and nothing changed) if the
    /// slot was recorded before.
    async fn insert_slot(
        &self,
        name: &str,
        slot_ms: i64,
        at_ms: i64,
        outcome: SlotOutcome,
        task: Option<TaskId>,
    ) -> Result<bool, StoreError>;
    /// Records that a held slot fired task `task`; `false` if it was not
    /// held.
    async fn settle_slot(
        &self,
        name: &str,
        slot_ms: i64,
        task: Option<TaskId>,
    ) -> Result<bool, StoreError>;
    /// The schedule's latest slots, newest first.
    async fn slots(&self, name: &str, limit: u32) -> Result<Vec<Slot>, StoreError>;
}

/// What a write on behalf of a claim checks, owned so that the write can
/// run wherever the backend runs it.
#[derive(Clone, Debug)]
pub(super) struct Fence {
    pub(super) id: TaskId,
    pub(super) lease: i64,
    pub(super) owner: String,
}

impl Fence {
    pub(super) fn of(claim: &Claim) -> Fence {
        Fence {
            id: claim.task.id,
            lease: claim.lease,
            owner: claim.owner.clone(),
        }
    }
}

/// Checks that the claim still holds the task's lease (and locks its row
/// for the rest of the transaction where the backend locks rows); returns
/// the state it holds the task in (`running` or `awaiting_approval`).
pub(super) async fn fence<T: Transaction>(tx: &T, held: &Fence) -> Result<TaskState, StoreError> {
    match tx.holder(held.id).await? {
        Some((state, lease, Some(owner)))
            if state.is_held() && lease == held.lease && owner == held.owner =>
        {
            Ok(state)
        }
        Some(_) => Err(StoreError::LeaseLost(held.id)),
        None => Err(StoreError::NotFound(held.id)),
    }
}

/// The events a batch stores, and what it changes on the task row.
struct Batch<'e> {
    rows: Vec<(i64, &'e TaskEvent)>,
    /// The seq of each given event; 0 for one dropped at the bound.
    seqs: Vec<u64>,
    count: i64,
    newly_dropped: i64,
    progress: Option<(Option<f32>, &'e str)>,
    states: Vec<(i64, Option<TaskState>, TaskState, &'e str)>,
}

/// Lays out `events` after the task's `count` stored events: past `max`,
/// events that are not essential are counted, not kept, and the first one
/// dropped leaves a marker. Every stored event, the marker included, takes
/// the next seq.
fn lay_out<'e>(
    events: &'e [TaskEvent],
    marker: &'e TaskEvent,
    (mut count, dropped): (i64, i64),
    max: u64,
) -> Batch<'e> {
    let mut b = Batch {
        rows: Vec::new(),
        seqs: Vec::new(),
        count,
        newly_dropped: 0,
        progress: None,
        states: Vec::new(),
    };
    for e in events {
        if count as u64 >= max && !e.is_essential() {
            if dropped + b.newly_dropped == 0 {
                count += 1;
                b.rows.push((count, marker));
            }
            b.newly_dropped += 1;
            b.seqs.push(0);
            continue;
        }
        count += 1;
        b.rows.push((count, e));
        b.seqs.push(count as u64);
        match e {
            TaskEvent::State { from, to, reason } => b.states.push((count, *from, *to, reason)),
            TaskEvent::Progress { fraction, message } => {
                let kept = b.progress.and_then(|(f, _)| f);
                b.progress = Some((fraction.or(kept), message));
            }
            _ => {}
        }
    }
    b.count = count;
    b
}

/// Appends events in order, honouring the task's bound of `max` events;
/// returns each one's seq (0 when it was dropped). The caller holds the
/// task row (a fence, a claim, a create or a locked load), so seqs are
/// dense. A state change's notifications commit with it.
pub(super) async fn append<T: Transaction>(
    tx: &T,
    id: TaskId,
    events: &[TaskEvent],
    max: u64,
) -> Result<Vec<u64>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let (seqs, _) = store(tx, id, events, max, None, false).await?;
    Ok(seqs)
}

/// [`append`]s `events`, setting `state` in the same update of the task's
/// row; with `read`, also returns the task as it is now.
async fn store<T: Transaction>(
    tx: &T,
    id: TaskId,
    events: &[TaskEvent],
    max: u64,
    state: Option<NewState<'_>>,
    read: bool,
) -> Result<(Vec<u64>, Option<Task>), StoreError> {
    let counts = tx.event_count(id).await?.ok_or(StoreError::NotFound(id))?;
    let marker = bound_marker(max);
    let laid = Layout::of(events, &marker, counts, max, state);
    let task = if read {
        Some(tx.store_events_then_read(id, &laid.stored).await?)
    } else {
        tx.store_events(id, &laid.stored).await?;
        None
    };
    for (seq, from, to, reason) in laid.states {
        tx.enqueue(id, seq, from, to, reason).await?;
    }
    Ok((laid.seqs, task))
}

/// The event that stands for those dropped at the bound of `max` events.
pub(super) fn bound_marker(max: u64) -> TaskEvent {
    TaskEvent::Truncated {
        what: format!(
            "the task reached its bound of {max} events; later progress, logs and output are counted, not kept"
        ),
    }
}

/// A batch laid out after a task's stored events: the update of its row,
/// the seq of each given event (0 for one dropped at the bound), and the
/// state changes among them (seq, from, to, reason), whose notifications
/// commit with the update.
pub(super) struct Layout<'e> {
    pub(super) stored: Stored<'e>,
    pub(super) seqs: Vec<u64>,
    pub(super) states: Vec<(i64, Option<TaskState>, TaskState, &'e str)>,
}

impl<'e> Layout<'e> {
    /// `events` after the task's `counts` (stored, dropped), with the
    /// bound's `marker`, setting `state` in the same update.
    pub(super) fn of(
        events: &'e [TaskEvent],
        marker: &'e TaskEvent,
        counts: (i64, i64),
        max: u64,
        state: Option<NewState<'e>>,
    ) -> Layout<'e> {
        let b = lay_out(events, marker, counts, max);
        Layout {
            stored: Stored {
                at_ms: now_ms(),
                events: b.rows,
                count: b.count,
                newly_dropped: b.newly_dropped,
                progress: b.progress,
                state,
            },
            seqs: b.seqs,
            states: b.states,
        }
    }
}

/// Moves the task from `from` to `to` and records why.
pub(super) async fn move_state<T: Transaction>(
    tx: &T,
    id: TaskId,
    from: TaskState,
    to: TaskState,
    reason: &str,
    max: u64,
) -> Result<(), StoreError> {
    let change = Move {
        from,
        to,
        reason,
        outcome: None,
        before: Vec::new(),
    };
    apply(tx, id, change, max).await
}

/// A change of state, with what is written in the same statements.
struct Move<'a> {
    from: TaskState,
    to: TaskState,
    reason: &'a str,
    /// The task's outcome, set in the same update of its row.
    outcome: Option<&'a serde_json::Value>,
    /// Events that come before the change, stored in the same batch.
    before: Vec<TaskEvent>,
}

/// Makes `change`: one batch of events, the state change last among them,
/// and one update of the task's row.
async fn apply<T: Transaction>(
    tx: &T,
    id: TaskId,
    change: Move<'_>,
    max: u64,
) -> Result<(), StoreError> {
    change.make(tx, id, max, false).await.map(drop)
}

/// [`apply`], then the task as it is now (read back by the same update
/// where the backend can).
async fn apply_then_read<T: Transaction>(
    tx: &T,
    id: TaskId,
    change: Move<'_>,
    max: u64,
) -> Result<Task, StoreError> {
    let task = change.make(tx, id, max, true).await?;
    task.ok_or(StoreError::NotFound(id))
}

impl Move<'_> {
    /// Stores the events before the change, then the change's, with the
    /// new state; with `read`, returns the task as it is now.
    async fn make<T: Transaction>(
        self,
        tx: &T,
        id: TaskId,
        max: u64,
        read: bool,
    ) -> Result<Option<Task>, StoreError> {
        let events = change_events(self.before, self.from, self.to, self.reason);
        let state = NewState {
            to: self.to,
            ended_ms: self.to.is_terminal().then(now_ms),
            outcome: self.outcome,
        };
        let (_, task) = store(tx, id, &events, max, Some(state), read).await?;
        Ok(task)
    }
}

/// The events of a change of state: `before`, then the change's own.
fn change_events(
    mut before: Vec<TaskEvent>,
    from: TaskState,
    to: TaskState,
    reason: &str,
) -> Vec<TaskEvent> {
    before.push(TaskEvent::State {
        from: Some(from),
        to,
        reason: reason.to_string(),
    });
    before
}

/// Stores a new queued task.
pub(super) async fn create<T: Transaction>(
    tx: &T,
    id: TaskId,
    spec: TaskSpec,
    max: u64,
) -> Result<Task, StoreError> {
    let created_ms = now_ms();
    tx.insert_task(id, &spec, created_ms).await?;
    let event = TaskEvent::State {
        from: None,
        to: TaskState::Queued,
        reason: "spawned".into(),
    };
    append(tx, id, std::slice::from_ref(&event), max).await?;
    Ok(Task {
        id,
        spec,
        state: TaskState::Queued,
        attempt: 0,
        created_ms,
        started_ms: None,
        ended_ms: None,
        owner: None,
        lease: 0,
        lease_until_ms: None,
        cancel_requested: false,
        outcome: None,
        progress: None,
        progress_message: None,
        events_dropped: 0,
    })
}

/// Stores a new task and wakes the workers.
pub(super) async fn spawn<T: Transaction>(
    tx: &T,
    id: TaskId,
    spec: TaskSpec,
    max: u64,
) -> Result<Task, StoreError> {
    let task = create(tx, id, spec, max).await?;
    tx.wake_workers().await?;
    Ok(task)
}

/// Stores a new task and, when no older task is waiting, claims it for
/// `owner` at once.
pub(super) async fn spawn_and_claim<T: Transaction>(
    tx: &T,
    id: TaskId,
    spec: TaskSpec,
    owner: &str,
    lease_for: Duration,
    max: u64,
) -> Result<(Task, Option<Claim>), StoreError> {
    // Older tasks go first: then this one only queues.
    let older = tx.any_runnable().await?;
    let task = create(tx, id, spec, max).await?;
    if older {
        tx.wake_workers().await?;
        return Ok((task, None));
    }
    // Nobody else sees the row before the commit.
    let claim = claim_task(tx, id, owner, lease_for, max).await?;
    Ok((task, Some(claim)))
}

/// Claims task `id` (queued or interrupted, its row held by the caller)
/// for `owner`.
pub(super) async fn claim_task<T: Transaction>(
    tx: &T,
    id: TaskId,
    owner: &str,
    lease_for: Duration,
    max: u64,
) -> Result<Claim, StoreError> {
    let now = now_ms();
    let (from, task) = tx
        .start(id, now, owner, now + lease_for.as_millis() as i64)
        .await?;
    let begun = Started {
        from,
        task,
        stored: None,
    };
    started(tx, begun, owner, max).await
}

/// Claims up to `n` of the oldest runnable tasks for `owner`.
pub(super) async fn claim<T: Transaction>(
    tx: &T,
    owner: &str,
    n: usize,
    lease_for: Duration,
    max: u64,
) -> Result<Vec<Claim>, StoreError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let until = now + lease_for.as_millis() as i64;
    let first = start_event(TaskState::Queued, start_reason(TaskState::Queued, owner, 0));
    let mut out = Vec::new();
    for begun in tx.start_runnable(n, now, owner, until, &first).await? {
        out.push(started(tx, begun, owner, max).await?);
    }
    Ok(out)
}

/// Why a task was started for `owner` from state `from`, in its
/// `attempt`.
pub(super) fn start_reason(from: TaskState, owner: &str, attempt: u32) -> String {
    if from == TaskState::Interrupted {
        format!("resumed by {owner} (attempt {attempt})")
    } else {
        format!("started by {owner}")
    }
}

/// The state event of a task started from state `from`.
pub(super) fn start_event(from: TaskState, reason: String) -> TaskEvent {
    TaskEvent::State {
        from: Some(from),
        to: TaskState::Running,
        reason,
    }
}

/// The claim of a task just started for `owner`, with its state event
/// (stored here unless the backend stored it with the claim) and that
/// event's notifications.
async fn started<T: Transaction>(
    tx: &T,
    begun: Started,
    owner: &str,
    max: u64,
) -> Result<Claim, StoreError> {
    let Started { from, task, stored } = begun;
    let reason = start_reason(from, owner, task.attempt);
    match stored {
        Some(seq) => {
            tx.enqueue(task.id, seq, Some(from), TaskState::Running, &reason)
                .await?
        }
        None => {
            let event = start_event(from, reason);
            append(tx, task.id, std::slice::from_ref(&event), max).await?;
        }
    }
    Ok(Claim {
        lease: task.lease,
        owner: owner.to_string(),
        task,
    })
}

/// Renews the claim's lease until `lease_for` from now.
pub(super) async fn heartbeat<T: Transaction>(
    tx: &T,
    held: &Fence,
    lease_for: Duration,
) -> Result<(), StoreError> {
    fence(tx, held).await?;
    tx.extend_lease(held.id, now_ms() + lease_for.as_millis() as i64)
        .await
}

/// Records a request for approval on behalf of a claim.
pub(super) async fn ask<T: Transaction>(
    tx: &T,
    held: &Fence,
    ask: super::approval::Ask,
    max: u64,
) -> Result<Approval, StoreError> {
    fence(tx, held).await?;
    super::approval::ask(tx, held.id, ask, max).await
}

/// Appends events on behalf of a claim; returns their seqs and the state
/// the claim holds the task in. `calls` (the audit entries of the
/// capability calls among them, see [`audited`]) are chained into the
/// audit trail, even past the event bound.
pub(super) async fn append_held<T: Transaction>(
    tx: &T,
    held: &Fence,
    events: &[TaskEvent],
    calls: &[Entry],
    max: u64,
) -> Result<(Vec<u64>, TaskState), StoreError> {
    let state = fence(tx, held).await?;
    audit::chain(tx, calls).await?;
    Ok((append(tx, held.id, events, max).await?, state))
}

/// The audit entries of the capability calls among `events` of the claim
/// `held` (none when the store keeps no audit trail), made before the
/// transaction that chains them.
pub(super) fn audited(held: &Fence, events: &[TaskEvent], on: bool) -> Vec<Entry> {
    if on {
        Entry::calls(held.id, &held.owner, events)
    } else {
        Vec::new()
    }
}

/// Saves a checkpoint on behalf of a claim, with its event.
pub(super) async fn save_checkpoint<T: Transaction>(
    tx: &T,
    held: &Fence,
    key: String,
    value: &[u8],
    max: u64,
) -> Result<(), StoreError> {
    fence(tx, held).await?;
    tx.put_checkpoint(held.id, &key, value, now_ms()).await?;
    let event = TaskEvent::Checkpoint {
        bytes: value.len(),
        key,
    };
    append(tx, held.id, std::slice::from_ref(&event), max).await?;
    Ok(())
}

/// A task's end, owned so that it can run wherever the backend runs it.
#[derive(Clone)]
pub(super) struct Finish {
    /// Events still buffered, stored before the final state.
    pub(super) events: Vec<TaskEvent>,
    /// A terminal state.
    pub(super) state: TaskState,
    /// The summary or error.
    pub(super) outcome: serde_json::Value,
    /// Why it ended.
    pub(super) reason: String,
    /// Lease the end's notifications to the claim's owner for this long.
    pub(super) deliver: Option<Duration>,
    /// Claim the next runnable task for the same owner with this lease.
    pub(super) next_lease: Option<Duration>,
    /// The audit entries of the capability calls among `events`.
    pub(super) calls: Vec<Entry>,
}

impl Finish {
    /// The end of `end`, or why it is not one.
    pub(super) fn of(
        held: &Fence,
        end: super::Ending<'_>,
        next_lease: Option<Duration>,
        audit: bool,
    ) -> Result<Finish, StoreError> {
        if !end.state.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "{} is not a terminal state",
                end.state
            )));
        }
        Ok(Finish {
            events: end.events.to_vec(),
            state: end.state,
            outcome: end.outcome,
            reason: end.reason.to_string(),
            deliver: end.deliver,
            next_lease,
            calls: audited(held, end.events, audit),
        })
    }
}

impl Finish {
    /// Whether the end may be written without reading the task's row
    /// first: it has no capability calls to chain into the audit trail
    /// (whose head a chaining transaction must hold).
    pub(super) fn needs_no_read(&self) -> bool {
        self.calls.is_empty()
    }

    /// Its events, as stored after the task held in `from`: the buffered
    /// ones, then its change of state (as [`finish`] stores them).
    pub(super) fn events_from(&self, from: TaskState) -> Vec<TaskEvent> {
        change_events(self.events.clone(), from, self.state, &self.reason)
    }

    /// Its new state, ended now, with its outcome.
    pub(super) fn new_state(&self) -> NewState<'_> {
        NewState {
            to: self.state,
            ended_ms: Some(now_ms()),
            outcome: Some(&self.outcome),
        }
    }
}

/// Ends a claimed task: its last events, outcome and terminal state; leases
/// its end's notifications to the owner and claims the owner's next task
/// when asked.
pub(super) async fn finish<T: Transaction>(
    tx: &T,
    held: &Fence,
    end: Finish,
    max: u64,
) -> Result<Ended, StoreError> {
    let held_in = fence(tx, held).await?;
    audit::chain(tx, &end.calls).await?;
    let change = Move {
        from: held_in,
        to: end.state,
        reason: &end.reason,
        outcome: Some(&end.outcome),
        before: end.events,
    };
    let task = apply_then_read(tx, held.id, change, max).await?;
    let deliveries = match end.deliver {
        Some(lease) => {
            tx.lease_deliveries(held.id, &held.owner, now_ms(), lease)
                .await?
        }
        None => Vec::new(),
    };
    let next = match end.next_lease {
        Some(lease) => claim(tx, &held.owner, 1, lease, max).await?.pop(),
        None => None,
    };
    Ok(Ended {
        task,
        next,
        deliveries,
    })
}

/// Cancels a queued or interrupted task at once; flags a running one for
/// its owner to stop; leaves an ended one as it is.
pub(super) async fn request_cancel<T: Transaction>(
    tx: &T,
    id: TaskId,
    reason: &str,
    max: u64,
) -> Result<Task, StoreError> {
    let task = tx.task(id, true).await?;
    match task.state {
        s if s.is_terminal() => {}
        TaskState::Queued | TaskState::Interrupted => {
            let outcome = serde_json::json!({"outcome": "cancelled", "reason": reason});
            tx.flag_cancel(id, Some(&outcome)).await?;
            move_state(tx, id, task.state, TaskState::Cancelled, reason, max).await?;
        }
        _ => tx.flag_cancel(id, None).await?,
    }
    tx.task(id, false).await
}

/// Interrupts the running tasks whose lease expired before `now` (or whose
/// owner is `dead_owner`), releases their owners' notifications, and
/// settles each: cancelled if asked, failed if it cannot be resumed (no
/// checkpoints and resume policy `fail`), else left to be claimed again.
/// Returns the interrupted ids.
pub(super) async fn recover<T: Transaction>(
    tx: &T,
    now: i64,
    dead_owner: Option<&str>,
    max: u64,
) -> Result<Vec<TaskId>, StoreError> {
    let ids = tx.orphans(now, dead_owner).await?;
    tx.release_deliveries(now, dead_owner).await?;
    let mut runnable = false;
    for &id in &ids {
        let task = tx.task(id, false).await?;
        let owner = task.owner.clone().unwrap_or_default();
        let why = format!("host {owner} stopped while running it");
        move_state(tx, id, task.state, TaskState::Interrupted, &why, max).await?;
        if task.cancel_requested {
            let why = "cancelled while its host was down";
            move_state(
                tx,
                id,
                TaskState::Interrupted,
                TaskState::Cancelled,
                why,
                max,
            )
            .await?;
        } else if task.spec.resume == ResumePolicy::Fail && !tx.has_checkpoints(id).await? {
            let outcome = serde_json::json!({
                "outcome": "failed",
                "kind": "failed",
                "message": "interrupted; the skill has no checkpoints and says a restart is not safe"
            });
            let change = Move {
                from: TaskState::Interrupted,
                to: TaskState::Failed,
                reason: "interrupted with no checkpoints, and the skill's resume policy is `fail`",
                outcome: Some(&outcome),
                before: Vec::new(),
            };
            apply(tx, id, change, max).await?;
        } else {
            runnable = true;
        }
    }
    if runnable {
        tx.wake_workers().await?;
    }
    Ok(ids)
}

/// Drives a future that never waits (an SQLite transaction's) to its end.
pub(super) fn run_ready<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: usize) -> Vec<TaskEvent> {
        (0..n)
            .map(|i| TaskEvent::Log {
                level: crate::events::Level::Info,
                message: format!("line {i}"),
            })
            .collect()
    }

    #[test]
    fn past_the_bound_events_are_counted_and_one_marker_is_kept() {
        let marker = TaskEvent::Truncated { what: "cut".into() };
        let mut events = log(3);
        events.push(TaskEvent::Checkpoint {
            key: "k".into(),
            bytes: 1,
        });
        let b = lay_out(&events, &marker, (4, 0), 5);
        // One log fits, two are dropped (the marker stands for them), the
        // checkpoint is essential and kept.
        assert_eq!(b.seqs, vec![5, 0, 0, 7]);
        assert_eq!(b.rows.len(), 3);
        assert!(matches!(b.rows[1].1, TaskEvent::Truncated { .. }));
        assert_eq!((b.count, b.newly_dropped), (7, 2));
        // Once the marker is stored, later drops add none.
        let more = log(2);
        let b = lay_out(&more, &marker, (7, 2), 5);
        assert_eq!((b.rows.len(), b.newly_dropped, b.count), (0, 2, 7));
    }

    #[test]
    fn progress_keeps_the_last_fraction_and_message() {
        let marker = TaskEvent::Truncated { what: "cut".into() };
        let events = vec![
            TaskEvent::Progress {
                fraction: Some(0.5),
                message: "half".into(),
            },
            TaskEvent::Progress {
                fraction: None,
                message: "still".into(),
            },
        ];
        let b = lay_out(&events, &marker, (0, 0), 100);
        assert_eq!(b.progress, Some((Some(0.5), "still")));
    }
}
