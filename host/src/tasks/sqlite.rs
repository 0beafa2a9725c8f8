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
//! Group commit: every write runs in its own savepoint inside a shared
//! transaction, and one `COMMIT` (one fsync) makes a whole group durable.
//! A writer that finds others queued behind it leaves the commit to the
//! last of them and waits for it; no write returns before its commit, and
//! a failed commit fails every write of its group. Writes that arrive while
//! a commit is syncing form the next group, so under load one fsync serves
//! many tasks and an idle store still commits each write at once. Reads use
//! their own connection and see only committed data.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::model::{ResumePolicy, Task, TaskEvent, TaskFilter, TaskId, TaskSpec, TaskState};
use super::store::{Claim, EventRecord, StoreError, TaskStore, now_ms};

/// Most events kept per task; past it, non-essential events are dropped and
/// counted, with one `truncated` marker.
pub const DEFAULT_MAX_EVENTS: u64 = 10_000;

/// (version, name, SQL). Append only: never edit an applied migration.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
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
)];

/// Most writes in one group commit.
const MAX_GROUP: usize = 512;
/// Longest a group stays open while writers keep arriving.
const MAX_GROUP_AGE: Duration = Duration::from_millis(20);

/// The SQLite store.
pub struct SqliteStore {
    writer: Mutex<Writer>,
    /// Writers queued for `writer`: while there are any, the holder leaves
    /// the commit to them.
    queued: AtomicUsize,
    groups: Mutex<Groups>,
    committed: Condvar,
    reader: Mutex<Connection>,
    path: PathBuf,
    max_events: u64,
}

/// Counters of a [`SqliteStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreStats {
    /// Writes (task operations) run.
    pub writes: u64,
    /// Transactions committed (or attempted) for them.
    pub commits: u64,
}

/// The write connection and the group it has open, if any.
struct Writer {
    conn: Connection,
    open: Option<Group>,
}

struct Group {
    id: u64,
    members: usize,
    opened: Instant,
}

