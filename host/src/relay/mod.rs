//! The relay: each task's summary (and, if asked, each state change)
//! reaches the session that spawned it, at least once, with an idempotency
//! key the receiver uses to see it exactly once.
//!
//! The store writes a task's state change and its notification rows (its
//! *outbox*) in one transaction, so a crash can lose neither without the
//! other. A delivery worker, run by [`TaskService::work`](crate::tasks::TaskService::work),
//! claims due rows, builds each [`Notification`] from the stored task, hands
//! it to its [`Sink`], and records the attempt: delivered, retried later
//! with exponential backoff and jitter, or failed for good (a permanent
//! refusal, or the retry deadline passed). `skillbox tasks redeliver` puts
//! failed rows back in the queue.
//!
//! Sinks: a signed webhook ([`WebhookSink`]), an OpenClaw gateway's hooks
//! endpoint ([`OpenClawSink`]), or a Rust closure of the embedder
//! ([`Relay::callback`]). An operator names sinks in the host's
//! configuration ([`RelayConfig`]); a task picks some by name at spawn, or
//! gets the configured defaults. Secrets (webhook keys, hooks tokens) come
//! from the host's configuration or environment, never from a task.

mod config;
mod filter;
mod http;
mod message;
mod sinks;
pub(crate) mod worker;

