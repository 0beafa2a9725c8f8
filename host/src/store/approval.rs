//! Approvals: a running task's request for the operator's "go", and the
//! decision, kept in the store so that neither is lost when a host dies.
//!
//! A call that matches an ask rule (or a skill's explicit request) is
//! stored as a pending [`Approval`]; the task moves `running` →
//! `awaiting_approval`, and that state change is notified like any other.
//! A decision, from whichever host or client gives it, settles the request
//! and moves the task back to `running`. A resumed attempt that reaches
//! the same call finds the stored request by its key, decided or still
//! pending, instead of asking twice; an approval given "always for this
//! task" settles the later requests of its rule without asking.
//!
//! The rules live here once, over any backend's transaction.

use serde::{Deserialize, Serialize};

pub use crate::policy::ask::{ApprovalRequest, Decision};

use super::audit::{self, Entry};
use super::backend::{StoreError, now_ms};
use super::machine::{Transaction, move_state};
use super::model::{TaskId, TaskState};

/// Most requests one task may make; past it, calls that ask are denied.
pub const MAX_APPROVALS: usize = 64;

/// One request of a task and, once given, its decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Its number within the task, from 1.
    pub id: u32,
    /// The task.
    pub task_id: TaskId,
    /// Identifies the call across attempts: the same call, reached again
    /// by a resumed attempt, has the same key.
    pub key: String,
    /// What is asked.
    pub request: ApprovalRequest,
    /// The attempt that first asked.
    pub attempt: u32,
    /// When it was asked, Unix milliseconds.
    pub requested_ms: i64,
    /// When it is denied unless decided before, Unix milliseconds.
    pub expires_ms: i64,
    /// The seq of the state event that announced it (0 for one settled at
    /// once by an "always" decision).
    pub seq: u64,
    /// The answer, once given.
    pub decision: Option<Decision>,
}

impl Approval {
    /// Whether it still waits for a decision.
    pub fn is_pending(&self) -> bool {
        self.decision.is_none()
    }
}

/// A request as a running task makes it.
#[derive(Clone, Debug)]
pub struct Ask {
    /// See [`Approval::key`].
    pub key: String,
    /// What is asked.
    pub request: ApprovalRequest,
    /// How long it may wait for a decision, in milliseconds.
    pub timeout_ms: i64,
}

/// How to answer the task's request by CLI, for notifications and errors.
pub fn how_to_answer(task: TaskId, n: u32) -> String {
    format!("skillbox tasks approve {task} {n}  (or: skillbox tasks deny {task} {n})")
}

/// Records `ask` for the task (whose lease the caller checked): an earlier
/// request with the same key is returned as it stands; an "always"
/// decision on the same rule settles a new one at once; else a pending
/// request is stored and the task moves to `awaiting_approval`.
pub(super) async fn ask<T: Transaction>(
    tx: &T,
    id: TaskId,
    ask: Ask,
    max: u64,
) -> Result<Approval, StoreError> {
    let task = tx.task(id, false).await?;
    let all = tx.approvals(id).await?;
    if let Some(a) = all.iter().find(|a| a.key == ask.key) {
        if a.is_pending() && task.state == TaskState::Running {
            let why = format!("awaiting approval #{} again, after a resume", a.id);
            move_state(tx, id, task.state, TaskState::AwaitingApproval, &why, max).await?;
        }
        return Ok(a.clone());
    }
    let now = now_ms();
    let mut approval = Approval {
        id: all.len() as u32 + 1,
        task_id: id,
        key: ask.key,
        request: ask.request,
        attempt: task.attempt,
        requested_ms: now,
        expires_ms: now.saturating_add(ask.timeout_ms),
        seq: 0,
        decision: None,
    };
    let standing = all.iter().find(|a| {
        a.request.rule == approval.request.rule
            && a.decision.as_ref().is_some_and(|d| d.always_for_task)
    });
    if let Some(earlier) = standing {
        let d = earlier.decision.as_ref().expect("found by its decision");
        approval.decision = Some(Decision {
            approved: d.approved,
            always_for_task: false,
            by: format!("approval #{} (always for this task)", earlier.id),
            note: d.note.clone(),
            at_ms: now,
        });
    } else if all.len() >= MAX_APPROVALS {
        approval.decision = Some(Decision {
            approved: false,
            always_for_task: false,
            by: "skillbox".into(),
            note: Some(format!(
                "the task made {MAX_APPROVALS} requests for approval, the most one task may make"
            )),
            at_ms: now,
        });
    } else {
        let why = format!(
            "asks approval #{}: {} {} (rule {}){}; answer with: {}",
            approval.id,
            approval.request.capability,
            approval.request.detail,
            approval.request.rule,
            approval
                .request
                .reason
                .as_deref()
                .map(|r| format!(", because: {r}"))
                .unwrap_or_default(),
            how_to_answer(id, approval.id)
        );
        move_state(tx, id, task.state, TaskState::AwaitingApproval, &why, max).await?;
        approval.seq = tx.event_count(id).await?.map_or(0, |(n, _)| n as u64);
    }
    tx.put_approval(&approval).await?;
    // Settled at once: by an "always" decision, or by the bound.
    audit::chain(
        tx,
        &Entry::decision(&approval).into_iter().collect::<Vec<_>>(),
    )
    .await?;
    Ok(approval)
}

