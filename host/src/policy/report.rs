//! What a skill asked for against what it was granted, item by item, for
//! `skillbox inspect` and `run --dry-run`.

use std::fmt;

use serde::Serialize;

/// How one request fared against the grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum ReportStatus {
    /// Granted as requested.
    Granted,
    /// Granted, but less than requested.
    Narrowed {
        /// What was cut.
        reason: String,
    },
    /// Not granted; the hint says which flag would grant it.
    NotGranted {
        /// E.g. `--allow-read HOST:/data`.
        hint: String,
    },
    /// Granted by the operator but not requested by the skill, so not given.
    Unrequested,
}

impl ReportStatus {
    /// Narrowed to `granted`, which is less than was requested.
    pub(crate) fn granted_only(granted: &[impl AsRef<str>]) -> ReportStatus {
        let list: Vec<&str> = granted.iter().map(AsRef::as_ref).collect();
        ReportStatus::Narrowed {
            reason: format!("granted {} only", list.join(", ")),
        }
    }
}

/// One line of a [`PolicyReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReportItem {
    /// `fs`, `exec`, `env`, `net`, `docker`, `secrets` or `limits`.
    pub capability: &'static str,
    /// The request (or grant) in words.
    pub item: String,
    /// The outcome.
    #[serde(flatten)]
    pub status: ReportStatus,
}

/// Requested vs granted, shown by `skillbox inspect` and `run --dry-run`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PolicyReport {
    /// One item per request and per unrequested grant.
    pub items: Vec<ReportItem>,
    /// Grants that give more than they seem to (an exec rule through which
    /// the skill can run code of its choosing).
    pub warnings: Vec<String>,
}

impl PolicyReport {
    /// The requests that were not granted at all.
    pub fn not_granted(&self) -> impl Iterator<Item = &ReportItem> {
        self.items
            .iter()
            .filter(|i| matches!(i.status, ReportStatus::NotGranted { .. }))
    }

    /// The requests granted less than asked (narrowed or capped).
    pub fn narrowed(&self) -> impl Iterator<Item = &ReportItem> {
        self.items
            .iter()
            .filter(|i| matches!(i.status, ReportStatus::Narrowed { .. }))
    }

    /// One line per request the run gets less of than it asked for, with
    /// the flag that would grant it: narrowed and capped requests, and
    /// requests not granted at all (a run with partial grants).
    pub fn shortfalls(&self) -> Vec<String> {
        self.items
            .iter()
            .filter_map(|i| match &i.status {
                ReportStatus::Narrowed { reason } => {
                    Some(format!("{} {}: {reason}", i.capability, i.item))
                }
                ReportStatus::NotGranted { hint } => Some(format!(
                    "{} {}: not granted (grant with {hint})",
                    i.capability, i.item
                )),
                ReportStatus::Granted | ReportStatus::Unrequested => None,
            })
            .collect()
    }

    pub(crate) fn push(&mut self, capability: &'static str, item: String, status: ReportStatus) {
        self.items.push(ReportItem {
            capability,
            item,
            status,
        });
    }
}

impl fmt::Display for PolicyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in &self.items {
            let (mark, note) = match &i.status {
                ReportStatus::Granted => ("granted    ", String::new()),
                ReportStatus::Narrowed { reason } => ("narrowed   ", format!("  ({reason})")),
                ReportStatus::NotGranted { hint } => {
                    ("NOT GRANTED", format!("  (grant with {hint})"))
                }
                ReportStatus::Unrequested => (
                    "unused     ",
                    "  (granted but not requested: not given)".into(),
                ),
            };
            writeln!(f, "  {mark}  {:<6} {}{note}", i.capability, i.item)?;
        }
        for w in &self.warnings {
            writeln!(f, "  WARNING      {w}")?;
        }
        Ok(())
    }
}
