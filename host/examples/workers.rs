//! Throughput of `skillbox worker` processes sharing one PostgreSQL against
//! one worker on SQLite, in the same run on the same machine, and the
//! fail-over time after `kill -9` of a worker.
//!
//! For each configuration, N no-op tasks (the `hello` skill) are queued
//! first; then the workers start, and throughput is N over the span from
//! the first task's start to the last one's end, by the tasks' own
//! timestamps (process start-up is not counted). PostgreSQL is a
//! throw-away server on a loopback port (`skillbox::store::testing`, as the
//! tests use it: `fsync` off, so the figures are PostgreSQL's best case).
//!
//! For each run it also reports the CPU time spent per task by the
//! workers and by the PostgreSQL server (its processes' own counters), and
//! the ceiling those demands put on throughput: with `C` cores shared,
//! X ≤ C / (worker CPU + server CPU per task); with `--pin`, the server
//! runs on CPU 1 and the workers on CPU 0 (`taskset`), each side's ceiling
//! is 1 / its own CPU per task, and the lower one is where adding workers
//! stops helping.
//!
//! ```sh
//! cargo build --release && cargo build --release --target wasm32-wasip2 -p hello -p hostile
//! cargo run --release --example workers -- [N] [CONCURRENCY] [--pin] [--socket] [--statements]
//! ```
//!
//! `--socket` connects the PostgreSQL workers through the server's Unix
//! socket instead of loopback TCP (a host that runs its database itself).
//!
//! `--statements` also prints the statements the counting server ran most
//! often (calls, plans, mean µs, text); with
//! `SKILLBOX_TEST_PG_OPTIONS="-c pg_stat_statements.track_planning=on"`
//! the plans are counted too, which shows a statement planned anew at each
//! call.
//!
//! `SKILLBOX_BENCH_WORKER_BIN=path/to/skillbox` runs another build's
//! workers (to compare two versions on the same machine in one run).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use skillbox::prelude::*;
use skillbox::store::testing::PgServer;
use skillbox::store::{PgStore, TaskEvent, TaskFilter, TaskStore, now_ms};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin() -> PathBuf {
    // Another build's worker, to compare two versions in one run.
    if let Some(other) = std::env::var_os("SKILLBOX_BENCH_WORKER_BIN") {
        return other.into();
    }
    // target/release/examples/workers → target/release/skillbox
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("skillbox")))
        .unwrap_or_else(|| "skillbox".into())
}

