//! `fs`: granted directories become WASI preopens; nothing else is reachable.
//!
//! wasmtime-wasi (through cap-std) resolves every guest path beneath its
//! preopen and refuses `..`, absolute paths and symlinks that leave it;
//! hard links need write access on both sides. This module checks the
//! operator's host paths and maps guest paths for `exec`'s working directory
//! with the same rules.
//!
//! Only regular files and directories are opened for the guest: a FIFO's
//! open waits for a writer that may never come (a thread stuck for good,
//! past every limit of the run), and a device node reaches the host's
//! hardware or kernel (`/dev/kmsg`, a disk). `add_to_linker` replaces
//! wasmtime-wasi's `open-at` with one that looks before it opens, opens
//! without blocking, and refuses anything else, audited. This module never
//! resolves a guest path on the host itself: every lookup goes through
//! `cap-primitives` beneath the guest's directory handle, as wasmtime-wasi's
//! own does.

use std::path::{Component, Path, PathBuf};

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::readonly::GrantedDirsView;
use crate::error::Error;
use crate::events::Event;
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

/// Records, for the audit trail, the directories the run was granted.
pub fn audit(policy: &EffectivePolicy, events: &dyn crate::events::EventObserver) {
    for p in &policy.preopens {
        events.event(Event::Audit {
            capability: "fs",
            detail: format!("mount {} at {}", p.host.display(), p.guest),
            allowed: true,
            reason: match p.access {
                Access::Read => "granted read-only".into(),
                Access::ReadWrite => "granted read-write".into(),
            },
        });
    }
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

/// Maps a guest path an exec'd program is handed to the host path beneath
/// its grant, as [`guest_to_host`] does, except that the last component may
/// not exist yet (a file the program is to create): then its directory is
/// resolved, and the name, a plain one, joined to it.
pub fn guest_path_to_host(preopens: &[Preopen], guest: &str) -> Result<PathBuf, String> {
    let g = Path::new(guest);
    if let (Some(parent), Some(Component::Normal(name))) = (g.parent(), g.components().next_back())
        && let Some(parent) = parent.to_str()
        && let Ok((dir, _)) = guest_to_host(preopens, parent)
    {
        let host = dir.join(name);
        // Nothing there yet, not even a symlink: the program makes it.
        if host.symlink_metadata().is_err() {
            return Ok(host);
        }
    }
    guest_to_host(preopens, guest).map(|(host, _)| host)
}

/// Most bytes a guest may hand an inline file stream per `write`, as
/// wasmtime-wasi's own file streams allow.
const FILE_WRITE_CAPACITY: usize = 64 * 1024;

/// The WASI filesystem interface whose functions this module replaces.
pub(super) const TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Wires `fs` into the linker, over wasmtime-wasi's filesystem: opens of
/// regular files and directories only ([`add_regular_opens`]) and file
/// writes on the guest's thread ([`add_inline_writes`]).
pub(crate) fn add_to_linker<T: GrantedDirsView + Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    add_regular_opens(linker)?;
    add_inline_writes(linker)
}

