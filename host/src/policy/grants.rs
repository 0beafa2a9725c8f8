//! The operator's side: what a run is *allowed* to have.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::env::validate_env_name;
use super::fs::FsGrant;
use super::net::validate_net;
use super::{AskGrants, DockerGrant, ExecRule, Limits, SecretRules};
use crate::error::Error;

/// Everything an operator grants, from CLI flags and/or a policy file.
///
/// Deny by default: an empty `Grants` allows no directory, no program, no
/// variable, no endpoint, and the host's default limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Granted directories.
    #[serde(default)]
    pub fs: Vec<FsGrant>,
    /// Granted exec rules.
    #[serde(default)]
    pub exec: GrantList<ExecRule>,
    /// Granted environment variable names.
    #[serde(default)]
    pub env: GrantList<String>,
    /// Granted `host:port` endpoints.
    #[serde(default)]
    pub net: GrantList<String>,
    /// Docker images and container limits.
    #[serde(default, skip_serializing_if = "DockerGrant::is_empty")]
    pub docker: DockerGrant,
    /// Programs that get a secret in their environment.
    #[serde(default, skip_serializing_if = "SecretRules::is_empty")]
    pub secrets: SecretRules,
    /// Limits; each caps what the skill may request.
    #[serde(default)]
    pub limits: Limits,
    /// Capabilities granted only with the operator's decision at the time
    /// of the call (see [`super::ask`]).
    #[serde(default, skip_serializing_if = "AskGrants::is_unset")]
    pub ask: AskGrants,
}

/// `allow = [...]`, the shape of the `[exec]`, `[env]` and `[net]` tables.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, bound(deserialize = "T: Deserialize<'de>"))]
pub struct GrantList<T> {
    /// The granted items.
    #[serde(default)]
    pub allow: Vec<T>,
}

impl<T> Default for GrantList<T> {
    fn default() -> Self {
        GrantList { allow: Vec::new() }
    }
}

