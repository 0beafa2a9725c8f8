//! The operator's trust policy: whether a skill must be signed by a
//! trusted key to run, and which skills each trusted publisher may vouch
//! for. It lives beside the trusted keys, in the key store's `trust.toml`:
//!
//! ```toml
//! # Refuse unsigned skills, skills signed by keys not trusted here, and
//! # skills whose signature does not hold (run, spawn, catalog, MCP, API).
//! require-signature = true
//!
//! # A trusted publisher (trusted/acme.pub) may sign only these skills
//! # (names or `*`/`?` patterns); a publisher not listed may sign any.
//! [publishers.acme]
//! skills = ["acme-*", "upgrade"]
//! ```
//!
//! A signature whose key is trusted but which does not hold (the skill
//! changed since it was signed) is refused whether signatures are required
//! or not: it is the one verdict that shows tampering.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::keys::{KeyError, KeyStore};
use super::{Verdict, verify};
use crate::policy::pattern::glob_match;
use crate::skill::SkillSource;

/// The file of the key store that holds the policy.
pub const TRUST_FILE: &str = "trust.toml";

/// `trust.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrustConfig {
    /// Refuse skills that are not signed by a trusted key.
    #[serde(default)]
    pub require_signature: bool,
    /// What each trusted publisher may sign, by its name in the store.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub publishers: BTreeMap<String, PublisherScope>,
}

/// The skills one publisher's key may sign.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherScope {
    /// Skill names or patterns (`*` any run of characters, `?` one).
    pub skills: Vec<String>,
}

impl PublisherScope {
    /// Whether the scope covers the skill `name`.
    pub fn covers(&self, name: &str) -> bool {
        self.skills.iter().any(|p| glob_match(p, name))
    }
}

/// The trust policy in force: the trusted keys and `trust.toml`.
#[derive(Clone, Debug, Default)]
pub struct TrustPolicy {
    /// The key store; none trusts no key.
    keys: Option<KeyStore>,
    /// Its `trust.toml` (the default if it has none).
    config: TrustConfig,
}

/// A skill the trust policy refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl TrustPolicy {
    /// The policy of the key store `keys`: its trusted keys and its
    /// `trust.toml`, checked (a publisher's scope must name a trusted key).
    pub fn load(keys: KeyStore) -> Result<TrustPolicy, KeyError> {
        let path = keys.dir().join(TRUST_FILE);
        let config = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str::<TrustConfig>(&text)
                .map_err(|e| KeyError::Malformed(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => TrustConfig::default(),
            Err(source) => return Err(KeyError::Io { path, source }),
        };
        let trusted = keys.trusted()?;
        for name in config.publishers.keys() {
            if !trusted.iter().any(|(n, _)| n == name) {
                return Err(KeyError::Malformed(format!(
                    "{}: [publishers.{name}] names no trusted key (trust it first with \
                     `skillbox keys trust FILE --name {name}`)",
                    path.display()
                )));
            }
        }
        Ok(TrustPolicy {
            keys: Some(keys),
            config,
        })
    }

    /// A policy of its own (for embedders and tests): `config` over the
    /// trusted keys of `keys`, checked only as it is used.
    pub fn new(keys: Option<KeyStore>, config: TrustConfig) -> TrustPolicy {
        TrustPolicy { keys, config }
    }

    /// What the policy says.
    pub fn config(&self) -> &TrustConfig {
        &self.config
    }

    /// Where `trust.toml` is (or would be).
    pub fn file(&self) -> Option<PathBuf> {
        self.keys.as_ref().map(|k| k.dir().join(TRUST_FILE))
    }

    /// The verdict on `source`'s signature under this policy: a trusted
    /// key whose scope does not cover the skill counts as not trusted for
    /// it.
    pub fn verdict(&self, source: &SkillSource) -> Result<Verdict, KeyError> {
        let Some(keys) = &self.keys else {
            return Ok(
                match super::artifact_of(source)?.map(|(_, dir)| super::SkillSignature::read(&dir))
                {
                    Some(Ok(Some(s))) => Verdict::Untrusted { key: s.key },
                    Some(Err(e)) => Verdict::Invalid {
                        reason: e.to_string(),
                    },
                    _ => Verdict::Unsigned,
                },
            );
        };
        let verdict = verify(source, keys)?;
        if let Verdict::Trusted { publisher, signed } = &verdict
            && let Some(scope) = self.config.publishers.get(publisher)
            && !scope.covers(&source.name)
        {
            return Ok(Verdict::OutOfScope {
                publisher: publisher.clone(),
                key: signed.key.clone(),
                skills: scope.skills.clone(),
            });
        }
        Ok(verdict)
    }

    /// Whether `source` may run: its verdict, or why not. Refused: a
    /// signature that does not hold, always; with `require-signature`, an
    /// unsigned skill, a key not trusted, a publisher outside its scope.
    pub fn admit(&self, source: &SkillSource) -> Result<Verdict, Refused> {
        let verdict = self.verdict(source).map_err(|e| {
            Refused(format!(
                "skill {}: checking its signature: {e}",
                source.name
            ))
        })?;
        let why = match &verdict {
            Verdict::Trusted { .. } => return Ok(verdict),
            Verdict::Invalid { reason } => format!(
                "its signature does not hold ({reason}); refusing a skill that changed since \
                 it was signed: get it again from its publisher, or re-sign it if you changed it \
                 (`skillbox sign`)"
            ),
            _ if !self.config.require_signature => return Ok(verdict),
            Verdict::Unsigned => "it is not signed, and this host requires a signature by a \
                 trusted key; ask its publisher for a signed skill (`skillbox sign`), or sign it \
                 with your own trusted key after reviewing it"
                .to_string(),
            Verdict::Untrusted { key } => format!(
                "it is signed by the key {key}, which this host does not trust, and this host \
                 requires a signature by a trusted key; if you trust its publisher, trust the \
                 public key: `skillbox keys trust PUBLIC-KEY.pem --name PUBLISHER` (the file's \
                 fingerprint must be {key})"
            ),
            Verdict::OutOfScope {
                publisher, skills, ..
            } => format!(
                "it is signed by {publisher}, who is trusted only for the skills {} \
                 ([publishers.{publisher}] of {}); add this skill's name there if {publisher} \
                 may vouch for it",
                skills.join(", "),
                self.file()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| TRUST_FILE.into())
            ),
        };
        Err(Refused(format!("skill {} refused: {why}", source.name)))
    }

    /// Whether unsigned or untrusted skills are refused.
    pub fn requires_signature(&self) -> bool {
        self.config.require_signature
    }
}

