//! (f) What the parent session gets: a markdown summary and JSON data on
//! success, a one-line failure with the same kind of data after a failed
//! health check.

use std::fmt::Write as _;

use serde::Serialize;
use skillbox_sdk::{Error, Summary, human_bytes};

use crate::deploy::{RolledBack, short_id};
use crate::steps::{BackupDone, BuildDone, DeployDone, Health, OldContainer, Unhealthy};

/// The facts of one run, whatever its outcome.
pub struct Facts<'a> {
    pub app: &'a str,
    pub backup: &'a BackupDone,
    pub diagnostics: &'a str,
    pub old: Option<&'a OldContainer>,
    pub build: &'a BuildDone,
    pub resumed: &'a [&'static str],
    pub duration_ms: u64,
}

#[derive(Serialize)]
struct Data<'a> {
    app: &'a str,
    /// `upgraded`, `installed`, `rolled-back`, `rollback-failed` or
    /// `install-failed`.
    outcome: &'a str,
    /// Image id the old container ran; `null` on a first install.
    old_image: Option<&'a str>,
    /// Image id of the new version.
    new_image: &'a str,
    /// Tag the old container was started from.
    old_tag: Option<&'a str>,
    /// `image:version`.
    new_tag: &'a str,
    /// `image:previous`, naming the old image; `null` on a first install.
    previous_tag: Option<&'a str>,
    backup: BackupData<'a>,
    diagnostics: &'a str,
    /// The new image's health.
    health: &'a Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback: Option<RollbackData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_logs: Option<&'a str>,
    resumed_steps: &'a [&'static str],
    duration_ms: u64,
}

#[derive(Serialize)]
struct BackupData<'a> {
    path: &'a str,
    sha256: &'a str,
    files: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct RollbackData<'a> {
    tag: &'a str,
    image_id: &'a str,
    /// `null` when the previous image could not even be started.
    health: Option<&'a Health>,
    error: Option<&'a str>,
}

impl<'a> Facts<'a> {
    fn data(&self, outcome: &'a str, health: &'a Health) -> Data<'a> {
        Data {
            app: self.app,
            outcome,
            old_image: self.old.map(|o| o.image_id.as_str()),
            new_image: &self.build.new_image_id,
            old_tag: self.old.map(|o| o.image.as_str()),
            new_tag: &self.build.tag,
            previous_tag: self.build.previous_tag.as_deref(),
            backup: BackupData {
                path: &self.backup.path,
                sha256: &self.backup.sha256,
                files: self.backup.files,
                bytes: self.backup.bytes,
            },
            diagnostics: self.diagnostics,
            health,
            rollback: None,
            failed_logs: None,
            resumed_steps: self.resumed,
            duration_ms: self.duration_ms,
        }
    }
}

/// The summary of a healthy upgrade or install.
pub fn success(f: &Facts<'_>, deployed: &DeployDone) -> Summary {
    let b = f.build;
    let outcome = if f.old.is_some() {
        "upgraded"
    } else {
        "installed"
    };
    let mut md = String::new();
    match f.old {
        Some(old) => {
            let from = old.release(b.previous_tag.as_deref().unwrap_or(""));
            let _ = writeln!(md, "**{} upgraded: {from} → {}**\n", f.app, b.tag);
            let _ = writeln!(
                md,
                "- **Image:** `{}` → `{}`",
                short_id(&old.image_id),
                short_id(&b.new_image_id)
            );
        }
        None => {
            let _ = writeln!(md, "**{} installed: {}**\n", f.app, b.tag);
            let _ = writeln!(
                md,
                "- **Image:** `{}` (first deployment: there was no container `{}` before)",
                short_id(&b.new_image_id),
                f.app
            );
        }
    }
    backup_lines(&mut md, f);
    let h = &deployed.health;
    let _ = writeln!(
        md,
        "- **Health:** {} answered HTTP {} after {} attempt{}",
        h.url,
        h.status.unwrap_or(200),
        h.attempts,
        if h.attempts == 1 { "" } else { "s" }
    );
    duration_line(&mut md, f);
    let _ = writeln!(md, "\nNext:");
    match (&b.previous_tag, f.old) {
        (Some(prev), Some(old)) => {
            let _ = writeln!(
                md,
                "- To roll back by hand, run `{prev}` (`{}`, what ran before) as `{}` with the \
                 same options in place of the new container.",
                short_id(&old.image_id),
                f.app
            );
        }
        _ => {
            let _ = writeln!(
                md,
                "- Nothing to roll back to yet: the next upgrade keeps this image as a rollback tag."
            );
        }
    }
    let _ = writeln!(
        md,
        "- The state before the upgrade is in `{}`: check it with `sha256sum -c {}.sha256` in the \
         backup directory; restore it with `tar -xzf` into the state directory.",
        f.backup.path, f.backup.name
    );
    Summary::new(md).with_data(f.data(outcome, h))
}

