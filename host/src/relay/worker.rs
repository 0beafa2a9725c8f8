//! The delivery worker: claims due notifications, sends them, records each
//! attempt, and sleeps until the next one is due or a task changes state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::{Attempt, Change, Delivery, DeliveryError, Notification, Relay, Verdict};
use crate::store::{StoreError, Task, TaskEvent, TaskId, TaskStore, now_ms};

/// Most notifications in flight at once.
const MAX_IN_FLIGHT: usize = 32;

/// Sleep after a claim found nothing that looked due.
const RECHECK: Duration = Duration::from_millis(250);

/// Longest sleep of an idle worker: notifications another host queued are
/// noticed within it.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// A notification leased to this host by its task's end, with the task as
/// it ended: sent at once, without a claim of its own.
pub(crate) type LeasedDelivery = (Delivery, Arc<Task>);

/// The delivery worker of one host: claims due notifications from the
/// store's outbox, sends them through the relay's sinks and records each
/// attempt.
pub(crate) struct DeliveryWorker {
    /// The store whose outbox it serves.
    pub(crate) store: Arc<dyn TaskStore>,
    /// The sinks, defaults and retry policy.
    pub(crate) relay: Relay,
    /// The lease owner it claims as.
    pub(crate) owner: String,
    /// Signalled when notifications may be due (a task changed state).
    pub(crate) wake: Arc<Notify>,
}

impl DeliveryWorker {
    /// Delivers notifications until `shutdown`: those `leased` hands over
    /// and those due in the store.
    pub(crate) async fn run(
        &self,
        leased: &mut mpsc::UnboundedReceiver<LeasedDelivery>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (store, relay) = (&self.store, &self.relay);
        let lease = relay.lease();
        let mut in_flight = JoinSet::new();
        // Another host sharing the store may queue or release notifications.
        let mut outbox_wake = store.outbox_wake_ups();
        // Whether to look in the store for due notifications: not for those
        // a task's end handed us, which need no look.
        let mut claim = true;
        // When to look again at the latest (a retry falls due, a lease runs
        // out, or another host's notifications appear).
        let mut next_claim = tokio::time::Instant::now();
        // Whether the last claim took all it could (more may be due).
        let mut full = false;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if claim {
                claim = false;
                let wait;
                (wait, full) = self.claim_due(lease, &mut in_flight).await;
                next_claim = tokio::time::Instant::now() + wait;
                if wait.is_zero() {
                    claim = true;
                    continue;
                }
            }
            tokio::select! {
                biased;
                r = shutdown.changed() => if r.is_err() { break },
                // Leased to us by a task's end: send it now.
                Some((d, task)) = leased.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                    in_flight.spawn(deliver(store.clone(), relay.clone(), d, Some(task)));
                }
                () = self.wake.notified() => claim = true,
                () = crate::store::woken(&mut outbox_wake) => claim = true,
                // A finished attempt may free room for a full claim, unblock
                // the next change of its sink, or schedule a retry.
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    claim = done.unwrap_or(true) || full;
                }
                () = tokio::time::sleep_until(next_claim) => claim = true,
            }
        }
        // Attempts still running finish (their rows stay leased to us until
        // they are recorded, or until a next host releases them).
        while in_flight.join_next().await.is_some() {}
    }

    /// Claims what is due and starts sending it; returns how long to wait
    /// before looking again (zero: look again now), and whether the claim
    /// was full.
    async fn claim_due(&self, lease: Duration, in_flight: &mut JoinSet<bool>) -> (Duration, bool) {
        let (store, relay) = (&self.store, &self.relay);
        // A read first: claiming is a write, and most looks find
        // nothing due.
        let due = {
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.next_delivery_ms()).await {
                Ok(Ok(due)) => due,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reading the outbox failed; retrying");
                    None
                }
                Err(_) => None,
            }
        };
        let now = now_ms();
        let free = MAX_IN_FLIGHT - in_flight.len();
        let wait = match due {
            Some(at) if at > now => Duration::from_millis((at - now) as u64).min(IDLE_POLL),
            _ => IDLE_POLL,
        };
        if free == 0 || due.is_none_or(|at| at > now) {
            return (wait, free == 0);
        }
        let (s, owner) = (store.clone(), self.owner.clone());
        let claimed = tokio::task::spawn_blocking(move || s.claim_deliveries(&owner, free, lease))
            .await
            .unwrap_or_else(|e| Err(StoreError::Backend(e.to_string())));
        match claimed {
            Ok(ds) if !ds.is_empty() => {
                let full = ds.len() == free;
                for d in ds {
                    in_flight.spawn(deliver(store.clone(), relay.clone(), d, None));
                }
                // A full claim may have left more: look again once a
                // finished attempt frees room; else look again now.
                if full {
                    (RECHECK, true)
                } else {
                    (Duration::ZERO, false)
                }
            }
            // Due, yet another owner took it first: look again soon.
            Ok(_) => (RECHECK, false),
            Err(e) => {
                tracing::warn!(error = %e, "claiming notifications failed; retrying");
                (RECHECK, false)
            }
        }
    }
}

