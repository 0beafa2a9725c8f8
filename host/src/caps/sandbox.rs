//! Confinement of programs that `exec` starts, with Linux Landlock.
//!
//! A granted program runs with the host's uid, so without more it could
//! read anything that uid can. Before the program is executed, its process
//! restricts itself to: read+execute on the system directories it needs to
//! load (`/usr`, `/bin`, `/lib*`, `/sbin`), a handful of device files, the
//! dynamic loader's cache, and the run's granted directories with the run's
//! access (read-only dirs without execute, read-write dirs without execute).
//! On Landlock ABI ≥ 4 it also cannot bind or connect TCP sockets at all.
//!
//! Landlock and `no_new_privs` are attributes of a *thread*, inherited by
//! the processes it creates. So each run that may exec gets one spawner
//! thread that confines itself once and then starts every program of the
//! run with `posix_spawn` (a `vfork`-style spawn): the programs inherit the
//! confinement, the host's other threads stay unconfined, and no `fork` of
//! the large host process is needed (with wasmtime's pooling allocator a
//! `fork` was measured at 2.5–5.5 ms per call, against ~1.3× a native
//! spawn for this path: `cargo bench --bench suite`, "host-mediated exec").
//!
//! Where the kernel lacks Landlock, programs run unconfined and
//! [`SandboxStatus`] says so; `skillbox inspect` shows it.
//!
//! Descriptors: every descriptor the host opens is close-on-exec (Rust's
//! standard library, tokio, cap-std and wasmtime all open with `O_CLOEXEC`),
//! so a program inherits only its own stdin, stdout and stderr.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr,
};
use serde::Serialize;

use crate::policy::{Access as DirAccess, EffectivePolicy};

/// The newest Landlock ABI this host knows how to use.
const TARGET_ABI: ABI = ABI::V5;

const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32"];
const READ_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
];
const RW_FILES: &[&str] = &["/dev/null"];

/// How far exec'd programs are confined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum SandboxStatus {
    /// Filesystem and TCP confined.
    Enforced {
        /// The kernel's Landlock ABI version.
        abi: i32,
    },
    /// Filesystem confined; TCP not (kernel ABI < 4).
    FilesystemOnly {
        /// The kernel's Landlock ABI version.
        abi: i32,
    },
    /// Not confined: the kernel has no Landlock.
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SandboxStatus::Enforced { abi } => write!(
                f,
                "Landlock ABI {abi}: exec'd programs see only system dirs and granted dirs, no TCP"
            ),
            SandboxStatus::FilesystemOnly { abi } => write!(
                f,
                "Landlock ABI {abi}: exec'd programs see only system dirs and granted dirs; \
                 TCP is NOT confined (needs ABI 4)"
            ),
            SandboxStatus::Unavailable { reason } => write!(
                f,
                "Landlock unavailable ({reason}): exec'd programs are NOT confined to granted dirs"
            ),
        }
    }
}

/// The kernel's Landlock ABI version, or the errno explaining its absence.
pub fn kernel_abi() -> Result<i32, std::io::Error> {
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
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as i32)
    }
}

/// The current confinement level of this kernel.
pub fn status() -> SandboxStatus {
    match kernel_abi() {
        Ok(abi) if abi >= 4 => SandboxStatus::Enforced { abi },
        Ok(abi) if abi >= 1 => SandboxStatus::FilesystemOnly { abi },
        Ok(abi) => SandboxStatus::Unavailable {
            reason: format!("ABI {abi}"),
        },
        Err(e) => SandboxStatus::Unavailable {
            reason: e.to_string(),
        },
    }
}

type SpawnReply = tokio::sync::oneshot::Sender<std::io::Result<std::process::Child>>;

/// Starts the programs of one run, confined.
pub struct Sandbox {
    spawner: Option<std::sync::mpsc::Sender<(std::process::Command, SpawnReply)>>,
    /// The confinement this sandbox gives.
    pub status: SandboxStatus,
}

