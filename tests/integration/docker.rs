//! The `docker` capability against a real Docker engine: what a grant
//! allows works, and everything else is refused with a clear error.
//!
//! `scripts/test.sh` starts a private dockerd (Debian's `docker.io`) on its
//! own socket and passes it as `SKILLBOX_TEST_DOCKER_HOST`; test images are
//! built `FROM scratch` with `/bin/busybox` (no registry is reachable).
//! Without an engine these tests are skipped with a loud message, except
//! under `CI=true`, where they fail.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use skillbox::caps::docker::DockerEngine;
use skillbox::policy::DockerGrant;
use skillbox::prelude::*;

use crate::harness::{self, Recorder, succeeded};

mod hostile;

/// The private engine's endpoint, or `None` (with a loud message) when
/// there is none outside CI.
pub fn endpoint() -> Option<String> {
    match std::env::var("SKILLBOX_TEST_DOCKER_HOST") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "CI must run the Docker tests: scripts/test.sh starts a private engine \
                 (tests/docker/dockerd.sh) and sets SKILLBOX_TEST_DOCKER_HOST"
            );
            eprintln!(
                "\n!!!!!!!!\n!!! SKIPPED: no Docker engine (SKILLBOX_TEST_DOCKER_HOST is unset); \
                 run the suite with scripts/test.sh, which starts one\n!!!!!!!!\n"
            );
            None
        }
    }
}

/// Runs the `docker` CLI against the private engine.
// Tests remove their images with `rmi --no-prune`: the untagged layers
// beneath an image may be the build cache of another test building at the
// same time, on the same engine.
pub fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", endpoint().expect("engine"))
        .output()
        .expect("running the docker CLI");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A host whose docker capability talks to the private engine.
pub fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        Host::new(EngineOptions {
            cache_dir: Some(
                std::env::temp_dir()
                    .join(format!("skillbox-test-cache-docker-{}", std::process::id())),
            ),
            pooling: false,
            max_instances: 8,
            fuel: false,
        })
        .expect("host")
        .with_docker(DockerEngine::new(endpoint().expect("engine")))
    })
}

