//! Durable approvals through a real daemon: a call that matches an ask
//! rule waits in `awaiting_approval` until the operator decides with
//! `skillbox tasks approve/deny`, across a `kill -9` of the daemon, and is
//! denied when nobody decides in time.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::daemon::Daemon;
use crate::harness::*;

/// The hostile test skill, asking to run `echo` with any arguments and to
/// restart after a crash.
fn echo_skill() -> tempfile::TempDir {
    skill_dir(
        "hostile",
        "resume = \"restart\"\n[exec]\nallow = [ { program = \"echo\", args = [\"**\"] } ]\n",
    )
}

/// Spawns the hostile skill at `skill` echoing `words`, with `extra` flags.
fn spawn(d: &Daemon, skill: &Path, words: &str, extra: &[&str]) -> String {
    let args: Vec<&str> = words.split(' ').collect();
    let input = json!({"case": "exec", "program": "echo", "args": args});
    spawn_input(d, skill, &input, extra)
}

/// Spawns `skill` with `input` and `extra` flags; the task's id.
pub fn spawn_input(d: &Daemon, skill: &Path, input: &Value, extra: &[&str]) -> String {
    let input = input.to_string();
    let mut all = vec!["spawn", skill.to_str().unwrap(), "--input", &input];
    all.extend(extra);
    let out = d.cli(&all);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout.trim().to_string()
}

