//! `skillbox serve`, `skillbox spawn` and `skillbox tasks …`: background
//! tasks through the daemon's local API.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use hyper::Method;
use skillbox::config::HostConfig;
use skillbox::prelude::*;
use skillbox::relay::Relay;
use skillbox::server::client::{Client, ClientError, Endpoint};
use skillbox::store::{CleanupMode, NotifyMode, SqliteStore, TaskStore, open_store};
use skillbox::tasks::{TaskOptions, TaskService};

use super::exit;
use super::grants::GrantArgs;

/// Where the daemon keeps its state and socket.
#[derive(Args, Debug, Clone)]
pub struct DaemonAddr {
    /// Data directory: the task store and the daemon's socket
    /// [default: the user's data dir, e.g. ~/.local/share/skillbox].
    #[arg(long, value_name = "DIR", env = "SKILLBOX_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Talk to the daemon on this loopback TCP address instead of its socket
    /// (needs --token or SKILLBOX_TOKEN).
    #[arg(long, value_name = "ADDR", env = "SKILLBOX_ADDR", global = true)]
    pub addr: Option<String>,
    /// Bearer token for --addr.
    #[arg(long, env = "SKILLBOX_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

impl DaemonAddr {
    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .or_else(|| dirs::data_dir().map(|d| d.join("skillbox")))
            .unwrap_or_else(|| PathBuf::from(".skillbox"))
    }

    fn socket(&self) -> PathBuf {
        self.data_dir().join("skillbox.sock")
    }

    fn client(&self) -> Client {
        match (&self.addr, &self.token) {
            (Some(addr), Some(token)) => Client::new(Endpoint::Tcp {
                addr: addr.clone(),
                token: token.clone(),
            }),
            _ => Client::unix(&self.socket()),
        }
    }
}

/// Run the skillbox daemon: a durable task queue with a local HTTP API.
///
/// It keeps tasks in DATA-DIR/tasks.db (SQLite; or in the database of
/// --store, e.g. a PostgreSQL shared with other daemons), listens on
/// DATA-DIR/skillbox.sock (mode 0600), runs queued tasks up to
/// --concurrency at a time, and on start resumes (or fails, by each
/// skill's policy) the tasks a previous daemon left running. Stop it with
/// SIGTERM or Ctrl-C; running tasks are then interrupted and resumed by the
/// next start.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub at: DaemonAddr,
    /// Also listen on this loopback TCP address (requires --token).
    #[arg(long, value_name = "127.0.0.1:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// Delete finished tasks (with their events and checkpoints) this long
    /// after they ended; checked at start and hourly.
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    pub retain: skillbox::units::HumanDuration,
    #[command(flatten)]
    pub host: HostArgs,
}

/// How a process that runs tasks (`serve`, `mcp`) sets up its host.
#[derive(Args, Debug)]
pub struct HostArgs {
    /// Most tasks running at once. `serve --concurrency 0` runs none: an
    /// API server for workers sharing its --store.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Directory of the compiled-component cache.
    #[arg(long, value_name = "DIR", env = "SKILLBOX_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Configuration file: installed skills ([skills.NAME], the MCP tools),
    /// relay sinks (webhooks, OpenClaw gateways), default sinks, retry
    /// policy [default: DATA-DIR/config.toml, if it exists]. See README.md,
    /// "Relaying summaries" and "Agents".
    #[arg(long, value_name = "FILE", env = "SKILLBOX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Task store: `postgres://USER@HOST:PORT/DB` (hosts naming one
    /// database share its queue) or a SQLite file [default: the
    /// configuration's `store`, else DATA-DIR/tasks.db].
    #[arg(long, value_name = "URL", env = "SKILLBOX_STORE")]
    pub store: Option<String>,
    /// How long a running task's claim lasts without renewal (renewed every
    /// sixth of it, at most every 5 s). A host that dies loses its tasks to
    /// another host sharing the store after this long; a host cut off from
    /// the store this long stops its tasks.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub lease: skillbox::units::HumanDuration,
}

