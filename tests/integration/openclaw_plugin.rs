//! The skillbox plugin for OpenClaw (`integrations/openclaw`) end to end:
//! built by the suite, installed into a real gateway on loopback with
//! `openclaw plugins install`, pointed at a real `skillbox serve`, and
//! driven by a user message. The gateway's model is the scripted loopback
//! stub (tests/openclaw/model_stub.py): a user message carrying
//! `[[tool NAME {args}]]` makes it call that tool, then answer with the
//! tool's text. Everything else is real: the agent turn, the plugin, the
//! daemon and its sandboxed skill, the relay's `/hooks/agent` delivery into
//! the same session, OpenClaw's TaskFlow records.
//!
//! A user message → the agent calls `skillbox_start` → the turn ends with
//! the "started" reply → the task runs → its summary arrives in the same
//! session exactly once, also across a gateway restart and a `kill -9` of
//! the daemon; refusals start nothing, and nothing the model sends widens
//! a skill's grants. A call that matches an ask rule waits until the
//! user's decision comes back through the conversation (`skillbox_approve`),
//! recorded as the conversation's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::Daemon;
use crate::harness::*;
use crate::openclaw::{Gateway, HOOK_TOKEN, free_port, texts};

/// The daemon's API token (`serve --token`), given to the plugin in a file.
const API_TOKEN: &str = "skillbox-api-token-0123456789abcdef";

/// The plugin package, built once per test process (its unit tests run in
/// the build), in a directory of its own under target/.
fn plugin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let base = root().join("target/openclaw-plugin");
        // Builds of test processes that have ended.
        for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let pid = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok());
            if pid.is_some_and(|p| !alive(p)) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let out = base.join(std::process::id().to_string());
        let o = Command::new("bash")
            .arg(root().join("tests/openclaw/gateway.sh"))
            .arg("build-plugin")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "building the plugin (integrations/openclaw/build.sh) failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    })
}

/// Waits up to `secs` for `f` to give a value.
fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "gave up after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many of these tests run a gateway at once. A gateway is a Node
/// process and every `openclaw gateway call` starts another: on a
/// two-core machine, more at once starve each other past the waits here.
const GATEWAYS_AT_ONCE: usize = 2;

static GATEWAYS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// One of the [`GATEWAYS_AT_ONCE`] places, held while a test's gateway runs.
struct Place;

impl Place {
    fn take() -> Place {
        let (busy, freed) = &GATEWAYS;
        let guard = busy.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = freed
            .wait_while(guard, |n| *n >= GATEWAYS_AT_ONCE)
            .unwrap_or_else(|e| e.into_inner());
        *n += 1;
        Place
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let (busy, freed) = &GATEWAYS;
        *busy.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        freed.notify_one();
    }
}

/// A gateway with the plugin, and the daemon it talks to.
struct Rig {
    gw: Gateway,
    data: tempfile::TempDir,
    daemon: Option<Daemon>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    listen: u16,
    /// Last, so that it is given up once the gateway has stopped.
    _place: Place,
}

impl Rig {
    /// `skills` are the daemon's `[skills.*]` tables; `env` its environment.
    fn new(skills: &str, env: &[(&str, &str)]) -> Rig {
        let place = Place::take();
        let gw = Gateway::new();
        let data = tempfile::tempdir().unwrap();
        let d = data.path();
        std::fs::write(d.join("hooks.token"), HOOK_TOKEN).unwrap();
        std::fs::write(d.join("api.token"), API_TOKEN).unwrap();
        let listen = free_port();
        let config = d.join("skillbox.toml");
        std::fs::write(
            &config,
            format!(
                r#"[relay]
default = ["claw"]
retry-initial = "100ms"
retry-max = "500ms"
timeout = "30s"

[relay.sink.claw]
type = "openclaw"
url = "http://127.0.0.1:{gw}"
token-file = "{hooks}"
agent-id = "main"

{skills}"#,
                gw = gw.port,
                hooks = d.join("hooks.token").display(),
            ),
        )
        .unwrap();
        // What an operator adds to the gateway's config (README): session
        // keys of conversations allowed in hook requests, and the plugin's
        // daemon; the empty tool is the timing baseline.
        let token_file = d.join("api.token");
        gw.edit_config(|c| {
            c["hooks"]["allowedSessionKeyPrefixes"] = json!(["hook:", "agent:main:"]);
            c["plugins"] = json!({
                "load": { "paths": [root().join("tests/openclaw/empty-tool")] },
                "entries": {
                    "empty-tool": { "enabled": true },
                    "skillbox": { "config": {
                        "url": format!("http://127.0.0.1:{listen}"),
                        "tokenFile": token_file,
                        "syncIntervalMs": 250,
                    } },
                },
            });
        });
        let out = gw.cli(&[
            "plugins",
            "install",
            plugin().to_str().unwrap(),
            "--force",
            "--accept-capabilities",
        ]);
        assert!(
            out.status.success(),
            "openclaw plugins install: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut rig = Rig {
            gw,
            args: vec![
                "--config".into(),
                config.to_str().unwrap().into(),
                "--listen".into(),
                format!("127.0.0.1:{listen}"),
                "--token".into(),
                API_TOKEN.into(),
            ],
            data,
            daemon: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            listen,
            _place: place,
        };
        rig.start_daemon();
        rig.gw.up();
        rig
    }

