//! Limits and hostile guests: time, memory, output, stack, fuel, traps.
//! Each is stopped with a clear outcome and the host carries on.

use serde_json::json;
use skillbox::prelude::*;

use crate::harness::*;

fn src() -> SkillSource {
    source_with_manifest("hostile", "")
}

#[tokio::test]
async fn an_infinite_loop_times_out() {
    let (r, _) = run(
        &src(),
        &grants(&["--timeout", "500ms"]),
        json!({"case": "loop"}),
    )
    .await;
    assert_eq!(r.outcome, Outcome::TimedOut { limit_ms: 500 });
}

#[tokio::test]
async fn a_guest_blocked_in_a_host_call_times_out() {
    let (r, _) = run(
        &src(),
        &grants(&["--timeout", "500ms"]),
        json!({"case": "sleep", "ms": 600_000}),
    )
    .await;
    assert_eq!(r.outcome, Outcome::TimedOut { limit_ms: 500 });
}

#[tokio::test]
async fn a_memory_bomb_hits_the_memory_limit() {
    let (r, _) = run(
        &src(),
        &grants(&["--memory", "32MiB"]),
        json!({"case": "memory-bomb"}),
    )
    .await;
    match &r.outcome {
        Outcome::LimitExceeded {
            limit: Limit::Memory,
            message,
        } => assert!(message.contains("--memory"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn stdout_and_stderr_floods_are_capped() {
    for case in ["stdout-flood", "stderr-flood"] {
        let (r, rec) = run(
            &src(),
            &grants(&["--output", "64KiB"]),
            json!({"case": case, "bytes": 8 << 20}),
        )
        .await;
        succeeded(&r);
        assert!(r.output_truncated, "{case}");
        let kept = if case == "stdout-flood" {
            r.stdout.len()
        } else {
            r.stderr.len()
        };
        assert_eq!(kept, 64 << 10, "{case}");
        assert!(
            rec.events()
                .iter()
                .any(|e| matches!(e, Event::Truncated { .. })),
            "{case}"
        );
    }
}

#[tokio::test]
async fn a_log_flood_is_capped() {
    let (r, rec) = run(
        &src(),
        &grants(&["--output", "16KiB"]),
        json!({"case": "log-flood", "lines": 100_000}),
    )
    .await;
    succeeded(&r);
    let events = rec.events();
    let logged: usize = events
        .iter()
        .filter_map(|e| match e {
            Event::Log { message, .. } => Some(message.len()),
            _ => None,
        })
        .sum();
    assert!(logged <= 16 << 10, "{logged}");
    let marks = events
        .iter()
        .filter(|e| matches!(e, Event::Truncated { stream: "log", .. }))
        .count();
    assert_eq!(marks, 1);
}

#[tokio::test]
async fn an_oversized_summary_is_refused() {
    let (r, _) = run(
        &src(),
        &grants(&["--output", "64KiB"]),
        json!({"case": "big-summary", "bytes": 1 << 20}),
    )
    .await;
    match &r.outcome {
        Outcome::LimitExceeded {
            limit: Limit::Output,
            message,
        } => assert!(message.contains("summary"), "{message}"),
        other => panic!("{other:?}"),
    }
    let (r, _) = run(
        &src(),
        &grants(&["--output", "64KiB"]),
        json!({"case": "big-summary", "bytes": 1000}),
    )
    .await;
    succeeded(&r);
}

#[tokio::test]
async fn unbounded_recursion_is_stopped_cleanly() {
    let (r, _) = run(&src(), &Grants::default(), json!({"case": "recurse"})).await;
    match &r.outcome {
        Outcome::LimitExceeded {
            limit: Limit::Stack,
            ..
        } => {}
        Outcome::Crashed { message } if message.contains("out of bounds") => {}
        other => panic!("{other:?}"),
    }
    // The host is unharmed: the next run works.
    let (r, _) = run(
        &src(),
        &Grants::default(),
        json!({"case": "progress", "steps": 1}),
    )
    .await;
    succeeded(&r);
}

#[tokio::test]
async fn a_panic_is_a_crash_with_its_message() {
    let (r, _) = run(&src(), &Grants::default(), json!({"case": "panic"})).await;
    match &r.outcome {
        Outcome::Crashed { message } => assert!(message.contains("hostile panic"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn fuel_stops_a_loop() {
    let (r, _) = run_on(
        fuel_host(),
        &src(),
        &grants(&["--fuel", "5000000"]),
        json!({"case": "loop"}),
    )
    .await;
    match &r.outcome {
        Outcome::LimitExceeded {
            limit: Limit::Fuel, ..
        } => {}
        other => panic!("{other:?}"),
    }
    let (r, _) = run_on(
        fuel_host(),
        &src(),
        &grants(&["--fuel", "50000000"]),
        json!({"case": "progress", "steps": 2}),
    )
    .await;
    succeeded(&r);
}

#[tokio::test]
async fn typed_input_that_does_not_parse_is_invalid_input() {
    let (r, _) = run(&src(), &Grants::default(), json!({"case": 42})).await;
    let (kind, _) = failed(&r);
    assert_eq!(kind, FailureKind::InvalidInput);
    let (r, _) = run(&src(), &Grants::default(), json!({"case": "no-such-case"})).await;
    assert_eq!(failed(&r).0, FailureKind::InvalidInput);
}

#[tokio::test]
async fn input_that_is_not_json_is_refused_before_the_run() {
    let s = src();
    let prepared = host().prepare(&s).unwrap();
    let (policy, _) = EffectivePolicy::compute(s.manifest.as_ref(), &Grants::default());
    let err = host()
        .run(
            &prepared,
            RunRequest {
                input: "{not json".into(),
                policy,
                events: std::sync::Arc::new(skillbox::events::Discard),
                ..Default::default()
            },
        )
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("invalid input"), "{err}");
}

#[tokio::test]
async fn many_runs_share_one_prepared_component() {
    let s = src();
    let a = host().prepare(&s).unwrap();
    let b = host().prepare(&s).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    let runs = (0..8).map(|i| {
        let s = s.clone();
        async move {
            run(
                &s,
                &Grants::default(),
                json!({"case": "progress", "steps": i}),
            )
            .await
            .0
        }
    });
    for r in futures::future::join_all(runs).await {
        succeeded(&r);
    }
}

#[tokio::test]
async fn cancellation_stops_a_run_at_once() {
    let s = src();
    let prepared = host().prepare(&s).unwrap();
    let (policy, _) = EffectivePolicy::compute(s.manifest.as_ref(), &Grants::default());
    for case in [
        json!({"case": "loop"}),
        json!({"case": "sleep", "ms": 600_000}),
    ] {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let run = host().run(
            &prepared,
            RunRequest {
                input: case.to_string(),
                policy: policy.clone(),
                cancel: Some(rx),
                ..Default::default()
            },
        );
        let cancel = async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            tx.send(true).unwrap();
        };
        let (report, ()) = tokio::join!(run, cancel);
        assert_eq!(report.unwrap().outcome, Outcome::Cancelled, "{case}");
    }
}

#[tokio::test]
async fn checkpoints_are_persisted_before_save_returns() {
    let s = src();
    let prepared = host().prepare(&s).unwrap();
    let (policy, _) = EffectivePolicy::compute(s.manifest.as_ref(), &Grants::default());
    let saved = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = saved.clone();
    let report = host()
        .run(
            &prepared,
            RunRequest {
                input: json!({"case": "checkpoint", "key": "step", "value": "one"}).to_string(),
                policy: policy.clone(),
                persist_checkpoint: Some(std::sync::Arc::new(move |k: &str, v: &[u8]| {
                    log.lock().unwrap().push((k.to_string(), v.to_vec()));
                    Ok(())
                })),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    succeeded(&report);
    assert_eq!(
        *saved.lock().unwrap(),
        vec![("step".to_string(), b"one".to_vec())]
    );

    // A store that cannot persist: the guest is told, and nothing is kept.
    let report = host()
        .run(
            &prepared,
            RunRequest {
                input: json!({"case": "checkpoint", "key": "step", "value": "two"}).to_string(),
                policy,
                persist_checkpoint: Some(std::sync::Arc::new(|_: &str, _: &[u8]| {
                    Err("disk full".to_string())
                })),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (_, message) = failed(&report);
    assert!(message.contains("disk full"), "{message}");
    assert!(report.checkpoints.is_empty());
}

/// The host hashes what the guest hands it (no grant needed): the digest is
/// the one the same bytes get natively.
#[tokio::test]
async fn the_host_computes_the_sha256_the_guest_asks_for() {
    let (r, _) = run(
        &src(),
        &grants(&[]),
        json!({"case": "host-sha256", "mib": 3}),
    )
    .await;
    let (_, data) = succeeded(&r);
    assert_eq!(data["sha256"], bench_work::sha256(3));
}

/// A guest cannot grow the host's memory by making hashers: past the most
/// a run holds at once, making one is refused with the reason (not a
/// trap), and dropping them frees their places.
#[tokio::test]
async fn a_run_holds_a_bounded_number_of_hashers() {
    let (r, _) = run(&src(), &grants(&[]), json!({"case": "hashers", "n": 300})).await;
    let (_, data) = succeeded(&r);
    assert_eq!(data["held"], skillbox::caps::digest::MAX_LIVE);
    let refused = data["refused"].as_str().expect("refused");
    assert!(refused.contains("256 SHA-256 hashers"), "{refused}");
    assert_eq!(data["again"], true, "dropped hashers free their places");
}
