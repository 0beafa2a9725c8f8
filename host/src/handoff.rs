//! Handing `skillbox run` to a running daemon.
//!
//! A whole `skillbox` process costs milliseconds before it does anything:
//! the dynamic linker relocates a large position-independent binary (about
//! a hundred thousand relocations, each page of them touched), and the
//! engine, linker and async runtime are set up. A daemon has paid all of
//! that once. So the `skillbox` a user runs is a small front end
//! ([`front_main`]), and the full command line is `skillbox-host` beside
//! it:
//!
//! - for `skillbox run …`, the front end connects to the daemon's *run
//!   server* (`DATA-DIR/run.sock`, started by `skillbox serve`) and sends
//!   its arguments, environment, umask, working directory and standard
//!   streams (as file descriptors). The run server, a single-threaded
//!   process that has already loaded `skillbox-host`, forks; the child
//!   takes on the client's working directory, environment, umask and
//!   streams and runs the very same command line code as an in-process
//!   run, so output, `--json` and exit codes are those of a run in the
//!   client's own process. The child's exit status (or the signal that
//!   ended it) goes back to the front end, which exits with it; signals
//!   the front end receives (INT, TERM, HUP, QUIT) are passed on.
//! - for anything else, or when no run server answers, or it runs another
//!   build of `skillbox-host` than the one beside the front end, the
//!   front end `exec`s `skillbox-host` with the same arguments.
//!
//! `SKILLBOX_RUN_VIA` chooses: `auto` (the default), `daemon` (fail with
//! exit code 8 when no run server takes the run) or `process` (never hand
//! off).
//!
//! A run handed off runs as the daemon's user (the run server accepts
//! only connections from its own user; the socket is mode 0600), in the
//! daemon's process tree: its cgroup, resource limits and supplementary
//! groups apply rather than the calling shell's. A caller that confines
//! itself (e.g. with Landlock) and must keep its runs inside that
//! confinement sets `SKILLBOX_RUN_VIA=process`.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};

/// The run server's socket, in the daemon's data directory.
pub const SOCKET: &str = "run.sock";
/// The full command line, installed beside the `skillbox` front end.
pub const HOST_BINARY: &str = "skillbox-host";
/// Chooses where `skillbox run` runs: `auto`, `daemon` or `process`.
pub const VIA_ENV: &str = "SKILLBOX_RUN_VIA";

/// Opens a request; the number is the protocol's version.
const MAGIC: &[u8; 8] = b"SKBRUN1\n";
/// The largest request taken (arguments and environment).
const MAX_REQUEST: usize = 4 << 20;
/// The run server took the run: the child is started.
const ACCEPTED: u8 = b'A';
/// The run server did not take the run; a reason follows.
const DECLINED: u8 = b'D';
/// The run ended with an exit code (an i32 follows).
const EXITED: u8 = b'X';
/// The run was ended by a signal (an i32 follows).
const SIGNALLED: u8 = b'S';
/// From a child to the server: it has told the front end its exit code,
/// so the front end's going away is not the caller abandoning the run.
const REPORTED: u8 = b'R';
/// The exit code for "no daemon took the run" (the CLI's `UNREACHABLE`).
const UNREACHABLE: i32 = 8;

/// The signals the front end passes on to a handed-off run.
const FORWARDED: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Where a `skillbox run` runs (`SKILLBOX_RUN_VIA`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A daemon's run server when one answers, else this process.
    Auto,
    /// A daemon's run server, or an error.
    Daemon,
    /// Always this process.
    Process,
}

impl Via {
    /// `SKILLBOX_RUN_VIA`'s value; unset or empty is `Auto`.
    pub fn from_env() -> Result<Via, String> {
        match std::env::var_os(VIA_ENV) {
            None => Ok(Via::Auto),
            Some(v) => match v.to_str() {
                Some("" | "auto") => Ok(Via::Auto),
                Some("daemon") => Ok(Via::Daemon),
                Some("process") => Ok(Via::Process),
                _ => Err(format!(
                    "{VIA_ENV}={} is not one of auto, daemon, process",
                    v.to_string_lossy()
                )),
            },
        }
    }
}

