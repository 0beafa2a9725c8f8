//! What the host and a run's jail say to each other over their socket: a
//! frame is a 4-byte little-endian length and a JSON body, with up to
//! [`MAX_FDS`] file descriptors attached to its first byte.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use serde::{Deserialize, Serialize};

/// Most descriptors one frame carries: a program's stdin, stdout, stderr.
pub const MAX_FDS: usize = 3;
/// Largest frame body: room for `ARG_MAX`-sized argument lists.
const MAX_BODY: usize = 8 << 20;

/// The first frame, host to jail: how to confine itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Setup {
    /// The host's pid: the jail exits if its parent is not this process.
    pub host_pid: u32,
    /// Granted directories (canonical host paths) and whether they are
    /// writable.
    pub dirs: Vec<(PathBuf, bool)>,
    /// `cgroup.procs` files the jail joins before it starts anything.
    pub cgroups: Vec<PathBuf>,
    /// Address-space ceiling per program, when no cgroup bounds memory.
    pub memory_rlimit: Option<u64>,
    /// The umask its programs start with, when not the one the jail
    /// inherited (a run for a caller in another process: see
    /// [`crate::caller`]).
    pub umask: Option<u32>,
}

/// What the jail could put in place, jail to host, once, after [`Setup`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The Landlock ABI enforced; `None` without Landlock.
    pub landlock: Option<i32>,
    /// Whether the Landlock domain scopes signals and abstract sockets.
    pub landlock_scoped: bool,
    /// Whether the seccomp filter is installed.
    pub seccomp: bool,
    /// Whether programs run in a PID namespace of their own.
    pub pid_namespace: bool,
    /// Whether every capability is gone (bounding set included).
    pub capabilities_dropped: bool,
}

/// One program to start, host to jail, with its stdin, stdout and stderr
/// attached.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Call {
    /// Resolved absolute path.
    pub program: PathBuf,
    /// Arguments, verbatim.
    pub args: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// Working directory (host path).
    pub cwd: PathBuf,
}

/// How a call ended, jail to host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Done {
    /// The program exited with this status.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
    /// It could not be started: no such file.
    NotFound(String),
    /// It could not be started for another reason.
    Failed(String),
}

/// The jail's answer to [`Setup`].
pub type Ready = Result<Applied, String>;

/// Sends `msg` with `fds` attached.
pub fn send<T: Serialize>(sock: &UnixStream, msg: &T, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| (*l as usize) <= MAX_BODY)
        .ok_or_else(|| io::Error::other("message too large"))?;
    let header = len.to_le_bytes();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if fds.len() > MAX_FDS || !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors for one frame"));
    }
    // The descriptors ride on the header's bytes; the body follows as plain
    // stream data.
    let mut sent = 0;
    while sent == 0 {
        sent = retry(|| {
            sendmsg(
                sock,
                &[IoSlice::new(&header)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
        })?;
    }
    (&*sock).write_all(&header[sent..])?;
    (&*sock).write_all(&body)
}

/// Receives one message and its descriptors; `None` when the peer closed
/// the socket.
pub fn recv<T: for<'de> Deserialize<'de>>(
    sock: &UnixStream,
) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut header = [0u8; 4];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = retry(|| {
        recvmsg(
            sock,
            &mut [IoSliceMut::new(&mut header)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
    })?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    if got.bytes == 0 {
        return Ok(None);
    }
    if got.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(io::Error::other("a frame carried too many descriptors"));
    }
    (&*sock).read_exact(&mut header[got.bytes..])?;
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_BODY {
        return Err(io::Error::other("frame too large"));
    }
    let mut body = vec![0u8; len];
    (&*sock).read_exact(&mut body)?;
    let msg = serde_json::from_slice(&body).map_err(io::Error::other)?;
    Ok(Some((msg, fds)))
}

fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Borrows each descriptor of a list.
pub fn borrow_all(fds: &[OwnedFd]) -> Vec<BorrowedFd<'_>> {
    fds.iter().map(|f| f.as_fd()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_messages_and_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = rustix::pipe::pipe().unwrap();
        let call = Call {
            program: "/bin/true".into(),
            args: vec!["x".repeat(300_000)],
            env: vec![("PATH".into(), "/bin".into())],
            cwd: "/".into(),
        };
        let sender = std::thread::spawn(move || send(&a, &call, &[w.as_fd()]).unwrap());
        let (got, fds): (Call, _) = recv(&b).unwrap().unwrap();
        sender.join().unwrap();
        assert_eq!(got.args[0].len(), 300_000);
        assert_eq!(fds.len(), 1);
        // The descriptor is the pipe's write end.
        rustix::io::write(&fds[0], b"ok").unwrap();
        let mut buf = [0u8; 2];
        rustix::io::read(&r, &mut buf).unwrap();
        assert_eq!(&buf, b"ok");
        drop(b);
    }

    #[test]
    fn a_closed_peer_is_none() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(recv::<Done>(&b).unwrap().is_none());
    }
}
