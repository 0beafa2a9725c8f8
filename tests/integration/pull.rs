//! Publishing and installing third-party skills through a real registry,
//! as operators do it: `skillbox push`, `skillbox pull` into the local
//! store and lockfile, `run`/`spawn`/installed skills naming `oci://…`,
//! under a trust policy that requires a trusted signature. Every refused
//! pull (a stranger's key, a tampered manifest or component under an old
//! signature, a tag replaced in the registry, a version that asks for
//! more, a registry down or answering garbage) must leave the store and
//! the lockfile as they were.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde_json::Value;

use crate::harness::{CliOutput, cli, guest, real_skill};
use crate::registry::TestRegistry;

/// An operator's machine (a key store trusting `acme` and requiring
/// signatures, a store of pulled skills) and a publisher's (the key
/// `acme`), plus a stranger's key `mallory`.
struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    fn new() -> Place {
        let place = Place {
            dir: tempfile::tempdir().unwrap(),
        };
        for (store, key) in [("publisher", "acme"), ("stranger", "mallory")] {
            let out = place.as_in(store, &["keys", "generate", key]);
            assert_eq!(out.code, 0, "{}", out.stderr);
        }
        let pem = place.dir.path().join("acme.pem");
        std::fs::write(
            &pem,
            place.as_in("publisher", &["keys", "show", "acme"]).stdout,
        )
        .unwrap();
        let out = place.cli(&["keys", "trust", pem.to_str().unwrap(), "--name", "acme"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let out = place.cli(&["keys", "policy", "--require-signature", "on"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        place
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn env(&self, keys: &str) -> [(&'static str, String); 2] {
        [
            (
                "SKILLBOX_KEYS",
                self.path(keys).to_str().unwrap().to_string(),
            ),
            (
                "SKILLBOX_SKILLS_DIR",
                self.path("skills").to_str().unwrap().to_string(),
            ),
        ]
    }

    /// `skillbox ARGS` with the key store `keys`.
    fn as_in(&self, keys: &str, args: &[&str]) -> CliOutput {
        let env = self.env(keys);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        cli(args, &env)
    }

    /// `skillbox ARGS` on the operator's machine.
    fn cli(&self, args: &[&str]) -> CliOutput {
        self.as_in("operator", args)
    }

    /// Publishes `hello` with `extra` manifest tables under `reference`,
    /// signed by `key` ("acme", "mallory") or unsigned.
    fn publish(&self, reference: &str, extra: &str, key: Option<&str>) {
        let skill = real_skill("hello");
        let manifest = skill.path().join("skill.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(&manifest, format!("{text}\n{extra}")).unwrap();
        let path = skill.path().to_str().unwrap();
        if let Some(key) = key {
            let store = if key == "mallory" {
                "stranger"
            } else {
                "publisher"
            };
            let out = self.as_in(store, &["sign", path, "--key", key]);
            assert_eq!(out.code, 0, "{}", out.stderr);
        }
        let out = self.as_in("publisher", &["push", path, reference]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }

    /// The lockfile's text and the artifacts in the store: what a refused
    /// pull must not change.
    fn state(&self) -> (String, Vec<String>) {
        let lock = std::fs::read_to_string(self.path("skills/skillbox.lock")).unwrap_or_default();
        let mut stored: Vec<String> = std::fs::read_dir(self.path("skills/sha256"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        stored.sort();
        (lock, stored)
    }

    /// `pull` must fail with exit code `code` and a message containing
    /// `says`, changing nothing.
    fn refused(&self, args: &[&str], code: i32, says: &str) {
        let before = self.state();
        let out = self.cli(args);
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
        assert_eq!(self.state(), before, "{args:?} changed the store");
        assert!(
            !std::fs::read_dir(self.path("skills"))
                .map(|d| d
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(".pull-")))
                .unwrap_or(false),
            "a staging directory was left behind"
        );
    }

    fn locked(&self, repo: &str) -> Value {
        let text = std::fs::read_to_string(self.path("skills/skillbox.lock")).unwrap();
        let lock: toml::Value = toml::from_str(&text).unwrap();
        serde_json::to_value(&lock["skills"][repo]).unwrap()
    }
}

/// Attaches the signature of `signed` to `to` as well, as someone who can
/// write to the registry would, to pass a changed artifact off as signed.
fn graft_signature(reg: &TestRegistry, repo: &str, signed: &str, to: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let r = skillbox::oci::Registry::new(&reg.addr).unwrap();
        let digest = |tag: &str| {
            let r = r.clone();
            let tag = tag.to_string();
            async move { r.manifest(repo, &tag, 1 << 20).await.unwrap().2 }
        };
        let (from, to) = (digest(signed).await, digest(to).await);
        let (attachment, media_type, _) = r
            .manifest(repo, &skillbox::oci::cosign::signature_tag(&from), 1 << 20)
            .await
            .unwrap();
        r.push_manifest(
            repo,
            &skillbox::oci::cosign::signature_tag(&to),
            &media_type,
            &attachment,
        )
        .await
        .unwrap();
    });
}

#[test]
fn a_skill_pushed_pulled_and_run_is_the_one_its_publisher_signed() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let place = Place::new();
    let reference = format!("oci://{}/acme/hello:1", reg.addr);
    place.publish(&reference, "", Some("acme"));

    let out = place.cli(&["pull", &reference, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let pulled = out.json();
    assert_eq!(pulled["signature"]["status"], "trusted", "{pulled}");
    assert_eq!(pulled["signature"]["publisher"], "acme", "{pulled}");
    let digest = pulled["digest"].as_str().unwrap().to_string();
    let locked = place.locked(&format!("{}/acme/hello", reg.addr));
    assert_eq!(locked["digest"], digest.as_str(), "{locked}");
    assert_eq!(locked["tag"], "1");
    assert_eq!(locked["publisher"], "acme");

    // The store holds the skill as its publisher made it: component,
    // skill.toml, input schema and signature.
    let dir = PathBuf::from(pulled["path"].as_str().unwrap());
    assert!(dir.ends_with(digest.strip_prefix("sha256:").unwrap()));
    assert_eq!(
        std::fs::read(dir.join("skill.wasm")).unwrap(),
        std::fs::read(guest("hello")).unwrap()
    );
    assert!(dir.join("input.schema.json").is_file());

    // Pulling again changes nothing.
    let out = place.cli(&["pull", &reference, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["changed"], false);

    // Run by reference, then with the registry gone: a locked reference
    // never goes back to the registry.
    let run = || place.cli(&["run", &reference, "--input", r#"{"name": "registry"}"#]);
    let out = run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Hello, registry"), "{}", out.stdout);
    let by_digest = format!("oci://{}/acme/hello@{digest}", reg.addr);
    drop(reg);
    let out = run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = place.cli(&["run", &by_digest]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = place.cli(&["inspect", &reference, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["signature"]["publisher"], "acme");

    // A daemon: spawned by reference through the CLI and the API, and as
    // an installed skill; each admitted by the daemon's own policy.
    let data = tempfile::tempdir().unwrap();
    let env = place.env("operator");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let d = crate::daemon::Daemon::start_env(data.path(), &[], &env);
    let dd = data.path().to_str().unwrap();
    let out = cli(&["spawn", &reference, "--data-dir", dd], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = cli(
        &["tasks", "wait", out.stdout.trim(), "--data-dir", dd],
        &env,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let body = serde_json::json!({ "skill": reference, "input": { "name": "api" } }).to_string();
    let (status, answer) = d.http(&crate::daemon::post("/v1/tasks", &body));
    assert_eq!(status, 201, "{answer}");
    let other = "oci://127.0.0.1:1/acme/hello:1";
    let body = serde_json::json!({ "skill": other }).to_string();
    let (status, answer) = d.http(&crate::daemon::post("/v1/tasks", &body));
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("not pulled here"), "{answer}");
    drop(d);
    std::fs::write(
        data.path().join("config.toml"),
        format!("[skills.greeter]\npath = {reference:?}\n"),
    )
    .unwrap();
    let out = cli(&["mcp", "--data-dir", dd], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // A file of the stored copy changed behind skillbox's back (signatures
    // not required): it does not run in the locked artifact's place.
    let out = place.cli(&["keys", "policy", "--require-signature", "off"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    crate::trust::tamper(&dir);
    let out = run();
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("was changed since it was pulled"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_pull_that_does_not_check_out_changes_nothing_and_says_why() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let place = Place::new();
    let at = |tag: &str| format!("oci://{}/acme/hello:{tag}", reg.addr);
    place.publish(&at("1"), "", Some("acme"));
    assert_eq!(place.cli(&["pull", &at("1")]).code, 0);

    // A stranger's signature.
    place.publish(&at("mallory"), "# by mallory\n", Some("mallory"));
    place.refused(
        &["pull", &at("mallory")],
        3,
        "which this host does not trust",
    );

    // One more exec rule, passed off with acme's signature of the original.
    let more = "[exec]\nallow = [ { program = \"rm\", args = [\"**\"] } ]\n";
    place.publish(&at("evil"), more, None);
    graft_signature(&reg, "acme/hello", "1", "evil");
    place.refused(&["pull", &at("evil")], 3, "does not hold");
    // Another component (pinned by its manifest), likewise.
    let skill = real_skill("hello");
    let hostile = std::fs::read(guest("hostile")).unwrap();
    std::fs::write(skill.path().join("skill.wasm"), &hostile).unwrap();
    let manifest = skill.path().join("skill.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        &skillbox::skill::sha256_hex(&std::fs::read(guest("hello")).unwrap()),
        &skillbox::skill::sha256_hex(&hostile),
    );
    std::fs::write(&manifest, text).unwrap();
    let out = place.as_in(
        "publisher",
        &["push", skill.path().to_str().unwrap(), &at("swapped")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    graft_signature(&reg, "acme/hello", "1", "swapped");
    place.refused(&["pull", &at("swapped")], 3, "does not hold");

    // The same tag, another artifact (signed by acme, yet not the one
    // locked here): the lockfile catches it; `run` keeps the locked one.
    let locked = place.locked(&format!("{}/acme/hello", reg.addr))["digest"].clone();
    place.publish(&at("1"), "# rebuilt\n", Some("acme"));
    place.refused(
        &["pull", &at("1")],
        3,
        "the tag was moved or the artifact replaced",
    );
    let out = place.cli(&["run", &at("1"), "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = place.cli(&["pull", &at("1"), "--update", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["previous"], locked);
    assert_ne!(out.json()["digest"], locked);

    // A newer version that asks for more: shown, and only taken when
    // accepted.
    let echo = "[exec]\nallow = [ { program = \"echo\", args = [\"**\"] } ]\n";
    place.publish(&at("2"), echo, Some("acme"));
    place.refused(
        &["pull", &at("2")],
        3,
        "requests more than the locked version",
    );
    let out = place.cli(&["pull", &at("2")]);
    assert!(out.stderr.contains("+ exec echo"), "{}", out.stderr);
    let out = place.cli(&["pull", &at("2"), "--accept-new-capabilities", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.json()["added"].as_array().unwrap().len(),
        1,
        "{}",
        out.stdout
    );
    assert_eq!(
        place.locked(&format!("{}/acme/hello", reg.addr))["tag"],
        "2"
    );

    // A registry that answers garbage, then one that is down.
    let junk = junk_registry();
    place.refused(
        &["pull", &format!("oci://{junk}/acme/hello:3")],
        4,
        "unexpected answer",
    );
    let down = at("3");
    drop(reg);
    place.refused(&["pull", &down], 8, "cannot reach the registry");
}

/// A "registry" on loopback that answers every request with 200 and junk.
fn junk_registry() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten().take(16) {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 9\r\nConnection: close\r\n\r\n<html>!!!",
            );
        }
    });
    addr
}

/// What `skillbox push` put in the registry checks out with tools that are
/// not skillbox: skopeo fetches the artifact and its cosign attachment,
/// and openssl verifies the signature the way cosign does (ECDSA P-256,
/// SHA-256, DER) with the publisher's public key, over a payload naming
/// the digest of the manifest skopeo fetched.
#[test]
fn skopeo_and_openssl_check_what_skillbox_pushed() {
    use crate::registry::{installed, skip};
    use base64::Engine;
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    if !installed("skopeo") || !installed("openssl") {
        skip("no skopeo or openssl (bash tests/oci/registry.sh install)");
        return;
    }
    let place = Place::new();
    let reference = format!("oci://{}/acme/hello:1", reg.addr);
    place.publish(&reference, "", Some("acme"));
    let work = tempfile::tempdir().unwrap();
    let copy = |tag: &str, to: &str| {
        let out = std::process::Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{}/acme/hello:{tag}", reg.addr))
            .arg(format!("dir:{}", work.path().join(to).display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest = std::fs::read(work.path().join(to).join("manifest.json")).unwrap();
        let json: Value = serde_json::from_slice(&manifest).unwrap();
        (manifest, json)
    };
    let (artifact, json) = copy("1", "artifact");
    assert_eq!(json["layers"][0]["mediaType"], "application/wasm");
    let digest = format!("sha256:{}", skillbox::skill::sha256_hex(&artifact));
    let (_, attachment) = copy(&skillbox::oci::cosign::signature_tag(&digest), "sig");
    let layer = &attachment["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    let hex = layer["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    let payload = std::fs::read(work.path().join("sig").join(hex)).unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        claims["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );
    let signature = base64::engine::general_purpose::STANDARD
        .decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let files = |name: &str, bytes: &[u8]| {
        let p = work.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let public = files(
        "acme.pem",
        place
            .as_in("publisher", &["keys", "show", "acme"])
            .stdout
            .as_bytes(),
    );
    let verify = |payload: &[u8]| {
        std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&public)
            .arg("-signature")
            .arg(files("sig.der", &signature))
            .arg(files("payload.json", payload))
            .output()
            .unwrap()
    };
    let out = verify(&payload);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The same check refuses a payload naming another artifact.
    let other = String::from_utf8(payload.clone())
        .unwrap()
        .replace(&digest[7..9], "zz");
    assert!(!verify(other.as_bytes()).status.success());
}
