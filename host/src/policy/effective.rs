//! The intersection of a skill's requests and the operator's grants.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    Access, DockerPolicy, ExecPolicy, ExecRule, Grants, Limits, Manifest, net_covers,
    split_host_port,
};
use crate::units::{ByteSize, HumanDuration};

/// Host defaults, used when neither the skill nor the operator set a limit.
pub const DEFAULT_MEMORY: ByteSize = ByteSize(256 << 20);
/// Default wall-clock limit of a run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Default cap on each output stream.
pub const DEFAULT_OUTPUT: ByteSize = ByteSize(1 << 20);
/// Default timeout of one exec call (capped by what is left of the run).
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// A directory the run gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preopen {
    /// Path inside the guest.
    pub guest: String,
    /// Directory on the host.
    pub host: PathBuf,
    /// Effective access (the weaker of requested and granted).
    pub access: Access,
}

/// An endpoint the run may connect to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRule {
    /// Host name or IP address as written.
    pub host: String,
    /// TCP/UDP port.
    pub port: u16,
}

impl fmt::Display for NetRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Limits after defaults and caps are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedLimits {
    /// Bytes of linear memory.
    pub memory: u64,
    /// Wall-clock limit of the run.
    pub timeout: Duration,
    /// Cap on each output stream, in bytes.
    pub output: usize,
    /// Fuel, when metered.
    pub fuel: Option<u64>,
    /// Upper bound of one exec call.
    pub exec_timeout: Duration,
}

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
        }
    }
}

/// How one request fared against the grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum ReportStatus {
    /// Granted as requested.
    Granted,
    /// Granted, but less than requested.
    Narrowed {
        /// What was cut.
        reason: String,
    },
    /// Not granted; the hint says which flag would grant it.
    NotGranted {
        /// E.g. `--allow-read HOST:/data`.
        hint: String,
    },
    /// Granted by the operator but not requested by the skill, so not given.
    Unrequested,
}

/// One line of a [`PolicyReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReportItem {
    /// `fs`, `exec`, `env`, `net` or `limits`.
    pub capability: &'static str,
    /// The request (or grant) in words.
    pub item: String,
    /// The outcome.
    #[serde(flatten)]
    pub status: ReportStatus,
}

/// Requested vs granted, shown by `skillbox inspect` and `run --dry-run`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PolicyReport {
    /// One item per request and per unrequested grant.
    pub items: Vec<ReportItem>,
    /// Grants that give more than they seem to (an exec rule through which
    /// the skill can run code of its choosing).
    pub warnings: Vec<String>,
}

impl PolicyReport {
    /// The requests that were not granted at all.
    pub fn not_granted(&self) -> impl Iterator<Item = &ReportItem> {
        self.items
            .iter()
            .filter(|i| matches!(i.status, ReportStatus::NotGranted { .. }))
    }

    pub(crate) fn push(&mut self, capability: &'static str, item: String, status: ReportStatus) {
        self.items.push(ReportItem {
            capability,
            item,
            status,
        });
    }
}

impl fmt::Display for PolicyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in &self.items {
            let (mark, note) = match &i.status {
                ReportStatus::Granted => ("granted    ", String::new()),
                ReportStatus::Narrowed { reason } => ("narrowed   ", format!("  ({reason})")),
                ReportStatus::NotGranted { hint } => {
                    ("NOT GRANTED", format!("  (grant with {hint})"))
                }
                ReportStatus::Unrequested => (
                    "unused     ",
                    "  (granted but not requested: not given)".into(),
                ),
            };
            writeln!(f, "  {mark}  {:<6} {}{note}", i.capability, i.item)?;
        }
        for w in &self.warnings {
            writeln!(f, "  WARNING      {w}")?;
        }
        Ok(())
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

        // Directories, keyed by guest path.
        let mut preopens = Vec::new();
        match manifest {
            Some(m) => {
                for (guest, req) in &m.fs {
                    let grant = grants.fs.iter().rev().find(|g| &g.guest_path() == guest);
                    let item = format!("{guest} ({})", req.access);
                    match grant {
                        None => {
                            let flag = match req.access {
                                Access::Read => "--allow-read",
                                Access::ReadWrite => "--allow-write",
                            };
                            report.push(
                                "fs",
                                item,
                                ReportStatus::NotGranted {
                                    hint: format!("{flag} HOST-DIR:{guest}"),
                                },
                            );
                        }
                        Some(g) => {
                            let access = req.access.min(g.access);
                            let status = if access < req.access {
                                ReportStatus::Narrowed {
                                    reason: format!(
                                        "granted {} only, from {}",
                                        access,
                                        g.host.display()
                                    ),
                                }
                            } else {
                                ReportStatus::Granted
                            };
                            report.push("fs", format!("{item} <- {}", g.host.display()), status);
                            preopens.push(Preopen {
                                guest: guest.clone(),
                                host: g.host.clone(),
                                access,
                            });
                        }
                    }
                }
                for g in &grants.fs {
                    if !m.fs.contains_key(&g.guest_path()) {
                        report.push(
                            "fs",
                            format!("{} ({}) <- {}", g.guest_path(), g.access, g.host.display()),
                            ReportStatus::Unrequested,
                        );
                    }
                }
            }
            None => {
                for g in &grants.fs {
                    report.push(
                        "fs",
                        format!("{} ({}) <- {}", g.guest_path(), g.access, g.host.display()),
                        ReportStatus::Granted,
                    );
                    preopens.retain(|p: &Preopen| p.guest != g.guest_path());
                    preopens.push(Preopen {
                        guest: g.guest_path(),
                        host: g.host.clone(),
                        access: g.access,
                    });
                }
            }
        }

        let exec = ExecPolicy::compute(
            manifest.map(|m| m.exec.allow.as_slice()),
            &grants.exec.allow,
            &mut report,
        );

        let env = intersect(
            &mut report,
            "env",
            manifest.map(|m| &m.env.allow),
            &grants.env.allow,
            |n| format!("--allow-env {n}"),
        );
        let net = intersect_net(
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

        let limits = resolve_limits(
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
            },
            report,
        )
    }
}

