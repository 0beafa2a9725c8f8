//! Tasks' scratch directories: made private when a task starts, deleted
//! when it ends with `cleanup = delete` or is pruned.

use std::path::Path;

use crate::error::Error;

/// Creates a task's scratch directory, private to this user.
pub(super) fn make_private(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| Error::io(parent, e))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        // A resumed task finds what its earlier attempt left.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
            if !meta.is_dir() {
                return Err(Error::Grant(format!(
                    "scratch directory {} is not a directory",
                    dir.display()
                )));
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(dir, e))
        }
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Deletes a scratch directory, if there is one.
pub(super) fn remove(dir: Option<&Path>) {
    if let Some(dir) = dir
        && let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "deleting a task's scratch directory failed");
    }
}
