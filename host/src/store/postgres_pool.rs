//! The PostgreSQL store's connections: a small pool on the store's private
//! runtime, one transaction per store call, prepared statements cached per
//! connection.
//!
//! **Round trips.** A transaction waits for the server as few times as its
//! logic allows: a write whose answer decides nothing
//! ([`Tx::write`]) is sent at once and not waited for; the next read, or
//! the `COMMIT`, goes out behind it on the same connection (tokio-postgres
//! pipelines requests in order) and its answer comes back with theirs in
//! one wait. PostgreSQL runs them in order, so a read sees the writes sent
//! before it, and a write that fails aborts the transaction: the reads
//! after it fail, the `COMMIT` becomes a rollback, and the write's error is
//! the one reported. Every wait is counted ([`Pool::round_trips`]).
//!
//! A change that is one statement needs no transaction block:
//! [`Pool::autocommit`] sends it alone, and it commits by itself (see
//! [`super::postgres_held`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::backend::StoreError;
use super::model::{NotifyMode, TaskId};

/// One pooled connection and its prepared statements.
pub(super) struct Conn {
    pub(super) client: Arc<Client>,
    statements: Mutex<HashMap<String, Statement>>,
}

/// The connections, used by the runtime's tasks only.
pub(super) struct Pool {
    pub(super) config: tokio_postgres::Config,
    /// TLS as the URL's `sslmode` says.
    pub(super) tls: super::postgres_tls::PgTls,
    pub(super) slots: Semaphore,
    pub(super) idle: Mutex<Vec<Conn>>,
    /// Times a transaction waited for the server.
    pub(super) trips: AtomicU64,
}

/// What a transaction knows of a task row it holds (locked, claimed or
/// created by it): the event counters and notify settings, as its own
/// writes leave them. No other transaction can change them before this
/// one ends, so they are read once.
#[derive(Clone, Debug)]
pub(super) struct Known {
    pub(super) count: i64,
    pub(super) dropped: i64,
    pub(super) notify: NotifyMode,
    pub(super) sinks: Vec<String>,
}

/// A write sent and not yet answered.
type Sent = BoxFuture<'static, Result<u64, tokio_postgres::Error>>;

/// A transaction on one connection, as the store's queries see it.
pub(super) struct Tx<'a> {
    pub(super) conn: &'a Conn,
    /// Writes sent and not yet answered, in the order they were sent.
    sent: Mutex<Vec<Sent>>,
    /// The task rows this transaction holds.
    known: Mutex<HashMap<TaskId, Known>>,
    trips: &'a AtomicU64,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// The parameters of a [`Tx::write`], owned: the write outlives the call
/// that sends it.
pub(super) type Owned = Vec<Box<dyn ToSql + Sync + Send>>;

/// [`Owned`] parameters as a query takes them.
pub(super) fn borrowed(params: &Owned) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| &**p as _).collect()
}

/// [`Owned`] parameters from values.
macro_rules! owned {
    ($($p:expr),* $(,)?) => {
        vec![$(Box::new($p) as Box<dyn tokio_postgres::types::ToSql + Sync + Send>),*]
    };
}
pub(super) use owned;

