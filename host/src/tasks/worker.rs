//! The worker loop: claims tasks up to the concurrency limit, runs each on
//! the runtime with its recorder, records its end, recovers tasks whose
//! host died, and runs the relay's delivery worker alongside.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tracing::Instrument;

use super::api::announces_changes;
use super::recorder::{TaskRecorder, keep_alive, retrying};
use super::{ClaimedTask, TaskService, scratch};
use crate::error::Error;
use crate::relay::worker::DeliveryWorker;
use crate::runtime::{Outcome, RunRequest};
use crate::skill::SkillSource;
use crate::store::{
    Claim, CleanupMode, Ended, Ending, SCRATCH_GUEST, StoreError, TaskId, TaskState, now_ms,
};

/// Most tasks claimed in one transaction.
const MAX_CLAIM_BATCH: usize = 64;

/// Aborts a background job when dropped.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sets its flag when dropped.
struct Stopping<'a>(&'a AtomicBool);

impl Drop for Stopping<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl TaskService {
    /// Runs background tasks until `shutdown` becomes true (or its sender is
    /// dropped): claims work up to the concurrency limit, runs the tasks
    /// [`spawn`](Self::spawn) claimed itself, and turns tasks whose host died
    /// (expired leases) into interrupted ones, which are resumed or failed by
    /// policy. Meanwhile it delivers tasks' notifications to their relay
    /// sinks (see [`crate::relay`]). One worker per service: a second call
    /// waits for the first to return. Tasks already running when it returns
    /// run to their end.
    pub async fn work(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let mut claimed = self.claimed_rx.lock().await;
        let ids = self.store.recover(now_ms(), None)?;
        self.after_recovery(&ids);
        self.stopping.store(false, Ordering::SeqCst);
        let _stopping = Stopping(&self.stopping);
        // Notifications are delivered while the worker runs.
        let mut relay = Abort(tokio::spawn(self.clone().deliver(shutdown.clone())));
        let _recovery = Abort(tokio::spawn(self.clone().recover_expired(shutdown.clone())));
        let result = self.claim_loop(&mut shutdown, &mut claimed).await;
        // The delivery worker finishes its attempts in flight (each within
        // its time limit).
        let limit = self.options.relay.retry.timeout + Duration::from_secs(1);
        let _ = tokio::time::timeout(limit, &mut relay.0).await;
        result
    }

    /// The relay's delivery worker, for as long as this worker runs.
    async fn deliver(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let mut leased = self.leased_rx.lock().await;
        let worker = DeliveryWorker {
            store: self.store.clone(),
            relay: self.options.relay.clone(),
            owner: self.owner.clone(),
            wake: self.wake_relay.clone(),
        };
        worker.run(&mut leased, shutdown).await;
    }