impl Grants {
    /// Reads a policy file (TOML, same shape as [`Grants`]):
    ///
    /// ```toml
    /// [[fs]]
    /// host = "/srv/app/state"
    /// guest = "/state"
    /// access = "read"
    ///
    /// [exec]
    /// allow = [ { program = "du", args = ["-k", "-d", "1", "."] } ]
    ///
    /// [env]
    /// allow = ["APP_ENV"]
    ///
    /// [net]
    /// allow = ["127.0.0.1:8080"]
    ///
    /// [docker]
    /// images = ["myapp:*"]
    /// build = true
    /// build-args = ["APP_VERSION"]
    /// networks = ["host"]
    /// memory = "256MiB"
    /// pids = 128
    ///
    /// [limits]
    /// memory = "256MiB"
    /// timeout = "15m"
    ///
    /// [ask]
    /// exec = [ { program = "systemctl", args = ["restart", "myapp"] } ]
    /// docker = ["myapp:*"]
    /// timeout = "30m"
    ///
    /// [secrets]
    /// exec = [ { program = "deploy", secret = "DEPLOY_TOKEN" } ]
    /// docker-build = [ { secret = "NPM_TOKEN", dockerfile = "sha256:…" } ]
    /// ```
    pub fn load(path: &Path) -> Result<Grants, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Grants::parse(&text, path)
    }

    /// Parses policy text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Grants, Error> {
        let err = |message: String| Error::Policy {
            path: origin.to_owned(),
            message,
        };
        let g: Grants = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        g.validate().map_err(err)?;
        Ok(g)
    }

    /// Checks every grant's syntax.
    pub fn validate(&self) -> Result<(), String> {
        for f in &self.fs {
            f.validate().map_err(|e| format!("[[fs]] {e}"))?;
        }
        for r in &self.exec.allow {
            r.validate().map_err(|e| format!("[exec] {e}"))?;
        }
        for n in &self.env.allow {
            validate_env_name(n).map_err(|e| format!("[env] {e}"))?;
        }
        for a in &self.net.allow {
            validate_net(a).map_err(|e| format!("[net] {e}"))?;
        }
        self.docker
            .validate()
            .map_err(|e| format!("[docker] {e}"))?;
        self.ask.validate().map_err(|e| format!("[ask] {e}"))?;
        self.secrets
            .validate()
            .map_err(|e| format!("[secrets] {e}"))?;
        Ok(())
    }

    /// Adds `other`'s grants to these; `other`'s limits win where set.
    pub fn merge(&mut self, other: Grants) {
        self.fs.extend(other.fs);
        self.exec.allow.extend(other.exec.allow);
        self.env.allow.extend(other.env.allow);
        self.net.allow.extend(other.net.allow);
        self.docker.merge(other.docker);
        self.ask.merge(other.ask);
        self.secrets.merge(other.secrets);
        let l = &mut self.limits;
        let o = other.limits;
        l.memory = o.memory.or(l.memory);
        l.timeout = o.timeout.or(l.timeout);
        l.output = o.output.or(l.output);
        l.fuel = o.fuel.or(l.fuel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Access;
    use std::path::PathBuf;

    #[test]
    fn half_formed_grants_are_refused() {
        for bad in [
            "127.0.0.1:80:90",
            "::1:80",
            "[::1:80",
            "[nope]:80",
            "a b:80",
            "h:0",
            ":80",
        ] {
            let e = crate::policy::net::validate_net(bad).unwrap_err();
            assert!(e.contains("must be host:port"), "{bad}: {e}");
        }
        for good in [
            "127.0.0.1:8080",
            "[::1]:8080",
            "db.internal:5432",
            "svc_1:80",
        ] {
            crate::policy::net::validate_net(good).unwrap();
        }
        for bad in ["A B", "1A", "", "A=B", "Ä"] {
            let e = crate::policy::env::validate_env_name(bad).unwrap_err();
            assert!(e.contains("not an environment variable name"), "{bad}: {e}");
        }
        for good in ["A", "_A1", "APP_ENV"] {
            crate::policy::env::validate_env_name(good).unwrap();
        }
        let e = FsGrant::parse_cli("data:/data", Access::Read).unwrap_err();
        assert!(
            e.contains("must be an absolute path") && e.contains("$PWD/data:/data"),
            "{e}"
        );
    }

    #[test]
    fn cli_forms() {
        let g = FsGrant::parse_cli("/srv/state:/state", Access::Read).unwrap();
        assert_eq!(g.host, PathBuf::from("/srv/state"));
        assert_eq!(g.guest_path(), "/state");
        let g = FsGrant::parse_cli("/srv/state", Access::ReadWrite).unwrap();
        assert_eq!(g.guest_path(), "/srv/state");
        assert!(FsGrant::parse_cli("/srv:rel", Access::Read).is_err());
        let r = ExecRule::parse_cli("du -k '*'").unwrap();
        assert_eq!(r.program, "du");
        assert_eq!(r.args, vec!["-k", "*"]);
        assert!(ExecRule::parse_cli("").is_err());
        assert!(ExecRule::parse_cli("sh '**' -c").is_err());
    }

    #[test]
    fn policy_file_is_strict() {
        let ok =
            "[[fs]]\nhost = \"/tmp\"\nguest = \"/t\"\naccess = \"read\"\n[env]\nallow = [\"A\"]\n";
        let g = Grants::parse(ok, Path::new("p.toml")).unwrap();
        assert_eq!(g.fs[0].guest_path(), "/t");
        let g = Grants::parse(
            "[secrets]\nexec = [ { program = \"deploy\", secret = \"T\" } ]\n",
            Path::new("p.toml"),
        )
        .unwrap();
        assert_eq!(g.secrets.exec[0].program, "deploy");
        for bad in [
            "[secrets]\nexec = [ { program = \"deploy\" } ]\n",
            "[secrets]\ndocker-build = [ { secret = \"T\", dockerfile = \"Dockerfile\" } ]\n",
            "[secrets]\nvalues = { T = \"x\" }\n",
        ] {
            assert!(Grants::parse(bad, Path::new("p.toml")).is_err(), "{bad}");
        }
        let e = Grants::parse("[env]\nallow_all = true\n", Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `allow_all`"), "{e}");
        let e = Grants::parse("[net]\nallow = [\"nope\"]\n", Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("host:port"), "{e}");
        let g = Grants::parse(
            "[docker]\nimages = [\"myapp:*\"]\nbuild = true\nbuild-args = [\"V\"]\nnetworks = [\"host\"]\nmemory = \"128MiB\"\npids = 64\nowner = \"prod\"\n",
            Path::new("p.toml"),
        )
        .unwrap();
        assert_eq!(g.docker.images, ["myapp:*"]);
        assert_eq!(g.docker.memory.unwrap().bytes(), 128 << 20);
        assert_eq!(g.docker.owner.as_deref(), Some("prod"));
        for (bad, needle) in [
            (
                "[docker]\nprivileged = true\n",
                "unknown field `privileged`",
            ),
            ("[docker]\nimages = [\"myapp\"]\n", "name a tag"),
            ("[docker]\nnetworks = [\"none\"]\n", "always allowed"),
            ("[docker]\nimages = [\"a:*\"]\nowner = \"a b\"\n", "owner"),
        ] {
            let e = Grants::parse(bad, Path::new("p.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
