//! The PostgreSQL dialect of schedules (see [`super::schedule`]): a host
//! firing a schedule locks its row, and others skip it (`SKIP LOCKED`).

use super::backend::StoreError;
use super::model::TaskId;
use super::postgres::{Tx, backend, pg};
use super::schedule::{Schedule, Slot, SlotOutcome};

/// The schedules' tables: a slot is recorded once, under its key.
pub(super) const MIGRATION: &str = r#"CREATE TABLE schedules (
        name TEXT COLLATE "C" PRIMARY KEY,
        due_ms BIGINT,
        body JSONB NOT NULL
    );
    CREATE INDEX schedules_due ON schedules (due_ms) WHERE due_ms IS NOT NULL;
    CREATE TABLE schedule_slots (
        schedule TEXT COLLATE "C" NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
        slot_ms BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        task_id TEXT,
        PRIMARY KEY (schedule, slot_ms)
    );"#;

fn parse(r: &tokio_postgres::Row) -> Result<Schedule, StoreError> {
    let name: String = r.try_get(0).map_err(pg)?;
    let body: serde_json::Value = r.try_get(1).map_err(pg)?;
    serde_json::from_value(body).map_err(|e| backend(format!("schedule {name}: {e}")))
}

pub(super) async fn get(
    tx: &Tx<'_>,
    name: &str,
    lock: bool,
) -> Result<Option<Schedule>, StoreError> {
    let sql = if lock {
        "SELECT name, body FROM schedules WHERE name = $1 FOR UPDATE"
    } else {
        "SELECT name, body FROM schedules WHERE name = $1"
    };
    tx.opt(sql, &[&name]).await?.map(|r| parse(&r)).transpose()
}

pub(super) async fn all(tx: &Tx<'_>) -> Result<Vec<Schedule>, StoreError> {
    let rows = tx
        .rows("SELECT name, body FROM schedules ORDER BY name", &[])
        .await?;
    rows.iter().map(parse).collect()
}

pub(super) async fn due(tx: &Tx<'_>, now: i64) -> Result<Vec<Schedule>, StoreError> {
    let rows = tx
        .rows(
            "SELECT name, body FROM schedules WHERE due_ms <= $1
             ORDER BY name FOR UPDATE SKIP LOCKED",
            &[&now],
        )
        .await?;
    rows.iter().map(parse).collect()
}

pub(super) async fn insert(tx: &Tx<'_>, s: &Schedule) -> Result<bool, StoreError> {
    let body = serde_json::to_value(s).map_err(backend)?;
    let n = tx
        .exec(
            "INSERT INTO schedules (name, due_ms, body) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
            &[&s.spec.name, &s.due_ms(), &body],
        )
        .await?;
    Ok(n == 1)
}

pub(super) async fn update(tx: &Tx<'_>, s: &Schedule) -> Result<(), StoreError> {
    let body = serde_json::to_value(s).map_err(backend)?;
    tx.exec(
        "UPDATE schedules SET due_ms = $2, body = $3 WHERE name = $1",
        &[&s.spec.name, &s.due_ms(), &body],
    )
    .await?;
    Ok(())
}

pub(super) async fn delete(tx: &Tx<'_>, name: &str) -> Result<bool, StoreError> {
    // Its slots go by ON DELETE CASCADE.
    let n = tx
        .exec("DELETE FROM schedules WHERE name = $1", &[&name])
        .await?;
    Ok(n == 1)
}

pub(super) async fn insert_slot(
    tx: &Tx<'_>,
    name: &str,
    slot_ms: i64,
    at_ms: i64,
    outcome: SlotOutcome,
    task: Option<TaskId>,
) -> Result<bool, StoreError> {
    let n = tx
        .exec(
            "INSERT INTO schedule_slots (schedule, slot_ms, at_ms, outcome, task_id)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (schedule, slot_ms) DO NOTHING",
            &[
                &name,
                &slot_ms,
                &at_ms,
                &outcome.as_str(),
                &task.map(|t| t.to_string()),
            ],
        )
        .await?;
    Ok(n == 1)
}

pub(super) async fn settle_slot(
    tx: &Tx<'_>,
    name: &str,
    slot_ms: i64,
    task: Option<TaskId>,
) -> Result<bool, StoreError> {
    let n = tx
        .exec(
            "UPDATE schedule_slots SET outcome = 'fired', task_id = $3
             WHERE schedule = $1 AND slot_ms = $2 AND outcome = 'held'",
            &[&name, &slot_ms, &task.map(|t| t.to_string())],
        )
        .await?;
    Ok(n == 1)
}

pub(super) async fn slots(tx: &Tx<'_>, name: &str, limit: u32) -> Result<Vec<Slot>, StoreError> {
    let rows = tx
        .rows(
            "SELECT slot_ms, at_ms, outcome, task_id FROM schedule_slots
             WHERE schedule = $1 ORDER BY slot_ms DESC LIMIT $2",
            &[&name, &i64::from(limit)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let outcome: String = r.try_get(2).map_err(pg)?;
            let task: Option<String> = r.try_get(3).map_err(pg)?;
            Ok(Slot {
                slot_ms: r.try_get(0).map_err(pg)?,
                at_ms: r.try_get(1).map_err(pg)?,
                outcome: outcome.parse().map_err(StoreError::Backend)?,
                task: task
                    .map(|t| t.parse().map_err(StoreError::Backend))
                    .transpose()?,
            })
        })
        .collect()
}
