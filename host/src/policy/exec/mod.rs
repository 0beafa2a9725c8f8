//! The `exec` capability's policy: what a skill requests (`[exec]` in
//! `skill.toml`), what the operator grants (`--allow-exec`), their
//! intersection for one run ([`ExecPolicy`]), and the check of one call
//! against it.
//!
//! A rule is a program and one pattern per argument (see
//! [`pattern`](super::pattern)). A call runs only if a rule the skill
//! requested *and* a rule the operator granted, for the same program, both
//! match it; for a component without a manifest, the grants alone decide.

pub mod risk;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::pattern::{args_cover, args_match};
use super::{PolicyReport, ReportStatus};

/// The fixed search path for bare program names; the guest cannot change it.
pub const SEARCH_PATH: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];

/// One exec allow rule: a program and its argument patterns.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRule {
    /// A bare name, resolved against the host's fixed search path
    /// (`/usr/local/bin:/usr/bin:/bin`), or an absolute path.
    pub program: String,
    /// One pattern per argument (see [`pattern`](super::pattern)); empty
    /// means "no arguments".
    #[serde(default)]
    pub args: Vec<String>,
}

impl ExecRule {
    /// Parses the CLI form `PROGRAM [ARG-PATTERN…]` (shell-like quoting, no
    /// shell semantics).
    pub fn parse_cli(s: &str) -> Result<ExecRule, String> {
        let words = shell_words::split(s).map_err(|e| format!("--allow-exec {s:?}: {e}"))?;
        let (program, args) = words
            .split_first()
            .ok_or_else(|| "--allow-exec needs a program".to_string())?;
        let rule = ExecRule {
            program: program.clone(),
            args: args.to_vec(),
        };
        rule.validate()?;
        Ok(rule)
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let p = &self.program;
        if p.is_empty() || (p.contains('/') && !p.starts_with('/')) {
            return Err(format!(
                "program {p:?} must be an absolute path or a bare name"
            ));
        }
        if let Some(i) = self.args.iter().position(|a| a == "**")
            && i + 1 != self.args.len()
        {
            return Err(format!(
                "program {p:?}: \"**\" may only be the last argument pattern"
            ));
        }
        for a in &self.args {
            if let (true, glob) = super::pattern::split(a)
                && !glob.starts_with('/')
            {
                return Err(format!(
                    "program {p:?}: {a:?}: a path pattern is an absolute guest path, \
                     e.g. \"path:/backup/*\""
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for ExecRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words = vec![self.program.clone()];
        words.extend(self.args.iter().cloned());
        f.write_str(&shell_words::join(words))
    }
}

/// The `[exec]` table of `skill.toml`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and argument patterns the skill wants to run.
    #[serde(default)]
    pub allow: Vec<ExecRule>,
}

/// Whether two program names, as written in rules and calls, may name the
/// same program: the same text, or the same base name when one of them is
/// bare. The one textual test of "the same program"; on disk, both are
/// then resolved (see [`ExecPolicy::check`]).
pub fn same_program(a: &str, b: &str) -> bool {
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    a == b || (!a.contains('/') || !b.contains('/')) && base(a) == base(b)
}

/// One rule of a run's exec policy: a requested rule and a grant for the
/// same program; a call must match both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecPermit {
    /// What the skill requested; `None` for a component without a manifest.
    pub requested: Option<ExecRule>,
    /// What the operator granted.
    pub granted: ExecRule,
}

impl ExecPermit {
    /// The positions of a call's arguments that name guest paths: a path
    /// pattern (`path:…`) there in the request or the grant.
    pub fn path_positions(&self) -> Vec<usize> {
        let mut at = super::pattern::path_positions(&self.granted.args);
        if let Some(r) = &self.requested {
            at.extend(super::pattern::path_positions(&r.args));
        }
        at.sort_unstable();
        at.dedup();
        at
    }
}

/// The exec policy of one run: the intersection of the skill's requests
/// and the operator's grants, as one set of rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecPolicy {
    /// What a call may run.
    pub permits: Vec<ExecPermit>,
    /// Requested rules that no grant names: a call they match is refused
    /// with the flag that would grant it.
    pub not_granted: Vec<ExecRule>,
    /// Granted rules the skill did not request: a call they match is
    /// refused as not requested.
    pub unrequested: Vec<ExecRule>,
    /// No manifest: the grants alone decide.
    pub bare: bool,
}

/// Why a call may not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The policy refuses it; the message names the rule.
    Denied(String),
    /// The policy names the program, but the host has no such program.
    NotFound(String),
}

