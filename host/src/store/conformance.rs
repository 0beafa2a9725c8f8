//! The store conformance suite: every backend must pass it unchanged.
//! `store` is a fresh, empty store for each check.

use std::time::Duration;

use super::*;
use crate::policy::{EffectivePolicy, Grants};

pub(crate) fn spec(label: &str, resume: ResumePolicy) -> TaskSpec {
    let (policy, _) = EffectivePolicy::compute(None, &Grants::default());
    TaskSpec {
        skill: "skills/hello".into(),
        skill_name: "hello".into(),
        digest: "ab".repeat(32),
        input: "{}".into(),
        policy,
        label: Some(label.into()),
        parent_session: Some(format!("session-{label}")),
        parent_route: None,
        timeout: Duration::from_secs(60),
        cleanup: CleanupMode::Keep,
        notify: NotifyMode::DoneOnly,
        notify_to: Vec::new(),
        resume,
        scratch: None,
        schedule: None,
        trace: None,
    }
}

const LEASE: Duration = Duration::from_secs(30);

fn states(store: &dyn TaskStore, id: TaskId) -> Vec<TaskState> {
    store
        .events(id, 0, 1000)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            TaskEvent::State { to, .. } => Some(to),
            _ => None,
        })
        .collect()
}

/// Runs every check against stores made by `make`.
pub(crate) fn run_all(make: &dyn Fn() -> Box<dyn TaskStore>) {
    create_get_list(&*make());
    claim_order_and_leases(&*make());
    claim_many_takes_oldest_once(&*make());
    create_and_claim_never_jumps_the_queue(&*make());
    fencing_rejects_stale_owners(&*make());
    events_page_in_order(&*make());
    checkpoints_save_and_overwrite(&*make());
    cancel_by_state(&*make());
    recover_resumes_or_fails_by_policy(&*make());
    finish_rules_and_prune(&*make());
    outbox_follows_the_notify_mode(&*make());
    deliveries_go_in_order_and_settle(&*make());
    an_end_hands_its_notifications_to_its_host(&*make());
    an_end_claims_the_next_task_resumed_ones_first(&*make());
    approvals_wait_decide_and_survive_a_resume(&*make());
    approval_decisions_refuse_bad_input_and_change_nothing(&*make());
    audit_chains_calls_and_decisions_and_outlives_pruning(&*make());
    schedules_fire_each_slot_once_by_their_policies(&*make());
    schedules_overlap_pause_run_now_and_remove(&*make());
    schedules_refuse_bad_input_and_change_nothing(&*make());
}

fn create_get_list(store: &dyn TaskStore) {
    let a = store.create(spec("a", ResumePolicy::Restart)).unwrap();
    let route = ParentRoute {
        channel: "telegram".into(),
        to: "chat-b".into(),
        account_id: Some("ops".into()),
    };
    let b = store
        .create(TaskSpec {
            parent_route: Some(route.clone()),
            ..spec("b", ResumePolicy::Restart)
        })
        .unwrap();
    assert_eq!(a.state, TaskState::Queued);
    assert_eq!(a.attempt, 0);
    assert_eq!(store.get(a.id).unwrap(), a);
    assert_eq!(store.get(b.id).unwrap().spec.parent_route, Some(route));
    assert!(matches!(
        store.get(TaskId::new()),
        Err(StoreError::NotFound(_))
    ));
    let all = store.list(&TaskFilter::default()).unwrap();
    assert_eq!(
        all.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![b.id, a.id],
        "newest first"
    );
    let only_a = store
        .list(&TaskFilter {
            label: Some("a".into()),
            ..TaskFilter::default()
        })
        .unwrap();
    assert_eq!(only_a.len(), 1);
    let by_parent = store
        .list(&TaskFilter {
            parent_session: Some("session-b".into()),
            ..TaskFilter::default()
        })
        .unwrap();
    assert_eq!(by_parent[0].id, b.id);
    let running = store
        .list(&TaskFilter {
            state: Some(TaskState::Running),
            ..TaskFilter::default()
        })
        .unwrap();
    assert!(running.is_empty());
    // By the start of an id, in either case.
    let by_prefix = |p: String| {
        store
            .list(&TaskFilter {
                id_prefix: Some(p),
                ..TaskFilter::default()
            })
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect::<Vec<_>>()
    };
    let (a_id, b_id) = (a.id.to_string(), b.id.to_string());
    let shared = a_id
        .chars()
        .zip(b_id.chars())
        .take_while(|(x, y)| x == y)
        .count();
    assert_eq!(by_prefix(a_id[..shared].to_string()), vec![b.id, a.id]);
    assert_eq!(by_prefix(a_id[..=shared].to_ascii_lowercase()), vec![a.id]);
    assert_eq!(by_prefix(format!("{a_id}0")), vec![]);
    assert_eq!(states(store, a.id), vec![TaskState::Queued]);
}

fn claim_order_and_leases(store: &dyn TaskStore) {
    assert!(store.claim("w1", LEASE).unwrap().is_none());
    let a = store.create(spec("a", ResumePolicy::Restart)).unwrap();
    let b = store.create(spec("b", ResumePolicy::Restart)).unwrap();
    let c1 = store.claim("w1", LEASE).unwrap().unwrap();
    assert_eq!(c1.task.id, a.id, "oldest first");
    assert_eq!(c1.task.state, TaskState::Running);
    assert_eq!((c1.task.attempt, c1.lease), (1, 1));
    assert_eq!(c1.task.owner.as_deref(), Some("w1"));
    let c2 = store.claim("w2", LEASE).unwrap().unwrap();
    assert_eq!(c2.task.id, b.id);
    assert!(
        store.claim("w3", LEASE).unwrap().is_none(),
        "each task is claimed once"
    );
    store.heartbeat(&c1, LEASE).unwrap();
}

fn claim_many_takes_oldest_once(store: &dyn TaskStore) {
    assert!(store.claim_many("w1", 8, LEASE).unwrap().is_empty());
    let ids: Vec<TaskId> = (0..5)
        .map(|i| {
            store
                .create(spec(&format!("t{i}"), ResumePolicy::Restart))
                .unwrap()
                .id
        })
        .collect();
    let first = store.claim_many("w1", 3, LEASE).unwrap();
    let got: Vec<TaskId> = first.iter().map(|c| c.task.id).collect();
    assert_eq!(got, ids[..3], "the three oldest, in order");
    assert!(
        first
            .iter()
            .all(|c| c.task.state == TaskState::Running && c.lease == 1)
    );
    let rest = store.claim_many("w2", 8, LEASE).unwrap();
    let got: Vec<TaskId> = rest.iter().map(|c| c.task.id).collect();
    assert_eq!(got, ids[3..], "only what is left, each task once");
    for c in first.iter().chain(&rest) {
        store.heartbeat(c, LEASE).unwrap();
    }
}

