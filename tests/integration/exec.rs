//! `exec`: allow rules, denials, clean environment, timeouts, process
//! groups and the Landlock sandbox around exec'd programs.

use serde_json::json;
use skillbox::prelude::*;

use crate::harness::*;

/// A skill allowed `sh -c *` with a writable `/w`, plus `extra` grant flags.
fn sh_in_writable_dir(extra: &[&str]) -> (tempfile::TempDir, SkillSource, Grants) {
    let dir = tempfile::tempdir().unwrap();
    let src = source_with_manifest(
        "hostile",
        "[fs]\n\"/w\" = { access = \"read-write\" }\n[exec]\nallow = [ { program = \"sh\", args = [\"-c\", \"*\"] } ]\n",
    );
    let w = format!("{}:/w", dir.path().display());
    let mut flags = vec!["--allow-exec", "sh -c *", "--allow-write", &w];
    flags.extend_from_slice(extra);
    let g = grants(&flags);
    (dir, src, g)
}

/// A `sleep` length no other test uses, to find the process by its
/// command line (pids inside a run's namespace mean nothing outside it).
fn unique_sleep(test: u32) -> String {
    format!("{}", 300_000 + (std::process::id() % 1000) * 100 + test)
}

fn exec(program: &str, args: &[&str]) -> serde_json::Value {
    json!({"case": "exec", "program": program, "args": args})
}

const ECHO: &str = "[exec]\nallow = [ { program = \"echo\", args = [\"hi\", \"*\"] } ]\n";

#[tokio::test]
async fn a_granted_program_runs() {
    let src = source_with_manifest("hostile", ECHO);
    let (r, rec) = run(
        &src,
        &grants(&["--allow-exec", "echo hi *"]),
        exec("echo", &["hi", "there"]),
    )
    .await;
    let (_, data) = succeeded(&r);
    assert_eq!(data["status"], 0);
    assert_eq!(data["stdout"], "hi there\n");
    assert!(rec.events().iter().any(|e| matches!(
        e,
        Event::Audit {
            capability: "exec",
            allowed: true,
            ..
        }
    )));
}

#[tokio::test]
async fn denials_name_the_rule() {
    let src = source_with_manifest("hostile", ECHO);
    let g = grants(&["--allow-exec", "echo hi *"]);
    let cases: &[(&str, serde_json::Value, &str)] = &[
        (
            "program not allowlisted",
            exec("cat", &["/etc/passwd"]),
            "no exec rule names program \"cat\"",
        ),
        (
            "disallowed arguments",
            exec("echo", &["bye"]),
            "arguments match none",
        ),
        (
            "too many arguments",
            exec("echo", &["hi", "a", "b"]),
            "arguments match none",
        ),
        (
            "sh -c smuggling",
            exec("sh", &["-c", "cat /etc/shadow"]),
            "no shell",
        ),
        (
            "a shell line as the program",
            exec("echo hi; cat /etc/passwd", &[]),
            "must be a bare name",
        ),
        (
            "a relative path as the program",
            exec("./echo", &["hi", "x"]),
            "must be a bare name",
        ),
        (
            "a shell line without a slash",
            exec("echo hi; id", &[]),
            "no exec rule names program",
        ),
        (
            "env smuggling",
            exec("env", &["sh", "-c", "id"]),
            "no exec rule names program \"env\"",
        ),
    ];
    for (name, input, needle) in cases {
        let (r, rec) = run(&src, &g, input.clone()).await;
        let (kind, message) = failed(&r);
        assert_eq!(kind, FailureKind::Denied, "{name}: {message}");
        assert!(message.contains(needle), "{name}: {message}");
        assert!(
            rec.denials().iter().any(|d| d.contains(needle)),
            "{name}: not audited"
        );
    }
}

#[tokio::test]
async fn requested_but_not_granted_is_denied() {
    let src = source_with_manifest("hostile", ECHO);
    let (r, _) = run(&src, &Grants::default(), exec("echo", &["hi", "x"])).await;
    let (kind, message) = failed(&r);
    assert_eq!(kind, FailureKind::Denied);
    assert!(message.contains("not granted by the operator"), "{message}");
    assert!(message.contains("--allow-exec"), "{message}");
}

