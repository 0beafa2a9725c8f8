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

/// Most bytes a guest may hand an inline file stream per `write`, as
/// wasmtime-wasi's own file streams allow.
const FILE_WRITE_CAPACITY: usize = 64 * 1024;

/// Replaces wasmtime-wasi's `descriptor.write-via-stream` with one whose
/// stream writes on the guest's thread.
///
/// wasmtime-wasi's file output stream runs every non-blocking `write` (what
/// wasi-libc's `write(2)` uses, 64 KiB at a time) on tokio's blocking pool
/// even when the context allows blocking the current thread: a thread hop
/// per 64 KiB. A regular file's `pwrite` is one bounded system call, the
/// same as the reads and the other file operations that already run
/// inline here. The checks are wasmtime-wasi's: the descriptor must be a
/// file opened beneath a preopen with write permission.
pub(crate) fn add_inline_writes<T: wasmtime_wasi::WasiView + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::filesystem::Descriptor;
    use wasmtime_wasi::p2::DynOutputStream;
    use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;

    linker.allow_shadowing(true);
    linker.instance("wasi:filesystem/types@0.2.12")?.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store, (fd, offset): (Resource<Descriptor>, u64)| {
            let table = store.data_mut().ctx().table;
            let file = match table.get(&fd)? {
                Descriptor::File(f) if !f.perms.write_not_permitted() => f.file.clone(),
                Descriptor::File(_) => return Ok((Err(ErrorCode::NotPermitted),)),
                Descriptor::Dir(_) => return Ok((Err(ErrorCode::BadDescriptor),)),
            };
            let stream: DynOutputStream = Box::new(InlineFileOutput {
                file,
                position: offset,
                failed: None,
                closed: false,
            });
            let stream: Result<Resource<DynOutputStream>, ErrorCode> = Ok(table.push(stream)?);
            Ok((stream,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A positioned output stream over a regular file, written inline.
struct InlineFileOutput {
    file: std::sync::Arc<std::fs::File>,
    position: u64,
    /// A failed write, reported by the next call (as the stream contract
    /// has it), after which the stream is closed.
    failed: Option<std::io::Error>,
    closed: bool,
}

impl InlineFileOutput {
    fn status(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        use wasmtime_wasi::p2::StreamError;
        if let Some(e) = self.failed.take() {
            self.closed = true;
            return Err(StreamError::LastOperationFailed(e.into()));
        }
        if self.closed {
            return Err(StreamError::Closed);
        }
        Ok(())
    }
}

impl wasmtime_wasi::p2::OutputStream for InlineFileOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        use std::os::unix::fs::FileExt;
        self.status()?;
        if bytes.len() > FILE_WRITE_CAPACITY {
            return Err(wasmtime_wasi::p2::StreamError::Trap(wasmtime::format_err!(
                "write of {} bytes exceeds the permitted {FILE_WRITE_CAPACITY}",
                bytes.len()
            )));
        }
        match self.file.write_all_at(&bytes, self.position) {
            Ok(()) => self.position += bytes.len() as u64,
            Err(e) => self.failed = Some(e),
        }
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        // Nothing is buffered here: every write reached the file already.
        self.status()
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        self.status()?;
        Ok(FILE_WRITE_CAPACITY)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for InlineFileOutput {
    async fn ready(&mut self) {}
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
