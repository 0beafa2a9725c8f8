//! The SQLite dialect of the audit trail (see [`super::audit`]).

use rusqlite::{Connection, OptionalExtension, params};

use super::audit::{AuditFilter, AuditHead, AuditRecord, GENESIS, Linked, stored};
use super::backend::StoreError;
use super::sqlite::{Cached, backend};

/// The audit trail's tables; the head starts empty. A record's body is
/// its content as digested (see [`super::audit`]). No index but the seq:
/// one more page written per commit cost durable throughput more than a
/// scan costs `audit show --task` (records are read by task rarely).
pub(super) const MIGRATION: &str = "CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        task_id TEXT,
        body TEXT NOT NULL,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE TABLE audit_head (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL
    );
    INSERT INTO audit_head (one, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');";

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
    records: &[Linked<'_>],
    head: &AuditHead,
) -> Result<(), StoreError> {
    for r in records {
        tx.exec(
            "INSERT INTO audit (seq, at_ms, task_id, body, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                r.seq as i64,
                r.entry.at_ms,
                r.entry.task.map(|t| t.to_string()),
                r.entry.body,
                r.prev,
                r.hash
            ],
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

type Row = (i64, String, String, String);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

pub(super) fn record(tx: &Connection, seq: u64) -> Result<Option<AuditRecord>, StoreError> {
    let found = tx
        .row(
            "SELECT seq, body, prev, hash FROM audit WHERE seq = ?1",
            params![seq as i64],
            row,
        )
        .optional()
        .map_err(backend)?;
    found
        .map(|(seq, body, prev, hash)| stored(seq, &body, prev, hash))
        .transpose()
}

pub(super) fn records(tx: &Connection, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
    let mut st = tx
        .prepare_cached(
            "SELECT seq, body, prev, hash FROM audit
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
            row,
        )
        .map_err(backend)?;
    rows.map(|r| {
        let (seq, body, prev, hash) = r.map_err(backend)?;
        stored(seq, &body, prev, hash)
    })
    .collect()
}

pub(super) fn kept_from(tx: &Connection) -> Result<Option<u64>, StoreError> {
    // From the start, where pruning leaves the records of tasks still
    // stored: a short scan.
    tx.row(
        "SELECT a.seq FROM audit a WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.id = a.task_id)
         ORDER BY a.seq LIMIT 1",
        [],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|s| s.map(|s| s as u64))
    .map_err(backend)
}

pub(super) fn delete_through(tx: &Connection, seq: u64) -> Result<u64, StoreError> {
    tx.exec("DELETE FROM audit WHERE seq <= ?1", params![seq as i64])
        .map(|n| n as u64)
        .map_err(backend)
}
