//! The audit trail through a real daemon: a record for every capability
//! decision (allowed and refused) and for an operator's answer, with who
//! gave it; `audit verify` holds on the untouched store and, after a row
//! is edited, deleted or swapped directly in SQLite or PostgreSQL, names
//! the record; an export verifies on its own and not once edited.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;

use serde_json::{Value, json};
use skillbox::store::TaskStore;
use skillbox::store::audit::{AuditFilter, verify_store};
use skillbox::store::testing;
use skillbox::tasks::SpawnRequest;

use crate::approvals::{decide_and_wait, spawn_input, until_state};
use crate::daemon::Daemon;
use crate::harness::*;
use crate::workers::{database, spawner};

/// The hostile skill, asking for a directory, two programs (one with a
/// secret), a variable and an endpoint.
fn hostile(port: u16) -> tempfile::TempDir {
    skill_dir(
        "hostile",
        &format!(
            r#"[fs]
"/w" = {{ access = "read" }}
[exec]
allow = [ {{ program = "echo", args = ["**"] }}, {{ program = "printenv", args = ["**"] }} ]
[env]
allow = ["SBX_AUDIT_VAR"]
[net]
allow = ["127.0.0.1:{port}"]
[secrets]
exec = [ {{ program = "printenv", secret = "AUDIT_TOKEN" }} ]
"#
        ),
    )
}

/// Runs the calls of every capability through the daemon at `d`; their
/// task ids.
fn make_calls(d: &Daemon, skill: &Path, work: &Path, port: u16) -> Vec<String> {
    let w = format!("{}:/w", work.display());
    let net = format!("127.0.0.1:{port}");
    let grants = [
        "--allow-read",
        &w,
        "--allow-exec",
        "echo **",
        "--allow-exec",
        "printenv **",
        "--allow-env",
        "SBX_AUDIT_VAR",
        "--allow-net",
        &net,
        "--allow-exec-secret",
        "printenv",
        "AUDIT_TOKEN",
    ];
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = closed.local_addr().unwrap().to_string();
    drop(closed);
    let cases = [
        json!({"case": "exec", "program": "echo", "args": ["hi"]}),
        json!({"case": "exec", "program": "ls", "args": ["/"]}),
        json!({"case": "exec", "program": "printenv", "args": ["AUDIT_TOKEN"]}),
        json!({"case": "connect", "addr": net}),
        json!({"case": "connect", "addr": other}),
        json!({"case": "write", "path": "/w/file", "content": "x"}),
        json!({"case": "env-get", "name": "SBX_AUDIT_VAR"}),
    ];
    let mut ids = Vec::new();
    for input in cases {
        let id = spawn_input(d, skill, &input, &grants);
        d.cli(&["tasks", "wait", &id]);
        ids.push(id);
    }
    // An operator's answer, and who gave it.
    let mut asking: Vec<&str> = grants.to_vec();
    asking.extend(["--ask-exec", "echo *"]);
    let id = spawn_input(
        d,
        skill,
        &json!({"case": "exec", "program": "echo", "args": ["please"]}),
        &asking,
    );
    until_state(d, &id, "awaiting_approval");
    let ended = decide_and_wait(d, &id, "deny");
    assert_eq!(ended["state"], "failed", "{ended}");
    ids.push(id);
    ids
}

fn audit_json(d: &Daemon, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "show", "--json", "--limit", "5000"];
    all.extend(args);
    let out = d.cli(&all);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

/// (capability, allowed) pairs the trail holds.
fn decisions(records: &[Value]) -> BTreeSet<(String, bool)> {
    records
        .iter()
        .map(|r| {
            (
                r["capability"].as_str().unwrap().to_string(),
                r["allowed"].as_bool().unwrap(),
            )
        })
        .collect()
}

struct Scene {
    data: tempfile::TempDir,
    _work: tempfile::TempDir,
    _skill: tempfile::TempDir,
    _listener: TcpListener,
    env: Vec<(&'static str, &'static str)>,
    config: std::path::PathBuf,
}

