//! Durable background tasks: the service that spawns, tracks, runs and
//! relays them, above the runtime and the store.
//!
//! A [`TaskService`] owns the runtime ([`Host`]), a [`TaskStore`] and the
//! [`Relay`]. [`TaskService::spawn`] checks the skill and its grants,
//! stores a `queued` task and returns at once. [`TaskService::work`] claims
//! queued (and resumable interrupted) tasks up to a concurrency limit and
//! runs them; while a task runs, the service renews the task's lease,
//! records its events in the store in group commits, persists every
//! checkpoint before the guest's `save` returns, and stops the run when
//! the task is cancelled or its lease is lost (then it writes nothing more:
//! another host owns the task). Meanwhile it delivers the tasks'
//! notifications through the relay.
//!
//! The store is the source of truth: [`TaskService::wait`] and
//! [`TaskService::next_events`] read it, and are woken early by this
//! host's own progress.
//!
//! An agent runtime embedding skillbox:
//!
//! ```no_run
//! use std::sync::Arc;
//! use skillbox::prelude::*;
//! use skillbox::store::{SqliteStore, TaskState};
//! use skillbox::tasks::{SpawnRequest, TaskOptions, TaskService};
//!
//! # async fn agent() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(SqliteStore::open_dir("/var/lib/my-agent/skillbox".as_ref())?);
//! let host = Arc::new(Host::new(EngineOptions::default())?);
//! let tasks = Arc::new(TaskService::new(host, store, TaskOptions::default()));
//!
//! // Run background tasks until shutdown; tasks a crashed predecessor left
//! // running are resumed from their checkpoints (or failed by policy).
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! tokio::spawn(tasks.clone().work(shutdown));
//!
//! // The session asks for a long job: get an id back at once.
//! let mut grants = Grants::default();
//! grants.fs.push(FsGrant::parse_cli("/srv/app:/data", Access::Read)?);
//! let id = tasks.spawn(SpawnRequest {
//!     grants,
//!     parent_session: Some("agent:main".into()),
//!     label: Some("disk check".into()),
//!     ..SpawnRequest::new("skills/disk-report", r#"{"path": "/data"}"#)
//! })?.id;
//!
//! // Follow it, then hand the summary back to the session.
//! let mut seen = 0;
//! loop {
//!     let events = tasks.next_events(id, seen).await?;
//!     if events.is_empty() {
//!         break;
//!     }
//!     seen = events.last().unwrap().seq;
//!     for e in events {
//!         println!("{id}: {:?}", e.event);
//!     }
//! }
//! let task = tasks.wait(id).await?;
//! if task.state == TaskState::Succeeded {
//!     println!("{}", task.outcome.unwrap()["text"]);
//! }
//! # Ok(())
//! # }
//! ```

mod api;
mod approvals;
mod changes;
mod recorder;
pub mod schedules;
mod scratch;
mod worker;

pub use changes::TaskChange;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};

use crate::policy::Grants;
use crate::relay::Relay;
use crate::relay::worker::LeasedDelivery;
use crate::runtime::Host;
use crate::store::{Claim, CleanupMode, NotifyMode, ParentRoute, TaskId, TaskStore};

/// How a host runs background tasks.
#[derive(Clone, Debug)]
pub struct TaskOptions {
    /// Most tasks running at once on this host.
    pub concurrency: usize,
    /// How long a claim lasts without renewal; after that another host may
    /// take the task over.
    pub lease: Duration,
    /// How often a running task's lease is renewed (and its cancel flag read).
    pub heartbeat: Duration,
    /// How often an idle worker looks for work and expired leases.
    pub poll: Duration,
    /// How often buffered events are committed.
    pub flush: Duration,
    /// Where tasks' scratch directories are made (`<scratch>/<task id>`,
    /// read-write at `/scratch` in the guest, kept across a resume, deleted
    /// at the end with `cleanup = delete` and when the task is pruned);
    /// `None` gives tasks none.
    pub scratch: Option<PathBuf>,
    /// Where tasks' notifications go (sinks, defaults, retries).
    pub relay: Relay,
    /// Which skills may run, by their signatures: checked when a task is
    /// spawned and again by the worker that runs it (the skill on disk
    /// may have changed in between, and each host of a shared store
    /// enforces its own operator's policy).
    pub trust: crate::trust::TrustPolicy,
    /// This host's secrets: a task's granted uses are read from them when
    /// it starts here (a task using one this host lacks fails, saying so).
    pub secrets: crate::secrets::SecretBook,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            concurrency: 4,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            flush: Duration::from_millis(50),
            scratch: None,
            relay: Relay::default(),
            trust: crate::trust::TrustPolicy::default(),
            secrets: crate::secrets::SecretBook::default(),
        }
    }
}

