//! The PostgreSQL dialect of the task state machine: one [`Transaction`]
//! on a pooled connection. Rows a rule depends on are locked (`FOR
//! UPDATE`); claims skip rows another transaction is claiming (`SKIP
//! LOCKED`).
//!
//! Round trips: a task row this transaction holds is read once, with its
//! event counters and notify settings ([`Known`]); the counters then follow
//! this transaction's own writes, and writes are pipelined (see
//! [`super::postgres_pool`]).

use std::time::Duration;

use super::approval::Approval;
use super::audit::{AuditFilter, AuditHead, AuditRecord, Linked};
use super::backend::StoreError;
use super::machine::{Holder, Started, Stored, TASK_COLUMNS, Transaction};
use super::model::{Task, TaskEvent, TaskId, TaskSpec, TaskState};
use super::outbox::Delivery;
use super::postgres::{TASKS_CHANNEL, Tx, backend, pg, row_to_task};
use super::postgres_pool::{Known, Owned, borrowed, owned};
use super::schedule::{Schedule, Slot, SlotOutcome};

fn ids(rows: &[tokio_postgres::Row]) -> Result<Vec<TaskId>, StoreError> {
    rows.iter()
        .map(|r| {
            let id: String = r.try_get(0).map_err(pg)?;
            id.parse().map_err(StoreError::Backend)
        })
        .collect()
}

/// What a row read from column `at` on says of its task: `event_count,
/// events_dropped, notify, notify_to`.
pub(super) fn known(r: &tokio_postgres::Row, at: usize) -> Result<Known, StoreError> {
    let notify: String = r.try_get(at + 2).map_err(pg)?;
    Ok(Known {
        count: r.try_get(at).map_err(pg)?,
        dropped: r.try_get(at + 1).map_err(pg)?,
        notify: notify.parse().map_err(StoreError::Backend)?,
        sinks: r.try_get(at + 3).map_err(pg)?,
    })
}

/// The columns [`known`] reads.
pub(super) const KNOWN_COLUMNS: &str = "event_count, events_dropped, notify, notify_to";

impl Tx<'_> {
    /// A task just started, from a row of [`TASK_COLUMNS`],
    /// [`KNOWN_COLUMNS`] and the state it left; what this transaction
    /// knows of it is noted.
    pub(super) fn started(&self, r: &tokio_postgres::Row) -> Result<(TaskState, Task), StoreError> {
        let n = TASK_COLUMNS.split(',').count();
        let task = row_to_task(r)?;
        self.know(task.id, known(r, n)?);
        let was: String = r.try_get(n + 4).map_err(pg)?;
        Ok((was.parse().map_err(StoreError::Backend)?, task))
    }

    /// What this transaction knows of task `id`'s row, read once; `None`
    /// if there is no such task.
    pub(super) async fn held(&self, id: TaskId) -> Result<Option<Known>, StoreError> {
        if let Some(k) = self.known(id) {
            return Ok(Some(k));
        }
        let row = self
            .opt(
                &format!("SELECT {KNOWN_COLUMNS} FROM tasks WHERE id = $1"),
                &[&id.to_string()],
            )
            .await?;
        let Some(r) = row else { return Ok(None) };
        let k = known(&r, 0)?;
        self.know(id, k.clone());
        Ok(Some(k))
    }
}

/// Inserts a batch's events ($8 to $10, at $7) for task $1 (the
/// parameters of [`batch_params`]).
pub(super) const INSERT_BATCH: &str = "INSERT INTO events (task_id, seq, at_ms, kind, body)
     SELECT $1, e.seq, $7, e.kind, e.body
     FROM unnest($8::bigint[], $9::text[], $10::jsonb[]) AS e(seq, kind, body)";

/// What a batch sets in its task's row: the event count ($2), the events
/// newly dropped ($3) and the progress ($5, $6, when $4).
pub(super) const BATCH_SET: &str = "event_count = $2, events_dropped = events_dropped + $3,
     progress = CASE WHEN $4 THEN COALESCE($5, progress) ELSE progress END,
     progress_message = CASE WHEN $4 THEN $6 ELSE progress_message END";

