//! Signed skills through the CLI: `skillbox keys`, `skillbox sign`, and
//! what `inspect` says of a skill's signature: unsigned, signed by an
//! untrusted key, trusted, and broken by a changed manifest or component.

use serde_json::Value;

use crate::harness::{CliOutput, cli, guest, real_skill};

pub struct Keys(tempfile::TempDir);

impl Keys {
    fn new() -> Keys {
        Keys(tempfile::tempdir().unwrap())
    }

    pub fn cli(&self, args: &[&str]) -> CliOutput {
        cli(args, &[("SKILLBOX_KEYS", self.0.path().to_str().unwrap())])
    }

    fn signature(&self, skill: &std::path::Path) -> Value {
        let out = self.cli(&["inspect", skill.to_str().unwrap(), "--json"]);
        out.json()["signature"].clone()
    }
}

#[test]
fn a_signature_covers_the_component_and_the_manifest_and_names_its_key() {
    let keys = Keys::new();
    let skill = real_skill("hello");
    let path = skill.path().to_str().unwrap();
    assert_eq!(keys.signature(skill.path())["status"], "unsigned");

    let made = keys.cli(&["keys", "generate", "acme", "--json"]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    let fingerprint = made.json()["fingerprint"].as_str().unwrap().to_string();
    let signed = keys.cli(&["sign", path, "--key", "acme", "--json"]);
    assert_eq!(signed.code, 0, "{}", signed.stderr);
    assert_eq!(signed.json()["key"], fingerprint.as_str());

    // Anyone can sign: a key nobody trusts proves nothing.
    let s = keys.signature(skill.path());
    assert_eq!(s["status"], "untrusted", "{s}");
    assert_eq!(s["key"], fingerprint.as_str());

    // The publisher hands out the public key; the operator trusts it.
    let pem = keys.cli(&["keys", "show", "acme"]).stdout;
    let file = keys.0.path().join("acme.pub");
    std::fs::write(&file, pem).unwrap();
    let trusted = keys.cli(&[
        "keys",
        "trust",
        file.to_str().unwrap(),
        "--name",
        "acme-corp",
    ]);
    assert_eq!(trusted.code, 0, "{}", trusted.stderr);
    let s = keys.signature(skill.path());
    assert_eq!(s["status"], "trusted", "{s}");
    assert_eq!(s["publisher"], "acme-corp");
    let text = keys.cli(&["inspect", path]).stdout;
    assert!(text.contains("signed by acme-corp"), "{text}");

    // One more capability in the manifest: the old signature fails.
    let manifest = skill.path().join("skill.toml");
    let original = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        format!("{original}\n[exec]\nallow = [ {{ program = \"rm\", args = [\"**\"] }} ]\n"),
    )
    .unwrap();
    let s = keys.signature(skill.path());
    assert_eq!(s["status"], "invalid", "{s}");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("changed since it was signed"),
        "{s}"
    );

    // Another component, pinned in the manifest: the signature fails too.
    let other = std::fs::read(guest("hostile")).unwrap();
    std::fs::write(skill.path().join("skill.wasm"), &other).unwrap();
    let pinned = original.replace(
        &skillbox::skill::sha256_hex(&std::fs::read(guest("hello")).unwrap()),
        &skillbox::skill::sha256_hex(&other),
    );
    assert_ne!(pinned, original);
    std::fs::write(&manifest, pinned).unwrap();
    assert_eq!(keys.signature(skill.path())["status"], "invalid");

    // Re-signed by the publisher, it holds again.
    assert_eq!(keys.cli(&["sign", path, "--key", "acme"]).code, 0);
    assert_eq!(keys.signature(skill.path())["status"], "trusted");

    // A forged skill.sig is refused, not trusted.
    let sig = skill.path().join("skill.sig");
    let mut forged: Value = serde_json::from_str(&std::fs::read_to_string(&sig).unwrap()).unwrap();
    forged["signature"] = Value::from("MEUCIQ==");
    std::fs::write(&sig, forged.to_string()).unwrap();
    assert_eq!(keys.signature(skill.path())["status"], "invalid");
}

