//! The PostgreSQL task store: several hosts (processes, machines) share one
//! queue.
//!
//! Same semantics as the SQLite store, checked by the same conformance
//! suite: the events are the source of truth, writes on behalf of a claim
//! are fenced by owner and lease generation in their own transaction, the
//! event bound drops non-essential events with one marker, and the outbox
//! rows of a state change commit with it.
//!
//! What PostgreSQL adds:
//!
//! - **Claims across processes.** `claim`, `claim_many`, `finish_and_claim`
//!   and `claim_deliveries` pick rows with `FOR UPDATE SKIP LOCKED`: hosts
//!   claiming at once get different tasks and never wait for each other.
//!   Every write on behalf of a claim locks the task row (`FOR UPDATE`)
//!   before it checks the fence, so a stale owner's write and a new
//!   owner's claim are serialised, never interleaved.
//! - **Clock.** Lease deadlines are the *caller's* clock ([`now_ms`]), as
//!   in SQLite: `recover(now_ms, …)` takes the caller's time and the suite
//!   relies on it. Hosts sharing a database must keep their clocks in sync
//!   (NTP); a skew shortens or lengthens leases by that much.
//! - **Wake-ups.** A transaction that makes a task runnable (a create, a
//!   recovery to `interrupted`) runs `pg_notify('skillbox_tasks', '')`; one
//!   that makes a notification claimable (outbox rows queued, redelivered,
//!   released, settled) runs `pg_notify('skillbox_outbox', '')`. They are
//!   sent at commit. [`PgStore::subscribe`] and
//!   [`PgStore::subscribe_outbox`] turn them into a counter (see there).
//! - **Migrations** are the SQLite store's rules (append-only, checksummed,
//!   newer databases refused) under `pg_advisory_xact_lock`, so workers
//!   starting together apply each migration exactly once.
//!
//! Mechanics: the [`TaskStore`] trait is synchronous and is called from
//! plain threads, `spawn_blocking` threads and async tasks alike, so the
//! store owns a private single-threaded tokio runtime on a thread of its
//! own. Each call runs there as one transaction on a pooled connection and
//! the caller waits on a std channel, which works from any thread (the
//! sync `postgres` crate's `block_on` panics inside a runtime). A
//! connection that breaks (the server restarted) fails the calls in flight
//! with [`StoreError::Backend`] and is replaced on the next call; a call
//! whose pooled connection turns out dead at its very first statement
//! (`BEGIN`, which changes nothing) retries once on a fresh connection.
//!
//! TLS follows libpq's `sslmode` and `sslrootcert` (see
//! [`PgStore::connect`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{Semaphore, watch};
use tokio_postgres::Row;

use super::approval::{Approval, Ask, Decision};
use super::audit::{AuditFilter, AuditHead, AuditRecord};
use super::backend::{
    Claim, Counts, Ended, Ending, EventRecord, Pruned, StoreError, TaskStore, migration_checksum,
    now_ms, pending_migrations,
};
use super::machine::{self, Fence, Finish, TASK_COLUMNS, Transaction};
use super::model::{Task, TaskEvent, TaskFilter, TaskId, TaskSpec};
use super::outbox::{Attempt, Delivery, Verdict};
use super::postgres_held::{self as held, Held};
use super::postgres_pool::{Known, Pool};
pub(super) use super::postgres_pool::{Tx, backend, pg};
use super::schedule::{self, Schedule, ScheduleSpec, Slot};
use super::sqlite::DEFAULT_MAX_EVENTS;