    /// Claims and starts tasks until shutdown.
    async fn claim_loop(
        self: &Arc<Self>,
        shutdown: &mut watch::Receiver<bool>,
        claimed: &mut mpsc::UnboundedReceiver<ClaimedTask>,
    ) -> Result<(), Error> {
        // Another host sharing the store may queue work: it wakes us.
        let mut store_wake = self.store.task_wake_ups();
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let permit = tokio::select! {
                biased;
                // A dropped sender means nobody can stop us any more: stop.
                r = shutdown.changed() => if r.is_err() { return Ok(()) } else { continue },
                Some((claim, permit)) = claimed.recv() => {
                    self.start(claim, permit);
                    continue;
                }
                p = self.slots.clone().acquire_owned() => p.expect("never closed"),
            };
            // Take every free slot at once: one claim transaction for many
            // tasks.
            let mut permits = vec![permit];
            while permits.len() < MAX_CLAIM_BATCH {
                match self.slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let wait = match self.claim_batch(permits).await {
                Ok(drained) => drained,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming tasks failed; retrying");
                    tokio::time::sleep(self.options.poll).await;
                    false
                }
            };
            // A short batch drained the queue: wait for a spawn.
            if wait && self.idle(shutdown, claimed, &mut store_wake).await {
                return Ok(());
            }
        }
    }

    /// Claims one task per permit and starts them; returns whether the
    /// queue ran dry (fewer tasks than permits).
    async fn claim_batch(
        self: &Arc<Self>,
        mut permits: Vec<OwnedSemaphorePermit>,
    ) -> Result<bool, StoreError> {
        let (store, owner, lease, want) = (
            self.store.clone(),
            self.owner.clone(),
            self.options.lease,
            permits.len(),
        );
        let claims = tokio::task::spawn_blocking(move || store.claim_many(&owner, want, lease))
            .await
            .unwrap_or_else(|e| Err(StoreError::Backend(format!("claiming: {e}"))))?;
        if claims.iter().any(|c| announces_changes(&c.task.spec)) {
            self.wake_relay.notify_one();
        }
        let drained = claims.len() < want;
        for claim in claims {
            let permit = permits.pop().expect("one permit per claim");
            self.start(claim, permit);
        }
        Ok(drained)
    }

    /// Runs a claimed task in its slot.
    fn start(self: &Arc<Self>, claim: Claim, permit: OwnedSemaphorePermit) {
        let tasks = self.clone();
        tokio::spawn(async move {
            tasks.execute(claim).await;
            drop(permit);
        });
    }

    /// Waits for a spawn, a poll interval (then recovers expired leases) or
    /// shutdown; true when the worker must stop.
    async fn idle(
        self: &Arc<Self>,
        shutdown: &mut watch::Receiver<bool>,
        claimed: &mut mpsc::UnboundedReceiver<ClaimedTask>,
        store_wake: &mut Option<watch::Receiver<u64>>,
    ) -> bool {
        tokio::select! {
            biased;
            r = shutdown.changed() => r.is_err() || *shutdown.borrow(),
            Some((claim, permit)) = claimed.recv() => {
                self.start(claim, permit);
                false
            }
            () = self.wake_worker.notified() => false,
            () = crate::store::woken(store_wake) => false,
            // Look again: another process may have queued work.
            () = tokio::time::sleep(self.options.poll) => false,
        }
    }

    /// Every poll interval, busy or not, turns tasks whose lease expired
    /// (their host died or was cut off) into interrupted ones, to be
    /// resumed by the next claim here or on another host sharing the store.
    async fn recover_expired(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
                () = tokio::time::sleep(self.options.poll) => {}
            }
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.recover(now_ms(), None)).await {
                Ok(Ok(ids)) => self.after_recovery(&ids),
                Ok(Err(e)) => tracing::warn!(error = %e, "recovering expired leases failed"),
                Err(e) => tracing::warn!(error = %e, "recovering expired leases failed"),
            }
        }
    }

    /// After tasks were interrupted: kills what their programs left running
    /// on this machine, deletes the scratch directories of those that ended
    /// with `cleanup = delete`, and wakes the workers.
    pub(super) fn after_recovery(&self, ids: &[TaskId]) {
        if ids.is_empty() {
            return;
        }
        for id in ids {
            let n = crate::caps::exec::kill_tagged(&id.to_string());
            if n > 0 {
                tracing::warn!(task = %id, processes = n, "killed programs an interrupted task left behind");
            }
            if let Ok(t) = self.store.get(*id)
                && t.state.is_terminal()
                && t.spec.cleanup == CleanupMode::Delete
            {
                scratch::remove(t.scratch_dir().as_deref());
            }
        }
        self.wake_relay.notify_one();
        self.wake_worker.notify_one();
    }

    /// Runs a claimed task, then, in the same slot, each task claimed by the
    /// transaction that ended the previous one.
    async fn execute(self: Arc<Self>, claim: Claim) {
        let mut next = Some(claim);
        while let Some(claim) = next {
            next = self.execute_one(claim).await;
        }
    }

    /// Runs one claimed task and records its end; returns the task claimed
    /// in the same transaction, if any.
    async fn execute_one(self: &Arc<Self>, claim: Claim) -> Option<Claim> {
        let id = claim.task.id;
        let claimed_at = std::time::Instant::now();
        crate::metrics::metrics().claimed.inc();
        let claim = Arc::new(claim);
        let (cancel_tx, cancel_rx) = watch::channel(claim.task.cancel_requested);
        self.cancels().insert(id, cancel_tx.clone());
        let recorder = Arc::new(TaskRecorder::new(
            self.store.clone(),
            claim.clone(),
            cancel_tx,
            self.updates.clone(),
            self.options.lease,
        ));
        let background = tokio::spawn(keep_alive(
            self.store.clone(),
            claim.clone(),
            recorder.clone(),
            self.options.clone(),
        ));
        // The task's spans continue the trace its spawn began; a task no
        // spawn made (a schedule's) starts its trace at the run.
        let run = tracing::info_span!(
            "task.run",
            skillbox.task.id = %id,
            skillbox.attempt = claim.task.attempt,
            skillbox.skill = %claim.task.spec.skill_name,
            skillbox.state = tracing::field::Empty,
        );
        let trace = match claim.task.spec.trace.clone() {
            Some(t) => {
                crate::telemetry::continue_trace(&run, Some(&t));
                Some(t)
            }
            None => crate::telemetry::traceparent(&run),
        };
        let traced = |span: tracing::Span| {
            crate::telemetry::continue_trace(&span, trace.as_deref());
            span
        };
        let queued_ms =
            claim.task.started_ms.unwrap_or(claim.task.created_ms) - claim.task.created_ms;
        drop(traced(tracing::info_span!(
            "task.claim",
            skillbox.task.id = %id,
            skillbox.attempt = claim.task.attempt,
            skillbox.host = %self.owner,
            skillbox.queued_ms = queued_ms,
        )));
        let result = self
            .run_claimed(&claim, recorder.clone(), cancel_rx)
            .instrument(run.clone())
            .await;
        background.abort();
        self.cancels().remove(&id);
        let end = ending(result);
        run.record("skillbox.state", end.0.as_str());
        drop(run);
        crate::metrics::metrics().finished(end.0.as_str(), claimed_at.elapsed());
        let finish = traced(tracing::info_span!("task.finish", skillbox.task.id = %id));
        let ended = self
            .record_end(claim, recorder, end)
            .instrument(finish)
            .await;
        let _ = self.updates.send(id);
        let ended = match ended {
            Ok(Ok(Some(ended))) => ended,
            Ok(Ok(None)) => return None,
            Ok(Err(e)) => {
                tracing::warn!(task = %id, error = %e, "recording the end of a task failed");
                return None;
            }
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "recording the end of a task failed");
                return None;
            }
        };
        let task = Arc::new(ended.task);
        for d in ended.deliveries {
            let _ = self.leased.send((d, task.clone()));
        }
        // Notifications it queued but could not hand over (one of the
        // task's earlier ones is still on its way) go later.
        if announces_changes(&task.spec) {
            self.wake_relay.notify_one();
        }
        if let Some(n) = &ended.next {
            let _ = self.updates.send(n.task.id);
        }
        ended.next
    }

    /// Stores the end of a task (its last events, state and outcome) and
    /// claims the next one in the same transaction while the worker runs;
    /// `None` when the task is no longer this host's.
    async fn record_end(
        &self,
        claim: Arc<Claim>,
        recorder: Arc<TaskRecorder>,
        (state, outcome, reason): (TaskState, serde_json::Value, String),
    ) -> Result<Result<Option<Ended>, StoreError>, tokio::task::JoinError> {
        let store = self.store.clone();
        let id = claim.task.id;
        let scratch = (claim.task.spec.cleanup == CleanupMode::Delete)
            .then(|| claim.task.scratch_dir())
            .flatten();
        let running = !self.stopping.load(Ordering::SeqCst);
        let next_lease = running.then_some(self.options.lease);
        // While the worker (and with it the delivery worker) runs, the end's
        // notifications come back leased to this host: sent at once.
        let deliver = running.then(|| self.options.relay.lease());
        let lease = self.options.lease;
        tokio::task::spawn_blocking(move || {
            let events = recorder.take();
            if recorder.is_lost() {
                tracing::warn!(task = %id, "lease lost; leaving the task to its new owner");
                return Ok(None);
            }
            let end = Ending {
                events: &events,
                state,
                outcome,
                reason: &reason,
                deliver,
            };
            let mut tries = 0;
            let ended = retrying(lease, || {
                tries += 1;
                store.finish_and_claim(&claim, end.clone(), next_lease)
            });
            let ended = match ended {
                // An earlier try's commit may have gone through before the
                // connection broke: then the end is recorded.
                Err(StoreError::LeaseLost(_))
                    if tries > 1 && store.get(id).is_ok_and(|t| t.state.is_terminal()) =>
                {
                    return Ok(None);
                }
                other => other?,
            };
            // Only once the end is durable: a crash before it resumes the
            // task with its scratch directory intact.
            scratch::remove(scratch.as_deref());
            Ok(Some(ended))
        })
        .await
    }

    /// Runs the task's skill on the runtime, from its checkpoints, with its
    /// scratch directory.
    async fn run_claimed(
        &self,
        claim: &Arc<Claim>,
        recorder: Arc<TaskRecorder>,
        cancel: watch::Receiver<bool>,
    ) -> Result<(Outcome, u64), Error> {
        let spec = &claim.task.spec;
        let source = SkillSource::open(std::path::Path::new(&spec.skill), true)?;
        if source.digest != spec.digest {
            return Err(Error::DigestMismatch {
                path: source.component_path,
                expected: spec.digest.clone(),
                actual: source.digest,
            });
        }
        self.options.trust.admit(&source)?;
        let prepared = self.host.prepare(&source)?;
        let mut policy = spec.policy.clone();
        if let Some(dir) = claim.task.scratch_dir() {
            scratch::make_private(&dir)?;
            policy.preopens.push(crate::policy::Preopen {
                guest: SCRATCH_GUEST.into(),
                host: dir,
                access: crate::policy::Access::ReadWrite,
            });
        }
        // Only a running attempt saves checkpoints, so a first attempt has
        // none to load.
        let checkpoints = if claim.task.attempt <= 1 {
            Default::default()
        } else {
            let (store, id, lease) = (self.store.clone(), claim.task.id, self.options.lease);
            tokio::task::spawn_blocking(move || retrying(lease, || store.checkpoints(id)))
                .await
                .map_err(|e| Error::Engine(format!("loading checkpoints: {e}")))??
        };
        let persist = {
            let recorder = recorder.clone();
            Arc::new(move |key: &str, value: &[u8]| recorder.save_checkpoint(key, value))
        };
        let gate = Arc::new(super::approvals::TaskGate {
            store: self.store.clone(),
            recorder: recorder.clone(),
            id: claim.task.id,
            updates: self.updates.clone(),
            wake_relay: self.wake_relay.clone(),
            poll: self.options.poll,
            retry_for: self.options.lease,
        });
        let secrets = self.options.secrets.resolve(policy.secrets.names())?;
        let request = RunRequest {
            input: spec.input.clone(),
            secrets,
            policy,
            events: recorder,
            checkpoints,
            persist_checkpoint: Some(persist),
            cancel: Some(cancel),
            approvals: Some(gate),
            tag: Some(claim.task.id.to_string()),
            docker: None,
        };
        let report = self.host.run(&prepared, request).await?;
        Ok((report.outcome, report.duration_ms))
    }
}

