//! The SQLite dialect of schedules (see [`super::schedule`]).

use rusqlite::{Connection, OptionalExtension, params};

use super::backend::StoreError;
use super::model::TaskId;
use super::schedule::{Schedule, Slot, SlotOutcome};
use super::sqlite::{Cached, backend};

/// The schedules' tables: a slot is recorded once, under its key.
pub(super) const MIGRATION: &str = "CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        due_ms INTEGER,
        body TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX schedules_due ON schedules(due_ms) WHERE due_ms IS NOT NULL;
    CREATE TABLE schedule_slots (
        schedule TEXT NOT NULL,
        slot_ms INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        task_id TEXT,
        PRIMARY KEY (schedule, slot_ms)
    ) WITHOUT ROWID;";

fn parse(name: &str, body: &str) -> Result<Schedule, StoreError> {
    serde_json::from_str(body).map_err(|e| backend(format!("schedule {name}: {e}")))
}

fn many(tx: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Schedule>, StoreError> {
    let mut st = tx.prepare_cached(sql).map_err(backend)?;
    let rows = st
        .query_map(p, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(backend)?;
    rows.map(|r| {
        let (name, body) = r.map_err(backend)?;
        parse(&name, &body)
    })
    .collect()
}

pub(super) fn get(tx: &Connection, name: &str) -> Result<Option<Schedule>, StoreError> {
    let body: Option<String> = tx
        .row(
            "SELECT body FROM schedules WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    body.map(|b| parse(name, &b)).transpose()
}

pub(super) fn all(tx: &Connection) -> Result<Vec<Schedule>, StoreError> {
    many(tx, "SELECT name, body FROM schedules ORDER BY name", [])
}

pub(super) fn due(tx: &Connection, now: i64) -> Result<Vec<Schedule>, StoreError> {
    many(
        tx,
        "SELECT name, body FROM schedules WHERE due_ms <= ?1 ORDER BY name",
        params![now],
    )
}

pub(super) fn any_due(tx: &Connection, now: i64) -> Result<bool, StoreError> {
    tx.row(
        "SELECT EXISTS (SELECT 1 FROM schedules WHERE due_ms <= ?1)",
        params![now],
        |r| r.get(0),
    )
    .map_err(backend)
}

pub(super) fn insert(tx: &Connection, s: &Schedule) -> Result<bool, StoreError> {
    let body = serde_json::to_string(s).map_err(backend)?;
    tx.exec(
        "INSERT INTO schedules (name, due_ms, body) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
        params![s.spec.name, s.due_ms(), body],
    )
    .map(|n| n == 1)
    .map_err(backend)
}

pub(super) fn update(tx: &Connection, s: &Schedule) -> Result<(), StoreError> {
    let body = serde_json::to_string(s).map_err(backend)?;
    tx.exec(
        "UPDATE schedules SET due_ms = ?2, body = ?3 WHERE name = ?1",
        params![s.spec.name, s.due_ms(), body],
    )
    .map(drop)
    .map_err(backend)
}

pub(super) fn delete(tx: &Connection, name: &str) -> Result<bool, StoreError> {
    tx.exec(
        "DELETE FROM schedule_slots WHERE schedule = ?1",
        params![name],
    )
    .map_err(backend)?;
    tx.exec("DELETE FROM schedules WHERE name = ?1", params![name])
        .map(|n| n == 1)
        .map_err(backend)
}

pub(super) fn insert_slot(
    tx: &Connection,
    name: &str,
    slot_ms: i64,
    at_ms: i64,
    outcome: SlotOutcome,
    task: Option<TaskId>,
) -> Result<bool, StoreError> {
    tx.exec(
        "INSERT INTO schedule_slots (schedule, slot_ms, at_ms, outcome, task_id)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (schedule, slot_ms) DO NOTHING",
        params![
            name,
            slot_ms,
            at_ms,
            outcome.as_str(),
            task.map(|t| t.to_string())
        ],
    )
    .map(|n| n == 1)
    .map_err(backend)
}

pub(super) fn settle_slot(
    tx: &Connection,
    name: &str,
    slot_ms: i64,
    task: Option<TaskId>,
) -> Result<bool, StoreError> {
    tx.exec(
        "UPDATE schedule_slots SET outcome = 'fired', task_id = ?3
         WHERE schedule = ?1 AND slot_ms = ?2 AND outcome = 'held'",
        params![name, slot_ms, task.map(|t| t.to_string())],
    )
    .map(|n| n == 1)
    .map_err(backend)
}

pub(super) fn slots(tx: &Connection, name: &str, limit: u32) -> Result<Vec<Slot>, StoreError> {
    let mut st = tx
        .prepare_cached(
            "SELECT slot_ms, at_ms, outcome, task_id FROM schedule_slots
             WHERE schedule = ?1 ORDER BY slot_ms DESC LIMIT ?2",
        )
        .map_err(backend)?;
    let rows = st
        .query_map(params![name, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .map_err(backend)?;
    rows.map(|r| {
        let (slot_ms, at_ms, outcome, task) = r.map_err(backend)?;
        Ok(Slot {
            slot_ms,
            at_ms,
            outcome: outcome.parse().map_err(StoreError::Backend)?,
            task: task
                .map(|t| t.parse().map_err(StoreError::Backend))
                .transpose()?,
        })
    })
    .collect()
}
