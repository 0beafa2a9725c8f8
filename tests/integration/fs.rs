//! `fs`: preopens, read-only vs read-write, and escapes.

use serde_json::json;
use skillbox::prelude::*;

use crate::harness::*;

struct Dirs {
    _top: tempfile::TempDir,
    data: std::path::PathBuf,
    out: std::path::PathBuf,
    secret: std::path::PathBuf,
}

/// `top/data` (granted read, holds hello.txt and a symlink out),
/// `top/out` (granted read-write), `top/secret.txt` (never granted).
fn dirs() -> Dirs {
    let top = tempfile::tempdir().unwrap();
    let data = top.path().join("data");
    let out = top.path().join("out");
    std::fs::create_dir(&data).unwrap();
    std::fs::create_dir(&out).unwrap();
    std::fs::write(data.join("hello.txt"), "hello from the host").unwrap();
    let secret = top.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET").unwrap();
    std::os::unix::fs::symlink(&secret, data.join("link-out")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", data.join("rel-link-out")).unwrap();
    Dirs {
        _top: top,
        data,
        out,
        secret,
    }
}

const TABLES: &str =
    "[fs]\n\"/data\" = { access = \"read\" }\n\"/out\" = { access = \"read-write\" }\n";

fn fs_grants(d: &Dirs) -> Grants {
    grants(&[
        "--allow-read",
        &format!("{}:/data", d.data.display()),
        "--allow-write",
        &format!("{}:/out", d.out.display()),
    ])
}

#[tokio::test]
async fn reads_a_granted_dir_and_writes_a_writable_one() {
    let d = dirs();
    let src = source_with_manifest("hostile", TABLES);
    let (r, _) = run(
        &src,
        &fs_grants(&d),
        json!({"case": "read", "path": "/data/hello.txt"}),
    )
    .await;
    assert_eq!(succeeded(&r).1["content"], "hello from the host");

    let (r, _) = run(
        &src,
        &fs_grants(&d),
        json!({"case": "write", "path": "/out/new.txt", "content": "written"}),
    )
    .await;
    succeeded(&r);
    assert_eq!(
        std::fs::read_to_string(d.out.join("new.txt")).unwrap(),
        "written"
    );

    let (r, _) = run(
        &src,
        &fs_grants(&d),
        json!({"case": "list", "path": "/data"}),
    )
    .await;
    let entries = succeeded(&r).1["entries"].to_string();
    assert!(entries.contains("hello.txt"), "{entries}");
}

/// Every escape attempt fails, and the secret never reaches the guest.
#[tokio::test]
async fn escapes_are_refused() {
    let d = dirs();
    let src = source_with_manifest("hostile", TABLES);
    let secret = d.secret.display().to_string();
    let cases = [
        (
            "dot-dot",
            json!({"case": "read", "path": "/data/../secret.txt"}),
        ),
        (
            "dot-dot from the root",
            json!({"case": "read", "path": "/data/../../../../etc/hostname"}),
        ),
        (
            "absolute host path",
            json!({"case": "read", "path": secret}),
        ),
        (
            "absolute path outside preopens",
            json!({"case": "read", "path": "/etc/passwd"}),
        ),
        (
            "host symlink out (absolute)",
            json!({"case": "read", "path": "/data/link-out"}),
        ),
        (
            "host symlink out (relative)",
            json!({"case": "read", "path": "/data/rel-link-out"}),
        ),
        (
            "write into a read-only dir",
            json!({"case": "write", "path": "/data/evil.txt", "content": "x"}),
        ),
        (
            "overwrite in a read-only dir",
            json!({"case": "write", "path": "/data/hello.txt", "content": "x"}),
        ),
        (
            "hard link from read-only into writable",
            json!({"case": "hardlink", "target": "/data/hello.txt", "link": "/out/hl"}),
        ),
        (
            "rename out of a read-only dir",
            json!({"case": "rename", "from": "/data/hello.txt", "to": "/out/stolen.txt"}),
        ),
        (
            "list outside preopens",
            json!({"case": "list", "path": "/"}),
        ),
    ];
    for (name, input) in cases {
        let (r, _) = run(&src, &fs_grants(&d), input).await;
        let (_, message) = failed(&r);
        assert!(!message.contains("TOP-SECRET"), "{name}: leaked: {message}");
        assert!(!r.stdout.contains("TOP-SECRET"), "{name}: leaked on stdout");
    }
    assert_eq!(
        std::fs::read_to_string(d.data.join("hello.txt")).unwrap(),
        "hello from the host"
    );
    assert!(!d.data.join("evil.txt").exists());
    assert!(!d.out.join("hl").exists());
    assert!(!d.out.join("stolen.txt").exists());
}

/// A symlink the guest plants in its writable dir does not lead out.
#[tokio::test]
async fn guest_made_symlinks_do_not_escape() {
    let d = dirs();
    let src = source_with_manifest("hostile", TABLES);
    for target in [
        d.secret.display().to_string(),
        "../secret.txt".into(),
        "/etc/passwd".into(),
    ] {
        let link = format!("/out/ln-{}", target.len());
        // Creating the link itself may be refused (absolute targets) or not;
        // following it must be.
        let _ = run(
            &src,
            &fs_grants(&d),
            json!({"case": "symlink", "target": target, "link": link}),
        )
        .await;
        let (r, _) = run(&src, &fs_grants(&d), json!({"case": "read", "path": link})).await;
        let (_, message) = failed(&r);
        assert!(!message.contains("TOP-SECRET"), "{target}: {message}");
    }
}

/// A directory requested read-write but granted read-only is read-only.
#[tokio::test]
async fn narrowed_grant_is_enforced() {
    let d = dirs();
    let src = source_with_manifest("hostile", "[fs]\n\"/out\" = { access = \"read-write\" }\n");
    let g = grants(&["--allow-read", &format!("{}:/out", d.out.display())]);
    let (r, _) = run(
        &src,
        &g,
        json!({"case": "write", "path": "/out/x.txt", "content": "x"}),
    )
    .await;
    failed(&r);
    assert!(!d.out.join("x.txt").exists());
}

/// A granted directory the skill did not request is not visible.
#[tokio::test]
async fn unrequested_grant_is_not_given() {
    let d = dirs();
    let src = source_with_manifest("hostile", "");
    let (r, _) = run(
        &src,
        &fs_grants(&d),
        json!({"case": "read", "path": "/data/hello.txt"}),
    )
    .await;
    failed(&r);
}

/// File writes go through skillbox's own output stream (written on the
/// guest's thread): large writes arrive whole and in order, a write at an
/// offset lands there, and a handle opened for reading cannot write even in
/// a writable directory.
#[tokio::test]
async fn file_streams_write_in_place_and_refuse_read_handles() {
    let d = dirs();
    let src = source_with_manifest("hostile", TABLES);
    // Several of the stream's 64 KiB writes, none of them aligned.
    let big: String = (0..300_001u32)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    let (r, _) = run(
        &src,
        &fs_grants(&d),
        json!({"case": "write", "path": "/out/big.txt", "content": big}),
    )
    .await;
    succeeded(&r);
    assert_eq!(std::fs::read_to_string(d.out.join("big.txt")).unwrap(), big);

    std::fs::write(d.out.join("digits.txt"), "0123456789").unwrap();
    let (r, _) = run(
        &src,
        &fs_grants(&d),
        json!({"case": "write", "path": "/out/digits.txt", "content": "ab", "offset": 3}),
    )
    .await;
    succeeded(&r);
    assert_eq!(
        std::fs::read_to_string(d.out.join("digits.txt")).unwrap(),
        "012ab56789"
    );

    let (r, _) = run(
        &src,
        &fs_grants(&d),
        json!({"case": "write-read-only", "path": "/out/digits.txt", "content": "zz"}),
    )
    .await;
    let (_, message) = failed(&r);
    assert!(message.contains("write /out/digits.txt"), "{message}");
    assert_eq!(
        std::fs::read_to_string(d.out.join("digits.txt")).unwrap(),
        "012ab56789",
        "nothing written through a read-only handle"
    );
}

/// `top/data` holding a regular file, a FIFO, a character device (the
/// null device's numbers, made with mknod as root) and a listening Unix
/// socket (returned, to keep it open).
fn special_files() -> (tempfile::TempDir, std::os::unix::net::UnixListener) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let top = tempfile::tempdir().unwrap();
    let data = top.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("plain.txt"), "plain").unwrap();
    let c = |name: &str| CString::new(data.join(name).as_os_str().as_bytes()).unwrap();
    // SAFETY: plain system calls on paths we own.
    unsafe {
        assert_eq!(libc::mkfifo(c("fifo").as_ptr(), 0o644), 0, "mkfifo");
        assert_eq!(
            libc::mknod(
                c("null").as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(1, 3)
            ),
            0,
            "mknod needs root (as CI runs): {}",
            std::io::Error::last_os_error()
        );
    }
    let sock = std::os::unix::net::UnixListener::bind(data.join("sock")).unwrap();
    (top, sock)
}

