//! Measures durable background tasks against baselines taken in the same
//! run, and prints ratios (these machines are noisy; absolute times mean
//! little):
//!
//! * `throughput COMPONENT [N] [CONCURRENCY]`: N no-op tasks spawned from
//!   several threads and run to the end on a SQLite store (every task
//!   persisted: spawn, claim, events, summary) vs the same N runs in-process
//!   without a store; also spawn-only throughput and writes per commit.
//! * `latency COMPONENT [N]`: spawn → summary of one no-op task through the
//!   local HTTP API on a Unix socket (spawn, then `wait`) vs one in-process
//!   run without a store.
//! * `recovery SLEEPER [N] [SKILLBOX]`: N running tasks of a skill that
//!   sleeps and says a restart is safe, under `skillbox serve`; `kill -9`
//!   of the daemon, restart, and the time until all N run again, vs the
//!   time the same daemon takes to start on an empty store.
//! * `store COMPONENT [N]`: the store alone, one caller: the cost of each
//!   operation of a task's life with its own commit.
//! * `relay COMPONENT [N] [BURST]`: delivery latency, from a task's end (its
//!   final state committed) to a loopback webhook receiver's 2xx, vs a
//!   direct signed POST of the same body by a plain HTTP client (request
//!   sent → receiver's 2xx), one at a time; then BURST queued tasks run to
//!   the end with a webhook notification each (until the receiver has all)
//!   vs the same without notifications.
//!
//! Build the guests and the binary first (`cargo build --release`,
//! `cargo build --release --target wasm32-wasip2 -p hello -p hostile`),
//! then `cargo run --release --example tasks -- SUBCOMMAND …`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skillbox::prelude::*;
use skillbox::server::client::Client;
use skillbox::store::{SqliteStore, TaskState};
use skillbox::tasks::{SpawnRequest, TaskOptions, TaskService};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn engine(max_instances: u32, cache: &Path) -> EngineOptions {
    EngineOptions {
        cache_dir: Some(cache.to_owned()),
        max_instances,
        ..EngineOptions::default()
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = |i: usize| -> Res<PathBuf> {
        Ok(args
            .get(i)
            .ok_or("usage: tasks throughput|store|latency|relay|recovery PATH [...]")?
            .into())
    };
    match args.first().map(String::as_str) {
        Some("throughput") => throughput(&path(1)?, arg(&args, 2, 3000), arg(&args, 3, 32)).await,
        Some("store") => store_ops(&path(1)?, arg(&args, 2, 2000)),
        Some("latency") => latency(&path(1)?, arg(&args, 2, 200)).await,
        Some("relay") => relay(&path(1)?, arg(&args, 2, 200), arg(&args, 3, 2000)).await,
        Some("recovery") => {
            let bin = args.get(3).map(PathBuf::from).unwrap_or_else(default_bin);
            recovery(&path(1)?, arg(&args, 2, 100), &bin).await
        }
        _ => Err("usage: tasks throughput|store|latency|relay|recovery PATH [...]".into()),
    }
}

/// N runs in-process, CONCURRENCY at a time, without a store.
async fn in_process(host: &Arc<Host>, source: &SkillSource, n: usize, c: usize) -> Res<Duration> {
    let prepared = host.prepare(source)?;
    let slots = Arc::new(tokio::sync::Semaphore::new(c));
    let t = Instant::now();
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..n {
        let permit = slots.clone().acquire_owned().await?;
        let (host, prepared) = (host.clone(), prepared.clone());
        all.spawn(async move {
            let r = host.run(&prepared, RunRequest::default()).await;
            drop(permit);
            matches!(r.map(|r| r.outcome), Ok(Outcome::Succeeded { .. }))
        });
    }
    let ok = all.join_all().await.into_iter().filter(|ok| *ok).count();
    if ok != n {
        return Err(format!("{} of {n} in-process runs failed", n - ok).into());
    }
    Ok(t.elapsed())
}

async fn throughput(component: &Path, n: usize, concurrency: usize) -> Res<()> {
    let dir = tempfile::tempdir()?;
    if let Some(keep) = std::env::var_os("KEEP_DATA") {
        println!("data: {}", dir.path().display());
        std::fs::write(keep, dir.path().as_os_str().as_encoded_bytes())?;
    }
    let source = SkillSource::open(component, true)?;
    let store = Arc::new(SqliteStore::open_dir(&dir.path().join("data"))?);
    let host = Arc::new(TaskService::new(
        Arc::new(Host::new(engine(
            concurrency as u32 * 2,
            &dir.path().join("cache"),
        ))?),
        store.clone(),
        TaskOptions {
            concurrency,
            ..TaskOptions::default()
        },
    ));
    let base = in_process(host.host(), &source, n, concurrency).await?;

    let spawners: usize = std::env::var("SPAWNERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let spawn_all = |host: Arc<TaskService>| {
        let component = component.to_owned();
        let handles: Vec<_> = (0..spawners)
            .map(|s| {
                let (host, component) = (host.clone(), component.clone());
                std::thread::spawn(move || -> Result<Vec<_>, Error> {
                    (0..n / spawners + usize::from(s < n % spawners))
                        .map(|_| {
                            let mut r = SpawnRequest::new(&component, "{}");
                            r.allow_unpinned = true;
                            host.spawn(r).map(|t| t.id)
                        })
                        .collect()
                })
            })
            .collect();
        move || -> Res<Vec<_>> {
            let mut ids = Vec::new();
            for h in handles {
                ids.extend(h.join().map_err(|_| "spawner panicked")??);
            }
            Ok(ids)
        }
    };
    // Spawn only: persisted, no worker running.
    let t = Instant::now();
    let ids = spawn_all(host.clone())()?;
    let spawn_only = t.elapsed();
    let drained = run_to_end(&host, &ids).await?;
    let before = store.stats();
    // Spawn and run at once, as a daemon under load does.
    let t = Instant::now();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(host.clone().work(rx));
    let ids = tokio::task::spawn_blocking(spawn_all(host.clone())).await??;
    wait_all(&host, &ids).await?;
    let both = t.elapsed();
    let _ = stop.send(true);
    worker.await??;
    let after = store.stats();

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("{n} no-op tasks, concurrency {concurrency}, {spawners} spawning threads");
    println!(
        "  in-process runs, no store (baseline)    {:>9.0} tasks/s",
        rate(base)
    );
    println!(
        "  spawn only (persisted)                   {:>9.0} tasks/s",
        rate(spawn_only)
    );
    println!(
        "  run queued tasks to the end              {:>9.0} tasks/s",
        rate(drained)
    );
    println!(
        "  spawn + run, durable                     {:>9.0} tasks/s | ratio to baseline {:.3}",
        rate(both),
        base.as_secs_f64() / both.as_secs_f64()
    );
    let (writes, commits) = (after.writes - before.writes, after.commits - before.commits);
    println!(
        "  store writes per commit (spawn + run)    {:>9.1} ({writes} writes: {:.0?} running, {commits} commits: {:.0?})",
        writes as f64 / commits.max(1) as f64,
        after.write_time - before.write_time,
        after.commit_time - before.commit_time,
    );
    Ok(())
}

/// The store alone, one caller (no group commits): what each operation of
/// a task's life costs, with its commit.
fn store_ops(component: &Path, n: usize) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open_dir(dir.path())?;
    let source = SkillSource::open(component, true)?;
    let (policy, _) = EffectivePolicy::compute(None, &Grants::default());
    let spec = skillbox::store::TaskSpec {
        skill: component.display().to_string(),
        skill_name: source.name.clone(),
        digest: source.digest.clone(),
        input: "{}".into(),
        timeout: policy.limits.timeout,
        policy,
        label: None,
        parent_session: None,
        parent_route: None,
        cleanup: skillbox::store::CleanupMode::Keep,
        notify: skillbox::store::NotifyMode::DoneOnly,
        notify_to: Vec::new(),
        resume: skillbox::store::ResumePolicy::Restart,
        scratch: None,
        schedule: None,
        trace: None,
    };
    use skillbox::store::TaskStore;
    let t = Instant::now();
    for _ in 0..n {
        store.create(spec.clone())?;
    }
    let create = t.elapsed() / n as u32;
    let t = Instant::now();
    let mut claims = Vec::new();
    for _ in 0..n {
        claims.extend(store.claim("bench", Duration::from_secs(60))?);
    }
    let claim = t.elapsed() / n as u32;
    // Host::spawn: the checks before the store.
    let host = TaskService::new(
        Arc::new(Host::new(engine(4, &dir.path().join("cache")))?),
        Arc::new(SqliteStore::open_dir(&dir.path().join("spawn"))?),
        TaskOptions::default(),
    );
    let mut r = SpawnRequest::new(component, "{}");
    r.allow_unpinned = true;
    host.spawn(r.clone())?;
    let t = Instant::now();
    for _ in 0..n {
        host.spawn(r.clone())?;
    }
    println!("Host::spawn, one caller: {:.1?}", t.elapsed() / n as u32);
    let t = Instant::now();
    for c in &claims {
        store.finish(
            c,
            TaskState::Succeeded,
            serde_json::json!({"outcome": "succeeded"}),
            "done",
        )?;
    }
    let finish = t.elapsed() / n as u32;
    let s = store.stats();
    println!(
        "store, one caller, {n} tasks: create {create:.1?}, claim {claim:.1?}, finish {finish:.1?} \
         (statements {:.1?} + commit {:.1?} per write)",
        s.write_time / s.writes as u32,
        s.commit_time / s.commits as u32
    );
    Ok(())
}

