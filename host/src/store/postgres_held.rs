//! The PostgreSQL store's writes for the tasks its own claims hold, in one
//! statement each.
//!
//! In a transaction, a worker's write for a task it holds (a batch of its
//! events, or its end with the next task's claim) is `BEGIN`, the row read
//! and locked (to check the lease, and to lay the events out after those
//! stored), the writes, and `COMMIT`: five statements, as many waits for
//! the server. Instead, the store remembers what its claims and its own
//! writes left in each row they hold ([`Seen`]); the machine's rules lay
//! the next write out from that, and it goes as one statement outside any
//! transaction block, whose `UPDATE` of the row is fenced on all it
//! assumed: lease, owner, state and event counters. When something else
//! changed the row meanwhile (another host's decision on a request for
//! approval adds an event; a recovery interrupted the task), the statement
//! changes nothing and the store takes the transaction of
//! [`machine`](super::machine), which reads the row, instead.
//!
//! Writes that must read first keep the transaction: those with capability
//! calls to chain into the audit trail, and an end whose notifications
//! are leased to its host at once.

use std::collections::HashMap;
use std::sync::Mutex;

use super::backend::{Claim, StoreError};
use super::machine::{
    Fence, Finish, Layout, TASK_COLUMNS, bound_marker, start_event, start_reason,
};
use super::model::{NotifyMode, Task, TaskEvent, TaskId, TaskState};
use super::outbox::announced;
use super::postgres::{Tx, backend, pg, row_to_task};
use super::postgres_pool::{Known, borrowed, owned};
use super::postgres_tx::{
    BATCH_SET, INSERT_BATCH, KNOWN_COLUMNS, batch_params, claim_ctes, known, store_params,
};

/// A held task's row as the store's last write for its claim left it.
#[derive(Clone, Debug)]
pub(super) struct Seen {
    lease: i64,
    owner: String,
    pub(super) state: TaskState,
    known: Known,
}

impl Seen {
    /// Whether the claim `held` saw it.
    fn is_of(&self, held: &Fence) -> bool {
        self.lease == held.lease && self.owner == held.owner
    }
}

/// What the store has seen of the rows its claims hold, by task.
#[derive(Default)]
pub(super) struct Held(Mutex<HashMap<TaskId, Seen>>);

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Seen>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What was seen of the row `held` holds, if it was this claim's.
    pub(super) fn seen(&self, held: &Fence) -> Option<Seen> {
        self.lock().get(&held.id).filter(|s| s.is_of(held)).cloned()
    }

    /// Notes the row of `claim`'s task as a claim left it (`running`).
    pub(super) fn claimed(&self, claim: &Claim, known: Known) {
        self.saw(&Fence::of(claim), TaskState::Running, known);
    }

    /// Notes the row `held` holds, in `state`, as a write of the claim
    /// left it.
    pub(super) fn saw(&self, held: &Fence, state: TaskState, known: Known) {
        let seen = Seen {
            lease: held.lease,
            owner: held.owner.clone(),
            state,
            known,
        };
        self.lock().insert(held.id, seen);
    }

    /// Forgets what `held`'s claim saw of its row: it ended, or a write
    /// this module does not follow changed it, or the claim lost it.
    pub(super) fn forget(&self, held: &Fence) {
        let mut seen = self.lock();
        if seen.get(&held.id).is_some_and(|s| s.is_of(held)) {
            seen.remove(&held.id);
        }
    }

    /// Forgets task `id`'s row, whichever claim saw it: another host's
    /// write may change it.
    pub(super) fn forget_task(&self, id: TaskId) {
        self.lock().remove(&id);
    }
}

/// The names of the notify modes that announce a task's start from the
/// queue (`outbox::announced`), for a statement that queues those
/// notifications itself.
fn announcing_a_start() -> Vec<&'static str> {
    NotifyMode::ALL
        .iter()
        .filter(|m| announced(**m, Some(TaskState::Queued), TaskState::Running))
        .map(|m| m.as_str())
        .collect()
}

/// An end written in one statement.
pub(super) struct Finished {
    /// The task as it ended.
    pub(super) task: Task,
    /// The next task, claimed from the queue for the same owner, with what
    /// the claim left in its row.
    pub(super) next: Option<(Claim, Known)>,
    /// Whether the oldest runnable task, left alone, was to be resumed: its
    /// claim takes the machine's transaction, which stores the event that
    /// names its attempt.
    pub(super) resume_next: bool,
}

/// Whether `end` of the task seen as `seen` may be written by [`finish`]:
/// nothing to chain into the audit trail, and no notification to lease to
/// the host (the end's are leased by the first of each sink, which the
/// transaction reads).
pub(super) fn may_finish(seen: &Seen, end: &Finish) -> bool {
    seen.state.is_held()
        && end.needs_no_read()
        && (end.deliver.is_none() || seen.known.sinks.is_empty())
}