fn create_and_claim_never_jumps_the_queue(store: &dyn TaskStore) {
    let (t, claim) = store
        .create_and_claim(spec("a", ResumePolicy::Restart), "w1", LEASE)
        .unwrap();
    // A backend may leave it queued; one that claims it does it fully.
    if let Some(c) = claim {
        assert_eq!(c.task.id, t.id);
        assert_eq!(
            (c.task.state, c.task.attempt, c.lease),
            (TaskState::Running, 1, 1)
        );
        assert_eq!(
            states(store, t.id),
            vec![TaskState::Queued, TaskState::Running]
        );
        store.heartbeat(&c, LEASE).unwrap();
        assert!(store.claim("w2", LEASE).unwrap().is_none(), "claimed once");
    }
    let older = store.create(spec("older", ResumePolicy::Restart)).unwrap();
    let (newer, claim) = store
        .create_and_claim(spec("newer", ResumePolicy::Restart), "w1", LEASE)
        .unwrap();
    assert!(claim.is_none(), "an older task waits: the new one queues");
    assert_eq!(store.get(newer.id).unwrap().state, TaskState::Queued);
    assert_eq!(store.claim("w1", LEASE).unwrap().unwrap().task.id, older.id);
}

fn fencing_rejects_stale_owners(store: &dyn TaskStore) {
    store.create(spec("a", ResumePolicy::Restart)).unwrap();
    let old = store.claim("w1", Duration::ZERO).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let interrupted = store.recover(now_ms(), None).unwrap();
    assert_eq!(interrupted, vec![old.task.id]);
    let new = store.claim("w2", LEASE).unwrap().unwrap();
    assert_eq!(new.task.id, old.task.id);
    assert_eq!((new.task.attempt, new.lease), (2, 2));
    for result in [
        store.heartbeat(&old, LEASE).map(|_| ()),
        store
            .append(
                &old,
                TaskEvent::Log {
                    level: crate::events::Level::Info,
                    message: "late".into(),
                },
            )
            .map(|_| ()),
        store.save_checkpoint(&old, "k", b"late").map(|_| ()),
        store.append_many(
            &old,
            &[TaskEvent::Truncated {
                what: "late".into(),
            }],
        ),
        store
            .finish(&old, TaskState::Succeeded, serde_json::json!({}), "late")
            .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(StoreError::LeaseLost(_))),
            "{result:?}"
        );
    }
    assert!(store.checkpoints(old.task.id).unwrap().is_empty());
    store
        .append(
            &new,
            TaskEvent::Log {
                level: crate::events::Level::Info,
                message: "mine".into(),
            },
        )
        .unwrap();
    assert_eq!(
        states(store, new.task.id),
        vec![
            TaskState::Queued,
            TaskState::Running,
            TaskState::Interrupted,
            TaskState::Running
        ]
    );
    // Each claim's event says who took the task, and a resumed attempt's
    // which attempt it is; seqs are dense whichever side stored them.
    let events = store.events(new.task.id, 0, 1000).unwrap();
    let said: Vec<(u64, &str)> = events
        .iter()
        .filter_map(|e| match &e.event {
            TaskEvent::State { reason, .. } => Some((e.seq, reason.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        said,
        [
            (1, "spawned"),
            (2, "started by w1"),
            (3, "host w1 stopped while running it"),
            (4, "resumed by w2 (attempt 2)"),
        ]
    );
    assert_eq!(events.last().map(|e| e.seq), Some(5), "the log line");
}

fn events_page_in_order(store: &dyn TaskStore) {
    store.create(spec("a", ResumePolicy::Restart)).unwrap();
    let c = store.claim("w1", LEASE).unwrap().unwrap();
    for i in 0..10 {
        let seq = store
            .append(
                &c,
                TaskEvent::Progress {
                    fraction: Some(i as f32 / 10.0),
                    message: format!("step {i}"),
                },
            )
            .unwrap();
        assert!(seq > 0);
    }
    let all = store.events(c.task.id, 0, 1000).unwrap();
    assert!(
        all.windows(2).all(|w| w[0].seq + 1 == w[1].seq),
        "dense, ordered seqs"
    );
    let batch: Vec<TaskEvent> = (0..3)
        .map(|i| TaskEvent::Log {
            level: crate::events::Level::Info,
            message: format!("batched {i}"),
        })
        .collect();
    store.append_many(&c, &batch).unwrap();
    let tail = store
        .events(c.task.id, all.last().unwrap().seq, 10)
        .unwrap();
    assert_eq!(
        tail.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        batch,
        "in order"
    );
    let page = store.events(c.task.id, all[3].seq, 2).unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![all[4].seq, all[5].seq]
    );
    let t = store.get(c.task.id).unwrap();
    assert_eq!(t.progress_message.as_deref(), Some("step 9"));
    assert!((t.progress.unwrap() - 0.9).abs() < 1e-6);
    assert!(matches!(
        store.events(TaskId::new(), 0, 10),
        Err(StoreError::NotFound(_))
    ));
}

fn checkpoints_save_and_overwrite(store: &dyn TaskStore) {
    store.create(spec("a", ResumePolicy::Restart)).unwrap();
    let c = store.claim("w1", LEASE).unwrap().unwrap();
    store.save_checkpoint(&c, "backup", b"done").unwrap();
    store.save_checkpoint(&c, "build", b"v1").unwrap();
    store.save_checkpoint(&c, "build", b"v2").unwrap();
    let cps = store.checkpoints(c.task.id).unwrap();
    assert_eq!(cps.len(), 2);
    assert_eq!(cps["build"], b"v2");
    let kinds: Vec<&str> = store
        .events(c.task.id, 0, 100)
        .unwrap()
        .iter()
        .map(|e| e.event.kind())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "checkpoint").count(), 3);
}

