//! (d) Replace the app's container by one of the new image and check its
//! health; (e) put the previous image back when it is not healthy.
//!
//! Both are safe to run again after an interruption: a container of the
//! app's name that already runs the wanted image (and is not the one known
//! to be bad) is kept and only checked.

use std::thread::sleep;
use std::time::Duration;

use skillbox_sdk::approval::{Action, Request};
use skillbox_sdk::docker::{self, Container, Run};
use skillbox_sdk::{Context, Error, ErrorKind, debug, info, net, progress, warn};

use crate::input::Input;
use crate::steps::{BuildDone, DeployDone, DiagnosticsDone, Health, OldContainer, Unhealthy};

/// Checks, before anything changes, that the sandbox would let the app's
/// container be started with the input's options (network, mounts, memory,
/// pids), so that a refusal cannot strike after the old container is gone.
///
/// The docker interface has no dry run, so this asks to run the new tag
/// while it does not exist yet: the host checks its policy first, then
/// answers "not found" without creating anything. When the tag exists
/// already (a rebuild of the same version) the check is skipped.
pub fn preflight(input: &Input) -> Result<(), Error> {
    let tag = input.new_tag();
    let what =
        "checking that the sandbox allows the container's options (before changing anything)";
    if docker::image(&tag).context(what)?.is_some() {
        debug!("{tag} exists already: skipping the preflight check of the container options");
        return Ok(());
    }
    match options(Run::new(&tag), input).start() {
        Err(docker::Error::NotFound(_)) => Ok(()),
        Err(e) => Err(Error::from(e).context(what)),
        Ok(c) => {
            // The tag appeared meanwhile: undo at once.
            warn!(
                "{tag} appeared meanwhile; removing the container {} it started",
                c.name
            );
            docker::remove(&c.id, true).context(what)
        }
    }
}

/// Replaces the app's container by one of `build.tag` and checks its
/// health: `Ok(Ok(_))` when healthy, `Ok(Err(_))` when not (roll back),
/// `Err(_)` when the old container could not be replaced (nothing started).
pub fn deploy(
    input: &Input,
    diag: &DiagnosticsDone,
    build: &BuildDone,
) -> Result<Result<DeployDone, Unhealthy>, Error> {
    let app = &input.app;
    let current = docker::inspect(app).context(format!("inspecting {app}"))?;
    let old_id = diag.old_container.as_ref().map(|c| c.id.as_str());
    let container_id = match current {
        Some(c)
            if c.is_running()
                && c.image_id == build.new_image_id
                && Some(c.id.as_str()) != old_id =>
        {
            info!(
                "resuming: {app} already runs {} ({}), started by an earlier attempt; checking \
                 its health",
                build.tag,
                short_id(&c.image_id)
            );
            c.id
        }
        current => {
            approve_swap(input, current.as_ref(), &build.tag)?;
            if let Some(c) = current {
                progress::report(0.6, format!("stopping {app} ({})", c.image));
                remove(input, &c).map_err(|e| {
                    e.context(format!(
                        "replacing {app}: the old container may be stopped now, check it \
                         (the new image {} is built)",
                        build.tag
                    ))
                })?;
            }
            progress::report(0.65, format!("starting {app} from {}", build.tag));
            match start(input, &build.tag) {
                Ok(c) => c.id,
                Err(e) => {
                    warn!("could not start {app} from {}: {e}", build.tag);
                    return Ok(Err(Unhealthy {
                        container_id: None,
                        health: Health {
                            url: input.health_url.clone(),
                            attempts: 0,
                            status: None,
                            healthy: false,
                            reason: Some(format!("it did not start: {e}")),
                        },
                        failed_logs: String::new(),
                    }));
                }
            }
        }
    };
    let health = check_health(input, (0.7, 0.85));
    if health.healthy {
        return Ok(Ok(DeployDone {
            container_id,
            image_id: build.new_image_id.clone(),
            health,
        }));
    }
    Ok(Err(Unhealthy {
        container_id: Some(container_id),
        health,
        failed_logs: logs(input),
    }))
}

