//! The SQLite dialect of the task state machine: one [`Transaction`] on
//! the writer's connection. Its futures never wait.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::approval::Approval;
use super::audit::{AuditFilter, AuditHead, AuditRecord, Linked};
use super::backend::StoreError;
use super::machine::{Holder, Started, Stored, Transaction};
use super::model::{Task, TaskEvent, TaskId, TaskSpec, TaskState};
use super::outbox::Delivery;
use super::schedule::{Schedule, Slot, SlotOutcome};
use super::sqlite::{Cached, backend, load};

/// A write transaction of the SQLite store.
pub(super) struct SqliteTx<'c>(pub(super) &'c Connection);

/// The oldest runnable tasks in one state: one index range per state
/// (`state IN (…) ORDER BY id` sorted every runnable task on each claim).
fn oldest(tx: &Connection, state: &str, max: usize) -> Result<Vec<String>, StoreError> {
    let mut st = tx
        .prepare_cached(
            "SELECT id FROM tasks WHERE state = ?1 AND cancel_requested = 0 ORDER BY id LIMIT ?2",
        )
        .map_err(backend)?;
    st.query_map(params![state, max as i64], |r| r.get(0))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)
}

fn ids(raw: Vec<String>) -> Result<Vec<TaskId>, StoreError> {
    raw.iter()
        .map(|s| s.parse().map_err(StoreError::Backend))
        .collect()
}

