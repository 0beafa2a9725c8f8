//! Background tasks on a [`Host`]: spawn, track, wait, cancel, and the
//! worker loop that runs them.
//!
//! A host with a task store attached ([`Host::with_tasks`]) accepts
//! [`Host::spawn`], which checks the skill and its grants, stores a `queued`
//! task and returns its id at once. [`Host::work`] claims queued (and
//! resumable interrupted) tasks up to a concurrency limit and runs them;
//! while a task runs, its host renews the task's lease, forwards its events
//! to the store in group commits, persists every checkpoint before the
//! guest's `save` returns, and stops the run when the task is cancelled or
//! its lease is lost (then it writes nothing more: another host owns the
//! task).
//!
//! The store is the source of truth: [`Host::wait`] and [`Host::events`]
//! read it, and are woken early by this host's own progress.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};

use super::model::{
    CleanupMode, NotifyMode, SCRATCH_GUEST, Task, TaskEvent, TaskFilter, TaskId, TaskSpec,
    TaskState,
};
use super::store::{Claim, Ending, EventRecord, StoreError, TaskStore, now_ms};
use crate::error::Error;
use crate::events::{Event, EventSink};
use crate::policy::{EffectivePolicy, Grants};
use crate::runtime::{Host, Outcome, RunRequest};
use crate::skill::SkillSource;

/// Most tasks claimed in one transaction.
const MAX_CLAIM_BATCH: usize = 64;

/// How a host runs background tasks.
#[derive(Clone, Debug)]
pub struct TaskOptions {
    /// Most tasks running at once on this host.
    pub concurrency: usize,
    /// How long a claim lasts without renewal; after that another host may
    /// take the task over.
    pub lease: Duration,
    /// How often a running task's lease is renewed (and its cancel flag read).
    pub heartbeat: Duration,
    /// How often an idle worker looks for work and expired leases.
    pub poll: Duration,
    /// How often buffered events are committed.
    pub flush: Duration,
    /// Where tasks' scratch directories are made (`<scratch>/<task id>`,
    /// read-write at `/scratch` in the guest, kept across a resume, deleted
    /// at the end with `cleanup = delete` and when the task is pruned);
    /// `None` gives tasks none.
    pub scratch: Option<PathBuf>,
    /// Where tasks' notifications go (sinks, defaults, retries).
    pub relay: crate::relay::Relay,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            concurrency: 4,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            flush: Duration::from_millis(50),
            scratch: None,
            relay: crate::relay::Relay::default(),
        }
    }
}

/// What to run in the background.
#[derive(Clone, Debug)]
pub struct SpawnRequest {
    /// Skill directory, manifest or component.
    pub skill: PathBuf,
    /// JSON input.
    pub input: String,
    /// What the operator grants.
    pub grants: Grants,
    /// Free-form label.
    pub label: Option<String>,
    /// The agent session that asked for it.
    pub parent_session: Option<String>,
    /// Scratch directory handling.
    pub cleanup: CleanupMode,
    /// Notification handling.
    pub notify: NotifyMode,
    /// The relay sinks to notify, by name; none means the host's defaults.
    pub notify_to: Vec<String>,
    /// Accept it even if some requested capabilities were not granted.
    pub partial: bool,
    /// Accept a manifest that pins no digest.
    pub allow_unpinned: bool,
}

impl SpawnRequest {
    /// A request for `skill` with `input`, nothing granted, defaults else.
    pub fn new(skill: impl Into<PathBuf>, input: impl Into<String>) -> Self {
        SpawnRequest {
            skill: skill.into(),
            input: input.into(),
            grants: Grants::default(),
            label: None,
            parent_session: None,
            cleanup: CleanupMode::Keep,
            notify: NotifyMode::DoneOnly,
            notify_to: Vec::new(),
            partial: false,
            allow_unpinned: false,
        }
    }
}

