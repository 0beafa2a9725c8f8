//! Confinement of the programs `exec` starts, on the assumption that the
//! program itself is the attacker (a granted `git`, `tar` or interpreter
//! can be made to run code of the skill's choosing).
//!
//! Each run that may exec gets a jail ([`jail`], the `skillbox-jail`
//! binary), started on the run's first call and killed with the run. Every
//! program of the run starts from it and inherits, for good:
//! * **Landlock** ([`landlock`]): read+execute on the system directories
//!   only, the granted directories with the run's access (never execute,
//!   never device nodes, FIFOs or sockets made there, no device `ioctl`s),
//!   no TCP; signals and abstract Unix sockets do not cross the domain;
//! * **seccomp** ([`seccomp`]): no socket of any family (so no network and
//!   no pathname Unix socket such as skillbox's own or the Docker
//!   engine's), no io_uring, ptrace, namespaces, mounts, device nodes,
//!   keyrings, BPF or kernel log;
//! * **no capabilities**, bounding set included, and `no_new_privs`, so
//!   that even a setuid-root program gains nothing;
//! * a **PID namespace** per run: programs see and signal only the run's
//!   own processes, everything a call leaves behind is killed when it
//!   returns, and everything is killed with the run or the host (even
//!   after `setsid` or a double fork);
//! * a **cgroup** per run ([`cgroup`]): the run's memory limit and
//!   [`DEFAULT_PROCESSES`] processes over all its programs together;
//! * only stdin, stdout and stderr: every other descriptor is closed.
//!
//! Where the kernel or the host's privileges lack a mechanism, the rest
//! still applies and [`SandboxStatus`] says what is missing; `skillbox
//! inspect` shows it.

pub mod cgroup;
pub mod jail;
pub mod landlock;
pub mod seccomp;
pub mod wire;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use serde::Serialize;

pub use cgroup::Layout as CgroupLayout;
use cgroup::RunGroup;
use wire::{Applied, Call, Done, Ready, Setup};

use crate::policy::{Access, EffectivePolicy};

/// Most processes a run's programs may have at once.
pub const DEFAULT_PROCESSES: u32 = 128;
/// The jail binary's name; it is looked for beside the running executable
/// (and one directory up, for test and bench binaries in `deps/`) unless
/// [`JAIL_ENV`] names it.
pub const JAIL_BINARY: &str = "skillbox-jail";
/// Environment variable naming the jail binary explicitly.
pub const JAIL_ENV: &str = "SKILLBOX_JAIL";

/// What exec'd programs get on this host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SandboxStatus {
    /// The Landlock ABI in force; `None` without Landlock.
    pub landlock: Option<i32>,
    /// Whether signals and abstract sockets are scoped (Landlock ABI ≥ 6).
    pub landlock_scoped: bool,
    /// Whether the seccomp filter is installed.
    pub seccomp: bool,
    /// Whether programs are dropped of every capability.
    pub capabilities_dropped: bool,
    /// Whether each run's programs get a PID namespace.
    pub pid_namespace: bool,
    /// The cgroup layout runs get; `None`: each program's address space is
    /// capped instead, and the number of processes is not.
    pub cgroup: Option<CgroupLayout>,
    /// Why there is no cgroup, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_error: Option<String>,
    /// Why programs cannot run at all here (no jail binary, a jail that
    /// cannot confine itself); exec calls fail with this.
    pub unavailable: Option<String>,
}

impl SandboxStatus {
    /// Whether every mechanism is in force.
    pub fn complete(&self) -> bool {
        self.unavailable.is_none()
            && self.landlock.is_some()
            && self.landlock_scoped
            && self.seccomp
            && self.capabilities_dropped
            && self.pid_namespace
            && self.cgroup.is_some()
    }

