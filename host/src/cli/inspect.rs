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
    /// Skill directory, skill.toml, or .wasm component.
    pub skill: PathBuf,
    #[command(flatten)]
    pub grants: GrantArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `skillbox inspect`.
pub fn inspect(args: InspectArgs) -> u8 {
    let result = (|| {
        let source = SkillSource::open(&args.skill, true)?;
        let grants = args.grants.to_grants()?;
        let (policy, report) = EffectivePolicy::compute(source.manifest.as_ref(), &grants);
        print_plan(&source, &policy, &report, args.json);
        Ok::<_, skillbox::Error>(if report.not_granted().count() > 0 {
            exit::DENIED
        } else {
            exit::OK
        })
    })();
    result.unwrap_or_else(|e| report_error(&e, args.json))
}

/// Prints a skill and its would-be policy (shared with `run --dry-run`).
pub fn print_plan(
    source: &SkillSource,
    policy: &EffectivePolicy,
    report: &PolicyReport,
    json: bool,
) {
    let pinned = source
        .manifest
        .as_ref()
        .map(|m| m.skill.sha256.clone())
        .filter(|s| !s.is_empty());
    let sandbox = sandbox::status();
    if json {
        let v = serde_json::json!({
            "skill": source.name,
            "version": source.manifest.as_ref().map(|m| m.skill.version.clone()),
            "description": source.manifest.as_ref().and_then(|m| m.skill.description.clone()),
            "component": source.component_path,
            "sha256": source.digest,
            "pinned": pinned.is_some(),
            "report": report.items,
            "effective": policy,
            "exec_sandbox": sandbox,
            "will_run": report.not_granted().count() == 0,
        });
        println!("{v}");
        return;
    }
    let m = source.manifest.as_ref();
    println!(
        "skill      {} {}",
        source.name,
        m.map(|m| m.skill.version.as_str())
            .unwrap_or("(bare component, no manifest)")
    );
    if let Some(d) = m.and_then(|m| m.skill.description.as_deref()) {
        println!("           {d}");
    }
    println!("component  {}", source.component_path.display());
    println!(
        "sha256     {}{}",
        source.digest,
        match (&pinned, m) {
            (Some(_), _) => "  (pinned, matches)",
            (None, Some(_)) => "  (NOT pinned: run `skillbox build`)",
            (None, None) => "",
        }
    );
    println!("\nrequested vs granted:");
    if report.items.is_empty() {
        println!("  (nothing requested, nothing granted)");
    } else {
        print!("{report}");
    }
    let l = policy.limits;
    println!(
        "\nlimits     memory {}, timeout {}, output {}, fuel {}",
        ByteSize(l.memory),
        HumanDuration(l.timeout),
        ByteSize(l.output as u64),
        l.fuel
            .map(|f| f.to_string())
            .unwrap_or_else(|| "unmetered".into())
    );
    println!("exec       {sandbox}");
    let missing = report.not_granted().count();
    if missing > 0 {
        println!(
            "\n{missing} requested capabilit{} not granted: `skillbox run` will refuse unless granted (or --partial).",
            if missing == 1 { "y is" } else { "ies are" }
        );
    }
}
