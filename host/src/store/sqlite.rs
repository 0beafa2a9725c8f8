//! The embedded SQLite task store: one file, WAL mode, versioned migrations.
//!
//! Migrations are append-only: each has a version, a name and its SQL, and
//! the checksum of every applied migration is recorded; a database whose
//! applied migration no longer matches the code, or that was written by a
//! newer skillbox, is refused rather than "fixed".
//!
//! Durability: WAL with `synchronous = FULL`, so a committed task survives
//! a crash of the host and of the machine.
//!
//! Group commit: one writer thread owns the write connection. It takes
//! every write queued, runs them back to back, each in its own savepoint,
//! inside one transaction, and one `COMMIT` (one fsync) makes the whole
//! group durable. No write returns before its commit, and a failed commit
//! fails every write of its group. Writes that arrive while a commit syncs
//! form the next group, so under load one fsync serves many tasks, and an
//! idle store still commits each write at once. (Handing one connection's
//! lock from caller to caller instead cost a thread switch per write, which
//! on two busy cores made each write ~10× slower.) Reads use their own
//! connection and see only committed data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::approval::{Approval, Ask, Decision};
use super::audit::{AuditFilter, AuditHead, AuditRecord};
use super::backend::{
    Claim, Counts, Ended, Ending, EventRecord, Pruned, StoreError, TaskStore, migration_checksum,
    now_ms, pending_migrations,
};
use super::machine::{self, Fence, Finish, TASK_COLUMNS, run_ready};
use super::model::{Task, TaskEvent, TaskFilter, TaskId, TaskSpec};
use super::outbox::{Attempt, Delivery, Verdict};
use super::schedule::{self, Schedule, ScheduleSpec, Slot};
use super::sqlite_tx::SqliteTx;
pub(super) use super::sqlite_writer::Cached;
use super::sqlite_writer::{Job, Write, writer_loop};

/// Most events kept per task; past it, non-essential events are dropped and
/// counted, with one `truncated` marker.
pub const DEFAULT_MAX_EVENTS: u64 = 10_000;

/// (version, name, SQL). Append only: never edit an applied migration.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "tasks, events, checkpoints",
        "CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL,
        started_ms INTEGER,
        ended_ms INTEGER,
        owner TEXT,
        lease INTEGER NOT NULL DEFAULT 0,
        lease_until_ms INTEGER,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        outcome TEXT,
        progress REAL,
        progress_message TEXT,
        label TEXT,
        parent_session TEXT,
        resume TEXT NOT NULL,
        event_count INTEGER NOT NULL DEFAULT 0,
        events_dropped INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX tasks_by_state ON tasks(state, id);
    CREATE INDEX tasks_by_label ON tasks(label, id);
    CREATE INDEX tasks_by_parent ON tasks(parent_session, id);
    CREATE TABLE events (
        task_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (task_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE checkpoints (
        task_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        saved_ms INTEGER NOT NULL,
        PRIMARY KEY (task_id, key)
    ) WITHOUT ROWID;",
    ),
    (2, "notification outbox", super::sqlite_outbox::MIGRATION),
    (
        3,
        "approvals",
        "CREATE TABLE approvals (
        task_id TEXT NOT NULL,
        n INTEGER NOT NULL,
        key TEXT NOT NULL,
        pending INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (task_id, n)
    ) WITHOUT ROWID;
    CREATE INDEX approvals_pending ON approvals(task_id) WHERE pending = 1;",
    ),
    (4, "audit trail", super::sqlite_audit::MIGRATION),
    (5, "schedules", super::sqlite_schedule::MIGRATION),
];

/// A task's requests for approval, by number.
pub(super) fn approvals(tx: &Connection, id: TaskId) -> Result<Vec<Approval>, StoreError> {
    let mut st = tx
        .prepare_cached("SELECT body FROM approvals WHERE task_id = ?1 ORDER BY n")
        .map_err(backend)?;
    let rows = st
        .query_map(params![id.to_string()], |r| r.get::<_, String>(0))
        .map_err(backend)?;
    rows.map(|r| {
        let body = r.map_err(backend)?;
        serde_json::from_str(&body).map_err(|e| backend(format!("task {id} approval: {e}")))
    })
    .collect()
}

