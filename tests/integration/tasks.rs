//! Background tasks on a host with a real SQLite store: spawn, wait,
//! events, checkpoints and resume, cancel, timeouts, concurrency, refusals.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use skillbox::policy::{Access, FsGrant};
use skillbox::prelude::*;
use skillbox::store::{CleanupMode, SqliteStore, TaskEvent, TaskState, TaskStore};
use skillbox::tasks::{SpawnRequest, TaskOptions, TaskService};

use crate::harness::*;

pub fn options() -> TaskOptions {
    TaskOptions {
        concurrency: 4,
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_millis(100),
        poll: Duration::from_millis(100),
        flush: Duration::from_millis(20),
        scratch: None,
        relay: skillbox::relay::Relay::new(),
        ..TaskOptions::default()
    }
}

pub struct Worker {
    pub tasks: Arc<TaskService>,
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<Result<(), skillbox::Error>>,
}

impl Worker {
    pub fn start(store: Arc<dyn TaskStore>, options: TaskOptions) -> Worker {
        let host = Arc::new(
            Host::new(EngineOptions {
                cache_dir: Some(
                    std::env::temp_dir()
                        .join(format!("skillbox-test-cache-{}", std::process::id())),
                ),
                max_instances: 16,
                ..EngineOptions::default()
            })
            .unwrap(),
        );
        let tasks = Arc::new(TaskService::new(host, store, options));
        let (stop, rx) = tokio::sync::watch::channel(false);
        let handle = tokio::spawn(tasks.clone().work(rx));
        Worker {
            tasks,
            stop,
            handle,
        }
    }

    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        self.handle.await.unwrap().unwrap();
    }
}

pub fn store() -> (tempfile::TempDir, Arc<dyn TaskStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_dir(dir.path()).unwrap();
    (dir, Arc::new(store))
}