/// Replaces wasmtime-wasi's `descriptor.open-at` with one that opens
/// regular files and directories only.
///
/// The checks, flags and permissions are wasmtime-wasi's (`Dir::open_at`),
/// and so is the resolution beneath the directory (`cap-primitives`, which
/// wasmtime-wasi vendors). The open runs on tokio's blocking pool, as
/// wasmtime-wasi's opens from a preopen do: a file system that hangs
/// (a dead network mount) then holds a pool thread, not the run, whose
/// timeout still fires.
fn add_regular_opens<T: GrantedDirsView + Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::filesystem::{Descriptor, Dir, File};
    use wasmtime_wasi::p2::bindings::filesystem::types::{
        DescriptorFlags, ErrorCode, OpenFlags, PathFlags,
    };

    type Params = (
        Resource<Descriptor>,
        PathFlags,
        String,
        OpenFlags,
        DescriptorFlags,
    );
    linker.allow_shadowing(true);
    linker.instance(TYPES)?.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store, (fd, path_flags, path, oflags, flags): Params| {
            Box::new(async move {
                let dir = match store.data_mut().ctx().table.get(&fd)? {
                    Descriptor::Dir(d) => d.clone(),
                    Descriptor::File(_) => return Ok((Err(ErrorCode::NotDirectory),)),
                };
                let request = OpenRequest {
                    follow: path_flags.contains(PathFlags::SYMLINK_FOLLOW),
                    create: oflags.contains(OpenFlags::CREATE),
                    exclusive: oflags.contains(OpenFlags::EXCLUSIVE),
                    truncate: oflags.contains(OpenFlags::TRUNCATE),
                    directory: oflags.contains(OpenFlags::DIRECTORY),
                    read: flags.contains(DescriptorFlags::READ),
                    write: flags.contains(DescriptorFlags::WRITE),
                    sync: flags.intersects(
                        DescriptorFlags::FILE_INTEGRITY_SYNC
                            | DescriptorFlags::DATA_INTEGRITY_SYNC
                            | DescriptorFlags::REQUESTED_WRITE_SYNC,
                    ),
                };
                let plan = match request.plan(dir.perms) {
                    Ok(plan) => plan,
                    Err(ErrorCode::NotPermitted) => {
                        let reason = store.data().granted_dirs().remedy(&dir.dir);
                        store.data().events().event(Event::Audit {
                            capability: "fs",
                            detail: format!("open {path} for writing"),
                            allowed: false,
                            reason,
                        });
                        return Ok((Err(ErrorCode::NotPermitted),));
                    }
                    Err(code) => return Ok((Err(code),)),
                };
                let changes = request.create || request.truncate || request.write;
                if changes
                    && super::readonly::unapproved_beneath(
                        store.data_mut(),
                        &dir.dir,
                        &format!("open {path} for writing"),
                    )
                    .await
                {
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let handle = dir.dir.clone();
                let relative = path.clone();
                let opened = tokio::task::spawn_blocking(move || {
                    open_regular(&handle, &relative, &plan.options, request.follow)
                })
                .await
                .map_err(|e| wasmtime::format_err!("open-at: {e}"))?;
                // Descriptors opened here do their file operations on the
                // guest's thread, as `configure` asks of wasmtime-wasi.
                let descriptor = match opened {
                    Ok(Opened::Dir(d)) => Descriptor::Dir(Dir::new(d, dir.perms, plan.mode, true)),
                    Ok(Opened::File(_)) if request.directory => {
                        return Ok((Err(ErrorCode::NotDirectory),));
                    }
                    Ok(Opened::File(f)) => {
                        Descriptor::File(File::new(f, dir.perms, plan.mode, true))
                    }
                    Err(Refused::Io(e)) => return Ok((Err(ErrorCode::from(e)),)),
                    Err(Refused::Special(kind)) => {
                        store.data().events().event(Event::Audit {
                            capability: "fs",
                            detail: format!("open {path}"),
                            allowed: false,
                            reason: format!(
                                "{path} is {kind}: only regular files and directories are \
                                 opened for a skill (no grant allows other files)"
                            ),
                        });
                        return Ok((Err(ErrorCode::NotPermitted),));
                    }
                };
                let fd = store.data_mut().ctx().table.push(descriptor)?;
                Ok((Ok(fd),))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// One `open-at` as the guest asked for it.
#[derive(Clone, Copy, Debug, Default)]
struct OpenRequest {
    follow: bool,
    create: bool,
    exclusive: bool,
    truncate: bool,
    directory: bool,
    read: bool,
    write: bool,
    /// Any of the synchronized-I/O flags, which wasmtime-wasi does not
    /// support.
    sync: bool,
}

/// The open to make, and the mode the descriptor records.
struct OpenPlan {
    options: cap_primitives::fs::OpenOptions,
    mode: wasmtime_wasi::filesystem::OpenMode,
}

/// Why an open was refused.
#[derive(Debug)]
enum Refused {
    /// By the system.
    Io(std::io::Error),
    /// The path names a file that is neither regular nor a directory; what
    /// it is.
    Special(&'static str),
}

impl OpenRequest {
    /// The open options for this request, or its refusal: wasmtime-wasi's
    /// own checks, in its order.
    fn plan(
        &self,
        perms: FsPerms,
    ) -> Result<OpenPlan, wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode> {
        use cap_primitives::fs::{FollowSymlinks, OpenOptions};
        use wasmtime_wasi::filesystem::OpenMode;
        use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;
        let mut options = OpenOptions::new();
        let mut mode = OpenMode::empty();
        if self.create {
            if self.exclusive {
                options.create_new(true);
            } else {
                options.create(true);
            }
            options.write(true);
            mode |= OpenMode::WRITE;
        }
        if self.truncate {
            options.truncate(true).write(true);
            mode |= OpenMode::WRITE;
        }
        if self.read {
            options.read(true);
            mode |= OpenMode::READ;
        }
        if self.write {
            options.write(true);
            mode |= OpenMode::WRITE;
        } else {
            // Opened for reading even when neither was asked, as
            // wasmtime-wasi does; the permissions then refuse the rest.
            options.read(true);
            mode |= OpenMode::READ;
        }
        // `follow` is reachable only through this hidden name (cap-fs-ext's
        // `OpenOptionsFollowExt` is the same call).
        options._cap_fs_ext_follow(if self.follow {
            FollowSymlinks::Yes
        } else {
            FollowSymlinks::No
        });
        if self.sync {
            return Err(ErrorCode::Unsupported);
        }
        if self.directory && (self.create || self.exclusive || self.truncate) {
            return Err(ErrorCode::Invalid);
        }
        if perms.write_not_permitted() && (self.create || mode.contains(OpenMode::WRITE)) {
            return Err(ErrorCode::NotPermitted);
        }
        Ok(OpenPlan { options, mode })
    }
}

/// What [`open_regular`] opened.
#[derive(Debug)]
enum Opened {
    File(std::fs::File),
    Dir(std::fs::File),
}

/// Opens `path` beneath `dir` if it is a regular file or a directory.
///
/// It looks first, without opening, so that a device node's open (which
/// can act: rewind a tape, arm a watchdog) never happens. A FIFO swapped
/// in after the look cannot block either: the open is non-blocking, and
/// what it opened is checked again before the guest gets it.
fn open_regular(
    dir: &std::fs::File,
    path: &str,
    options: &cap_primitives::fs::OpenOptions,
    follow: bool,
) -> Result<Opened, Refused> {
    use cap_primitives::fs::{FollowSymlinks, MetadataExt as _};
    let follow_mode = if follow {
        FollowSymlinks::Yes
    } else {
        FollowSymlinks::No
    };
    // A missing file may be created; any other failure is the open's to
    // report. A symlink left unfollowed is the open's to refuse (ELOOP).
    if let Ok(meta) = cap_primitives::fs::stat(dir, Path::new(path), follow_mode)
        && meta.mode() & libc::S_IFMT != libc::S_IFLNK
        && let Some(kind) = special_kind(meta.mode())
    {
        return Err(Refused::Special(kind));
    }
    open_checked(dir, path, options)
}

/// Opens `path` beneath `dir` without blocking, and keeps it only if it is
/// a regular file or a directory.
fn open_checked(
    dir: &std::fs::File,
    path: &str,
    options: &cap_primitives::fs::OpenOptions,
) -> Result<Opened, Refused> {
    use cap_primitives::fs::OpenOptionsExt as _;
    use std::os::unix::fs::MetadataExt as _;
    let mut options = options.clone();
    options.custom_flags(libc::O_NONBLOCK);
    let file = cap_primitives::fs::open(dir, Path::new(path), &options).map_err(Refused::Io)?;
    let meta = file.metadata().map_err(Refused::Io)?;
    if let Some(kind) = special_kind(meta.mode()) {
        return Err(Refused::Special(kind));
    }
    // Back to ordinary (blocking) I/O for the guest's reads and writes.
    let flags = rustix::fs::fcntl_getfl(&file).map_err(|e| Refused::Io(e.into()))?;
    rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| Refused::Io(e.into()))?;
    Ok(if meta.is_dir() {
        Opened::Dir(file)
    } else {
        Opened::File(file)
    })
}

/// What a file of `mode` is when it is neither a regular file nor a
/// directory.
fn special_kind(mode: u32) -> Option<&'static str> {
    match mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFDIR => None,
        libc::S_IFIFO => Some("a FIFO"),
        libc::S_IFCHR => Some("a character device"),
        libc::S_IFBLK => Some("a block device"),
        libc::S_IFSOCK => Some("a socket"),
        libc::S_IFLNK => Some("a symbolic link"),
        _ => Some("not a regular file"),
    }
}

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
fn add_inline_writes<T: wasmtime_wasi::WasiView + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::filesystem::Descriptor;
    use wasmtime_wasi::p2::DynOutputStream;
    use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;

    linker.allow_shadowing(true);
    linker.instance(TYPES)?.func_wrap(
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

    fn read_plan() -> OpenPlan {
        OpenRequest {
            read: true,
            follow: true,
            ..OpenRequest::default()
        }
        .plan(FsPerms::ReadOnly)
        .unwrap()
    }

    /// A FIFO that appears after the look (here: the look is skipped) is
    /// opened without blocking and refused; a regular file beside it opens
    /// for ordinary blocking I/O.
    #[test]
    fn the_open_itself_never_blocks_on_a_fifo() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = std::ffi::CString::new(dir.path().join("p").as_os_str().as_bytes()).unwrap();
        // SAFETY: a plain system call on a path we own.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let handle = std::fs::File::open(dir.path()).unwrap();
        let plan = read_plan();
        for (name, look) in [("p", false), ("p", true)] {
            let r = if look {
                open_regular(&handle, name, &plan.options, true)
            } else {
                open_checked(&handle, name, &plan.options)
            };
            assert!(matches!(r, Err(Refused::Special("a FIFO"))), "{r:?}");
        }
        let Ok(Opened::File(f)) = open_regular(&handle, "f", &plan.options, true) else {
            panic!("the regular file did not open");
        };
        let flags = rustix::fs::fcntl_getfl(&f).unwrap();
        assert!(!flags.contains(rustix::fs::OFlags::NONBLOCK));
        assert!(matches!(
            open_regular(&handle, ".", &plan.options, true),
            Ok(Opened::Dir(_))
        ));
    }

    /// wasmtime-wasi's own refusals, before anything is opened.
    #[test]
    fn plans_refuse_as_wasmtime_wasi_does() {
        use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;
        let write = OpenRequest {
            write: true,
            ..OpenRequest::default()
        };
        assert!(matches!(
            write.plan(FsPerms::ReadOnly),
            Err(ErrorCode::NotPermitted)
        ));
        assert!(write.plan(FsPerms::ReadWrite).is_ok());
        let create_dir = OpenRequest {
            directory: true,
            create: true,
            ..OpenRequest::default()
        };
        assert!(matches!(
            create_dir.plan(FsPerms::ReadWrite),
            Err(ErrorCode::Invalid)
        ));
        let sync = OpenRequest {
            sync: true,
            ..OpenRequest::default()
        };
        assert!(matches!(
            sync.plan(FsPerms::ReadWrite),
            Err(ErrorCode::Unsupported)
        ));
    }

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