/// `skillbox serve`.
pub async fn serve(args: ServeArgs) -> u8 {
    match serve_inner(args).await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}

/// Run queued tasks from a task store shared with other hosts, without an API.
///
/// Workers on one or more machines that name the same PostgreSQL database
/// (--store postgres://…) share its queue: each claims queued tasks with
/// `FOR UPDATE SKIP LOCKED`, holds a lease renewed while the task runs, and
/// wakes on PostgreSQL's `LISTEN/NOTIFY` when another host queues work. A
/// worker that dies loses its tasks after --lease; another resumes them
/// from their checkpoints (or fails them, by each skill's policy). Every
/// worker must see each skill at the path it was spawned with (a shared,
/// read-only skills directory); a worker whose file differs from the pinned
/// digest fails the task instead of running another component. Tasks are
/// spawned through any `skillbox serve` (or embedding host) on the same
/// store. DATA-DIR holds this worker's scratch directories and lock (one
/// worker per data dir). Stop it with SIGTERM or Ctrl-C.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub at: DaemonAddr,
    #[command(flatten)]
    pub host: HostArgs,
}

/// `skillbox worker`.
pub async fn worker(args: WorkerArgs) -> u8 {
    match worker_inner(args).await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}

async fn worker_inner(args: WorkerArgs) -> Result<(), String> {
    let daemon = open_daemon(&args.at, &args.host)?;
    let tasks = daemon.tasks.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut worker = tokio::spawn(tasks.clone().work(stop_rx));
    eprintln!(
        "skillbox worker {}: running up to {} task(s) at once from {}",
        tasks.owner_id(),
        args.host.concurrency.max(1),
        daemon.store
    );
    if !daemon.sinks.is_empty() {
        eprintln!(
            "skillbox worker: notifications go to {}",
            daemon.sinks.join(", ")
        );
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch for SIGTERM: {e}"))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        // It stopped by itself: the store failed for good.
        r = &mut worker => return r.map_err(|e| e.to_string())?.map_err(|e| e.to_string()),
    }
    let _ = stop_tx.send(true);
    worker
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Holds an exclusive lock on the data dir for the daemon's lifetime.
pub struct DirLock(#[allow(dead_code)] std::fs::File);

fn lock_data_dir(dir: &std::path::Path) -> Result<DirLock, String> {
    use std::os::fd::AsRawFd;
    let path = dir.join("serve.lock");
    skillbox::private::private_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "another skillbox daemon already serves {} (lock {} is held)",
            dir.display(),
            path.display()
        ));
    }
    Ok(DirLock(f))
}

/// A host with its task store on a data dir, locked for this process.
pub struct Daemon {
    /// The host, running tasks from the store.
    pub tasks: Arc<TaskService>,
    /// The installed skills of the configuration.
    pub catalog: Arc<skillbox::catalog::Catalog>,
    /// The relay sinks, for the start-up message.
    pub sinks: Vec<String>,
    /// Where the tasks are kept, for the start-up message (no password).
    pub store: String,
    /// Whether other hosts can share the store (PostgreSQL).
    pub shared: bool,
    _lock: DirLock,
}