/// The final notification of an ended task, as its sinks get it (`None`
/// while it has not ended).
pub(crate) fn final_notification(
    store: &dyn TaskStore,
    relay: &Relay,
    id: TaskId,
) -> Result<Option<Notification>, StoreError> {
    let task = store.get(id)?;
    if !task.state.is_terminal() {
        return Ok(None);
    }
    let relayed = store
        .deliveries(id)?
        .into_iter()
        .find(|d| d.to.is_terminal())
        .map(|d| d.change());
    let change = match relayed {
        Some(c) => c,
        None => final_change(store, id)?,
    };
    Ok(Some(Notification::build(&task, &change, relay, None)))
}

/// The terminal state change of a task that was not relayed, from its
/// events.
fn final_change(store: &dyn TaskStore, id: TaskId) -> Result<Change, StoreError> {
    let mut last = None;
    let mut after = 0;
    loop {
        let page = store.events(id, after, 500)?;
        let Some(end) = page.last() else { break };
        after = end.seq;
        for e in page {
            if let TaskEvent::State { from, to, reason } = e.event
                && to.is_terminal()
            {
                last = Some(Change {
                    seq: e.seq,
                    from,
                    to,
                    reason,
                    at_ms: e.at_ms,
                });
            }
        }
    }
    last.ok_or_else(|| StoreError::Conflict(format!("task {id} ended without a state event")))
}

/// What a failed attempt (the `attempts`th) decides, at `now`: give up
/// when the failure is permanent or the next try would fall past the
/// deadline of the window opened at `window_ms`, else retry after the
/// receiver's `Retry-After` (at most `retry.max`) or the backoff.
fn settle(
    retry: &super::RetryPolicy,
    attempts: u32,
    window_ms: i64,
    e: &DeliveryError,
    now: i64,
) -> (Verdict, String) {
    let mut detail = e.message.clone();
    if e.permanent {
        return (Verdict::Failed, detail);
    }
    let delay = e
        .retry_after
        .map(|r| r.min(retry.max))
        .unwrap_or_else(|| retry.delay(attempts));
    let next = now + delay.as_millis() as i64;
    if next > window_ms + retry.deadline.as_millis() as i64 {
        // The deadline counts from the window's start (its queuing or its
        // last redelivery); the attempts, from the first.
        detail.push_str(&format!(
            " (gave up: not accepted within the deadline of {}; {attempts} attempt{} in all)",
            crate::units::HumanDuration(retry.deadline),
            if attempts == 1 { "" } else { "s" }
        ));
        return (Verdict::Failed, detail);
    }
    (Verdict::Retry(next), detail)
}

/// Builds the notification from its task and hands it to its sink.
async fn send(
    relay: &Relay,
    d: &Delivery,
    task: std::result::Result<Arc<Task>, StoreError>,
    approval: Option<crate::store::Approval>,
) -> Result<super::Delivered, DeliveryError> {
    match (task, relay.sink(&d.sink)) {
        (Err(e), _) => Err(DeliveryError::transient(format!("reading the task: {e}"))),
        (Ok(_), None) => Err(DeliveryError::transient(format!(
            "this host has no sink named {:?} (it was configured when the task was spawned); \
             it is retried until the deadline",
            d.sink
        ))),
        (Ok(task), Some(sink)) => {
            let n = Notification::build(&task, &d.change(), relay, approval);
            // A sink has its own limit; this one guards against a sink that
            // never returns.
            match tokio::time::timeout(
                relay.retry.timeout + Duration::from_secs(1),
                sink.deliver(&n),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(DeliveryError::transient("the sink did not return in time")),
            }
        }
    }
}

