//! Changes beneath granted directories: refused beneath a read-only grant
//! (audited, naming the grant and the flag that would make it writable),
//! and asked for beneath an `--ask-write` grant (the run's first change
//! there waits for the operator's approval).
//!
//! wasmtime-wasi refuses every change beneath a read-only preopen with a
//! bare `NotPermitted`, which a skill reports as "Operation not permitted"
//! without saying which grant it hit. Here the changes of a directory's
//! contents (create, remove, rename, link, and their times) are checked first: beneath a
//! read-only grant they are refused the same way, and audited; otherwise
//! wasmtime-wasi's own implementation runs. Opens for writing are audited by
//! `fs`'s `open-at`, which asks [`GrantedDirs::remedy`] too.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::FsError;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    ErrorCode, HostDescriptor, NewTimestamp, PathFlags,
};

use super::approval::{AskView, Asking};
use crate::events::{Event, HasEvents};
use crate::policy::{Access, EffectivePolicy};

/// The read-only and ask-write grants of a run, by the identity of their
/// directories.
#[derive(Default)]
pub struct GrantedDirs {
    grants: Vec<DirGrant>,
    ask_write: Vec<DirGrant>,
}

struct DirGrant {
    /// (device, inode) of the granted directory.
    id: (u64, u64),
    host: PathBuf,
    guest: String,
}

/// A store that knows its run's read-only and ask-write grants.
pub(crate) trait GrantedDirsView: wasmtime_wasi::WasiView + HasEvents + AskView {
    /// Its grants.
    fn granted_dirs(&self) -> &GrantedDirs;
}

/// Most parent directories walked up from a refused directory to find its
/// grant.
const MAX_DEPTH: usize = 64;

impl GrantedDirs {
    /// The read-only grants of `policy` (a grant that cannot be read is
    /// left out here: `fs::configure` refuses it before the run).
    pub fn new(policy: &EffectivePolicy) -> GrantedDirs {
        let of = |keep: &dyn Fn(&crate::policy::Preopen) -> bool| -> Vec<DirGrant> {
            policy
                .preopens
                .iter()
                .filter(|p| keep(p))
                .filter_map(|p| {
                    let host = p.host.canonicalize().ok()?;
                    let m = std::fs::metadata(&host).ok()?;
                    Some(DirGrant {
                        id: (m.dev(), m.ino()),
                        host,
                        guest: p.guest.clone(),
                    })
                })
                .collect()
        };
        GrantedDirs {
            grants: of(&|p| p.access == Access::Read),
            ask_write: of(&|p| {
                p.access == Access::ReadWrite && policy.ask.write_rule(&p.guest).is_some()
            }),
        }
    }