fn outcome_text(task: &skillbox::store::Task) -> String {
    task.outcome.as_ref().unwrap()["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn spawn_returns_at_once_and_the_task_succeeds() {
    let (_d, store) = store();
    let w = Worker::start(store.clone(), options());
    let skill = skill_dir("hello", "");
    let id = w
        .tasks
        .spawn(SpawnRequest {
            label: Some("greeting".into()),
            parent_session: Some("agent:main".into()),
            ..SpawnRequest::new(skill.path(), r#"{"name": "task"}"#)
        })
        .unwrap()
        .id;
    let task = w.tasks.wait(id).await.unwrap();
    assert_eq!(task.state, TaskState::Succeeded, "{:?}", task.outcome);
    assert!(outcome_text(&task).contains("Hello, task"));
    assert_eq!(task.attempt, 1);
    assert_eq!(task.spec.label.as_deref(), Some("greeting"));

    let events = w.tasks.next_events(id, 0).await.unwrap();
    let states: Vec<TaskState> = events
        .iter()
        .filter_map(|e| match &e.event {
            TaskEvent::State { to, .. } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        vec![TaskState::Queued, TaskState::Running, TaskState::Succeeded]
    );
    assert!(
        events.iter().any(
            |e| matches!(&e.event, TaskEvent::Log { message, .. } if message.contains("task"))
        )
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e.event, TaskEvent::Progress { .. }))
    );
    assert!(
        w.tasks
            .next_events(id, events.last().unwrap().seq)
            .await
            .unwrap()
            .is_empty(),
        "all read"
    );
    w.stop().await;
}

/// A command that fails keeps what it printed in its task's events (its
/// stdout is its summary only when it succeeds).
#[tokio::test]
async fn a_failed_command_keeps_its_output_in_the_logs() {
    let (_d, store) = store();
    let w = Worker::start(store.clone(), options());
    let id = w
        .tasks
        .spawn(SpawnRequest {
            allow_unpinned: true,
            ..SpawnRequest::new(guest("wasi-command"), r#"{"args": ["exit", "7"]}"#)
        })
        .unwrap()
        .id;
    let task = w.tasks.wait(id).await.unwrap();
    assert_eq!(task.state, TaskState::Failed, "{:?}", task.outcome);
    assert_eq!(task.outcome.as_ref().unwrap()["data"]["exit_code"], 7);
    let events = w.tasks.next_events(id, 0).await.unwrap();
    assert!(
        events.iter().any(|e| matches!(&e.event,
            TaskEvent::Output { stream, text } if stream == "stdout"
                && text == "hello from a wasi command exit 7\n")),
        "{events:?}"
    );
    w.stop().await;
}

#[tokio::test]
async fn spawn_refuses_what_would_fail() {
    let (_d, store) = store();
    let w = Worker::start(store.clone(), options());
    let report = real_skill("disk-report");
    let e = w
        .tasks
        .spawn(SpawnRequest::new(report.path(), "{}"))
        .unwrap_err();
    assert!(matches!(e, skillbox::Error::NotGranted(_)), "{e}");
    let hello = skill_dir("hello", "");
    let e = w
        .tasks
        .spawn(SpawnRequest::new(hello.path(), "{nope"))
        .unwrap_err();
    assert!(matches!(e, skillbox::Error::Input(_)), "{e}");
    let e = w
        .tasks
        .spawn(SpawnRequest::new(guest("unknown-import"), "null"))
        .unwrap_err();
    assert!(e.to_string().contains("test:elsewhere/backdoor"), "{e}");
    assert!(
        store.list(&Default::default()).unwrap().is_empty(),
        "nothing was stored"
    );
    w.stop().await;
}

/// Each task gets a private scratch directory at /scratch: kept with
/// `cleanup = keep`, deleted at the end with `delete`; refused when the
/// host keeps none, and a grant cannot take its place.
#[tokio::test]
async fn scratch_directories_are_private_kept_or_deleted() {
    let (_d, first) = store();
    let root = tempfile::tempdir().unwrap();
    let w = Worker::start(
        first,
        TaskOptions {
            scratch: Some(root.path().join("scratch")),
            ..options()
        },
    );
    let hostile = skill_dir("hostile", "");
    let write = json!({"case": "write", "path": "/scratch/note.txt", "content": "kept"});
    let spawn = |cleanup| {
        w.tasks.spawn(SpawnRequest {
            cleanup,
            ..SpawnRequest::new(hostile.path(), write.to_string())
        })
    };
    let keep = spawn(CleanupMode::Keep).unwrap().id;
    let delete = spawn(CleanupMode::Delete).unwrap().id;
    for id in [keep, delete] {
        let t = w.tasks.wait(id).await.unwrap();
        assert_eq!(t.state, TaskState::Succeeded, "{:?}", t.outcome);
    }
    let kept = w.tasks.task(keep).unwrap().scratch_dir().unwrap();
    assert_eq!(kept, root.path().join("scratch").join(keep.to_string()));
    assert_eq!(
        std::fs::read_to_string(kept.join("note.txt")).unwrap(),
        "kept"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kept).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "private to the daemon's user");
    }
    let deleted = w.tasks.task(delete).unwrap().scratch_dir().unwrap();
    // The end is stored first (a crash before it resumes the task with its
    // directory intact), then the directory is deleted: a waiter may see
    // the end a moment before the deletion.
    for _ in 0..200 {
        if !deleted.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!deleted.exists(), "cleanup = delete removes it at the end");

    // A task sees only its own directory: the kept one is not reachable.
    let peek = w
        .tasks
        .spawn(SpawnRequest::new(
            hostile.path(),
            json!({"case": "read", "path": format!("/scratch/../{keep}/note.txt")}).to_string(),
        ))
        .unwrap()
        .id;
    let t = w.tasks.wait(peek).await.unwrap();
    assert_eq!(t.state, TaskState::Failed, "{:?}", t.outcome);

    // Pruning a finished task deletes its kept directory too.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(w.tasks.prune(Duration::ZERO).unwrap() >= 2);
    assert!(!kept.exists());

    // /scratch cannot be granted over (a bare component gets exactly the
    // operator's grants).
    let other = tempfile::tempdir().unwrap();
    let mut grants = Grants::default();
    grants.fs.push(FsGrant {
        host: other.path().to_owned(),
        guest: Some("/scratch".into()),
        access: Access::Read,
    });
    let e = w
        .tasks
        .spawn(SpawnRequest {
            grants,
            ..SpawnRequest::new(guest("hostile"), "{}")
        })
        .unwrap_err();
    assert!(e.to_string().contains("scratch directory"), "{e}");
    w.stop().await;

    // A host without scratch directories refuses `delete` rather than
    // ignore it, and gives tasks no /scratch.
    let (_d2, store2) = store();
    let w = Worker::start(store2, options());
    let e = w.tasks.spawn(SpawnRequest {
        cleanup: CleanupMode::Delete,
        ..SpawnRequest::new(hostile.path(), "{}")
    });
    assert!(matches!(e, Err(skillbox::Error::Input(_))), "{e:?}");
    let id = w
        .tasks
        .spawn(SpawnRequest::new(hostile.path(), write.to_string()))
        .unwrap()
        .id;
    let t = w.tasks.wait(id).await.unwrap();
    assert_eq!(t.state, TaskState::Failed, "no /scratch: {:?}", t.outcome);
    assert_eq!(t.scratch_dir(), None);
    w.stop().await;
}

