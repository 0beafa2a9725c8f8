//! The cost of the `docker` capability: the same operations through a
//! sandboxed guest (guest → host policy checks → engine API) and with the
//! `docker` CLI, interleaved in the same run, as ratios of medians.
//!
//! * build of an image whose layers are all cached;
//! * build without the cache (`--no-cache`);
//! * start a container (`run -d`, network none, memory and pids limits,
//!   no-new-privileges) and remove it (`rm -f`).
//!
//! Usage: `DOCKER_HOST=unix://… cargo run --release --example docker_overhead
//! -- HOSTILE.wasm CONTEXT-DIR [ITERATIONS]`, where HOSTILE.wasm is the
//! `hostile` test guest (its `docker` case runs a list of operations) and
//! CONTEXT-DIR a build context such as `skills/upgrade/example/app` with
//! `/bin/busybox` copied in.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skillbox::policy::{Access, DockerGrant, FsGrant};
use skillbox::prelude::*;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn docker_cli(args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new("docker")
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker CLI");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: docker_overhead HOSTILE.wasm CONTEXT-DIR [ITERATIONS]";
    let wasm = args.next().ok_or(usage)?;
    let context = std::path::PathBuf::from(args.next().ok_or(usage)?).canonicalize()?;
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let ctx = context.to_str().ok_or("context path is not UTF-8")?;

    let host = Host::new(EngineOptions::default())?;
    println!("engine endpoint: {}", host.docker().endpoint());
    let source = SkillSource::open(wasm.as_ref(), true)?;
    let prepared = host.prepare(&source)?;
    let grants = Grants {
        fs: vec![FsGrant {
            host: context.clone(),
            guest: Some("/src".into()),
            access: Access::Read,
        }],
        docker: DockerGrant {
            images: vec!["sbx-overhead:*".into()],
            build: true,
            memory: Some("64MiB".parse()?),
            pids: Some(64),
            owner: Some("sbx-overhead".into()),
            ..DockerGrant::default()
        },
        ..Grants::default()
    };
    let (policy, _) = EffectivePolicy::compute(None, &grants);
    let guest = |ops: Value| {
        let policy = policy.clone();
        let host = &host;
        let prepared = &prepared;
        async move {
            let t = Instant::now();
            let r = host
                .run(
                    prepared,
                    RunRequest {
                        input: json!({ "case": "docker", "ops": ops }).to_string(),
                        policy,
                        events: Arc::new(skillbox::events::Discard),
                        ..Default::default()
                    },
                )
                .await
                .expect("run");
            let took = t.elapsed();
            match &r.outcome {
                Outcome::Succeeded { data, .. } => {
                    for res in data["results"].as_array().unwrap() {
                        assert!(res.get("err").is_none(), "{res}");
                    }
                }
                other => panic!("{other:?}"),
            }
            took
        }
    };

    // Warm both paths (and the layer cache).
    let cli_build = |no_cache: bool| {
        let mut args = vec![
            "build",
            "-q",
            "--network",
            "none",
            "-t",
            "sbx-overhead:cli",
            ctx,
        ];
        if no_cache {
            args.insert(1, "--no-cache");
        }
        docker_cli(&args)
    };
    cli_build(false);
    guest(json!([{ "op": "build", "context": "/src", "tag": "sbx-overhead:cap" }])).await;

    let mut rows: Vec<(&str, Vec<Duration>, Vec<Duration>)> = vec![
        ("build, layers cached", vec![], vec![]),
        ("build --no-cache", vec![], vec![]),
        ("run -d + rm -f", vec![], vec![]),
    ];
    // Cached builds first, then uncached ones: the legacy builder looks up
    // its cache from the newest layers, so an uncached build of the same
    // context in between would make the next "cached" build miss.
    for _ in 0..n {
        let cap = guest(json!([{ "op": "build", "context": "/src", "tag": "sbx-overhead:cap" }]));
        rows[0].1.push(cap.await);
        rows[0].2.push(cli_build(false));
    }
    for _ in 0..n {
        let cap = guest(
            json!([{ "op": "build", "context": "/src", "tag": "sbx-overhead:cap", "no_cache": true }]),
        );
        rows[1].1.push(cap.await);
        rows[1].2.push(cli_build(true));
    }
    for i in 0..n {
        let name = format!("sbx-overhead-{i}");
        let cap = guest(json!([
            { "op": "run", "image": "sbx-overhead:cap", "name": name, "memory": 64 << 20, "pids": 64 },
            { "op": "remove", "container": name, "force": true },
        ]));
        rows[2].1.push(cap.await);
        rows[2].2.push(
            docker_cli(&[
                "run",
                "-d",
                "--name",
                &name,
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
                "sbx-overhead:cli",
            ]) + docker_cli(&["rm", "-f", &name]),
        );
    }
    println!(
        "{:<24} {:>14} {:>14} {:>8}   (median of {n})",
        "operation", "capability", "docker CLI", "ratio"
    );
    for (name, cap, cli) in rows {
        let (c, b) = (median(cap), median(cli));
        println!(
            "{name:<24} {:>14.1?} {:>14.1?} {:>8.2}",
            c,
            b,
            c.as_secs_f64() / b.as_secs_f64()
        );
    }
    let _ = Command::new("docker")
        .args(["rmi", "-f", "sbx-overhead:cap", "sbx-overhead:cli"])
        .output();
    Ok(())
}