impl ExecPolicy {
    /// Intersects the skill's requests (`None`: no manifest) with the
    /// operator's grants, and reports each request's fate.
    pub fn compute(
        requested: Option<&[ExecRule]>,
        granted: &[ExecRule],
        report: &mut PolicyReport,
    ) -> ExecPolicy {
        let mut policy = ExecPolicy {
            bare: requested.is_none(),
            ..ExecPolicy::default()
        };
        let Some(reqs) = requested else {
            for g in granted {
                report.push("exec", g.to_string(), ReportStatus::Granted);
                policy.permits.push(ExecPermit {
                    requested: None,
                    granted: g.clone(),
                });
                warn_if_risky(g, report);
            }
            return policy;
        };
        for r in reqs {
            let grants: Vec<&ExecRule> = granted
                .iter()
                .filter(|g| same_program(&g.program, &r.program))
                .collect();
            let status = if grants.iter().any(|g| args_cover(&g.args, &r.args)) {
                ReportStatus::Granted
            } else if !grants.is_empty() {
                ReportStatus::Narrowed {
                    reason: format!(
                        "only some argument patterns are granted; grant them all with \
                         --allow-exec {}",
                        shell_words::quote(&r.to_string())
                    ),
                }
            } else {
                policy.not_granted.push(r.clone());
                ReportStatus::NotGranted {
                    hint: format!("--allow-exec {}", shell_words::quote(&r.to_string())),
                }
            };
            report.push("exec", r.to_string(), status);
            policy
                .permits
                .extend(grants.into_iter().map(|g| ExecPermit {
                    requested: Some(r.clone()),
                    granted: g.clone(),
                }));
        }
        for g in granted {
            if reqs.iter().any(|r| same_program(&g.program, &r.program)) {
                warn_if_risky(g, report);
            } else {
                report.push("exec", g.to_string(), ReportStatus::Unrequested);
                policy.unrequested.push(g.clone());
            }
        }
        policy
    }

    /// Whether no call can run.
    pub fn is_empty(&self) -> bool {
        self.permits.is_empty()
    }

    /// Every grant, for messages.
    fn grants(&self) -> Vec<&ExecRule> {
        let mut all: Vec<&ExecRule> = Vec::new();
        for g in self
            .permits
            .iter()
            .map(|p| &p.granted)
            .chain(&self.unrequested)
        {
            if !all.contains(&g) {
                all.push(g);
            }
        }
        all
    }

    /// Every request, for messages.
    fn requests(&self) -> Vec<&ExecRule> {
        let mut all: Vec<&ExecRule> = Vec::new();
        for r in self
            .permits
            .iter()
            .filter_map(|p| p.requested.as_ref())
            .chain(&self.not_granted)
        {
            if !all.contains(&r) {
                all.push(r);
            }
        }
        all
    }

    /// Checks a call of `program` with `args`; returns the program's path.
    /// `resolve` finds a program on the host (a bare name in
    /// [`SEARCH_PATH`], an absolute path as is); it is asked only once some
    /// rule names the program, so a guest cannot probe which programs
    /// exist.
    pub fn check(
        &self,
        program: &str,
        args: &[String],
        resolve: impl Fn(&str) -> Option<PathBuf>,
    ) -> Result<PathBuf, Refusal> {
        self.permit(program, args, resolve).map(|(p, _)| p)
    }

