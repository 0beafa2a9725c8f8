//! The hostile exec'd program: a granted program that runs code of the
//! skill's choosing (here `python3 -c SCRIPT`, as `git -c alias.x=!…`, an
//! interpreter or `tar` on a guest-written archive would) and tries to
//! leave the run's grants. Each test is one way out that worked before the
//! jail (`caps::sandbox`), and checks both what the program saw and that
//! nothing happened on the host.

use std::os::unix::net::UnixListener;
use std::time::Duration;

use serde_json::{Value, json};
use skillbox::prelude::*;

use crate::harness::*;

const PYTHON: &str = "[fs]\n\"/w\" = { access = \"read-write\" }\n[exec]\nallow = [ { program = \"python3\", args = [\"-c\", \"*\", \"**\"] }, { program = \"tar\", args = [\"-xf\", \"*\"] } ]\n";

/// Runs `python3 -c script args…` from the hostile guest with `/w` granted
/// read-write (the returned dir) plus `extra` flags; returns the exec
/// result (`status`, `stdout`, `stderr`) or the failure message.
async fn attack(script: &str, args: &[&str], extra: &[&str]) -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let r = attack_in(&dir, script, args, extra).await;
    (dir, r)
}

async fn attack_in(dir: &tempfile::TempDir, script: &str, args: &[&str], extra: &[&str]) -> Value {
    let src = source_with_manifest("hostile", PYTHON);
    let w = format!("{}:/w", dir.path().display());
    let mut flags = vec![
        "--allow-exec",
        "python3 -c * **",
        "--allow-exec",
        "tar -xf *",
        "--allow-write",
        &w,
    ];
    flags.extend_from_slice(extra);
    let mut argv = vec!["-c", script];
    argv.extend_from_slice(args);
    let input = json!({"case": "exec", "program": "python3", "args": argv, "cwd": "/w"});
    let (r, _) = run(&src, &grants(&flags), input).await;
    match &r.outcome {
        Outcome::Succeeded { data, .. } => data.clone(),
        Outcome::Failed { message, .. } => json!({ "failed": message }),
        other => panic!("unexpected outcome {other:?}"),
    }
}

/// The JSON line the script printed last.
fn said(r: &Value) -> Value {
    let out = r["stdout"]
        .as_str()
        .unwrap_or_else(|| panic!("no stdout: {r}"));
    let line = out.lines().last().unwrap_or_else(|| panic!("silent: {r}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {r}"))
}

