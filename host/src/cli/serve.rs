//! `skillbox serve` and `skillbox worker`: the processes that run tasks,
//! over the library's [`Daemon`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use skillbox::daemon::{Daemon, DaemonOptions};
use skillbox::server::client::{Client, Endpoint};
use skillbox::tasks::TaskService;
use skillbox::tls::{TlsClient, Verify};

use super::exit;

/// Where the daemon keeps its state and socket.
#[derive(Args, Debug, Clone)]
pub struct DaemonAddr {
    /// Data directory: the task store and the daemon's socket
    /// [default: the user's data dir, e.g. ~/.local/share/skillbox].
    #[arg(long, value_name = "DIR", env = "SKILLBOX_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Talk to the daemon on this TCP address instead of its socket:
    /// 127.0.0.1:PORT, or https://HOST:PORT for one serving TLS (needs
    /// --token or SKILLBOX_TOKEN).
    #[arg(long, value_name = "ADDR", env = "SKILLBOX_ADDR", global = true)]
    pub addr: Option<String>,
    /// Bearer token for --addr.
    #[arg(long, env = "SKILLBOX_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// A PEM file of CA certificates trusted for an https:// --addr,
    /// besides the system's roots.
    #[arg(long, value_name = "FILE", env = "SKILLBOX_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
}

/// The data directory of a process that runs tasks itself (`serve`,
/// `worker`, `mcp`): it takes no client flags.
#[derive(Args, Debug, Clone)]
pub struct DataDir {
    /// Data directory: the task store and the daemon's socket
    /// [default: the user's data dir, e.g. ~/.local/share/skillbox].
    #[arg(long, value_name = "DIR", env = "SKILLBOX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDir {
    /// The same place, as a client names it.
    pub(super) fn at(&self) -> DaemonAddr {
        DaemonAddr {
            data_dir: self.data_dir.clone(),
            addr: None,
            token: None,
            ca_file: None,
        }
    }
}

/// The data dir `flag` names, else SKILLBOX_DATA_DIR's, else the client
/// configuration's, else the user's default.
pub(super) fn data_dir_or_default(flag: Option<&PathBuf>) -> PathBuf {
    skillbox::profile::data_dir(flag.map(PathBuf::as_path))
}

/// Shortest `serve --token`, as for the relay's secrets: a bearer token
/// is a secret that guards running skills.
const MIN_TOKEN: usize = 16;

impl DaemonAddr {
    pub(super) fn data_dir(&self) -> PathBuf {
        data_dir_or_default(self.data_dir.as_ref())
    }

    pub(super) fn socket(&self) -> PathBuf {
        self.data_dir().join("skillbox.sock")
    }

    /// What a command needs to reach the same daemon, for the commands
    /// hints show: ` --data-dir DIR` unless it is the default, or
    /// ` --addr ADDR` (the token comes from SKILLBOX_TOKEN).
    pub(super) fn flags(&self) -> String {
        if let Some(addr) = &self.addr {
            return format!(" --addr {addr}");
        }
        let default = skillbox::profile::default_data_dir();
        match &self.data_dir {
            Some(d) if Some(d) != default.as_ref() => {
                format!(" --data-dir {}", shell_words::quote(&d.to_string_lossy()))
            }
            _ => String::new(),
        }
    }