    fn start_daemon(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let d = Daemon::start_env(self.data.path(), &args, &env);
        wait("the daemon's loopback API", 30, || {
            std::net::TcpStream::connect(("127.0.0.1", self.listen))
                .ok()
                .map(|_| ())
        });
        self.daemon = Some(d);
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().unwrap()
    }

    /// The task as `skillbox tasks show --json` shows it.
    fn task(&self, id: &str) -> Value {
        let out = self.daemon().cli(&["tasks", "show", id, "--json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json()
    }

    /// Every task of the daemon.
    fn tasks(&self) -> Vec<Value> {
        let out = self.daemon().cli(&["tasks", "list", "--json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json().as_array().unwrap().clone()
    }

    /// The model stub's requests so far.
    fn stub_requests(&self) -> Vec<Value> {
        self.gw
            .file("stub-requests.jsonl")
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Sends `text` as the user of `session` and waits until the turn has
    /// answered with the tool's text; the turn.
    fn turn(&self, session: &str, text: &str) -> Turn {
        // Unique per turn: it is also the message's idempotency key, which
        // the gateway refuses to see again with other text (a free port's
        // number, used before, could come round twice).
        static TURNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = TURNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let marker = format!("[turn {}-{n}]", std::process::id());
        let message = format!("{text} {marker}");
        self.gw.call(
            "chat.send",
            json!({ "sessionKey": session, "message": message, "idempotencyKey": marker }),
        );
        // The model's two calls of the turn: the one it answered with the
        // tool call, and the one with the tool's result (answered at once
        // with the reply, which is then on its way into the transcript).
        let with_result = |r: &Value| -> Option<bool> {
            let msgs = r["body"]["messages"].as_array()?;
            let i = msgs
                .iter()
                .rposition(|m| m["role"] == "user" && texts(&m["content"]).contains(&marker))?;
            Some(msgs[i..].iter().any(|m| m["role"] == "tool"))
        };
        let asked_ms = wait(&format!("the tool turn of {message:?}"), 120, || {
            let requests = self.stub_requests();
            requests.iter().find(|r| with_result(r) == Some(true))?;
            let first = requests.iter().find(|r| with_result(r) == Some(false))?;
            Some((first["t"].as_f64()? * 1000.0) as i64)
        });
        wait(&format!("the reply to {message:?}"), 180, || {
            let history = self.gw.history(session);
            let msgs = history["messages"].as_array()?.clone();
            let at = msgs
                .iter()
                .rposition(|m| m["role"] == "user" && texts(&m["content"]).contains(&marker))?;
            let after = &msgs[at..];
            let result_at = after.iter().position(|m| m["role"] == "toolResult")?;
            let result = &after[result_at];
            // Usually "STUB-AFTER-TOOL: …"; but a relay message that reaches
            // the session while the tool runs (a task that waits for
            // approval, or ends, at once) is steered into the turn
            // (OpenClaw's default queue mode, docs/concepts/queue-steering.md)
            // before the model's next call, whose answer is then the stub's
            // reply to that message.
            let reply = after[result_at..]
                .iter()
                .find(|m| m["role"] == "assistant" && texts(&m["content"]).starts_with("STUB-"))?;
            let call = after.iter().find(|m| m["role"] == "custom")?;
            let reply_ms = reply["timestamp"].as_i64().unwrap_or_default();
            Some(Turn {
                result: serde_json::from_str(&texts(&result["content"])).unwrap_or(Value::Null),
                reply_ms,
                call_to_reply_ms: reply_ms - asked_ms,
                tool_ms: call["content"][1]["timestamp"].as_i64().unwrap_or_default()
                    - call["content"][1]["startedAt"].as_i64().unwrap_or_default(),
            })
        })
    }

    /// Waits for task `id`'s summary in `session`; the summary message.
    fn summary(&self, session: &str, id: &str, secs: u64) -> Value {
        let footer = format!("Task {id} · full logs");
        wait(&format!("the summary of {id} in {session}"), secs, || {
            self.stub_requests()
                .iter()
                .any(|r| r["body"].to_string().contains(&footer))
                .then_some(())
        });
        wait("the summary in the transcript", 30, || {
            self.summaries(session, id).into_iter().next()
        })
    }

    /// Waits for the message of task `id` in `session` that contains
    /// `needle` (the relay's words for a state, e.g. `is awaiting
    /// approval`) and for the agent's answer to it; the message's text.
    fn notice(&self, session: &str, id: &str, needle: &str) -> String {
        let body = wait(
            &format!("task {id}'s message {needle:?} in {session}"),
            120,
            || {
                self.summaries(session, id)
                    .iter()
                    .map(|m| texts(&m["content"]))
                    .find(|t| t.contains(needle))
            },
        );
        // The agent's turn on it ends before the next user message, so
        // the next tool turn is not queued behind it.
        let footer = format!("Task {id} · full logs");
        wait("the agent's answer to the message", 180, || {
            let history = self.gw.history(session);
            let msgs = history["messages"].as_array()?.clone();
            let at = msgs.iter().rposition(|m| {
                let t = texts(&m["content"]);
                m["role"] == "user" && t.contains(needle) && t.contains(&footer)
            })?;
            msgs[at..]
                .iter()
                .any(|m| m["role"] == "assistant" && texts(&m["content"]).contains("STUB-REPLY:"))
                .then_some(())
        });
        body
    }

    /// Task `id`'s requests for approval, as `skillbox tasks approvals
    /// --json` shows them.
    fn approvals(&self, id: &str) -> Vec<Value> {
        let out = self.daemon().cli(&["tasks", "approvals", id, "--json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json().as_array().unwrap().clone()
    }

    /// Waits until task `id` is in `state`.
    fn until_state(&self, id: &str, state: &str) -> Value {
        wait(&format!("task {id} to be {state}"), 120, || {
            let t = self.task(id);
            (t["state"] == state).then_some(t)
        })
    }

    /// The messages of `session` carrying task `id`'s notifications (its
    /// summary, and any state change announced before it).
    fn summaries(&self, session: &str, id: &str) -> Vec<Value> {
        let footer = format!("Task {id} · full logs");
        let history = self.gw.history(session);
        history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "user" && texts(&m["content"]).contains(&footer))
            .cloned()
            .collect()
    }

    /// The TaskFlow record of task `id`, once it is in `status`.
    fn flow(&self, id: &str, status: &str) -> Value {
        wait(
            &format!("task {id}'s TaskFlow record to be {status}"),
            60,
            || {
                let out = self.gw.cli(&["tasks", "flow", "list", "--json"]);
                let v: Value = serde_json::from_slice(&out.stdout).ok()?;
                let flow = v["flows"]
                    .as_array()?
                    .iter()
                    .find(|f| f["stateJson"]["skillboxTask"] == id)?
                    .clone();
                if flow["status"] == status {
                    Some(flow)
                } else {
                    std::thread::sleep(Duration::from_millis(500));
                    None
                }
            },
        )
    }

    /// Waits until task `id`'s one notification is delivered; its delivery.
    fn delivered(&self, id: &str) -> Value {
        wait(&format!("the delivery of {id}"), 180, || {
            let t = self.task(id);
            let ds = t["deliveries"].as_array()?.clone();
            (ds.len() == 1 && ds[0]["state"] == "delivered").then(|| ds[0].clone())
        })
    }
}

/// One finished tool turn.
struct Turn {
    /// The tool's result as the model saw it (through OpenClaw's
    /// `tool_call` bridge): `result.content`, `result.details`, or
    /// `status: "error"` with `error`.
    result: Value,
    /// When the final reply was written (Unix ms).
    reply_ms: i64,
    /// From the model's tool call (the stub's answer) to that reply.
    call_to_reply_ms: i64,
    /// The tool's execution, as OpenClaw timed it.
    tool_ms: i64,
}

impl Turn {
    fn started(&self) -> (String, String) {
        let text = self.result["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no tool text: {}", self.result))
            .to_string();
        let id = self.result["result"]["details"]["task"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no task id: {}", self.result))
            .to_string();
        (id, text)
    }

    fn error(&self) -> String {
        assert_eq!(self.result["status"], "error", "{}", self.result);
        self.result["error"].as_str().unwrap().to_string()
    }

    /// The tool's text.
    fn text(&self) -> String {
        self.result["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no tool text: {}", self.result))
            .to_string()
    }
}

fn approve(args: Value) -> String {
    format!("[[tool skillbox_approve {args}]]")
}

fn start(skill: &str, input: Value, label: &str) -> String {
    format!(
        "[[tool skillbox_start {}]]",
        json!({ "skill": skill, "input": input, "label": label })
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
fn a_conversation_starts_skills_in_the_background_and_gets_each_result_once() {
    // hostile asks for two variables; the operator grants one.
    let hostile = skill_dir(
        "hostile",
        "resume = \"restart\"\n\n[env]\nallow = [\"SKILLBOX_TEST_VISIBLE\", \"SKILLBOX_TEST_SECRET\"]\n",
    );
    let hello = real_skill("hello");
    // The daemon requires signatures by a trusted key: every installed
    // skill is signed; `greeter` is changed once the daemon runs.
    let greeter = real_skill("hello");
    let trusting = crate::trust::Trusting::new();
    for skill in [&hostile, &hello, &greeter] {
        trusting.sign(skill.path());
    }
    let rig = Rig::new(
        &format!(
            "[skills.hello]\npath = {:?}\n\n[skills.hostile]\npath = {:?}\npartial = true\n\
             grants = {{ env = {{ allow = [\"SKILLBOX_TEST_VISIBLE\"] }} }}\n\n\
             [skills.greeter]\npath = {:?}\n",
            hello.path(),
            hostile.path(),
            greeter.path(),
        ),
        &[("SKILLBOX_KEYS", trusting.dir())],
    );
    let session = "agent:main:plugin-e2e";

    // The user asks; the agent starts hello and answers at once.
    let turn = rig.turn(
        session,
        &format!(
            "Please greet the ops team in the background. {}",
            start("hello", json!({ "name": "ops" }), "greeting")
        ),
    );
    let (id, text) = turn.started();
    assert!(
        text.starts_with(&format!(
            "Started hello (greeting) in the background as skillbox task {id}."
        )) && text.ends_with("I will post the result here when it ends."),
        "{text}"
    );
    let details = &turn.result["result"]["details"]["task"];
    assert_eq!(details["parentSession"], session, "{details}");
    assert!(
        details["route"].is_null(),
        "OpenClaw's own chat has no route"
    );

    // The task: the operator's hello, for this session, labelled.
    let t = rig.task(&id);
    assert_eq!(t["spec"]["parent_session"], session, "{t}");
    assert_eq!(t["spec"]["label"], "mcp/hello: greeting", "{t}");
    assert!(t["spec"].get("parent_route").is_none(), "{t}");

    // Its summary comes back into the same session, after the tool's
    // "started" result, once, and the agent answers it. (Not necessarily
    // after the agent's reply: hello ends at once, and a message that
    // reaches the session while the tool runs is steered into the turn.)
    let summary = rig.summary(session, &id, 120);
    let body = texts(&summary["content"]);
    assert!(
        body.contains("**hello** (mcp/hello: greeting) succeeded") && body.contains("Hello, ops!"),
        "{body}"
    );
    let history = rig.gw.history(session);
    let msgs = history["messages"].as_array().unwrap();
    let started_at = msgs
        .iter()
        .position(|m| m["role"] == "toolResult" && texts(&m["content"]).contains(&id))
        .expect("the started result in the transcript");
    let summary_at = msgs
        .iter()
        .position(|m| m == &summary)
        .expect("the summary in the transcript");
    assert!(started_at < summary_at, "{history}");
    let delivery = rig.delivered(&id);
    assert_eq!(delivery["attempts"], 1, "{delivery}");
    wait("the agent's answer to the summary", 180, || {
        let history = rig.gw.history(session);
        history["messages"]
            .as_array()?
            .iter()
            .any(|m| {
                m["role"] == "assistant"
                    && texts(&m["content"]).contains("STUB-REPLY:")
                    && texts(&m["content"]).contains(&format!("Task {id}"))
            })
            .then_some(())
    });
    assert_eq!(rig.summaries(session, &id).len(), 1, "exactly once");

    // Visible where OpenClaw users look: a TaskFlow record in step.
    let flow = rig.flow(&id, "succeeded");
    assert_eq!(flow["goal"], "hello: greeting", "{flow}");
    assert_eq!(flow["ownerKey"], session, "{flow}");
    assert_eq!(flow["controllerId"], "skillbox", "{flow}");
    assert_eq!(flow["notifyPolicy"], "silent", "the relay speaks, once");

    // The agent looks at its tasks: this session's, with the result.
    let turn = rig.turn(session, "[[tool skillbox_tasks {}]]");
    let listing = turn.result["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        listing.contains(&id) && listing.contains("hello (greeting)  succeeded"),
        "{listing}"
    );
    let turn = rig.turn(
        session,
        &format!("[[tool skillbox_tasks {}]]", json!({ "task": id })),
    );
    let shown = turn.result["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(shown.contains("Hello, ops!"), "{shown}");
    // Another conversation sees none of them.
    let turn = rig.turn(
        "agent:main:elsewhere",
        &format!("[[tool skillbox_tasks {}]]", json!({ "task": id })),
    );
    assert!(
        turn.error()
            .contains("was not started from this conversation"),
        "{}",
        turn.result
    );

    // Refusals: a skill that is not installed, input that fails the
    // skill's schema, grants as a parameter. Each is a clear tool error,
    // and no task starts.
    let before = rig.tasks().len();
    let refused = |args: Value, needle: &str| {
        let turn = rig.turn(
            "agent:main:refusals",
            &format!("[[tool skillbox_start {args}]]"),
        );
        let e = turn.error();
        assert!(e.contains(needle), "{needle:?} in: {e}");
        e
    };
    let e = refused(
        json!({ "skill": "deploy-prod", "input": {} }),
        "skill: must be equal to one of the allowed values",
    );
    assert!(e.contains("\"hello\"") && e.contains("\"hostile\""), "{e}");
    // (The gateway checks the parameters against the tool's schema, whose
    // `input` may be any installed skill's; the daemon then checks it
    // against the chosen skill's own.)
    refused(
        json!({ "skill": "hello", "input": { "name": 42 } }),
        "skillbox refused to start hello: arguments of \"hello\" do not match its input \
         schema: /name: 42 is not of type \"string\". No task was started.",
    );
    refused(
        json!({ "skill": "hello", "input": { "name": "x", "grants": { "env": { "allow": ["HOME"] } } } }),
        "do not match its input schema: Additional properties are not allowed ('grants' was unexpected)",
    );
    refused(
        json!({ "skill": "hostile", "input": { "case": "env" },
                "grants": { "env": { "allow": ["SKILLBOX_TEST_SECRET"] } } }),
        "must not have additional properties: \"grants\"",
    );
    // A skill changed since its publisher signed it: the daemon's trust
    // policy refuses it, and the conversation is told why.
    crate::trust::tamper(greeter.path());
    refused(
        json!({ "skill": "greeter", "input": { "name": "x" } }),
        "skillbox refused to start greeter: skill hello refused: its signature does not hold",
    );
    assert_eq!(rig.tasks().len(), before, "no task was started");

    // A skill whose input is free-form takes the smuggled grants as plain
    // input: it runs with the operator's grants, and no more.
    let turn = rig.turn(
        "agent:main:grants",
        &start(
            "hostile",
            json!({ "case": "env", "grants": { "env": { "allow": ["SKILLBOX_TEST_SECRET"] } },
                    "env": { "allow": ["SKILLBOX_TEST_SECRET"] } }),
            "env",
        ),
    );
    let (env_id, _) = turn.started();
    rig.summary("agent:main:grants", &env_id, 120);
    let t = rig.task(&env_id);
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(
        t["spec"]["policy"]["env"],
        json!(["SKILLBOX_TEST_VISIBLE"]),
        "the catalog's grant only: {t}"
    );
    let seen = t["outcome"].to_string();
    let (secret, visible) = test_env();
    assert!(seen.contains(&visible) && !seen.contains(&secret), "{seen}");

    // Cancelling from the conversation: the task ends cancelled, its
    // result is posted like any other, and its flow follows.
    let turn = rig.turn(
        "agent:main:cancel",
        &start("hostile", json!({ "case": "sleep", "ms": 120_000 }), "nap"),
    );
    let (nap, _) = turn.started();
    wait("the nap to run", 180, || {
        (rig.task(&nap)["state"] == "running").then_some(())
    });
    let turn = rig.turn(
        "agent:main:cancel",
        &format!("[[tool skillbox_cancel {}]]", json!({ "task": nap })),
    );
    assert!(
        turn.result["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Cancelling skillbox task {nap} (hostile)")),
        "{}",
        turn.result
    );
    let summary = rig.summary("agent:main:cancel", &nap, 120);
    assert!(
        texts(&summary["content"]).contains("**hostile** (mcp/hostile: nap) was cancelled"),
        "{summary}"
    );
    rig.flow(&nap, "cancelled");

    // Figures for the note: the start tool against a tool that does
    // nothing, in the same gateway, and a task's end to its summary in the
    // session. Printed, not asserted: these machines are noisy.
    let (mut empty, mut started, mut spawn, mut empty_turn, mut start_turn) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut relay = vec![];
    for i in 0..3 {
        let t = rig.turn(&format!("agent:main:figures-{i}"), "[[tool empty_tool {}]]");
        empty.push(t.tool_ms as f64);
        empty_turn.push(t);
        let t = rig.turn(
            &format!("agent:main:figures-{i}"),
            &start("hello", json!({ "name": format!("n{i}") }), "figures"),
        );
        started.push(t.tool_ms as f64);
        spawn.push(
            t.result["result"]["details"]["timing"]["spawnMs"]
                .as_f64()
                .unwrap(),
        );
        let (fid, _) = t.started();
        let s = rig.summary(&format!("agent:main:figures-{i}"), &fid, 120);
        let ended = rig.task(&fid)["ended_ms"].as_i64().unwrap();
        relay.push((s["timestamp"].as_i64().unwrap() - ended) as f64);
        start_turn.push(t);
    }
    let reply = |turns: &[Turn]| median(turns.iter().map(|t| t.call_to_reply_ms as f64).collect());
    eprintln!(
        "\nFIGURES (medians of 3, this run):\n\
         tool execution, as OpenClaw times it: empty_tool {:.0} ms, skillbox_start {:.0} ms \
         (of which the spawn through the daemon's MCP endpoint {:.1} ms): {:.0} ms added\n\
         model's tool call -> reply in the transcript: empty_tool {:.0} ms, skillbox_start {:.0} ms\n\
         task end -> summary in the session: {:.0} ms\n",
        median(empty.clone()),
        median(started.clone()),
        median(spawn),
        median(started) - median(empty),
        reply(&empty_turn),
        reply(&start_turn),
        median(relay),
    );
}

#[test]
fn a_summary_arrives_once_across_a_gateway_restart_and_a_daemon_kill() {
    let hostile = skill_dir("hostile", "resume = \"restart\"\n");
    let mut rig = Rig::new(
        &format!("[skills.hostile]\npath = {:?}\n", hostile.path()),
        &[],
    );
    let session = "agent:main:restarts";

    // The gateway goes down right after the "started" reply; the task ends
    // while it is down, and the relay keeps trying.
    let turn = rig.turn(
        session,
        &start(
            "hostile",
            json!({ "case": "sleep", "ms": 8000 }),
            "through a gateway restart",
        ),
    );
    let (id, _) = turn.started();
    rig.gw.down();
    let t = wait("the task to end", 180, || {
        let t = rig.task(&id);
        (t["state"] == "succeeded").then_some(t)
    });
    assert!(
        turn.reply_ms < t["ended_ms"].as_i64().unwrap(),
        "the turn ended before the task"
    );
    let d = wait("a refused delivery attempt", 180, || {
        let t = rig.task(&id);
        let d = t["deliveries"][0].clone();
        (d["attempts"].as_u64()? >= 2 && d["state"] == "pending").then_some(d)
    });
    assert!(d["last_error"].as_str().is_some(), "{d}");
    rig.gw.up();
    rig.summary(session, &id, 120);
    rig.delivered(&id);
    rig.flow(&id, "succeeded");
    assert_eq!(rig.summaries(session, &id).len(), 1, "exactly once");

    // The daemon is killed in the middle of the task: the restarted daemon
    // runs it again (the skill's `resume = "restart"`), and the summary
    // comes back once.
    let turn = rig.turn(
        session,
        &start(
            "hostile",
            json!({ "case": "sleep", "ms": 6000 }),
            "through a daemon kill",
        ),
    );
    let (id, _) = turn.started();
    wait("the task to run", 180, || {
        (rig.task(&id)["state"] == "running").then_some(())
    });
    rig.daemon.take().unwrap().kill9();
    std::thread::sleep(Duration::from_secs(1));
    rig.start_daemon();
    rig.summary(session, &id, 120);
    let t = rig.task(&id);
    assert_eq!(
        (t["state"].as_str(), t["attempt"].as_u64()),
        (Some("succeeded"), Some(2)),
        "{t}"
    );
    assert!(turn.reply_ms < t["ended_ms"].as_i64().unwrap());
    let logs = rig.daemon().cli(&["tasks", "logs", &id]).stdout;
    assert!(logs.contains("interrupted -> running"), "{logs}");
    rig.delivered(&id);
    rig.flow(&id, "succeeded");
    assert_eq!(rig.summaries(session, &id).len(), 1, "exactly once");
}

#[test]
fn an_upgrade_started_from_a_conversation_reports_back_to_it() {
    let Some(app) = crate::upgrade::App::new() else {
        return;
    };
    // A build that takes a few seconds: the conversation's turn ends while
    // the upgrade runs.
    let dockerfile = app.src.join("Dockerfile");
    let mut text = std::fs::read_to_string(&dockerfile).unwrap();
    text.push_str("\nRUN [\"/bin/busybox\", \"sleep\", \"3\"]\n");
    std::fs::write(&dockerfile, text).unwrap();
    let policy = app.skill.path().join("upgrade.policy.toml");
    std::fs::write(&policy, toml::to_string(&app.policy()).unwrap()).unwrap();
    let rig = Rig::new(
        &format!(
            "[skills.upgrade]\npath = {:?}\npolicy = {:?}\n",
            app.skill.path(),
            policy
        ),
        &[("DOCKER_HOST", app.endpoint.as_str())],
    );
    let session = "agent:main:upgrades";
    let turn = rig.turn(
        session,
        &format!(
            "Please deploy v1 of the shop. {}",
            start("upgrade", app.input("v1"), "shop to v1")
        ),
    );
    let (id, text) = turn.started();
    assert!(text.starts_with("Started upgrade (shop to v1)"), "{text}");
    let summary = rig.summary(session, &id, 300);
    let t = rig.task(&id);
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["outcome"]["data"]["outcome"], "installed", "{t}");
    assert!(
        turn.reply_ms < t["ended_ms"].as_i64().unwrap(),
        "the turn ended first"
    );
    let body = texts(&summary["content"]);
    assert!(
        body.contains("**upgrade** (mcp/upgrade: shop to v1) succeeded"),
        "{body}"
    );
    assert_eq!(app.version(), "v1", "the new container serves");
    rig.delivered(&id);
    rig.flow(&id, "succeeded");
    assert_eq!(rig.summaries(session, &id).len(), 1, "exactly once");
}

#[test]
fn a_request_for_approval_waits_for_the_users_decision_relayed_by_the_conversation() {
    // hostile asks to run `echo hello …`; the operator grants it only call
    // by call, through the catalog's inline ask rules.
    let hostile = skill_dir(
        "hostile",
        "[exec]\nallow = [ { program = \"echo\", args = [\"hello\", \"*\"] } ]\n",
    );
    let rig = Rig::new(
        &format!(
            "[skills.hostile]\npath = {:?}\n\
             grants = {{ ask = {{ exec = [ {{ program = \"echo\", args = [\"hello\", \"*\"] }} ] }} }}\n",
            hostile.path(),
        ),
        &[],
    );
    let session = "agent:main:approvals";
    let echo = |word: &str| json!({ "case": "exec", "program": "echo", "args": ["hello", word] });

    // The task stops at the call, and the conversation hears of it.
    let turn = rig.turn(session, &start("hostile", echo("there"), "greeting"));
    let (id, _) = turn.started();
    rig.until_state(&id, "awaiting_approval");
    let notice = rig.notice(session, &id, "is awaiting approval");
    assert!(notice.contains("echo hello there"), "{notice}");
    rig.flow(&id, "waiting");

    // The agent shows the user what is asked.
    let turn = rig.turn(
        session,
        &format!("[[tool skillbox_tasks {}]]", json!({ "task": id })),
    );
    let shown = turn.text();
    assert!(
        shown.contains("awaiting_approval")
            && shown.contains("request #1: exec `echo hello there`")
            && shown.contains("rule: --ask-exec")
            && shown.contains("denied unless decided by")
            && shown.contains(&format!("skillbox_approve (task {id}, request 1)")),
        "{shown}"
    );
    let asked = &turn.result["result"]["details"]["task"]["approvals"][0];
    assert_eq!(asked["detail"], "echo hello there", "{asked}");

    // Another conversation cannot decide it.
    let turn = rig.turn(
        "agent:main:elsewhere",
        &approve(json!({ "task": id, "decision": "approve" })),
    );
    assert!(
        turn.error()
            .contains("was not started from this conversation"),
        "{}",
        turn.result
    );
    assert!(rig.approvals(&id)[0]["decision"].is_null());
    assert_eq!(rig.task(&id)["state"], "awaiting_approval");

    // The user approves; the agent relays it, and the call goes on.
    let turn = rig.turn(
        session,
        &format!(
            "Yes, go ahead. {}",
            approve(json!({ "task": id, "decision": "approve", "request": 1 }))
        ),
    );
    let said = turn.text();
    assert!(
        said.starts_with(&format!(
            "Approved request #1 of skillbox task {id} (hostile): exec `echo hello there`."
        )),
        "{said}"
    );
    let recorded = &turn.result["result"]["details"]["approval"]["decision"];
    assert_eq!(recorded["approved"], true, "{recorded}");
    let t = rig.until_state(&id, "succeeded");
    assert_eq!(t["outcome"]["data"]["stdout"], "hello there\n", "{t}");
    let summary = rig.notice(session, &id, "succeeded");
    assert!(
        summary.contains("**hostile** (mcp/hostile: greeting) succeeded"),
        "{summary}"
    );
    rig.flow(&id, "succeeded");

    // The decision is on record as this conversation's.
    let decided = &rig.approvals(&id)[0]["decision"];
    assert_eq!(decided["approved"], true, "{decided}");
    let by = decided["by"].as_str().unwrap();
    assert!(
        by.starts_with(&format!("openclaw:{session}")) && by.contains("the API token"),
        "{by}"
    );

    // Deciding again: the daemon's refusal, in its words.
    let turn = rig.turn(
        session,
        &approve(json!({ "task": id, "decision": "deny", "request": 1 })),
    );
    let e = turn.error();
    assert!(
        e.contains(&format!(
            "skillbox did not record the decision on task {id}"
        )) && e.contains("was already approved by openclaw:"),
        "{e}"
    );

    // The user denies the next one: the call is refused and the task fails.
    let turn = rig.turn(session, &start("hostile", echo("world"), "second greeting"));
    let (denied, _) = turn.started();
    rig.until_state(&denied, "awaiting_approval");
    rig.notice(session, &denied, "is awaiting approval");
    let turn = rig.turn(
        session,
        &format!(
            "No, not today. {}",
            approve(json!({ "task": denied, "decision": "deny", "note": "not today" }))
        ),
    );
    let said = turn.text();
    assert!(
        said.starts_with(&format!(
            "Denied request #1 of skillbox task {denied} (hostile): exec `echo hello world`. \
             The call is refused (note to the skill: not today)"
        )),
        "{said}"
    );
    rig.until_state(&denied, "failed");
    rig.notice(session, &denied, "failed");
    let decided = &rig.approvals(&denied)[0]["decision"];
    assert_eq!(
        (&decided["approved"], &decided["note"]),
        (&json!(false), &json!("not today")),
        "{decided}"
    );
    assert!(
        decided["by"]
            .as_str()
            .unwrap()
            .starts_with(&format!("openclaw:{session}")),
        "{decided}"
    );
    rig.flow(&denied, "failed");
}