#[test]
fn keys_refuse_bad_names_bad_files_and_keys_shipped_in_a_skill() {
    let keys = Keys::new();
    let out = keys.cli(&["keys", "generate", "../evil"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("key name"), "{}", out.stderr);
    assert_eq!(keys.cli(&["keys", "generate", "me"]).code, 0);
    let again = keys.cli(&["keys", "generate", "me"]);
    assert_eq!(again.code, 4);
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);

    let junk = keys.0.path().join("junk.pub");
    std::fs::write(&junk, "not a key").unwrap();
    let out = keys.cli(&["keys", "trust", junk.to_str().unwrap(), "--name", "x"]);
    assert_eq!(out.code, 4);
    assert!(out.stderr.contains("PUBLIC KEY"), "{}", out.stderr);

    let skill = real_skill("hello");
    let inside = skill.path().join("me.key");
    std::fs::copy(keys.0.path().join("keys/me.key"), &inside).unwrap();
    let out = keys.cli(&[
        "sign",
        skill.path().to_str().unwrap(),
        "--key",
        inside.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 4);
    assert!(out.stderr.contains("must never ship"), "{}", out.stderr);
    assert!(!skill.path().join("skill.sig").exists());
    let out = keys.cli(&["sign", skill.path().to_str().unwrap(), "--key", "nobody"]);
    assert_eq!(out.code, 4);
    assert!(
        out.stderr.contains("skillbox keys generate"),
        "{}",
        out.stderr
    );

    let listed = keys.cli(&["keys", "list", "--json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["private"], true);
}

/// The skill's OCI artifact is what wasm tooling expects: one
/// `application/wasm` layer and a wasm config naming the component's
/// world (its exports and imports), with the manifest in an annotation.
#[test]
fn the_artifact_of_a_real_skill_names_its_world() {
    use skillbox::trust::artifact::{ImageManifest, MANIFEST_ANNOTATION, WasmConfig};
    let bytes = std::fs::read(guest("hello")).unwrap();
    let a = skillbox::trust::Artifact::of(&bytes, "[skill]\n", None);
    let config: WasmConfig = serde_json::from_slice(&a.config).unwrap();
    let world = config.component.expect("a component's world");
    assert_eq!(world.exports, ["run"], "{world:?}");
    assert!(
        world
            .imports
            .iter()
            .any(|i| i.starts_with("skillbox:skill/progress@")),
        "{world:?}"
    );
    assert_eq!(config.os, "wasip2");
    let manifest: ImageManifest = serde_json::from_slice(&a.manifest).unwrap();
    assert_eq!(manifest.layers.len(), 1);
    assert_eq!(manifest.layers[0].size, bytes.len() as u64);
    assert_eq!(manifest.annotations[MANIFEST_ANNOTATION], "[skill]\n");
}

/// `skillbox build --sign KEY` pins and signs in one step.
#[test]
fn build_signs_what_it_pins() {
    let keys = Keys::new();
    assert_eq!(keys.cli(&["keys", "generate", "ci"]).code, 0);
    let dir = tempfile::tempdir().unwrap();
    for file in ["skill.toml", "input.schema.json"] {
        std::fs::copy(
            crate::harness::root().join("skills/hello").join(file),
            dir.path().join(file),
        )
        .unwrap();
    }
    let wasm = guest("hello");
    let build = |more: &[&str]| {
        let mut args = vec![
            "build",
            dir.path().to_str().unwrap(),
            "--component",
            wasm.to_str().unwrap(),
            "--sign",
        ];
        args.extend(more);
        keys.cli(&args)
    };
    let out = build(&["ci", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let built = out.json();
    assert!(
        built["signed"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{built}"
    );
    assert_eq!(keys.signature(dir.path())["status"], "untrusted");
    // Signing with a key the store does not have fails after pinning,
    // saying so.
    let out = build(&["nobody"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("not signed"), "{}", out.stderr);
}

/// A key store that trusts the publisher `acme` and requires signatures,
/// and the key `mallory`, which it does not trust (made in a store of its
/// own, as a stranger's key would be).
pub struct Trusting {
    pub keys: Keys,
    stranger: Keys,
}

impl Trusting {
    pub fn new() -> Trusting {
        let keys = Keys::new();
        let stranger = Keys::new();
        assert_eq!(keys.cli(&["keys", "generate", "acme"]).code, 0);
        assert_eq!(stranger.cli(&["keys", "generate", "mallory"]).code, 0);
        let pem = keys.0.path().join("acme-public.pem");
        std::fs::write(&pem, keys.cli(&["keys", "show", "acme"]).stdout).unwrap();
        let out = keys.cli(&["keys", "trust", pem.to_str().unwrap(), "--name", "acme"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let out = keys.cli(&["keys", "policy", "--require-signature", "on"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        Trusting { keys, stranger }
    }

    pub fn dir(&self) -> &str {
        self.keys.0.path().to_str().unwrap()
    }

    /// Signs the skill at `path` with `acme`.
    pub fn sign(&self, path: &std::path::Path) {
        let out = self
            .keys
            .cli(&["sign", path.to_str().unwrap(), "--key", "acme"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }

    /// A copy of `hello`, signed by `by` ("acme", "mallory", or none).
    fn hello(&self, by: Option<&str>) -> tempfile::TempDir {
        let skill = real_skill("hello");
        let path = skill.path().to_str().unwrap();
        let out = match by {
            None => return skill,
            Some("mallory") => self.stranger.cli(&["sign", path, "--key", "mallory"]),
            Some(key) => self.keys.cli(&["sign", path, "--key", key]),
        };
        assert_eq!(out.code, 0, "{}", out.stderr);
        skill
    }

    fn fingerprint(&self, of: &Keys, name: &str) -> String {
        let listed = of.cli(&["keys", "list", "--json"]).json();
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap()["fingerprint"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// Appends one more exec rule to a signed skill's manifest (the component
/// and its pinned digest unchanged): what a tampered copy would do.
pub fn tamper(skill: &std::path::Path) {
    let manifest = skill.join("skill.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        format!("{text}\n[exec]\nallow = [ {{ program = \"rm\", args = [\"**\"] }} ]\n"),
    )
    .unwrap();
}

#[test]
fn a_host_that_requires_signatures_runs_only_what_its_trusted_publishers_signed() {
    let t = Trusting::new();
    let run = |skill: &tempfile::TempDir| {
        t.keys.cli(&[
            "run",
            skill.path().to_str().unwrap(),
            "--input",
            r#"{"name": "trust"}"#,
        ])
    };

    let signed = t.hello(Some("acme"));
    let out = run(&signed);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Hello, trust"), "{}", out.stdout);

    let unsigned = t.hello(None);
    let out = run(&unsigned);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("skill hello refused: it is not signed"),
        "{}",
        out.stderr
    );
    let plan = t
        .keys
        .cli(&["inspect", unsigned.path().to_str().unwrap(), "--json"]);
    assert_eq!(plan.code, 3);
    let plan = plan.json();
    assert_eq!(plan["will_run"], false, "{plan}");
    assert_eq!(plan["signature_required"], true, "{plan}");
    assert!(
        plan["refused"].as_str().unwrap().contains("not signed"),
        "{plan}"
    );

    // A stranger's signature: the error names the key and how to trust it.
    let strangers = t.hello(Some("mallory"));
    let out = run(&strangers);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let mallory = t.fingerprint(&t.stranger, "mallory");
    assert!(out.stderr.contains(&mallory), "{}", out.stderr);
    assert!(out.stderr.contains("skillbox keys trust"), "{}", out.stderr);

    // Signed by acme, then changed: refused, required or not.
    tamper(signed.path());
    let out = run(&signed);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("does not hold"), "{}", out.stderr);

    // A publisher trusted for other skills only.
    let ops = Keys::new();
    assert_eq!(ops.cli(&["keys", "generate", "ops"]).code, 0);
    let pem = ops.0.path().join("ops.pem");
    std::fs::write(&pem, ops.cli(&["keys", "show", "ops"]).stdout).unwrap();
    let out = t.keys.cli(&[
        "keys",
        "trust",
        pem.to_str().unwrap(),
        "--name",
        "ops",
        "--skill",
        "ops-*",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let by_ops = real_skill("hello");
    let key = ops.0.path().join("keys/ops.key");
    let out = t.keys.cli(&[
        "sign",
        by_ops.path().to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run(&by_ops);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("signed by ops, who is trusted only for the skills ops-*"),
        "{}",
        out.stderr
    );
    let policy = t.keys.cli(&["keys", "policy", "--json"]).json();
    assert_eq!(policy["require_signature"], true, "{policy}");
    assert_eq!(
        policy["publishers"]["ops"]["skills"][0], "ops-*",
        "{policy}"
    );

    // Not required: unsigned and untrusted skills run; a signature that
    // does not hold still does not.
    let out = t
        .keys
        .cli(&["keys", "policy", "--require-signature", "off"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(run(&unsigned).code, 0);
    assert_eq!(run(&strangers).code, 0);
    assert_eq!(run(&by_ops).code, 0);
    assert_eq!(run(&signed).code, 3);

    // Untrusting a scoped publisher drops its scope too.
    assert_eq!(t.keys.cli(&["keys", "untrust", "ops"]).code, 0);
    let policy = t.keys.cli(&["keys", "policy", "--json"]).json();
    assert!(policy["publishers"].get("ops").is_none(), "{policy}");
}

#[test]
fn a_daemon_that_requires_signatures_refuses_at_spawn_in_its_api_catalog_and_worker() {
    use crate::daemon::{Daemon, post};
    let t = Trusting::new();
    let data = tempfile::tempdir().unwrap();
    let env = [("SKILLBOX_KEYS", t.dir())];
    let d = Daemon::start_env(data.path(), &[], &env);

    let unsigned = t.hello(None);
    let out = d.cli(&["spawn", unsigned.path().to_str().unwrap()]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("it is not signed"), "{}", out.stderr);
    // The API (what the OpenClaw plugin and other agents call).
    let strangers = t.hello(Some("mallory"));
    let body = serde_json::json!({ "skill": strangers.path() }).to_string();
    let (status, answer) = d.http(&post("/v1/tasks", &body));
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("\"untrusted\""), "{answer}");
    assert!(answer.contains("skillbox keys trust"), "{answer}");

    let signed = t.hello(Some("acme"));
    let path = signed.path().to_str().unwrap();
    let out = d.cli(&["spawn", path, "--input", r#"{"name": "daemon"}"#]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = d.cli(&["tasks", "wait", out.stdout.trim()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    drop(d);

    // Queued behind a task that holds the only slot, changed before a
    // worker takes it: the worker checks again and refuses.
    let d = Daemon::start_env(data.path(), &["--concurrency", "1"], &env);
    let sleeper = crate::harness::skill_dir("hostile", "");
    let out = t
        .keys
        .cli(&["sign", sleeper.path().to_str().unwrap(), "--key", "acme"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = d.cli(&[
        "spawn",
        sleeper.path().to_str().unwrap(),
        "--input",
        r#"{"case": "sleep", "ms": 600000}"#,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let sleeping = out.stdout.trim().to_string();
    let out = d.cli(&["spawn", path]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_string();
    tamper(signed.path());
    assert_eq!(d.cli(&["tasks", "cancel", &sleeping]).code, 0);
    let out = d.cli(&["tasks", "wait", &id, "--json"]);
    let task = out.json();
    assert_eq!(task["state"], "failed", "{task}");
    assert!(task.to_string().contains("does not hold"), "{task}");
    drop(d);

    // An installed skill the policy refuses stops the server at start.
    std::fs::write(
        data.path().join("config.toml"),
        format!("[skills.hello]\npath = {:?}\n", unsigned.path()),
    )
    .unwrap();
    let d = data.path().to_str().unwrap();
    let out = crate::harness::cli(&["mcp", "--data-dir", d], &env);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("[skills.hello]"), "{}", out.stderr);
    assert!(out.stderr.contains("it is not signed"), "{}", out.stderr);
}

/// An MCP client calling an installed skill that changed after the server
/// started (and admitted it) gets the trust policy's refusal, not a task.
#[test]
fn an_mcp_call_of_a_skill_changed_since_the_server_started_is_refused() {
    let Some(python) = crate::mcp::python() else {
        return;
    };
    let t = Trusting::new();
    let data = tempfile::tempdir().unwrap();
    let signed = t.hello(Some("acme"));
    std::fs::write(
        data.path().join("config.toml"),
        format!("[skills.hello]\npath = {:?}\n", signed.path()),
    )
    .unwrap();
    let server = shell_words::join([
        env!("CARGO_BIN_EXE_skillbox"),
        "mcp",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--keys-dir",
        t.dir(),
    ]);
    let manifest = signed.path().join("skill.toml");
    let report = crate::mcp::client_env(
        &python,
        &["--stdio", &server],
        &["tampered"],
        &[("SKILLBOX_MCP_TAMPER", manifest.to_str().unwrap())],
    );
    let r = &report["tampered"];
    assert_eq!(r["offered"], serde_json::json!(["hello"]), "{r}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("does not hold"), "{r}");
}
