//! A skill that is not Rust: skills/hello-py, Python compiled to a
//! component with componentize-py (PyPI) against the same `wit/`, run in
//! the same sandbox. Built once per test run by its own build script, as
//! its README says; pinned by `skillbox build --component`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::harness::{cli, root};

/// The built skill directory; `None` only when componentize-py cannot be
/// installed, outside CI.
fn hello_py() -> Option<&'static Path> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out =
                std::env::temp_dir().join(format!("skillbox-hello-py-{}", std::process::id()));
            let status = Command::new("bash")
                .arg(root().join("skills/hello-py/build.sh"))
                .arg(&out)
                .arg(env!("CARGO_BIN_EXE_skillbox"))
                .status()
                .expect("running skills/hello-py/build.sh");
            if status.success() {
                Some(out)
            } else if std::env::var("CI").as_deref() == Ok("true") {
                panic!("skills/hello-py/build.sh failed");
            } else {
                eprintln!("!!! SKIPPED: skills/hello-py could not be built (componentize-py)");
                None
            }
        })
        .as_deref()
}

fn run(skill: &Path, extra: &[&str], input: &str) -> crate::harness::CliOutput {
    let mut args = vec!["run", skill.to_str().unwrap(), "--json", "--input", input];
    args.extend(extra);
    cli(&args, &[])
}

#[test]
fn a_python_skill_runs_with_what_it_is_granted() {
    let Some(skill) = hello_py() else { return };
    let out = run(
        skill,
        &["--allow-exec", "echo hi"],
        r#"{"name": "Py", "echo": true}"#,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["text"], "Hello, Py! 👋", "{v}");
    assert_eq!(v["data"]["echo"]["stdout"], "hi\n", "{v}");
    assert_eq!(v["data"]["runs"], 1, "{v}");
    assert_eq!(v["kind"], "skill", "{v}");
}

#[test]
fn a_python_skill_is_refused_what_it_is_not_granted() {
    let Some(skill) = hello_py() else { return };
    // Requested but not granted: refused before the run…
    let out = run(skill, &[], r#"{"echo": true}"#);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("echo hi") || out.stdout.contains("echo hi"),
        "{out:?}"
    );
    // …and, with --partial, inside the sandbox, where the skill sees the
    // host's reason as an error value.
    let out = run(skill, &["--partial"], r#"{"echo": true}"#);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = out.json();
    let denied = v["data"]["echo"]["denied"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"));
    assert!(denied.contains("echo"), "{denied}");
}

#[test]
fn a_python_skill_rejects_bad_input_as_invalid_input() {
    let Some(skill) = hello_py() else { return };
    let grant = ["--allow-exec", "echo hi"];
    let out = run(skill, &grant, r#"{"name": 5}"#);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stdout.contains("`name` must be a string"),
        "{}",
        out.stdout
    );
    let out = run(skill, &grant, "[1, 2]");
    assert_eq!(out.code, 4, "{}", out.stderr);
}