    /// The guest path of the ask-write grant the directory `dir` is
    /// beneath, if any.
    pub fn ask_write_grant(&self, dir: &std::fs::File) -> Option<String> {
        if self.ask_write.is_empty() {
            return None;
        }
        grant_of(&self.ask_write, dir).map(|g| g.guest.clone())
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

    fn grant_of(&self, dir: &std::fs::File) -> Option<&DirGrant> {
        grant_of(&self.grants, dir)
    }
}

/// The grant of `grants` the directory `dir` is beneath, found by walking
/// up from it.
fn grant_of<'g>(grants: &'g [DirGrant], dir: &std::fs::File) -> Option<&'g DirGrant> {
    {
        use rustix::fs::{Mode, OFlags, openat};
        let find = |m: &std::fs::Metadata| grants.iter().find(|g| g.id == (m.dev(), m.ino()));
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
fn refused<T: GrantedDirsView>(store: &mut T, fd: &Resource<Descriptor>, what: String) -> bool {
    let Ok(Descriptor::Dir(dir)) = store.ctx().table.get(fd) else {
        return false;
    };
    if !dir.perms.write_not_permitted() {
        return false;
    }
    let handle = dir.dir.clone();
    let reason = store.granted_dirs().remedy(&handle);
    store.events().event(Event::Audit {
        capability: "fs",
        detail: what,
        allowed: false,
        reason,
    });
    true
}

/// When `fd` is a directory beneath an ask-write grant whose changes the
/// run has not yet been approved to make: asks, and says whether the
/// change `what` is refused.
pub(crate) async fn unapproved<T: GrantedDirsView>(
    store: &mut T,
    fd: &Resource<Descriptor>,
    what: &str,
) -> bool {
    if store.asker().rules.write.is_empty() {
        return false;
    }
    let Ok(Descriptor::Dir(dir)) = store.ctx().table.get(fd) else {
        return false;
    };
    let handle = dir.dir.clone();
    unapproved_beneath(store, &handle, what).await
}

/// [`unapproved`], for the directory `dir`.
pub(crate) async fn unapproved_beneath<T: GrantedDirsView>(
    store: &mut T,
    dir: &std::fs::File,
    what: &str,
) -> bool {
    let Some(guest) = store.granted_dirs().ask_write_grant(dir) else {
        return false;
    };
    let asker = store.asker().clone();
    let Some(rule) = asker.rules.write_rule(&guest) else {
        return false;
    };
    let call = Asking {
        capability: "write",
        detail: format!("{what} beneath {guest}"),
        rule,
        reason: None,
        per_run: true,
        cover: None,
    };
    asker.ask(call).await.is_err()
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
pub(crate) fn add_to_linker<T: GrantedDirsView + Send + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(super::fs::TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                if refused(store.data_mut(), &fd, format!("create directory {path}"))
                    || unapproved(store.data_mut(), &fd, &format!("create directory {path}")).await
                {
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
                if refused(store.data_mut(), &fd, format!("remove directory {path}"))
                    || unapproved(store.data_mut(), &fd, &format!("remove directory {path}")).await
                {
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
                if refused(store.data_mut(), &fd, format!("remove {path}"))
                    || unapproved(store.data_mut(), &fd, &format!("remove {path}")).await
                {
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
                if refused(store.data_mut(), &fd, format!("create symlink {path}"))
                    || unapproved(store.data_mut(), &fd, &format!("create symlink {path}")).await
                {
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
                let what = format!("rename {old} to {new}");
                if unapproved(store.data_mut(), &fd, &what).await
                    || unapproved(store.data_mut(), &new_fd, &what).await
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
                let what = format!("link {new} to {old}");
                if unapproved(store.data_mut(), &fd, &what).await
                    || unapproved(store.data_mut(), &new_fd, &what).await
                {
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let mut fs = store.data_mut().filesystem();
                answer(HostDescriptor::link_at(&mut fs, fd, flags, old, new_fd, new).await)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.set-times-at",
        |mut store, (fd, flags, path, atim, mtim): SetTimesAtParams| {
            Box::new(async move {
                let what = format!("set the times of {path}");
                if refused(store.data_mut(), &fd, what.clone())
                    || unapproved(store.data_mut(), &fd, &what).await
                {
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let mut fs = store.data_mut().filesystem();
                answer(HostDescriptor::set_times_at(&mut fs, fd, flags, path, atim, mtim).await)
            })
        },
    )?;
    // A file's times change only through a descriptor opened for writing
    // (whose open asked); a directory's through its own descriptor.
    types.func_wrap_async(
        "[method]descriptor.set-times",
        |mut store, (fd, atim, mtim): (Resource<Descriptor>, NewTimestamp, NewTimestamp)| {
            Box::new(async move {
                if unapproved(store.data_mut(), &fd, "set the times of a directory").await {
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let mut fs = store.data_mut().filesystem();
                answer(HostDescriptor::set_times(&mut fs, fd, atim, mtim).await)
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

type SetTimesAtParams = (
    Resource<Descriptor>,
    PathFlags,
    String,
    NewTimestamp,
    NewTimestamp,
);
type RenameParams = (Resource<Descriptor>, String, Resource<Descriptor>, String);
type LinkParams = (
    Resource<Descriptor>,
    PathFlags,
    String,
    Resource<Descriptor>,
    String,
);
