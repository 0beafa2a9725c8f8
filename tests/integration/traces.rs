//! OpenTelemetry traces of a task, exported by a real daemon over OTLP/HTTP
//! (protobuf) to a receiver on loopback, which decodes them with the
//! OpenTelemetry project's own protobuf types. The receiver is the test's
//! own small collector, and it is the task's webhook sink too, so the trace
//! covers the delivery: one trace from the client's span to the delivery.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

use crate::daemon::{Daemon, post};
use crate::harness::*;
use crate::relay::{config, webhook};

/// One span as received.
#[derive(Clone, Debug)]
struct Span {
    name: String,
    trace: String,
    id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP receiver (`POST /v1/traces`) and webhook sink (`POST
/// /hook`) on 127.0.0.1; what it received, for as long as the test runs.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
    hooks: Arc<Mutex<u32>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let hooks = Arc::new(Mutex::new(0));
        let (s, h) = (spans.clone(), hooks.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, h) = (s.clone(), h.clone());
                std::thread::spawn(move || serve(conn, &s, &h));
            }
        });
        Receiver { port, spans, hooks }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

/// Answers the requests of one connection (kept alive) until it closes.
fn serve(conn: TcpStream, spans: &Mutex<Vec<Span>>, hooks: &Mutex<u32>) {
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len = 0;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let status = match path.as_str() {
            "/v1/traces" => match ExportTraceServiceRequest::decode(body.as_slice()) {
                Ok(req) => {
                    spans.lock().unwrap().extend(decode(req));
                    "200 OK"
                }
                Err(_) => "400 Bad Request",
            },
            "/hook" => {
                *hooks.lock().unwrap() += 1;
                "200 OK"
            }
            _ => "404 Not Found",
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
        );
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn decode(req: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        for ss in rs.scope_spans {
            for s in ss.spans {
                let attributes = s
                    .attributes
                    .iter()
                    .map(|kv| {
                        let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(AnyValue::StringValue(s)) => s.clone(),
                            Some(AnyValue::IntValue(i)) => i.to_string(),
                            Some(AnyValue::BoolValue(b)) => b.to_string(),
                            other => format!("{other:?}"),
                        };
                        (kv.key.clone(), v)
                    })
                    .collect();
                out.push(Span {
                    name: s.name,
                    trace: hex::encode(&s.trace_id),
                    id: hex::encode(&s.span_id),
                    parent: hex::encode(&s.parent_span_id),
                    attributes,
                });
            }
        }
    }
    out
}

#[test]
fn a_task_is_one_trace_from_the_clients_span_to_its_delivery() {
    let receiver = Receiver::start();
    let data = tempfile::tempdir().unwrap();
    let cfg = config(
        data.path(),
        &webhook("ops", &format!("http://127.0.0.1:{}/hook", receiver.port)),
        "\"ops\"",
    );
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let d = Daemon::start_env(
        data.path(),
        &["--config", cfg.to_str().unwrap()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "skillbox-test"),
        ],
    );
    let skill = skill_dir(
        "hostile",
        "[exec]\nallow = [ { program = \"echo\", args = [\"**\"] } ]\n",
    );
    // The client's own trace, which the task's joins.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let body = json!({
        "skill": skill.path(),
        "input": {"case": "exec", "program": "echo", "args": ["traced"]},
        "grants": {"exec": {"allow": [{"program": "echo", "args": ["**"]}]}},
    })
    .to_string();
    let request = String::from_utf8(post("/v1/tasks", &body))
        .unwrap()
        .replacen(
            "Connection: close\r\n",
            &format!("Connection: close\r\ntraceparent: 00-{client_trace}-{client_span}-01\r\n"),
            1,
        );
    let (status, reply) = d.http(request.as_bytes());
    assert_eq!(status, 201, "{reply}");
    let task: serde_json::Value =
        serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let id = task["id"].as_str().unwrap().to_string();
    let ended = d.cli(&["tasks", "wait", &id, "--json"]).json();
    assert_eq!(ended["state"], "succeeded", "{ended}");
    let stored = ended["spec"]["trace"].as_str().unwrap_or_default();
    assert!(
        stored.starts_with(&format!("00-{client_trace}-")),
        "the task keeps its trace: {ended}"
    );

    // Every span of the task, once the delivery's has arrived.
    let of_task = |spans: &[Span]| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| s.attributes.get("skillbox.task.id") == Some(&id))
            .cloned()
            .collect()
    };
    // A bounded wait (a safety net, not a timing assertion).
    let delivered = (0..2400).any(|_| {
        let seen = of_task(&receiver.spans())
            .iter()
            .any(|s| s.name == "task.deliver");
        if !seen {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        seen
    });
    let all = receiver.spans();
    assert!(
        delivered,
        "no delivery span arrived; spans: {all:#?}\ndaemon:\n{}",
        d.log()
    );
    assert!(*receiver.hooks.lock().unwrap() >= 1);
    // The spans of the client's trace (the capability call's names no
    // task: the run's span, its parent, does).
    let named = |name: &str| -> Span {
        let found: Vec<&Span> = all
            .iter()
            .filter(|s| s.name == name && s.trace == client_trace)
            .collect();
        assert_eq!(found.len(), 1, "one {name} span: {all:#?}");
        found[0].clone()
    };
    let api = named("api.spawn");
    let spawn = named("task.spawn");
    let claim = named("task.claim");
    let run = named("task.run");
    let exec = named("capability.exec");
    let finish = named("task.finish");
    let deliver = named("task.deliver");

    for s in [&spawn, &claim, &run, &finish, &deliver] {
        assert_eq!(s.attributes["skillbox.task.id"], id, "{s:?}");
    }
    // Its shape.
    assert_eq!(api.parent, client_span);
    assert_eq!(spawn.parent, api.id);
    assert_eq!(claim.parent, spawn.id);
    assert_eq!(run.parent, spawn.id);
    assert_eq!(exec.parent, run.id);
    assert_eq!(finish.parent, spawn.id);
    assert_eq!(deliver.parent, spawn.id);
    // What they say.
    assert_eq!(run.attributes["skillbox.state"], "succeeded");
    assert_eq!(run.attributes["skillbox.attempt"], "1");
    assert_eq!(exec.attributes["skillbox.capability"], "exec");
    assert_eq!(exec.attributes["skillbox.allowed"], "true");
    assert!(
        exec.attributes["skillbox.call"].contains("echo"),
        "{exec:?}"
    );
    assert_eq!(deliver.attributes["skillbox.sink"], "ops");
    assert_eq!(deliver.attributes["skillbox.outcome"], "delivered");
}

#[test]
fn without_an_endpoint_nothing_is_traced_and_no_trace_is_stored() {
    let data = tempfile::tempdir().unwrap();
    let d = Daemon::start(data.path(), &[]);
    let skill = real_skill("hello");
    let out = d.cli(&["spawn", skill.path().to_str().unwrap(), "--input", "{}"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim();
    let task = d.cli(&["tasks", "wait", id, "--json"]).json();
    assert_eq!(task["state"], "succeeded");
    assert!(task["spec"].get("trace").is_none(), "{task}");
}
