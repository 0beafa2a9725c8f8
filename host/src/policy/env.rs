//! The `env` capability's policy: variables a skill requests (`[env]`),
//! those the operator grants (`--allow-env`); the run sees the names in
//! both, with the host's values.

use serde::{Deserialize, Serialize};

use super::{PolicyReport, ReportStatus};

/// The `[env]` table.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnvRequest {
    /// Names of environment variables.
    #[serde(default)]
    pub allow: Vec<String>,
}

pub(crate) fn validate_env_name(n: &str) -> Result<(), String> {
    let mut chars = n.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "{n:?} is not an environment variable name: use letters, digits and '_', \
             not starting with a digit"
        ));
    }
    Ok(())
}

/// The names in both lists (without a manifest, the grants), reported
/// under `cap` with `hint` naming the flag that grants a missing one.
pub(crate) fn intersect(
    report: &mut PolicyReport,
    cap: &'static str,
    requested: Option<&Vec<String>>,
    granted: &[String],
    hint: impl Fn(&str) -> String,
) -> Vec<String> {
    let mut out = Vec::new();
    match requested {
        Some(reqs) => {
            for r in reqs {
                if granted.contains(r) {
                    report.push(cap, r.clone(), ReportStatus::Granted);
                    out.push(r.clone());
                } else {
                    report.push(cap, r.clone(), ReportStatus::NotGranted { hint: hint(r) });
                }
            }
            for g in granted {
                if !reqs.contains(g) {
                    report.push(cap, g.clone(), ReportStatus::Unrequested);
                }
            }
        }
        None => {
            for g in granted {
                report.push(cap, g.clone(), ReportStatus::Granted);
                out.push(g.clone());
            }
        }
    }
    out.dedup();
    out
}
