//! The flagship `upgrade` skill against a real Docker engine: install, a
//! health-checked upgrade, a broken image rolled back, and a host crash in
//! the middle of the build resumed without redoing the backup.
//!
//! Each test deploys its own app (its own image name, container name, port
//! and owner), built from `skills/upgrade/example/app` with
//! `/bin/busybox` copied in, so the tests can run in parallel on one engine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::approvals::{decide_and_wait, spawn_input, until_state};
use crate::daemon::Daemon;
use crate::docker::{self, endpoint, free_port, http_get, wait_http};
use crate::harness::{self, CliOutput};

/// One upgrade test at a time on the engine: the tests build the same
/// context, so they share cached layers, and one test's clean-up (removing
/// its images) would delete a layer another's build is about to reuse.
static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct App {
    _tmp: tempfile::TempDir,
    pub skill: tempfile::TempDir,
    pub src: PathBuf,
    state: PathBuf,
    backup: PathBuf,
    port: u16,
    name: String,
    pub endpoint: String,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl App {
    pub fn new() -> Option<App> {
        let endpoint = endpoint()?;
        let serial = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let state = tmp.path().join("state");
        let backup = tmp.path().join("backup");
        copy_dir(&harness::root().join("skills/upgrade/example/app"), &src);
        std::fs::copy("/bin/busybox", src.join("busybox")).unwrap();
        std::fs::create_dir_all(state.join("uploads")).unwrap();
        std::fs::write(state.join("app.db"), "accounts: 3\n").unwrap();
        std::fs::write(state.join("uploads/logo.txt"), "a logo\n").unwrap();
        std::fs::create_dir_all(&backup).unwrap();
        let port = free_port();
        Some(App {
            _tmp: tmp,
            skill: harness::real_skill("upgrade"),
            src,
            state,
            backup,
            port,
            name: format!("sbx-up-{port}"),
            endpoint,
            _serial: serial,
        })
    }

    /// The operator's grants, as `skillbox run`/`spawn` flags.
    fn grants(&self) -> Vec<String> {
        let mut g: Vec<String> = vec![
            "--allow-read".into(),
            format!("{}:/src", self.src.display()),
            "--allow-read".into(),
            format!("{}:/state", self.state.display()),
            "--allow-write".into(),
            format!("{}:/backup", self.backup.display()),
            "--allow-exec".into(),
            "uname -a".into(),
            "--allow-exec".into(),
            "df -hP .".into(),
            "--allow-net".into(),
            format!("127.0.0.1:{}", self.port),
            "--allow-docker".into(),
            format!("{}:*", self.name),
            "--allow-docker-build".into(),
            "--allow-docker-build-arg".into(),
            "APP_VERSION".into(),
            "--allow-docker-network".into(),
            "host".into(),
            "--docker-owner".into(),
            self.name.clone(),
        ];
        g.extend(["--docker-memory".into(), "64MiB".into()]);
        g
    }

    /// The same grants in the policy-file shape (an installed skill's).
    pub fn policy(&self) -> skillbox::policy::Grants {
        use skillbox::policy::{Access, DockerGrant, ExecRule, FsGrant, Grants};
        let fs = |host: &Path, guest: &str, access| FsGrant {
            host: host.to_owned(),
            guest: Some(guest.into()),
            access,
        };
        let mut g = Grants {
            fs: vec![
                fs(&self.src, "/src", Access::Read),
                fs(&self.state, "/state", Access::Read),
                fs(&self.backup, "/backup", Access::ReadWrite),
            ],
            docker: DockerGrant {
                images: vec![format!("{}:*", self.name)],
                build: true,
                build_args: vec!["APP_VERSION".into()],
                networks: vec!["host".into()],
                memory: Some("64MiB".parse().unwrap()),
                pids: None,
                owner: Some(self.name.clone()),
            },
            ..Grants::default()
        };
        g.exec.allow = vec![
            ExecRule::parse_cli("uname -a").unwrap(),
            ExecRule::parse_cli("df -hP .").unwrap(),
        ];
        g.net.allow = vec![format!("127.0.0.1:{}", self.port)];
        g
    }

    pub fn input(&self, version: &str) -> Value {
        json!({
            "app": self.name,
            "image": self.name,
            "version": version,
            "context": "/src",
            "build_args": { "APP_VERSION": version },
            "state_dir": "/state",
            "backup_dir": "/backup",
            "health_url": format!("http://127.0.0.1:{}/health", self.port),
            "retries": 20,
            "retry_interval_ms": 100,
            "container": {
                "network": "host",
                "env": { "PORT": self.port.to_string() },
                "mounts": [{ "source": "/state", "target": "/www/state", "read_only": true }],
                "init": true,
            },
        })
    }

    fn run(&self, version: &str) -> CliOutput {
        let input = self.input(version).to_string();
        let mut args: Vec<String> = vec![
            "run".into(),
            self.skill.path().to_str().unwrap().into(),
            "--json".into(),
            "--input".into(),
            input,
        ];
        args.extend(self.grants());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        harness::cli(&args, &[("DOCKER_HOST", &self.endpoint)])
    }

    pub fn version(&self) -> String {
        wait_http(self.port, "/version").1
    }

    fn backups(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.backup)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tar.gz"))
            .collect();
        v.sort();
        v
    }

    fn cleanup(&self) {
        docker::cli(&["rm", "-f", &self.name]);
        let (_, images) =
            docker::cli(&["images", "--format", "{{.Repository}}:{{.Tag}}", &self.name]);
        for i in images.lines().filter(|l| !l.is_empty()) {
            docker::cli(&["rmi", "-f", "--no-prune", i]);
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "busybox" {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn short(id: &str) -> &str {
    &id.trim_start_matches("sha256:")[..12]
}

#[test]
fn upgrade_installs_then_upgrades_and_the_new_container_serves() {
    let Some(app) = App::new() else { return };

    // First run: nothing is deployed yet, so it installs v1.
    let out = app.run("v1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let r = out.json();
    assert_eq!(r["data"]["outcome"], "installed", "{r}");
    assert_eq!(app.version(), "v1");
    let v1 = r["data"]["new_image"].as_str().unwrap().to_string();

    // Second run: v1 -> v2.
    let out = app.run("v2");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let r = out.json();
    let data = &r["data"];
    assert_eq!(data["outcome"], "upgraded", "{r}");
    assert_eq!(data["old_image"], v1.as_str());
    let v2 = data["new_image"].as_str().unwrap();
    assert_ne!(v1, v2);
    assert_eq!(data["health"]["healthy"], true);
    assert_eq!(data["health"]["status"], 200);
    assert_eq!(app.version(), "v2", "the new container serves");
    assert_eq!(
        http_get(app.port, "/state/app.db").unwrap(),
        (200, "accounts: 3\n".into()),
        "with the state mounted"
    );
    // The summary a parent session reads.
    let text = r["text"].as_str().unwrap();
    for needle in [
        short(&v1),
        short(v2),
        data["backup"]["sha256"].as_str().unwrap(),
        "previous",
    ] {
        assert!(
            text.contains(needle),
            "summary should mention {needle}: {text}"
        );
    }

    // The rollback tag names the old image.
    let (_, prev) = docker::cli(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        &format!("{}:previous", app.name),
    ]);
    assert_eq!(prev.trim(), v1);

    // One verified backup per run, checkable with the host's own tools.
    let backups = app.backups();
    assert_eq!(backups.len(), 2, "{backups:?}");
    let last = data["backup"]["path"].as_str().unwrap();
    let name = Path::new(last).file_name().unwrap().to_str().unwrap();
    assert_eq!(name, backups[1]);
    let stem = name.trim_end_matches(".tar.gz");
    for manifest in [format!("{stem}.sha256"), format!("{stem}.files.sha256")] {
        let (dir, check) = if manifest.ends_with(".files.sha256") {
            (app.state.clone(), app.backup.join(&manifest))
        } else {
            (app.backup.clone(), app.backup.join(&manifest))
        };
        let out = std::process::Command::new("sha256sum")
            .arg("-c")
            .arg(&check)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sha256sum -c {manifest}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let listing = std::process::Command::new("tar")
        .arg("tzf")
        .arg(app.backup.join(name))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("app.db") && listing.contains("uploads/logo.txt"),
        "{listing}"
    );

    // The diagnostic snapshot describes what ran before the upgrade.
    let diag: Value = serde_json::from_slice(
        &std::fs::read(data["diagnostics"].as_str().map_or_else(
            || panic!("no diagnostics path: {data}"),
            |p| app.backup.join(Path::new(p).file_name().unwrap()),
        ))
        .unwrap(),
    )
    .unwrap();
    let dump = diag.to_string();
    assert!(dump.contains("Linux"), "uname -a: {dump}");
    assert!(dump.contains(&v1), "the running image before: {dump}");
}

#[test]
fn a_broken_image_is_rolled_back_and_the_old_container_serves_again() {
    let Some(app) = App::new() else { return };
    let out = app.run("v1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let v1 = out.json()["data"]["new_image"]
        .as_str()
        .unwrap()
        .to_string();

    // v2 has no health page: its container answers 404.
    std::fs::remove_file(app.src.join("www/health")).unwrap();
    let out = app.run("v2");
    assert_eq!(
        out.code, 1,
        "the upgrade failed: {}\n{}",
        out.stdout, out.stderr
    );
    let r = out.json();
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("rolled back"), "{message}");
    assert!(message.contains("404"), "says why: {message}");
    assert_eq!(r["data"]["outcome"], "rolled-back", "{r}");
    assert_eq!(app.version(), "v1", "the old version serves again");
    assert_eq!(wait_http(app.port, "/health").0, 200);
    let (_, running) = docker::cli(&["inspect", "-f", "{{.Image}}", &app.name]);
    assert_eq!(running.trim(), v1);
    assert_eq!(app.backups().len(), 2, "a backup was taken before trying");
}

impl App {
    /// Starts a daemon with the engine, spawns the upgrade with `input` on
    /// it, waits until `ready` says the crash point is reached, kills the
    /// daemon with SIGKILL, restarts it and waits for the task. Returns the
    /// ended task as JSON, and the restarted daemon with its data dir.
    fn crash_and_resume(
        &self,
        input: Value,
        ready: impl Fn() -> bool,
    ) -> (Value, Daemon, tempfile::TempDir) {
        let data = tempfile::tempdir().unwrap();
        let env = [("DOCKER_HOST", self.endpoint.as_str())];
        let d = Daemon::start_env(data.path(), &[], &env);
        let mut args: Vec<String> = vec![
            "spawn".into(),
            self.skill.path().to_str().unwrap().into(),
            "--input".into(),
            input.to_string(),
        ];
        args.extend(self.grants());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = d.cli(&args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let id = out.stdout.trim().to_string();
        let mut reached = false;
        for _ in 0..3000 {
            if ready() {
                reached = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(reached, "the crash point was never reached: {}", d.log());
        d.kill9();
        let d = Daemon::start_env(data.path(), &[], &env);
        let out = d.cli(&["tasks", "wait", &id, "--json"]);
        let logs = d.cli(&["tasks", "logs", &id]).stdout;
        assert!(logs.contains("interrupted -> running"), "{logs}");
        assert_eq!(out.code, 0, "{}\n{logs}", out.stdout);
        (out.json(), d, data)
    }
}

#[test]
fn a_host_crash_during_the_build_resumes_without_redoing_the_backup() {
    let Some(app) = App::new() else { return };
    let out = app.run("v1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    // Make v2's build take a while, so the crash lands inside it.
    let dockerfile = app.src.join("Dockerfile");
    let mut text = std::fs::read_to_string(&dockerfile).unwrap();
    text.push_str("\nRUN [\"/bin/busybox\", \"sleep\", \"3\"]\n");
    std::fs::write(&dockerfile, text).unwrap();

    let (t, _d, _data) = app.crash_and_resume(app.input("v2"), || {
        let (_, processes) = docker::cli(&["ps", "--format", "{{.Command}}"]);
        processes.contains("sleep")
    });
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["attempt"], 2);
    let resumed = &t["outcome"]["data"]["resumed_steps"];
    assert!(
        resumed.as_array().unwrap().contains(&json!("backup")),
        "{resumed}"
    );
    assert_eq!(app.backups().len(), 2, "the backup was not taken again");
    assert_eq!(app.version(), "v2");
}

#[test]
fn a_host_crash_during_the_health_check_resumes_with_the_new_container() {
    let Some(app) = App::new() else { return };
    let out = app.run("v1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    // v2 takes a few seconds to answer, so the crash lands in its health
    // check, after the old container is gone and the new one runs.
    let dockerfile = app.src.join("Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let slow = text.replace(
        "\"exec /bin/busybox httpd",
        "\"sleep 3; exec /bin/busybox httpd",
    );
    assert_ne!(slow, text, "the sample app's ENTRYPOINT changed");
    std::fs::write(&dockerfile, slow).unwrap();

    let new_container = std::cell::RefCell::new(String::new());
    // Enough attempts to outlast the slow start after the restart.
    let mut input = app.input("v2");
    input["retries"] = json!(100);
    let (t, _d, _data) = app.crash_and_resume(input, || {
        let (_, image) = docker::cli(&["inspect", "-f", "{{.Config.Image}} {{.Id}}", &app.name]);
        match image.trim().split_once(' ') {
            Some((tag, id)) if tag.ends_with(":v2") => {
                *new_container.borrow_mut() = id.to_string();
                true
            }
            _ => false,
        }
    });
    assert_eq!(t["state"], "succeeded", "{t}");
    let data = &t["outcome"]["data"];
    assert_eq!(data["outcome"], "upgraded", "{data}");
    let resumed = data["resumed_steps"].as_array().unwrap();
    for step in ["backup", "diagnostics", "build"] {
        assert!(resumed.contains(&json!(step)), "{step}: {resumed:?}");
    }
    assert_eq!(app.backups().len(), 2, "the backup was not taken again");
    let (_, id) = docker::cli(&["inspect", "-f", "{{.Id}}", &app.name]);
    assert_eq!(
        id.trim(),
        new_container.borrow().as_str(),
        "the container started before the crash was checked, not replaced"
    );
    assert_eq!(app.version(), "v2");
}

/// With the container's calls held for approval (`--ask-docker`), the
/// upgrade waits once, after the backup, the diagnostics and the build,
/// with its own request listing the swap; denied, the old container is
/// left serving; approved, the swap goes through without asking again.
#[test]
fn the_swap_waits_for_one_go_when_the_operator_holds_the_container() {
    let Some(app) = App::new() else { return };
    let out = app.run("v1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let data = tempfile::tempdir().unwrap();
    let env = [("DOCKER_HOST", app.endpoint.as_str())];
    let d = Daemon::start_env(data.path(), &[], &env);
    let spawn = || {
        let mut flags = vec!["--ask-docker".to_string(), format!("{}:*", app.name)];
        flags.extend(app.grants());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        spawn_input(&d, app.skill.path(), &app.input("v2"), &flags)
    };
    let asked = |id: &str| d.cli(&["tasks", "approvals", id, "--json"]).json();

    for approve in [false, true] {
        let id = spawn();
        until_state(&d, &id, "awaiting_approval");
        let all = asked(&id);
        assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
        let request = &all[0]["request"];
        assert_eq!(request["capability"], "skill", "{request}");
        let detail = request["detail"].as_str().unwrap();
        assert!(
            detail.contains("docker stop")
                && detail.contains("docker remove")
                && detail.contains(&format!("docker run {}:v2", app.name)),
            "{detail}"
        );
        assert!(
            request["reason"].as_str().unwrap().contains("backup"),
            "{request}"
        );
        // Everything before the swap is done; the old container serves.
        assert_eq!(app.version(), "v1");
        let verb = if approve { "approve" } else { "deny" };
        let t = decide_and_wait(&d, &id, verb);
        if approve {
            assert_eq!(t["state"], "succeeded", "{t}");
            assert_eq!(app.version(), "v2");
            assert_eq!(asked(&id).as_array().unwrap().len(), 1, "asked once");
        } else {
            assert_eq!(t["state"], "failed", "{t}");
            assert_eq!(t["outcome"]["kind"], "denied", "{t}");
            assert!(
                t["outcome"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("nothing was changed"),
                "{t}"
            );
            assert_eq!(app.version(), "v1", "the old container still serves");
        }
    }
}

/// A docker ask rule on its own (no request of the skill's): a `stop` of
/// the app's container waits; denied, it is refused as an ungranted call
/// and the container runs on; approved, it stops.
#[test]
fn a_docker_ask_rule_holds_a_stop_until_approved() {
    let Some(app) = App::new() else { return };
    let out = app.run("v1");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let skill = harness::skill_dir("hostile", "[docker]\nimages = [\"*\"]\n");
    let data = tempfile::tempdir().unwrap();
    let env = [("DOCKER_HOST", app.endpoint.as_str())];
    let d = Daemon::start_env(data.path(), &[], &env);
    let input =
        json!({ "case": "docker", "ops": [{ "op": "stop", "container": app.name, "timeout": 1 }] });
    let running = || {
        let (_, state) = docker::cli(&["inspect", "-f", "{{.State.Running}}", &app.name]);
        state.trim() == "true"
    };
    for approve in [false, true] {
        let pattern = format!("{}:*", app.name);
        let flags = ["--ask-docker", &pattern, "--docker-owner", &app.name];
        let id = spawn_input(&d, skill.path(), &input, &flags);
        until_state(&d, &id, "awaiting_approval");
        let asked = d.cli(&["tasks", "approvals", &id, "--json"]).json();
        let request = &asked[0]["request"];
        assert_eq!(
            request["capability"],
            "docker",
            "{}",
            d.cli(&["tasks", "show", &id, "--json"]).stdout
        );
        assert!(
            request["detail"]
                .as_str()
                .unwrap()
                .starts_with(&format!("stop container {}", app.name)),
            "{request}"
        );
        assert!(running(), "nothing stops before the decision");
        let verb = if approve { "approve" } else { "deny" };
        let t = decide_and_wait(&d, &id, verb);
        let result = &t["outcome"]["data"]["results"][0];
        if approve {
            assert!(result.get("ok").is_some(), "{t}");
            assert!(!running(), "stopped once approved");
        } else {
            assert_eq!(result["kind"], "denied", "{t}");
            assert!(running(), "a denied stop leaves the container running");
        }
    }
}
