//! What a parent session receives: a short markdown message for people
//! and agents, with the structured data alongside for machines.

use serde::{Deserialize, Serialize};

use super::Change;
use crate::runtime::{Outcome, RunReport};
use crate::store::{ParentRoute, Task, TaskId, TaskState};

/// Longest skill summary quoted in a message; the whole one stays in
/// `summary` and in `skillbox tasks show`.
const MAX_QUOTED: usize = 4096;

/// Shortest value treated as a secret to redact (shorter ones would hide
/// ordinary words and numbers).
const MIN_SECRET: usize = 4;

/// One notification: a task's final summary or one of its state changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The same for every attempt of this notification: receivers drop
    /// duplicates by it.
    pub idempotency_key: String,
    /// `task.succeeded`, `task.failed`, … or `task.running`, ….
    pub event: String,
    /// Whether this is the task's final notification.
    pub terminal: bool,
    /// The task.
    pub task_id: TaskId,
    /// The skill's name.
    pub skill: String,
    /// The task's label.
    pub label: Option<String>,
    /// The agent session that spawned the task.
    pub parent_session: Option<String>,
    /// Where, in that session's messaging channel, the reply goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_route: Option<ParentRoute>,
    /// The state the task entered.
    pub state: TaskState,
    /// The state it left.
    pub previous_state: Option<TaskState>,
    /// Why.
    pub reason: String,
    /// The skill's own summary (markdown), once it succeeded.
    pub summary: Option<String>,
    /// The skill's structured result, or a failure's detail.
    pub data: Option<serde_json::Value>,
    /// What went wrong, when it did not succeed.
    pub error: Option<String>,
    /// When things happened.
    pub timings: Timings,
    /// The message for the parent session (markdown).
    pub message: String,
    /// The command that shows the task's full logs.
    pub logs: String,
    /// The request for approval this change announces (state
    /// `awaiting_approval`), as stored; `reason` and `message` say how to
    /// answer it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::store::Approval>,
}

/// When a task was created, started and ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Unix milliseconds.
    pub created_ms: i64,
    /// Start of the latest attempt.
    pub started_ms: Option<i64>,
    /// End, once terminal.
    pub ended_ms: Option<i64>,
    /// Run time of the latest attempt, once terminal.
    pub duration_ms: Option<u64>,
    /// From creation to the end, once terminal: across every attempt and
    /// the time between them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// Which attempt.
    pub attempt: u32,
    /// When the announced change happened.
    pub changed_ms: i64,
}

impl Notification {
    /// The notification of `change` (and of the request for approval it
    /// announces), from the task as stored now; every value in `secrets`
    /// (and of the environment variables the task was granted) is replaced
    /// by `[redacted]`.
    pub fn build(
        task: &Task,
        delivery: &Change,
        relay: &super::Relay,
        approval: Option<crate::store::Approval>,
    ) -> Notification {
        let hidden = crate::secrets::Redactor::with_min(
            task.spec
                .policy
                .env
                .iter()
                .filter_map(|name| std::env::var(name).ok())
                .chain(relay.secrets().iter().cloned()),
            MIN_SECRET,
        );
        let redact = |s: &str| hidden.text(s);

        let terminal = delivery.to.is_terminal();
        let outcome = task.outcome.as_ref().filter(|_| terminal);
        let summary = outcome.and_then(|o| o["text"].as_str()).map(redact);
        let data = outcome
            .and_then(|o| o.get("data"))
            .filter(|d| !d.is_null())
            .map(|d| hidden.json(d));
        let error = match delivery.to {
            TaskState::Failed => Some(
                outcome
                    .and_then(|o| o["message"].as_str())
                    .unwrap_or(&delivery.reason)
                    .to_string(),
            ),
            TaskState::TimedOut | TaskState::Cancelled => Some(delivery.reason.clone()),
            _ => None,
        }
        .map(|e| redact(&e));
        let duration_ms = outcome.and_then(|o| o["duration_ms"].as_u64()).or_else(|| {
            match (task.started_ms, task.ended_ms) {
                (Some(s), Some(e)) if terminal => Some((e - s).max(0) as u64),
                _ => None,
            }
        });
        let logs = format!("skillbox tasks logs {}{}", task.id, relay.cli_flags);
        let mut n = Notification {
            idempotency_key: delivery.idempotency_key(task.id),
            event: format!("task.{}", delivery.to),
            terminal,
            task_id: task.id,
            skill: task.spec.skill_name.clone(),
            label: task.spec.label.clone(),
            parent_session: task.spec.parent_session.clone(),
            parent_route: task.spec.parent_route.clone(),
            state: delivery.to,
            previous_state: delivery.from,
            reason: redact(&delivery.reason),
            summary,
            data,
            error,
            timings: Timings {
                created_ms: task.created_ms,
                started_ms: task.started_ms,
                ended_ms: task.ended_ms.filter(|_| terminal),
                duration_ms,
                elapsed_ms: task
                    .ended_ms
                    .filter(|_| terminal)
                    .map(|e| (e - task.created_ms).max(0) as u64),
                attempt: task.attempt,
                changed_ms: delivery.at_ms,
            },
            message: String::new(),
            logs,
            approval: approval.map(|mut a| {
                a.request.detail = redact(&a.request.detail);
                a.request.reason = a.request.reason.as_deref().map(redact);
                a
            }),
        };
        n.message = markdown(&Parts {
            skill: &n.skill,
            label: n.label.as_deref(),
            state: n.state,
            reason: &n.reason,
            duration_ms: n.timings.duration_ms,
            resumed: n
                .timings
                .elapsed_ms
                .filter(|_| n.timings.attempt > 1)
                .map(|e| (e, n.timings.attempt)),
            summary: n.summary.as_deref(),
            error: n.error.as_deref(),
            footer: Some(format!("Task {} · full logs: `{}`", n.task_id, n.logs)),
        });
        n
    }
}

