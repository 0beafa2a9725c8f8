//! The record each finished step checkpoints, and loading them all when a
//! run starts.
//!
//! A task that is restarted after its host died runs the skill again from
//! the top (`resume = "restart"`); these records let it skip what is done
//! and, above all, keep facts that must not be read again once things have
//! changed (which image the old container ran).

use serde::{Deserialize, Serialize};
use skillbox_sdk::{Error, checkpoint};

/// Checkpoint keys, in step order.
pub const BACKUP: &str = "backup";
pub const DIAGNOSTICS: &str = "diagnostics";
pub const BUILD: &str = "build";
pub const DEPLOY: &str = "deploy";
/// Saved when the new container failed its health check, before the
/// rollback: a restarted task rolls back instead of trying it again.
pub const UNHEALTHY: &str = "unhealthy";

/// (a) The verified backup.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupDone {
    /// Guest path of the archive.
    pub path: String,
    /// Hex sha256 of the archive.
    pub sha256: String,
    /// Regular files in it.
    pub files: u64,
    /// Size of the archive.
    pub bytes: u64,
    /// Base name shared by the run's files: `APP-STAMP` (maybe `-2`, …).
    pub name: String,
}

/// (b) The diagnostics, and what ran before anything changed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiagnosticsDone {
    /// Guest path of the diagnostics file.
    pub path: String,
    /// Image id of the container that ran before the upgrade.
    pub old_image_id: Option<String>,
    /// That container, if there was one.
    pub old_container: Option<OldContainer>,
}

/// The container found before the upgrade.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OldContainer {
    pub id: String,
    /// The tag it was started from.
    pub image: String,
    pub image_id: String,
    pub state: String,
    /// Other tags naming the image it runs (e.g. `myapp:v1` when it was
    /// started from `myapp:previous` by a rollback).
    #[serde(default)]
    pub also_tagged: Vec<String>,
}

impl OldContainer {
    /// The best name of what it runs: its tag, unless that is only the
    /// rollback tag `previous_tag` and a release tag names the same image.
    pub fn release<'a>(&'a self, previous_tag: &str) -> &'a str {
        if self.image == previous_tag
            && let Some(other) = self.also_tagged.iter().find(|t| *t != previous_tag)
        {
            return other;
        }
        &self.image
    }
}

/// (c) The rollback tag and the new image.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildDone {
    /// `image:version`.
    pub tag: String,
    pub new_image_id: String,
    pub old_image_id: Option<String>,
    /// `image:previous`, when there was an old container to keep.
    pub previous_tag: Option<String>,
}

/// (d) The healthy new container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeployDone {
    pub container_id: String,
    pub image_id: String,
    pub health: Health,
}

/// The new container failed its health check.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Unhealthy {
    /// The failed container, if it got started at all.
    pub container_id: Option<String>,
    pub health: Health,
    /// Its last log lines.
    pub failed_logs: String,
}

/// The outcome of a health check.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Health {
    pub url: String,
    /// Requests made.
    pub attempts: u32,
    /// Last HTTP status, if any request got an answer.
    pub status: Option<u16>,
    pub healthy: bool,
    /// Why it is not healthy, e.g. `HTTP 404` or `the container exited
    /// (code 1)`.
    pub reason: Option<String>,
}

/// Every checkpoint this task saved before, and which steps they cover.
#[derive(Default)]
pub struct Saved {
    pub backup: Option<BackupDone>,
    pub diagnostics: Option<DiagnosticsDone>,
    pub build: Option<BuildDone>,
    pub deploy: Option<DeployDone>,
    pub unhealthy: Option<Unhealthy>,
}

impl Saved {
    /// Loads all checkpoints; one that does not parse is an error (it was
    /// written by this skill, so it means a bug or a version change).
    pub fn load() -> Result<Saved, Error> {
        Ok(Saved {
            backup: checkpoint::load_json(BACKUP)?,
            diagnostics: checkpoint::load_json(DIAGNOSTICS)?,
            build: checkpoint::load_json(BUILD)?,
            deploy: checkpoint::load_json(DEPLOY)?,
            unhealthy: checkpoint::load_json(UNHEALTHY)?,
        })
    }

    /// Names of the steps found done, in order.
    pub fn done(&self) -> Vec<&'static str> {
        [
            (BACKUP, self.backup.is_some()),
            (DIAGNOSTICS, self.diagnostics.is_some()),
            (BUILD, self.build.is_some()),
            (DEPLOY, self.deploy.is_some()),
            (UNHEALTHY, self.unhealthy.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, done)| done.then_some(k))
        .collect()
    }
}
