//! The process a piece of work is done for: its environment and its
//! standard streams.
//!
//! Work is normally done for this process, and then everything here is
//! `std`'s: [`var_os`] is `std::env::var_os`, [`stderr`] is fd 2. A run a
//! front end hands to a daemon's run server (see [`crate::handoff`]) runs
//! on a thread of that server instead, for a caller in another process.
//! That thread [`enter`]s the caller: from then on its reads of the
//! environment see the caller's variables, its output goes to the caller's
//! streams, and programs it starts get the caller's environment
//! ([`command`]). Its working directory and umask are the caller's too, by
//! other means: the thread takes a file system context of its own
//! (`unshare(CLONE_FS)`), which the threads it starts share.
//!
//! So code on the run path reads the environment and writes its output
//! here, never through `std::env` or `println!` directly; a unit test
//! holds the library to that.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// A process that work is done for, other than this one.
#[derive(Debug)]
pub struct Caller {
    env: Vec<(OsString, OsString)>,
    streams: [File; 3],
    umask: u32,
    profile: OnceLock<crate::profile::Profile>,
}

/// One of the standard streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// fd 0.
    Stdin,
    /// fd 1.
    Stdout,
    /// fd 2.
    Stderr,
}

impl Caller {
    /// A caller with this environment (`NAME=value` entries; the first of
    /// a name counts, as with `getenv`), these standard streams (stdin,
    /// stdout, stderr) and this umask.
    pub fn new(env: &[Vec<u8>], streams: [OwnedFd; 3], umask: u32) -> Caller {
        use std::os::unix::ffi::OsStrExt;
        let mut vars: Vec<(OsString, OsString)> = Vec::with_capacity(env.len());
        for kv in env {
            let Some(eq) = kv.iter().position(|&b| b == b'=').filter(|&i| i > 0) else {
                continue;
            };
            let name = OsStr::from_bytes(&kv[..eq]);
            if !vars.iter().any(|(k, _)| k == name) {
                vars.push((name.to_owned(), OsStr::from_bytes(&kv[eq + 1..]).to_owned()));
            }
        }
        Caller {
            env: vars,
            streams: streams.map(File::from),
            umask: umask & 0o777,
            profile: OnceLock::new(),
        }
    }

    /// Its umask.
    pub fn umask(&self) -> u32 {
        self.umask
    }

    fn stream(&self, which: Stream) -> &File {
        &self.streams[which as usize]
    }

    /// Lets go of its standard streams: each of its descriptors for them
    /// is pointed at `/dev/null` (the numbers stay taken until it is
    /// dropped), so whoever reads the caller's output sees its end even
    /// while something of the work still holds this.
    pub fn detach(&self) {
        static NULL: OnceLock<Option<File>> = OnceLock::new();
        let null = NULL.get_or_init(|| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .ok()
        });
        let Some(null) = null else {
            return;
        };
        for f in &self.streams {
            // SAFETY: both descriptors are open and owned (by `null` and
            // by `self`); dup2 replaces what `f`'s number refers to, and
            // `f` still owns that number afterwards.
            unsafe { libc::dup2(null.as_raw_fd(), f.as_raw_fd()) };
        }
    }

    /// Its client configuration, read once (see [`crate::profile::load`]).
    pub(crate) fn profile(&self) -> &OnceLock<crate::profile::Profile> {
        &self.profile
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Caller>>> = const { RefCell::new(None) };
}

/// The caller this thread works for, if not this process.
pub fn current() -> Option<Arc<Caller>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// While alive, this thread works for a caller (see [`enter`]).
#[must_use = "the caller is left when this is dropped"]
pub struct Entered {
    before: Option<Arc<Caller>>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let before = self.before.take();
        CURRENT.with(|c| *c.borrow_mut() = before);
    }
}

/// Makes this thread work for `caller` until the guard is dropped.
pub fn enter(caller: Arc<Caller>) -> Entered {
    let before = CURRENT.with(|c| c.borrow_mut().replace(caller));
    Entered { before }
}

/// `std::env::var_os`, of the caller's environment.
pub fn var_os(name: impl AsRef<OsStr>) -> Option<OsString> {
    let name = name.as_ref();
    match current() {
        Some(c) => c
            .env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone()),
        None => std::env::var_os(name),
    }
}

/// `std::env::var`, of the caller's environment.
pub fn var(name: impl AsRef<OsStr>) -> Result<String, std::env::VarError> {
    match var_os(name) {
        Some(v) => v.into_string().map_err(std::env::VarError::NotUnicode),
        None => Err(std::env::VarError::NotPresent),
    }
}

/// [`var_os`], with an empty value taken as unset.
pub fn var_set(name: impl AsRef<OsStr>) -> Option<OsString> {
    var_os(name).filter(|v| !v.is_empty())
}

