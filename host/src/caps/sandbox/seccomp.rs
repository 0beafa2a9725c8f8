//! The seccomp filter of a run's programs: a list of refused system calls
//! (everything else is allowed, so that any granted program works).
//!
//! Refused with `EPERM`: creating sockets of any family (no TCP, UDP, Unix
//! socket — pathname or abstract — netlink or raw socket can be made;
//! `socketpair` stays, it reaches nothing), io_uring (it can open sockets
//! and files outside this filter's view), tracing and reading other
//! processes, namespaces and mounts, device nodes, kernel keyrings, BPF,
//! perf events, userfaultfd, the kernel log, modules, reboot, clocks, and
//! terminal input injection. `clone3` answers `ENOSYS`, so that the C
//! library falls back to `clone`, whose namespace flags this filter can
//! see. Calls of another architecture's ABI (i386 on x86_64) kill the
//! process; on x86_64 the x32 ABI is refused as a whole.
//!
//! The filter is built with `seccompiler` (the rust-vmm crate Firecracker
//! uses); the x32 guard is five instructions of its own, because
//! seccompiler's rules are per system call number.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// System calls refused whatever their arguments.
fn refused() -> Vec<i64> {
    use libc::*;
    let mut v = vec![
        SYS_socket,
        SYS_io_uring_setup,
        SYS_io_uring_enter,
        SYS_io_uring_register,
        SYS_ptrace,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_pidfd_getfd,
        SYS_kcmp,
        SYS_bpf,
        SYS_perf_event_open,
        SYS_userfaultfd,
        SYS_keyctl,
        SYS_add_key,
        SYS_request_key,
        SYS_mount,
        SYS_umount2,
        SYS_pivot_root,
        SYS_chroot,
        SYS_move_mount,
        SYS_open_tree,
        SYS_fsopen,
        SYS_fsconfig,
        SYS_fsmount,
        SYS_fspick,
        SYS_mount_setattr,
        SYS_unshare,
        SYS_setns,
        SYS_kexec_load,
        SYS_kexec_file_load,
        SYS_init_module,
        SYS_finit_module,
        SYS_delete_module,
        SYS_reboot,
        SYS_swapon,
        SYS_swapoff,
        SYS_acct,
        SYS_syslog,
        SYS_settimeofday,
        SYS_clock_settime,
        SYS_clock_adjtime,
        SYS_adjtimex,
        SYS_sethostname,
        SYS_setdomainname,
        SYS_quotactl,
        SYS_open_by_handle_at,
        SYS_name_to_handle_at,
        SYS_vhangup,
        SYS_fanotify_init,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([SYS_iopl, SYS_ioperm]);
    v
}

const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
];

// `c_ulong` is `u64` only on 64-bit targets.
#[allow(clippy::unnecessary_cast)]
const TERMINAL_INJECTION: &[u64] = &[libc::TIOCSTI as u64, libc::TIOCLINUX as u64];

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).expect("valid condition")
}

/// The filter refusing with `EPERM`.
fn eperm_filter(arch: TargetArch) -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in refused() {
        rules.insert(nr, Vec::new());
    }
    let flags = |arg: u8| -> Vec<SeccompRule> {
        NAMESPACE_FLAGS
            .iter()
            .map(|f| SeccompRule::new(vec![cond(arg, SeccompCmpOp::MaskedEq(*f), *f)]).unwrap())
            .collect()
    };
    rules.insert(libc::SYS_clone, flags(0));
    // Character and block devices; FIFOs and sockets are left to Landlock.
    let devices = |arg: u8| -> Vec<SeccompRule> {
        [libc::S_IFCHR, libc::S_IFBLK]
            .iter()
            .map(|t| {
                SeccompRule::new(vec![cond(
                    arg,
                    SeccompCmpOp::MaskedEq(libc::S_IFMT as u64),
                    *t as u64,
                )])
                .unwrap()
            })
            .collect()
    };
    rules.insert(libc::SYS_mknodat, devices(2));
    rules.insert(
        libc::SYS_ioctl,
        TERMINAL_INJECTION
            .iter()
            .map(|r| {
                SeccompRule::new(vec![
                    SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *r)
                        .unwrap(),
                ])
                .unwrap()
            })
            .collect(),
    );
    #[cfg(target_arch = "x86_64")]
    rules.insert(libc::SYS_mknod, devices(1));
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    BpfProgram::try_from(filter).map_err(|e| e.to_string())
}

/// `clone3` passes its flags in memory a filter cannot read: refuse it as
/// unknown, and the C library uses `clone`.
fn enosys_filter(arch: TargetArch) -> Result<BpfProgram, String> {
    let rules = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    BpfProgram::try_from(filter).map_err(|e| e.to_string())
}

/// x86_64's x32 ABI numbers its calls from bit 30 up; this filter's rules
/// are for the native numbers, so x32 calls are refused as a whole.
#[cfg(target_arch = "x86_64")]
fn x32_guard() -> BpfProgram {
    use seccompiler::sock_filter;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        // nr is the first field of struct seccomp_data.
        ins(LD_W_ABS, 0, 0, 0),
        ins(JGE_K, 0, 1, X32_SYSCALL_BIT),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Installs the filters on the calling thread (inherited by every process
/// it starts). `no_new_privs` must be set already.
pub fn install() -> Result<(), String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let mut programs = vec![eperm_filter(arch)?, enosys_filter(arch)?];
    #[cfg(target_arch = "x86_64")]
    programs.push(x32_guard());
    for p in &programs {
        seccompiler::apply_filter(p).map_err(|e| format!("installing the seccomp filter: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_this_architecture() {
        let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
        assert!(eperm_filter(arch).unwrap().len() > refused().len());
        assert!(!enosys_filter(arch).unwrap().is_empty());
    }
}
