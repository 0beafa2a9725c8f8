//! Several `skillbox worker` processes sharing one PostgreSQL queue: a
//! throw-away PostgreSQL server (`skillbox::store::testing`) on a loopback
//! port, real worker processes, real kills.
//!
//! Tasks are spawned by an embedding host on the same database that runs no
//! worker itself (an API server's role), so every task runs on a worker.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use skillbox::prelude::*;
use skillbox::store::testing::{self, PgServer};
use skillbox::store::{PgStore, TaskFilter, TaskStore};
use skillbox::tasks::TaskService;

use crate::harness::{cli_cache_dir, grants, skill_dir};
use crate::relay::{Receiver, Reply, config, webhook};
use crate::relay_tls::Ca;

/// One `skillbox worker` process with its own data dir.
pub(crate) struct Worker {
    child: Child,
    dir: tempfile::TempDir,
}

impl Worker {
    pub(crate) fn start(url: &str, concurrency: usize, extra: &[&str]) -> Worker {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("worker.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_skillbox"))
            .arg("worker")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--store", url, "--lease", "2s", "--concurrency"])
            .arg(concurrency.to_string())
            .args(extra)
            .env("SKILLBOX_CACHE_DIR", cli_cache_dir())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Worker { child, dir }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("worker.log")).unwrap_or_default()
    }

    /// Waits for the start-up line; the worker's owner id.
    pub(crate) fn ready(&self) -> String {
        wait_for("a worker to start", Duration::from_secs(120), || {
            let log = self.log();
            let line = log.lines().find(|l| l.contains("running up to"))?;
            Some(
                line.split_whitespace()
                    .nth(2)?
                    .trim_end_matches(':')
                    .to_string(),
            )
        })
    }

    fn signal(&self, sig: i32) {
        // SAFETY: a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    pub(crate) fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it gives a value; `limit` is a safety net against a
/// hang, not a timing assertion.
pub(crate) fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gave up waiting for {what}");
}

/// A host on the store that spawns tasks and runs none.
pub(crate) fn spawner(store: Arc<dyn TaskStore>, relay: Option<&Path>) -> Arc<TaskService> {
    let relay = match relay {
        Some(path) => {
            let config = skillbox::config::HostConfig::load(path).unwrap();
            skillbox::relay::Relay::from_config(&config.relay).unwrap()
        }
        None => Default::default(),
    };
    let options = TaskOptions {
        relay,
        ..TaskOptions::default()
    };
    let engine = EngineOptions {
        cache_dir: Some(cli_cache_dir()),
        max_instances: 4,
        ..EngineOptions::default()
    };
    Arc::new(TaskService::new(
        Arc::new(Host::new(engine).unwrap()),
        store,
        options,
    ))
}

pub(crate) fn all_tasks(store: &dyn TaskStore) -> Vec<Task> {
    store
        .list(&TaskFilter {
            limit: Some(100_000),
            ..TaskFilter::default()
        })
        .unwrap()
}

fn count(store: &dyn TaskStore, state: TaskState) -> usize {
    store
        .list(&TaskFilter {
            state: Some(state),
            limit: Some(100_000),
            ..TaskFilter::default()
        })
        .unwrap()
        .len()
}

/// The terminal states a task's events record, in order.
pub(crate) fn endings(store: &dyn TaskStore, id: TaskId) -> Vec<TaskState> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.events(id, after, 1000).unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        out.extend(page.into_iter().filter_map(|e| match e.event {
            TaskEvent::State { to, .. } if to.is_terminal() => Some(to),
            _ => None,
        }));
    }
    out
}

/// When each of a task's runs started (its `running` state changes).
fn runs_started(store: &dyn TaskStore, id: TaskId) -> Vec<i64> {
    store
        .events(id, 0, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| {
            matches!(
                e.event,
                TaskEvent::State {
                    to: TaskState::Running,
                    ..
                }
            )
        })
        .map(|e| e.at_ms)
        .collect()
}

pub(crate) fn database(server: &PgServer) -> (String, Arc<PgStore>) {
    let url = server.create_database().unwrap();
    let store = Arc::new(PgStore::connect(&url).unwrap());
    (url, store)
}

const RW_W: &str = "[fs]\n\"/w\" = { access = \"read-write\" }\n";

