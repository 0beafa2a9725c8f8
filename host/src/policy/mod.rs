//! What a skill asks for, what the operator grants, and what one run gets.
//!
//! * [`Manifest`]: the skill's `skill.toml`, its *requests*.
//! * [`Grants`]: the operator's CLI flags and/or policy file.
//! * [`EffectivePolicy`]: the intersection, the only thing the capability
//!   modules consult. [`PolicyReport`] says, before the run, which requests
//!   were not granted and what to grant to allow them.
//!
//! This module never touches the host; it only computes.

pub mod docker;
mod effective;
pub mod exec;
mod grants;
mod manifest;
pub mod pattern;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use docker::{
    DEFAULT_CONTAINER_MEMORY, DEFAULT_CONTAINER_PIDS, DockerGrant, DockerPolicy, DockerRequest,
    ImageUse, normalize_tag,
};
pub use effective::{
    EffectivePolicy, NetRule, PolicyReport, Preopen, ReportItem, ReportStatus, ResolvedLimits,
};
pub use exec::{ExecPermit, ExecPolicy, ExecRequest, ExecRule};
pub use grants::{FsGrant, Grants};
pub use manifest::{EnvRequest, FsRequest, Manifest, NetRequest, ResumePolicy, SkillInfo};

use crate::units::{ByteSize, HumanDuration};

/// Access to a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// List and read files.
    Read,
    /// Read, create, write, rename and delete inside the directory.
    ReadWrite,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::ReadWrite => "read-write",
        })
    }
}

/// Resource limits, as requested by a skill or granted by an operator.
/// Unset fields fall back to the other side, then to the host's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear memory of the guest, all memories together.
    pub memory: Option<ByteSize>,
    /// Wall-clock time of the whole run.
    pub timeout: Option<HumanDuration>,
    /// Cap on each byte stream the guest produces: stdout, stderr, log lines,
    /// the summary, and each exec'd program's stdout/stderr.
    pub output: Option<ByteSize>,
    /// Fuel (roughly, wasm instructions); unset means unmetered.
    pub fuel: Option<u64>,
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

pub(crate) fn validate_env_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.contains('=') || n.contains('\0') {
        return Err(format!("{n:?} is not a valid environment variable name"));
    }
    Ok(())
}

/// Splits `host:port` (IPv6 as `[::1]:port`).
pub(crate) fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let err = || format!("{s:?} must be host:port, e.g. 127.0.0.1:8080 or [::1]:8080");
    let (host, port) = s.rsplit_once(':').ok_or_else(err)?;
    let port: u16 = port.parse().map_err(|_| err())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 || host.contains('*') {
        return Err(err());
    }
    Ok((host.to_string(), port))
}

pub(crate) fn validate_net(s: &str) -> Result<(), String> {
    split_host_port(s).map(|_| ())
}

/// A skill's `[net]` request may leave the port open (`127.0.0.1:*`): a
/// generic skill (a health check of whatever app it upgrades) cannot know
/// it; the operator grants the exact `host:port`.
pub(crate) fn validate_net_request(s: &str) -> Result<(), String> {
    match s.strip_suffix(":*") {
        Some(host) => validate_net(&format!("{host}:1"))
            .map_err(|_| format!("{s:?} must be host:port or host:*, e.g. 127.0.0.1:*")),
        None => validate_net(s),
    }
}

/// Whether the request `req` (`host:port` or `host:*`) covers the grant
/// `grant` (`host:port`).
pub(crate) fn net_covers(req: &str, grant: &str) -> bool {
    req == grant
        || req
            .strip_suffix(":*")
            .zip(grant.rsplit_once(':').map(|(h, _)| h))
            .is_some_and(|(a, b)| a == b)
}
