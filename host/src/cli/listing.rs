//! `tasks list`'s output: a table for people, ids only (`-q`), or a line
//! per task from a `--format` template.

use std::time::Duration;

use skillbox::store::{Task, now_ms};
use skillbox::units::HumanDuration;

/// The placeholders of `--format`.
pub(super) const FIELDS: &[&str] = &[
    "id", "state", "skill", "label", "parent", "attempt", "progress", "created", "ended",
    "duration",
];

/// A `--format` template, checked: text with `{field}` placeholders.
#[derive(Clone, Debug)]
pub struct Template(Vec<Piece>);

#[derive(Clone, Debug)]
enum Piece {
    Text(String),
    Field(&'static str),
}

impl std::str::FromStr for Template {
    type Err = String;

    fn from_str(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            pieces.push(Piece::Text(rest[..open].replace("\\t", "\t")));
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed {{ in {s:?}"))?;
            let name = &rest[open + 1..open + close];
            let field = FIELDS.iter().find(|f| **f == name).ok_or_else(|| {
                format!(
                    "unknown field {{{name}}}; fields: {{{}}}",
                    FIELDS.join("}, {")
                )
            })?;
            pieces.push(Piece::Field(field));
            rest = &rest[open + close + 1..];
        }
        pieces.push(Piece::Text(rest.replace("\\t", "\t")));
        Ok(Template(pieces))
    }
}

impl Template {
    /// `task` through the template.
    pub fn render(&self, task: &Task) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Field(f) => field(task, f),
            })
            .collect()
    }
}

/// One field of a task, as `--format` and the table show it.
fn field(t: &Task, name: &str) -> String {
    match name {
        "id" => t.id.to_string(),
        "state" => t.state.to_string(),
        "skill" => t.spec.skill_name.clone(),
        "label" => t.spec.label.clone().unwrap_or_default(),
        "parent" => t.spec.parent_session.clone().unwrap_or_default(),
        "attempt" => t.attempt.to_string(),
        "progress" => t
            .progress
            .map(|f| format!("{:.0}%", f * 100.0))
            .unwrap_or_default(),
        "created" => when(t.created_ms),
        "ended" => t.ended_ms.map(when).unwrap_or_default(),
        "duration" => duration(t),
        _ => String::new(),
    }
}

/// A Unix-ms time as local date and time, to the second.
pub(super) fn when(ms: i64) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_millis_opt(ms) {
        chrono::LocalResult::Single(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        _ => ms.to_string(),
    }
}

/// "3s ago", "5m ago".
pub(super) fn age(ms: i64) -> String {
    match ((now_ms() - ms).max(0) / 1000) as u64 {
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// From creation to the end, or to now while it runs.
pub(super) fn duration(t: &Task) -> String {
    let end = t.ended_ms.unwrap_or_else(now_ms);
    let secs = ((end - t.created_ms).max(0) / 1000) as u64;
    HumanDuration(Duration::from_secs(secs)).to_string()
}

/// `tasks list` for people.
pub(super) fn print_table(tasks: &[Task]) {
    outln!(
        "{:<26}  {:<11}  {:<16}  {:<16}  {:>5}  {:<28}  DURATION",
        "ID",
        "STATE",
        "SKILL",
        "LABEL",
        "DONE",
        "CREATED"
    );
    for t in tasks {
        let progress = field(t, "progress");
        outln!(
            "{:<26}  {:<11}  {:<16}  {:<16}  {:>5}  {:<28}  {}",
            t.id.to_string(),
            t.state.as_str(),
            t.spec.skill_name,
            t.spec.label.as_deref().unwrap_or("-"),
            if progress.is_empty() { "-" } else { &progress },
            format!("{} ({})", when(t.created_ms), age(t.created_ms)),
            duration(t)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_checked_when_parsed() {
        assert!("{id}\t{state}".parse::<Template>().is_ok());
        let e = "{id} {owner}".parse::<Template>().unwrap_err();
        assert!(
            e.contains("unknown field {owner}") && e.contains("{state}"),
            "{e}"
        );
        assert!("{id".parse::<Template>().unwrap_err().contains("unclosed"));
    }
}