pub(super) fn pg(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Backend(format!(
            "postgres: {} ({}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        )),
        None => StoreError::Backend(format!("postgres: {e}")),
    }
}

/// A connection error with its causes (tokio-postgres shows only its
/// kind, e.g. "error performing TLS handshake", and keeps why as sources).
pub(super) fn connect_error(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl<'a> Tx<'a> {
    fn new(conn: &'a Conn, trips: &'a AtomicU64) -> Tx<'a> {
        Tx {
            conn,
            sent: Mutex::new(Vec::new()),
            known: Mutex::new(HashMap::new()),
            trips,
        }
    }

    fn trip(&self) {
        self.trips.fetch_add(1, Ordering::Relaxed);
    }

    async fn statement(&self, sql: &str) -> Result<Statement, StoreError> {
        let cached = self.conn.lock().get(sql).cloned();
        if let Some(st) = cached {
            return Ok(st);
        }
        self.trip();
        let (sent, st) = futures::join!(self.settle(), self.conn.client.prepare(sql));
        sent?;
        let st = st.map_err(pg)?;
        self.conn.lock().insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// Waits for the answers of the writes sent so far; the first error
    /// among them, which aborted the transaction.
    async fn settle(&self) -> Result<(), StoreError> {
        let sent = std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()));
        let mut first = Ok(());
        for write in sent {
            if let Err(e) = write.await
                && first.is_ok()
            {
                first = Err(pg(e));
            }
        }
        first
    }

    /// Sends `sql` behind the writes not yet answered and waits for all of
    /// their answers at once.
    async fn read<T>(
        &self,
        sql: &str,
        query: impl AsyncFnOnce(&Client, &Statement) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        let st = self.statement(sql).await?;
        self.trip();
        let (sent, out) = futures::join!(self.settle(), query(&self.conn.client, &st));
        sent?;
        out.map_err(pg)
    }

    /// Every row of `sql`.
    pub(super) async fn rows(&self, sql: &str, p: Params<'_>) -> Result<Vec<Row>, StoreError> {
        self.read(sql, async |c, st| c.query(st, p).await).await
    }

    /// The one row of `sql`.
    pub(super) async fn one(&self, sql: &str, p: Params<'_>) -> Result<Row, StoreError> {
        self.read(sql, async |c, st| c.query_one(st, p).await).await
    }

    /// The row of `sql`, if any.
    pub(super) async fn opt(&self, sql: &str, p: Params<'_>) -> Result<Option<Row>, StoreError> {
        self.read(sql, async |c, st| c.query_opt(st, p).await).await
    }

    /// Runs `sql` and waits for it; the number of rows it changed.
    pub(super) async fn exec(&self, sql: &str, p: Params<'_>) -> Result<u64, StoreError> {
        self.read(sql, async |c, st| c.execute(st, p).await).await
    }

    /// Sends `sql` and goes on without waiting for its answer (see the
    /// module's notes): for a write whose result decides nothing.
    pub(super) async fn write(&self, sql: &str, params: Owned) -> Result<(), StoreError> {
        let st = self.statement(sql).await?;
        let client = self.conn.client.clone();
        let mut write: Sent = Box::pin(async move { client.execute_raw(&st, params).await });
        // The first poll sends the request (the statement is prepared, so
        // nothing is awaited before that); the answer is awaited later.
        if let Poll::Ready(done) = futures::poll!(write.as_mut()) {
            return done.map(|_| ()).map_err(pg);
        }
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(write);
        Ok(())
    }

    /// Wakes the listeners of `channel` when the transaction commits.
    pub(super) async fn notify(&self, channel: &str) -> Result<(), StoreError> {
        self.write("SELECT pg_notify($1, '')", owned![channel.to_string()])
            .await
    }

    /// What this transaction knows of task `id`'s row.
    pub(super) fn known(&self, id: TaskId) -> Option<Known> {
        self.lock_known().get(&id).cloned()
    }

    /// Records what this transaction knows of task `id`'s row.
    pub(super) fn know(&self, id: TaskId, known: Known) {
        self.lock_known().insert(id, known);
    }

    /// Changes what this transaction knows of task `id`'s row, if anything.
    pub(super) fn update_known(&self, id: TaskId, f: impl FnOnce(&mut Known)) {
        if let Some(k) = self.lock_known().get_mut(&id) {
            f(k);
        }
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Known>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the answers of the writes sent and not yet answered, if
    /// any.
    async fn wait_sent(&self) -> Result<(), StoreError> {
        if self
            .sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            return Ok(());
        }
        self.trip();
        self.settle().await
    }

    /// Ends the transaction: `COMMIT` (or `ROLLBACK`) behind the writes not
    /// yet answered, in one wait.
    async fn end(&self, commit: bool) -> Result<(), StoreError> {
        self.trip();
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        let (sent, end) = futures::join!(self.settle(), self.conn.client.batch_execute(sql));
        if commit {
            // A failed write made the COMMIT a rollback: its error says why.
            sent?;
            end.map_err(|e| StoreError::Backend(format!("commit failed: {}", pg(e))))
        } else {
            end.map_err(pg)
        }
    }
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Statement>> {
        self.statements.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A store call: the body of one transaction.
pub(super) trait Body<T>:
    for<'a> FnOnce(&'a Tx<'a>) -> BoxFuture<'a, Result<T, StoreError>> + Send
{
}
impl<T, F> Body<T> for F where
    F: for<'a> FnOnce(&'a Tx<'a>) -> BoxFuture<'a, Result<T, StoreError>> + Send
{
}

impl Pool {
    async fn connect(&self) -> Result<Conn, StoreError> {
        let (client, connection) = self.config.connect(self.tls.clone()).await.map_err(|e| {
            StoreError::Backend(format!(
                "cannot connect to PostgreSQL: {}",
                connect_error(&e)
            ))
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("task store connection ended: {e}");
            }
        });
        Ok(Conn {
            client: Arc::new(client),
            statements: Mutex::new(HashMap::new()),
        })
    }

    fn idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if !c.client.is_closed() {
                return Some(c);
            }
        }
        None
    }

    /// How many times transactions waited for the server, since the pool
    /// was made.
    pub(super) fn round_trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    /// Runs `body` on a pooled connection outside any transaction block:
    /// each statement it sends commits by itself (for one statement that
    /// writes a whole change, one round trip and no `BEGIN` or `COMMIT`).
    /// Writes it sent without waiting are waited for before it returns.
    pub(super) async fn autocommit<T>(&self, body: impl Body<T>) -> Result<T, StoreError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| backend("the task store is closed"))?;
        let conn = match self.idle() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let tx = Tx::new(&conn, &self.trips);
        let out = body(&tx).await;
        let sent = tx.wait_sent().await;
        drop(tx);
        if !conn.client.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
        let out = out?;
        sent.map(|()| out)
    }

    /// Runs `body` as one transaction on a pooled connection.
    pub(super) async fn transact<T>(
        &self,
        read_only: bool,
        body: impl Body<T>,
    ) -> Result<T, StoreError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| backend("the task store is closed"))?;
        let begin = if read_only {
            "BEGIN READ ONLY"
        } else {
            "BEGIN"
        };
        let conn = match self.idle() {
            Some(conn) => match conn.client.batch_execute(begin).await {
                Ok(()) => conn,
                // The server went away since the connection was last used
                // (or is telling us so now); nothing ran, so a fresh
                // connection may try again.
                Err(e) if e.as_db_error().is_none() || conn.client.is_closed() => {
                    let conn = self.connect().await?;
                    conn.client.batch_execute(begin).await.map_err(pg)?;
                    conn
                }
                Err(e) => return Err(pg(e)),
            },
            None => {
                let conn = self.connect().await?;
                conn.client.batch_execute(begin).await.map_err(pg)?;
                conn
            }
        };
        self.trips.fetch_add(1, Ordering::Relaxed);
        let tx = Tx::new(&conn, &self.trips);
        let out = body(&tx).await;
        let end = tx.end(out.is_ok()).await;
        drop(tx);
        let reusable = end.is_ok() && !conn.client.is_closed();
        if reusable {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
        match (out, end) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => Err(e),
            // The body's error explains the rollback.
            (Err(e), _) => Err(e),
        }
    }
}