/// Runs the hostile guest on its own thread and runtime with `/data`
/// granted read from `top/data`, waiting at most 20 s: a run stuck in the
/// host fails the test instead of hanging it.
fn run_with_special(top: &std::path::Path, input: serde_json::Value) -> (RunReport, Recorder) {
    let flags = [
        "--allow-read".to_string(),
        format!("{}:/data", top.join("data").display()),
        "--timeout".into(),
        "3s".into(),
    ];
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let src = source_with_manifest("hostile", "[fs]\n\"/data\" = { access = \"read\" }\n");
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let out = rt.block_on(run(&src, &grants(&flags), input));
        let _ = tx.send(out);
        // A thread stuck in the host must not keep this one (and the test
        // process) waiting.
        rt.shutdown_background();
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .expect("the run did not end within 20 s of a 3 s timeout")
}

/// A FIFO, a device node or a socket inside a grant is not opened for the
/// guest: a FIFO's open waits for a writer that never comes (the run's
/// thread stuck for good), a device node reaches the host's hardware. The
/// open is refused at once and audited; regular files and directories
/// beside them open as before.
#[test]
fn non_regular_files_are_not_opened() {
    let (top, _sock) = special_files();
    for name in ["fifo", "null", "sock"] {
        let path = format!("/data/{name}");
        let started = std::time::Instant::now();
        let (r, rec) = run_with_special(top.path(), json!({"case": "read", "path": path}));
        let (kind, message) = failed(&r);
        assert_eq!(kind, FailureKind::Denied, "{name}: {message}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{name}: refused only after {:?}",
            started.elapsed()
        );
        assert!(
            rec.denials()
                .iter()
                .any(|d| d.contains(name) && d.contains("regular files and directories")),
            "{name}: {:?}",
            rec.denials()
        );
    }
    let (r, _) = run_with_special(
        top.path(),
        json!({"case": "read", "path": "/data/plain.txt"}),
    );
    assert_eq!(succeeded(&r).1["content"], "plain");
    let (r, _) = run_with_special(top.path(), json!({"case": "list", "path": "/data"}));
    let entries = succeeded(&r).1["entries"].to_string();
    assert!(
        entries.contains("fifo") && entries.contains("plain.txt"),
        "{entries}"
    );
}

