//! `exec`: run a host program on the guest's behalf, never a shell.
//!
//! A call runs only if the program and every argument match a rule the skill
//! requested *and* a rule the operator granted (for a bare component, a
//! granted rule). Then the program gets:
//! * a clean environment: `PATH`, the granted variables, and the secrets
//!   granted to this program (`--allow-exec-secret`), whose values come back
//!   to the guest as `[redacted]` in its stdout and stderr;
//! * a working directory inside a granted directory (guest path mapped to
//!   the host); arguments are passed verbatim, never translated or expanded;
//! * the run's [`Sandbox`]: it starts from the run's jail, confined on the
//!   assumption that the program itself is hostile (no network or sockets,
//!   only the granted directories, no capabilities, the run's memory and
//!   process ceilings); whatever it leaves behind is killed when it
//!   returns, on timeout and when the run ends, even after `setsid`;
//! * capped stdout/stderr;
//! * a timeout: the call's own, capped by the host's per-call limit and by
//!   what is left of the run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::Instrument;

use super::sandbox::Sandbox;
use super::sandbox::wire::{Call, Done};
use crate::events::{Event, EventObserver};
use crate::policy::EffectivePolicy;
use crate::policy::exec::{Refusal, describe};
use crate::secrets::SecretValues;

pub use crate::policy::exec::SEARCH_PATH;

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

/// Checks `req` against the policy; returns the resolved program path and
/// the arguments to give it: those its rule marks as guest paths mapped to
/// the host paths they name, beneath a granted directory.
pub fn check(policy: &EffectivePolicy, req: &Request) -> Result<(PathBuf, Vec<String>), ExecError> {
    let (program, permit) = policy
        .exec
        .permit(&req.program, &req.args, resolve_program)
        .map_err(|r| match r {
            Refusal::Denied(m) => ExecError::Denied(m),
            Refusal::NotFound(m) => ExecError::NotFound(m),
        })?;
    let mut args = req.args.clone();
    for i in permit.path_positions() {
        let Some(arg) = args.get_mut(i) else { continue };
        let host = super::fs::guest_path_to_host(&policy.preopens, arg).map_err(|e| {
            ExecError::Denied(format!(
                "`{}`: argument {} is a guest path, and {e}",
                describe(&req.program, &req.args),
                i + 1
            ))
        })?;
        *arg = host.to_string_lossy().into_owned();
    }
    Ok((program, args))
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

/// The program's environment: `PATH`, the granted variables, the guest's
/// own (each granted), then the secrets granted to `program` (a guest's
/// variable of the same name does not replace one).
fn environment(
    policy: &EffectivePolicy,
    req: &Request,
    program: &Path,
    secrets: &SecretValues,
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
    for use_ in &policy.secrets.exec {
        if resolve_program(&use_.program).as_deref() != Some(program) {
            continue;
        }
        let value = secrets.get(&use_.secret).ok_or_else(|| {
            ExecError::Failed(format!(
                "the secret {} has no value in this run",
                use_.secret
            ))
        })?;
        env.retain(|(n, _)| *n != use_.secret);
        env.push((use_.secret.clone(), value.to_string()));
    }
    if let Some(tag) = &req.tag {
        env.retain(|(n, _)| n != TAG_VAR);
        env.push((TAG_VAR.to_string(), tag.clone()));
    }
    Ok(env)
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

/// The program's stdin (the request's bytes, or `/dev/null`), stdout and
/// stderr for the jail, and the readers of its stdout and stderr, each
/// capped at `cap` bytes.
#[allow(clippy::type_complexity)]
fn pipes(
    stdin: Option<Vec<u8>>,
    cap: usize,
) -> std::io::Result<(
    [std::os::fd::OwnedFd; 3],
    tokio::task::JoinHandle<(Vec<u8>, bool)>,
    tokio::task::JoinHandle<(Vec<u8>, bool)>,
)> {
    let pipe = || rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC);
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let in_r = match stdin {
        Some(data) => {
            let (r, w) = pipe()?;
            let mut w = tokio::net::unix::pipe::Sender::from_owned_fd(w)?;
            tokio::spawn(async move {
                // A program that does not read its stdin is not an error.
                let _ = w.write_all(&data).await;
            });
            r
        }
        None => std::fs::File::open("/dev/null")?.into(),
    };
    let reader = |fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd);
    let out = tokio::spawn(read_capped(reader(out_r)?, cap));
    let err = tokio::spawn(read_capped(reader(err_r)?, cap));
    Ok(([in_r, out_w, err_w], out, err))
}