/// Python that runs `body` (which sets `out`) and prints `out` as JSON,
/// with any exception as `{"error": errno name or text}`.
fn script(body: &str) -> String {
    format!(
        "import json, os, sys, socket, errno, signal, time\nout = {{}}\ntry:\n{}\nexcept OSError as e:\n    out = {{'error': errno.errorcode.get(e.errno, str(e))}}\nprint(json.dumps(out))\n",
        body.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// 1. A pathname Unix socket outside the grants (skillbox's own daemon
/// socket and the Docker engine's are such sockets): no socket can even
/// be made.
#[tokio::test]
async fn a_program_cannot_connect_to_a_unix_socket() {
    let outside = tempfile::tempdir().unwrap();
    let path = outside.path().join("daemon.sock");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let body = "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\ns.connect(sys.argv[1])\ns.sendall(b'POST /tasks')\nout = {'connected': True}";
    let (_, r) = attack(&script(body), &[path.to_str().unwrap()], &[]).await;
    assert_eq!(said(&r), json!({"error": "EPERM"}), "{r}");
    assert!(listener.accept().is_err(), "the program reached the socket");
}

/// 2a. UDP (and TCP) to a loopback port nobody granted: no socket.
#[tokio::test]
async fn a_program_has_no_network_at_all() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let (up, tp) = (
        udp.local_addr().unwrap().port().to_string(),
        tcp.local_addr().unwrap().port().to_string(),
    );
    let body = "res = {}\nfor kind, port in (('udp', sys.argv[1]), ('tcp', sys.argv[2])):\n    try:\n        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == 'udp' else socket.SOCK_STREAM)\n        s.connect(('127.0.0.1', int(port)))\n        s.send(b'exfiltrated')\n        res[kind] = 'sent'\n    except OSError as e:\n        res[kind] = errno.errorcode[e.errno]\nout = res";
    let (_, r) = attack(&script(body), &[&up, &tp], &[]).await;
    assert_eq!(said(&r), json!({"udp": "EPERM", "tcp": "EPERM"}), "{r}");
    let mut buf = [0u8; 64];
    assert!(udp.recv(&mut buf).is_err(), "a datagram arrived");
    assert!(tcp.accept().is_err(), "a connection arrived");
}

/// 2b. Abstract Unix sockets are not files, so no directory rule covers
/// them: still no socket.
#[tokio::test]
async fn a_program_cannot_reach_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("skillbox-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let body = "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\ns.connect('\\0' + sys.argv[1])\nout = {'connected': True}";
    let (_, r) = attack(&script(body), &[&name], &[]).await;
    assert_eq!(said(&r), json!({"error": "EPERM"}), "{r}");
    assert!(listener.accept().is_err());
}

/// 2c. A process outside the run cannot be signalled: it is not even
/// visible from the run's PID namespace.
#[tokio::test]
async fn a_program_cannot_signal_a_process_outside_its_run() {
    let mut victim = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let pid = victim.id().to_string();
    let body = "os.kill(int(sys.argv[1]), signal.SIGTERM)\nout = {'killed': True}";
    let (_, r) = attack(&script(body), &[&pid], &[]).await;
    assert_eq!(said(&r), json!({"error": "ESRCH"}), "{r}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(victim.try_wait().unwrap().is_none(), "the victim died");
    victim.kill().unwrap();
    victim.wait().unwrap();
    // Nor the host itself, whose pid the program might guess.
    let me = std::process::id().to_string();
    let (_, r) = attack(&script(body), &[&me], &[]).await;
    assert_eq!(said(&r), json!({"error": "ESRCH"}), "{r}");
}

/// 3. Device nodes in a writable grant: neither `mknod` nor `tar -xf` of an
/// archive holding one (as root) can make one, so the guest has nothing
/// to open there.
#[tokio::test]
async fn a_program_cannot_make_device_nodes() {
    let body = "res = {}\nfor name, kind in (('kmsg', 'c'), ('sda', 'b'), ('fifo', 'p')):\n    mode = {'c': 0o20600, 'b': 0o60600, 'p': 0o10600}[kind]\n    try:\n        os.mknod(name, mode, os.makedev(1, 11))\n        res[name] = 'made'\n    except OSError as e:\n        res[name] = errno.errorcode[e.errno]\nout = res";
    let (dir, r) = attack(&script(body), &[], &[]).await;
    assert_eq!(
        said(&r),
        json!({"kmsg": "EPERM", "sda": "EPERM", "fifo": "EACCES"}),
        "{r}"
    );
    // An archive the guest could have written, holding /dev/kmsg's twin.
    let made = std::process::Command::new("python3")
        .current_dir(dir.path())
        .args([
            "-c",
            "import tarfile\nt = tarfile.open('a.tar', 'w')\ni = tarfile.TarInfo('kmsg')\ni.type = tarfile.CHRTYPE\ni.devmajor, i.devminor = 1, 11\nt.addfile(i)\nt.close()",
        ])
        .status()
        .unwrap();
    assert!(made.success());
    let src = source_with_manifest("hostile", PYTHON);
    let w = format!("{}:/w", dir.path().display());
    let g = grants(&["--allow-exec", "tar -xf *", "--allow-write", &w]);
    let input = json!({"case": "exec", "program": "tar", "args": ["-xf", "a.tar"], "cwd": "/w"});
    let (r, _) = run(&src, &g, input).await;
    let data = succeeded(&r).1;
    assert_ne!(data["status"], 0, "{data}");
    for name in ["kmsg", "sda", "fifo"] {
        assert!(
            std::fs::symlink_metadata(dir.path().join(name)).is_err(),
            "{name} exists"
        );
    }
}

/// 4. A child that leaves its process group (`setsid`) and outlives the
/// program that started it is killed when the call returns.
#[tokio::test]
async fn a_detached_child_dies_with_its_call() {
    let marker = format!("skillbox-setsid-{}", std::process::id());
    let body = "pid = os.fork()\nif pid == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(2)\n        open('late', 'w').write('still here')\n    os._exit(0)\nout = {'child': pid}";
    let (dir, r) = attack(&script(body), &[&marker], &[]).await;
    assert!(said(&r)["child"].is_number(), "{r}");
    assert!(
        wait_none_with(&marker, Duration::from_secs(10)),
        "the detached child outlived the call: {:?}",
        running_with(&marker)
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!dir.path().join("late").exists(), "it wrote after the call");
}

/// 5a. Memory: the run's limit bounds its programs too (in a cgroup of the
/// run), not only the guest.
#[tokio::test]
async fn a_program_cannot_use_more_than_the_runs_memory() {
    let status = skillbox::caps::sandbox::status();
    assert!(status.cgroup.is_some(), "no cgroup here: {status}");
    let body = "blob = b'x' * (1 << 30)\nout = {'allocated': len(blob)}";
    let (_, r) = attack(&script(body), &[], &["--memory", "64MiB"]).await;
    let failed = r["failed"].as_str().unwrap_or_default();
    assert!(failed.contains("memory limit"), "{r}");
    // A program within the limit still runs.
    let body = "blob = b'x' * (8 << 20)\nout = {'allocated': len(blob)}";
    let (_, r) = attack(&script(body), &[], &["--memory", "64MiB"]).await;
    assert_eq!(said(&r), json!({"allocated": 8 << 20}), "{r}");
}

/// 5b. Processes: a fork bomb stops at the run's ceiling.
#[tokio::test]
async fn a_fork_bomb_stops_at_the_process_ceiling() {
    let body = "n = 0\ntry:\n    for _ in range(1000):\n        if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n    out = {'forked': n, 'error': errno.errorcode[e.errno]}\nelse:\n    out = {'forked': n}";
    let (_, r) = attack(&script(body), &[], &[]).await;
    let got = said(&r);
    assert_eq!(got["error"], "EAGAIN", "{r}");
    let n = got["forked"].as_u64().unwrap();
    assert!(
        n < u64::from(skillbox::caps::sandbox::DEFAULT_PROCESSES),
        "{n} forks"
    );
}

/// 6. A descriptor the host inherited (or opened without close-on-exec)
/// does not reach programs.
#[tokio::test]
async fn a_program_cannot_use_the_hosts_descriptors() {
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "host secret").unwrap();
    let path = std::ffi::CString::new(secret.path().to_str().unwrap()).unwrap();
    // SAFETY: a plain open without O_CLOEXEC, as a parent process's
    // descriptor would arrive; closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    assert!(fd > 2);
    let body = "out = {'read': os.pread(int(sys.argv[1]), 100, 0).decode()}";
    let (_, r) = attack(&script(body), &[&fd.to_string()], &[]).await;
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    assert_eq!(said(&r), json!({"error": "EBADF"}), "{r}");
}

/// 7. No capabilities, even as root: no chown, no raw privileges, an empty
/// bounding set (a setuid-root program regains nothing).
#[tokio::test]
async fn a_program_has_no_capabilities() {
    let body = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nbounding = [c for c in range(41) if libc.prctl(23, c, 0, 0, 0) == 1]\nopen('f', 'w').close()\ntry:\n    os.chown('f', 1234, 1234)\n    chown = 'done'\nexcept OSError as e:\n    chown = errno.errorcode[e.errno]\nout = {'uid': os.getuid(), 'bounding': bounding, 'chown': chown}";
    let (_, r) = attack(&script(body), &[], &[]).await;
    let got = said(&r);
    assert_eq!(got["bounding"], json!([]), "{r}");
    assert_eq!(got["chown"], "EPERM", "{r}");
}

/// What `inspect` and the run report say this kernel gives.
#[test]
fn the_sandbox_status_is_complete_here() {
    let status = skillbox::caps::sandbox::status();
    assert!(status.complete(), "{status}");
}

/// The granted directory still works for an honest program: read, write,
/// list, and a subprocess.
#[tokio::test]
async fn an_honest_program_still_works() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "hello").unwrap();
    let body = "import subprocess\ndata = open('in.txt').read()\nopen('out.txt', 'w').write(data.upper())\nls = subprocess.run(['ls'], capture_output=True, text=True).stdout.split()\nout = {'data': data, 'ls': ls}";
    let r = attack_in(&dir, &script(body), &[], &[]).await;
    assert_eq!(
        said(&r),
        json!({"data": "hello", "ls": ["in.txt", "out.txt"]}),
        "{r}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "HELLO"
    );
}
