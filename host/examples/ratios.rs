//! Measures skillbox against baselines taken in the same process, and prints
//! ratios (these machines are noisy; absolute times mean little):
//!
//! * loading a cached compiled component vs compiling it;
//! * spawn-to-summary of a skill (instantiate + run + summary, component
//!   prepared) vs a native fork+exec+wait of `/bin/true`;
//! * host-mediated exec of `/bin/true` (policy check, clean env, process
//!   group, Landlock) vs a native spawn of it.
//!
//! Usage: `cargo run --example ratios -- COMPONENT.wasm [ITERATIONS]`
//! (`FORK_PROBE=1` adds a bare fork+exec baseline, `NO_POOLING=1` and
//! `POOL=N` change the engine's allocator.)
//! (COMPONENT should be the `hello` skill: it is run with `{}`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use skillbox::caps::exec::{self, Request};
use skillbox::caps::sandbox::Sandbox;
use skillbox::prelude::*;

fn mean<F: FnMut()>(n: u32, mut f: F) -> Duration {
    f();
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

async fn mean_async<F, Fut>(n: u32, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f().await;
    let t = Instant::now();
    for _ in 0..n {
        f().await;
    }
    t.elapsed() / n
}

fn row(name: &str, ours: Duration, base: Duration, base_name: &str) {
    println!(
        "{name:<44} {:>10.1?} | {base_name:<28} {:>10.1?} | ratio {:>8.3}",
        ours,
        base,
        ours.as_secs_f64() / base.as_secs_f64()
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: ratios COMPONENT.wasm [ITERATIONS]")?;
    let n: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(200);
    let source = SkillSource::open(path.as_ref(), true)?;
    let cache = tempfile::tempdir()?;
    let opts = EngineOptions {
        cache_dir: Some(cache.path().to_owned()),
        pooling: std::env::var_os("NO_POOLING").is_none(),
        // The pool size `skillbox run` uses; see the note on fork cost in
        // caps::exec.
        max_instances: std::env::var("POOL")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4),
        ..EngineOptions::default()
    };

    // 1. First compile vs cached load (a fresh Host each time, so the
    // in-memory InstancePre cache does not help).
    let t = Instant::now();
    let first = Host::new(opts.clone())?.prepare(&source)?;
    let compile = t.elapsed();
    assert_eq!(first.cache, CacheOutcome::Compiled);
    let loads = n.min(20);
    let mut cached = Duration::ZERO;
    for _ in 0..loads {
        let host = Host::new(opts.clone())?;
        let t = Instant::now();
        let p = host.prepare(&source)?;
        cached += t.elapsed();
        assert_eq!(p.cache, CacheOutcome::Hit);
    }
    let cached = cached / loads;
    drop(first);
    // Let the dropped hosts' epoch threads release their engines, so the
    // process below holds one engine, as `skillbox run` does.
    std::thread::sleep(Duration::from_millis(100));

    // 2. Spawn-to-summary vs native fork+exec+wait.
    let host = Host::new(opts.clone())?;
    let prepared = host.prepare(&source)?;
    let (policy, _) = EffectivePolicy::compute(source.manifest.as_ref(), &Grants::default());
    let run = mean_async(n, || {
        let policy = policy.clone();
        let prepared = &prepared;
        let host = &host;
        async move {
            let r = host
                .run(
                    prepared,
                    RunRequest {
                        input: "{}".into(),
                        policy,
                        events: Arc::new(skillbox::events::Discard),
                        ..Default::default()
                    },
                )
                .await
                .expect("run");
            assert!(
                matches!(r.outcome, Outcome::Succeeded { .. }),
                "{:?}",
                r.outcome
            );
        }
    })
    .await;
    let native = mean(n, || {
        let s = std::process::Command::new("/bin/true")
            .status()
            .expect("spawn");
        assert!(s.success());
    });

    // 3. Host-mediated exec vs the same native spawn+wait as in 2.
    let grants = Grants {
        exec: skillbox::policy::Grants::default().exec,
        ..Grants::default()
    };
    let mut grants = grants;
    grants.exec.allow.push(ExecRule::parse_cli("/bin/true")?);
    let (exec_policy, _) = EffectivePolicy::compute(None, &grants);
    let sandbox = if std::env::var_os("NO_LANDLOCK").is_some() {
        Sandbox::none()
    } else {
        Sandbox::for_policy(&exec_policy)
    };
    let mediated = mean_async(n, || {
        let req = Request {
            program: "/bin/true".into(),
            ..Request::default()
        };
        let (p, s) = (&exec_policy, &sandbox);
        async move {
            let r = exec::run(
                p,
                s,
                req,
                Instant::now() + Duration::from_secs(60),
                &skillbox::events::Discard,
            )
            .await
            .expect("exec");
            assert_eq!(r.status, 0);
        }
    })
    .await;

    if std::env::var_os("FORK_PROBE").is_some() {
        let forked = mean_async(n, || async {
            let mut c = tokio::process::Command::new("/bin/true");
            // SAFETY: an empty pre_exec closure, only to force fork+exec.
            unsafe {
                c.pre_exec(|| Ok(()));
            }
            assert!(c.status().await.expect("spawn").success());
        })
        .await;
        row(
            "native fork (pre_exec) of /bin/true",
            forked,
            native,
            "native spawn+wait of true",
        );
    }
    println!(
        "skillbox ratios ({n} iterations; exec sandbox: {})",
        sandbox.status
    );
    row("cached component load", cached, compile, "first compile");
    row(
        "spawn-to-summary (hello, prepared)",
        run,
        native,
        "native fork+exec+wait true",
    );
    row(
        "host-mediated exec of /bin/true",
        mediated,
        native,
        "native spawn+wait of true",
    );
    Ok(())
}
