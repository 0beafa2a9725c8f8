//! The relay against real HTTP receivers on loopback: retries until
//! accepted, signatures checked by the README's own verification snippet,
//! permanent refusals and redelivery, a `kill -9` between a task's end and
//! its delivery, notify modes, and the embedder's callback.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::daemon::Daemon;
use crate::harness::*;

/// What the receiver does with a request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reply {
    /// Answer with this status.
    Status(u16),
    /// Read it, then never answer (until the receiver stops).
    Hang,
}

/// One request the receiver read.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// What it answered (`None`: it hung).
    pub answered: Option<u16>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

struct Shared {
    script: VecDeque<Reply>,
    then: Reply,
    seen: Vec<Received>,
}

/// A scripted HTTP/1.1 receiver on 127.0.0.1.
pub struct Receiver {
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// Listens on a free port: replies from `script` in order, then `then`.
    pub fn start(script: &[Reply], then: Reply) -> Receiver {
        Receiver::on(TcpListener::bind("127.0.0.1:0").unwrap(), script, then)
    }

    /// As [`start`](Self::start), on `port`.
    pub fn start_on(port: u16, script: &[Reply], then: Reply) -> Receiver {
        Receiver::on(
            TcpListener::bind(("127.0.0.1", port)).unwrap(),
            script,
            then,
        )
    }

