//! The PostgreSQL store's outbox: notification rows written in the
//! transaction of the state change they announce, claimed (`FOR UPDATE
//! SKIP LOCKED`) and settled by the relays of every host.

use std::time::Duration;

use tokio_postgres::Row;

use super::backend::{StoreError, now_ms};
use super::model::{TaskId, TaskState};
use super::outbox::{
    Attempt, COLUMNS, Delivery, DeliveryRow, FIRST_OF_ITS_SINK, Verdict, announced, settled,
};
use super::postgres::{OUTBOX_CHANNEL, Tx, pg};
use super::postgres_pool::owned;

/// Migration 2: the outbox.
pub(super) const MIGRATION: &str = r#"CREATE TABLE outbox (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        task_id TEXT COLLATE "C" NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        sink TEXT COLLATE "C" NOT NULL,
        state TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        window_ms BIGINT NOT NULL,
        next_ms BIGINT,
        attempts BIGINT NOT NULL DEFAULT 0,
        owner TEXT,
        lease_until_ms BIGINT,
        delivered_ms BIGINT,
        last_status INTEGER,
        last_error TEXT,
        UNIQUE (task_id, sink, seq)
    );
    CREATE INDEX outbox_free ON outbox (next_ms)
        WHERE state = 'pending' AND lease_until_ms IS NULL;
    CREATE INDEX outbox_leased ON outbox (lease_until_ms)
        WHERE state = 'pending' AND lease_until_ms IS NOT NULL;
    CREATE TABLE outbox_attempts (
        outbox_id BIGINT NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
        n BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        duration_ms BIGINT NOT NULL,
        status INTEGER,
        detail TEXT,
        ok BOOLEAN NOT NULL,
        PRIMARY KEY (outbox_id, n)
    );"#;

/// Queues the notifications a state change of task `id` (stored as event
/// `seq`) calls for, by the task's notify mode and sinks.
pub(super) async fn enqueue(
    tx: &Tx<'_>,
    id: TaskId,
    seq: i64,
    from: Option<TaskState>,
    to: TaskState,
    reason: &str,
) -> Result<(), StoreError> {
    let Some(held) = tx.held(id).await? else {
        return Err(StoreError::NotFound(id));
    };
    if held.sinks.is_empty() || !announced(held.notify, from, to) {
        return Ok(());
    }
    let now = now_ms();
    for sink in held.sinks {
        tx.write(
            "INSERT INTO outbox (task_id, seq, sink, state, from_state, to_state, reason,
                                 created_ms, window_ms, next_ms)
             VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $7, $7)",
            owned![
                id.to_string(),
                seq,
                sink,
                from.map(TaskState::as_str),
                to.as_str(),
                reason.to_string(),
                now,
            ],
        )
        .await?;
    }
    tx.notify(OUTBOX_CHANNEL).await
}

fn row_to_delivery(r: &Row) -> Result<Delivery, StoreError> {
    let get = |e| pg(e);
    DeliveryRow {
        id: r.try_get(0).map_err(get)?,
        task_id: r.try_get(1).map_err(get)?,
        seq: r.try_get(2).map_err(get)?,
        sink: r.try_get(3).map_err(get)?,
        state: r.try_get(4).map_err(get)?,
        from: r.try_get(5).map_err(get)?,
        to: r.try_get(6).map_err(get)?,
        reason: r.try_get(7).map_err(get)?,
        created_ms: r.try_get(8).map_err(get)?,
        window_ms: r.try_get(9).map_err(get)?,
        next_ms: r.try_get(10).map_err(get)?,
        attempts: r.try_get(11).map_err(get)?,
        delivered_ms: r.try_get(12).map_err(get)?,
        last_status: r.try_get::<_, Option<i32>>(13).map_err(get)?.map(i64::from),
        last_error: r.try_get(14).map_err(get)?,
    }
    .parse()
}