/// Stores a batch ([`INSERT_BATCH`]) and, in one update of the task's row,
/// its counters and progress ([`BATCH_SET`]) and new state ($11, when not
/// null). A new state sets `ended_ms` ($12) and `outcome` ($13) when they
/// are not null; one other than `running` or `awaiting_approval` clears
/// the owner and the lease's expiry.
fn store_events_sql() -> String {
    format!(
        "WITH stored AS ({INSERT_BATCH})
         UPDATE tasks SET {BATCH_SET},
             state = COALESCE($11, state), ended_ms = COALESCE($12, ended_ms),
             owner = CASE WHEN $11 IS NULL OR $11 IN ('running', 'awaiting_approval')
                          THEN owner ELSE NULL END,
             lease_until_ms = CASE WHEN $11 IS NULL OR $11 IN ('running', 'awaiting_approval')
                                   THEN lease_until_ms ELSE NULL END,
             outcome = COALESCE($13, outcome)
         WHERE id = $1"
    )
}

/// The parameters of [`store_events_sql`] for `batch`; the transaction notes
/// the row's counters as they will be.
pub(super) fn store_params(
    tx: &Tx<'_>,
    id: TaskId,
    batch: &Stored<'_>,
) -> Result<Owned, StoreError> {
    let mut params = batch_params(tx, id, batch)?;
    let state = batch.state.as_ref();
    params.extend(owned![
        state.map(|s| s.to.as_str()),
        state.and_then(|s| s.ended_ms),
        state.and_then(|s| s.outcome).cloned(),
    ]);
    Ok(params)
}

/// The first ten parameters of [`store_events_sql`] for `batch` (its events,
/// counters and progress); the transaction notes the row's counters as
/// they will be.
pub(super) fn batch_params(
    tx: &Tx<'_>,
    id: TaskId,
    batch: &Stored<'_>,
) -> Result<Owned, StoreError> {
    let seqs: Vec<i64> = batch.events.iter().map(|(s, _)| *s).collect();
    let kinds: Vec<String> = batch
        .events
        .iter()
        .map(|(_, e)| e.kind().to_string())
        .collect();
    let bodies = batch
        .events
        .iter()
        .map(|(_, e)| serde_json::to_value(e).map_err(backend))
        .collect::<Result<Vec<_>, _>>()?;
    let (fraction, message) = batch.progress.unzip();
    tx.update_known(id, |k| {
        k.count = batch.count;
        k.dropped += batch.newly_dropped;
    });
    Ok(owned![
        id.to_string(),
        batch.count,
        batch.newly_dropped,
        batch.progress.is_some(),
        fraction.flatten().map(f64::from),
        message.map(str::to_string),
        batch.at_ms,
        seqs,
        kinds,
        bodies,
    ])
}

/// The common table expressions of a claim, in a statement's `WITH`:
/// - `picked`: up to `limit` of the oldest runnable tasks where `gate`
///   holds, their rows locked (rows another transaction is claiming are
///   skipped), with the state each was in (`was`);
/// - `started`: those of them started for the owner (with `queued_only`,
///   only those taken from the queue), returning [`TASK_COLUMNS`],
///   [`KNOWN_COLUMNS`] and `was`;
/// - `start_events`: the start event of each task started from the queue,
///   stored as its next event.
///
/// `p` numbers the statement's parameters for: now, the owner, the lease's
/// expiry, the start event's kind and its body.
pub(super) fn claim_ctes(limit: usize, gate: &str, queued_only: bool, p: [usize; 5]) -> String {
    let [now, owner, until, kind, body] = p;
    let only = if queued_only {
        " AND was = 'queued'"
    } else {
        ""
    };
    format!(
        "picked AS (
             SELECT id AS pick, state AS was FROM tasks
             WHERE state IN ('queued', 'interrupted') AND NOT cancel_requested AND {gate}
             ORDER BY id LIMIT {limit} FOR UPDATE SKIP LOCKED),
         started AS (
             UPDATE tasks SET state = 'running', attempt = attempt + 1, started_ms = ${now},
                 owner = ${owner}, lease = lease + 1, lease_until_ms = ${until},
                 event_count = event_count + CASE WHEN was = 'queued' THEN 1 ELSE 0 END
             FROM picked WHERE id = picked.pick{only}
             RETURNING {TASK_COLUMNS}, {KNOWN_COLUMNS}, was),
         start_events AS (
             INSERT INTO events (task_id, seq, at_ms, kind, body)
             SELECT id, event_count, ${now}, ${kind}, ${body} FROM started WHERE was = 'queued')"
    )
}