/// The task side of a host.
pub(crate) struct TaskRuntime {
    store: Arc<dyn TaskStore>,
    owner: String,
    options: TaskOptions,
    wake_worker: Notify,
    /// Wakes the delivery worker: notifications may be due.
    pub(crate) wake_relay: Notify,
    updates: broadcast::Sender<TaskId>,
    cancels: Mutex<HashMap<TaskId, watch::Sender<bool>>>,
    /// Set while no worker runs: an ending task then claims no successor.
    stopping: AtomicBool,
    /// The concurrency limit: a running task holds one permit.
    slots: Arc<Semaphore>,
    /// Tasks claimed by `spawn` itself (a free slot and an empty queue), for
    /// the worker to run.
    handoff: mpsc::UnboundedSender<Handoff>,
    handed: tokio::sync::Mutex<mpsc::UnboundedReceiver<Handoff>>,
    /// Notifications a task's end leased to this host, for its delivery
    /// worker.
    pub(crate) to_deliver: mpsc::UnboundedSender<Handed>,
    pub(crate) delivering: tokio::sync::Mutex<mpsc::UnboundedReceiver<Handed>>,
}

/// A claimed task and the slot it runs in.
type Handoff = (Claim, OwnedSemaphorePermit);

/// A notification leased to this host by its task's end, with the task as
/// it ended.
pub(crate) type Handed = (crate::relay::Delivery, Arc<Task>);

impl TaskRuntime {
    pub(crate) fn new(store: Arc<dyn TaskStore>, options: TaskOptions) -> TaskRuntime {
        let (handoff, handed) = mpsc::unbounded_channel();
        let (to_deliver, delivering) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        TaskRuntime {
            store,
            owner: format!("{}:{}:{}", host.trim(), std::process::id(), TaskId::new()),
            options,
            wake_worker: Notify::new(),
            wake_relay: Notify::new(),
            updates: broadcast::channel(1024).0,
            cancels: Mutex::default(),
            stopping: AtomicBool::new(true),
            slots,
            handoff,
            handed: tokio::sync::Mutex::new(handed),
            to_deliver,
            delivering: tokio::sync::Mutex::new(delivering),
        }
    }
}

impl TaskRuntime {
    pub(crate) fn store(&self) -> Arc<dyn TaskStore> {
        self.store.clone()
    }

    pub(crate) fn relay(&self) -> &crate::relay::Relay {
        &self.options.relay
    }

    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }
}

fn store_err(e: StoreError) -> Error {
    Error::Store(e.to_string())
}

impl Host {
    fn tasks(&self) -> Result<&TaskRuntime, Error> {
        self.task_runtime().ok_or_else(|| {
            Error::Store("this host has no task store (see Host::with_tasks)".into())
        })
    }

    /// The id this host uses as a lease owner.
    pub fn owner_id(&self) -> Option<&str> {
        self.task_runtime().map(|t| t.owner.as_str())
    }

    /// Checks `request` (skill, digest, grants, input, component) and stores
    /// it as a queued task; returns at once with its id.
    pub fn spawn(&self, request: SpawnRequest) -> Result<TaskId, Error> {
        self.spawn_task(request).map(|t| t.id)
    }

    /// [`spawn`](Self::spawn), returning the task as stored.
    pub fn spawn_task(&self, request: SpawnRequest) -> Result<Task, Error> {
        let rt = self.tasks()?;
        if request.cleanup == CleanupMode::Delete && rt.options.scratch.is_none() {
            // Refused rather than accepted and ignored.
            return Err(Error::Input(
                "cleanup `delete` needs scratch directories, and this host keeps none \
                 (see TaskOptions::scratch)"
                    .into(),
            ));
        }
        let source = SkillSource::open(&request.skill, request.allow_unpinned)?;
        let (policy, report) = EffectivePolicy::compute(source.manifest.as_ref(), &request.grants);
        if report.not_granted().count() > 0 && !request.partial {
            return Err(Error::NotGranted(format!(
                "{report}(grant them, or spawn with partial grants)"
            )));
        }
        if rt.options.scratch.is_some()
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
        let notify_to = rt.options.relay.resolve(&request.notify_to)?;
        // Compile and link now, so a broken component is refused here and
        // not discovered by a worker later.
        self.prepare(&source)?;
        let spec = TaskSpec {
            skill: source
                .manifest_path
                .as_ref()
                .unwrap_or(&source.component_path)
                .canonicalize()
                .map_err(|e| Error::io(&request.skill, e))?
                .to_string_lossy()
                .into_owned(),
            skill_name: source.name.clone(),
            digest: source.digest.clone(),
            input: request.input,
            timeout: policy.limits.timeout,
            policy,
            label: request.label,
            parent_session: request.parent_session,
            cleanup: request.cleanup,
            notify: request.notify,
            notify_to,
            resume: source
                .manifest
                .as_ref()
                .map(|m| m.skill.resume)
                .unwrap_or(super::ResumePolicy::Fail),
            scratch: rt.options.scratch.clone(),
        };
        // With a free slot and a running worker, the task is claimed in the
        // same transaction that stores it (one commit less before it runs).
        let slot = (!rt.stopping.load(Ordering::SeqCst))
            .then(|| rt.slots.clone().try_acquire_owned().ok())
            .flatten();
        let (task, claim) = match &slot {
            Some(_) => rt
                .store
                .create_and_claim(spec, &rt.owner, rt.options.lease)
                .map_err(store_err)?,
            None => (rt.store.create(spec).map_err(store_err)?, None),
        };
        match (claim, slot) {
            (Some(claim), Some(permit)) => {
                let task = claim.task.clone();
                // The worker runs it (or its lease expires and it is resumed
                // if no worker ever does).
                let _ = rt.handoff.send((claim, permit));
                if announces_changes(&task.spec) {
                    rt.wake_relay.notify_one();
                }
                Ok(task)
            }
            _ => {
                rt.wake_worker.notify_one();
                Ok(task)
            }
        }
    }

