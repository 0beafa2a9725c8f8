//! Writes refused beneath a read-only grant: audited, naming the grant and
//! the flag that would make it writable.
//!
//! wasmtime-wasi refuses every change beneath a read-only preopen with a
//! bare `NotPermitted`, which a skill reports as "Operation not permitted"
//! without saying which grant it hit. Here the changes of a directory's
//! contents (create, remove, rename, link) are checked first: beneath a
//! read-only grant they are refused the same way, and audited; otherwise
//! wasmtime-wasi's own implementation runs. Opens for writing are audited by
//! `fs`'s `open-at`, which asks [`ReadOnlyGrants::remedy`] too.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::FsError;
use wasmtime_wasi::p2::bindings::filesystem::types::{ErrorCode, HostDescriptor, PathFlags};

use crate::events::{Event, HasEvents};
use crate::policy::{Access, EffectivePolicy};

/// The read-only grants of a run, by the identity of their directories.
#[derive(Default)]
pub struct ReadOnlyGrants {
    grants: Vec<ReadOnlyGrant>,
}

struct ReadOnlyGrant {
    /// (device, inode) of the granted directory.
    id: (u64, u64),
    host: PathBuf,
    guest: String,
}

/// A store that knows its run's read-only grants.
pub(crate) trait ReadOnlyView: wasmtime_wasi::WasiView + HasEvents {
    /// Its read-only grants.
    fn read_only(&self) -> &ReadOnlyGrants;
}

/// Most parent directories walked up from a refused directory to find its
/// grant.
const MAX_DEPTH: usize = 64;

impl ReadOnlyGrants {
    /// The read-only grants of `policy` (a grant that cannot be read is
    /// left out here: `fs::configure` refuses it before the run).
    pub fn new(policy: &EffectivePolicy) -> ReadOnlyGrants {
        let grants = policy
            .preopens
            .iter()
            .filter(|p| p.access == Access::Read)
            .filter_map(|p| {
                let host = p.host.canonicalize().ok()?;
                let m = std::fs::metadata(&host).ok()?;
                Some(ReadOnlyGrant {
                    id: (m.dev(), m.ino()),
                    host,
                    guest: p.guest.clone(),
                })
            })
            .collect();
        ReadOnlyGrants { grants }
    }

    /// What to do about a change refused beneath the directory `dir`: its
    /// grant, found by walking up from `dir`, and the flag that makes it
    /// writable.
    pub fn remedy(&self, dir: &std::fs::File) -> String {
        match self.grant_of(dir) {
            Some(g) => format!(
                "{} is granted read-only (grant it read-write with --allow-write {}:{})",
                g.guest,
                g.host.display(),
                g.guest
            ),
            None => "its directory is granted read-only (grant it read-write with \
                     --allow-write HOST-DIR:GUEST-DIR)"
                .into(),
        }
    }

    fn grant_of(&self, dir: &std::fs::File) -> Option<&ReadOnlyGrant> {
        use rustix::fs::{Mode, OFlags, openat};
        let find = |m: &std::fs::Metadata| self.grants.iter().find(|g| g.id == (m.dev(), m.ino()));
        if let Some(g) = find(&dir.metadata().ok()?) {
            return Some(g);
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut up = openat(dir, "..", flags, Mode::empty()).ok()?;
        for _ in 0..MAX_DEPTH {
            let file = std::fs::File::from(up);
            if let Some(g) = find(&file.metadata().ok()?) {
                return Some(g);
            }
            up = openat(&file, "..", flags, Mode::empty()).ok()?;
        }
        None
    }
}

/// When `fd` is a directory beneath a read-only grant: audits the change
/// `what` and says to refuse it.
fn refused<T: ReadOnlyView>(store: &mut T, fd: &Resource<Descriptor>, what: String) -> bool {
    let Ok(Descriptor::Dir(dir)) = store.ctx().table.get(fd) else {
        return false;
    };
    if !dir.perms.write_not_permitted() {
        return false;
    }
    let handle = dir.dir.clone();
    let reason = store.read_only().remedy(&handle);
    store.events().event(Event::Audit {
        capability: "fs",
        detail: what,
        allowed: false,
        reason,
    });
    true
}

/// The guest's answer from wasmtime-wasi's result.
fn answer(r: Result<(), FsError>) -> wasmtime::Result<(Result<(), ErrorCode>,)> {
    match r {
        Ok(()) => Ok((Ok(()),)),
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}

/// Checks the changes of a directory's contents against the read-only
/// grants before wasmtime-wasi makes them.
pub(crate) fn add_to_linker<T: ReadOnlyView + Send + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(super::fs::TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                if refused(store.data_mut(), &fd, format!("create directory {path}")) {
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let mut fs = store.data_mut().filesystem();
                answer(HostDescriptor::create_directory_at(&mut fs, fd, path).await)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.remove-directory-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                if refused(store.data_mut(), &fd, format!("remove directory {path}")) {
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let mut fs = store.data_mut().filesystem();
                answer(HostDescriptor::remove_directory_at(&mut fs, fd, path).await)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.unlink-file-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                if refused(store.data_mut(), &fd, format!("remove {path}")) {
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let mut fs = store.data_mut().filesystem();
                answer(HostDescriptor::unlink_file_at(&mut fs, fd, path).await)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store, (fd, target, path): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                if refused(store.data_mut(), &fd, format!("create symlink {path}")) {
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let mut fs = store.data_mut().filesystem();
                answer(HostDescriptor::symlink_at(&mut fs, fd, target, path).await)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.rename-at",
        |mut store, (fd, old, new_fd, new): RenameParams| {
            Box::new(async move {
                let data = store.data_mut();
                if refused(data, &fd, format!("rename {old} to {new}"))
                    || refused(data, &new_fd, format!("rename {old} to {new}"))
                {
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let mut fs = store.data_mut().filesystem();
                answer(HostDescriptor::rename_at(&mut fs, fd, old, new_fd, new).await)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.link-at",
        |mut store, (fd, flags, old, new_fd, new): LinkParams| {
            Box::new(async move {
                let data = store.data_mut();
                if refused(data, &fd, format!("link {new} to {old}"))
                    || refused(data, &new_fd, format!("link {new} to {old}"))
                {
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let mut fs = store.data_mut().filesystem();
                answer(HostDescriptor::link_at(&mut fs, fd, flags, old, new_fd, new).await)
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

type RenameParams = (Resource<Descriptor>, String, Resource<Descriptor>, String);
type LinkParams = (
    Resource<Descriptor>,
    PathFlags,
    String,
    Resource<Descriptor>,
    String,
);
