//! Ask rules: capabilities the operator grants only with a decision at the
//! time of the call.
//!
//! Besides granting and refusing, an operator may mark a capability "ask"
//! (`--ask-exec`, `--ask-docker`, `--ask-write`, `--ask-net`, or an `[ask]`
//! table in a policy file). An ask rule grants what it names, as the
//! matching `--allow-*` flag would (so the skill must still request it),
//! and a call it matches waits for the operator's decision: approved, the
//! call goes ahead; denied or unanswered before the approval timeout, it is
//! refused as a call outside the grants is. When an ask rule and a plain
//! grant both match a call, the ask rule wins.
//!
//! What a rule covers:
//! * `exec`: each call of a program whose arguments match the rule.
//! * `docker`: each call that starts, stops or removes a container of a
//!   matching image (`run`, `stop`, `remove`); builds and tags do not ask.
//! * `write`: the first change beneath the granted directory in a run
//!   (creating, writing, renaming or removing anything in it); the
//!   approval covers the rest of the run.
//! * `net`: the first connection to the endpoint in a run.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::exec::ExecRule;
use super::fs::FsGrant;
use super::{Access, ExecPolicy, PolicyReport};
use crate::units::HumanDuration;

/// How long a request waits for a decision unless the operator says
/// otherwise; then it is denied.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// The operator's ask rules: the `[ask]` table of a policy file.
///
/// ```toml
/// [ask]
/// exec = [ { program = "systemctl", args = ["restart", "myapp"] } ]
/// docker = ["myapp:*"]
/// write = [ { host = "/srv/backup", guest = "/backup" } ]
/// net = ["127.0.0.1:8080"]
/// timeout = "30m"
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AskGrants {
    /// Programs (with argument patterns) granted only call by call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<ExecRule>,
    /// Image patterns whose containers are started, stopped and removed
    /// only call by call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docker: Vec<String>,
    /// Directories granted read-write, writable once approved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write: Vec<WriteAsk>,
    /// Endpoints reachable once approved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<String>,
    /// How long a request waits for a decision before it is denied
    /// (default one hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// A directory writable once approved: `{ host = "...", guest = "..." }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WriteAsk {
    /// Directory on the host.
    pub host: std::path::PathBuf,
    /// Path the guest sees; defaults to the host path.
    #[serde(default)]
    pub guest: Option<String>,
}

impl WriteAsk {
    /// Parses the CLI form `HOST[:GUEST]`.
    pub fn parse_cli(s: &str) -> Result<WriteAsk, String> {
        let g = FsGrant::parse_cli(s, Access::ReadWrite)?;
        Ok(WriteAsk {
            host: g.host,
            guest: g.guest,
        })
    }

    /// The read-write grant it implies.
    pub fn grant(&self) -> FsGrant {
        FsGrant {
            host: self.host.clone(),
            guest: self.guest.clone(),
            access: Access::ReadWrite,
        }
    }
}

impl AskGrants {
    /// Whether there is no ask rule.
    pub fn is_empty(&self) -> bool {
        self.exec.is_empty()
            && self.docker.is_empty()
            && self.write.is_empty()
            && self.net.is_empty()
    }

    /// Whether nothing is set, not even the timeout.
    pub fn is_unset(&self) -> bool {
        self.is_empty() && self.timeout.is_none()
    }

    /// Checks every rule's syntax.
    pub fn validate(&self) -> Result<(), String> {
        for r in &self.exec {
            r.validate()?;
        }
        for p in &self.docker {
            super::docker::validate_image_pattern(p)?;
        }
        for w in &self.write {
            w.grant().validate()?;
        }
        for n in &self.net {
            super::net::validate_net(n)?;
        }
        Ok(())
    }

    /// Adds `other`'s rules; its timeout wins when set.
    pub fn merge(&mut self, other: AskGrants) {
        self.exec.extend(other.exec);
        self.docker.extend(other.docker);
        self.write.extend(other.write);
        self.net.extend(other.net);
        self.timeout = other.timeout.or(self.timeout);
    }
}

/// The ask rules of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskPolicy {
    /// Exec rules that ask.
    #[serde(default)]
    pub exec: Vec<ExecRule>,
    /// Image patterns whose container calls ask.
    #[serde(default)]
    pub docker: Vec<String>,
    /// Guest directories whose first change in a run asks, with their
    /// host directories (for the rule's words).
    #[serde(default)]
    pub write: Vec<(String, std::path::PathBuf)>,
    /// Endpoints (`host:port`) whose first connection in a run asks.
    #[serde(default)]
    pub net: Vec<String>,
    /// How long a request waits before it is denied.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    DEFAULT_APPROVAL_TIMEOUT
}

impl AskPolicy {
    /// The ask rules `grants` give; a write rule's guest path is its
    /// grant's.
    pub fn of(grants: &AskGrants) -> AskPolicy {
        AskPolicy {
            exec: grants.exec.clone(),
            docker: grants.docker.clone(),
            write: grants
                .write
                .iter()
                .map(|w| (w.grant().guest_path(), w.host.clone()))
                .collect(),
            net: grants.net.clone(),
            timeout: grants
                .timeout
                .map(|t| t.0)
                .unwrap_or(DEFAULT_APPROVAL_TIMEOUT),
        }
    }

    /// Whether nothing asks.
    pub fn is_empty(&self) -> bool {
        self.exec.is_empty()
            && self.docker.is_empty()
            && self.write.is_empty()
            && self.net.is_empty()
    }