async fn run_to_end(host: &Arc<TaskService>, ids: &[skillbox::store::TaskId]) -> Res<Duration> {
    let t = Instant::now();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(host.clone().work(rx));
    wait_all(host, ids).await?;
    let d = t.elapsed();
    let _ = stop.send(true);
    worker.await??;
    Ok(d)
}

async fn wait_all(host: &Arc<TaskService>, ids: &[skillbox::store::TaskId]) -> Res<()> {
    for id in ids {
        let task = host.wait(*id).await?;
        if task.state != TaskState::Succeeded {
            return Err(format!("task {id} ended {}: {:?}", task.state, task.outcome).into());
        }
    }
    Ok(())
}

async fn latency(component: &Path, n: u32) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let source = SkillSource::open(component, true)?;
    let store = Arc::new(SqliteStore::open_dir(&dir.path().join("data"))?);
    let host = Arc::new(TaskService::new(
        Arc::new(Host::new(engine(8, &dir.path().join("cache")))?),
        store,
        TaskOptions::default(),
    ));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(host.clone().work(rx));
    let socket = dir.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&socket)?;
    let server = tokio::spawn(
        axum::serve(
            listener,
            skillbox::server::router(host.clone(), skillbox::server::Access::open()),
        )
        .into_future(),
    );
    let client = Client::unix(&socket);
    let body = serde_json::json!({
        "skill": component.canonicalize()?,
        "input": {},
        "allow_unpinned": true,
    });
    let posting = std::sync::Mutex::new(Duration::ZERO);
    let once = || async {
        let t = Instant::now();
        let spawned = client
            .call(hyper::Method::POST, "/v1/tasks", Some(&body))
            .await?;
        *posting.lock().unwrap() += t.elapsed();
        let id = spawned["id"].as_str().ok_or("no id")?.to_string();
        let done = client
            .call(
                hyper::Method::GET,
                &format!("/v1/tasks/{id}/wait?timeout_ms=10000"),
                None,
            )
            .await?;
        if done["state"] != "succeeded" {
            return Err(format!("task {id}: {done}").into());
        }
        Res::Ok(())
    };
    once().await?;
    *posting.lock().unwrap() = Duration::ZERO;
    let t = Instant::now();
    for _ in 0..n {
        once().await?;
    }
    let api = t.elapsed() / n;
    let posting = *posting.lock().unwrap() / n;
    // The parts: a spawn alone (one commit), and a health request (the
    // HTTP round trip on a new connection).
    let t = Instant::now();
    for _ in 0..n {
        client
            .call(hyper::Method::POST, "/v1/tasks", Some(&body))
            .await?;
    }
    let spawn_only = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n {
        client.call(hyper::Method::GET, "/v1/health", None).await?;
    }
    let round_trip = t.elapsed() / n;
    let prepared = host.host().prepare(&source)?;
    let t = Instant::now();
    for _ in 0..n {
        host.host().run(&prepared, RunRequest::default()).await?;
    }
    let direct = t.elapsed() / n;
    println!("spawn → summary of a no-op task, mean of {n}");
    println!(
        "  through the API (POST /v1/tasks, GET …/wait) {:>9.2?} | in-process run, no store {:>9.2?} | ratio {:.1}",
        api,
        direct,
        api.as_secs_f64() / direct.as_secs_f64()
    );
    println!(
        "  of which: the POST {posting:.2?}; a POST alone (tasks running behind it) {spawn_only:.2?}, an empty API round trip {round_trip:.2?}"
    );
    let _ = stop.send(true);
    worker.await??;
    server.abort();
    Ok(())
}

