//! A daemon's host: a task service on a data dir, locked for one process,
//! with the operator's configuration (installed skills, relay sinks, task
//! store). `skillbox serve`, `worker` and `mcp` open one; an embedder can
//! too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::Catalog;
use crate::config::HostConfig;
use crate::engine::{EngineOptions, default_cache_dir};
use crate::error::Error;
use crate::relay::{Relay, SinkConfig};
use crate::runtime::Host;
use crate::store::{SqliteStore, TaskId, TaskStore, is_shared, open_store, without_password};
use crate::tasks::{TaskOptions, TaskService};
use crate::trust::{KeyStore, TrustPolicy};

/// How to open a [`Daemon`].
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// The data dir: the SQLite store, scratch directories, socket, lock.
    pub data_dir: PathBuf,
    /// The configuration file; by default `DATA_DIR/config.toml` if it
    /// exists.
    pub config: Option<PathBuf>,
    /// The task store's address (see [`open_store`]); by default the
    /// configuration's `store`, else SQLite in the data dir.
    pub store: Option<String>,
    /// The compiled-component cache; by default the user's cache dir.
    pub cache_dir: Option<PathBuf>,
    /// Most tasks running at once.
    pub concurrency: usize,
    /// How long a claim lasts without renewal.
    pub lease: Duration,
    /// The key store whose trusted keys and `trust.toml` decide which
    /// skills may run (see [`crate::trust::TrustPolicy`]); by default
    /// `$SKILLBOX_KEYS`, else the user's config dir.
    pub keys: Option<PathBuf>,
    /// What a `skillbox` command needs to reach this daemon (e.g.
    /// ` --data-dir /srv/sbx` when it is not the default), appended to the
    /// commands notifications show.
    pub cli_flags: String,
}

/// Holds an exclusive lock on the data dir for the daemon's lifetime.
struct DirLock(#[allow(dead_code)] std::fs::File);

/// A host with its task store on a data dir, locked for this process.
pub struct Daemon {
    /// The task service, on the store.
    pub tasks: Arc<TaskService>,
    /// The installed skills of the configuration.
    pub catalog: Arc<Catalog>,
    /// The relay sinks, for the start-up message.
    pub sinks: Vec<String>,
    /// Where the tasks are kept, for the start-up message (no password).
    pub store: String,
    /// Whether other hosts can share the store (PostgreSQL).
    pub shared: bool,
    /// The tasks the previous process on this data dir left running,
    /// interrupted at once (to be resumed or failed by policy).
    pub recovered: Vec<TaskId>,
    _lock: DirLock,
}

impl Daemon {
    /// Locks the data dir, reads the configuration and the installed
    /// skills, opens the store and interrupts what a previous process on
    /// this data dir left running.
    pub fn open(options: &DaemonOptions) -> Result<Daemon, Error> {
        let dir = &options.data_dir;
        // Private before anything is written into it: the store keeps every
        // task's input, summary and events here.
        crate::private::private_dir(dir).map_err(|e| {
            Error::DataDir(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let lock = lock_data_dir(dir)?;
        let (config, base) = load_config(options)?;
        let keys = options
            .keys
            .clone()
            .map(KeyStore::at)
            .unwrap_or_else(KeyStore::default_location);
        let trust = TrustPolicy::load(keys).map_err(|e| Error::Config(e.to_string()))?;
        let catalog = Catalog::load(&config.skills, &base, &trust)?;
        let mut relay = Relay::from_config(&config.relay)?;
        relay.cli_flags = options.cli_flags.clone();
        for tool in catalog.tools() {
            relay
                .resolve(&tool.config.notify_to)
                .map_err(|e| Error::Config(format!("[skills.{}] notify-to: {e}", tool.name)))?;
        }
        let spec = options.store.as_ref().or(config.store.as_ref());
        let store: Arc<dyn TaskStore> = match spec {
            Some(spec) => open_store(spec)?,
            None => Arc::new(SqliteStore::open_dir(dir)?),
        };
        let store_name = match spec {
            Some(spec) => without_password(spec),
            None => dir.join("tasks.db").display().to_string(),
        };
        let host = Host::new(EngineOptions {
            cache_dir: options.cache_dir.clone().or_else(default_cache_dir),
            max_instances: (options.concurrency as u32).max(1) * 2,
            ..EngineOptions::default()
        })?;
        let task_options = TaskOptions {
            concurrency: options.concurrency.max(1),
            scratch: Some(dir.join("scratch")),
            relay,
            trust,
            secrets: config.secrets.clone(),
            lease: options.lease,
            heartbeat: (options.lease / 6).clamp(Duration::from_millis(50), Duration::from_secs(5)),
            ..TaskOptions::default()
        };
        let tasks = Arc::new(TaskService::new(Arc::new(host), store, task_options));
        let recovered = recover_previous(&tasks, dir)?;
        Ok(Daemon {
            tasks,
            recovered,
            catalog: Arc::new(catalog),
            sinks: describe_sinks(&config),
            store: store_name,
            shared: spec.is_some_and(|s| is_shared(s)),
            _lock: lock,
        })
    }
}

/// The configuration and the directory its relative paths start from.
fn load_config(options: &DaemonOptions) -> Result<(HostConfig, PathBuf), Error> {
    let default = options.data_dir.join("config.toml");
    let path = options
        .config
        .clone()
        .or_else(|| default.exists().then_some(default));
    let config = match &path {
        Some(path) => HostConfig::load(path)?,
        None => HostConfig::default(),
    };
    let base = path
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Ok((config, base))
}

/// The previous process on this data dir is gone (we hold the lock):
/// whatever it left running is interrupted now, not when its lease ends.
fn recover_previous(tasks: &TaskService, dir: &Path) -> Result<Vec<TaskId>, Error> {
    let owner_file = dir.join("serve.owner");
    let recovered = match std::fs::read_to_string(&owner_file) {
        Ok(prev) => tasks.recover_owner(prev.trim())?,
        Err(_) => Vec::new(),
    };
    crate::private::write_private(&owner_file, tasks.owner_id().as_bytes())
        .map_err(|e| Error::io(&owner_file, e))?;
    Ok(recovered)
}

/// Each configured sink in words, for the start-up message.
fn describe_sinks(config: &HostConfig) -> Vec<String> {
    config
        .relay
        .sink
        .iter()
        .map(|(name, sink)| {
            let default = if config.relay.default.contains(name) {
                ", default"
            } else {
                ""
            };
            match sink {
                SinkConfig::Webhook { url, .. } => format!("{name} (webhook {url}{default})"),
                SinkConfig::Openclaw { url, .. } => format!("{name} (openclaw {url}{default})"),
            }
        })
        .collect()
}

fn lock_data_dir(dir: &Path) -> Result<DirLock, Error> {
    use std::os::fd::AsRawFd;
    let path = dir.join("serve.lock");
    crate::private::private_file(&path).map_err(|e| Error::io(&path, e))?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(Error::DataDir(format!(
            "another skillbox daemon already serves {} (lock {} is held)",
            dir.display(),
            path.display()
        )));
    }
    Ok(DirLock(f))
}
