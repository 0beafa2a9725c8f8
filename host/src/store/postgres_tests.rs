//! PostgreSQL-specific checks, plus the conformance suite on PostgreSQL.
//! Each test takes a database of its own on a throw-away server (see
//! [`super::testing`]); tests that restart the server take their own.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::conformance::{run_all, spec};
use super::testing;
use super::*;

const LEASE: Duration = Duration::from_secs(30);

/// A fresh database on the shared server, or `None` when the test is
/// skipped.
fn fresh_db(test: &str) -> Option<String> {
    let server = testing::shared(test)?;
    Some(server.create_database().unwrap())
}

fn log(message: &str) -> TaskEvent {
    TaskEvent::Log {
        level: crate::events::Level::Info,
        message: message.into(),
    }
}

/// Waits (up to `within`) for `rx` to change; true if it did.
fn changed(rx: &mut tokio::sync::watch::Receiver<u64>, within: Duration) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async { tokio::time::timeout(within, rx.changed()).await })
        .is_ok_and(|r| r.is_ok())
}

/// Retries `f` until it succeeds (for calls right after a server
/// restart): only `Backend` errors are allowed on the way.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Result<T, StoreError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match f() {
            Ok(v) => return v,
            Err(StoreError::Backend(e)) if Instant::now() < deadline => {
                eprintln!("{what}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

#[test]
fn conformance() {
    let Some(server) = testing::shared("postgres conformance") else {
        return;
    };
    run_all(&|| {
        let url = server.create_database().unwrap();
        Box::new(PgStore::connect(&url).unwrap())
    });
}

#[test]
fn migrations_run_once_when_workers_start_together() {
    let Some(url) = fresh_db("postgres migrations_run_once") else {
        return;
    };
    let start = Arc::new(Barrier::new(8));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (url, start) = (url.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                PgStore::connect(&url).map(|s| s.schema_version())
            })
        })
        .collect();
    for w in workers {
        assert_eq!(w.join().unwrap().unwrap().unwrap(), 6);
    }
    let store = PgStore::connect(&url).unwrap();
    assert_eq!(
        store
            .scalar("SELECT COUNT(*) FROM schema_migrations")
            .unwrap(),
        6,
        "each migration applied once"
    );
    // Still usable: the schema is whole.
    let t = store.create(spec("a", ResumePolicy::Fail)).unwrap();
    assert_eq!(store.get(t.id).unwrap(), t);
}

