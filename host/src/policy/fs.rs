//! The `fs` capability's policy: directories a skill requests (`[fs]`),
//! those the operator grants (`--allow-read`, `--allow-write`), and the
//! preopens one run gets (the weaker access of the two).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Access, PolicyReport, ReportStatus};

/// One requested directory.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FsRequest {
    /// `read` or `read-write`.
    pub access: Access,
}

/// A granted directory: host path bound to a guest path.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FsGrant {
    /// Directory on the host.
    pub host: PathBuf,
    /// Path the guest sees; defaults to the host path.
    #[serde(default)]
    pub guest: Option<String>,
    /// `read` or `read-write`.
    pub access: Access,
}

impl FsGrant {
    /// Parses the CLI form `HOST[:GUEST]`.
    pub fn parse_cli(s: &str, access: Access) -> Result<FsGrant, String> {
        let (host, guest) = match s.split_once(':') {
            Some((h, g)) => (h, Some(g.to_string())),
            None => (s, None),
        };
        if host.is_empty() {
            return Err(format!("{s:?}: the host directory is empty"));
        }
        if !host.starts_with('/') {
            return Err(format!(
                "{s:?}: the host directory must be an absolute path, e.g. \
                 \"$PWD/{host}:{}\"",
                guest.as_deref().unwrap_or("/GUEST-DIR")
            ));
        }
        let g = FsGrant {
            host: PathBuf::from(host),
            guest,
            access,
        };
        g.validate()?;
        Ok(g)
    }

    /// The guest path this grant binds.
    pub fn guest_path(&self) -> String {
        self.guest
            .clone()
            .unwrap_or_else(|| self.host.to_string_lossy().into_owned())
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        validate_guest_path(&self.guest_path())
    }
}

/// A directory the run gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preopen {
    /// Path inside the guest.
    pub guest: String,
    /// Directory on the host.
    pub host: PathBuf,
    /// Effective access (the weaker of requested and granted).
    pub access: Access,
}

pub(crate) fn validate_guest_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("guest path {p:?} must be absolute, e.g. \"/data\""));
    }
    if p.split('/').any(|c| c == ".." || c == ".") {
        return Err(format!("guest path {p:?} must not contain '..' or '.'"));
    }
    Ok(())
}

/// The directories a run gets: each requested one that is granted, at the
/// weaker access of the two; without a manifest, the grants.
pub(crate) fn compute(
    requested: Option<&BTreeMap<String, FsRequest>>,
    granted: &[FsGrant],
    report: &mut PolicyReport,
) -> Vec<Preopen> {
    let mut preopens = Vec::new();
    match requested {
        Some(requested) => {
            for (guest, req) in requested {
                let grant = granted.iter().rev().find(|g| &g.guest_path() == guest);
                let item = format!("{guest} ({})", req.access);
                match grant {
                    None => {
                        let flag = match req.access {
                            Access::Read => "--allow-read",
                            Access::ReadWrite => "--allow-write",
                        };
                        report.push(
                            "fs",
                            item,
                            ReportStatus::NotGranted {
                                hint: format!("{flag} HOST-DIR:{guest}"),
                            },
                        );
                    }
                    Some(g) => {
                        let access = req.access.min(g.access);
                        let status = if access < req.access {
                            ReportStatus::Narrowed {
                                reason: format!(
                                    "granted {} only, from {}; grant {} with --allow-write {}:{guest}",
                                    access,
                                    g.host.display(),
                                    req.access,
                                    g.host.display()
                                ),
                            }
                        } else {
                            ReportStatus::Granted
                        };
                        report.push("fs", format!("{item} <- {}", g.host.display()), status);
                        preopens.push(Preopen {
                            guest: guest.clone(),
                            host: g.host.clone(),
                            access,
                        });
                    }
                }
            }
            for g in granted {
                if !requested.contains_key(&g.guest_path()) {
                    report.push(
                        "fs",
                        format!("{} ({}) <- {}", g.guest_path(), g.access, g.host.display()),
                        ReportStatus::Unrequested,
                    );
                }
            }
        }
        None => {
            for g in granted {
                report.push(
                    "fs",
                    format!("{} ({}) <- {}", g.guest_path(), g.access, g.host.display()),
                    ReportStatus::Granted,
                );
                preopens.retain(|p: &Preopen| p.guest != g.guest_path());
                preopens.push(Preopen {
                    guest: g.guest_path(),
                    host: g.host.clone(),
                    access: g.access,
                });
            }
        }
    }
    preopens
}
