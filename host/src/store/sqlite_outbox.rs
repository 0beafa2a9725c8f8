//! The SQLite store's outbox: notification rows written in the transaction
//! of the state change they announce, claimed and settled by the relay.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::backend::{StoreError, now_ms};
use super::model::{NotifyMode, TaskId, TaskState};
use super::outbox::{
    Attempt, COLUMNS, Delivery, DeliveryRow, FIRST_OF_ITS_SINK, Verdict, announced, settled,
};
use super::sqlite::{Cached, backend};

/// Migration 2: the outbox, and the task columns that decide what goes in.
pub(super) const MIGRATION: &str =
    "ALTER TABLE tasks ADD COLUMN notify TEXT NOT NULL DEFAULT 'done-only';
    ALTER TABLE tasks ADD COLUMN notify_to TEXT NOT NULL DEFAULT '[]';
    UPDATE tasks SET notify = COALESCE(json_extract(spec, '$.notify'), 'done-only');
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        task_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        sink TEXT NOT NULL,
        state TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        window_ms INTEGER NOT NULL,
        next_ms INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        owner TEXT,
        lease_until_ms INTEGER,
        delivered_ms INTEGER,
        last_status INTEGER,
        last_error TEXT,
        UNIQUE (task_id, sink, seq)
    );
    CREATE INDEX outbox_free ON outbox(next_ms)
        WHERE state = 'pending' AND lease_until_ms IS NULL;
    CREATE INDEX outbox_leased ON outbox(lease_until_ms)
        WHERE state = 'pending' AND lease_until_ms IS NOT NULL;
    CREATE TABLE outbox_attempts (
        outbox_id INTEGER NOT NULL,
        n INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        status INTEGER,
        detail TEXT,
        ok INTEGER NOT NULL,
        PRIMARY KEY (outbox_id, n)
    ) WITHOUT ROWID;";

/// Queues the notifications a state change of task `id` (stored as event
/// `seq`) calls for, by the task's notify mode and sinks.
pub(super) fn enqueue(
    tx: &Connection,
    id: TaskId,
    seq: i64,
    from: Option<TaskState>,
    to: TaskState,
    reason: &str,
) -> Result<(), StoreError> {
    let (mode, sinks): (String, String) = tx
        .row(
            "SELECT notify, notify_to FROM tasks WHERE id = ?1",
            params![id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(backend)?;
    if sinks == "[]" {
        return Ok(());
    }
    let mode: NotifyMode = mode.parse().map_err(StoreError::Backend)?;
    if !announced(mode, from, to) {
        return Ok(());
    }
    let sinks: Vec<String> = serde_json::from_str(&sinks).map_err(backend)?;
    let now = now_ms();
    for sink in sinks {
        tx.exec(
            "INSERT INTO outbox (task_id, seq, sink, state, from_state, to_state, reason,
                                 created_ms, window_ms, next_ms)
             VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?7, ?7)",
            params![
                id.to_string(),
                seq,
                sink,
                from.map(TaskState::as_str),
                to.as_str(),
                reason,
                now
            ],
        )
        .map_err(backend)?;
    }
    Ok(())
}

fn row_to_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: r.get(0)?,
        task_id: r.get(1)?,
        seq: r.get(2)?,
        sink: r.get(3)?,
        state: r.get(4)?,
        from: r.get(5)?,
        to: r.get(6)?,
        reason: r.get(7)?,
        created_ms: r.get(8)?,
        window_ms: r.get(9)?,
        next_ms: r.get(10)?,
        attempts: r.get(11)?,
        delivered_ms: r.get(12)?,
        last_status: r.get(13)?,
        last_error: r.get(14)?,
    })
}

fn load(tx: &Connection, id: i64) -> Result<Delivery, StoreError> {
    tx.row(
        &format!("SELECT {COLUMNS} FROM outbox WHERE id = ?1"),
        params![id],
        row_to_delivery,
    )
    .optional()
    .map_err(backend)?
    .ok_or_else(|| StoreError::Conflict(format!("no delivery {id}")))?
    .parse()
}

