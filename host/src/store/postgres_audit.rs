//! The PostgreSQL dialect of the audit trail (see [`super::audit`]): the
//! head's row is locked by the transaction that chains records, so hosts
//! append one at a time, in commit order.

use super::audit::{AuditFilter, AuditHead, AuditRecord, GENESIS, Linked, stored};
use super::backend::StoreError;
use super::postgres::{Tx, pg};
use super::postgres_pool::owned;

/// The audit trail's tables (no index but the seq, as in SQLite); the
/// head starts empty. A record's body is
/// its content as digested (see [`super::audit`]), kept as text: JSONB
/// would not keep it byte for byte (nor take a NUL a guest sent).
pub(super) const MIGRATION: &str = r#"CREATE TABLE audit (
        seq BIGINT PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        task_id TEXT COLLATE "C",
        body TEXT NOT NULL,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE TABLE audit_head (
        one INT PRIMARY KEY CHECK (one = 1),
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL
    );
    INSERT INTO audit_head (one, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');"#;

fn parse(r: &tokio_postgres::Row) -> Result<AuditRecord, StoreError> {
    let seq: i64 = r.try_get(0).map_err(pg)?;
    let body: String = r.try_get(1).map_err(pg)?;
    stored(
        seq,
        &body,
        r.try_get(2).map_err(pg)?,
        r.try_get(3).map_err(pg)?,
    )
}

/// The chain's head; with `lock`, its row is locked until the transaction
/// ends.
pub(super) async fn head(tx: &Tx<'_>, lock: bool) -> Result<AuditHead, StoreError> {
    let sql = if lock {
        "SELECT seq, hash FROM audit_head WHERE one = 1 FOR UPDATE"
    } else {
        "SELECT seq, hash FROM audit_head WHERE one = 1"
    };
    let row = tx.opt(sql, &[]).await?;
    match row {
        Some(r) => Ok(AuditHead {
            seq: r.try_get::<_, i64>(0).map_err(pg)? as u64,
            hash: r.try_get(1).map_err(pg)?,
        }),
        None => Ok(AuditHead {
            seq: 0,
            hash: GENESIS.into(),
        }),
    }
}

pub(super) async fn put(
    tx: &Tx<'_>,
    records: &[Linked<'_>],
    head: &AuditHead,
) -> Result<(), StoreError> {
    let seqs: Vec<i64> = records.iter().map(|r| r.seq as i64).collect();
    let ats: Vec<i64> = records.iter().map(|r| r.entry.at_ms).collect();
    let tasks: Vec<Option<String>> = records
        .iter()
        .map(|r| r.entry.task.map(|t| t.to_string()))
        .collect();
    let bodies: Vec<String> = records.iter().map(|r| r.entry.body.clone()).collect();
    let prevs: Vec<String> = records.iter().map(|r| r.prev.clone()).collect();
    let hashes: Vec<String> = records.iter().map(|r| r.hash.clone()).collect();
    tx.write(
        "INSERT INTO audit (seq, at_ms, task_id, body, prev, hash)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])",
        owned![seqs, ats, tasks, bodies, prevs, hashes],
    )
    .await?;
    tx.write(
        "INSERT INTO audit_head (one, seq, hash) VALUES (1, $1, $2)
         ON CONFLICT (one) DO UPDATE SET seq = $1, hash = $2",
        owned![head.seq as i64, head.hash.clone()],
    )
    .await
}

pub(super) async fn record(tx: &Tx<'_>, seq: u64) -> Result<Option<AuditRecord>, StoreError> {
    let row = tx
        .opt(
            "SELECT seq, body, prev, hash FROM audit WHERE seq = $1",
            &[&(seq as i64)],
        )
        .await?;
    row.map(|r| parse(&r)).transpose()
}

pub(super) async fn records(tx: &Tx<'_>, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = tx
        .rows(
            "SELECT seq, body, prev, hash FROM audit
             WHERE seq > $1 AND ($2::text IS NULL OR task_id = $2)
               AND ($3::bigint IS NULL OR at_ms >= $3)
             ORDER BY seq LIMIT $4",
            &[
                &(f.after as i64),
                &f.task.map(|t| t.to_string()),
                &f.since_ms,
                &i64::from(f.limit.unwrap_or(1000)),
            ],
        )
        .await?;
    rows.iter().map(parse).collect()
}

pub(super) async fn kept_from(tx: &Tx<'_>) -> Result<Option<u64>, StoreError> {
    // From the start, where pruning leaves the records of tasks still
    // stored: a short scan.
    let row = tx
        .opt(
            "SELECT a.seq FROM audit a WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.id = a.task_id)
             ORDER BY a.seq LIMIT 1",
            &[],
        )
        .await?;
    row.map(|r| r.try_get::<_, i64>(0).map(|s| s as u64).map_err(pg))
        .transpose()
}

pub(super) async fn delete_through(tx: &Tx<'_>, seq: u64) -> Result<u64, StoreError> {
    tx.exec("DELETE FROM audit WHERE seq <= $1", &[&(seq as i64)])
        .await
}
