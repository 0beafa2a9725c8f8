//! The intersection of a skill's requests and the operator's grants.

use serde::{Deserialize, Serialize};

use super::net::{NetRule, split_host_port};
use super::{
    AskPolicy, DockerPolicy, ExecPolicy, ExecRule, Grants, Manifest, PolicyReport, Preopen,
    ResolvedLimits, SecretPolicy, env, fs, limits, net,
};

/// The policy of one run: the only thing the capability modules consult.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredPolicy")]
pub struct EffectivePolicy {
    /// Directories, in the order the guest sees them.
    pub preopens: Vec<Preopen>,
    /// Programs the run may start.
    pub exec: ExecPolicy,
    /// Visible environment variable names.
    pub env: Vec<String>,
    /// Reachable endpoints.
    pub net: Vec<NetRule>,
    /// Docker access; `None` when nothing is granted.
    #[serde(default)]
    pub docker: Option<DockerPolicy>,
    /// Resource limits.
    pub limits: ResolvedLimits,
    /// Calls that wait for the operator's decision.
    #[serde(default)]
    pub ask: AskPolicy,
    /// Secrets the run's programs get (names only; the values are the
    /// host's, read when the run starts).
    #[serde(default, skip_serializing_if = "SecretPolicy::is_empty")]
    pub secrets: SecretPolicy,
}

/// An [`EffectivePolicy`] as stored with a task. Tasks spawned before the
/// exec policy was one intersected rule set carry the skill's requests and
/// the operator's grants side by side; they are intersected when read.
#[derive(Deserialize)]
struct StoredPolicy {
    preopens: Vec<Preopen>,
    #[serde(default)]
    exec: Option<ExecPolicy>,
    #[serde(default)]
    exec_requested: Option<Vec<ExecRule>>,
    #[serde(default)]
    exec_granted: Vec<ExecRule>,
    env: Vec<String>,
    net: Vec<NetRule>,
    #[serde(default)]
    docker: Option<DockerPolicy>,
    limits: ResolvedLimits,
    #[serde(default)]
    ask: AskPolicy,
    #[serde(default)]
    secrets: SecretPolicy,
}

impl From<StoredPolicy> for EffectivePolicy {
    fn from(s: StoredPolicy) -> EffectivePolicy {
        let exec = s.exec.unwrap_or_else(|| {
            ExecPolicy::compute(
                s.exec_requested.as_deref(),
                &s.exec_granted,
                &mut PolicyReport::default(),
            )
        });
        EffectivePolicy {
            preopens: s.preopens,
            exec,
            env: s.env,
            net: s.net,
            docker: s.docker,
            limits: s.limits,
            ask: s.ask,
            secrets: s.secrets,
        }
    }
}

