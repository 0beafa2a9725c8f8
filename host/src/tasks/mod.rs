//! Durable background tasks: the task model and the store that keeps it.
//!
//! A task is one run of a skill that outlives the request that started it:
//! it is written to a [`TaskStore`] before anything runs, its progress, logs,
//! state changes and checkpoints are durable events, and a host that dies
//! leaves it `interrupted`, to be resumed from its checkpoints or failed by
//! policy when a host next starts.
//!
//! The events are the source of truth; the task row is their summary.

mod model;
pub(crate) mod runner;
mod sqlite;
mod store;

pub use model::{
    CleanupMode, NotifyMode, ResumePolicy, Task, TaskEvent, TaskFilter, TaskId, TaskSpec, TaskState,
};
pub use runner::{SpawnRequest, TaskOptions};
pub use sqlite::SqliteStore;
pub use store::{Claim, EventRecord, StoreError, TaskStore, now_ms};

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod sqlite_tests;