/// A command for `program` that starts with the caller's environment
/// (`std::process::Command` would give it this process's).
pub fn command(program: impl AsRef<OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    if let Some(c) = current() {
        cmd.env_clear().envs(c.env.iter().map(|(k, v)| (k, v)));
    }
    cmd
}

/// The caller's umask, when it is not this process (whose umask its
/// children inherit anyway).
pub fn umask() -> Option<u32> {
    current().map(|c| c.umask)
}

/// A standard stream of the caller: written to (or read from) directly,
/// without `std`'s buffering or locks.
pub struct Handle {
    caller: Option<Arc<Caller>>,
    which: Stream,
}

impl Handle {
    fn fd(&self) -> BorrowedFd<'_> {
        match &self.caller {
            Some(c) => c.stream(self.which).as_fd(),
            // SAFETY: the standard streams stay open for the process's life.
            None => unsafe { BorrowedFd::borrow_raw(self.which as i32) },
        }
    }

    /// Whether the stream is a terminal.
    pub fn is_terminal(&self) -> bool {
        self.fd().is_terminal()
    }

    /// A descriptor of its own for the stream.
    pub fn try_clone(&self) -> io::Result<OwnedFd> {
        self.fd().try_clone_to_owned()
    }
}

impl Write for Handle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match rustix::io::write(self.fd(), buf) {
                Err(rustix::io::Errno::INTR) => continue,
                r => return Ok(r?),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Handle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match rustix::io::read(self.fd(), &mut *buf) {
                Err(rustix::io::Errno::INTR) => continue,
                r => return Ok(r?),
            }
        }
    }
}

/// The caller's standard stream `which`, unbuffered: each write is one
/// `write(2)` (a pipe takes up to 4 KiB in one piece, whatever other
/// threads write).
pub fn stream(which: Stream) -> Handle {
    Handle {
        caller: current(),
        which,
    }
}

/// `caller`'s standard error, whichever thread asks.
pub fn stderr_of(caller: &Arc<Caller>) -> Handle {
    Handle {
        caller: Some(caller.clone()),
        which: Stream::Stderr,
    }
}

/// The caller's standard output.
pub fn stdout() -> Handle {
    stream(Stream::Stdout)
}

/// The caller's standard error.
pub fn stderr() -> Handle {
    stream(Stream::Stderr)
}

/// The caller's standard input.
pub fn stdin() -> Handle {
    stream(Stream::Stdin)
}

/// Writes `text` to the caller's standard error, ignoring failure (as
/// `eprint!` does not, by panicking).
pub fn eprint(text: &str) {
    let _ = stderr().write_all(text.as_bytes());
}

/// Ends the work: the process with `code` when it is done for this
/// process; otherwise this thread's run unwinds with [`Exit`], which the
/// thread that entered the caller catches.
pub fn exit(code: i32) -> ! {
    if current().is_some() {
        std::panic::resume_unwind(Box::new(Exit(code)));
    }
    std::process::exit(code)
}

/// The payload [`exit`] unwinds with for a caller that is not this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub i32);

/// The caller's home directory: `HOME`, else the password database's.
pub fn home_dir() -> Option<PathBuf> {
    if let Some(h) = var_set("HOME") {
        return Some(PathBuf::from(h));
    }
    if current().is_none() {
        return dirs::home_dir();
    }
    passwd_home()
}

/// This user's home directory in the password database.
fn passwd_home() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0u8; 4096];
    // SAFETY: getpwuid_r writes into `pw` and `buf` (of the length given)
    // only; the result points into `buf`, read before it is dropped.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        );
        if rc != 0 || found.is_null() || pw.pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr(pw.pw_dir);
        Some(PathBuf::from(OsStr::from_bytes(dir.to_bytes())))
    }
}

/// An XDG base directory: `var` when it holds an absolute path, else
/// `under_home` in the home directory.
fn xdg(var: &str, under_home: &str) -> Option<PathBuf> {
    match var_set(var).map(PathBuf::from) {
        Some(p) if p.is_absolute() => Some(p),
        _ => home_dir().map(|h| h.join(under_home)),
    }
}

/// `$XDG_CACHE_HOME`, else `~/.cache`.
pub fn cache_dir() -> Option<PathBuf> {
    xdg("XDG_CACHE_HOME", ".cache")
}

/// `$XDG_CONFIG_HOME`, else `~/.config`.
pub fn config_dir() -> Option<PathBuf> {
    xdg("XDG_CONFIG_HOME", ".config")
}

