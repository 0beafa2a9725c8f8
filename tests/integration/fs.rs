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
