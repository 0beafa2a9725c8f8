//! `skillbox serve` as a real process, driven through the CLI and raw
//! HTTP: the task lifecycle, `kill -9` and resume, and bad API input.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

/// A daemon process on its own data dir; killed when dropped. Its stderr
/// goes to DIR/serve.log.
pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
}

impl Daemon {
    pub fn start(dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_env(dir, extra, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables.
    pub fn start_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let _ = std::fs::remove_file(dir.join("skillbox.sock"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("serve.log"))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let child = Command::new(env!("CARGO_BIN_EXE_skillbox"))
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("SKILLBOX_CACHE_DIR", cli_cache_dir())
            .env("SKILLBOX_KEYS", "/nonexistent/skillbox-keys")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            dir: dir.to_owned(),
        };
        for _ in 0..600 {
            if UnixStream::connect(d.dir.join("skillbox.sock")).is_ok() {
                return d;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the daemon did not start: {}", d.log());
    }

    /// What the daemon wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    pub fn kill9(mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }

    /// Runs `skillbox ARGS --data-dir DIR`.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let mut all: Vec<&str> = args.to_vec();
        let dir = self.dir.to_str().unwrap().to_string();
        all.extend(["--data-dir", &dir]);
        cli(&all, &[])
    }

    /// A raw HTTP request on the socket: (status, body).
    pub fn http(&self, request: &[u8]) -> (u16, String) {
        let mut s = UnixStream::connect(self.dir.join("skillbox.sock")).unwrap();
        // The server may answer (413) and close before a huge body is sent.
        let _ = s.write_all(request);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, out)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

pub fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn spawn_list_logs_wait_through_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &[]);
    let skill = real_skill("hello");
    let out = d.cli(&[
        "spawn",
        skill.path().to_str().unwrap(),
        "--input",
        r#"{"name": "bg"}"#,
        "--label",
        "greet",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_string();
    assert_eq!(id.len(), 26, "a ULID: {id}");

    let out = d.cli(&["tasks", "wait", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Hello, bg"), "{}", out.stdout);

    let out = d.cli(&["tasks", "list", "--label", "greet"]);
    assert!(
        out.stdout.contains(&id) && out.stdout.contains("succeeded"),
        "{}",
        out.stdout
    );
    let out = d.cli(&["tasks", "list", "--json", "--state", "succeeded"]);
    assert_eq!(out.json()[0]["id"], id.as_str());

    for follow in [false, true] {
        let mut args = vec!["tasks", "logs", id.as_str()];
        if follow {
            args.push("-f");
        }
        let out = d.cli(&args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.contains("queued -> running"), "{}", out.stdout);
        assert!(out.stdout.contains("greeting bg"), "{}", out.stdout);
        assert!(
            out.stdout.contains("running -> succeeded"),
            "{}",
            out.stdout
        );
    }
    let out = d.cli(&["tasks", "show", &id, "--json"]);
    assert_eq!(out.json()["outcome"]["outcome"], "succeeded");

    // Refusals come back with the same exit codes as `run`.
    let report = real_skill("disk-report");
    let out = d.cli(&["spawn", report.path().to_str().unwrap()]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("--allow-read"), "{}", out.stderr);
    let out = d.cli(&["tasks", "show", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    assert_eq!(out.code, 7, "{}", out.stderr);
    // A task's scratch directory lives under the data dir; `delete`
    // removes it when the task ends.
    let out = d.cli(&[
        "spawn",
        skill.path().to_str().unwrap(),
        "--cleanup",
        "delete",
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.json()["id"].as_str().unwrap().to_string();
    let out = d.cli(&["tasks", "wait", &id, "--json"]);
    assert_eq!(out.json()["state"], "succeeded", "{}", out.stdout);
    assert_eq!(out.json()["spec"]["cleanup"], "delete");
    let scratch = d.dir.join("scratch");
    assert_eq!(
        out.json()["spec"]["scratch"].as_str(),
        scratch.to_str(),
        "{}",
        out.stdout
    );
    assert!(!scratch.join(&id).exists(), "deleted at the end");
}

/// `logs -f` and `wait` on a terminal draw a live progress bar below the
/// lines (`script` gives them a pseudo-terminal); through a pipe they print
/// the lines alone.
#[test]
fn logs_follow_and_wait_show_a_progress_bar_on_a_terminal() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &[]);
    let hostile = guest("hostile");
    let out = d.cli(&[
        "spawn",
        hostile.to_str().unwrap(),
        "--input",
        r#"{"case": "progress", "steps": 4}"#,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_string();
    let on_tty = |sub: &str| {
        let cmd = format!(
            "{} tasks {sub} {id} --data-dir {}",
            env!("CARGO_BIN_EXE_skillbox"),
            data.path().display()
        );
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("SKILLBOX_CACHE_DIR", cli_cache_dir())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let logs = on_tty("logs -f");
    assert!(logs.contains("[ 50%] step 2/4"), "the lines: {logs}");
    assert!(
        logs.contains("]  75% step 3/4"),
        "the bar follows the progress: {logs}"
    );
    let wait = on_tty("wait");
    assert!(wait.contains("4 steps"), "the summary: {wait}");
    let piped = d.cli(&["tasks", "logs", &id, "-f"]);
    assert!(piped.stdout.contains("[ 50%] step 2/4"), "{}", piped.stdout);
    assert!(
        !piped.stdout.contains("]  75%") && !piped.stderr.contains("]  75%"),
        "no bar without a terminal: {piped:?}"
    );
}

#[test]
fn a_second_daemon_and_a_missing_daemon_are_clear_errors() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &[]);
    let out = cli(&["serve", "--data-dir", data.path().to_str().unwrap()], &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("already serves"), "{}", out.stderr);
    drop(d);
    let empty = tempfile::tempdir().unwrap();
    let skill = real_skill("hello");
    let out = cli(
        &[
            "spawn",
            skill.path().to_str().unwrap(),
            "--data-dir",
            empty.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("skillbox serve"), "{}", out.stderr);
}

#[test]
fn bad_api_input_gets_4xx_and_the_daemon_keeps_serving() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &[]);
    let skill = real_skill("hello");
    let path = skill.path().to_str().unwrap();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            post("/v1/tasks", &json!({"skill": path, "bogus": 1}).to_string()),
            400,
            "unknown field",
        ),
        (post("/v1/tasks", "{not json"), 400, "bad-request"),
        (
            post("/v1/tasks", &json!({"skill": 5}).to_string()),
            400,
            "bad-request",
        ),
        (
            post("/v1/tasks", &json!({"skill": "relative/path"}).to_string()),
            422,
            "absolute",
        ),
        (
            post(
                "/v1/tasks",
                &json!({"skill": path, "grants": {"exec": {"allow_all": true}}}).to_string(),
            ),
            400,
            "unknown field",
        ),
        (
            post(
                "/v1/tasks",
                &format!("{{\"skill\": \"{}\"}}", "x".repeat(2 << 20)),
            ),
            413,
            "too-large",
        ),
        (get("/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404, "no task"),
        (get("/v1/tasks/not-an-id"), 404, "not a task id"),
        (get("/v1/tasks?state=exploded"), 400, "bad-request"),
        (get("/v1/nope"), 404, "no such endpoint"),
    ];
    for (req, status, needle) in cases {
        let (got, body) = d.http(&req);
        assert_eq!(got, status, "{body}");
        assert!(body.contains(needle), "{needle}: {body}");
    }
    let (status, body) = d.http(&post(
        "/v1/tasks",
        &json!({"skill": path, "input": {"name": "ok"}}).to_string(),
    ));
    assert_eq!(status, 201, "{body}");
    let (status, _) = d.http(&get("/v1/health"));
    assert_eq!(status, 200);
}

#[test]
fn tcp_needs_the_bearer_token() {
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = cli(
        &[
            "serve",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--listen",
            &addr,
        ],
        &[],
    );
    assert_ne!(out.code, 0, "refuses TCP without a token");
    assert!(out.stderr.contains("token"), "{}", out.stderr);
    let out = cli(
        &[
            "serve",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--listen",
            &addr,
            "--token",
            "s3cret",
        ],
        &[],
    );
    assert_eq!(out.code, 1, "refuses a short token: {}", out.stderr);
    assert!(
        out.stderr
            .contains("--token is 6 bytes; a bearer token needs at least 16"),
        "{}",
        out.stderr
    );
    const TOKEN: &str = "s3cret-0123456789abcdef";
    let _d = Daemon::start(data.path(), &["--listen", &addr, "--token", TOKEN]);
    let request = |auth: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET /v1/tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(request("").starts_with("HTTP/1.1 401"));
    assert!(request("Authorization: Bearer wrong\r\n").starts_with("HTTP/1.1 401"));
    assert!(request(&format!("Authorization: Bearer {TOKEN}\r\n")).starts_with("HTTP/1.1 200"));
    let out = cli(
        &["tasks", "list", "--json", "--addr", &addr, "--token", TOKEN],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// `kill -9` of the daemon mid-task: the next daemon marks the task
/// interrupted at once and resumes it from its checkpoint; no step runs
/// twice.
#[test]
fn kill_9_then_restart_resumes_from_the_checkpoint() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let skill = skill_dir("hostile", "[fs]\n\"/w\" = { access = \"read-write\" }\n");
    let d = Daemon::start(data.path(), &[]);
    let input = json!({"case": "steps", "journal": "/w/journal", "steps": 3, "pause_after": 1, "pause_ms": 600_000});
    let out = d.cli(&[
        "spawn",
        skill.path().to_str().unwrap(),
        "--allow-write",
        &format!("{}:/w", work.path().display()),
        "--input",
        &input.to_string(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_string();
    let journal = work.path().join("journal");
    for _ in 0..2000 {
        if d.cli(&["tasks", "logs", &id])
            .stdout
            .contains("saved \"step-1\"")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_to_string(&journal).unwrap(), "step 1\n");
    // Clients following the task when the daemon dies wait for it to come
    // back and go on.
    let dir = data.path().to_str().unwrap();
    let waiting = cli_background(&["tasks", "wait", &id, "--data-dir", dir]);
    let following = cli_background(&["tasks", "logs", "-f", &id, "--data-dir", dir]);
    std::thread::sleep(Duration::from_millis(500));
    d.kill9();
    std::thread::sleep(Duration::from_millis(500));

    let d = Daemon::start(data.path(), &[]);
    let waited = waiting.finish();
    let followed = following.finish();
    for (what, out) in [("wait", &waited), ("logs -f", &followed)] {
        assert_eq!(out.code, 0, "{what}: {out:?}");
        assert!(
            out.stderr.contains(&format!(
                "the skillbox daemon at {dir}/skillbox.sock went away"
            )) && out.stderr.contains("waiting up to 1m for it to come back")
                && out.stderr.contains("is back"),
            "{what}: {}",
            out.stderr
        );
    }
    // Its time is the task's, from its creation, not the last attempt's.
    assert!(
        waited.stdout.contains("**hostile** succeeded in ")
            && waited.stdout.contains(" over 2 attempts (the last ran "),
        "{}",
        waited.stdout
    );
    // From the last event seen: nothing twice, nothing missed.
    let f = &followed.stdout;
    assert_eq!(f.matches("saved \"step-1\"").count(), 1, "{f}");
    assert!(
        f.contains("running -> interrupted") && f.contains("-> succeeded"),
        "{f}"
    );

    let out = d.cli(&["tasks", "wait", &id, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = out.json();
    assert_eq!(t["state"], "succeeded");
    assert_eq!(t["attempt"], 2);
    assert_eq!(t["outcome"]["data"]["skipped"], json!([1]));
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap(),
        "step 1\nstep 2\nstep 3\n"
    );
    let logs = d.cli(&["tasks", "logs", &id]).stdout;
    assert!(logs.contains("running -> interrupted"), "{logs}");
    assert!(logs.contains("interrupted -> running"), "{logs}");
}

/// `kill -9` of the daemon while a task waits on an exec'd program: the
/// program dies with the daemon (its jail has a parent-death signal, and
/// the jail's PID namespace dies with it), even one that left its process
/// group; the next daemon decides the task's fate (here: failed, since the
/// skill has no checkpoints and does not allow a restart).
#[test]
fn an_exec_d_program_dies_with_a_killed_daemon() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let skill = skill_dir(
        "hostile",
        "[fs]\n\"/w\" = { access = \"read-write\" }\n[exec]\nallow = [ { program = \"sh\", args = [\"-c\", \"*\"] } ]\n",
    );
    let d = Daemon::start(data.path(), &[]);
    let sleep = format!("{}", 400_000 + std::process::id() % 100_000);
    let script = format!("setsid sleep {sleep} & touch started; wait");
    let input = json!({"case": "exec", "program": "sh", "args": ["-c", script], "cwd": "/w"});
    let out = d.cli(&[
        "spawn",
        skill.path().to_str().unwrap(),
        "--allow-write",
        &format!("{}:/w", work.path().display()),
        "--allow-exec",
        "sh -c *",
        "--input",
        &input.to_string(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_string();
    let marker = format!("sleep {sleep}");
    for _ in 0..2000 {
        if work.path().join("started").exists() && !running_with(&marker).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!running_with(&marker).is_empty(), "the program started");
    d.kill9();
    assert!(
        wait_none_with(&marker, Duration::from_secs(10)),
        "the program outlived its daemon"
    );

    let d = Daemon::start(data.path(), &[]);
    let out = d.cli(&["tasks", "wait", &id, "--json"]);
    let t = out.json();
    assert_eq!(t["state"], "failed", "{t}");
    assert!(
        t["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("not safe"),
        "{t}"
    );
}

/// host/openapi.json and the server agree: every documented operation is
/// served (its path answers something other than "no such endpoint") and
/// documents the statuses the server gives, and every task the server
/// returns has the documented required fields.
/// Reads the stream until `want` is in what was read after `from`; all
/// that was read. A stream that stalls fails the test (read timeout).
fn read_until(stream: &mut UnixStream, seen: &mut String, from: usize, want: &str) {
    let mut buf = [0u8; 4096];
    while !seen[from..].contains(want) {
        let n = stream
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("waiting for {want:?}: {e}; read so far:\n{seen}"));
        assert!(n > 0, "the stream ended before {want:?}:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[test]
fn the_events_stream_sends_every_tasks_changes() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &[]);
    let skill = real_skill("hello");
    let spawn = || {
        let out = d.cli(&["spawn", skill.path().to_str().unwrap(), "--input", "{}"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout.trim().to_string()
    };
    let before = spawn();
    assert_eq!(d.cli(&["tasks", "wait", &before]).code, 0);

    let mut s = UnixStream::connect(data.path().join("skillbox.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(&get("/v1/events?limit=10")).unwrap();
    let mut seen = String::new();
    read_until(&mut s, &mut seen, 0, "event: ready");
    assert!(seen.contains("text/event-stream"), "{seen}");
    let snapshot = seen.clone();
    assert!(
        snapshot.contains(&format!("\"id\":\"{before}\"")) && snapshot.contains("succeeded"),
        "the snapshot has the ended task: {snapshot}"
    );

    // A task spawned now is sent as it goes, up to its end.
    let mark = seen.len();
    let live = spawn();
    read_until(&mut s, &mut seen, mark, &format!("\"id\":\"{live}\""));
    let ended = |seen: &str| {
        seen.lines().any(|l| {
            l.starts_with("data: ")
                && l.contains(&format!("\"id\":\"{live}\""))
                && l.contains("\"state\":\"succeeded\"")
        })
    };
    while !ended(&seen[mark..]) {
        let len = seen.len();
        read_until(&mut s, &mut seen, len, "\n\n");
    }

    // A deleted task is announced as removed.
    let mark = seen.len();
    let out = d.cli(&["tasks", "rm", &before]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    read_until(
        &mut s,
        &mut seen,
        mark,
        &format!("event: removed\ndata: {{\"id\":\"{before}\"}}"),
    );
}

#[test]
fn the_openapi_document_matches_the_server() {
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("host/openapi.json")).unwrap())
            .unwrap();
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &[]);
    let skill = real_skill("hello");
    let (status, body) = d.http(&post(
        "/v1/tasks",
        &json!({"skill": skill.path(), "input": {}}).to_string(),
    ));
    assert_eq!(status, 201, "{body}");
    let task: serde_json::Value =
        serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let id = task["id"].as_str().unwrap().to_string();
    for field in spec["components"]["schemas"]["Task"]["required"]
        .as_array()
        .unwrap()
    {
        assert!(
            task.get(field.as_str().unwrap()).is_some(),
            "task lacks documented field {field}"
        );
    }
    let paths = spec["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 20, "update this test with the spec");
    let documents = |method: &str, path: &str, status: u16| {
        let responses = paths[path][method]["responses"].as_object().unwrap();
        assert!(
            responses.contains_key(&status.to_string()),
            "{method} {path} answered {status}, undocumented"
        );
    };
    for (path, ops) in paths {
        let concrete = path
            .replace("{id}", &id)
            .replace("{name}", "no-such-schedule");
        for (method, op) in ops.as_object().unwrap() {
            // Deleting goes last, below; `/v1/events` never ends (see
            // `the_events_stream_sends_every_tasks_changes`).
            if (method == "delete" && path.contains("{id}"))
                || path.ends_with("/prune")
                || path == "/v1/events"
            {
                continue;
            }
            let req = match method.as_str() {
                "get" => get(&format!(
                    "{concrete}{}",
                    if path.ends_with("/events") {
                        "?follow=false"
                    } else {
                        ""
                    }
                )),
                "post" if path == "/v1/tasks" => {
                    post(&concrete, &json!({"skill": skill.path()}).to_string())
                }
                "post" => post(&concrete, ""),
                "delete" => {
                    format!("DELETE {concrete} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .into_bytes()
                }
                other => panic!("unexpected method {other}"),
            };
            let (status, body) = d.http(&req);
            assert!(
                !body.contains("no such endpoint"),
                "{method} {path} is documented but not served"
            );
            let documented = op["responses"].as_object().unwrap();
            assert!(
                documented.contains_key(&status.to_string()),
                "{method} {path} answered {status}, undocumented"
            );
        }
    }
    let (status, _) = d.http(&get(&format!("/v1/tasks/{id}/wait")));
    assert_eq!(status, 200);
    // Every stored event is an Event as documented.
    let event = jsonschema::validator_for(&json!({
        "$ref": "#/components/schemas/Event",
        "components": spec["components"],
    }))
    .unwrap();
    let (status, body) = d.http(&get(&format!("/v1/tasks/{id}/events?follow=false")));
    assert_eq!(status, 200, "{body}");
    let events: Vec<serde_json::Value> =
        serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert!(events.len() >= 3, "{events:?}");
    for e in &events {
        let errors: Vec<String> = event.iter_errors(e).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{e} is not an Event: {errors:?}");
    }
    let delete = |path: &str| {
        format!("DELETE {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
    };
    let (status, body) = d.http(&delete(&format!("/v1/tasks/{id}")));
    assert_eq!(status, 200, "{body}");
    documents("delete", "/v1/tasks/{id}", status);
    let (status, _) = d.http(&delete(&format!("/v1/tasks/{id}")));
    documents("delete", "/v1/tasks/{id}", status);
    for body in ["{}", "{\"older_than_ms\": 1000}", "[]"] {
        let (status, _) = d.http(&post("/v1/tasks/prune", body));
        documents("post", "/v1/tasks/prune", status);
    }
    let (status, _) = d.http(&get("/v1/tasks?id_prefix=a%25"));
    assert_eq!(status, 400);
    documents("get", "/v1/tasks", status);
    let (status, _) = d.http(&get("/v1/undocumented"));
    assert_eq!(status, 404);
}

/// Finished tasks are deleted after the retention period (0s here, checked
/// at start); unfinished ones never are.
#[test]
fn finished_tasks_are_pruned_after_retention() {
    let data = tempfile::tempdir().unwrap();
    let skill = real_skill("hello");
    let d = Daemon::start(data.path(), &[]);
    let out = d.cli(&["spawn", skill.path().to_str().unwrap()]);
    let id = out.stdout.trim().to_string();
    assert_eq!(d.cli(&["tasks", "wait", &id]).code, 0);
    drop(d);
    let d = Daemon::start(data.path(), &["--retain", "7d"]);
    assert_eq!(
        d.cli(&["tasks", "show", &id]).code,
        0,
        "kept within retention"
    );
    drop(d);
    std::thread::sleep(Duration::from_millis(20));
    let d = Daemon::start(data.path(), &["--retain", "0s"]);
    let mut gone = false;
    for _ in 0..200 {
        if d.cli(&["tasks", "show", &id]).code == 7 {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(gone, "not pruned");
}

/// A read-only or full data dir is a clear error at start, not a panic.
/// (The tests run as root, which ignores permission bits, so the data dir
/// is a tmpfs mounted read-only or tiny, in a private mount namespace.)
#[test]
fn a_read_only_or_full_data_dir_is_a_clear_error() {
    for (opts, needle) in [("ro,size=1m", "read-only"), ("size=4k", "full")] {
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "mount -t tmpfs -o {opts} tmpfs {d} && exec {exe:?} serve --data-dir {d}",
            d = dir.path().display(),
            exe = env!("CARGO_BIN_EXE_skillbox"),
        );
        let out = Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(!out.status.success(), "{opts}: started anyway");
        assert!(!stderr.contains("panicked"), "{opts}: {stderr}");
        assert!(stderr.contains("error:"), "{opts}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{opts}: expected {needle:?} in: {stderr}"
        );
    }
}

/// The event stream resumes after Last-Event-ID and ends with the task.
#[test]
fn event_streams_resume_after_last_event_id() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &[]);
    let skill = real_skill("hello");
    let id = d
        .cli(&["spawn", skill.path().to_str().unwrap()])
        .stdout
        .trim()
        .to_string();
    assert_eq!(d.cli(&["tasks", "wait", &id]).code, 0);
    let req = format!(
        "GET /v1/tasks/{id}/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nLast-Event-ID: 3\r\n\r\n"
    );
    let (status, body) = d.http(req.as_bytes());
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("text/event-stream"), "{body}");
    let ids: Vec<u64> = body
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(ids.first(), Some(&4), "{body}");
    assert!(ids.windows(2).all(|w| w[0] + 1 == w[1]), "{ids:?}");
    assert!(
        body.contains("\"to\":\"succeeded\""),
        "the stream ends after the final state: {body}"
    );
}

/// `skillbox serve` under umask 022 in `dir`, its stderr in `log`; killed
/// when dropped.
fn serve_under_umask_022(dir: &Path, log: &Path) -> Daemon {
    let child = Command::new("sh")
        .args(["-c", "umask 022; exec \"$0\" serve --data-dir \"$1\""])
        .arg(env!("CARGO_BIN_EXE_skillbox"))
        .arg(dir)
        .env("SKILLBOX_CACHE_DIR", cli_cache_dir())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let d = Daemon {
        child,
        dir: dir.to_owned(),
    };
    for _ in 0..600 {
        if UnixStream::connect(dir.join("skillbox.sock")).is_ok() {
            return d;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "the daemon did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Every entry under `dir` (and `dir` itself) whose mode lets anyone but
/// the owner in: `path mode` lines.
fn open_to_others(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut wide = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            wide.push(format!("{} {mode:o}", p.display()));
        }
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    wide
}

/// The data dir holds every task's input, summary and events: it is 0700
/// and everything in it (the store, its WAL and shared-memory files, the
/// socket, the lock, scratch directories) 0600 or 0700 from the first
/// write, whatever the umask; a data dir left wider by an older version is
/// tightened when the daemon starts, and the log says so.
#[test]
fn the_data_dir_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("data");
    let log = top.path().join("serve.log");
    let d = serve_under_umask_022(&dir, &log);
    let skill = real_skill("hello");
    let out = d.cli(&["spawn", skill.path().to_str().unwrap(), "--input", "{}"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = d.cli(&["tasks", "wait", out.stdout.trim()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for f in ["tasks.db", "tasks.db-wal", "tasks.db-shm", "skillbox.sock"] {
        assert!(dir.join(f).exists(), "{f} is missing");
    }
    assert_eq!(open_to_others(&dir), Vec::<String>::new());
    drop(d);

    // As an older skillbox left it.
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    chmod(&dir, 0o755);
    for f in ["tasks.db", "tasks.db-wal", "tasks.db-shm"] {
        if dir.join(f).exists() {
            chmod(&dir.join(f), 0o644);
        }
    }
    let d = serve_under_umask_022(&dir, &log);
    let out = d.cli(&["tasks", "list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(open_to_others(&dir), Vec::<String>::new());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("tightened"), "{text}");
}

/// The task commands speak plainly: a bad state name lists the good ones,
/// an unknown task and a refused spawn say what to do without HTTP
/// statuses, and cancelling a task that already ended says so.
#[test]
fn task_commands_speak_plainly() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &[]);
    let out = d.cli(&["tasks", "list", "--state", "runing"]);
    assert_eq!(out.code, 2, "a usage error: {}", out.stderr);
    assert!(
        out.stderr
            .contains("\"runing\" is not one of: queued, running, awaiting_approval, succeeded"),
        "{}",
        out.stderr
    );
    let out = d.cli(&["tasks", "show", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    assert_eq!(out.code, 7, "not found: {}", out.stderr);
    assert!(!out.stderr.contains("HTTP"), "{}", out.stderr);
    // A spawned task granted less than it asked for is announced like a
    // run, and its refused write is in its logs.
    let narrowed = skill_dir("hostile", "[fs]\n\"/data\" = { access = \"read-write\" }\n");
    let files = tempfile::tempdir().unwrap();
    let read = format!("{}:/data", files.path().display());
    let out = d.cli(&[
        "spawn",
        narrowed.path().to_str().unwrap(),
        "--allow-read",
        &read,
        "--input",
        r#"{"case": "write", "path": "/data/out.txt", "content": "x"}"#,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("warning: fs /data (read-write)")
            && out
                .stderr
                .contains(&format!("--allow-write {}:/data", files.path().display())),
        "{}",
        out.stderr
    );
    let narrowed_id = out.stdout.trim().to_string();
    d.cli(&["tasks", "wait", &narrowed_id]);
    let logs = d.cli(&["tasks", "logs", &narrowed_id]).stdout;
    assert!(
        logs.contains("deny [fs] open out.txt for writing: /data is granted read-only"),
        "{logs}"
    );
    // A skill that is not there is not found either, run or spawned.
    let missing = data.path().join("no-such-skill");
    let out = d.cli(&["spawn", missing.to_str().unwrap()]);
    assert_eq!(out.code, 7, "{}", out.stderr);
    let out = cli(&["run", missing.to_str().unwrap()], &[]);
    assert_eq!(out.code, 7, "{}", out.stderr);
    assert!(out.stderr.contains("no-such-skill"), "{}", out.stderr);
    let report = real_skill("disk-report");
    let out = d.cli(&["spawn", report.path().to_str().unwrap()]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("--partial") && !out.stderr.contains("HTTP"),
        "{}",
        out.stderr
    );
    let hello = real_skill("hello");
    let id = d
        .cli(&["spawn", hello.path().to_str().unwrap()])
        .stdout
        .trim()
        .to_string();
    // The commands hints show reach this daemon: its data dir is not the
    // default one.
    let dir_flag = format!("--data-dir {}", d.dir.display());
    let out = d.cli(&["tasks", "wait", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("full logs: `skillbox tasks logs {id} {dir_flag}`")),
        "{}",
        out.stdout
    );
    let out = d.cli(&["tasks", "show", &id]);
    assert!(
        out.stdout
            .contains(&format!("logs: skillbox tasks logs {id} {dir_flag}")),
        "{}",
        out.stdout
    );
    let out = d.cli(&["tasks", "cancel", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "{id} had already ended (succeeded); nothing to cancel"
        )),
        "{}",
        out.stdout
    );

    // No daemon: exit 8, at once for a command, after --reconnect for a
    // wait.
    let dir = data.path().to_str().unwrap().to_string();
    d.kill9();
    let out = cli(&["tasks", "list", "--data-dir", &dir], &[]);
    assert_eq!(out.code, 8, "{}", out.stderr);
    assert!(
        out.stderr.contains("start one with `skillbox serve`"),
        "{}",
        out.stderr
    );
    let out = cli(
        &[
            "tasks",
            "wait",
            &id,
            "--reconnect",
            "1s",
            "--data-dir",
            &dir,
        ],
        &[],
    );
    assert_eq!(out.code, 8, "{}", out.stderr);
    assert!(
        out.stderr.contains("waiting up to 1s for it to come back")
            && out
                .stderr
                .contains("gave up: the daemon did not come back within 1s"),
        "{}",
        out.stderr
    );
}

/// Tasks are handled as docker handles containers: a unique start of an
/// id names a task, `list` filters and prints ids (`-q`) or a template
/// (`--format`), with absolute times beside relative ones, `logs --tail`
/// and `--since`, and `rm` / `prune` delete ended tasks.
#[test]
fn tasks_are_managed_like_containers() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &[]);
    let hello = real_skill("hello");
    let mut ids = Vec::new();
    for label in ["a", "b", "c"] {
        let out = d.cli(&["spawn", hello.path().to_str().unwrap(), "--label", label]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        ids.push(out.stdout.trim().to_string());
    }
    for id in &ids {
        assert_eq!(d.cli(&["tasks", "wait", id]).code, 0);
    }

    // A unique start of an id, in either case; a shared one is refused
    // with what it matched; none is not found.
    let short = ids[0][..16].to_ascii_lowercase();
    let out = d.cli(&["tasks", "show", &short, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["id"], ids[0].as_str());
    let common = (1..26)
        .rev()
        .find(|&n| ids.iter().all(|id| id[..n] == ids[0][..n]))
        .unwrap();
    let out = d.cli(&["tasks", "logs", &ids[0][..common]]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr.contains("starts more than one task id"),
        "{}",
        out.stderr
    );
    let out = d.cli(&["tasks", "wait", "ZZZZZZ"]);
    assert_eq!(out.code, 7, "{}", out.stderr);
    let out = d.cli(&["tasks", "list", "--id", "a-b"]);
    assert_eq!(out.code, 4, "{}", out.stderr);

    // -q, --format, and the table's times.
    let out = d.cli(&["tasks", "list", "-q"]);
    let mut listed: Vec<&str> = out.stdout.lines().collect();
    listed.sort();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let out = d.cli(&["tasks", "list", "--format", "{label}\\t{state}\\t{attempt}"]);
    assert_eq!(
        out.stdout,
        "c\tsucceeded\t1\nb\tsucceeded\t1\na\tsucceeded\t1\n"
    );
    let out = d.cli(&["tasks", "list", "--format", "{id} {owner}"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown field {owner}"),
        "{}",
        out.stderr
    );
    let out = d.cli(&["tasks", "list"]);
    let year = out.stdout.lines().nth(1).unwrap_or_default();
    assert!(
        out.stdout.starts_with("ID ") && out.stdout.contains("DURATION"),
        "{}",
        out.stdout
    );
    assert!(year.contains(" ago)") && year.contains(":"), "{year}");

    // --tail and --since choose among the events.
    let all = d.cli(&["tasks", "logs", &ids[0]]).stdout;
    let tail = d.cli(&["tasks", "logs", &ids[0], "--tail", "2"]).stdout;
    let last_two: Vec<&str> = all.lines().rev().take(2).collect();
    assert_eq!(tail.lines().rev().collect::<Vec<_>>(), last_two);
    assert_eq!(
        d.cli(&["tasks", "logs", &ids[0], "--since", "1h"]).stdout,
        all
    );
    let out = d.cli(&[
        "tasks", "logs", &ids[0], "--since", "1h", "-f", "--tail", "1",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);

    // rm: ended tasks go; a running one stays, with what to do.
    let slow = skill_dir("hostile", "");
    let out = d.cli(&[
        "spawn",
        slow.path().to_str().unwrap(),
        "--input",
        r#"{"case": "sleep", "ms": 600000}"#,
    ]);
    let running = out.stdout.trim().to_string();
    let out = d.cli(&["tasks", "rm", &running, &ids[0]]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("cancel it first") && out.stdout.trim() == ids[0],
        "{out:?}"
    );
    assert_eq!(d.cli(&["tasks", "show", &ids[0]]).code, 7);
    d.cli(&["tasks", "cancel", &running]);
    assert_eq!(d.cli(&["tasks", "wait", &running]).code, 1);
    let out = d.cli(&["tasks", "prune", "--older-than", "1h"]);
    assert_eq!(out.stdout.trim(), "removed 0 ended task(s)");
    let out = d.cli(&["tasks", "prune", "--json"]);
    assert_eq!(out.json()["pruned"], 3);
    assert_eq!(d.cli(&["tasks", "list", "-q"]).stdout, "");
}

/// Colours only on a terminal, and never with NO_COLOR.
#[test]
fn colours_only_on_a_terminal() {
    let cmd = guest("wasi-command");
    // A colour is a select-graphic-rendition sequence, ESC [ … m (a
    // progress bar's cursor moves are not colours).
    let sgr = |s: &str| {
        s.split("\u{1b}[").skip(1).any(|rest| {
            let code: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ';')
                .collect();
            rest[code.len()..].starts_with('m')
        })
    };
    let out = cli(
        &["run", cmd.to_str().unwrap()],
        &[("SKILLBOX_LOG", "debug")],
    );
    assert!(out.stderr.contains("DEBUG") && !sgr(&out.stderr), "a pipe");
    let in_pty = |no_color: Option<&str>| {
        let mut c = Command::new("script");
        c.args(["-qec"])
            .arg(format!(
                "{} run {}",
                env!("CARGO_BIN_EXE_skillbox"),
                cmd.display()
            ))
            .arg("/dev/null")
            .env("SKILLBOX_LOG", "debug")
            .env("SKILLBOX_CACHE_DIR", cli_cache_dir())
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    let colour = in_pty(None);
    assert!(
        colour.contains("DEBUG") && sgr(&colour),
        "a terminal: {colour:.300}"
    );
    let plain = in_pty(Some("1"));
    assert!(
        plain.contains("DEBUG") && !sgr(&plain),
        "NO_COLOR: {plain:.300}"
    );
}