/// The failure after the new image failed its health check: rolled back
/// (or not), with the same data as a success plus the rollback's outcome
/// and the failed container's logs.
pub fn unhealthy(f: &Facts<'_>, failed: &Unhealthy, rollback: Option<&RolledBack>) -> Error {
    let b = f.build;
    let why = failed.health.reason.as_deref().unwrap_or("not healthy");
    let mut rollback_data = None;
    let (outcome, message) = match (f.old, rollback, &b.previous_tag) {
        (Some(old), Some(rb), Some(prev)) => {
            let id = short_id(&old.image_id);
            rollback_data = Some(RollbackData {
                tag: prev,
                image_id: &old.image_id,
                health: rb.health.as_ref(),
                error: rb.error.as_deref(),
            });
            let head = format!(
                "the upgrade of {} to {} failed its health check ({why})",
                f.app, b.tag
            );
            match (&rb.health, &rb.error) {
                (Some(h), _) if h.healthy => (
                    "rolled-back",
                    format!("{head}; rolled back to {prev} ({id}), which is healthy"),
                ),
                (Some(h), _) => (
                    "rollback-failed",
                    format!(
                        "{head}; rolled back to {prev} ({id}), which is ALSO unhealthy ({})",
                        h.reason.as_deref().unwrap_or("not healthy")
                    ),
                ),
                (None, e) => (
                    "rollback-failed",
                    format!(
                        "{head}; the rollback to {prev} ({id}) failed: {}; {} is DOWN",
                        e.as_deref().unwrap_or("unknown error"),
                        f.app
                    ),
                ),
            }
        }
        _ => (
            "install-failed",
            format!(
                "the install of {} as {} failed its health check ({why}); there was no previous \
                 container, so there is nothing to roll back to; the container is left as it is",
                b.tag, f.app
            ),
        ),
    };
    let mut data = f.data(outcome, &failed.health);
    data.rollback = rollback_data;
    data.failed_logs = Some(&failed.failed_logs);
    Error::failed(message.replace('\n', " ")).with_data(data)
}

fn backup_lines(md: &mut String, f: &Facts<'_>) {
    let _ = writeln!(
        md,
        "- **Backup:** `{}` ({} file{}, {}), sha256 `{}`, verified",
        f.backup.path,
        f.backup.files,
        if f.backup.files == 1 { "" } else { "s" },
        human_bytes(f.backup.bytes),
        f.backup.sha256
    );
    let _ = writeln!(md, "- **Diagnostics:** `{}`", f.diagnostics);
}

