//! Secrets a skill may use but never read: a program granted a secret
//! really receives it (it writes the value's sha256 to a granted
//! directory), while a hostile skill that tries every way to read it or
//! hand it on (its environment, `printenv` and `env`, its stdout, stderr,
//! logs, progress, summary, a granted endpoint) gets `[redacted]`; the
//! value never reaches the task store, the events or a notification.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::daemon::Daemon;
use crate::harness::{cli, skill_dir};
use crate::relay::{Receiver, Reply, config, webhook};

/// The program that proves it got the value: its sha256, into `hash` in
/// its working directory (the first granted one).
const HASH: &str = r#"printf %s "$DEPLOY_TOKEN" | sha256sum > hash"#;

/// The hostile skill with a manifest asking for what the test grants.
fn hostile(port: u16) -> tempfile::TempDir {
    skill_dir(
        "hostile",
        &format!(
            r#"[fs]
"/w" = {{ access = "read-write" }}
[exec]
allow = [ {{ program = "printenv", args = ["**"] }}, {{ program = "env" }}, {{ program = "sh", args = ["-c", {HASH:?}] }} ]
[env]
allow = ["SBX_TEST_DEPLOY_TOKEN"]
[net]
allow = ["127.0.0.1:{port}"]
[secrets]
exec = [ {{ program = "printenv", secret = "DEPLOY_TOKEN" }}, {{ program = "sh", secret = "DEPLOY_TOKEN" }} ]
"#
        ),
    )
}