/// Locks the data dir, reads the configuration and the installed skills,
/// opens the store and interrupts what a previous process on this data dir
/// left running.
pub fn open_daemon(at: &DaemonAddr, args: &HostArgs) -> Result<Daemon, String> {
    let concurrency = args.concurrency;
    let dir = at.data_dir();
    // Private before anything is written into it: the store keeps every
    // task's input, summary and events here.
    skillbox::private::private_dir(&dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
    let lock = lock_data_dir(&dir)?;
    let default = dir.join("config.toml");
    let config_path = args
        .config
        .clone()
        .or_else(|| default.exists().then_some(default));
    let config = match &config_path {
        Some(path) => HostConfig::load(path).map_err(|e| e.to_string())?,
        None => HostConfig::default(),
    };
    let base = config_path
        .as_deref()
        .and_then(std::path::Path::parent)
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let catalog =
        skillbox::catalog::Catalog::load(&config.skills, &base).map_err(|e| e.to_string())?;
    let relay = Relay::from_config(&config.relay).map_err(|e| e.to_string())?;
    for tool in catalog.tools() {
        relay
            .resolve(&tool.config.notify_to)
            .map_err(|e| format!("[skills.{}] notify-to: {e}", tool.name))?;
    }
    let sinks: Vec<String> = config
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
                skillbox::relay::SinkConfig::Webhook { url, .. } => {
                    format!("{name} (webhook {url}{default})")
                }
                skillbox::relay::SinkConfig::Openclaw { url, .. } => {
                    format!("{name} (openclaw {url}{default})")
                }
            }
        })
        .collect();
    let spec = args.store.as_ref().or(config.store.as_ref());
    let store: Arc<dyn TaskStore> = match spec {
        Some(spec) => open_store(spec).map_err(|e| e.to_string())?,
        None => Arc::new(SqliteStore::open_dir(&dir).map_err(|e| e.to_string())?),
    };
    let shared =
        spec.is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"));
    let store_name = match spec {
        Some(spec) => without_password(spec),
        None => dir.join("tasks.db").display().to_string(),
    };
    let host = Host::new(EngineOptions {
        cache_dir: args
            .cache_dir
            .clone()
            .or_else(skillbox::engine::default_cache_dir),
        max_instances: (concurrency as u32).max(1) * 2,
        ..EngineOptions::default()
    })
    .map_err(|e| e.to_string())?;
    let tasks = TaskService::new(
        Arc::new(host),
        store,
        TaskOptions {
            concurrency: concurrency.max(1),
            scratch: Some(dir.join("scratch")),
            relay,
            lease: args.lease.get(),
            heartbeat: (args.lease.get() / 6)
                .clamp(Duration::from_millis(50), Duration::from_secs(5)),
            ..TaskOptions::default()
        },
    );
    let tasks = Arc::new(tasks);

    // The previous process on this data dir is gone (we hold the lock):
    // whatever it left running is interrupted now, not when its lease ends.
    let owner_file = dir.join("serve.owner");
    if let Ok(prev) = std::fs::read_to_string(&owner_file) {
        let ids = tasks
            .recover_owner(prev.trim())
            .map_err(|e| e.to_string())?;
        if !ids.is_empty() {
            eprintln!(
                "skillbox: {} task(s) left running by the previous process on {} were interrupted",
                ids.len(),
                dir.display()
            );
        }
    }
    skillbox::private::write_private(&owner_file, tasks.owner_id().as_bytes())
        .map_err(|e| format!("{}: {e}", owner_file.display()))?;
    Ok(Daemon {
        tasks,
        catalog: Arc::new(catalog),
        sinks,
        store: store_name,
        shared,
        _lock: lock,
    })
}

/// `spec` with the password of a `scheme://user:password@host…` URL
/// replaced by `***`.
fn without_password(spec: &str) -> String {
    let Some((scheme, rest)) = spec.split_once("://") else {
        return spec.to_string();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') && !user.contains('/') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}")
        }
        _ => spec.to_string(),
    }
}

