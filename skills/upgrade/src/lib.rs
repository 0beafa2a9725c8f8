//! `upgrade`: upgrades a containerised app, and puts it back if the new
//! version is not healthy.
//!
//! # What it does
//!
//! 1. **backup** — archives `state_dir` as `backup_dir/APP-STAMP.tar.gz`
//!    (`STAMP` is the UTC time, e.g. `20261125T093000Z`), with
//!    `APP-STAMP.sha256` (the archive, for `sha256sum -c`) and
//!    `APP-STAMP.files.sha256` (every file of the state, by relative path)
//!    beside it, then reads it all back and checks every checksum and the
//!    file set.
//! 2. **diagnostics** — writes `backup_dir/APP-STAMP-diagnostics.json`:
//!    `uname -a`, `df -hP .` (run in `state_dir`; a refusal or failure is
//!    recorded, not fatal), the current container, its image and its last
//!    `log_lines` log lines, and one probe of `health_url`.
//! 3. **build** — tags the image the current container runs (by the tag it
//!    was started from) as `IMAGE:previous`, then builds `context` as
//!    `IMAGE:VERSION`.
//! 4. **deploy** — stops and removes the current container, starts
//!    `IMAGE:VERSION` under the name `app` with the `container` options,
//!    and GETs `health_url` until it answers 200 (`retries` attempts,
//!    `retry_interval_ms` apart), stopping early if the container exits.
//! 5. **rollback**, if it is not healthy — keeps the failed container's
//!    logs, replaces it by `IMAGE:previous` with the same options and checks
//!    that the same way. On a first install there is nothing to go back to.
//! 6. **summary** — markdown and JSON data (see below).
//!
//! Before changing anything it also checks that the sandbox would allow the
//! container's options and the health URL, so that a missing grant fails
//! the run while the old container still serves.
//!
//! # Input
//!
//! ```json
//! {
//!   "app": "myapp", "image": "myapp", "version": "v2",
//!   "context": "/src", "dockerfile": null, "build_args": {"APP_VERSION": "v2"},
//!   "state_dir": "/state", "backup_dir": "/backup",
//!   "health_url": "http://127.0.0.1:18080/health",
//!   "retries": 10, "retry_interval_ms": 1000, "health_timeout_ms": 2000,
//!   "container": {
//!     "network": "host", "env": {"PORT": "18080"}, "cmd": null,
//!     "mounts": [{"source": "/state", "target": "/www/state", "read_only": true}],
//!     "memory": 67108864, "pids": 64, "init": true
//!   },
//!   "stop_timeout_secs": 10, "log_lines": 50
//! }
//! ```
//!
//! `app`, `image`, `version`, `context`, `state_dir`, `backup_dir` and
//! `health_url` are required; unknown fields are refused. Paths are guest
//! paths (the directories granted to the skill). `version` may not be
//! `previous`, and `backup_dir` may not be inside `state_dir`.
//!
//! # Output
//!
//! On success a summary titled `**APP upgraded: OLD → NEW**` (or
//! `**APP installed: NEW**`) with the image ids, backup, diagnostics, health
//! and duration, and data
//! `{app, outcome: "upgraded"|"installed", old_image: ID|null, new_image: ID,
//! old_tag, new_tag, previous_tag, backup: {path, sha256, files, bytes},
//! diagnostics, health: {url, attempts, status, healthy, reason},
//! resumed_steps, duration_ms}`.
//!
//! When the new version is unhealthy the run **fails** with a one-line
//! message (`the upgrade of APP to NEW failed its health check (WHY); rolled
//! back to IMAGE:previous (ID), which is healthy`) and the same data with
//! `outcome` `rolled-back`, `rollback-failed` or `install-failed`, plus
//! `rollback` and `failed_logs`. Any other error (a refused call, a failed
//! build) fails the run with the SDK's error and says what was changed.
//!
//! # Checkpoints
//!
//! `backup`, `diagnostics`, `build` and `deploy` record each finished step
//! (`unhealthy` records a failed health check before the rollback). A task
//! restarted after a host crash loads them, logs `resuming: …`, skips what
//! is done and keeps what was seen before anything changed (the old
//! container's image id is never read again). A container of the app's name
//! that already runs the new image is checked, not replaced.
//!
//! # What it needs
//!
//! Read access to `state_dir` and `context`, read-write to `backup_dir`;
//! `uname -a` and `df -hP .` (optional); a connection to the health URL's
//! `host:port`; Docker images matching `IMAGE:*` with build, the build
//! arguments it passes and the container's network. See `skill.toml` and
//! the README for the `skillbox run` flags.

