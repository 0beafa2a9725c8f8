//! The `secrets` capability's policy: which programs a skill may exec with a
//! secret in their environment, and which Docker builds get one as a build
//! argument. The skill requests a use (`[secrets]` in `skill.toml`), the
//! operator grants it (`--allow-exec-secret PROGRAM NAME`,
//! `--allow-docker-build-secret NAME sha256:…`), and a run has the uses in
//! both; the values come from the host's secret definitions
//! ([`crate::secrets`]), never from the guest.
//!
//! ```toml
//! [secrets]
//! exec = [ { program = "deploy", secret = "DEPLOY_TOKEN" } ]
//! docker-build = [ { secret = "NPM_TOKEN", dockerfile = "sha256:…" } ]
//! docker-run = [ { secret = "DB_PASSWORD", image = "sha256:…" } ]
//! ```
//!
//! A build gets a secret only for a Dockerfile pinned by its sha256: the
//! skill writes its Dockerfiles, and a build argument is as readable to
//! the steps of a Dockerfile as a variable is to a program, so the
//! operator grants it to a Dockerfile they have read, not to the skill.
//! Likewise a container gets one only when it runs an image the operator
//! pinned by id, with the image's own command (the skill's choice of
//! command would be the skill's code reading it).

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

/// One Docker build that gets one secret as the build argument of the
/// secret's name: builds of the Dockerfile with this sha256.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSecret {
    /// The secret's name (also the build argument's).
    pub secret: String,
    /// `sha256:HEX` of the Dockerfile's bytes.
    pub dockerfile: String,
}

impl BuildSecret {
    const FLAG: &str = "--allow-docker-build-secret";

    /// The CLI form: `--allow-docker-build-secret NAME sha256:HEX`.
    pub fn parse_cli(secret: &str, dockerfile: &str) -> Result<BuildSecret, String> {
        let s = BuildSecret {
            secret: secret.to_string(),
            dockerfile: dockerfile.to_string(),
        };
        s.validate()
            .map_err(|e| format!("{} {secret} {dockerfile}: {e}", Self::FLAG))?;
        Ok(s)
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        check_pinned(
            &self.secret,
            &self.dockerfile,
            "dockerfile",
            "`sha256sum Dockerfile`",
        )
    }

    fn flag(&self) -> String {
        format!("{} {} {}", Self::FLAG, self.secret, self.dockerfile)
    }
}

impl std::fmt::Display for BuildSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to builds of the Dockerfile {}",
            self.secret, self.dockerfile
        )
    }
}

/// Containers that get one secret in their environment, as the variable of
/// the secret's name: those of the image with this id, running the
/// image's own command.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunSecret {
    /// The secret's name (also the variable's).
    pub secret: String,
    /// `sha256:HEX`, the image's id (`docker image inspect -f {{.Id}}`).
    pub image: String,
}

impl RunSecret {
    const FLAG: &str = "--allow-docker-run-secret";

    /// The CLI form: `--allow-docker-run-secret NAME sha256:HEX`.
    pub fn parse_cli(secret: &str, image: &str) -> Result<RunSecret, String> {
        let s = RunSecret {
            secret: secret.to_string(),
            image: image.to_string(),
        };
        s.validate()
            .map_err(|e| format!("{} {secret} {image}: {e}", Self::FLAG))?;
        Ok(s)
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        check_pinned(
            &self.secret,
            &self.image,
            "image id",
            "`docker image inspect -f '{{.Id}}' IMAGE`",
        )
    }

    fn flag(&self) -> String {
        format!("{} {} {}", Self::FLAG, self.secret, self.image)
    }
}

impl std::fmt::Display for RunSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to containers of the image {}",
            self.secret, self.image
        )
    }
}

/// Checks a use pinned by digest: the secret's name, and `digest` (the
/// `what`, found with `how`) as `sha256:` and 64 hex digits.
fn check_pinned(secret: &str, digest: &str, what: &str, how: &str) -> Result<(), String> {
    validate_env_name(secret).map_err(|e| format!("secret {e}"))?;
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "{what} {digest:?} is not sha256:<64 hex digits> ({how})"
        ))
    }
}

/// The `[secrets]` table, of `skill.toml` (requests) and of a policy file
/// (grants).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SecretRules {
    /// Programs that get a secret in their environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<ExecSecret>,
    /// Docker builds that get a secret as a build argument.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docker_build: Vec<BuildSecret>,
    /// Containers that get a secret in their environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docker_run: Vec<RunSecret>,
}

impl SecretRules {
    /// Checks each rule's syntax.
    pub fn validate(&self) -> Result<(), String> {
        for s in &self.exec {
            s.validate().map_err(|e| format!("exec: {e}"))?;
        }
        for s in &self.docker_build {
            s.validate().map_err(|e| format!("docker-build: {e}"))?;
        }
        for s in &self.docker_run {
            s.validate().map_err(|e| format!("docker-run: {e}"))?;
        }
        Ok(())
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.exec.is_empty() && self.docker_build.is_empty() && self.docker_run.is_empty()
    }

