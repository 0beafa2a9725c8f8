//! Choosing a task store backend by the form of its address.

use std::path::Path;
use std::sync::Arc;

use super::backend::{StoreError, TaskStore};
use super::postgres::PgStore;
use super::sqlite::SqliteStore;

/// Opens the task store `spec` names:
///
/// - `postgres://user@host:port/db` or `postgresql://…`: a [`PgStore`],
///   shared by every host that names the same database;
/// - `sqlite://PATH`, `sqlite:PATH` or a plain `PATH`: a [`SqliteStore`],
///   in the database file `PATH`, or in `PATH/tasks.db` when `PATH` is a
///   directory (as `skillbox serve` keeps it in its data dir).
pub fn open_store(spec: &str) -> Result<Arc<dyn TaskStore>, StoreError> {
    if is_shared(spec) {
        return Ok(Arc::new(PgStore::connect(spec)?));
    }
    let path = spec
        .strip_prefix("sqlite://")
        .or_else(|| spec.strip_prefix("sqlite:"))
        .unwrap_or(spec);
    if path.is_empty() || (spec == path && spec.contains("://")) {
        return Err(StoreError::Backend(format!(
            "task store {spec:?}: expected postgres://…, postgresql://…, sqlite://PATH or a path"
        )));
    }
    let path = Path::new(path);
    let store = if path.is_dir() {
        SqliteStore::open_dir(path)?
    } else {
        SqliteStore::open(path)?
    };
    Ok(Arc::new(store))
}

/// Whether the store `spec` names can be shared by several hosts
/// (PostgreSQL).
pub fn is_shared(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

/// `spec` with the password of a `scheme://user:password@host…` URL
/// replaced by `***`, for messages.
pub fn without_password(spec: &str) -> String {
    let Some((scheme, rest)) = spec.split_once("://") else {
        return spec.to_string();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') && !user.contains('/') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}")
        }
        _ => spec.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_urls_are_shown_without_their_password() {
        use super::without_password as w;
        assert_eq!(
            w("postgres://sbx:secret@db:5432/tasks"),
            "postgres://sbx:***@db:5432/tasks"
        );
        assert_eq!(w("postgres://sbx@db/tasks"), "postgres://sbx@db/tasks");
        assert_eq!(
            w("/var/lib/skillbox/tasks.db"),
            "/var/lib/skillbox/tasks.db"
        );
    }

    use super::*;

    #[test]
    fn paths_open_sqlite_and_unknown_schemes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        for spec in [
            d.to_string(),
            format!("sqlite://{d}/a.db"),
            format!("sqlite:{d}/b.db"),
        ] {
            let store = open_store(&spec).unwrap();
            assert!(
                store.list(&Default::default()).unwrap().is_empty(),
                "{spec}"
            );
        }
        assert!(dir.path().join("tasks.db").is_file());
        assert!(dir.path().join("a.db").is_file());
        let e = open_store("mysql://x/y").err().unwrap().to_string();
        assert!(e.contains("expected postgres://"), "{e}");
        let e = open_store("postgres://nobody@127.0.0.1:1/x")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot connect"), "{e}");
    }
}
