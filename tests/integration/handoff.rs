//! `skillbox run` handed to a daemon's run server (`SKILLBOX_RUN_VIA`):
//! the same output, exit codes and effects as a run in the calling
//! process, a fallback when no server takes it, and signals that reach it.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::daemon::Daemon;
use crate::harness::*;

/// A daemon on a fresh data dir, once its run server listens.
fn daemon() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    for _ in 0..600 {
        if dir.path().join("run.sock").exists() {
            return (dir, d);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the run server did not start: {}", d.log());
}

/// `exe` (a `skillbox` front end) for the daemon on `data_dir`, `via`
/// where its runs go, with the suite's cache and no key store.
fn skillbox_via(exe: &Path, data_dir: &Path, via: &str) -> Command {
    let mut cmd = Command::new(exe);
    cmd.env("SKILLBOX_RUN_VIA", via)
        .env("SKILLBOX_DATA_DIR", data_dir)
        .env("SKILLBOX_CACHE_DIR", cli_cache_dir())
        .env("SKILLBOX_KEYS", "/nonexistent/skillbox-keys");
    cmd
}

/// `skillbox ARGS` run by `exe` from `cwd`, `via` where the run goes, with
/// `stdin` as its input.
fn run_via(
    exe: &Path,
    data_dir: &Path,
    via: &str,
    cwd: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &str,
) -> CliOutput {
    let mut child = skillbox_via(exe, data_dir, via)
        .args(args)
        .current_dir(cwd)
        .env(
            "SKILLBOX_CLIENT_CONFIG",
            "/nonexistent/skillbox-client.toml",
        )
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running skillbox");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn front_end() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skillbox"))
}

/// Output with every number replaced: durations differ between two runs
/// of the same thing ("in 2 ms", "in under 1 ms").
fn without_figures(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_number = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out.replace("under N", "N")
}