/// Ends the task `held` holds, as [`machine::finish`](super::machine::finish)
/// does, in one statement fenced on `seen`, and claims the next task from
/// the queue in the same statement when `end` asks for it. `None` when the
/// row is no longer as seen: nothing was written.
pub(super) async fn finish(
    tx: &Tx<'_>,
    held: &Fence,
    seen: &Seen,
    end: &Finish,
    max: u64,
) -> Result<Option<Finished>, StoreError> {
    let from = seen.state;
    let events = end.events_from(from);
    let marker = bound_marker(max);
    let k = &seen.known;
    let laid = Layout::of(
        &events,
        &marker,
        (k.count, k.dropped),
        max,
        Some(end.new_state()),
    );
    // The end's own change is the one state change among its events (a
    // state event is never dropped at the bound).
    let [(seq, _, _, reason)] = laid.states[..] else {
        return Err(backend("an end's events carry one change of state"));
    };
    let sinks: Vec<String> = if announced(k.notify, Some(from), end.state) {
        k.sinks.clone()
    } else {
        Vec::new()
    };
    let next_until = end
        .next_lease
        .map(|l| laid.stored.at_ms + l.as_millis() as i64);
    let first = start_event(
        TaskState::Queued,
        start_reason(TaskState::Queued, &held.owner, 0),
    );
    let TaskEvent::State {
        reason: start_reason,
        ..
    } = &first
    else {
        unreachable!("a start event is a state event")
    };
    let n = TASK_COLUMNS.split(',').count();
    let sql = format!(
        "WITH ended AS (
             UPDATE tasks SET {BATCH_SET},
                 state = $11, ended_ms = $12, outcome = $13, owner = NULL, lease_until_ms = NULL
             WHERE id = $1 AND lease = $14 AND owner = $15 AND state = $16
               AND event_count = $17 AND events_dropped = $18
             RETURNING {TASK_COLUMNS}, {KNOWN_COLUMNS}),
         stored AS ({INSERT_BATCH} WHERE EXISTS (SELECT 1 FROM ended)),
         noted AS (
             INSERT INTO outbox (task_id, seq, sink, state, from_state, to_state, reason,
                                 created_ms, window_ms, next_ms)
             SELECT id, $20, s.sink, 'pending', $16, $11, $21, $7, $7, $7
             FROM ended, unnest($19::text[]) AS s(sink)),
         {claim},
         start_noted AS (
             INSERT INTO outbox (task_id, seq, sink, state, from_state, to_state, reason,
                                 created_ms, window_ms, next_ms)
             SELECT id, event_count, s.sink, 'pending', 'queued', 'running', $26, $7, $7, $7
             FROM started, unnest(notify_to) AS s(sink) WHERE notify = ANY($25::text[]))
         SELECT ended.*, NULL AS was,
                (SELECT count(*) FROM picked WHERE was <> 'queued') AS resumable
         FROM ended
         UNION ALL
         SELECT started.*, 0 FROM started",
        claim = claim_ctes(
            usize::from(next_until.is_some()),
            "EXISTS (SELECT 1 FROM ended)",
            true,
            [7, 15, 22, 23, 24]
        ),
    );
    let mut params = store_params(tx, held.id, &laid.stored)?;
    params.extend(owned![
        held.lease,
        held.owner.clone(),
        from.as_str(),
        k.count,
        k.dropped,
        sinks.clone(),
        seq,
        reason.to_string(),
        next_until.unwrap_or(0),
        first.kind().to_string(),
        serde_json::to_value(&first).map_err(backend)?,
        announcing_a_start(),
        start_reason.clone(),
    ]);
    let rows = tx.rows(&sql, &borrowed(&params)).await?;
    // The ended row has no state before (`was`); the started ones do.
    let mut ended = None;
    let mut started = Vec::new();
    for r in &rows {
        match r.try_get::<_, Option<String>>(n + 4).map_err(pg)? {
            None => ended = Some(r),
            Some(_) => started.push(r),
        }
    }
    let Some(ended) = ended else {
        return Ok(None);
    };
    let resumable: i64 = ended.try_get(n + 5).map_err(pg)?;
    let mut done = Finished {
        task: row_to_task(ended)?,
        next: None,
        resume_next: resumable > 0,
    };
    let mut queued = !sinks.is_empty();
    for r in started {
        let task = row_to_task(r)?;
        let known = known(r, n)?;
        queued |= !known.sinks.is_empty()
            && announced(known.notify, Some(TaskState::Queued), TaskState::Running);
        let claim = Claim {
            lease: task.lease,
            owner: held.owner.clone(),
            task,
        };
        done.next = Some((claim, known));
    }
    if queued {
        tx.notify(super::postgres::OUTBOX_CHANNEL).await?;
    }
    Ok(Some(done))
}

/// Appends `events` for the task `held` holds, as
/// [`machine::append_held`](super::machine::append_held) does with no
/// capability calls among them, in one statement fenced on `seen`; the
/// row as it is left, and each event's seq (0 for one dropped at the
/// bound). `None` when the row is no longer as seen, or the events change
/// its state: nothing was written.
pub(super) async fn append(
    tx: &Tx<'_>,
    held: &Fence,
    seen: &Seen,
    events: &[TaskEvent],
    max: u64,
) -> Result<Option<(Known, Vec<u64>)>, StoreError> {
    let marker = bound_marker(max);
    let k = &seen.known;
    let laid = Layout::of(events, &marker, (k.count, k.dropped), max, None);
    if !laid.states.is_empty() {
        return Ok(None);
    }
    let mut params = batch_params(tx, held.id, &laid.stored)?;
    params.extend(owned![
        held.lease,
        held.owner.clone(),
        seen.state.as_str(),
        k.count,
        k.dropped,
    ]);
    let sql = format!(
        "WITH kept AS (
             UPDATE tasks SET {BATCH_SET}
             WHERE id = $1 AND lease = $11 AND owner = $12 AND state = $13
               AND event_count = $14 AND events_dropped = $15
             RETURNING id),
         stored AS ({INSERT_BATCH} WHERE EXISTS (SELECT 1 FROM kept))
         SELECT count(*) FROM kept"
    );
    let row = tx.one(&sql, &borrowed(&params)).await?;
    let kept: i64 = row.try_get(0).map_err(pg)?;
    let known = Known {
        count: laid.stored.count,
        dropped: k.dropped + laid.stored.newly_dropped,
        ..k.clone()
    };
    Ok((kept == 1).then_some((known, laid.seqs)))
}
