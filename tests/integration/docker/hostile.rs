//! The hostile build and container: a skill granted a Docker image pattern
//! tries to make the engine act on its own authority. Each test is one way
//! out that worked before (a base image or `COPY --from` outside the grant,
//! a remote `ADD`, a squatted owner, a device node, a swapped mount source,
//! a pattern that crossed a separator), and checks both what the skill was
//! told and that nothing happened on the engine or the host.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};
use skillbox::policy::DockerGrant;
use skillbox::prelude::*;

use super::{REQUEST, cli, denied, dirs, fs_grants, manifest, ok, ops};
use crate::harness;

/// Builds `tag` with the CLI (as the operator would) from `dockerfile` in
/// a fresh context holding `/bin/busybox` and `files`.
fn operator_builds(tag: &str, dockerfile: &str, files: &[(&str, &str)]) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", ctx.path().join("busybox")).unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    for (name, text) in files {
        std::fs::write(ctx.path().join(name), text).unwrap();
    }
    let (built, text) = cli(&["build", "-q", "-t", tag, ctx.path().to_str().unwrap()]);
    assert!(built, "{text}");
}

const BUSYBOX: &str = "FROM scratch\nCOPY busybox /bin/busybox\n";

fn exists(image: &str) -> bool {
    cli(&["image", "inspect", image]).0
}

