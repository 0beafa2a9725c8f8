//! The lockfile: which artifact each pulled repository stands for on this
//! machine. A reference whose repository is locked resolves to the locked
//! digest, from the local store, without asking any registry; only `pull`
//! changes an entry, and only after checking what changed.
//!
//! ```toml
//! version = 1
//!
//! [skills."127.0.0.1:5000/acme/hello"]
//! tag = "1"
//! digest = "sha256:…"          # the artifact (component + skill.toml)
//! name = "hello"               # the skill's name, from its skill.toml
//! key = "sha256:…"             # the signing key's fingerprint, if signed
//! publisher = "acme"           # the trusted publisher, if its key is trusted
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lockfile's name in the store.
pub const LOCK_FILE: &str = "skillbox.lock";

/// The lockfile's format version.
const VERSION: u32 = 1;

/// The whole lockfile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Lockfile {
    /// Format version (1).
    pub version: u32,
    /// Locked skills, by repository (`HOST:PORT/REPO`).
    #[serde(default)]
    pub skills: BTreeMap<String, Locked>,
}

/// One locked repository.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Locked {
    /// The tag it was pulled by, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `sha256:…` of the artifact.
    pub digest: String,
    /// The skill's name.
    pub name: String,
    /// The signing key's fingerprint, if the artifact was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The trusted publisher who signed it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
}

impl Lockfile {
    /// Reads the lockfile at `path` (empty if there is none).
    pub fn read(path: &Path) -> Result<Lockfile, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Lockfile {
                    version: VERSION,
                    skills: BTreeMap::new(),
                });
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let lock: Lockfile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if lock.version != VERSION {
            return Err(format!(
                "{}: version {} (this skillbox reads version {VERSION})",
                path.display(),
                lock.version
            ));
        }
        Ok(lock)
    }

    /// Writes it to `path`, whole or not at all.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let text = format!(
            "# Written by `skillbox pull`: the artifact each repository stands for here.\n\
             # `run` and `spawn` use exactly these; change them with `skillbox pull`.\n{}",
            toml::to_string(self).map_err(|e| e.to_string())?
        );
        let tmp: PathBuf = path.with_extension("lock.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lockfile_round_trips_and_refuses_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let mut lock = Lockfile::read(&path).unwrap();
        lock.skills.insert(
            "127.0.0.1:5000/acme/hello".into(),
            Locked {
                tag: Some("1".into()),
                digest: "sha256:00".into(),
                name: "hello".into(),
                key: None,
                publisher: None,
            },
        );
        lock.write(&path).unwrap();
        assert_eq!(Lockfile::read(&path).unwrap(), lock);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}extra = 1\n")).unwrap();
        assert!(Lockfile::read(&path).unwrap_err().contains("unknown field"));
    }
}