fn cancel_by_state(store: &dyn TaskStore) {
    let queued = store.create(spec("q", ResumePolicy::Restart)).unwrap();
    let t = store.request_cancel(queued.id, "asked to").unwrap();
    assert_eq!(t.state, TaskState::Cancelled);
    assert!(t.ended_ms.is_some());
    assert!(
        store.claim("w1", LEASE).unwrap().is_none(),
        "a cancelled task is never claimed"
    );

    store.create(spec("r", ResumePolicy::Restart)).unwrap();
    let c = store.claim("w1", LEASE).unwrap().unwrap();
    let t = store.request_cancel(c.task.id, "asked to").unwrap();
    assert_eq!(t.state, TaskState::Running, "the owner stops it");
    assert!(t.cancel_requested);
    let t = store
        .finish(
            &c,
            TaskState::Cancelled,
            serde_json::json!({"outcome": "cancelled"}),
            "cancelled",
        )
        .unwrap();
    assert_eq!(t.state, TaskState::Cancelled);
    let again = store.request_cancel(t.id, "again").unwrap();
    assert_eq!(
        again.state,
        TaskState::Cancelled,
        "terminal tasks stay as they are"
    );
    assert!(matches!(
        store.request_cancel(TaskId::new(), "x"),
        Err(StoreError::NotFound(_))
    ));
}

fn recover_resumes_or_fails_by_policy(store: &dyn TaskStore) {
    let restartable = store
        .create(spec("restart", ResumePolicy::Restart))
        .unwrap();
    let checkpointed = store
        .create(spec("fail-but-checkpointed", ResumePolicy::Fail))
        .unwrap();
    let unsafe_restart = store.create(spec("fail", ResumePolicy::Fail)).unwrap();
    let live = store.create(spec("live", ResumePolicy::Fail)).unwrap();
    let c1 = store.claim("dead", LEASE).unwrap().unwrap();
    let c2 = store.claim("dead", LEASE).unwrap().unwrap();
    store.save_checkpoint(&c2, "step", b"1").unwrap();
    let _c3 = store.claim("dead", LEASE).unwrap().unwrap();
    let c4 = store.claim("alive", LEASE).unwrap().unwrap();
    assert_eq!(
        [c1.task.id, c2.task.id, c4.task.id],
        [restartable.id, checkpointed.id, live.id]
    );

    // The dead host's tasks are interrupted at once, not after their lease.
    let mut got = store.recover(now_ms(), Some("dead")).unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![restartable.id, checkpointed.id, unsafe_restart.id]
    );
    assert_eq!(
        store.get(restartable.id).unwrap().state,
        TaskState::Interrupted
    );
    assert_eq!(
        store.get(checkpointed.id).unwrap().state,
        TaskState::Interrupted
    );
    let failed = store.get(unsafe_restart.id).unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    assert!(
        failed.outcome.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("not safe")
    );
    assert_eq!(
        store.get(live.id).unwrap().state,
        TaskState::Running,
        "other owners keep theirs"
    );

    let r1 = store.claim("new", LEASE).unwrap().unwrap();
    let r2 = store.claim("new", LEASE).unwrap().unwrap();
    assert_eq!((r1.task.id, r1.task.attempt), (restartable.id, 2));
    assert_eq!(r2.task.id, checkpointed.id);
    assert_eq!(
        store.checkpoints(r2.task.id).unwrap()["step"],
        b"1",
        "resumes with its checkpoints"
    );
    assert!(store.claim("new", LEASE).unwrap().is_none());
}

fn finish_rules_and_prune(store: &dyn TaskStore) {
    store.create(spec("a", ResumePolicy::Restart)).unwrap();
    let c = store.claim("w1", LEASE).unwrap().unwrap();
    assert!(matches!(
        store.finish(&c, TaskState::Running, serde_json::json!({}), "x"),
        Err(StoreError::Conflict(_))
    ));
    let t = store
        .finish(
            &c,
            TaskState::Succeeded,
            serde_json::json!({"outcome": "succeeded", "text": "ok"}),
            "done",
        )
        .unwrap();
    assert_eq!(t.state, TaskState::Succeeded);
    assert_eq!(t.outcome.unwrap()["text"], "ok");
    assert!(t.owner.is_none() && t.lease_until_ms.is_none());
    let keep = store.create(spec("b", ResumePolicy::Restart)).unwrap();
    // One task by id: only that one, and only once it ended.
    assert_eq!(store.prune(i64::MAX, Some(keep.id)).unwrap(), vec![]);
    assert_eq!(store.get(keep.id).unwrap().state, TaskState::Queued);
    assert_eq!(
        store.prune(t.ended_ms.unwrap() + 1, None).unwrap(),
        vec![(t.id, None)]
    );
    assert!(matches!(store.get(t.id), Err(StoreError::NotFound(_))));
    assert_eq!(
        store.get(keep.id).unwrap().state,
        TaskState::Queued,
        "unfinished tasks are never pruned"
    );
    let c = run_through(store, spec("c", ResumePolicy::Restart));
    let d = run_through(store, spec("d", ResumePolicy::Restart));
    assert_eq!(store.prune(i64::MAX, Some(c)).unwrap(), vec![(c, None)]);
    assert!(matches!(store.get(c), Err(StoreError::NotFound(_))));
    assert_eq!(store.get(d).unwrap().state, TaskState::Succeeded);
}

fn notifying(label: &str, mode: NotifyMode, sinks: &[&str]) -> TaskSpec {
    TaskSpec {
        notify: mode,
        notify_to: sinks.iter().map(|s| s.to_string()).collect(),
        ..spec(label, ResumePolicy::Restart)
    }
}

/// Runs a task through claim and a successful end.
fn run_through(store: &dyn TaskStore, spec: TaskSpec) -> TaskId {
    let task = store.create(spec).unwrap();
    let claim = loop {
        let c = store.claim("h", LEASE).unwrap().expect("queued");
        if c.task.id == task.id {
            break c;
        }
    };
    store
        .finish(
            &claim,
            TaskState::Succeeded,
            serde_json::json!({"outcome": "succeeded"}),
            "done",
        )
        .unwrap();
    task.id
}