    fn from_applied(a: &Applied, cgroup: Result<CgroupLayout, String>) -> SandboxStatus {
        let (cgroup, cgroup_error) = match cgroup {
            Ok(l) => (Some(l), None),
            Err(e) => (None, Some(e)),
        };
        SandboxStatus {
            landlock: a.landlock,
            landlock_scoped: a.landlock_scoped,
            seccomp: a.seccomp,
            capabilities_dropped: a.capabilities_dropped,
            pid_namespace: a.pid_namespace,
            cgroup,
            cgroup_error,
            unavailable: None,
        }
    }
}

impl std::fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(why) = &self.unavailable {
            return write!(f, "exec'd programs cannot run: {why}");
        }
        let mut parts = Vec::new();
        parts.push(match self.landlock {
            Some(abi) if self.landlock_scoped => format!(
                "Landlock ABI {abi} (granted dirs only, no TCP, signals and abstract sockets scoped)"
            ),
            Some(abi) => format!(
                "Landlock ABI {abi} (granted dirs only; signals NOT scoped, needs ABI 6)"
            ),
            None => "NO Landlock: programs can read what the host's user can".into(),
        });
        parts.push(if self.seccomp {
            "seccomp (no sockets, namespaces, device nodes, ptrace)".into()
        } else {
            "NO seccomp".into()
        });
        parts.push(if self.capabilities_dropped {
            "no capabilities".into()
        } else {
            "capabilities NOT fully dropped".into()
        });
        parts.push(if self.pid_namespace {
            "a PID namespace per run (nothing outlives its call)".into()
        } else {
            "NO PID namespace (a program that calls setsid can outlive its call)".into()
        });
        parts.push(match self.cgroup {
            Some(CgroupLayout::V2) => {
                format!("cgroup v2 (run's memory limit, {DEFAULT_PROCESSES} processes)")
            }
            Some(CgroupLayout::V1) => {
                format!("cgroup v1 memory+pids (run's memory limit, {DEFAULT_PROCESSES} processes)")
            }
            None => format!(
                "NO cgroup (memory capped per program, processes not capped: {})",
                self.cgroup_error.as_deref().unwrap_or("unavailable")
            ),
        });
        parts.push("descriptors above 2 closed".into());
        write!(f, "{}", parts.join("; "))
    }
}

/// The kernel's Landlock ABI version, or the errno explaining its absence.
pub fn kernel_abi() -> Result<i32, io::Error> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the documented version query: null attr, size 0, version flag.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as i32)
    }
}

/// What exec'd programs get on this host, found once per process by
/// starting a jail with nothing granted and asking it.
pub fn status() -> SandboxStatus {
    static STATUS: OnceLock<SandboxStatus> = OnceLock::new();
    STATUS
        .get_or_init(|| {
            let plan = Plan {
                dirs: Vec::new(),
                memory: 64 << 20,
                processes: 8,
                umask: None,
            };
            match Jail::start(&plan) {
                Ok(j) => j.status.clone(),
                Err(e) => SandboxStatus {
                    unavailable: Some(e.to_string()),
                    ..SandboxStatus::default()
                },
            }
        })
        .clone()
}

/// Where the jail binary is.
pub fn jail_binary() -> io::Result<PathBuf> {
    if let Some(p) = crate::caller::var_set(JAIL_ENV) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let candidates = [
        Some(dir.join(JAIL_BINARY)),
        dir.parent().map(|d| d.join(JAIL_BINARY)),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the sandbox helper {JAIL_BINARY} is not installed beside {} \
                 (install it there, or name it with {JAIL_ENV})",
                    exe.display()
                ),
            )
        })
}

/// What a run's jail is made with.
#[derive(Clone, Debug)]
struct Plan {
    dirs: Vec<(PathBuf, bool)>,
    memory: u64,
    processes: u32,
    /// The caller's umask, for a run done for another process.
    umask: Option<u32>,
}

/// A started jail.
struct Jail {
    sock: UnixStream,
    outer: Child,
    pidfd: Arc<OwnedFd>,
    cgroup: Option<RunGroup>,
    status: SandboxStatus,
}

type Launch = (Command, mpsc::Sender<io::Result<Child>>);

