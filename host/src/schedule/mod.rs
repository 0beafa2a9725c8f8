//! Schedules: background work that runs itself, a task per slot of a cron
//! expression in a time zone.
//!
//! [`Timetable`] says when a schedule fires and which slot is due at a
//! moment, by the schedule's policy for slots missed while nothing ran
//! ([`Missed`]). It never touches a clock or a store: the caller gives the
//! time, and records the slot it fired with the task it created, so that
//! each slot fires once.

//!
//! [`Schedules`] keeps them in a host's store and fires them; the store
//! records each slot once (see [`crate::store::schedule`]).

mod service;
mod timetable;

pub use crate::store::schedule::{Overlap, Schedule, ScheduleLink, Slot, SlotOutcome};
pub use service::{GRACE, ScheduleRequest, ScheduleView, Schedules};
pub use timetable::{Due, Missed, Timetable};
