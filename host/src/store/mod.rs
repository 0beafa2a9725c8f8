//! The task store: tasks, their events, checkpoints, the relay's outbox,
//! schedules and the audit trail,
//! kept durably by one of two backends with the same semantics.
//!
//! A task is written to a [`TaskStore`] before anything runs; its progress,
//! logs, state changes and checkpoints are durable events, and a host that
//! dies leaves it `interrupted`, to be resumed from its checkpoints or
//! failed by policy when a host next starts. The events are the source of
//! truth; the task row is their summary.
//!
//! The store also keeps schedules ([`schedule`]: each slot recorded once,
//! in the transaction that creates its task) and the audit trail
//! ([`audit`]: every capability decision, chained by hash, written with
//! the events that report it).
//!
//! Backends: [`SqliteStore`] (one host, one file) and [`PgStore`] (hosts
//! sharing one PostgreSQL database and its queue); [`open_store`] picks one
//! by its address. Both pass one conformance suite.
//!
//! This module knows nothing of the runtime or of how tasks are run: the
//! task service ([`crate::tasks`]) sits above it.

pub mod approval;
pub mod audit;
mod backend;
mod machine;
mod model;
mod open;
pub mod outbox;
mod postgres;
mod postgres_audit;
mod postgres_held;
mod postgres_listen;
mod postgres_outbox;
mod postgres_pool;
mod postgres_schedule;
mod postgres_tls;
mod postgres_tx;
pub mod schedule;
mod sqlite;
mod sqlite_audit;
mod sqlite_outbox;
mod sqlite_schedule;
mod sqlite_tx;
mod sqlite_writer;
#[doc(hidden)]
pub mod testing;

pub use crate::policy::ResumePolicy;
pub(crate) use crate::units::string_enum;
pub use approval::{Approval, ApprovalRequest, Ask, Decision};
pub(crate) use backend::woken;
pub use backend::{
    Claim, Counts, Ended, Ending, EventRecord, Pruned, StoreError, TaskStore, now_ms,
};
pub use model::{
    CleanupMode, NotifyMode, ParentRoute, SCRATCH_GUEST, Task, TaskEvent, TaskFilter, TaskId,
    TaskSpec, TaskState,
};
pub use open::{is_shared, open_store, without_password};
pub use outbox::{Attempt, Change, Delivery, DeliveryState, Verdict};
pub use postgres::{OUTBOX_CHANNEL, PgOptions, PgStore, TASKS_CHANNEL};
pub use sqlite::{SqliteStore, StoreStats};

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod postgres_tests;
#[cfg(test)]
mod sqlite_tests;
