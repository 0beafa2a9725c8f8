//! Schedules as the store keeps them, and the rules of firing, once for
//! every backend.
//!
//! A schedule holds the task it creates (a [`TaskSpec`] checked when the
//! schedule was added) and its timetable. Firing runs in one transaction
//! per schedule: the schedule's row is held (PostgreSQL: locked, and rows
//! another host holds are skipped), the slot due is worked out from the
//! last one dealt with, the slot is recorded under a unique key (schedule,
//! slot), and its task is created, all committed together. So each slot
//! fires once, whichever hosts look and whenever one dies: a slot recorded
//! is never fired again, and a crash before the commit records nothing.

use serde::{Deserialize, Serialize};

use super::backend::StoreError;
use super::machine::{Transaction, create};
use super::model::{Task, TaskId, TaskSpec};
use crate::schedule::{Missed, Timetable};
use crate::units::string_enum;

string_enum!(
    /// What a slot does while the schedule's previous task still runs.
    Overlap {
        /// Fire anyway: the tasks run side by side.
        Allow = "allow",
        /// Skip the slot.
        Skip = "skip",
        /// Hold the slot (one at most) and fire it when the previous task
        /// ends; later slots while one is held are skipped.
        Queue = "queue",
    }
);

string_enum!(
    /// What became of a slot.
    SlotOutcome {
        /// A task was created for it.
        Fired = "fired",
        /// Skipped: the previous task still ran.
        Skipped = "skipped",
        /// Held until the previous task ends.
        Held = "held",
    }
);

/// What the operator asks for: a name, a timetable, and the task each slot
/// creates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unique within the store: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// The cron expression (five fields, or six with seconds first).
    pub cron: String,
    /// The time zone the expression is read in (tz database name).
    pub tz: String,
    /// Slots missed while no host ran the schedule.
    pub missed: Missed,
    /// Slots that come while the previous task still runs.
    pub overlap: Overlap,
    /// The task each slot creates (its label becomes the schedule's name).
    pub task: TaskSpec,
}

/// A schedule as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// What was asked.
    pub spec: ScheduleSpec,
    /// Paused: no slot fires (slots that pass meanwhile follow `missed`
    /// on resume).
    pub paused: bool,
    /// When it was added, Unix milliseconds.
    pub created_ms: i64,
    /// The last slot dealt with (fired, skipped or held).
    pub last_slot_ms: Option<i64>,
    /// A slot held until the previous task ends (overlap `queue`).
    pub held_slot_ms: Option<i64>,
    /// The next slot, as last worked out.
    pub next_ms: Option<i64>,
    /// The task its last firing created.
    pub last_task: Option<TaskId>,
    /// Tasks it created.
    pub fired: u64,
    /// Slots it skipped (missed while down or paused, or by the overlap
    /// rule).
    pub skipped: u64,
}

/// Where a task created by a schedule comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleLink {
    /// The schedule's name.
    pub name: String,
    /// The slot it fired for; `None` for `run-now`.
    pub slot_ms: Option<i64>,
}

/// One slot's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The slot, Unix milliseconds.
    pub slot_ms: i64,
    /// When it was dealt with.
    pub at_ms: i64,
    /// What became of it.
    pub outcome: SlotOutcome,
    /// The task it created.
    pub task: Option<TaskId>,
}

impl Schedule {
    /// When hosts next look at it: `None` while paused; at once while a
    /// slot is held.
    pub(super) fn due_ms(&self) -> Option<i64> {
        if self.paused {
            None
        } else if self.held_slot_ms.is_some() {
            Some(0)
        } else {
            Some(self.next_ms.unwrap_or(i64::MAX))
        }
    }

    fn timetable(&self) -> Result<Timetable, StoreError> {
        Timetable::parse(&self.spec.cron, &self.spec.tz)
            .map_err(|e| StoreError::Backend(format!("schedule {}: {e}", self.spec.name)))
    }
}

/// Checks a schedule's name.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schedule name {name:?}: 1 to 64 letters, digits, `-`, `_` or `.`, not starting with `-` or `.`"
        ))
    }
}

/// Stores a new schedule; refuses a name in use.
pub(super) async fn add<T: Transaction>(
    tx: &T,
    spec: ScheduleSpec,
    now: i64,
) -> Result<Schedule, StoreError> {
    check_name(&spec.name).map_err(StoreError::Conflict)?;
    let table = Timetable::parse(&spec.cron, &spec.tz).map_err(StoreError::Conflict)?;
    let schedule = Schedule {
        next_ms: table.next_after(now),
        spec,
        paused: false,
        created_ms: now,
        last_slot_ms: None,
        held_slot_ms: None,
        last_task: None,
        fired: 0,
        skipped: 0,
    };
    if !tx.insert_schedule(&schedule).await? {
        return Err(StoreError::Conflict(format!(
            "a schedule named {} exists (see `skillbox schedule show {}`)",
            schedule.spec.name, schedule.spec.name
        )));
    }
    Ok(schedule)
}

