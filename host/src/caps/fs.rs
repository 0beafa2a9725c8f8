//! `fs`: granted directories become WASI preopens; nothing else is reachable.
//!
//! wasmtime-wasi (through cap-std) resolves every guest path beneath its
//! preopen and refuses `..`, absolute paths and symlinks that leave it;
//! hard links need write access on both sides. This module checks the
//! operator's host paths and maps guest paths for `exec`'s working directory
//! with the same rules.

use std::path::{Component, Path, PathBuf};

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::error::Error;
use crate::policy::{Access, EffectivePolicy, Preopen};

/// Adds one preopen per granted directory. Fails when a granted host path is
/// missing or not a directory, so a typo in a grant is caught before the run.
pub fn configure(builder: &mut WasiCtxBuilder, policy: &EffectivePolicy) -> Result<(), Error> {
    for p in &policy.preopens {
        let host = canonical_dir(&p.host)?;
        let perms = match p.access {
            Access::Read => FsPerms::ReadOnly,
            Access::ReadWrite => FsPerms::ReadWrite,
        };
        builder
            .preopened_dir(&host, &p.guest, perms)
            .map_err(|e| Error::Grant(format!("cannot open {}: {e}", host.display())))?;
    }
    // File operations run on the guest's own thread instead of a hop to
    // tokio's blocking pool and back for every read and write: 256 MiB
    // written and read back went from 0.33x to the ratio in BENCHMARKS.md
    // (`cargo bench --bench suite`). Each operation is one bounded system
    // call; the runtime's other worker threads go on meanwhile.
    builder.allow_blocking_current_thread(true);
    Ok(())
}

/// The canonical host path of a granted directory.
pub fn canonical_dir(host: &Path) -> Result<PathBuf, Error> {
    let c = host.canonicalize().map_err(|e| {
        Error::Grant(format!(
            "granted directory {} cannot be used: {e}",
            host.display()
        ))
    })?;
    if !c.is_dir() {
        return Err(Error::Grant(format!(
            "granted path {} is not a directory",
            host.display()
        )));
    }
    Ok(c)
}

/// Maps a guest path to the host path beneath the preopen that holds it.
/// Refuses paths outside every preopen, `..` components, and (after
/// resolving symlinks on the host) anything that lands outside the preopen.
pub fn guest_to_host<'p>(
    preopens: &'p [Preopen],
    guest: &str,
) -> Result<(PathBuf, &'p Preopen), String> {
    let g = Path::new(guest);
    if !g.is_absolute() {
        return Err(format!("{guest:?} is not an absolute guest path"));
    }
    let best = preopens
        .iter()
        .filter(|p| g.starts_with(&p.guest))
        .max_by_key(|p| p.guest.len())
        .ok_or_else(|| {
            let granted: Vec<&str> = preopens.iter().map(|p| p.guest.as_str()).collect();
            format!("{guest:?} is outside every granted directory (granted: {granted:?})")
        })?;
    let rest = g.strip_prefix(&best.guest).unwrap_or(Path::new(""));
    if rest
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(format!("{guest:?} must not contain '..' or '.'"));
    }
    let root = canonical_dir(&best.host).map_err(|e| e.to_string())?;
    let host = root
        .join(rest)
        .canonicalize()
        .map_err(|e| format!("{guest:?}: {e}"))?;
    if !host.starts_with(&root) {
        return Err(format!("{guest:?} resolves outside its granted directory"));
    }
    Ok((host, best))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_guest_paths_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("out")).unwrap();
        let pre = vec![Preopen {
            guest: "/data".into(),
            host: dir.path().into(),
            access: Access::Read,
        }];
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(guest_to_host(&pre, "/data").unwrap().0, root);
        assert_eq!(
            guest_to_host(&pre, "/data/sub").unwrap().0,
            root.join("sub")
        );
        assert!(
            guest_to_host(&pre, "/data/../etc")
                .unwrap_err()
                .contains("'..'")
        );
        assert!(
            guest_to_host(&pre, "/etc")
                .unwrap_err()
                .contains("outside every granted")
        );
        assert!(
            guest_to_host(&pre, "/data/out")
                .unwrap_err()
                .contains("outside its granted")
        );
        assert!(guest_to_host(&pre, "data").is_err());
        assert!(guest_to_host(&pre, "/database").is_err());
    }
}