/// The grants the manifest asks for (with the secrets' uses or without).
fn flags(work: &str, port: &str, secrets: bool) -> Vec<String> {
    let mut all: Vec<String> = [
        "--allow-write",
        &format!("{work}:/w"),
        "--allow-exec",
        "printenv **",
        "--allow-exec",
        "env",
        "--allow-exec",
        &format!("sh -c '{HASH}'"),
        "--allow-env",
        "SBX_TEST_DEPLOY_TOKEN",
        "--allow-net",
        &format!("127.0.0.1:{port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if secrets {
        for program in ["printenv", "sh"] {
            all.extend(["--allow-exec-secret", program, "DEPLOY_TOKEN"].map(String::from));
        }
    }
    all
}

fn input(port: u16, known: Option<&str>) -> String {
    serde_json::json!({
        "case": "exfiltrate",
        "execs": [["printenv", "DEPLOY_TOKEN"], ["env"], ["sh", "-c", HASH]],
        "known": known,
        "send_to": known.is_none().then(|| format!("127.0.0.1:{port}")),
    })
    .to_string()
}

fn value() -> String {
    format!("sk-deploy-{:032x}", fastrand::u128(..))
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Whether `needle` is anywhere in the files under `dir`.
fn found_in_files(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in walk(dir) {
        if let Ok(bytes) = std::fs::read(&e)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(e.display().to_string());
        }
    }
    hits
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A secret's value, a granted directory, a granted endpoint listening,
/// and the hostile skill asking for them.
struct Scene {
    secret: String,
    work: tempfile::TempDir,
    listener: TcpListener,
    port: u16,
    skill: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        Scene {
            secret: value(),
            work: tempfile::tempdir().unwrap(),
            listener,
            port,
            skill: hostile(port),
        }
    }

    fn work_dir(&self) -> String {
        self.work.path().to_str().unwrap().to_string()
    }

    /// The host's environment holding the value.
    fn env(&self) -> [(&'static str, &str); 1] {
        [("SBX_TEST_DEPLOY_TOKEN", self.secret.as_str())]
    }

    /// `skillbox run` of the skill with `input`, the secret defined from
    /// the environment, `extra` flags and every grant.
    fn run(&self, extra: &[&str], input: &str) -> crate::harness::CliOutput {
        let mut args: Vec<String> = vec![
            "run".into(),
            self.skill.path().to_str().unwrap().into(),
            "--secret".into(),
            "DEPLOY_TOKEN=env:SBX_TEST_DEPLOY_TOKEN".into(),
            "-i".into(),
            input.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(flags(&self.work_dir(), &self.port.to_string(), true));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&argv, &self.env())
    }
}

#[test]
fn a_program_gets_the_secret_and_the_skill_gets_only_redacted_text() {
    let scene = Scene::new();
    let (secret, port, listener) = (scene.secret.as_str(), scene.port, &scene.listener);

    // `run`, the value known to the skill some other way (its input): every
    // way out of the run hides it.
    let out = scene.run(&["--json", "-v"], &input(port, Some(secret)));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stdout.contains(secret) && !out.stderr.contains(secret),
        "the value got out: {}\n{}",
        out.stdout,
        out.stderr
    );
    let report = out.json();
    let gathered = report["data"]["gathered"].as_str().unwrap();
    assert!(
        gathered.contains("SBX_TEST_DEPLOY_TOKEN=[redacted]\n"),
        "its environment: {gathered}"
    );
    assert!(
        !gathered.lines().any(|l| l.starts_with("DEPLOY_TOKEN=")),
        "`env` was not granted the secret: {gathered}"
    );
    assert_eq!(
        gathered.matches("[redacted]").count(),
        4,
        "its environment, printenv, env (the granted variable), known: {gathered}"
    );
    for stream in ["stdout", "stderr"] {
        assert!(report[stream].as_str().unwrap().contains("[redacted]"));
    }
    // The program got the real value.
    let hash = std::fs::read_to_string(scene.work.path().join("hash")).unwrap();
    assert_eq!(
        hash.split_whitespace().next(),
        Some(sha256_hex(secret).as_str())
    );

    // A task of the daemon: the skill never holds the value, so what it
    // sends to its granted endpoint has none; nor does anything stored.
    std::fs::remove_file(scene.work.path().join("hash")).unwrap();
    let data = tempfile::tempdir().unwrap();
    let rx = Receiver::start(&[], Reply::Status(200));
    let cfg = config(data.path(), &webhook("ops", &rx.url("/in")), "\"ops\"");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[secrets.DEPLOY_TOKEN]\nenv = \"SBX_TEST_DEPLOY_TOKEN\"\n");
    std::fs::write(&cfg, text).unwrap();
    let d = Daemon::start_env(
        data.path(),
        &["--config", cfg.to_str().unwrap()],
        &scene.env(),
    );
    let mut args = vec![
        "spawn".to_string(),
        scene.skill.path().to_str().unwrap().into(),
        "-i".into(),
        input(port, None),
    ];
    args.extend(flags(&scene.work_dir(), &port.to_string(), true));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = d.cli(&argv);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_string();
    let (mut conn, _) = listener.accept().unwrap();
    let mut sent = String::new();
    conn.read_to_string(&mut sent).unwrap();
    let out = d.cli(&["tasks", "wait", &id, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!sent.contains(secret), "sent: {sent}");
    assert!(sent.contains("SBX_TEST_DEPLOY_TOKEN=[redacted]"), "{sent}");
    let hash = std::fs::read_to_string(scene.work.path().join("hash")).unwrap();
    assert_eq!(
        hash.split_whitespace().next(),
        Some(sha256_hex(secret).as_str())
    );
    let notified = rx.wait_for(1);
    let logs = d.cli(&["tasks", "logs", &id, "--json"]);
    for (what, text) in [
        ("tasks wait", out.stdout.clone()),
        ("tasks logs", logs.stdout.clone()),
        (
            "the notification",
            String::from_utf8_lossy(&notified[0].body).into_owned(),
        ),
    ] {
        assert!(!text.contains(secret), "{what}: {text}");
    }
    assert!(
        logs.stdout.contains("gathered: ") && logs.stdout.contains("[redacted]"),
        "the log line, stdout and stderr: {}",
        logs.stdout
    );
    drop(d);
    let hits = found_in_files(data.path(), secret.as_bytes());
    assert!(hits.is_empty(), "the value is stored in {hits:?}");
}

#[test]
fn secrets_are_granted_requested_and_defined_or_refused() {
    let work = tempfile::tempdir().unwrap();
    let skill = hostile(9);
    let w = work.path().to_str().unwrap().to_string();
    let base = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "run".to_string(),
            skill.path().to_str().unwrap().into(),
            "-i".into(),
            input(9, Some("x")),
        ];
        let granted = !extra.contains(&"--no-secret-grants");
        args.extend(flags(&w, "9", granted));
        args.extend(
            extra
                .iter()
                .filter(|e| **e != "--no-secret-grants")
                .map(|s| s.to_string()),
        );
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&argv, env)
    };
    // Granted, not defined on this host.
    let out = base(&[], &[]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "the secret DEPLOY_TOKEN is granted but this host does not define it: add [secrets.DEPLOY_TOKEN]"
        ),
        "{}",
        out.stderr
    );
    // Defined from a variable that is not set, or too short to redact.
    let out = base(&["--secret", "DEPLOY_TOKEN=env:SBX_TEST_UNSET_VAR"], &[]);
    assert!(
        out.stderr.contains(
            "the secret DEPLOY_TOKEN: the environment variable SBX_TEST_UNSET_VAR is not set"
        ),
        "{}",
        out.stderr
    );
    let out = base(
        &["--secret", "DEPLOY_TOKEN=env:SBX_SHORT"],
        &[("SBX_SHORT", "abc")],
    );
    assert!(out.stderr.contains("too short to redact"), "{}", out.stderr);
    let out = base(&["--secret", "DEPLOY_TOKEN=vault:x"], &[]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr.contains("a secret comes from env:VAR"),
        "{}",
        out.stderr
    );

    // Requested, not granted: refused before the run, naming the flag.
    let out = base(&["--no-secret-grants"], &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("--allow-exec-secret printenv DEPLOY_TOKEN"),
        "{}",
        out.stderr
    );
    // inspect shows which program gets which secret.
    let mut args = vec![
        "inspect".to_string(),
        skill.path().to_str().unwrap().into(),
        "--json".into(),
    ];
    args.extend(flags(&w, "9", true));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli(&argv, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let items = out.json()["report"].clone();
    let secrets: Vec<String> = items
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["capability"] == "secrets")
        .map(|i| {
            format!(
                "{} {}",
                i["item"].as_str().unwrap(),
                i["status"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        secrets,
        [
            "DEPLOY_TOKEN to printenv granted",
            "DEPLOY_TOKEN to sh granted"
        ]
    );
    // A manifest's unknown secret field is an error.
    let bad = skill_dir(
        "hostile",
        "[secrets]\nexec = [ { program = \"printenv\", secret = \"T\", value = \"x\" } ]\n",
    );
    let out = cli(&["inspect", bad.path().to_str().unwrap()], &[]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("unknown field `value`"),
        "{}",
        out.stderr
    );
}

/// A skill that lowers the output cap so that the cut falls inside a
/// value (its manifest may ask for any cap) sees no byte of it: what is cut
/// off at the end of a program's output and what is left are both hidden.
#[test]
fn no_cut_of_a_programs_output_reveals_part_of_a_secret() {
    let scene = Scene::new();
    let (secret, port, listener) = (scene.secret.as_str(), scene.port, &scene.listener);
    for cap in [
        1,
        4,
        11,
        25,
        secret.len() - 1,
        secret.len(),
        secret.len() + 1,
    ] {
        let input = serde_json::json!({
            "case": "exfiltrate",
            "execs": [["printenv", "DEPLOY_TOKEN"]],
            "send_to": format!("127.0.0.1:{port}"),
        });
        // The summary is over the cap: the run fails after sending.
        let out = scene.run(&["--output", &cap.to_string()], &input.to_string());
        let (mut conn, _) = listener.accept().unwrap();
        let mut sent = String::new();
        conn.read_to_string(&mut sent).unwrap();
        let printed = sent
            .lines()
            .skip_while(|l| l.contains('='))
            .collect::<Vec<_>>()
            .join("\n");
        // Its first bytes, `sk-`, would be its start.
        assert!(
            !printed.contains(&secret[..3]),
            "cap {cap}: {printed:?} shows the start of the value"
        );
        assert!(!out.stdout.contains(&secret[..3]) && !out.stderr.contains(&secret[..3]));
    }
}