/// Starts the thread jails are started from now, from
/// this thread. A thread shares the working directory and umask of the
/// one that started it; a run server starts it before it takes runs, so
/// that it does not keep the first caller's.
pub fn start_launcher() {
    launcher();
}

/// Starts jails from one thread that lives as long as the process: a
/// jail's parent-death signal fires when the thread that started it
/// exits, and this one never does.
fn launch(cmd: Command) -> io::Result<Child> {
    let tx = launcher();
    let (reply, answer) = mpsc::channel();
    let gone = || io::Error::other("the jail launcher thread is gone");
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply))
        .map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

fn launcher() -> &'static Mutex<mpsc::Sender<Launch>> {
    static LAUNCHER: OnceLock<Mutex<mpsc::Sender<Launch>>> = OnceLock::new();
    LAUNCHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Launch>();
        std::thread::Builder::new()
            .name("skillbox-jails".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the jail launcher thread");
        Mutex::new(tx)
    })
}

impl Jail {
    fn start(plan: &Plan) -> io::Result<Jail> {
        let binary = jail_binary()?;
        let (cgroup, cgroup_error) = match RunGroup::create(plan.memory, plan.processes) {
            Ok(g) => (Some(g), None),
            Err(e) => {
                tracing::debug!("no cgroup for this run's programs: {e}");
                (None, Some(e.to_string()))
            }
        };
        let (host, jail) = UnixStream::pair()?;
        let mut cmd = Command::new(&binary);
        cmd.arg0(JAIL_BINARY)
            .env_clear()
            .stdin(Stdio::from(OwnedFd::from(jail)))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let outer = launch(cmd)
            .map_err(|e| io::Error::new(e.kind(), format!("starting {}: {e}", binary.display())))?;
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_child(&outer),
            rustix::process::PidfdFlags::empty(),
        )?;
        let mut jail = Jail {
            sock: host,
            outer,
            pidfd: Arc::new(pidfd),
            status: SandboxStatus::default(),
            cgroup: None,
        };
        let setup = Setup {
            host_pid: std::process::id(),
            dirs: plan.dirs.clone(),
            cgroups: cgroup
                .as_ref()
                .map(RunGroup::procs_files)
                .unwrap_or_default(),
            memory_rlimit: cgroup.is_none().then_some(plan.memory),
            umask: plan.umask,
        };
        wire::send(&jail.sock, &setup, &[])?;
        jail.sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        let ready = wire::recv::<Ready>(&jail.sock)?;
        jail.sock.set_read_timeout(None)?;
        let applied = match ready {
            Some((Ok(a), _)) => a,
            Some((Err(e), _)) => {
                return Err(io::Error::other(format!(
                    "the sandbox could not confine itself: {e}"
                )));
            }
            None => {
                return Err(io::Error::other(
                    "the sandbox helper exited before confining itself",
                ));
            }
        };
        jail.status = SandboxStatus::from_applied(
            &applied,
            cgroup
                .as_ref()
                .map(RunGroup::layout)
                .ok_or_else(|| cgroup_error.unwrap_or_default()),
        );
        jail.cgroup = cgroup;
        Ok(jail)
    }

    fn call(&mut self, call: &Call, stdio: [OwnedFd; 3]) -> io::Result<Done> {
        let fds: Vec<_> = stdio.iter().map(|f| f.as_fd()).collect();
        wire::send(&self.sock, call, &fds)?;
        // The program has its own copies now; ours must close so that its
        // reader sees the end of its output.
        drop(stdio);
        match wire::recv::<Done>(&self.sock)? {
            Some((done, _)) => Ok(done),
            None => Err(io::Error::other("the sandbox ended during the call")),
        }
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        // The init of the run's namespace dies with its parent, and every
        // process of the namespace with it.
        let _ = self.outer.kill();
        let _ = self.outer.wait();
    }
}

/// How a call through the jail ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The jail's report.
    pub done: Done,
    /// Whether the kernel killed one of the run's programs for memory
    /// during the call.
    pub out_of_memory: bool,
}

