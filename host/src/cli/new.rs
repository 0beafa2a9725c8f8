//! `skillbox new`: scaffold a skill crate that builds and runs unchanged.

use std::path::{Path, PathBuf};

use clap::Args;

use super::bundled_sdk;
use super::exit;

/// Create a new skill crate: Cargo.toml, Cargo.lock, src/lib.rs,
/// skill.toml and the SDK this skillbox carries, in vendor/skillbox-sdk; it
/// builds offline once cargo's cache holds the SDK's dependencies.
///
/// Then: `skillbox build DIR` and `skillbox run DIR --input '{"name":"you"}'`.
#[derive(Args, Debug)]
pub struct NewArgs {
    /// The skill's name (letters, digits, '-' and '_').
    pub name: String,
    /// Directory to create [default: ./NAME].
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Depend on the skillbox-sdk crate in DIR (for SDK development)
    /// instead of vendoring the SDK this skillbox carries into
    /// NAME/vendor/skillbox-sdk.
    #[arg(long, value_name = "DIR", env = "SKILLBOX_SDK_PATH")]
    pub sdk_path: Option<PathBuf>,
}

const LIB_RS: &str = r#"//! A skillbox skill. Build with `skillbox build`, run with `skillbox run`.

use serde::Deserialize;
use skillbox_sdk::{Summary, info, progress};

/// The skill's input, parsed from the JSON the caller passes.
#[derive(Deserialize)]
struct Input {
    /// Who to greet.
    #[serde(default = "default_name")]
    name: String,
}

fn default_name() -> String {
    "world".into()
}

fn run(input: Input) -> skillbox_sdk::Result<Summary> {
    info!("greeting {}", input.name);
    progress::report(1.0, "done");
    let text = format!("Hello, {}!", input.name);
    Ok(Summary::new(text.clone()).with_data(serde_json::json!({ "greeting": text })))
}

skillbox_sdk::export!(run);
"#;

fn cargo_toml(name: &str, sdk: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
{sdk}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# A skill is its own workspace, wherever it is created.
[workspace]
"#
    )
}

fn skill_toml(name: &str) -> String {
    let file = name.replace('-', "_");
    format!(
        r#"# What this skill is and which capabilities it requests. The operator
# grants; the skill gets the intersection. Unknown fields are errors.
[skill]
name = "{name}"
version = "0.1.0"
description = "Greets someone"
component = "{file}.wasm"
sha256 = ""   # filled in by `skillbox build`
# As a background task whose host died: "fail" (the default) fails it
# unless it saved checkpoints to resume from; "restart" says running it
# again from the start is safe.
resume = "fail"

# [fs]
# "/data" = {{ access = "read" }}          # or "read-write"
#
# [exec]
# allow = [ {{ program = "du", args = ["-k", "."] }} ]
#
# [env]
# allow = ["APP_ENV"]
#
# [net]
# allow = ["127.0.0.1:8080"]

[limits]
memory = "64MiB"
timeout = "30s"
"#
    )
}

/// Writes a new skill crate into `dir`: with the bundled SDK vendored and
/// locked, or depending on the SDK crate at `sdk` (then without a lock).
pub fn scaffold(name: &str, dir: &Path, sdk: Option<&Path>) -> Result<(), String> {
    check_name(name)?;
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(format!("{} already exists and is not empty", dir.display()));
    }
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent"))
            .map_err(|e| format!("{}: {e}", p.display()))?;
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    let sdk_dep = match sdk {
        Some(p) => {
            let p = p
                .canonicalize()
                .map_err(|e| format!("SDK path {}: {e}", p.display()))?;
            format!("skillbox-sdk = {{ path = {:?} }}", p.display().to_string())
        }
        None => {
            bundled_sdk::vendor(&dir.join(bundled_sdk::VENDOR_DIR))?;
            write("Cargo.lock", &bundled_sdk::lock(name))?;
            format!(
                "# The SDK as `skillbox new` vendored it; delete `path` to use the\n\
                 # registry's crate of the same version.\n\
                 skillbox-sdk = {}",
                bundled_sdk::dependency()
            )
        }
    };
    write("Cargo.toml", &cargo_toml(name, &sdk_dep))?;
    write("src/lib.rs", LIB_RS)?;
    write("skill.toml", &skill_toml(name))?;
    write(".gitignore", "/target\n*.wasm\n")?;
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        if bundled_sdk::SDK_LOCK.iter().any(|(n, _)| *n == name) {
            return Err(format!(
                "{name:?} is the name of a crate the SDK depends on: choose another \
                 (it is also the name of the skill's Rust crate)"
            ));
        }
        return Ok(());
    }
    Err(format!(
        "{name:?} is not a valid skill name: use letters, digits, '-' and '_', \
         starting with a letter (it is also the name of the skill's Rust crate)"
    ))
}

/// `skillbox new`.
pub fn new(args: NewArgs) -> u8 {
    let dir = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    match scaffold(&args.name, &dir, args.sdk_path.as_deref()) {
        Ok(()) => {
            errln!(
                "created skill {} in {}\nnext:\n  skillbox build {}\n  skillbox run {} --input '{{\"name\": \"you\"}}'",
                args.name,
                dir.display(),
                dir.display(),
                dir.display()
            );
            exit::OK
        }
        Err(e) => {
            errln!("error: {e}");
            exit::FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_no_crate_name_or_that_the_sdk_uses_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let skill = dir.path().join("s");
        for bad in ["", "9lives", "a b", "../x", "serde", "skillbox-sdk"] {
            let err = scaffold(bad, &skill, None).unwrap_err();
            assert!(
                err.contains("not a valid skill name") || err.contains("choose another"),
                "{bad:?}: {err}"
            );
        }
        assert!(!skill.exists());
        scaffold("s", &skill, None).unwrap();
        assert!(
            skill
                .join(bundled_sdk::VENDOR_DIR)
                .join("wit/skill.wit")
                .is_file()
        );
    }
}