#[tokio::test]
async fn granted_but_not_requested_is_denied() {
    let src = source_with_manifest("hostile", "");
    let (r, _) = run(
        &src,
        &grants(&["--allow-exec", "echo **"]),
        exec("echo", &["hi"]),
    )
    .await;
    let (kind, message) = failed(&r);
    assert_eq!(kind, FailureKind::Denied);
    assert!(message.contains("manifest does not request"), "{message}");
}

#[tokio::test]
async fn child_environment_is_clean() {
    let (secret, visible) = test_env();
    let src = source_with_manifest(
        "hostile",
        "[exec]\nallow = [ { program = \"env\" } ]\n[env]\nallow = [\"SKILLBOX_TEST_VISIBLE\"]\n",
    );
    let g = grants(&[
        "--allow-exec",
        "env",
        "--allow-env",
        "SKILLBOX_TEST_VISIBLE",
    ]);
    let (r, _) = run(&src, &g, exec("env", &[])).await;
    let out = succeeded(&r).1["stdout"].as_str().unwrap().to_string();
    assert!(
        out.contains(&format!("SKILLBOX_TEST_VISIBLE={visible}")),
        "{out}"
    );
    assert!(!out.contains(&secret), "{out}");
    assert!(!out.contains("HOME="), "{out}");

    // Passing an ungranted variable is refused.
    let input = json!({"case": "exec", "program": "env", "args": [], "env": [["SKILLBOX_TEST_SECRET", "x"]]});
    let (r, _) = run(&src, &g, input).await;
    let (kind, message) = failed(&r);
    assert_eq!(kind, FailureKind::Denied);
    assert!(message.contains("SKILLBOX_TEST_SECRET"), "{message}");
}

#[tokio::test]
async fn working_directory_must_be_granted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), "inside").unwrap();
    let src = source_with_manifest(
        "hostile",
        "[fs]\n\"/data\" = { access = \"read\" }\n[exec]\nallow = [ { program = \"cat\", args = [\"*\"] } ]\n",
    );
    let g = grants(&[
        "--allow-exec",
        "cat *",
        "--allow-read",
        &format!("{}:/data", dir.path().display()),
    ]);
    let (r, _) = run(
        &src,
        &g,
        json!({"case": "exec", "program": "cat", "args": ["f.txt"], "cwd": "/data"}),
    )
    .await;
    assert_eq!(succeeded(&r).1["stdout"], "inside");
    for cwd in ["/etc", "/data/..", "/"] {
        let (r, _) = run(
            &src,
            &g,
            json!({"case": "exec", "program": "cat", "args": ["f.txt"], "cwd": cwd}),
        )
        .await;
        let (kind, message) = failed(&r);
        assert_eq!(kind, FailureKind::Denied, "{cwd}: {message}");
        assert!(message.contains("working directory"), "{cwd}: {message}");
    }
}

