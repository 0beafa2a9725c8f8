//! The SQLite dialect of the audit trail (see [`super::audit`]).

use rusqlite::{Connection, OptionalExtension, params};

use super::audit::{AuditFilter, AuditHead, AuditRecord, GENESIS};
use super::backend::StoreError;
use super::sqlite::{Cached, backend};

/// The audit trail's tables; the head starts empty.
pub(super) const MIGRATION: &str = "CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        task_id TEXT,
        body TEXT NOT NULL
    );
    CREATE INDEX audit_by_task ON audit(task_id, seq);
    CREATE INDEX audit_by_time ON audit(at_ms);
    CREATE TABLE audit_head (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL
    );
    INSERT INTO audit_head (one, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');";

/// The record stored at position `seq`. The position, not the seq its
/// body says, is the record's seq: a body moved to another row then no
/// longer matches its hash, and reads page by position.
fn parse(seq: i64, body: &str) -> Result<AuditRecord, StoreError> {
    let mut r: AuditRecord =
        serde_json::from_str(body).map_err(|e| backend(format!("audit record #{seq}: {e}")))?;
    r.seq = seq as u64;
    Ok(r)
}

pub(super) fn head(tx: &Connection) -> Result<AuditHead, StoreError> {
    let head = tx
        .row("SELECT seq, hash FROM audit_head WHERE one = 1", [], |r| {
            Ok(AuditHead {
                seq: r.get::<_, i64>(0)? as u64,
                hash: r.get(1)?,
            })
        })
        .optional()
        .map_err(backend)?;
    // A head row deleted by hand reads as an empty chain, which the
    // verifier then finds does not match the records.
    Ok(head.unwrap_or(AuditHead {
        seq: 0,
        hash: GENESIS.into(),
    }))
}

pub(super) fn put(
    tx: &Connection,
    records: &[AuditRecord],
    head: &AuditHead,
) -> Result<(), StoreError> {
    for r in records {
        let body = serde_json::to_string(r).map_err(backend)?;
        tx.exec(
            "INSERT INTO audit (seq, at_ms, task_id, body) VALUES (?1, ?2, ?3, ?4)",
            params![r.seq as i64, r.at_ms, r.task.map(|t| t.to_string()), body],
        )
        .map_err(backend)?;
    }
    tx.exec(
        "INSERT INTO audit_head (one, seq, hash) VALUES (1, ?1, ?2)
         ON CONFLICT (one) DO UPDATE SET seq = ?1, hash = ?2",
        params![head.seq as i64, head.hash],
    )
    .map_err(backend)?;
    Ok(())
}

pub(super) fn record(tx: &Connection, seq: u64) -> Result<Option<AuditRecord>, StoreError> {
    let body: Option<String> = tx
        .row(
            "SELECT body FROM audit WHERE seq = ?1",
            params![seq as i64],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    body.map(|b| parse(seq as i64, &b)).transpose()
}

pub(super) fn records(tx: &Connection, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
    let mut st = tx
        .prepare_cached(
            "SELECT seq, body FROM audit
             WHERE seq > ?1 AND (?2 IS NULL OR task_id = ?2) AND (?3 IS NULL OR at_ms >= ?3)
             ORDER BY seq LIMIT ?4",
        )
        .map_err(backend)?;
    let rows = st
        .query_map(
            params![
                f.after as i64,
                f.task.map(|t| t.to_string()),
                f.since_ms,
                f.limit.unwrap_or(1000)
            ],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .map_err(backend)?;
    rows.map(|r| {
        let (seq, body) = r.map_err(backend)?;
        parse(seq, &body)
    })
    .collect()
}

pub(super) fn kept_from(tx: &Connection) -> Result<Option<u64>, StoreError> {
    tx.row(
        "SELECT MIN(a.seq) FROM audit a JOIN tasks t ON t.id = a.task_id",
        [],
        |r| r.get::<_, Option<i64>>(0),
    )
    .map(|s| s.map(|s| s as u64))
    .map_err(backend)
}

pub(super) fn delete_through(tx: &Connection, seq: u64) -> Result<u64, StoreError> {
    tx.exec("DELETE FROM audit WHERE seq <= ?1", params![seq as i64])
        .map(|n| n as u64)
        .map_err(backend)
}