    /// Adds `other`'s rules.
    pub fn merge(&mut self, other: SecretRules) {
        self.exec.extend(other.exec);
        self.docker_build.extend(other.docker_build);
        self.docker_run.extend(other.docker_run);
    }
}

/// The secret uses of one run: requested and granted (for a component
/// without a manifest, granted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretPolicy {
    /// Programs that get a secret in their environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<ExecSecret>,
    /// Docker builds that get a secret as a build argument.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docker_build: Vec<BuildSecret>,
    /// Containers that get a secret in their environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docker_run: Vec<RunSecret>,
}

/// The uses of one kind in both lists (without a manifest, the grants),
/// each reported, with the flag that grants a missing one.
fn intersect<T: Clone + PartialEq + std::fmt::Display>(
    requested: Option<&[T]>,
    granted: &[T],
    same: impl Fn(&T, &T) -> bool,
    flag: impl Fn(&T) -> String,
    report: &mut PolicyReport,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    let Some(reqs) = requested else {
        for g in granted {
            report.push("secrets", g.to_string(), ReportStatus::Granted);
            out.push(g.clone());
        }
        return out;
    };
    for r in reqs {
        if granted.iter().any(|g| same(g, r)) {
            report.push("secrets", r.to_string(), ReportStatus::Granted);
            out.push(r.clone());
        } else {
            report.push(
                "secrets",
                r.to_string(),
                ReportStatus::NotGranted { hint: flag(r) },
            );
        }
    }
    for g in granted {
        if !reqs.iter().any(|r| same(r, g)) {
            report.push("secrets", g.to_string(), ReportStatus::Unrequested);
        }
    }
    out.dedup();
    out
}

impl SecretPolicy {
    /// Intersects the skill's requests (`None`: no manifest) with the
    /// operator's grants, and reports each use.
    pub fn compute(
        requested: Option<&SecretRules>,
        granted: &SecretRules,
        report: &mut PolicyReport,
    ) -> SecretPolicy {
        SecretPolicy {
            exec: intersect(
                requested.map(|r| r.exec.as_slice()),
                &granted.exec,
                ExecSecret::same,
                ExecSecret::flag,
                report,
            ),
            docker_build: intersect(
                requested.map(|r| r.docker_build.as_slice()),
                &granted.docker_build,
                |a, b| a == b,
                BuildSecret::flag,
                report,
            ),
            docker_run: intersect(
                requested.map(|r| r.docker_run.as_slice()),
                &granted.docker_run,
                |a, b| a == b,
                RunSecret::flag,
                report,
            ),
        }
    }

    /// The names of the secrets a run may use.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.exec
            .iter()
            .map(|s| s.secret.as_str())
            .chain(self.docker_build.iter().map(|s| s.secret.as_str()))
            .chain(self.docker_run.iter().map(|s| s.secret.as_str()))
    }

    /// Whether no secret is used.
    pub fn is_empty(&self) -> bool {
        self.exec.is_empty() && self.docker_build.is_empty() && self.docker_run.is_empty()
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
        let pinned = format!("sha256:{}", "ab".repeat(32));
        let requested = SecretRules {
            exec: vec![rule("deploy", "TOKEN"), rule("backup", "DB_PASSWORD")],
            docker_build: vec![BuildSecret::parse_cli("NPM_TOKEN", &pinned).unwrap()],
            docker_run: vec![],
        };
        let granted = SecretRules {
            exec: vec![rule("/usr/bin/deploy", "TOKEN"), rule("curl", "TOKEN")],
            docker_build: vec![],
            docker_run: vec![RunSecret::parse_cli("DB_PASSWORD", &pinned).unwrap()],
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
        assert!(p.docker_build.is_empty());
        assert!(
            shown[3].contains(&format!("--allow-docker-build-secret NPM_TOKEN {pinned}")),
            "{shown:?}"
        );
        assert!(
            shown[4].contains("DB_PASSWORD to containers of the image sha256:abab")
                && shown[4].contains("Unrequested"),
            "{shown:?}"
        );
        let bare = SecretPolicy::compute(None, &granted, &mut PolicyReport::default());
        assert_eq!(bare.exec.len(), 2);
        assert_eq!(
            bare.names().collect::<Vec<_>>(),
            ["TOKEN", "TOKEN", "DB_PASSWORD"]
        );
        for (p, s, says) in [
            ("bin/x", "T", "absolute path or a bare name"),
            ("x", "1T", "not an environment variable name"),
        ] {
            let e = ExecSecret::parse_cli(p, s).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        for bad in ["abcd", "sha256:xyz", "sha512:00"] {
            let e = BuildSecret::parse_cli("T", bad).unwrap_err();
            assert!(e.contains("sha256sum Dockerfile"), "{e}");
            let e = RunSecret::parse_cli("T", bad).unwrap_err();
            assert!(e.contains("docker image inspect -f '{{.Id}}'"), "{e}");
        }
    }
}
