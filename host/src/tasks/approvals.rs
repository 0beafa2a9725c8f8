//! Approvals of background tasks: a running task's requests go to the
//! store (and through the relay to its parent session), and the call waits
//! for the decision, given on any host sharing the store.
//!
//! The wait ends at the first of: a decision made on this host (the
//! service's update channel), a wake-up from another host sharing the
//! store (PostgreSQL's `LISTEN/NOTIFY`), a poll of the store, or the
//! request's expiry, which this host then records as a denial "by
//! timeout". Expiry is a stored time: a task resumed after its host died
//! finds a request that expired meanwhile denied at once.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Notify, broadcast};

use super::TaskService;
use super::recorder::{TaskRecorder, retrying};
use crate::caps::approval::{ApprovalGate, ApprovalRequest, Decision};
use crate::error::Error;
use crate::store::{Approval, Ask, StoreError, TaskId, TaskStore, now_ms, woken};

/// The approval gate of one running task.
pub(super) struct TaskGate {
    pub(super) store: Arc<dyn TaskStore>,
    pub(super) recorder: Arc<TaskRecorder>,
    pub(super) id: TaskId,
    pub(super) updates: broadcast::Sender<TaskId>,
    pub(super) wake_relay: Arc<Notify>,
    pub(super) poll: Duration,
    pub(super) retry_for: Duration,
}

impl ApprovalGate for TaskGate {
    fn ask(
        &self,
        key: String,
        request: ApprovalRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Decision, String>> {
        let gate = TaskGate {
            store: self.store.clone(),
            recorder: self.recorder.clone(),
            id: self.id,
            updates: self.updates.clone(),
            wake_relay: self.wake_relay.clone(),
            poll: self.poll,
            retry_for: self.retry_for,
        };
        let ask = Ask {
            key,
            request,
            timeout_ms: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
        };
        Box::pin(async move { gate.wait(ask).await })
    }
}

impl TaskGate {
    async fn wait(self, ask: Ask) -> Result<Decision, String> {
        let recorder = self.recorder.clone();
        let approval = blocking(move || recorder.ask(ask)).await?;
        // The state change is queued for the parent session.
        self.wake_relay.notify_one();
        let mut wake_ups = self.store.task_wake_ups();
        loop {
            let mut updates = self.updates.subscribe();
            let (store, id, n) = (self.store.clone(), self.id, approval.id);
            let current = blocking(move || {
                store
                    .approvals(id)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .find(|a| a.id == n)
                    .ok_or_else(|| format!("request #{n} of task {id} is gone"))
            })
            .await?;
            if let Some(d) = current.decision {
                return Ok(d);
            }
            let left = current.expires_ms - now_ms();
            if left <= 0 {
                match self.expire(&current).await {
                    Ok(d) => return Ok(d),
                    // Decided meanwhile: read it on the next turn.
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
            let until = Duration::from_millis(left as u64).min(self.poll);
            tokio::select! {
                () = super::api::updated(&mut updates, id) => {}
                () = woken(&mut wake_ups) => {}
                () = tokio::time::sleep(until) => {}
            }
        }
    }

    /// Denies a request nobody decided in time.
    async fn expire(&self, a: &Approval) -> Result<Decision, StoreError> {
        let (store, id, n, within) = (self.store.clone(), self.id, a.id, self.retry_for);
        let waited = Duration::from_millis((a.expires_ms - a.requested_ms).max(0) as u64);
        let decided = tokio::task::spawn_blocking(move || {
            retrying(within, || {
                store.decide(
                    id,
                    Some(n),
                    Decision {
                        approved: false,
                        always_for_task: false,
                        by: "timeout".into(),
                        note: Some(format!(
                            "no decision within {}",
                            crate::units::HumanDuration(waited)
                        )),
                        at_ms: 0,
                    },
                )
            })
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))??;
        let _ = self.updates.send(id);
        self.wake_relay.notify_one();
        decided
            .decision
            .ok_or_else(|| StoreError::Backend("a decided request has no decision".into()))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
}

impl TaskService {
    /// Decides request `n` of task `id` (its only pending one when `None`):
    /// the waiting call goes on at once when this host runs the task, at
    /// the next wake-up or poll when another host does, and when the task
    /// resumes when no host runs it. `decision.by` says who decided.
    pub fn decide(
        &self,
        id: TaskId,
        n: Option<u32>,
        decision: Decision,
    ) -> Result<Approval, Error> {
        let approval = self.store.decide(id, n, decision)?;
        let _ = self.updates.send(id);
        self.wake_relay.notify_one();
        Ok(approval)
    }

    /// The task's requests for approval, decided or not.
    pub fn approvals(&self, id: TaskId) -> Result<Vec<Approval>, Error> {
        Ok(self.store.approvals(id)?)
    }
}