/// (version, name, SQL). Append only: never edit an applied migration.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "tasks, events, checkpoints",
        r#"CREATE TABLE tasks (
        id TEXT COLLATE "C" PRIMARY KEY,
        spec JSONB NOT NULL,
        state TEXT NOT NULL,
        attempt BIGINT NOT NULL DEFAULT 0,
        created_ms BIGINT NOT NULL,
        started_ms BIGINT,
        ended_ms BIGINT,
        owner TEXT,
        lease BIGINT NOT NULL DEFAULT 0,
        lease_until_ms BIGINT,
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
        outcome JSONB,
        progress DOUBLE PRECISION,
        progress_message TEXT,
        label TEXT,
        parent_session TEXT,
        resume TEXT NOT NULL,
        notify TEXT NOT NULL,
        notify_to TEXT[] NOT NULL,
        event_count BIGINT NOT NULL DEFAULT 0,
        events_dropped BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX tasks_runnable ON tasks (id)
        WHERE state IN ('queued', 'interrupted') AND NOT cancel_requested;
    CREATE INDEX tasks_running ON tasks (lease_until_ms) WHERE state = 'running';
    CREATE INDEX tasks_by_state ON tasks (state, id);
    CREATE INDEX tasks_by_label ON tasks (label, id);
    CREATE INDEX tasks_by_parent ON tasks (parent_session, id);
    CREATE INDEX tasks_ended ON tasks (ended_ms) WHERE ended_ms IS NOT NULL;
    CREATE TABLE events (
        task_id TEXT COLLATE "C" NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        body JSONB NOT NULL,
        PRIMARY KEY (task_id, seq)
    );
    CREATE TABLE checkpoints (
        task_id TEXT COLLATE "C" NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        key TEXT COLLATE "C" NOT NULL,
        value BYTEA NOT NULL,
        saved_ms BIGINT NOT NULL,
        PRIMARY KEY (task_id, key)
    );"#,
    ),
    (2, "notification outbox", super::postgres_outbox::MIGRATION),
    (
        3,
        "approvals",
        r#"CREATE TABLE approvals (
        task_id TEXT COLLATE "C" NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        n BIGINT NOT NULL,
        key TEXT NOT NULL,
        pending BOOLEAN NOT NULL,
        body JSONB NOT NULL,
        PRIMARY KEY (task_id, n)
    );
    CREATE INDEX tasks_awaiting ON tasks (lease_until_ms) WHERE state = 'awaiting_approval';"#,
    ),
    (4, "audit trail", super::postgres_audit::MIGRATION),
    (5, "schedules", super::postgres_schedule::MIGRATION),
    (
        6,
        "room for in-place updates of task rows",
        "ALTER TABLE tasks SET (fillfactor = 50)",
    ),
];

/// A task's requests for approval, by number.
pub(super) async fn approvals(tx: &Tx<'_>, id: TaskId) -> Result<Vec<Approval>, StoreError> {
    tx.rows(
        "SELECT body FROM approvals WHERE task_id = $1 ORDER BY n",
        &[&id.to_string()],
    )
    .await?
    .iter()
    .map(|r| {
        let body: serde_json::Value = r.try_get(0).map_err(pg)?;
        serde_json::from_value(body).map_err(|e| backend(format!("task {id} approval: {e}")))
    })
    .collect()
}

/// The key of the advisory lock migrations run under ("skillbox").
const MIGRATION_LOCK: i64 = 0x736b_696c_6c62_6f78;

/// Channel notified when a task may have become claimable.
pub const TASKS_CHANNEL: &str = "skillbox_tasks";
/// Channel notified when a notification may have become claimable.
pub const OUTBOX_CHANNEL: &str = "skillbox_outbox";

/// How long one store call may take (waiting for locks included) before
/// it fails and its connection is dropped.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How a store call's statements commit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    /// One read-only transaction.
    Read,
    /// One transaction.
    Write,
    /// No transaction block: each statement commits by itself.
    Autocommit,
}

/// Settings of a [`PgStore`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Most connections the store holds (one call uses one at a time; the
    /// wake-up listener has its own).
    pub pool_size: usize,
    /// Most events kept per task (default 10,000, as in SQLite).
    pub max_events: u64,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 8,
            max_events: DEFAULT_MAX_EVENTS,
        }
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    pool: Arc<Pool>,
    runtime: tokio::runtime::Handle,
    /// Ends the runtime's thread when dropped (sent or not).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    wakeups: Arc<Wakeups>,
    max_events: u64,
    audit: bool,
    /// What this store's claims and writes left in the rows they hold.
    held: Held,
}

/// The counters behind [`PgStore::subscribe`], and whether their listener
/// runs.
pub(super) struct Wakeups {
    tasks: watch::Sender<u64>,
    outbox: watch::Sender<u64>,
    started: OnceLock<()>,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`,
    /// `postgresql://…`, or libpq's `key=value` form) and brings its schema
    /// up to date. TLS follows libpq's `sslmode` (`disable`, `prefer` by
    /// default, `require`, `verify-ca`, `verify-full`) and `sslrootcert`
    /// (a PEM file of CAs trusted besides the system's roots).
    pub fn connect(url: &str) -> Result<PgStore, StoreError> {
        PgStore::open(url, PgOptions::default())
    }