/// Records `decision` on request `n` of task `id` (its only pending one
/// when `n` is `None`); when no request is left pending, the task goes back
/// to `running`. Refuses a request that was already decided and a task
/// that has ended.
pub(super) async fn decide<T: Transaction>(
    tx: &T,
    id: TaskId,
    n: Option<u32>,
    mut decision: Decision,
    max: u64,
) -> Result<Approval, StoreError> {
    let task = tx.task(id, true).await?;
    let all = tx.approvals(id).await?;
    let pending: Vec<&Approval> = all.iter().filter(|a| a.is_pending()).collect();
    let mut approval = match n {
        Some(n) => all.iter().find(|a| a.id == n).cloned().ok_or_else(|| {
            StoreError::Conflict(format!(
                "task {id} has no request #{n} (its requests: {})",
                list(&all)
            ))
        })?,
        None => match pending.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(StoreError::Conflict(format!(
                    "task {id} is not awaiting approval (it is {}); nothing to decide",
                    task.state
                )));
            }
            many => {
                return Err(StoreError::Conflict(format!(
                    "task {id} has {} pending requests ({}); name one",
                    many.len(),
                    many.iter()
                        .map(|a| format!("#{}", a.id))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        },
    };
    if let Some(d) = &approval.decision {
        return Err(StoreError::Conflict(format!(
            "request #{} of task {id} was already {} by {}",
            approval.id,
            if d.approved { "approved" } else { "denied" },
            d.by
        )));
    }
    if task.state.is_terminal() {
        return Err(StoreError::Conflict(format!(
            "task {id} has ended ({}); nothing waits for a decision",
            task.state
        )));
    }
    decision.at_ms = now_ms();
    let verb = if decision.approved {
        "approved"
    } else {
        "denied"
    };
    let why = format!(
        "request #{} {verb} by {}{}",
        approval.id,
        decision.by,
        if decision.always_for_task {
            ", always for this task"
        } else {
            ""
        }
    );
    approval.decision = Some(decision);
    tx.put_approval(&approval).await?;
    audit::chain(
        tx,
        &Entry::decision(&approval).into_iter().collect::<Vec<_>>(),
    )
    .await?;
    let others_pending = pending.iter().any(|a| a.id != approval.id);
    if task.state == TaskState::AwaitingApproval && !others_pending {
        move_state(tx, id, task.state, TaskState::Running, &why, max).await?;
    }
    // The host running the task may be another one: wake it.
    tx.wake_workers().await?;
    Ok(approval)
}

fn list(all: &[Approval]) -> String {
    if all.is_empty() {
        return "none".into();
    }
    all.iter()
        .map(|a| {
            let state = match &a.decision {
                None => "pending",
                Some(d) if d.approved => "approved",
                Some(_) => "denied",
            };
            format!("#{} {state}", a.id)
        })
        .collect::<Vec<_>>()
        .join(", ")
}