fn outbox_follows_the_notify_mode(store: &dyn TaskStore) {
    use super::outbox::DeliveryState;
    let done = run_through(store, notifying("d", NotifyMode::DoneOnly, &["a", "b"]));
    let all = run_through(store, notifying("s", NotifyMode::StateChanges, &["a"]));
    let silent = run_through(store, notifying("q", NotifyMode::Silent, &["a"]));
    let nowhere = run_through(store, notifying("n", NotifyMode::DoneOnly, &[]));

    let d = store.deliveries(done).unwrap();
    assert_eq!(
        d.iter()
            .map(|d| (d.sink.as_str(), d.to))
            .collect::<Vec<_>>(),
        [("a", TaskState::Succeeded), ("b", TaskState::Succeeded)],
        "done-only: the final state, once per sink"
    );
    assert!(
        d.iter()
            .all(|d| d.state == DeliveryState::Pending && d.attempts == 0)
    );
    assert_eq!(d[0].from, Some(TaskState::Running));
    // The row points at the stored state event.
    let event = store.events(done, d[0].seq - 1, 1).unwrap();
    assert!(matches!(
        event[0].event,
        TaskEvent::State {
            to: TaskState::Succeeded,
            ..
        }
    ));
    assert_ne!(
        d[0].idempotency_key(),
        store.deliveries(all).unwrap()[0].idempotency_key()
    );

    let s = store.deliveries(all).unwrap();
    assert_eq!(
        s.iter().map(|d| (d.from, d.to)).collect::<Vec<_>>(),
        [
            (Some(TaskState::Queued), TaskState::Running),
            (Some(TaskState::Running), TaskState::Succeeded)
        ],
        "state-changes: every change after the creation, in order"
    );
    assert!(s[0].seq < s[1].seq);
    assert!(store.deliveries(silent).unwrap().is_empty(), "silent");
    let quiet = run_through(store, notifying("f", NotifyMode::FailuresOnly, &["a"]));
    assert!(
        store.deliveries(quiet).unwrap().is_empty(),
        "failures-only: a success is not announced"
    );
    assert!(store.deliveries(nowhere).unwrap().is_empty(), "no sinks");
    // A cancel of a queued task and a failure by recovery are state
    // changes too.
    let c = store
        .create(notifying("c", NotifyMode::DoneOnly, &["a"]))
        .unwrap();
    store.request_cancel(c.id, "no").unwrap();
    assert_eq!(store.deliveries(c.id).unwrap()[0].to, TaskState::Cancelled);
    let f = store
        .create(notifying("fc", NotifyMode::FailuresOnly, &["a"]))
        .unwrap();
    store.request_cancel(f.id, "no").unwrap();
    assert_eq!(
        store
            .deliveries(f.id)
            .unwrap()
            .iter()
            .map(|d| d.to)
            .collect::<Vec<_>>(),
        [TaskState::Cancelled],
        "failures-only: a cancel is announced"
    );
    assert!(matches!(
        store.deliveries(TaskId::new()),
        Err(StoreError::NotFound(_))
    ));
}

fn deliveries_go_in_order_and_settle(store: &dyn TaskStore) {
    use super::outbox::{Attempt, DeliveryState, Verdict};
    let id = run_through(store, notifying("o", NotifyMode::StateChanges, &["a"]));
    let attempt = |ok: bool, status: u16| Attempt {
        at_ms: now_ms(),
        duration_ms: 3,
        status: Some(status),
        detail: (!ok).then(|| format!("HTTP {status}")),
        ok,
    };
    assert!(
        store
            .next_delivery_ms()
            .unwrap()
            .is_some_and(|t| t <= now_ms())
    );
    // Only the first of the task's changes can go; and only once.
    let first = store.claim_deliveries("r1", 10, LEASE).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].to, TaskState::Running);
    assert!(
        store.claim_deliveries("r2", 10, LEASE).unwrap().is_empty(),
        "leased, and the second waits"
    );
    assert!(
        store.next_delivery_ms().unwrap().unwrap() > now_ms() + 20_000,
        "nothing claimable before the lease ends"
    );
    // A retry later keeps the second waiting too.
    let later = now_ms() + 60_000;
    store
        .record_attempt(first[0].id, &attempt(false, 500), Verdict::Retry(later))
        .unwrap();
    assert!(store.claim_deliveries("r1", 10, LEASE).unwrap().is_empty());
    assert_eq!(store.next_delivery_ms().unwrap(), Some(later));
    // Due again (here: a retry due already).
    store
        .record_attempt(
            first[0].id,
            &attempt(false, 503),
            Verdict::Retry(now_ms() - 1),
        )
        .unwrap();
    let again = store.claim_deliveries("r1", 10, LEASE).unwrap();
    assert_eq!(
        (again.len(), again[0].id, again[0].attempts),
        (1, first[0].id, 2)
    );
    assert_eq!(again[0].last_status, Some(503));
    store
        .record_attempt(first[0].id, &attempt(true, 200), Verdict::Delivered)
        .unwrap();
    // A late verdict from another owner does not undo a delivery.
    store
        .record_attempt(first[0].id, &attempt(false, 500), Verdict::Failed)
        .unwrap();
    let settled = &store.deliveries(id).unwrap()[0];
    assert_eq!(
        (settled.last_status, settled.last_error.as_deref()),
        (Some(200), None),
        "nor its last status"
    );
    let second = store.claim_deliveries("r1", 10, LEASE).unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].to, TaskState::Succeeded);
    store
        .record_attempt(second[0].id, &attempt(false, 401), Verdict::Failed)
        .unwrap();
    assert!(store.claim_deliveries("r1", 10, LEASE).unwrap().is_empty());
    assert_eq!(store.next_delivery_ms().unwrap(), None);

    let d = store.deliveries(id).unwrap();
    assert_eq!(d[0].state, DeliveryState::Delivered);
    assert!(d[0].delivered_ms.is_some());
    assert_eq!(
        d[0].history
            .iter()
            .map(|a| (a.status, a.ok))
            .collect::<Vec<_>>(),
        [
            (Some(500), false),
            (Some(503), false),
            (Some(200), true),
            (Some(500), false)
        ]
    );
    assert_eq!(d[1].state, DeliveryState::Failed);
    assert_eq!(d[1].last_error.as_deref(), Some("HTTP 401"));
    assert_eq!(d[1].attempts, 1);

    // Redeliver: failed ones only, due now, attempts kept.
    assert_eq!(store.redeliver(id).unwrap(), 1);
    assert_eq!(store.redeliver(id).unwrap(), 0);
    let re = store.claim_deliveries("r1", 10, LEASE).unwrap();
    assert_eq!((re.len(), re[0].id, re[0].attempts), (1, d[1].id, 1));
    assert!(re[0].window_ms >= d[1].window_ms);
    // A dead owner's leases are released by recovery.
    assert!(store.claim_deliveries("r2", 10, LEASE).unwrap().is_empty());
    store.recover(now_ms(), Some("r1")).unwrap();
    assert_eq!(store.claim_deliveries("r2", 10, LEASE).unwrap().len(), 1);
    assert!(matches!(
        store.redeliver(TaskId::new()),
        Err(StoreError::NotFound(_))
    ));

    // Pruning the task takes its notifications with it.
    store.prune(now_ms() + 1, None).unwrap();
    assert!(matches!(store.deliveries(id), Err(StoreError::NotFound(_))));
    assert_eq!(store.next_delivery_ms().unwrap(), None);
}

