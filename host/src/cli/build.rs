//! `skillbox build`: compile a skill crate to a component and pin its digest.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use clap::Args;
use skillbox::SkillKind;
use skillbox::policy::Manifest;
use skillbox::skill::{SkillSource, check_component_header, sha256_hex};

use super::exit;
use super::inspect::prepare_kind;

/// Build a skill crate for wasm32-wasip2, copy the component next to
/// skill.toml (as its `component` field names it) and write its sha256 into
/// skill.toml. With --component, pin a component built by other means
/// (any language) instead. Either way, a component that does not export
/// the skill's `run` (skillbox:skill@0.1.0) is refused and nothing is
/// written.
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
    /// Then sign the built skill with this key (a name in the key store or
    /// a key file outside the skill), as `skillbox sign` does.
    #[arg(long, value_name = "KEY")]
    pub sign: Option<String>,
    /// The key store's directory (for --sign).
    #[arg(long, value_name = "DIR", env = "SKILLBOX_KEYS")]
    pub keys_dir: Option<PathBuf>,
    /// Directory of the compiled-component cache (the check that the
    /// component is a skill compiles it, so `run` finds it there).
    #[arg(long, value_name = "DIR", env = "SKILLBOX_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// `skillbox build`.
pub fn build(args: BuildArgs) -> u8 {
    let target = Target {
        out_dir: args.out.as_deref(),
        cache_dir: args.cache_dir.as_deref(),
    };
    let built = match &args.component {
        Some(wasm) => pin_skill(&args.dir, wasm, &target),
        None => build_skill(&args.dir, &target, !args.debug),
    };
    let built = built.and_then(|b| match &args.sign {
        None => Ok((b, None)),
        Some(key) => {
            let source = SkillSource::open(&b.manifest, false).map_err(|e| e.to_string())?;
            let (signature, digest) =
                super::keys::sign_source(&source, key, args.keys_dir.clone(), None)
                    .map_err(|e| format!("built and pinned, but not signed: {e}"))?;
            Ok((b, Some((signature.key, digest))))
        }
    });
    match built {
        Ok((b, signed)) => {
            if args.json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "component": b.component,
                        "sha256": b.sha256,
                        "bytes": b.bytes,
                        "signed": signed.as_ref().map(|(key, digest)| {
                            serde_json::json!({ "key": key, "digest": digest })
                        }),
                    })
                );
            } else {
                errln!(
                    "built {} ({} KiB), sha256 {} pinned in {}",
                    b.component.display(),
                    b.bytes / 1024,
                    b.sha256,
                    b.manifest.display()
                );
                if let Some((key, digest)) = &signed {
                    errln!("signed {digest} with {key}: wrote skill.sig");
                }
            }
            exit::OK
        }
        Err(e) => {
            if args.json {
                outln!("{}", serde_json::json!({ "error": { "message": e } }));
            } else {
                errln!("error: {e}");
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

/// Where a build goes besides the skill's directory.
pub struct Target<'a> {
    /// Write the component and the pinned manifest here instead of the
    /// skill's directory.
    pub out_dir: Option<&'a Path>,
    /// The compiled-component cache [default: the user's].
    pub cache_dir: Option<&'a Path>,
}

/// Builds the skill crate in `dir` and pins the result, in `dir` or in
/// `target.out_dir`.
pub fn build_skill(dir: &Path, target: &Target<'_>, release: bool) -> Result<Built, String> {
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
    let (out, stderr) = run_cargo(cmd)?;
    if !out.status.success() {
        return Err(format!(
            "cargo build failed ({}): {}",
            out.status,
            failure_hint(&stderr)
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
    pin_skill(dir, &artifact, target)
}

/// Runs cargo with its JSON messages on stdout; its stderr goes to ours as
/// it comes and is also returned, to say what went wrong.
fn run_cargo(mut cmd: Command) -> Result<(std::process::Output, String), String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let echo = std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            errln!("{line}");
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for cargo: {e}"))?;
    Ok((out, echo.join().unwrap_or_default()))
}

/// What to do about a failed cargo build, from what cargo said.
fn failure_hint(stderr: &str) -> &'static str {
    let any = |needles: &[&str]| needles.iter().any(|n| stderr.contains(n));
    if any(&["target may not be installed", "can't find crate for `core`"]) {
        "the wasm32-wasip2 target is not installed: rustup target add wasm32-wasip2"
    } else if any(&[
        "failed to select a version",
        "no matching package named",
        "failed to load source for dependency",
        "failed to download",
        "failed to get `",
        "--offline",
        "Unable to update",
    ]) {
        "cargo could not get the skill's dependencies (see its error above). \
         `skillbox new` vendors skillbox-sdk in vendor/skillbox-sdk and pins the \
         versions it was tested with in Cargo.lock; offline, those crates must be \
         in cargo's cache: run `cargo fetch` in the skill's directory once online"
    } else {
        "see cargo's errors above"
    }
}

/// Copies the component `artifact` as the skill in `dir` names it (into
/// `dir` or `target.out_dir`, with its input schema) and pins its digest,
/// once it is known to be a skill skillbox can run.
pub fn pin_skill(dir: &Path, artifact: &Path, target: &Target<'_>) -> Result<Built, String> {
    let manifest_path = dir.join("skill.toml");
    let manifest = Manifest::load(&manifest_path).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(artifact).map_err(|e| format!("{}: {e}", artifact.display()))?;
    check_is_skill(&manifest.skill.name, artifact, &bytes, target.cache_dir)?;
    let out_dir = target.out_dir;
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

/// Refuses, before anything is written, a component skillbox cannot run as
/// a skill: not a component, imports skillbox does not provide, or no `run`
/// of skillbox:skill@0.1.0 (a plain WASI command runs without a manifest,
/// as `skillbox run FILE.wasm`). Runs the check the runtime runs when it
/// prepares a skill.
fn check_is_skill(
    name: &str,
    artifact: &Path,
    bytes: &[u8],
    cache_dir: Option<&Path>,
) -> Result<(), String> {
    let refused = |e: String| format!("{e}; nothing was pinned");
    check_component_header(bytes, artifact).map_err(|e| refused(e.to_string()))?;
    let source = SkillSource {
        name: name.to_owned(),
        manifest: None,
        manifest_path: None,
        component_path: artifact.to_owned(),
        bytes: Arc::new(bytes.to_vec()),
        digest: sha256_hex(bytes),
    };
    match prepare_kind(&source, cache_dir.map(Path::to_owned)) {
        Ok(SkillKind::Skill) => Ok(()),
        Ok(SkillKind::Command) => Err(refused(format!(
            "{}: a plain WASI command, not a skill: it exports no `run` of \
             skillbox:skill@0.1.0 (a Rust skill exports it with \
             `skillbox_sdk::export!(run)`); to run a command as it is, \
             without a manifest: skillbox run {}",
            artifact.display(),
            artifact.display()
        ))),
        Err(e) => Err(refused(e.to_string())),
    }
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

#[cfg(test)]
mod tests {
    use super::failure_hint;

    #[test]
    fn hints_name_the_cause_cargo_reported() {
        for (stderr, want) in [
            (
                "error[E0463]: can't find crate for `core`\n  = note: the `wasm32-wasip2` target may not be installed",
                "rustup target add wasm32-wasip2",
            ),
            (
                "error: no matching package named `skillbox-sdk` found\nlocation searched: crates.io index",
                "dependencies",
            ),
            (
                "error: failed to select a version for the requirement `skillbox-sdk = \"^0.1\"`",
                "dependencies",
            ),
            (
                "error[E0425]: cannot find value `x` in this scope",
                "errors above",
            ),
        ] {
            let hint = failure_hint(stderr);
            assert!(hint.contains(want), "{stderr:?} -> {hint:?}");
        }
        assert!(!failure_hint("no matching package named `x`").contains("rustup"));
    }
}