pub use crate::store::outbox::{Attempt, Change, Delivery, DeliveryState, Verdict};
pub use config::{OpenClawEndpoint, RelayConfig, SinkConfig};
pub use filter::SinkFilter;
pub use message::{Notification, Timings, run_message};
pub use sinks::{
    CallbackSink, Delivered, DeliveryError, OpenClawSink, Sink, WebhookSink, sign, verify,
};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// When to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the second attempt; it doubles after each failure.
    pub initial: Duration,
    /// Longest delay between attempts.
    pub max: Duration,
    /// Give up on a notification not accepted this long after it was
    /// created (or redelivered).
    pub deadline: Duration,
    /// Limit of one attempt (connect, send, answer).
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            deadline: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay after `attempts` failed attempts: `initial · 2^(n-1)`,
    /// capped at `max`, then drawn uniformly from its upper half (jitter,
    /// so that receivers coming back are not hit by every sender at once).
    pub fn delay(&self, attempts: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
            .min(self.max);
        let half = base / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// The sinks of a host, its default choice and its retry policy.
#[derive(Clone, Default)]
pub struct Relay {
    sinks: BTreeMap<String, Arc<dyn Sink>>,
    filters: BTreeMap<String, SinkFilter>,
    default: Vec<String>,
    /// When to retry and give up.
    pub retry: RetryPolicy,
    /// Values never shown to a receiver (the host's own secrets).
    secrets: Vec<String>,
    /// What the commands a notification shows (`skillbox tasks logs ID`)
    /// need to reach this host's daemon, e.g. ` --data-dir /srv/sbx`.
    pub cli_flags: String,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("sinks", &self.sinks.keys().collect::<Vec<_>>())
            .field("default", &self.default)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay with no sinks: tasks can notify nobody.
    pub fn new() -> Relay {
        Relay::default()
    }

    /// The sinks and defaults of an operator's configuration; reads each
    /// sink's secret from its file or environment variable now, so that a
    /// missing secret is an error at start, not at the first delivery.
    pub fn from_config(config: &RelayConfig) -> Result<Relay, crate::Error> {
        let mut relay = Relay {
            retry: RetryPolicy {
                initial: config.retry_initial.get(),
                max: config.retry_max.get(),
                deadline: config.deadline.get(),
                timeout: config.timeout.get(),
            },
            ..Relay::default()
        };
        for (name, sink_config) in &config.sink {
            let (sink, secret): (Arc<dyn Sink>, String) =
                sink_config.build(name, relay.retry.timeout)?;
            relay.secrets.push(secret);
            relay.sinks.insert(name.clone(), sink);
            relay.filters.insert(name.clone(), sink_config.filter());
        }
        relay.set_default(config.default.clone())?;
        Ok(relay)
    }

    /// Adds (or replaces) a sink under `name`.
    pub fn with_sink(mut self, name: impl Into<String>, sink: Arc<dyn Sink>) -> Relay {
        self.sinks.insert(name.into(), sink);
        self
    }

    /// Lets only what `filter` takes reach the sink `name`; the others are
    /// recorded as `skipped`, with the reason.
    pub fn with_filter(mut self, name: impl Into<String>, filter: SinkFilter) -> Relay {
        self.filters.insert(name.into(), filter);
        self
    }

    /// Adds a sink that calls `f` with each notification: the embedder's
    /// callback. `f` runs on a blocking thread; an `Err` is retried like a
    /// failed HTTP delivery. Notifications left undelivered when the host
    /// stopped reach the callback registered by the next host on the same
    /// store.
    pub fn callback(
        self,
        name: impl Into<String>,
        f: impl Fn(&Notification) -> Result<(), String> + Send + Sync + 'static,
    ) -> Relay {
        self.with_sink(name, Arc::new(CallbackSink::new(f)))
    }

    /// Adds a sink that sends each notification on a channel; returns the
    /// relay and the receiving end.
    pub fn channel(
        self,
        name: impl Into<String>,
    ) -> (Relay, tokio::sync::mpsc::UnboundedReceiver<Notification>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let relay = self.callback(name, move |n| {
            tx.send(n.clone())
                .map_err(|_| "the receiving end of the channel was dropped".to_string())
        });
        (relay, rx)
    }

    /// The sinks of tasks that name none.
    pub fn set_default(&mut self, names: Vec<String>) -> Result<(), crate::Error> {
        self.check(&names)?;
        self.default = names;
        Ok(())
    }

    /// [`set_default`](Self::set_default), by value.
    pub fn with_default(mut self, names: Vec<String>) -> Result<Relay, crate::Error> {
        self.set_default(names)?;
        Ok(self)
    }

    /// Names of the sinks.
    pub fn sink_names(&self) -> impl Iterator<Item = &str> {
        self.sinks.keys().map(String::as_str)
    }

    /// The sink called `name`.
    pub fn sink(&self, name: &str) -> Option<&Arc<dyn Sink>> {
        self.sinks.get(name)
    }

    /// The filter of the sink called `name` (none takes everything).
    pub fn filter(&self, name: &str) -> Option<&SinkFilter> {
        self.filters.get(name)
    }

    /// The sinks a task asking for `names` gets: those names (each must
    /// exist), or the defaults when it asks for none.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<String>, crate::Error> {
        if names.is_empty() {
            return Ok(self.default.clone());
        }
        self.check(names)?;
        let mut out: Vec<String> = Vec::new();
        for n in names {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
        Ok(out)
    }

    fn check(&self, names: &[String]) -> Result<(), crate::Error> {
        for n in names {
            if !self.sinks.contains_key(n) {
                let known: Vec<&str> = self.sink_names().collect();
                return Err(crate::Error::Input(format!(
                    "no notification sink named {n:?}; {}",
                    if known.is_empty() {
                        "this host has none (configure them under [relay.sink.NAME])".to_string()
                    } else {
                        format!("this host has: {}", known.join(", "))
                    }
                )));
            }
        }
        Ok(())
    }

    /// How long a host holds the notifications it is sending: longer than
    /// any attempt can take.
    pub(crate) fn lease(&self) -> Duration {
        self.retry.timeout * 3 + Duration::from_secs(30)
    }

    /// Values to redact from every notification (besides each task's own
    /// granted environment).
    pub(crate) fn secrets(&self) -> &[String] {
        &self.secrets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        for (n, base) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            for _ in 0..50 {
                let d = p.delay(n).as_millis() as u64;
                assert!(
                    d >= base / 2 && d <= base,
                    "attempt {n}: {d} ms not in [{}, {base}]",
                    base / 2
                );
            }
        }
        let spread: std::collections::BTreeSet<_> = (0..50).map(|_| p.delay(3)).collect();
        assert!(spread.len() > 10, "jitter spreads delays: {spread:?}");
    }

    #[test]
    fn tasks_get_named_sinks_or_the_defaults() {
        let relay = Relay::new()
            .callback("a", |_| Ok(()))
            .callback("b", |_| Ok(()))
            .with_default(vec!["a".into()])
            .unwrap();
        assert_eq!(relay.resolve(&[]).unwrap(), ["a"]);
        assert_eq!(
            relay
                .resolve(&["b".into(), "b".into(), "a".into()])
                .unwrap(),
            ["b", "a"]
        );
        let e = relay.resolve(&["c".into()]).unwrap_err().to_string();
        assert!(e.contains("\"c\"") && e.contains("a, b"), "{e}");
        assert!(Relay::new().with_default(vec!["x".into()]).is_err());
        let e = Relay::new().resolve(&["x".into()]).unwrap_err().to_string();
        assert!(e.contains("[relay.sink.NAME]"), "{e}");
    }
}
