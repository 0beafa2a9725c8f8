//! Shared test machinery: guests built once from source, a shared host,
//! helpers to run skills in-process and through the CLI.
//!
//! Every guest is compiled from its source under `skills/` or
//! `tests/guests/` on first use (one nested cargo build for all of them, in
//! its own target dir so it never waits on the outer build's lock); no
//! `.wasm` file is committed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use skillbox::prelude::*;

pub const GUESTS: &[&str] = &[
    "hello",
    "disk-report",
    "upgrade",
    "hostile",
    "wasi-command",
    "unknown-import",
];

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The target dir of guest builds; `skillbox build` in tests uses it too, so
/// dependencies are compiled once.
pub fn wasm_target_dir() -> PathBuf {
    root().join("target").join("wasm")
}

/// Path of a guest component, building all guests the first time.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(root())
            .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
            .arg(wasm_target_dir());
        for g in GUESTS {
            cmd.args(["-p", g]);
        }
        let status = cmd.status().expect("running cargo for the test guests");
        assert!(
            status.success(),
            "building test guests failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)"
        );
        wasm_target_dir().join("wasm32-wasip2").join("release")
    });
    // Libraries' artifacts use '_', binaries keep their name.
    let lib = dir.join(format!("{}.wasm", name.replace('-', "_")));
    let p = if lib.is_file() {
        lib
    } else {
        dir.join(format!("{name}.wasm"))
    };
    assert!(p.is_file(), "missing guest {}", p.display());
    p
}

/// One host for the whole test process (fuel off), with a private cache.
pub fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let cache =
            std::env::temp_dir().join(format!("skillbox-test-cache-{}", std::process::id()));
        Host::new(EngineOptions {
            cache_dir: Some(cache),
            pooling: true,
            max_instances: 64,
            fuel: false,
        })
        .expect("host")
    })
}

/// A host with fuel metering.
pub fn fuel_host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        Host::new(EngineOptions {
            cache_dir: None,
            pooling: false,
            max_instances: 4,
            fuel: true,
        })
        .expect("host")
    })
}

/// Collects a run's events.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<Event>>>);

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    pub fn denials(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Audit {
                    allowed: false,
                    reason,
                    ..
                } => Some(reason),
                _ => None,
            })
            .collect()
    }
}

impl EventObserver for Recorder {
    fn event(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }
}

/// A guest with a manifest given as TOML tables after `[skill]`.
pub fn source_with_manifest(guest_name: &str, tables: &str) -> SkillSource {
    let mut s = SkillSource::open(&guest(guest_name), false).expect("guest opens");
    let text = format!(
        "[skill]\nname = \"{guest_name}\"\nversion = \"0.1.0\"\ncomponent = \"x.wasm\"\nsha256 = \"{}\"\n{tables}",
        s.digest
    );
    s.manifest =
        Some(Manifest::parse(&text, Path::new("skill.toml")).expect("test manifest parses"));
    s
}