/// A run's result as a task's end: its state, the outcome to store and the
/// reason for the state event.
fn ending(result: Result<(Outcome, u64), Error>) -> (TaskState, serde_json::Value, String) {
    let (outcome, duration_ms) = match result {
        Ok(r) => r,
        Err(e) => {
            return (
                TaskState::Failed,
                serde_json::json!({ "outcome": "failed", "kind": "failed", "message": e.to_string() }),
                e.to_string(),
            );
        }
    };
    let state = match &outcome {
        Outcome::Succeeded { .. } => TaskState::Succeeded,
        Outcome::TimedOut { .. } => TaskState::TimedOut,
        Outcome::Cancelled => TaskState::Cancelled,
        Outcome::Failed { .. } | Outcome::LimitExceeded { .. } | Outcome::Crashed { .. } => {
            TaskState::Failed
        }
    };
    let reason = match &outcome {
        Outcome::Succeeded { .. } => "the skill returned its summary".to_string(),
        Outcome::Failed { message, .. }
        | Outcome::LimitExceeded { message, .. }
        | Outcome::Crashed { message } => message.clone(),
        Outcome::TimedOut { limit_ms } => format!("timed out after {limit_ms} ms"),
        Outcome::Cancelled => "cancelled on request".to_string(),
    };
    let mut json = serde_json::to_value(&outcome).unwrap_or_default();
    json["duration_ms"] = duration_ms.into();
    (state, json, reason)
}
