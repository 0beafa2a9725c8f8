//! `/metrics` scraped by a real Prometheus server (Debian's, started here on
//! loopback with a scrape configuration pointing at the daemon, with its
//! token), and read back with PromQL over Prometheus's HTTP API after a
//! burst of tasks.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::daemon::Daemon;
use crate::docker::{free_port, http_get};
use crate::harness::*;
use crate::workers::wait_for;

const TOKEN: &str = "metrics-token-0123456789abcdef";

/// A Prometheus server of the test; killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second with the token;
    /// `None` (said loudly) when Prometheus is not installed, unless
    /// `CI=true`.
    fn start(target: &str) -> Option<Prometheus> {
        if Command::new("prometheus")
            .arg("--version")
            .output()
            .is_err()
        {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "Prometheus is required when CI=true (tests/prometheus/prometheus.sh install)"
            );
            eprintln!(
                "SKIPPED metrics: install prometheus (tests/prometheus/prometheus.sh install)"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: skillbox\n    metrics_path: /metrics\n\
                 \x20   authorization:\n      credentials: {TOKEN}\n\
                 \x20   static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Some(Prometheus { child, port, dir })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of the instant vector `query` (its one sample), if any.
    fn query(&self, query: &str) -> Option<f64> {
        let path = format!(
            "/api/v1/query?query={}",
            percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC)
        );
        let (200, body) = http_get(self.port, &path)? else {
            return None;
        };
        let v: Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("Prometheus said:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_burst(d: &Daemon, skill: &Path, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n)
        .map(|i| {
            let input = format!(r#"{{"name": "burst {i}"}}"#);
            let out = d.cli(&["spawn", skill.to_str().unwrap(), "--input", &input]);
            assert_eq!(out.code, 0, "{}", out.stderr);
            out.stdout.trim().to_string()
        })
        .collect();
    for id in &ids {
        assert_eq!(d.cli(&["tasks", "wait", id]).code, 0);
    }
    ids
}

#[test]
fn a_real_prometheus_scrapes_task_counts_after_a_burst() {
    let data = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(data.path(), &["--listen", &addr, "--token", TOKEN]);
    let Some(prom) = Prometheus::start(&addr) else {
        return;
    };
    // Without the token, nothing is served.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(!answer.contains("skillbox_tasks"), "{answer}");

    wait_for("the first scrape", Duration::from_secs(120), || {
        (prom.query("up{job=\"skillbox\"}") == Some(1.0)).then_some(())
    });
    let skill = real_skill("hello");
    const N: usize = 12;
    spawn_burst(&d, skill.path(), N);
    wait_for("the burst's counts", Duration::from_secs(120), || {
        (prom.query("skillbox_tasks{state=\"succeeded\"}") == Some(N as f64)).then_some(())
    });
    assert_eq!(prom.query("skillbox_tasks{state=\"queued\"}"), Some(0.0));
    assert_eq!(prom.query("skillbox_queue_depth"), Some(0.0));
    assert_eq!(
        prom.query("sum(skillbox_tasks_spawned_total)"),
        Some(N as f64)
    );
    assert_eq!(
        prom.query("skillbox_tasks_finished_total{state=\"succeeded\"}"),
        Some(N as f64)
    );
    assert_eq!(
        prom.query("skillbox_task_run_seconds_count"),
        Some(N as f64)
    );
    // The store's transactions and the component's preparation are seen.
    let writes = prom
        .query("sum(skillbox_store_transaction_seconds_count{backend=\"sqlite\",kind=\"write\"})")
        .unwrap();
    assert!(writes >= N as f64, "{writes}");
    assert!(
        prom.query("sum(skillbox_components_prepared_total)")
            .is_some_and(|n| n >= 1.0)
    );

    // A failing burst and a refused call show up too.
    let hostile = skill_dir(
        "hostile",
        "[exec]\nallow = [ { program = \"echo\", args = [\"**\"] } ]\n",
    );
    let input = r#"{"case": "exec", "program": "ls", "args": ["/"]}"#;
    let out = d.cli(&[
        "spawn",
        hostile.path().to_str().unwrap(),
        "--input",
        input,
        "--allow-exec",
        "echo **",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    d.cli(&["tasks", "wait", out.stdout.trim()]);
    wait_for("the refusal", Duration::from_secs(120), || {
        let refused = "skillbox_capability_calls_total{capability=\"exec\",allowed=\"false\"}";
        (prom.query(refused) == Some(1.0)).then_some(())
    });
    assert_eq!(prom.query("skillbox_tasks{state=\"failed\"}"), Some(1.0));
}