impl Scene {
    fn new() -> (Scene, Daemon) {
        let data = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        std::fs::write(work.path().join("file"), "old").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn({
            let l = listener.try_clone().unwrap();
            move || {
                use std::io::{BufRead, Write};
                for conn in l.incoming().flatten() {
                    let mut line = String::new();
                    let mut r = std::io::BufReader::new(&conn);
                    let _ = r.read_line(&mut line);
                    let _ = (&conn).write_all(b"pong\n");
                }
            }
        });
        let skill = hostile(port);
        let config = data.path().join("config.toml");
        std::fs::write(
            &config,
            "[secrets.AUDIT_TOKEN]\nenv = \"SBX_AUDIT_TOKEN\"\n",
        )
        .unwrap();
        let env = vec![
            ("SBX_AUDIT_TOKEN", "a-token-of-some-length"),
            ("SBX_AUDIT_VAR", "set"),
        ];
        let d = Daemon::start_env(data.path(), &["--config", config.to_str().unwrap()], &env);
        let ids = make_calls(&d, skill.path(), work.path(), port);
        assert_eq!(ids.len(), 8);
        (
            Scene {
                data,
                _work: work,
                _skill: skill,
                _listener: listener,
                env,
                config,
            },
            d,
        )
    }

    /// A daemon on a copy of the data dir, whose SQLite file `edit` changed
    /// first.
    fn tampered(&self, edit: &str) -> (tempfile::TempDir, Daemon) {
        let copy = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(self.data.path()).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            let name = name.to_str().unwrap();
            if name.starts_with("tasks.db") || name == "config.toml" {
                std::fs::copy(entry.path(), copy.path().join(name)).unwrap();
            }
        }
        let conn = rusqlite::Connection::open(copy.path().join("tasks.db")).unwrap();
        conn.execute_batch(edit).unwrap();
        drop(conn);
        let d = Daemon::start_env(
            copy.path(),
            &["--config", self.config.to_str().unwrap()],
            &self.env,
        );
        (copy, d)
    }
}

