//! `exec`: run a host program on the guest's behalf, never a shell.
//!
//! A call runs only if the program and every argument match a rule the skill
//! requested *and* a rule the operator granted (for a bare component, a
//! granted rule). Then the program gets:
//! * a clean environment: `PATH` and the granted variables only;
//! * a working directory inside a granted directory (guest path mapped to
//!   the host); arguments are passed verbatim, never translated or expanded;
//! * a process group of its own, killed as a whole on timeout, when the
//!   program exits (background children die with it) and if the run is
//!   dropped;
//! * capped stdout/stderr, and the Landlock [`Sandbox`] of the run (it is
//!   started from the run's confined spawner thread);
//! * a timeout: the call's own, capped by the host's per-call limit and by
//!   what is left of the run.
//!
//! A process that calls `setsid` leaves the group and escapes `killpg`; the
//! Landlock sandbox still confines what it can touch.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::sandbox::Sandbox;
use crate::events::{Event, EventSink};
use crate::policy::pattern::args_match;
use crate::policy::{EffectivePolicy, ExecRule};

/// The fixed search path for bare program names; the guest cannot change it.
pub const SEARCH_PATH: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];

/// One exec call, as the guest asked for it.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Bare name or absolute path.
    pub program: String,
    /// Arguments, verbatim.
    pub args: Vec<String>,
    /// Guest path of the working directory.
    pub cwd: Option<String>,
    /// Extra variables; each name must be granted.
    pub env: Vec<(String, String)>,
    /// Bytes for the program's stdin (empty stdin otherwise).
    pub stdin: Option<Vec<u8>>,
    /// The call's own timeout.
    pub timeout: Option<Duration>,
    /// Set by the host, never by the guest: the run's tag, exported to the
    /// program as `SKILLBOX_RUN`, so that a host restarting after a crash
    /// can find and kill what an interrupted run left behind
    /// ([`kill_tagged`]).
    pub tag: Option<String>,
}

/// The variable that marks a run's programs.
pub const TAG_VAR: &str = "SKILLBOX_RUN";

/// Kills every process (with its whole process group) whose environment
/// carries `SKILLBOX_RUN=tag`: the leftovers of a run whose host died.
/// Returns how many processes were found.
pub fn kill_tagged(tag: &str) -> usize {
    let needle = format!("{TAG_VAR}={tag}");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id() as i32;
    let mut found = 0;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            found += 1;
            // SAFETY: signals to a process (and its group) that carries this
            // run's tag; ESRCH is harmless.
            unsafe {
                let pgid = libc::getpgid(pid);
                if pgid > 1 {
                    libc::killpg(pgid, libc::SIGKILL);
                }
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    found
}

/// What a finished program produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Exit status; -1 when killed by a signal.
    pub status: i32,
    /// Captured stdout (capped).
    pub stdout: Vec<u8>,
    /// Captured stderr (capped).
    pub stderr: Vec<u8>,
    /// Whether either stream hit its cap.
    pub truncated: bool,
}

/// Why a call did not produce a [`Response`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The policy refused it.
    #[error("exec denied: {0}")]
    Denied(String),
    /// No such program on the host.
    #[error("program not found: {0}")]
    NotFound(String),
    /// It ran out of time; its process group was killed.
    #[error("timed out")]
    TimedOut,
    /// The host could not run it.
    #[error("exec failed: {0}")]
    Failed(String),
}

fn is_executable(p: &Path) -> bool {
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Resolves a program name the way rules and calls are both resolved: an
/// absolute path as is, a bare name against [`SEARCH_PATH`]; then symlinks
/// (so `/bin/du` and `/usr/bin/du` are the same program).
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    let found = if program.starts_with('/') {
        Some(PathBuf::from(program)).filter(|p| is_executable(p))
    } else if program.is_empty() || program.contains('/') {
        None
    } else {
        SEARCH_PATH
            .iter()
            .map(|d| Path::new(d).join(program))
            .find(|p| is_executable(p))
    };
    found.and_then(|p| p.canonicalize().ok())
}

fn describe(req: &Request) -> String {
    let mut words = vec![req.program.clone()];
    words.extend(req.args.iter().cloned());
    shell_words::join(words)
}

fn list(rules: &[ExecRule]) -> String {
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

/// Finds the rule in `rules` that allows `req`, or says why none does.
fn find_rule<'r>(
    rules: &'r [ExecRule],
    resolved: &Path,
    req: &Request,
) -> Result<&'r ExecRule, bool> {
    let mut program_known = false;
    for r in rules {
        if resolve_program(&r.program).as_deref() == Some(resolved) {
            program_known = true;
            if args_match(&r.args, &req.args) {
                return Ok(r);
            }
        }
    }
    Err(program_known)
}