#[test]
fn refuses_edited_or_newer_schemas() {
    let Some(url) = fresh_db("postgres refuses_edited_or_newer_schemas") else {
        return;
    };
    let store = PgStore::connect(&url).unwrap();
    store
        .batch("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
        .unwrap();
    drop(store);
    let e = PgStore::connect(&url).err().unwrap();
    assert!(matches!(e, StoreError::Schema(_)), "{e:?}");
    assert!(e.to_string().contains("must never be edited"), "{e}");

    let url = fresh_db("postgres refuses_edited_or_newer_schemas").unwrap();
    let store = PgStore::connect(&url).unwrap();
    store
        .batch("INSERT INTO schema_migrations VALUES (99, 'future', 'x', 0)")
        .unwrap();
    drop(store);
    let e = PgStore::connect(&url).err().unwrap();
    assert!(matches!(e, StoreError::Schema(_)), "{e:?}");
    assert!(e.to_string().contains("newer version"), "{e}");
}

#[test]
fn unreachable_servers_and_bad_urls_are_clear_errors() {
    let e = PgStore::connect("postgres://nobody@127.0.0.1:1/none")
        .err()
        .unwrap();
    assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
    assert!(e.to_string().contains("cannot connect"), "{e}");
    let e = PgStore::connect("postgres://[::1").err().unwrap();
    assert!(e.to_string().contains("task store URL"), "{e}");
}

/// Four hosts, each with its own store, drain one queue: every task is
/// claimed exactly once.
#[test]
fn hosts_claiming_together_take_each_task_once() {
    let Some(url) = fresh_db("postgres hosts_claiming_together") else {
        return;
    };
    let store = PgStore::connect(&url).unwrap();
    let created: HashSet<TaskId> = (0..500)
        .map(|i| {
            store
                .create(spec(&format!("t{i}"), ResumePolicy::Fail))
                .unwrap()
                .id
        })
        .collect();
    let start = Arc::new(Barrier::new(4));
    let hosts: Vec<_> = (0..4)
        .map(|h| {
            let (url, start) = (url.clone(), start.clone());
            std::thread::spawn(move || {
                let store = PgStore::connect(&url).unwrap();
                let owner = format!("host-{h}");
                start.wait();
                let mut got = Vec::new();
                loop {
                    // Half the hosts claim one at a time, half in batches.
                    let claims = if h % 2 == 0 {
                        store.claim(&owner, LEASE).unwrap().into_iter().collect()
                    } else {
                        store.claim_many(&owner, 7, LEASE).unwrap()
                    };
                    if claims.is_empty() {
                        return got;
                    }
                    for c in claims {
                        assert_eq!((c.lease, c.task.attempt), (1, 1));
                        assert_eq!(c.task.owner.as_deref(), Some(owner.as_str()));
                        got.push(c.task.id);
                    }
                }
            })
        })
        .collect();
    let claimed: Vec<TaskId> = hosts.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert_eq!(claimed.len(), 500, "no task claimed twice");
    assert_eq!(claimed.into_iter().collect::<HashSet<_>>(), created);
    assert!(store.claim("late", LEASE).unwrap().is_none());
}

/// Host A's lease runs out, host B recovers and claims the task: A's
/// writes are refused, B's go through.
#[test]
fn fencing_holds_across_stores() {
    let Some(url) = fresh_db("postgres fencing_holds_across_stores") else {
        return;
    };
    let (a, b) = (
        PgStore::connect(&url).unwrap(),
        PgStore::connect(&url).unwrap(),
    );
    let t = a.create(spec("a", ResumePolicy::Restart)).unwrap();
    let old = a.claim("host-a", Duration::ZERO).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(b.recover(now_ms(), None).unwrap(), vec![t.id]);
    let new = b.claim("host-b", LEASE).unwrap().unwrap();
    assert_eq!((new.task.id, new.lease), (t.id, 2));
    for result in [
        a.append(&old, log("late")).map(|_| ()),
        a.heartbeat(&old, LEASE),
        a.save_checkpoint(&old, "k", b"late"),
        a.finish(&old, TaskState::Succeeded, serde_json::json!({}), "late")
            .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(StoreError::LeaseLost(_))),
            "{result:?}"
        );
    }
    b.append(&new, log("mine")).unwrap();
    let done = b
        .finish(&new, TaskState::Succeeded, serde_json::json!({}), "done")
        .unwrap();
    assert_eq!(done.state, TaskState::Succeeded);
    assert!(a.checkpoints(t.id).unwrap().is_empty());
}

#[test]
fn events_are_bounded_with_one_marker() {
    let Some(url) = fresh_db("postgres events_are_bounded") else {
        return;
    };
    let store = PgStore::connect(&url).unwrap().with_max_events(5);
    store.create(spec("a", ResumePolicy::Restart)).unwrap();
    let c = store.claim("w1", LEASE).unwrap().unwrap();
    for i in 0..20 {
        store.append(&c, log(&format!("line {i}"))).unwrap();
    }
    let t = store
        .finish(&c, TaskState::Succeeded, serde_json::json!({}), "done")
        .unwrap();
    let events = store.events(t.id, 0, 1000).unwrap();
    let markers = events
        .iter()
        .filter(|e| e.event.kind() == "truncated")
        .count();
    assert_eq!(markers, 1);
    assert!(
        matches!(
            events.last().unwrap().event,
            TaskEvent::State {
                to: TaskState::Succeeded,
                ..
            }
        ),
        "state changes are always kept"
    );
    assert_eq!(t.events_dropped, 17);
}