/// What to run in the background.
#[derive(Clone, Debug)]
pub struct SpawnRequest {
    /// Skill directory, manifest or component.
    pub skill: PathBuf,
    /// JSON input.
    pub input: String,
    /// What the operator grants.
    pub grants: Grants,
    /// Free-form label.
    pub label: Option<String>,
    /// The agent session that asked for it.
    pub parent_session: Option<String>,
    /// Where, in that session's messaging channel, the reply goes.
    pub parent_route: Option<ParentRoute>,
    /// Scratch directory handling.
    pub cleanup: CleanupMode,
    /// Notification handling.
    pub notify: NotifyMode,
    /// The relay sinks to notify, by name; none means the host's defaults.
    pub notify_to: Vec<String>,
    /// Accept it even if some requested capabilities were not granted.
    pub partial: bool,
    /// Accept a manifest that pins no digest.
    pub allow_unpinned: bool,
}

impl SpawnRequest {
    /// A request for `skill` with `input`, nothing granted, defaults else.
    pub fn new(skill: impl Into<PathBuf>, input: impl Into<String>) -> Self {
        SpawnRequest {
            skill: skill.into(),
            input: input.into(),
            grants: Grants::default(),
            label: None,
            parent_session: None,
            parent_route: None,
            cleanup: CleanupMode::Keep,
            notify: NotifyMode::DoneOnly,
            notify_to: Vec::new(),
            partial: false,
            allow_unpinned: false,
        }
    }
}

/// Background tasks on one host: a runtime, a store and a relay.
pub struct TaskService {
    host: Arc<Host>,
    store: Arc<dyn TaskStore>,
    owner: String,
    options: TaskOptions,
    wake_worker: Notify,
    /// Wakes the delivery worker: notifications may be due.
    wake_relay: Arc<Notify>,
    updates: broadcast::Sender<TaskId>,
    cancels: Mutex<HashMap<TaskId, watch::Sender<bool>>>,
    /// Set while no worker runs: an ending task then claims no successor.
    stopping: AtomicBool,
    /// The concurrency limit: a running task holds one permit.
    slots: Arc<Semaphore>,
    /// Tasks claimed by `spawn` itself (a free slot and an empty queue), for
    /// the worker to run.
    claimed: mpsc::UnboundedSender<ClaimedTask>,
    claimed_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<ClaimedTask>>,
    /// Notifications a task's end leased to this host, for its delivery
    /// worker.
    leased: mpsc::UnboundedSender<LeasedDelivery>,
    leased_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<LeasedDelivery>>,
}

/// A claimed task and the slot it runs in.
type ClaimedTask = (Claim, OwnedSemaphorePermit);

impl TaskService {
    /// Background tasks of `host`, kept in `store`.
    pub fn new(host: Arc<Host>, store: Arc<dyn TaskStore>, options: TaskOptions) -> TaskService {
        let (claimed, claimed_rx) = mpsc::unbounded_channel();
        let (leased, leased_rx) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
        let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        TaskService {
            host,
            store,
            owner: format!(
                "{}:{}:{}",
                machine.trim(),
                std::process::id(),
                TaskId::new()
            ),
            options,
            wake_worker: Notify::new(),
            wake_relay: Arc::new(Notify::new()),
            updates: broadcast::channel(1024).0,
            cancels: Mutex::default(),
            stopping: AtomicBool::new(true),
            slots,
            claimed,
            claimed_rx: tokio::sync::Mutex::new(claimed_rx),
            leased,
            leased_rx: tokio::sync::Mutex::new(leased_rx),
        }
    }

    /// The runtime tasks run on.
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// The store tasks are kept in.
    pub fn store(&self) -> &Arc<dyn TaskStore> {
        &self.store
    }

    /// The sinks tasks' notifications go to.
    pub fn relay(&self) -> &Relay {
        &self.options.relay
    }

    /// The id this host uses as a lease owner.
    pub fn owner_id(&self) -> &str {
        &self.owner
    }

    /// How this host runs tasks.
    pub fn options(&self) -> &TaskOptions {
        &self.options
    }

    /// Tells this host's worker that tasks were queued in the store by
    /// other means than [`spawn`](Self::spawn) (a schedule firing), so it
    /// claims them now rather than at its next poll.
    pub fn nudge(&self) {
        self.wake_worker.notify_one();
    }

    fn cancels(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, watch::Sender<bool>>> {
        self.cancels.lock().unwrap_or_else(|e| e.into_inner())
    }
}
