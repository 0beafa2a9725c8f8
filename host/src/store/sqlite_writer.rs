//! The SQLite store's writer thread and group commit (see the notes of
//! [`SqliteStore`](super::SqliteStore)), and the statement cache its
//! queries go through.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use rusqlite::Connection;

use super::backend::StoreError;
use super::sqlite::{StoreStats, backend};

/// Most writes in one group commit.
const MAX_GROUP: usize = 512;

/// Statements through the connection's statement cache: parsing and
/// planning SQL was a large share of a small write.
pub(super) trait Cached {
    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize>;
    fn row<T>(
        &self,
        sql: &str,
        p: impl rusqlite::Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(p)
    }

    fn row<T>(
        &self,
        sql: &str,
        p: impl rusqlite::Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(p, f)
    }
}

/// One write, run by the writer thread: `run` inside the group's
/// transaction, then `done` with the outcome of the group's commit.
pub(super) trait Job: Send {
    fn run(&mut self, conn: &Connection);
    fn done(self: Box<Self>, commit: Result<(), String>);
}

pub(super) struct Write<T, F> {
    pub(super) f: Option<F>,
    pub(super) out: Option<Result<T, StoreError>>,
    pub(super) reply: mpsc::SyncSender<Result<T, StoreError>>,
}

impl<T, F> Job for Write<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) {
        let Some(f) = self.f.take() else { return };
        // A savepoint per write: a failing write undoes only itself.
        self.out = Some(match conn.exec("SAVEPOINT write", []) {
            Ok(_) => {
                let out = f(conn);
                let undo = match out {
                    Ok(_) => Ok(0),
                    Err(_) => conn.exec("ROLLBACK TO write", []),
                };
                undo.and_then(|_| conn.exec("RELEASE write", []))
                    .map_err(backend)
                    .and(out)
            }
            Err(e) => Err(backend(e)),
        });
    }

    fn done(self: Box<Self>, commit: Result<(), String>) {
        let out = match (commit, self.out) {
            (Err(e), _) => Err(StoreError::Backend(format!("commit failed: {e}"))),
            (Ok(()), Some(out)) => out,
            (Ok(()), None) => Err(StoreError::Backend(
                "the write did not complete (it panicked)".into(),
            )),
        };
        let _ = self.reply.send(out);
    }
}

/// The writer thread: takes every write queued, runs them back to back in
/// one transaction, commits once, then answers each. Writes that arrive
/// during a commit form the next group.
pub(super) fn writer_loop(
    conn: Connection,
    jobs: mpsc::Receiver<Box<dyn Job>>,
    stats: Arc<Mutex<StoreStats>>,
) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let commit = conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| e.to_string());
        if commit.is_ok() {
            for job in &mut group {
                // A write that panics fails alone (its answer says so), its
                // savepoint is undone, and the writer goes on.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&conn)));
                if ran.is_err() {
                    let _ = conn.execute_batch("ROLLBACK TO write; RELEASE write");
                }
            }
        }
        let ran = started.elapsed();
        let commit = commit.and_then(|()| {
            conn.execute_batch("COMMIT").map_err(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                e.to_string()
            })
        });
        {
            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
            s.writes += group.len() as u64;
            s.commits += 1;
            s.write_time += ran;
            s.commit_time += started.elapsed() - ran;
        }
        for job in group {
            job.done(commit.clone());
        }
    }
}