/// A group of events in one `append_many` (one multi-row insert) keeps the
/// same rules as one at a time: order, the bound with one marker, and the
/// task's latest progress.
#[test]
fn a_batch_of_events_keeps_order_bound_and_progress() {
    let Some(url) = fresh_db("postgres a_batch_of_events") else {
        return;
    };
    let store = PgStore::connect(&url).unwrap().with_max_events(6);
    store.create(spec("a", ResumePolicy::Restart)).unwrap();
    let c = store.claim("w1", LEASE).unwrap().unwrap();
    let progress = |f: Option<f32>, m: &str| TaskEvent::Progress {
        fraction: f,
        message: m.into(),
    };
    store
        .append_many(
            &c,
            &[
                progress(Some(0.5), "half"),
                log("a"),
                progress(None, "still"),
            ],
        )
        .unwrap();
    let t = store.get(c.task.id).unwrap();
    assert_eq!(
        (t.progress, t.progress_message.as_deref()),
        (Some(0.5), Some("still"))
    );
    let batch: Vec<TaskEvent> = (0..10).map(|i| log(&format!("line {i}"))).collect();
    store.append_many(&c, &batch).unwrap();
    let t = store
        .finish(&c, TaskState::Succeeded, serde_json::json!({}), "done")
        .unwrap();
    let events = store.events(t.id, 0, 1000).unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "dense, in order"
    );
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "truncated").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(*kinds.last().unwrap(), "state", "{kinds:?}");
    let dir = tempfile::tempdir().unwrap();
    let sqlite = crate::store::SqliteStore::open(&dir.path().join("t.db"))
        .unwrap()
        .with_max_events(6);
    sqlite.create(spec("a", ResumePolicy::Restart)).unwrap();
    let c = sqlite.claim("w1", LEASE).unwrap().unwrap();
    sqlite
        .append_many(
            &c,
            &[
                progress(Some(0.5), "half"),
                log("a"),
                progress(None, "still"),
            ],
        )
        .unwrap();
    sqlite.append_many(&c, &batch).unwrap();
    let s = sqlite
        .finish(&c, TaskState::Succeeded, serde_json::json!({}), "done")
        .unwrap();
    let same: Vec<&str> = sqlite
        .events(s.id, 0, 1000)
        .unwrap()
        .iter()
        .map(|e| e.event.kind())
        .collect();
    assert_eq!(kinds, same, "as the SQLite store keeps them");
    assert_eq!(t.events_dropped, s.events_dropped);
}

/// The store is synchronous but works from inside an async runtime (and
/// is dropped there) as well as from plain threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_from_async_contexts() {
    let Some(url) = fresh_db("postgres works_from_async_contexts") else {
        return;
    };
    let store = PgStore::connect(&url).unwrap();
    let t = store.create(spec("a", ResumePolicy::Fail)).unwrap();
    let store = Arc::new(store);
    let on_blocking = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.claim("w", LEASE))
    };
    let c = on_blocking.await.unwrap().unwrap().unwrap();
    assert_eq!(c.task.id, t.id);
    store.append(&c, log("from a task")).unwrap();
    drop(store);
}

/// A restart of the server: calls in flight may fail with `Backend`; later
/// calls succeed on fresh connections, with the same store.
#[test]
fn survives_a_server_restart() {
    let Some(server) = testing::server_or_skip("postgres survives_a_server_restart") else {
        return;
    };
    let url = server.create_database().unwrap();
    let store = PgStore::connect(&url).unwrap();
    store.create(spec("a", ResumePolicy::Restart)).unwrap();
    let c = store.claim("w1", LEASE).unwrap().unwrap();
    // A call in flight when the server goes down fails with `Backend`.
    let store = Arc::new(store);
    let in_flight = {
        let store = store.clone();
        std::thread::spawn(move || store.batch("SELECT pg_sleep(30)"))
    };
    std::thread::sleep(Duration::from_millis(300));
    server.restart().unwrap();
    let e = in_flight.join().unwrap().unwrap_err();
    assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
    // The pooled connections broke too; the next calls replace them.
    eventually("heartbeat after restart", || store.heartbeat(&c, LEASE));
    store.append(&c, log("after the restart")).unwrap();
    assert_eq!(store.get(c.task.id).unwrap().state, TaskState::Running);

    // While the server is down, calls fail with `Backend` (they do not
    // hang); once it is back, they succeed again.
    server.stop().unwrap();
    let e = store.get(c.task.id).unwrap_err();
    assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
    server.resume().unwrap();
    eventually("get after stop and start", || store.get(c.task.id));
    store
        .finish(&c, TaskState::Succeeded, serde_json::json!({}), "done")
        .unwrap();
}