/// Takes up to `max` due notifications for `owner`: pending, due by `now`,
/// not leased by a live owner, and the oldest pending one of their task and
/// sink (so that a task's changes arrive in order).
pub(super) fn claim(
    tx: &Connection,
    owner: &str,
    now: i64,
    max: usize,
    lease_for: Duration,
) -> Result<Vec<Delivery>, StoreError> {
    // Two index ranges: unleased rows by due time, and rows whose lease
    // ran out (their owner died or hung).
    let mut ids = Vec::new();
    for sql in [
        format!(
            "SELECT o.id FROM outbox o
             WHERE o.state = 'pending' AND o.lease_until_ms IS NULL AND o.next_ms <= ?1
               AND {FIRST_OF_ITS_SINK}
             ORDER BY o.next_ms LIMIT ?2"
        ),
        format!(
            "SELECT o.id FROM outbox o
             WHERE o.state = 'pending' AND o.lease_until_ms IS NOT NULL AND o.lease_until_ms < ?1
               AND o.next_ms <= ?1 AND {FIRST_OF_ITS_SINK}
             ORDER BY o.lease_until_ms LIMIT ?2"
        ),
    ] {
        let want = max - ids.len();
        if want == 0 {
            break;
        }
        let mut st = tx.prepare_cached(&sql).map_err(backend)?;
        let found: Vec<i64> = st
            .query_map(params![now, want as i64], |r| r.get(0))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        ids.extend(found);
    }
    lease_rows(tx, ids, owner, now, lease_for)
}

/// Leases task `task`'s claimable notifications (pending, due, unleased,
/// first in their sink's order) to `owner`: those its end just queued.
pub(super) fn lease_task(
    tx: &Connection,
    task: TaskId,
    owner: &str,
    now: i64,
    lease_for: Duration,
) -> Result<Vec<Delivery>, StoreError> {
    let ids: Vec<i64> = {
        let mut st = tx
            .prepare_cached(&format!(
                "SELECT o.id FROM outbox o
                 WHERE o.task_id = ?1 AND o.state = 'pending' AND o.next_ms <= ?2
                   AND o.lease_until_ms IS NULL AND {FIRST_OF_ITS_SINK}
                 ORDER BY o.id"
            ))
            .map_err(backend)?;
        st.query_map(params![task.to_string(), now], |r| r.get(0))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?
    };
    lease_rows(tx, ids, owner, now, lease_for)
}

fn lease_rows(
    tx: &Connection,
    ids: Vec<i64>,
    owner: &str,
    now: i64,
    lease_for: Duration,
) -> Result<Vec<Delivery>, StoreError> {
    let until = now + lease_for.as_millis() as i64;
    ids.into_iter()
        .map(|id| {
            tx.exec(
                "UPDATE outbox SET owner = ?2, lease_until_ms = ?3 WHERE id = ?1",
                params![id, owner, until],
            )
            .map_err(backend)?;
            load(tx, id)
        })
        .collect()
}

/// Records an attempt on row `id` and settles the row by `verdict`; a row
/// already settled (by another owner) keeps its state.
pub(super) fn record(
    tx: &Connection,
    id: i64,
    attempt: &Attempt,
    verdict: Verdict,
) -> Result<(), StoreError> {
    let n: i64 = tx
        .row(
            "SELECT attempts + 1 FROM outbox WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?
        .ok_or_else(|| StoreError::Conflict(format!("no delivery {id}")))?;
    tx.exec(
        "INSERT INTO outbox_attempts (outbox_id, n, at_ms, duration_ms, status, detail, ok)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            id,
            n,
            attempt.at_ms,
            attempt.duration_ms as i64,
            attempt.status,
            attempt.detail,
            attempt.ok
        ],
    )
    .map_err(backend)?;
    let (state, next, delivered) = settled(verdict, now_ms());
    let error = (!attempt.ok).then_some(attempt.detail.as_deref()).flatten();
    tx.exec(
        "UPDATE outbox SET attempts = ?2, owner = NULL, lease_until_ms = NULL,
             last_status = CASE WHEN state = 'pending' THEN ?3 ELSE last_status END,
             last_error = CASE WHEN state = 'pending' THEN ?4 ELSE last_error END,
             state = CASE WHEN state = 'pending' THEN ?5 ELSE state END,
             next_ms = CASE WHEN state = 'pending' THEN ?6 ELSE next_ms END,
             delivered_ms = CASE WHEN state = 'pending' THEN ?7 ELSE delivered_ms END
         WHERE id = ?1",
        params![
            id,
            n,
            attempt.status,
            error,
            state.as_str(),
            next,
            delivered
        ],
    )
    .map_err(backend)?;
    Ok(())
}