/// Which groups have ended, and how.
#[derive(Default)]
struct Groups {
    last_id: u64,
    writes: u64,
    ended: u64,
    /// Recent groups whose commit failed, with the error.
    failed: VecDeque<(u64, String)>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/tasks.db` and brings its schema up
    /// to date.
    pub fn open_dir(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Backend(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        SqliteStore::open(&dir.join("tasks.db"))
    }

    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
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
            Ok(conn)
        };
        let mut conn = connect()?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            writer: Mutex::new(Writer { conn, open: None }),
            queued: AtomicUsize::new(0),
            groups: Mutex::default(),
            committed: Condvar::new(),
            reader: Mutex::new(connect()?),
            path: path.to_owned(),
            max_events: DEFAULT_MAX_EVENTS,
        })
    }

    /// Sets the per-task event bound.
    pub fn with_max_events(mut self, max: u64) -> Self {
        self.max_events = max.max(1);
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version now in force.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.lock()
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(backend)
    }

    /// Writes and commits so far (a commit serves a group of writes).
    pub fn stats(&self) -> StoreStats {
        let g = self.groups();
        StoreStats {
            writes: g.writes,
            commits: g.last_id,
        }
    }

    /// The read connection.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn groups(&self) -> MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` as one atomic write and returns once it is durable (see the
    /// module's notes on group commit). `f` failing undoes only its own
    /// changes.
    fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.queued.fetch_sub(1, Ordering::SeqCst);
        if w.open.is_none() {
            w.conn.execute_batch("BEGIN IMMEDIATE").map_err(backend)?;
            let mut groups = self.groups();
            groups.last_id += 1;
            w.open = Some(Group {
                id: groups.last_id,
                members: 0,
                opened: Instant::now(),
            });
        }
        let out = match w.conn.execute_batch("SAVEPOINT write") {
            Ok(()) => {
                let out = f(&w.conn);
                let end = if out.is_ok() {
                    "RELEASE write"
                } else {
                    "ROLLBACK TO write; RELEASE write"
                };
                match w.conn.execute_batch(end) {
                    Ok(()) => out,
                    Err(e) => Err(backend(e)),
                }
            }
            Err(e) => Err(backend(e)),
        };
        let group = w.open.as_mut().expect("opened above");
        group.members += 1;
        self.groups().writes += 1;
        let id = group.id;
        let commit_now = self.queued.load(Ordering::SeqCst) == 0
            || group.members >= MAX_GROUP
            || group.opened.elapsed() >= MAX_GROUP_AGE;
        if commit_now {
            let failed = w.conn.execute_batch("COMMIT").err().map(|e| {
                let _ = w.conn.execute_batch("ROLLBACK");
                e.to_string()
            });
            w.open = None;
            {
                let mut groups = self.groups();
                groups.ended = id;
                if let Some(e) = &failed {
                    groups.failed.push_back((id, e.clone()));
                    if groups.failed.len() > 1024 {
                        groups.failed.pop_front();
                    }
                }
            }
            drop(w);
            self.committed.notify_all();
            return match failed {
                Some(e) => Err(StoreError::Backend(format!("commit failed: {e}"))),
                None => out,
            };
        }
        drop(w);
        let mut groups = self.groups();
        while groups.ended < id {
            groups = self
                .committed
                .wait(groups)
                .unwrap_or_else(|e| e.into_inner());
        }
        if let Some((_, e)) = groups.failed.iter().find(|(g, _)| *g == id) {
            return Err(StoreError::Backend(format!("commit failed: {e}")));
        }
        out
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
            .prepare("SELECT version, checksum FROM schema_migrations ORDER BY version")
            .map_err(backend)?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?
    };
    for (version, sum) in &applied {
        match MIGRATIONS.iter().find(|(v, _, _)| v == version) {
            None => {
                return Err(StoreError::Schema(format!(
                    "the database has migration {version}, which this skillbox does not know: \
                     it was written by a newer version"
                )));
            }
            Some((_, name, sql)) if checksum(sql) != *sum => {
                return Err(StoreError::Schema(format!(
                    "applied migration {version} ({name}) differs from this skillbox's; \
                     migrations must never be edited"
                )));
            }
            Some(_) => {}
        }
    }
    for (version, name, sql) in MIGRATIONS {
        if applied.iter().any(|(v, _)| v == version) {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Schema(format!("migration {version} ({name}): {e}")))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_ms) VALUES (?1, ?2, ?3, ?4)",
            params![version, name, checksum(sql), now_ms()],
        )
        .map_err(backend)?;
    }
    tx.commit().map_err(backend)
}

const TASK_COLUMNS: &str = "id, spec, state, attempt, created_ms, started_ms, ended_ms, owner, lease, \
     lease_until_ms, cancel_requested, outcome, progress, progress_message, events_dropped";

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

fn load(tx: &Connection, id: TaskId) -> Result<Task, StoreError> {
    tx.query_row(
        &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
        params![id.to_string()],
        row_to_task,
    )
    .optional()
    .map_err(backend)?
    .ok_or(StoreError::NotFound(id))?
}