fn an_end_hands_its_notifications_to_its_host(store: &dyn TaskStore) {
    let end = |store: &dyn TaskStore, spec: TaskSpec| {
        let task = store.create(spec).unwrap();
        let claim = store.claim("h", LEASE).unwrap().unwrap();
        assert_eq!(claim.task.id, task.id);
        let ending = Ending {
            events: &[],
            state: TaskState::Succeeded,
            outcome: serde_json::json!({"outcome": "succeeded"}),
            reason: "done",
            deliver: Some(LEASE),
        };
        store.finish_and_claim(&claim, ending, None).unwrap()
    };
    let ended = end(store, notifying("h", NotifyMode::DoneOnly, &["a", "b"]));
    let handed: Vec<_> = ended
        .deliveries
        .iter()
        .map(|d| (d.sink.as_str(), d.to))
        .collect();
    assert_eq!(
        handed,
        [("a", TaskState::Succeeded), ("b", TaskState::Succeeded)]
    );
    assert_eq!(ended.task.state, TaskState::Succeeded);
    // Leased to the ending host: nobody else claims them.
    assert!(
        store
            .claim_deliveries("other", 10, LEASE)
            .unwrap()
            .is_empty()
    );

    // A change waits for the earlier ones of its sink: the host gets the
    // first still unsent, the rest follow it in order.
    let ended = end(store, notifying("s", NotifyMode::StateChanges, &["a"]));
    let handed: Vec<_> = ended.deliveries.iter().map(|d| d.to).collect();
    assert_eq!(handed, [TaskState::Running]);
    assert!(
        store
            .claim_deliveries("other", 10, LEASE)
            .unwrap()
            .is_empty()
    );
}

/// A task's end that claims its host's next task: the oldest runnable
/// one, an interrupted task before a newer queued one (resumed, with the
/// event that names its attempt), with its start's events, seqs and
/// notifications as a claim of its own makes them; and nothing claimed
/// when the queue is empty.
fn an_end_claims_the_next_task_resumed_ones_first(store: &dyn TaskStore) {
    let end = |claim: &Claim, events: &[TaskEvent]| {
        let ending = Ending {
            events,
            state: TaskState::Succeeded,
            outcome: serde_json::json!({"outcome": "succeeded"}),
            reason: "done",
            deliver: None,
        };
        store.finish_and_claim(claim, ending, Some(LEASE)).unwrap()
    };
    let said = |id: TaskId| -> Vec<(u64, String)> {
        let events = store.events(id, 0, 100).unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "dense");
        events
            .into_iter()
            .filter_map(|e| match e.event {
                TaskEvent::State { reason, .. } => Some((e.seq, reason)),
                _ => None,
            })
            .collect()
    };
    let first = store.create(spec("first", ResumePolicy::Restart)).unwrap();
    let lost = store.create(spec("lost", ResumePolicy::Restart)).unwrap();
    let c1 = store.claim("w1", LEASE).unwrap().unwrap();
    assert_eq!(c1.task.id, first.id);
    store.append_many(&c1, &[log("one"), log("two")]).unwrap();
    // A host dies holding `lost`; a newer task queues behind it.
    let dead = store.claim("dead", LEASE).unwrap().unwrap();
    assert_eq!(dead.task.id, lost.id);
    store.recover(now_ms(), Some("dead")).unwrap();
    let queued = store
        .create(notifying("queued", NotifyMode::StateChanges, &["hook"]))
        .unwrap();

    let ended = end(&c1, &[log("three")]);
    assert_eq!(ended.task.state, TaskState::Succeeded);
    assert!(ended.task.owner.is_none());
    let next = ended.next.expect("the interrupted task, resumed");
    assert_eq!(
        (next.task.id, next.task.attempt, next.task.state),
        (lost.id, 2, TaskState::Running)
    );
    assert_eq!(
        said(first.id),
        [
            (1, "spawned".into()),
            (2, "started by w1".into()),
            (6, "done".into())
        ]
    );
    assert_eq!(
        said(lost.id).last(),
        Some(&(4, "resumed by w1 (attempt 2)".to_string()))
    );

    // The resumed task's end takes the queued one, and queues its start's
    // notification.
    let ended = end(&next, &[]);
    let next = ended.next.expect("the queued task");
    assert_eq!((next.task.id, next.task.attempt), (queued.id, 1));
    assert_eq!(
        said(queued.id),
        [(1, "spawned".into()), (2, "started by w1".into())]
    );
    let noted: Vec<_> = store
        .deliveries(queued.id)
        .unwrap()
        .iter()
        .map(|d| (d.seq, d.sink.clone(), d.from, d.to, d.reason.clone()))
        .collect();
    assert_eq!(
        noted,
        [(
            2,
            "hook".to_string(),
            Some(TaskState::Queued),
            TaskState::Running,
            "started by w1".to_string()
        )]
    );
    // Its own end claims nothing: the queue is empty.
    let ended = end(&next, &[log("last")]);
    assert!(ended.next.is_none());
    assert_eq!(store.get(queued.id).unwrap().state, TaskState::Succeeded);
    assert_eq!(said(queued.id).last(), Some(&(4, "done".to_string())));
}

fn log(message: &str) -> TaskEvent {
    TaskEvent::Log {
        level: crate::events::Level::Info,
        message: message.into(),
    }
}

pub(super) fn asking(key: &str, rule: &str) -> Ask {
    Ask {
        key: key.into(),
        request: ApprovalRequest {
            capability: "exec".into(),
            detail: format!("systemctl restart {key}"),
            rule: rule.into(),
            reason: None,
        },
        timeout_ms: 60_000,
    }
}

pub(super) fn by(who: &str, approved: bool, always: bool) -> Decision {
    Decision {
        approved,
        always_for_task: always,
        by: who.into(),
        note: None,
        at_ms: 0,
    }
}

