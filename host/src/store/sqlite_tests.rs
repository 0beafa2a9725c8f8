//! SQLite-specific checks, plus the conformance suite on SQLite.

use super::conformance::{run_all, spec};
use super::*;

fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_dir(dir.path()).unwrap();
    (dir, store)
}

#[test]
fn conformance() {
    let dirs = std::sync::Mutex::new(Vec::new());
    run_all(&|| {
        let (dir, store) = fresh();
        dirs.lock().unwrap().push(dir);
        Box::new(store)
    });
}

/// Many threads writing at once: every write is committed once and reads
/// see all of them; writes share commits (the group-commit path) without
/// mixing one write's failure into another's.
#[test]
fn concurrent_writers_share_commits_and_lose_nothing() {
    let (_dir, store) = fresh();
    let store = std::sync::Arc::new(store);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..50 {
                    ids.push(
                        store
                            .create(spec(&format!("{t}-{i}"), ResumePolicy::Fail))
                            .unwrap()
                            .id,
                    );
                    // A failing write in the middle of others' groups.
                    let missing = TaskId::new();
                    assert!(matches!(
                        store.request_cancel(missing, "x"),
                        Err(StoreError::NotFound(_))
                    ));
                }
                ids
            })
        })
        .collect();
    let ids: Vec<TaskId> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(ids.len(), 400);
    for id in &ids {
        let events = store.events(*id, 0, 10).unwrap();
        assert_eq!(events.len(), 1, "one `queued` event per task");
    }
    let all = store
        .list(&TaskFilter {
            limit: Some(1000),
            ..TaskFilter::default()
        })
        .unwrap();
    assert_eq!(all.len(), 400);
    let stats = store.stats();
    assert_eq!(stats.writes, 800);
    assert!(stats.commits <= stats.writes);
}

#[test]
fn survives_reopen() {
    let (dir, store) = fresh();
    let t = store.create(spec("a", ResumePolicy::Restart)).unwrap();
    let c = store
        .claim("w1", std::time::Duration::from_secs(30))
        .unwrap()
        .unwrap();
    store.save_checkpoint(&c, "k", b"v").unwrap();
    drop(store);
    let store = SqliteStore::open_dir(dir.path()).unwrap();
    assert_eq!(store.get(t.id).unwrap().state, TaskState::Running);
    assert_eq!(store.checkpoints(t.id).unwrap()["k"], b"v");
    assert_eq!(store.schema_version().unwrap(), 5);
}

#[test]
fn migrates_a_version_1_database() {
    // A database as skillbox wrote it before the outbox (migration 1 only),
    // holding a task spawned with `state-changes`.
    let (dir, store) = fresh();
    let t = store
        .create(TaskSpec {
            notify: NotifyMode::StateChanges,
            ..spec("old", ResumePolicy::Restart)
        })
        .unwrap();
    drop(store);
    let db = dir.path().join("tasks.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "DROP TABLE outbox_attempts; DROP TABLE outbox;
         ALTER TABLE tasks DROP COLUMN notify; ALTER TABLE tasks DROP COLUMN notify_to;
         DELETE FROM schema_migrations WHERE version = 2;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open_dir(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), 5);
    assert_eq!(
        store.get(t.id).unwrap().spec.notify,
        NotifyMode::StateChanges
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (notify, to): (String, String) = conn
        .query_row(
            "SELECT notify, notify_to FROM tasks WHERE id = ?1",
            [t.id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((notify.as_str(), to.as_str()), ("state-changes", "[]"));
    // It had no sinks then, so it notifies nobody now.
    let c = store
        .claim("w", std::time::Duration::from_secs(30))
        .unwrap()
        .unwrap();
    store
        .finish(&c, TaskState::Succeeded, serde_json::json!({}), "done")
        .unwrap();
    assert!(store.deliveries(t.id).unwrap().is_empty());
}

#[test]
fn refuses_edited_or_newer_schemas() {
    let (dir, store) = fresh();
    drop(store);
    let db = dir.path().join("tasks.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE schema_migrations SET checksum = 'x' WHERE version = 1",
        [],
    )
    .unwrap();
    drop(conn);
    let e = SqliteStore::open(&db).err().unwrap().to_string();
    assert!(e.contains("must never be edited"), "{e}");

    let (dir, store) = fresh();
    drop(store);
    let db = dir.path().join("tasks.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations VALUES (99, 'future', 'x', 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let e = SqliteStore::open(&db).err().unwrap().to_string();
    assert!(e.contains("newer version"), "{e}");
}

#[test]
fn events_are_bounded_with_one_marker() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_dir(dir.path())
        .unwrap()
        .with_max_events(5);
    store.create(spec("a", ResumePolicy::Restart)).unwrap();
    let c = store
        .claim("w1", std::time::Duration::from_secs(30))
        .unwrap()
        .unwrap();
    for i in 0..20 {
        store
            .append(
                &c,
                TaskEvent::Log {
                    level: crate::events::Level::Info,
                    message: format!("line {i}"),
                },
            )
            .unwrap();
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

#[test]
fn unusable_data_dirs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let e = SqliteStore::open_dir(&file).err().unwrap().to_string();
    assert!(e.contains("cannot create data dir"), "{e}");
    let e = SqliteStore::open(&dir.path().join("missing/sub/tasks.db"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("cannot open"), "{e}");
}

/// SQLite claims a spawned task in the same transaction when nothing older
/// waits (the optional part of `create_and_claim`).
#[test]
fn create_and_claim_claims_on_an_empty_queue() {
    let (_dir, store) = fresh();
    let lease = std::time::Duration::from_secs(30);
    let before = store.stats();
    let (t, claim) = store
        .create_and_claim(spec("a", ResumePolicy::Fail), "w1", lease)
        .unwrap();
    assert_eq!(claim.unwrap().task.id, t.id);
    assert_eq!(store.stats().commits - before.commits, 1, "one commit");
}

/// A write that panics fails alone; the writer keeps serving.
#[test]
fn a_panicking_write_fails_alone() {
    let (_dir, store) = fresh();
    let e = store
        .write(|tx| -> Result<(), StoreError> {
            tx.execute("UPDATE tasks SET label = 'x'", []).unwrap();
            panic!("a bug in a write");
        })
        .unwrap_err();
    assert!(e.to_string().contains("did not complete"), "{e}");
    let t = store.create(spec("after", ResumePolicy::Fail)).unwrap();
    assert_eq!(
        store.get(t.id).unwrap().spec.label.as_deref(),
        Some("after")
    );
}