/// The message of a foreground run (`skillbox run`): as a task's, without
/// the task.
pub fn run_message(report: &RunReport) -> String {
    let (state, summary, error) = match &report.outcome {
        Outcome::Succeeded { text, .. } => (TaskState::Succeeded, Some(text.as_str()), None),
        Outcome::Failed { message, .. }
        | Outcome::LimitExceeded { message, .. }
        | Outcome::Crashed { message } => (TaskState::Failed, None, Some(message.clone())),
        Outcome::TimedOut { limit_ms } => (
            TaskState::TimedOut,
            None,
            Some(format!(
                "stopped at its time limit of {}",
                human_ms(*limit_ms)
            )),
        ),
        Outcome::Cancelled => (TaskState::Cancelled, None, Some("cancelled".into())),
    };
    markdown(&Parts {
        skill: &report.skill,
        label: None,
        state,
        reason: "",
        duration_ms: Some(report.duration_ms),
        resumed: None,
        summary,
        error: error.as_deref(),
        footer: None,
    })
}

struct Parts<'a> {
    skill: &'a str,
    label: Option<&'a str>,
    state: TaskState,
    reason: &'a str,
    duration_ms: Option<u64>,
    /// For a task that ran more than once: the time since it was created,
    /// and how many attempts.
    resumed: Option<(u64, u32)>,
    summary: Option<&'a str>,
    error: Option<&'a str>,
    footer: Option<String>,
}

/// The markdown message, e.g.
///
/// ```text
/// **disk-report** (nightly check) succeeded in 1.2 s.
///
/// /data: 61% used …
///
/// Task 01K… · full logs: `skillbox tasks logs 01K…`
/// ```
fn markdown(p: &Parts<'_>) -> String {
    let mut head = format!("**{}**", p.skill);
    if let Some(l) = p.label {
        head.push_str(&format!(" ({l})"));
    }
    let verb = match p.state {
        TaskState::Succeeded => "succeeded",
        TaskState::Failed => "failed",
        TaskState::TimedOut => "timed out",
        TaskState::Cancelled => "was cancelled",
        TaskState::Queued => "is queued",
        TaskState::Running => "is running",
        TaskState::AwaitingApproval => "is awaiting approval",
        TaskState::Interrupted => "was interrupted",
    };
    head.push(' ');
    head.push_str(verb);
    let terminal = p.state.is_terminal();
    match p.duration_ms {
        Some(ms) if terminal => {
            head.push_str(if p.state == TaskState::Succeeded {
                " in "
            } else {
                " after "
            });
            match p.resumed {
                Some((elapsed, attempts)) => head.push_str(&format!(
                    "{} over {attempts} attempts (the last ran {})",
                    human_ms(elapsed),
                    human_ms(ms)
                )),
                None => head.push_str(&human_ms(ms)),
            }
        }
        _ if !terminal && !p.reason.is_empty() => head.push_str(&format!(": {}", p.reason)),
        _ => {}
    }
    head.push('.');
    let mut parts = vec![head];
    if let Some(s) = p.summary.map(str::trim).filter(|s| !s.is_empty()) {
        parts.push(quote(s));
    }
    if let Some(e) = p.error {
        parts.push(format!("Error: {}", quote(e.trim())));
    }
    parts.extend(p.footer.clone());
    parts.join("\n\n")
}

fn quote(s: &str) -> String {
    if s.len() <= MAX_QUOTED {
        return s.to_string();
    }
    let mut end = MAX_QUOTED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… (cut; the whole summary is in `skillbox tasks show`)",
        &s[..end]
    )
}

fn human_ms(ms: u64) -> String {
    match ms {
        0 => "under 1 ms".into(),
        1..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ms(12), "12 ms");
        assert_eq!(human_ms(1250), "1.2 s");
        assert_eq!(human_ms(125_000), "2 min 5 s");
        assert_eq!(human_ms(7_500_000), "2 h 5 min");
    }

    #[test]
    fn long_summaries_are_cut_on_a_character_boundary() {
        let s = "é".repeat(MAX_QUOTED);
        let q = quote(&s);
        assert!(q.len() < s.len() && q.ends_with("`skillbox tasks show`)"));
    }
}
