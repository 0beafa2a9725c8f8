//! Relay sinks over `https://`: a daemon delivering to HTTPS receivers
//! that are Python's http.server over OpenSSL (tests/relay/https_receiver.py),
//! with certificates from a test CA made here: accepted with the CA given
//! as `ca-file`; refused, with the reason recorded in `tasks show`, for a
//! certificate of a CA not trusted, for another host name, and expired.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::daemon::Daemon;
use crate::harness::{real_skill, root};
use crate::relay::{config, until};

/// A certificate authority of the test.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Ca {
            cert: p.self_signed(&key).unwrap(),
            key,
        }
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names`, valid in the years `from..to`;
    /// written with its key into `dir` as NAME.crt and NAME.key.
    pub fn issue(
        &self,
        dir: &Path,
        file: &str,
        names: &[&str],
        years: (i32, i32),
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.not_before = rcgen::date_time_ymd(years.0, 1, 1);
        p.not_after = rcgen::date_time_ymd(years.1, 1, 1);
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// An HTTPS receiver; killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, (cert, key): (PathBuf, PathBuf)) -> Receiver {
        let log = cert.with_extension("log");
        let mut child = Command::new("python3")
            .arg(root().join("tests/relay/https_receiver.py"))
            .args([&cert, &key, &log])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no port: {line:?}"));
        Receiver { child, port, log }
    }

    fn received(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_sinks_deliver_with_the_operators_ca_and_say_why_a_certificate_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    let ca = Ca::new("skillbox test CA");
    let stranger = Ca::new("a CA nobody trusts");
    std::fs::write(dir.join("ca.pem"), ca.cert.pem()).unwrap();
    let good = Receiver::start(dir, ca.issue(dir, "good", &["127.0.0.1"], (2020, 2100)));
    let untrusted = Receiver::start(
        dir,
        stranger.issue(dir, "untrusted", &["127.0.0.1"], (2020, 2100)),
    );
    let other_name = Receiver::start(
        dir,
        ca.issue(dir, "other", &["hooks.example.org"], (2020, 2100)),
    );
    let expired = Receiver::start(dir, ca.issue(dir, "expired", &["127.0.0.1"], (2020, 2021)));

    let sink = |name: &str, port: u16| {
        format!(
            "[relay.sink.{name}]\ntype = \"webhook\"\nurl = \"https://127.0.0.1:{port}/hook\"\n\
             ca-file = \"{}\"\nsecret-file = \"KEYFILE\"\n",
            dir.join("ca.pem").display()
        )
    };
    let sinks = [
        sink("good", good.port),
        sink("untrusted", untrusted.port),
        sink("other", other_name.port),
        sink("expired", expired.port),
        // An OpenClaw gateway's hooks endpoint over https, the same way.
        format!(
            "[relay.sink.claw]\ntype = \"openclaw\"\nurl = \"https://127.0.0.1:{}\"\n\
             ca-file = \"{}\"\ntoken-file = \"KEYFILE\"\n",
            good.port,
            dir.join("ca.pem").display()
        ),
        // The same good receiver without the CA: the system's roots do
        // not know the test CA.
        format!(
            "[relay.sink.no-ca]\ntype = \"webhook\"\nurl = \"https://127.0.0.1:{}/hook\"\n\
             secret-file = \"KEYFILE\"\n",
            good.port
        ),
    ]
    .concat();
    let cfg = config(dir, &sinks, "\"good\"");
    let d = Daemon::start(dir, &["--config", cfg.to_str().unwrap()]);
    let skill = real_skill("hello");
    let out = d.cli(&[
        "spawn",
        skill.path().to_str().unwrap(),
        "-i",
        r#"{"name": "tls"}"#,
        "--notify-to",
        "good,untrusted,other,expired,no-ca,claw",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_string();

    let t = until("a delivery and an error on every sink", || {
        let out = d.cli(&["tasks", "show", &id, "--json"]);
        let t = out.json();
        let ds = t["deliveries"].as_array()?.clone();
        let done = ds.len() == 6
            && ds.iter().all(|d| {
                d["state"] == "delivered" || d["last_error"].as_str().is_some_and(|e| !e.is_empty())
            });
        done.then_some(ds)
    });
    let by = |name: &str| {
        t.iter()
            .find(|d| d["sink"] == name)
            .unwrap_or_else(|| panic!("no delivery to {name}: {t:?}"))
            .clone()
    };
    assert_eq!(by("good")["state"], "delivered", "{:?}", by("good"));
    assert_eq!(by("claw")["state"], "delivered", "{:?}", by("claw"));
    let mut got = good.received();
    got.sort_by_key(|r| r["path"].as_str().unwrap_or_default().to_string());
    assert_eq!(
        got.iter()
            .map(|r| r["path"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["/hook", "/hooks/agent"],
        "{got:?}"
    );
    for r in &got {
        assert!(
            r["body"].as_str().unwrap().contains("Hello, tls"),
            "{got:?}"
        );
    }

    let error = |name: &str| {
        by(name)["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let e = error("untrusted");
    assert!(e.contains("not signed by a CA this host trusts"), "{e}");
    assert!(e.contains("ca-file"), "{e}");
    let e = error("no-ca");
    assert!(e.contains("not signed by a CA this host trusts"), "{e}");
    let e = error("other");
    assert!(e.contains("not valid for the name 127.0.0.1"), "{e}");
    assert!(e.contains("(it is for hooks.example.org)"), "{e}");
    let e = error("expired");
    assert!(e.contains("has expired (on 2021-01-01"), "{e}");
    assert!(untrusted.received().is_empty() && other_name.received().is_empty());
    assert!(expired.received().is_empty());

    // A certificate problem can be fixed on either side (a renewal, the
    // operator's ca-file), so it is retried like an outage, not given up.
    assert_eq!(by("expired")["state"], "pending", "{:?}", by("expired"));
    let human = d.cli(&["tasks", "show", &id]).stdout;
    assert!(human.contains("has expired"), "{human}");
}

#[test]
fn a_sink_with_a_bad_ca_file_stops_serve_with_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    std::fs::write(dir.join("junk.pem"), "not a certificate\n").unwrap();
    let check = |sink: String, says: &str| {
        let cfg = config(dir, &sink, "");
        let out = crate::harness::cli(
            &[
                "mcp",
                "--data-dir",
                dir.to_str().unwrap(),
                "--config",
                cfg.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains(says), "{says:?} in {}", out.stderr);
    };
    check(
        format!(
            "[relay.sink.x]\ntype = \"webhook\"\nurl = \"https://127.0.0.1:9/h\"\nca-file = \"{}\"\nsecret-file = \"KEYFILE\"\n",
            dir.join("junk.pem").display()
        ),
        "no PEM certificate in it",
    );
    check(
        format!(
            "[relay.sink.x]\ntype = \"webhook\"\nurl = \"https://127.0.0.1:9/h\"\nca-file = \"{}\"\nsecret-file = \"KEYFILE\"\n",
            dir.join("missing.pem").display()
        ),
        "missing.pem",
    );
    check(
        format!(
            "[relay.sink.x]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/h\"\nca-file = \"{}\"\nsecret-file = \"KEYFILE\"\n",
            dir.join("junk.pem").display()
        ),
        "is for https:// urls",
    );
}