impl Transaction for Tx<'_> {
    async fn task(&self, id: TaskId, lock: bool) -> Result<Task, StoreError> {
        let sql = if lock {
            format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 FOR UPDATE")
        } else {
            format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1")
        };
        match self.opt(&sql, &[&id.to_string()]).await? {
            Some(r) => row_to_task(&r),
            None => Err(StoreError::NotFound(id)),
        }
    }

    async fn holder(&self, id: TaskId) -> Result<Option<Holder>, StoreError> {
        // Locked: no other owner can take the task between the check and
        // the write.
        let row = self
            .opt(
                &format!(
                    "SELECT state, lease, owner, {KNOWN_COLUMNS} FROM tasks WHERE id = $1 FOR UPDATE"
                ),
                &[&id.to_string()],
            )
            .await?;
        let Some(r) = row else { return Ok(None) };
        self.know(id, known(&r, 3)?);
        let state: String = r.try_get(0).map_err(pg)?;
        Ok(Some((
            state.parse().map_err(StoreError::Backend)?,
            r.try_get(1).map_err(pg)?,
            r.try_get(2).map_err(pg)?,
        )))
    }

    async fn event_count(&self, id: TaskId) -> Result<Option<(i64, i64)>, StoreError> {
        Ok(self.held(id).await?.map(|k| (k.count, k.dropped)))
    }

    async fn store_events(&self, id: TaskId, batch: &Stored<'_>) -> Result<(), StoreError> {
        // One statement whatever their number, the task row's counters and
        // state included: what a running task's buffered events cost in
        // one round of the group commit.
        self.write(&store_events_sql(), store_params(self, id, batch)?)
            .await
    }

    async fn enqueue(
        &self,
        id: TaskId,
        seq: i64,
        from: Option<TaskState>,
        to: TaskState,
        reason: &str,
    ) -> Result<(), StoreError> {
        super::postgres_outbox::enqueue(self, id, seq, from, to, reason).await
    }

    async fn store_events_then_read(
        &self,
        id: TaskId,
        batch: &Stored<'_>,
    ) -> Result<Task, StoreError> {
        let sql = format!("{} RETURNING {TASK_COLUMNS}", store_events_sql());
        let params = store_params(self, id, batch)?;
        match self.opt(&sql, &borrowed(&params)).await? {
            Some(r) => row_to_task(&r),
            None => Err(StoreError::NotFound(id)),
        }
    }

    async fn insert_task(
        &self,
        id: TaskId,
        spec: &TaskSpec,
        created_ms: i64,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_value(spec).map_err(backend)?;
        self.write(
            "INSERT INTO tasks (id, spec, state, created_ms, label, parent_session, resume,
                                notify, notify_to)
             VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8)",
            owned![
                id.to_string(),
                body,
                created_ms,
                spec.label.clone(),
                spec.parent_session.clone(),
                spec.resume.as_str(),
                spec.notify.as_str(),
                spec.notify_to.clone(),
            ],
        )
        .await?;
        self.know(
            id,
            Known {
                count: 0,
                dropped: 0,
                notify: spec.notify,
                sinks: spec.notify_to.clone(),
            },
        );
        Ok(())
    }

    async fn start(
        &self,
        id: TaskId,
        now: i64,
        owner: &str,
        lease_until_ms: i64,
    ) -> Result<(TaskState, Task), StoreError> {
        // The state before comes from the subquery, read before the update.
        let sql = format!(
            "UPDATE tasks SET state = 'running', attempt = attempt + 1, started_ms = $2,
                 owner = $3, lease = lease + 1, lease_until_ms = $4
             FROM (SELECT state AS was FROM tasks WHERE id = $1) AS before
             WHERE id = $1
             RETURNING {TASK_COLUMNS}, {KNOWN_COLUMNS}, was"
        );
        let r = self
            .one(&sql, &[&id.to_string(), &now, &owner, &lease_until_ms])
            .await?;
        self.started(&r)
    }

    async fn flag_cancel(
        &self,
        id: TaskId,
        outcome: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        self.write(
            "UPDATE tasks SET cancel_requested = TRUE, outcome = COALESCE($2, outcome)
             WHERE id = $1",
            owned![id.to_string(), outcome.cloned()],
        )
        .await
    }

    async fn has_checkpoints(&self, id: TaskId) -> Result<bool, StoreError> {
        self.one(
            "SELECT EXISTS(SELECT 1 FROM checkpoints WHERE task_id = $1)",
            &[&id.to_string()],
        )
        .await?
        .try_get(0)
        .map_err(pg)
    }

    async fn put_checkpoint(
        &self,
        id: TaskId,
        key: &str,
        value: &[u8],
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(
            "INSERT INTO checkpoints (task_id, key, value, saved_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (task_id, key)
             DO UPDATE SET value = excluded.value, saved_ms = excluded.saved_ms",
            owned![id.to_string(), key.to_string(), value.to_vec(), at_ms],
        )
        .await
    }

    async fn extend_lease(&self, id: TaskId, until_ms: i64) -> Result<(), StoreError> {
        self.write(
            "UPDATE tasks SET lease_until_ms = $2 WHERE id = $1",
            owned![id.to_string(), until_ms],
        )
        .await
    }

    async fn start_runnable(
        &self,
        max: usize,
        now: i64,
        owner: &str,
        lease_until_ms: i64,
        first: &TaskEvent,
    ) -> Result<Vec<Started>, StoreError> {
        // Picked and started in one statement, which also stores `first`
        // as the event of each task started from `queued` (a resumed
        // task's event names its attempt: the machine stores it); `was`
        // is the state before. The limit is part of the text (one prepared
        // statement per number of free slots): as a parameter, it kept
        // PostgreSQL from ever settling on a generic plan, and it planned
        // the statement anew at each claim.
        let sql = format!(
            "WITH {} SELECT * FROM started",
            claim_ctes(max, "TRUE", false, [1, 2, 3, 4, 5])
        );
        let body = serde_json::to_value(first).map_err(backend)?;
        let rows = self
            .rows(&sql, &[&now, &owner, &lease_until_ms, &first.kind(), &body])
            .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                let (from, task) = self.started(r)?;
                let stored = (from == TaskState::Queued)
                    .then(|| self.known(task.id).map(|k| k.count))
                    .flatten();
                Ok(Started { from, task, stored })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort_by_key(|s| s.task.id);
        Ok(out)
    }

    async fn any_runnable(&self) -> Result<bool, StoreError> {
        self.one(
            "SELECT EXISTS(SELECT 1 FROM tasks
                           WHERE state IN ('queued', 'interrupted') AND NOT cancel_requested)",
            &[],
        )
        .await?
        .try_get(0)
        .map_err(pg)
    }

    async fn orphans(&self, now: i64, dead_owner: Option<&str>) -> Result<Vec<TaskId>, StoreError> {
        // Waits for (rather than skips) a row a live owner is writing: once
        // its heartbeat commits, the row no longer qualifies.
        let rows = self
            .rows(
                "SELECT id FROM tasks WHERE state IN ('running', 'awaiting_approval')
                 AND (lease_until_ms < $1 OR ($2::text IS NOT NULL AND owner = $2))
                 ORDER BY id FOR UPDATE",
                &[&now, &dead_owner],
            )
            .await?;
        ids(&rows)
    }

    async fn release_deliveries(
        &self,
        now: i64,
        dead_owner: Option<&str>,
    ) -> Result<(), StoreError> {
        super::postgres_outbox::release(self, now, dead_owner).await
    }

    async fn lease_deliveries(
        &self,
        id: TaskId,
        owner: &str,
        now: i64,
        lease_for: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        if self.known(id).is_some_and(|k| k.sinks.is_empty()) {
            // No sink, no notification to lease.
            return Ok(Vec::new());
        }
        super::postgres_outbox::lease_task(self, id, owner, now, lease_for).await
    }

    async fn wake_workers(&self) -> Result<(), StoreError> {
        self.notify(TASKS_CHANNEL).await
    }

    async fn approvals(&self, id: TaskId) -> Result<Vec<Approval>, StoreError> {
        super::postgres::approvals(self, id).await
    }

    async fn put_approval(&self, a: &Approval) -> Result<(), StoreError> {
        let body = serde_json::to_value(a).map_err(backend)?;
        self.exec(
            "INSERT INTO approvals (task_id, n, key, pending, body) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (task_id, n) DO UPDATE SET pending = $4, body = $5",
            &[
                &a.task_id.to_string(),
                &i64::from(a.id),
                &a.key,
                &a.is_pending(),
                &body,
            ],
        )
        .await?;
        Ok(())
    }

    async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        super::postgres_audit::head(self, true).await
    }

    async fn put_audit(&self, records: &[Linked<'_>], head: &AuditHead) -> Result<(), StoreError> {
        super::postgres_audit::put(self, records, head).await
    }

    async fn audit_record(&self, seq: u64) -> Result<Option<AuditRecord>, StoreError> {
        super::postgres_audit::record(self, seq).await
    }

    async fn audit_records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        super::postgres_audit::records(self, filter).await
    }

    async fn audit_kept_from(&self) -> Result<Option<u64>, StoreError> {
        super::postgres_audit::kept_from(self).await
    }

    async fn delete_audit_through(&self, seq: u64) -> Result<u64, StoreError> {
        super::postgres_audit::delete_through(self, seq).await
    }

    async fn schedule(&self, name: &str, lock: bool) -> Result<Option<Schedule>, StoreError> {
        super::postgres_schedule::get(self, name, lock).await
    }

    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        super::postgres_schedule::all(self).await
    }

    async fn due_schedules(&self, now: i64) -> Result<Vec<Schedule>, StoreError> {
        super::postgres_schedule::due(self, now).await
    }

    async fn insert_schedule(&self, schedule: &Schedule) -> Result<bool, StoreError> {
        super::postgres_schedule::insert(self, schedule).await
    }

    async fn update_schedule(&self, schedule: &Schedule) -> Result<(), StoreError> {
        super::postgres_schedule::update(self, schedule).await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        super::postgres_schedule::delete(self, name).await
    }

    async fn insert_slot(
        &self,
        name: &str,
        slot_ms: i64,
        at_ms: i64,
        outcome: SlotOutcome,
        task: Option<TaskId>,
    ) -> Result<bool, StoreError> {
        super::postgres_schedule::insert_slot(self, name, slot_ms, at_ms, outcome, task).await
    }

    async fn settle_slot(
        &self,
        name: &str,
        slot_ms: i64,
        task: Option<TaskId>,
    ) -> Result<bool, StoreError> {
        super::postgres_schedule::settle_slot(self, name, slot_ms, task).await
    }

    async fn slots(&self, name: &str, limit: u32) -> Result<Vec<Slot>, StoreError> {
        super::postgres_schedule::slots(self, name, limit).await
    }
}