fn approvals_wait_decide_and_survive_a_resume(store: &dyn TaskStore) {
    let id = store.create(spec("ask", ResumePolicy::Restart)).unwrap().id;
    let claim = store.claim("h1", LEASE).unwrap().unwrap();
    let a = store
        .ask(&claim, asking("app#1", "--ask-exec 'systemctl restart *'"))
        .unwrap();
    assert!(a.is_pending() && a.id == 1 && a.attempt == 1);
    let t = store.get(id).unwrap();
    assert_eq!(t.state, TaskState::AwaitingApproval);
    assert_eq!(
        t.owner.as_deref(),
        Some("h1"),
        "the host keeps its lease while it waits"
    );
    // The state change announcing it is the approval's seq, and says how to answer.
    let events = store.events(id, 0, 100).unwrap();
    let asked = events.iter().find(|e| e.seq == a.seq).unwrap();
    let TaskEvent::State { to, reason, .. } = &asked.event else {
        panic!("{asked:?}")
    };
    assert_eq!(*to, TaskState::AwaitingApproval);
    assert!(
        reason.contains("systemctl restart app") && reason.contains("tasks approve"),
        "{reason}"
    );
    // The owner's writes still go through while it waits.
    store.heartbeat(&claim, LEASE).unwrap();
    store
        .append(
            &claim,
            TaskEvent::Log {
                level: crate::events::Level::Info,
                message: "waiting".into(),
            },
        )
        .unwrap();
    // Asking the same again returns the same request.
    assert_eq!(store.ask(&claim, asking("app#1", "r")).unwrap(), a);

    let d = store.decide(id, None, by("cli:alice", true, true)).unwrap();
    assert_eq!(
        d.decision.as_ref().map(|d| (d.approved, d.by.as_str())),
        Some((true, "cli:alice"))
    );
    assert!(d.decision.as_ref().unwrap().at_ms > 0);
    assert_eq!(store.get(id).unwrap().state, TaskState::Running);
    assert_eq!(store.approvals(id).unwrap(), vec![d.clone()]);

    // "Always for this task": a later request of the same rule is settled at once.
    let b = store
        .ask(&claim, asking("app#2", "--ask-exec 'systemctl restart *'"))
        .unwrap();
    let bd = b.decision.clone().expect("settled at once");
    assert!(bd.approved && bd.by.contains("#1"), "{bd:?}");
    assert_eq!(store.get(id).unwrap().state, TaskState::Running);
    // Another rule still asks.
    let c = store
        .ask(&claim, asking("db#1", "--ask-exec 'pg_ctl *'"))
        .unwrap();
    assert!(c.is_pending());

    // The host dies while the task waits; the request outlives it.
    assert_eq!(
        store
            .recover(now_ms() + LEASE.as_millis() as i64 + 1, None)
            .unwrap(),
        vec![id]
    );
    assert_eq!(store.get(id).unwrap().state, TaskState::Interrupted);
    // A decision while no host runs it is kept...
    store
        .decide(id, Some(c.id), by("api", false, false))
        .unwrap();
    assert_eq!(store.get(id).unwrap().state, TaskState::Interrupted);
    // ...and the resumed attempt, reaching the same calls, finds every answer.
    let again = store.claim("h2", LEASE).unwrap().unwrap();
    assert_eq!(again.task.attempt, 2);
    let c2 = store
        .ask(&again, asking("db#1", "--ask-exec 'pg_ctl *'"))
        .unwrap();
    assert_eq!(c2.decision.as_ref().map(|d| d.approved), Some(false));
    assert_eq!(store.ask(&again, asking("app#1", "x")).unwrap().id, 1);
    assert_eq!(store.get(id).unwrap().state, TaskState::Running);
    // A request still pending when the host died is waited for again.
    let e = store.ask(&again, asking("e#1", "--ask-exec 'e'")).unwrap();
    assert!(e.is_pending());
    store
        .recover(now_ms() + LEASE.as_millis() as i64 + 1, None)
        .unwrap();
    let third = store.claim("h3", LEASE).unwrap().unwrap();
    assert_eq!(store.get(id).unwrap().state, TaskState::Running);
    assert_eq!(
        store
            .ask(&third, asking("e#1", "--ask-exec 'e'"))
            .unwrap()
            .id,
        e.id
    );
    assert_eq!(store.get(id).unwrap().state, TaskState::AwaitingApproval);
    // A task that waits can still be cancelled and finished by its owner.
    store.request_cancel(id, "operator").unwrap();
    let ended = store
        .finish(
            &third,
            TaskState::Cancelled,
            serde_json::json!({"outcome": "cancelled"}),
            "cancelled",
        )
        .unwrap();
    assert_eq!(ended.state, TaskState::Cancelled);
    assert_eq!(
        states(store, id)
            .iter()
            .filter(|s| **s == TaskState::AwaitingApproval)
            .count(),
        4
    );
}

fn approval_decisions_refuse_bad_input_and_change_nothing(store: &dyn TaskStore) {
    let id = store.create(spec("bad", ResumePolicy::Restart)).unwrap().id;
    let conflict = |r: Result<Approval, StoreError>| match r {
        Err(StoreError::Conflict(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        store.decide(TaskId::new(), None, by("api", true, false)),
        Err(StoreError::NotFound(_))
    ));
    let m = conflict(store.decide(id, None, by("api", true, false)));
    assert!(
        m.contains("not awaiting approval") && m.contains("queued"),
        "{m}"
    );
    let claim = store.claim("h", LEASE).unwrap().unwrap();
    let a = store.ask(&claim, asking("one", "r1")).unwrap();
    let m = conflict(store.decide(id, Some(7), by("api", true, false)));
    assert!(
        m.contains("no request #7") && m.contains("#1 pending"),
        "{m}"
    );
    store
        .decide(id, Some(a.id), by("api", false, false))
        .unwrap();
    let m = conflict(store.decide(id, Some(a.id), by("other", true, false)));
    assert!(m.contains("already denied by api"), "{m}");
    let m = conflict(store.decide(id, None, by("api", true, false)));
    assert!(m.contains("not awaiting approval (it is running)"), "{m}");
    // Nothing changed: one decision, by the first decider.
    let all = store.approvals(id).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].decision.as_ref().unwrap().by, "api");
    // A request of an ended task cannot be decided.
    let b = store.ask(&claim, asking("two", "r2")).unwrap();
    store
        .finish(&claim, TaskState::Failed, serde_json::json!({}), "gave up")
        .unwrap();
    let m = conflict(store.decide(id, Some(b.id), by("api", true, false)));
    assert!(m.contains("has ended (failed)"), "{m}");
    assert!(store.approvals(id).unwrap()[1].is_pending());
    assert!(matches!(
        store.approvals(TaskId::new()),
        Err(StoreError::NotFound(_))
    ));
}

fn call(capability: &str, detail: &str, allowed: bool) -> TaskEvent {
    TaskEvent::Audit {
        capability: capability.into(),
        detail: detail.into(),
        allowed,
        reason: if allowed { "granted" } else { "not granted" }.into(),
    }
}