/// The path of the run server socket for a daemon's data directory.
pub fn socket_in(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// What identifies a build of `skillbox-host` on disk: its device and
/// inode. A reinstalled binary is a new file, so a daemon started before
/// an upgrade declines runs of the new front end.
fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

// ---------------------------------------------------------------------
// The front end.

/// `main` of the `skillbox` front end: hands `skillbox run` to a daemon's
/// run server, and `exec`s `skillbox-host` for everything else.
pub fn front_main() -> ! {
    let args: Vec<OsString> = std::env::args_os().collect();
    let host = match host_binary() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if args.get(1).map(OsString::as_os_str) == Some(OsStr::new("run")) {
        let via = match Via::from_env() {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        };
        if via != Via::Process {
            match hand_off(&host, &args) {
                Ok(end) => end.finish(),
                Err(HandOff::Lost(why)) => {
                    eprintln!("error: {why}");
                    std::process::exit(UNREACHABLE);
                }
                Err(HandOff::NotTaken(why)) if via == Via::Daemon => {
                    eprintln!("error: no daemon took the run ({VIA_ENV}=daemon): {why}");
                    std::process::exit(UNREACHABLE);
                }
                Err(HandOff::NotTaken(_)) => {}
            }
        }
    }
    let mut cmd = std::process::Command::new(&host);
    if let Some(arg0) = args.first() {
        cmd.arg0(arg0);
    }
    let err = cmd.args(args.iter().skip(1)).exec();
    eprintln!("error: cannot start {}: {err}", host.display());
    std::process::exit(1)
}

/// `skillbox-host` beside this executable.
fn host_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let host = exe.with_file_name(HOST_BINARY);
    if host.is_file() {
        Ok(host)
    } else {
        Err(format!(
            "{HOST_BINARY} is not installed beside {} (install both, e.g. with \
             `cargo install skillbox`)",
            exe.display()
        ))
    }
}

/// How a handed-off run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// With this exit code.
    Exited(i32),
    /// Ended by this signal.
    Signalled(i32),
}

impl Ended {
    /// Ends this process the same way.
    fn finish(self) -> ! {
        match self {
            Ended::Exited(code) => std::process::exit(code),
            Ended::Signalled(sig) => {
                // SAFETY: restoring a default disposition and raising a
                // signal have no memory-safety preconditions.
                unsafe {
                    libc::signal(sig, libc::SIG_DFL);
                    libc::raise(sig);
                }
                std::process::exit(128 + sig)
            }
        }
    }
}

/// Why a run was not handed off.
#[derive(Debug)]
pub enum HandOff {
    /// No run server took it; it can run in this process instead.
    NotTaken(String),
    /// A run server took it and went away before it ended: its end is
    /// unknown, and running it again could do its work twice.
    Lost(String),
}

/// The socket a handed-off run's signals are passed on through (-1: none).
static FORWARD_TO: AtomicI32 = AtomicI32::new(-1);

extern "C" fn forward(sig: libc::c_int) {
    let fd = FORWARD_TO.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is one byte
        // on this stack.
        unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
    }
}