impl Transaction for SqliteTx<'_> {
    async fn task(&self, id: TaskId, _lock: bool) -> Result<Task, StoreError> {
        load(self.0, id)
    }

    async fn holder(&self, id: TaskId) -> Result<Option<Holder>, StoreError> {
        let row: Option<(String, i64, Option<String>)> = self
            .0
            .row(
                "SELECT state, lease, owner FROM tasks WHERE id = ?1",
                params![id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(backend)?;
        row.map(|(state, lease, owner)| {
            Ok((state.parse().map_err(StoreError::Backend)?, lease, owner))
        })
        .transpose()
    }

    async fn event_count(&self, id: TaskId) -> Result<Option<(i64, i64)>, StoreError> {
        self.0
            .row(
                "SELECT event_count, events_dropped FROM tasks WHERE id = ?1",
                params![id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(backend)
    }

    async fn store_events(&self, id: TaskId, batch: &Stored<'_>) -> Result<(), StoreError> {
        for (seq, event) in &batch.events {
            let body = serde_json::to_string(event).map_err(backend)?;
            self.0
                .exec(
                    "INSERT INTO events (task_id, seq, at_ms, kind, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id.to_string(), seq, batch.at_ms, event.kind(), body],
                )
                .map_err(backend)?;
        }
        let (fraction, message) = batch.progress.unzip();
        let state = batch.state.as_ref();
        self.0
            .exec(
                "UPDATE tasks SET event_count = ?2, events_dropped = events_dropped + ?3,
                     progress = CASE WHEN ?4 THEN COALESCE(?5, progress) ELSE progress END,
                     progress_message = CASE WHEN ?4 THEN ?6 ELSE progress_message END,
                     state = COALESCE(?7, state), ended_ms = COALESCE(?8, ended_ms),
                     owner = CASE WHEN ?7 IS NULL OR ?7 IN ('running', 'awaiting_approval')
                                  THEN owner ELSE NULL END,
                     lease_until_ms = CASE WHEN ?7 IS NULL OR ?7 IN ('running', 'awaiting_approval')
                                           THEN lease_until_ms ELSE NULL END,
                     outcome = COALESCE(?9, outcome)
                 WHERE id = ?1",
                params![
                    id.to_string(),
                    batch.count,
                    batch.newly_dropped,
                    batch.progress.is_some(),
                    fraction.flatten().map(f64::from),
                    message,
                    state.map(|s| s.to.as_str()),
                    state.and_then(|s| s.ended_ms),
                    state.and_then(|s| s.outcome).map(|o| o.to_string()),
                ],
            )
            .map_err(backend)?;
        Ok(())
    }

    async fn enqueue(
        &self,
        id: TaskId,
        seq: i64,
        from: Option<TaskState>,
        to: TaskState,
        reason: &str,
    ) -> Result<(), StoreError> {
        super::sqlite_outbox::enqueue(self.0, id, seq, from, to, reason)
    }

    async fn insert_task(
        &self,
        id: TaskId,
        spec: &TaskSpec,
        created_ms: i64,
    ) -> Result<(), StoreError> {
        self.0
            .exec(
                "INSERT INTO tasks (id, spec, state, created_ms, label, parent_session, resume,
                                    notify, notify_to)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    id.to_string(),
                    serde_json::to_string(spec).map_err(backend)?,
                    created_ms,
                    spec.label,
                    spec.parent_session,
                    spec.resume.as_str(),
                    spec.notify.as_str(),
                    serde_json::to_string(&spec.notify_to).map_err(backend)?
                ],
            )
            .map_err(backend)?;
        Ok(())
    }

    async fn start(
        &self,
        id: TaskId,
        now: i64,
        owner: &str,
        lease_until_ms: i64,
    ) -> Result<(TaskState, Task), StoreError> {
        let state: String = self
            .0
            .row(
                "SELECT state FROM tasks WHERE id = ?1",
                params![id.to_string()],
                |r| r.get(0),
            )
            .map_err(backend)?;
        self.0
            .exec(
                "UPDATE tasks SET state = 'running', attempt = attempt + 1, started_ms = ?2,
                     owner = ?3, lease = lease + 1, lease_until_ms = ?4
                 WHERE id = ?1",
                params![id.to_string(), now, owner, lease_until_ms],
            )
            .map_err(backend)?;
        let task = self.task(id, false).await?;
        Ok((state.parse().map_err(StoreError::Backend)?, task))
    }

    async fn flag_cancel(
        &self,
        id: TaskId,
        outcome: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        self.0
            .exec(
                "UPDATE tasks SET cancel_requested = 1, outcome = COALESCE(?2, outcome) WHERE id = ?1",
                params![id.to_string(), outcome.map(|o| o.to_string())],
            )
            .map_err(backend)?;
        Ok(())
    }

    async fn has_checkpoints(&self, id: TaskId) -> Result<bool, StoreError> {
        self.0
            .row(
                "SELECT EXISTS(SELECT 1 FROM checkpoints WHERE task_id = ?1)",
                params![id.to_string()],
                |r| r.get(0),
            )
            .map_err(backend)
    }

    async fn put_checkpoint(
        &self,
        id: TaskId,
        key: &str,
        value: &[u8],
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.0
            .exec(
                "INSERT INTO checkpoints (task_id, key, value, saved_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (task_id, key) DO UPDATE SET value = excluded.value, saved_ms = excluded.saved_ms",
                params![id.to_string(), key, value, at_ms],
            )
            .map_err(backend)?;
        Ok(())
    }

    async fn extend_lease(&self, id: TaskId, until_ms: i64) -> Result<(), StoreError> {
        self.0
            .exec(
                "UPDATE tasks SET lease_until_ms = ?2 WHERE id = ?1",
                params![id.to_string(), until_ms],
            )
            .map_err(backend)?;
        Ok(())
    }

    async fn start_runnable(
        &self,
        max: usize,
        now: i64,
        owner: &str,
        lease_until_ms: i64,
        _first: &TaskEvent,
    ) -> Result<Vec<Started>, StoreError> {
        // Statements here cost no round trip: the machine stores every
        // start event itself.
        let mut all = oldest(self.0, "queued", max)?;
        all.extend(oldest(self.0, "interrupted", max)?);
        all.sort();
        all.truncate(max);
        let mut out = Vec::new();
        for id in ids(all)? {
            let (from, task) = self.start(id, now, owner, lease_until_ms).await?;
            out.push(Started {
                from,
                task,
                stored: None,
            });
        }
        Ok(out)
    }

    async fn any_runnable(&self) -> Result<bool, StoreError> {
        self.0
            .row(
                "SELECT EXISTS(SELECT 1 FROM tasks WHERE state IN ('queued', 'interrupted') AND cancel_requested = 0)",
                [],
                |r| r.get(0),
            )
            .map_err(backend)
    }

    async fn orphans(&self, now: i64, dead_owner: Option<&str>) -> Result<Vec<TaskId>, StoreError> {
        let mut st = self
            .0
            .prepare_cached(
                "SELECT id FROM tasks WHERE state IN ('running', 'awaiting_approval')
                 AND (lease_until_ms < ?1 OR (?2 IS NOT NULL AND owner = ?2)) ORDER BY id",
            )
            .map_err(backend)?;
        let raw = st
            .query_map(params![now, dead_owner], |r| r.get(0))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        ids(raw)
    }

    async fn release_deliveries(
        &self,
        now: i64,
        dead_owner: Option<&str>,
    ) -> Result<(), StoreError> {
        super::sqlite_outbox::release(self.0, now, dead_owner)
    }

    async fn lease_deliveries(
        &self,
        id: TaskId,
        owner: &str,
        now: i64,
        lease_for: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        super::sqlite_outbox::lease_task(self.0, id, owner, now, lease_for)
    }

    async fn wake_workers(&self) -> Result<(), StoreError> {
        // One host writes this store: its own worker is woken directly.
        Ok(())
    }

    async fn approvals(&self, id: TaskId) -> Result<Vec<Approval>, StoreError> {
        super::sqlite::approvals(self.0, id)
    }

    async fn put_approval(&self, a: &Approval) -> Result<(), StoreError> {
        let body = serde_json::to_string(a).map_err(backend)?;
        self.0
            .exec(
                "INSERT INTO approvals (task_id, n, key, pending, body) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (task_id, n) DO UPDATE SET pending = ?4, body = ?5",
                params![a.task_id.to_string(), a.id, a.key, a.is_pending(), body],
            )
            .map_err(backend)?;
        Ok(())
    }

    async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        super::sqlite_audit::head(self.0)
    }

    async fn put_audit(&self, records: &[Linked<'_>], head: &AuditHead) -> Result<(), StoreError> {
        super::sqlite_audit::put(self.0, records, head)
    }

    async fn audit_record(&self, seq: u64) -> Result<Option<AuditRecord>, StoreError> {
        super::sqlite_audit::record(self.0, seq)
    }

    async fn audit_records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        super::sqlite_audit::records(self.0, filter)
    }

    async fn audit_kept_from(&self) -> Result<Option<u64>, StoreError> {
        super::sqlite_audit::kept_from(self.0)
    }

    async fn delete_audit_through(&self, seq: u64) -> Result<u64, StoreError> {
        super::sqlite_audit::delete_through(self.0, seq)
    }

    async fn schedule(&self, name: &str, _lock: bool) -> Result<Option<Schedule>, StoreError> {
        super::sqlite_schedule::get(self.0, name)
    }

    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        super::sqlite_schedule::all(self.0)
    }

    async fn due_schedules(&self, now: i64) -> Result<Vec<Schedule>, StoreError> {
        super::sqlite_schedule::due(self.0, now)
    }

    async fn insert_schedule(&self, schedule: &Schedule) -> Result<bool, StoreError> {
        super::sqlite_schedule::insert(self.0, schedule)
    }

    async fn update_schedule(&self, schedule: &Schedule) -> Result<(), StoreError> {
        super::sqlite_schedule::update(self.0, schedule)
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        super::sqlite_schedule::delete(self.0, name)
    }

    async fn insert_slot(
        &self,
        name: &str,
        slot_ms: i64,
        at_ms: i64,
        outcome: SlotOutcome,
        task: Option<TaskId>,
    ) -> Result<bool, StoreError> {
        super::sqlite_schedule::insert_slot(self.0, name, slot_ms, at_ms, outcome, task)
    }

    async fn settle_slot(
        &self,
        name: &str,
        slot_ms: i64,
        task: Option<TaskId>,
    ) -> Result<bool, StoreError> {
        super::sqlite_schedule::settle_slot(self.0, name, slot_ms, task)
    }

    async fn slots(&self, name: &str, limit: u32) -> Result<Vec<Slot>, StoreError> {
        super::sqlite_schedule::slots(self.0, name, limit)
    }
}
