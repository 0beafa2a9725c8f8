//! Watching every task at once: the newest tasks, then each change to any
//! of them, for live listings (the dashboard, `GET /v1/events`).
//!
//! Changes made on this host arrive at once through the service's update
//! channel; changes made by other hosts sharing the store (PostgreSQL
//! workers) are found by listing again every `poll` interval. Either way a
//! task is sent only when something a listing shows has changed.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::TaskService;
use crate::error::Error;
use crate::store::{StoreError, Task, TaskFilter, TaskId};

/// One item of [`TaskService::watch`].
#[derive(Clone, Debug)]
pub enum TaskChange {
    /// The task as stored now: new, or changed since it was last sent.
    Task(Box<Task>),
    /// Everything matching when the watch began was sent; what follows
    /// are changes.
    Ready,
    /// The task was deleted.
    Removed(TaskId),
}

/// What a listing shows of a task; a change in any of it is sent.
#[derive(Clone, PartialEq)]
struct Shown {
    state: crate::store::TaskState,
    attempt: u32,
    started_ms: Option<i64>,
    ended_ms: Option<i64>,
    owner: Option<String>,
    cancel_requested: bool,
    progress: Option<u32>,
    progress_message: Option<String>,
    events_dropped: u64,
}

impl Shown {
    fn of(t: &Task) -> Shown {
        Shown {
            state: t.state,
            attempt: t.attempt,
            started_ms: t.started_ms,
            ended_ms: t.ended_ms,
            owner: t.owner.clone(),
            cancel_requested: t.cancel_requested,
            progress: t.progress.map(f32::to_bits),
            progress_message: t.progress_message.clone(),
            events_dropped: t.events_dropped,
        }
    }
}

/// A watch's state between two sends.
struct Watch {
    tasks: Arc<TaskService>,
    filter: TaskFilter,
    updates: broadcast::Receiver<TaskId>,
    sent: HashMap<TaskId, Shown>,
    out: std::collections::VecDeque<TaskChange>,
    started: bool,
}

impl Watch {
    /// Whether `t` belongs in this watch.
    fn matches(&self, t: &Task) -> bool {
        let f = &self.filter;
        f.state.is_none_or(|s| s == t.state)
            && f.label
                .as_ref()
                .is_none_or(|l| t.spec.label.as_ref() == Some(l))
            && f.parent_session
                .as_ref()
                .is_none_or(|p| t.spec.parent_session.as_ref() == Some(p))
            && f.id_prefix()
                .is_none_or(|p| t.id.to_string().starts_with(&p))
    }

    /// Queues `t` when it is new or changed.
    fn offer(&mut self, t: Task) {
        if !self.matches(&t) {
            // It left the filter (e.g. a state filter): say so once.
            if self.sent.remove(&t.id).is_some() {
                self.out.push_back(TaskChange::Removed(t.id));
            }
            return;
        }
        let shown = Shown::of(&t);
        if self.sent.get(&t.id) != Some(&shown) {
            self.sent.insert(t.id, shown);
            self.out.push_back(TaskChange::Task(Box::new(t)));
        }
    }

    /// Lists the watched tasks again (oldest first) and queues changes.
    fn relist(&mut self) -> Result<(), Error> {
        let mut listed = self.tasks.list(&self.filter)?;
        listed.reverse();
        for t in listed {
            self.offer(t);
        }
        Ok(())
    }

    /// Looks at one task this host reported updated.
    fn look(&mut self, id: TaskId) -> Result<(), Error> {
        match self.tasks.store.get(id) {
            Ok(t) => self.offer(t),
            Err(StoreError::NotFound(_)) => {
                if self.sent.remove(&id).is_some() {
                    self.out.push_back(TaskChange::Removed(id));
                }
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Waits for the next change(s) and queues them.
    async fn next_batch(&mut self) -> Result<(), Error> {
        let poll = self.tasks.options.poll;
        while self.out.is_empty() {
            match tokio::time::timeout(poll, self.updates.recv()).await {
                Ok(Ok(id)) => {
                    self.look(id)?;
                    // Take whatever else is already waiting in one go.
                    while let Ok(id) = self.updates.try_recv() {
                        self.look(id)?;
                    }
                }
                // Missed some: list again.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => self.relist()?,
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    tokio::time::sleep(poll).await;
                    self.relist()?;
                }
            }
        }
        Ok(())
    }
}

impl TaskService {
    /// The tasks matching `filter` (the newest, up to its limit, sent oldest
    /// first), then [`TaskChange::Ready`], then every change to a task
    /// matching it, for as long as the stream is polled.
    pub fn watch(
        self: &Arc<Self>,
        filter: TaskFilter,
    ) -> impl futures::Stream<Item = Result<TaskChange, Error>> + Send + 'static {
        let watch = Watch {
            tasks: self.clone(),
            filter,
            // Subscribed before the first listing, so nothing falls between.
            updates: self.updates.subscribe(),
            sent: HashMap::new(),
            out: Default::default(),
            started: false,
        };
        futures::stream::unfold(Some(watch), |state| async move {
            let mut w = state?;
            if !w.started {
                w.started = true;
                if let Err(e) = w.relist() {
                    return Some((Err(e), None));
                }
                w.out.push_back(TaskChange::Ready);
            }
            if w.out.is_empty()
                && let Err(e) = w.next_batch().await
            {
                return Some((Err(e), None));
            }
            let item = w.out.pop_front()?;
            Some((Ok(item), Some(w)))
        })
    }
}
