//! The MCP server against a real MCP client not written here: the official
//! Python SDK (`mcp` 2.3.0 from PyPI, installed by `tests/mcp/client.sh`),
//! over stdio (`skillbox mcp`) and streamable HTTP (`skillbox serve
//! --listen`, `/mcp`). The client (tests/mcp/scenarios.py) reports what it
//! saw as JSON; the checks are here. The tasks extension's client side is
//! the SDK's extension hooks plus tests/mcp/tasks_ext.py, as any
//! application using the SDK would write it (the SDK ships none).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::daemon::Daemon;
use crate::harness::{cli, cli_cache_dir, guest, real_skill, root, skill_dir};

/// The SDK's python: from `SKILLBOX_TEST_MCP_PYTHON` (scripts/test.sh sets
/// it) or installed now; `None` only when it cannot be had, outside CI.
pub fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SKILLBOX_TEST_MCP_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new("bash")
        .arg(root().join("tests/mcp/client.sh"))
        .arg("install")
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    if out.status.success() {
        Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    } else if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the MCP test client could not be installed (tests/mcp/client.sh install)");
    } else {
        eprintln!("!!! SKIPPED: the Python MCP SDK could not be installed (tests/mcp/client.sh)");
        None
    }
}

/// A data dir whose configuration installs `hello` (its own manifest and
/// input schema), the `hostile` test guest, which asks for nothing, and
/// `asker`: the same guest asking to run `echo`, which the operator holds
/// for approval.
struct Setup {
    dir: tempfile::TempDir,
    _hello: tempfile::TempDir,
    _asker: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let hello = real_skill("hello");
        let asker = skill_dir(
            "hostile",
            "[exec]\nallow = [ { program = \"echo\", args = [\"**\"] } ]\n",
        );
        let config = format!(
            "[skills.hello]\npath = {:?}\n\n[skills.hostile]\npath = {:?}\n\
             grants = {{ env = {{ allow = [\"SKILLBOX_MCP_GRANTED\"] }} }}\n\n\
             [skills.asker]\npath = {:?}\n\
             grants = {{ ask = {{ exec = [ {{ program = \"echo\", args = [\"**\"] }} ] }} }}\n",
            hello.path().to_str().unwrap(),
            guest("hostile").to_str().unwrap(),
            asker.path().to_str().unwrap(),
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        Setup {
            dir,
            _hello: hello,
            _asker: asker,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn stdio_command(&self) -> String {
        shell_words::join([
            env!("CARGO_BIN_EXE_skillbox"),
            "mcp",
            "--data-dir",
            self.path().to_str().unwrap(),
            "--cache-dir",
            cli_cache_dir().to_str().unwrap(),
        ])
    }
}

/// Runs the client with `target` (`--stdio CMD` or `--url U --token T`)
/// through `scenarios`; its JSON report.
pub fn client(python: &Path, target: &[&str], scenarios: &[&str]) -> Value {
    client_env(python, target, scenarios, &[])
}

/// [`client`] with more environment variables for the client (and the
/// stdio server it starts).
pub fn client_env(
    python: &Path,
    target: &[&str],
    scenarios: &[&str],
    env: &[(&str, &str)],
) -> Value {
    let out = Command::new(python)
        .arg(root().join("tests/mcp/scenarios.py"))
        .args(target)
        .args(scenarios)
        .env("SKILLBOX_CACHE_DIR", cli_cache_dir())
        .envs(SERVER_ENV.iter().copied())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "MCP client failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("client report is not JSON ({e}): {stdout}"))
}

/// The server's environment: one variable granted to `hostile`, one not.
const SERVER_ENV: &[(&str, &str)] = &[
    ("SKILLBOX_MCP_GRANTED", "granted-value"),
    ("SKILLBOX_MCP_SECRET", "secret-value"),
];

/// Every check, against one transport's report.
fn check(report: &Value, tasks_cli: impl Fn(&str) -> Value) {
    let tools = &report["tools"];
    assert_eq!(tools["protocol"], "2026-07-28", "{tools}");
    assert_eq!(tools["server_tasks"], true, "{tools}");
    let hello = &tools["tools"]["hello"];
    assert_eq!(
        hello["input_schema"]["properties"]["name"]["type"], "string",
        "hello's schema comes from its manifest: {hello}"
    );
    let described = hello["description"].as_str().unwrap();
    assert!(described.contains("Greets someone"), "{described}");
    assert!(
        described.contains("Runs in the skillbox sandbox"),
        "{described}"
    );
    assert!(tools["tools"]["hostile"].is_object(), "{tools}");

    // A task: handle at once, polled to its result; the id is the
    // skillbox task's, which the store knows as succeeded.
    let task = &report["task"];
    assert_eq!(task["handle"], "task", "{task}");
    assert_eq!(task["first_status"], "working");
    assert_eq!(
        task["seen"].as_array().unwrap().last().unwrap(),
        "completed"
    );
    assert_eq!(task["again"], "completed", "a finished task stays readable");
    let result = &task["result"];
    assert_eq!(result["is_error"], false, "{result}");
    assert!(
        result["text"].as_str().unwrap().contains("Hello, MCP!"),
        "{result}"
    );
    assert_eq!(result["structured"]["data"]["greeting"], "Hello, MCP! 👋");
    assert_eq!(result["structured"]["state"], "succeeded");
    let id = task["task_id"].as_str().unwrap();
    let stored = tasks_cli(id);
    assert_eq!(stored["state"], "succeeded", "{stored}");
    assert_eq!(stored["spec"]["label"], "mcp/hello", "{stored}");

    let auto = &report["auto"];
    assert!(
        auto["result"]["text"]
            .as_str()
            .unwrap()
            .contains("Hello, polling!"),
        "{auto}"
    );
    assert_eq!(auto["statuses"][0], "working", "{auto}");

    // A skill's failure is the tool's error result, not a protocol error.
    let fails = &report["fails"];
    assert_eq!(fails["status"], "completed", "{fails}");
    assert_eq!(fails["result"]["is_error"], true, "{fails}");
    assert_eq!(fails["result"]["structured"]["state"], "failed", "{fails}");

    let cancel = &report["cancel"];
    assert_eq!(cancel["ack"], "complete", "{cancel}");
    assert_eq!(cancel["status"], "cancelled", "{cancel}");
    let stored = tasks_cli(cancel["task_id"].as_str().unwrap());
    assert_eq!(stored["state"], "cancelled", "{stored}");

    // Without the extension: one blocking call, progress on the way.
    let legacy = &report["legacy"];
    assert_eq!(legacy["protocol"], "2025-11-25", "{legacy}");
    assert_eq!(legacy["result"]["is_error"], false, "{legacy}");
    assert_eq!(legacy["result"]["structured"]["data"]["steps"], 4);
    let progress = legacy["progress"].as_array().unwrap();
    assert_eq!(progress.len(), 4, "{legacy}");
    assert_eq!(progress[3]["progress"], 100.0, "{legacy}");
    assert_eq!(progress[3]["total"], 100.0, "{legacy}");
    assert_eq!(progress[0]["message"], "step 1/4", "{legacy}");

    // The operator's grants apply, and only they: "grants" in the
    // arguments is just input.
    let vars = &report["grants"]["result"]["structured"]["data"]["vars"];
    assert!(vars.is_object(), "{}", report["grants"]);
    assert!(vars.get("SKILLBOX_MCP_SECRET").is_none(), "{vars}");
    assert!(vars.get("SKILLBOX_MCP_GRANTED").is_some(), "{vars}");

    let errors = &report["errors"];
    let code = |k: &str| {
        errors[k]["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("{k}: {errors}"))
    };
    let message = |k: &str| errors[k]["error"]["message"].as_str().unwrap().to_string();
    assert_eq!(code("unknown_tool"), -32602);
    assert!(
        message("unknown_tool").contains("hello, hostile"),
        "{errors}"
    );
    assert_eq!(code("wrong_type"), -32602);
    assert!(message("wrong_type").contains("/name"), "{errors}");
    assert_eq!(code("unknown_field"), -32602);
    assert!(message("unknown_field").contains("nom"), "{errors}");
    assert_eq!(code("huge"), -32602);
    assert!(message("huge").contains("limit"), "{errors}");
    assert_eq!(code("unknown_task"), -32602);
    assert_eq!(code("not_an_id"), -32602);
    assert_eq!(code("update"), -32602);
    assert!(message("update").contains("waits for no input"), "{errors}");

    // A held call: input_required with one form elicitation per pending
    // request, answered through tasks/update and recorded as the client's.
    let approve = &report["approve"];
    let approved = &approve["approved"];
    assert_eq!(approved["result"]["is_error"], false, "{approve}");
    assert!(
        approved["result"]["text"]
            .as_str()
            .unwrap()
            .contains("echo exited with 0"),
        "{approve}"
    );
    let asked = &approved["asked"][0]["approval-1"];
    assert_eq!(asked["method"], "elicitation/create", "{asked}");
    assert_eq!(asked["params"]["mode"], "form", "{asked}");
    let text = asked["params"]["message"].as_str().unwrap();
    assert!(
        text.contains("exec echo approved by mcp") && text.contains("--ask-exec"),
        "{text}"
    );
    assert_eq!(
        asked["params"]["requestedSchema"]["required"],
        serde_json::json!(["approve"])
    );
    let bad = &approve["bad"];
    assert!(
        bad["unknown_key"]["message"]
            .as_str()
            .unwrap()
            .contains("approval-N"),
        "{bad}"
    );
    assert!(
        bad["unknown_request"]["message"]
            .as_str()
            .unwrap()
            .contains("no request #9"),
        "{bad}"
    );
    assert!(
        bad["no_approve"]["message"]
            .as_str()
            .unwrap()
            .contains("`approve`"),
        "{bad}"
    );
    assert_eq!(
        approve["still"], "input_required",
        "bad answers change nothing"
    );
    let denied = &approve["denied"];
    assert_eq!(denied["status"], "completed", "{denied}");
    assert_eq!(denied["result"]["is_error"], true, "{denied}");
    assert!(
        denied["result"]["text"]
            .as_str()
            .unwrap()
            .contains("denied by mcp:"),
        "{denied}"
    );
    assert!(
        approve["after_end"]["message"]
            .as_str()
            .unwrap()
            .contains("waits for no input"),
        "{approve}"
    );
    let pending_id = approve["pending"]["task_id"].as_str().unwrap();
    let denied_task = tasks_cli(pending_id);
    assert_eq!(denied_task["state"], "failed", "{denied_task}");
    assert_eq!(code("cancel_ended"), -32602);
    assert!(
        message("cancel_ended").contains("already ended"),
        "{errors}"
    );
    assert!(
        errors["after"]["result"]["text"]
            .as_str()
            .unwrap()
            .contains("Hello, still serving!"),
        "the server kept serving: {errors}"
    );
}

const ALL: &[&str] = &[
    "tools", "task", "auto", "fails", "cancel", "legacy", "errors", "grants", "approve",
];

#[test]
fn an_mcp_client_over_stdio_lists_calls_polls_and_cancels_skills() {
    let Some(python) = python() else { return };
    let setup = Setup::new();
    let report = client(&python, &["--stdio", &setup.stdio_command()], ALL);
    // The server has exited: read its store directly.
    use skillbox::store::TaskStore;
    let store = skillbox::store::SqliteStore::open_dir(setup.path()).unwrap();
    check(&report, |id| {
        serde_json::to_value(store.get(id.parse().unwrap()).unwrap()).unwrap()
    });
    let denied = report["approve"]["pending"]["task_id"].as_str().unwrap();
    let decided = store.approvals(denied.parse().unwrap()).unwrap();
    let by = &decided[0].decision.as_ref().unwrap().by;
    assert!(
        by.starts_with("mcp:") && by.ends_with("(through stdio)"),
        "{by}"
    );
}

#[test]
fn an_mcp_client_over_http_lists_calls_polls_and_cancels_skills() {
    let Some(python) = python() else { return };
    let setup = Setup::new();
    let port = crate::docker::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut env = SERVER_ENV.to_vec();
    env.push(("SKILLBOX_TOKEN", "mcp-test-token-0123456789"));
    let daemon = Daemon::start_env(setup.path(), &["--listen", &listen], &env);
    let url = format!("http://{listen}/mcp");
    let report = client(
        &python,
        &["--url", &url, "--token", "mcp-test-token-0123456789"],
        ALL,
    );
    check(&report, |id| {
        daemon.cli(&["tasks", "show", id, "--json"]).json()
    });
    let denied = report["approve"]["pending"]["task_id"].as_str().unwrap();
    let decided = daemon.cli(&["tasks", "approvals", denied, "--json"]).json();
    let by = decided[0]["decision"]["by"].as_str().unwrap();
    assert!(
        by.starts_with("mcp:") && by.ends_with("(through the API token)"),
        "{by}"
    );

    // Without the bearer token the endpoint answers nothing but 401.
    let out = Command::new(&python)
        .arg(root().join("tests/mcp/scenarios.py"))
        .args(["--url", &url, "--token", "wrong", "tools"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong token was accepted");
}

#[test]
fn a_catalog_that_grants_less_than_a_skill_requests_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let skill = real_skill("disk-report");
    let config = format!(
        "[skills.disk]\npath = {:?}\n",
        skill.path().to_str().unwrap()
    );
    let d = dir.path().to_str().unwrap();
    // `skillbox mcp` with the configuration plus `extra` refuses to start;
    // its stderr.
    let refused = |extra: &str| {
        std::fs::write(dir.path().join("config.toml"), format!("{config}{extra}")).unwrap();
        let out = cli(&["mcp", "--data-dir", d], &[]);
        assert_eq!(out.code, 1, "{out:?}");
        out.stderr
    };
    let stderr = refused("");
    assert!(stderr.contains("[skills.disk]"), "{stderr}");
    assert!(stderr.contains("not granted"), "{stderr}");
    assert!(stderr.contains("partial = true"), "{stderr}");

    // An unknown key is an error, not ignored.
    let stderr = refused("grant = {}\n");
    assert!(stderr.contains("unknown field `grant`"), "{stderr}");

    // Notifications to a sink the relay does not have: refused at start.
    let stderr = refused("partial = true\nnotify-to = [\"nowhere\"]\n");
    assert!(stderr.contains("[skills.disk] notify-to"), "{stderr}");
    assert!(stderr.contains("nowhere"), "{stderr}");

    // Granted with `partial`, it is offered.
    std::fs::write(
        dir.path().join("config.toml"),
        format!("{config}partial = true\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skillbox"))
        .args(["mcp", "--data-dir", d, "--cache-dir"])
        .arg(cli_cache_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// An agent runtime that starts a task for one of its sessions (the
/// OpenClaw plugin) names the session, its messaging route and a label in
/// the call's `_meta`; the task carries them. A malformed one is refused
/// before any task starts. (Raw requests, as the plugin sends them.)
#[test]
fn a_call_names_its_parent_session_route_and_label_in_its_meta() {
    let setup = Setup::new();
    let port = crate::docker::free_port();
    let listen = format!("127.0.0.1:{port}");
    let daemon = Daemon::start_env(
        setup.path(),
        &["--listen", &listen],
        &[("SKILLBOX_TOKEN", "meta-test-token-0123456789")],
    );
    let call = |id: u32, meta: Value| -> Value {
        let mut m = serde_json::json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": { "name": "test", "version": "1" },
            "io.modelcontextprotocol/clientCapabilities": {
                "extensions": { "io.modelcontextprotocol/tasks": {} } },
        });
        m.as_object_mut()
            .unwrap()
            .extend(meta.as_object().unwrap().clone());
        let body = serde_json::json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": "hello", "arguments": { "name": "meta" }, "_meta": m } });
        let out = Command::new("curl")
            .args(["-s", "--max-time", "30", &format!("http://{listen}/mcp")])
            .args(["-H", "Authorization: Bearer meta-test-token-0123456789"])
            .args(["-H", "Content-Type: application/json"])
            .args(["-H", "Accept: application/json, text/event-stream"])
            .args(["-H", "MCP-Protocol-Version: 2026-07-28"])
            .args(["-H", "Mcp-Method: tools/call", "-H", "Mcp-Name: hello"])
            .args(["--data", &body.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = text
            .lines()
            .map(|l| l.strip_prefix("data: ").unwrap_or(l))
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no answer: {text}"));
        serde_json::from_str(json).unwrap()
    };
    for (meta, key) in [
        (
            json_meta("parentRoute", serde_json::json!({ "channel": "telegram" })),
            "parentRoute",
        ),
        (
            json_meta(
                "parentRoute",
                serde_json::json!({ "channel": "x", "to": "1", "thread": 2 }),
            ),
            "parentRoute",
        ),
        (
            json_meta("parentSession", serde_json::json!("")),
            "parentSession",
        ),
        (json_meta("label", serde_json::json!(7)), "label"),
    ] {
        let r = call(1, meta);
        assert_eq!(r["error"]["code"], -32602, "{r}");
        let m = r["error"]["message"].as_str().unwrap();
        assert!(
            m.starts_with(&format!("_meta \"io.skillbox/{key}\"")),
            "{m}"
        );
    }
    let listed = daemon.cli(&["tasks", "list", "--json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 0, "refused: {listed}");

    let r = call(
        2,
        serde_json::json!({
            "io.skillbox/parentSession": "agent:main:telegram:direct:42",
            "io.skillbox/parentRoute": { "channel": "telegram", "to": "42", "account_id": "ops" },
            "io.skillbox/label": "hi there",
        }),
    );
    assert_eq!(r["result"]["resultType"], "task", "{r}");
    let id = r["result"]["taskId"].as_str().unwrap();
    let t = daemon.cli(&["tasks", "show", id, "--json"]).json();
    assert_eq!(
        t["spec"]["parent_session"], "agent:main:telegram:direct:42",
        "{t}"
    );
    assert_eq!(
        t["spec"]["parent_route"],
        serde_json::json!({ "channel": "telegram", "to": "42", "account_id": "ops" })
    );
    assert_eq!(t["spec"]["label"], "mcp/hello: hi there", "{t}");
    // Without `_meta` of its own, a call is as before.
    let r = call(3, serde_json::json!({}));
    let id = r["result"]["taskId"].as_str().unwrap();
    let t = daemon.cli(&["tasks", "show", id, "--json"]).json();
    assert_eq!(t["spec"]["label"], "mcp/hello", "{t}");
    assert!(t["spec"]["parent_session"].is_null(), "{t}");
}

fn json_meta(key: &str, value: Value) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(format!("io.skillbox/{key}"), value);
    Value::Object(m)
}