mod backup;
mod clock;
mod deploy;
mod diagnostics;
mod image;
mod input;
mod report;
mod steps;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use skillbox_sdk::{Error, Summary, checkpoint, info, progress, warn};

use crate::clock::UtcTime;
use crate::input::Input;
use crate::steps::{BackupDone, Saved};

/// Report a file's progress during the backup at most this often.
const BACKUP_PROGRESS_EVERY: u64 = 200;

fn upgrade(input: Input) -> Result<Summary, Error> {
    let started = Instant::now();
    input.validate()?;
    let saved = Saved::load()?;
    let resumed = saved.done();
    if !resumed.is_empty() {
        info!(
            "resuming a restarted task; steps already done: {}",
            resumed.join(", ")
        );
    }

    // (a) backup
    let backup = match saved.backup {
        Some(b) => {
            info!(
                "resuming: backup already done (path {}, sha256 {})",
                b.path, b.sha256
            );
            if !Path::new(&b.path).exists() {
                warn!("the backup {} is no longer there", b.path);
            }
            b
        }
        None => {
            let b = take_backup(&input)?;
            checkpoint::save_json(steps::BACKUP, &b)?;
            b
        }
    };

    // (b) diagnostics
    let diag = match saved.diagnostics {
        Some(d) => {
            info!("resuming: diagnostics already taken (path {})", d.path);
            d
        }
        None => {
            progress::report(0.3, "taking diagnostics");
            let d = diagnostics::collect(&input, &backup.path, &backup.name)
                .map_err(|e| unchanged(e, &input, &backup, false))?;
            info!(
                "diagnostics in {}; current container: {}",
                d.path,
                d.old_container
                    .as_ref()
                    .map_or("none".to_owned(), |c| format!("{} ({})", c.image, c.state))
            );
            checkpoint::save_json(steps::DIAGNOSTICS, &d)?;
            d
        }
    };

    // (c) rollback tag and build
    let build = match saved.build {
        Some(b) => {
            info!(
                "resuming: {} already built ({}), rollback tag {}",
                b.tag,
                b.new_image_id,
                b.previous_tag.as_deref().unwrap_or("none")
            );
            b
        }
        None => {
            progress::report(0.4, "checking the container's options against the sandbox");
            deploy::preflight(&input).map_err(|e| unchanged(e, &input, &backup, false))?;
            progress::report(0.45, format!("building {}", input.new_tag()));
            let b = image::build(&input, &diag)
                .map_err(|e| unchanged(e, &input, &backup, diag.old_container.is_some()))?;
            checkpoint::save_json(steps::BUILD, &b)?;
            b
        }
    };

    // (d) deploy, (e) rollback
    let deployed = match saved.deploy {
        Some(d) => {
            info!(
                "resuming: already deployed ({} healthy after {} attempts)",
                d.health.url, d.health.attempts
            );
            d
        }
        None => {
            let resumed_unhealthy = saved.unhealthy.is_some();
            let outcome = match saved.unhealthy {
                Some(u) => {
                    info!(
                        "resuming: {} already failed its health check ({}); rolling back",
                        build.tag,
                        u.health.reason.as_deref().unwrap_or("?")
                    );
                    Err(u)
                }
                None => deploy::deploy(&input, &diag, &build)?,
            };
            match outcome {
                Ok(d) => {
                    checkpoint::save_json(steps::DEPLOY, &d)?;
                    d
                }
                Err(failed) => {
                    if !resumed_unhealthy {
                        checkpoint::save_json(steps::UNHEALTHY, &failed)?;
                    }
                    warn!(
                        "{} is not healthy: {}",
                        build.tag,
                        failed.health.reason.as_deref().unwrap_or("?")
                    );
                    for line in last_lines(&failed.failed_logs, 10) {
                        warn!("{}: {line}", input.app);
                    }
                    let rolled_back = match (&diag.old_container, &build.previous_tag) {
                        (Some(old), Some(prev)) => {
                            progress::report(0.86, format!("rolling back to {prev}"));
                            Some(deploy::rollback(&input, old, prev, &failed))
                        }
                        _ => {
                            warn!("first install: there is no previous version to roll back to");
                            None
                        }
                    };
                    progress::report(1.0, "done: the new version is not healthy");
                    let facts = facts(&input, &backup, &diag, &build, &resumed, started);
                    return Err(report::unhealthy(&facts, &failed, rolled_back.as_ref()));
                }
            }
        }
    };

    // (f) summary
    progress::report(1.0, "done");
    let facts = facts(&input, &backup, &diag, &build, &resumed, started);
    Ok(report::success(&facts, &deployed))
}