/// Checks and runs one call. `deadline` is the end of the whole run. The
/// program's output comes back with every value of `secrets` redacted.
pub async fn run(
    policy: &EffectivePolicy,
    sandbox: &Sandbox,
    secrets: &SecretValues,
    req: Request,
    deadline: Instant,
    events: &dyn EventObserver,
) -> Result<Response, ExecError> {
    let call = describe(&req.program, &req.args);
    let hide = secrets.redactor();
    // Read past the cap by the longest value, so that the cut cannot fall
    // inside one unseen (see `Redactor::capped`).
    let cap = policy.limits.output;
    let span = crate::telemetry::capability_span("exec", &call);
    let result = run_checked(
        policy,
        sandbox,
        secrets,
        &req,
        deadline,
        cap + hide.longest(),
    )
    .instrument(span.clone())
    .await
    .map(|r| {
        let (stdout, cut_out) = hide.capped(&r.stdout, cap, r.truncated);
        let (stderr, cut_err) = hide.capped(&r.stderr, cap, r.truncated);
        Response {
            stdout,
            stderr,
            truncated: cut_out || cut_err,
            ..r
        }
    });
    let (allowed, reason) = match &result {
        Ok(r) => (true, format!("exit status {}", r.status)),
        Err(e @ ExecError::Denied(_)) => (false, e.to_string()),
        Err(e) => (true, e.to_string()),
    };
    crate::telemetry::decided(&span, allowed, &reason);
    // The secrets this program was handed (it ran: it had them).
    if !matches!(result, Err(ExecError::Denied(_))) {
        let program = resolve_program(&req.program);
        for use_ in &policy.secrets.exec {
            if program.is_some() && resolve_program(&use_.program) == program {
                events.event(Event::Audit {
                    capability: "secrets",
                    detail: format!("{} to {}", use_.secret, use_.program),
                    allowed: true,
                    reason: format!(
                        "granted with --allow-exec-secret {} {}",
                        use_.program, use_.secret
                    ),
                });
            }
        }
    }
    events.event(Event::Audit {
        capability: "exec",
        detail: call,
        allowed,
        reason,
    });
    result
}

/// Audits a call refused before it was checked to run.
fn audit_refusal(req: &Request, e: &ExecError, events: &dyn EventObserver) {
    events.event(Event::Audit {
        capability: "exec",
        detail: describe(&req.program, &req.args),
        allowed: false,
        reason: e.to_string(),
    });
}