/// Checks that `claim` still holds the task's lease.
fn fence(tx: &Connection, claim: &Claim) -> Result<(), StoreError> {
    let held: Option<(String, i64, Option<String>)> = tx
        .query_row(
            "SELECT state, lease, owner FROM tasks WHERE id = ?1",
            params![claim.task.id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(backend)?;
    match held {
        Some((state, lease, owner))
            if state == TaskState::Running.as_str()
                && lease == claim.lease
                && owner.as_deref() == Some(&claim.owner) =>
        {
            Ok(())
        }
        Some(_) => Err(StoreError::LeaseLost(claim.task.id)),
        None => Err(StoreError::NotFound(claim.task.id)),
    }
}

/// Appends an event inside `tx`, honouring the bound.
fn append_in(tx: &Connection, id: TaskId, event: &TaskEvent, max: u64) -> Result<u64, StoreError> {
    let (count, dropped): (i64, i64) = tx
        .query_row(
            "SELECT event_count, events_dropped FROM tasks WHERE id = ?1",
            params![id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(backend)?
        .ok_or(StoreError::NotFound(id))?;
    if count as u64 >= max && !event.is_essential() {
        tx.execute(
            "UPDATE tasks SET events_dropped = events_dropped + 1 WHERE id = ?1",
            params![id.to_string()],
        )
        .map_err(backend)?;
        if dropped == 0 {
            let marker = TaskEvent::Truncated {
                what: format!(
                    "the task reached its bound of {max} events; later progress, logs and output are counted, not kept"
                ),
            };
            insert_event(tx, id, count + 1, &marker)?;
        }
        return Ok(0);
    }
    let seq = tx
        .query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE task_id = ?1",
            params![id.to_string()],
            |r| r.get::<_, i64>(0),
        )
        .map_err(backend)?;
    insert_event(tx, id, seq, event)?;
    if let TaskEvent::Progress { fraction, message } = event {
        tx.execute(
            "UPDATE tasks SET progress = COALESCE(?2, progress), progress_message = ?3 WHERE id = ?1",
            params![id.to_string(), fraction.map(f64::from), message],
        )
        .map_err(backend)?;
    }
    Ok(seq as u64)
}

fn insert_event(
    tx: &Connection,
    id: TaskId,
    seq: i64,
    event: &TaskEvent,
) -> Result<(), StoreError> {
    let body = serde_json::to_string(event).map_err(backend)?;
    tx.execute(
        "INSERT INTO events (task_id, seq, at_ms, kind, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id.to_string(), seq, now_ms(), event.kind(), body],
    )
    .map_err(backend)?;
    tx.execute(
        "UPDATE tasks SET event_count = event_count + 1 WHERE id = ?1",
        params![id.to_string()],
    )
    .map_err(backend)?;
    Ok(())
}

fn set_state(
    tx: &Connection,
    task: &Task,
    to: TaskState,
    reason: &str,
    max: u64,
) -> Result<(), StoreError> {
    let ended = to.is_terminal().then(now_ms);
    tx.execute(
        "UPDATE tasks SET state = ?2, ended_ms = COALESCE(?3, ended_ms),
             owner = CASE WHEN ?2 = 'running' THEN owner ELSE NULL END,
             lease_until_ms = CASE WHEN ?2 = 'running' THEN lease_until_ms ELSE NULL END
         WHERE id = ?1",
        params![task.id.to_string(), to.as_str(), ended],
    )
    .map_err(backend)?;
    append_in(
        tx,
        task.id,
        &TaskEvent::State {
            from: Some(task.state),
            to,
            reason: reason.to_string(),
        },
        max,
    )?;
    Ok(())
}

/// Claims the oldest runnable task inside `tx`.
fn claim_in(
    tx: &Connection,
    owner: &str,
    lease_for: Duration,
    max_events: u64,
) -> Result<Option<Claim>, StoreError> {
    let id: Option<String> = tx
        .query_row(
            "SELECT id FROM tasks WHERE state IN ('queued', 'interrupted') AND cancel_requested = 0
             ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    let Some(id) = id else { return Ok(None) };
    let id: TaskId = id.parse().map_err(StoreError::Backend)?;
    let before = load(tx, id)?;
    let now = now_ms();
    tx.execute(
        "UPDATE tasks SET state = 'running', attempt = attempt + 1, started_ms = ?2,
             owner = ?3, lease = lease + 1, lease_until_ms = ?4
         WHERE id = ?1",
        params![
            id.to_string(),
            now,
            owner,
            now + lease_for.as_millis() as i64
        ],
    )
    .map_err(backend)?;
    let reason = if before.state == TaskState::Interrupted {
        format!("resumed by {owner} (attempt {})", before.attempt + 1)
    } else {
        format!("started by {owner}")
    };
    append_in(
        tx,
        id,
        &TaskEvent::State {
            from: Some(before.state),
            to: TaskState::Running,
            reason,
        },
        max_events,
    )?;
    let task = load(tx, id)?;
    Ok(Some(Claim {
        lease: task.lease,
        owner: owner.to_string(),
        task,
    }))
}

fn has_checkpoints(tx: &Connection, id: TaskId) -> Result<bool, StoreError> {
    tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM checkpoints WHERE task_id = ?1)",
        params![id.to_string()],
        |r| r.get(0),
    )
    .map_err(backend)
}

impl TaskStore for SqliteStore {
    fn create(&self, spec: TaskSpec) -> Result<Task, StoreError> {
        let id = TaskId::new();
        let body = serde_json::to_string(&spec).map_err(backend)?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO tasks (id, spec, state, created_ms, label, parent_session, resume)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6)",
                params![
                    id.to_string(),
                    body,
                    now_ms(),
                    spec.label,
                    spec.parent_session,
                    spec.resume.as_str()
                ],
            )
            .map_err(backend)?;
            append_in(
                tx,
                id,
                &TaskEvent::State {
                    from: None,
                    to: TaskState::Queued,
                    reason: "spawned".into(),
                },
                self.max_events,
            )?;
            load(tx, id)
        })
    }

    fn get(&self, id: TaskId) -> Result<Task, StoreError> {
        load(&self.lock(), id)
    }

    fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks
                 WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR label = ?2)
                   AND (?3 IS NULL OR parent_session = ?3)
                 ORDER BY id DESC LIMIT ?4"
            ))
            .map_err(backend)?;
        let rows = st
            .query_map(
                params![
                    filter.state.map(|s| s.as_str()),
                    filter.label,
                    filter.parent_session,
                    filter.limit.unwrap_or(100)
                ],
                row_to_task,
            )
            .map_err(backend)?;
        rows.map(|r| r.map_err(backend)?).collect()
    }

    fn claim(&self, owner: &str, lease_for: Duration) -> Result<Option<Claim>, StoreError> {
        self.write(|tx| claim_in(tx, owner, lease_for, self.max_events))
    }

    fn claim_many(
        &self,
        owner: &str,
        max: usize,
        lease_for: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        self.write(|tx| {
            let mut out = Vec::new();
            while out.len() < max {
                match claim_in(tx, owner, lease_for, self.max_events)? {
                    Some(c) => out.push(c),
                    None => break,
                }
            }
            Ok(out)
        })
    }

    fn heartbeat(&self, claim: &Claim, lease_for: Duration) -> Result<(), StoreError> {
        self.write(|tx| {
            fence(tx, claim)?;
            tx.execute(
                "UPDATE tasks SET lease_until_ms = ?2 WHERE id = ?1",
                params![
                    claim.task.id.to_string(),
                    now_ms() + lease_for.as_millis() as i64
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
    }

    fn append(&self, claim: &Claim, event: TaskEvent) -> Result<u64, StoreError> {
        self.write(|tx| {
            fence(tx, claim)?;
            append_in(tx, claim.task.id, &event, self.max_events)
        })
    }

    fn append_many(&self, claim: &Claim, events: &[TaskEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            fence(tx, claim)?;
            for e in events {
                append_in(tx, claim.task.id, e, self.max_events)?;
            }
            Ok(())
        })
    }

    fn save_checkpoint(&self, claim: &Claim, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(|tx| {
            fence(tx, claim)?;
            tx.execute(
                "INSERT INTO checkpoints (task_id, key, value, saved_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (task_id, key) DO UPDATE SET value = excluded.value, saved_ms = excluded.saved_ms",
                params![claim.task.id.to_string(), key, value, now_ms()],
            )
            .map_err(backend)?;
            append_in(
                tx,
                claim.task.id,
                &TaskEvent::Checkpoint {
                    key: key.to_string(),
                    bytes: value.len(),
                },
                self.max_events,
            )?;
            Ok(())
        })
    }

    fn checkpoints(&self, id: TaskId) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare("SELECT key, value FROM checkpoints WHERE task_id = ?1")
            .map_err(backend)?;
        let rows = st
            .query_map(params![id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn finish(
        &self,
        claim: &Claim,
        state: TaskState,
        outcome: serde_json::Value,
        reason: &str,
    ) -> Result<Task, StoreError> {
        if !state.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "{state} is not a terminal state"
            )));
        }
        self.write(|tx| {
            fence(tx, claim)?;
            let task = load(tx, claim.task.id)?;
            tx.execute(
                "UPDATE tasks SET outcome = ?2 WHERE id = ?1",
                params![task.id.to_string(), outcome.to_string()],
            )
            .map_err(backend)?;
            set_state(tx, &task, state, reason, self.max_events)?;
            load(tx, task.id)
        })
    }

    fn events(&self, id: TaskId, after: u64, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        let conn = self.lock();
        load(&conn, id)?;
        let mut st = conn
            .prepare("SELECT seq, at_ms, body FROM events WHERE task_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")
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

    fn request_cancel(&self, id: TaskId, reason: &str) -> Result<Task, StoreError> {
        self.write(|tx| {
            let task = load(tx, id)?;
            match task.state {
                s if s.is_terminal() => {}
                TaskState::Queued | TaskState::Interrupted => {
                    tx.execute(
                        "UPDATE tasks SET cancel_requested = 1, outcome = ?2 WHERE id = ?1",
                        params![
                            id.to_string(),
                            serde_json::json!({"outcome": "cancelled", "reason": reason})
                                .to_string()
                        ],
                    )
                    .map_err(backend)?;
                    set_state(tx, &task, TaskState::Cancelled, reason, self.max_events)?;
                }
                _ => {
                    tx.execute(
                        "UPDATE tasks SET cancel_requested = 1 WHERE id = ?1",
                        params![id.to_string()],
                    )
                    .map_err(backend)?;
                }
            }
            load(tx, id)
        })
    }

    fn recover(&self, now_ms: i64, dead_owner: Option<&str>) -> Result<Vec<TaskId>, StoreError> {
        self.write(|tx| {
            let ids: Vec<String> = {
                let mut st = tx
                    .prepare(
                        "SELECT id FROM tasks WHERE state = 'running'
                         AND (lease_until_ms < ?1 OR (?2 IS NOT NULL AND owner = ?2)) ORDER BY id",
                    )
                    .map_err(backend)?;
                st.query_map(params![now_ms, dead_owner], |r| r.get(0))
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?
            };
            let mut out = Vec::new();
            for id in ids {
                let id: TaskId = id.parse().map_err(StoreError::Backend)?;
                let task = load(tx, id)?;
                let owner = task.owner.clone().unwrap_or_default();
                set_state(tx, &task, TaskState::Interrupted, &format!("host {owner} stopped while running it"), self.max_events)?;
                out.push(id);
                let task = load(tx, id)?;
                if task.cancel_requested {
                    set_state(tx, &task, TaskState::Cancelled, "cancelled while its host was down", self.max_events)?;
                } else if task.spec.resume == ResumePolicy::Fail && !has_checkpoints(tx, id)? {
                    tx.execute(
                        "UPDATE tasks SET outcome = ?2 WHERE id = ?1",
                        params![id.to_string(), serde_json::json!({"outcome": "failed", "kind": "failed", "message": "interrupted; the skill has no checkpoints and says a restart is not safe"}).to_string()],
                    )
                    .map_err(backend)?;
                    set_state(
                        tx,
                        &task,
                        TaskState::Failed,
                        "interrupted with no checkpoints, and the skill's resume policy is `fail`",
                        self.max_events,
                    )?;
                }
            }
            Ok(out)
        })
    }

    fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.write(|tx| {
            let cond =
                "state IN ('succeeded', 'failed', 'timed_out', 'cancelled') AND ended_ms < ?1";
            tx.execute(
                &format!("DELETE FROM events WHERE task_id IN (SELECT id FROM tasks WHERE {cond})"),
                params![before_ms],
            )
            .map_err(backend)?;
            tx.execute(
                &format!(
                    "DELETE FROM checkpoints WHERE task_id IN (SELECT id FROM tasks WHERE {cond})"
                ),
                params![before_ms],
            )
            .map_err(backend)?;
            let n = tx
                .execute(
                    &format!("DELETE FROM tasks WHERE {cond}"),
                    params![before_ms],
                )
                .map_err(backend)?;
            Ok(n as u64)
        })
    }
}