/// A worker process and its data dir (deleted when it is dropped).
struct Worker(Child, #[allow(dead_code)] tempfile::TempDir);

impl Worker {
    fn start(store: &str, concurrency: usize, cache: &Path) -> Res<Worker> {
        Worker::start_on(store, concurrency, cache, None)
    }

    /// A worker; with `cpus`, run on those CPUs only (`taskset -c`).
    fn start_on(store: &str, concurrency: usize, cache: &Path, cpus: Option<&str>) -> Res<Worker> {
        let dir = tempfile::tempdir()?;
        let mut command = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = command
            .arg("worker")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--store", store, "--lease", "2s", "--concurrency"])
            .arg(concurrency.to_string())
            .env("SKILLBOX_CACHE_DIR", cache)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Worker(child, dir))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tasks(store: &dyn TaskStore) -> Res<Vec<Task>> {
    Ok(store.list(&TaskFilter {
        limit: Some(1_000_000),
        ..TaskFilter::default()
    })?)
}

/// Queues `n` tasks of `skill` with `input` through a host that runs none.
fn queue(store: Arc<dyn TaskStore>, skill: &Path, input: &str, n: usize, cache: &Path) -> Res<()> {
    let host = TaskService::new(
        Arc::new(Host::new(EngineOptions {
            cache_dir: Some(cache.into()),
            max_instances: 2,
            ..EngineOptions::default()
        })?),
        store,
        TaskOptions::default(),
    );
    for _ in 0..n {
        let mut r = SpawnRequest::new(skill, input);
        r.allow_unpinned = true;
        host.spawn(r)?;
    }
    Ok(())
}

/// What one drain measured.
struct Drained {
    /// Tasks per second, from the first start to the last end.
    rate: f64,
    /// CPU seconds per task spent by the workers.
    worker_cpu: f64,
    /// CPU seconds per task spent by the PostgreSQL server, if it was one.
    server_cpu: Option<f64>,
}

/// CPU seconds used by this process's children that have ended.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// Starts `workers` workers on `url` (on `cpus`, if given) and waits for
/// all `n` tasks to end.
#[allow(clippy::too_many_arguments)]
fn drain(
    store: &dyn TaskStore,
    url: &str,
    workers: usize,
    c: usize,
    n: usize,
    cache: &Path,
    server: Option<&PgServer>,
    cpus: Option<&str>,
) -> Res<Drained> {
    let server_before = server.map(PgServer::cpu_seconds).transpose()?;
    let workers_before = children_cpu();
    let running: Vec<Worker> = (0..workers)
        .map(|_| Worker::start_on(url, c, cache, cpus))
        .collect::<Res<_>>()?;
    // A cheap poll, so that watching costs the server little next to the
    // work watched: is any task left in a state that is not an end (one
    // row at most of each, through the index by state)? Counting tasks
    // by state instead scans the table, and cost the server about a
    // tenth of its time at ten polls a second.
    let left = |state| {
        let only = TaskFilter {
            state: Some(state),
            limit: Some(1),
            ..TaskFilter::default()
        };
        store.list(&only).map(|t| !t.is_empty())
    };
    while left(TaskState::Queued)? || left(TaskState::Running)? || left(TaskState::Interrupted)? {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(running);
    // The workers' backends end as their connections close; their time is
    // the server's once the postmaster has reaped them.
    std::thread::sleep(Duration::from_secs(1));
    let worker_cpu = (children_cpu() - workers_before) / n as f64;
    let server_cpu = match (server, server_before) {
        (Some(s), Some(before)) => Some((s.cpu_seconds()? - before) / n as f64),
        _ => None,
    };
    let all = tasks(store)?;
    if let Some(t) = all.iter().find(|t| t.state != TaskState::Succeeded) {
        return Err(format!("task {} ended {}: {:?}", t.id, t.state, t.outcome).into());
    }
    let first = all.iter().filter_map(|t| t.started_ms).min().unwrap_or(0);
    let last = all.iter().filter_map(|t| t.ended_ms).max().unwrap_or(0);
    Ok(Drained {
        rate: n as f64 / ((last - first).max(1) as f64 / 1000.0),
        worker_cpu,
        server_cpu,
    })
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pin = args.iter().any(|a| a == "--pin");
    let socket = args.iter().any(|a| a == "--socket");
    let mut numbers = args.iter().filter(|a| !a.starts_with("--"));
    let n: usize = numbers.next().map_or(Ok(2000), |a| a.parse())?;
    let c: usize = numbers.next().map_or(Ok(8), |a| a.parse())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if pin && cores < 2 {
        return Err("--pin needs two CPUs (the server on one, the workers on the other)".into());
    }
    // Where README.md's build puts the guests, or where the tests do.
    let guests = [
        "target/wasm32-wasip2/release",
        "target/wasm/wasm32-wasip2/release",
    ]
    .iter()
    .map(|d| root().join(d))
    .find(|d| d.join("hello.wasm").is_file() && d.join("hostile.wasm").is_file())
    .ok_or("build the hello and hostile guests first (see the header)")?;
    let hello = guests.join("hello.wasm");
    let cache = tempfile::tempdir()?;
    let server = PgServer::start()?;
    let worker_cpus = if pin {
        server.pin("1")?;
        println!("{n} no-op tasks, {c} slots per worker; the server on CPU 1, workers on CPU 0");
        Some("0")
    } else {
        println!("{n} no-op tasks, {c} slots per worker, {cores} cores shared");
        None
    };

    let sqlite_dir = tempfile::tempdir()?;
    let path = sqlite_dir.path().join("tasks.db");
    let sqlite: Arc<dyn TaskStore> = Arc::new(SqliteStore::open(&path)?);
    queue(sqlite.clone(), &hello, "{}", n, cache.path())?;
    let base = drain(
        &*sqlite,
        path.to_str().ok_or("path")?,
        1,
        c,
        n,
        cache.path(),
        None,
        worker_cpus,
    )?;
    println!(
        "  SQLite, 1 worker (baseline)   {:>7.0} tasks/s | worker CPU {:>4.0} µs/task",
        base.rate,
        base.worker_cpu * 1e6
    );

    for workers in [1, 2, 4] {
        let url = server.create_database()?;
        let url = if socket { server.socket_url(&url) } else { url };
        let pg: Arc<dyn TaskStore> = Arc::new(PgStore::connect(&url)?);
        queue(pg.clone(), &hello, "{}", n, cache.path())?;
        let d = drain(
            &*pg,
            &url,
            workers,
            c,
            n,
            cache.path(),
            Some(&server),
            worker_cpus,
        )?;
        let server_cpu = d.server_cpu.unwrap_or(0.0);
        // The ceiling the measured CPU demands put on throughput.
        let ceiling = if pin {
            (1.0 / d.worker_cpu).min(1.0 / server_cpu)
        } else {
            cores as f64 / (d.worker_cpu + server_cpu)
        };
        println!(
            "  PostgreSQL, {workers} worker(s)        {:>7.0} tasks/s | ratio to SQLite {:.2} | \
             CPU/task: workers {:>4.0} µs, server {:>4.0} µs | ceiling {:>5.0} tasks/s ({:.0}% of it)",
            d.rate,
            d.rate / base.rate,
            d.worker_cpu * 1e6,
            server_cpu * 1e6,
            ceiling,
            100.0 * d.rate / ceiling
        );
    }

    // Statements per task, on a server that counts them (counting costs
    // it time, so the runs above are on one that does not).
    let counting = PgServer::start_counting_statements()?;
    let url = counting.create_database()?;
    let pg: Arc<dyn TaskStore> = Arc::new(PgStore::connect(&url)?);
    queue(pg.clone(), &hello, "{}", n, cache.path())?;
    counting.statements(&url);
    drain(&*pg, &url, 1, c, n, cache.path(), None, None)?;
    // The watcher's polls are among them (a few per second).
    let table = args.iter().any(|a| a == "--statements");
    if let Some((k, top)) = counting.statements_with(&url, table) {
        println!(
            "  statements per task, 1 worker: {:.1}",
            k as f64 / n as f64
        );
        if table {
            println!("  calls|plans|mean µs|statement\n{top}");
        }
    }
    drop(counting);

    // Fail-over: two workers, each holding sleeping tasks; kill -9 one.
    // The skill says a restart is safe, so the other worker reruns them.
    let skill = tempfile::tempdir()?;
    let bytes = std::fs::read(guests.join("hostile.wasm"))?;
    std::fs::write(skill.path().join("skill.wasm"), &bytes)?;
    std::fs::write(
        skill.path().join("skill.toml"),
        format!(
            "[skill]\nname = \"sleeper\"\nversion = \"0.1.0\"\ncomponent = \"skill.wasm\"\nsha256 = \"{}\"\nresume = \"restart\"\n",
            skillbox::skill::sha256_hex(&bytes)
        ),
    )?;
    let hostile = skill.path().to_owned();
    let url = server.create_database()?;
    let pg: Arc<dyn TaskStore> = Arc::new(PgStore::connect(&url)?);
    let mut a = Worker::start(&url, 4, cache.path())?;
    let _b = Worker::start(&url, 4, cache.path())?;
    queue(
        pg.clone(),
        &hostile,
        r#"{"case": "sleep", "ms": 5000}"#,
        4,
        cache.path(),
    )?;
    let queued_at = now_ms();
    let victim = loop {
        if now_ms() - queued_at > 120_000 {
            return Err("the sleeping tasks did not all start within two minutes".into());
        }
        let running: Vec<Task> = tasks(&*pg)?
            .into_iter()
            .filter(|t| t.state == TaskState::Running)
            .collect();
        if running.len() == 4 {
            break running[0].owner.clone().ok_or("no owner")?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid: u32 = victim.split(':').nth(1).ok_or("owner id")?.parse()?;
    let killed_at = now_ms();
    if pid == a.0.id() {
        a.0.kill()?;
    } else {
        // SAFETY: our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let resumed_at = loop {
        if now_ms() - killed_at > 120_000 {
            return Err("no task ran again within two minutes of the kill".into());
        }
        let again = tasks(&*pg)?
            .into_iter()
            .filter(|t| t.attempt >= 2)
            .find_map(|t| {
                pg.events(t.id, 0, 100)
                    .ok()?
                    .into_iter()
                    .rev()
                    .find_map(|e| match e.event {
                        TaskEvent::State {
                            to: TaskState::Running,
                            ..
                        } => Some(e.at_ms),
                        _ => None,
                    })
            });
        if let Some(at) = again {
            break at;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "  fail-over after kill -9 (lease 2 s): {} ms to the first task running again",
        resumed_at - killed_at
    );
    Ok(())
}
