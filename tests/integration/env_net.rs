//! `env` and `net`: only named variables, only granted endpoints.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use skillbox::prelude::*;

use crate::harness::*;

#[tokio::test]
async fn only_granted_variables_are_visible() {
    let (secret, visible) = test_env();
    let src = source_with_manifest(
        "hostile",
        "[env]\nallow = [\"SKILLBOX_TEST_VISIBLE\", \"SKILLBOX_TEST_SECRET\"]\n",
    );
    let g = grants(&["--allow-env", "SKILLBOX_TEST_VISIBLE"]);
    let (r, _) = run(&src, &g, json!({"case": "env"})).await;
    let vars = succeeded(&r).1["vars"].clone();
    assert_eq!(vars["SKILLBOX_TEST_VISIBLE"], visible);
    assert!(!vars.to_string().contains(&secret), "{vars}");
    assert!(
        vars.get("PATH").is_none() && vars.get("HOME").is_none(),
        "{vars}"
    );

    let (r, _) = run(
        &src,
        &g,
        json!({"case": "env-get", "name": "SKILLBOX_TEST_SECRET"}),
    )
    .await;
    let (_, message) = failed(&r);
    assert!(!message.contains(&secret));
}

/// A loopback server that calls `answer` for each connection and counts them.
fn serve(answer: impl Fn(&std::net::TcpStream) + Send + 'static) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            answer(&s);
        }
    });
    (addr, hits)
}

/// Answers each line with "pong".
fn server() -> (String, Arc<AtomicUsize>) {
    serve(|s| {
        let mut line = String::new();
        let _ = BufReader::new(s).read_line(&mut line);
        let _ = (&*s).write_all(b"pong\n");
    })
}

#[tokio::test]
async fn only_granted_endpoints_are_reachable() {
    let (allowed, allowed_hits) = server();
    let (other, other_hits) = server();
    let src = source_with_manifest("hostile", &format!("[net]\nallow = [\"{allowed}\"]\n"));
    let g = grants(&["--allow-net", &allowed]);

    let (r, _) = run(&src, &g, json!({"case": "connect", "addr": allowed})).await;
    assert_eq!(succeeded(&r).1["reply"].as_str().unwrap().trim(), "pong");
    assert_eq!(allowed_hits.load(Ordering::SeqCst), 1);

    let (r, rec) = run(&src, &g, json!({"case": "connect", "addr": other})).await;
    let (kind, message) = failed(&r);
    assert_eq!(kind, FailureKind::Denied, "{message}");
    assert!(
        rec.denials()
            .iter()
            .any(|d| d.contains("not a granted endpoint")),
        "{:?}",
        rec.denials()
    );
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "the ungranted server was reached"
    );

    // Requested but not granted: no network at all.
    let (r, rec) = run(
        &src,
        &Grants::default(),
        json!({"case": "connect", "addr": allowed}),
    )
    .await;
    failed(&r);
    assert_eq!(allowed_hits.load(Ordering::SeqCst), 1);
    let _ = rec;
}

/// No server inside the sandbox: binding a port to listen is refused, even
/// on an address whose port is granted for connecting.
#[tokio::test]
async fn listening_is_refused() {
    let (granted, _) = server();
    let src = source_with_manifest("hostile", &format!("[net]\nallow = [\"{granted}\"]\n"));
    let g = grants(&["--allow-net", &granted]);
    for addr in [
        "127.0.0.1:0",
        "0.0.0.0:0",
        "0.0.0.0:18089",
        granted.as_str(),
    ] {
        let (r, _) = run(&src, &g, json!({"case": "listen", "addr": addr})).await;
        let (kind, message) = failed(&r);
        assert_eq!(kind, FailureKind::Denied, "{addr}: {message}");
    }
}

#[tokio::test]
async fn checkpoints_round_trip_within_a_run() {
    let src = source_with_manifest("hostile", "");
    let (r, _) = run(
        &src,
        &Grants::default(),
        json!({"case": "checkpoint", "key": "step", "value": "backup-done"}),
    )
    .await;
    assert_eq!(succeeded(&r).1["loaded"], "backup-done");
    assert_eq!(
        r.checkpoints.get("step").map(|v| v.as_slice()),
        Some(&b"backup-done"[..])
    );
    let (r, _) = run(
        &src,
        &Grants::default(),
        json!({"case": "checkpoint-load", "key": "step"}),
    )
    .await;
    assert_eq!(
        succeeded(&r).1["loaded"],
        serde_json::Value::Null,
        "checkpoints are per run"
    );
}