/// Hands the run `args` describe to the run server of the daemon a
/// client finds (see [`crate::profile::data_dir`]), and waits for its end.
pub fn hand_off(host: &Path, args: &[OsString]) -> Result<Ended, HandOff> {
    crate::profile::load().map_err(HandOff::NotTaken)?;
    let socket = socket_in(&crate::profile::data_dir(None));
    let not_taken = |what: &str, e: &dyn std::fmt::Display| {
        HandOff::NotTaken(format!("{what} {}: {e}", socket.display()))
    };
    let mut conn = UnixStream::connect(&socket).map_err(|e| not_taken("no run server at", &e))?;
    let meta = std::fs::metadata(host).map_err(|e| not_taken(&host.display().to_string(), &e))?;
    let cwd = rustix::fs::open(
        ".",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| HandOff::NotTaken(format!("the working directory: {e}")))?;
    let umask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    rustix::process::umask(umask);
    let request = Request {
        host: identity(&meta),
        umask: umask.bits(),
        args: args.to_vec(),
        env: std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                kv
            })
            .collect(),
    }
    .encode();
    // Standard streams a caller closed cannot be passed; such a run stays
    // in this process, where it sees them closed.
    let mut fds = Vec::with_capacity(4);
    for fd in 0..3 {
        // SAFETY: `fd` is only borrowed for this call, and checked open
        // before it is used.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_getfd(fd).map_err(|e| HandOff::NotTaken(format!("fd {fd:?}: {e}")))?;
        fds.push(fd);
    }
    fds.push(cwd.as_fd());
    // Signals from here on go to the run (the server reads them once it
    // has started it; before, they wait in the socket).
    FORWARD_TO.store(conn.as_raw_fd(), Ordering::Relaxed);
    for sig in FORWARDED {
        // SAFETY: `forward` is async-signal-safe (an atomic load and
        // write(2)).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    let sent = send_with_fds(conn.as_fd(), &request, &fds)
        .map_err(|e| not_taken("sending the run to", &e))?;
    conn.write_all(&request[sent..])
        .map_err(|e| not_taken("sending the run to", &e))?;
    let mut tag = [0u8; 1];
    conn.read_exact(&mut tag)
        .map_err(|e| not_taken("no answer from", &e))?;
    match tag[0] {
        ACCEPTED => {}
        DECLINED => {
            let mut why = String::new();
            let _ = conn.take(4096).read_to_string(&mut why);
            restore_signals();
            return Err(HandOff::NotTaken(why));
        }
        other => return Err(not_taken("an unknown answer from", &other)),
    }
    let mut end = [0u8; 5];
    conn.read_exact(&mut end).map_err(|e| {
        HandOff::Lost(format!(
            "the daemon's run server ({}) went away during the run, whose end is \
             unknown: {e}",
            socket.display()
        ))
    })?;
    let value = i32::from_le_bytes([end[1], end[2], end[3], end[4]]);
    match end[0] {
        EXITED => Ok(Ended::Exited(value)),
        SIGNALLED => Ok(Ended::Signalled(value)),
        other => Err(HandOff::Lost(format!(
            "an unknown answer ({other}) from the run server {}",
            socket.display()
        ))),
    }
}

fn restore_signals() {
    FORWARD_TO.store(-1, Ordering::Relaxed);
    for sig in FORWARDED {
        // SAFETY: restores the default disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

fn send_with_fds(conn: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(fds));
    Ok(rustix::net::sendmsg(
        conn,
        &[io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?)
}

// ---------------------------------------------------------------------
// The request.

/// What a front end sends: whose binary it would run, and the process
/// the run should have been (its working directory and standard streams
/// travel as file descriptors beside it).
#[derive(Debug, PartialEq, Eq)]
struct Request {
    host: (u64, u64),
    umask: u32,
    args: Vec<OsString>,
    env: Vec<Vec<u8>>,
}

impl Request {
    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&self.host.0.to_le_bytes());
        body.extend_from_slice(&self.host.1.to_le_bytes());
        body.extend_from_slice(&self.umask.to_le_bytes());
        let list = |body: &mut Vec<u8>, items: &mut dyn Iterator<Item = &[u8]>| {
            let items: Vec<&[u8]> = items.collect();
            body.extend_from_slice(&(items.len() as u32).to_le_bytes());
            for item in items {
                body.extend_from_slice(&(item.len() as u32).to_le_bytes());
                body.extend_from_slice(item);
            }
        };
        list(&mut body, &mut self.args.iter().map(|a| a.as_bytes()));
        list(&mut body, &mut self.env.iter().map(Vec::as_slice));
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a request's body (what follows the magic and the length).
    fn decode(body: &[u8]) -> Result<Request, String> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], String> {
            let end = at.checked_add(n).filter(|&e| e <= body.len());
            let end = end.ok_or("a truncated request")?;
            let s = &body[at..end];
            at = end;
            Ok(s)
        };
        let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default());
        let host = (u64_at(take(8)?), u64_at(take(8)?));
        let umask = u32_of(take(4)?);
        let mut list = || -> Result<Vec<Vec<u8>>, String> {
            let n = u32_of(take(4)?) as usize;
            let mut items = Vec::with_capacity(n.min(4096));
            for _ in 0..n {
                let len = u32_of(take(4)?) as usize;
                items.push(take(len)?.to_vec());
            }
            Ok(items)
        };
        let args = list()?.into_iter().map(OsString::from_vec).collect();
        let env = list()?;
        if at != body.len() {
            return Err("trailing bytes after the request".into());
        }
        Ok(Request {
            host,
            umask,
            args,
            env,
        })
    }
}