#[test]
fn a_handed_off_run_prints_exits_and_acts_as_one_in_process() {
    let (data, _daemon) = daemon();
    let guests = guest("hello").parent().unwrap().to_owned();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("note.txt"), "from the caller's directory").unwrap();
    std::fs::write(work.path().join("input.json"), r#"{"name":"file"}"#).unwrap();
    let work_dir = work.path().to_str().unwrap().to_owned();
    let read_note =
        serde_json::json!({"case": "read", "path": format!("{work_dir}/note.txt")}).to_string();
    let read_missing =
        serde_json::json!({"case": "read", "path": format!("{work_dir}/missing.txt")}).to_string();
    let hello = guest("hello");
    let hostile = guest("hostile");
    let (hello, hostile) = (hello.to_str().unwrap(), hostile.to_str().unwrap());
    let only_here = [("SKILLBOX_HANDOFF_TEST", "the caller's value")];
    // (what, cwd, args, stdin, exit code)
    let cases: Vec<(&str, &Path, Vec<&str>, &str, i32)> = vec![
        (
            "success",
            &guests,
            vec!["run", "hello.wasm", "-i", r#"{"name":"x"}"#],
            "",
            0,
        ),
        (
            "--json",
            &guests,
            vec!["run", hello, "--json", "-i", r#"{"name":"y"}"#],
            "",
            0,
        ),
        (
            "input on stdin",
            &guests,
            vec!["run", hello, "-i", "-"],
            r#"{"name":"z"}"#,
            0,
        ),
        (
            "invalid input",
            &guests,
            vec!["run", hello, "-i", "{not json"],
            "",
            4,
        ),
        (
            "a relative path (input from a file)",
            work.path(),
            vec!["run", hello, "-i", "@input.json"],
            "",
            0,
        ),
        (
            "a relative grant, refused",
            work.path(),
            vec![
                "run",
                hostile,
                "--allow-read",
                ".",
                "-i",
                r#"{"case":"env"}"#,
            ],
            "",
            4,
        ),
        (
            "a granted read",
            work.path(),
            vec!["run", hostile, "--allow-read", &work_dir, "-i", &read_note],
            "",
            0,
        ),
        (
            "a denial",
            work.path(),
            vec![
                "run",
                hostile,
                "-i",
                r#"{"case":"exec","program":"/bin/true","args":[]}"#,
            ],
            "",
            3,
        ),
        (
            "a failure",
            work.path(),
            vec![
                "run",
                hostile,
                "--allow-read",
                &work_dir,
                "-i",
                &read_missing,
            ],
            "",
            1,
        ),
        (
            "a usage error",
            &guests,
            vec!["run", "--no-such-flag", "hello.wasm"],
            "",
            2,
        ),
        ("help", &guests, vec!["run", "--help"], "", 0),
        (
            "a granted variable of the caller's environment",
            work.path(),
            vec![
                "run",
                hostile,
                "--allow-env",
                "SKILLBOX_HANDOFF_TEST",
                "-i",
                r#"{"case":"env-get","name":"SKILLBOX_HANDOFF_TEST"}"#,
            ],
            "",
            0,
        ),
    ];
    for (what, cwd, args, stdin, code) in cases {
        let here = run_via(
            &front_end(),
            data.path(),
            "process",
            cwd,
            &args,
            &only_here,
            stdin,
        );
        let there = run_via(
            &front_end(),
            data.path(),
            "daemon",
            cwd,
            &args,
            &only_here,
            stdin,
        );
        assert_eq!(here.code, code, "{what}, in process: {here:?}");
        assert_eq!(there.code, code, "{what}, handed off: {there:?}");
        assert_eq!(
            without_figures(&there.stdout),
            without_figures(&here.stdout),
            "{what}: stdout"
        );
        assert_eq!(
            without_figures(&there.stderr),
            without_figures(&here.stderr),
            "{what}: stderr"
        );
    }
    // The granted variable's value is the caller's, not the daemon's.
    let there = run_via(
        &front_end(),
        data.path(),
        "daemon",
        work.path(),
        &[
            "run",
            hostile,
            "--json",
            "--allow-env",
            "SKILLBOX_HANDOFF_TEST",
            "-i",
            r#"{"case":"env-get","name":"SKILLBOX_HANDOFF_TEST"}"#,
        ],
        &only_here,
        "",
    );
    assert!(
        there.stdout.contains("the caller's value"),
        "{}",
        there.stdout
    );
}

#[test]
fn without_a_run_server_a_run_stays_in_process_unless_the_daemon_is_required() {
    let empty = tempfile::tempdir().unwrap();
    let guests = guest("hello").parent().unwrap().to_owned();
    let args = ["run", "hello.wasm", "-i", r#"{"name":"x"}"#];
    let auto = run_via(&front_end(), empty.path(), "auto", &guests, &args, &[], "");
    assert_eq!(auto.code, 0, "{auto:?}");
    assert!(auto.stdout.contains("Hello, x!"), "{}", auto.stdout);
    let required = run_via(
        &front_end(),
        empty.path(),
        "daemon",
        &guests,
        &args,
        &[],
        "",
    );
    assert_eq!(required.code, 8, "{required:?}");
    assert!(
        required.stderr.contains("no daemon took the run"),
        "{}",
        required.stderr
    );
    let bad = run_via(
        &front_end(),
        empty.path(),
        "sideways",
        &guests,
        &args,
        &[],
        "",
    );
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("SKILLBOX_RUN_VIA"), "{}", bad.stderr);
}

/// A daemon started from another `skillbox-host` (an upgrade since) does
/// not take the runs of this one's front end.
#[test]
fn a_run_server_of_another_build_does_not_take_the_run() {
    let (data, _daemon) = daemon();
    let install = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_skillbox")).parent().unwrap();
    for name in ["skillbox", "skillbox-host", "skillbox-jail"] {
        std::fs::copy(bin.join(name), install.path().join(name)).unwrap();
    }
    let other = install.path().join("skillbox");
    let guests = guest("hello").parent().unwrap().to_owned();
    let args = ["run", "hello.wasm", "-i", r#"{"name":"x"}"#];
    let required = run_via(&other, data.path(), "daemon", &guests, &args, &[], "");
    assert_eq!(required.code, 8, "{required:?}");
    assert!(
        required.stderr.contains("another skillbox-host"),
        "{}",
        required.stderr
    );
    let auto = run_via(&other, data.path(), "auto", &guests, &args, &[], "");
    assert_eq!(auto.code, 0, "{auto:?}");
    assert!(auto.stdout.contains("Hello, x!"), "{}", auto.stdout);
}

/// Ctrl-C (SIGINT) or SIGTERM on the front end ends a handed-off run the
/// way it ends one in process: the command dies of the signal.
#[test]
fn a_signal_to_the_front_end_ends_the_handed_off_run() {
    let (data, _daemon) = daemon();
    let hostile = guest("hostile");
    for (via, signal) in [
        ("process", libc::SIGINT),
        ("daemon", libc::SIGINT),
        ("daemon", libc::SIGTERM),
    ] {
        let mut child = skillbox_via(&front_end(), data.path(), via)
            .args(["run", "--quiet", "-i", r#"{"case":"sleep","ms":600000}"#])
            .arg(&hostile)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Long enough for the run to be under way; the signal ends it
        // either way.
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let mut status = None;
        for _ in 0..1200 {
            if let Some(s) = child.try_wait().unwrap() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let Some(status) = status else {
            let _ = child.kill();
            panic!("{via}: the run did not end after signal {signal}");
        };
        assert_eq!(status.signal(), Some(signal), "{via}: {status:?}");
    }
}

/// Runs handed off at once, each from a directory, environment and umask
/// of its own: each run sees its caller's, in the guest, in the programs
/// it runs and in the files both make.
#[test]
fn runs_handed_off_at_once_each_keep_their_callers_directory_environment_and_umask() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let (data, _daemon) = daemon();
    let hostile = guest("hostile");
    let callers: Vec<(u32, tempfile::TempDir)> = [0o022, 0o077, 0o002, 0o027, 0o007, 0o066]
        .into_iter()
        .map(|umask| (umask, tempfile::tempdir().unwrap()))
        .collect();
    let mut runs = Vec::new();
    for (umask, work) in &callers {
        let dir = work.path().to_str().unwrap().to_owned();
        // Relative paths: each is found in its caller's directory only.
        std::fs::write(
            work.path().join("exec.json"),
            serde_json::json!({
                "case": "exec", "program": "sh",
                "args": ["-c", "sleep 0.2; umask; echo \"$SKILLBOX_HANDOFF_TEST\"; : > by-program"],
            })
            .to_string(),
        )
        .unwrap();
        std::fs::write(
            work.path().join("write.json"),
            serde_json::json!({"case": "write", "path": format!("{dir}/by-guest"), "content": "x"})
                .to_string(),
        )
        .unwrap();
        for input in ["@exec.json", "@write.json"] {
            let umask = *umask;
            let mut cmd = skillbox_via(&front_end(), data.path(), "daemon");
            cmd.args(["run", "--json", "--allow-exec", "sh -c *", "--allow-write"])
                .arg(&dir)
                .args(["--allow-env", "SKILLBOX_HANDOFF_TEST", "-i", input])
                .arg(&hostile)
                .current_dir(work.path())
                .env("SKILLBOX_HANDOFF_TEST", format!("caller {umask:o}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            // SAFETY: umask(2) is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(umask);
                    Ok(())
                })
            };
            runs.push((umask, input, cmd.spawn().unwrap()));
        }
    }
    for (umask, input, child) in runs {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{umask:o} {input}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if input == "@exec.json" {
            let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            let printed = report["data"]["stdout"].as_str().unwrap_or_default();
            assert_eq!(
                printed,
                format!("{umask:04o}\ncaller {umask:o}\n"),
                "{umask:o}: {report}"
            );
        }
    }
    for (umask, work) in &callers {
        for made in ["by-program", "by-guest"] {
            let mode = std::fs::metadata(work.path().join(made))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o666 & !umask, "{made} under umask {umask:o}");
        }
    }
}

/// A handed-off run whose caller closed its stdout ends as one in process
/// does (quietly, 0), and the run server goes on taking runs.
#[test]
fn a_closed_stdout_ends_only_that_run() {
    let (data, _daemon) = daemon();
    let guests = guest("hello").parent().unwrap().to_owned();
    for via in ["process", "daemon"] {
        let mut child = skillbox_via(&front_end(), data.path(), via)
            .args(["run", "hello.wasm", "-i", r#"{"name":"x"}"#])
            .current_dir(&guests)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{via}: {status:?}");
    }
    let after = run_via(
        &front_end(),
        data.path(),
        "daemon",
        &guests,
        &["run", "hello.wasm", "-i", r#"{"name":"after"}"#],
        &[],
        "",
    );
    assert_eq!(after.code, 0, "{after:?}");
    assert!(after.stdout.contains("Hello, after!"), "{}", after.stdout);
}