impl Sandbox {
    /// Builds the ruleset for `policy`'s granted directories and starts the
    /// confined spawner thread.
    pub fn for_policy(policy: &EffectivePolicy) -> Sandbox {
        let status = status();
        if matches!(status, SandboxStatus::Unavailable { .. }) {
            return Sandbox {
                spawner: None,
                status,
            };
        }
        let ruleset = match build(policy) {
            Ok(Some(fd)) => fd,
            Ok(None) => {
                return Sandbox::unconfined("the kernel refused to create a ruleset".into());
            }
            Err(e) => return Sandbox::unconfined(format!("building the ruleset failed: {e}")),
        };
        let (tx, rx) = std::sync::mpsc::channel::<(std::process::Command, SpawnReply)>();
        let spawned = std::thread::Builder::new()
            .name("skillbox-exec".into())
            .spawn(move || {
                // SAFETY: confines this thread only; it exists for this.
                let confined = unsafe { confine_current_thread(ruleset.as_raw_fd()) };
                drop(ruleset);
                for (mut cmd, reply) in rx {
                    let result = match &confined {
                        Ok(()) => cmd.spawn(),
                        Err(e) => Err(std::io::Error::new(
                            e.kind(),
                            format!(
                                "cannot confine the program (refusing to run it unconfined): {e}"
                            ),
                        )),
                    };
                    let _ = reply.send(result);
                }
            });
        match spawned {
            Ok(_) => Sandbox {
                spawner: Some(tx),
                status,
            },
            Err(e) => Sandbox::unconfined(format!("cannot start the spawner thread: {e}")),
        }
    }

    /// No confinement: programs start from the calling thread as they are.
    /// For runs that may exec nothing, and for measurements.
    pub fn none() -> Sandbox {
        Sandbox {
            spawner: None,
            status: status(),
        }
    }

    fn unconfined(reason: String) -> Sandbox {
        Sandbox {
            spawner: None,
            status: SandboxStatus::Unavailable { reason },
        }
    }

    /// Starts `cmd` (from the confined thread, when there is one).
    pub async fn spawn(
        &self,
        mut cmd: std::process::Command,
    ) -> std::io::Result<std::process::Child> {
        let Some(tx) = &self.spawner else {
            return cmd.spawn();
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || std::io::Error::other("the exec spawner thread is gone");
        tx.send((cmd, reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn build(policy: &EffectivePolicy) -> Result<Option<OwnedFd>, Box<dyn std::error::Error>> {
    let all = AccessFs::from_all(TARGET_ABI);
    let read_exec = AccessFs::from_read(TARGET_ABI);
    let read_data: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::ReadDir;
    let write_data = all & !AccessFs::Execute;
    let mut rules: Vec<(&Path, BitFlags<AccessFs>)> = Vec::new();
    rules.extend(SYSTEM_DIRS.iter().map(|d| (Path::new(*d), read_exec)));
    rules.extend(
        READ_FILES
            .iter()
            .map(|f| (Path::new(*f), BitFlags::from(AccessFs::ReadFile))),
    );
    rules.extend(
        RW_FILES
            .iter()
            .map(|f| (Path::new(*f), AccessFs::ReadFile | AccessFs::WriteFile)),
    );
    for p in &policy.preopens {
        let access = match p.access {
            DirAccess::Read => read_data,
            DirAccess::ReadWrite => write_data,
        };
        rules.push((p.host.as_path(), access));
    }
    let mut rs = Ruleset::default()
        .handle_access(all)?
        .handle_access(AccessNet::from_all(TARGET_ABI))?
        .create()?;
    for (path, access) in rules {
        // Missing system paths (no /lib32 here) are fine; granted ones were
        // checked when the preopens were made.
        if let Ok(fd) = PathFd::new(path) {
            let access = if path.is_dir() {
                access
            } else {
                access & AccessFs::from_file(TARGET_ABI)
            };
            rs = rs.add_rule(PathBeneath::new(fd, access))?;
        }
    }
    Ok(rs.into())
}

/// Sets `no_new_privs` (required by Landlock; also stops setuid programs
/// from regaining privileges) and enforces the ruleset on the calling
/// thread, and so on every process it starts from now on.
///
/// # Safety
/// Confines the calling thread for good: call it only on a thread that
/// exists to start confined programs.
unsafe fn confine_current_thread(ruleset: i32) -> std::io::Result<()> {
    // SAFETY: plain syscalls with constant or validated arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
