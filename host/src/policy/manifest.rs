//! `skill.toml`: what a skill is and which capabilities it *requests*.
//!
//! Parsing is strict: an unknown table or field is an error, never ignored,
//! so a typo cannot silently widen or narrow what a skill gets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::env::validate_env_name;
use super::fs::{FsRequest, validate_guest_path};
use super::net::validate_net_request;
use super::{DockerRequest, EnvRequest, ExecRequest, Limits, NetRequest, SecretRules};
use crate::error::Error;
use crate::units::string_enum;

string_enum!(
    /// What to do with a task whose host died.
    ResumePolicy {
        /// Run it again: with its saved checkpoints if it has any, else from
        /// the start (the skill says a restart is safe).
        Restart = "restart",
        /// Fail it, unless it saved checkpoints to resume from.
        Fail = "fail",
    }
);

/// The parsed `skill.toml` of one skill.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Identity and component of the skill.
    pub skill: SkillInfo,
    /// Directories the skill wants, keyed by guest path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fs: BTreeMap<String, FsRequest>,
    /// Host programs the skill wants to run.
    #[serde(default)]
    pub exec: ExecRequest,
    /// Environment variables the skill wants to read.
    #[serde(default)]
    pub env: EnvRequest,
    /// Network endpoints the skill wants to reach.
    #[serde(default)]
    pub net: NetRequest,
    /// Docker images the skill wants to build, tag and run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerRequest>,
    /// Programs the skill wants to exec with a secret in their environment.
    #[serde(default, skip_serializing_if = "SecretRules::is_empty")]
    pub secrets: SecretRules,
    /// Resource limits the skill asks for (the operator's limits cap them).
    #[serde(default)]
    pub limits: Limits,
}

/// The `[skill]` table.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SkillInfo {
    /// Short name, e.g. `disk-report`.
    pub name: String,
    /// The skill's own version.
    pub version: String,
    /// One line saying what the skill does.
    #[serde(default)]
    pub description: Option<String>,
    /// Path of the component, relative to `skill.toml`.
    pub component: PathBuf,
    /// Hex sha256 of the component; the host refuses to run anything else.
    /// Empty until `skillbox build` fills it in.
    #[serde(default)]
    pub sha256: String,
    /// For a background task whose host died: `restart` says running the
    /// skill again from the start is safe; `fail` (the default) says it is
    /// not, so the task fails unless it saved checkpoints to resume from.
    #[serde(default = "default_resume")]
    pub resume: ResumePolicy,
    /// Path of a JSON Schema of the skill's input, relative to
    /// `skill.toml`: MCP clients see it as the tool's `inputSchema`, and
    /// the MCP server refuses arguments that do not match it.
    #[serde(
        default,
        rename = "input-schema",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_schema: Option<PathBuf>,
}

fn default_resume() -> ResumePolicy {
    ResumePolicy::Fail
}

impl Manifest {
    /// Parses and validates manifest text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Manifest, Error> {
        let m: Manifest = toml::from_str(text).map_err(|e| Error::Manifest {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        m.validate().map_err(|message| Error::Manifest {
            path: origin.to_owned(),
            message,
        })?;
        Ok(m)
    }

    /// Reads, parses and validates a `skill.toml`.
    pub fn load(path: &Path) -> Result<Manifest, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Manifest::parse(&text, path)
    }

    fn validate(&self) -> Result<(), String> {
        let s = &self.skill;
        if s.name.is_empty()
            || !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "[skill] name {:?} must be non-empty and use only letters, digits, '-' and '_'",
                s.name
            ));
        }
        if !s.sha256.is_empty()
            && (s.sha256.len() != 64 || !s.sha256.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(format!(
                "[skill] sha256 {:?} is not 64 hex digits (run `skillbox build` to fill it in)",
                s.sha256
            ));
        }
        let inside = |p: &Path| !p.is_absolute() && !p.components().any(|c| c.as_os_str() == "..");
        if !inside(&s.component) {
            return Err(format!(
                "[skill] component {:?} must be a relative path inside the skill's directory",
                s.component
            ));
        }
        if let Some(schema) = &s.input_schema
            && !inside(schema)
        {
            return Err(format!(
                "[skill] input-schema {schema:?} must be a relative path inside the skill's directory"
            ));
        }
        for guest in self.fs.keys() {
            validate_guest_path(guest).map_err(|e| format!("[fs] {e}"))?;
        }
        for rule in &self.exec.allow {
            rule.validate().map_err(|e| format!("[exec] {e}"))?;
        }
        for name in &self.env.allow {
            validate_env_name(name).map_err(|e| format!("[env] {e}"))?;
        }
        for addr in &self.net.allow {
            validate_net_request(addr).map_err(|e| format!("[net] {e}"))?;
        }
        if let Some(d) = &self.docker {
            d.validate().map_err(|e| format!("[docker] {e}"))?;
        }
        self.secrets
            .validate()
            .map_err(|e| format!("[secrets] {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Access;

    const GOOD: &str = r#"
[skill]
name = "disk-report"
version = "0.1.0"
component = "disk-report.wasm"
sha256 = ""

[fs]
"/data" = { access = "read" }

[exec]
allow = [ { program = "du", args = ["-k", "."] } ]

[env]
allow = ["APP_ENV"]

[net]
allow = ["127.0.0.1:8080"]

[limits]
memory = "64MiB"
timeout = "30s"
"#;

    fn parse(t: &str) -> Result<Manifest, Error> {
        Manifest::parse(t, Path::new("skill.toml"))
    }

    #[test]
    fn parses_a_full_manifest() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.skill.name, "disk-report");
        assert_eq!(m.fs["/data"].access, Access::Read);
        assert_eq!(m.exec.allow[0].program, "du");
        assert_eq!(m.limits.memory.unwrap().bytes(), 64 << 20);
        assert_eq!(
            m.skill.resume,
            ResumePolicy::Fail,
            "unsafe to restart unless said"
        );
        let m =
            parse(&GOOD.replace("sha256 = \"\"", "sha256 = \"\"\nresume = \"restart\"")).unwrap();
        assert_eq!(m.skill.resume, ResumePolicy::Restart);
    }

    #[test]
    fn unknown_fields_are_errors() {
        let bad = GOOD.replace("[env]", "[env]\ninherit_all = true");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("unknown field `inherit_all`"), "{e}");
        let bad = format!("{GOOD}\n[docker]\nimages = [\"*\"]\nprivileged = true\n");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("unknown field `privileged`"), "{e}");
        let bad = format!("{GOOD}\n[gpu]\nallow = true\n");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("unknown field `gpu`"), "{e}");
    }

    #[test]
    fn invalid_values_are_errors() {
        for (from, to, needle) in [
            ("\"/data\"", "\"data\"", "must be absolute"),
            ("\"/data\"", "\"/data/../etc\"", "'..'"),
            ("access = \"read\"", "access = \"exec\"", "unknown variant"),
            ("127.0.0.1:8080", "127.0.0.1", "host:port"),
            (
                "program = \"du\"",
                "program = \"bin/du\"",
                "absolute path or a bare name",
            ),
            ("sha256 = \"\"", "sha256 = \"abc\"", "64 hex digits"),
            ("\"64MiB\"", "\"64 parsecs\"", "unknown unit"),
            ("\"APP_ENV\"", "\"APP=ENV\"", "environment variable name"),
            (
                "\"disk-report.wasm\"",
                "\"../x.wasm\"",
                "relative path inside",
            ),
        ] {
            let e = parse(&GOOD.replace(from, to)).unwrap_err().to_string();
            assert!(e.contains(needle), "{from} -> {to}: {e}");
        }
    }
}
