//! The `skillbox` binary end to end: real skills, exit codes, refusals.

use std::path::Path;
use std::process::Command;

use crate::harness::*;

fn p(d: &Path) -> &str {
    d.to_str().unwrap()
}

#[test]
fn hello_runs_end_to_end_and_is_cached() {
    let skill = real_skill("hello");
    let out = cli(
        &["run", p(skill.path()), "--input", r#"{"name": "agent"}"#],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The message a parent session would get.
    assert!(
        out.stdout.starts_with("**hello** succeeded in ")
            && out.stdout.contains("\n\nHello, agent! 👋"),
        "{}",
        out.stdout
    );

    let out = cli(
        &[
            "run",
            p(skill.path()),
            "--json",
            "--input",
            r#"{"name": "agent"}"#,
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["outcome"], "succeeded");
    assert_eq!(v["cache"], "hit", "the second run must not recompile: {v}");
    assert_eq!(v["exit_code"], 0);
    assert!(v["text"].as_str().unwrap().contains("agent"));
}

#[test]
fn disk_report_uses_fs_and_exec() {
    let skill = real_skill("disk-report");
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir(data.path().join("logs")).unwrap();
    std::fs::write(data.path().join("logs/app.log"), vec![b'x'; 300_000]).unwrap();
    std::fs::write(data.path().join("small.txt"), "tiny").unwrap();
    let read = format!("{}:/data", p(data.path()));

    // Nothing granted: refused before the run, with the flags to grant.
    let out = cli(&["run", p(skill.path())], &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("--allow-read HOST-DIR:/data"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--allow-exec"), "{}", out.stderr);

    // Everything it asks for: a full report.
    let out = cli(
        &[
            "run",
            p(skill.path()),
            "--json",
            "--allow-read",
            &read,
            "--allow-exec",
            "du -k -d 1 .",
            "--allow-exec",
            "stat -f -c '%b %f %S' .",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let v = out.json();
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("app.log"), "{text}");
    assert_eq!(v["sandbox"]["pid_namespace"], true, "{v}");
    assert_eq!(v["sandbox"]["seccomp"], true, "{v}");

    // Only the directory (--partial): the walk still works, exec is refused
    // and the summary says so.
    let out = cli(
        &[
            "run",
            p(skill.path()),
            "--partial",
            "--json",
            "--allow-read",
            &read,
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.json()["text"].as_str().unwrap().to_string();
    assert!(text.contains("app.log"), "{text}");
    assert!(
        text.to_lowercase().contains("denied") || text.to_lowercase().contains("refused"),
        "{text}"
    );
}

#[test]
fn dry_run_and_inspect_show_requested_vs_granted() {
    let skill = real_skill("disk-report");
    let data = tempfile::tempdir().unwrap();
    let read = format!("{}:/data", p(data.path()));
    let out = cli(
        &["run", p(skill.path()), "--dry-run", "--allow-read", &read],
        &[],
    );
    assert_eq!(out.code, 3, "{}", out.stdout);
    assert!(out.stdout.contains("granted"), "{}", out.stdout);
    assert!(out.stdout.contains("NOT GRANTED"), "{}", out.stdout);
    assert!(out.stdout.contains("Landlock"), "{}", out.stdout);

    let out = cli(
        &[
            "inspect",
            p(skill.path()),
            "--json",
            "--allow-read",
            &read,
            "--allow-exec",
            "du **",
            "--allow-exec",
            "stat **",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    let v = out.json();
    assert_eq!(v["will_run"], true);
    assert_eq!(v["kind"], "skill");
    assert_eq!(v["pinned"], true);
    assert_eq!(v["effective"]["preopens"][0]["guest"], "/data");
}

#[test]
fn refusals_have_distinct_exit_codes() {
    let hostile = skill_dir(
        "hostile",
        "[exec]\nallow = [ { program = \"cat\", args = [\"*\"] } ]\n",
    );
    let h = p(hostile.path());
    let out = cli(
        &[
            "run",
            h,
            "--partial",
            "--input",
            r#"{"case": "exec", "program": "cat", "args": ["/etc/passwd"]}"#,
        ],
        &[],
    );
    assert_eq!(out.code, 3, "denied: {}", out.stderr);
    assert!(
        out.stderr.contains("not granted by the operator"),
        "{}",
        out.stderr
    );

    let out = cli(
        &[
            "run",
            h,
            "--partial",
            "--timeout",
            "300ms",
            "--input",
            r#"{"case": "loop"}"#,
        ],
        &[],
    );
    assert_eq!(out.code, 5, "timed out: {}", out.stderr);
    assert!(out.stderr.contains("timed out"), "{}", out.stderr);

    let out = cli(
        &[
            "run",
            h,
            "--partial",
            "--memory",
            "16MiB",
            "--input",
            r#"{"case": "memory-bomb"}"#,
        ],
        &[],
    );
    assert_eq!(out.code, 6, "limit: {}", out.stderr);
    assert!(out.stderr.contains("memory limit"), "{}", out.stderr);

    let out = cli(
        &["run", h, "--partial", "--input", r#"{"case": "panic"}"#],
        &[],
    );
    assert_eq!(out.code, 1, "crash: {}", out.stderr);

    let out = cli(&["run", h, "--partial", "--input", "{not json"], &[]);
    assert_eq!(out.code, 4, "bad input: {}", out.stderr);
    assert!(out.stderr.contains("not valid JSON"), "{}", out.stderr);

    let hello = real_skill("hello");
    let out = cli(&["run", p(hello.path()), "--input", r#"{"name": 5}"#], &[]);
    assert_eq!(out.code, 4, "typed input: {}", out.stderr);
    assert!(out.stderr.contains("rejected its input"), "{}", out.stderr);

    let out = cli(&["run", p(hello.path()), "--json", "--input", "[1"], &[]);
    assert_eq!(out.code, 4);
    assert_eq!(out.json()["error"]["exit_code"], 4);
}

#[test]
fn tampered_and_malformed_skills_are_refused() {
    // Digest mismatch: one byte changed after pinning.
    let skill = real_skill("hello");
    let wasm = skill.path().join("skill.wasm");
    let mut bytes = std::fs::read(&wasm).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&wasm, &bytes).unwrap();
    let out = cli(&["run", p(skill.path())], &[]);
    assert_eq!(out.code, 4);
    assert!(out.stderr.contains("digest mismatch"), "{}", out.stderr);

    // Unpinned manifest.
    let skill = real_skill("hello");
    let m = skill.path().join("skill.toml");
    let text = std::fs::read_to_string(&m).unwrap();
    let unpinned = text
        .lines()
        .map(|l| {
            if l.starts_with("sha256") {
                "sha256 = \"\""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&m, &unpinned).unwrap();
    let out = cli(&["run", p(skill.path())], &[]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("pins no sha256"), "{}", out.stderr);
    let out = cli(&["run", p(skill.path()), "--allow-unpinned"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Unknown field and malformed TOML.
    std::fs::write(&m, format!("{text}\n[env]\nallow_all = true\n")).unwrap();
    let out = cli(&["run", p(skill.path())], &[]);
    assert_eq!(out.code, 4);
    assert!(
        out.stderr.contains("unknown field `allow_all`"),
        "{}",
        out.stderr
    );
    std::fs::write(&m, "[skill\nname = ").unwrap();
    let out = cli(&["run", p(skill.path())], &[]);
    assert_eq!(out.code, 4);
    assert!(out.stderr.contains("invalid manifest"), "{}", out.stderr);

    // Not a component at all, and a core module.
    let dir = tempfile::tempdir().unwrap();
    for (file, bytes, needle) in [
        (
            "script.wasm",
            b"#!/bin/sh\nrm -rf /\n".to_vec(),
            "not a WebAssembly file",
        ),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0".to_vec(),
            "core WebAssembly module",
        ),
    ] {
        let f = dir.path().join(file);
        std::fs::write(&f, bytes).unwrap();
        let out = cli(&["run", p(&f)], &[]);
        assert_eq!(out.code, 4, "{file}");
        assert!(out.stderr.contains(needle), "{file}: {}", out.stderr);
    }
    // A component-looking file that does not validate.
    let f = dir.path().join("broken.wasm");
    std::fs::write(&f, b"\0asm\x0d\0\x01\0garbage").unwrap();
    let out = cli(&["run", p(&f)], &[]);
    assert_eq!(out.code, 4);
    assert!(out.stderr.contains("invalid component"), "{}", out.stderr);
}

#[test]
fn plain_wasi_commands_run_too() {
    let cmd = guest("wasi-command");
    let c = p(&cmd);
    let out = cli(
        &[
            "run",
            c,
            "--input",
            r#"{"args": ["a", "b"], "stdin": "fed"}"#,
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("hello from a wasi command"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("a b"), "{}", out.stdout);
    assert!(out.stdout.contains("stdin: fed"), "{}", out.stdout);

    // A command that fails keeps what it printed: shown before the error.
    let out = cli(&["run", c, "--input", r#"{"args": ["exit", "7"]}"#], &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("hello from a wasi command exit 7\nerror: skill wasi-command failed: exited with status 7"),
        "{}",
        out.stderr
    );
    // And one that is stopped.
    let out = cli(
        &[
            "run",
            c,
            "--timeout",
            "1s",
            "--input",
            r#"{"args": ["spin"]}"#,
        ],
        &[],
    );
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("spinning\nerror: skill wasi-command timed out"),
        "{}",
        out.stderr
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), "file via preopen").unwrap();
    let grant = format!("{}:/d", p(dir.path()));
    let out = cli(
        &[
            "run",
            c,
            "--allow-read",
            &grant,
            "--input",
            r#"{"args": ["read", "/d/f.txt"]}"#,
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("file via preopen"));
    let out = cli(
        &["run", c, "--input", r#"{"args": ["read", "/d/f.txt"]}"#],
        &[],
    );
    assert_ne!(out.code, 0, "read without a grant must fail");
}

#[test]
fn policy_files_grant_and_are_strict() {
    let skill = real_skill("disk-report");
    let data = tempfile::tempdir().unwrap();
    let policy = data.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[[fs]]\nhost = {:?}\nguest = \"/data\"\naccess = \"read\"\n[exec]\nallow = [ {{ program = \"du\", args = [\"**\"] }}, {{ program = \"stat\", args = [\"**\"] }} ]\n",
            p(data.path())
        ),
    )
    .unwrap();
    let out = cli(&["run", p(skill.path()), "--policy", p(&policy)], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    std::fs::write(&policy, "[exec]\nallow_everything = true\n").unwrap();
    let out = cli(&["run", p(skill.path()), "--policy", p(&policy)], &[]);
    assert_eq!(out.code, 4);
    assert!(out.stderr.contains("unknown field"), "{}", out.stderr);
}

/// `skillbox new` scaffolds a crate that builds and runs unchanged.
#[test]
fn new_build_run() {
    let _guests = guest("hello"); // shares the dependency build
    let dir = tempfile::tempdir().unwrap();
    let skill = dir.path().join("my-skill");
    let out = cli(&["new", "my-skill", "--path", p(&skill)], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = cli(&["build", p(&skill), "--json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let sha = out.json()["sha256"].as_str().unwrap().to_string();
    let manifest = std::fs::read_to_string(skill.join("skill.toml")).unwrap();
    assert!(manifest.contains(&sha), "{manifest}");
    // What happens after a crash is the skill's choice, and the template
    // says so.
    assert!(manifest.contains("\nresume = \"fail\""), "{manifest}");
    let out = cli(&["run", p(&skill), "--input", r#"{"name": "you"}"#], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Hello, you!"), "{}", out.stdout);
    let out = cli(&["new", "my-skill", "--path", p(&skill)], &[]);
    assert_ne!(out.code, 0, "refuses to overwrite");

    // --out packages elsewhere and leaves the sources untouched.
    let before = std::fs::read_to_string(skill.join("skill.toml")).unwrap();
    let packaged = dir.path().join("pkg");
    let out = cli(&["build", p(&skill), "--out", p(&packaged)], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(skill.join("skill.toml")).unwrap(),
        before
    );
    let out = cli(&["run", p(&packaged), "--input", r#"{"name": "pkg"}"#], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Hello, pkg!"), "{}", out.stdout);
}

#[test]
fn help_explains_grants_and_exit_codes() {
    let out = cli(&["run", "--help"], &[]);
    assert_eq!(out.code, 0);
    for needle in [
        "--allow-read",
        "--allow-exec",
        "--allow-net",
        "--timeout",
        "Exit codes",
        "timed out",
    ] {
        assert!(out.stdout.contains(needle), "{needle}");
    }
}

/// The `skillbox` process's own environment holds a secret; the skill sees
/// only the granted variable, and neither it nor `--json` output leaks it.
#[test]
fn host_secrets_do_not_reach_the_skill() {
    let (secret, visible) = test_env();
    let skill = skill_dir(
        "hostile",
        "[env]\nallow = [\"SKILLBOX_TEST_VISIBLE\", \"SKILLBOX_TEST_SECRET\"]\n",
    );
    let out = cli(
        &[
            "run",
            p(skill.path()),
            "--partial",
            "--json",
            "--allow-env",
            "SKILLBOX_TEST_VISIBLE",
            "--input",
            r#"{"case": "env"}"#,
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.json()["data"]["vars"]["SKILLBOX_TEST_VISIBLE"],
        visible.as_str()
    );
    assert!(!out.stdout.contains(&secret) && !out.stderr.contains(&secret));
}

/// A component that imports what skillbox does not provide is refused
/// before it runs, with the import named.
#[test]
fn unknown_imports_are_refused_by_name() {
    for cmd in ["run", "inspect"] {
        let out = cli(&[cmd, p(&guest("unknown-import"))], &[]);
        assert_eq!(out.code, 4, "{cmd}: {}", out.stderr);
        assert!(
            out.stderr.contains("test:elsewhere/backdoor"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("does not provide"), "{}", out.stderr);
    }
    let out = cli(&["inspect", p(&guest("wasi-command")), "--json"], &[]);
    assert_eq!(out.json()["kind"], "command");
}

/// `skillbox … | head` ends quietly when the reader goes away.
#[test]
fn a_closed_stdout_is_not_a_crash() {
    let skill = real_skill("hello");
    let script = format!(
        "set -o pipefail; {:?} inspect {:?} | true",
        env!("CARGO_BIN_EXE_skillbox"),
        p(skill.path())
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .env("SKILLBOX_CACHE_DIR", cli_cache_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `inspect` warns of exec rules through which the skill can run code of
/// its choosing, and says what confinement exec'd programs get here.
#[test]
fn inspect_warns_of_exec_rules_that_run_code() {
    let skill = skill_dir(
        "hostile",
        "[exec]\nallow = [ { program = \"git\", args = [\"**\"] }, { program = \"uname\", args = [\"-a\"] } ]\n",
    );
    let dir = skill.path().to_str().unwrap();
    let flags = ["--allow-exec", "git **", "--allow-exec", "uname -a"];
    let mut args = vec!["inspect", dir];
    args.extend(flags);
    let out = cli(&args, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("WARNING") && out.stdout.contains("alias"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("PID namespace"), "{}", out.stdout);
    args.push("--json");
    let v = cli(&args, &[]).json();
    let warnings = v["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{v}");
    assert!(warnings[0].as_str().unwrap().contains("git '**'"), "{v}");
    assert_eq!(v["exec_sandbox"]["pid_namespace"], true, "{v}");
    // Exact arguments: no warning.
    let skill = skill_dir(
        "hostile",
        "[exec]\nallow = [ { program = \"git\", args = [\"rev-parse\", \"HEAD\"] } ]\n",
    );
    let v = cli(
        &[
            "inspect",
            skill.path().to_str().unwrap(),
            "--allow-exec",
            "git rev-parse HEAD",
            "--json",
        ],
        &[],
    )
    .json();
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
}

/// A run that gets less than its skill asked for says so before it starts,
/// naming the flag that grants the rest, and a write the grant refuses is
/// audited with that flag too.
#[test]
fn narrowed_grants_are_announced_and_refused_writes_audited() {
    let skill = skill_dir(
        "hostile",
        "[fs]\n\"/data\" = { access = \"read-write\" }\n[limits]\noutput = \"32MiB\"\n",
    );
    let data = tempfile::tempdir().unwrap();
    let read = format!("{}:/data", p(data.path()));
    let input = r#"{"case": "write", "path": "/data/out.txt", "content": "x"}"#;
    let out = cli(
        &[
            "run",
            p(skill.path()),
            "--allow-read",
            &read,
            "--input",
            input,
        ],
        &[],
    );
    assert_ne!(out.code, 0, "the write must fail: {}", out.stdout);
    let want = format!("--allow-write {}:/data", p(data.path()));
    assert!(
        out.stderr.contains("warning: fs /data (read-write)") && out.stderr.contains(&want),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("warning: limits output 32MiB") && out.stderr.contains("--output"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("deny: [fs] open out.txt for writing: /data is granted read-only")
            && out.stderr.contains(&format!(
                "--allow-write {}:/data",
                p(&data.path().canonicalize().unwrap())
            )),
        "{}",
        out.stderr
    );
    assert!(!data.path().join("out.txt").exists());

    // Granted as asked: no warning.
    let write = format!("{}:/data", p(data.path()));
    let out = cli(
        &[
            "run",
            p(skill.path()),
            "--allow-write",
            &write,
            "--output",
            "32MiB",
            "--input",
            input,
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("warning:"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(data.path().join("out.txt")).unwrap(),
        "x"
    );
}

/// Half-formed input is refused with what to write instead, before
/// anything runs.
#[test]
fn half_formed_flags_and_names_are_refused() {
    // What --help promises: units, which engine, and only the flags a
    // command takes.
    let help = |args: &[&str]| {
        let out = cli(args, &[]).stdout;
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let run = help(&["run", "--help"]);
    assert!(run.contains("(a bare number is seconds)"), "{run}");
    let spawn = help(&["spawn", "--help"]);
    assert!(
        spawn.contains("`run`'s own, the daemon's for `spawn`"),
        "{spawn}"
    );
    for cmd in ["worker", "serve", "mcp"] {
        let h = help(&[cmd, "--help"]);
        assert!(!h.contains("--addr"), "{cmd} takes no client flags: {h}");
    }
    let skill = real_skill("hello");
    let cases: &[(&[&str], &str)] = &[
        (&["--allow-net", "127.0.0.1:80:90"], "must be host:port"),
        (&["--allow-env", "A B"], "not an environment variable name"),
        (&["--allow-read", "data:/data"], "must be an absolute path"),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["run", p(skill.path())];
        args.extend_from_slice(flags);
        let out = cli(&args, &[]);
        assert_ne!(out.code, 0, "{flags:?} was accepted");
        assert!(out.stderr.contains(needle), "{flags:?}: {}", out.stderr);
    }
    let dir = tempfile::tempdir().unwrap();
    let out = cli(&["new", "9lives", "--path", p(&dir.path().join("x"))], &[]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("starting with a letter"),
        "{}",
        out.stderr
    );
    assert!(!dir.path().join("x").exists(), "nothing was written");
}

/// Shell completion and man pages come from the same definitions as
/// `--help`: bash completes the commands and a command's flags, and the
/// pages render with man(1).
#[test]
fn completions_and_man_pages() {
    let out = cli(&["completions", "bash"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), &out.stdout).unwrap();
    let complete = |words: &str| {
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                 COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
                 _skillbox skillbox \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.path().display()
            ))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let words = complete("skillbox ta");
    assert_eq!(words.trim(), "tasks", "{words}");
    let words = complete("skillbox run x --allow-r");
    assert!(words.lines().any(|w| w == "--allow-read"), "{words}");
    for shell in ["zsh", "fish"] {
        let out = cli(&["completions", shell], &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.contains("allow-read"), "{shell}");
    }
    let out = cli(&["completions", "tcsh"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);

    let dir = tempfile::tempdir().unwrap();
    let out = cli(&["man", "--out", p(dir.path())], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for page in ["skillbox.1", "skillbox-run.1", "skillbox-tasks-wait.1"] {
        assert!(dir.path().join(page).is_file(), "{page}: {}", out.stderr);
    }
    let o = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("skillbox-run.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("--allow-read") && text.contains("skillbox-run"),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A bare NAME runs the installed skill `[skills.NAME]` with the grants
/// the configuration gives it (and the flags given, added); the client
/// configuration supplies the defaults other commands would repeat.
#[test]
fn installed_skills_run_by_name() {
    let (secret, visible) = test_env();
    let hello = real_skill("hello");
    let envy = skill_dir(
        "hostile",
        "resume = \"restart\"\n\n[env]\nallow = [\"SKILLBOX_TEST_VISIBLE\", \"SKILLBOX_TEST_SECRET\"]\n",
    );
    let top = tempfile::tempdir().unwrap();
    std::fs::create_dir(top.path().join("conf")).unwrap();
    let config = top.path().join("conf/config.toml");
    std::fs::write(
        &config,
        format!(
            "[skills.greet]\npath = {:?}\n\n[skills.envy]\npath = {:?}\npartial = true\n\
             grants = {{ env = {{ allow = [\"SKILLBOX_TEST_VISIBLE\"] }} }}\n",
            hello.path(),
            envy.path()
        ),
    )
    .unwrap();
    let conf = p(&config);
    let out = cli(
        &["run", "greet", "--config", conf, "-i", r#"{"name": "n"}"#],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Hello, n!"), "{}", out.stdout);
    // The configured grant, partly granted as configured; a flag adds.
    let env = r#"{"case": "env"}"#;
    let out = cli(&["run", "envy", "--config", conf, "-i", env, "--json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(&visible) && !out.stdout.contains(&secret));
    let out = cli(
        &[
            "run",
            "envy",
            "--config",
            conf,
            "-i",
            env,
            "--json",
            "--allow-env",
            "SKILLBOX_TEST_SECRET",
        ],
        &[],
    );
    assert!(out.stdout.contains(&secret), "{}", out.stdout);
    // Not installed: not found, with what is.
    let out = cli(&["run", "nosuch", "--config", conf], &[]);
    assert_eq!(out.code, 7, "{}", out.stderr);
    assert!(
        out.stderr.contains("nor [skills.nosuch]") && out.stderr.contains("installed: envy, greet"),
        "{}",
        out.stderr
    );

    // A configuration that does not parse is invalid (4), with where.
    let bad = top.path().join("bad.toml");
    std::fs::write(&bad, "[skills.greet]\npath = 1\n").unwrap();
    let out = cli(&["run", "greet", "--config", p(&bad)], &[]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("bad.toml"), "{}", out.stderr);

    // The client configuration: the host configuration and the data dir.
    let client = top.path().join("client.toml");
    std::fs::write(
        &client,
        "config = \"conf/config.toml\"\ndata-dir = \"data\"\n",
    )
    .unwrap();
    let with = [("SKILLBOX_CLIENT_CONFIG", p(&client))];
    let out = cli(&["run", "greet"], &with);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let data = top.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let _d = crate::daemon::Daemon::start(&data, &[]);
    let out = cli(&["spawn", "greet", "-i", r#"{"name": "later"}"#], &with);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_string();
    let out = cli(&["tasks", "wait", &id], &with);
    assert!(out.stdout.contains("Hello, later!"), "{}", out.stdout);
    std::fs::write(&client, "data_dir = \"x\"\n").unwrap();
    let out = cli(&["tasks", "list"], &with);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown field `data_dir`"),
        "{}",
        out.stderr
    );
}

/// Every `skillbox` command README.md shows in its shell blocks names a
/// real command, and every flag it passes is one that command takes
/// (checked against the command's own --help).
#[test]
fn readme_commands_are_real() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut in_sh = false;
    let mut lines = Vec::new();
    let mut pending = String::new();
    for line in readme.lines() {
        let fence = line.trim_start();
        if fence.starts_with("```") {
            in_sh = fence == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        // A command goes on after a `\` and inside an open quote.
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                if shell_words::split(&pending).is_ok() {
                    lines.push(std::mem::take(&mut pending));
                } else {
                    pending.push('\n');
                }
            }
        }
    }
    let mut helps: std::collections::HashMap<Vec<String>, Option<String>> = Default::default();
    let mut help = |path: &[String]| {
        helps
            .entry(path.to_vec())
            .or_insert_with(|| {
                let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
                args.push("--help");
                let out = cli(&args, &[]);
                (out.code == 0).then_some(out.stdout)
            })
            .clone()
    };
    let mut checked = 0;
    for line in &lines {
        let words = shell_words::split(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let words: Vec<String> = words
            .into_iter()
            .take_while(|w| !w.starts_with('#'))
            .collect();
        // Where a command starts: first, after a separator or variable
        // assignments, or in a `$(…)`.
        let mut starts = Vec::new();
        let mut command_position = true;
        for (i, w) in words.iter().enumerate() {
            let sub = w.rsplit("$(").next().unwrap_or(w);
            let is_skillbox = sub == "skillbox" || sub == "target/debug/skillbox";
            if is_skillbox && (command_position || w.contains("$(")) {
                starts.push((i, ()));
            }
            command_position = ["&&", "|", ";", "&", "||"].contains(&w.as_str())
                || (command_position && w.contains('=') && !w.starts_with('-'));
        }
        for (at, _) in starts {
            let rest: Vec<&String> = words[at + 1..]
                .iter()
                .take_while(|w| !["|", "&", "&&", ">", ";"].contains(&w.as_str()))
                .collect();
            // The command: words that are subcommands of the one before.
            let mut path: Vec<String> = Vec::new();
            for w in &rest {
                let text = help(&path).unwrap();
                let subcommands = subcommands_of(&text);
                if subcommands.is_empty() {
                    break;
                }
                assert!(
                    subcommands.contains(w.as_str()),
                    "README: `skillbox {}` has no subcommand {w}: {line}",
                    path.join(" ")
                );
                path.push(w.to_string());
            }
            assert!(!path.is_empty(), "README runs no skillbox command: {line}");
            let text = help(&path).unwrap();
            for w in rest.iter().filter(|w| w.starts_with('-')) {
                let flag = w.split('=').next().unwrap().trim_end_matches(')');
                let known = if flag.starts_with("--") {
                    text.contains(&format!("{flag} ")) || text.contains(&format!("{flag}\n"))
                } else {
                    text.contains(&format!("{flag}, "))
                };
                assert!(
                    known,
                    "README: `skillbox {}` takes no {flag}: {line}",
                    path.join(" ")
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} commands found in README.md");
}

/// The subcommands a `--help` lists under "Commands:".
fn subcommands_of(help: &str) -> std::collections::HashSet<&str> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}