/// The exec sandbox of one run.
pub struct Sandbox {
    plan: Option<Plan>,
    jail: Arc<Mutex<Option<Jail>>>,
    /// The running jail, to kill from outside a call in progress.
    current: Arc<Mutex<Option<Arc<OwnedFd>>>>,
    /// What the run's jail reported, once it started.
    started: Arc<Mutex<Option<SandboxStatus>>>,
}

impl Sandbox {
    /// The sandbox for `policy`'s granted directories and limits. Nothing
    /// starts until the first call.
    pub fn for_policy(policy: &EffectivePolicy) -> Sandbox {
        let dirs = policy
            .preopens
            .iter()
            .filter_map(|p| {
                let host = p.host.canonicalize().ok()?;
                Some((host, p.access == Access::ReadWrite))
            })
            .collect();
        Sandbox {
            plan: Some(Plan {
                dirs,
                memory: policy.limits.memory,
                processes: DEFAULT_PROCESSES,
                umask: crate::caller::umask(),
            }),
            jail: Arc::default(),
            current: Arc::default(),
            started: Arc::default(),
        }
    }

    /// A sandbox that starts nothing: for runs that may exec nothing.
    pub fn none() -> Sandbox {
        Sandbox {
            plan: None,
            jail: Arc::default(),
            current: Arc::default(),
            started: Arc::default(),
        }
    }

    /// The confinement the run's programs got; `None` until the first call
    /// started the jail.
    pub fn status(&self) -> Option<SandboxStatus> {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `call` in the jail with `stdio` as its stdin, stdout and
    /// stderr, and waits for it. Calls of one sandbox run one at a time.
    /// Dropping the future kills the jail and everything in it (the next
    /// call starts a new one).
    pub async fn run(&self, call: Call, stdio: [OwnedFd; 3]) -> io::Result<Finished> {
        let Some(plan) = self.plan.clone() else {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "this run may not exec",
            ));
        };
        let (jail, current, started) = (
            self.jail.clone(),
            self.current.clone(),
            self.started.clone(),
        );
        let mut guard = KillOnDrop(Some(self.current.clone()));
        let result = tokio::task::spawn_blocking(move || {
            let mut slot = jail.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                let j = Jail::start(&plan)?;
                *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(j.pidfd.clone());
                *started.lock().unwrap_or_else(|e| e.into_inner()) = Some(j.status.clone());
                *slot = Some(j);
            }
            let j = slot.as_mut().expect("started above");
            let ooms = j.cgroup.as_ref().map(RunGroup::oom_kills);
            let result = j.call(&call, stdio);
            let out_of_memory =
                ooms.is_some_and(|n| j.cgroup.as_ref().map(RunGroup::oom_kills) > Some(n));
            match result {
                Ok(done) => Ok(Finished {
                    done,
                    out_of_memory,
                }),
                Err(e) => {
                    // A jail that failed a call is not reused.
                    *current.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    *slot = None;
                    Err(if out_of_memory {
                        io::Error::other(format!(
                            "the run's programs went over the memory limit and their sandbox was killed ({e})"
                        ))
                    } else {
                        e
                    })
                }
            }
        })
        .await
        .map_err(|e| io::Error::other(format!("the exec call's thread failed: {e}")))?;
        guard.0 = None;
        result
    }

    /// Kills the jail and everything in it now.
    pub fn kill(&self) {
        kill_jail(&self.current);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        kill_jail(&self.current);
    }
}

fn kill_jail(current: &Mutex<Option<Arc<OwnedFd>>>) {
    if let Some(pidfd) = current.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        // A pidfd names the process even if it was reaped meanwhile: no
        // other process can be hit.
        let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
    }
}

/// Kills the jail if a call's future is dropped before it finished.
struct KillOnDrop(Option<Arc<Mutex<Option<Arc<OwnedFd>>>>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(current) = &self.0 {
            kill_jail(current);
        }
    }
}