/// A loopback HTTP receiver that answers 200 to everything and reports
/// when it answered each request, by its `Idempotency-Key`.
async fn receiver() -> Res<(u16, tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = conn.set_nodelay(true);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(name))
                            .map(|v| v.trim().to_string())
                    };
                    let len: usize = header("content-length:")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let key = header("idempotency-key:").unwrap_or_default();
                    let at = Instant::now();
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = tx.send((key, at));
                    return;
                }
            });
        }
    });
    Ok((port, rx))
}

async fn relay(component: &Path, n: u32, burst: usize) -> Res<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir()?;
    let (port, mut arrivals) = receiver().await?;
    let key = "bench-signing-key-0123456789abcdef";
    let url = format!("http://127.0.0.1:{port}/hook");
    // Every task notifies the receiver.
    let webhook = || -> Res<skillbox::relay::Relay> {
        let sink = skillbox::relay::WebhookSink::to(&url, key, Duration::from_secs(10))?;
        Ok(skillbox::relay::Relay::new()
            .with_sink("hook", Arc::new(sink))
            .with_default(vec!["hook".into()])?)
    };
    let relay = webhook()?;
    let store = Arc::new(SqliteStore::open_dir(&dir.path().join("data"))?);
    let host = Arc::new(TaskService::new(
        Arc::new(Host::new(engine(8, &dir.path().join("cache")))?),
        store,
        TaskOptions {
            relay,
            ..TaskOptions::default()
        },
    ));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(host.clone().work(rx));
    let mut relayed = Vec::new();
    let mut body = Vec::new();
    for i in 0..=n {
        let id = host
            .spawn(SpawnRequest {
                allow_unpinned: true,
                ..SpawnRequest::new(component, "{}")
            })?
            .id;
        host.wait(id).await?;
        let ended = Instant::now();
        let (k, at) = arrivals.recv().await.ok_or("receiver gone")?;
        if !k.contains(&id.to_string().to_lowercase()) {
            return Err(format!("unexpected delivery {k}").into());
        }
        if i > 0 {
            relayed.push(at.saturating_duration_since(ended));
        }
        if body.is_empty() {
            let n = host.notification(id)?.ok_or("no notification")?;
            body = serde_json::to_vec(&n)?;
        }
    }
    // The baseline: the same body, signed, POSTed by a plain client on a
    // new connection, one at a time.
    let mut direct = Vec::new();
    for i in 0..=n {
        let ts = skillbox::store::now_ms() / 1000;
        let head = format!(
            "POST /hook HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n\
             idempotency-key: direct-{i}\r\nskillbox-timestamp: {ts}\r\nskillbox-signature: {}\r\n\
             content-length: {}\r\n\r\n",
            skillbox::relay::sign(key.as_bytes(), ts, &body),
            body.len()
        );
        let t = Instant::now();
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        conn.set_nodelay(true)?;
        conn.write_all(&[head.as_bytes(), &body].concat()).await?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await?;
        let (_, at) = arrivals.recv().await.ok_or("receiver gone")?;
        if !answer.starts_with(b"HTTP/1.1 200") {
            return Err("the receiver did not answer 200".into());
        }
        if i > 0 {
            direct.push(at.saturating_duration_since(t));
        }
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() * 9 / 10])
    };
    let (r50, r90) = stats(&mut relayed);
    let (d50, d90) = stats(&mut direct);
    println!("notification latency to a loopback webhook receiver's 2xx, {n} one at a time");
    println!(
        "  relayed (task end → 2xx)   median {r50:>9.2?}  p90 {r90:>9.2?}\n  direct POST (send → 2xx)   median {d50:>9.2?}  p90 {d90:>9.2?}\n  ratio of medians {:.1}",
        r50.as_secs_f64() / d50.as_secs_f64()
    );
    let _ = stop.send(true);
    worker.await??;

    // A burst, with and without a notification per task.
    let mut timed = Vec::new();
    for notify in [false, true] {
        let dir = tempfile::tempdir()?;
        let relay = if notify {
            webhook()?
        } else {
            skillbox::relay::Relay::new()
        };
        let store = Arc::new(SqliteStore::open_dir(&dir.path().join("data"))?);
        let host = Arc::new(TaskService::new(
            Arc::new(Host::new(engine(128, &dir.path().join("cache")))?),
            store.clone(),
            TaskOptions {
                concurrency: 64,
                relay,
                ..TaskOptions::default()
            },
        ));
        let ids = (0..burst)
            .map(|_| {
                host.spawn(SpawnRequest {
                    allow_unpinned: true,
                    ..SpawnRequest::new(component, "{}")
                })
                .map(|t| t.id)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let t = Instant::now();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(host.clone().work(rx));
        wait_all(&host, &ids).await?;
        if notify {
            for _ in 0..burst {
                arrivals.recv().await.ok_or("receiver gone")?;
            }
        }
        timed.push(t.elapsed());
        let _ = stop.send(true);
        worker.await??;
        let st = store.stats();
        eprintln!(
            "  (notify {notify}: {} writes, {} commits, {:.0?} running writes, {:.0?} committing)",
            st.writes, st.commits, st.write_time, st.commit_time
        );
    }
    let rate = |d: Duration| burst as f64 / d.as_secs_f64();
    println!("{burst} queued no-op tasks run to the end, concurrency 64");
    println!(
        "  without notifications {:>7.0} tasks/s | each notifying a webhook (all received) {:>7.0} tasks/s | ratio {:.2}",
        rate(timed[0]),
        rate(timed[1]),
        timed[0].as_secs_f64() / timed[1].as_secs_f64()
    );
    Ok(())
}

fn default_bin() -> PathBuf {
    // target/<profile>/examples/tasks → target/<profile>/skillbox
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("skillbox")))
        .unwrap_or_else(|| "skillbox".into())
}