    /// [`connect`](Self::connect) with settings.
    pub fn open(url: &str, options: PgOptions) -> Result<PgStore, StoreError> {
        let bad = |e: &dyn std::fmt::Display| StoreError::Backend(format!("task store URL: {e}"));
        let (rest, tls) = super::postgres_tls::split(url).map_err(|e| bad(&e))?;
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e| bad(&e))?;
        let (mode, tls) = tls.connector().map_err(|e| bad(&e))?;
        config.ssl_mode(mode);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("skillbox");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| backend(format!("cannot start the task store's runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("skillbox-pg".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Dropped here, outside any async context: its tasks (the
                // connections, the listener) end with it.
                drop(runtime);
            })
            .map_err(|e| backend(format!("cannot start the task store's thread: {e}")))?;
        let store = PgStore {
            pool: Arc::new(Pool {
                config,
                tls,
                slots: Semaphore::new(options.pool_size.max(1)),
                idle: Mutex::new(Vec::new()),
                trips: std::sync::atomic::AtomicU64::new(0),
            }),
            runtime: handle,
            stop: Some(stop),
            thread: Some(thread),
            wakeups: Arc::new(Wakeups {
                tasks: watch::channel(0).0,
                outbox: watch::channel(0).0,
                started: OnceLock::new(),
            }),
            max_events: options.max_events.max(1),
            audit: true,
            held: Held::default(),
        };
        store.call(Mode::Write, |tx| migrate(tx).boxed())?;
        Ok(store)
    }

    /// Sets the per-task event bound.
    pub fn with_max_events(mut self, max: u64) -> Self {
        self.max_events = max.max(1);
        self
    }

    /// Turns the audit trail of capability calls off (`false`) or on (the
    /// default); for measuring what it costs.
    pub fn with_audit(mut self, on: bool) -> Self {
        self.audit = on;
        self
    }

    /// How many times this store's calls have waited for the server since
    /// it was opened: each transaction's `BEGIN`, its reads (each carrying
    /// the writes sent before it) and its `COMMIT`. Writes whose answer
    /// decides nothing are sent without waiting (pipelined), so this is the
    /// count of round trips, not of statements.
    pub fn round_trips(&self) -> u64 {
        self.pool.round_trips()
    }

    /// The schema version now in force.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.call(Mode::Read, |tx| {
            async move {
                let r = tx
                    .one(
                        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                        &[],
                    )
                    .await?;
                r.try_get(0).map_err(pg)
            }
            .boxed()
        })
    }

    /// A counter that changes when a task may have become claimable: a
    /// create or a recovery committed by any store on this database (a
    /// `NOTIFY` on [`TASKS_CHANNEL`]), and each time the listener
    /// (re)connects, since notifications sent while it was away are lost.
    ///
    /// It is a hint, never a claim: wake up on `changed()`, then claim as
    /// usual; changes may be spurious and several are merged into one. Any
    /// create committed after this call returns changes it (if the listener
    /// is not connected yet, its connecting does). The first call starts the
    /// listener: one connection of its own, reconnecting with backoff
    /// (50 ms doubling to 5 s) while the server is away.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.listen();
        self.wakeups.tasks.subscribe()
    }

    /// As [`subscribe`](Self::subscribe), for the outbox: notifications
    /// queued, redelivered, released by recovery or settled (the next one
    /// of its sink may go) ([`OUTBOX_CHANNEL`]).
    pub fn subscribe_outbox(&self) -> watch::Receiver<u64> {
        self.listen();
        self.wakeups.outbox.subscribe()
    }

    fn listen(&self) {
        self.wakeups.started.get_or_init(|| {
            let mut config = self.pool.config.clone();
            // A server that vanishes without closing the socket is noticed.
            config
                .keepalives(true)
                .keepalives_idle(Duration::from_secs(30))
                .keepalives_interval(Duration::from_secs(5))
                .keepalives_retries(3);
            self.runtime.spawn(super::postgres_listen::run(
                config,
                self.pool.tls.clone(),
                self.wakeups.clone(),
            ));
        });
    }

    /// Runs `body` (one transaction, or statements that commit each by
    /// itself, as `mode` says) on the store's runtime and waits for its
    /// outcome; from any thread, in a runtime or not.
    pub(super) fn call<T, F>(&self, mode: Mode, body: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a Tx<'a>) -> BoxFuture<'a, Result<T, StoreError>> + Send + 'static,
    {
        let started = std::time::Instant::now();
        let (reply, answer) = mpsc::sync_channel(1);
        let pool = self.pool.clone();
        self.runtime.spawn(async move {
            let run = async {
                match mode {
                    Mode::Read => pool.transact(true, body).await,
                    Mode::Write => pool.transact(false, body).await,
                    Mode::Autocommit => pool.autocommit(body).await,
                }
            };
            let out = match tokio::time::timeout(CALL_TIMEOUT, run).await {
                Ok(out) => out,
                Err(_) => Err(StoreError::Backend(format!(
                    "the task store did not answer within {}s (the change may or may not \
                     have been made)",
                    CALL_TIMEOUT.as_secs()
                ))),
            };
            let _ = reply.send(out);
        });
        let out = answer
            .recv()
            .map_err(|_| backend("the task store's runtime stopped"))?;
        let kind = if mode == Mode::Read { "read" } else { "write" };
        crate::metrics::metrics().store("postgres", kind, started.elapsed());
        out
    }

    /// Appends `events` for `claim`: in one statement when the store saw
    /// the row last and no capability call among them is audited, else
    /// in the machine's transaction. Their seqs.
    fn append_held(&self, claim: &Claim, events: Vec<TaskEvent>) -> Result<Vec<u64>, StoreError> {
        let (held, max) = (Fence::of(claim), self.max_events);
        let calls = machine::audited(&held, &events, self.audit);
        if calls.is_empty()
            && let Some(seen) = self.held.seen(&held)
        {
            let (fence, batch) = (held.clone(), events.clone());
            let state = seen.state;
            let fast = self.call(Mode::Autocommit, move |tx| {
                async move { held::append(tx, &fence, &seen, &batch, max).await }.boxed()
            })?;
            if let Some((known, seqs)) = fast {
                self.held.saw(&held, state, known);
                return Ok(seqs);
            }
        }
        let fence = held.clone();
        let out = self.write(move |tx| {
            async move {
                let (seqs, state) = machine::append_held(tx, &fence, &events, &calls, max).await?;
                Ok((seqs, state, tx.known(fence.id)))
            }
            .boxed()
        });
        match out {
            Ok((seqs, state, Some(known))) => {
                self.held.saw(&held, state, known);
                Ok(seqs)
            }
            Ok((seqs, _, None)) => Ok(seqs),
            Err(e) => {
                self.held.forget(&held);
                Err(e)
            }
        }
    }

    /// A claim made by a transaction, noted with what it left in the row.
    fn claimed(&self, (claim, known): (Claim, Option<Known>)) -> Claim {
        match known {
            Some(k) => self.held.claimed(&claim, k),
            None => self.held.forget(&Fence::of(&claim)),
        }
        claim
    }

    /// The end [`held::finish`] wrote, as the store reports it; the next
    /// task is claimed by a transaction when it is to be resumed.
    fn finished(&self, held: &Fence, done: held::Finished, next_lease: Option<Duration>) -> Ended {
        self.held.forget(held);
        let mut next = done.next.map(|(c, k)| self.claimed((c, Some(k))));
        if let (true, None, Some(lease)) = (done.resume_next, &next, next_lease) {
            // The end is stored: a failed claim only leaves the task for
            // the next one.
            match self.claim_many(&held.owner, 1, lease) {
                Ok(mut claims) => next = claims.pop(),
                Err(e) => tracing::warn!("claiming the next task after {}: {e}", held.id),
            }
        }
        Ended {
            task: done.task,
            next,
            deliveries: Vec::new(),
        }
    }

    /// Runs `sql` (several statements, no results) in one transaction.
    #[cfg(test)]
    pub(super) fn batch(&self, sql: &str) -> Result<(), StoreError> {
        let sql = sql.to_string();
        self.write(move |tx| {
            async move { tx.conn.client.batch_execute(&sql).await.map_err(pg) }.boxed()
        })
    }

    /// The one `BIGINT` that `sql` returns.
    #[cfg(test)]
    pub(super) fn scalar(&self, sql: &str) -> Result<i64, StoreError> {
        let sql = sql.to_string();
        self.read(move |tx| async move { tx.one(&sql, &[]).await?.try_get(0).map_err(pg) }.boxed())
    }

    pub(super) fn write<T, F>(&self, body: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a Tx<'a>) -> BoxFuture<'a, Result<T, StoreError>> + Send + 'static,
    {
        self.call(Mode::Write, body)
    }

    fn read<T, F>(&self, body: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a Tx<'a>) -> BoxFuture<'a, Result<T, StoreError>> + Send + 'static,
    {
        self.call(Mode::Read, body)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Ends the runtime thread, which closes every connection.
        self.stop = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Wakeups {
    pub(super) fn bump_tasks(&self) {
        self.tasks.send_modify(|n| *n += 1);
    }

    pub(super) fn bump_outbox(&self) {
        self.outbox.send_modify(|n| *n += 1);
    }
}

async fn migrate(tx: &Tx<'_>) -> Result<(), StoreError> {
    // Workers starting together take turns: the second sees the first's
    // schema once the lock is granted (each statement reads committed data).
    tx.exec("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.conn
        .client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY,
                name TEXT NOT NULL,
                checksum TEXT NOT NULL,
                applied_ms BIGINT NOT NULL
            )",
        )
        .await
        .map_err(pg)?;
    let applied: Vec<(i64, String)> = tx
        .rows(
            "SELECT version, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(pg)?;
    for (version, name, sql) in pending_migrations(MIGRATIONS, &applied)? {
        tx.conn
            .client
            .batch_execute(sql)
            .await
            .map_err(|e| StoreError::Schema(format!("migration {version} ({name}): {}", pg(e))))?;
        tx.exec(
            "INSERT INTO schema_migrations (version, name, checksum, applied_ms)
             VALUES ($1, $2, $3, $4)",
            &[version, name, &migration_checksum(sql), &now_ms()],
        )
        .await?;
    }
    Ok(())
}

/// A claim `tx` made, with what the transaction knows of its row.
fn knowing(tx: &Tx<'_>, claim: Claim) -> (Claim, Option<Known>) {
    let known = tx.known(claim.task.id);
    (claim, known)
}

pub(super) fn row_to_task(r: &Row) -> Result<Task, StoreError> {
    let id: String = r.try_get(0).map_err(pg)?;
    let spec: serde_json::Value = r.try_get(1).map_err(pg)?;
    let state: String = r.try_get(2).map_err(pg)?;
    let progress: Option<f64> = r.try_get(12).map_err(pg)?;
    Ok(Task {
        id: id.parse().map_err(StoreError::Backend)?,
        spec: serde_json::from_value(spec).map_err(|e| backend(format!("task {id}: spec: {e}")))?,
        state: state.parse().map_err(StoreError::Backend)?,
        attempt: r.try_get::<_, i64>(3).map_err(pg)? as u32,
        created_ms: r.try_get(4).map_err(pg)?,
        started_ms: r.try_get(5).map_err(pg)?,
        ended_ms: r.try_get(6).map_err(pg)?,
        owner: r.try_get(7).map_err(pg)?,
        lease: r.try_get(8).map_err(pg)?,
        lease_until_ms: r.try_get(9).map_err(pg)?,
        cancel_requested: r.try_get(10).map_err(pg)?,
        outcome: r.try_get(11).map_err(pg)?,
        progress: progress.map(|p| p as f32),
        progress_message: r.try_get(13).map_err(pg)?,
        events_dropped: r.try_get::<_, i64>(14).map_err(pg)? as u64,
    })
}

impl TaskStore for PgStore {
    fn task_wake_ups(&self) -> Option<watch::Receiver<u64>> {
        Some(self.subscribe())
    }

    fn outbox_wake_ups(&self) -> Option<watch::Receiver<u64>> {
        Some(self.subscribe_outbox())
    }

    fn create(&self, spec: TaskSpec) -> Result<Task, StoreError> {
        let (id, max) = (TaskId::new(), self.max_events);
        self.write(move |tx| machine::spawn(tx, id, spec, max).boxed())
    }

    fn create_and_claim(
        &self,
        spec: TaskSpec,
        owner: &str,
        lease_for: Duration,
    ) -> Result<(Task, Option<Claim>), StoreError> {
        let (id, max, owner) = (TaskId::new(), self.max_events, owner.to_string());
        let (task, claim) = self.write(move |tx| {
            async move {
                let (task, claim) =
                    machine::spawn_and_claim(tx, id, spec, &owner, lease_for, max).await?;
                let claim = claim.map(|c| knowing(tx, c));
                Ok((task, claim))
            }
            .boxed()
        })?;
        Ok((task, claim.map(|c| self.claimed(c))))
    }

    fn get(&self, id: TaskId) -> Result<Task, StoreError> {
        self.read(move |tx| async move { tx.task(id, false).await }.boxed())
    }

    fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let prefix = filter.id_prefix();
        let filter = filter.clone();
        self.read(move |tx| {
            async move {
                let sql = format!(
                    "SELECT {TASK_COLUMNS} FROM tasks
                     WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR label = $2)
                       AND ($3::text IS NULL OR parent_session = $3)
                       AND ($5::text IS NULL OR left(id, length($5)) = $5)
                     ORDER BY id DESC LIMIT $4"
                );
                let rows = tx
                    .rows(
                        &sql,
                        &[
                            &filter.state.map(|s| s.as_str()),
                            &filter.label,
                            &filter.parent_session,
                            &i64::from(filter.limit.unwrap_or(100)),
                            &prefix,
                        ],
                    )
                    .await?;
                rows.iter().map(row_to_task).collect()
            }
            .boxed()
        })
    }

    fn claim(&self, owner: &str, lease_for: Duration) -> Result<Option<Claim>, StoreError> {
        Ok(self.claim_many(owner, 1, lease_for)?.pop())
    }

    fn claim_many(
        &self,
        owner: &str,
        n: usize,
        lease_for: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        let (owner, max) = (owner.to_string(), self.max_events);
        let claims = self.write(move |tx| {
            async move {
                let claims = machine::claim(tx, &owner, n, lease_for, max).await?;
                Ok(claims
                    .into_iter()
                    .map(|c| knowing(tx, c))
                    .collect::<Vec<_>>())
            }
            .boxed()
        })?;
        Ok(claims.into_iter().map(|c| self.claimed(c)).collect())
    }

    fn heartbeat(&self, claim: &Claim, lease_for: Duration) -> Result<(), StoreError> {
        let held = Fence::of(claim);
        let fence = held.clone();
        self.write(move |tx| async move { machine::heartbeat(tx, &held, lease_for).await }.boxed())
            .inspect_err(|_| self.held.forget(&fence))
    }

    fn append(&self, claim: &Claim, event: TaskEvent) -> Result<u64, StoreError> {
        let seqs = self.append_held(claim, vec![event])?;
        Ok(seqs.first().copied().unwrap_or(0))
    }

    fn append_many(&self, claim: &Claim, events: &[TaskEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.append_held(claim, events.to_vec()).map(drop)
    }

    fn save_checkpoint(&self, claim: &Claim, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (held, max) = (Fence::of(claim), self.max_events);
        let (key, value) = (key.to_string(), value.to_vec());
        // Its event changes the row's counters: the next write reads them.
        self.held.forget(&held);
        self.write(move |tx| {
            async move { machine::save_checkpoint(tx, &held, key, &value, max).await }.boxed()
        })
    }

    fn checkpoints(&self, id: TaskId) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        self.read(move |tx| {
            async move {
                tx.rows(
                    "SELECT key, value FROM checkpoints WHERE task_id = $1",
                    &[&id.to_string()],
                )
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, tokio_postgres::Error>>()
                .map_err(pg)
            }
            .boxed()
        })
    }

    fn finish_and_claim(
        &self,
        claim: &Claim,
        end: Ending<'_>,
        next_lease: Option<Duration>,
    ) -> Result<Ended, StoreError> {
        let held = Fence::of(claim);
        let (max, end) = (
            self.max_events,
            Finish::of(&held, end, next_lease, self.audit)?,
        );
        if let Some(seen) = self.held.seen(&held).filter(|s| held::may_finish(s, &end)) {
            let (fence, fin) = (held.clone(), end.clone());
            let fast = self.call(Mode::Autocommit, move |tx| {
                async move { held::finish(tx, &fence, &seen, &fin, max).await }.boxed()
            });
            match fast {
                Ok(Some(done)) => return Ok(self.finished(&held, done, next_lease)),
                // The row changed since it was seen: the transaction reads it.
                Ok(None) => {}
                // Nothing was written, or the end was (and the
                // transaction finds the claim gone): either way the
                // transaction says what became of it.
                Err(e) => tracing::debug!(task = %held.id, "one-statement end failed: {e}"),
            }
        }
        self.held.forget(&held);
        let ended = self.write(move |tx| {
            async move {
                let mut ended = machine::finish(tx, &held, end, max).await?;
                let next = ended.next.take().map(|c| knowing(tx, c));
                Ok((ended, next))
            }
            .boxed()
        })?;
        let (mut ended, next) = ended;
        ended.next = next.map(|c| self.claimed(c));
        Ok(ended)
    }

    fn events(&self, id: TaskId, after: u64, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        self.read(move |tx| {
            async move {
                tx.task(id, false).await?;
                let rows = tx
                    .rows(
                        "SELECT seq, at_ms, body FROM events
                         WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                        &[&id.to_string(), &(after as i64), &i64::from(limit)],
                    )
                    .await?;
                rows.iter()
                    .map(|r| {
                        let seq: i64 = r.try_get(0).map_err(pg)?;
                        let body: serde_json::Value = r.try_get(2).map_err(pg)?;
                        Ok(EventRecord {
                            seq: seq as u64,
                            at_ms: r.try_get(1).map_err(pg)?,
                            event: serde_json::from_value(body)
                                .map_err(|e| backend(format!("task {id} event {seq}: {e}")))?,
                        })
                    })
                    .collect()
            }
            .boxed()
        })
    }

    fn ask(&self, claim: &Claim, ask: Ask) -> Result<Approval, StoreError> {
        let (held, max) = (Fence::of(claim), self.max_events);
        // The request changes the task's state.
        self.held.forget(&held);
        self.write(move |tx| async move { machine::ask(tx, &held, ask, max).await }.boxed())
    }

    fn approvals(&self, id: TaskId) -> Result<Vec<Approval>, StoreError> {
        self.read(move |tx| {
            async move {
                tx.task(id, false).await?;
                approvals(tx, id).await
            }
            .boxed()
        })
    }

    fn decide(
        &self,
        id: TaskId,
        n: Option<u32>,
        decision: Decision,
    ) -> Result<Approval, StoreError> {
        let max = self.max_events;
        // The decision changes the task's row under its holder.
        self.held.forget_task(id);
        self.write(move |tx| {
            async move { super::approval::decide(tx, id, n, decision, max).await }.boxed()
        })
    }

    fn request_cancel(&self, id: TaskId, reason: &str) -> Result<Task, StoreError> {
        let (reason, max) = (reason.to_string(), self.max_events);
        self.write(move |tx| {
            async move { machine::request_cancel(tx, id, &reason, max).await }.boxed()
        })
    }

    fn recover(&self, now_ms: i64, dead_owner: Option<&str>) -> Result<Vec<TaskId>, StoreError> {
        let (dead_owner, max) = (dead_owner.map(str::to_string), self.max_events);
        self.write(move |tx| {
            async move { machine::recover(tx, now_ms, dead_owner.as_deref(), max).await }.boxed()
        })
    }

    fn prune(&self, before_ms: i64, only: Option<TaskId>) -> Result<Vec<Pruned>, StoreError> {
        let only = only.map(|id| id.to_string());
        self.write(move |tx| {
            async move {
                // Events, checkpoints and notifications go by ON DELETE CASCADE.
                let rows = tx
                    .rows(
                        &format!(
                            "DELETE FROM tasks
                             WHERE state IN ('succeeded', 'failed', 'timed_out', 'cancelled')
                               AND ended_ms < $1 AND ($2::text IS NULL OR id = $2)
                             RETURNING {TASK_COLUMNS}"
                        ),
                        &[&before_ms, &only],
                    )
                    .await?;
                let mut pruned = rows
                    .iter()
                    .map(|r| {
                        let task = row_to_task(r)?;
                        Ok((task.id, task.scratch_dir()))
                    })
                    .collect::<Result<Vec<Pruned>, StoreError>>()?;
                pruned.sort_by_key(|(id, _)| *id);
                if !pruned.is_empty() {
                    super::audit::prune(tx).await?;
                }
                Ok(pruned)
            }
            .boxed()
        })
    }

    fn claim_deliveries(
        &self,
        owner: &str,
        max: usize,
        lease_for: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let owner = owner.to_string();
        self.write(move |tx| {
            super::postgres_outbox::claim(tx, owner, now_ms(), max, lease_for).boxed()
        })
    }

    fn record_attempt(
        &self,
        id: i64,
        attempt: &Attempt,
        verdict: Verdict,
    ) -> Result<(), StoreError> {
        let attempt = attempt.clone();
        self.write(move |tx| {
            async move { super::postgres_outbox::record(tx, id, &attempt, verdict).await }.boxed()
        })
    }

    fn deliveries(&self, id: TaskId) -> Result<Vec<Delivery>, StoreError> {
        self.read(move |tx| {
            async move {
                tx.task(id, false).await?;
                super::postgres_outbox::list(tx, id).await
            }
            .boxed()
        })
    }

    fn redeliver(&self, id: TaskId) -> Result<usize, StoreError> {
        self.write(move |tx| {
            async move {
                tx.task(id, false).await?;
                super::postgres_outbox::redeliver(tx, id).await
            }
            .boxed()
        })
    }

    fn next_delivery_ms(&self) -> Result<Option<i64>, StoreError> {
        self.read(|tx| super::postgres_outbox::next_due(tx).boxed())
    }

    fn add_schedule(&self, spec: ScheduleSpec) -> Result<Schedule, StoreError> {
        self.write(move |tx| async move { schedule::add(tx, spec, now_ms()).await }.boxed())
    }

    fn schedule(&self, name: &str) -> Result<Schedule, StoreError> {
        let name = name.to_string();
        self.read(move |tx| async move { schedule::named(tx, &name, false).await }.boxed())
    }

    fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        self.read(move |tx| async move { tx.schedules().await }.boxed())
    }

    fn schedule_slots(&self, name: &str, limit: u32) -> Result<Vec<Slot>, StoreError> {
        let name = name.to_string();
        self.read(move |tx| {
            async move {
                schedule::named(tx, &name, false).await?;
                tx.slots(&name, limit).await
            }
            .boxed()
        })
    }

    fn pause_schedule(&self, name: &str, paused: bool) -> Result<Schedule, StoreError> {
        let name = name.to_string();
        self.write(move |tx| {
            async move { schedule::set_paused(tx, &name, paused, now_ms()).await }.boxed()
        })
    }

    fn remove_schedule(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_string();
        self.write(move |tx| async move { schedule::remove(tx, &name).await }.boxed())
    }

    fn fire_schedules(&self, now_ms: i64, grace_ms: i64) -> Result<Vec<Task>, StoreError> {
        let max = self.max_events;
        self.write(move |tx| {
            async move { schedule::fire_due(tx, now_ms, grace_ms, max).await }.boxed()
        })
    }

    fn run_schedule_now(&self, name: &str) -> Result<Task, StoreError> {
        let (name, max) = (name.to_string(), self.max_events);
        self.write(move |tx| async move { schedule::run_now(tx, &name, max).await }.boxed())
    }

    fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let filter = filter.clone();
        self.read(move |tx| async move { tx.audit_records(&filter).await }.boxed())
    }

    fn audit_head(&self) -> Result<AuditHead, StoreError> {
        self.read(move |tx| async move { super::postgres_audit::head(tx, false).await }.boxed())
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        self.read(move |tx| {
            async move {
                let by_state = tx
                    .rows(
                        "SELECT state, COUNT(*) FROM tasks GROUP BY state ORDER BY state",
                        &[],
                    )
                    .await?
                    .iter()
                    .map(|r| {
                        let state: String = r.try_get(0).map_err(pg)?;
                        let n: i64 = r.try_get(1).map_err(pg)?;
                        Ok((state.parse().map_err(StoreError::Backend)?, n as u64))
                    })
                    .collect::<Result<_, StoreError>>()?;
                let oldest_waiting_ms = tx
                    .one(
                        "SELECT MIN(created_ms) FROM tasks WHERE state IN ('queued', 'interrupted')",
                        &[],
                    )
                    .await?
                    .try_get(0)
                    .map_err(pg)?;
                Ok(Counts {
                    by_state,
                    oldest_waiting_ms,
                })
            }
            .boxed()
        })
    }
}