/// Landlock: a granted program still cannot read outside the granted dirs.
#[tokio::test]
async fn exec_children_are_confined_by_landlock() {
    let status = skillbox::caps::sandbox::status();
    assert!(status.landlock.is_some(), "no Landlock here: {status}");
    let top = tempfile::tempdir().unwrap();
    let data = top.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("ok.txt"), "granted").unwrap();
    std::fs::write(top.path().join("secret.txt"), "TOP-SECRET").unwrap();
    let src = source_with_manifest(
        "hostile",
        "[fs]\n\"/data\" = { access = \"read\" }\n[exec]\nallow = [ { program = \"cat\", args = [\"*\"] }, { program = \"touch\", args = [\"*\"] } ]\n",
    );
    let g = grants(&[
        "--allow-exec",
        "cat *",
        "--allow-exec",
        "touch *",
        "--allow-read",
        &format!("{}:/data", data.display()),
    ]);
    let run_cat = |path: String| {
        let src = src.clone();
        let g = g.clone();
        async move {
            run(
                &src,
                &g,
                json!({"case": "exec", "program": "cat", "args": [path], "cwd": "/data"}),
            )
            .await
            .0
        }
    };
    let r = run_cat("ok.txt".into()).await;
    assert_eq!(succeeded(&r).1["stdout"], "granted");
    for path in [
        top.path().join("secret.txt").display().to_string(),
        "../secret.txt".into(),
        "/etc/hostname".into(),
    ] {
        let r = run_cat(path.clone()).await;
        let data = succeeded(&r).1.clone();
        assert_ne!(data["status"], 0, "{path}: {data}");
        assert!(!data["stdout"].as_str().unwrap().contains("TOP-SECRET"));
        assert!(
            data["stderr"]
                .as_str()
                .unwrap()
                .contains("Permission denied"),
            "{path}: {data}"
        );
    }
    // Read-only grant: the program cannot write there either.
    let (r, _) = run(
        &src,
        &g,
        json!({"case": "exec", "program": "touch", "args": ["new"], "cwd": "/data"}),
    )
    .await;
    assert_ne!(succeeded(&r).1["status"], 0);
    assert!(!data.join("new").exists());
}

/// A call past its timeout is killed with its whole process group,
/// including a background grandchild.
#[tokio::test]
async fn timeouts_kill_the_process_group() {
    let (_dir, src, g) = sh_in_writable_dir(&[]);
    let sleep = unique_sleep(1);
    let input = json!({"case": "exec", "program": "sh", "args": ["-c", format!("sleep {sleep} & wait")], "cwd": "/w", "timeout_ms": 300});
    let (r, rec) = run(&src, &g, input).await;
    let (_, message) = failed(&r);
    assert!(message.contains("timed out"), "{message}");
    assert!(
        rec.events()
            .iter()
            .any(|e| matches!(e, Event::Audit { reason, .. } if reason.contains("timed out")))
    );
    // Killed with SIGKILL; it may linger briefly as a zombie until reaped.
    assert!(
        wait_none_with(
            &format!("sleep {sleep}"),
            std::time::Duration::from_secs(10)
        ),
        "the grandchild survived the timeout"
    );
}

/// When the program exits, what it left in the background is killed too.
#[tokio::test]
async fn background_children_die_with_the_call() {
    let (_dir, src, g) = sh_in_writable_dir(&[]);
    let sleep = unique_sleep(2);
    let input = json!({"case": "exec", "program": "sh", "args": ["-c", format!("sleep {sleep} > /dev/null 2>&1 &")], "cwd": "/w"});
    let (r, _) = run(&src, &g, input).await;
    assert_eq!(succeeded(&r).1["status"], 0);
    assert!(
        wait_none_with(
            &format!("sleep {sleep}"),
            std::time::Duration::from_secs(10)
        ),
        "a background child outlived the call"
    );
}

#[tokio::test]
async fn exec_output_is_capped() {
    let src = source_with_manifest(
        "hostile",
        "[exec]\nallow = [ { program = \"head\", args = [\"-c\", \"*\", \"/dev/zero\"] } ]\n",
    );
    let g = grants(&["--allow-exec", "head -c * /dev/zero", "--output", "4KiB"]);
    let input = json!({"case": "exec", "program": "head", "args": ["-c", "1000000", "/dev/zero"], "quiet": true});
    let (r, _) = run(&src, &g, input).await;
    let data = succeeded(&r).1;
    assert_eq!(data["truncated"], true);
    assert_eq!(data["stdout_len"], 4096);
    let input = json!({"case": "exec", "program": "head", "args": ["-c", "100", "/dev/zero"], "quiet": true});
    let (r, _) = run(&src, &g, input).await;
    let data = succeeded(&r).1;
    assert_eq!(data["truncated"], false);
    assert_eq!(data["stdout_len"], 100);
}

#[tokio::test]
async fn stdin_reaches_the_program() {
    let src = source_with_manifest("hostile", "[exec]\nallow = [ { program = \"cat\" } ]\n");
    let input = json!({"case": "exec", "program": "cat", "args": [], "stdin": "piped in"});
    let (r, _) = run(&src, &grants(&["--allow-exec", "cat"]), input).await;
    assert_eq!(succeeded(&r).1["stdout"], "piped in");
}