    /// One task as stored.
    pub fn task(&self, id: TaskId) -> Result<Task, Error> {
        self.tasks()?.store.get(id).map_err(store_err)
    }

    /// Interrupts, at once, the tasks a dead host `owner` left running
    /// (resumed or failed by policy next); returns their ids.
    ///
    /// Programs those tasks started and that outlived their host are killed
    /// first, so a resumed task never races its own leftovers or repeats
    /// their side effects.
    pub fn recover_owner(&self, owner: &str) -> Result<Vec<TaskId>, Error> {
        let rt = self.tasks()?;
        let ids = rt.store.recover(now_ms(), Some(owner)).map_err(store_err)?;
        kill_leftovers(&ids);
        self.clean_ended(&ids);
        rt.wake_worker.notify_one();
        rt.wake_relay.notify_one();
        Ok(ids)
    }

    /// Deletes tasks that ended more than `older_than` ago, with their
    /// events and checkpoints; returns how many.
    pub fn prune_tasks(&self, older_than: Duration) -> Result<u64, Error> {
        let rt = self.tasks()?;
        let before = now_ms() - older_than.as_millis() as i64;
        let pruned = rt.store.prune(before).map_err(store_err)?;
        for (_, dir) in &pruned {
            remove_scratch(dir.as_deref());
        }
        Ok(pruned.len() as u64)
    }

    /// Tasks matching `filter`, newest first.
    pub fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, Error> {
        self.tasks()?.store.list(filter).map_err(store_err)
    }