/// Writes each Dockerfile into the context as `df-N` and builds it as
/// `TAG-N`; returns the results.
async fn builds(
    grants: &Grants,
    src: &Path,
    tag: &str,
    dockerfiles: &[&str],
    args: Value,
) -> Vec<Value> {
    let mut list = Vec::new();
    for (i, df) in dockerfiles.iter().enumerate() {
        std::fs::write(src.join(format!("df-{i}")), df).unwrap();
        list.push(
            json!({ "op": "build", "context": "/src", "dockerfile": format!("df-{i}"),
                          "tag": format!("{tag}-{i}"), "args": args }),
        );
    }
    ops(&manifest(REQUEST), grants, "task-build", json!(list))
        .await
        .0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_reads_no_image_outside_the_grant() {
    let Some(_) = super::endpoint() else { return };
    let d = dirs();
    operator_builds(
        "sbx-secret:v1",
        &format!("{BUSYBOX}COPY secret /secret\n"),
        &[("secret", "the-foreign-secret\n")],
    );
    // A tag inside the pattern whose trigger reads the foreign image, as
    // an older build (or the operator) could have left it.
    operator_builds(
        "sbx-b10:planted",
        "FROM scratch\nONBUILD COPY --from=sbx-secret:v1 /secret /secret\n",
        &[],
    );
    let mut grants = fs_grants(&d);
    grants.docker = DockerGrant {
        images: vec!["sbx-b10:*".into()],
        build: true,
        build_args: vec!["BASE".into()],
        owner: Some("test-b10".into()),
        ..DockerGrant::default()
    };
    let stolen = [
        "FROM sbx-secret:v1\n",
        "FROM scratch\nCOPY --from=sbx-secret:v1 /secret /secret\n",
        "from \\\n  sbx-secret:v1\n",
        "# escape=`\nFROM scratch\nCOPY `\n  --from=sbx-secret:v1 /secret /secret\n",
        "FROM scratch\nCOPY \\\n# a comment inside the instruction\n  --'from'=sbx-secret:v1 /secret /secret\n",
        "ARG BASE=scratch\nFROM $BASE\n",
        "FROM scratch\nONBUILD COPY --from=sbx-secret:v1 /secret /secret\n",
        "FROM scratch\nRUN --mount=type=bind,from=sbx-secret:v1,target=/m [\"/m/bin/busybox\", \"true\"]\n",
        "FROM sbx-b10:planted\n",
    ];
    let r = builds(
        &grants,
        &d.src,
        "sbx-b10:stolen",
        &stolen,
        json!({ "BASE": "sbx-secret:v1" }),
    )
    .await;
    let rule = "image \"sbx-secret:v1\" does not match a granted image pattern \
                (granted: sbx-b10:*; grant with --allow-docker 'sbx-secret:*')";
    for (i, (res, line)) in r.iter().zip([1, 2, 1, 3, 2, 2, 2, 2, 0]).enumerate() {
        let m = denied(res, rule);
        if line > 0 {
            assert!(m.contains(&format!("Dockerfile line {line}:")), "{i}: {m}");
        } else {
            assert!(m.contains("base image sbx-b10:planted"), "{i}: {m}");
        }
    }
    denied(&r[0], "FROM sbx-secret:v1");
    denied(&r[1], "COPY --from sbx-secret:v1");
    denied(&r[6], "ONBUILD COPY --from sbx-secret:v1");
    denied(&r[7], "RUN --mount from sbx-secret:v1");
    for i in 0..stolen.len() {
        assert!(
            !exists(&format!("sbx-b10:stolen-{i}")),
            "stolen-{i} was built"
        );
    }

    // Stages, granted bases and scratch are fine; nothing is pulled.
    let r = builds(
        &grants,
        &d.src,
        "sbx-b10:fine",
        &[
            "FROM scratch AS files\nCOPY busybox /bin/busybox\nFROM scratch\n\
             COPY --from=files /bin/busybox /bin/busybox\nCOPY --from=0 /bin/busybox /bin/bb\n",
            "FROM sbx-b10:fine-0\nCOPY www /www\n",
            "FROM sbx-b10:missing\n",
        ],
        json!({}),
    )
    .await;
    ok(&r[0]);
    ok(&r[1]);
    assert_eq!(r[2]["kind"], "not-found", "{}", r[2]);
    assert!(
        r[2]["err"].as_str().unwrap().contains("nothing is pulled"),
        "{}",
        r[2]
    );
    cli(&[
        "rmi",
        "--no-prune",
        "sbx-b10:fine-1",
        "sbx-b10:fine-0",
        "sbx-b10:planted",
        "sbx-secret:v1",
    ]);
}

/// A loopback HTTP server that counts connections; stops when dropped.
struct Receiver {
    port: u16,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        h.fetch_add(1, Ordering::SeqCst);
                        c.set_nonblocking(false).ok();
                        c.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                            .ok();
                        let mut buf = [0u8; 4096];
                        let _ = c.read(&mut buf);
                        let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nstolen");
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        });
        Receiver { port, hits, stop }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_cannot_make_the_engine_fetch_or_run_a_frontend() {
    let Some(_) = super::endpoint() else { return };
    let d = dirs();
    let server = Receiver::start();
    let port = server.port;
    let mut grants = fs_grants(&d);
    grants.docker = DockerGrant {
        images: vec!["sbx-b11:*".into()],
        build: true,
        owner: Some("test-b11".into()),
        ..DockerGrant::default()
    };
    let dockerfiles = [
        format!("FROM scratch\nADD http://127.0.0.1:{port}/payload /payload\n"),
        format!("FROM scratch\nadd [\"http://127.0.0.1:{port}/json\", \"/json\"]\n"),
        format!("FROM scratch\nADD \\\n  https://127.0.0.1:{port}/tls /tls\n"),
        format!("FROM scratch\nONBUILD ADD http://127.0.0.1:{port}/later /later\n"),
        format!("FROM scratch\nADD git@127.0.0.1:{port}/repo.git /repo\n"),
        format!("# syntax=127.0.0.1:{port}/frontend:1\nFROM scratch\nCOPY www /www\n"),
    ];
    let list: Vec<&str> = dockerfiles.iter().map(String::as_str).collect();
    let r = builds(&grants, &d.src, "sbx-b11:fetched", &list, json!({})).await;
    for res in &r[..5] {
        denied(res, "a remote source is never allowed");
        denied(res, "--allow-net");
    }
    denied(&r[5], "the parser directive `# syntax=");
    // Give a fetch that slipped through time to arrive.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        0,
        "the engine connected to the loopback server"
    );
    for i in 0..list.len() {
        assert!(
            !exists(&format!("sbx-b11:fetched-{i}")),
            "fetched-{i} was built"
        );
    }
}