async fn serve_inner(args: ServeArgs) -> Result<(), String> {
    if let Some(l) = args.listen
        && !l.ip().is_loopback()
    {
        return Err(format!("--listen {l}: only loopback addresses are allowed"));
    }
    let token = match (args.listen, &args.at.token) {
        (Some(_), None) => {
            return Err("--listen needs a bearer token: pass --token or set SKILLBOX_TOKEN".into());
        }
        (_, t) => t.clone(),
    };
    let daemon = open_daemon(&args.at, &args.host)?;
    if args.host.concurrency == 0 && !daemon.shared {
        return Err(
            "--concurrency 0 runs no tasks here: it needs a store shared with workers \
             (--store postgres://…)"
                .into(),
        );
    }
    let (tasks, sinks) = (daemon.tasks.clone(), daemon.sinks.clone());

    let socket = args.at.socket();
    let _ = std::fs::remove_file(&socket);
    let unix = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", socket.display()))?;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // With --concurrency 0 the workers sharing the store run the tasks
    // (and deliver their notifications).
    let worker =
        (args.host.concurrency > 0).then(|| tokio::spawn(tasks.clone().work(stop_rx.clone())));
    {
        let (tasks, retain) = (tasks.clone(), args.retain.get());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                every.tick().await;
                match tasks.prune(retain) {
                    Ok(0) => {}
                    Ok(n) => eprintln!(
                        "skillbox serve: deleted {n} task(s) that ended over {} ago",
                        args.retain
                    ),
                    Err(e) => eprintln!("skillbox serve: pruning old tasks failed: {e}"),
                }
            }
        });
    }
    let shutdown = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let unix_server = axum::serve(unix, skillbox::server::router(tasks.clone(), None))
        .with_graceful_shutdown(shutdown);
    let tcp_server = match args.listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            let mut rx = stop_rx.clone();
            let stop = tokio_util::sync::CancellationToken::new();
            {
                let (stop, mut rx) = (stop.clone(), stop_rx.clone());
                tokio::spawn(async move {
                    let _ = rx.wait_for(|s| *s).await;
                    stop.cancel();
                });
            }
            let api = skillbox::server::router_with_mcp(
                tasks.clone(),
                token,
                Some((daemon.catalog.clone(), stop)),
            );
            Some(tokio::spawn(
                axum::serve(l, api)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|s| *s).await;
                    })
                    .into_future(),
            ))
        }
        None => None,
    };
    eprintln!(
        "skillbox serve: listening on {}{}; tasks in {}",
        socket.display(),
        args.listen
            .map(|a| format!(" and http://{a} (MCP at http://{a}/mcp)"))
            .unwrap_or_default(),
        daemon.store
    );
    if !daemon.catalog.is_empty() {
        let names: Vec<&str> = daemon.catalog.tools().map(|t| t.name.as_str()).collect();
        eprintln!("skillbox serve: MCP tools: {}", names.join(", "));
    }
    if !sinks.is_empty() {
        eprintln!("skillbox serve: notifications go to {}", sinks.join(", "));
    }
    eprintln!(
        "skillbox serve: skills granted docker use the engine at {} (DOCKER_HOST)",
        tasks.host().docker().endpoint()
    );
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = stop_tx.send(true);
    });
    unix_server.await.map_err(|e| e.to_string())?;
    if let Some(t) = tcp_server {
        let _ = t.await;
    }
    if let Some(worker) = worker {
        worker
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Start a skill as a background task and print its id at once.
///
/// Takes the same grant flags as `run`. The daemon (`skillbox serve`) must be
/// running on the same --data-dir; follow the task with `skillbox tasks`.
#[derive(Args, Debug)]
pub struct SpawnArgs {
    /// Skill directory, skill.toml, or .wasm component.
    pub skill: PathBuf,
    /// Input as JSON text, @FILE, or - for stdin.
    #[arg(long, short, value_name = "JSON|@FILE|-", default_value = "{}")]
    pub input: String,
    #[command(flatten)]
    pub grants: GrantArgs,
    /// A label, to find the task again.
    #[arg(long)]
    pub label: Option<String>,
    /// The agent session the result belongs to.
    #[arg(long, value_name = "KEY")]
    pub parent_session: Option<String>,
    /// Which state changes to announce: done-only, state-changes, silent.
    #[arg(long, default_value = "done-only")]
    pub notify: NotifyMode,
    /// Where to announce them: relay sinks of the daemon's configuration,
    /// by name (repeat, or separate with commas) [default: the configured
    /// relay.default].
    #[arg(long, value_name = "SINK", value_delimiter = ',')]
    pub notify_to: Vec<String>,
    /// What to do with the task's scratch directory (read-write at
    /// /scratch in the guest; DATA_DIR/scratch/ID on the host) when the
    /// task ends: keep it (until the task is pruned) or delete it.
    #[arg(long, default_value = "keep")]
    pub cleanup: CleanupMode,
    /// Accept the skill even if some requested capabilities were not granted.
    #[arg(long)]
    pub partial: bool,
    /// Accept a manifest that pins no sha256.
    #[arg(long)]
    pub allow_unpinned: bool,
    /// Print the stored task as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub at: DaemonAddr,
}

/// An error of a daemon call, with the exit code `run` would give it.
enum Failure {
    /// From the client or the API.
    Client(ClientError),
    /// From checking the request locally.
    Local(skillbox::Error),
    /// Anything else.
    Other(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

impl From<skillbox::Error> for Failure {
    fn from(e: skillbox::Error) -> Self {
        Failure::Local(e)
    }
}

fn fail(e: impl Into<Failure>, json: bool) -> u8 {
    let (message, code) = match e.into() {
        Failure::Client(e) => {
            let code = match &e {
                ClientError::Api { status: 403, .. } => exit::DENIED,
                ClientError::Api {
                    status: 400 | 404 | 413 | 422,
                    ..
                } => exit::INVALID,
                _ => exit::FAILED,
            };
            (e.to_string(), code)
        }
        Failure::Local(e) => (e.to_string(), super::output::code_of(&e)),
        Failure::Other(m) => (m, exit::FAILED),
    };
    super::output::print_error(&message, code, json)
}

/// `skillbox spawn`.
pub async fn spawn(args: SpawnArgs) -> u8 {
    let result = async {
        let grants = args.grants.to_grants()?;
        let input = super::run::read_input(&args.input)?;
        let skill = args
            .skill
            .canonicalize()
            .map_err(|e| Failure::Other(format!("{}: {e}", args.skill.display())))?;
        let body = serde_json::json!({
            "skill": skill,
            "input": serde_json::from_str::<serde_json::Value>(&input)
                .map_err(|e| skillbox::Error::Input(e.to_string()))?,
            "grants": grants,
            "label": args.label,
            "parent_session": args.parent_session,
            "notify": args.notify,
            "notify_to": args.notify_to,
            "cleanup": args.cleanup,
            "partial": args.partial,
            "allow_unpinned": args.allow_unpinned,
        });
        Ok::<_, Failure>(
            args.at
                .client()
                .call(Method::POST, "/v1/tasks", Some(&body))
                .await?,
        )
    }
    .await;
    match result {
        Ok(task) if args.json => {
            outln!("{task}");
            exit::OK
        }
        Ok(task) => {
            outln!("{}", task["id"].as_str().unwrap_or_default());
            exit::OK
        }
        Err(e) => fail(e, args.json),
    }
}

/// Inspect and control background tasks.
#[derive(Args, Debug)]
pub struct TasksArgs {
    #[command(subcommand)]
    pub command: TasksCommand,
    #[command(flatten)]
    pub at: DaemonAddr,
}

/// `skillbox tasks` subcommands.
#[derive(Subcommand, Debug)]
pub enum TasksCommand {
    /// List tasks, newest first.
    List {
        /// Only tasks in this state.
        #[arg(long)]
        state: Option<String>,
        /// Only tasks with this label.
        #[arg(long)]
        label: Option<String>,
        /// Only tasks of this parent session.
        #[arg(long)]
        parent_session: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one task.
    Show {
        /// Task id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a task's events (progress, logs, output, audit, state changes).
    Logs {
        /// Task id.
        id: String,
        /// Keep following until the task ends.
        #[arg(long, short)]
        follow: bool,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Wait for a task to end; print the message its parent session gets;
    /// exit like `run` would.
    Wait {
        /// Task id.
        id: String,
        /// Print the task as JSON (with its final `notification`).
        #[arg(long)]
        json: bool,
    },
    /// Cancel a task.
    Cancel {
        /// Task id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send a task's failed notifications again (now, with a fresh retry
    /// deadline).
    Redeliver {
        /// Task id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The task with its `deliveries`.
async fn show_task(client: &Client, id: &str) -> Result<serde_json::Value, ClientError> {
    let mut task = client
        .call(Method::GET, &format!("/v1/tasks/{id}"), None)
        .await?;
    task["deliveries"] = client
        .call(Method::GET, &format!("/v1/tasks/{id}/deliveries"), None)
        .await?;
    Ok(task)
}

/// The notify lines of `tasks show`.
fn print_deliveries(t: &serde_json::Value) {
    let sinks: Vec<&str> = t["spec"]["notify_to"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    outln!(
        "notify     {}{}",
        t["spec"]["notify"].as_str().unwrap_or(""),
        if sinks.is_empty() {
            " (no sinks)".to_string()
        } else {
            format!(" → {}", sinks.join(", "))
        }
    );
    for d in t["deliveries"].as_array().into_iter().flatten() {
        let attempts = d["attempts"].as_u64().unwrap_or(0);
        let mut line = format!(
            "delivery   {} {}: {}, {attempts} attempt{}",
            d["sink"].as_str().unwrap_or(""),
            d["to"].as_str().unwrap_or(""),
            d["state"].as_str().unwrap_or(""),
            if attempts == 1 { "" } else { "s" }
        );
        match d["state"].as_str() {
            Some("delivered") => {}
            Some("pending") if attempts == 0 => {}
            Some("pending") => line.push_str(&format!(", next {}", until(d["next_ms"].as_i64()))),
            _ => {}
        }
        if d["state"] != "delivered"
            && let Some(e) = d["last_error"].as_str()
        {
            line.push_str(&format!("; last error: {e}"));
        }
        outln!("{line}");
    }
}

/// "in 3s" for a future Unix-ms time.
fn until(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => {
            let d = (ms - skillbox::store::now_ms()).max(0) as u64;
            format!(
                "in {}",
                skillbox::units::HumanDuration(Duration::from_secs(d.div_ceil(1000)))
            )
        }
        None => "-".into(),
    }
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn age(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    let secs = (skillbox::store::now_ms() - ms).max(0) / 1000;
    match secs {
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

fn exit_for_state(state: &str) -> u8 {
    match state {
        "succeeded" => exit::OK,
        "timed_out" => exit::TIMED_OUT,
        _ => exit::FAILED,
    }
}

/// A progress bar on stderr while a task runs, when stderr is a terminal.
struct LiveProgress(Option<indicatif::ProgressBar>);

impl LiveProgress {
    fn on_terminal(wanted: bool) -> LiveProgress {
        LiveProgress((wanted && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(1000);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {percent:>3}% {msg}")
            {
                b.set_style(style.progress_chars("=> "));
            }
            b.enable_steady_tick(Duration::from_millis(120));
            b
        }))
    }

    /// Moves the bar to `fraction` (0..1, when known) with `message`.
    fn set(&self, fraction: Option<f64>, message: Option<&str>) {
        if let Some(b) = &self.0 {
            if let Some(f) = fraction {
                b.set_position((f.clamp(0.0, 1.0) * 1000.0) as u64);
            }
            if let Some(m) = message {
                b.set_message(m.to_string());
            }
        }
    }

    /// Prints with the bar out of the way.
    fn above(&self, print: impl FnOnce()) {
        match &self.0 {
            Some(b) => b.suspend(print),
            None => print(),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

fn describe_event(e: &serde_json::Value) -> String {
    let kind = e["kind"].as_str().unwrap_or("?");
    let body = match kind {
        "state" => format!(
            "{} -> {}: {}",
            e["from"].as_str().unwrap_or("-"),
            e["to"].as_str().unwrap_or("?"),
            e["reason"].as_str().unwrap_or("")
        ),
        "progress" => match e["fraction"].as_f64() {
            Some(f) => format!(
                "[{:>3.0}%] {}",
                f * 100.0,
                e["message"].as_str().unwrap_or("")
            ),
            None => format!("[ ... ] {}", e["message"].as_str().unwrap_or("")),
        },
        "log" => format!(
            "{}: {}",
            e["level"].as_str().unwrap_or("info"),
            e["message"].as_str().unwrap_or("")
        ),
        "output" => format!(
            "{}: {}",
            e["stream"].as_str().unwrap_or(""),
            e["text"].as_str().unwrap_or("").trim_end()
        ),
        "audit" => format!(
            "{} [{}] {}: {}",
            if e["allowed"].as_bool() == Some(true) {
                "allow"
            } else {
                "deny"
            },
            e["capability"].as_str().unwrap_or(""),
            e["detail"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or("")
        ),
        "checkpoint" => format!(
            "saved {:?} ({} bytes)",
            e["key"].as_str().unwrap_or(""),
            e["bytes"]
        ),
        _ => e.to_string(),
    };
    format!("{:>5} {kind:<10} {body}", e["seq"].as_u64().unwrap_or(0))
}

/// `skillbox tasks …`.
pub async fn tasks(args: TasksArgs) -> u8 {
    let client = args.at.client();
    match args.command {
        TasksCommand::List {
            state,
            label,
            parent_session,
            limit,
            json,
        } => {
            let path = format!(
                "/v1/tasks{}",
                query(&[
                    ("state", state),
                    ("label", label),
                    ("parent_session", parent_session),
                    ("limit", Some(limit.to_string())),
                ])
            );
            match client.call(Method::GET, &path, None).await {
                Ok(v) if json => {
                    outln!("{v}");
                    exit::OK
                }
                Ok(v) => {
                    let tasks = v.as_array().cloned().unwrap_or_default();
                    if tasks.is_empty() {
                        eprintln!("no tasks");
                        return exit::OK;
                    }
                    outln!(
                        "{:<26}  {:<11}  {:<16}  {:<16}  {:>5}  CREATED",
                        "ID",
                        "STATE",
                        "SKILL",
                        "LABEL",
                        "DONE"
                    );
                    for t in tasks {
                        let done = t["progress"]
                            .as_f64()
                            .map(|f| format!("{:.0}%", f * 100.0))
                            .unwrap_or_else(|| "-".into());
                        outln!(
                            "{:<26}  {:<11}  {:<16}  {:<16}  {:>5}  {}",
                            t["id"].as_str().unwrap_or(""),
                            t["state"].as_str().unwrap_or(""),
                            t["spec"]["skill_name"].as_str().unwrap_or(""),
                            t["spec"]["label"].as_str().unwrap_or("-"),
                            done,
                            age(t["created_ms"].as_i64())
                        );
                    }
                    exit::OK
                }
                Err(e) => fail(e, json),
            }
        }
        TasksCommand::Show { id, json } => match show_task(&client, &id).await {
            Ok(v) if json => {
                outln!("{v}");
                exit::OK
            }
            Ok(t) => {
                outln!("task       {}", t["id"].as_str().unwrap_or(""));
                outln!(
                    "skill      {} ({})",
                    t["spec"]["skill_name"].as_str().unwrap_or(""),
                    t["spec"]["skill"].as_str().unwrap_or("")
                );
                outln!(
                    "state      {} (attempt {})",
                    t["state"].as_str().unwrap_or(""),
                    t["attempt"]
                );
                outln!("label      {}", t["spec"]["label"].as_str().unwrap_or("-"));
                outln!(
                    "parent     {}",
                    t["spec"]["parent_session"].as_str().unwrap_or("-")
                );
                outln!("created    {}", age(t["created_ms"].as_i64()));
                if let Some(m) = t["progress_message"].as_str() {
                    outln!("progress   {m}");
                }
                if !t["outcome"].is_null() {
                    outln!(
                        "outcome    {}",
                        t["outcome"]["outcome"].as_str().unwrap_or("")
                    );
                    if let Some(text) = t["outcome"]["text"].as_str() {
                        outln!("\n{}", text.trim_end());
                    }
                    if let Some(m) = t["outcome"]["message"].as_str() {
                        outln!("message    {m}");
                    }
                }
                print_deliveries(&t);
                outln!(
                    "\nlogs: skillbox tasks logs {}",
                    t["id"].as_str().unwrap_or("")
                );
                exit::OK
            }
            Err(e) => fail(e, json),
        },
        TasksCommand::Logs { id, follow, json } => {
            if !follow {
                return match client
                    .call(
                        Method::GET,
                        &format!("/v1/tasks/{id}/events?follow=false"),
                        None,
                    )
                    .await
                {
                    Ok(v) => {
                        for e in v.as_array().cloned().unwrap_or_default() {
                            if json {
                                outln!("{e}")
                            } else {
                                outln!("{}", describe_event(&e))
                            }
                        }
                        exit::OK
                    }
                    Err(e) => fail(e, json),
                };
            }
            let mut stream = match client.events(&id, 0).await {
                Ok(s) => s,
                Err(e) => return fail(e, json),
            };
            // On a terminal, the latest progress stays in a bar below the
            // lines.
            let bar = LiveProgress::on_terminal(!json);
            let code = loop {
                match stream.next_event().await {
                    Ok(Some((_, kind, data))) if kind == "error" => {
                        break fail(Failure::Other(data), json);
                    }
                    Ok(Some((_, _, data))) => {
                        let e: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
                        if json {
                            outln!("{e}");
                            continue;
                        }
                        match e["kind"].as_str() {
                            Some("progress") => {
                                bar.set(e["fraction"].as_f64(), e["message"].as_str())
                            }
                            Some("state") => bar.set(None, e["to"].as_str()),
                            _ => {}
                        }
                        bar.above(|| outln!("{}", describe_event(&e)));
                    }
                    Ok(None) => break exit::OK,
                    Err(e) => break fail(e, json),
                }
            };
            bar.finish();
            code
        }
        TasksCommand::Wait { id, json } => {
            let bar = LiveProgress::on_terminal(!json);
            let task = loop {
                match client
                    .call(
                        Method::GET,
                        &format!("/v1/tasks/{id}/wait?timeout_ms=1000"),
                        None,
                    )
                    .await
                {
                    Ok(t) => {
                        let state = t["state"].as_str().unwrap_or("");
                        if matches!(state, "succeeded" | "failed" | "timed_out" | "cancelled") {
                            break t;
                        }
                        bar.set(
                            t["progress"].as_f64(),
                            Some(t["progress_message"].as_str().unwrap_or(state)),
                        );
                    }
                    Err(e) => return fail(e, json),
                }
            };
            bar.finish();
            let state = task["state"].as_str().unwrap_or("").to_string();
            let notification = match client
                .call(Method::GET, &format!("/v1/tasks/{id}/notification"), None)
                .await
            {
                Ok(n) => n,
                Err(e) => return fail(e, json),
            };
            if json {
                let mut task = task;
                task["notification"] = notification;
                outln!("{task}");
            } else {
                outln!("{}", notification["message"].as_str().unwrap_or_default());
            }
            exit_for_state(&state)
        }
        TasksCommand::Redeliver { id, json } => {
            match client
                .call(Method::POST, &format!("/v1/tasks/{id}/redeliver"), None)
                .await
            {
                Ok(v) if json => {
                    outln!("{v}");
                    exit::OK
                }
                Ok(v) => {
                    match v["requeued"].as_u64().unwrap_or(0) {
                        0 => outln!("{id}: no failed notifications to send again"),
                        n => outln!("{id}: {n} notification(s) queued again"),
                    }
                    exit::OK
                }
                Err(e) => fail(e, json),
            }
        }
        TasksCommand::Cancel { id, json } => {
            match client
                .call(Method::POST, &format!("/v1/tasks/{id}/cancel"), None)
                .await
            {
                Ok(t) if json => {
                    outln!("{t}");
                    exit::OK
                }
                Ok(t) => {
                    outln!(
                        "{} {}",
                        t["id"].as_str().unwrap_or(""),
                        if t["state"] == "cancelled" {
                            "cancelled"
                        } else {
                            "cancelling"
                        }
                    );
                    exit::OK
                }
                Err(e) => fail(e, json),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_urls_are_shown_without_their_password() {
        use super::without_password as w;
        assert_eq!(
            w("postgres://sbx:secret@db:5432/tasks"),
            "postgres://sbx:***@db:5432/tasks"
        );
        assert_eq!(w("postgres://sbx@db/tasks"), "postgres://sbx@db/tasks");
        assert_eq!(
            w("/var/lib/skillbox/tasks.db"),
            "/var/lib/skillbox/tasks.db"
        );
    }
}