/// When the whole run times out while the guest waits on a program, the
/// program's process group dies with the run.
#[tokio::test]
async fn run_timeout_kills_a_running_program() {
    let (_dir, src, g) = sh_in_writable_dir(&["--timeout", "700ms"]);
    let sleep = unique_sleep(3);
    let input = json!({"case": "exec", "program": "sh", "args": ["-c", format!("sleep {sleep} & wait")], "cwd": "/w"});
    let (r, _) = run(&src, &g, input).await;
    assert!(
        matches!(r.outcome, Outcome::TimedOut { .. }),
        "{:?}",
        r.outcome
    );
    assert!(
        wait_none_with(
            &format!("sleep {sleep}"),
            std::time::Duration::from_secs(10)
        ),
        "a program outlived the run"
    );
}

/// A `path:` argument pattern makes that argument a guest path: the host
/// hands the program the host path it names beneath a granted directory,
/// and refuses one outside every grant, with `..`, or through a symlink
/// that leaves its grant. A plain pattern passes the text as it is.
#[tokio::test]
async fn path_arguments_are_mapped_to_granted_directories() {
    let top = tempfile::tempdir().unwrap();
    let (data, out) = (top.path().join("data"), top.path().join("out"));
    std::fs::create_dir(&data).unwrap();
    std::fs::create_dir(&out).unwrap();
    std::fs::write(data.join("hello.txt"), "hello from /data").unwrap();
    std::fs::write(top.path().join("secret.txt"), "TOP-SECRET").unwrap();
    std::os::unix::fs::symlink(top.path().join("secret.txt"), data.join("link-out")).unwrap();
    let src = source_with_manifest(
        "hostile",
        "[fs]\n\"/data\" = { access = \"read\" }\n\"/out\" = { access = \"read-write\" }\n\
         [exec]\nallow = [ { program = \"cp\", args = [\"path:/data/*\", \"path:/out/*\"] },\n\
         { program = \"cat\", args = [\"*\"] } ]\n",
    );
    let g = grants(&[
        "--allow-read",
        &format!("{}:/data", data.display()),
        "--allow-write",
        &format!("{}:/out", out.display()),
        "--allow-exec",
        "cp path:/data/* path:/out/*",
        "--allow-exec",
        "cat *",
    ]);
    // Allowed: both paths mapped; the file the program makes is new.
    let (r, _) = run(&src, &g, exec("cp", &["/data/hello.txt", "/out/copy.txt"])).await;
    assert_eq!(succeeded(&r).1["status"], 0, "{:?}", r.outcome);
    assert_eq!(
        std::fs::read_to_string(out.join("copy.txt")).unwrap(),
        "hello from /data"
    );
    // Refused, each with why, and the program never ran.
    for (args, needle) in [
        (
            ["/data/hello.txt", "/out/../escaped.txt"],
            "must not contain '..'",
        ),
        (
            ["/data/../secret.txt", "/out/x.txt"],
            "must not contain '..'",
        ),
        (
            ["/data/link-out", "/out/y.txt"],
            "resolves outside its granted directory",
        ),
        (
            ["/data/nope/deeper", "/out/z.txt"],
            "No such file or directory",
        ),
    ] {
        let (r, rec) = run(&src, &g, exec("cp", &args)).await;
        let (_, message) = failed(&r);
        assert!(
            message.contains("is a guest path, and") && message.contains(needle),
            "{args:?}: {message}"
        );
        assert!(!rec.denials().is_empty(), "{args:?}: audited");
    }
    assert!(!top.path().join("escaped.txt").exists());
    assert!(!out.join("x.txt").exists() && !out.join("y.txt").exists());
    // A pattern without `path:` hands the guest's text over unchanged: the
    // host has no /data, so cat cannot read it.
    let (r, _) = run(&src, &g, exec("cat", &["/data/hello.txt"])).await;
    let data = succeeded(&r).1;
    assert_ne!(data["status"], 0, "{data}");
}