/// A build context: busybox httpd serving `www/` on `127.0.0.1:$PORT`,
/// logging requests, with the build argument `APP_VERSION` in `www/version`.
pub fn app_context(dir: &Path) {
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("busybox")).expect("/bin/busybox (busybox-static)");
    std::fs::write(dir.join("www/health"), "ok\n").unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\n\
         COPY busybox /bin/busybox\n\
         COPY www /www\n\
         ARG APP_VERSION=dev\n\
         ENV APP_VERSION=$APP_VERSION\n\
         ENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \
         \"exec /bin/busybox httpd -f -v -p 127.0.0.1:${PORT:-8080} -h /www\"]\n",
    )
    .unwrap();
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP GET from the host side; `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Waits (polling, no fixed sleep) until `port` answers `path`.
pub fn wait_http(port: u16, path: &str) -> (u16, String) {
    for _ in 0..200 {
        if let Some(r) = http_get(port, path) {
            return r;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("nothing answered on 127.0.0.1:{port}{path}");
}

fn manifest(tables: &str) -> SkillSource {
    harness::source_with_manifest("hostile", tables)
}

const REQUEST: &str = r#"
[fs]
"/src" = { access = "read" }
"/state" = { access = "read" }
"/out" = { access = "read-write" }
[docker]
images = ["*"]
build = true
build-args = ["*"]
networks = ["*"]
"#;

/// Runs the hostile guest's `docker` case with these ops; returns the
/// per-op results and the recorded events.
async fn ops(
    source: &SkillSource,
    grants: &Grants,
    tag: &str,
    ops: Value,
) -> (Vec<Value>, Recorder) {
    ops_with(source, grants, tag, Default::default(), ops).await
}

/// [`ops`], the run given the values of `secrets`.
async fn ops_with(
    source: &SkillSource,
    grants: &Grants,
    tag: &str,
    secrets: skillbox::secrets::SecretValues,
    ops: Value,
) -> (Vec<Value>, Recorder) {
    let prepared = host().prepare(source).expect("prepare");
    let (policy, _) = EffectivePolicy::compute(source.manifest.as_ref(), grants);
    let rec = Recorder::default();
    let report = host()
        .run(
            &prepared,
            RunRequest {
                input: json!({ "case": "docker", "ops": ops }).to_string(),
                policy,
                events: Arc::new(rec.clone()),
                tag: Some(tag.to_string()),
                secrets,
                ..Default::default()
            },
        )
        .await
        .expect("run starts");
    let (_, data) = succeeded(&report);
    (data["results"].as_array().unwrap().clone(), rec)
}

fn ok(r: &Value) -> &Value {
    assert!(r.get("err").is_none(), "expected success: {r}");
    &r["ok"]
}

fn denied<'a>(r: &'a Value, needle: &str) -> &'a str {
    assert_eq!(
        r["kind"], "denied",
        "expected a denial containing {needle:?}: {r}"
    );
    let m = r["err"].as_str().unwrap();
    assert!(m.contains(needle), "denial {m:?} should say {needle:?}");
    m
}

struct Dirs {
    _tmp: tempfile::TempDir,
    src: std::path::PathBuf,
    state: std::path::PathBuf,
    out: std::path::PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let state = tmp.path().join("state");
    let out = tmp.path().join("out");
    app_context(&src);
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("data.txt"), "state-of-the-app\n").unwrap();
    std::fs::create_dir_all(&out).unwrap();
    Dirs {
        _tmp: tmp,
        src,
        state,
        out,
    }
}

fn fs_grants(d: &Dirs) -> Grants {
    let src = format!("{}:/src", d.src.display());
    let state = format!("{}:/state", d.state.display());
    let out = format!("{}:/out", d.out.display());
    harness::grants(&[
        "--allow-read",
        &src,
        "--allow-read",
        &state,
        "--allow-write",
        &out,
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_skill_builds_tags_runs_and_manages_its_own_container() {
    let Some(_) = endpoint() else { return };
    let d = dirs();
    let port = free_port();
    let mut grants = fs_grants(&d);
    grants.docker = DockerGrant {
        images: vec!["sbx-allow:*".into()],
        build: true,
        build_args: vec!["APP_VERSION".into()],
        networks: vec!["host".into()],
        memory: Some("96MiB".parse().unwrap()),
        pids: Some(64),
        owner: Some("test-allow".into()),
    };
    let source = manifest(REQUEST);
    let name = format!("sbx-allow-{port}");
    let (r, rec) = ops(
        &source,
        &grants,
        "task-allow-1",
        json!([
            { "op": "build", "context": "/src", "tag": "sbx-allow:v1", "args": { "APP_VERSION": "v1" } },
            { "op": "image", "tag": "sbx-allow:v1" },
            { "op": "tag", "source": "sbx-allow:v1", "target": "sbx-allow:previous" },
            { "op": "run", "image": "sbx-allow:v1", "name": name, "network": "host",
              "env": { "PORT": port.to_string() },
              "mounts": [["/state", "/www/state", "rw"]], "memory": 64 << 20, "pids": 32, "init": true },
            { "op": "inspect", "container": name },
            { "op": "ps" },
        ]),
    )
    .await;
    let built = ok(&r[0]);
    let id = built["image_id"].as_str().unwrap();
    assert!(id.starts_with("sha256:"), "{built}");
    assert!(built["log"].as_str().unwrap().contains("Step"), "{built}");
    assert_eq!(ok(&r[1])["id"], id);
    assert_eq!(ok(&r[2])["id"], id, "the rollback tag names the same image");
    let tags = ok(&r[2])["tags"].as_array().unwrap().clone();
    assert!(tags.contains(&json!("sbx-allow:previous")), "{tags:?}");
    let started = ok(&r[3]);
    assert_eq!(started["state"], "running", "{started}");
    assert_eq!(started["image_id"], id);
    assert_eq!(started["task"], "task-allow-1");
    assert_eq!(ok(&r[4])["id"], started["id"]);
    let ps = ok(&r[5]).as_array().unwrap();
    assert_eq!(ps.len(), 1, "only this owner's container: {ps:?}");

    // The container really serves, with the build argument and the mount.
    assert_eq!(wait_http(port, "/health"), (200, "ok\n".into()));
    assert_eq!(
        http_get(port, "/state/data.txt").unwrap(),
        (200, "state-of-the-app\n".into())
    );

    // The engine's own view: the host's safety settings, whatever was asked.
    let (okc, text) = cli(&["inspect", &name]);
    assert!(okc, "{text}");
    let info: Value = serde_json::from_str(&text).unwrap();
    let hc = &info[0]["HostConfig"];
    assert_eq!(hc["Privileged"], false);
    assert_eq!(hc["CapDrop"], json!(["ALL"]), "{hc}");
    assert_eq!(
        hc["CapAdd"],
        json!(skillbox::caps::docker::CONTAINER_CAPABILITIES),
        "{hc}"
    );
    assert_eq!(hc["SecurityOpt"], json!(["no-new-privileges"]));
    assert_eq!(hc["NetworkMode"], "host");
    assert_eq!(hc["Memory"], 64 << 20);
    assert_eq!(hc["MemorySwap"], 64 << 20, "no swap beyond the limit");
    assert_eq!(hc["PidsLimit"], 32);
    assert_eq!(hc["Init"], true);
    assert!(hc["PortBindings"].as_object().is_none_or(|m| m.is_empty()));
    let mounts = info[0]["Mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        mounts[0]["RW"], false,
        "a read-only grant forces a read-only mount"
    );
    assert_eq!(
        Path::new(mounts[0]["Source"].as_str().unwrap()),
        d.state.canonicalize().unwrap()
    );
    let labels = &info[0]["Config"]["Labels"];
    assert_eq!(labels["skillbox.owner"], "test-allow");
    assert_eq!(labels["skillbox.task"], "task-allow-1");

    // Logs, stop, remove: a second run (another task) of the same owner.
    let (r, _) = ops(
        &source,
        &grants,
        "task-allow-2",
        json!([
            { "op": "logs", "container": name, "tail": 10 },
            { "op": "stop", "container": name, "timeout": 1 },
            { "op": "inspect", "container": name },
            { "op": "stop", "container": name },
            { "op": "remove", "container": name },
            { "op": "inspect", "container": name },
            { "op": "ps", "all": true },
        ]),
    )
    .await;
    let logs = ok(&r[0]).as_str().unwrap();
    assert!(
        logs.contains("response:200"),
        "busybox httpd -v logs requests: {logs:?}"
    );
    ok(&r[1]);
    assert_eq!(ok(&r[2])["state"], "exited");
    ok(&r[3]);
    ok(&r[4]);
    assert_eq!(*ok(&r[5]), Value::Null, "gone");
    assert_eq!(ok(&r[6]).as_array().unwrap().len(), 0);
    assert!(http_get(port, "/health").is_none());

    // Every call is in the audit log with its parameters.
    let audits: Vec<String> = rec
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Audit {
                capability: "docker",
                detail,
                allowed: true,
                ..
            } => Some(detail),
            _ => None,
        })
        .collect();
    assert_eq!(audits.len(), 6, "{audits:?}");
    assert!(
        audits[0].contains("build context=/src") && audits[0].contains("args=[APP_VERSION]"),
        "{audits:?}"
    );
    assert!(
        audits[3].contains("mounts=[/state:/www/state]") && audits[3].contains("network=host"),
        "{audits:?}"
    );
    cli(&["rmi", "--no-prune", "sbx-allow:v1", "sbx-allow:previous"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_outside_the_grant_is_refused_and_audited() {
    let Some(_) = endpoint() else { return };
    let d = dirs();
    // An image and a container that are not the skill's: made by the
    // operator with the CLI, one of them labelled for another owner.
    let (okb, text) = cli(&[
        "build",
        "-q",
        "-t",
        "sbx-foreign:v1",
        d.src.to_str().unwrap(),
    ]);
    assert!(okb, "{text}");
    let (okb, text) = cli(&["tag", "sbx-foreign:v1", "sbx-deny:stolen"]);
    assert!(okb, "{text}");
    let port = free_port();
    let foreign = format!("sbx-foreign-{port}");
    let other_owner = format!("sbx-other-{port}");
    for (name, label) in [
        (&foreign, "nobody=here"),
        (&other_owner, "skillbox.owner=someone-else"),
    ] {
        let (okr, text) = cli(&[
            "run",
            "-d",
            "--network",
            "none",
            "--label",
            label,
            "--name",
            name,
            "sbx-foreign:v1",
        ]);
        assert!(okr, "{text}");
    }
    // A symlink in a granted directory that points out of it.
    std::os::unix::fs::symlink("/etc", d.out.join("escape")).unwrap();

    let mut grants = fs_grants(&d);
    grants.docker = DockerGrant {
        images: vec!["sbx-deny:*".into()],
        build: true,
        build_args: vec!["APP_VERSION".into()],
        networks: vec![],
        memory: Some("64MiB".parse().unwrap()),
        pids: Some(32),
        owner: Some("test-deny".into()),
    };
    let source = manifest(REQUEST);
    let (r, rec) = ops(
        &source,
        &grants,
        "task-deny",
        json!([
            { "op": "build", "context": "/etc", "tag": "sbx-deny:v1" },
            { "op": "build", "context": "/out/escape", "tag": "sbx-deny:v1" },
            { "op": "build", "context": "/src", "tag": "sbx-other:v1" },
            { "op": "build", "context": "/src", "tag": "sbx-deny:v1", "args": { "SECRET": "x" } },
            { "op": "build", "context": "/src", "tag": "sbx-deny:v1", "network": "host" },
            { "op": "build", "context": "/src", "tag": "sbx-deny:v1", "dockerfile": "../Dockerfile" },
            { "op": "run", "image": "sbx-deny:stolen", "privileged": true },
            { "op": "run", "image": "sbx-deny:stolen", "cap_add": ["SYS_ADMIN"] },
            { "op": "run", "image": "sbx-deny:stolen", "mounts": [["/", "/host", "ro"]] },
            { "op": "run", "image": "sbx-deny:stolen", "mounts": [["/src", "/", "ro"]] },
            { "op": "run", "image": "sbx-deny:stolen", "network": "host" },
            { "op": "run", "image": "sbx-deny:stolen", "memory": 1u64 << 30 },
            { "op": "run", "image": "sbx-deny:stolen", "pids": 1000 },
            { "op": "run", "image": "sbx-foreign:v1" },
            { "op": "run", "image": "sha256:0123456789abcdef0123" },
            { "op": "stop", "container": foreign },
            { "op": "remove", "container": foreign, "force": true },
            { "op": "logs", "container": foreign },
            { "op": "inspect", "container": other_owner },
            { "op": "stop", "container": other_owner },
            { "op": "tag", "source": "sbx-foreign:v1", "target": "sbx-deny:mine" },
            { "op": "tag", "source": "sbx-deny:stolen", "target": "sbx-foreign:v2" },
            { "op": "image", "tag": "sbx-foreign:v1" },
            { "op": "ps", "all": true },
            { "op": "run", "image": "sbx-deny:not-built-yet", "network": "host" },
            { "op": "run", "image": "sbx-deny:not-built-yet" },
        ]),
    )
    .await;
    // The policy is checked before the engine: a skill can check its
    // options with a tag it has not built yet.
    denied(&r[24], "--allow-docker-network host");
    assert_eq!(r[25]["kind"], "not-found", "{}", r[25]);
    denied(&r[0], "outside every granted directory");
    denied(&r[1], "outside its granted directory");
    denied(&r[2], "--allow-docker 'sbx-other:*'");
    denied(&r[3], "build argument \"SECRET\" is not granted");
    denied(&r[4], "network \"host\" is not granted");
    denied(&r[5], "without '..'");
    denied(&r[6], "privileged containers are never allowed");
    denied(&r[7], "adding capabilities (SYS_ADMIN) is never allowed");
    denied(&r[8], "bind mount source \"/\" is not a granted directory");
    denied(&r[9], "must be an absolute path other than /");
    denied(&r[10], "--allow-docker-network host");
    denied(&r[11], "above this skill's container ceiling");
    denied(&r[12], "outside this skill's container range 1..=32");
    denied(&r[13], "does not match a granted image pattern");
    denied(&r[14], "not by id or digest");
    for res in &r[15..=17] {
        denied(res, "its owner label is missing");
    }
    for res in &r[18..=19] {
        denied(res, "its owner label is \"someone-else\"");
    }
    denied(
        &r[20],
        "\"sbx-foreign:v1\" does not match a granted image pattern",
    );
    denied(
        &r[21],
        "\"sbx-foreign:v2\" does not match a granted image pattern",
    );
    denied(&r[22], "does not match a granted image pattern");
    assert_eq!(
        ok(&r[23]).as_array().unwrap().len(),
        0,
        "ps shows no foreign container"
    );
    assert_eq!(
        rec.denials().len(),
        24,
        "every refusal is audited: {:?}",
        rec.denials()
    );

    // Nothing was touched: both containers still run, no image was built or
    // retagged.
    for name in [&foreign, &other_owner] {
        let (_, state) = cli(&["inspect", "-f", "{{.State.Status}}", name]);
        assert_eq!(state.trim(), "running", "{name}");
    }
    for image in [
        "sbx-deny:v1",
        "sbx-deny:mine",
        "sbx-foreign:v2",
        "sbx-other:v1",
    ] {
        let (exists, _) = cli(&["image", "inspect", image]);
        assert!(!exists, "{image} must not exist");
    }
    cli(&["rm", "-f", &foreign, &other_owner]);
    cli(&["rmi", "--no-prune", "sbx-foreign:v1", "sbx-deny:stolen"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_needs_both_the_request_and_the_grant() {
    let Some(_) = endpoint() else { return };
    let d = dirs();
    let grant = DockerGrant {
        images: vec!["sbx-need:*".into()],
        ..DockerGrant::default()
    };
    let mut grants = fs_grants(&d);
    grants.docker = grant.clone();
    let build = json!([{ "op": "build", "context": "/src", "tag": "sbx-need:v1" }]);
    // Granted images, but building is not granted.
    let (r, _) = ops(&manifest(REQUEST), &grants, "t", build.clone()).await;
    denied(&r[0], "--allow-docker-build");
    // Granted, but the skill did not request docker: it gets none.
    let no_docker = REQUEST.split("[docker]").next().unwrap();
    let (r, _) = ops(&manifest(no_docker), &grants, "t", json!([{ "op": "ps" }])).await;
    denied(&r[0], "no Docker access is granted");
    // Requested, nothing granted.
    let (r, _) = ops(&manifest(REQUEST), &fs_grants(&d), "t", build).await;
    denied(&r[0], "no Docker access is granted");
    // The skill's own patterns bind it too, whatever the operator grants.
    grants.docker.images = vec!["*".into()];
    let narrow = REQUEST.replace("images = [\"*\"]", "images = [\"sbx-need:*\"]");
    let (r, _) = ops(
        &manifest(&narrow),
        &grants,
        "t",
        json!([{ "op": "image", "tag": "busybox:latest" }]),
    )
    .await;
    denied(&r[0], "does not match the skill's [docker] images");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_engine_is_a_clear_error() {
    // No engine needed: the endpoint points nowhere.
    let host = Host::new(EngineOptions {
        cache_dir: None,
        pooling: false,
        max_instances: 2,
        fuel: false,
    })
    .unwrap()
    .with_docker(DockerEngine::new("unix:///nonexistent/docker.sock"));
    let d = dirs();
    let mut grants = fs_grants(&d);
    grants.docker.images = vec!["sbx-none:*".into()];
    let source = manifest(REQUEST);
    let prepared = host.prepare(&source).unwrap();
    let (policy, _) = EffectivePolicy::compute(source.manifest.as_ref(), &grants);
    let report = host
        .run(
            &prepared,
            RunRequest {
                input: json!({ "case": "docker", "ops": [{ "op": "ps" }] }).to_string(),
                policy,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (_, data) = succeeded(&report);
    let r = &data["results"][0];
    assert_eq!(r["kind"], "unavailable", "{r}");
    assert!(
        r["err"]
            .as_str()
            .unwrap()
            .contains("no Docker engine socket at /nonexistent/docker.sock"),
        "{r}"
    );
}

#[test]
fn inspect_reports_docker_requests_and_how_to_grant_them() {
    let skill = harness::skill_dir("hostile", REQUEST);
    let dir = skill.path().to_str().unwrap();
    // Exit code 3: requested capabilities are not granted.
    let out = harness::cli(&["inspect", dir], &[]);
    assert_eq!(out.code, 3, "{out:?}");
    for needle in [
        "--allow-docker 'IMAGE:*'",
        "--allow-docker-build",
        "--allow-docker-build-arg NAME",
        "--allow-docker-network NAME",
    ] {
        assert!(out.stdout.contains(needle), "{needle}: {}", out.stdout);
    }
    let out = harness::cli(
        &[
            "inspect",
            dir,
            "--allow-docker",
            "myapp:*",
            "--allow-docker-build",
            "--allow-docker-network",
            "host",
            "--docker-memory",
            "128MiB",
        ],
        &[],
    );
    assert!(out.stdout.contains("docker network *"), "{}", out.stdout);
    assert!(
        out.stdout.contains("granted myapp:* only"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("granted host only"), "{}", out.stdout);
    let bad = harness::skill_dir("hostile", "[docker]\nimages = [\"myapp\"]\n");
    let out = harness::cli(&["inspect", bad.path().to_str().unwrap()], &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("name a tag"), "{}", out.stderr);
}

/// The sha256 a container writes to `path` (`sha256sum`'s first word),
/// once it is there.
fn written_hash(path: &Path) -> String {
    for _ in 0..400 {
        if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let text = std::fs::read_to_string(path).unwrap();
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A build granted a secret for its pinned Dockerfile gets the value as its
/// build argument (a step writes its sha256 into the image; a container
/// copies it out), and so does a container of an image pinned by id, in
/// its environment; the skill passes only the reference and gets the
/// build's and the container's logs with the value redacted. Another
/// Dockerfile or image, another argument, a command of the skill's, a
/// reference inside a value: each refused, naming the digest to pin.
#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_dockerfile_and_image_get_secrets_the_skill_never_sees() {
    use sha2::Digest;
    use skillbox::policy::BuildSecret;
    use skillbox::secrets::{SecretBook, SecretSource};
    let Some(_) = endpoint() else { return };
    let d = dirs();
    let value = format!("npm-token-{:032x}", fastrand::u128(..));
    std::fs::copy("/bin/busybox", d.src.join("busybox")).unwrap();
    let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\nARG NPM_TOKEN\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"printf %s \\\"$NPM_TOKEN\\\" | /bin/busybox sha256sum > /token.sha256; echo token is $NPM_TOKEN\"]\n";
    std::fs::write(d.src.join("Dockerfile.secret"), dockerfile).unwrap();
    std::fs::write(
        d.src.join("Dockerfile.run"),
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         CMD [\"/bin/busybox\", \"sh\", \"-c\", \"printf %s \\\"$DB_PASSWORD\\\" | /bin/busybox sha256sum > /out/db.sha256; echo password is $DB_PASSWORD\"]\n",
    )
    .unwrap();
    std::fs::write(
        d.src.join("Dockerfile.evil"),
        format!(
            "{dockerfile}RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo $NPM_TOKEN > /leak\"]\n"
        ),
    )
    .unwrap();
    let pinned = format!("sha256:{}", hex::encode(sha2::Sha256::digest(dockerfile)));
    let use_ = BuildSecret::parse_cli("NPM_TOKEN", &pinned).unwrap();
    let mut grants = fs_grants(&d);
    grants.docker = DockerGrant {
        images: vec!["sbx-secret:*".into()],
        build: true,
        owner: Some("test-secret".into()),
        ..DockerGrant::default()
    };
    grants.secrets.docker_build = vec![use_];
    let source = manifest(&format!(
        "{REQUEST}[secrets]\ndocker-build = [ {{ secret = \"NPM_TOKEN\", dockerfile = \"{pinned}\" }} ]\n"
    ));
    let password = format!("db-password-{:032x}", fastrand::u128(..));
    let mut book = SecretBook::new();
    for (name, v) in [("NPM_TOKEN", &value), ("DB_PASSWORD", &password)] {
        book.define(
            name,
            SecretSource::Command(vec!["printf".into(), "%s".into(), v.clone()]),
        )
        .unwrap();
    }
    let secrets = book.resolve(["NPM_TOKEN", "DB_PASSWORD"]).unwrap();
    let reference = skillbox::secrets::reference("NPM_TOKEN");
    let name = format!("sbx-secret-{}", free_port());
    let build = |dockerfile: &str, args: Value| {
        json!({ "op": "build", "context": "/src", "dockerfile": dockerfile,
                "tag": "sbx-secret:v1", "args": args, "no_cache": true })
    };
    let (r, rec) = ops_with(
        &source,
        &grants,
        "task-secret",
        secrets.clone(),
        json!([
            build("Dockerfile.secret", json!({ "NPM_TOKEN": reference })),
            { "op": "run", "image": "sbx-secret:v1", "name": name,
              "cmd": ["/bin/busybox", "cp", "/token.sha256", "/out/token.sha256"],
              "mounts": [["/out", "/out", "rw"]] },
            build("Dockerfile.evil", json!({ "NPM_TOKEN": reference })),
            build("Dockerfile.secret", json!({ "OTHER": reference })),
            build("Dockerfile.secret", json!({ "NPM_TOKEN": format!("x{reference}") })),
            { "op": "build", "context": "/src", "dockerfile": "Dockerfile.run", "tag": "sbx-secret:run" },
        ]),
    )
    .await;
    let log = ok(&r[0])["log"].as_str().unwrap().to_string();
    assert!(log.contains("token is [redacted]"), "{log}");
    ok(&r[1]);
    assert_eq!(
        written_hash(&d.out.join("token.sha256")),
        hex::encode(sha2::Sha256::digest(value.as_bytes())),
        "the build got the value"
    );
    let evil = denied(&r[2], "is granted to builds of the Dockerfile");
    assert!(
        evil.contains(&pinned) && evil.contains("--allow-docker-build-secret NPM_TOKEN sha256:"),
        "{evil}"
    );
    denied(&r[3], "a secret goes in the build argument of its own name");
    denied(&r[4], "a secret is passed as the whole value");
    // Each use of the secret is audited: the pinned build's allowed, the
    // others refused, naming the digest they had.
    let uses: Vec<(bool, String)> = rec
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Audit {
                capability: "secrets",
                detail,
                allowed,
                ..
            } => Some((allowed, detail)),
            _ => None,
        })
        .collect();
    assert!(
        uses.iter()
            .any(|(ok, d)| *ok && d.starts_with("NPM_TOKEN to") && d.contains(&pinned)),
        "{uses:?}"
    );
    assert!(
        uses.iter()
            .any(|(ok, d)| !*ok && d.starts_with("NPM_TOKEN to") && !d.contains(&pinned)),
        "{uses:?}"
    );
    let everything = format!("{:?}{r:?}", rec.events());
    assert!(
        !everything.contains(&value),
        "the value reached the skill or the events"
    );

    // A container of an image pinned by id, running the image's command.
    let image_id = ok(&r[5])["image_id"].as_str().unwrap().to_string();
    grants.secrets.docker_run =
        vec![skillbox::policy::RunSecret::parse_cli("DB_PASSWORD", &image_id).unwrap()];
    let source = manifest(&format!(
        "{REQUEST}[secrets]\ndocker-run = [ {{ secret = \"DB_PASSWORD\", image = \"{image_id}\" }} ]\n"
    ));
    let db = skillbox::secrets::reference("DB_PASSWORD");
    let runner = format!("{name}-run");
    let (r, rec) = ops_with(
        &source,
        &grants,
        "task-secret",
        secrets.clone(),
        json!([
            { "op": "run", "image": "sbx-secret:run", "name": runner,
              "env": { "DB_PASSWORD": db }, "mounts": [["/out", "/out", "rw"]] },
            { "op": "run", "image": "sbx-secret:run", "env": { "DB_PASSWORD": db },
              "cmd": ["/bin/busybox", "env"] },
            { "op": "run", "image": "sbx-secret:v1", "env": { "DB_PASSWORD": db } },
        ]),
    )
    .await;
    ok(&r[0]);
    denied(
        &r[1],
        "a container given a secret runs its image's own command",
    );
    let other = denied(&r[2], "is granted to containers of the image");
    assert!(other.contains(&image_id), "{other}");
    assert_eq!(
        written_hash(&d.out.join("db.sha256")),
        hex::encode(sha2::Sha256::digest(password.as_bytes())),
        "the container got the value"
    );
    let (r, logged) = ops_with(
        &source,
        &grants,
        "task-secret",
        secrets,
        json!([{ "op": "logs", "container": runner }]),
    )
    .await;
    let logs = ok(&r[0]).as_str().unwrap().to_string();
    assert!(logs.contains("password is [redacted]"), "{logs}");
    assert!(
        !format!("{:?}{:?}", rec.events(), logged.events()).contains(&password),
        "the password reached the events"
    );
    for c in [&name, &runner] {
        let _ = cli(&["rm", "-f", c]);
    }
    for i in ["sbx-secret:v1", "sbx-secret:run"] {
        let _ = cli(&["rmi", "--no-prune", i]);
    }
}