    /// Cancels a task: a queued one at once, a running one as soon as its
    /// host sees the request (at once when that is this host).
    pub fn cancel(&self, id: TaskId, reason: &str) -> Result<Task, Error> {
        let rt = self.tasks()?;
        let task = rt.store.request_cancel(id, reason).map_err(store_err)?;
        if let Some(tx) = rt
            .cancels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            let _ = tx.send(true);
        }
        let _ = rt.updates.send(id);
        rt.wake_relay.notify_one();
        Ok(task)
    }

    /// Waits until the task is in a terminal state and returns it.
    pub async fn wait(&self, id: TaskId) -> Result<Task, Error> {
        let rt = self.tasks()?;
        loop {
            let mut updates = rt.updates.subscribe();
            let task = rt.store.get(id).map_err(store_err)?;
            if task.state.is_terminal() {
                return Ok(task);
            }
            wait_for_update(&mut updates, id, rt.options.poll).await;
        }
    }

    /// The task's events after `after` (at most 500), without waiting.
    pub fn events_now(&self, id: TaskId, after: u64) -> Result<Vec<EventRecord>, Error> {
        self.tasks()?
            .store
            .events(id, after, 500)
            .map_err(store_err)
    }

    /// The task's events after `after`, waiting for new ones when there are
    /// none yet; an empty answer means the task ended and all were read.
    pub async fn events(&self, id: TaskId, after: u64) -> Result<Vec<EventRecord>, Error> {
        let rt = self.tasks()?;
        loop {
            let mut updates = rt.updates.subscribe();
            let events = rt.store.events(id, after, 500).map_err(store_err)?;
            if !events.is_empty() {
                return Ok(events);
            }
            if rt.store.get(id).map_err(store_err)?.state.is_terminal() {
                // Events of the final transition are committed with it.
                return rt.store.events(id, after, 500).map_err(store_err);
            }
            wait_for_update(&mut updates, id, rt.options.poll).await;
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
            move |(host, after, failed)| async move {
                if failed {
                    return None;
                }
                match host.events(id, after).await {
                    Ok(batch) if batch.is_empty() => None,
                    Ok(batch) => {
                        let next = batch.last().map_or(after, |e| e.seq);
                        let items: Vec<Result<EventRecord, Error>> =
                            batch.into_iter().map(Ok).collect();
                        Some((futures::stream::iter(items), (host, next, false)))
                    }
                    Err(e) => Some((futures::stream::iter(vec![Err(e)]), (host, after, true))),
                }
            },
        )
        .flatten()
    }

    /// Runs background tasks until `shutdown` becomes true (or its sender is
    /// dropped): claims work up to the concurrency limit, runs the tasks
    /// [`spawn`](Self::spawn) claimed itself, and turns tasks whose host died
    /// (expired leases) into interrupted ones, which are resumed or failed by
    /// policy. Meanwhile it delivers tasks' notifications to their relay
    /// sinks (see [`crate::relay`]). One worker per host: a second call
    /// waits for the first to return. Tasks already running when it returns
    /// run to their end.
    pub async fn work(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let rt = self.tasks()?;
        let slots = rt.slots.clone();
        let mut handed = rt.handed.lock().await;
        // Another host sharing the store may queue work: it wakes us.
        let mut store_wake = rt.store.task_wake_ups();
        let ids = rt.store.recover(now_ms(), None).map_err(store_err)?;
        kill_leftovers(&ids);
        self.clean_ended(&ids);
        rt.stopping.store(false, Ordering::SeqCst);
        struct Stopping<'a>(&'a AtomicBool);
        impl Drop for Stopping<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stopping = Stopping(&rt.stopping);
        // Notifications are delivered while the worker runs.
        let relay = tokio::spawn(self.clone().relay(shutdown.clone()));
        struct Abort(tokio::task::JoinHandle<()>);
        impl Drop for Abort {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let mut relay = Abort(relay);
        let _recovery = Abort(tokio::spawn(self.clone().recover_expired(shutdown.clone())));
        // `return` leaves this block: the loop ends, the delivery worker
        // finishes its attempts in flight (each within its time limit).
        let result: Result<(), Error> = async {
            loop {
                if *shutdown.borrow() {
                    return Ok(());
                }
                let permit = tokio::select! {
                    biased;
                    // A dropped sender means nobody can stop us any more: stop.
                    r = shutdown.changed() => if r.is_err() { return Ok(()) } else { continue },
                    Some((claim, permit)) = handed.recv() => {
                        self.start(claim, permit);
                        continue;
                    }
                    p = slots.clone().acquire_owned() => p.expect("never closed"),
                };
                // Take every free slot at once: one claim transaction for many
                // tasks.
                let mut permits = vec![permit];
                while permits.len() < MAX_CLAIM_BATCH {
                    match slots.clone().try_acquire_owned() {
                        Ok(p) => permits.push(p),
                        Err(_) => break,
                    }
                }
                let (store, owner, lease, want) = (
                    rt.store.clone(),
                    rt.owner.clone(),
                    rt.options.lease,
                    permits.len(),
                );
                let claimed =
                    tokio::task::spawn_blocking(move || store.claim_many(&owner, want, lease))
                        .await
                        .unwrap_or_else(|e| Err(StoreError::Backend(format!("claiming: {e}"))));
                match claimed {
                    Ok(claims) if !claims.is_empty() => {
                        if claims.iter().any(|c| announces_changes(&c.task.spec)) {
                            rt.wake_relay.notify_one();
                        }
                        let all = claims.len() == want;
                        for claim in claims {
                            let permit = permits.pop().expect("one permit per claim");
                            self.start(claim, permit);
                        }
                        drop(permits);
                        // A short batch drained the queue: wait for a spawn.
                        if !all
                            && self
                                .idle(rt, &mut shutdown, &mut handed, &mut store_wake)
                                .await
                        {
                            return Ok(());
                        }
                    }
                    Ok(_) => {
                        drop(permits);
                        if self
                            .idle(rt, &mut shutdown, &mut handed, &mut store_wake)
                            .await
                        {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        drop(permits);
                        tracing::warn!(error = %e, "claiming tasks failed; retrying");
                        tokio::time::sleep(rt.options.poll).await;
                    }
                }
            }
        }
        .await;
        let limit = rt.options.relay.retry.timeout + Duration::from_secs(1);
        let _ = tokio::time::timeout(limit, &mut relay.0).await;
        result
    }

    /// Runs a claimed task in its slot.
    fn start(self: &Arc<Self>, claim: Claim, permit: OwnedSemaphorePermit) {
        let host = self.clone();
        tokio::spawn(async move {
            host.execute(claim).await;
            drop(permit);
        });
    }

    /// Waits for a spawn, a poll interval (then recovers expired leases) or
    /// shutdown; true when the worker must stop.
    async fn idle(
        self: &Arc<Self>,
        rt: &TaskRuntime,
        shutdown: &mut watch::Receiver<bool>,
        handed: &mut mpsc::UnboundedReceiver<Handoff>,
        store_wake: &mut Option<watch::Receiver<u64>>,
    ) -> bool {
        tokio::select! {
            biased;
            r = shutdown.changed() => r.is_err() || *shutdown.borrow(),
            Some((claim, permit)) = handed.recv() => {
                self.start(claim, permit);
                false
            }
            () = rt.wake_worker.notified() => false,
            () = changed(store_wake) => false,
            // Look again: another process may have queued work.
            () = tokio::time::sleep(rt.options.poll) => false,
        }
    }

    /// Every poll interval, busy or not, turns tasks whose lease expired
    /// (their host died or was cut off) into interrupted ones, to be
    /// resumed by the next claim here or on another host sharing the store.
    async fn recover_expired(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let rt = self.tasks().expect("only called by work");
        loop {
            tokio::select! {
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
                () = tokio::time::sleep(rt.options.poll) => {}
            }
            let store = rt.store.clone();
            match tokio::task::spawn_blocking(move || store.recover(now_ms(), None)).await {
                Ok(Ok(ids)) if !ids.is_empty() => {
                    kill_leftovers(&ids);
                    self.clean_ended(&ids);
                    rt.wake_relay.notify_one();
                    rt.wake_worker.notify_one();
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "recovering expired leases failed"),
                Err(e) => tracing::warn!(error = %e, "recovering expired leases failed"),
            }
        }
    }

    /// Runs a claimed task, then, in the same slot, each task claimed by the
    /// transaction that ended the previous one.
    async fn execute(self: Arc<Self>, claim: Claim) {
        let mut next = Some(claim);
        while let Some(claim) = next {
            next = self.clone().execute_one(claim).await;
        }
    }

    async fn execute_one(self: Arc<Self>, claim: Claim) -> Option<Claim> {
        let rt = self.tasks().expect("only called by work");
        let id = claim.task.id;
        let claim = Arc::new(claim);
        let (cancel_tx, cancel_rx) = watch::channel(claim.task.cancel_requested);
        rt.cancels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, cancel_tx.clone());
        let lost = Arc::new(AtomicBool::new(false));
        let sink = Arc::new(TaskSink {
            store: rt.store.clone(),
            claim: claim.clone(),
            pending: Mutex::default(),
            dirty: Notify::new(),
            lost: lost.clone(),
            cancel: cancel_tx.clone(),
            updates: rt.updates.clone(),
            retry_for: rt.options.lease,
        });
        let background = tokio::spawn(keep_alive(
            rt.store.clone(),
            claim.clone(),
            sink.clone(),
            rt.options.clone(),
        ));

        let result = self.run_claimed(&claim, sink.clone(), cancel_rx).await;
        background.abort();
        rt.cancels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let (state, outcome, reason) = match result {
            Ok((outcome, duration_ms)) => {
                let state = match &outcome {
                    Outcome::Succeeded { .. } => TaskState::Succeeded,
                    Outcome::TimedOut { .. } => TaskState::TimedOut,
                    Outcome::Cancelled => TaskState::Cancelled,
                    Outcome::Failed { .. }
                    | Outcome::LimitExceeded { .. }
                    | Outcome::Crashed { .. } => TaskState::Failed,
                };
                let mut json = serde_json::to_value(&outcome).unwrap_or_default();
                json["duration_ms"] = duration_ms.into();
                let reason = match &outcome {
                    Outcome::Succeeded { .. } => "the skill returned its summary".to_string(),
                    Outcome::Failed { message, .. }
                    | Outcome::LimitExceeded { message, .. }
                    | Outcome::Crashed { message } => message.clone(),
                    Outcome::TimedOut { limit_ms } => format!("timed out after {limit_ms} ms"),
                    Outcome::Cancelled => "cancelled on request".to_string(),
                };
                (state, json, reason)
            }
            Err(e) => (
                TaskState::Failed,
                serde_json::json!({ "outcome": "failed", "kind": "failed", "message": e.to_string() }),
                e.to_string(),
            ),
        };
        let store = rt.store.clone();
        let scratch = (claim.task.spec.cleanup == CleanupMode::Delete)
            .then(|| claim.task.scratch_dir())
            .flatten();
        let running = !rt.stopping.load(Ordering::SeqCst);
        let next_lease = running.then_some(rt.options.lease);
        // While the worker (and with it the delivery worker) runs, the end's
        // notifications come back leased to this host: sent at once.
        let deliver = running.then(|| rt.options.relay.lease());
        let lease = rt.options.lease;
        let ended = tokio::task::spawn_blocking(move || {
            let events = sink.take();
            if lost.load(Ordering::SeqCst) {
                tracing::warn!(task = %id, "lease lost; leaving the task to its new owner");
                return Ok::<_, StoreError>(None);
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
            remove_scratch(scratch.as_deref());
            Ok(Some(ended))
        })
        .await;
        let _ = rt.updates.send(id);
        match ended {
            Ok(Ok(None)) => None,
            Ok(Ok(Some(ended))) => {
                let task = Arc::new(ended.task);
                for d in ended.deliveries {
                    let _ = rt.to_deliver.send((d, task.clone()));
                }
                // Notifications it queued but could not hand over (one of
                // the task's earlier ones is still on its way) go later.
                if announces_changes(&task.spec) {
                    rt.wake_relay.notify_one();
                }
                if let Some(n) = &ended.next {
                    let _ = rt.updates.send(n.task.id);
                }
                ended.next
            }
            Ok(Err(e)) => {
                tracing::warn!(task = %id, error = %e, "recording the end of a task failed");
                None
            }
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "recording the end of a task failed");
                None
            }
        }
    }

    async fn run_claimed(
        &self,
        claim: &Arc<Claim>,
        sink: Arc<TaskSink>,
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
        let prepared = self.prepare(&source)?;
        let mut policy = spec.policy.clone();
        if let Some(dir) = claim.task.scratch_dir() {
            make_private_dir(&dir)?;
            policy.preopens.push(crate::policy::Preopen {
                guest: SCRATCH_GUEST.into(),
                host: dir,
                access: crate::policy::Access::ReadWrite,
            });
        }
        let rt = self.tasks()?;
        let store = rt.store.clone();
        let checkpoints = {
            let (store, id, lease) = (store.clone(), claim.task.id, rt.options.lease);
            tokio::task::spawn_blocking(move || retrying(lease, || store.checkpoints(id)))
                .await
                .map_err(|e| Error::Engine(format!("loading checkpoints: {e}")))?
                .map_err(store_err)?
        };
        let persist = {
            let sink = sink.clone();
            Arc::new(move |key: &str, value: &[u8]| sink.save_checkpoint(key, value))
        };
        let report = self
            .run(
                &prepared,
                RunRequest {
                    input: spec.input.clone(),
                    policy,
                    events: sink,
                    checkpoints,
                    persist_checkpoint: Some(persist),
                    cancel: Some(cancel),
                    tag: Some(claim.task.id.to_string()),
                },
            )
            .await?;
        Ok((report.outcome, report.duration_ms))
    }
}