// ---------------------------------------------------------------------
// The run server.

/// A run the server handed to a child.
struct Running {
    conn: UnixStream,
    /// Whether the front end is still there to be told the end.
    client: bool,
    pidfd: OwnedFd,
    /// The channel the child was handed the run on; it says [`REPORTED`]
    /// there once it has told the front end its exit code.
    chan: UnixStream,
}

/// A child forked ahead of the next run, waiting on `chan` for a run to
/// become.
struct Spare {
    pidfd: OwnedFd,
    chan: UnixStream,
}

/// What a polled descriptor is.
#[derive(Clone, Copy)]
enum Slot {
    Listener,
    Stdin,
    /// The spare child (readable if it died unused).
    Spare,
    /// A run's process (its pidfd turns readable when it ends).
    Exit(usize),
    /// A run's front end (signals to pass on, or its going away).
    Client(usize),
}

/// How a run server stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// When its standard input reaches its end (the daemon that started
    /// it, holding the other end of a pipe, is gone); runs under way are
    /// left to end.
    WhileStdinOpen,
    /// Never on its own.
    Forever,
}

struct Server {
    /// The executable's identity, which front ends must name.
    me: (u64, u64),
    listener: UnixListener,
    running: Vec<Running>,
    spare: Option<Spare>,
    run: fn(Vec<OsString>) -> u8,
}

/// Runs a run server on `socket` until `lifetime` ends it. Each run is
/// taken by a child forked ahead of it, which becomes the client's
/// process and runs `run(args)`; the child's exit code (or the signal
/// that ended it) goes back to the front end.
///
/// Must be called while this process has a single thread, since the
/// children are forked from it; each fork checks that it still has.
pub fn serve(socket: &Path, lifetime: Lifetime, run: fn(Vec<OsString>) -> u8) -> io::Result<()> {
    let me = identity(&std::fs::metadata("/proc/self/exe")?);
    // Built once here and inherited by every child through fork, so that
    // a spare's own preparation, which competes with the run under way
    // for the CPU, stays small.
    prebuild_engines();
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    }
    let bound = identity(&std::fs::metadata(socket)?);
    listener.set_nonblocking(true)?;
    let mut server = Server {
        me,
        listener,
        running: Vec::new(),
        spare: None,
        run,
    };
    server.spare = server.fork_spare().ok();
    let mut accepting = true;
    // SAFETY: standard input is open for the server's whole life (a pipe
    // from the daemon, or whatever it was started with).
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    loop {
        if !accepting && server.running.is_empty() {
            return Ok(());
        }
        let mut polled = Vec::with_capacity(3 + 2 * server.running.len());
        let mut slots = Vec::with_capacity(polled.capacity());
        if accepting {
            polled.push(PollFd::new(&server.listener, PollFlags::IN));
            slots.push(Slot::Listener);
            if lifetime == Lifetime::WhileStdinOpen {
                polled.push(PollFd::new(&stdin, PollFlags::IN));
                slots.push(Slot::Stdin);
            }
        }
        if let Some(spare) = &server.spare {
            polled.push(PollFd::new(&spare.pidfd, PollFlags::IN));
            slots.push(Slot::Spare);
        }
        for (i, r) in server.running.iter().enumerate() {
            polled.push(PollFd::new(&r.pidfd, PollFlags::IN));
            slots.push(Slot::Exit(i));
            if r.client {
                polled.push(PollFd::new(&r.conn, PollFlags::IN));
                slots.push(Slot::Client(i));
            }
        }
        match rustix::event::poll(&mut polled, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<Slot> = polled
            .iter()
            .zip(slots)
            .filter(|(p, _)| !p.revents().is_empty())
            .map(|(_, s)| s)
            .collect();
        drop(polled);
        let mut ended = Vec::new();
        let (mut new_runs, mut stdin_ready) = (false, false);
        for slot in ready {
            match slot {
                Slot::Listener => new_runs = true,
                Slot::Stdin => stdin_ready = true,
                Slot::Spare => {
                    // It died before it was used; the next run forks anew.
                    if let Some(spare) = server.spare.take() {
                        let _ = reap(&spare.pidfd);
                    }
                }
                Slot::Client(i) => pass_signals(&mut server.running[i]),
                Slot::Exit(i) => {
                    if report_end(&mut server.running[i]) {
                        ended.push(i);
                    }
                }
            }
        }
        // From the last, so that removing keeps the other indices.
        ended.sort_unstable();
        for i in ended.into_iter().rev() {
            server.running.swap_remove(i);
        }
        if stdin_ready {
            let mut buf = [0u8; 64];
            if matches!(rustix::io::read(stdin, &mut buf), Ok(0) | Err(_)) {
                accepting = false;
                // The spare sees its channel close and exits.
                if let Some(spare) = server.spare.take() {
                    drop(spare.chan);
                    let _ = rustix::process::pidfd_send_signal(&spare.pidfd, Signal::KILL);
                    let _ = reap_blocking(&spare.pidfd);
                }
                // The socket is removed only while it is still this
                // server's: a daemon started since may have bound anew.
                if std::fs::metadata(socket).is_ok_and(|m| identity(&m) == bound) {
                    let _ = std::fs::remove_file(socket);
                }
                continue;
            }
        }
        if accepting && new_runs {
            loop {
                match server.listener.accept() {
                    Ok((conn, _)) => server.take(conn),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        eprintln!("warning: run server {}: accept: {e}", socket.display());
                        break;
                    }
                }
            }
        }
    }
}

