//! `serve --listen` over TLS: the CLI, curl and an MCP client reach the API
//! with the operator's CA and the bearer token; a client that does not trust the
//! certificate, plain HTTP, and every bad set-up are refused with what
//! failed.

use std::io::{Read, Write};

use crate::daemon::Daemon;
use crate::harness::{cli, real_skill};
use crate::relay_tls::Ca;

const TOKEN: &str = "tls-token-0123456789abcdef";

#[test]
fn serve_over_tls_takes_clients_that_verify_it_and_the_token() {
    let data = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("skillbox test API CA");
    let (crt, key) = ca.issue(certs.path(), "api", &["127.0.0.1"], (2020, 2099));
    let (_, other_key) = ca.issue(certs.path(), "other", &["127.0.0.1"], (2020, 2099));
    let ca_file = certs.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (crt, key, other_key, ca_file) = (
        crt.to_str().unwrap(),
        key.to_str().unwrap(),
        other_key.to_str().unwrap(),
        ca_file.to_str().unwrap(),
    );
    let dir = data.path().to_str().unwrap();

    // Refused at start, each saying what to fix (nothing is bound).
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--data-dir", dir];
        args.extend(extra);
        cli(&args, &[])
    };
    let out = serve(&["--listen", &format!("0.0.0.0:{port}"), "--token", TOKEN]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("without TLS only loopback addresses are allowed; to serve beyond this machine give --tls-cert and --tls-key"),
        "{}",
        out.stderr
    );
    let out = serve(&["--tls-cert", crt, "--tls-key", key]);
    assert_eq!(out.code, 2, "--tls-cert needs --listen: {}", out.stderr);
    let out = serve(&["--listen", &addr, "--tls-cert", crt, "--tls-key", key]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("--listen needs a bearer token"),
        "{}",
        out.stderr
    );
    for (cert, key, says) in [
        (
            crt,
            "/nonexistent/api.key",
            "--tls-key /nonexistent/api.key",
        ),
        (
            "/nonexistent/api.crt",
            key,
            "--tls-cert /nonexistent/api.crt",
        ),
        (key, key, "no PEM certificate in it"),
        (crt, other_key, "--tls-key"),
    ] {
        let out = serve(&[
            "--listen",
            &addr,
            "--token",
            TOKEN,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ]);
        assert_eq!(out.code, 1, "{cert} {key}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{says:?} in {}", out.stderr);
    }

    let d = Daemon::start(
        data.path(),
        &[
            "--listen",
            &addr,
            "--token",
            TOKEN,
            "--tls-cert",
            crt,
            "--tls-key",
            key,
        ],
    );
    assert!(
        d.log()
            .contains(&format!("https://{addr} (MCP at https://{addr}/mcp)")),
        "{}",
        d.log()
    );
    let https = format!("https://{addr}");
    let remote = |args: &[&str], ca: Option<&str>| {
        let mut all = args.to_vec();
        all.extend(["--addr", &https, "--token", TOKEN]);
        if let Some(ca) = ca {
            all.extend(["--ca-file", ca]);
        }
        // No data dir: the client can only reach the daemon over TCP.
        cli(&all, &[("SKILLBOX_DATA_DIR", "/nonexistent/skillbox")])
    };
    let hello = real_skill("hello");
    let out = remote(
        &[
            "spawn",
            hello.path().to_str().unwrap(),
            "-i",
            r#"{"name": "tls"}"#,
        ],
        Some(ca_file),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_string();
    let out = remote(&["tasks", "wait", &id, "--json"], Some(ca_file));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["state"], "succeeded");

    // A client without the operator's CA does not talk to it.
    let out = remote(&["tasks", "list"], None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("not signed by a CA this host trusts")
            && out.stderr.contains("--ca-file"),
        "{}",
        out.stderr
    );
    let out = remote(&["tasks", "list"], Some("/nonexistent/ca.pem"));
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("--ca-file /nonexistent/ca.pem"),
        "{}",
        out.stderr
    );

    // curl (OpenSSL) as another client: with the CA and the token it gets
    // the task; without the token 401; without the CA no connection.
    let curl = |extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(format!("{https}/v1/tasks/{id}"))
            .output()
            .expect("curl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (code, body) = curl(&["--cacert", ca_file, "-H", &auth]);
    assert_eq!(code, Some(0));
    assert!(body.ends_with("\n200") && body.contains(&id), "{body}");
    let (_, body) = curl(&["--cacert", ca_file]);
    assert!(body.ends_with("\n401"), "{body}");
    let (code, _) = curl(&["-H", &auth]);
    assert_eq!(
        code,
        Some(60),
        "curl: the peer's certificate was not verified"
    );

    // A real MCP client (the Python SDK over httpx) speaks MCP over TLS when
    // it trusts the CA, and not otherwise.
    if let Some(python) = crate::mcp::python() {
        let url = format!("{https}/mcp");
        let target = ["--url", url.as_str(), "--token", TOKEN];
        let report =
            crate::mcp::client_env(&python, &target, &["tools"], &[("SSL_CERT_FILE", ca_file)]);
        assert!(report["tools"]["protocol"].is_string(), "{report}");
        let out = std::process::Command::new(&python)
            .arg(crate::harness::root().join("tests/mcp/scenarios.py"))
            .args(target)
            .arg("tools")
            .env_remove("SSL_CERT_FILE")
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "an MCP client that does not trust the CA connected"
        );
    }

    // Plain HTTP on the TLS port gets no answer from the API. The server
    // may drop the connection on the first bytes it reads, before the rest
    // is written: a write refused then (broken pipe, reset) is that refusal.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    let request =
        format!("GET /v1/tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n\r\n");
    if let Err(e) = s.write_all(request.as_bytes()) {
        use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
        assert!(matches!(e.kind(), BrokenPipe | ConnectionReset), "{e}");
    }
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains(&id));
}