/// Changes the `trust.toml` of `keys` by `edit`, keeping the operator's
/// comments and layout, and checks the result.
fn edit_file(
    keys: &KeyStore,
    edit: impl FnOnce(&mut toml_edit::DocumentMut),
) -> Result<TrustConfig, KeyError> {
    let path = keys.dir().join(TRUST_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(KeyError::Io { path, source }),
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| KeyError::Malformed(format!("{}: {e}", path.display())))?;
    edit(&mut doc);
    let text = doc.to_string();
    let config: TrustConfig = toml::from_str(&text)
        .map_err(|e| KeyError::Malformed(format!("{}: {e}", path.display())))?;
    std::fs::create_dir_all(keys.dir()).map_err(|source| KeyError::Io {
        path: keys.dir().to_owned(),
        source,
    })?;
    // Whole or not at all: a torn trust.toml would stop every daemon.
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| KeyError::Io { path, source })?;
    Ok(config)
}

/// Sets `require-signature` in the `trust.toml` of `keys`.
pub fn set_require_signature(keys: &KeyStore, on: bool) -> Result<TrustConfig, KeyError> {
    edit_file(keys, |doc| {
        doc["require-signature"] = toml_edit::value(on);
    })
}

/// Limits the trusted publisher `publisher` to the skills `skills` (names
/// or patterns) in the `trust.toml` of `keys`; `None` lifts the limit.
pub fn set_scope(
    keys: &KeyStore,
    publisher: &str,
    skills: Option<&[String]>,
) -> Result<TrustConfig, KeyError> {
    edit_file(keys, |doc| {
        let publishers = doc.entry("publishers").or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        });
        if let Some(table) = publishers.as_table_like_mut() {
            match skills {
                Some(skills) => {
                    let mut t = toml_edit::Table::new();
                    t["skills"] = toml_edit::value(skills.iter().collect::<toml_edit::Array>());
                    table.insert(publisher, toml_edit::Item::Table(t));
                }
                None => {
                    table.remove(publisher);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_covers_names_and_patterns_only() {
        let s = PublisherScope {
            skills: vec!["acme-*".into(), "upgrade".into()],
        };
        assert!(s.covers("acme-backup"));
        assert!(s.covers("upgrade"));
        assert!(!s.covers("upgrade2"));
        assert!(!s.covers("other"));
    }

    #[test]
    fn unknown_keys_in_trust_toml_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TRUST_FILE), "require-signatures = true\n").unwrap();
        let e = TrustPolicy::load(KeyStore::at(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `require-signatures`"), "{e}");
        std::fs::write(
            dir.path().join(TRUST_FILE),
            "require-signature = true\n[publishers.nobody]\nskills = [\"*\"]\n",
        )
        .unwrap();
        let e = TrustPolicy::load(KeyStore::at(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("names no trusted key"), "{e}");
    }

    #[test]
    fn edits_keep_the_operators_comments() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::at(dir.path());
        std::fs::write(
            dir.path().join(TRUST_FILE),
            "# ours, reviewed 2026-12\nrequire-signature = false\n",
        )
        .unwrap();
        let c = set_require_signature(&keys, true).unwrap();
        assert!(c.require_signature);
        let c = set_scope(&keys, "acme", Some(&["acme-*".to_string()])).unwrap();
        assert_eq!(c.publishers["acme"].skills, ["acme-*"]);
        let text = std::fs::read_to_string(dir.path().join(TRUST_FILE)).unwrap();
        assert!(text.starts_with("# ours, reviewed 2026-12\n"), "{text}");
        let c = set_scope(&keys, "acme", None).unwrap();
        assert!(c.publishers.is_empty());
    }
}
