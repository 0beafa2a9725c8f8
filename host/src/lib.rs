//! skillbox runs untrusted agent skills as sandboxed WebAssembly components.
//!
//! A skill is a component that exports `run(input) -> result<summary,
//! failure>` from the `skillbox:skill@0.1.0` world (or any plain
//! `wasi:cli/command`). It can touch only what its [`EffectivePolicy`](policy::EffectivePolicy)
//! allows: the intersection of what its manifest requests and what the
//! operator grants. Everything else is refused with an error naming the rule.
//!
//! ```no_run
//! use std::sync::Arc;
//! use skillbox::prelude::*;
//!
//! # async fn demo() -> Result<(), skillbox::Error> {
//! let host = Host::new(EngineOptions::default())?;
//! let skill = SkillSource::open("skills/hello".as_ref(), false)?;
//! let prepared = host.prepare(&skill)?;
//! let (policy, report) = EffectivePolicy::compute(skill.manifest.as_ref(), &Grants::default());
//! assert_eq!(report.not_granted().count(), 0);
//! let run = host
//!     .run(&prepared, RunRequest {
//!         input: r#"{"name": "agent"}"#.into(),
//!         policy,
//!         events: Arc::new(|e: Event| eprintln!("{e:?}")),
//!         ..Default::default()
//!     })
//!     .await?;
//! if let Outcome::Succeeded { text, .. } = run.outcome {
//!     println!("{text}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Architecture
//!
//! The crate is layered: a module uses only modules of the rows above it
//! (and never one of its own row that uses it back). There is no cycle.
//!
//! | layer | modules | what it does |
//! |---|---|---|
//! | ground floor | [`error`](Error), [`units`], [`events`], [`private`], [`metrics`], [`telemetry`] | errors (store errors typed inside), sizes, durations, task ids, run events, private files, the process's metrics and traces |
//! | policy | [`policy`]: one module per capability (`fs`, `env`, `net`, `exec`, `docker`, `limits`), the manifest, the grants, [`policy::EffectivePolicy`]; [`schedule`]: timetables | requests, grants, their intersection and the checks of a call; when a cron expression fires; pure computation |
//! | skills | [`skill`], [`trust`] | a skill on disk: manifest, component, digest; its OCI artifact, signature and the keys that check it |
//! | capabilities | [`caps`]: `fs`, `env`, `net`, `exec` (with its `sandbox`), `docker`, `progress`, `checkpoint`, `limits`, `output` | the host side of each capability; each owns its per-run context (`ExecCtx`, `DockerCtx`, …) and never names the runtime's store |
//! | runtime | [`runtime`]: [`Host`], its engine, [`RunState`] | runs one skill under one policy; composes the capability contexts; knows nothing of tasks |
//! | store | [`store`]: the task model, [`store::TaskStore`], one state machine over two SQL dialects (SQLite, PostgreSQL), the relay's outbox, [`store::schedule`], [`store::audit`] | keeps tasks, events, checkpoints, notifications, schedules (each slot fired once) and the hash-chained audit trail durably |
//! | relay | [`relay`] | turns outbox rows into notifications and delivers them through sinks |
//! | tasks | [`tasks`]: [`tasks::TaskService`], [`tasks::schedules`] | owns the runtime, the store and the relay: spawns, runs, records and relays tasks; adds and fires schedules |
//! | edges | [`catalog`], [`config`], [`daemon`], [`server`] (HTTP API and MCP, with its typed client) | the operator's configuration and the daemon's API |
//!
//! The `skillbox` binary's `cli` module only parses arguments and calls
//! these.
#![warn(missing_docs)]

mod bindings;
pub mod caller;
pub mod caps;
pub mod catalog;
pub mod config;
pub mod daemon;
mod error;
pub mod events;
pub mod handoff;
pub mod metrics;
pub mod oci;
pub mod policy;
pub mod private;
pub mod profile;
pub mod relay;
pub mod runtime;
pub mod schedule;
pub mod secrets;
pub mod server;
pub mod skill;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod trust;
pub mod units;

pub use error::Error;
pub use runtime::engine;
pub use runtime::engine::{CacheOutcome, EngineOptions};
pub use runtime::{
    FailureKind, Host, Outcome, Prepared, RunReport, RunRequest, RunState, SkillKind,
};

/// The names an embedder needs, kept stable.
pub mod prelude {
    pub use crate::caps::limits::Limit;
    pub use crate::catalog::Catalog;
    pub use crate::error::Error;
    pub use crate::events::{Event, EventObserver, Level};
    pub use crate::policy::{
        Access, EffectivePolicy, ExecRule, FsGrant, Grants, Limits, Manifest, PolicyReport,
    };
    pub use crate::relay::{Notification, Relay};
    pub use crate::runtime::engine::{CacheOutcome, EngineOptions};
    pub use crate::runtime::{
        FailureKind, Host, Outcome, Prepared, RunReport, RunRequest, SkillKind,
    };
    pub use crate::server::mcp::McpServer;
    pub use crate::skill::SkillSource;
    pub use crate::store::{SqliteStore, Task, TaskEvent, TaskId, TaskState, TaskStore};
    pub use crate::tasks::{SpawnRequest, TaskOptions, TaskService};
}
