//! The Landlock domain of a run's programs: read+execute on the system
//! directories programs load from, a few device files, and the run's
//! granted directories with the run's access — never execute there, never
//! device nodes, FIFOs or sockets made there, never device `ioctl`s. TCP
//! bind and connect are refused outright (ABI ≥ 4), and signals and
//! abstract Unix sockets cannot cross the domain (ABI ≥ 6).

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

/// The newest Landlock ABI skillbox uses.
pub const TARGET_ABI: ABI = ABI::V6;

const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32"];
const READ_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
];
const RW_FILES: &[&str] = &["/dev/null"];

/// Rights on a read-only grant: read files, list directories.
pub fn read_rights() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

/// Rights on a read-write grant: everything but execute, making device
/// nodes, FIFOs and sockets, and device `ioctl`s.
pub fn write_rights() -> BitFlags<AccessFs> {
    AccessFs::from_all(TARGET_ABI)
        & !(AccessFs::Execute
            | AccessFs::MakeChar
            | AccessFs::MakeBlock
            | AccessFs::MakeFifo
            | AccessFs::MakeSock
            | AccessFs::IoctlDev)
}

/// What got enforced.
pub struct Enforced {
    /// The kernel's ABI, when the domain is in force.
    pub abi: Option<i32>,
    /// Whether signals and abstract sockets are scoped.
    pub scoped: bool,
}

/// Confines the calling thread (and everything it starts) to `dirs`
/// (`(host path, writable)`). Sets `no_new_privs`.
pub fn restrict_self(dirs: &[(PathBuf, bool)]) -> Result<Enforced, String> {
    let abi = super::kernel_abi().ok();
    let all = AccessFs::from_all(TARGET_ABI);
    let mut rules: Vec<(&Path, BitFlags<AccessFs>)> = Vec::new();
    rules.extend(
        SYSTEM_DIRS
            .iter()
            .map(|d| (Path::new(*d), AccessFs::from_read(TARGET_ABI))),
    );
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
    for (path, writable) in dirs {
        rules.push((
            path.as_path(),
            if *writable {
                write_rights()
            } else {
                read_rights()
            },
        ));
    }
    let e = |e: landlock::RulesetError| e.to_string();
    let ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .map_err(e)?
        .handle_access(AccessNet::from_all(TARGET_ABI))
        .map_err(e)?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(e)?;
    let mut created = ruleset.create().map_err(e)?;
    for (path, access) in rules {
        // Missing system paths (no /lib32 here) are fine; granted ones were
        // checked when the run started.
        if let Ok(fd) = PathFd::new(path) {
            let access = if path.is_dir() {
                access
            } else {
                access & AccessFs::from_file(TARGET_ABI)
            };
            created = created.add_rule(PathBeneath::new(fd, access)).map_err(e)?;
        }
    }
    let status = created.restrict_self().map_err(e)?;
    Ok(match status.ruleset {
        RulesetStatus::NotEnforced => Enforced {
            abi: None,
            scoped: false,
        },
        _ => Enforced {
            abi,
            scoped: abi.is_some_and(|a| a >= 6),
        },
    })
}