impl Host {
    /// Deletes the scratch directories of `ids` that ended (failed or
    /// cancelled by recovery) with `cleanup = delete`.
    fn clean_ended(&self, ids: &[TaskId]) {
        let Ok(rt) = self.tasks() else { return };
        for id in ids {
            if let Ok(t) = rt.store.get(*id)
                && t.state.is_terminal()
                && t.spec.cleanup == CleanupMode::Delete
            {
                remove_scratch(t.scratch_dir().as_deref());
            }
        }
    }
}

/// Whether the task's state changes before its end are notified (then a
/// claim queues a notification, and its end's may wait for it).
fn announces_changes(spec: &TaskSpec) -> bool {
    spec.notify == NotifyMode::StateChanges && !spec.notify_to.is_empty()
}

/// Creates a task's scratch directory, private to this user.
fn make_private_dir(dir: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| Error::io(parent, e))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        // A resumed task finds what its earlier attempt left.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
            if !meta.is_dir() {
                return Err(Error::Grant(format!(
                    "scratch directory {} is not a directory",
                    dir.display()
                )));
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(dir, e))
        }
        Err(e) => Err(Error::io(dir, e)),
    }
}

fn remove_scratch(dir: Option<&std::path::Path>) {
    if let Some(dir) = dir
        && let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "deleting a task's scratch directory failed");
    }
}