#[tokio::test]
async fn progress_and_logs_are_events() {
    let src = source_with_manifest("hostile", "");
    let (r, rec) = run(
        &src,
        &Grants::default(),
        json!({"case": "progress", "steps": 4}),
    )
    .await;
    succeeded(&r);
    let fractions: Vec<f32> = rec
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Progress { fraction, .. } => *fraction,
            _ => None,
        })
        .collect();
    assert!(fractions.len() >= 4, "{fractions:?}");
    assert!(fractions.windows(2).all(|w| w[0] <= w[1]), "{fractions:?}");
    assert!(rec.events().iter().any(|e| matches!(e, Event::Log { .. })));
}

/// Answers every HTTP request with `status` and `body`.
fn http_server(status: &'static str, body: &'static str) -> (String, Arc<AtomicUsize>) {
    serve(move |s| {
        let mut r = BufReader::new(s);
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
            line.clear();
        }
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = (&*s).write_all(format!("{head}{body}").as_bytes());
    })
}

/// Outgoing HTTP (the SDK's client over WASI sockets) obeys the same
/// allowlist; nothing else (e.g. wasi:http) is linked, so there is no second
/// path around it.
#[tokio::test]
async fn outgoing_http_only_to_granted_endpoints() {
    let (ok, ok_hits) = http_server("200 OK", "healthy");
    let (other, other_hits) = http_server("200 OK", "should never be seen");
    let src = source_with_manifest(
        "hostile",
        &format!("[net]\nallow = [\"{ok}\", \"{other}\"]\n"),
    );
    let g = grants(&["--allow-net", &ok]);

    let (r, _) = run(
        &src,
        &g,
        json!({"case": "http-get", "url": format!("http://{ok}/healthz")}),
    )
    .await;
    let data = succeeded(&r).1;
    assert_eq!(data["status"], 200);
    assert_eq!(data["body"], "healthy");
    assert_eq!(ok_hits.load(Ordering::SeqCst), 1);

    let (r, rec) = run(
        &src,
        &g,
        json!({"case": "http-get", "url": format!("http://{other}/")}),
    )
    .await;
    let (kind, message) = failed(&r);
    assert_eq!(kind, FailureKind::Denied, "{message}");
    assert!(!message.contains("should never be seen"));
    assert!(!rec.denials().is_empty());
    assert_eq!(other_hits.load(Ordering::SeqCst), 0);
}

/// An endpoint granted by name is resolved when the run starts; the guest
/// may reach the addresses it resolved to, on that port only.
#[tokio::test]
async fn endpoints_granted_by_name_resolve_at_start() {
    let (addr, hits) = server();
    let port = addr.rsplit_once(':').unwrap().1;
    let by_name = format!("localhost:{port}");
    let src = source_with_manifest("hostile", &format!("[net]\nallow = [\"{by_name}\"]\n"));
    let g = grants(&["--allow-net", &by_name]);
    let (r, _) = run(&src, &g, json!({"case": "connect", "addr": addr})).await;
    assert_eq!(succeeded(&r).1["reply"], "pong");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let (other, other_hits) = server();
    let (r, _) = run(&src, &g, json!({"case": "connect", "addr": other})).await;
    assert_eq!(failed(&r).0, FailureKind::Denied);
    assert_eq!(other_hits.load(Ordering::SeqCst), 0);
}

/// A name lookup is a channel out (the name itself carries the data to
/// whoever answers for its domain), so the guest may look up only the
/// names it was granted, and gets the addresses resolved when the run
/// started. `vm` is in this machine's /etc/hosts (as `localhost` is): it
/// would resolve without leaving the host, and is refused all the same.
#[tokio::test]
async fn only_granted_names_can_be_looked_up() {
    let (addr, hits) = server();
    let port = addr.rsplit_once(':').unwrap().1;
    let by_name = format!("localhost:{port}");
    let src = source_with_manifest("hostile", &format!("[net]\nallow = [\"{by_name}\"]\n"));
    let g = grants(&["--allow-net", &by_name]);

    let (r, _) = run(&src, &g, json!({"case": "resolve", "name": "localhost"})).await;
    let addresses = succeeded(&r).1["addresses"].clone();
    assert!(
        addresses
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|ip| ip == "127.0.0.1" || ip == "::1")),
        "{addresses}"
    );
    let (r, _) = run(&src, &g, json!({"case": "connect", "addr": by_name})).await;
    assert_eq!(succeeded(&r).1["reply"], "pong");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    for name in ["vm", "VM", "runsc"] {
        let (r, rec) = run(&src, &g, json!({"case": "resolve", "name": name})).await;
        let (_, message) = failed(&r);
        assert!(message.contains(&format!("resolve {name}")), "{message}");
        assert!(
            rec.denials()
                .iter()
                .any(|d| d.contains(name) && d.contains("not a granted name")),
            "{name}: {:?}",
            rec.denials()
        );
    }
    // IP literals are not lookups: they answer as themselves.
    let (r, _) = run(&src, &g, json!({"case": "resolve", "name": "127.0.0.1"})).await;
    assert_eq!(succeeded(&r).1["addresses"], json!(["127.0.0.1"]));
}
