//! Schedules over a host's task service: add one (its task checked as a
//! spawn is, once), look, pause, resume, remove, fire one now, and the loop
//! that fires them as their slots come.
//!
//! Every host that runs the loop may fire a schedule: the store records
//! each slot once (see [`crate::store::schedule`]), so several hosts on one
//! PostgreSQL database, a host restarted mid-slot or a clock that jumped
//! never fire a slot twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{SpawnRequest, TaskService};
use crate::error::Error;
use crate::schedule::{Missed, Timetable};
use crate::store::schedule::{Overlap, Schedule, ScheduleSpec, Slot};
use crate::store::{Task, now_ms};

/// A slot that passed less than this long ago is on time; an older one
/// was missed (hosts down), and follows the schedule's `missed` policy.
pub const GRACE: Duration = Duration::from_secs(60);

/// Slots shown with a schedule.
const SHOWN_SLOTS: u32 = 20;

/// What to schedule.
#[derive(Clone, Debug)]
pub struct ScheduleRequest {
    /// The schedule's name (also the label of its tasks).
    pub name: String,
    /// Cron expression: five fields, or six with seconds first.
    pub cron: String,
    /// Time zone of the expression (tz database name).
    pub tz: String,
    /// Slots missed while no host ran.
    pub missed: Missed,
    /// Slots while the previous task still runs.
    pub overlap: Overlap,
    /// The task each slot creates; checked now, as a spawn is. Its label
    /// must be unset (the schedule's name is its tasks' label).
    pub task: SpawnRequest,
}

/// A schedule with its latest slots.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ScheduleView {
    /// The schedule.
    pub schedule: Schedule,
    /// Its latest slots, newest first.
    pub slots: Vec<Slot>,
}

/// The schedules of a host's store.
#[derive(Clone)]
pub struct Schedules {
    tasks: Arc<TaskService>,
}

impl Schedules {
    /// The schedules kept in `tasks`' store.
    pub fn new(tasks: Arc<TaskService>) -> Schedules {
        Schedules { tasks }
    }

    /// Checks the request (name, timetable, and the task as a spawn is)
    /// and stores the schedule.
    pub fn add(&self, request: ScheduleRequest) -> Result<Schedule, Error> {
        if request.task.label.is_some() {
            return Err(Error::Input(
                "a scheduled task's label is its schedule's name; give no label".into(),
            ));
        }
        crate::store::schedule::check_name(&request.name).map_err(Error::Input)?;
        Timetable::parse(&request.cron, &request.tz).map_err(Error::Input)?;
        let task = self.tasks.prepare(request.task)?;
        Ok(self.tasks.store().add_schedule(ScheduleSpec {
            name: request.name,
            cron: request.cron,
            tz: request.tz,
            missed: request.missed,
            overlap: request.overlap,
            task,
        })?)
    }

    /// Every schedule, by name.
    pub fn list(&self) -> Result<Vec<Schedule>, Error> {
        Ok(self.tasks.store().schedules()?)
    }

    /// One schedule and its latest slots.
    pub fn show(&self, name: &str) -> Result<ScheduleView, Error> {
        let store = self.tasks.store();
        Ok(ScheduleView {
            schedule: store.schedule(name)?,
            slots: store.schedule_slots(name, SHOWN_SLOTS)?,
        })
    }

    /// Pauses a schedule: no slot fires until it is resumed.
    pub fn pause(&self, name: &str) -> Result<Schedule, Error> {
        Ok(self.tasks.store().pause_schedule(name, true)?)
    }

    /// Resumes a schedule; the slots that passed while it was paused follow
    /// its `missed` policy.
    pub fn resume(&self, name: &str) -> Result<Schedule, Error> {
        Ok(self.tasks.store().pause_schedule(name, false)?)
    }

    /// Deletes a schedule (the tasks it created stay).
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        Ok(self.tasks.store().remove_schedule(name)?)
    }

    /// Creates the schedule's task now, outside its timetable.
    pub fn run_now(&self, name: &str) -> Result<Task, Error> {
        let task = self.tasks.store().run_schedule_now(name)?;
        self.tasks.nudge();
        Ok(task)
    }

    /// Fires what is due now; returns the tasks created.
    pub fn fire_due(&self) -> Result<Vec<Task>, Error> {
        let fired = self
            .tasks
            .store()
            .fire_schedules(now_ms(), GRACE.as_millis() as i64)?;
        if !fired.is_empty() {
            self.tasks.nudge();
        }
        Ok(fired)
    }

    /// Fires schedules as their slots come, looking every `poll` of the
    /// task service, until `shutdown` turns true. A store that fails is
    /// logged and asked again at the next look.
    pub async fn fire(self, mut shutdown: watch::Receiver<bool>) {
        let poll = self.tasks.options().poll;
        loop {
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.fire_due()).await {
                Ok(Ok(fired)) => {
                    for t in fired {
                        tracing::info!(task = %t.id, schedule = ?t.spec.label, "schedule fired");
                    }
                }
                Ok(Err(e)) => tracing::warn!("schedules: {e}"),
                Err(e) => tracing::warn!("schedules: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

impl std::fmt::Debug for Schedules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedules").finish_non_exhaustive()
    }
}