/// Resolves when `wake` changes; never for `None` or a closed channel.
pub(crate) async fn changed(wake: &mut Option<watch::Receiver<u64>>) {
    if let Some(w) = wake
        && w.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// Runs `write` until the store takes it or refuses it for a reason other
/// than a backend failure (the database restarting, a broken connection),
/// for at most `within`; backs off between tries.
fn retrying<T>(
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

/// Kills what interrupted tasks' programs left running on this machine.
fn kill_leftovers(ids: &[TaskId]) {
    for id in ids {
        let n = crate::caps::exec::kill_tagged(&id.to_string());
        if n > 0 {
            tracing::warn!(task = %id, processes = n, "killed programs an interrupted task left behind");
        }
    }
}

async fn wait_for_update(updates: &mut broadcast::Receiver<TaskId>, id: TaskId, poll: Duration) {
    let wait = async {
        loop {
            match updates.recv().await {
                Ok(t) if t == id => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    };
    // Another process may own the task: look at the store now and then.
    let _ = tokio::time::timeout(poll, wait).await;
}

/// Renews the lease, commits buffered events, and notices cancellation
/// requested through the store (by another process).
async fn keep_alive(
    store: Arc<dyn TaskStore>,
    claim: Arc<Claim>,
    sink: Arc<TaskSink>,
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

/// Receives a running task's events: buffers them and commits them in
/// groups; a checkpoint commits the buffer first, so order is kept.
struct TaskSink {
    store: Arc<dyn TaskStore>,
    claim: Arc<Claim>,
    pending: Mutex<Vec<TaskEvent>>,
    /// Signalled when the first event is buffered after a commit.
    dirty: Notify,
    lost: Arc<AtomicBool>,
    cancel: watch::Sender<bool>,
    updates: broadcast::Sender<TaskId>,
    /// How long a write the store failed to take is retried (the lease: past
    /// it, another host may own the task).
    retry_for: Duration,
}

impl TaskSink {
    fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
        let _ = self.cancel.send(true);
    }

    fn commit(&self, pending: &mut Vec<TaskEvent>) -> Result<(), StoreError> {
        if pending.is_empty() || self.lost.load(Ordering::SeqCst) {
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
    fn take(&self) -> Vec<TaskEvent> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn flush(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = self.commit(&mut pending) {
            tracing::warn!(task = %self.claim.task.id, error = %e, "storing events failed");
        }
    }

    fn save_checkpoint(&self, key: &str, value: &[u8]) -> Result<(), String> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        retrying(self.retry_for, || self.commit(&mut pending)).map_err(|e| e.to_string())?;
        if self.lost.load(Ordering::SeqCst) {
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

impl EventSink for TaskSink {
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
            } => TaskEvent::Audit {
                capability: capability.into(),
                detail,
                allowed,
                reason,
            },
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