/// A skill directory with the same manifest name as the `hostile` guest
/// but another component (the same code with one more custom section),
/// pinned as `skillbox build` would.
fn impostor(tables: &str) -> (tempfile::TempDir, SkillSource) {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(harness::guest("hostile")).unwrap();
    let (name, payload) = (&b"impostor"[..], &b"same name, other code"[..]);
    bytes.push(0);
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    std::fs::write(dir.path().join("skill.wasm"), &bytes).unwrap();
    std::fs::write(
        dir.path().join("skill.toml"),
        format!(
            "[skill]\nname = \"hostile\"\nversion = \"0.1.0\"\ncomponent = \"skill.wasm\"\nsha256 = \"{}\"\n{tables}",
            skillbox::skill::sha256_hex(&bytes)
        ),
    )
    .unwrap();
    let source = SkillSource::open(dir.path(), false).expect("the impostor opens");
    (dir, source)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_skill_of_the_same_name_cannot_touch_anothers_containers() {
    let Some(_) = super::endpoint() else { return };
    let d = dirs();
    operator_builds("sbx-own:v1", BUSYBOX, &[]);
    let name = format!("sbx-own-{}", super::free_port());
    // The real skill: no owner assigned, so its pinned digest is the owner.
    let mut grants = fs_grants(&d);
    grants.docker.images = vec!["sbx-own:*".into()];
    let real = manifest(REQUEST);
    let (r, _) = ops(
        &real,
        &grants,
        "task-real",
        json!([{ "op": "run", "image": "sbx-own:v1", "name": name,
                 "cmd": ["/bin/busybox", "sh", "-c", "echo private-log; exec /bin/busybox sleep 600"] }]),
    )
    .await;
    assert_eq!(ok(&r[0])["state"], "running");
    // Another skill directory naming itself the same, granted only evil:*.
    let (_dir, evil) = impostor(REQUEST);
    assert_ne!(evil.digest, real.digest);
    let mut evil_grants = fs_grants(&d);
    evil_grants.docker.images = vec!["evil:*".into()];
    let (r, _) = ops(
        &evil,
        &evil_grants,
        "task-evil",
        json!([
            { "op": "logs", "container": name },
            { "op": "stop", "container": name, "timeout": 1 },
            { "op": "remove", "container": name, "force": true },
            { "op": "inspect", "container": name },
            { "op": "ps", "all": true },
        ]),
    )
    .await;
    for res in &r[..4] {
        denied(res, "a skill may only touch its own containers");
    }
    assert_eq!(ok(&r[4]).as_array().unwrap().len(), 0, "{}", r[4]);

    // Its owner is the component's digest, which the impostor cannot have.
    let (_, labels) = cli(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"skillbox.owner\"}}",
        &name,
    ]);
    assert_eq!(
        labels.trim(),
        format!("sha256-{}", real.digest),
        "the owner is the component's digest, not its name"
    );

    // The real skill, in a later task, still has it and can remove it.
    let (r, _) = ops(
        &real,
        &grants,
        "task-real-2",
        json!([
            { "op": "logs", "container": name },
            { "op": "remove", "container": name, "force": true },
        ]),
    )
    .await;
    assert!(
        ok(&r[0]).as_str().unwrap().contains("private-log"),
        "{}",
        r[0]
    );
    ok(&r[1]);
    cli(&["rmi", "--no-prune", "sbx-own:v1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_cannot_make_device_nodes_in_a_granted_directory() {
    let Some(_) = super::endpoint() else { return };
    let d = dirs();
    operator_builds("sbx-mknod:v1", BUSYBOX, &[]);
    let name = format!("sbx-mknod-{}", super::free_port());
    let mut grants = fs_grants(&d);
    grants.docker.images = vec!["sbx-mknod:*".into()];
    grants.docker.owner = Some("test-mknod".into());
    let (r, _) = ops(
        &manifest(REQUEST),
        &grants,
        "task-mknod",
        json!([{ "op": "run", "image": "sbx-mknod:v1", "name": name,
                 "mounts": [["/out", "/w", "rw"]],
                 "cmd": ["/bin/busybox", "sh", "-c",
                         "/bin/busybox mknod /w/kmsg c 1 11 && /bin/busybox mknod /w/sda b 8 0"] }]),
    )
    .await;
    ok(&r[0]);
    let (_, code) = cli(&["wait", &name]);
    let (_, logs) = cli(&["logs", &name]);
    assert_ne!(code.trim(), "0", "mknod succeeded: {logs}");
    assert!(logs.contains("Operation not permitted"), "{logs}");
    assert!(!d.out.join("kmsg").exists() && !d.out.join("sda").exists());

    // The engine's view: everything dropped, a short documented list back.
    let (_, text) = cli(&["inspect", &name]);
    let info: Value = serde_json::from_str(&text).unwrap();
    let hc = &info[0]["HostConfig"];
    assert_eq!(hc["CapDrop"], json!(["ALL"]), "{hc}");
    let kept: Vec<&str> = hc["CapAdd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(kept, skillbox::caps::docker::CONTAINER_CAPABILITIES);
    cli(&["rm", "-f", &name]);
    cli(&["rmi", "--no-prune", "sbx-mknod:v1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mount_source_cannot_be_swapped_for_a_symlink() {
    let Some(_) = super::endpoint() else { return };
    let d = dirs();
    operator_builds("sbx-race:v1", BUSYBOX, &[]);
    std::fs::create_dir(d.out.join("sub")).unwrap();
    std::fs::create_dir(d.out.join("inner")).unwrap();
    let mut grants = fs_grants(&d);
    grants.fs.push(skillbox::policy::FsGrant {
        host: d.out.join("inner"),
        guest: Some("/inner".into()),
        access: skillbox::policy::Access::Read,
    });
    grants.docker.images = vec!["sbx-race:*".into()];
    grants.docker.owner = Some("test-race".into());
    let source = harness::source_with_manifest(
        "hostile",
        &REQUEST.replace("[fs]\n", "[fs]\n\"/inner\" = { access = \"read\" }\n"),
    );
    let flipper = format!("sbx-race-flip-{}", super::free_port());
    // A container on the writable grant flips /out/sub between a
    // directory and a symlink to / as fast as it can.
    let mut list = vec![json!({
        "op": "run", "image": "sbx-race:v1", "name": flipper, "mounts": [["/out", "/w", "rw"]],
        "cmd": ["/bin/busybox", "sh", "-c",
                "cd /w && while :; do mv sub sub.d; ln -s / sub; rm sub; mv sub.d sub; done"],
    })];
    for _ in 0..10 {
        list.push(json!({
            "op": "run", "image": "sbx-race:v1", "mounts": [["/out/sub", "/host", "ro"]],
            "cmd": ["/bin/busybox", "cat", "/host/etc/hostname"],
        }));
    }
    list.push(
        json!({ "op": "run", "image": "sbx-race:v1", "mounts": [["/inner", "/host", "ro"]] }),
    );
    list.push(json!({ "op": "remove", "container": flipper, "force": true }));
    let (r, _) = ops(&source, &grants, "task-race", json!(list)).await;
    ok(&r[0]);
    for res in &r[1..11] {
        let m = denied(
            res,
            "is inside the granted directory \"/out\", not one itself",
        );
        assert!(
            m.contains(&format!(
                "--allow-write {}:/out/sub",
                d.out.join("sub").display()
            )),
            "{m}"
        );
    }
    denied(&r[11], "lies beneath the read-write grant \"/out\"");
    ok(&r[12]);
    // Granted directories themselves still mount (the allow test mounts
    // /state); nothing else was started.
    let (_, ps) = cli(&["ps", "-aq", "--filter", "label=skillbox.owner=test-race"]);
    assert!(ps.trim().is_empty(), "{ps}");
    cli(&["rmi", "--no-prune", "sbx-race:v1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_pattern_does_not_reach_another_registry() {
    let Some(_) = super::endpoint() else { return };
    let d = dirs();
    operator_builds("sbx-p15:v1", BUSYBOX, &[]);
    let mut grants = fs_grants(&d);
    grants.docker = DockerGrant {
        images: vec!["sbx-p15:*".into()],
        build: true,
        owner: Some("test-p15".into()),
        ..DockerGrant::default()
    };
    let other = "sbx-p15:5000/evil:y";
    let (r, _) = ops(
        &manifest(REQUEST),
        &grants,
        "task-p15",
        json!([
            { "op": "tag", "source": "sbx-p15:v1", "target": other },
            { "op": "build", "context": "/src", "tag": other },
            { "op": "image", "tag": other },
            { "op": "run", "image": other },
            { "op": "tag", "source": "sbx-p15:v1", "target": "sbx-p15:v2" },
        ]),
    )
    .await;
    for res in &r[..4] {
        denied(
            res,
            "image \"sbx-p15:5000/evil:y\" does not match a granted image pattern",
        );
    }
    ok(&r[4]);
    assert!(!exists(other));
    cli(&["rmi", "--no-prune", "sbx-p15:v1", "sbx-p15:v2"]);
}