/// `skillbox run` on a guest that opens a FIFO ends (before, it printed
/// the timeout and then never exited: its runtime waited on the thread
/// stuck in the open).
#[test]
fn skillbox_run_on_a_fifo_exits() {
    let (top, _sock) = special_files();
    let skill = skill_dir("hostile", "[fs]\n\"/data\" = { access = \"read\" }\n");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_skillbox"))
        .arg("run")
        .arg(skill.path())
        .arg("--allow-read")
        .arg(format!("{}:/data", top.path().join("data").display()))
        .args([
            "--timeout",
            "3s",
            "--input",
            r#"{"case": "read", "path": "/data/fifo"}"#,
        ])
        .env("SKILLBOX_CACHE_DIR", cli_cache_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("skillbox run did not exit within 20 s of a 3 s timeout");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!status.success(), "{status}");
}

/// Every change refused beneath a read-only grant is audited with the grant
/// and the flag that makes it writable, also beneath a subdirectory of it;
/// the same changes in the writable grant go through.
#[tokio::test]
async fn changes_refused_beneath_a_read_only_grant_name_the_grant() {
    let d = dirs();
    std::fs::create_dir(d.data.join("sub")).unwrap();
    let src = source_with_manifest("hostile", TABLES);
    let flag = format!(
        "grant it read-write with --allow-write {}:/data",
        d.data.canonicalize().unwrap().display()
    );
    let cases = [
        (
            "open sub/new.txt for writing",
            json!({"case": "write", "path": "/data/sub/new.txt", "content": "x"}),
        ),
        (
            "create directory made",
            json!({"case": "mkdir", "path": "/data/made"}),
        ),
        (
            "remove hello.txt",
            json!({"case": "remove", "path": "/data/hello.txt"}),
        ),
        (
            "rename hello.txt to moved.txt",
            json!({"case": "rename", "from": "/data/hello.txt", "to": "/data/moved.txt"}),
        ),
        (
            "create symlink sub/ln",
            json!({"case": "symlink", "target": "hello.txt", "link": "/data/sub/ln"}),
        ),
        (
            "link hl to hello.txt",
            json!({"case": "hardlink", "target": "/data/hello.txt", "link": "/data/hl"}),
        ),
    ];
    for (what, input) in cases {
        let (r, rec) = run(&src, &fs_grants(&d), input).await;
        failed(&r);
        let audits: Vec<String> = rec
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Audit {
                    capability: "fs",
                    detail,
                    allowed: false,
                    reason,
                } => Some(format!("{detail}: {reason}")),
                _ => None,
            })
            .collect();
        assert!(
            audits.iter().any(|a| a.contains(what) && a.contains(&flag)),
            "{what}: {audits:?}"
        );
    }
    assert!(d.data.join("hello.txt").exists() && !d.data.join("made").exists());
    assert!(!d.data.join("moved.txt").exists() && !d.data.join("sub/ln").exists());

    // Allowed where the grant is writable.
    for input in [
        json!({"case": "mkdir", "path": "/out/made"}),
        json!({"case": "write", "path": "/out/f.txt", "content": "x"}),
        json!({"case": "rename", "from": "/out/f.txt", "to": "/out/g.txt"}),
        json!({"case": "symlink", "target": "g.txt", "link": "/out/ln"}),
        json!({"case": "remove", "path": "/out/ln"}),
    ] {
        let (r, rec) = run(&src, &fs_grants(&d), input.clone()).await;
        succeeded(&r);
        assert!(rec.denials().is_empty(), "{input}: {:?}", rec.denials());
    }
    assert!(d.out.join("made").is_dir() && d.out.join("g.txt").is_file());
    assert!(!d.out.join("ln").exists());
}
