//! Files and directories that only the user running skillbox may open: the
//! daemon's data dir, the task store (every task's input, summary and
//! events), the component cache (native code the host loads) and the
//! files in them.
//!
//! Each is created `0700` (directories) or `0600` (files) whatever the
//! umask, and one found wider, as an older skillbox or another tool left
//! it, is tightened, with a warning in the log. This module never widens a
//! mode and never follows a guest's path: it is given the operator's.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode bits that let anyone but the owner in.
const OTHERS: u32 = 0o077;

/// Creates `dir` `0700` if it is missing (its missing parents are made as
/// usual), or tightens it to its owner's bits if it lets others in.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    tighten(dir)
}

/// Creates the empty file `path` `0600` if it is missing (never truncating
/// one that exists), or tightens it to its owner's bits if it lets others
/// in. Whatever then writes it (SQLite, which gives its `-wal` and `-shm`
/// files the database's mode) starts from a private file.
pub fn private_file(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    tighten(path)
}

/// Tightens `path` to its owner's bits if it exists and lets others in.
pub fn tighten_if_present(path: &Path) -> io::Result<()> {
    match std::fs::metadata(path) {
        Ok(_) => tighten(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path`, creating it `0600` (an existing file is
/// truncated, and tightened if it lets others in).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    tighten(path)?;
    f.write_all(bytes)
}

fn tighten(path: &Path) -> io::Result<()> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if mode & OTHERS == 0 {
        return Ok(());
    }
    let private = mode & !OTHERS;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(private))?;
    tracing::warn!(
        "tightened {} from {mode:o} to {private:o}: only the user running skillbox may open it",
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_private_and_tightened_never_widened() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("a/b/data");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let db = dir.join("tasks.db");
        private_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);

        std::fs::write(&db, "kept").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_dir(&dir).unwrap();
        private_file(&db).unwrap();
        assert_eq!((mode(&dir), mode(&db)), (0o700, 0o600));
        assert_eq!(std::fs::read_to_string(&db).unwrap(), "kept");

        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o400)).unwrap();
        tighten_if_present(&db).unwrap();
        assert_eq!(mode(&db), 0o400, "never widened");
        tighten_if_present(&dir.join("missing")).unwrap();

        let owner = dir.join("serve.owner");
        write_private(&owner, b"x").unwrap();
        assert_eq!(mode(&owner), 0o600);

        let file = top.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(private_dir(&file).is_err(), "a file is not a data dir");
    }
}