/// A create in one store wakes a subscriber of another store on the same
/// database; so does an outbox row; and after a server restart the
/// listener reconnects (and says so), then wakes on creates again.
#[test]
fn creates_wake_subscribers_of_other_stores() {
    let Some(server) = testing::server_or_skip("postgres creates_wake_subscribers") else {
        return;
    };
    let url = server.create_database().unwrap();
    let (worker, spawner) = (
        PgStore::connect(&url).unwrap(),
        PgStore::connect(&url).unwrap(),
    );
    let mut tasks = worker.subscribe();
    let mut outbox = worker.subscribe_outbox();
    assert!(
        changed(&mut tasks, Duration::from_secs(10))
            && changed(&mut outbox, Duration::from_secs(1)),
        "the listener connects"
    );

    spawner.create(spec("a", ResumePolicy::Fail)).unwrap();
    assert!(
        changed(&mut tasks, Duration::from_secs(5)),
        "a create wakes"
    );
    // A claim makes nothing claimable: no wake-up for it.
    let c = spawner.claim("w", LEASE).unwrap().unwrap();
    assert!(!changed(&mut tasks, Duration::from_millis(300)));
    assert!(!outbox.has_changed().unwrap());

    // A notification queued by an end wakes the relays.
    spawner
        .create(TaskSpec {
            notify_to: vec!["hook".into()],
            ..spec("n", ResumePolicy::Fail)
        })
        .unwrap();
    tasks.borrow_and_update();
    spawner
        .finish(&c, TaskState::Succeeded, serde_json::json!({}), "done")
        .unwrap();
    let n = spawner.claim("w", LEASE).unwrap().unwrap();
    spawner
        .finish(&n, TaskState::Succeeded, serde_json::json!({}), "done")
        .unwrap();
    assert!(changed(&mut outbox, Duration::from_secs(5)), "outbox wakes");

    // The listener comes back after a restart, and says so: wake-ups sent
    // while it was away are lost, so waiters must look again.
    tasks.borrow_and_update();
    server.restart().unwrap();
    assert!(
        changed(&mut tasks, Duration::from_secs(20)),
        "the listener reconnects"
    );
    tasks.borrow_and_update();
    eventually("create after restart", || {
        spawner.create(spec("b", ResumePolicy::Fail))
    });
    assert!(
        changed(&mut tasks, Duration::from_secs(5)),
        "a create wakes after the restart"
    );
}

/// What a task's life costs in round trips to the server, step by step as
/// a worker takes it: created by a client, claimed, one group commit of
/// its events, and its end with its last events, its notification leased
/// and the next task claimed in the same transaction. Writes whose answer
/// decides nothing are pipelined behind the next read or the commit, so
/// each step waits only for what it must read. (The second life is
/// counted: the first also prepares each statement on the connection.)
#[test]
fn a_task_life_takes_few_round_trips() {
    let Some(url) = fresh_db("postgres round trips") else {
        return;
    };
    let store = PgStore::connect(&url).unwrap();
    let s = spec("rt", ResumePolicy::Restart);
    life(&store, &s, None);
    let [create, claimed, appended, finished] = life(&store, &s, None);
    eprintln!(
        "round trips: create {create}, claim {claimed}, events {appended}, \
         finish with next claim {finished}"
    );
    // A transaction: BEGIN, COMMIT and each read that decides something.
    assert!(create <= 2, "create: {create} round trips");
    assert!(claimed <= 3, "claim: {claimed} round trips");
    // One statement each, fenced on the row as the claim left it.
    assert_eq!(appended, 1, "events");
    assert_eq!(finished, 1, "finish and claim the next");

    // An end whose notifications are leased to its host reads the outbox
    // in a transaction.
    let mut s = spec("rt", ResumePolicy::Restart);
    s.notify_to = vec!["hook".into()];
    life(&store, &s, Some(LEASE));
    let [_, _, appended, finished] = life(&store, &s, Some(LEASE));
    eprintln!("with a sink: events {appended}, finish with next claim {finished}");
    assert_eq!(appended, 1, "events");
    assert!(
        finished <= 6,
        "finish and claim the next: {finished} round trips"
    );
}

