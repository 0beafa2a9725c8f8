//! `skillbox push` and `skillbox pull`: skills to and from OCI registries,
//! and `oci://` references where a skill's path goes.

use std::path::{Path, PathBuf};

use clap::Args;
use skillbox::oci::{PullOptions, Reference, SkillStore};
use skillbox::prelude::*;

use super::exit;
use super::output::report_error;

/// Push a skill to an OCI registry as a WebAssembly artifact, with its
/// signature.
///
/// The component is the artifact's one `application/wasm` layer with a
/// wasm config (the CNCF layout other wasm tooling pulls), skill.toml and
/// the input schema ride in the manifest's annotations, and skill.sig,
/// if the skill is signed, is attached as a cosign signature
/// (`sha256-<digest>.sig`). Registries are spoken to over plain HTTP,
/// so only registries on loopback are accepted.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// Skill directory or skill.toml (its manifest must pin its component).
    pub skill: PathBuf,
    /// Where to: oci://HOST:PORT/REPOSITORY[:TAG] (default tag `latest`).
    pub reference: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Pull a skill from an OCI registry into the local store and lock it.
///
/// Checked before anything changes: every digest, the manifest, the
/// signature against the trusted keys and trust.toml (see `skillbox
/// keys`), and, if the repository is locked at another version, what the
/// new one requests beyond it. The lockfile then records the repository's
/// artifact (and signer); `run`, `spawn` and installed skills naming
/// oci://… use exactly that artifact, from the store, without asking the
/// registry again.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// oci://HOST:PORT/REPOSITORY[:TAG][@sha256:DIGEST].
    pub reference: String,
    /// Accept a version that requests capabilities the locked one did not
    /// (they are listed when refused).
    #[arg(long)]
    pub accept_new_capabilities: bool,
    /// Accept a locked tag that now names another artifact (a tag moved
    /// or replaced in the registry).
    #[arg(long)]
    pub update: bool,
    /// The store of pulled skills and its lockfile.
    #[arg(long, value_name = "DIR", env = "SKILLBOX_SKILLS_DIR")]
    pub skills_dir: Option<PathBuf>,
    /// The key store whose trusted keys and trust.toml judge signatures.
    #[arg(long, value_name = "DIR", env = "SKILLBOX_KEYS")]
    pub keys_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn store(dir: Option<PathBuf>) -> SkillStore {
    dir.map(SkillStore::at)
        .unwrap_or_else(SkillStore::default_location)
}

/// `skillbox push`.
pub async fn push(args: PushArgs) -> u8 {
    let result = async {
        let to = Reference::parse(&args.reference).map_err(skillbox::Error::from)?;
        let source = SkillSource::open(&args.skill, false)?;
        let pushed = skillbox::oci::push_source(&to, &source).await?;
        Ok::<_, skillbox::Error>(pushed)
    }
    .await;
    match result {
        Ok((digest, signed)) => {
            if args.json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "reference": args.reference,
                        "digest": digest,
                        "signed": signed,
                    })
                );
            } else {
                errln!(
                    "pushed {} as {digest}{}",
                    args.reference,
                    if signed {
                        ", with its signature"
                    } else {
                        " (unsigned: sign it first with `skillbox sign` so that operators can \
                         require a trusted signature)"
                    }
                );
                outln!("{digest}");
            }
            exit::OK
        }
        Err(e) => report_error(&e, args.json),
    }
}

/// `skillbox pull`.
pub async fn pull(args: PullArgs) -> u8 {
    let result = async {
        let reference = Reference::parse(&args.reference).map_err(skillbox::Error::from)?;
        let trust = super::keys::trust_policy(args.keys_dir.clone())?;
        let options = PullOptions {
            accept_new_capabilities: args.accept_new_capabilities,
            update: args.update,
            ..PullOptions::default()
        };
        store(args.skills_dir.clone())
            .pull(&reference, &trust, &options)
            .await
    }
    .await;
    match result {
        Ok(report) => {
            if args.json {
                outln!("{}", serde_json::to_string(&report).unwrap_or_default());
                return exit::OK;
            }
            let what = match (&report.previous, report.changed) {
                (None, _) => "pulled and locked",
                (Some(p), _) if *p == report.digest && !report.changed => "up to date:",
                (Some(p), _) if *p == report.digest => "re-locked",
                (Some(_), _) => "updated the lock to",
            };
            errln!(
                "{what} {} ({}) = {}; {}",
                report.reference,
                report.name,
                report.digest,
                report.signature.describe()
            );
            if let Some(p) = report.previous.as_ref().filter(|p| **p != report.digest) {
                errln!("  was {p}");
            }
            for a in &report.added {
                errln!("  + {a} (accepted)");
            }
            outln!("{}", report.path.display());
            exit::OK
        }
        Err(e) => report_error(&e, args.json),
    }
}

/// The skill directory `arg` stands for: an `oci://` reference resolved
/// through the lockfile (pulled first if its repository is not locked
/// yet), else `arg` itself.
pub async fn locate(arg: &Path, keys_dir: Option<PathBuf>) -> Result<PathBuf, skillbox::Error> {
    let Some(text) = arg.to_str().filter(|s| Reference::is_reference(s)) else {
        return Ok(arg.to_owned());
    };
    let reference = Reference::parse(text).map_err(skillbox::Error::from)?;
    let store = SkillStore::default_location();
    match store.resolve(&reference) {
        Err(skillbox::Error::NotPulled(_)) => {
            let trust = super::keys::trust_policy(keys_dir)?;
            let report = store
                .pull(&reference, &trust, &PullOptions::default())
                .await?;
            errln!(
                "pulled and locked {reference} = {} ({})",
                report.digest,
                report.signature.describe()
            );
            Ok(report.path)
        }
        other => other,
    }
}