/// Checks `req` against the policy; returns the resolved program path.
pub fn check(policy: &EffectivePolicy, req: &Request) -> Result<PathBuf, ExecError> {
    let call = describe(req);
    let base = req.program.rsplit('/').next().unwrap_or(&req.program);
    let named = |rules: &[ExecRule]| {
        rules
            .iter()
            .any(|r| r.program == req.program || r.program.rsplit('/').next() == Some(base))
    };
    let requested = policy.exec_requested.as_deref();
    if req.program.contains('/') && !req.program.starts_with('/') {
        return Err(ExecError::Denied(format!(
            "`{call}`: a program must be a bare name (looked up in {}) or an absolute path",
            SEARCH_PATH.join(":")
        )));
    }
    // Refuse before touching the host's filesystem when no rule even names
    // the program, so a guest cannot probe which programs exist.
    if !named(&policy.exec_granted) && !requested.is_some_and(named) {
        return Err(ExecError::Denied(format!(
            "`{call}`: no exec rule names program {:?} (granted: {}); there is no shell, \
             so `sh -c` and the like are refused unless granted explicitly",
            req.program,
            list(&policy.exec_granted)
        )));
    }
    let resolved =
        resolve_program(&req.program).ok_or_else(|| ExecError::NotFound(req.program.clone()))?;
    if let Some(reqs) = requested
        && let Err(program_known) = find_rule(reqs, &resolved, req)
    {
        return Err(ExecError::Denied(if program_known {
            format!(
                "`{call}`: the arguments match none of the skill's requested rules ({})",
                list(reqs)
            )
        } else {
            format!("`{call}`: the skill's manifest does not request this program")
        }));
    }
    match find_rule(&policy.exec_granted, &resolved, req) {
        Ok(_) => Ok(resolved),
        Err(program_known) => Err(ExecError::Denied(if program_known {
            format!(
                "`{call}`: the arguments match no granted rule for this program (granted: {})",
                list(&policy.exec_granted)
            )
        } else {
            format!(
                "`{call}`: requested by the skill but not granted by the operator \
                 (grant with --allow-exec {})",
                shell_words::quote(&call)
            )
        })),
    }
}

fn working_dir(policy: &EffectivePolicy, req: &Request) -> Result<PathBuf, ExecError> {
    match &req.cwd {
        Some(g) => super::fs::guest_to_host(&policy.preopens, g)
            .map(|(p, _)| p)
            .map_err(|e| ExecError::Denied(format!("working directory {e}"))),
        None => match policy.preopens.first() {
            Some(p) => {
                super::fs::canonical_dir(&p.host).map_err(|e| ExecError::Failed(e.to_string()))
            }
            // With no granted directory the program starts in `/`, which the
            // sandbox does not let it list or read.
            None => Ok(PathBuf::from("/")),
        },
    }
}

fn environment(
    policy: &EffectivePolicy,
    req: &Request,
) -> Result<Vec<(String, String)>, ExecError> {
    let mut env = vec![("PATH".to_string(), SEARCH_PATH.join(":"))];
    env.extend(super::env::granted_vars(policy));
    for (k, v) in &req.env {
        if !policy.env.contains(k) {
            return Err(ExecError::Denied(format!(
                "environment variable {k:?} is not granted to this skill (grant with --allow-env {k})"
            )));
        }
        env.retain(|(n, _)| n != k);
        env.push((k.clone(), v.clone()));
    }
    if let Some(tag) = &req.tag {
        env.retain(|(n, _)| n != TAG_VAR);
        env.push((TAG_VAR.to_string(), tag.clone()));
    }
    Ok(env)
}

/// Kills a whole process group when dropped.
struct GroupGuard(i32);