/// A pipelined write that fails aborts its transaction: its error is the
/// one reported (not the "transaction is aborted" of the reads sent behind
/// it), whether a read or the commit finds it, and nothing of the
/// transaction is kept.
#[test]
fn a_failed_pipelined_write_is_the_error_and_nothing_commits() {
    use super::postgres_pool::{owned, pg};
    use futures::FutureExt;
    let Some(url) = fresh_db("postgres pipelined write fails") else {
        return;
    };
    let store = PgStore::connect(&url).unwrap();
    store.batch("CREATE TABLE t (k INT PRIMARY KEY)").unwrap();
    let count = || store.scalar("SELECT count(*) FROM t").unwrap();
    // Found by a read.
    let e = store
        .write(|tx| {
            async move {
                tx.write("INSERT INTO t VALUES ($1)", owned![1i32]).await?;
                tx.write("INSERT INTO t VALUES ($1)", owned![1i32]).await?;
                tx.write("INSERT INTO t VALUES ($1)", owned![2i32]).await?;
                tx.one("SELECT count(*) FROM t", &[]).await?;
                Ok(())
            }
            .boxed()
        })
        .unwrap_err();
    assert!(e.to_string().contains("duplicate key"), "{e}");
    assert_eq!(count(), 0);
    // Found by the commit.
    let e = store
        .write(|tx| {
            async move {
                tx.write("INSERT INTO t VALUES ($1)", owned![1i32]).await?;
                tx.write("INSERT INTO t VALUES ($1)", owned![1i32]).await
            }
            .boxed()
        })
        .unwrap_err();
    assert!(e.to_string().contains("duplicate key"), "{e}");
    assert_eq!(count(), 0);
    // And when all goes well, a read sees the writes sent before it.
    let seen = store
        .write(|tx| {
            async move {
                tx.write("INSERT INTO t VALUES ($1)", owned![1i32]).await?;
                tx.write("INSERT INTO t VALUES ($1)", owned![2i32]).await?;
                let n: i64 = tx
                    .one("SELECT count(*) FROM t", &[])
                    .await?
                    .try_get(0)
                    .map_err(pg)?;
                tx.write("INSERT INTO t VALUES ($1)", owned![3i32]).await?;
                Ok(n)
            }
            .boxed()
        })
        .unwrap();
    assert_eq!((seen, count()), (2, 3));
}

/// A worker writes the events and the end of a task it holds in one
/// statement each, fenced on the row as its own last write left it. When
/// another host changed the row meanwhile (decided the task's request for
/// approval; interrupted it once its lease ran out), that statement
/// writes nothing and the store takes the transaction that reads the row:
/// seqs stay dense, and a claim that lost the task gets `LeaseLost`.
#[test]
fn a_row_another_host_changed_is_read_before_it_is_written() {
    use super::conformance::{asking, by};
    let Some(url) = fresh_db("postgres held rows") else {
        return;
    };
    let (a, b) = (
        PgStore::connect(&url).unwrap(),
        PgStore::connect(&url).unwrap(),
    );
    let trips = |f: &mut dyn FnMut()| {
        let before = a.round_trips();
        f();
        a.round_trips() - before
    };
    // The first task prepares the statements (a round trip each, once per
    // connection); the second is counted.
    let mut id = None;
    for counted in [false, true] {
        let check = |trips: u64, want: u64| assert!(!counted || trips == want, "{trips}");
        let task = a.create(spec("held", ResumePolicy::Restart)).unwrap().id;
        let c = a.claim("a", LEASE).unwrap().unwrap();
        check(trips(&mut || a.append_many(&c, &[log("one")]).unwrap()), 1);
        let asked = a.ask(&c, asking("app#1", "r")).unwrap();
        a.append_many(&c, &[log("waiting")]).unwrap();
        check(
            trips(&mut || a.append_many(&c, &[log("still")]).unwrap()),
            1,
        );
        // The operator answers through another host: a new state and event.
        b.decide(task, Some(asked.id), by("cli:op", true, false))
            .unwrap();
        // The statement changes nothing; the transaction reads the row
        // (`BEGIN`, the row, `COMMIT`).
        check(
            trips(&mut || a.append_many(&c, &[log("after")]).unwrap()),
            1 + 3,
        );
        check(
            trips(&mut || a.append_many(&c, &[log("again")]).unwrap()),
            1,
        );
        let end = Ending {
            events: &[log("last")],
            state: TaskState::Succeeded,
            outcome: serde_json::json!({"outcome": "succeeded"}),
            reason: "done",
            deliver: None,
        };
        let mut ended = None;
        check(
            trips(&mut || ended = Some(a.finish_and_claim(&c, end.clone(), None).unwrap())),
            1,
        );
        assert_eq!(ended.unwrap().task.state, TaskState::Succeeded);
        id = Some(task);
    }
    let id = id.unwrap();
    let events = a.events(id, 0, 100).unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let said: Vec<String> = events
        .iter()
        .map(|e| match &e.event {
            TaskEvent::Log { message, .. } => message.clone(),
            TaskEvent::State { to, .. } => to.to_string(),
            other => other.kind().to_string(),
        })
        .collect();
    assert_eq!(
        said,
        [
            "queued",
            "running",
            "one",
            "awaiting_approval",
            "waiting",
            "still",
            "running",
            "after",
            "again",
            "last",
            "succeeded"
        ]
    );

    // Interrupted by another host while its holder still writes.
    a.create(spec("lost", ResumePolicy::Restart)).unwrap();
    let c = a.claim("a", Duration::ZERO).unwrap().unwrap();
    a.append_many(&c, &[log("one")]).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(b.recover(now_ms(), None).unwrap(), vec![c.task.id]);
    let late = a.append_many(&c, &[log("late")]);
    assert!(matches!(late, Err(StoreError::LeaseLost(_))), "{late:?}");
    let late = a.finish(&c, TaskState::Succeeded, serde_json::json!({}), "late");
    assert!(matches!(late, Err(StoreError::LeaseLost(_))), "{late:?}");
    assert_eq!(a.get(c.task.id).unwrap().state, TaskState::Interrupted);
}

