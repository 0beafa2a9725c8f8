//! `skillbox build`: compile a skill crate to a component and pin its digest.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Args;
use skillbox::policy::Manifest;
use skillbox::skill::{check_component_header, sha256_hex};

use super::exit;

/// Build a skill crate for wasm32-wasip2, copy the component next to
/// skill.toml (as its `component` field names it) and write its sha256 into
/// skill.toml. With --component, pin a component built by other means
/// (any language) instead.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The skill's directory (holding Cargo.toml and skill.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Write the component and a pinned copy of skill.toml into DIR instead
    /// of next to the sources (which are then left untouched).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Build with the dev profile instead of release.
    #[arg(long)]
    pub debug: bool,
    /// Pin this already-built component instead of running cargo: for a
    /// skill written in another language (e.g. Python with componentize-py,
    /// see skills/hello-py).
    #[arg(long, value_name = "WASM", conflicts_with = "debug")]
    pub component: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `skillbox build`.
pub fn build(args: BuildArgs) -> u8 {
    let built = match &args.component {
        Some(wasm) => pin_skill(&args.dir, wasm, args.out.as_deref()),
        None => build_skill(&args.dir, args.out.as_deref(), !args.debug),
    };
    match built {
        Ok(b) => {
            if args.json {
                outln!(
                    "{}",
                    serde_json::json!({ "component": b.component, "sha256": b.sha256, "bytes": b.bytes })
                );
            } else {
                eprintln!(
                    "built {} ({} KiB), sha256 {} pinned in {}",
                    b.component.display(),
                    b.bytes / 1024,
                    b.sha256,
                    b.manifest.display()
                );
            }
            exit::OK
        }
        Err(e) => {
            if args.json {
                outln!("{}", serde_json::json!({ "error": { "message": e } }));
            } else {
                eprintln!("error: {e}");
            }
            exit::FAILED
        }
    }
}

/// A built skill.
pub struct Built {
    /// Where the component was written.
    pub component: PathBuf,
    /// Its sha256.
    pub sha256: String,
    /// Its size.
    pub bytes: usize,
    /// The manifest that now pins it.
    pub manifest: PathBuf,
}

/// Builds the skill crate in `dir` and pins the result, in `dir` or in `out`.
pub fn build_skill(dir: &Path, out_dir: Option<&Path>, release: bool) -> Result<Built, String> {
    // A bad manifest fails before the build, not after.
    Manifest::load(&dir.join("skill.toml")).map_err(|e| e.to_string())?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--target")
        .arg("wasm32-wasip2")
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"));
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build failed ({}); if the target is missing: rustup target add wasm32-wasip2",
            out.status
        ));
    }
    let want = dir
        .join("Cargo.toml")
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut artifact = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact"
            || v["manifest_path"].as_str().map(Path::new) != Some(&want)
        {
            continue;
        }
        if let Some(files) = v["filenames"].as_array() {
            for f in files.iter().filter_map(|f| f.as_str()) {
                if f.ends_with(".wasm") {
                    artifact = Some(PathBuf::from(f));
                }
            }
        }
    }
    let artifact =
        artifact.ok_or("cargo produced no .wasm artifact: is the crate a cdylib or bin?")?;
    pin_skill(dir, &artifact, out_dir)
}

/// Copies the component `artifact` as the skill in `dir` names it (into
/// `dir` or `out_dir`, with its input schema) and pins its digest.
pub fn pin_skill(dir: &Path, artifact: &Path, out_dir: Option<&Path>) -> Result<Built, String> {
    let manifest_path = dir.join("skill.toml");
    let manifest = Manifest::load(&manifest_path).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(artifact).map_err(|e| format!("{}: {e}", artifact.display()))?;
    check_component_header(&bytes, artifact).map_err(|e| e.to_string())?;
    let dest = out_dir.unwrap_or(dir);
    std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let component = dest.join(&manifest.skill.component);
    if component != artifact {
        std::fs::write(&component, &bytes).map_err(|e| format!("{}: {e}", component.display()))?;
    }
    if let (Some(out), Some(schema)) = (out_dir, &manifest.skill.input_schema) {
        let (from, to) = (dir.join(schema), out.join(schema));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::copy(&from, &to).map_err(|e| format!("{}: {e}", from.display()))?;
    }
    let sha256 = sha256_hex(&bytes);
    let pinned = dest.join("skill.toml");
    pin_digest(&manifest_path, &pinned, &sha256)?;
    Ok(Built {
        component,
        sha256,
        bytes: bytes.len(),
        manifest: pinned,
    })
}

/// Writes `from` with `[skill] sha256` set into `to`, keeping the formatting.
fn pin_digest(from: &Path, to: &Path, sha256: &str) -> Result<(), String> {
    let manifest_path = from;
    let text = std::fs::read_to_string(manifest_path)
        .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    doc["skill"]["sha256"] = toml_edit::value(sha256);
    std::fs::write(to, doc.to_string()).map_err(|e| format!("{}: {e}", to.display()))
}