/// The SQLite store.
pub struct SqliteStore {
    /// Writes for the writer thread; `None` once the store is dropped.
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    stats: Arc<Mutex<StoreStats>>,
    reader: Mutex<Connection>,
    path: PathBuf,
    max_events: u64,
    audit: bool,
}

/// Counters of a [`SqliteStore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Writes (task operations) run.
    pub writes: u64,
    /// Transactions committed (or attempted) for them.
    pub commits: u64,
    /// Time spent running writes (their statements, not their commits).
    pub write_time: Duration,
    /// Time spent committing (writing and syncing the log).
    pub commit_time: Duration,
}

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/tasks.db` and brings its schema up
    /// to date. `dir` is made (or tightened to) `0700`: the store holds
    /// every task's input, summary and events.
    pub fn open_dir(dir: &Path) -> Result<SqliteStore, StoreError> {
        crate::private::private_dir(dir).map_err(|e| {
            StoreError::Backend(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        SqliteStore::open(&dir.join("tasks.db"))
    }

    /// Opens (creating if needed) the database file at `path`.
    ///
    /// The file is created `0600` before SQLite opens it (SQLite gives its
    /// `-wal` and `-shm` files the database's mode), and an existing one
    /// that lets others in is tightened, with its `-wal` and `-shm`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let cannot_open =
            |e: std::io::Error| StoreError::Backend(format!("cannot open {}: {e}", path.display()));
        crate::private::private_file(path).map_err(cannot_open)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            crate::private::tighten_if_present(Path::new(&side)).map_err(cannot_open)?;
        }
        let connect = || -> Result<Connection, StoreError> {
            let conn = Connection::open(path)
                .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
            conn.busy_timeout(Duration::from_secs(10))
                .map_err(backend)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| {
                    StoreError::Backend(format!("{}: cannot enable WAL: {e}", path.display()))
                })?;
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(backend)?;
            conn.pragma_update(None, "foreign_keys", "ON")
                .map_err(backend)?;
            conn.set_prepared_statement_cache_capacity(64);
            // Plans fixed at prepare time: otherwise SQLite (built with
            // STAT4) re-prepares a cached statement whenever a value bound
            // to an indexed column changes, which was most of a write's cost.
            conn.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
                true,
            )
            .map_err(backend)?;
            Ok(conn)
        };
        let mut conn = connect()?;
        migrate(&mut conn)?;
        let reader = connect()?;
        let (jobs, queue) = mpsc::channel();
        let stats = Arc::new(Mutex::new(StoreStats::default()));
        let writer = {
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("skillbox-store".into())
                .spawn(move || writer_loop(conn, queue, stats))
                .map_err(|e| backend(format!("cannot start the store's writer: {e}")))?
        };
        Ok(SqliteStore {
            jobs: Some(jobs),
            writer: Some(writer),
            stats,
            reader: Mutex::new(reader),
            path: path.to_owned(),
            max_events: DEFAULT_MAX_EVENTS,
            audit: true,
        })
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

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version now in force.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.lock()
            .row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(backend)
    }

    /// Writes and commits so far (a commit serves a group of writes).
    pub fn stats(&self) -> StoreStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The read connection.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` as one atomic write on the writer thread and returns once
    /// it is durable (see the module's notes on group commit). `f` failing
    /// undoes only its own changes.
    pub(super) fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let started = std::time::Instant::now();
        let stopped = || StoreError::Backend("the task store's writer stopped".into());
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Box::new(Write {
            f: Some(f),
            out: None,
            reply,
        });
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        let out = answer.recv().map_err(|_| stopped())?;
        crate::metrics::metrics().store("sqlite", "write", started.elapsed());
        out
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has answered every
        // write; joining it closes its connection before we return.
        self.jobs = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(backend)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            checksum TEXT NOT NULL,
            applied_ms INTEGER NOT NULL
        )",
    )
    .map_err(backend)?;
    let applied: Vec<(i64, String)> = {
        let mut st = tx
            .prepare_cached("SELECT version, checksum FROM schema_migrations ORDER BY version")
            .map_err(backend)?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?
    };
    for (version, name, sql) in pending_migrations(MIGRATIONS, &applied)? {
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Schema(format!("migration {version} ({name}): {e}")))?;
        tx.exec(
            "INSERT INTO schema_migrations (version, name, checksum, applied_ms) VALUES (?1, ?2, ?3, ?4)",
            params![version, name, migration_checksum(sql), now_ms()],
        )
        .map_err(backend)?;
    }
    tx.commit().map_err(backend)
}