/// One task's life for [`a_task_life_takes_few_round_trips`], with a
/// second task queued behind it; returns the round trips of each step.
fn life(store: &PgStore, s: &TaskSpec, deliver: Option<Duration>) -> [u64; 4] {
    let trips = |f: &mut dyn FnMut()| {
        let before = store.round_trips();
        f();
        store.round_trips() - before
    };
    let mut id = None;
    let create = trips(&mut || id = Some(store.create(s.clone()).unwrap().id));
    let queued = store.create(s.clone()).unwrap().id;
    let mut claim = None;
    let claimed = trips(&mut || claim = store.claim_many("w1", 1, LEASE).unwrap().pop());
    let claim = claim.unwrap();
    assert_eq!(Some(claim.task.id), id, "the oldest first");
    assert_eq!(
        (claim.task.state, claim.task.attempt),
        (TaskState::Running, 1)
    );
    let events = [
        TaskEvent::Progress {
            fraction: Some(0.5),
            message: "half".into(),
        },
        log("one"),
    ];
    let appended = trips(&mut || store.append_many(&claim, &events).unwrap());
    let mut ended = None;
    let end = Ending {
        events: &[log("two")],
        state: TaskState::Succeeded,
        outcome: serde_json::json!({"summary": "ok"}),
        reason: "done",
        deliver,
    };
    let finished = trips(&mut || {
        ended = Some(
            store
                .finish_and_claim(&claim, end.clone(), Some(LEASE))
                .unwrap(),
        )
    });
    // What the steps did is all there.
    let ended = ended.unwrap();
    assert_eq!(ended.task.state, TaskState::Succeeded);
    assert_eq!(ended.task.progress, Some(0.5));
    assert_eq!(
        ended.deliveries.len(),
        s.notify_to.len(),
        "the end's notification, leased"
    );
    let next = ended.next.expect("the task queued behind, claimed next");
    assert_eq!(next.task.id, queued);
    assert_eq!(
        (next.task.state, next.task.attempt),
        (TaskState::Running, 1)
    );
    let kinds: Vec<&str> = store
        .events(claim.task.id, 0, 100)
        .unwrap()
        .iter()
        .map(|e| e.event.kind())
        .collect();
    assert_eq!(kinds, ["state", "state", "progress", "log", "log", "state"]);
    // The next life claims it again: give it back.
    store
        .finish(&next, TaskState::Failed, serde_json::json!({}), "x")
        .unwrap();
    [create, claimed, appended, finished]
}