/// What a rollback came to.
pub struct RolledBack {
    /// Health of the restored container; `None` if it could not be started.
    pub health: Option<Health>,
    /// Why it could not be started.
    pub error: Option<String>,
}

/// Replaces the failed container by one of `previous_tag` (the old image)
/// and checks its health.
pub fn rollback(
    input: &Input,
    old: &OldContainer,
    previous_tag: &str,
    failed: &Unhealthy,
) -> RolledBack {
    let app = &input.app;
    let failed_id = failed.container_id.as_deref();
    let attempt = || -> Result<(), Error> {
        match docker::inspect(app).context(format!("inspecting {app}"))? {
            Some(c)
                if c.is_running()
                    && c.image_id == old.image_id
                    && Some(c.id.as_str()) != failed_id =>
            {
                info!(
                    "resuming: {app} already runs the previous image {}; checking its health",
                    short_id(&old.image_id)
                );
                return Ok(());
            }
            Some(c) => {
                progress::report(0.88, format!("removing the failed container {app}"));
                remove(input, &c).context(format!("removing the failed container {app}"))?;
            }
            None => {}
        }
        progress::report(0.9, format!("starting {app} from {previous_tag}"));
        start(input, previous_tag).context(format!("starting {app} from {previous_tag}"))?;
        Ok(())
    };
    match attempt() {
        Ok(()) => RolledBack {
            health: Some(check_health(input, (0.9, 0.98))),
            error: None,
        },
        Err(e) => RolledBack {
            health: None,
            error: Some(e.to_string()),
        },
    }
}

/// The app's last log lines, or why they could not be read.
pub fn logs(input: &Input) -> String {
    match docker::logs(&input.app, Some(input.log_lines)) {
        Ok(text) => text,
        Err(e) => format!("(logs unavailable: {e})"),
    }
}

/// When the operator holds the swap's calls for approval (e.g. `--ask-docker
/// 'myapp:*'`), asks once for all of them, saying what is done and what
/// will change, so that the upgrade waits for one "go" after the backup,
/// the diagnostics and the build. A denial changes nothing.
fn approve_swap(input: &Input, current: Option<&Container>, tag: &str) -> Result<(), Error> {
    let app = &input.app;
    let reason = match current {
        Some(c) => format!(
            "upgrade {app}: replace its container ({}, {}) by one of {tag}; the backup, the \
             diagnostics and the new image are ready, and the old image stays for a rollback",
            c.image, c.state
        ),
        None => format!("upgrade {app}: start it from {tag} (no container of it exists)"),
    };
    let mut swap = Request::new(reason);
    if let Some(c) = current {
        if c.is_running() {
            swap = swap.action(Action::DockerStop(c.id.clone()));
        }
        swap = swap.action(Action::DockerRemove(c.id.clone()));
    }
    swap = swap.action(Action::DockerRun(tag.to_string()));
    if !swap.needed() {
        return Ok(());
    }
    progress::report(
        0.58,
        format!("waiting for the operator's approval to replace {app}"),
    );
    let note = swap.ask().context(format!(
        "replacing {app}: nothing was changed (the new image {tag} is built)"
    ))?;
    info!(
        "the operator approved replacing {app}{}",
        note.map(|n| format!(": {n}")).unwrap_or_default()
    );
    Ok(())
}

/// Stops and removes one of the app's containers.
fn remove(input: &Input, c: &Container) -> Result<(), Error> {
    if c.is_running() {
        info!(
            "stopping {} ({}, up since {})",
            c.name,
            c.image,
            c.started_at.as_deref().unwrap_or("?")
        );
        docker::stop(&c.id, Some(input.stop_timeout_secs))
            .context(format!("stopping {}", c.name))?;
    }
    docker::remove(&c.id, false).context(format!("removing {}", c.name))?;
    Ok(())
}

/// Starts the app's container from `tag` with the input's options.
fn start(input: &Input, tag: &str) -> Result<Container, Error> {
    let c = options(Run::new(tag).name(&input.app), input).start()?;
    info!(
        "started {} from {tag} ({}), container {}",
        c.name,
        short_id(&c.image_id),
        short_id(&c.id)
    );
    Ok(c)
}