/// `skillbox tasks VERB ID` (`approve` or `deny` the only pending
/// request), then the ended task.
pub fn decide_and_wait(d: &Daemon, id: &str, verb: &str) -> Value {
    let out = d.cli(&["tasks", verb, id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    d.cli(&["tasks", "wait", id, "--json"]).json()
}

fn show(d: &Daemon, id: &str) -> Value {
    d.cli(&["tasks", "show", id, "--json"]).json()
}

/// Waits (a bounded number of polls, no timing asserted) for the task to
/// reach `state`.
pub fn until_state(d: &Daemon, id: &str, state: &str) -> Value {
    for _ in 0..4800 {
        let t = show(d, id);
        if t["state"] == state {
            return t;
        }
        assert!(
            !["succeeded", "failed", "cancelled", "timed_out"]
                .contains(&t["state"].as_str().unwrap_or("")),
            "ended before {state}: {t}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("task {id} never reached {state}: {}", show(d, id));
}

fn approvals(d: &Daemon, id: &str) -> Vec<Value> {
    let out = d.cli(&["tasks", "approvals", id, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json().as_array().unwrap().clone()
}

#[test]
fn an_exec_ask_rule_waits_for_approval_and_the_call_goes_on() {
    let data = tempfile::tempdir().unwrap();
    let skill = echo_skill();
    let d = Daemon::start(data.path(), &[]);
    let id = spawn(
        &d,
        skill.path(),
        "hello there",
        &["--ask-exec", "echo hello *"],
    );
    until_state(&d, &id, "awaiting_approval");
    let asked = approvals(&d, &id);
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["request"]["capability"], "exec");
    assert_eq!(asked[0]["request"]["detail"], "echo hello there");
    assert!(
        asked[0]["request"]["rule"]
            .as_str()
            .unwrap()
            .contains("--ask-exec")
    );
    assert!(asked[0]["decision"].is_null());
    // The listing and the event log show it, with how to answer.
    let listed = d.cli(&["tasks", "list", "--state", "awaiting_approval", "-q"]);
    assert_eq!(listed.stdout.trim(), id);
    let logs = d.cli(&["tasks", "logs", &id]).stdout;
    assert!(
        logs.contains("tasks approve") && logs.contains("echo hello there"),
        "{logs}"
    );

    let out = d.cli(&["tasks", "approve", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("#1 approved"), "{}", out.stdout);
    let t = d.cli(&["tasks", "wait", &id, "--json"]).json();
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["outcome"]["data"]["stdout"], "hello there\n");

    let decided = &approvals(&d, &id)[0]["decision"];
    assert_eq!(decided["approved"], true);
    let by = decided["by"].as_str().unwrap();
    assert!(
        by.starts_with("cli:") && by.contains("the daemon's socket"),
        "{by}"
    );
    // The audit trail names who approved.
    let logs = d.cli(&["tasks", "logs", &id]).stdout;
    assert!(logs.contains("approved by cli:"), "{logs}");
}

#[test]
fn a_denied_call_is_refused_as_an_ungranted_one_and_a_call_outside_the_rule_never_asks() {
    let data = tempfile::tempdir().unwrap();
    let skill = echo_skill();
    let d = Daemon::start(data.path(), &[]);
    // Not matched by the ask rule: granted plainly, it runs at once.
    let free = spawn(
        &d,
        skill.path(),
        "bye",
        &["--allow-exec", "echo **", "--ask-exec", "echo hello *"],
    );
    assert_eq!(
        d.cli(&["tasks", "wait", &free, "--json"]).json()["state"],
        "succeeded"
    );
    assert!(approvals(&d, &free).is_empty());

    let id = spawn(
        &d,
        skill.path(),
        "hello world",
        &["--ask-exec", "echo hello *"],
    );
    until_state(&d, &id, "awaiting_approval");
    let out = d.cli(&["tasks", "deny", &id, "1", "--note", "not today"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = d.cli(&["tasks", "wait", &id, "--json"]).json();
    assert_eq!(t["state"], "failed", "{t}");
    let message = t["outcome"]["message"].as_str().unwrap();
    assert!(
        message.contains("denied by cli:") && message.contains("not today"),
        "{message}"
    );
    assert_eq!(t["outcome"]["kind"], "denied", "{t}");

    // Bad input: a decision on a task that does not wait, on a request it
    // never made, on a task that does not exist; nothing changes.
    let again = d.cli(&["tasks", "approve", &id, "1"]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("already denied"), "{}", again.stderr);
    let none = d.cli(&["tasks", "approve", &free]);
    assert_ne!(none.code, 0);
    assert!(
        none.stderr.contains("not awaiting approval"),
        "{}",
        none.stderr
    );
    let unknown = d.cli(&["tasks", "approve", &id, "9"]);
    assert!(
        unknown.stderr.contains("no request #9"),
        "{}",
        unknown.stderr
    );
    let missing = d.cli(&["tasks", "approve", "01J00000000000000000000000"]);
    assert_eq!(missing.code, 7, "{}", missing.stderr);
    let decided = approvals(&d, &id);
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0]["decision"]["approved"], false);
}

#[test]
fn an_unanswered_request_is_denied_at_its_approval_timeout() {
    let data = tempfile::tempdir().unwrap();
    let skill = echo_skill();
    let d = Daemon::start(data.path(), &[]);
    let id = spawn(
        &d,
        skill.path(),
        "hello",
        &[
            "--ask-exec",
            "echo hello",
            "--approval-timeout",
            "1s",
            "--timeout",
            "1s",
        ],
    );
    let t = d.cli(&["tasks", "wait", &id, "--json"]).json();
    // Denied by the approval timeout, not stopped by the run's own
    // wall-clock limit: the wait does not count against it.
    assert_eq!(t["state"], "failed", "{t}");
    assert!(
        t["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("denied by timeout"),
        "{t}"
    );
    assert_eq!(approvals(&d, &id)[0]["decision"]["by"], "timeout");
}

#[test]
fn a_request_survives_kill_9_and_a_decision_given_while_the_daemon_is_down() {
    let data = tempfile::tempdir().unwrap();
    let skill = echo_skill();
    let d = Daemon::start(data.path(), &["--lease", "1s"]);
    let id = spawn(
        &d,
        skill.path(),
        "hello again",
        &["--ask-exec", "echo hello *"],
    );
    until_state(&d, &id, "awaiting_approval");
    d.kill9();

    // Restarted: once the dead daemon's lease runs out, the task is
    // resumed, reaches the same call, and waits for the same request
    // instead of asking twice.
    let d = Daemon::start(data.path(), &["--lease", "1s"]);
    let mut resumed = false;
    for _ in 0..1200 {
        let t = show(&d, &id);
        if t["attempt"].as_u64().unwrap() >= 2 && t["state"] == "awaiting_approval" {
            resumed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(resumed, "{}\n{}", show(&d, &id), d.log());
    assert_eq!(approvals(&d, &id).len(), 1);
    d.kill9();

    // A decision given while no daemon runs: an embedder's own call on the
    // store, kept until a host comes back.
    {
        let store = skillbox::store::SqliteStore::open_dir(data.path()).unwrap();
        let decision = skillbox::store::Decision {
            approved: true,
            always_for_task: false,
            by: "embedder".into(),
            note: None,
            at_ms: 0,
        };
        let task: skillbox::store::TaskId = id.parse().unwrap();
        use skillbox::store::TaskStore;
        store.decide(task, None, decision).unwrap();
    }

    let d = Daemon::start(data.path(), &["--lease", "1s"]);
    let t = d.cli(&["tasks", "wait", &id, "--json"]).json();
    assert_eq!(t["state"], "succeeded", "{t}\n{}", d.log());
    assert_eq!(t["outcome"]["data"]["stdout"], "hello again\n");
    let asked = approvals(&d, &id);
    assert_eq!(asked.len(), 1, "asked once across three daemons");
    assert_eq!(asked[0]["decision"]["by"], "embedder");
}

/// `tasks approve ID --always-for-task`: the skill's later calls of the
/// same rule are settled by that decision, recorded without asking.
#[test]
fn an_approval_always_for_the_task_settles_later_calls_of_its_rule() {
    let data = tempfile::tempdir().unwrap();
    let skill = echo_skill();
    let d = Daemon::start(data.path(), &[]);
    let input = json!({
        "case": "ask",
        "reason": "unused",
        "request": false,
        "exec": [["echo", "one"], ["echo", "two"], ["echo", "three"]],
    });
    let id = spawn_input(&d, skill.path(), &input, &["--ask-exec", "echo *"]);
    until_state(&d, &id, "awaiting_approval");
    let out = d.cli(&["tasks", "approve", &id, "--always-for-task"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = d.cli(&["tasks", "wait", &id, "--json"]).json();
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(
        t["outcome"]["data"]["stdout"],
        json!(["one\n", "two\n", "three\n"])
    );
    let asked = approvals(&d, &id);
    assert_eq!(asked.len(), 3, "{asked:?}");
    for a in &asked[1..] {
        assert_eq!(a["decision"]["approved"], true, "{a}");
        assert_eq!(
            a["decision"]["by"], "approval #1 (always for this task)",
            "{a}"
        );
    }
    assert_eq!(asked[0]["decision"]["always_for_task"], true);
}

/// The skill's own request (the `approval` interface): it waits with the
/// skill's reason and covers the calls it lists, so that the operator
/// answers once; denied, none of them runs. A plain `skillbox run` cannot
/// wait and says so.
#[test]
fn a_skill_asks_in_its_own_words_once_for_several_calls() {
    let data = tempfile::tempdir().unwrap();
    let skill = echo_skill();
    let d = Daemon::start(data.path(), &[]);
    let input = json!({
        "case": "ask",
        "reason": "say hello\nthen goodbye",
        "exec": [["echo", "hello"], ["echo", "goodbye"]],
    });
    let id = spawn_input(&d, skill.path(), &input, &["--ask-exec", "echo *"]);
    until_state(&d, &id, "awaiting_approval");
    let asked = approvals(&d, &id);
    assert_eq!(asked.len(), 1, "{asked:?}");
    let r = &asked[0]["request"];
    assert_eq!(r["capability"], "skill");
    assert_eq!(r["reason"], "say hello then goodbye", "one line: {r}");
    assert_eq!(r["detail"], "exec echo hello; exec echo goodbye");
    let out = d.cli(&["tasks", "approve", &id, "--note", "go"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = d.cli(&["tasks", "wait", &id, "--json"]).json();
    assert_eq!(t["state"], "succeeded", "{t}");
    let data_out = &t["outcome"]["data"];
    assert_eq!(data_out["needed"], true);
    assert_eq!(data_out["note"], "go");
    assert_eq!(data_out["stdout"], json!(["hello\n", "goodbye\n"]));
    assert_eq!(
        approvals(&d, &id).len(),
        1,
        "the listed calls did not ask again"
    );
    let logs = d.cli(&["tasks", "logs", &id]).stdout;
    assert!(
        logs.contains("covered by the skill's own request"),
        "{logs}"
    );

    // Denied: the skill's request fails as a refusal, and nothing ran.
    let id = spawn_input(&d, skill.path(), &input, &["--ask-exec", "echo *"]);
    until_state(&d, &id, "awaiting_approval");
    let out = d.cli(&["tasks", "deny", &id, "--note", "not now"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = d.cli(&["tasks", "wait", &id, "--json"]).json();
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(t["outcome"]["kind"], "denied", "{t}");
    let message = t["outcome"]["message"].as_str().unwrap();
    assert!(message.contains("not now"), "{message}");

    // Nothing held: `needs-approval` says so (the skill may skip asking).
    let id = spawn_input(
        &d,
        skill.path(),
        &input,
        &["--ask-exec", "printf *", "--allow-exec", "echo **"],
    );
    until_state(&d, &id, "awaiting_approval");
    d.cli(&["tasks", "approve", &id]);
    let t = d.cli(&["tasks", "wait", &id, "--json"]).json();
    assert_eq!(t["outcome"]["data"]["needed"], false, "{t}");

    // A plain run has no one to ask.
    let out = cli(
        &[
            "run",
            skill.path().to_str().unwrap(),
            "--input",
            &input.to_string(),
            "--ask-exec",
            "echo *",
        ],
        &[],
    );
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("skillbox spawn"), "{}", out.stderr);
}

/// A loopback server answering each connection's line with "pong".
fn pong_server() -> String {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut line = String::new();
            let _ = BufReader::new(&s).read_line(&mut line);
            let _ = (&s).write_all(b"pong\n");
        }
    });
    addr
}

/// `--ask-net` and `--ask-write`: the first connection to the endpoint and
/// the first change beneath the directory wait; approved they go ahead,
/// denied they are refused as ungranted ones and nothing is written.
#[test]
fn net_and_write_ask_rules_hold_the_first_use_until_approved() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &[]);
    let addr = pong_server();
    let net_skill = skill_dir("hostile", &format!("[net]\nallow = [\"{addr}\"]\n"));
    let connect = json!({"case": "connect", "addr": addr});
    for approve in [true, false] {
        let id = spawn_input(&d, net_skill.path(), &connect, &["--ask-net", &addr]);
        until_state(&d, &id, "awaiting_approval");
        assert_eq!(approvals(&d, &id)[0]["request"]["capability"], "net");
        let verb = if approve { "approve" } else { "deny" };
        let t = decide_and_wait(&d, &id, verb);
        if approve {
            assert_eq!(t["state"], "succeeded", "{t}");
            assert_eq!(
                t["outcome"]["data"]["reply"].as_str().unwrap().trim(),
                "pong"
            );
        } else {
            assert_eq!(t["state"], "failed", "{t}");
        }
    }

    let work = tempfile::tempdir().unwrap();
    let write_skill = skill_dir("hostile", "[fs]\n\"/out\" = { access = \"read-write\" }\n");
    let grant = format!("{}:/out", work.path().display());
    for approve in [true, false] {
        let name = if approve { "yes.txt" } else { "no.txt" };
        let input = json!({"case": "write", "path": format!("/out/{name}"), "content": "x"});
        let id = spawn_input(&d, write_skill.path(), &input, &["--ask-write", &grant]);
        until_state(&d, &id, "awaiting_approval");
        let r = &approvals(&d, &id)[0]["request"];
        assert_eq!(r["capability"], "write", "{r}");
        let verb = if approve { "approve" } else { "deny" };
        let t = decide_and_wait(&d, &id, verb);
        assert_eq!(
            t["state"],
            if approve { "succeeded" } else { "failed" },
            "{t}"
        );
        assert_eq!(work.path().join(name).exists(), approve);
    }
}

/// A decision through the TCP listener needs the daemon's token, and is
/// recorded as given through it.
#[test]
fn a_decision_without_the_token_is_refused() {
    use std::io::{Read, Write};
    let data = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", crate::docker::free_port());
    const TOKEN: &str = "approvals-0123456789abcdef";
    let d = Daemon::start(data.path(), &["--listen", &addr, "--token", TOKEN]);
    let skill = echo_skill();
    let id = spawn(
        &d,
        skill.path(),
        "hello tcp",
        &["--ask-exec", "echo hello *"],
    );
    until_state(&d, &id, "awaiting_approval");
    let post = |auth: &str| {
        let body = r#"{"decision":"approve","as":"pager:oncall"}"#;
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "POST /v1/tasks/{id}/approvals HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let refused = post("");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let wrong = post("Authorization: Bearer approvals-wrong-token-xxxx\r\n");
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    assert!(
        approvals(&d, &id)[0]["decision"].is_null(),
        "nothing changed"
    );
    assert_eq!(show(&d, &id)["state"], "awaiting_approval");
    let ok = post(&format!("Authorization: Bearer {TOKEN}\r\n"));
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let t = d.cli(&["tasks", "wait", &id, "--json"]).json();
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(
        approvals(&d, &id)[0]["decision"]["by"],
        "pager:oncall (through the API token)"
    );
}

/// The relay tells the parent session (a real webhook receiver here) what
/// is asked and how to answer, also in `done-only` mode, then the end.
#[test]
fn the_relay_tells_the_parent_what_is_asked_and_how_to_answer() {
    use crate::relay::{Receiver, Reply, config, webhook};
    let data = tempfile::tempdir().unwrap();
    let rx = Receiver::start(&[], Reply::Status(200));
    let cfg = config(data.path(), &webhook("ops", &rx.url("/in")), "\"ops\"");
    let d = Daemon::start(data.path(), &["--config", cfg.to_str().unwrap()]);
    let skill = echo_skill();
    let id = spawn(
        &d,
        skill.path(),
        "hello relay",
        &["--ask-exec", "echo hello *"],
    );
    let asked = rx.wait_for(1)[0].json();
    assert_eq!(asked["event"], "task.awaiting_approval", "{asked}");
    assert_eq!(asked["terminal"], false);
    let approval = &asked["approval"];
    assert_eq!(approval["id"], 1, "{asked}");
    assert_eq!(approval["request"]["detail"], "echo hello relay");
    assert!(approval["decision"].is_null());
    let message = asked["message"].as_str().unwrap();
    assert!(
        message.contains("echo hello relay")
            && message.contains(&format!("skillbox tasks approve {id} 1")),
        "{message}"
    );
    assert_eq!(d.cli(&["tasks", "approve", &id]).code, 0);
    let seen = rx.wait_for(2);
    let done = seen[1].json();
    assert_eq!(done["event"], "task.succeeded", "{done}");
    assert!(done["approval"].is_null());
}

/// A skill that asks in its own words, then reports when the request
/// returned (the host's clock, through WASI).
pub fn clock_skill() -> tempfile::TempDir {
    skill_dir("hostile", "")
}

/// Its input.
pub fn clock_input() -> Value {
    json!({"case": "ask", "reason": "a figure"})
}

/// Milliseconds from the decision on the ended task `t`'s (a run of
/// [`clock_skill`]) request to the skill's call returning: the clock the
/// skill read minus the stored time of the decision (whole milliseconds).
/// The figure the approvals' notes report; not asserted: it is a measure.
pub fn decision_to_call_ms(t: &Value, decided_ms: i64) -> f64 {
    let returned_ns = t["outcome"]["data"]["returned_ns"].as_u64().unwrap();
    returned_ns as f64 / 1e6 - decided_ms as f64
}

/// The figure on one host (SQLite, the daemon's own decision channel).
#[test]
fn figure_decision_to_call_on_one_host() {
    let data = tempfile::tempdir().unwrap();
    let skill = clock_skill();
    let d = Daemon::start(data.path(), &[]);
    let mut figures = Vec::new();
    for _ in 0..5 {
        let id = spawn_input(&d, skill.path(), &clock_input(), &[]);
        until_state(&d, &id, "awaiting_approval");
        let decided = d.cli(&["tasks", "approve", &id, "--json"]).json();
        let t = d.cli(&["tasks", "wait", &id, "--json"]).json();
        assert_eq!(t["state"], "succeeded", "{t}");
        let at = decided["decision"]["at_ms"].as_i64().unwrap();
        figures.push(decision_to_call_ms(&t, at));
    }
    eprintln!("figure: decision -> call returning, one host (SQLite): {figures:.1?} ms");
}

/// A hostile skill under an `--ask-write` grant that the operator denies
/// tries every way of changing the directory (a file, a directory, a
/// symlink, a hard link, a rename, a removal, a directory's times): each
/// asks, each is refused, and the directory is as it was.
#[test]
fn every_change_beneath_an_ask_write_grant_asks_and_a_denial_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &[]);
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("kept.txt"), "kept").unwrap();
    std::fs::create_dir(work.path().join("sub")).unwrap();
    let snapshot = || {
        let mut v: Vec<(String, u64, Option<std::time::SystemTime>)> = walk(work.path());
        v.sort();
        v
    };
    let before = snapshot();
    let skill = skill_dir("hostile", "[fs]\n\"/out\" = { access = \"read-write\" }\n");
    let grant = format!("{}:/out", work.path().display());
    let tries = [
        json!({"case": "write", "path": "/out/new.txt", "content": "x"}),
        json!({"case": "write", "path": "/out/kept.txt", "content": "overwritten"}),
        json!({"case": "mkdir", "path": "/out/newdir"}),
        json!({"case": "symlink", "target": "kept.txt", "link": "/out/link"}),
        json!({"case": "hardlink", "target": "/out/kept.txt", "link": "/out/hard"}),
        json!({"case": "rename", "from": "/out/kept.txt", "to": "/out/moved.txt"}),
        json!({"case": "rename", "from": "/out/kept.txt", "to": "/out/sub/kept.txt"}),
        json!({"case": "remove", "path": "/out/kept.txt"}),
        json!({"case": "touch-dir", "path": "/out/sub"}),
    ];
    for input in &tries {
        let id = spawn_input(&d, skill.path(), input, &["--ask-write", &grant]);
        until_state(&d, &id, "awaiting_approval");
        let asked = approvals(&d, &id);
        assert_eq!(
            asked[0]["request"]["capability"], "write",
            "{input}: {asked:?}"
        );
        let t = decide_and_wait(&d, &id, "deny");
        assert_eq!(t["state"], "failed", "{input}: {t}");
        assert_eq!(snapshot(), before, "{input} changed the directory");
    }
    // The same tries, approved, do change it: each was a real change.
    for input in &tries[2..] {
        let base = snapshot();
        let id = spawn_input(&d, skill.path(), input, &["--ask-write", &grant]);
        until_state(&d, &id, "awaiting_approval");
        let t = decide_and_wait(&d, &id, "approve");
        assert_eq!(t["state"], "succeeded", "{input}: {t}");
        assert_ne!(snapshot(), base, "{input} approved changed nothing");
        // Put the directory back as it was for the next one.
        for e in std::fs::read_dir(work.path()).unwrap() {
            let p = e.unwrap().path();
            match std::fs::symlink_metadata(&p).unwrap().is_dir() {
                true => std::fs::remove_dir_all(&p).unwrap(),
                false => std::fs::remove_file(&p).unwrap(),
            }
        }
        std::fs::write(work.path().join("kept.txt"), "kept").unwrap();
        std::fs::create_dir(work.path().join("sub")).unwrap();
    }
}

/// Every entry beneath `dir`: its path, size and modification time.
fn walk(dir: &Path) -> Vec<(String, u64, Option<std::time::SystemTime>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        out.push((e.path().display().to_string(), m.len(), m.modified().ok()));
        if m.is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    let m = std::fs::metadata(dir).unwrap();
    out.push((dir.display().to_string(), 0, m.modified().ok()));
    out
}
