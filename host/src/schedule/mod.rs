//! Schedules: background work that runs itself, a task per slot of a cron
//! expression in a time zone.
//!
//! [`Timetable`] says when a schedule fires and which slot is due at a
//! moment, by the schedule's policy for slots missed while nothing ran
//! ([`Missed`]). It never touches a clock or a store: the caller gives the
//! time, and records the slot it fired with the task it created, so that
//! each slot fires once.

//!
//! The store keeps schedules and records each slot once
//! ([`crate::store::schedule`]); [`crate::tasks::schedules`] adds, looks
//! after and fires them over a host's task service.

mod timetable;

pub use timetable::{Due, Missed, Timetable};
