//! The jail: the process every program of one run starts from
//! (`skillbox-jail`, started by [`super::Sandbox`]; never by hand).
//!
//! It runs as two processes. The outer one joins the run's cgroups, makes
//! a PID namespace and forks the inner one, which is that namespace's
//! init, then only waits. The inner one confines itself for good — no
//! capabilities (bounding set included), `no_new_privs`, Landlock, the
//! seccomp filter — and then serves the host: for each call it starts the
//! program (which inherits all of it), waits for it, kills everything the
//! call left behind (`kill(-1)` from the namespace's init reaches every
//! process in the namespace and nothing outside it) and reports the exit
//! status.
//!
//! Both processes die with the host: each has `PR_SET_PDEATHSIG` = SIGKILL
//! on its parent, and when the init dies the kernel kills every process
//! in its namespace, including ones that called `setsid` or double-forked.
//!
//! Descriptors: the host's socket becomes fd 3, 0–2 are `/dev/null`, and
//! every other descriptor the jail may have inherited from the host's own
//! parent is closed before anything else happens.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

use super::wire::{self, Applied, Call, Done, Ready, Setup};

const SOCK: RawFd = 3;

/// The entry point of the `skillbox-jail` binary.
pub fn main() -> ! {
    let code = match serve() {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "skillbox-jail: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn serve() -> Result<(), String> {
    // SAFETY: plain prctl; the jail must not outlive the thread that
    // started it (the host's long-lived launcher thread).
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let sock = take_descriptors()?;
    let Some((setup, _)) = wire::recv::<Setup>(&sock).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    // The host may have died before the death signal was armed.
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } as u32 != setup.host_pid {
        return Ok(());
    }
    let refuse = |m: String| {
        let _ = wire::send(&sock, &Ready::Err(m.clone()), &[]);
        m
    };
    if let Some(mask) = setup.umask {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask & 0o777));
    }
    for procs in &setup.cgroups {
        std::fs::write(procs, "0")
            .map_err(|e| refuse(format!("joining {}: {e}", procs.display())))?;
    }
    let pid_namespace = enter_pid_namespace();
    // The inner process cannot see the outer one from its namespace: this
    // pipe's write end closes when the outer one dies.
    let (alive_r, alive_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| refuse(e.to_string()))?;
    // SAFETY: the jail is single-threaded, so the child may do anything.
    match unsafe { libc::fork() } {
        -1 => Err(refuse(os_err("fork"))),
        0 => {
            drop(alive_w);
            inner(sock, setup, alive_r, pid_namespace)
        }
        init => {
            drop((sock, alive_r));
            wait_for(init);
            drop(alive_w);
            Ok(())
        }
    }
}

/// Moves the host's socket (stdin) to fd 3, points 0–2 at `/dev/null`
/// and closes everything else.
fn take_descriptors() -> Result<UnixStream, String> {
    // SAFETY: descriptor shuffling on a single-threaded process that owns
    // all its descriptors; errors are checked.
    unsafe {
        if libc::dup2(0, SOCK) != SOCK {
            return Err(os_err("dup2"));
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0 {
            return Err(os_err("/dev/null"));
        }
        for fd in 0..3 {
            if fd != null && libc::dup2(null, fd) != fd {
                return Err(os_err("dup2"));
            }
        }
        if null > 2 {
            libc::close(null);
        }
        if libc::syscall(libc::SYS_close_range, SOCK + 1, u32::MAX, 0) != 0 {
            return Err(os_err("close_range"));
        }
        if libc::fcntl(SOCK, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
            return Err(os_err("fcntl"));
        }
        Ok(UnixStream::from_raw_fd(SOCK))
    }
}

/// A new PID namespace for the next child: directly as root, else inside
/// a user namespace mapping our own ids to themselves.
fn enter_pid_namespace() -> bool {
    // SAFETY: plain syscalls on a single-threaded process.
    unsafe {
        if libc::unshare(libc::CLONE_NEWPID) == 0 {
            return true;
        }
        let (uid, gid) = (libc::geteuid(), libc::getegid());
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID) != 0 {
            return false;
        }
        std::fs::write("/proc/self/setgroups", "deny").is_ok()
            && std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1")).is_ok()
            && std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1")).is_ok()
    }
}

fn wait_for(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
}