fn duration_line(md: &mut String, f: &Facts<'_>) {
    let secs = f.duration_ms as f64 / 1000.0;
    if f.resumed.is_empty() {
        let _ = writeln!(md, "- **Duration:** {secs:.1} s");
    } else {
        let _ = writeln!(
            md,
            "- **Duration:** {secs:.1} s for this attempt; resumed after: {}",
            f.resumed.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(
        backup: &'a BackupDone,
        build: &'a BuildDone,
        old: Option<&'a OldContainer>,
    ) -> Facts<'a> {
        Facts {
            app: "myapp",
            backup,
            diagnostics: "/backup/myapp-20261125T093000Z-diagnostics.json",
            old,
            build,
            resumed: &[],
            duration_ms: 12_345,
        }
    }

    fn fixtures() -> (BackupDone, BuildDone, OldContainer, Health) {
        (
            BackupDone {
                path: "/backup/myapp-20261125T093000Z.tar.gz".into(),
                sha256: "ab".repeat(32),
                files: 3,
                bytes: 2048,
                name: "myapp-20261125T093000Z".into(),
            },
            BuildDone {
                tag: "myapp:v2".into(),
                new_image_id: format!("sha256:{}", "2".repeat(64)),
                old_image_id: Some(format!("sha256:{}", "1".repeat(64))),
                previous_tag: Some("myapp:previous".into()),
            },
            OldContainer {
                id: "c1".into(),
                image: "myapp:v1".into(),
                image_id: format!("sha256:{}", "1".repeat(64)),
                state: "running".into(),
                also_tagged: Vec::new(),
            },
            Health {
                url: "http://127.0.0.1:18080/health".into(),
                attempts: 2,
                status: Some(200),
                healthy: true,
                reason: None,
            },
        )
    }

    #[test]
    fn an_upgrade_summary() {
        let (backup, build, old, health) = fixtures();
        let deployed = DeployDone {
            container_id: "c2".into(),
            image_id: build.new_image_id.clone(),
            health,
        };
        let s = success(&facts(&backup, &build, Some(&old)), &deployed);
        let text = s.text();
        assert!(
            text.starts_with("**myapp upgraded: myapp:v1 → myapp:v2**\n"),
            "{text}"
        );
        assert!(text.contains("`111111111111` → `222222222222`"), "{text}");
        assert!(
            text.contains("answered HTTP 200 after 2 attempts"),
            "{text}"
        );
        assert!(text.contains("`myapp:previous`"), "{text}");
        assert!(text.contains("2.0 KiB"), "{text}");
        let data: serde_json::Value = serde_json::from_str(s.data_json().unwrap()).unwrap();
        assert_eq!(data["outcome"], "upgraded");
        assert_eq!(data["previous_tag"], "myapp:previous");
        assert_eq!(data["old_image"], old.image_id);
        assert_eq!(data["new_image"], build.new_image_id);
        assert_eq!(data["old_tag"], "myapp:v1");
        assert_eq!(data["new_tag"], "myapp:v2");
        assert_eq!(data["backup"]["files"], 3);
        assert_eq!(data["health"]["healthy"], true);
        assert_eq!(data["duration_ms"], 12_345);
        assert!(data.get("rollback").is_none());

        // After a rollback the old container runs `previous`: name the release.
        let old = OldContainer {
            image: "myapp:previous".into(),
            also_tagged: vec!["myapp:v1".into()],
            ..old
        };
        let s = success(&facts(&backup, &build, Some(&old)), &deployed);
        assert!(
            s.text()
                .starts_with("**myapp upgraded: myapp:v1 → myapp:v2**"),
            "{}",
            s.text()
        );
    }

    #[test]
    fn an_install_summary() {
        let (backup, mut build, _, health) = fixtures();
        build.previous_tag = None;
        build.old_image_id = None;
        let deployed = DeployDone {
            container_id: "c2".into(),
            image_id: build.new_image_id.clone(),
            health,
        };
        let s = success(&facts(&backup, &build, None), &deployed);
        assert!(
            s.text().starts_with("**myapp installed: myapp:v2**"),
            "{}",
            s.text()
        );
        let data: serde_json::Value = serde_json::from_str(s.data_json().unwrap()).unwrap();
        assert_eq!(data["outcome"], "installed");
        assert!(data["old_image"].is_null());
    }

    #[test]
    fn rollback_messages() {
        let (backup, build, old, healthy) = fixtures();
        let failed = Unhealthy {
            container_id: Some("c2".into()),
            health: Health {
                healthy: false,
                status: Some(404),
                attempts: 10,
                reason: Some("HTTP 404 after 10 attempts".into()),
                ..healthy.clone()
            },
            failed_logs: "404 /health".into(),
        };
        let f = facts(&backup, &build, Some(&old));
        let rb = RolledBack {
            health: Some(healthy.clone()),
            error: None,
        };
        let e = unhealthy(&f, &failed, Some(&rb));
        assert_eq!(
            e.to_string(),
            "the upgrade of myapp to myapp:v2 failed its health check (HTTP 404 after 10 \
             attempts); rolled back to myapp:previous (111111111111), which is healthy"
        );
        let data: serde_json::Value = serde_json::from_str(e.data_json().unwrap()).unwrap();
        assert_eq!(data["outcome"], "rolled-back");
        assert_eq!(data["failed_logs"], "404 /health");
        assert_eq!(data["rollback"]["health"]["healthy"], true);

        let rb = RolledBack {
            health: Some(failed.health.clone()),
            error: None,
        };
        let e = unhealthy(&f, &failed, Some(&rb));
        assert!(e.to_string().contains("which is ALSO unhealthy"), "{e}");
        let rb = RolledBack {
            health: None,
            error: Some("docker failed: boom".into()),
        };
        let e = unhealthy(&f, &failed, Some(&rb));
        assert!(
            e.to_string()
                .contains("failed: docker failed: boom; myapp is DOWN"),
            "{e}"
        );

        let f = facts(&backup, &build, None);
        let e = unhealthy(&f, &failed, None);
        assert!(e.to_string().contains("nothing to roll back to"), "{e}");
        let data: serde_json::Value = serde_json::from_str(e.data_json().unwrap()).unwrap();
        assert_eq!(data["outcome"], "install-failed");
    }
}