/// The host dies after step 1 of 3 (its runtime is dropped mid-run); a new
/// host resumes the task from its checkpoint and does not repeat step 1.
#[test]
fn an_interrupted_task_resumes_from_its_checkpoints() {
    let (_d, store) = store();
    let work = tempfile::tempdir().unwrap();
    let skill = skill_dir("hostile", "[fs]\n\"/w\" = { access = \"read-write\" }\n");
    let grants = grants(&["--allow-write", &format!("{}:/w", work.path().display())]);
    let input = json!({"case": "steps", "journal": "/w/journal", "steps": 3, "pause_after": 1, "pause_ms": 600_000});

    let first = tokio::runtime::Runtime::new().unwrap();
    let (id, dead_owner) = first.block_on(async {
        let w = Worker::start(store.clone(), options());
        let id = w
            .tasks
            .spawn(SpawnRequest {
                grants: grants.clone(),
                ..SpawnRequest::new(skill.path(), input.to_string())
            })
            .unwrap()
            .id;
        // Wait until step 1 is checkpointed, then "die".
        while store.checkpoints(id).unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (id, w.tasks.owner_id().to_string())
    });
    first.shutdown_background();
    assert_eq!(
        store.get(id).unwrap().state,
        TaskState::Running,
        "left running by the dead host"
    );

    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        // A restarted host knows the old owner is gone and recovers at once.
        let interrupted = store
            .recover(skillbox::store::now_ms(), Some(&dead_owner))
            .unwrap();
        assert_eq!(interrupted, vec![id]);
        let w = Worker::start(store.clone(), options());
        let task = w.tasks.wait(id).await.unwrap();
        assert_eq!(task.state, TaskState::Succeeded, "{:?}", task.outcome);
        assert_eq!(task.attempt, 2);
        let data = &task.outcome.as_ref().unwrap()["data"];
        assert_eq!(data["skipped"], json!([1]));
        assert_eq!(data["done"], json!([2, 3]));
        w.stop().await;
    });
    let journal = std::fs::read_to_string(work.path().join("journal")).unwrap();
    assert_eq!(journal, "step 1\nstep 2\nstep 3\n", "no step ran twice");
}