/// One attempt: build (from `task` when the caller has it), send, record.
/// Returns whether the worker should look in the store after it: not when
/// a task's final notification was delivered (nothing of its sink waits
/// for it, and nothing is to be retried).
async fn deliver(
    store: Arc<dyn TaskStore>,
    relay: Relay,
    d: Delivery,
    task: Option<Arc<Task>>,
) -> bool {
    let at_ms = now_ms();
    let started = Instant::now();
    let task = match task {
        Some(t) => Ok(t),
        None => {
            let store = store.clone();
            let id = d.task_id;
            tokio::task::spawn_blocking(move || store.get(id).map(Arc::new))
                .await
                .unwrap_or_else(|e| Err(StoreError::Backend(e.to_string())))
        }
    };
    let approval = match (&task, d.to) {
        (Ok(_), crate::store::TaskState::AwaitingApproval) => {
            let store = store.clone();
            let (id, seq) = (d.task_id, d.seq);
            tokio::task::spawn_blocking(move || store.approvals(id))
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|all| all.into_iter().find(|a| a.seq == seq))
        }
        _ => None,
    };
    let skipped = match (&task, relay.filter(&d.sink)) {
        (Ok(t), Some(filter)) => filter.refuses(t, d.to),
        _ => None,
    };
    let attempts = d.attempts + 1;
    let span = tracing::info_span!(
        "task.deliver",
        skillbox.task.id = %d.task_id,
        skillbox.sink = %d.sink,
        skillbox.change = %d.to,
        skillbox.attempt = attempts,
        skillbox.outcome = tracing::field::Empty,
    );
    if let Ok(t) = &task {
        crate::telemetry::continue_trace(&span, t.spec.trace.as_deref());
    }
    let (attempt, verdict) = match skipped {
        Some(why) => {
            tracing::debug!(task = %d.task_id, sink = %d.sink, reason = %why, "notification skipped");
            (
                Attempt {
                    at_ms,
                    duration_ms: 0,
                    status: None,
                    detail: Some(why),
                    ok: false,
                },
                Verdict::Skipped,
            )
        }
        None => {
            let result = send(&relay, &d, task, approval)
                .instrument(span.clone())
                .await;
            let duration_ms = started.elapsed().as_millis() as u64;
            sent(&relay, &d, result, at_ms, duration_ms, attempts)
        }
    };
    let outcome = match verdict {
        Verdict::Delivered => "delivered",
        Verdict::Retry(_) => "retry",
        Verdict::Failed => "failed",
        Verdict::Skipped => "skipped",
    };
    crate::metrics::metrics().attempt(&d.sink, outcome);
    span.record("skillbox.outcome", outcome);
    drop(span);
    let id = d.id;
    let quiet = verdict == Verdict::Delivered && d.to.is_terminal();
    let recorded =
        tokio::task::spawn_blocking(move || store.record_attempt(id, &attempt, verdict)).await;
    match recorded {
        Ok(Ok(())) => !quiet,
        Ok(Err(e)) => {
            tracing::warn!(delivery = id, error = %e, "recording a delivery attempt failed");
            true
        }
        Err(e) => {
            tracing::warn!(delivery = id, error = %e, "recording a delivery attempt failed");
            true
        }
    }
}

/// The record of the `attempts`th attempt on `d` and what it decides.
fn sent(
    relay: &Relay,
    d: &Delivery,
    result: Result<super::Delivered, DeliveryError>,
    at_ms: i64,
    duration_ms: u64,
    attempts: u32,
) -> (Attempt, Verdict) {
    match result {
        Ok(ok) => {
            tracing::info!(task = %d.task_id, sink = %d.sink, attempts, "notification delivered");
            (
                Attempt {
                    at_ms,
                    duration_ms,
                    status: ok.status,
                    detail: ok.detail,
                    ok: true,
                },
                Verdict::Delivered,
            )
        }
        Err(e) => {
            let (verdict, detail) = settle(&relay.retry, attempts, d.window_ms, &e, now_ms());
            tracing::warn!(task = %d.task_id, sink = %d.sink, attempts, error = %detail,
                failed = matches!(verdict, Verdict::Failed), "notification not delivered");
            (
                Attempt {
                    at_ms,
                    duration_ms,
                    status: e.status,
                    detail: Some(detail),
                    ok: false,
                },
                verdict,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::RetryPolicy;

    #[test]
    fn failures_settle_by_kind_backoff_retry_after_and_deadline() {
        let retry = RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            deadline: Duration::from_secs(600),
            ..RetryPolicy::default()
        };
        let e = |permanent, retry_after: Option<u64>| DeliveryError {
            permanent,
            status: Some(503),
            message: "HTTP 503".into(),
            retry_after: retry_after.map(Duration::from_secs),
        };
        let now = 1_000_000;
        assert_eq!(
            settle(&retry, 1, now, &e(true, None), now),
            (Verdict::Failed, "HTTP 503".into())
        );
        // Backoff: the third failure waits 2–4 s.
        match settle(&retry, 3, now, &e(false, None), now).0 {
            Verdict::Retry(at) => assert!((now + 2000..=now + 4000).contains(&at), "{at}"),
            v => panic!("{v:?}"),
        }
        // Retry-After is honoured, up to retry.max.
        assert_eq!(
            settle(&retry, 1, now, &e(false, Some(30)), now).0,
            Verdict::Retry(now + 30_000)
        );
        assert_eq!(
            settle(&retry, 1, now, &e(false, Some(3600)), now).0,
            Verdict::Retry(now + 60_000)
        );
        // Past the deadline: given up, and said why.
        let (v, detail) = settle(&retry, 9, now - 599_000, &e(false, Some(30)), now);
        assert_eq!(v, Verdict::Failed);
        assert_eq!(
            detail,
            "HTTP 503 (gave up: not accepted within the deadline of 10m; 9 attempts in all)"
        );
    }
}
