//! Resource limits: what a skill requests (`[limits]`), what the operator
//! caps (`--memory`, `--timeout`, …), and what one run gets.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{PolicyReport, ReportStatus};
use crate::units::{ByteSize, HumanDuration};

/// Host defaults, used when neither the skill nor the operator set a limit.
pub const DEFAULT_MEMORY: ByteSize = ByteSize(256 << 20);
/// Default wall-clock limit of a run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Default cap on each output stream.
pub const DEFAULT_OUTPUT: ByteSize = ByteSize(1 << 20);
/// Default timeout of one exec call (capped by what is left of the run).
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Limits after defaults and caps are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedLimits {
    /// Bytes of linear memory.
    pub memory: u64,
    /// Wall-clock limit of the run.
    pub timeout: Duration,
    /// Cap on each output stream, in bytes.
    pub output: usize,
    /// Fuel, when metered.
    pub fuel: Option<u64>,
    /// Upper bound of one exec call.
    pub exec_timeout: Duration,
}

/// The lower of a request and its cap; a request above the cap is reported
/// as narrowed, with the flag that raises the cap.
pub(crate) fn capped<T: Copy + Ord + fmt::Display>(
    report: &mut PolicyReport,
    capability: &'static str,
    name: &str,
    flag: &str,
    req: Option<T>,
    cap: T,
) -> T {
    match req {
        Some(r) if r > cap => {
            report.push(
                capability,
                format!("{name} {r}"),
                ReportStatus::Narrowed {
                    reason: format!("capped at {cap}; raise with {flag}"),
                },
            );
            cap
        }
        Some(r) => {
            report.push(capability, format!("{name} {r}"), ReportStatus::Granted);
            r
        }
        None => cap,
    }
}

/// The run's limits: each request capped by the operator's limit (or the
/// host's default).
pub(crate) fn resolve(req: Limits, grant: Limits, report: &mut PolicyReport) -> ResolvedLimits {
    let memory = capped(
        report,
        "limits",
        "memory",
        "--memory",
        req.memory,
        grant.memory.unwrap_or(DEFAULT_MEMORY),
    );
    let timeout = capped(
        report,
        "limits",
        "timeout",
        "--timeout",
        req.timeout,
        grant.timeout.unwrap_or(HumanDuration(DEFAULT_TIMEOUT)),
    );
    let output = capped(
        report,
        "limits",
        "output",
        "--output",
        req.output,
        grant.output.unwrap_or(DEFAULT_OUTPUT),
    );
    let fuel = match (req.fuel, grant.fuel) {
        (Some(r), Some(g)) => Some(capped(report, "limits", "fuel", "--fuel", Some(r), g)),
        (r, g) => r.or(g),
    };
    ResolvedLimits {
        memory: memory.bytes(),
        timeout: timeout.get(),
        output: output.as_usize(),
        fuel,
        exec_timeout: DEFAULT_EXEC_TIMEOUT.min(timeout.get()),
    }
}