fn verify(store: &dyn TaskStore) -> audit::Verified {
    audit::verify_store(store).unwrap()
}

fn audit_chains_calls_and_decisions_and_outlives_pruning(store: &dyn TaskStore) {
    use audit::AuditKind;
    assert_eq!(verify(store).records, 0);
    assert!(verify(store).broken.is_none(), "an empty chain verifies");
    let first = store.create(spec("a", ResumePolicy::Restart)).unwrap().id;
    let claim = store.claim("h1", LEASE).unwrap().unwrap();
    store
        .append_many(
            &claim,
            &[
                call("exec", "/bin/true", true),
                TaskEvent::Log {
                    level: crate::events::Level::Info,
                    message: "not audited".into(),
                },
                call("net", "TcpConnect 10.0.0.1:80", false),
            ],
        )
        .unwrap();
    let end = Ending {
        events: &[call("fs", "open /data/x for writing", false)],
        state: TaskState::Succeeded,
        outcome: serde_json::json!({"outcome": "succeeded"}),
        reason: "done",
        deliver: None,
    };
    store.finish_and_claim(&claim, end, None).unwrap();
    let all = store.audit(&audit::AuditFilter::default()).unwrap();
    let seen: Vec<(u64, &str, bool)> = all
        .iter()
        .map(|r| (r.seq, r.capability.as_str(), r.allowed))
        .collect();
    assert_eq!(
        seen,
        vec![(1, "exec", true), (2, "net", false), (3, "fs", false)]
    );
    assert!(all.iter().all(|r| r.kind == AuditKind::Call
        && r.task == Some(first)
        && r.host.as_deref() == Some("h1")));
    assert_eq!(all[0].prev, audit::GENESIS);
    assert_eq!(all[1].prev, all[0].hash);

    // An operator's decision, and who made it.
    let second = store.create(spec("b", ResumePolicy::Restart)).unwrap().id;
    let claim = store.claim("h2", LEASE).unwrap().unwrap();
    store
        .ask(&claim, asking("app#1", "--ask-exec 'systemctl *'"))
        .unwrap();
    store
        .decide(second, None, by("cli:alice", false, false))
        .unwrap();
    let d = store
        .audit(&audit::AuditFilter {
            task: Some(second),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].kind, AuditKind::Decision);
    assert_eq!(d[0].by.as_deref(), Some("cli:alice"));
    assert!(!d[0].allowed && d[0].detail == "systemctl restart app#1");
    let v = verify(store);
    assert_eq!((v.records, v.head.seq, v.broken), (4, 4, None));

    // Filters: after a seq, since a time.
    let after = store
        .audit(&audit::AuditFilter {
            after: 2,
            limit: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(after.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
    let later = store
        .audit(&audit::AuditFilter {
            since_ms: Some(i64::MAX),
            ..Default::default()
        })
        .unwrap();
    assert!(later.is_empty());

    // Pruning the first task removes its records, and leaves a record
    // that vouches for them: the rest still verifies.
    let gone = store.prune(i64::MAX, Some(first)).unwrap();
    assert_eq!(gone.len(), 1);
    let left = store.audit(&audit::AuditFilter::default()).unwrap();
    assert_eq!(left.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(left[1].kind, AuditKind::Pruned);
    assert_eq!(left[1].through, Some(3));
    assert_eq!(left[1].through_hash.as_deref(), Some(all[2].hash.as_str()));
    let v = verify(store);
    assert_eq!((v.first, v.head.seq, v.broken), (Some(4), 5, None));
    // A task still stored keeps its records (and every later one).
    store.prune(i64::MAX, None).unwrap();
    assert_eq!(
        store.audit(&audit::AuditFilter::default()).unwrap().len(),
        2
    );
}

/// A schedule every ten seconds, the task `spec("s", …)`.
fn every_ten(
    name: &str,
    missed: crate::schedule::Missed,
    overlap: schedule::Overlap,
) -> schedule::ScheduleSpec {
    schedule::ScheduleSpec {
        name: name.into(),
        cron: "*/10 * * * * *".into(),
        tz: "UTC".into(),
        missed,
        overlap,
        task: spec("s", ResumePolicy::Restart),
    }
}

fn fired_tasks(store: &dyn TaskStore, name: &str) -> Vec<Task> {
    store
        .list(&TaskFilter {
            label: Some(name.into()),
            ..Default::default()
        })
        .unwrap()
}

fn schedules_fire_each_slot_once_by_their_policies(store: &dyn TaskStore) {
    use crate::schedule::Missed;
    use schedule::{Overlap, SlotOutcome};
    const GRACE: i64 = 60_000;
    let s = store
        .add_schedule(every_ten("nightly", Missed::Skip, Overlap::Allow))
        .unwrap();
    let slot = s.next_ms.unwrap();
    assert!(slot > s.created_ms && slot % 10_000 == 0);
    // Before its first slot: nothing.
    assert!(store.fire_schedules(slot - 1, GRACE).unwrap().is_empty());
    // On time: one task, labelled and linked to its schedule and slot.
    let fired = store.fire_schedules(slot + 150, GRACE).unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].spec.label.as_deref(), Some("nightly"));
    assert_eq!(
        fired[0].spec.schedule,
        Some(schedule::ScheduleLink {
            name: "nightly".into(),
            slot_ms: Some(slot)
        })
    );
    assert_eq!(fired[0].state, TaskState::Queued);
    // Asked again (another host, the same moment or later within the
    // slot): nothing more.
    assert!(store.fire_schedules(slot + 150, GRACE).unwrap().is_empty());
    assert!(
        store
            .fire_schedules(slot + 9_000, GRACE)
            .unwrap()
            .is_empty()
    );
    // A clock gone back fires nothing, and the slot is not fired again
    // when it comes forward.
    assert!(
        store
            .fire_schedules(slot - 30_000, GRACE)
            .unwrap()
            .is_empty()
    );
    assert!(store.fire_schedules(slot + 200, GRACE).unwrap().is_empty());
    let s = store.schedule("nightly").unwrap();
    assert_eq!(
        (s.fired, s.last_slot_ms, s.last_task),
        (1, Some(slot), Some(fired[0].id))
    );
    // Down for 35 s: three slots passed; `skip` fires none of them.
    assert!(
        store
            .fire_schedules(slot + 35_000, GRACE)
            .unwrap()
            .is_empty()
    );
    let s = store.schedule("nightly").unwrap();
    assert_eq!((s.fired, s.skipped), (1, 3));
    assert_eq!(s.next_ms, Some(slot + 40_000));
    // The next slot on time fires again.
    assert_eq!(store.fire_schedules(slot + 40_010, GRACE).unwrap().len(), 1);
    assert_eq!(fired_tasks(store, "nightly").len(), 2);

    // `run-once`: the same outage fires one task, for the latest slot.
    let r = store
        .add_schedule(every_ten("catch-up", Missed::RunOnce, Overlap::Allow))
        .unwrap();
    let first = r.next_ms.unwrap();
    let fired = store.fire_schedules(first + 35_000, GRACE).unwrap();
    let mine: Vec<&Task> = fired
        .iter()
        .filter(|t| t.spec.label.as_deref() == Some("catch-up"))
        .collect();
    assert_eq!(mine.len(), 1, "never a burst");
    assert_eq!(
        mine[0].spec.schedule.as_ref().unwrap().slot_ms,
        Some(first + 30_000)
    );
    let r = store.schedule("catch-up").unwrap();
    assert_eq!((r.fired, r.skipped), (1, 3));
    let slots = store.schedule_slots("catch-up", 10).unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!(
        (slots[0].slot_ms, slots[0].outcome, slots[0].task),
        (first + 30_000, SlotOutcome::Fired, Some(mine[0].id))
    );
}

fn schedules_overlap_pause_run_now_and_remove(store: &dyn TaskStore) {
    use crate::schedule::Missed;
    use schedule::{Overlap, SlotOutcome};
    const GRACE: i64 = 60_000;
    // `skip`: a slot while the previous task is still queued is skipped.
    let s = store
        .add_schedule(every_ten("solo", Missed::Skip, Overlap::Skip))
        .unwrap();
    let t0 = s.next_ms.unwrap();
    let first = store.fire_schedules(t0 + 10, GRACE).unwrap();
    assert_eq!(first.len(), 1);
    assert!(store.fire_schedules(t0 + 10_010, GRACE).unwrap().is_empty());
    let slots = store.schedule_slots("solo", 10).unwrap();
    assert_eq!(slots[0].outcome, SlotOutcome::Skipped);
    assert_eq!(store.schedule("solo").unwrap().skipped, 1);
    store.remove_schedule("solo").unwrap();
    // Its tasks stay; the schedule and its slots go.
    assert!(matches!(
        store.schedule("solo"),
        Err(StoreError::Missing(_))
    ));
    assert!(matches!(
        store.schedule_slots("solo", 10),
        Err(StoreError::Missing(_))
    ));
    assert!(matches!(
        store.remove_schedule("solo"),
        Err(StoreError::Missing(_))
    ));
    assert_eq!(store.get(first[0].id).unwrap().state, TaskState::Queued);
    let c = store.claim("h", LEASE).unwrap().unwrap();
    store
        .finish(&c, TaskState::Succeeded, serde_json::json!({}), "done")
        .unwrap();

    // `queue`: one slot is held, later ones skipped, and the held one
    // fires once the previous task ends.
    let q = store
        .add_schedule(every_ten("queued", Missed::Skip, Overlap::Queue))
        .unwrap();
    let t0 = q.next_ms.unwrap();
    let first = store.fire_schedules(t0 + 10, GRACE).unwrap();
    assert_eq!(first.len(), 1);
    assert!(store.fire_schedules(t0 + 10_010, GRACE).unwrap().is_empty());
    assert!(store.fire_schedules(t0 + 20_010, GRACE).unwrap().is_empty());
    let q = store.schedule("queued").unwrap();
    assert_eq!((q.held_slot_ms, q.skipped), (Some(t0 + 10_000), 1));
    let c = store.claim("h", LEASE).unwrap().unwrap();
    assert_eq!(c.task.id, first[0].id);
    store
        .finish(&c, TaskState::Failed, serde_json::json!({}), "broke")
        .unwrap();
    let held = store.fire_schedules(t0 + 20_500, GRACE).unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        held[0].spec.schedule.as_ref().unwrap().slot_ms,
        Some(t0 + 10_000)
    );
    let q = store.schedule("queued").unwrap();
    assert_eq!((q.held_slot_ms, q.fired), (None, 2));
    assert!(store.fire_schedules(t0 + 20_600, GRACE).unwrap().is_empty());

    // Paused: no slot fires; resumed, the slots it slept through are missed.
    let p = store.pause_schedule("queued", true).unwrap();
    assert!(p.paused);
    assert!(store.fire_schedules(t0 + 30_010, GRACE).unwrap().is_empty());
    assert!(store.fire_schedules(t0 + 40_010, GRACE).unwrap().is_empty());
    assert!(!store.pause_schedule("queued", false).unwrap().paused);
    // run-now: a task at once, even with the previous one queued.
    let now = store.run_schedule_now("queued").unwrap();
    assert_eq!(now.spec.schedule.as_ref().unwrap().slot_ms, None);
    assert_eq!(now.spec.label.as_deref(), Some("queued"));
    assert_eq!(store.schedule("queued").unwrap().fired, 3);
    assert!(matches!(
        store.run_schedule_now("nope"),
        Err(StoreError::Missing(_))
    ));
    assert!(matches!(
        store.pause_schedule("nope", true),
        Err(StoreError::Missing(_))
    ));
    assert_eq!(store.schedules().unwrap().len(), 1);
}

fn schedules_refuse_bad_input_and_change_nothing(store: &dyn TaskStore) {
    use crate::schedule::Missed;
    use schedule::Overlap;
    let good = every_ten("ok", Missed::Skip, Overlap::Allow);
    let bad = |f: &dyn Fn(&mut schedule::ScheduleSpec)| {
        let mut s = good.clone();
        f(&mut s);
        match store.add_schedule(s) {
            Err(StoreError::Conflict(m)) => m,
            other => panic!("{other:?}"),
        }
    };
    assert!(bad(&|s| s.cron = "61 * * * *".into()).contains("cron expression"));
    assert!(bad(&|s| s.cron = "every day".into()).contains("cron expression"));
    assert!(bad(&|s| s.tz = "Mars/Olympus".into()).contains("tz database"));
    assert!(bad(&|s| s.name = "../x".into()).contains("schedule name"));
    assert!(bad(&|s| s.name = String::new()).contains("schedule name"));
    assert!(store.schedules().unwrap().is_empty());
    store.add_schedule(good.clone()).unwrap();
    let again = store.add_schedule(good).unwrap_err().to_string();
    assert!(again.contains("exists"), "{again}");
    assert_eq!(store.schedules().unwrap().len(), 1);
}
