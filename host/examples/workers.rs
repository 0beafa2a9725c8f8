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
//! ```sh
//! cargo build --release && cargo build --release --target wasm32-wasip2 -p hello -p hostile
//! cargo run --release --example workers -- [N] [CONCURRENCY]
//! ```

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
        let dir = tempfile::tempdir()?;
        let child = Command::new(bin())
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

/// Starts `workers` workers on `url` and waits for all `n` tasks to end;
/// tasks per second from the first start to the last end.
fn drain(
    store: &dyn TaskStore,
    url: &str,
    workers: usize,
    c: usize,
    n: usize,
    cache: &Path,
) -> Res<f64> {
    let _workers: Vec<Worker> = (0..workers)
        .map(|_| Worker::start(url, c, cache))
        .collect::<Res<_>>()?;
    loop {
        let all = tasks(store)?;
        if all.len() == n && all.iter().all(|t| t.state.is_terminal()) {
            if let Some(t) = all.iter().find(|t| t.state != TaskState::Succeeded) {
                return Err(format!("task {} ended {}: {:?}", t.id, t.state, t.outcome).into());
            }
            let first = all.iter().filter_map(|t| t.started_ms).min().unwrap_or(0);
            let last = all.iter().filter_map(|t| t.ended_ms).max().unwrap_or(0);
            return Ok(n as f64 / ((last - first).max(1) as f64 / 1000.0));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(Ok(2000), |a| a.parse())?;
    let c: usize = args.get(2).map_or(Ok(8), |a| a.parse())?;
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
    println!("{n} no-op tasks, {c} slots per worker, 2 cores");

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
    )?;
    println!("  SQLite, 1 worker (baseline)   {base:>7.0} tasks/s");

    for workers in [1, 2, 4] {
        let url = server.create_database()?;
        let pg: Arc<dyn TaskStore> = Arc::new(PgStore::connect(&url)?);
        queue(pg.clone(), &hello, "{}", n, cache.path())?;
        let rate = drain(&*pg, &url, workers, c, n, cache.path())?;
        println!(
            "  PostgreSQL, {workers} worker(s)        {rate:>7.0} tasks/s | ratio to SQLite {:.2}",
            rate / base
        );
    }

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
