//! Schedules end to end: a real daemon driven by the CLI (errors, pause,
//! run-now, a `kill -9` in the middle), and three real worker processes
//! sharing one PostgreSQL database through a restart of the server. Each
//! slot fires once; missed slots follow the schedule's policy.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use skillbox::schedule::Missed;
use skillbox::store::schedule::Overlap;
use skillbox::store::testing;
use skillbox::store::{TaskState, TaskStore, now_ms};
use skillbox::tasks::SpawnRequest;
use skillbox::tasks::schedules::{ScheduleRequest, Schedules};

use crate::daemon::Daemon;
use crate::harness::*;
use crate::workers::{Worker, all_tasks, database, endings, spawner, wait_for};

/// Every two seconds.
const EVERY_2S: &str = "*/2 * * * * *";

/// The tasks labelled `name`, as the daemon lists them.
fn tasks_of(d: &Daemon, name: &str) -> Vec<Value> {
    let out = d.cli(&[
        "tasks", "list", "--label", name, "--limit", "1000", "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

/// The slot each task fired for, sorted.
fn slots(tasks: &[Value]) -> Vec<i64> {
    let mut s: Vec<i64> = tasks
        .iter()
        .map(|t| t["spec"]["schedule"]["slot_ms"].as_i64().expect("a slot"))
        .collect();
    s.sort();
    s
}

fn schedule_json(d: &Daemon, name: &str) -> Value {
    let out = d.cli(&["schedule", "show", name, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn the_cli_adds_shows_pauses_runs_now_and_removes_schedules() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &[]);
    let skill = real_skill("hello");
    let skill = skill.path().to_str().unwrap();

    // Bad input: clear errors, nothing stored.
    let bad = |args: &[&str], code: i32, says: &str| {
        let mut all = vec!["schedule", "add"];
        all.extend(args);
        let out = d.cli(&all);
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    };
    bad(&["n", "--cron", "61 * * * *", skill], 4, "cron expression");
    bad(
        &["n", "--cron", "0 3 * * *", "--tz", "Mars/Olympus", skill],
        4,
        "tz database",
    );
    bad(&["../n", "--cron", "0 3 * * *", skill], 4, "schedule name");
    bad(
        &["n", "--cron", "0 3 * * *", "--label", "x", skill],
        4,
        "label",
    );
    bad(
        &["n", "--cron", "0 3 * * *", "--missed", "burst", skill],
        2,
        "burst",
    );
    bad(
        &["n", "--cron", "0 3 * * *", "/nonexistent/skill"],
        7,
        "/nonexistent/skill",
    );
    let out = d.cli(&["schedule", "list", "--json"]);
    assert_eq!(out.stdout.trim(), "[]", "{}", out.stderr);

    let out = d.cli(&[
        "schedule",
        "add",
        "nightly",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Paris",
        "--overlap",
        "queue",
        "--missed",
        "run-once",
        skill,
        "--input",
        r#"{"name": "cron"}"#,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("next slot"), "{}", out.stdout);
    let again = d.cli(&["schedule", "add", "nightly", "--cron", "0 3 * * *", skill]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("exists"), "{}", again.stderr);

    let s = schedule_json(&d, "nightly");
    assert_eq!(s["schedule"]["spec"]["tz"], "Europe/Paris");
    assert_eq!(s["schedule"]["spec"]["overlap"], "queue");
    assert_eq!(s["schedule"]["spec"]["missed"], "run-once");
    assert_eq!(s["schedule"]["paused"], false);
    // The next slot is 02:30 in Paris: 00:30 or 01:30 UTC.
    let next = s["schedule"]["next_ms"].as_i64().unwrap();
    assert!(next > now_ms());
    let utc = chrono::DateTime::from_timestamp_millis(next).unwrap();
    assert!(
        utc.format("%M").to_string() == "30"
            && ["00", "01"].contains(&utc.format("%H").to_string().as_str()),
        "{utc}"
    );

    let out = d.cli(&["schedule", "pause", "nightly"]);
    assert!(out.stdout.contains("paused"), "{}", out.stdout);
    assert_eq!(schedule_json(&d, "nightly")["schedule"]["paused"], true);

    // run-now: a task at once, paused or not, labelled with the schedule.
    let out = d.cli(&["schedule", "run-now", "nightly"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_string();
    let out = d.cli(&["tasks", "wait", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Hello, cron"), "{}", out.stdout);
    let tasks = tasks_of(&d, "nightly");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["spec"]["schedule"]["name"], "nightly");
    assert_eq!(tasks[0]["spec"]["schedule"]["slot_ms"], Value::Null);

    let out = d.cli(&["schedule", "resume", "nightly"]);
    assert!(out.stdout.contains("active"), "{}", out.stdout);
    let out = d.cli(&["schedule", "list"]);
    assert!(
        out.stdout.contains("nightly") && out.stdout.contains("Europe/Paris"),
        "{}",
        out.stdout
    );

    let out = d.cli(&["schedule", "rm", "nightly"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for args in [
        vec!["schedule", "show", "nightly"],
        vec!["schedule", "rm", "nightly"],
        vec!["schedule", "run-now", "nightly"],
        vec!["schedule", "pause", "nightly"],
    ] {
        let out = d.cli(&args);
        assert_eq!(out.code, 7, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("no schedule named nightly"),
            "{}",
            out.stderr
        );
    }
    // Its task stays.
    assert_eq!(tasks_of(&d, "nightly").len(), 1);

    // An installed skill by name, with the grants its configuration gives.
    let config = data.path().join("installed.toml");
    std::fs::write(&config, format!("[skills.greet]\npath = {skill:?}\n")).unwrap();
    let out = d.cli(&[
        "schedule",
        "add",
        "greeting",
        "--cron",
        "0 8 * * 1-5",
        "greet",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = schedule_json(&d, "greeting");
    assert_eq!(s["schedule"]["spec"]["task"]["skill_name"], "hello");
    let out = d.cli(&["schedule", "run-now", "greeting"]);
    let out = d.cli(&["tasks", "wait", out.stdout.trim()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// The only host is killed with SIGKILL and stays down for several slots.
/// On restart, the schedule with `missed = skip` fires none of the slots it
/// missed, the one with `run-once` fires one (the latest); both go on, and
/// no slot ever fires twice.
#[test]
fn after_a_kill_9_missed_slots_follow_each_schedules_policy() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &[]);
    let skill = real_skill("hello");
    let skill = skill.path().to_str().unwrap();
    for (name, missed) in [("skipper", "skip"), ("catcher", "run-once")] {
        let out = d.cli(&[
            "schedule", "add", name, "--cron", EVERY_2S, "--missed", missed, skill,
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    wait_for("two slots of each", Duration::from_secs(120), || {
        (tasks_of(&d, "skipper").len() >= 2 && tasks_of(&d, "catcher").len() >= 2).then_some(())
    });
    let killed_at = now_ms();
    d.kill9();
    // At least three slots pass with no host.
    std::thread::sleep(Duration::from_millis(7_000));
    let d = Daemon::start(data.path(), &[]);
    let restarted_at = now_ms();
    wait_for("slots after the restart", Duration::from_secs(120), || {
        let after = |name| {
            slots(&tasks_of(&d, name))
                .into_iter()
                .filter(|s| *s > restarted_at)
                .count()
        };
        (after("skipper") >= 2 && after("catcher") >= 2).then_some(())
    });
    let d_slots = |name| slots(&tasks_of(&d, name));
    let (skipper, catcher) = (d_slots("skipper"), d_slots("catcher"));
    for s in [&skipper, &catcher] {
        let unique: BTreeSet<_> = s.iter().collect();
        assert_eq!(unique.len(), s.len(), "a slot fired twice: {s:?}");
    }
    // The first slot each fired after the outage.
    let first_after = |s: &[i64]| *s.iter().find(|s| **s > killed_at).unwrap();
    let (sk, ca) = (first_after(&skipper), first_after(&catcher));
    // Both fire in the same look: the catch-up is the slot just before the
    // skipper's first, which the skipper left alone.
    assert_eq!(ca + 2_000, sk, "skipper {skipper:?}, catcher {catcher:?}");
    assert!(catcher.contains(&sk));
    let before = |s: &[i64]| *s.iter().rev().find(|s| **s <= killed_at).unwrap();
    assert!(
        ca - before(&catcher) >= 6_000,
        "several slots were missed: {catcher:?}"
    );
    // Every slot from the first to the last is accounted for once: fired
    // or skipped.
    for (name, s) in [("skipper", &skipper), ("catcher", &catcher)] {
        let v = schedule_json(&d, name);
        let fired = v["schedule"]["fired"].as_u64().unwrap();
        let skipped = v["schedule"]["skipped"].as_u64().unwrap();
        let last = v["schedule"]["last_slot_ms"].as_i64().unwrap();
        assert_eq!(fired as usize, s.len(), "{name}");
        assert_eq!(
            fired + skipped,
            ((last - s[0]) / 2_000 + 1) as u64,
            "{name}: {v}"
        );
        assert!(skipped >= 2, "{name}: {v}");
    }
    // Every task ends (one the kill caught mid-run may fail by its
    // skill's resume policy; none is left behind).
    for name in ["skipper", "catcher"] {
        d.cli(&["schedule", "pause", name]);
    }
    wait_for("every task to end", Duration::from_secs(120), || {
        tasks_of(&d, "skipper")
            .iter()
            .chain(tasks_of(&d, "catcher").iter())
            .all(|t| t["state"] == "succeeded" || t["state"] == "failed")
            .then_some(())
    });
}

/// Three `skillbox worker` processes on one PostgreSQL database fire one
/// schedule every two seconds; the server restarts in the middle. Each
/// slot creates one task, which runs once.
#[test]
fn three_workers_fire_each_slot_once_across_a_postgres_restart() {
    let Some(server) = testing::server_or_skip("schedules") else {
        return;
    };
    let (url, store) = database(&server);
    let workers: Vec<Worker> = (0..3).map(|_| Worker::start(&url, 2, &[])).collect();
    for w in &workers {
        w.ready();
    }
    let skill = real_skill("hello");
    let host = spawner(store.clone(), None);
    let schedules = Schedules::new(host.clone());
    schedules
        .add(ScheduleRequest {
            name: "pulse".into(),
            cron: EVERY_2S.into(),
            tz: "UTC".into(),
            missed: Missed::Skip,
            overlap: Overlap::Allow,
            task: SpawnRequest::new(skill.path(), r#"{"name": "pulse"}"#),
        })
        .unwrap();
    let fired = |n: usize| {
        let n_tasks = all_tasks(&*store).len();
        (n_tasks >= n).then_some(n_tasks)
    };
    let before = wait_for("four slots", Duration::from_secs(120), || fired(4));
    server.restart().unwrap();
    wait_for(
        "four slots after the restart",
        Duration::from_secs(120),
        || fired(before + 4),
    );
    schedules.pause("pulse").unwrap();
    let tasks = wait_for("every task to end", Duration::from_secs(120), || {
        let tasks = all_tasks(&*store);
        tasks.iter().all(|t| t.state.is_terminal()).then_some(tasks)
    });
    let mut seen = BTreeSet::new();
    for t in &tasks {
        let link = t.spec.schedule.as_ref().expect("a scheduled task");
        assert_eq!(link.name, "pulse");
        assert!(
            seen.insert(link.slot_ms.unwrap()),
            "slot {:?} fired twice",
            link.slot_ms
        );
        assert_eq!(t.state, TaskState::Succeeded, "{}: {:?}", t.id, t.outcome);
        assert_eq!(endings(&*store, t.id), vec![TaskState::Succeeded]);
        assert_eq!(t.spec.label.as_deref(), Some("pulse"));
    }
    let view = schedules.show("pulse").unwrap();
    assert_eq!(view.schedule.fired as usize, tasks.len());
    let recorded: Vec<_> = store.schedule_slots("pulse", 1000).unwrap();
    assert_eq!(recorded.len() as u64, view.schedule.fired, "{recorded:?}");
    // Every slot from the first to the last is accounted for once.
    let first = *seen.iter().next().unwrap();
    let last = view.schedule.last_slot_ms.unwrap();
    assert_eq!(
        view.schedule.fired + view.schedule.skipped,
        ((last - first) / 2_000 + 1) as u64
    );
    drop(workers);
}