#[tokio::test]
async fn cancel_and_timeout_stop_running_tasks() {
    let (_d, store) = store();
    let w = Worker::start(store.clone(), options());
    let skill = skill_dir("hostile", "");
    let id = w
        .tasks
        .spawn(SpawnRequest::new(
            skill.path(),
            r#"{"case": "sleep", "ms": 600000}"#,
        ))
        .unwrap()
        .id;
    while w.tasks.task(id).unwrap().state != TaskState::Running {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.tasks.cancel(id, "no longer needed").unwrap();
    let t = w.tasks.wait(id).await.unwrap();
    assert_eq!(t.state, TaskState::Cancelled);

    let id = w
        .tasks
        .spawn(SpawnRequest {
            grants: grants(&["--timeout", "300ms"]),
            ..SpawnRequest::new(skill.path(), r#"{"case": "loop"}"#)
        })
        .unwrap()
        .id;
    let t = w.tasks.wait(id).await.unwrap();
    assert_eq!(t.state, TaskState::TimedOut);

    w.stop().await;

    // Cancelling a queued task (no worker runs here) means it never runs.
    let host = Arc::new(Host::new(EngineOptions::default()).unwrap());
    let tasks = TaskService::new(host, store.clone(), options());
    let id = tasks
        .spawn(SpawnRequest::new(skill.path(), r#"{"case": "loop"}"#))
        .unwrap()
        .id;
    let t = tasks.cancel(id, "changed my mind").unwrap();
    assert_eq!(t.state, TaskState::Cancelled);
    assert_eq!(t.attempt, 0, "never started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_all_finish_once_within_the_concurrency_limit() {
    let (_d, store) = store();
    let w = Worker::start(
        store.clone(),
        TaskOptions {
            concurrency: 3,
            ..options()
        },
    );
    let skill = skill_dir("hello", "");
    let ids: Vec<_> = (0..1000)
        .map(|i| {
            w.tasks
                .spawn(SpawnRequest::new(
                    skill.path(),
                    format!(r#"{{"name": "n{i}"}}"#),
                ))
                .unwrap()
                .id
        })
        .collect();
    let mut spans = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let t = w.tasks.wait(*id).await.unwrap();
        assert_eq!(t.state, TaskState::Succeeded);
        assert_eq!(t.attempt, 1, "ran once");
        assert!(outcome_text(&t).contains(&format!("n{i}")));
        spans.push((t.started_ms.unwrap(), t.ended_ms.unwrap()));
    }
    w.stop().await;
    // Never more than the limit at once: sweep over start (+1) and end (-1)
    // marks; at equal times, ends come first.
    let mut marks: Vec<(i64, i32)> = spans.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    marks.sort_by_key(|&(t, d)| (t, d));
    let (mut now, mut most) = (0, 0);
    for (_, d) in marks {
        now += d;
        most = most.max(now);
    }
    assert!(most <= 3, "{most} tasks ran at once; the limit is 3");
}

/// Cancelling a task while it waits on an exec'd program kills the program
/// (and what it started), then records the task as cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_timeout_kill_the_programs_of_a_running_task() {
    let (_d, store) = store();
    let w = Worker::start(store.clone(), options());
    let skill = skill_dir(
        "hostile",
        "[fs]\n\"/w\" = { access = \"read-write\" }\n[exec]\nallow = [ { program = \"sh\", args = [\"-c\", \"*\"] } ]\n",
    );
    let sleep = format!("{}", 500_000 + std::process::id() % 100_000);
    let marker = format!("sleep {sleep}");
    let input = json!({"case": "exec", "program": "sh", "args": ["-c", format!("sleep {sleep} & touch started; wait")], "cwd": "/w", "timeout_ms": 600000});
    // (extra grant flags, whether to cancel, the end expected)
    let cases: [(&[&str], bool, TaskState); 2] = [
        (&[], true, TaskState::Cancelled),
        (&["--timeout", "1s"], false, TaskState::TimedOut),
    ];
    for (extra, cancel, expected) in cases {
        let work = tempfile::tempdir().unwrap();
        let write = format!("{}:/w", work.path().display());
        let mut flags = vec!["--allow-exec", "sh -c *", "--allow-write", &write];
        flags.extend_from_slice(extra);
        let id = w
            .tasks
            .spawn(SpawnRequest {
                grants: grants(&flags),
                ..SpawnRequest::new(skill.path(), input.to_string())
            })
            .unwrap()
            .id;
        while !work.path().join("started").exists() || running_with(&marker).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if cancel {
            w.tasks.cancel(id, "stop").unwrap();
        }
        let t = w.tasks.wait(id).await.unwrap();
        assert_eq!(t.state, expected, "{:?}", t.outcome);
        assert!(
            wait_none_with(&marker, Duration::from_secs(5)),
            "the program outlived the task ({expected})"
        );
    }
    w.stop().await;
}