/// The schedule named `name`; with `lock`, its row held.
pub(super) async fn named<T: Transaction>(
    tx: &T,
    name: &str,
    lock: bool,
) -> Result<Schedule, StoreError> {
    tx.schedule(name, lock)
        .await?
        .ok_or_else(|| StoreError::Missing(format!("no schedule named {name}")))
}

/// Pauses or resumes a schedule. A resumed schedule counts the slots that
/// passed while it was paused as missed (its `missed` policy applies).
pub(super) async fn set_paused<T: Transaction>(
    tx: &T,
    name: &str,
    paused: bool,
    now: i64,
) -> Result<Schedule, StoreError> {
    let mut s = named(tx, name, true).await?;
    if s.paused != paused {
        s.paused = paused;
        s.next_ms = s.timetable()?.next_after(now);
        tx.update_schedule(&s).await?;
    }
    Ok(s)
}

/// Whether the schedule's last task is still queued or running.
async fn previous_runs<T: Transaction>(tx: &T, s: &Schedule) -> Result<bool, StoreError> {
    let Some(id) = s.last_task else {
        return Ok(false);
    };
    match tx.task(id, false).await {
        Ok(task) => Ok(!task.state.is_terminal()),
        // Pruned: it ended.
        Err(StoreError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates the schedule's task `id` for `slot` (`None`: run now).
async fn fire<T: Transaction>(
    tx: &T,
    s: &mut Schedule,
    id: TaskId,
    slot: Option<i64>,
    max: u64,
) -> Result<Task, StoreError> {
    let mut spec = s.spec.task.clone();
    spec.label = Some(s.spec.name.clone());
    spec.schedule = Some(ScheduleLink {
        name: s.spec.name.clone(),
        slot_ms: slot,
    });
    let task = create(tx, id, spec, max).await?;
    s.last_task = Some(task.id);
    s.fired += 1;
    Ok(task)
}

/// Fires what is due at `now` of the schedules whose time has come (and
/// that no other transaction holds); returns the tasks created. A slot
/// that passed less than `grace_ms` ago is on time; older ones were
/// missed.
pub(super) async fn fire_due<T: Transaction>(
    tx: &T,
    now: i64,
    grace_ms: i64,
    max: u64,
) -> Result<Vec<Task>, StoreError> {
    let mut created = Vec::new();
    for mut s in tx.due_schedules(now).await? {
        let before = s.clone();
        let name = s.spec.name.clone();
        if let Some(slot) = s.held_slot_ms
            && !previous_runs(tx, &s).await?
        {
            let id = TaskId::new();
            if !tx.settle_slot(&name, slot, Some(id)).await? {
                return Err(StoreError::Conflict(format!(
                    "schedule {name}: its held slot {slot} is not held any more"
                )));
            }
            created.push(fire(tx, &mut s, id, Some(slot), max).await?);
            s.held_slot_ms = None;
        }
        let due = s
            .timetable()?
            .due(s.last_slot_ms, s.created_ms, now, grace_ms, s.spec.missed);
        s.skipped += due.skipped;
        s.last_slot_ms = due.last;
        s.next_ms = due.next;
        if let Some(slot) = due.fire {
            let busy = s.spec.overlap != Overlap::Allow && previous_runs(tx, &s).await?;
            let outcome = match s.spec.overlap {
                _ if !busy => SlotOutcome::Fired,
                Overlap::Queue if s.held_slot_ms.is_none() => SlotOutcome::Held,
                _ => SlotOutcome::Skipped,
            };
            // Recorded before its task exists: a slot already recorded (by
            // a host whose clock ran ahead, say) fires nothing.
            let id = TaskId::new();
            let task = (outcome == SlotOutcome::Fired).then_some(id);
            if tx.insert_slot(&name, slot, now, outcome, task).await? {
                match outcome {
                    SlotOutcome::Fired => {
                        created.push(fire(tx, &mut s, id, Some(slot), max).await?);
                    }
                    SlotOutcome::Held => s.held_slot_ms = Some(slot),
                    SlotOutcome::Skipped => s.skipped += 1,
                }
            }
        }
        if s != before {
            tx.update_schedule(&s).await?;
        }
    }
    if !created.is_empty() {
        tx.wake_workers().await?;
    }
    Ok(created)
}

/// Fires the schedule once now, outside its timetable (paused or not, and
/// whatever its overlap rule).
pub(super) async fn run_now<T: Transaction>(
    tx: &T,
    name: &str,
    max: u64,
) -> Result<Task, StoreError> {
    let mut s = named(tx, name, true).await?;
    let task = fire(tx, &mut s, TaskId::new(), None, max).await?;
    tx.update_schedule(&s).await?;
    tx.wake_workers().await?;
    Ok(task)
}

/// Deletes a schedule with its slots' records.
pub(super) async fn remove<T: Transaction>(tx: &T, name: &str) -> Result<(), StoreError> {
    if tx.delete_schedule(name).await? {
        Ok(())
    } else {
        Err(StoreError::Missing(format!("no schedule named {name}")))
    }
}