impl Server {
    /// Takes a run (see [`Server::hand`]) and forks the spare for the
    /// next one. The fork comes after `hand` has returned: by then the
    /// caller's descriptors are closed here, so the new spare holds none of
    /// them (a spare holding a caller's stdout would keep whoever reads it
    /// waiting for its end until that spare exits).
    fn take(&mut self, conn: UnixStream) {
        self.hand(conn);
        if self.spare.is_none() {
            self.spare = self.fork_spare().ok();
        }
    }

    /// Reads one request and hands it to the spare child; answers
    /// `DECLINED` with the reason when it cannot.
    fn hand(&mut self, mut conn: UnixStream) {
        let decline = |conn: &mut UnixStream, why: &str| {
            let mut answer = vec![DECLINED];
            answer.extend_from_slice(why.as_bytes());
            let _ = conn.write_all(&answer);
        };
        let peer = rustix::net::sockopt::socket_peercred(&conn);
        if peer.map(|c| c.uid) != Ok(rustix::process::geteuid()) {
            decline(
                &mut conn,
                "the run server takes runs only from its own user",
            );
            return;
        }
        let (request, fds) = match read_request(&mut conn, Some(Duration::from_secs(5))) {
            Ok(r) => r,
            Err(e) => {
                decline(&mut conn, &format!("a bad request: {e}"));
                return;
            }
        };
        if request.host != self.me {
            decline(
                &mut conn,
                "the daemon runs another skillbox-host than the one beside this skillbox \
                 (restart the daemon after an upgrade)",
            );
            return;
        }
        if request.args.get(1).map(OsString::as_os_str) != Some(OsStr::new("run")) {
            decline(&mut conn, "only `skillbox run` is handed to a daemon");
            return;
        }
        if fds.len() != 4 {
            decline(&mut conn, "a request without its four descriptors");
            return;
        }
        if conn.write_all(&[ACCEPTED]).is_err() {
            return;
        }
        // The spare gets the request and the descriptors, and the
        // connection too: it tells the front end its exit code itself,
        // before its address space is torn down.
        let body = request.encode();
        let mut fds: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        fds.push(conn.as_fd());
        let mut handed: io::Result<Spare> = Err(io::Error::other("no spare child"));
        for _ in 0..2 {
            let spare = match self.spare.take() {
                Some(s) => s,
                None => match self.fork_spare() {
                    Ok(s) => s,
                    Err(e) => {
                        handed = Err(e);
                        break;
                    }
                },
            };
            let sent = send_with_fds(spare.chan.as_fd(), &body, &fds)
                .and_then(|n| (&spare.chan).write_all(&body[n..]));
            match sent {
                Ok(()) => {
                    handed = Ok(spare);
                    break;
                }
                // It died unused: reap it and try a new one.
                Err(e) => {
                    let _ = rustix::process::pidfd_send_signal(&spare.pidfd, Signal::KILL);
                    let _ = reap_blocking(&spare.pidfd);
                    handed = Err(e);
                }
            }
        }
        match handed {
            Ok(Spare { pidfd, chan }) => {
                let _ = conn.set_nonblocking(true);
                let _ = chan.set_nonblocking(true);
                self.running.push(Running {
                    conn,
                    client: true,
                    pidfd,
                    chan,
                });
            }
            Err(e) => {
                let line = format!("error: the daemon's run server could not start the run: {e}\n");
                let _ = rustix::io::write(fds[2], line.as_bytes());
                let mut answer = vec![EXITED];
                answer.extend_from_slice(&1i32.to_le_bytes());
                let _ = conn.write_all(&answer);
            }
        }
    }

