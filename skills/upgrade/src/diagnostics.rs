//! (b) Diagnostics taken before anything changes: the host (`uname -a`,
//! `df -hP .`), the current container, its image and its last log lines,
//! and one probe of the health URL, written to
//! `backup_dir/NAME-diagnostics.json`.
//!
//! A program that is refused or fails is recorded, not fatal: diagnostics
//! are for the operator. What would doom the upgrade later is fatal here,
//! while nothing has changed yet: a container of that name that is not
//! this skill's to replace, or a health URL the sandbox may not reach.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use skillbox_sdk::exec::Command;
use skillbox_sdk::{Error, ErrorKind, docker, net, warn};

use crate::backup::write_atomic;
use crate::clock::UtcTime;
use crate::input::Input;
use crate::steps::{DiagnosticsDone, OldContainer};

/// Host commands run for the record; each must match an `[exec]` rule.
const COMMANDS: [(&str, &str, &[&str]); 2] =
    [("uname", "uname", &["-a"]), ("df", "df", &["-hP", "."])];
/// Timeout of each of those.
const EXEC_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Serialize)]
struct Diagnostics<'a> {
    app: &'a str,
    taken_at: String,
    backup: &'a str,
    uname: CommandRecord,
    df: CommandRecord,
    container: Option<ContainerRecord>,
    image: Option<ImageRecord>,
    logs: Option<Logs>,
    health: Probe,
}

#[derive(Serialize)]
struct CommandRecord {
    command: String,
    status: Option<i32>,
    stdout: Option<String>,
    stderr: Option<String>,
    truncated: bool,
    /// Why it did not run (refused by the sandbox, not found, …).
    error: Option<String>,
}

#[derive(Serialize)]
struct ContainerRecord {
    id: String,
    name: String,
    image: String,
    image_id: String,
    state: String,
    exit_code: Option<i64>,
    started_at: Option<String>,
}

#[derive(Serialize)]
struct ImageRecord {
    /// The tag the container was started from.
    tag: String,
    /// What that tag names now; may differ from the container's image id
    /// if the tag was moved since.
    id: Option<String>,
    tags: Vec<String>,
    created: Option<String>,
    size: Option<u64>,
    error: Option<String>,
}

#[derive(Serialize)]
struct Logs {
    lines: u32,
    text: Option<String>,
    error: Option<String>,
}

/// One request to the health URL before the upgrade.
#[derive(Serialize)]
struct Probe {
    url: String,
    status: Option<u16>,
    error: Option<String>,
}

/// Takes the diagnostics and writes them as `NAME-diagnostics.json`.
pub fn collect(input: &Input, backup_path: &str, name: &str) -> Result<DiagnosticsDone, Error> {
    let taken_at = UtcTime::now().rfc3339();
    let [uname, df] =
        COMMANDS.map(|(_, program, args)| run_command(program, args, &input.state_dir));

    let current = docker::inspect(&input.app).map_err(|e| {
        Error::from(e).context(format!(
            "inspecting the current container {:?} (a container of that name must be one this \
             skill started, or not exist)",
            input.app
        ))
    })?;
    let (container, image, logs) = match &current {
        None => (None, None, None),
        Some(c) => {
            let image = match docker::image(&c.image) {
                Ok(Some(i)) => ImageRecord {
                    tag: c.image.clone(),
                    id: Some(i.id),
                    tags: i.tags,
                    created: Some(i.created),
                    size: Some(i.size),
                    error: None,
                },
                Ok(None) => ImageRecord {
                    tag: c.image.clone(),
                    id: None,
                    tags: Vec::new(),
                    created: None,
                    size: None,
                    error: Some(format!("no image is tagged {} any more", c.image)),
                },
                Err(e) => ImageRecord {
                    tag: c.image.clone(),
                    id: None,
                    tags: Vec::new(),
                    created: None,
                    size: None,
                    error: Some(e.to_string()),
                },
            };
            let logs = match docker::logs(&c.name, Some(input.log_lines)) {
                Ok(text) => Logs {
                    lines: input.log_lines,
                    text: Some(text),
                    error: None,
                },
                Err(e) => {
                    warn!("could not read the logs of {}: {e}", c.name);
                    Logs {
                        lines: input.log_lines,
                        text: None,
                        error: Some(e.to_string()),
                    }
                }
            };
            let record = ContainerRecord {
                id: c.id.clone(),
                name: c.name.clone(),
                image: c.image.clone(),
                image_id: c.image_id.clone(),
                state: c.state.clone(),
                exit_code: c.exit_code,
                started_at: c.started_at.clone(),
            };
            (Some(record), Some(image), Some(logs))
        }
    };

    let also_tagged: Vec<String> = match (&current, &image) {
        (Some(c), Some(i)) if i.id.as_deref() == Some(c.image_id.as_str()) => {
            i.tags.iter().filter(|t| **t != c.image).cloned().collect()
        }
        _ => Vec::new(),
    };
    let health = probe(input)?;

    let path = Path::new(&input.backup_dir).join(format!("{name}-diagnostics.json"));
    let diagnostics = Diagnostics {
        app: &input.app,
        taken_at,
        backup: backup_path,
        uname,
        df,
        container,
        image,
        logs,
        health,
    };
    let mut json = serde_json::to_string_pretty(&diagnostics)?;
    json.push('\n');
    write_atomic(&path, &json)?;

    Ok(DiagnosticsDone {
        path: path.display().to_string(),
        old_image_id: current.as_ref().map(|c| c.image_id.clone()),
        old_container: current.map(|c| OldContainer {
            also_tagged,
            id: c.id,
            image: c.image,
            image_id: c.image_id,
            state: c.state,
        }),
    })
}

/// Runs one host program in `cwd`, recording what happened either way.
fn run_command(program: &str, args: &[&str], cwd: &str) -> CommandRecord {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let result = Command::new(program)
        .args(args.iter().copied())
        .cwd(cwd)
        .timeout(EXEC_TIMEOUT)
        .output();
    match result {
        Ok(out) => {
            if !out.success() {
                warn!(
                    "`{command}` exited with status {}: {}",
                    out.status,
                    out.stderr_str().trim()
                );
            }
            CommandRecord {
                command,
                status: Some(out.status),
                stdout: Some(out.stdout_str().into_owned()),
                stderr: Some(out.stderr_str().into_owned()),
                truncated: out.truncated,
                error: None,
            }
        }
        Err(e) => {
            warn!("`{command}` did not run: {e}");
            CommandRecord {
                command,
                status: None,
                stdout: None,
                stderr: None,
                truncated: false,
                error: Some(e.to_string()),
            }
        }
    }
}

/// One GET of the health URL. Any answer, or none, is recorded; only a
/// refusal by the sandbox is an error, because every health check of the
/// new container would be refused too and the upgrade rolled back for
/// nothing.
fn probe(input: &Input) -> Result<Probe, Error> {
    let url = input.health_url.clone();
    match net::http_get(&url, Duration::from_millis(input.health_timeout_ms)) {
        Ok(r) => Ok(Probe {
            url,
            status: Some(r.status),
            error: None,
        }),
        Err(e) if e.kind() == ErrorKind::Denied => Err(e.context(format!(
            "the health URL {url} may not be reached from the sandbox (grant its host:port \
             with --allow-net)"
        ))),
        Err(e) => Ok(Probe {
            url,
            status: None,
            error: Some(e.to_string()),
        }),
    }
}