    fn on(listener: TcpListener, script: &[Reply], then: Reply) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Mutex::new(Shared {
            script: script.iter().copied().collect(),
            then,
            seen: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s, st) = (s.clone(), st.clone());
                        std::thread::spawn(move || serve(conn, &s, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Receiver { port, shared, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn seen(&self) -> Vec<Received> {
        self.shared.lock().unwrap().seen.clone()
    }

    /// Waits until at least `n` requests arrived.
    pub fn wait_for(&self, n: usize) -> Vec<Received> {
        until(&format!("{n} request(s) at the receiver"), || {
            let seen = self.seen();
            (seen.len() >= n).then_some(seen)
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(mut conn: TcpStream, shared: &Mutex<Shared>, stop: &AtomicBool) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let path = lines
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_string();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + len].to_vec();
    let reply = {
        let mut s = shared.lock().unwrap();
        let reply = s.script.pop_front().unwrap_or(s.then);
        s.seen.push(Received {
            path,
            headers,
            body,
            answered: match reply {
                Reply::Status(c) => Some(c),
                Reply::Hang => None,
            },
        });
        reply
    };
    match reply {
        Reply::Status(code) => {
            let text = format!("{{\"status\":{code}}}");
            let _ = write!(
                conn,
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
        Reply::Hang => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Polls `f` until it gives a value; fails after a minute (a safety net,
/// not a timing assertion).
pub fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..1200 {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gave up waiting for {what}");
}

/// A free loopback port with nothing listening on it.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const SECRET: &str = "whsec-0123456789abcdef-test-key";

/// Writes the daemon's config with `sinks` (TOML tables) and fast retries.
pub fn config(dir: &Path, sinks: &str, default: &str) -> PathBuf {
    let key = dir.join("webhook.key");
    std::fs::write(&key, SECRET).unwrap();
    let path = dir.join("skillbox.toml");
    std::fs::write(
        &path,
        format!(
            "[relay]\ndefault = [{default}]\nretry-initial = \"100ms\"\nretry-max = \"300ms\"\ntimeout = \"30s\"\n{}",
            sinks.replace("KEYFILE", key.to_str().unwrap())
        ),
    )
    .unwrap();
    path
}

pub fn webhook(name: &str, url: &str) -> String {
    format!("[relay.sink.{name}]\ntype = \"webhook\"\nurl = \"{url}\"\nsecret-file = \"KEYFILE\"\n")
}

/// `tasks show --json` of `id`.
fn show(d: &Daemon, id: &str) -> serde_json::Value {
    let out = d.cli(&["tasks", "show", id, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json()
}

fn spawn(d: &Daemon, skill: &Path, extra: &[&str]) -> String {
    spawn_with(d, skill, r#"{"name": "relay"}"#, extra)
}

/// Spawns `skill` with `input`; its task id.
fn spawn_with(d: &Daemon, skill: &Path, input: &str, extra: &[&str]) -> String {
    let mut args = vec!["spawn", skill.to_str().unwrap(), "-i", input];
    args.extend(extra);
    let out = d.cli(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout.trim().to_string()
}

/// Verifies a request's signature with the Python snippet from README.md.
fn readme_verifies(r: &Received, body: &[u8]) -> bool {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- webhook-verify -->")
        .expect("README marks the snippet");
    let code = readme[start..]
        .split("```python\n")
        .nth(1)
        .and_then(|s| s.split("\n```").next())
        .expect("a python block after the marker");
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "{code}\n\nimport json, sys\nheaders = json.load(open(sys.argv[1]))\nbody = open(sys.argv[2], 'rb').read()\n\
         sys.exit(0 if verify(sys.argv[3].encode(), headers, body) else 1)\n"
    );
    std::fs::write(dir.path().join("v.py"), script).unwrap();
    let headers = serde_json::json!({
        "Skillbox-Timestamp": r.headers["skillbox-timestamp"],
        "Skillbox-Signature": r.headers["skillbox-signature"],
    });
    std::fs::write(dir.path().join("h.json"), headers.to_string()).unwrap();
    std::fs::write(dir.path().join("b"), body).unwrap();
    let status = std::process::Command::new("python3")
        .arg(dir.path().join("v.py"))
        .arg(dir.path().join("h.json"))
        .arg(dir.path().join("b"))
        .arg(SECRET)
        .status()
        .expect("python3");
    status.success()
}

#[test]
fn webhook_retries_through_an_outage_and_is_accepted_once() {
    let data = tempfile::tempdir().unwrap();
    let port = closed_port();
    let cfg = config(
        data.path(),
        &webhook("ops", &format!("http://127.0.0.1:{port}/skillbox")),
        "\"ops\"",
    );
    let d = Daemon::start(data.path(), &["--config", cfg.to_str().unwrap()]);
    let skill = real_skill("hello");
    let id = spawn(
        &d,
        skill.path(),
        &[
            "--label",
            "greet",
            "--parent-session",
            "agent:main",
            "--parent-channel",
            "telegram",
            "--parent-to",
            "42",
        ],
    );
    // A route is a channel and a recipient, both or neither.
    let half = d.cli(&[
        "spawn",
        skill.path().to_str().unwrap(),
        "--parent-channel",
        "telegram",
    ]);
    assert!(
        half.code == 2 && half.stderr.contains("--parent-to <TO>"),
        "{half:?}"
    );
    let out = d.cli(&["tasks", "wait", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // The receiver is down: attempts fail to connect and are retried.
    const DOWN: u64 = 3;
    let t = until("attempts while the receiver is down", || {
        let t = show(&d, &id);
        (t["deliveries"][0]["attempts"].as_u64()? >= DOWN).then_some(t)
    });
    let first = &t["deliveries"][0];
    assert_eq!(first["state"], "pending", "{first}");
    assert!(
        first["last_error"]
            .as_str()
            .unwrap()
            .contains("connecting to 127.0.0.1"),
        "{first}"
    );
    let human = d.cli(&["tasks", "show", &id]);
    assert!(
        human.stdout.contains("delivery   ops succeeded: pending")
            && human.stdout.contains("last error"),
        "{}",
        human.stdout
    );

    // It comes up: answers 500 once, then 200.
    let rx = Receiver::start_on(port, &[Reply::Status(500)], Reply::Status(200));
    let t = until("the delivery", || {
        let t = show(&d, &id);
        (t["deliveries"][0]["state"] == "delivered").then_some(t)
    });
    let seen = rx.seen();
    assert_eq!(seen.len(), 2, "one 500, one 200: {seen:?}");
    assert_eq!(seen.iter().filter(|r| r.answered == Some(200)).count(), 1);
    let d0 = &t["deliveries"][0];
    let history = d0["history"].as_array().unwrap();
    assert_eq!(d0["attempts"].as_u64().unwrap(), history.len() as u64);
    assert!(history.len() as u64 >= DOWN + 2);
    let statuses: Vec<_> = history.iter().map(|a| a["status"].as_u64()).collect();
    assert_eq!(
        &statuses[statuses.len() - 2..],
        [Some(500), Some(200)],
        "{history:?}"
    );
    assert!(statuses[..statuses.len() - 2].iter().all(Option::is_none));

    // Both attempts carry the same key, a signature the README's snippet
    // verifies, and the notification.
    let key = &seen[0].headers["idempotency-key"];
    assert_eq!(&seen[1].headers["idempotency-key"], key);
    for r in &seen {
        assert_eq!(r.path, "/skillbox");
        assert_eq!(r.headers["skillbox-event"], "task.succeeded");
        assert!(readme_verifies(r, &r.body), "a genuine body verifies");
        skillbox::relay::verify(
            SECRET.as_bytes(),
            &r.headers["skillbox-timestamp"],
            &r.headers["skillbox-signature"],
            &r.body,
            skillbox::store::now_ms() / 1000,
            Duration::from_secs(300),
        )
        .unwrap();
    }
    let mut tampered = seen[1].body.clone();
    let at = tampered.iter().position(|&b| b == b'H').unwrap();
    tampered[at] = b'J';
    assert!(
        !readme_verifies(&seen[1], &tampered),
        "a tampered body does not"
    );

    let n = seen[1].json();
    assert_eq!(n["idempotency_key"], key.as_str());
    assert_eq!(n["task_id"], id.as_str());
    assert_eq!(n["skill"], "hello");
    assert_eq!(n["label"], "greet");
    assert_eq!(n["parent_session"], "agent:main");
    assert_eq!(
        n["parent_route"],
        serde_json::json!({ "channel": "telegram", "to": "42" })
    );
    assert_eq!(n["state"], "succeeded");
    assert_eq!(n["terminal"], true);
    assert_eq!(n["data"]["greeting"], "Hello, relay! 👋");
    assert!(
        n["timings"]["ended_ms"].as_i64().unwrap() >= n["timings"]["created_ms"].as_i64().unwrap()
    );
    let message = n["message"].as_str().unwrap();
    assert!(
        message.starts_with("**hello** (greet) succeeded in "),
        "{message}"
    );
    assert!(message.contains("Hello, relay!"), "{message}");
    // The command reaches this daemon: its data dir is not the default.
    assert!(
        message.contains(&format!("`skillbox tasks logs {id} --data-dir ")),
        "{message}"
    );

    // `tasks wait` printed that same message.
    assert_eq!(out.stdout.trim_end(), message, "{}", out.stdout);
    let human = d.cli(&["tasks", "show", &id]);
    assert!(
        human.stdout.contains("notify     done-only → ops"),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("delivery   ops succeeded: delivered"),
        "{}",
        human.stdout
    );
}

#[test]
fn a_refusal_is_permanent_until_redelivered() {
    let data = tempfile::tempdir().unwrap();
    let rx = Receiver::start(&[Reply::Status(400)], Reply::Status(204));
    let cfg = config(data.path(), &webhook("ops", &rx.url("/in")), "");
    let d = Daemon::start(data.path(), &["--config", cfg.to_str().unwrap()]);
    let skill = real_skill("hello");
    let id = spawn(&d, skill.path(), &["--notify-to", "ops"]);
    let t = until("the refusal", || {
        let t = show(&d, &id);
        (t["deliveries"][0]["state"] == "failed").then_some(t)
    });
    let d0 = &t["deliveries"][0];
    assert_eq!(d0["attempts"], 1, "a 400 is not retried: {d0}");
    assert_eq!(d0["last_status"], 400);
    assert!(
        d0["last_error"].as_str().unwrap().contains("HTTP 400"),
        "{d0}"
    );
    let human = d.cli(&["tasks", "show", &id]);
    assert!(
        human.stdout.contains(
            "ops succeeded: failed, 1 attempt; last error: the webhook answered HTTP 400"
        ),
        "{}",
        human.stdout
    );

    let out = d.cli(&["tasks", "redeliver", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("1 notification(s) queued again"),
        "{}",
        out.stdout
    );
    until("the redelivery", || {
        (show(&d, &id)["deliveries"][0]["state"] == "delivered").then_some(())
    });
    assert_eq!(rx.seen().len(), 2);
    let out = d.cli(&["tasks", "redeliver", &id]);
    assert!(
        out.stdout.contains("no failed notifications"),
        "{}",
        out.stdout
    );

    // Naming a sink the daemon does not have is refused at spawn.
    let out = d.cli(&[
        "spawn",
        skill.path().to_str().unwrap(),
        "--notify-to",
        "nope",
    ]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("no notification sink named \"nope\"; this host has: ops"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_host_killed_between_the_end_and_the_delivery_delivers_after_restart() {
    let data = tempfile::tempdir().unwrap();
    // The first attempt reaches the receiver, which never answers it; the
    // host dies meanwhile.
    let rx = Receiver::start(&[Reply::Hang], Reply::Status(200));
    let cfg = config(data.path(), &webhook("ops", &rx.url("/in")), "\"ops\"");
    let args = ["--config", cfg.to_str().unwrap()];
    let d = Daemon::start(data.path(), &args);
    let skill = real_skill("hello");
    let id = spawn(&d, skill.path(), &[]);
    rx.wait_for(1);
    let t = show(&d, &id);
    assert_eq!(t["state"], "succeeded");
    assert_eq!(t["deliveries"][0]["state"], "pending");
    d.kill9();

    let d = Daemon::start(data.path(), &args);
    let t = until("the delivery after the restart", || {
        let t = show(&d, &id);
        (t["deliveries"][0]["state"] == "delivered").then_some(t)
    });
    let seen = rx.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen.iter().filter(|r| r.answered == Some(200)).count(),
        1,
        "accepted once"
    );
    assert_eq!(
        seen[0].headers["idempotency-key"],
        seen[1].headers["idempotency-key"]
    );
    // The attempt the dead host made was never recorded; the new host's was.
    assert_eq!(t["deliveries"][0]["attempts"], 1);
}

#[test]
fn notify_modes_silent_and_state_changes() {
    let data = tempfile::tempdir().unwrap();
    let rx = Receiver::start(&[], Reply::Status(200));
    let cfg = config(data.path(), &webhook("ops", &rx.url("/in")), "\"ops\"");
    let d = Daemon::start(data.path(), &["--config", cfg.to_str().unwrap()]);
    let skill = real_skill("hello");
    let quiet = spawn(&d, skill.path(), &["--notify", "silent"]);
    assert_eq!(d.cli(&["tasks", "wait", &quiet]).code, 0);
    let chatty = spawn(&d, skill.path(), &["--notify", "state-changes"]);
    let seen = rx.wait_for(2);
    until("both changes delivered", || {
        let t = show(&d, &chatty);
        let ds = t["deliveries"].as_array()?.clone();
        (ds.len() == 2 && ds.iter().all(|x| x["state"] == "delivered")).then_some(())
    });
    let events: Vec<&str> = seen
        .iter()
        .map(|r| r.headers["skillbox-event"].as_str())
        .collect();
    assert_eq!(
        events,
        ["task.running", "task.succeeded"],
        "each change, in order"
    );
    let running = seen[0].json();
    assert_eq!(running["terminal"], false);
    assert_eq!(running["previous_state"], "queued");
    assert!(running["summary"].is_null());
    assert!(
        running["message"]
            .as_str()
            .unwrap()
            .contains("is running: started by"),
        "{running}"
    );
    assert_ne!(
        seen[0].headers["idempotency-key"],
        seen[1].headers["idempotency-key"]
    );
    assert!(
        seen.iter().all(|r| r.json()["task_id"] == chatty.as_str()),
        "nothing from the silent task"
    );
    assert_eq!(rx.seen().len(), 2);
    assert_eq!(show(&d, &quiet)["deliveries"], serde_json::json!([]));
}

#[test]
fn failures_only_and_a_sink_filtered_by_state_and_skill() {
    let data = tempfile::tempdir().unwrap();
    let all = Receiver::start(&[], Reply::Status(200));
    let pager = Receiver::start(&[], Reply::Status(200));
    let sinks = format!(
        "{}{}states = [\"failed\", \"timed_out\"]\nskills = [\"host*\"]\n",
        webhook("all", &all.url("/in")),
        webhook("pager", &pager.url("/page"))
    );
    let cfg = config(data.path(), &sinks, "\"all\", \"pager\"");
    let d = Daemon::start(data.path(), &["--config", cfg.to_str().unwrap()]);
    let hello = real_skill("hello");
    let hostile = skill_dir("hostile", "");
    let other = skill_dir("hostile", "");
    let toml = other.path().join("skill.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("name = \"hostile\"", "name = \"other\""),
    )
    .unwrap();
    let panic = |skill: &Path, extra: &[&str]| spawn_with(&d, skill, r#"{"case": "panic"}"#, extra);
    let quiet_ok = spawn(&d, hello.path(), &["--notify", "failures-only"]);
    let quiet_bad = panic(hostile.path(), &["--notify", "failures-only"]);
    let ok = spawn(&d, hello.path(), &[]);
    let other_bad = panic(other.path(), &[]);
    for (id, code) in [(&quiet_ok, 0), (&quiet_bad, 1), (&ok, 0), (&other_bad, 1)] {
        assert_eq!(d.cli(&["tasks", "wait", id]).code, code, "{id}");
    }
    let settled = |id: &str| {
        until("its notifications settled", || {
            let t = show(&d, id);
            let ds = t["deliveries"].as_array()?.clone();
            ds.iter().all(|x| x["state"] != "pending").then(|| {
                ds.iter()
                    .map(|x| {
                        (
                            x["sink"].as_str().unwrap().to_string(),
                            x["state"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
    };
    let pairs = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        settled(&quiet_ok),
        pairs(&[]),
        "failures-only: a success is not announced"
    );
    assert_eq!(
        settled(&quiet_bad),
        pairs(&[("all", "delivered"), ("pager", "delivered")]),
        "failures-only: a failure is, to each sink, and the pager takes a failure of a host* skill"
    );
    assert_eq!(
        settled(&ok),
        pairs(&[("all", "delivered"), ("pager", "skipped")]),
        "the pager does not take a success"
    );
    assert_eq!(
        settled(&other_bad),
        pairs(&[("all", "delivered"), ("pager", "skipped")]),
        "the pager does not take another skill's failure"
    );
    let paged: Vec<String> = pager
        .seen()
        .iter()
        .map(|r| r.json()["task_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paged, [quiet_bad.as_str()]);
    assert_eq!(all.seen().len(), 3);
    // tasks show says why a notification was not sent.
    let out = d.cli(&["tasks", "show", &other_bad]);
    assert!(
        out.stdout.contains(
            "delivery   pager failed: skipped (the sink takes only the skills host* (this is other))"
        ),
        "{}",
        out.stdout
    );
    let out = d.cli(&["tasks", "show", &ok]);
    assert!(
        out.stdout.contains(
            "delivery   pager succeeded: skipped (the sink takes only the states failed, timed_out)"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn a_bad_config_stops_serve_with_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let serve = |cfg: &str, env: &[(&str, &str)]| {
        let path = data.path().join("bad.toml");
        std::fs::write(&path, cfg).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_skillbox"))
            .args(["serve", "--data-dir"])
            .arg(data.path())
            .arg("--config")
            .arg(&path)
            .env_remove("SKILLBOX_WEBHOOK_SECRET")
            .env_remove("OPENCLAW_HOOKS_TOKEN")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = serve(
        "[relay.sink.ops]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nstates = [\"done\"]\n",
        &[],
    );
    assert!(e.contains("unknown variant `done`"), "{e}");
    let e = serve(
        "[relay.sink.ops]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nstates = [\"queued\"]\n",
        &[],
    );
    assert!(
        e.contains("[relay.sink.ops]: states: a task's creation (queued) is never announced"),
        "{e}"
    );
    let e = serve("[relay]\nretries = 3\n", &[]);
    assert!(
        e.contains("unknown field `retries`") && e.contains("bad.toml"),
        "{e}"
    );
    let e = serve(
        "[relay.sink.ops]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n",
        &[],
    );
    assert!(
        e.contains("[relay.sink.ops]") && e.contains("SKILLBOX_WEBHOOK_SECRET is not set"),
        "{e}"
    );
    let e = serve(
        "[relay.sink.claw]\ntype = \"openclaw\"\nurl = \"http://127.0.0.1:9\"\n",
        &[("OPENCLAW_HOOKS_TOKEN", "short")],
    );
    assert!(
        e.contains("the gateway's hooks token is shorter than 16 bytes"),
        "{e}"
    );
    // With the token in the environment it starts, and says where
    // notifications go.
    let path = data.path().join("good.toml");
    std::fs::write(
        &path,
        "[relay]\ndefault = [\"claw\"]\n[relay.sink.claw]\ntype = \"openclaw\"\nurl = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_skillbox"))
        .args(["serve", "--data-dir"])
        .arg(data.path())
        .arg("--config")
        .arg(&path)
        .env("OPENCLAW_HOOKS_TOKEN", "a-hooks-token-long-enough")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut banner = String::new();
    for _ in 0..2 {
        std::io::BufRead::read_line(&mut err, &mut banner).unwrap();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        banner.contains("notifications go to claw (openclaw http://127.0.0.1:9, default)"),
        "{banner}"
    );
}

mod embedded {
    //! The embedder's side: a callback or a channel as a sink, in process.

    use std::sync::atomic::AtomicUsize;

    use skillbox::relay::{Notification, Relay};
    use skillbox::store::{NotifyMode, TaskState};
    use skillbox::tasks::SpawnRequest;

    use super::*;
    use crate::tasks::{Worker, options, store};

    async fn settled(w: &Worker, id: skillbox::store::TaskId) -> Vec<skillbox::relay::Delivery> {
        for _ in 0..1200 {
            let ds = w.tasks.deliveries(id).unwrap();
            if !ds.is_empty()
                && ds
                    .iter()
                    .all(|d| d.state != skillbox::relay::DeliveryState::Pending)
            {
                return ds;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("notifications of {id} never settled");
    }

    /// A worker whose relay is `relay`, with `agent` as the default sink and
    /// quick retries.
    fn worker(store: Arc<dyn skillbox::store::TaskStore>, relay: Relay) -> Worker {
        Worker::start(
            store,
            skillbox::tasks::TaskOptions {
                relay: fast(relay),
                ..options()
            },
        )
    }

    fn fast(relay: Relay) -> Relay {
        let mut relay = relay.with_default(vec!["agent".into()]).unwrap();
        relay.retry.initial = Duration::from_millis(20);
        relay.retry.max = Duration::from_millis(50);
        relay
    }

    #[tokio::test]
    async fn a_callback_gets_each_summary_and_a_failing_one_is_retried() {
        let (_d, store) = store();
        let calls = Arc::new(AtomicUsize::new(0));
        let got = Arc::new(Mutex::new(Vec::<Notification>::new()));
        let relay = {
            let (calls, got) = (calls.clone(), got.clone());
            Relay::new().callback("agent", move |n| {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err("the agent runtime is busy".into());
                }
                got.lock().unwrap().push(n.clone());
                Ok(())
            })
        };
        let w = worker(store, relay);
        let skill = skill_dir("hello", "");
        let id = w
            .tasks
            .spawn(SpawnRequest {
                label: Some("cb".into()),
                ..SpawnRequest::new(skill.path(), r#"{"name": "callback"}"#)
            })
            .unwrap()
            .id;
        let ds = settled(&w, id).await;
        assert_eq!(ds.len(), 1);
        assert_eq!(ds[0].state, skillbox::relay::DeliveryState::Delivered);
        assert_eq!(ds[0].attempts, 2);
        assert_eq!(
            ds[0].history[0].detail.as_deref(),
            Some("the agent runtime is busy")
        );
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        let n = &got[0];
        assert_eq!(
            (n.task_id, n.state, n.terminal),
            (id, TaskState::Succeeded, true)
        );
        assert!(
            n.message.starts_with("**hello** (cb) succeeded in "),
            "{}",
            n.message
        );
        assert_eq!(n.summary.as_deref(), Some("Hello, callback! 👋"));
        // What `tasks wait` prints is that same notification.
        assert_eq!(w.tasks.notification(id).unwrap().as_ref(), Some(n));
        w.stop().await;
    }

    #[tokio::test]
    async fn a_notification_not_accepted_by_the_deadline_fails() {
        let (_d, store) = store();
        let mut relay = Relay::new().callback("agent", |_| Err("the agent runtime is down".into()));
        relay.retry.deadline = Duration::from_millis(300);
        let w = worker(store, relay);
        let skill = skill_dir("hello", "");
        let id = w
            .tasks
            .spawn(SpawnRequest::new(skill.path(), "{}"))
            .unwrap()
            .id;
        let ds = settled(&w, id).await;
        assert_eq!(ds[0].state, skillbox::relay::DeliveryState::Failed);
        assert!(
            ds[0].attempts >= 2,
            "retried until the deadline: {:?}",
            ds[0]
        );
        let last = ds[0].last_error.as_deref().unwrap();
        assert!(
            last.starts_with(
                "the agent runtime is down (gave up: not accepted within the deadline of 300ms; "
            ) && last.ends_with(" attempts in all)"),
            "{last}"
        );
        // Redelivery opens a new window; the attempts count on.
        let before = ds[0].attempts;
        assert_eq!(w.tasks.redeliver(id).unwrap(), 1);
        let ds = settled(&w, id).await;
        assert_eq!(ds[0].state, skillbox::relay::DeliveryState::Failed);
        assert!(ds[0].window_ms > ds[0].created_ms);
        let last = ds[0].last_error.as_deref().unwrap();
        assert!(
            last.contains(&format!("; {} attempts in all)", ds[0].attempts))
                && ds[0].attempts > before,
            "{last}"
        );
        w.stop().await;
    }

    #[tokio::test]
    async fn what_a_host_could_not_deliver_reaches_the_next_hosts_channel() {
        let (_d, store) = store();
        // This host's receiver is gone: every attempt fails.
        let (relay, rx) = Relay::new().channel("agent");
        drop(rx);
        let w = worker(store.clone(), relay);
        let skill = skill_dir("hello", "");
        let id = w
            .tasks
            .spawn(SpawnRequest {
                notify: NotifyMode::StateChanges,
                ..SpawnRequest::new(skill.path(), r#"{"name": "later"}"#)
            })
            .unwrap()
            .id;
        w.tasks.wait(id).await.unwrap();
        for _ in 0..1200 {
            if w.tasks
                .deliveries(id)
                .unwrap()
                .iter()
                .all(|d| d.attempts >= 2)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        w.stop().await;

        let (relay, mut rx) = Relay::new().channel("agent");
        let w = worker(store, relay);
        let first = rx.recv().await.unwrap();
        let second = rx.recv().await.unwrap();
        assert_eq!(
            (first.task_id, first.state),
            (id, TaskState::Running),
            "in order"
        );
        assert_eq!((second.task_id, second.state), (id, TaskState::Succeeded));
        let ds = settled(&w, id).await;
        assert!(
            ds.iter()
                .all(|d| d.state == skillbox::relay::DeliveryState::Delivered)
        );
        assert!(rx.try_recv().is_err(), "each once");
        w.stop().await;
    }

    #[tokio::test]
    async fn granted_environment_values_never_reach_the_parent() {
        let (_, visible) = test_env();
        let (_d, store) = store();
        let (relay, mut rx) = Relay::new().channel("agent");
        let w = worker(store, relay);
        let skill = skill_dir("hostile", "[env]\nallow = [\"SKILLBOX_TEST_VISIBLE\"]\n");
        let id = w
            .tasks
            .spawn(SpawnRequest {
                grants: grants(&["--allow-env", "SKILLBOX_TEST_VISIBLE"]),
                ..SpawnRequest::new(
                    skill.path(),
                    r#"{"case": "env-get", "name": "SKILLBOX_TEST_VISIBLE"}"#,
                )
            })
            .unwrap()
            .id;
        let task = w.tasks.wait(id).await.unwrap();
        assert_eq!(task.state, TaskState::Succeeded, "{:?}", task.outcome);
        // The skill did read the value and put it in its result…
        assert_eq!(
            task.outcome.as_ref().unwrap()["data"]["value"],
            visible.as_str()
        );
        // …but the notification carries none of it.
        let n = rx.recv().await.unwrap();
        let all = serde_json::to_string(&n).unwrap();
        assert!(!all.contains(&visible), "{all}");
        assert_eq!(n.data.as_ref().unwrap()["value"], "[redacted]");
        w.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_tasks_each_notify_exactly_once() {
        const N: usize = 300;
        let (_d, store) = store();
        let (relay, mut rx) = Relay::new().channel("agent");
        let w = worker(store, relay);
        let skill = skill_dir("hello", "");
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..N {
            ids.insert(
                w.tasks
                    .spawn(SpawnRequest::new(skill.path(), "{}"))
                    .unwrap()
                    .id,
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < N {
            let n = rx.recv().await.unwrap();
            assert!(ids.contains(&n.task_id), "{}", n.task_id);
            assert!(seen.insert(n.task_id), "{} notified twice", n.task_id);
        }
        for id in &ids {
            let ds = settled(&w, *id).await;
            assert_eq!(ds.len(), 1);
            assert_eq!(
                (ds[0].state, ds[0].attempts),
                (skillbox::relay::DeliveryState::Delivered, 1)
            );
        }
        assert!(rx.try_recv().is_err());
        w.stop().await;
    }
}