/// Takes up to `max` due notifications for `owner`: pending, due by `now`,
/// not leased by a live owner, and the oldest pending one of their task and
/// sink (so that a task's changes arrive in order). Rows another relay is
/// claiming are skipped, not waited for.
pub(super) async fn claim(
    tx: &Tx<'_>,
    owner: String,
    now: i64,
    max: usize,
    lease_for: Duration,
) -> Result<Vec<Delivery>, StoreError> {
    // Two index ranges: unleased rows by due time, and rows whose lease
    // ran out (their owner died or hung).
    let mut ids: Vec<i64> = Vec::new();
    for sql in [
        format!(
            "SELECT o.id FROM outbox o
             WHERE o.state = 'pending' AND o.lease_until_ms IS NULL AND o.next_ms <= $1
               AND {FIRST_OF_ITS_SINK}
             ORDER BY o.next_ms LIMIT $2 FOR UPDATE OF o SKIP LOCKED"
        ),
        format!(
            "SELECT o.id FROM outbox o
             WHERE o.state = 'pending' AND o.lease_until_ms IS NOT NULL AND o.lease_until_ms < $1
               AND o.next_ms <= $1 AND {FIRST_OF_ITS_SINK}
             ORDER BY o.lease_until_ms LIMIT $2 FOR UPDATE OF o SKIP LOCKED"
        ),
    ] {
        let want = max - ids.len();
        if want == 0 {
            break;
        }
        for r in tx.rows(&sql, &[&now, &(want as i64)]).await? {
            ids.push(r.try_get(0).map_err(pg)?);
        }
    }
    lease_rows(tx, ids, &owner, now, lease_for).await
}

/// Leases task `task`'s claimable notifications (pending, due, unleased,
/// first in their sink's order) to `owner`: those its end just queued.
pub(super) async fn lease_task(
    tx: &Tx<'_>,
    task: TaskId,
    owner: &str,
    now: i64,
    lease_for: Duration,
) -> Result<Vec<Delivery>, StoreError> {
    // Chosen and leased in one statement.
    let until = now + lease_for.as_millis() as i64;
    let rows = tx
        .rows(
            &format!(
                "UPDATE outbox SET owner = $3, lease_until_ms = $4 WHERE id IN (
                     SELECT o.id FROM outbox o
                     WHERE o.task_id = $1 AND o.state = 'pending' AND o.next_ms <= $2
                       AND o.lease_until_ms IS NULL AND {FIRST_OF_ITS_SINK}
                     FOR UPDATE OF o SKIP LOCKED)
                 RETURNING {COLUMNS}"
            ),
            &[&task.to_string(), &now, &owner, &until],
        )
        .await?;
    let mut leased = rows
        .iter()
        .map(row_to_delivery)
        .collect::<Result<Vec<_>, _>>()?;
    // In the order they were queued.
    leased.sort_by_key(|d| d.id);
    Ok(leased)
}

async fn lease_rows(
    tx: &Tx<'_>,
    ids: Vec<i64>,
    owner: &str,
    now: i64,
    lease_for: Duration,
) -> Result<Vec<Delivery>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let until = now + lease_for.as_millis() as i64;
    let rows = tx
        .rows(
            &format!(
                "UPDATE outbox SET owner = $2, lease_until_ms = $3 WHERE id = ANY($1)
                 RETURNING {COLUMNS}"
            ),
            &[&ids, &owner, &until],
        )
        .await?;
    let mut leased = rows
        .iter()
        .map(row_to_delivery)
        .collect::<Result<Vec<_>, _>>()?;
    // In the order they were chosen.
    leased.sort_by_key(|d| ids.iter().position(|id| *id == d.id));
    Ok(leased)
}

/// Records an attempt on row `id` and settles the row by `verdict`; a row
/// already settled (by another owner) keeps its state.
pub(super) async fn record(
    tx: &Tx<'_>,
    id: i64,
    attempt: &Attempt,
    verdict: Verdict,
) -> Result<(), StoreError> {
    let n: i64 = tx
        .opt(
            "SELECT attempts + 1 FROM outbox WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("no delivery {id}")))?
        .try_get(0)
        .map_err(pg)?;
    let status = attempt.status.map(i32::from);
    tx.exec(
        "INSERT INTO outbox_attempts (outbox_id, n, at_ms, duration_ms, status, detail, ok)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &id,
            &n,
            &attempt.at_ms,
            &(attempt.duration_ms as i64),
            &status,
            &attempt.detail,
            &attempt.ok,
        ],
    )
    .await?;
    let (state, next, delivered) = settled(verdict, now_ms());
    let error = (!attempt.ok).then_some(attempt.detail.as_deref()).flatten();
    tx.exec(
        "UPDATE outbox SET attempts = $2, owner = NULL, lease_until_ms = NULL,
             last_status = CASE WHEN state = 'pending' THEN $3 ELSE last_status END,
             last_error = CASE WHEN state = 'pending' THEN $4 ELSE last_error END,
             state = CASE WHEN state = 'pending' THEN $5 ELSE state END,
             next_ms = CASE WHEN state = 'pending' THEN $6 ELSE next_ms END,
             delivered_ms = CASE WHEN state = 'pending' THEN $7 ELSE delivered_ms END
         WHERE id = $1",
        &[&id, &n, &status, &error, &state.as_str(), &next, &delivered],
    )
    .await?;
    // Settled or rescheduled: the next of its sink may go, or the relays'
    // next due time moved.
    tx.notify(OUTBOX_CHANNEL).await
}