/// Runs `source` in-process with `grants`; panics if the run cannot start.
pub async fn run_on(
    host: &Host,
    source: &SkillSource,
    grants: &Grants,
    input: serde_json::Value,
) -> (RunReport, Recorder) {
    let prepared = host.prepare(source).expect("prepare");
    let (policy, _report) = EffectivePolicy::compute(source.manifest.as_ref(), grants);
    let rec = Recorder::default();
    let report = host
        .run(
            &prepared,
            RunRequest {
                input: input.to_string(),
                policy,
                events: Arc::new(rec.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("run starts");
    (report, rec)
}

pub async fn run(
    source: &SkillSource,
    grants: &Grants,
    input: serde_json::Value,
) -> (RunReport, Recorder) {
    run_on(host(), source, grants, input).await
}

/// Parses grants from CLI-style flags, e.g. `&["--allow-read", "/x:/data"]`.
pub fn grants(flags: &[&str]) -> Grants {
    let mut g = Grants::default();
    let mut it = flags.iter();
    while let Some(flag) = it.next() {
        let v = it.next().expect("flag value");
        match *flag {
            "--allow-read" => g.fs.push(FsGrant::parse_cli(v, Access::Read).unwrap()),
            "--allow-write" => g.fs.push(FsGrant::parse_cli(v, Access::ReadWrite).unwrap()),
            "--allow-exec" => g.exec.allow.push(ExecRule::parse_cli(v).unwrap()),
            "--allow-env" => g.env.allow.push(v.to_string()),
            "--allow-net" => g.net.allow.push(v.to_string()),
            "--memory" => g.limits.memory = Some(v.parse().unwrap()),
            "--timeout" => g.limits.timeout = Some(v.parse().unwrap()),
            "--output" => g.limits.output = Some(v.parse().unwrap()),
            "--fuel" => g.limits.fuel = Some(v.parse().unwrap()),
            other => panic!("unknown flag {other}"),
        }
    }
    g
}

/// The result of running the `skillbox` binary.
#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

pub fn cli_cache_dir() -> PathBuf {
    std::env::temp_dir().join(format!("skillbox-test-cli-cache-{}", std::process::id()))
}

/// Runs `skillbox ARGS…` with a private cache and a scrubbed environment
/// plus `env`.
pub fn cli(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skillbox"));
    cmd.args(args)
        .env("SKILLBOX_CACHE_DIR", cli_cache_dir())
        .env("CARGO_TARGET_DIR", wasm_target_dir())
        // The user's own client configuration stays out of the tests.
        .env(
            "SKILLBOX_CLIENT_CONFIG",
            "/nonexistent/skillbox-client.toml",
        )
        // And the user's trusted keys and trust.toml.
        .env("SKILLBOX_KEYS", "/nonexistent/skillbox-keys");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running skillbox");
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `skillbox ARGS` started in the background; [`Background::finish`]
/// waits for it.
pub struct Background(std::process::Child);

pub fn cli_background(args: &[&str]) -> Background {
    let child = Command::new(env!("CARGO_BIN_EXE_skillbox"))
        .args(args)
        .env("SKILLBOX_CACHE_DIR", cli_cache_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running skillbox");
    Background(child)
}

impl Background {
    /// Waits for it to exit; what it printed.
    pub fn finish(self) -> CliOutput {
        let out = self.0.wait_with_output().expect("waiting for skillbox");
        CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A skill directory in a temp dir: the guest's component and a pinned
/// manifest with `tables`.
pub fn skill_dir(guest_name: &str, tables: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(guest(guest_name)).unwrap();
    std::fs::write(dir.path().join("skill.wasm"), &bytes).unwrap();
    let digest = skillbox::skill::sha256_hex(&bytes);
    std::fs::write(
        dir.path().join("skill.toml"),
        format!("[skill]\nname = \"{guest_name}\"\nversion = \"0.1.0\"\ncomponent = \"skill.wasm\"\nsha256 = \"{digest}\"\n{tables}"),
    )
    .unwrap();
    dir
}

pub fn succeeded(r: &RunReport) -> (&str, &serde_json::Value) {
    match &r.outcome {
        Outcome::Succeeded { text, data } => (text, data),
        other => panic!("expected success, got {other:?}\nstderr: {}", r.stderr),
    }
}

pub fn failed(r: &RunReport) -> (FailureKind, &str) {
    match &r.outcome {
        Outcome::Failed { kind, message, .. } => (*kind, message),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// The test environment's secret and visible variables (set for the test
/// process by `.cargo/config.toml`).
pub fn test_env() -> (String, String) {
    let get = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: run the tests with cargo from the repository")
        })
    };
    (get("SKILLBOX_TEST_SECRET"), get("SKILLBOX_TEST_VISIBLE"))
}

/// A temp copy of a repository skill's own manifest, pinned to the freshly
/// built component.
pub fn real_skill(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(guest(name)).unwrap();
    std::fs::write(dir.path().join("skill.wasm"), &bytes).unwrap();
    let text =
        std::fs::read_to_string(root().join("skills").join(name).join("skill.toml")).unwrap();
    let mut doc: toml_edit::DocumentMut = text.parse().unwrap();
    if let Some(schema) = doc["skill"].get("input-schema").and_then(|s| s.as_str()) {
        let from = root().join("skills").join(name).join(schema);
        std::fs::copy(&from, dir.path().join(schema)).unwrap();
    }
    doc["skill"]["component"] = toml_edit::value("skill.wasm");
    doc["skill"]["sha256"] = toml_edit::value(skillbox::skill::sha256_hex(&bytes));
    std::fs::write(dir.path().join("skill.toml"), doc.to_string()).unwrap();
    dir
}

/// Path of an example binary of the host crate (`cargo test` builds them).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join(name);
    assert!(exe.is_file(), "{} was not built", exe.display());
    exe
}

/// Whether `pid` runs (a zombie does not: it is dead, waiting to be reaped).
pub fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z")
}

/// Running processes (zombies aside) whose command line contains `marker`.
pub fn running_with(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me && alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

/// Waits up to `within` until no process carries `marker`.
pub fn wait_none_with(marker: &str, within: std::time::Duration) -> bool {
    let step = std::time::Duration::from_millis(25);
    for _ in 0..(within.as_millis() / step.as_millis()).max(1) {
        if running_with(marker).is_empty() {
            return true;
        }
        std::thread::sleep(step);
    }
    false
}