/// Three workers, 2,000 checkpointed tasks; one worker is killed with
/// SIGKILL mid-run. Every task ends exactly once, as `succeeded`; the
/// dead worker's tasks are resumed elsewhere and skip the steps they had
/// checkpointed; no step's side effect happens twice.
#[test]
fn three_workers_share_the_queue_and_a_killed_one_is_taken_over() {
    let Some(server) = testing::server_or_skip("workers") else {
        return;
    };
    let (url, store) = database(&server);
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("j")).unwrap();
    // Tasks the dead worker took but had not checkpointed yet start over.
    let skill = skill_dir("hostile", &format!("resume = \"restart\"\n{RW_W}"));
    let g = grants(&["--allow-write", &format!("{}:/w", work.path().display())]);
    const N: usize = 2000;

    // Three workers start together on the empty database: each migrates
    // under the advisory lock, the first one does the work.
    let mut workers: Vec<Worker> = (0..3).map(|_| Worker::start(&url, 16, &[])).collect();
    let owners: Vec<String> = workers.iter().map(Worker::ready).collect();
    assert_eq!(store.schema_version().unwrap(), 6, "every migration, once");

    let host = spawner(store.clone(), None);
    let ids: Vec<TaskId> = (0..N)
        .map(|i| {
            let input = json!({"case": "steps", "journal": format!("/w/j/{i}"), "steps": 2,
                               "pause_after": 1, "pause_ms": 200});
            host.spawn(SpawnRequest {
                grants: g.clone(),
                label: Some(format!("t{i}")),
                ..SpawnRequest::new(skill.path(), input.to_string())
            })
            .unwrap()
            .id
        })
        .collect();

    // Kill worker 0 while it holds tasks that checkpointed step 1.
    let victim = &owners[0];
    let held_checkpointed = || {
        store
            .list(&TaskFilter {
                state: Some(TaskState::Running),
                limit: Some(1000),
                ..TaskFilter::default()
            })
            .unwrap()
            .into_iter()
            .filter(|t| t.owner.as_deref() == Some(victim.as_str()))
            .filter(|t| !store.checkpoints(t.id).unwrap().is_empty())
            .map(|t| t.id)
            .collect::<BTreeSet<TaskId>>()
    };
    wait_for(
        "the victim to hold checkpointed tasks",
        Duration::from_secs(300),
        || {
            (count(&*store, TaskState::Succeeded) >= N / 5 && !held_checkpointed().is_empty())
                .then_some(())
        },
    );
    let killed_at = skillbox::store::now_ms();
    workers[0].kill();
    // What the dead worker held, checkpointed, when it died (its lease has
    // not run out yet, so nothing was taken over).
    let checkpointed = held_checkpointed();
    assert!(
        !checkpointed.is_empty(),
        "the killed worker held checkpointed tasks"
    );

    wait_for("every task to end", Duration::from_secs(600), || {
        let ended = all_tasks(&*store)
            .iter()
            .filter(|t| t.state.is_terminal())
            .count();
        (ended == N).then_some(())
    });
    for w in &mut workers[1..] {
        w.stop();
    }

    let tasks = all_tasks(&*store);
    let mut resumed = Vec::new();
    for t in &tasks {
        assert_eq!(t.state, TaskState::Succeeded, "{}: {:?}", t.id, t.outcome);
        assert_eq!(
            endings(&*store, t.id),
            vec![TaskState::Succeeded],
            "{}",
            t.id
        );
        let label = t.spec.label.as_deref().unwrap();
        let journal = std::fs::read_to_string(work.path().join("j").join(&label[1..])).unwrap();
        if t.attempt == 1 {
            assert_eq!(journal, "step 1\nstep 2\n", "{label}: each step once");
            continue;
        }
        resumed.push(t);
        // A step checkpointed before the kill is never done again. (One
        // the killed worker did but had not checkpointed yet is done again:
        // side effects between checkpoints are at least once.)
        let lines: Vec<&str> = journal.lines().collect();
        assert!(
            lines.contains(&"step 1") && lines.contains(&"step 2"),
            "{label}: {journal:?}"
        );
        if checkpointed.contains(&t.id) {
            assert_eq!(
                journal.matches("step 1").count(),
                1,
                "{label}: step 1 was checkpointed"
            );
            let data = &t.outcome.as_ref().unwrap()["data"];
            assert_eq!(data["skipped"][0], 1, "{label}: {data}");
        }
    }
    for id in &checkpointed {
        assert!(
            resumed.iter().any(|t| t.id == *id),
            "{id} was running on the killed worker, checkpointed, and resumed elsewhere"
        );
    }
    // Fail-over: from the kill to the first of its tasks running again.
    let failover_ms = resumed
        .iter()
        .filter_map(|t| runs_started(&*store, t.id).last().copied())
        .min()
        .map(|at| at - killed_at);
    eprintln!(
        "{N} tasks on 3 workers, one killed: {} ran again, {} from a checkpoint; first running again {failover_ms:?} ms after the kill (lease 2 s)",
        resumed.len(),
        checkpointed.len()
    );
    assert_eq!(ids.len(), N);
}