/// Task `task`'s notifications with their attempts, oldest first.
pub(super) async fn list(tx: &Tx<'_>, task: TaskId) -> Result<Vec<Delivery>, StoreError> {
    let rows = tx
        .rows(
            &format!("SELECT {COLUMNS} FROM outbox WHERE task_id = $1 ORDER BY seq, sink"),
            &[&task.to_string()],
        )
        .await?;
    let mut out = rows
        .iter()
        .map(row_to_delivery)
        .collect::<Result<Vec<_>, _>>()?;
    for d in &mut out {
        let rows = tx
            .rows(
                "SELECT at_ms, duration_ms, status, detail, ok FROM outbox_attempts
                 WHERE outbox_id = $1 ORDER BY n",
                &[&d.id],
            )
            .await?;
        d.history = rows
            .iter()
            .map(|r| {
                Ok(Attempt {
                    at_ms: r.try_get(0)?,
                    duration_ms: r.try_get::<_, i64>(1)? as u64,
                    status: r.try_get::<_, Option<i32>>(2)?.map(|s| s as u16),
                    detail: r.try_get(3)?,
                    ok: r.try_get(4)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(pg)?;
    }
    Ok(out)
}

/// Puts task `task`'s failed notifications back in the queue, due now with
/// a fresh retry window; returns how many.
pub(super) async fn redeliver(tx: &Tx<'_>, task: TaskId) -> Result<usize, StoreError> {
    let n = tx
        .exec(
            "UPDATE outbox SET state = 'pending', window_ms = $2, next_ms = $2
             WHERE task_id = $1 AND state = 'failed'",
            &[&task.to_string(), &now_ms()],
        )
        .await?;
    if n > 0 {
        tx.notify(OUTBOX_CHANNEL).await?;
    }
    Ok(n as usize)
}

/// When the earliest pending notification can be claimed: due, its lease
/// (if any) run out, and first in its task's and sink's order.
pub(super) async fn next_due(tx: &Tx<'_>) -> Result<Option<i64>, StoreError> {
    tx.one(
        &format!(
            "SELECT MIN(t) FROM (
                 (SELECT o.next_ms AS t FROM outbox o
                  WHERE o.state = 'pending' AND o.lease_until_ms IS NULL AND {FIRST_OF_ITS_SINK}
                  ORDER BY o.next_ms LIMIT 1)
                 UNION ALL
                 SELECT MIN(lease_until_ms) + 1 FROM outbox
                 WHERE state = 'pending' AND lease_until_ms IS NOT NULL) AS due"
        ),
        &[],
    )
    .await?
    .try_get(0)
    .map_err(pg)
}

/// Frees the notifications a dead owner (or any owner whose lease ran out
/// by `now`) was sending.
pub(super) async fn release(
    tx: &Tx<'_>,
    now: i64,
    dead_owner: Option<&str>,
) -> Result<(), StoreError> {
    let n = tx
        .exec(
            "UPDATE outbox SET owner = NULL, lease_until_ms = NULL
             WHERE state = 'pending' AND owner IS NOT NULL
               AND (lease_until_ms < $1 OR ($2::text IS NOT NULL AND owner = $2))",
            &[&now, &dead_owner],
        )
        .await?;
    if n > 0 {
        tx.notify(OUTBOX_CHANNEL).await?;
    }
    Ok(())
}
