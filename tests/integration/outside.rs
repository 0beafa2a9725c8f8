//! A skill outside this repository: `skillbox new`, `build` and `run` with
//! nothing but a copy of the installed binaries and the Rust toolchain,
//! offline; and what `build` refuses to pin.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::harness::*;

fn p(d: &Path) -> &str {
    d.to_str().unwrap()
}

/// A machine with only the installed binaries (`skillbox`, the
/// `skillbox-host` it runs and `skillbox-jail`, copied into a temp dir) and
/// the user's toolchain and crate cache: a fresh HOME, no repository, no
/// SKILLBOX_SDK_PATH, no cargo of the test's own.
struct Outsider {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Outsider {
    fn new() -> Outsider {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            !dir.path().starts_with(root()),
            "must be outside the repository"
        );
        let bin = dir.path().join("bin/skillbox");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        let built = Path::new(env!("CARGO_BIN_EXE_skillbox")).parent().unwrap();
        for name in ["skillbox", "skillbox-host", "skillbox-jail"] {
            std::fs::copy(built.join(name), bin.with_file_name(name)).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        Outsider { dir, bin }
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Runs `skillbox ARGS` in `work/`, offline.
    fn skillbox(&self, args: &[&str]) -> CliOutput {
        let real_home = PathBuf::from(std::env::var("HOME").expect("HOME is set"));
        let home_of = |var: &str, default: &str| {
            std::env::var_os(var).map_or_else(|| real_home.join(default), PathBuf::from)
        };
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .current_dir(self.work())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
            .env("CARGO_HOME", home_of("CARGO_HOME", ".cargo"))
            .env("RUSTUP_HOME", home_of("RUSTUP_HOME", ".rustup"))
            .env("CARGO_NET_OFFLINE", "true");
        if let Some(toolchain) = std::env::var_os("RUSTUP_TOOLCHAIN") {
            cmd.env("RUSTUP_TOOLCHAIN", toolchain);
        }
        let out = cmd.output().expect("running the copied skillbox");
        CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// (name, version) of every package a `Cargo.lock` pins.
fn locked(lock: &Path) -> BTreeSet<(String, String)> {
    let doc: toml_edit::DocumentMut = std::fs::read_to_string(lock).unwrap().parse().unwrap();
    doc["package"]
        .as_array_of_tables()
        .unwrap()
        .iter()
        .map(|p| {
            let field = |k: &str| p[k].as_str().unwrap().to_owned();
            (field("name"), field("version"))
        })
        .collect()
}

#[test]
fn a_new_skill_builds_and_runs_offline_outside_the_repository() {
    let _cache = guest("hello"); // the crates the SDK needs are in cargo's cache
    let sb = Outsider::new();
    let out = sb.skillbox(&["new", "my-skill"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let skill = sb.work().join("my-skill");

    // The skill names the vendored SDK with its exact version, and the
    // vendored SDK is this repository's, contract included.
    let manifest = std::fs::read_to_string(skill.join("Cargo.toml")).unwrap();
    let want = format!(
        "skillbox-sdk = {{ version = \"={}\", path = \"vendor/skillbox-sdk\" }}",
        env!("CARGO_PKG_VERSION")
    );
    assert!(manifest.contains(&want), "{manifest}");
    // The docs show the line `new` writes.
    for doc in ["README.md", "guest-sdk/src/lib.rs", "guest-sdk/README.md"] {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        assert!(text.contains(&want), "{doc} does not show {want}");
    }
    let vendored = skill.join("vendor/skillbox-sdk");
    for (ours, theirs) in [
        ("wit/skill.wit", "wit/skill.wit"),
        ("guest-sdk/src/lib.rs", "src/lib.rs"),
        ("guest-sdk/src/exec.rs", "src/exec.rs"),
    ] {
        assert_eq!(
            std::fs::read_to_string(root().join(ours)).unwrap(),
            std::fs::read_to_string(vendored.join(theirs)).unwrap(),
            "{theirs}"
        );
    }
    let before = locked(&skill.join("Cargo.lock"));

    let started = Instant::now();
    let out = sb.skillbox(&["build", "my-skill"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    eprintln!(
        "outside build (offline, fresh target dir): {:.1?}",
        started.elapsed()
    );
    // Cargo kept the versions `new` pinned; it may only drop entries.
    let after = locked(&skill.join("Cargo.lock"));
    let unpinned: Vec<_> = after.difference(&before).collect();
    assert!(unpinned.is_empty(), "not pinned by `new`: {unpinned:?}");

    let out = sb.skillbox(&["run", "my-skill", "--input", r#"{"name":"you"}"#]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Hello, you!"), "{}", out.stdout);
}

/// The same binary writes the same files, wherever it runs.
#[test]
fn new_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a/s"), dir.path().join("b/s"));
    for d in [&a, &b] {
        let out = cli(&["new", "s", "--path", p(d)], &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let out = Command::new("diff")
        .args(["-r", p(&a), p(&b)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(a.join("vendor/skillbox-sdk/src/lib.rs").is_file());
}

/// A component that is not a skill is refused by `build`, which then
/// writes nothing; the same skill directory pins a real skill.
#[test]
fn build_refuses_what_is_not_a_skill_and_pins_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let skill = dir.path().join("s");
    let out = cli(&["new", "s", "--path", p(&skill)], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let manifest = std::fs::read(skill.join("skill.toml")).unwrap();
    for (guest_name, needle) in [
        ("wasi-command", "exports no `run` of skillbox:skill@0.1.0"),
        ("unknown-import", "does not provide"),
    ] {
        let out = cli(
            &["build", p(&skill), "--component", p(&guest(guest_name))],
            &[],
        );
        assert_eq!(out.code, 1, "{guest_name}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{guest_name}: {}", out.stderr);
        assert!(out.stderr.contains("nothing was pinned"), "{}", out.stderr);
        assert_eq!(std::fs::read(skill.join("skill.toml")).unwrap(), manifest);
        assert!(!skill.join("s.wasm").exists(), "{guest_name} was copied");
    }
    let out = cli(
        &["build", p(&skill), "--component", p(&guest("hello"))],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_ne!(std::fs::read(skill.join("skill.toml")).unwrap(), manifest);
}

/// A dependency cargo cannot get is named as the cause, not the target.
#[test]
fn build_says_when_dependencies_are_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let skill = dir.path().join("s");
    let out = cli(&["new", "s", "--path", p(&skill)], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let manifest = skill.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        "serde_json = \"1\"",
        "serde_json = \"1\"\nno-such-crate-in-any-registry = \"1\"",
    );
    std::fs::write(&manifest, text).unwrap();
    let out = cli(&["build", p(&skill)], &[("CARGO_NET_OFFLINE", "true")]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("could not get the skill's dependencies"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("rustup target add"), "{}", out.stderr);
}