    /// Forks the child that takes the next run.
    fn fork_spare(&self) -> io::Result<Spare> {
        if threads() != Some(1) {
            return Err(io::Error::other(
                "the run server is not single-threaded (a bug); it cannot fork",
            ));
        }
        let (ours, theirs) = UnixStream::pair()?;
        // SAFETY: this process has one thread (checked just above), so the
        // child is a consistent copy of it; the child closes the server's
        // descriptors, waits for a run and becomes its process, and never
        // returns into the server's loop.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: these descriptors are the server's; this process
            // never uses them (nor returns to code that does).
            unsafe {
                libc::close(self.listener.as_raw_fd());
                libc::close(ours.as_raw_fd());
                for r in &self.running {
                    libc::close(r.conn.as_raw_fd());
                    libc::close(r.pidfd.as_raw_fd());
                    libc::close(r.chan.as_raw_fd());
                }
            }
            std::process::exit(spare_main(theirs, self.run));
        }
        drop(theirs);
        let opened = Pid::from_raw(pid)
            .ok_or(rustix::io::Errno::SRCH)
            .and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()));
        match opened {
            Ok(pidfd) => Ok(Spare { pidfd, chan: ours }),
            Err(e) => {
                // SAFETY: `pid` is this process's child, not yet waited for.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                Err(e.into())
            }
        }
    }
}

/// The spare child: waits for a run, becomes its process and runs it.
/// Returns the exit code. It starts no thread before it has become the
/// caller's process (see [`become_client`]).
fn spare_main(mut chan: UnixStream, run: fn(Vec<OsString>) -> u8) -> i32 {
    let (request, fds) = match read_request(&mut chan, None) {
        Ok(r) => r,
        // The server is gone, or stops: nothing to run.
        Err(_) => return 0,
    };
    let Ok::<[OwnedFd; 5], _>([stdin, stdout, stderr, cwd, conn]) = fds.try_into() else {
        return 1;
    };
    *FRONT_END.lock().unwrap_or_else(|p| p.into_inner()) = Some(FrontEnd {
        conn: UnixStream::from(conn),
        server: chan,
    });
    let code = match become_client(request, [stdin, stdout, stderr], cwd) {
        Ok(args) => run(args),
        Err(e) => {
            eprintln!("error: the daemon's run server cannot take on this process: {e}");
            1
        }
    };
    report_exit(code);
    i32::from(code)
}

/// A run server's child's ways back: to the front end it stands in for,
/// and to the server.
struct FrontEnd {
    conn: UnixStream,
    server: UnixStream,
}

/// The front end a run server's child stands in for.
static FRONT_END: std::sync::Mutex<Option<FrontEnd>> = std::sync::Mutex::new(None);

/// Tells the front end this process stands in for (if it does) that the
/// run ended with `code`, once its output is flushed: the front end
/// exits then, without waiting for this process to tear down its
/// runtime. The server is told first, so that it leaves this process to
/// end by itself when the front end then goes away. Later calls do
/// nothing.
pub fn report_exit(code: u8) {
    let Some(mut to) = FRONT_END.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    let _ = io::stdout().flush();
    let _ = to.server.write_all(&[REPORTED]);
    let mut answer = vec![EXITED];
    answer.extend_from_slice(&i32::from(code).to_le_bytes());
    let _ = to.conn.write_all(&answer);
}