    /// The exec ask rule a call of `program` with `args` matches, in the
    /// operator's words. `resolve` finds programs as the exec policy does.
    pub fn exec_rule(
        &self,
        program: &str,
        args: &[String],
        resolve: impl Fn(&str) -> Option<std::path::PathBuf>,
    ) -> Option<String> {
        self.exec.iter().find_map(|rule| {
            let alone = ExecPolicy::compute(
                None,
                std::slice::from_ref(rule),
                &mut PolicyReport::default(),
            );
            alone
                .check(program, args, &resolve)
                .is_ok()
                .then(|| format!("--ask-exec {}", quote_rule(&rule.to_string())))
        })
    }

    /// The docker ask rule a container of image `tag` (normalised) matches.
    pub fn docker_rule(&self, tag: &str) -> Option<String> {
        self.docker
            .iter()
            .find(|p| super::docker::image::pattern_covers(p, tag))
            .map(|p| format!("--ask-docker {}", shell_words::quote(p)))
    }

    /// The write ask rule of the granted guest directory `guest`.
    pub fn write_rule(&self, guest: &str) -> Option<String> {
        self.write
            .iter()
            .find(|(g, _)| g == guest)
            .map(|(g, h)| format!("--ask-write {}:{g}", h.display()))
    }

    /// The net ask rule of endpoint `rule` (`host:port` as granted).
    pub fn net_rule(&self, rule: &str) -> Option<String> {
        self.net
            .iter()
            .find(|n| n.eq_ignore_ascii_case(rule))
            .map(|n| format!("--ask-net {n}"))
    }

    /// Every rule in the operator's words, for `inspect` and `--dry-run`.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .exec
            .iter()
            .map(|r| format!("--ask-exec {}", quote_rule(&r.to_string())))
            .collect();
        out.extend(
            self.docker
                .iter()
                .map(|p| format!("--ask-docker {}", shell_words::quote(p))),
        );
        out.extend(
            self.write
                .iter()
                .map(|(g, h)| format!("--ask-write {}:{g}", h.display())),
        );
        out.extend(self.net.iter().map(|n| format!("--ask-net {n}")));
        out
    }
}

/// An exec rule as one shell word: in double quotes when that needs no
/// escape (`"echo '*'"` reads better than the single-quoted form).
fn quote_rule(rule: &str) -> String {
    if rule.contains(['"', '$', '`', '\\', '!']) {
        shell_words::quote(rule).into_owned()
    } else {
        format!("\"{rule}\"")
    }
}

/// What a task asks the operator for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    /// The capability: `exec`, `docker`, `write`, `net`, or `skill` for a
    /// skill's own request.
    pub capability: String,
    /// The exact call, e.g. `systemctl restart myapp`.
    pub detail: String,
    /// The ask rule that matched, as the operator wrote it (`--ask-exec
    /// 'systemctl restart *'`); approvals "always for this task" cover
    /// later requests of the same rule.
    pub rule: String,
    /// The skill's own explanation, for a request it made itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The operator's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Whether the call may go ahead.
    pub approved: bool,
    /// The decision also covers every later request of the same rule in
    /// this task.
    #[serde(default)]
    pub always_for_task: bool,
    /// Who or what decided: `cli:root (uid 0)`, `api`, `mcp:<client>`,
    /// `openclaw:<session>`, `timeout`, or `approval #N` for a request
    /// settled by an earlier "always" decision.
    pub by: String,
    /// An optional note from whoever decided, shown to the skill on a denial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When, Unix milliseconds (set by the store).
    #[serde(default)]
    pub at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_the_calls_they_name_in_the_operators_words() {
        let grants = AskGrants {
            exec: vec![ExecRule::parse_cli("ls -l '*'").unwrap()],
            docker: vec!["myapp:*".into()],
            write: vec![WriteAsk::parse_cli("/srv/backup:/backup").unwrap()],
            net: vec!["127.0.0.1:8080".into()],
            timeout: Some("5m".parse().unwrap()),
        };
        grants.validate().unwrap();
        let p = AskPolicy::of(&grants);
        let resolve = |p: &str| Some(std::path::PathBuf::from(format!("/usr/bin/{p}")));
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            p.exec_rule("ls", &args(&["-l", "/x"]), resolve).as_deref(),
            Some("--ask-exec \"ls -l '*'\"")
        );
        assert_eq!(p.exec_rule("ls", &args(&["-a"]), resolve), None);
        assert_eq!(p.exec_rule("cat", &args(&["-l", "x"]), resolve), None);
        assert!(p.docker_rule("myapp:2.0").is_some());
        assert_eq!(p.docker_rule("other:1"), None);
        assert_eq!(
            p.write_rule("/backup").as_deref(),
            Some("--ask-write /srv/backup:/backup")
        );
        assert_eq!(p.write_rule("/state"), None);
        assert!(p.net_rule("127.0.0.1:8080").is_some() && p.net_rule("127.0.0.1:80").is_none());
        assert_eq!(p.timeout, Duration::from_secs(300));
        assert_eq!(p.describe().len(), 4);
        let none = AskPolicy::of(&AskGrants::default());
        assert!(none.is_empty());
        assert_eq!(none.timeout, DEFAULT_APPROVAL_TIMEOUT);
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            AskGrants {
                docker: vec!["myapp".into()],
                ..AskGrants::default()
            },
            AskGrants {
                net: vec!["nope".into()],
                ..AskGrants::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(WriteAsk::parse_cli("rel:/x").is_err());
    }
}