fn row_to_task(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Task, StoreError>> {
    let id: String = r.get(0)?;
    let spec: String = r.get(1)?;
    let state: String = r.get(2)?;
    let outcome: Option<String> = r.get(11)?;
    let progress: Option<f64> = r.get(12)?;
    let parsed = (|| {
        Ok(Task {
            id: id.parse().map_err(StoreError::Backend)?,
            spec: serde_json::from_str(&spec)
                .map_err(|e| backend(format!("task {id}: spec: {e}")))?,
            state: state.parse().map_err(StoreError::Backend)?,
            attempt: r.get::<_, i64>(3).map_err(backend)? as u32,
            created_ms: r.get(4).map_err(backend)?,
            started_ms: r.get(5).map_err(backend)?,
            ended_ms: r.get(6).map_err(backend)?,
            owner: r.get(7).map_err(backend)?,
            lease: r.get(8).map_err(backend)?,
            lease_until_ms: r.get(9).map_err(backend)?,
            cancel_requested: r.get::<_, i64>(10).map_err(backend)? != 0,
            outcome: outcome
                .map(|o| serde_json::from_str(&o))
                .transpose()
                .map_err(|e| backend(format!("task {id}: outcome: {e}")))?,
            progress: progress.map(|p| p as f32),
            progress_message: r.get(13).map_err(backend)?,
            events_dropped: r.get::<_, i64>(14).map_err(backend)? as u64,
        })
    })();
    Ok(parsed)
}

pub(super) fn load(tx: &Connection, id: TaskId) -> Result<Task, StoreError> {
    tx.row(
        &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
        params![id.to_string()],
        row_to_task,
    )
    .optional()
    .map_err(backend)?
    .ok_or(StoreError::NotFound(id))?
}

impl TaskStore for SqliteStore {
    fn create(&self, spec: TaskSpec) -> Result<Task, StoreError> {
        let (id, max) = (TaskId::new(), self.max_events);
        self.write(move |tx| run_ready(machine::spawn(&SqliteTx(tx), id, spec, max)))
    }

    fn create_and_claim(
        &self,
        spec: TaskSpec,
        owner: &str,
        lease_for: Duration,
    ) -> Result<(Task, Option<Claim>), StoreError> {
        let (id, max, owner) = (TaskId::new(), self.max_events, owner.to_string());
        self.write(move |tx| {
            let tx = SqliteTx(tx);
            run_ready(machine::spawn_and_claim(
                &tx, id, spec, &owner, lease_for, max,
            ))
        })
    }

    fn get(&self, id: TaskId) -> Result<Task, StoreError> {
        load(&self.lock(), id)
    }

    fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let prefix = filter.id_prefix();
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks
                 WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR label = ?2)
                   AND (?3 IS NULL OR parent_session = ?3)
                   AND (?5 IS NULL OR substr(id, 1, length(?5)) = ?5)
                 ORDER BY id DESC LIMIT ?4"
            ))
            .map_err(backend)?;
        let rows = st
            .query_map(
                params![
                    filter.state.map(|s| s.as_str()),
                    filter.label,
                    filter.parent_session,
                    filter.limit.unwrap_or(100),
                    prefix
                ],
                row_to_task,
            )
            .map_err(backend)?;
        rows.map(|r| r.map_err(backend)?).collect()
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
        self.write(move |tx| run_ready(machine::claim(&SqliteTx(tx), &owner, n, lease_for, max)))
    }

    fn heartbeat(&self, claim: &Claim, lease_for: Duration) -> Result<(), StoreError> {
        let held = Fence::of(claim);
        self.write(move |tx| run_ready(machine::heartbeat(&SqliteTx(tx), &held, lease_for)))
    }

    fn append(&self, claim: &Claim, event: TaskEvent) -> Result<u64, StoreError> {
        let (held, max) = (Fence::of(claim), self.max_events);
        let events = [event];
        let calls = machine::audited(&held, &events, self.audit);
        self.write(move |tx| {
            let tx = SqliteTx(tx);
            let (seqs, _) = run_ready(machine::append_held(&tx, &held, &events, &calls, max))?;
            Ok(seqs.first().copied().unwrap_or(0))
        })
    }

    fn append_many(&self, claim: &Claim, events: &[TaskEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let (held, max, events) = (Fence::of(claim), self.max_events, events.to_vec());
        let calls = machine::audited(&held, &events, self.audit);
        self.write(move |tx| {
            let tx = SqliteTx(tx);
            run_ready(machine::append_held(&tx, &held, &events, &calls, max)).map(drop)
        })
    }

    fn save_checkpoint(&self, claim: &Claim, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (held, max) = (Fence::of(claim), self.max_events);
        let (key, value) = (key.to_string(), value.to_vec());
        self.write(move |tx| {
            let tx = SqliteTx(tx);
            run_ready(machine::save_checkpoint(&tx, &held, key, &value, max))
        })
    }

    fn checkpoints(&self, id: TaskId) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT key, value FROM checkpoints WHERE task_id = ?1")
            .map_err(backend)?;
        let rows = st
            .query_map(params![id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
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
        self.write(move |tx| run_ready(machine::finish(&SqliteTx(tx), &held, end, max)))
    }

    fn events(&self, id: TaskId, after: u64, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        let conn = self.lock();
        load(&conn, id)?;
        let mut st = conn
            .prepare_cached("SELECT seq, at_ms, body FROM events WHERE task_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")
            .map_err(backend)?;
        let rows = st
            .query_map(params![id.to_string(), after as i64, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(backend)?;
        rows.map(|r| {
            let (seq, at_ms, body) = r.map_err(backend)?;
            Ok(EventRecord {
                seq: seq as u64,
                at_ms,
                event: serde_json::from_str(&body)
                    .map_err(|e| backend(format!("task {id} event {seq}: {e}")))?,
            })
        })
        .collect()
    }

    fn ask(&self, claim: &Claim, ask: Ask) -> Result<Approval, StoreError> {
        let (held, max) = (Fence::of(claim), self.max_events);
        self.write(move |tx| run_ready(machine::ask(&SqliteTx(tx), &held, ask, max)))
    }

    fn approvals(&self, id: TaskId) -> Result<Vec<Approval>, StoreError> {
        let conn = self.lock();
        load(&conn, id)?;
        approvals(&conn, id)
    }

    fn decide(
        &self,
        id: TaskId,
        n: Option<u32>,
        decision: Decision,
    ) -> Result<Approval, StoreError> {
        let max = self.max_events;
        self.write(move |tx| {
            run_ready(super::approval::decide(&SqliteTx(tx), id, n, decision, max))
        })
    }

    fn request_cancel(&self, id: TaskId, reason: &str) -> Result<Task, StoreError> {
        let (reason, max) = (reason.to_string(), self.max_events);
        self.write(move |tx| run_ready(machine::request_cancel(&SqliteTx(tx), id, &reason, max)))
    }

    fn recover(&self, now_ms: i64, dead_owner: Option<&str>) -> Result<Vec<TaskId>, StoreError> {
        let (dead_owner, max) = (dead_owner.map(str::to_string), self.max_events);
        self.write(move |tx| {
            let tx = SqliteTx(tx);
            run_ready(machine::recover(&tx, now_ms, dead_owner.as_deref(), max))
        })
    }

    fn prune(&self, before_ms: i64, only: Option<TaskId>) -> Result<Vec<Pruned>, StoreError> {
        let only = only.map(|id| id.to_string());
        self.write(move |tx| {
            let cond = "state IN ('succeeded', 'failed', 'timed_out', 'cancelled') \
                        AND ended_ms < ?1 AND (?2 IS NULL OR id = ?2)";
            let pruned: Vec<Pruned> = {
                let mut st = tx
                    .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE {cond}"))
                    .map_err(backend)?;
                let rows = st
                    .query_map(params![before_ms, only], row_to_task)
                    .map_err(backend)?;
                rows.map(|r| {
                    let task = r.map_err(backend)??;
                    Ok((task.id, task.scratch_dir()))
                })
                .collect::<Result<_, StoreError>>()?
            };
            super::sqlite_outbox::prune(tx, cond, before_ms, only.as_deref())?;
            tx.exec(
                &format!("DELETE FROM events WHERE task_id IN (SELECT id FROM tasks WHERE {cond})"),
                params![before_ms, only],
            )
            .map_err(backend)?;
            for table in ["checkpoints", "approvals"] {
                tx.exec(
                    &format!(
                        "DELETE FROM {table} WHERE task_id IN (SELECT id FROM tasks WHERE {cond})"
                    ),
                    params![before_ms, only],
                )
                .map_err(backend)?;
            }
            tx.exec(
                &format!("DELETE FROM tasks WHERE {cond}"),
                params![before_ms, only],
            )
            .map_err(backend)?;
            if !pruned.is_empty() {
                run_ready(super::audit::prune(&SqliteTx(tx)))?;
            }
            Ok(pruned)
        })
    }

    fn claim_deliveries(
        &self,
        owner: &str,
        max: usize,
        lease_for: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let owner = owner.to_string();
        self.write(move |tx| super::sqlite_outbox::claim(tx, &owner, now_ms(), max, lease_for))
    }

    fn record_attempt(
        &self,
        id: i64,
        attempt: &Attempt,
        verdict: Verdict,
    ) -> Result<(), StoreError> {
        let attempt = attempt.clone();
        self.write(move |tx| super::sqlite_outbox::record(tx, id, &attempt, verdict))
    }

    fn deliveries(&self, id: TaskId) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.lock();
        load(&conn, id)?;
        super::sqlite_outbox::list(&conn, id)
    }

    fn redeliver(&self, id: TaskId) -> Result<usize, StoreError> {
        self.write(move |tx| {
            load(tx, id)?;
            super::sqlite_outbox::redeliver(tx, id)
        })
    }

    fn next_delivery_ms(&self) -> Result<Option<i64>, StoreError> {
        super::sqlite_outbox::next_due(&self.lock())
    }

    fn add_schedule(&self, spec: ScheduleSpec) -> Result<Schedule, StoreError> {
        self.write(move |tx| run_ready(schedule::add(&SqliteTx(tx), spec, now_ms())))
    }

    fn schedule(&self, name: &str) -> Result<Schedule, StoreError> {
        run_ready(schedule::named(&SqliteTx(&self.lock()), name, false))
    }

    fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        super::sqlite_schedule::all(&self.lock())
    }

    fn schedule_slots(&self, name: &str, limit: u32) -> Result<Vec<Slot>, StoreError> {
        let conn = self.lock();
        run_ready(schedule::named(&SqliteTx(&conn), name, false))?;
        super::sqlite_schedule::slots(&conn, name, limit)
    }

    fn pause_schedule(&self, name: &str, paused: bool) -> Result<Schedule, StoreError> {
        let name = name.to_string();
        self.write(move |tx| {
            run_ready(schedule::set_paused(&SqliteTx(tx), &name, paused, now_ms()))
        })
    }

    fn remove_schedule(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_string();
        self.write(move |tx| run_ready(schedule::remove(&SqliteTx(tx), &name)))
    }

    fn fire_schedules(&self, now_ms: i64, grace_ms: i64) -> Result<Vec<Task>, StoreError> {
        // Looked at every second: a read says whether there is anything to
        // do before the writer is asked to.
        if !super::sqlite_schedule::any_due(&self.lock(), now_ms)? {
            return Ok(Vec::new());
        }
        let max = self.max_events;
        self.write(move |tx| run_ready(schedule::fire_due(&SqliteTx(tx), now_ms, grace_ms, max)))
    }

    fn run_schedule_now(&self, name: &str) -> Result<Task, StoreError> {
        let (name, max) = (name.to_string(), self.max_events);
        self.write(move |tx| run_ready(schedule::run_now(&SqliteTx(tx), &name, max)))
    }

    fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        super::sqlite_audit::records(&self.lock(), filter)
    }

    fn audit_head(&self) -> Result<AuditHead, StoreError> {
        super::sqlite_audit::head(&self.lock())
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT state, COUNT(*) FROM tasks GROUP BY state ORDER BY state")
            .map_err(backend)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(backend)?;
        let by_state = rows
            .map(|r| {
                let (state, n) = r.map_err(backend)?;
                Ok((state.parse().map_err(StoreError::Backend)?, n as u64))
            })
            .collect::<Result<_, StoreError>>()?;
        let oldest_waiting_ms = conn
            .row(
                "SELECT MIN(created_ms) FROM tasks WHERE state IN ('queued', 'interrupted')",
                [],
                |r| r.get(0),
            )
            .map_err(backend)?;
        Ok(Counts {
            by_state,
            oldest_waiting_ms,
        })
    }
}
