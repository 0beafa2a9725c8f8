//! The PostgreSQL store's connections: a small pool on the store's private
//! runtime, one transaction per store call, prepared statements cached per
//! connection.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::backend::StoreError;

/// One pooled connection and its prepared statements.
pub(super) struct Conn {
    pub(super) client: Client,
    statements: Mutex<HashMap<String, Statement>>,
}

/// The connections, used by the runtime's tasks only.
pub(super) struct Pool {
    pub(super) config: tokio_postgres::Config,
    /// TLS as the URL's `sslmode` says.
    pub(super) tls: super::postgres_tls::PgTls,
    pub(super) slots: Semaphore,
    pub(super) idle: Mutex<Vec<Conn>>,
}

/// A transaction on one connection, as the store's queries see it.
pub(super) struct Tx<'a> {
    pub(super) conn: &'a Conn,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

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

impl Tx<'_> {
    async fn statement(&self, sql: &str) -> Result<Statement, StoreError> {
        let cached = self.conn.lock().get(sql).cloned();
        if let Some(st) = cached {
            return Ok(st);
        }
        let st = self.conn.client.prepare(sql).await.map_err(pg)?;
        self.conn.lock().insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// Every row of `sql`.
    pub(super) async fn rows(&self, sql: &str, p: Params<'_>) -> Result<Vec<Row>, StoreError> {
        let st = self.statement(sql).await?;
        self.conn.client.query(&st, p).await.map_err(pg)
    }

    /// The one row of `sql`.
    pub(super) async fn one(&self, sql: &str, p: Params<'_>) -> Result<Row, StoreError> {
        let st = self.statement(sql).await?;
        self.conn.client.query_one(&st, p).await.map_err(pg)
    }

    /// The row of `sql`, if any.
    pub(super) async fn opt(&self, sql: &str, p: Params<'_>) -> Result<Option<Row>, StoreError> {
        let st = self.statement(sql).await?;
        self.conn.client.query_opt(&st, p).await.map_err(pg)
    }

    /// Runs `sql`; the number of rows it changed.
    pub(super) async fn exec(&self, sql: &str, p: Params<'_>) -> Result<u64, StoreError> {
        let st = self.statement(sql).await?;
        self.conn.client.execute(&st, p).await.map_err(pg)
    }

    /// Wakes the listeners of `channel` when the transaction commits.
    pub(super) async fn notify(&self, channel: &str) -> Result<(), StoreError> {
        self.exec("SELECT pg_notify($1, '')", &[&channel])
            .await
            .map(|_| ())
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
            client,
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
        let out = body(&Tx { conn: &conn }).await;
        let end = match &out {
            Ok(_) => conn
                .client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| StoreError::Backend(format!("commit failed: {}", pg(e)))),
            Err(_) => conn.client.batch_execute("ROLLBACK").await.map_err(pg),
        };
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
