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
//!   streams (as file descriptors). The run server, a process that has
//!   already loaded `skillbox-host`, runs it on a thread: the thread takes
//!   a file system context of its own with the caller's working directory
//!   and umask (`unshare(CLONE_FS)`, which the threads it starts share),
//!   and enters the caller ([`crate::caller`]): the command line code,
//!   the same as an in-process run's, reads the caller's environment and
//!   writes to the caller's streams, and the programs a run starts get
//!   both. Output, `--json` and exit codes are those of a run in the
//!   client's own process. How the run ended goes back to the front end,
//!   which exits the same way; signals the front end receives (INT, TERM,
//!   HUP, QUIT) end the run, as they would end its process, and a front
//!   end that goes away takes its run with it.
//! - for anything else (help included), or when no run server answers,
//!   or it runs another build of `skillbox-host` than the one beside the
//!   front end, the front end `exec`s `skillbox-host` with the same
//!   arguments.
//!
//! `SKILLBOX_RUN_VIA` chooses: `auto` (the default), `daemon` (fail with
//! exit code 8 when no run server takes the run) or `process` (never hand
//! off).
//!
//! A run handed off runs as the daemon's user (the run server accepts
//! only connections from its own user; the socket is mode 0600), in the
//! daemon's process tree: its cgroup, resource limits and supplementary
//! groups apply rather than the calling shell's, and the runs under way
//! share the run server's process (one that crashes it, rather than
//! failing or panicking, takes the others with it). A caller that
//! confines itself (e.g. with Landlock) and must keep its runs inside
//! that confinement sets `SKILLBOX_RUN_VIA=process`.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::caller::{self, Caller};

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
    if args.get(1).map(OsString::as_os_str) == Some(OsStr::new("run")) && !asks_for_help(&args) {
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

/// Whether a command line asks for help (`-h`, `--help`) rather than a
/// run. Help is printed by `skillbox-host` itself: it shows the values of
/// the flags' environment variables, which a run server (whose
/// environment is not the caller's) would show wrong.
fn asks_for_help(args: &[OsString]) -> bool {
    args.iter()
        .skip(2)
        .take_while(|a| a.as_os_str() != "--")
        .any(|a| a == "-h" || a == "--help")
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

/// How many handed-off runs a run server runs at once; more wait for one
/// of these to end.
pub const MAX_RUNS: usize = 32;

/// A run a front end handed over, as the thread that runs it has it.
pub struct Handed {
    /// The command line, as the front end was started with it.
    pub args: Vec<OsString>,
    /// The process the run is for: its environment and standard streams.
    /// The thread has entered it already, and has its working directory
    /// and umask.
    pub caller: Arc<Caller>,
    /// The front end's connection, for [`Handed::interrupted`].
    conn: UnixStream,
}

impl Handed {
    /// Resolves when the run must end early, with how it ends: the front
    /// end passed on a signal it got (the run ends as a process would,
    /// killed by it), or went away (its caller abandoned the run).
    pub async fn interrupted(&self) -> Ended {
        let Ok(conn) = self
            .conn
            .try_clone()
            .and_then(|c| c.set_nonblocking(true).map(|()| c))
            .and_then(tokio::net::UnixStream::from_std)
        else {
            return std::future::pending().await;
        };
        let mut buf = [0u8; 16];
        loop {
            if conn.readable().await.is_err() {
                return Ended::Signalled(libc::SIGKILL);
            }
            match conn.try_read(&mut buf) {
                Ok(0) => return Ended::Signalled(libc::SIGKILL),
                Ok(n) => {
                    if let Some(ended) = passed_on(&buf[..n]) {
                        return ended;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Ended::Signalled(libc::SIGKILL),
            }
        }
    }
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

/// Runs a run server on `socket` until `lifetime` ends it. Each run is
/// taken on a thread of its own, which takes on the caller's working
/// directory and umask, enters the caller (see [`crate::caller`]) and
/// calls `run`; how the run ended goes back to the front end.
///
/// The runs share this process: a run that brings it down (a crash, not
/// an error or a panic, which end that run only) ends the others, whose
/// front ends then exit with 8, their runs' end unknown.
pub fn serve(socket: &Path, lifetime: Lifetime, run: fn(Handed) -> Ended) -> io::Result<()> {
    let me = identity(&std::fs::metadata("/proc/self/exe")?);
    // Programs' jails are started from one long-lived thread, which must
    // not take the first caller's working directory for its own.
    crate::caps::sandbox::start_launcher();
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    }
    let bound = identity(&std::fs::metadata(socket)?);
    listener.set_nonblocking(true)?;
    let umask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    rustix::process::umask(umask);
    let (stop, stop_writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let server = Arc::new(Server {
        me,
        run,
        home: rustix::fs::open(
            ".",
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?,
        umask: umask.bits(),
        slots: Slots::default(),
        listener,
        stop,
        waiting: std::sync::Mutex::new(0),
    });
    server.clone().start_thread()?;
    match lifetime {
        Lifetime::WhileStdinOpen => {
            let mut buf = [0u8; 64];
            // SAFETY: standard input is open for the server's whole life
            // (a pipe from the daemon, or whatever it was started with).
            let stdin = unsafe { BorrowedFd::borrow_raw(0) };
            loop {
                match rustix::io::read(stdin, &mut buf) {
                    Ok(0) => break,
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(_) => break,
                }
            }
        }
        Lifetime::Forever => loop {
            std::thread::park();
        },
    }
    // The socket is removed only while it is still this server's: a
    // daemon started since may have bound anew.
    if std::fs::metadata(socket).is_ok_and(|m| identity(&m) == bound) {
        let _ = std::fs::remove_file(socket);
    }
    // The threads waiting for a run see the pipe's end and end.
    drop(stop_writer);
    server.slots.wait_idle();
    Ok(())
}

/// What the threads of a run server share.
struct Server {
    /// The executable's identity, which front ends must name.
    me: (u64, u64),
    run: fn(Handed) -> Ended,
    /// The server's working directory and umask, which a thread takes
    /// back after a run.
    home: OwnedFd,
    umask: u32,
    slots: Slots,
    listener: UnixListener,
    /// The read end of a pipe whose write end the server closes when it
    /// stops taking runs: readable (at its end) from then on.
    stop: OwnedFd,
    /// How many threads wait for a connection. Each accepts the next
    /// run itself (no hand-over from thread to thread); one that takes a
    /// run when no other waits starts one that does.
    waiting: std::sync::Mutex<usize>,
}

/// How many threads wait for runs at most; more end after their run. A
/// new thread for each run cost a tenth of a handed-off run's time in
/// the server (the thread's creation, and wasmtime's set-up of each
/// thread that runs a guest).
const IDLE_THREADS: usize = 4;

impl Server {
    fn start_thread(self: Arc<Self>) -> io::Result<()> {
        *self.waiting.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let server = self.clone();
        let started = std::thread::Builder::new()
            .name("skillbox-run".into())
            .spawn(move || server.work());
        if started.is_err() {
            *self.waiting.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        }
        started.map(drop)
    }

    /// A run thread's life: runs, one at a time, until the server stops
    /// or [`IDLE_THREADS`] others wait already.
    fn work(self: Arc<Self>) {
        loop {
            let conn = self.next();
            let none_waiting = {
                let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
                *waiting -= 1;
                *waiting == 0
            };
            let Some(conn) = conn else { return };
            // Should no thread start, this one waits again after its run.
            if none_waiting && let Err(e) = self.clone().start_thread() {
                eprintln!("warning: run server: no thread for the next run: {e}");
            }
            take(conn, &self);
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if *waiting >= IDLE_THREADS {
                return;
            }
            *waiting += 1;
        }
    }

    /// The next front end's connection; `None` once the server stops.
    fn next(&self) -> Option<UnixStream> {
        loop {
            let mut polled = [
                PollFd::new(&self.listener, PollFlags::IN),
                PollFd::new(&self.stop, PollFlags::IN),
            ];
            match rustix::event::poll(&mut polled, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => return None,
            }
            if !polled[1].revents().is_empty() {
                return None;
            }
            match self.listener.accept() {
                Ok((conn, _)) => return Some(conn),
                // Another thread took it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("warning: run server: accept: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// The runs under way, at most [`MAX_RUNS`].
#[derive(Default)]
struct Slots {
    busy: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Slots {
    fn acquire(&self) {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy >= MAX_RUNS {
            busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy += 1;
    }

    fn release(&self) {
        *self.busy.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.freed.notify_all();
    }

    fn wait_idle(&self) {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy > 0 {
            busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Takes one run on this thread: reads the request, answers `DECLINED`
/// with the reason when it cannot take it, else becomes the caller's,
/// runs it, and becomes the server's again.
fn take(mut conn: UnixStream, server: &Server) {
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
    if request.host != server.me {
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
    let Ok::<[OwnedFd; 4], _>([stdin, stdout, stderr, cwd]) = fds.try_into() else {
        decline(&mut conn, "a request without its four descriptors");
        return;
    };
    server.slots.acquire();
    if conn.write_all(&[ACCEPTED]).is_ok() {
        let caller = Arc::new(Caller::new(
            &request.env,
            [stdin, stdout, stderr],
            request.umask,
        ));
        let ended = match become_caller(&cwd, request.umask) {
            // A run that waited for a slot may have been abandoned or
            // interrupted meanwhile: then it does not start.
            Ok(()) => ended_already(&conn)
                .unwrap_or_else(|| run_for(&caller, request.args, &conn, server.run)),
            Err(e) => {
                let line = format!("error: the daemon's run server cannot take this run: {e}\n");
                let _ = caller::stderr_of(&caller).write_all(line.as_bytes());
                Ended::Exited(1)
            }
        };
        // The caller's streams close here, whatever still holds them (a
        // thread of the run stuck in a system call): whoever reads the
        // caller's output sees its end when the front end exits.
        caller.detach();
        drop(caller);
        let (tag, value) = match ended {
            Ended::Exited(code) => (EXITED, code),
            Ended::Signalled(sig) => (SIGNALLED, sig),
        };
        let mut answer = vec![tag];
        answer.extend_from_slice(&value.to_le_bytes());
        let _ = conn.write_all(&answer);
        // Its context stays this thread's own; it lets go of the caller's
        // directory.
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(server.umask));
        let _ = rustix::process::fchdir(&server.home);
    }
    server.slots.release();
}

/// How the run ends before it starts, when its front end has already
/// passed on a signal or gone away (read without taking the bytes, which
/// [`Handed::interrupted`] reads again).
fn ended_already(conn: &UnixStream) -> Option<Ended> {
    let mut buf = [0u8; 16];
    let flags = RecvFlags::PEEK | RecvFlags::DONTWAIT;
    match rustix::net::recv(conn, &mut buf, flags) {
        Ok((0, _)) => Some(Ended::Signalled(libc::SIGKILL)),
        Ok((n, _)) => passed_on(&buf[..n.min(buf.len())]),
        Err(_) => None,
    }
}

/// The end a front end asked for with the bytes it sent: the first
/// signal among them that it passes on.
fn passed_on(bytes: &[u8]) -> Option<Ended> {
    bytes
        .iter()
        .map(|&b| i32::from(b))
        .find(|b| FORWARDED.contains(b))
        .map(Ended::Signalled)
}

/// Gives this thread a file system context of its own (working
/// directory, umask), the caller's.
fn become_caller(cwd: &OwnedFd, umask: u32) -> io::Result<()> {
    // SAFETY: CLONE_FS gives this thread its own copy of the working
    // directory, root and umask; nothing in this process relies on the
    // threads sharing them (paths of the process's own are absolute).
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS)? };
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(umask & 0o777));
    rustix::process::fchdir(cwd)?;
    Ok(())
}

/// Runs `run` for `caller` on this thread, which has become the caller's.
/// A panic ends this run only: as a process that panicked, with 101
/// (the panic's message went to the caller's stderr, see
/// [`report_panics_to_callers`]), or as [`caller::exit`] asked.
fn run_for(
    caller: &Arc<Caller>,
    args: Vec<OsString>,
    conn: &UnixStream,
    run: fn(Handed) -> Ended,
) -> Ended {
    let Ok(conn) = conn.try_clone() else {
        return Ended::Exited(1);
    };
    let handed = Handed {
        args,
        caller: caller.clone(),
        conn,
    };
    let _in = caller::enter(caller.clone());
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(handed))) {
        Ok(ended) => ended,
        Err(payload) => match payload.downcast_ref::<caller::Exit>() {
            Some(caller::Exit(code)) => Ended::Exited(*code),
            None => Ended::Exited(101),
        },
    }
}

/// Sends the message of a panic on a thread working for a caller to that
/// caller's stderr (as the caller's own process would have printed it),
/// and any other panic's where it went before.
pub fn report_panics_to_callers() {
    let before = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| match caller::current() {
        Some(c) => {
            let line = format!("thread 'main' {info}\n");
            let _ = caller::stderr_of(&c).write_all(line.as_bytes());
        }
        None => before(info),
    }));
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

    /// A run's thread as the server starts it, with its front end's end of
    /// the connection.
    fn handed() -> (Handed, UnixStream) {
        let null = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let (conn, front_end) = UnixStream::pair().unwrap();
        let handed = Handed {
            args: vec![],
            caller: Arc::new(Caller::new(&[], [null(), null(), null()], 0o022)),
            conn,
        };
        (handed, front_end)
    }

    fn interrupted(h: &Handed) -> Ended {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(h.interrupted())
    }

    #[test]
    fn a_signal_the_front_end_passes_on_ends_the_run_as_that_signal() {
        let (h, mut front_end) = handed();
        // Bytes that are not a forwarded signal are not taken for one.
        front_end.write_all(&[0, 9, libc::SIGTERM as u8]).unwrap();
        assert_eq!(interrupted(&h), Ended::Signalled(libc::SIGTERM));
    }

    #[test]
    fn a_run_interrupted_or_abandoned_before_it_starts_does_not_start() {
        let (h, mut front_end) = handed();
        assert_eq!(ended_already(&h.conn), None, "nothing sent: the run starts");
        front_end.write_all(&[libc::SIGINT as u8]).unwrap();
        assert_eq!(ended_already(&h.conn), Some(Ended::Signalled(libc::SIGINT)));
        // Peeked, not taken: the run's watch sees it too.
        assert_eq!(interrupted(&h), Ended::Signalled(libc::SIGINT));
        let (h, front_end) = handed();
        drop(front_end);
        assert_eq!(
            ended_already(&h.conn),
            Some(Ended::Signalled(libc::SIGKILL))
        );
    }

    #[test]
    fn a_front_end_gone_takes_the_run_with_it() {
        let (h, front_end) = handed();
        drop(front_end);
        assert_eq!(interrupted(&h), Ended::Signalled(libc::SIGKILL));
    }

    #[test]
    fn a_run_thread_takes_the_callers_directory_and_umask_and_leaves_the_process_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let here = std::env::current_dir().unwrap();
        let cwd = rustix::fs::open(
            dir.path(),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let there = std::thread::spawn(move || {
            become_caller(&cwd, 0o077).unwrap();
            std::fs::write("made-by-the-run", "x").unwrap();
            std::env::current_dir().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(there, dir.path().canonicalize().unwrap());
        assert_eq!(std::env::current_dir().unwrap(), here);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("made-by-the-run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the caller's umask (077) applies");
    }
}