async fn run_checked(
    policy: &EffectivePolicy,
    sandbox: &Sandbox,
    secrets: &SecretValues,
    req: &Request,
    deadline: Instant,
    cap: usize,
) -> Result<Response, ExecError> {
    let (program, args) = check(policy, req)?;
    let cwd = working_dir(policy, req)?;
    let env = environment(policy, req, &program, secrets)?;
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = req
        .timeout
        .unwrap_or(policy.limits.exec_timeout)
        .min(policy.limits.exec_timeout)
        .min(left);
    let failed = |what: &str, e: std::io::Error| {
        ExecError::Failed(format!("{what} for {}: {e}", program.display()))
    };

    let (stdio, out, err) = pipes(req.stdin.clone(), cap).map_err(|e| failed("pipes", e))?;
    let call = Call {
        program: program.clone(),
        args,
        env,
        cwd,
    };
    let whole = async {
        let finished = sandbox.run(call, stdio).await;
        // The jail killed whatever the program left behind before it
        // answered, so the pipes are at their end or about to be.
        let ((stdout, t1), (stderr, t2)) = match (out.await, err.await) {
            (Ok(o), Ok(e)) => (o, e),
            _ => ((Vec::new(), false), (Vec::new(), false)),
        };
        (finished, stdout, stderr, t1 || t2)
    };
    // On timeout the future is dropped, which kills the jail and every
    // process in it.
    let (finished, stdout, stderr, truncated) = tokio::time::timeout(timeout, whole)
        .await
        .map_err(|_| ExecError::TimedOut)?;
    let finished = finished.map_err(|e| failed("the sandbox", e))?;
    let status = match finished.done {
        Done::Exited(code) => code,
        Done::Signaled(_) if finished.out_of_memory => {
            return Err(ExecError::Failed(format!(
                "{} was killed: the run's programs went over the memory limit of {} \
                 (raise it with --memory)",
                program.display(),
                crate::units::ByteSize(policy.limits.memory)
            )));
        }
        Done::Signaled(_) => -1,
        Done::NotFound(_) => return Err(ExecError::NotFound(req.program.clone())),
        Done::Failed(m) => return Err(ExecError::Failed(m)),
    };
    Ok(Response {
        status,
        stdout,
        stderr,
        truncated,
    })
}

/// The `exec` capability's part of one run.
pub struct ExecCtx {
    /// The run's policy: exec rules, directories, variables, limits.
    pub policy: Arc<EffectivePolicy>,
    /// The jail the run's programs start from.
    pub sandbox: Arc<Sandbox>,
    /// Audit events.
    pub events: Arc<dyn EventObserver>,
    /// The run's ask rules, its approval gate and its deadline.
    pub asker: Arc<super::approval::Asker>,
    /// The run's tag, exported to its programs (see [`Request::tag`]).
    pub tag: Option<String>,
    /// The values of the secrets granted to the run's programs.
    pub secrets: SecretValues,
}

impl ExecCtx {
    /// The ask rule `req` waits under, if any (a call refused anyway asks
    /// nobody).
    fn ask_rule(&self, req: &Request) -> Option<String> {
        if self.asker.rules.exec.is_empty() || check(&self.policy, req).is_err() {
            return None;
        }
        self.asker
            .rules
            .exec_rule(&req.program, &req.args, resolve_program)
    }

    /// Whether an exec of `argv` (program, then arguments) would wait for
    /// the operator's approval.
    pub(crate) fn would_ask(&self, argv: &[String]) -> bool {
        let Some((program, args)) = argv.split_first() else {
            return false;
        };
        let req = Request {
            program: program.clone(),
            args: args.to_vec(),
            cwd: None,
            env: Vec::new(),
            stdin: None,
            timeout: None,
            tag: None,
        };
        self.ask_rule(&req).is_some()
    }

    /// Asks for approval of `req` when an ask rule matches it (and the
    /// policy allows it: a call refused anyway asks nobody).
    async fn approve(&self, req: &Request) -> Result<(), ExecError> {
        let Some(rule) = self.ask_rule(req) else {
            return Ok(());
        };
        let detail = describe(&req.program, &req.args);
        self.asker
            .ask(super::approval::Asking {
                capability: "exec",
                detail,
                rule,
                reason: None,
                per_run: false,
                cover: Some(super::approval::exec_cover(&req.program, &req.args)),
            })
            .await
            .map_err(ExecError::Denied)
    }
}

mod host_impl {
    use std::time::Duration;

    use super::ExecCtx;
    use crate::bindings::skillbox::skill::exec::{Command, ExecError as WitError, Host, Output};

    impl Host for ExecCtx {
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
            let ctx = &*self;
            let result = match ctx.approve(&req).await {
                Ok(()) => {
                    let deadline = ctx.asker.deadline().get();
                    super::run(
                        &ctx.policy,
                        &ctx.sandbox,
                        &ctx.secrets,
                        req,
                        deadline,
                        &*ctx.events,
                    )
                    .await
                }
                Err(e) => {
                    super::audit_refusal(&req, &e, &*ctx.events);
                    Err(e)
                }
            };
            match result {
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