skillbox_sdk::export!(upgrade);

/// Step (a): archive, manifests, verification.
fn take_backup(input: &Input) -> Result<BackupDone, Error> {
    let state = Path::new(&input.state_dir);
    let dir = Path::new(&input.backup_dir);
    let removed = backup::remove_partials(dir, &input.app);
    if removed > 0 {
        info!("removed {removed} unfinished backup file(s) of an interrupted run");
    }
    let base = fresh_base(input);
    progress::report(0.0, format!("backing up {}", input.state_dir));
    let created = backup::create(state, dir, &base, &mut |files, bytes| {
        if files.is_multiple_of(BACKUP_PROGRESS_EVERY) {
            progress::report(
                0.05,
                format!("backing up: {files} files, {bytes} bytes so far"),
            );
        }
    })
    .map_err(|e| e.context(format!("backing up {}", input.state_dir)))?;
    for skipped in &created.skipped {
        warn!("not backed up (not a file, directory or symlink): {skipped}");
    }
    info!(
        "backup {}: {} files ({} bytes, {} symlinks), archive {} bytes, sha256 {}",
        created.archive.display(),
        created.files,
        created.state_bytes,
        created.symlinks,
        created.bytes,
        created.sha256
    );
    progress::report(0.2, "verifying the backup");
    let verified = backup::verify(&created.archive).map_err(|e| {
        e.context(format!(
            "verifying the backup {} (nothing else was changed)",
            created.archive.display()
        ))
    })?;
    info!(
        "backup verified: sha256 matches, {} files match the manifest",
        verified.files
    );
    Ok(BackupDone {
        path: created.archive.display().to_string(),
        sha256: created.sha256,
        files: created.files,
        bytes: created.bytes,
        name: created.name,
    })
}

/// `APP-STAMP` for a backup no other has: when a backup of this second
/// exists (a run right after another), waits for the next second, so that
/// names keep their format and sort in time order.
fn fresh_base(input: &Input) -> String {
    let dir = Path::new(&input.backup_dir);
    let mut base = String::new();
    for _ in 0..3 {
        let now = SystemTime::now();
        base = format!("{}-{}", input.app, UtcTime::from_system(now).stamp());
        if !dir.join(format!("{base}.tar.gz")).exists() {
            return base;
        }
        let into_second = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::thread::sleep(Duration::from_nanos(u64::from(1_000_000_000 - into_second)));
    }
    // Still taken (the clock went back?): `backup::create` adds a suffix.
    base
}

fn facts<'a>(
    input: &'a Input,
    backup: &'a BackupDone,
    diag: &'a steps::DiagnosticsDone,
    build: &'a steps::BuildDone,
    resumed: &'a [&'static str],
    started: Instant,
) -> report::Facts<'a> {
    report::Facts {
        app: &input.app,
        backup,
        diagnostics: &diag.path,
        old: diag.old_container.as_ref(),
        build,
        resumed,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// `err`, saying that apart from the backup (and maybe the rollback tag)
/// nothing was changed: the app still runs as it did.
fn unchanged(err: Error, input: &Input, backup: &BackupDone, tagged: bool) -> Error {
    let tag = if tagged {
        format!(" and maybe the rollback tag {}", input.previous_tag())
    } else {
        String::new()
    };
    Error::new(
        err.kind(),
        format!(
            "{}; nothing was changed except the backup {}{tag}",
            err.message(),
            backup.path
        ),
    )
}

/// The last `n` non-empty lines of `text`.
fn last_lines(text: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}