/// Builds, in the server, the engines and linkers `skillbox run` uses
/// (with and without fuel); each child inherits them through fork.
/// Building them starts no thread (each fork checks).
fn prebuild_engines() {
    for fuel in [false, true] {
        let _ = crate::Host::prebuild(&crate::EngineOptions {
            cache_dir: None,
            fuel,
            max_instances: 4,
            ..crate::EngineOptions::default()
        });
    }
}

/// The number of this process's threads.
fn threads() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/task").ok()?.count())
}

/// Collects a child that has ended; its status, if it had.
fn reap(pidfd: &OwnedFd) -> io::Result<Option<rustix::process::WaitIdStatus>> {
    Ok(rustix::process::waitid(
        WaitId::PidFd(pidfd.as_fd()),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
    )?)
}

fn reap_blocking(pidfd: &OwnedFd) -> io::Result<()> {
    rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED)?;
    Ok(())
}

/// In the forked child: become the process the client would have been.
fn become_client(
    request: Request,
    streams: [OwnedFd; 3],
    cwd: OwnedFd,
) -> io::Result<Vec<OsString>> {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(request.umask & 0o777));
    rustix::process::fchdir(&cwd)?;
    drop(cwd);
    for (target, fd) in streams.into_iter().enumerate() {
        // SAFETY: `target` is 0, 1 or 2; dup2 onto it replaces the
        // server's standard stream in this process only.
        if unsafe { libc::dup2(fd.as_raw_fd(), target as RawFd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let keys: Vec<OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for k in keys {
        // SAFETY: this process has a single thread (it was forked from
        // one), so nothing reads the environment while it changes.
        unsafe { std::env::remove_var(k) };
    }
    for kv in &request.env {
        let Some(eq) = kv.iter().position(|&b| b == b'=').filter(|&i| i > 0) else {
            continue;
        };
        // SAFETY: as above.
        unsafe {
            std::env::set_var(
                OsStr::from_bytes(&kv[..eq]),
                OsStr::from_bytes(&kv[eq + 1..]),
            )
        };
    }
    Ok(request.args)
}

/// Reads a request and the descriptors that came with it; `timeout`
/// bounds the wait for each part.
fn read_request(
    conn: &mut UnixStream,
    timeout: Option<Duration>,
) -> io::Result<(Request, Vec<OwnedFd>)> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(timeout)?;
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let mut head = [0u8; 12];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(5))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        conn.as_fd(),
        &mut [io::IoSliceMut::new(&mut head)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if got.bytes == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    conn.read_exact(&mut head[got.bytes..])?;
    if &head[..8] != MAGIC {
        return Err(bad("not a skillbox run request of this version"));
    }
    let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
    if len > MAX_REQUEST {
        return Err(bad("a request larger than 4 MiB"));
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)?;
    conn.set_read_timeout(None)?;
    let request = Request::decode(&body).map_err(|e| bad(&e))?;
    Ok((request, fds))
}

/// Passes on the signal numbers a front end sent; a front end that went
/// away takes its run with it, as it would have in its own process.
fn pass_signals(r: &mut Running) {
    let mut buf = [0u8; 16];
    match r.conn.read(&mut buf) {
        // The front end is gone. Once the child has told it the exit code
        // (and said so here first, so the byte is waiting by now), that is
        // the run's normal end and the child ends by itself; before, the
        // caller abandoned the run, which ends with it.
        Ok(0) if reported(&mut r.chan) => r.client = false,
        Ok(0) => {
            r.client = false;
            let _ = rustix::process::pidfd_send_signal(&r.pidfd, Signal::KILL);
        }
        Ok(n) => {
            for &b in &buf[..n] {
                let sig = match i32::from(b) {
                    libc::SIGINT => Signal::INT,
                    libc::SIGTERM => Signal::TERM,
                    libc::SIGHUP => Signal::HUP,
                    libc::SIGQUIT => Signal::QUIT,
                    _ => continue,
                };
                let _ = rustix::process::pidfd_send_signal(&r.pidfd, sig);
            }
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(_) => {
            r.client = false;
            let _ = rustix::process::pidfd_send_signal(&r.pidfd, Signal::KILL);
        }
    }
}

/// Whether a run's child has said [`REPORTED`] on its channel.
fn reported(chan: &mut UnixStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(chan.read(&mut byte), Ok(1) if byte[0] == REPORTED)
}

/// Tells the front end how its run ended (the child has told it already
/// when it returned normally; the front end reads only the first); true
/// once the child is collected.
fn report_end(r: &mut Running) -> bool {
    let status = match reap(&r.pidfd) {
        Ok(Some(s)) => s,
        Ok(None) => return false,
        Err(_) => return true,
    };
    let (tag, value) = match (status.exit_status(), status.terminating_signal()) {
        (_, Some(sig)) => (SIGNALLED, sig),
        (Some(code), None) => (EXITED, code),
        (None, None) => return false,
    };
    if r.client {
        let mut answer = vec![tag];
        answer.extend_from_slice(&value.to_le_bytes());
        let _ = r.conn.set_nonblocking(false);
        let _ = r.conn.write_all(&answer);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_back_as_it_was_written() {
        let request = Request {
            host: (7, 1 << 40),
            umask: 0o027,
            args: vec![
                "skillbox".into(),
                "run".into(),
                OsString::from_vec(vec![0xff, b'x']),
            ],
            env: vec![b"A=1".to_vec(), b"EMPTY=".to_vec()],
        };
        let bytes = request.encode();
        assert_eq!(&bytes[..8], MAGIC);
        let back = Request::decode(&bytes[12..]).unwrap();
        assert_eq!(back, request);
    }

    #[test]
    fn a_truncated_or_padded_request_is_refused() {
        let request = Request {
            host: (1, 2),
            umask: 0,
            args: vec!["skillbox".into(), "run".into()],
            env: vec![],
        };
        let bytes = request.encode();
        let body = &bytes[12..];
        for cut in 0..body.len() {
            assert!(Request::decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = body.to_vec();
        padded.push(0);
        assert!(Request::decode(&padded).is_err());
        // A length that claims more than there is.
        let mut lying = body.to_vec();
        lying[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Request::decode(&lying).is_err());
    }

    /// A run as the server holds it, with a real process (`sleep`)
    /// standing in for the child; the front end's and the child's ends of
    /// the two sockets.
    #[allow(
        clippy::zombie_processes,
        reason = "reaped through its pidfd (`ended_by`)"
    )]
    fn running() -> (Running, UnixStream, UnixStream) {
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32).unwrap();
        let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).unwrap();
        let (conn, front_end) = UnixStream::pair().unwrap();
        let (chan, childs) = UnixStream::pair().unwrap();
        conn.set_nonblocking(true).unwrap();
        chan.set_nonblocking(true).unwrap();
        let r = Running {
            conn,
            client: true,
            pidfd,
            chan,
        };
        (r, front_end, childs)
    }

    /// Waits for the stand-in child to end; the signal that ended it.
    fn ended_by(r: &Running) -> Option<i32> {
        rustix::process::waitid(WaitId::PidFd(r.pidfd.as_fd()), WaitIdOptions::EXITED)
            .unwrap()
            .and_then(|s| s.terminating_signal())
    }

    #[test]
    fn a_front_end_gone_after_the_report_leaves_the_child_to_end_by_itself() {
        let (mut r, front_end, mut childs) = running();
        childs.write_all(&[REPORTED]).unwrap();
        drop(front_end);
        pass_signals(&mut r);
        assert!(!r.client);
        // Had the server killed it, SIGKILL (sent first) would have ended it.
        rustix::process::pidfd_send_signal(&r.pidfd, Signal::TERM).unwrap();
        assert_eq!(
            ended_by(&r),
            Some(libc::SIGTERM),
            "the child was left running"
        );
    }

    #[test]
    fn a_front_end_gone_before_the_report_takes_the_run_with_it() {
        let (mut r, front_end, _childs) = running();
        drop(front_end);
        pass_signals(&mut r);
        assert!(!r.client);
        assert_eq!(ended_by(&r), Some(libc::SIGKILL));
    }
}
