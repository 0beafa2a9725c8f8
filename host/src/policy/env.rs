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
    if n.is_empty() || n.contains('=') || n.contains('\0') {
        return Err(format!("{n:?} is not a valid environment variable name"));
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
