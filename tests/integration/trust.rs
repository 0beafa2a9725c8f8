//! Signed skills through the CLI: `skillbox keys`, `skillbox sign`, and
//! what `inspect` says of a skill's signature: unsigned, signed by an
//! untrusted key, trusted, and broken by a changed manifest or component.

use serde_json::Value;

use crate::harness::{CliOutput, cli, guest, real_skill};

struct Keys(tempfile::TempDir);

impl Keys {
    fn new() -> Keys {
        Keys(tempfile::tempdir().unwrap())
    }

    fn cli(&self, args: &[&str]) -> CliOutput {
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
    let a = skillbox::trust::Artifact::of(&bytes, "[skill]\n");
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