fn intersect(
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

/// Like [`intersect`], with `host:*` requests covering granted ports.
fn intersect_net(
    report: &mut PolicyReport,
    requested: Option<&Vec<String>>,
    granted: &[String],
) -> Vec<String> {
    let Some(reqs) = requested else {
        return intersect(report, "net", None, granted, |_| String::new());
    };
    let mut out: Vec<String> = Vec::new();
    for r in reqs {
        let got: Vec<&String> = granted.iter().filter(|g| net_covers(r, g)).collect();
        let status = match got.as_slice() {
            [] => ReportStatus::NotGranted {
                hint: format!(
                    "--allow-net {}",
                    r.strip_suffix(":*")
                        .map_or(r.clone(), |h| format!("{h}:PORT"))
                ),
            },
            [g] if *g == r => ReportStatus::Granted,
            _ => ReportStatus::Narrowed {
                reason: format!(
                    "granted {} only",
                    got.iter()
                        .map(|g| g.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        };
        report.push("net", r.clone(), status);
        for g in got {
            if !out.contains(g) {
                out.push(g.clone());
            }
        }
    }
    for g in granted {
        if !reqs.iter().any(|r| net_covers(r, g)) {
            report.push("net", g.clone(), ReportStatus::Unrequested);
        }
    }
    out
}

/// The lower of a request and its cap; a request above the cap is reported
/// as narrowed, with the flag that raises the cap.
pub(crate) fn capped<T: Copy + Ord + fmt::Display>(
    report: &mut PolicyReport,
    capability: &'static str,
    name: &str,
    flag: &str,
    req: Option<T>,
    cap: T,
) -> T {
    match req {
        Some(r) if r > cap => {
            report.push(
                capability,
                format!("{name} {r}"),
                ReportStatus::Narrowed {
                    reason: format!("capped at {cap}; raise with {flag}"),
                },
            );
            cap
        }
        Some(r) => {
            report.push(capability, format!("{name} {r}"), ReportStatus::Granted);
            r
        }
        None => cap,
    }
}

fn resolve_limits(req: Limits, grant: Limits, report: &mut PolicyReport) -> ResolvedLimits {
    let memory = capped(
        report,
        "limits",
        "memory",
        "--memory",
        req.memory,
        grant.memory.unwrap_or(DEFAULT_MEMORY),
    );
    let timeout = capped(
        report,
        "limits",
        "timeout",
        "--timeout",
        req.timeout,
        grant.timeout.unwrap_or(HumanDuration(DEFAULT_TIMEOUT)),
    );
    let output = capped(
        report,
        "limits",
        "output",
        "--output",
        req.output,
        grant.output.unwrap_or(DEFAULT_OUTPUT),
    );
    let fuel = match (req.fuel, grant.fuel) {
        (Some(r), Some(g)) => Some(capped(report, "limits", "fuel", "--fuel", Some(r), g)),
        (r, g) => r.or(g),
    };
    ResolvedLimits {
        memory: memory.bytes(),
        timeout: timeout.get(),
        output: output.as_usize(),
        fuel,
        exec_timeout: DEFAULT_EXEC_TIMEOUT.min(timeout.get()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::FsGrant;

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
