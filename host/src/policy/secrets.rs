//! The `secrets` capability's policy: which programs a skill may exec with a
//! secret in their environment. The skill requests a use (`[secrets]` in
//! `skill.toml`), the operator grants it (`--allow-exec-secret PROGRAM
//! NAME`), and a run has the uses in both; the values come from the host's
//! secret definitions ([`crate::secrets`]), never from the guest.
//!
//! ```toml
//! [secrets]
//! exec = [ { program = "deploy", secret = "DEPLOY_TOKEN" } ]
//! ```

use serde::{Deserialize, Serialize};

use super::env::validate_env_name;
use super::exec::same_program;
use super::{PolicyReport, ReportStatus};

/// One program that gets one secret, as the variable of the secret's name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSecret {
    /// A bare name or an absolute path, as in an exec rule.
    pub program: String,
    /// The secret's name (also the variable's).
    pub secret: String,
}

impl ExecSecret {
    /// The CLI form: `--allow-exec-secret PROGRAM NAME`.
    pub fn parse_cli(program: &str, secret: &str) -> Result<ExecSecret, String> {
        let s = ExecSecret {
            program: program.to_string(),
            secret: secret.to_string(),
        };
        s.validate()
            .map_err(|e| format!("--allow-exec-secret {program} {secret}: {e}"))?;
        Ok(s)
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let p = &self.program;
        if p.is_empty() || (p.contains('/') && !p.starts_with('/')) {
            return Err(format!(
                "program {p:?} must be an absolute path or a bare name"
            ));
        }
        validate_env_name(&self.secret).map_err(|e| format!("secret {e}"))
    }

    fn flag(&self) -> String {
        format!(
            "--allow-exec-secret {} {}",
            shell_words::quote(&self.program),
            self.secret
        )
    }

    fn same(&self, other: &ExecSecret) -> bool {
        self.secret == other.secret && same_program(&self.program, &other.program)
    }
}

impl std::fmt::Display for ExecSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} to {}", self.secret, self.program)
    }
}

/// The `[secrets]` table, of `skill.toml` (requests) and of a policy file
/// (grants).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRules {
    /// Programs that get a secret in their environment.
    #[serde(default)]
    pub exec: Vec<ExecSecret>,
}

impl SecretRules {
    /// Checks each rule's syntax.
    pub fn validate(&self) -> Result<(), String> {
        for s in &self.exec {
            s.validate().map_err(|e| format!("exec: {e}"))?;
        }
        Ok(())
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.exec.is_empty()
    }
}

/// The secret uses of one run: requested and granted (for a component
/// without a manifest, granted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretPolicy {
    /// Programs that get a secret in their environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<ExecSecret>,
}

impl SecretPolicy {
    /// Intersects the skill's requests (`None`: no manifest) with the
    /// operator's grants, and reports each use.
    pub fn compute(
        requested: Option<&SecretRules>,
        granted: &SecretRules,
        report: &mut PolicyReport,
    ) -> SecretPolicy {
        let mut policy = SecretPolicy::default();
        match requested {
            None => {
                for g in &granted.exec {
                    report.push("secret", g.to_string(), ReportStatus::Granted);
                    policy.exec.push(g.clone());
                }
            }
            Some(reqs) => {
                for r in &reqs.exec {
                    if granted.exec.iter().any(|g| g.same(r)) {
                        report.push("secret", r.to_string(), ReportStatus::Granted);
                        policy.exec.push(r.clone());
                    } else {
                        report.push(
                            "secret",
                            r.to_string(),
                            ReportStatus::NotGranted { hint: r.flag() },
                        );
                    }
                }
                for g in &granted.exec {
                    if !reqs.exec.iter().any(|r| r.same(g)) {
                        report.push("secret", g.to_string(), ReportStatus::Unrequested);
                    }
                }
            }
        }
        policy.exec.dedup();
        policy
    }

    /// The names of the secrets a run may use.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.exec.iter().map(|s| s.secret.as_str())
    }

    /// Whether no secret is used.
    pub fn is_empty(&self) -> bool {
        self.exec.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(program: &str, secret: &str) -> ExecSecret {
        ExecSecret::parse_cli(program, secret).unwrap()
    }

    #[test]
    fn a_use_needs_the_request_and_the_grant() {
        let requested = SecretRules {
            exec: vec![rule("deploy", "TOKEN"), rule("backup", "DB_PASSWORD")],
        };
        let granted = SecretRules {
            exec: vec![rule("/usr/bin/deploy", "TOKEN"), rule("curl", "TOKEN")],
        };
        let mut report = PolicyReport::default();
        let p = SecretPolicy::compute(Some(&requested), &granted, &mut report);
        assert_eq!(p.exec, [rule("deploy", "TOKEN")]);
        let shown: Vec<String> = report
            .items
            .iter()
            .map(|i| format!("{} {} {:?}", i.capability, i.item, i.status))
            .collect();
        assert!(
            shown[1].contains("--allow-exec-secret backup DB_PASSWORD"),
            "{shown:?}"
        );
        assert!(shown[2].contains("TOKEN to curl Unrequested"), "{shown:?}");
        let bare = SecretPolicy::compute(None, &granted, &mut PolicyReport::default());
        assert_eq!(bare.exec.len(), 2);
        assert_eq!(bare.names().collect::<Vec<_>>(), ["TOKEN", "TOKEN"]);
        for (p, s, says) in [
            ("bin/x", "T", "absolute path or a bare name"),
            ("x", "1T", "not an environment variable name"),
        ] {
            let e = ExecSecret::parse_cli(p, s).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
