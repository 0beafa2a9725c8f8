//! The `net` capability's policy: endpoints a skill requests (`[net]`,
//! `host:port` or `host:*`), those the operator grants (`--allow-net
//! host:port`), and the endpoints one run may reach.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{PolicyReport, ReportStatus};

/// The `[net]` table.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetRequest {
    /// `host:port` endpoints.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// An endpoint the run may connect to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRule {
    /// Host name or IP address as written.
    pub host: String,
    /// TCP/UDP port.
    pub port: u16,
}

impl fmt::Display for NetRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Splits `host:port` (IPv6 as `[::1]:port`).
pub(crate) fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let err = || format!("{s:?} must be host:port, e.g. 127.0.0.1:8080 or [::1]:8080");
    let (raw, port) = s.rsplit_once(':').ok_or_else(err)?;
    let port: u16 = port.parse().map_err(|_| err())?;
    let host = match raw.strip_prefix('[') {
        // An IPv6 address is written in brackets, and must be one.
        Some(inner) => {
            let v6 = inner.strip_suffix(']').ok_or_else(err)?;
            v6.parse::<std::net::Ipv6Addr>().map_err(|_| err())?;
            v6
        }
        // A name or an IPv4 address: no second ':' (`127.0.0.1:80:90`).
        None if raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) =>
        {
            raw
        }
        None => return Err(err()),
    };
    if host.is_empty() || port == 0 {
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

/// The granted endpoints the requests cover (`host:*` covers every
/// granted port of its host).
pub(crate) fn intersect(
    report: &mut PolicyReport,
    requested: Option<&Vec<String>>,
    granted: &[String],
) -> Vec<String> {
    let Some(reqs) = requested else {
        return super::env::intersect(report, "net", None, granted, |_| String::new());
    };
    let mut out: Vec<String> = Vec::new();
    for r in reqs {
        let got: Vec<&String> = granted.iter().filter(|g| net_covers(r, g)).collect();
        let status = match got.as_slice() {
            [] => ReportStatus::NotGranted {
                hint: format!(
                    "--allow-net {}",
                    r.strip_suffix(":*")
                        .map_or(r.clone(), |h| format!("{h}:PORT"))
                ),
            },
            [g] if *g == r => ReportStatus::Granted,
            _ => ReportStatus::granted_only(&got),
        };
        report.push("net", r.clone(), status);
        for g in got {
            if !out.contains(g) {
                out.push(g.clone());
            }
        }
    }
    for g in granted {
        if !reqs.iter().any(|r| net_covers(r, g)) {
            report.push("net", g.clone(), ReportStatus::Unrequested);
        }
    }
    out
}