impl GroupGuard {
    fn kill(&self) {
        // SAFETY: killpg on a group this module created; ESRCH is harmless.
        unsafe {
            libc::killpg(self.0, libc::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn read_capped(mut r: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (kept, truncated)
}

/// Checks and runs one call. `deadline` is the end of the whole run.
pub async fn run(
    policy: &EffectivePolicy,
    sandbox: &Sandbox,
    req: Request,
    deadline: Instant,
    events: &dyn EventSink,
) -> Result<Response, ExecError> {
    let call = describe(&req);
    let result = run_checked(policy, sandbox, &req, deadline).await;
    let (allowed, reason) = match &result {
        Ok(r) => (true, format!("exit status {}", r.status)),
        Err(e @ ExecError::Denied(_)) => (false, e.to_string()),
        Err(e) => (true, e.to_string()),
    };
    events.event(Event::Audit {
        capability: "exec",
        detail: call,
        allowed,
        reason,
    });
    result
}

async fn run_checked(
    policy: &EffectivePolicy,
    sandbox: &Sandbox,
    req: &Request,
    deadline: Instant,
) -> Result<Response, ExecError> {
    let program = check(policy, req)?;
    let cwd = working_dir(policy, req)?;
    let env = environment(policy, req)?;
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = req
        .timeout
        .unwrap_or(policy.limits.exec_timeout)
        .min(policy.limits.exec_timeout)
        .min(left);
    let cap = policy.limits.output;

    let mut cmd = std::process::Command::new(&program);
    cmd.args(&req.args)
        .env_clear()
        .envs(env)
        .current_dir(&cwd)
        .stdin(if req.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = sandbox.spawn(cmd).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ExecError::NotFound(req.program.clone()),
        _ => ExecError::Failed(format!("cannot start {}: {e}", program.display())),
    })?;
    let group = GroupGuard(child.id() as i32);
    let pipe =
        |e: std::io::Error| ExecError::Failed(format!("pipes of {}: {e}", program.display()));

    if let (Some(w), Some(data)) = (child.stdin.take(), req.stdin.clone()) {
        let mut w = tokio::process::ChildStdin::from_std(w).map_err(pipe)?;
        tokio::spawn(async move {
            // A program that does not read its stdin is not an error.
            let _ = w.write_all(&data).await;
        });
    }
    let stdout =
        tokio::process::ChildStdout::from_std(child.stdout.take().expect("piped")).map_err(pipe)?;
    let stderr =
        tokio::process::ChildStderr::from_std(child.stderr.take().expect("piped")).map_err(pipe)?;
    let out = tokio::spawn(read_capped(stdout, cap));
    let err = tokio::spawn(read_capped(stderr, cap));

    // Waiting blocks a pool thread; the group guard makes sure the child
    // dies (and the wait returns) however this future ends.
    let mut waiter = tokio::task::spawn_blocking(move || child.wait());
    let status = match tokio::time::timeout(timeout, &mut waiter).await {
        Ok(Ok(Ok(s))) => s,
        Ok(Ok(Err(e))) => {
            return Err(ExecError::Failed(format!(
                "waiting for {}: {e}",
                program.display()
            )));
        }
        Ok(Err(e)) => {
            return Err(ExecError::Failed(format!(
                "waiting for {}: {e}",
                program.display()
            )));
        }
        Err(_) => {
            group.kill();
            let _ = waiter.await;
            out.abort();
            err.abort();
            return Err(ExecError::TimedOut);
        }
    };
    // The leader is done: anything it left in the background goes too, so
    // it cannot hold the pipes open or outlive the call.
    group.kill();
    let rest = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    let collected = tokio::time::timeout(rest, async { (out.await, err.await) }).await;
    let ((stdout, t1), (stderr, t2)) = match collected {
        Ok((Ok(o), Ok(e))) => (o, e),
        _ => return Err(ExecError::TimedOut),
    };
    Ok(Response {
        status: status.code().unwrap_or(-1),
        stdout,
        stderr,
        truncated: t1 || t2,
    })
}

mod host_impl {
    use std::time::Duration;

    use crate::bindings::skillbox::skill::exec::{Command, ExecError as WitError, Host, Output};
    use crate::runtime::RunState;

    impl Host for RunState {
        async fn run(&mut self, cmd: Command) -> Result<Output, WitError> {
            let req = super::Request {
                program: cmd.program,
                args: cmd.args,
                cwd: cmd.cwd,
                env: cmd.env,
                stdin: cmd.stdin,
                timeout: cmd.timeout_ms.map(Duration::from_millis),
                tag: self.tag.clone(),
            };
            let (policy, sandbox, events) = (
                self.policy.clone(),
                self.sandbox.clone(),
                self.events.clone(),
            );
            match super::run(&policy, &sandbox, req, self.deadline, &*events).await {
                Ok(r) => Ok(Output {
                    status: r.status,
                    stdout: r.stdout,
                    stderr: r.stderr,
                    truncated: r.truncated,
                }),
                Err(super::ExecError::Denied(m)) => Err(WitError::Denied(m)),
                Err(super::ExecError::NotFound(m)) => Err(WitError::NotFound(m)),
                Err(super::ExecError::TimedOut) => Err(WitError::TimedOut),
                Err(super::ExecError::Failed(m)) => Err(WitError::Failed(m)),
            }
        }
    }
}
