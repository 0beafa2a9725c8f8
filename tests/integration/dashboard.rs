//! The dashboard (`/ui/`) in a real browser: headless Chromium driven by
//! playwright-core (tests/dashboard/dashboard.mjs) against a daemon with a
//! token, signing in through the form, following tasks spawned through the
//! API live, approving, denying and cancelling from the page, with hostile
//! text in summaries, logs and labels that must stay text. Screenshots go
//! to target/test-artifacts/dashboard/.

use std::path::Path;
use std::process::Command;

use crate::daemon::Daemon;
use crate::docker::free_port;
use crate::harness::*;

const TOKEN: &str = "dashboard-token-0123456789abcdef";

/// The node_modules directory holding playwright-core, when it, Node and
/// Chromium are installed; `None` (said loudly) otherwise, unless
/// `CI=true`.
fn browser() -> Option<String> {
    let chromium = Path::new("/usr/bin/chromium").is_file();
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let modules = Command::new("bash")
        .arg(root().join("tests/dashboard/browser.sh"))
        .arg("modules")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let (true, true, Some(modules)) = (chromium, node, &modules) {
        return Some(modules.clone());
    }
    let missing = [
        (!chromium).then_some("/usr/bin/chromium"),
        (!node).then_some("node"),
        modules.is_none().then_some("playwright-core"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "the dashboard test needs {missing} when CI=true (tests/dashboard/browser.sh install)"
    );
    eprintln!(
        "SKIPPED dashboard: missing {missing} (install with tests/dashboard/browser.sh install)"
    );
    None
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let Some(modules) = browser() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    // A relay sink nothing listens on, giving up after a second: a failed
    // delivery for the page's Redeliver.
    let key = data.path().join("webhook.key");
    std::fs::write(&key, "whsec-dashboard-0123456789abcdef").unwrap();
    let config = data.path().join("skillbox.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\ndefault = []\ndeadline = \"1s\"\nretry-initial = \"100ms\"\n\
             retry-max = \"200ms\"\ntimeout = \"2s\"\n\
             [relay.sink.down]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{}/hook\"\n\
             secret-file = \"{}\"\n",
            free_port(),
            key.display()
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(
        data.path(),
        &[
            "--listen",
            &addr,
            "--token",
            TOKEN,
            "--config",
            config.to_str().unwrap(),
        ],
    );
    // The hostile test skill twice: asking for nothing (sleep, progress,
    // exfiltrate), and asking to run `echo` (the calls an ask rule holds).
    let plain = skill_dir("hostile", "");
    let echo = skill_dir(
        "hostile",
        "[exec]\nallow = [ { program = \"echo\", args = [\"**\"] } ]\n",
    );
    let shots = root().join("target/test-artifacts/dashboard");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();

    let out = Command::new("node")
        .arg(root().join("tests/dashboard/dashboard.mjs"))
        .env("SKILLBOX_URL", format!("http://{addr}"))
        .env("SKILLBOX_TOKEN", TOKEN)
        .env("SKILLBOX_SKILL_PLAIN", plain.path())
        .env("SKILLBOX_SKILL_ECHO", echo.path())
        .env("SKILLBOX_SINK_DOWN", "down")
        .env("SCREENSHOT_DIR", &shots)
        .env("SKILLBOX_DASHBOARD_MODULES", &modules)
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the dashboard test failed ({}):\n{stdout}\n{stderr}\nthe daemon said:\n{}\nscreenshots: {}",
        out.status,
        d.log(),
        shots.display()
    );
    println!("{stdout}");
    for name in [
        "list",
        "task",
        "approvals",
        "schedules",
        "list-phone",
        "task-phone",
    ] {
        assert!(
            shots.join(format!("{name}.png")).is_file(),
            "no screenshot {name}.png"
        );
    }
}
