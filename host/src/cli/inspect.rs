//! `skillbox inspect`: what a skill is, what it requests, what it would get.

use std::path::PathBuf;

use clap::Args;
use skillbox::caps::sandbox;
use skillbox::prelude::*;
use skillbox::units::{ByteSize, HumanDuration};

use super::exit;
use super::grants::GrantArgs;
use super::output::report_error;

/// Show a skill's manifest, digest, kind, and requested vs granted
/// capabilities under the given grants.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Skill directory, skill.toml, .wasm component, or a pulled
    /// oci://… reference.
    pub skill: PathBuf,
    #[command(flatten)]
    pub grants: GrantArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Directory of the compiled-component cache.
    #[arg(long, value_name = "DIR", env = "SKILLBOX_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The key store whose trusted keys and trust.toml judge the skill's
    /// signature.
    #[arg(long, value_name = "DIR", env = "SKILLBOX_KEYS")]
    pub keys_dir: Option<PathBuf>,
}

/// Compiles (or loads from the cache) and links the component, which checks
/// that skillbox can run it, and says what kind it is.
pub fn prepare_kind(
    source: &SkillSource,
    cache_dir: Option<PathBuf>,
) -> Result<SkillKind, skillbox::Error> {
    let host = Host::new(EngineOptions {
        cache_dir: cache_dir.or_else(skillbox::engine::default_cache_dir),
        max_instances: 1,
        ..EngineOptions::default()
    })?;
    Ok(host.prepare(source)?.kind)
}

/// `skillbox inspect`.
pub fn inspect(args: InspectArgs) -> u8 {
    let result = (|| {
        let located = skillbox::oci::store::local_path(&args.skill)?;
        let source = SkillSource::open(located.as_deref().unwrap_or(&args.skill), true)?;
        let grants = args.grants.to_grants()?;
        let (policy, report) = EffectivePolicy::compute(source.manifest.as_ref(), &grants);
        let kind = prepare_kind(&source, args.cache_dir.clone())?;
        let trust = super::keys::trust_policy(args.keys_dir.clone())?;
        let admitted = print_plan(&source, kind, &policy, &report, &trust, args.json);
        Ok::<_, skillbox::Error>(if report.not_granted().count() > 0 || !admitted {
            exit::DENIED
        } else {
            exit::OK
        })
    })();
    result.unwrap_or_else(|e| report_error(&e, args.json))
}

/// Prints a skill and its would-be policy (shared with `run --dry-run`);
/// whether the trust policy admits it.
pub fn print_plan(
    source: &SkillSource,
    kind: SkillKind,
    policy: &EffectivePolicy,
    report: &PolicyReport,
    trust: &skillbox::trust::TrustPolicy,
    json: bool,
) -> bool {
    let pinned = source
        .manifest
        .as_ref()
        .map(|m| m.skill.sha256.clone())
        .filter(|s| !s.is_empty());
    let sandbox = sandbox::status();
    let signature = trust.verdict(source);
    let refused = trust.admit(source).err();
    if json {
        let v = serde_json::json!({
            "skill": source.name,
            "kind": kind,
            "version": source.manifest.as_ref().map(|m| m.skill.version.clone()),
            "description": source.manifest.as_ref().and_then(|m| m.skill.description.clone()),
            "component": source.component_path,
            "sha256": source.digest,
            "pinned": pinned.is_some(),
            "report": report.items,
            "warnings": report.warnings,
            "effective": policy,
            "exec_sandbox": sandbox,
            "will_run": report.not_granted().count() == 0 && refused.is_none(),
            "signature_required": trust.requires_signature(),
            "refused": refused.as_ref().map(|r| r.to_string()),
            "ask": policy.ask.describe(),
            "signature": match &signature {
                Ok(v) => serde_json::to_value(v).unwrap_or_default(),
                Err(e) => serde_json::json!({ "status": "error", "reason": e.to_string() }),
            },
        });
        outln!("{v}");
        return refused.is_none();
    }
    let m = source.manifest.as_ref();
    outln!(
        "skill      {} {}",
        source.name,
        m.map(|m| m.skill.version.as_str())
            .unwrap_or("(bare component, no manifest)")
    );
    if let Some(d) = m.and_then(|m| m.skill.description.as_deref()) {
        outln!("           {d}");
    }
    outln!(
        "component  {} ({})",
        source.component_path.display(),
        match kind {
            SkillKind::Skill => "a skillbox:skill@0.1.0 skill",
            SkillKind::Command =>
                "a plain WASI command: exit code is the status, stdout the summary",
        }
    );
    outln!(
        "sha256     {}{}",
        source.digest,
        match (&pinned, m) {
            (Some(_), _) => "  (pinned, matches)",
            (None, Some(_)) => "  (NOT pinned: run `skillbox build`)",
            (None, None) => "",
        }
    );
    outln!(
        "signature  {}",
        match &signature {
            Ok(v) => v.describe(),
            Err(e) => format!("could not be checked: {e}"),
        }
    );
    if let Some(r) = &refused {
        outln!("trust      REFUSED: {r}");
    } else if trust.requires_signature() {
        outln!("trust      admitted (this host requires a trusted signature)");
    }
    outln!("\nrequested vs granted:");
    if report.items.is_empty() {
        outln!("  (nothing requested, nothing granted)");
    } else {
        out!("{report}");
    }
    let l = policy.limits;
    outln!(
        "\nlimits     memory {}, timeout {}, output {}, fuel {}",
        ByteSize(l.memory),
        HumanDuration(l.timeout),
        ByteSize(l.output as u64),
        l.fuel
            .map(|f| f.to_string())
            .unwrap_or_else(|| "unmetered".into())
    );
    outln!("exec       {sandbox}");
    let asks = policy.ask.describe();
    if !asks.is_empty() {
        outln!(
            "\nask rules (these calls wait for `skillbox tasks approve`; denied after {}):",
            HumanDuration(policy.ask.timeout)
        );
        for a in asks {
            outln!("  ask          {a}");
        }
    }
    let missing = report.not_granted().count();
    if missing > 0 {
        outln!(
            "\n{missing} requested capabilit{} not granted: `skillbox run` will refuse unless granted (or --partial).",
            if missing == 1 { "y is" } else { "ies are" }
        );
    }
    refused.is_none()
}
