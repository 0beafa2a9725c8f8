//! Finding a skill on disk: its manifest, its component, and the check that
//! the component is the one the manifest pins.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::policy::Manifest;

/// A skill (or a bare component) read from disk and verified.
#[derive(Clone, Debug)]
pub struct SkillSource {
    /// The skill's name (the manifest's, or the component's file stem).
    pub name: String,
    /// The manifest, unless this is a bare component.
    pub manifest: Option<Manifest>,
    /// Where the manifest was read from.
    pub manifest_path: Option<PathBuf>,
    /// Where the component was read from.
    pub component_path: PathBuf,
    /// The component's bytes.
    pub bytes: Arc<Vec<u8>>,
    /// Hex sha256 of `bytes`.
    pub digest: String,
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What identifies a file's content without reading it: a write changes
/// its size or its change time (which no caller can set back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Components already read and hashed, by path: a task is checked when it is
/// spawned and again when it runs, and hashing the same component thousands
/// of times was most of a no-op task's cost.
static READ: LazyLock<Mutex<HashMap<PathBuf, Verified>>> = LazyLock::new(Mutex::default);

/// A component as read and hashed: (identity then, digest, bytes).
type Verified = (FileId, String, Arc<Vec<u8>>);

/// A file changed this recently is not trusted to the cache: the kernel's
/// timestamps are coarse, so a second write within the same tick would not
/// change them (git's "racily clean" problem).
const SETTLED: Duration = Duration::from_secs(2);

/// The component's bytes and digest, from the cache when the file is
/// unchanged since it was hashed. What the cache returns is what was
/// hashed, so the digest always describes the bytes that run.
fn read_component(path: &Path) -> std::io::Result<(Arc<Vec<u8>>, String)> {
    let id = FileId::of(&std::fs::metadata(path)?);
    let cache = READ.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((cached, digest, bytes)) = cache.get(path)
        && *cached == id
    {
        return Ok((bytes.clone(), digest.clone()));
    }
    drop(cache);
    let bytes = Arc::new(std::fs::read(path)?);
    let digest = sha256_hex(&bytes);
    let after = std::fs::metadata(path)?;
    // The change time, which (unlike the modification time) cannot be set.
    let changed = SystemTime::UNIX_EPOCH
        + Duration::new(after.ctime().max(0) as u64, after.ctime_nsec() as u32);
    let settled = SystemTime::now()
        .duration_since(changed)
        .is_ok_and(|age| age >= SETTLED);
    if FileId::of(&after) == id && bytes.len() as u64 == id.len && settled {
        let mut cache = READ.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(path.to_owned(), (id, digest.clone(), bytes.clone()));
    }
    Ok((bytes, digest))
}

/// Checks the WebAssembly header: a component, not a core module or garbage.
pub fn check_component_header(bytes: &[u8], path: &Path) -> Result<(), Error> {
    let err = |message: String| Error::Component {
        path: path.to_owned(),
        message,
    };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(err("not a WebAssembly file (no \\0asm header)".into()));
    }
    match &bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(err(
            "this is a core WebAssembly module, not a component; build for the \
             wasm32-wasip2 target (or wrap it with `wasm-tools component new`)"
                .into(),
        )),
        v => Err(err(format!(
            "unsupported WebAssembly version/layer {v:02x?}"
        ))),
    }
}

impl SkillSource {
    /// Opens `path`: a skill directory (holding `skill.toml`), a `skill.toml`,
    /// or a bare `.wasm` component (which then runs with exactly the
    /// operator's grants). A manifest whose digest is empty is refused unless
    /// `allow_unpinned`; a digest that does not match is always refused.
    pub fn open(path: &Path, allow_unpinned: bool) -> Result<SkillSource, Error> {
        let manifest_path = if path.is_dir() {
            Some(path.join("skill.toml"))
        } else if path.extension().is_some_and(|e| e == "toml") {
            Some(path.to_owned())
        } else {
            None
        };
        let Some(manifest_path) = manifest_path else {
            let (bytes, digest) = read_component(path).map_err(|e| Error::io(path, e))?;
            check_component_header(&bytes, path)?;
            return Ok(SkillSource {
                name: path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "component".into()),
                manifest: None,
                manifest_path: None,
                component_path: path.to_owned(),
                digest,
                bytes,
            });
        };
        let manifest = Manifest::load(&manifest_path)?;
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        let component_path = dir.join(&manifest.skill.component);
        let (bytes, digest) = read_component(&component_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Component {
                path: component_path.clone(),
                message: "not found; build the skill first with `skillbox build`".into(),
            },
            _ => Error::io(&component_path, e),
        })?;
        let pinned = &manifest.skill.sha256;
        if pinned.is_empty() {
            if !allow_unpinned {
                return Err(Error::Unpinned {
                    path: manifest_path,
                });
            }
        } else if !pinned.eq_ignore_ascii_case(&digest) {
            return Err(Error::DigestMismatch {
                path: component_path,
                expected: pinned.clone(),
                actual: digest,
            });
        }
        check_component_header(&bytes, &component_path)?;
        Ok(SkillSource {
            name: manifest.skill.name.clone(),
            manifest: Some(manifest),
            manifest_path: Some(manifest_path),
            component_path,
            bytes,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_component_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.wasm");
        std::fs::write(&p, b"\0asm\x0d\x00\x01\x00one").unwrap();
        let (bytes, d1) = read_component(&p).unwrap();
        assert_eq!(d1, sha256_hex(&bytes));
        // Just written: not trusted to the cache, so even a same-size
        // rewrite within the kernel's timestamp tick is seen.
        std::fs::write(&p, b"\0asm\x0d\x00\x01\x00two").unwrap();
        let (bytes, d2) = read_component(&p).unwrap();
        assert_eq!(&bytes[8..], b"two");
        assert_ne!(d1, d2);
        assert!(!READ.lock().unwrap().contains_key(&p));
    }

    #[test]
    fn headers() {
        let p = Path::new("x.wasm");
        assert!(check_component_header(b"\0asm\x0d\x00\x01\x00rest", p).is_ok());
        let e = check_component_header(b"\0asm\x01\x00\x00\x00", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("core WebAssembly module"), "{e}");
        let e = check_component_header(b"#!/bin/sh\necho hi\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a WebAssembly file"), "{e}");
    }
}
