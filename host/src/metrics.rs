//! The host's metrics, for a Prometheus server to scrape (`GET /metrics`
//! of the daemon's API, in the OpenMetrics text format).
//!
//! One registry per process ([`metrics`]): every layer counts what it does
//! where it does it (the runtime its runs and its component cache, the
//! store its transactions, the task service its tasks, the relay its
//! attempts), and the gauges of the store's contents (tasks by state, the
//! queue) are read from the store when a scrape asks. Counting is a look
//! up of the label set under a read lock and a few atomic additions; the
//! label values are static strings, so nothing allocates but a label
//! set's first use and a relay attempt (its sink's name).

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// A label set of one label, `state`, `capability`, …
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// A task state.
    pub state: &'static str,
}

/// A capability call's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `fs`, `exec`, `net`, `env`, `docker`, `secrets`.
    pub capability: &'static str,
    /// `true` or `false`.
    pub allowed: &'static str,
}

/// A relay attempt's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// The sink's name.
    pub sink: String,
    /// `delivered`, `retry`, `failed` or `skipped`.
    pub outcome: &'static str,
}

/// A store transaction's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// `write` or `read`.
    pub kind: &'static str,
}

/// A component load's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `memory` (prepared before), `disk` (the compiled-code cache) or
    /// `compiled`.
    pub result: &'static str,
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Tasks in the store, by state (set at each scrape).
    pub tasks: Family<StateLabel, Gauge>,
    /// Tasks waiting for a worker (set at each scrape).
    pub queue_depth: Gauge,
    /// How long the oldest waiting task has waited (set at each scrape).
    pub queue_age: Gauge<f64, AtomicU64>,
    /// Tasks this process spawned.
    pub spawned: Counter,
    /// Tasks this process claimed to run.
    pub claimed: Counter,
    /// Tasks this process ran to an end, by how they ended.
    pub finished: Family<StateLabel, Counter>,
    /// How long a task's run took, from its claim to its end.
    pub run_seconds: Histogram,
    /// Capability calls checked, by capability and verdict.
    pub calls: Family<CallLabels, Counter>,
    /// Relay delivery attempts, by sink and outcome.
    pub attempts: Family<AttemptLabels, Counter>,
    /// Store transactions' durations, by backend and kind.
    pub store_seconds: Family<StoreLabels, Histogram>,
    /// Runs in progress (each holds a slot of the pooling allocator).
    pub runs_in_progress: Gauge,
    /// Components prepared, by where their code came from.
    pub components: Family<CacheLabels, Counter>,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Seconds, from 100 µs to ~30 minutes.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 4.0, 13)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("skillbox");
        let m = Metrics {
            tasks: Family::default(),
            queue_depth: Gauge::default(),
            queue_age: Gauge::default(),
            spawned: Counter::default(),
            claimed: Counter::default(),
            finished: Family::default(),
            run_seconds: Histogram::new(seconds_buckets()),
            calls: Family::default(),
            attempts: Family::default(),
            store_seconds: Family::new_with_constructor(|| Histogram::new(seconds_buckets())),
            runs_in_progress: Gauge::default(),
            components: Family::default(),
            registry: Registry::default(),
        };
        registry.register("tasks", "Tasks in the store, by state", m.tasks.clone());
        registry.register(
            "queue_depth",
            "Tasks waiting for a worker (queued or interrupted)",
            m.queue_depth.clone(),
        );
        registry.register_with_unit(
            "queue_oldest_age",
            "How long the oldest queued task has waited",
            Unit::Seconds,
            m.queue_age.clone(),
        );
        registry.register(
            "tasks_spawned",
            "Tasks spawned by this host",
            m.spawned.clone(),
        );
        registry.register(
            "tasks_claimed",
            "Tasks claimed by this host",
            m.claimed.clone(),
        );
        registry.register(
            "tasks_finished",
            "Tasks this host ran to an end, by final state",
            m.finished.clone(),
        );
        registry.register_with_unit(
            "task_run",
            "A task's run on this host, from its claim to its end",
            Unit::Seconds,
            m.run_seconds.clone(),
        );
        registry.register(
            "capability_calls",
            "Capability calls checked, by capability and whether they were allowed",
            m.calls.clone(),
        );
        registry.register(
            "relay_attempts",
            "Delivery attempts of notifications, by sink and outcome",
            m.attempts.clone(),
        );
        registry.register_with_unit(
            "store_transaction",
            "Task store transactions, by backend and kind",
            Unit::Seconds,
            m.store_seconds.clone(),
        );
        registry.register(
            "runs_in_progress",
            "Runs in progress on this host (each holds a pooling allocator slot)",
            m.runs_in_progress.clone(),
        );
        registry.register(
            "components_prepared",
            "Components prepared, by where their code came from (memory, disk cache, compiled)",
            m.components.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The registry, encoded in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a task that ended in `state` after running `took`.
    pub fn finished(&self, state: &'static str, took: Duration) {
        self.finished.get_or_create(&StateLabel { state }).inc();
        self.run_seconds.observe(took.as_secs_f64());
    }

    /// Counts a capability call.
    pub fn call(&self, capability: &'static str, allowed: bool) {
        self.calls
            .get_or_create(&CallLabels {
                capability,
                allowed: if allowed { "true" } else { "false" },
            })
            .inc();
    }

    /// Records a store transaction of `backend` of `kind` that took `took`.
    pub fn store(&self, backend: &'static str, kind: &'static str, took: Duration) {
        self.store_seconds
            .get_or_create(&StoreLabels { backend, kind })
            .observe(took.as_secs_f64());
    }

    /// Counts a component prepared from `result`.
    pub fn component(&self, result: &'static str) {
        self.components.get_or_create(&CacheLabels { result }).inc();
    }

    /// Counts a relay attempt on `sink` with `outcome`.
    pub fn attempt(&self, sink: &str, outcome: &'static str) {
        self.attempts
            .get_or_create(&AttemptLabels {
                sink: sink.to_string(),
                outcome,
            })
            .inc();
    }
}

/// Counts a run in progress while it lives.
#[derive(Debug)]
pub struct InProgress(());

impl InProgress {
    /// Starts counting.
    pub fn start() -> InProgress {
        metrics().runs_in_progress.inc();
        InProgress(())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        metrics().runs_in_progress.dec();
    }
}