/// `$XDG_DATA_HOME`, else `~/.local/share`.
pub fn data_dir() -> Option<PathBuf> {
    xdg("XDG_DATA_HOME", ".local/share")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(env: &[&str]) -> Arc<Caller> {
        let null = || OwnedFd::from(File::open("/dev/null").unwrap());
        let env: Vec<Vec<u8>> = env.iter().map(|s| s.as_bytes().to_vec()).collect();
        Arc::new(Caller::new(&env, [null(), null(), null()], 0o027))
    }

    #[test]
    fn a_thread_that_entered_a_caller_sees_its_environment_only() {
        let c = caller(&[
            "HOME=/home/caller",
            "ONLY_THE_CALLER=1",
            "DUP=a",
            "DUP=b",
            "=x",
        ]);
        let path_here = std::env::var_os("PATH");
        assert!(path_here.is_some());
        {
            let _in = enter(c.clone());
            assert_eq!(var("ONLY_THE_CALLER").as_deref(), Ok("1"));
            assert_eq!(var("DUP").as_deref(), Ok("a"));
            assert_eq!(var_os("PATH"), None, "this process's variables leak");
            assert_eq!(home_dir(), Some(PathBuf::from("/home/caller")));
            assert_eq!(
                cache_dir(),
                Some(PathBuf::from("/home/caller/.cache")),
                "a relative or missing XDG variable falls back to HOME"
            );
            assert_eq!(umask(), Some(0o027));
            let out = command("/usr/bin/env").output().unwrap();
            let out = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.contains("ONLY_THE_CALLER=1"), "{out}");
            assert!(!out.contains("PATH="), "{out}");
            // Another thread works for this process still.
            std::thread::scope(|s| {
                s.spawn(|| assert_eq!(std::env::var_os("PATH"), var_os("PATH")));
            });
        }
        assert_eq!(var_os("PATH"), path_here);
        assert_eq!(umask(), None);
    }

    /// The run path reads the environment and writes output through this
    /// module, so that a run done for a caller sees the caller's. Files
    /// off that path may use `std`'s; each is named here with why.
    #[test]
    fn only_code_off_the_run_path_uses_the_process_environment_or_streams() {
        const OFF_THE_RUN_PATH: [(&str, &str); 13] = [
            ("caller.rs", "this module"),
            ("handoff.rs", "the front end is its caller's own process"),
            ("telemetry.rs", "traces are the daemon's and the workers'"),
            ("relay/message.rs", "the relay is the daemon's"),
            ("relay/config.rs", "the relay is the daemon's"),
            ("caps/sandbox/jail.rs", "the jail is a process of its own"),
            ("cli/build.rs", "`skillbox build`, in its own process"),
            (
                "cli/approve.rs",
                "`skillbox tasks approve`, in its own process",
            ),
            ("cli/audit.rs", "`skillbox audit`, in its own process"),
            ("cli/docs.rs", "`skillbox completions`, in its own process"),
            ("cli/show.rs", "`skillbox tasks`, in its own process"),
            ("store/postgres_tests.rs", "tests"),
            ("store/testing.rs", "tests"),
        ];
        const PROCESS_WIDE: [&str; 9] = [
            "std::env::var",
            "env::var_os",
            "std::env::vars",
            "dirs::",
            "eprintln!",
            "println!",
            "std::io::stdout()",
            "std::io::stderr()",
            "std::io::stdin()",
        ];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![root.clone()];
        let mut found = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let name = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if !name.ends_with(".rs") || OFF_THE_RUN_PATH.iter().any(|(f, _)| *f == name) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, line) in text.lines().enumerate() {
                // Tests come last in a file.
                if line.trim() == "#[cfg(test)]" {
                    break;
                }
                if line.trim_start().starts_with("//") {
                    continue;
                }
                if let Some(what) = PROCESS_WIDE.iter().find(|w| line.contains(*w)) {
                    found.push(format!("{name}:{}: {what}", i + 1));
                }
            }
        }
        assert!(found.is_empty(), "use skillbox::caller instead: {found:#?}");
    }

    #[test]
    fn exit_unwinds_a_callers_thread_and_output_goes_to_its_streams() {
        let (mut r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        let null = || OwnedFd::from(File::open("/dev/null").unwrap());
        let c = Arc::new(Caller::new(&[], [null(), OwnedFd::from(w), null()], 0));
        let code = std::thread::spawn(move || {
            let _in = enter(c);
            stdout().write_all(b"to the caller\n").unwrap();
            let ended = std::panic::catch_unwind(|| exit(3));
            ended.err().and_then(|p| p.downcast_ref::<Exit>().copied())
        })
        .join()
        .unwrap();
        assert_eq!(code, Some(Exit(3)));
        let mut got = [0u8; 14];
        r.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"to the caller\n");
    }
}
