//! An agent runtime embedding skillbox as a library.
//!
//! It loads the operator's policy for a skill, spawns two skills as durable
//! tasks at once, streams their progress as they run, receives each
//! summary through the relay's channel sink (the way the parent session
//! would hear of it), and handles a denial: a skill whose requests the
//! policy does not grant is refused before it runs.
//!
//! Usage: `cargo run --example agent_runtime -- HELLO DISK-REPORT POLICY
//! [DATA-DIR]`, with `HELLO` and `DISK-REPORT` built skill directories
//! (`skillbox build skills/hello --out target/skills/hello`, the same for
//! disk-report) and `POLICY` a policy file granting disk-report what it
//! asks for, e.g.
//!
//! ```toml
//! fs = [{ host = "/srv/data", guest = "/data", access = "read" }]
//! [exec]
//! allow = [{ program = "du", args = ["-k", "-d", "1", "."] },
//!          { program = "stat", args = ["-f", "-c", "%b %f %S", "."] }]
//! ```
//!
//! It prints one line per event and exits 0 once both summaries arrived.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use skillbox::prelude::*;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> Res<()> {
    let mut args = std::env::args().skip(1).map(PathBuf::from);
    let usage = "usage: agent_runtime HELLO DISK-REPORT POLICY [DATA-DIR]";
    let hello = args.next().ok_or(usage)?;
    let disk_report = args.next().ok_or(usage)?;
    let policy = Grants::load(&args.next().ok_or(usage)?)?;
    let data_dir = match args.next() {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("agent-runtime-{}", std::process::id())),
    };
    std::fs::create_dir_all(&data_dir)?;

    // The host: an engine, a durable store, and a relay whose default sink
    // is a channel this runtime reads.
    let (relay, mut summaries) = Relay::new().channel("session");
    let host = TaskService::new(
        Arc::new(Host::new(EngineOptions::default())?),
        Arc::new(SqliteStore::open_dir(&data_dir)?),
        TaskOptions {
            relay: relay.with_default(vec!["session".into()])?,
            ..TaskOptions::default()
        },
    );
    let host = Arc::new(host);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(host.clone().work(stopped));

    // A denial: disk-report with nothing granted is refused at spawn, with
    // the requests that were not granted and how to grant them.
    match host.spawn(SpawnRequest::new(&disk_report, r#"{"path": "/data"}"#)) {
        Err(Error::NotGranted(why)) => println!("[denied] disk-report without grants: {why}"),
        Err(e) => return Err(e.into()),
        Ok(t) => return Err(format!("task {} was spawned with nothing granted", t.id).into()),
    }

    // Two skills at once; the operator's policy is the only source of grants.
    let tasks = [
        (
            "hello",
            host.spawn(SpawnRequest::new(&hello, r#"{"name": "agent"}"#))?
                .id,
        ),
        (
            "disk-report",
            host.spawn(SpawnRequest {
                grants: policy,
                ..SpawnRequest::new(&disk_report, r#"{"path": "/data", "top": 3}"#)
            })?
            .id,
        ),
    ];
    let mut followers = Vec::new();
    for (name, id) in tasks {
        println!("[spawned] {name} as task {id}");
        let events = host.subscribe(id, 0);
        followers.push(tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(Ok(record)) = events.next().await {
                match record.event {
                    TaskEvent::Progress { fraction, message } => {
                        let pct = fraction.map(|f| format!(" {:.0}%", f * 100.0));
                        println!("[{name}] progress{}: {message}", pct.unwrap_or_default());
                    }
                    TaskEvent::State { to, .. } => println!("[{name}] {to}"),
                    _ => {}
                }
            }
        }));
    }
    for f in followers {
        f.await?;
    }

    // The summaries, as the parent session receives them.
    for _ in 0..tasks.len() {
        let n = tokio::time::timeout(Duration::from_secs(60), summaries.recv())
            .await?
            .ok_or("the relay channel closed")?;
        println!(
            "[summary] {} {}: {}",
            n.skill,
            n.state,
            n.summary.as_deref().or(n.error.as_deref()).unwrap_or("")
        );
    }
    let _ = stop.send(true);
    worker.await??;
    Ok(())
}