fn inner(sock: UnixStream, setup: Setup, outer_alive: OwnedFd, pid_namespace: bool) -> ! {
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // Armed; but the outer process may have died before that.
    let mut fds = [rustix::event::PollFd::new(
        &outer_alive,
        rustix::event::PollFlags::IN,
    )];
    if rustix::event::poll(&mut fds, Some(&rustix::time::Timespec::default())).is_ok()
        && fds[0].revents().contains(rustix::event::PollFlags::HUP)
    {
        std::process::exit(0);
    }
    drop(outer_alive);
    let code = match confine(&setup, pid_namespace) {
        Ok(applied) => {
            if wire::send(&sock, &Ready::Ok(applied), &[]).is_ok() {
                calls(&sock, pid_namespace);
            }
            0
        }
        Err(e) => {
            let _ = wire::send(&sock, &Ready::Err(e), &[]);
            1
        }
    };
    std::process::exit(code)
}

fn confine(setup: &Setup, pid_namespace: bool) -> Result<Applied, String> {
    set_rlimit(libc::RLIMIT_CORE, 0)?;
    if let Some(bytes) = setup.memory_rlimit {
        set_rlimit(libc::RLIMIT_AS, bytes)?;
    }
    let capabilities_dropped = drop_capabilities()?;
    // SAFETY: plain prctl; also what Landlock and seccomp require.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(os_err("no_new_privs"));
    }
    let landlock = super::landlock::restrict_self(&setup.dirs)?;
    super::seccomp::install()?;
    Ok(Applied {
        landlock: landlock.abi,
        landlock_scoped: landlock.scoped,
        seccomp: true,
        pid_namespace,
        capabilities_dropped,
    })
}

fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> Result<(), String> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(os_err("setrlimit"));
    }
    Ok(())
}

const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;

/// Drops every capability: the bounding set (so that no program regains
/// one by executing a file, root's or setuid), ambient, inheritable,
/// permitted and effective; and tells the kernel that uid 0 is not
/// special on exec. Returns whether the bounding set could be emptied
/// (an unprivileged host has nothing to drop there but cannot say so).
fn drop_capabilities() -> Result<bool, String> {
    use caps::CapSet;
    // SAFETY: plain prctls with constant arguments; failures are checked
    // where they matter (an unprivileged host cannot set securebits or
    // shrink the bounding set, and has no capabilities to lose either).
    let bounding_emptied = unsafe {
        libc::prctl(
            libc::PR_SET_SECUREBITS,
            SECBIT_NOROOT
                | SECBIT_NOROOT_LOCKED
                | SECBIT_NO_CAP_AMBIENT_RAISE
                | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
        );
        let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<libc::c_ulong>().ok())
            .unwrap_or(63);
        let mut all = true;
        for cap in 0..=last {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                all = false;
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        all
    };
    for set in [CapSet::Inheritable, CapSet::Permitted, CapSet::Effective] {
        caps::clear(None, set).map_err(|e| format!("dropping capabilities: {e}"))?;
    }
    let left = caps::read(None, CapSet::Permitted).map_err(|e| e.to_string())?;
    if !left.is_empty() {
        return Err(format!("capabilities remain after dropping: {left:?}"));
    }
    Ok(bounding_emptied)
}

fn calls(sock: &UnixStream, pid_namespace: bool) {
    while let Ok(Some((call, fds))) = wire::recv::<Call>(sock) {
        let done = run(call, fds, pid_namespace);
        if wire::send(sock, &done, &[]).is_err() {
            return;
        }
    }
}

fn run(call: Call, fds: Vec<OwnedFd>, pid_namespace: bool) -> Done {
    let Ok([stdin, stdout, stderr]) = <[OwnedFd; 3]>::try_from(fds) else {
        return Done::Failed("a call must carry stdin, stdout and stderr".into());
    };
    let mut cmd = Command::new(&call.program);
    cmd.args(&call.args)
        .env_clear()
        .envs(call.env)
        .current_dir(&call.cwd)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .process_group(0);
    let spawned = cmd.spawn();
    // Our copies of the program's pipes must close, or its reader never
    // sees the end.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Done::NotFound(call.program.display().to_string());
        }
        Err(e) => return Done::Failed(format!("cannot start {}: {e}", call.program.display())),
    };
    let status = child.wait();
    // Whatever the call left behind goes with it: every other process of
    // the namespace (this is its init), or at least the program's group.
    // SAFETY: signals within the jail's own namespace or process group.
    unsafe {
        if pid_namespace {
            libc::kill(-1, libc::SIGKILL);
            let mut st = 0;
            while libc::waitpid(-1, &mut st, 0) > 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
        } else {
            libc::killpg(child.id() as i32, libc::SIGKILL);
        }
    }
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Done::Exited(c),
            (None, Some(sig)) => Done::Signaled(sig),
            _ => Done::Failed("the program ended without a status".into()),
        },
        Err(e) => Done::Failed(format!("waiting for {}: {e}", call.program.display())),
    }
}