impl EffectivePolicy {
    /// Intersects `manifest`'s requests with `grants`. Without a manifest
    /// (a bare component), the grants are taken as the requests.
    pub fn compute(
        manifest: Option<&Manifest>,
        grants: &Grants,
    ) -> (EffectivePolicy, PolicyReport) {
        let mut report = PolicyReport::default();
        // An ask rule grants what it names, as its `--allow-*` flag would;
        // the calls it matches then wait for a decision.
        let ask = AskPolicy::of(&grants.ask);
        let with_asks;
        let grants = if grants.ask.is_empty() {
            grants
        } else {
            let mut g = grants.clone();
            let a = &grants.ask;
            g.exec.allow.extend(a.exec.iter().cloned());
            g.docker.images.extend(a.docker.iter().cloned());
            g.fs.extend(a.write.iter().map(|w| w.grant()));
            g.net.allow.extend(a.net.iter().cloned());
            with_asks = g;
            &with_asks
        };

        let preopens = fs::compute(manifest.map(|m| &m.fs), &grants.fs, &mut report);

        let exec = ExecPolicy::compute(
            manifest.map(|m| m.exec.allow.as_slice()),
            &grants.exec.allow,
            &mut report,
        );

        let env = env::intersect(
            &mut report,
            "env",
            manifest.map(|m| &m.env.allow),
            &grants.env.allow,
            |n| format!("--allow-env {n}"),
        );
        let net = net::intersect(
            &mut report,
            manifest.map(|m| &m.net.allow),
            &grants.net.allow,
        )
        .iter()
        .filter_map(|s| split_host_port(s).ok())
        .map(|(host, port)| NetRule { host, port })
        .collect();

        let docker = super::docker::compute(
            manifest.map(|m| m.docker.as_ref()),
            &grants.docker,
            // The pin was checked against the component when the skill was
            // opened: unlike its name, another component cannot claim it.
            manifest.map(|m| m.skill.sha256.as_str()),
            &mut report,
        );

        let secrets =
            SecretPolicy::compute(manifest.map(|m| &m.secrets), &grants.secrets, &mut report);

        let limits = limits::resolve(
            manifest.map(|m| m.limits).unwrap_or_default(),
            grants.limits,
            &mut report,
        );

        (
            EffectivePolicy {
                preopens,
                exec,
                env,
                net,
                docker,
                limits,
                ask,
                secrets,
            },
            report,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::FsGrant;
    use crate::policy::limits::DEFAULT_MEMORY;
    use crate::policy::{Access, Limits};
    use crate::units::ByteSize;
    use std::time::Duration;

    fn manifest() -> Manifest {
        Manifest::parse(
            r#"
[skill]
name = "t"
version = "0"
component = "t.wasm"
[fs]
"/data" = { access = "read-write" }
"/cfg" = { access = "read" }
[exec]
allow = [ { program = "du", args = ["-k", "."] }, { program = "git", args = ["status"] } ]
[env]
allow = ["APP_ENV", "HOME"]
[net]
allow = ["127.0.0.1:8080"]
[limits]
memory = "1GiB"
timeout = "10s"
"#,
            Path::new("skill.toml"),
        )
        .unwrap()
    }

    #[test]
    fn intersection_takes_the_weaker_side() {
        let grants = Grants {
            fs: vec![
                FsGrant::parse_cli("/srv/data:/data", Access::Read).unwrap(),
                FsGrant::parse_cli("/srv/other:/other", Access::ReadWrite).unwrap(),
            ],
            exec: super::super::grants::GrantList {
                allow: vec![ExecRule::parse_cli("du **").unwrap()],
            },
            env: super::super::grants::GrantList {
                allow: vec!["APP_ENV".into(), "SECRET".into()],
            },
            net: Default::default(),
            docker: Default::default(),
            ask: Default::default(),
            secrets: Default::default(),
            limits: Limits {
                memory: Some(ByteSize(64 << 20)),
                ..Limits::default()
            },
        };
        let (p, report) = EffectivePolicy::compute(Some(&manifest()), &grants);
        assert_eq!(p.preopens.len(), 1);
        assert_eq!(p.preopens[0].access, Access::Read);
        assert_eq!(p.env, vec!["APP_ENV"]);
        assert!(p.net.is_empty());
        assert_eq!(p.limits.memory, 64 << 20);
        assert_eq!(p.limits.timeout, Duration::from_secs(10));
        let missing: Vec<String> = report.not_granted().map(|i| i.item.clone()).collect();
        assert!(missing.contains(&"/cfg (read)".to_string()), "{missing:?}");
        assert!(missing.contains(&"git status".to_string()));
        assert!(missing.contains(&"HOME".to_string()));
        assert!(missing.contains(&"127.0.0.1:8080".to_string()));
        let text = report.to_string();
        assert!(text.contains("--allow-read HOST-DIR:/cfg"), "{text}");
        assert!(text.contains("granted read only"), "{text}");
        assert!(text.contains("capped at 64MiB"), "{text}");
        assert!(text.contains("unused"), "{text}");
    }

    #[test]
    fn a_port_wildcard_request_covers_the_granted_ports_of_its_host() {
        let m = Manifest::parse(
            "[skill]\nname = \"t\"\nversion = \"0\"\ncomponent = \"t.wasm\"\n[net]\nallow = [\"127.0.0.1:*\"]\n",
            Path::new("skill.toml"),
        )
        .unwrap();
        let grants = Grants {
            net: super::super::grants::GrantList {
                allow: vec!["127.0.0.1:18080".into(), "10.0.0.1:80".into()],
            },
            ..Grants::default()
        };
        let (p, report) = EffectivePolicy::compute(Some(&m), &grants);
        assert_eq!(p.net.len(), 1);
        assert_eq!(p.net[0].port, 18080);
        let text = report.to_string();
        assert!(text.contains("granted 127.0.0.1:18080 only"), "{text}");
        assert!(
            text.contains("unused"),
            "10.0.0.1:80 is not requested: {text}"
        );
        let (p, report) = EffectivePolicy::compute(Some(&m), &Grants::default());
        assert!(p.net.is_empty());
        assert!(report.to_string().contains("--allow-net 127.0.0.1:PORT"));
        let bad = Manifest::parse(
            "[skill]\nname = \"t\"\nversion = \"0\"\ncomponent = \"t.wasm\"\n[net]\nallow = [\"*:*\"]\n",
            Path::new("skill.toml"),
        );
        assert!(bad.is_err(), "a wildcard host is not a request");
    }

    #[test]
    fn bare_components_get_exactly_the_grants() {
        let grants = Grants {
            env: super::super::grants::GrantList {
                allow: vec!["A".into()],
            },
            ..Grants::default()
        };
        let (p, report) = EffectivePolicy::compute(None, &grants);
        assert_eq!(p.env, vec!["A"]);
        assert!(p.exec.bare);
        assert_eq!(report.not_granted().count(), 0);
        assert_eq!(p.limits.memory, DEFAULT_MEMORY.bytes());
    }

    #[test]
    fn a_policy_stored_with_requests_and_grants_apart_reads_as_one_rule_set() {
        let (p, _) = EffectivePolicy::compute(Some(&manifest()), &Grants::default());
        let mut stored = serde_json::to_value(&p).unwrap();
        let obj = stored.as_object_mut().unwrap();
        obj.remove("exec");
        obj.insert(
            "exec_requested".into(),
            serde_json::json!([{ "program": "du", "args": ["-k", "."] }]),
        );
        obj.insert(
            "exec_granted".into(),
            serde_json::json!([{ "program": "du", "args": ["**"] }, { "program": "ls" }]),
        );
        let read: EffectivePolicy = serde_json::from_value(stored).unwrap();
        assert_eq!(read.exec.permits.len(), 1);
        assert_eq!(read.exec.unrequested.len(), 1);
        let again: EffectivePolicy =
            serde_json::from_value(serde_json::to_value(&read).unwrap()).unwrap();
        assert_eq!(again, read, "the current form reads back as written");
    }
}
