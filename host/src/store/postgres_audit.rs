//! The PostgreSQL dialect of the audit trail (see [`super::audit`]): the
//! head's row is locked by the transaction that chains records, so hosts
//! append one at a time, in commit order.

use super::audit::{AuditFilter, AuditHead, AuditRecord, GENESIS};
use super::backend::StoreError;
use super::postgres::{Tx, backend, pg};

/// The audit trail's tables; the head starts empty. Bodies are text, as
/// written (a record may quote what a guest sent, which JSONB would not
/// take byte for byte).
pub(super) const MIGRATION: &str = r#"CREATE TABLE audit (
        seq BIGINT PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        task_id TEXT COLLATE "C",
        body TEXT NOT NULL
    );
    CREATE INDEX audit_by_task ON audit (task_id, seq);
    CREATE INDEX audit_by_time ON audit (at_ms);
    CREATE TABLE audit_head (
        one INT PRIMARY KEY CHECK (one = 1),
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL
    );
    INSERT INTO audit_head (one, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');"#;

/// The record stored at position `seq`. The position, not the seq its
/// body says, is the record's seq: a body moved to another row then no
/// longer matches its hash, and reads page by position.
fn parse(seq: i64, body: &str) -> Result<AuditRecord, StoreError> {
    let mut r: AuditRecord =
        serde_json::from_str(body).map_err(|e| backend(format!("audit record #{seq}: {e}")))?;
    r.seq = seq as u64;
    Ok(r)
}

pub(super) async fn head(tx: &Tx<'_>) -> Result<AuditHead, StoreError> {
    let row = tx
        .opt(
            "SELECT seq, hash FROM audit_head WHERE one = 1 FOR UPDATE",
            &[],
        )
        .await?;
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
    records: &[AuditRecord],
    head: &AuditHead,
) -> Result<(), StoreError> {
    let seqs: Vec<i64> = records.iter().map(|r| r.seq as i64).collect();
    let ats: Vec<i64> = records.iter().map(|r| r.at_ms).collect();
    let tasks: Vec<Option<String>> = records
        .iter()
        .map(|r| r.task.map(|t| t.to_string()))
        .collect();
    let bodies = records
        .iter()
        .map(|r| serde_json::to_string(r).map_err(backend))
        .collect::<Result<Vec<_>, _>>()?;
    tx.exec(
        "INSERT INTO audit (seq, at_ms, task_id, body)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[])",
        &[&seqs, &ats, &tasks, &bodies],
    )
    .await?;
    tx.exec(
        "INSERT INTO audit_head (one, seq, hash) VALUES (1, $1, $2)
         ON CONFLICT (one) DO UPDATE SET seq = $1, hash = $2",
        &[&(head.seq as i64), &head.hash],
    )
    .await?;
    Ok(())
}

pub(super) async fn record(tx: &Tx<'_>, seq: u64) -> Result<Option<AuditRecord>, StoreError> {
    let row = tx
        .opt("SELECT body FROM audit WHERE seq = $1", &[&(seq as i64)])
        .await?;
    row.map(|r| parse(seq as i64, &r.try_get::<_, String>(0).map_err(pg)?))
        .transpose()
}

pub(super) async fn records(tx: &Tx<'_>, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = tx
        .rows(
            "SELECT seq, body FROM audit
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
    rows.iter()
        .map(|r| {
            let seq: i64 = r.try_get(0).map_err(pg)?;
            parse(seq, &r.try_get::<_, String>(1).map_err(pg)?)
        })
        .collect()
}

pub(super) async fn kept_from(tx: &Tx<'_>) -> Result<Option<u64>, StoreError> {
    let row = tx
        .one(
            "SELECT MIN(a.seq) FROM audit a JOIN tasks t ON t.id = a.task_id",
            &[],
        )
        .await?;
    let seq: Option<i64> = row.try_get(0).map_err(pg)?;
    Ok(seq.map(|s| s as u64))
}

pub(super) async fn delete_through(tx: &Tx<'_>, seq: u64) -> Result<u64, StoreError> {
    tx.exec("DELETE FROM audit WHERE seq <= $1", &[&(seq as i64)])
        .await
}
