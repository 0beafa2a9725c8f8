//! What callers do with tasks: spawn, look, wait, follow, cancel, prune,
//! and read or retry their notifications.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::broadcast;

use super::{SpawnRequest, TaskService, scratch};
use crate::error::Error;
use crate::policy::{EffectivePolicy, ResumePolicy};
use crate::relay::{Delivery, Notification};
use crate::skill::SkillSource;
use crate::store::{
    CleanupMode, EventRecord, SCRATCH_GUEST, StoreError, Task, TaskFilter, TaskId, TaskSpec, now_ms,
};

/// Most events one read returns.
const EVENT_PAGE: u32 = 500;

impl TaskService {
    /// Checks `request` (skill, digest, grants, input, component) and stores
    /// it as a queued task; returns at once with the task as stored.
    ///
    /// When traces are exported, the span of this spawn (`task.spawn`, a
    /// child of the caller's current span) is the root of the task's trace.
    pub fn spawn(&self, request: SpawnRequest) -> Result<Task, Error> {
        let span = tracing::info_span!(
            "task.spawn",
            skillbox.task.id = tracing::field::Empty,
            skillbox.skill = tracing::field::Empty,
        );
        let _in = span.enter();
        let mut spec = self.prepare(request)?;
        span.record("skillbox.skill", spec.skill_name.as_str());
        spec.trace = crate::telemetry::traceparent(&span);
        crate::metrics::metrics().spawned.inc();
        // With a free slot and a running worker, the task is claimed in the
        // same transaction that stores it (one commit less before it runs).
        let slot = (!self.stopping.load(Ordering::SeqCst))
            .then(|| self.slots.clone().try_acquire_owned().ok())
            .flatten();
        let (task, claim) = match &slot {
            Some(_) => self
                .store
                .create_and_claim(spec, &self.owner, self.options.lease)?,
            None => (self.store.create(spec)?, None),
        };
        let _ = self.updates.send(task.id);
        span.record("skillbox.task.id", task.id.to_string());
        match (claim, slot) {
            (Some(claim), Some(permit)) => {
                let task = claim.task.clone();
                // The worker runs it (or its lease expires and it is resumed
                // if no worker ever does).
                let _ = self.claimed.send((claim, permit));
                if announces_changes(&task.spec) {
                    self.wake_relay.notify_one();
                }
                Ok(task)
            }
            _ => {
                self.wake_worker.notify_one();
                Ok(task)
            }
        }
    }

    /// The task `request` asks for, once everything in it is checked
    /// (skill, trust, grants, input, sinks, component), without storing
    /// it: what [`spawn`](Self::spawn) stores, and what a schedule keeps to
    /// create at each of its slots.
    pub fn prepare(&self, request: SpawnRequest) -> Result<TaskSpec, Error> {
        if request.cleanup == CleanupMode::Delete && self.options.scratch.is_none() {
            // Refused rather than accepted and ignored.
            return Err(Error::Input(
                "cleanup `delete` needs scratch directories, and this host keeps none \
                 (see TaskOptions::scratch)"
                    .into(),
            ));
        }
        // A reference stands for what this machine locked, never fetched
        // here: pulling is the operator's step (`skillbox pull`).
        let located = crate::oci::store::local_path(&request.skill)?;
        let path = located.as_deref().unwrap_or(&request.skill);
        let source = SkillSource::open(path, request.allow_unpinned)?;
        self.options.trust.admit(&source)?;
        let (policy, report) = EffectivePolicy::compute(source.manifest.as_ref(), &request.grants);
        if report.not_granted().count() > 0 && !request.partial {
            return Err(Error::NotGranted(format!(
                "{report}(grant them, or accept partial grants: `skillbox spawn --partial`, \
                 `\"partial\": true` through the API)"
            )));
        }
        if self.options.scratch.is_some()
            && policy
                .preopens
                .iter()
                .any(|p| std::path::Path::new(&p.guest).starts_with(SCRATCH_GUEST))
        {
            return Err(Error::Grant(format!(
                "the guest path {SCRATCH_GUEST} is the task's scratch directory; mount the granted directory elsewhere"
            )));
        }
        serde_json::from_str::<serde_json::Value>(&request.input)
            .map_err(|e| Error::Input(format!("not JSON: {e}")))?;
        let notify_to = self.options.relay.resolve(&request.notify_to)?;
        // Compile and link now, so a broken component is refused here and
        // not discovered by a worker later.
        self.host.prepare(&source)?;
        let skill = source
            .manifest_path
            .as_ref()
            .unwrap_or(&source.component_path)
            .canonicalize()
            .map_err(|e| Error::io(&request.skill, e))?;
        Ok(TaskSpec {
            skill: skill.to_string_lossy().into_owned(),
            skill_name: source.name.clone(),
            digest: source.digest.clone(),
            input: request.input,
            timeout: policy.limits.timeout,
            policy,
            label: request.label,
            parent_session: request.parent_session,
            parent_route: request.parent_route,
            cleanup: request.cleanup,
            notify: request.notify,
            notify_to,
            resume: source
                .manifest
                .as_ref()
                .map_or(ResumePolicy::Fail, |m| m.skill.resume),
            scratch: self.options.scratch.clone(),
            schedule: None,
            trace: None,
        })
    }

    /// One task as stored.
    pub fn task(&self, id: TaskId) -> Result<Task, Error> {
        Ok(self.store.get(id)?)
    }

    /// Interrupts, at once, the tasks a dead host `owner` left running
    /// (resumed or failed by policy next); returns their ids.
    ///
    /// Programs those tasks started and that outlived their host are killed
    /// first, so a resumed task never races its own leftovers or repeats
    /// their side effects.
    pub fn recover_owner(&self, owner: &str) -> Result<Vec<TaskId>, Error> {
        let ids = self.store.recover(now_ms(), Some(owner))?;
        self.after_recovery(&ids);
        Ok(ids)
    }