    /// [`check`](Self::check), with the permit the call runs under.
    pub fn permit(
        &self,
        program: &str,
        args: &[String],
        resolve: impl Fn(&str) -> Option<PathBuf>,
    ) -> Result<(PathBuf, &ExecPermit), Refusal> {
        let call = describe(program, args);
        if program.contains('/') && !program.starts_with('/') {
            return Err(Refusal::Denied(format!(
                "`{call}`: a program must be a bare name (looked up in {}) or an absolute path",
                SEARCH_PATH.join(":")
            )));
        }
        let names = |r: &ExecRule| same_program(&r.program, program);
        if !self.grants().into_iter().any(names) && !self.requests().into_iter().any(names) {
            return Err(Refusal::Denied(format!(
                "`{call}`: no exec rule names program {program:?} (granted: {}); there is no shell, \
                 so `sh -c` and the like are refused unless granted explicitly",
                list(&self.grants())
            )));
        }
        let resolved = resolve(program).ok_or_else(|| Refusal::NotFound(program.to_string()))?;
        let runs = |r: &ExecRule| resolve(&r.program).as_deref() == Some(resolved.as_path());
        let matches = |r: &ExecRule| runs(r) && args_match(&r.args, args);
        if !self.bare {
            let requests = self.requests();
            if !requests.iter().any(|r| runs(r)) {
                return Err(Refusal::Denied(format!(
                    "`{call}`: the skill's manifest does not request this program"
                )));
            }
            if !requests.iter().any(|r| matches(r)) {
                return Err(Refusal::Denied(format!(
                    "`{call}`: the arguments match none of the skill's requested rules ({})",
                    list(&requests)
                )));
            }
        }
        // The permits whose request allows the call.
        let asked = || {
            self.permits
                .iter()
                .filter(|p| p.requested.as_ref().is_none_or(matches))
        };
        if let Some(p) = asked().find(|p| matches(&p.granted)) {
            return Ok((resolved, p));
        }
        Err(Refusal::Denied(if asked().any(|p| runs(&p.granted)) {
            format!(
                "`{call}`: the arguments match no granted rule for this program (granted: {})",
                list(&self.grants())
            )
        } else {
            format!(
                "`{call}`: requested by the skill but not granted by the operator \
                 (grant with --allow-exec {})",
                shell_words::quote(&call)
            )
        }))
    }
}

fn warn_if_risky(g: &ExecRule, report: &mut PolicyReport) {
    if let Some(w) = risk::runs_code_of_choice(g) {
        report.warnings.push(w);
    }
}

/// A call in words, quoted as a shell would show it.
pub fn describe(program: &str, args: &[String]) -> String {
    let mut words = vec![program.to_string()];
    words.extend(args.iter().cloned());
    shell_words::join(words)
}

