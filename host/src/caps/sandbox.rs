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
//! The ruleset is built once per run in the host; the child only makes two
//! raw syscalls after `fork` (`prctl(NO_NEW_PRIVS)`, `landlock_restrict_self`),
//! which are async-signal-safe. Where the kernel lacks Landlock, programs run
//! unconfined and [`SandboxStatus`] says so; `skillbox inspect` shows it.

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

/// A ready ruleset for the programs of one run.
pub struct Sandbox {
    pub(crate) ruleset: Option<OwnedFd>,
    /// The confinement this sandbox gives.
    pub status: SandboxStatus,
}

impl Sandbox {
    /// Builds the ruleset for `policy`'s granted directories. `preopens`
    /// holds their canonical host paths.
    pub fn for_policy(policy: &EffectivePolicy) -> Sandbox {
        let status = status();
        if matches!(status, SandboxStatus::Unavailable { .. }) {
            return Sandbox {
                ruleset: None,
                status,
            };
        }
        match build(policy) {
            Ok(fd) => Sandbox {
                ruleset: fd,
                status,
            },
            Err(e) => Sandbox {
                ruleset: None,
                status: SandboxStatus::Unavailable {
                    reason: format!("building the ruleset failed: {e}"),
                },
            },
        }
    }

    /// No ruleset: programs run unconfined (for measurements and for runs
    /// that can exec nothing).
    pub fn none() -> Sandbox {
        Sandbox {
            ruleset: None,
            status: status(),
        }
    }

    /// The raw ruleset fd to pass to [`restrict_self_in_child`].
    pub fn raw_fd(&self) -> Option<i32> {
        self.ruleset.as_ref().map(|f| f.as_raw_fd())
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

/// Runs in the forked child before `execve`: no allocation, raw syscalls
/// only. Sets `NO_NEW_PRIVS` (required by Landlock, and stops setuid
/// binaries from regaining privileges), enforces the ruleset, and marks every
/// inherited descriptor above stderr close-on-exec.
///
/// # Safety
/// Must only be called in a freshly forked child (e.g. from `pre_exec`).
pub unsafe fn restrict_self_in_child(ruleset: Option<i32>) -> std::io::Result<()> {
    // SAFETY: plain syscalls with constant or validated arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(fd) = ruleset
            && libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // Best effort: kernels before 5.11 lack CLOSE_RANGE_CLOEXEC.
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    Ok(())
}