    /// Deletes tasks that ended more than `older_than` ago, with their
    /// events and checkpoints; returns how many.
    pub fn prune(&self, older_than: Duration) -> Result<u64, Error> {
        let before = now_ms() - older_than.as_millis() as i64;
        let pruned = self.store.prune(before, None)?;
        for (id, dir) in &pruned {
            scratch::remove(dir.as_deref());
            let _ = self.updates.send(*id);
        }
        Ok(pruned.len() as u64)
    }

    /// Deletes one ended task, with its events, checkpoints, notifications
    /// and scratch directory. A task still queued or running is refused:
    /// cancel it first.
    pub fn remove(&self, id: TaskId) -> Result<(), Error> {
        let task = self.store.get(id)?;
        if !task.state.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "task {id} is {}; cancel it first (skillbox tasks cancel {id})",
                task.state
            ))
            .into());
        }
        for (_, dir) in self.store.prune(i64::MAX, Some(id))? {
            scratch::remove(dir.as_deref());
        }
        let _ = self.updates.send(id);
        Ok(())
    }

    /// Tasks matching `filter`, newest first.
    pub fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>, Error> {
        Ok(self.store.list(filter)?)
    }

    /// Cancels a task: a queued one at once, a running one as soon as its
    /// host sees the request (at once when that is this host).
    pub fn cancel(&self, id: TaskId, reason: &str) -> Result<Task, Error> {
        let task = self.store.request_cancel(id, reason)?;
        if let Some(tx) = self.cancels().get(&id) {
            let _ = tx.send(true);
        }
        let _ = self.updates.send(id);
        self.wake_relay.notify_one();
        Ok(task)
    }

    /// Waits until the task is in a terminal state and returns it.
    pub async fn wait(&self, id: TaskId) -> Result<Task, Error> {
        loop {
            let mut updates = self.updates.subscribe();
            let task = self.store.get(id)?;
            if task.state.is_terminal() {
                return Ok(task);
            }
            wait_for_update(&mut updates, id, self.options.poll).await;
        }
    }

    /// The task's events after `after` (at most 500), without waiting.
    pub fn events(&self, id: TaskId, after: u64) -> Result<Vec<EventRecord>, Error> {
        Ok(self.store.events(id, after, EVENT_PAGE)?)
    }

    /// The task's events after `after`, waiting for new ones when there are
    /// none yet; an empty answer means the task ended and all were read.
    pub async fn next_events(&self, id: TaskId, after: u64) -> Result<Vec<EventRecord>, Error> {
        loop {
            let mut updates = self.updates.subscribe();
            let events = self.store.events(id, after, EVENT_PAGE)?;
            if !events.is_empty() {
                return Ok(events);
            }
            if self.store.get(id)?.state.is_terminal() {
                // Events of the final transition are committed with it.
                return Ok(self.store.events(id, after, EVENT_PAGE)?);
            }
            wait_for_update(&mut updates, id, self.options.poll).await;
        }
    }

    /// A stream of the task's events after `after`, live, ending once the
    /// task has ended and every event was delivered.
    pub fn subscribe(
        self: &Arc<Self>,
        id: TaskId,
        after: u64,
    ) -> impl futures::Stream<Item = Result<EventRecord, Error>> + Send + 'static {
        use futures::StreamExt;
        futures::stream::unfold(
            (self.clone(), after, false),
            move |(tasks, after, failed)| async move {
                if failed {
                    return None;
                }
                match tasks.next_events(id, after).await {
                    Ok(batch) if batch.is_empty() => None,
                    Ok(batch) => {
                        let next = batch.last().map_or(after, |e| e.seq);
                        let items: Vec<Result<EventRecord, Error>> =
                            batch.into_iter().map(Ok).collect();
                        Some((futures::stream::iter(items), (tasks, next, false)))
                    }
                    Err(e) => Some((futures::stream::iter(vec![Err(e)]), (tasks, after, true))),
                }
            },
        )
        .flatten()
    }

    /// The task's notifications and their attempts.
    pub fn deliveries(&self, id: TaskId) -> Result<Vec<Delivery>, Error> {
        Ok(self.store.deliveries(id)?)
    }

    /// Queues the task's failed notifications again; returns how many.
    pub fn redeliver(&self, id: TaskId) -> Result<usize, Error> {
        let n = self.store.redeliver(id)?;
        self.wake_relay.notify_one();
        Ok(n)
    }

    /// The final notification of an ended task, as its sinks get it (`None`
    /// while it has not ended).
    pub fn notification(&self, id: TaskId) -> Result<Option<Notification>, Error> {
        Ok(crate::relay::worker::final_notification(
            &*self.store,
            self.relay(),
            id,
        )?)
    }
}

/// Whether the task's state changes before its end are notified (then a
/// claim queues a notification, and its end's may wait for it).
pub(super) fn announces_changes(spec: &TaskSpec) -> bool {
    spec.notify == crate::store::NotifyMode::StateChanges && !spec.notify_to.is_empty()
}

async fn wait_for_update(updates: &mut broadcast::Receiver<TaskId>, id: TaskId, poll: Duration) {
    // Another process may own the task: look at the store now and then.
    let _ = tokio::time::timeout(poll, updated(updates, id)).await;
}

/// Resolves when this host reports an update of task `id` (or may have
/// missed one).
pub(super) async fn updated(updates: &mut broadcast::Receiver<TaskId>, id: TaskId) {
    loop {
        match updates.recv().await {
            Ok(t) if t == id => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}
