//! Finding a skill on disk: its manifest, its component, and the check that
//! the component is the one the manifest pins.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            check_component_header(&bytes, path)?;
            return Ok(SkillSource {
                name: path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "component".into()),
                manifest: None,
                manifest_path: None,
                component_path: path.to_owned(),
                digest: sha256_hex(&bytes),
                bytes: Arc::new(bytes),
            });
        };
        let manifest = Manifest::load(&manifest_path)?;
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        let component_path = dir.join(&manifest.skill.component);
        let bytes = std::fs::read(&component_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Component {
                path: component_path.clone(),
                message: "not found; build the skill first with `skillbox build`".into(),
            },
            _ => Error::io(&component_path, e),
        })?;
        let digest = sha256_hex(&bytes);
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
            bytes: Arc::new(bytes),
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
