//! A running task's recorder: its events reach the store in group
//! commits, its checkpoints before the guest's `save` returns, and a lost
//! lease or a cancel request stops the run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, watch};

use super::TaskOptions;
use crate::events::{Event, EventObserver};
use crate::store::{Approval, Ask, Claim, StoreError, TaskEvent, TaskId, TaskStore};

/// Receives a running task's events: buffers them and commits them in
/// groups; a checkpoint commits the buffer first, so order is kept.
pub(super) struct TaskRecorder {
    store: Arc<dyn TaskStore>,
    claim: Arc<Claim>,
    pending: Mutex<Vec<TaskEvent>>,
    /// Signalled when the first event is buffered after a commit.
    dirty: Notify,
    lost: AtomicBool,
    cancel: watch::Sender<bool>,
    updates: broadcast::Sender<TaskId>,
    /// How long a write the store failed to take is retried (the lease: past
    /// it, another host may own the task).
    retry_for: Duration,
}

impl TaskRecorder {
    /// The recorder of the run of `claim`; `cancel` stops the run.
    pub(super) fn new(
        store: Arc<dyn TaskStore>,
        claim: Arc<Claim>,
        cancel: watch::Sender<bool>,
        updates: broadcast::Sender<TaskId>,
        retry_for: Duration,
    ) -> TaskRecorder {
        TaskRecorder {
            store,
            claim,
            pending: Mutex::default(),
            dirty: Notify::new(),
            lost: AtomicBool::new(false),
            cancel,
            updates,
            retry_for,
        }
    }

    /// Whether the lease was lost: the task is someone else's now.
    pub(super) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    pub(super) fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
        let _ = self.cancel.send(true);
    }

    fn commit(&self, pending: &mut Vec<TaskEvent>) -> Result<(), StoreError> {
        if pending.is_empty() || self.is_lost() {
            pending.clear();
            return Ok(());
        }
        let result = self.store.append_many(&self.claim, pending);
        match &result {
            // Kept for the next commit: the store may be back by then.
            Err(StoreError::Backend(_)) => {}
            Err(StoreError::LeaseLost(_)) => {
                pending.clear();
                self.lose();
            }
            _ => pending.clear(),
        }
        let _ = self.updates.send(self.claim.task.id);
        result
    }

    /// The buffered events, for the caller to store.
    pub(super) fn take(&self) -> Vec<TaskEvent> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(super) fn flush(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = self.commit(&mut pending) {
            tracing::warn!(task = %self.claim.task.id, error = %e, "storing events failed");
        }
    }

    pub(super) fn save_checkpoint(&self, key: &str, value: &[u8]) -> Result<(), String> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        retrying(self.retry_for, || self.commit(&mut pending)).map_err(|e| e.to_string())?;
        if self.is_lost() {
            return Err("this host no longer owns the task".into());
        }
        let result = retrying(self.retry_for, || {
            self.store.save_checkpoint(&self.claim, key, value)
        });
        if let Err(StoreError::LeaseLost(_)) = &result {
            self.lose();
        }
        let _ = self.updates.send(self.claim.task.id);
        result.map_err(|e| e.to_string())
    }
}

impl TaskRecorder {
    /// Stores a request for approval after the buffered events (so that the
    /// log reads in order), as `save_checkpoint` does.
    pub(super) fn ask(&self, ask: Ask) -> Result<Approval, String> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        retrying(self.retry_for, || self.commit(&mut pending)).map_err(|e| e.to_string())?;
        if self.is_lost() {
            return Err("this host no longer owns the task".into());
        }
        let result = retrying(self.retry_for, || self.store.ask(&self.claim, ask.clone()));
        if let Err(StoreError::LeaseLost(_)) = &result {
            self.lose();
        }
        let _ = self.updates.send(self.claim.task.id);
        result.map_err(|e| e.to_string())
    }
}

impl EventObserver for TaskRecorder {
    fn event(&self, event: Event) {
        let e = match event {
            Event::Progress { fraction, message } => TaskEvent::Progress { fraction, message },
            Event::Log { level, message } => TaskEvent::Log { level, message },
            Event::Output { stream, text } => TaskEvent::Output {
                stream: stream.into(),
                text,
            },
            Event::Audit {
                capability,
                detail,
                allowed,
                reason,
            } => {
                crate::metrics::metrics().call(capability, allowed);
                // A refusal is an event on the span of the run it happens in
                // (exec and docker calls have spans of their own; every
                // decision is in the audit trail).
                if !allowed {
                    tracing::info!(
                        skillbox.capability = capability,
                        skillbox.call = %detail,
                        "capability refused"
                    );
                }
                TaskEvent::Audit {
                    capability: capability.into(),
                    detail,
                    allowed,
                    reason,
                }
            }
            Event::Truncated { stream, cap } => TaskEvent::Truncated {
                what: format!("{stream} reached its cap of {cap} bytes"),
            },
        };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.push(e);
        if pending.len() == 1 {
            self.dirty.notify_one();
        } else if pending.len() >= 256 {
            let _ = self.commit(&mut pending);
        }
    }
}

/// Renews the lease, commits buffered events, and notices cancellation
/// requested through the store (by another process).
pub(super) async fn keep_alive(
    store: Arc<dyn TaskStore>,
    claim: Arc<Claim>,
    sink: Arc<TaskRecorder>,
    options: TaskOptions,
) {
    // The task was just claimed: its lease is fresh.
    let mut beat = tokio::time::interval_at(
        tokio::time::Instant::now() + options.heartbeat,
        options.heartbeat,
    );
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the lease was last known to be ours until (claimed, or renewed).
    let renewed = Arc::new(Mutex::new(std::time::Instant::now()));
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let (store, claim, sink, lease, renewed) =
                    (store.clone(), claim.clone(), sink.clone(), options.lease, renewed.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    let asked = std::time::Instant::now();
                    match store.heartbeat(&claim, lease) {
                        Ok(()) => *renewed.lock().unwrap_or_else(|e| e.into_inner()) = asked,
                        Err(StoreError::LeaseLost(_)) => sink.lose(),
                        Err(e) => {
                            // Cut off from the store: once the lease may
                            // have run out, another host may be running the
                            // task, so this one stops (and kills what it
                            // started) rather than race it.
                            let since = renewed.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
                            if since >= lease {
                                tracing::warn!(task = %claim.task.id, error = %e,
                                    "lease not renewed for {since:.1?}; stopping the task");
                                sink.lose();
                            } else {
                                tracing::warn!(task = %claim.task.id, error = %e, "heartbeat failed");
                            }
                        }
                    }
                    if store.get(claim.task.id).is_ok_and(|t| t.cancel_requested) {
                        let _ = sink.cancel.send(true);
                    }
                })
                .await;
            }
            // Events wait a little, so that they are committed in groups.
            () = sink.dirty.notified() => {
                tokio::time::sleep(options.flush).await;
                let sink = sink.clone();
                let _ = tokio::task::spawn_blocking(move || sink.flush()).await;
            }
        }
    }
}

/// Runs `write` until the store takes it or refuses it for a reason other
/// than a backend failure (the database restarting, a broken connection),
/// for at most `within`; backs off between tries.
pub(super) fn retrying<T>(
    within: Duration,
    mut write: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match write() {
            Err(StoreError::Backend(e)) if start.elapsed() + pause < within => {
                tracing::warn!(error = %e, "the task store failed a write; retrying in {pause:?}");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}