#[test]
fn every_capability_decision_is_recorded_and_tampering_is_found() {
    let (scene, d) = Scene::new();
    let records = audit_json(&d, &[]);
    let seen = decisions(&records);
    for (cap, allowed) in [
        ("exec", true),
        ("exec", false),
        ("net", true),
        ("net", false),
        ("fs", true),
        ("fs", false),
        ("env", true),
        ("secrets", true),
    ] {
        assert!(
            seen.contains(&(cap.to_string(), allowed)),
            "no {cap} record with allowed = {allowed}: {seen:?}"
        );
    }
    let decided: Vec<&Value> = records.iter().filter(|r| r["kind"] == "decision").collect();
    assert_eq!(decided.len(), 1, "{records:?}");
    assert_eq!(decided[0]["allowed"], false);
    assert_eq!(decided[0]["detail"], "echo please");
    assert!(
        decided[0]["by"].as_str().unwrap().starts_with("cli:"),
        "{}",
        decided[0]
    );
    let secret = records
        .iter()
        .find(|r| r["capability"] == "secrets")
        .unwrap();
    assert_eq!(secret["detail"], "AUDIT_TOKEN to printenv");
    assert!(
        !serde_json::to_string(&records)
            .unwrap()
            .contains("a-token-of-some-length"),
        "the trail never holds a secret's value"
    );
    // Every call record names its task and host; seqs have no gap.
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let task = records[0]["task"].as_str().unwrap().to_string();
    let of_task = audit_json(&d, &["--task", &task]);
    assert!(!of_task.is_empty() && of_task.iter().all(|r| r["task"] == task.as_str()));
    assert!(audit_json(&d, &["--since", "2099-01-01T00:00:00Z"]).is_empty());
    assert_eq!(audit_json(&d, &["--since", "1h"]).len(), records.len());
    let out = d.cli(&["audit", "show", "--since", "yesterday-ish"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let out = d.cli(&["audit", "show"]);
    assert!(
        out.stdout.contains("DENIED") && out.stdout.contains("allowed"),
        "{}",
        out.stdout
    );

    // Untouched: it verifies, and names its head.
    let out = d.cli(&["audit", "verify"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("{} record(s)", records.len())),
        "{}",
        out.stdout
    );
    let last_hash = records.last().unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(out.stdout.contains(&last_hash), "{}", out.stdout);

    // Export round trip: the file verifies on its own, and not once
    // edited.
    let export = scene.data.path().join("audit.jsonl");
    let out = d.cli(&[
        "audit",
        "export",
        "--format",
        "jsonl",
        "-o",
        export.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&export).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, records, "the export is the records, one per line");
    let out = d.cli(&["audit", "verify", "--file", export.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let edited = text.replacen("\"allowed\":false", "\"allowed\":true", 1);
    std::fs::write(&export, edited).unwrap();
    let out = d.cli(&[
        "audit",
        "verify",
        "--file",
        export.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let first_denied = records.iter().find(|r| r["allowed"] == false).unwrap()["seq"].clone();
    assert_eq!(out.json()["broken"]["seq"], first_denied);
    drop(d);

    // Directly in the database: each change is found, where it is.
    let denied = first_denied.as_u64().unwrap();
    for (edit, at, says) in [
        (
            format!(
                "UPDATE audit SET body = replace(body, '\"allowed\":false', '\"allowed\":true') WHERE seq = {denied}"
            ),
            denied,
            "edited",
        ),
        ("DELETE FROM audit WHERE seq = 3".to_string(), 3, "missing"),
        (
            "UPDATE audit SET body = CASE seq WHEN 4 THEN (SELECT body FROM audit WHERE seq = 5) \
             ELSE (SELECT body FROM audit WHERE seq = 4) END WHERE seq IN (4, 5)"
                .to_string(),
            4,
            "moved",
        ),
        (
            format!("DELETE FROM audit WHERE seq = {}", records.len()),
            records.len() as u64,
            "missing",
        ),
    ] {
        let (_copy, d) = scene.tampered(&edit);
        let out = d.cli(&["audit", "verify"]);
        assert_eq!(out.code, 1, "{edit}: {}", out.stdout);
        assert!(
            out.stderr.contains(&format!("at record #{at}")) && out.stderr.contains(says),
            "{edit}: {}",
            out.stderr
        );
    }
}

/// The same tampering, directly in PostgreSQL.
#[test]
fn tampering_in_postgresql_is_found() {
    let Some(server) = testing::shared("audit") else {
        return;
    };
    let (url, store) = database(server);
    let host = spawner(store.clone(), None);
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.spawn(host.clone().work(shutdown));
    let skill = skill_dir(
        "hostile",
        "[exec]\nallow = [ { program = \"echo\", args = [\"**\"] } ]\n",
    );
    let g = grants(&["--allow-exec", "echo **"]);
    for program in ["echo", "ls", "echo", "ls", "echo"] {
        let id = host
            .spawn(SpawnRequest {
                grants: g.clone(),
                ..SpawnRequest::new(
                    skill.path(),
                    json!({"case": "exec", "program": program, "args": ["x"]}).to_string(),
                )
            })
            .unwrap()
            .id;
        let t = rt.block_on(host.wait(id)).unwrap();
        assert!(t.state.is_terminal());
    }
    let records = store.audit(&AuditFilter::default()).unwrap();
    assert_eq!(records.len(), 5, "{records:?}");
    assert_eq!(
        records.iter().map(|r| r.allowed).collect::<Vec<_>>(),
        vec![true, false, true, false, true]
    );
    assert!(verify_store(&*store).unwrap().broken.is_none());
    let check = |edit: &str, at: u64, says: &str| {
        server
            .sql(&url, "CREATE TABLE audit_saved AS SELECT * FROM audit")
            .unwrap();
        server.sql(&url, edit).unwrap();
        let v = verify_store(&*store).unwrap();
        let b = v.broken.unwrap_or_else(|| panic!("{edit}: not found"));
        assert_eq!(b.seq, at, "{edit}: {}", b.problem);
        assert!(b.problem.contains(says), "{edit}: {}", b.problem);
        // Put the rows back as they were.
        server
            .sql(
                &url,
                "DELETE FROM audit; INSERT INTO audit SELECT * FROM audit_saved; DROP TABLE audit_saved",
            )
            .unwrap();
        assert!(verify_store(&*store).unwrap().broken.is_none());
    };
    check(
        "UPDATE audit SET body = replace(body, '\"allowed\":false', '\"allowed\":true') WHERE seq = 2",
        2,
        "edited",
    );
    check("DELETE FROM audit WHERE seq = 3", 3, "missing");
    check(
        "UPDATE audit SET body = CASE seq WHEN 4 THEN (SELECT body FROM audit WHERE seq = 2) \
         ELSE (SELECT body FROM audit WHERE seq = 4) END WHERE seq IN (2, 4)",
        2,
        "moved",
    );
    check("DELETE FROM audit WHERE seq = 5", 5, "missing");
    // Pruning the tasks leaves a record that vouches for what went.
    let pruned = store.prune(i64::MAX, None).unwrap();
    assert_eq!(pruned.len(), 5);
    let left = store.audit(&AuditFilter::default()).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].through, Some(5));
    let v = verify_store(&*store).unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    assert!(store.get(records[0].task.unwrap()).is_err());
}