struct Daemon(std::process::Child);

impl Daemon {
    fn start(bin: &Path, data: &Path, concurrency: usize) -> Res<Daemon> {
        let child = std::process::Command::new(bin)
            .args(["serve", "--data-dir"])
            .arg(data)
            .args(["--concurrency", &concurrency.to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "{}: {e} (build it first: cargo build --release)",
                    bin.display()
                )
            })?;
        Ok(Daemon(child))
    }

    async fn ready(&self, client: &Client) {
        while client
            .call(hyper::Method::GET, "/v1/health", None)
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Tasks in `state` whose attempt is at least `attempt`.
async fn count(client: &Client, state: &str, attempt: u64) -> Res<usize> {
    let list = client
        .call(
            hyper::Method::GET,
            &format!("/v1/tasks?state={state}&limit=10000"),
            None,
        )
        .await?;
    let tasks = list.as_array().ok_or("no task list")?;
    Ok(tasks
        .iter()
        .filter(|t| t["attempt"].as_u64().unwrap_or(0) >= attempt)
        .count())
}

async fn recovery(sleeper: &Path, n: usize, bin: &Path) -> Res<()> {
    let dir = tempfile::tempdir()?;
    // A skill that says a restart is safe, running the sleeping guest.
    let skill = dir.path().join("skill");
    std::fs::create_dir_all(&skill)?;
    let bytes = std::fs::read(sleeper)?;
    std::fs::write(skill.join("skill.wasm"), &bytes)?;
    std::fs::write(
        skill.join("skill.toml"),
        format!(
            "[skill]\nname = \"sleeper\"\nversion = \"0.1.0\"\ncomponent = \"skill.wasm\"\n\
             sha256 = \"{}\"\nresume = \"restart\"\n",
            skillbox::skill::sha256_hex(&bytes)
        ),
    )?;
    let data = dir.path().join("data");
    let client = Client::unix(&data.join("skillbox.sock"));

    // Baseline: start on an empty store until the API answers.
    let empty = dir.path().join("empty");
    let t = Instant::now();
    let d = Daemon::start(bin, &empty, n)?;
    d.ready(&Client::unix(&empty.join("skillbox.sock"))).await;
    let cold = t.elapsed();
    drop(d);

    let d = Daemon::start(bin, &data, n)?;
    d.ready(&client).await;
    let body = serde_json::json!({
        "skill": skill.canonicalize()?,
        "input": {"case": "sleep", "ms": 600000},
    });
    for _ in 0..n {
        client
            .call(hyper::Method::POST, "/v1/tasks", Some(&body))
            .await?;
    }
    while count(&client, "running", 1).await? < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(d); // SIGKILL
    let t = Instant::now();
    let d = Daemon::start(bin, &data, n)?;
    d.ready(&client).await;
    while count(&client, "running", 2).await? < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let recovered = t.elapsed();
    println!("{n} running tasks, daemon killed with SIGKILL and restarted");
    println!(
        "  restart → all {n} running again {:>9.1?} | daemon start, empty store {:>9.1?} | ratio {:.1}",
        recovered,
        cold,
        recovered.as_secs_f64() / cold.as_secs_f64()
    );
    drop(d);
    Ok(())
}