fn list(rules: &[&ExecRule]) -> String {
    if rules.is_empty() {
        "none".into()
    } else {
        rules
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<ExecRule> {
        list.iter()
            .map(|s| ExecRule::parse_cli(s).unwrap())
            .collect()
    }

    /// Resolves the names of a small fixed host: `echo`, `du` (also as
    /// `/bin/du`), `git` and `ls`.
    fn host(program: &str) -> Option<PathBuf> {
        let base = program.rsplit('/').next().unwrap_or(program);
        let known = ["echo", "du", "git", "ls", "cp"].contains(&base);
        let bare_or_usual = !program.contains('/')
            || program == format!("/bin/{base}")
            || program == format!("/usr/bin/{base}");
        (known && bare_or_usual).then(|| PathBuf::from(format!("/usr/bin/{base}")))
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_intersection_is_one_rule_set() {
        let mut report = PolicyReport::default();
        let requested = rules(&["echo hi *", "du -k *", "git status"]);
        let granted = rules(&["echo **", "/bin/du -k /data", "ls"]);
        let p = ExecPolicy::compute(Some(&requested), &granted, &mut report);
        assert_eq!(p.permits.len(), 2, "{p:?}");
        assert_eq!(p.not_granted, rules(&["git status"]));
        assert_eq!(p.unrequested, rules(&["ls"]));
        assert!(!p.bare);
        let text = report.to_string();
        assert!(text.contains("--allow-exec 'git status'"), "{text}");
        assert!(text.contains("only some argument patterns"), "{text}");
    }

    #[test]
    fn a_call_must_match_a_request_and_a_grant() {
        let mut report = PolicyReport::default();
        let requested = rules(&["echo hi *", "du -k *", "git status"]);
        let granted = rules(&["echo **", "/bin/du -k /data", "ls"]);
        let p = ExecPolicy::compute(Some(&requested), &granted, &mut report);
        let check = |prog: &str, a: &[&str]| p.check(prog, &args(a), host);
        assert_eq!(
            check("echo", &["hi", "x"]),
            Ok(PathBuf::from("/usr/bin/echo"))
        );
        assert_eq!(
            check("du", &["-k", "/data"]),
            Ok(PathBuf::from("/usr/bin/du"))
        );
        assert_eq!(
            check("/usr/bin/du", &["-k", "/data"]),
            Ok(PathBuf::from("/usr/bin/du"))
        );
        let denied = |prog: &str, a: &[&str], needle: &str| match check(prog, a) {
            Err(Refusal::Denied(m)) => assert!(m.contains(needle), "{prog} {a:?}: {m}"),
            other => panic!("{prog} {a:?}: {other:?}"),
        };
        denied(
            "echo",
            &["bye"],
            "match none of the skill's requested rules",
        );
        denied("du", &["-k", "/etc"], "match no granted rule");
        denied(
            "git",
            &["status"],
            "not granted by the operator (grant with --allow-exec 'git status')",
        );
        denied("ls", &[], "manifest does not request");
        denied(
            "cat",
            &["/etc/passwd"],
            "no exec rule names program \"cat\"",
        );
        denied("./echo", &["hi"], "must be a bare name");
        let missing = ExecPolicy::compute(None, &rules(&["nope"]), &mut report);
        assert_eq!(
            missing.check("nope", &[], host),
            Err(Refusal::NotFound("nope".into()))
        );
    }

    #[test]
    fn path_patterns_match_as_globs_and_mark_their_arguments() {
        assert!(ExecRule::parse_cli("tar -czf path:backup/*").is_err());
        let requested = rules(&["cp path:/data/* path:/out/*"]);
        let mut report = PolicyReport::default();
        // A plain grant does not cover a path request: a different kind.
        let p = ExecPolicy::compute(
            Some(&requested),
            &rules(&["cp /data/* /out/*"]),
            &mut report,
        );
        assert!(
            report.to_string().contains("only some argument patterns"),
            "{report}"
        );
        let (_, permit) = p.permit("cp", &args(&["/data/a", "/out/b"]), host).unwrap();
        assert_eq!(
            permit.path_positions(),
            vec![0, 1],
            "the request marks them"
        );
        let p = ExecPolicy::compute(Some(&requested), &requested, &mut PolicyReport::default());
        assert!(p.check("cp", &args(&["/data/a", "/out/b"]), host).is_ok());
        assert!(p.check("cp", &args(&["/etc/a", "/out/b"]), host).is_err());
    }

    #[test]
    fn without_a_manifest_the_grants_alone_decide() {
        let p = ExecPolicy::compute(None, &rules(&["echo hi"]), &mut PolicyReport::default());
        assert!(p.bare);
        assert!(p.check("echo", &args(&["hi"]), host).is_ok());
        assert!(matches!(
            p.check("echo", &args(&["bye"]), host),
            Err(Refusal::Denied(m)) if m.contains("match no granted rule")
        ));
    }

    #[test]
    fn a_rule_is_never_resolved_before_one_names_the_program() {
        let p = ExecPolicy::compute(None, &rules(&["echo"]), &mut PolicyReport::default());
        let probe = |name: &str| -> Option<PathBuf> { panic!("resolved {name}") };
        assert!(matches!(
            p.check("secret-tool", &[], probe),
            Err(Refusal::Denied(_))
        ));
    }
}
