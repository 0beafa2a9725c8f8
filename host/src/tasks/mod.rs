//! Durable background tasks: the task model and the store that keeps it.
//!
//! A task is one run of a skill that outlives the request that started it:
//! it is written to a [`TaskStore`] before anything runs, its progress, logs,
//! state changes and checkpoints are durable events, and a host that dies
//! leaves it `interrupted`, to be resumed from its checkpoints or failed by
//! policy when a host next starts.
//!
//! The events are the source of truth; the task row is their summary.
//!
//! Backends: [`SqliteStore`] (one host, one file) and [`PgStore`] (hosts
//! sharing one PostgreSQL database and its queue); [`open_store`] picks one
//! by its address.
//!
//! An agent runtime embedding skillbox:
//!
//! ```no_run
//! use std::sync::Arc;
//! use skillbox::prelude::*;
//! use skillbox::tasks::{SpawnRequest, SqliteStore, TaskOptions, TaskState};
//!
//! # async fn agent() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(SqliteStore::open_dir("/var/lib/my-agent/skillbox".as_ref())?);
//! let host = Arc::new(Host::new(EngineOptions::default())?.with_tasks(store, TaskOptions::default()));
//!
//! // Run background tasks until shutdown; tasks a crashed predecessor left
//! // running are resumed from their checkpoints (or failed by policy).
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! tokio::spawn(host.clone().work(shutdown));
//!
//! // The session asks for a long job: get an id back at once.
//! let mut grants = Grants::default();
//! grants.fs.push(FsGrant::parse_cli("/srv/app:/data", Access::Read)?);
//! let id = host.spawn(SpawnRequest {
//!     grants,
//!     parent_session: Some("agent:main".into()),
//!     label: Some("disk check".into()),
//!     ..SpawnRequest::new("skills/disk-report", r#"{"path": "/data"}"#)
//! })?;
//!
//! // Follow it, then hand the summary back to the session.
//! let mut seen = 0;
//! loop {
//!     let events = host.events(id, seen).await?;
//!     if events.is_empty() {
//!         break;
//!     }
//!     seen = events.last().unwrap().seq;
//!     for e in events {
//!         println!("{id}: {:?}", e.event);
//!     }
//! }
//! let task = host.wait(id).await?;
//! if task.state == TaskState::Succeeded {
//!     println!("{}", task.outcome.unwrap()["text"]);
//! }
//! # Ok(())
//! # }
//! ```

mod model;
mod open;
mod postgres;
mod postgres_listen;
mod postgres_outbox;
pub(crate) mod runner;
mod sqlite;
mod sqlite_outbox;
mod store;
#[doc(hidden)]
pub mod testing;

pub(crate) use model::string_enum;
pub use model::{
    CleanupMode, NotifyMode, ResumePolicy, SCRATCH_GUEST, Task, TaskEvent, TaskFilter, TaskId,
    TaskSpec, TaskState,
};
pub use open::open_store;
pub use postgres::{OUTBOX_CHANNEL, PgOptions, PgStore, TASKS_CHANNEL};
pub use runner::{SpawnRequest, TaskOptions};
pub use sqlite::{SqliteStore, StoreStats};
pub use store::{Claim, Ended, Ending, EventRecord, Pruned, StoreError, TaskStore, now_ms};

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod postgres_tests;
#[cfg(test)]
mod sqlite_tests;
