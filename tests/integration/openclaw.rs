//! The relay into a real OpenClaw gateway (npm package `openclaw`, run on
//! loopback by `tests/openclaw/gateway.sh`): a task's summary is posted to
//! its `/hooks/agent` and `/hooks/wake`, the gateway runs the agent turn in
//! the task's parent session, and the relayed text is read back from the
//! gateway's own log and that session's chat history. The gateway's model is a loopback stub (no real model can run
//! here); everything else is the gateway as users run it. A wrong hooks
//! token is a permanent 401 failure, a request it rejects a permanent 400.

use std::path::Path;
use std::process::Command;

use crate::daemon::Daemon;
use crate::harness::*;
use crate::relay::until;

pub const HOOK_TOKEN: &str = "hooks-token-0123456789abcdef";
const GW_TOKEN: &str = "gateway-token-abcdef0123456789";

/// A gateway with its model stub in its own HOME; stopped when dropped.
pub struct Gateway {
    pub run: tempfile::TempDir,
    pub port: u16,
    stub: u16,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn script() -> std::path::PathBuf {
    root().join("tests/openclaw/gateway.sh")
}

impl Gateway {
    /// A configured gateway, not started yet (see [`Gateway::edit_config`],
    /// [`Gateway::cli`], [`Gateway::up`]).
    pub fn new() -> Gateway {
        let run = tempfile::tempdir().unwrap();
        let gw = Gateway {
            run,
            port: free_port(),
            stub: free_port(),
        };
        gw.script("configure", &[]);
        gw
    }

    /// A started gateway.
    pub fn start() -> Gateway {
        let gw = Gateway::new();
        gw.up();
        gw
    }

    fn script(&self, cmd: &str, extra: &[&str]) {
        let out = Command::new("bash")
            .arg(script())
            .arg(cmd)
            .arg(self.run.path())
            .args([
                &self.port.to_string(),
                &self.stub.to_string(),
                HOOK_TOKEN,
                GW_TOKEN,
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gateway.sh {cmd} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts (or, after [`Gateway::down`], restarts) the gateway and its
    /// stub; returns once it is ready.
    pub fn up(&self) {
        self.script("start", &[]);
    }

    /// Stops the gateway and its stub (SIGTERM), keeping its state.
    pub fn down(&self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.run.path())
            .status();
    }

    /// Edits the gateway's `openclaw.json`.
    pub fn edit_config(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let path = self.run.path().join("home/.openclaw/openclaw.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }

    /// `openclaw ARGS…` in the gateway's environment.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new("bash")
            .arg(script())
            .arg("cli")
            .arg(self.run.path())
            .args(args)
            .output()
            .unwrap()
    }

    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.run.path().join(name)).unwrap_or_default()
    }

    /// The structured fields of the gateway's "hook agent run completed"
    /// log line for `run_id`, once it is there.
    fn completed(&self, run_id: &str) -> Option<serde_json::Value> {
        let needle = format!("hook agent run completed runId={run_id} ");
        self.file("gateway.log")
            .lines()
            .filter(|l| l.contains(&needle))
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| serde_json::json!({ "fields": v["1"].clone(), "line": v }))
    }