/// Task `task`'s notifications with their attempts, oldest first.
pub(super) fn list(tx: &Connection, task: TaskId) -> Result<Vec<Delivery>, StoreError> {
    let mut out: Vec<Delivery> = {
        let mut st = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM outbox WHERE task_id = ?1 ORDER BY seq, sink"
            ))
            .map_err(backend)?;
        let rows = st
            .query_map(params![task.to_string()], row_to_delivery)
            .map_err(backend)?;
        rows.map(|r| r.map_err(backend)?.parse())
            .collect::<Result<_, StoreError>>()?
    };
    let mut st = tx
        .prepare_cached(
            "SELECT at_ms, duration_ms, status, detail, ok FROM outbox_attempts
             WHERE outbox_id = ?1 ORDER BY n",
        )
        .map_err(backend)?;
    for d in &mut out {
        d.history = st
            .query_map(params![d.id], |r| {
                Ok(Attempt {
                    at_ms: r.get(0)?,
                    duration_ms: r.get::<_, i64>(1)? as u64,
                    status: r.get::<_, Option<i64>>(2)?.map(|s| s as u16),
                    detail: r.get(3)?,
                    ok: r.get(4)?,
                })
            })
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
    }
    Ok(out)
}

/// Puts task `task`'s failed notifications back in the queue, due now with
/// a fresh retry window; returns how many.
pub(super) fn redeliver(tx: &Connection, task: TaskId) -> Result<usize, StoreError> {
    let now = now_ms();
    tx.exec(
        "UPDATE outbox SET state = 'pending', window_ms = ?2, next_ms = ?2
         WHERE task_id = ?1 AND state = 'failed'",
        params![task.to_string(), now],
    )
    .map_err(backend)
}

/// When the earliest pending notification can be claimed: due, its lease
/// (if any) run out, and first in its task's and sink's order.
pub(super) fn next_due(tx: &Connection) -> Result<Option<i64>, StoreError> {
    // Index lookups, not a scan: the earliest unleased row that is first
    // of its sink, and the earliest lease to run out.
    tx.row(
        &format!(
            "SELECT MIN(t) FROM (
                 SELECT * FROM (SELECT o.next_ms AS t FROM outbox o
                                WHERE o.state = 'pending' AND o.lease_until_ms IS NULL
                                  AND {FIRST_OF_ITS_SINK}
                                ORDER BY o.next_ms LIMIT 1)
                 UNION ALL
                 SELECT MIN(lease_until_ms) + 1 FROM outbox
                 WHERE state = 'pending' AND lease_until_ms IS NOT NULL)"
        ),
        [],
        |r| r.get(0),
    )
    .map_err(backend)
}

/// Frees the notifications a dead owner (or any owner whose lease ran out
/// by `now`) was sending.
pub(super) fn release(
    tx: &Connection,
    now: i64,
    dead_owner: Option<&str>,
) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE outbox SET owner = NULL, lease_until_ms = NULL
         WHERE state = 'pending' AND owner IS NOT NULL
           AND (lease_until_ms < ?1 OR (?2 IS NOT NULL AND owner = ?2))",
        params![now, dead_owner],
    )
    .map_err(backend)?;
    Ok(())
}

/// Deletes the notifications of the tasks matching `cond` (an SQL
/// condition on `tasks` taking `?1`).
pub(super) fn prune(
    tx: &Connection,
    cond: &str,
    before_ms: i64,
    only: Option<&str>,
) -> Result<(), StoreError> {
    tx.exec(
        &format!(
            "DELETE FROM outbox_attempts WHERE outbox_id IN
             (SELECT id FROM outbox WHERE task_id IN (SELECT id FROM tasks WHERE {cond}))"
        ),
        params![before_ms, only],
    )
    .map_err(backend)?;
    tx.exec(
        &format!("DELETE FROM outbox WHERE task_id IN (SELECT id FROM tasks WHERE {cond})"),
        params![before_ms, only],
    )
    .map_err(backend)?;
    Ok(())
}