/// A worker frozen (SIGSTOP) past its lease loses its task to another
/// worker; when it wakes, its writes are refused and it stops the task:
/// the task ends once, by the new owner.
#[test]
fn a_stale_worker_cannot_write_after_its_lease_was_taken() {
    let Some(server) = testing::server_or_skip("stale-worker") else {
        return;
    };
    let (url, store) = database(&server);
    // Restartable: no checkpoints, rerun from the start by the next owner.
    let skill = skill_dir("hostile", "resume = \"restart\"\n");
    let a = Worker::start(&url, 2, &[]);
    let b = Worker::start(&url, 2, &[]);
    let (owner_a, owner_b) = (a.ready(), b.ready());
    let host = spawner(store.clone(), None);
    let id = host
        .spawn(SpawnRequest::new(
            skill.path(),
            json!({"case": "sleep", "ms": 4000}).to_string(),
        ))
        .unwrap()
        .id;
    let first = wait_for("the task to run", Duration::from_secs(60), || {
        store
            .get(id)
            .unwrap()
            .owner
            .filter(|_| store.get(id).unwrap().state == TaskState::Running)
    });
    let (stale, other, other_owner) = if first == owner_a {
        (&a, &b, &owner_b)
    } else {
        (&b, &a, &owner_a)
    };
    stale.signal(libc::SIGSTOP);
    wait_for(
        "the other worker to take the task",
        Duration::from_secs(60),
        || {
            let t = store.get(id).unwrap();
            (t.attempt == 2 && t.owner.as_deref() == Some(other_owner.as_str())).then_some(())
        },
    );
    stale.signal(libc::SIGCONT);
    let t = wait_for("the task to end", Duration::from_secs(60), || {
        Some(store.get(id).unwrap()).filter(|t| t.state.is_terminal())
    });
    assert_eq!(t.state, TaskState::Succeeded, "{:?}", t.outcome);
    assert_eq!(t.attempt, 2, "ended by the second claim");
    assert_eq!(endings(&*store, id), vec![TaskState::Succeeded]);
    // The woken worker noticed and stopped its copy.
    wait_for(
        "the stale worker to report its lost lease",
        Duration::from_secs(30),
        || {
            stale
                .log()
                .contains("lease lost; leaving the task to its new owner")
                .then_some(())
        },
    );
    eprintln!("stale worker's log:\n{}", stale.log());
    let _ = other;
}

/// PostgreSQL restarts while workers run tasks: they reconnect and carry
/// on; every task ends exactly once.
#[test]
fn workers_carry_on_when_postgres_restarts() {
    let Some(server) = testing::server_or_skip("pg-restart") else {
        return;
    };
    let (url, store) = database(&server);
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("j")).unwrap();
    let skill = skill_dir("hostile", RW_W);
    let g = grants(&["--allow-write", &format!("{}:/w", work.path().display())]);
    let workers: Vec<Worker> = (0..2).map(|_| Worker::start(&url, 8, &[])).collect();
    for w in &workers {
        w.ready();
    }
    const N: usize = 300;
    let host = spawner(store.clone(), None);
    for i in 0..N {
        let input = json!({"case": "steps", "journal": format!("/w/j/{i}"), "steps": 2,
                           "pause_after": 1, "pause_ms": 50});
        host.spawn(SpawnRequest {
            grants: g.clone(),
            ..SpawnRequest::new(skill.path(), input.to_string())
        })
        .unwrap();
    }
    wait_for(
        "a fifth of the tasks to end",
        Duration::from_secs(300),
        || (count(&*store, TaskState::Succeeded) >= N / 5).then_some(()),
    );
    server.restart().unwrap();
    let tasks = wait_for("every task to end", Duration::from_secs(600), || {
        let tasks = all_tasks(&*store);
        tasks.iter().all(|t| t.state.is_terminal()).then_some(tasks)
    });
    for t in &tasks {
        assert_eq!(t.state, TaskState::Succeeded, "{}: {:?}", t.id, t.outcome);
        assert_eq!(
            endings(&*store, t.id),
            vec![TaskState::Succeeded],
            "{}",
            t.id
        );
    }
    assert_eq!(tasks.len(), N);
}