    /// `openclaw gateway call METHOD` with `params`: its JSON answer.
    pub fn call(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let out = Command::new("bash")
            .arg(script())
            .arg("call")
            .arg(self.run.path())
            .args([
                &self.port.to_string(),
                GW_TOKEN,
                method,
                &params.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{method}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `chat.history` of `session`.
    pub fn history(&self, session: &str) -> serde_json::Value {
        self.call(
            "chat.history",
            serde_json::json!({ "sessionKey": session, "limit": 200 }),
        )
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.down();
    }
}

/// The texts of a chat message (string, or parts with `text`).
pub fn texts(content: &serde_json::Value) -> String {
    match content {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    std::fs::write(dir.join("hooks.token"), HOOK_TOKEN).unwrap();
    std::fs::write(dir.join("wrong.token"), "not-the-hooks-token-at-all").unwrap();
    let cfg = dir.join("skillbox.toml");
    let d = dir.display();
    std::fs::write(
        &cfg,
        format!(
            r#"[relay]
retry-initial = "100ms"
retry-max = "500ms"
timeout = "30s"

[relay.sink.claw]
type = "openclaw"
url = "http://127.0.0.1:{port}"
token-file = "{d}/hooks.token"
agent-id = "main"

[relay.sink.claw-wake]
type = "openclaw"
url = "http://127.0.0.1:{port}"
token-file = "{d}/hooks.token"
endpoint = "wake"

[relay.sink.claw-bad]
type = "openclaw"
url = "http://127.0.0.1:{port}"
token-file = "{d}/wrong.token"

[relay.sink.claw-nobody]
type = "openclaw"
url = "http://127.0.0.1:{port}"
token-file = "{d}/hooks.token"
agent-id = "nobody"
"#
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn summaries_reach_a_real_openclaw_gateway() {
    let gw = Gateway::start();
    let data = tempfile::tempdir().unwrap();
    let cfg = write_config(data.path(), gw.port);
    let d = Daemon::start(data.path(), &["--config", cfg.to_str().unwrap()]);
    let skill = real_skill("hello");
    let session = format!("hook:skillbox:{}", std::process::id());
    let out = d.cli(&[
        "spawn",
        skill.path().to_str().unwrap(),
        "-i",
        r#"{"name": "openclaw"}"#,
        "--label",
        "relay-e2e",
        "--parent-session",
        &session,
        "--notify-to",
        "claw,claw-wake,claw-bad,claw-nobody",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_string();

    let show = || {
        let out = d.cli(&["tasks", "show", &id, "--json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json()
    };
    let t = until("the four notifications to settle", || {
        let t = show();
        let ds = t["deliveries"].as_array()?.clone();
        (ds.len() == 4 && ds.iter().all(|x| x["state"] != "pending")).then_some(t)
    });
    let by_sink = |name: &str| {
        t["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["sink"] == name)
            .unwrap()
            .clone()
    };

    // A wrong token: refused for good, once, and said so.
    let bad = by_sink("claw-bad");
    assert_eq!(bad["state"], "failed", "{bad}");
    assert_eq!(
        (bad["attempts"].as_u64(), bad["last_status"].as_u64()),
        (Some(1), Some(401))
    );
    let human = d.cli(&["tasks", "show", &id]);
    assert!(
        human.stdout.contains("claw-bad succeeded: failed, 1 attempt; last error: the OpenClaw gateway refused the hooks token (HTTP 401)"),
        "{}",
        human.stdout
    );

    // A request the gateway rejects (an agent it does not have): refused
    // for good, with the gateway's reason.
    let nobody = by_sink("claw-nobody");
    assert_eq!(nobody["state"], "failed", "{nobody}");
    assert_eq!(
        (nobody["attempts"].as_u64(), nobody["last_status"].as_u64()),
        (Some(1), Some(400))
    );
    let e = nobody["last_error"].as_str().unwrap();
    assert!(
        e.starts_with("the OpenClaw gateway rejected the request (HTTP 400)")
            && e.contains("unknown agentId"),
        "{e}"
    );

    // /hooks/agent took it and ran the agent turn in the parent's session.
    let agent = by_sink("claw");
    assert_eq!(agent["state"], "delivered", "{agent}");
    let run_id = agent["history"][0]["detail"]
        .as_str()
        .and_then(|s| s.strip_prefix("runId="))
        .unwrap_or_else(|| panic!("no runId: {agent}"))
        .to_string();
    let done = until("the gateway's log line for the run", || {
        gw.completed(&run_id)
    });
    let line = done["line"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let fields = &done["fields"];
    assert!(line.contains("status=ok"), "{done}");
    assert_eq!(fields["name"], "skillbox", "{done}");
    assert_eq!(fields["sourcePath"], "/hooks/agent", "{done}");
    assert_eq!(fields["logicalSessionKey"], session.as_str(), "{done}");
    // In the parent's own session (`sessionMode: "persistent"`; the gateway
    // names it by its canonical, agent-scoped key), not in an isolated one.
    assert_eq!(
        fields["sessionKey"],
        format!("agent:main:{session}").as_str(),
        "{done}"
    );

    // The relayed text, read back from the parent session's chat history.
    let history = gw.history(&session);
    let messages = history["messages"].as_array().unwrap();
    let user = messages
        .iter()
        .map(|m| texts(&m["content"]))
        .find(|t| t.contains("**hello** (relay-e2e) succeeded"))
        .unwrap_or_else(|| panic!("the summary is not in the session: {history}"));
    assert!(user.contains("Hello, openclaw!"), "{user}");
    assert!(
        user.contains(&format!("`skillbox tasks logs {id} --data-dir ")),
        "{user}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m["role"] == "assistant" && texts(&m["content"]).contains("STUB-REPLY:")),
        "the agent answered: {history}"
    );

    // /hooks/wake queued a system event that woke the main session: the
    // model saw the text.
    let wake = by_sink("claw-wake");
    assert_eq!(wake["state"], "delivered", "{wake}");
    assert!(
        wake["history"][0]["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("eventOutcome="),
        "{wake}"
    );
    until("the woken session's model call", || {
        gw.file("stub-requests.jsonl")
            .lines()
            .any(|l| l.contains("System: [") && l.contains("**hello** (relay-e2e) succeeded"))
            .then_some(())
    });
}