    pub(super) fn client(&self) -> Result<Client, skillbox::Error> {
        let profile = skillbox::profile::get();
        let addr = self.addr.clone().or_else(|| profile.addr.clone());
        let token = self.token.clone().or_else(|| profile.token());
        Ok(match (addr, token) {
            (Some(addr), Some(token)) => {
                let (addr, tls) = match addr.strip_prefix("https://") {
                    Some(rest) => (
                        rest.trim_end_matches('/').to_string(),
                        Some(
                            TlsClient::with(self.ca_file.as_deref(), "--ca-file", Verify::Full)
                                .map_err(skillbox::Error::Config)?,
                        ),
                    ),
                    None => (
                        addr.strip_prefix("http://")
                            .unwrap_or(&addr)
                            .trim_end_matches('/')
                            .to_string(),
                        None,
                    ),
                };
                Client::new(Endpoint::Tcp { addr, token, tls })
            }
            _ => Client::unix(&self.socket()),
        })
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
    pub data: DataDir,
    /// Also serve the API and MCP on this TCP address: a loopback one
    /// (127.0.0.1:PORT), or any with --tls-cert and --tls-key. Always
    /// requires --token.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// The bearer token clients must send on --listen: at least 16
    /// bytes, e.g. `openssl rand -hex 16`.
    #[arg(long, env = "SKILLBOX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Serve --listen over TLS with this certificate chain (PEM, the
    /// server's certificate first); then --listen may be beyond loopback.
    #[arg(long, value_name = "FILE", requires_all = ["listen", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Delete finished tasks (with their events and checkpoints) this long
    /// after they ended; checked at start and hourly.
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    pub retain: skillbox::units::HumanDuration,
    /// Do not take `skillbox run`s on DATA-DIR/run.sock. By default a
    /// run server there lets `skillbox run` skip starting the whole
    /// command line: the run is forked from a process that has it
    /// loaded, with the caller's arguments, environment, working
    /// directory and streams, as the caller's user. SKILLBOX_RUN_VIA=process
    /// on the caller's side keeps a run in its own process.
    #[arg(long)]
    pub no_run_server: bool,
    #[command(flatten)]
    pub host: HostArgs,
}

/// The run server `serve` starts (hidden: `skillbox run-server`).
#[derive(Args, Debug)]
pub struct RunServerArgs {
    /// The socket to take runs on.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// Stop taking runs when standard input reaches its end (the daemon
    /// that started this server holds the other end of a pipe), and exit
    /// once the runs under way have ended.
    #[arg(long)]
    pub while_stdin_open: bool,
}

/// `skillbox run-server`: runs each `skillbox run` handed to it on a
/// thread of its own, with `run`. Called while this process has a single
/// thread.
pub(super) fn run_server(
    args: &RunServerArgs,
    run: fn(skillbox::handoff::Handed) -> skillbox::handoff::Ended,
) -> u8 {
    use skillbox::handoff::Lifetime;
    super::handed::prepare_process();
    skillbox::handoff::report_panics_to_callers();
    // The first runs take these instead of building their own.
    for fuel in [false, true] {
        let _ = skillbox::Host::prebuild(&super::run::server_engine(fuel, None));
    }
    let lifetime = if args.while_stdin_open {
        Lifetime::WhileStdinOpen
    } else {
        Lifetime::Forever
    };
    match skillbox::handoff::serve(&args.socket, lifetime, run) {
        Ok(()) => exit::OK,
        Err(e) => {
            errln!("error: run server {}: {e}", args.socket.display());
            exit::FAILED
        }
    }
}

/// A run server started beside the daemon; dropping it closes its
/// standard input, so it takes no more runs and exits once those under
/// way have ended.
struct RunServer {
    _child: std::process::Child,
}

impl RunServer {
    /// Starts `skillbox-host run-server` on DATA-DIR/run.sock, in a
    /// process group of its own (a Ctrl-C meant for the daemon is not
    /// meant for the runs of its callers).
    fn start(data_dir: &std::path::Path) -> Result<RunServer, String> {
        use std::os::unix::process::CommandExt;
        let socket = skillbox::handoff::socket_in(data_dir);
        let exe = std::env::current_exe().map_err(|e| format!("the run server: {e}"))?;
        let child = std::process::Command::new(&exe)
            .arg("run-server")
            .arg("--socket")
            .arg(&socket)
            .arg("--while-stdin-open")
            .stdin(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting the run server {}: {e}", exe.display()))?;
        Ok(RunServer { _child: child })
    }
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
    /// database share its queue; TLS by libpq's `?sslmode=verify-full`
    /// and `&sslrootcert=CA.pem`) or a SQLite file [default: the
    /// configuration's `store`, else DATA-DIR/tasks.db].
    #[arg(long, value_name = "URL", env = "SKILLBOX_STORE")]
    pub store: Option<String>,
    /// How long a running task's claim lasts without renewal (renewed every
    /// sixth of it, at most every 5 s). A host that dies loses its tasks to
    /// another host sharing the store after this long; a host cut off from
    /// the store this long stops its tasks.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub lease: skillbox::units::HumanDuration,
    /// The key store whose trusted keys and trust.toml decide which skills
    /// may run (`require-signature`, publishers' scopes; see `skillbox
    /// keys`).
    #[arg(long, value_name = "DIR", env = "SKILLBOX_KEYS")]
    pub keys_dir: Option<PathBuf>,
}

/// `skillbox serve`.
pub async fn serve(args: ServeArgs) -> u8 {
    match serve_inner(args).await {
        Ok(()) => exit::OK,
        Err(e) => {
            errln!("error: {e}");
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
    pub data: DataDir,
    #[command(flatten)]
    pub host: HostArgs,
}

/// `skillbox worker`.
pub async fn worker(args: WorkerArgs) -> u8 {
    match worker_inner(args).await {
        Ok(()) => exit::OK,
        Err(e) => {
            errln!("error: {e}");
            exit::FAILED
        }
    }
}

async fn worker_inner(args: WorkerArgs) -> Result<(), String> {
    let at = args.data.at();
    let daemon = open_daemon(&at, &args.host)?;
    announce_recovered(&daemon, &at);
    let tasks = daemon.tasks.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(skillbox::tasks::schedules::Schedules::new(tasks.clone()).fire(stop_rx.clone()));
    let mut worker = tokio::spawn(tasks.clone().work(stop_rx));
    errln!(
        "skillbox worker {}: running up to {} task(s) at once from {}",
        tasks.owner_id(),
        args.host.concurrency.max(1),
        daemon.store
    );
    if !daemon.sinks.is_empty() {
        errln!(
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

/// Opens the daemon's host on the data dir (see [`Daemon::open`]).
pub fn open_daemon(at: &DaemonAddr, args: &HostArgs) -> Result<Daemon, String> {
    Daemon::open(&DaemonOptions {
        data_dir: at.data_dir(),
        config: args.config.clone(),
        store: args.store.clone(),
        cache_dir: args.cache_dir.clone(),
        concurrency: args.concurrency,
        lease: args.lease.get(),
        keys: args.keys_dir.clone(),
        cli_flags: at.flags(),
    })
    .map_err(|e| e.to_string())
}

/// Says which tasks the previous process on the data dir left running.
pub fn announce_recovered(daemon: &Daemon, at: &DaemonAddr) {
    if !daemon.recovered.is_empty() {
        errln!(
            "skillbox: {} task(s) left running by the previous process on {} were interrupted",
            daemon.recovered.len(),
            at.data_dir().display()
        );
    }
}

async fn serve_inner(args: ServeArgs) -> Result<(), String> {
    if let Some(l) = args.listen
        && !l.ip().is_loopback()
        && args.tls_cert.is_none()
    {
        return Err(format!(
            "--listen {l}: without TLS only loopback addresses are allowed; to serve beyond \
             this machine give --tls-cert and --tls-key"
        ));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        _ => None,
    };
    let token = match (args.listen, &args.token) {
        (Some(_), None) => {
            return Err("--listen needs a bearer token: pass --token or set SKILLBOX_TOKEN".into());
        }
        (Some(_), Some(t)) if t.len() < MIN_TOKEN => {
            return Err(format!(
                "--token is {} bytes; a bearer token needs at least {MIN_TOKEN} \
                 (e.g. `openssl rand -hex 16`)",
                t.len()
            ));
        }
        (_, t) => t.clone(),
    };
    let at = args.data.at();
    let daemon = open_daemon(&at, &args.host)?;
    announce_recovered(&daemon, &at);
    if args.host.concurrency == 0 && !daemon.shared {
        return Err(
            "--concurrency 0 runs no tasks here: it needs a store shared with workers \
             (--store postgres://…)"
                .into(),
        );
    }
    let tasks = daemon.tasks.clone();

    let socket = at.socket();
    let _ = std::fs::remove_file(&socket);
    let unix = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", socket.display()))?;
    }
    let run_server = if args.no_run_server {
        None
    } else {
        Some(RunServer::start(&at.data_dir())?)
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // With --concurrency 0 the workers sharing the store run the tasks
    // (and deliver their notifications).
    let worker =
        (args.host.concurrency > 0).then(|| tokio::spawn(tasks.clone().work(stop_rx.clone())));
    // Schedules fire here even without workers: firing only queues tasks.
    tokio::spawn(skillbox::tasks::schedules::Schedules::new(tasks.clone()).fire(stop_rx.clone()));
    prune_hourly(tasks.clone(), args.retain);
    let shutdown = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let unix_server = axum::serve(
        unix,
        skillbox::server::router(tasks.clone(), skillbox::server::Access::open()),
    )
    .with_graceful_shutdown(shutdown);
    let tcp_server = match args.listen {
        Some(addr) => Some(listen_tcp(addr, tls.as_ref(), &daemon, token, &stop_rx).await?),
        None => None,
    };
    banner(&daemon, &socket, args.listen, tls.is_some());
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
    drop(run_server);
    Ok(())
}

/// The API and MCP on a TCP port (over TLS with `tls`'s certificate and
/// key), until `stop`.
async fn listen_tcp(
    addr: std::net::SocketAddr,
    tls: Option<&(PathBuf, PathBuf)>,
    daemon: &Daemon,
    token: Option<String>,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, String> {
    let mut rx = stop_rx.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    {
        let (stop, mut rx) = (stop.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let _ = rx.wait_for(|s| *s).await;
            stop.cancel();
        });
    }
    let access = skillbox::server::Access {
        token,
        tls: tls.is_some(),
    };
    let api = skillbox::server::router_with_mcp(
        daemon.tasks.clone(),
        access,
        Some((daemon.catalog.clone(), stop)),
    );
    let stopped = async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    Ok(match tls {
        Some((cert, key)) => {
            let l = skillbox::server::TlsListener::bind(addr, cert, key).await?;
            tokio::spawn(
                axum::serve(l, api)
                    .with_graceful_shutdown(stopped)
                    .into_future(),
            )
        }
        None => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            tokio::spawn(
                axum::serve(l, api)
                    .with_graceful_shutdown(stopped)
                    .into_future(),
            )
        }
    })
}

/// Deletes tasks that ended over `retain` ago, at start and hourly.
fn prune_hourly(tasks: Arc<TaskService>, retain: skillbox::units::HumanDuration) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every.tick().await;
            match tasks.prune(retain.get()) {
                Ok(0) => {}
                Ok(n) => {
                    errln!("skillbox serve: deleted {n} task(s) that ended over {retain} ago")
                }
                Err(e) => errln!("skillbox serve: pruning old tasks failed: {e}"),
            }
        }
    });
}

/// What `serve` says when it starts.
fn banner(
    daemon: &Daemon,
    socket: &std::path::Path,
    listen: Option<std::net::SocketAddr>,
    tls: bool,
) {
    let scheme = if tls { "https" } else { "http" };
    errln!(
        "skillbox serve: listening on {}{}; tasks in {}",
        socket.display(),
        listen
            .map(|a| format!(" and {scheme}://{a} (MCP at {scheme}://{a}/mcp)"))
            .unwrap_or_default(),
        daemon.store
    );
    if !daemon.catalog.is_empty() {
        let names: Vec<&str> = daemon.catalog.tools().map(|t| t.name.as_str()).collect();
        errln!("skillbox serve: MCP tools: {}", names.join(", "));
    }
    if !daemon.sinks.is_empty() {
        errln!(
            "skillbox serve: notifications go to {}",
            daemon.sinks.join(", ")
        );
    }
    errln!(
        "skillbox serve: skills granted docker use the engine at {} (DOCKER_HOST)",
        daemon.tasks.host().docker().endpoint()
    );
}