/// Each task's notification is delivered once across three workers, each
/// with the same webhook sink.
#[test]
fn notifications_are_delivered_once_across_workers() {
    let Some(server) = testing::server_or_skip("worker-outbox") else {
        return;
    };
    let (url, store) = database(&server);
    let receiver = Receiver::start(&[], Reply::Status(200));
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = config(
        cfg_dir.path(),
        &webhook("hook", &receiver.url("/hook")),
        "\"hook\"",
    );
    let cfg_arg = cfg.to_str().unwrap();
    let workers: Vec<Worker> = (0..3)
        .map(|_| Worker::start(&url, 8, &["--config", cfg_arg]))
        .collect();
    for w in &workers {
        w.ready();
    }
    let host = spawner(store.clone(), Some(&cfg));
    let skill = skill_dir("hello", "");
    const N: usize = 200;
    let ids: BTreeSet<String> = (0..N)
        .map(|_| {
            host.spawn(SpawnRequest::new(skill.path(), "{}"))
                .unwrap()
                .id
                .to_string()
        })
        .collect();
    let seen = receiver.wait_for(N);
    // Settle: nothing more arrives once every delivery is recorded.
    wait_for(
        "every delivery to be recorded",
        Duration::from_secs(120),
        || {
            ids.iter()
                .all(|id| {
                    store
                        .deliveries(id.parse().unwrap())
                        .unwrap()
                        .iter()
                        .all(|d| d.state == skillbox::relay::DeliveryState::Delivered)
                })
                .then_some(())
        },
    );
    let seen_after = receiver.seen();
    assert_eq!(seen_after.len(), seen.len().max(N), "no late duplicates");
    let keys: Vec<String> = seen_after
        .iter()
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    let distinct: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(keys.len(), N, "one request per task");
    assert_eq!(distinct.len(), N);
    let tasks: BTreeSet<String> = seen_after
        .iter()
        .map(|r| r.json()["task_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tasks, ids);
}

/// `serve --concurrency 0` on a shared store is an API server only: a task
/// spawned through it runs on a worker. On its own SQLite store it would
/// run nothing, so it refuses to start.
#[test]
fn an_api_server_with_no_slots_leaves_tasks_to_workers() {
    let lonely = tempfile::tempdir().unwrap();
    let out = crate::harness::cli(
        &[
            "serve",
            "--data-dir",
            lonely.path().to_str().unwrap(),
            "--concurrency",
            "0",
        ],
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("needs a store shared with workers"),
        "{}",
        out.stderr
    );

    let Some(server) = testing::server_or_skip("api-server") else {
        return;
    };
    let (url, _store) = database(&server);
    let api_dir = tempfile::tempdir().unwrap();
    let api =
        crate::daemon::Daemon::start(api_dir.path(), &["--store", &url, "--concurrency", "0"]);
    let worker = Worker::start(&url, 2, &[]);
    worker.ready();
    let skill = skill_dir("hello", "");
    let out = api.cli(&[
        "spawn",
        skill.path().to_str().unwrap(),
        "-i",
        r#"{"name": "w"}"#,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_string();
    let out = api.cli(&["tasks", "wait", &id]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("Hello, w"), "{}", out.stdout);
    assert!(api.log().contains("postgres://"), "{}", api.log());
}

/// A task runs the component it was spawned with, or nothing: a worker that
/// finds another file at the skill's path fails the task with a digest
/// mismatch.
#[test]
fn a_worker_refuses_a_component_other_than_the_spawned_one() {
    let Some(server) = testing::server_or_skip("worker-digest") else {
        return;
    };
    let (url, store) = database(&server);
    let skill = skill_dir("hello", "");
    let host = spawner(store.clone(), None);
    let id = host
        .spawn(SpawnRequest::new(skill.path(), r#"{"name": "pinned"}"#))
        .unwrap()
        .id;
    // The skill directory this worker sees holds another component, with a
    // manifest that pins it.
    let other = skill_dir("hostile", "");
    for file in ["skill.wasm", "skill.toml"] {
        std::fs::copy(other.path().join(file), skill.path().join(file)).unwrap();
    }
    let worker = Worker::start(&url, 1, &[]);
    worker.ready();
    let t = wait_for("the task to end", Duration::from_secs(60), || {
        Some(store.get(id).unwrap()).filter(|t| t.state.is_terminal())
    });
    assert_eq!(t.state, TaskState::Failed);
    let message = t.outcome.unwrap()["message"].as_str().unwrap().to_string();
    assert!(message.contains("sha256"), "{message}");
}

/// A worker cut off from the database longer than its lease stops its
/// task by itself (another host may be running it by then); once the
/// database is back, the task is taken over and ends once.
#[test]
fn a_worker_cut_off_past_its_lease_stops_its_task() {
    let Some(server) = testing::server_or_skip("cut-off") else {
        return;
    };
    let (url, store) = database(&server);
    let skill = skill_dir("hostile", "resume = \"restart\"\n");
    let worker = Worker::start(&url, 2, &[]);
    worker.ready();
    let host = spawner(store.clone(), None);
    let id = host
        .spawn(SpawnRequest::new(
            skill.path(),
            json!({"case": "sleep", "ms": 6000}).to_string(),
        ))
        .unwrap()
        .id;
    wait_for("the task to run", Duration::from_secs(60), || {
        (store.get(id).unwrap().state == TaskState::Running).then_some(())
    });
    server.stop().unwrap();
    wait_for(
        "the worker to stop its task",
        Duration::from_secs(60),
        || worker.log().contains("stopping the task").then_some(()),
    );
    server.resume().unwrap();
    let t = wait_for("the task to end", Duration::from_secs(120), || {
        store.get(id).ok().filter(|t| t.state.is_terminal())
    });
    assert_eq!(t.state, TaskState::Succeeded, "{:?}", t.outcome);
    assert_eq!(t.attempt, 2, "run again after the cut");
    assert_eq!(endings(&*store, id), vec![TaskState::Succeeded]);
}

/// A worker whose store cannot be reached says so and exits, rather than
/// wait for work that cannot come.
#[test]
fn a_worker_without_its_store_exits_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::harness::cli(
        &[
            "worker",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--store",
            "postgres://nobody@127.0.0.1:1/none",
        ],
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
    let out = crate::harness::cli(
        &[
            "worker",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--store",
            "mysql://x/y",
        ],
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("expected postgres://"),
        "{}",
        out.stderr
    );
}

/// Approvals across hosts: a task spawned through an API server that runs
/// nothing waits on one of two workers; the operator's decision, given
/// through the API server, reaches that worker (NOTIFY), and the call goes
/// on there.
#[test]
fn a_decision_given_through_the_api_server_reaches_the_worker() {
    let Some(server) = testing::server_or_skip("approvals") else {
        return;
    };
    let (url, store) = database(&server);
    let api_dir = tempfile::tempdir().unwrap();
    let api =
        crate::daemon::Daemon::start(api_dir.path(), &["--store", &url, "--concurrency", "0"]);
    let workers = [Worker::start(&url, 2, &[]), Worker::start(&url, 2, &[])];
    let owners: Vec<String> = workers.iter().map(Worker::ready).collect();
    let skill = crate::approvals::clock_skill();
    let input = crate::approvals::clock_input();
    let mut figures = Vec::new();
    for round in 0..3 {
        let out = api.cli(&[
            "spawn",
            skill.path().to_str().unwrap(),
            "--input",
            &input.to_string(),
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let id = out.stdout.trim().to_string();
        let task_id: TaskId = id.parse().unwrap();
        let t = wait_for("the task to ask", Duration::from_secs(60), || {
            Some(store.get(task_id).unwrap()).filter(|t| t.state == TaskState::AwaitingApproval)
        });
        let runner = t.owner.clone().unwrap();
        assert!(owners.contains(&runner), "{runner} is one of {owners:?}");
        let out = api.cli(&[
            "tasks",
            "approve",
            &id,
            "--note",
            &format!("round {round}"),
            "--json",
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let decided_ms = out.json()["decision"]["at_ms"].as_i64().unwrap();
        let t = api.cli(&["tasks", "wait", &id, "--json"]).json();
        assert_eq!(t["state"], "succeeded", "{t}");
        let decided = store.approvals(task_id).unwrap();
        assert_eq!(decided.len(), 1);
        let by = &decided[0].decision.as_ref().unwrap().by;
        assert!(by.contains("the daemon's socket"), "{by}");
        figures.push(crate::approvals::decision_to_call_ms(&t, decided_ms));
    }
    eprintln!("figure: decision -> call returning, across hosts (PostgreSQL): {figures:.1?} ms");
}

/// A server that takes TLS connections only, with a certificate of a test
/// CA for 127.0.0.1: the store and a worker connect with `verify-full`
/// (the pool and the wake-up listener both over TLS) and run a task; each
/// weaker or wrong setting gets what libpq would give, or a clear refusal
/// at start.
#[test]
fn the_store_and_workers_reach_postgres_over_verified_tls() {
    let Some(server) = testing::server_or_skip("pg-tls") else {
        return;
    };
    let url = server.create_database().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("skillbox test database CA");
    let (crt, key) = ca.issue(certs.path(), "db", &["127.0.0.1"], (2020, 2099));
    server
        .require_tls(
            &std::fs::read_to_string(crt).unwrap(),
            &std::fs::read_to_string(key).unwrap(),
        )
        .unwrap();
    let ca_file = certs.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let stranger = certs.path().join("stranger.pem");
    std::fs::write(&stranger, Ca::new("someone else").pem()).unwrap();
    let with = |query: &str| format!("{url}?{query}");
    let verified = with(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    ));

    let store: Arc<PgStore> = Arc::new(PgStore::connect(&verified).unwrap());
    let worker = Worker::start(&verified, 2, &[]);
    worker.ready();
    let work = tempfile::tempdir().unwrap();
    let skill = skill_dir("hostile", RW_W);
    let g = grants(&["--allow-write", &format!("{}:/w", work.path().display())]);
    let host = spawner(store.clone(), None);
    let input = json!({"case": "write", "path": "/w/over-tls", "content": "sealed"});
    let id = host
        .spawn(SpawnRequest {
            grants: g,
            ..SpawnRequest::new(skill.path(), input.to_string())
        })
        .unwrap();
    let task = wait_for("the task to end", Duration::from_secs(120), || {
        let t = store.get(id.id).unwrap();
        t.state.is_terminal().then_some(t)
    });
    assert_eq!(task.state, TaskState::Succeeded, "{:?}", task.outcome);
    assert_eq!(
        std::fs::read_to_string(work.path().join("over-tls")).unwrap(),
        "sealed"
    );

    // Encrypted without checking who answers, as libpq's require; the
    // chain alone under another name (verify-ca).
    PgStore::connect(&with("sslmode=require")).unwrap();
    let localhost = verified.replace("127.0.0.1", "localhost");
    let ca_only = localhost.replace("verify-full", "verify-ca");
    PgStore::connect(&ca_only).unwrap();
    let refused = |url: &str| match PgStore::connect(url) {
        Ok(_) => panic!("{url}: connected"),
        Err(e) => e.to_string(),
    };
    let e = refused(&localhost);
    assert!(
        e.contains("not valid for the name localhost (it is for 127.0.0.1)"),
        "{e}"
    );
    let e = refused(&with(&format!(
        "sslmode=verify-full&sslrootcert={}",
        stranger.display()
    )));
    assert!(
        e.contains("not signed by a CA this host trusts")
            && e.contains(&format!("the sslrootcert {}", stranger.display()))
            && e.contains("give its certificate with `sslrootcert`"),
        "{e}"
    );
    // The server takes no connection without TLS.
    let e = refused(&with("sslmode=disable"));
    assert!(e.contains("no encryption"), "{e}");
    let e = refused(&with("sslmode=verify-everything"));
    assert!(
        e.contains(
            "sslmode=verify-everything: use disable, prefer, require, verify-ca or verify-full"
        ),
        "{e}"
    );

    // A worker whose URL trusts another CA stops at start, saying why.
    let out = Command::new(env!("CARGO_BIN_EXE_skillbox"))
        .arg("worker")
        .arg("--data-dir")
        .arg(work.path().join("w2"))
        .args([
            "--store",
            &verified.replace(ca_file.to_str().unwrap(), stranger.to_str().unwrap()),
        ])
        .env("SKILLBOX_CACHE_DIR", cli_cache_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("not signed by a CA this host trusts"),
        "{stderr}"
    );
}