/// The input's container options, added to `run`.
fn options(mut run: Run, input: &Input) -> Run {
    let spec = &input.container;
    if let Some(n) = &spec.network {
        run = run.network(n);
    }
    for (k, v) in &spec.env {
        run = run.env(k, v);
    }
    if let Some(cmd) = &spec.cmd {
        run = run.cmd(cmd.iter().cloned());
    }
    for m in &spec.mounts {
        run = if m.read_only {
            run.mount_read_only(&m.source, &m.target)
        } else {
            run.mount(&m.source, &m.target)
        };
    }
    if let Some(m) = spec.memory {
        run = run.memory(m);
    }
    if let Some(p) = spec.pids {
        run = run.pids(p);
    }
    if spec.init {
        run = run.init();
    }
    run
}

/// GETs the health URL until it answers 200, `retries` attempts at most,
/// stopping early if the container is no longer running. Progress moves
/// through `span`.
pub fn check_health(input: &Input, span: (f32, f32)) -> Health {
    let url = &input.health_url;
    let timeout = Duration::from_millis(input.health_timeout_ms);
    let interval = Duration::from_millis(input.retry_interval_ms);
    let mut status = None;
    let mut last = String::from("no attempt was made");
    for attempt in 1..=input.retries {
        let fraction = span.0 + (span.1 - span.0) * attempt as f32 / input.retries as f32;
        match net::http_get(url, timeout) {
            Ok(r) if r.status == 200 => {
                progress::report(fraction, format!("healthy: {url} answered 200"));
                info!("{url} answered 200 on attempt {attempt}");
                return Health {
                    url: url.clone(),
                    attempts: attempt,
                    status: Some(200),
                    healthy: true,
                    reason: None,
                };
            }
            Ok(r) => {
                status = Some(r.status);
                last = format!("HTTP {}", r.status);
            }
            Err(e) => {
                status = None;
                last = if e.kind() == ErrorKind::Denied {
                    format!("the sandbox refused the connection: {e}")
                } else {
                    e.to_string()
                };
            }
        }
        progress::report(
            fraction,
            format!("health check {attempt}/{}: {last}", input.retries),
        );
        debug!("health attempt {attempt}/{}: {last}", input.retries);
        match docker::inspect(&input.app) {
            Ok(Some(c)) if c.is_running() => {}
            Ok(Some(c)) => {
                let code = c
                    .exit_code
                    .map_or(String::new(), |x| format!(" with code {x}"));
                // Its last words usually say why; else what the check saw.
                let why = docker::logs(&c.id, Some(5))
                    .ok()
                    .and_then(|l| l.lines().rev().find(|l| !l.trim().is_empty()).map(one_line))
                    .unwrap_or_else(|| format!("last check: {last}"));
                return Health {
                    url: url.clone(),
                    attempts: attempt,
                    status,
                    healthy: false,
                    reason: Some(format!("the container {}{code}: {why}", c.state)),
                };
            }
            Ok(None) => {
                return Health {
                    url: url.clone(),
                    attempts: attempt,
                    status,
                    healthy: false,
                    reason: Some(format!("the container is gone (last check: {last})")),
                };
            }
            Err(e) => warn!("could not inspect {}: {e}", input.app),
        }
        if attempt < input.retries {
            sleep(interval);
        }
    }
    Health {
        url: url.clone(),
        attempts: input.retries,
        status,
        healthy: false,
        reason: Some(format!("{last} after {} attempts", input.retries)),
    }
}

/// A log line fit for a one-line message: trimmed, at most 200 characters.
fn one_line(line: &str) -> String {
    const MAX: usize = 200;
    let line = line.trim();
    match line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}

/// `sha256:0123…` → the first 12 hex digits.
pub fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids() {
        assert_eq!(short_id("sha256:0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn log_lines_are_cut() {
        assert_eq!(one_line("  httpd: bad port\r"), "httpd: bad port");
        let long = "é".repeat(300);
        assert_eq!(one_line(&long).chars().count(), 201);
    }
}
