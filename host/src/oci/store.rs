//! Pulled skills on this machine: a content-addressed store of skill
//! directories (`sha256/<hex>/`, one per artifact digest) and the lockfile
//! that says which artifact each repository stands for.
//!
//! A pull is checked whole before anything changes: the artifact's
//! digests (by [`pull_skill`]), its manifest, its signature against the
//! operator's [`TrustPolicy`], and, when the repository is locked at
//! another artifact, what it requests beyond the locked version. Only
//! then is it moved into the store and the lockfile rewritten, so a
//! refused pull, a registry that is down or answers garbage leave both as
//! they were. Resolving a locked reference never talks to a registry.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use super::lock::{LOCK_FILE, Locked, Lockfile};
use super::skill::{PullLimits, Pulled, pull_skill};
use super::{OciError, Reference};
use crate::error::Error;
use crate::policy::{EffectivePolicy, Grants, Manifest};
use crate::skill::SkillSource;
use crate::trust::{SIGNATURE_FILE, SkillSignature, TrustPolicy, Verdict};

/// The store of pulled skills.
#[derive(Clone, Debug)]
pub struct SkillStore {
    dir: PathBuf,
}

/// How a pull may change what is locked.
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// Accept an artifact that requests capabilities the locked version
    /// did not.
    pub accept_new_capabilities: bool,
    /// Accept a locked tag that now names another artifact.
    pub update: bool,
    /// Size limits.
    pub limits: PullLimits,
}

/// What a pull did.
#[derive(Clone, Debug, Serialize)]
pub struct PullReport {
    /// The reference pulled.
    pub reference: String,
    /// The artifact now locked for its repository.
    pub digest: String,
    /// The skill's name.
    pub name: String,
    /// Its signature under the trust policy.
    pub signature: Verdict,
    /// The artifact locked before, if another.
    pub previous: Option<String>,
    /// Capabilities it requests that the previous version did not.
    pub added: Vec<String>,
    /// Whether the lockfile changed.
    pub changed: bool,
    /// The skill's directory in the store.
    pub path: PathBuf,
}

/// A directory a pull is checked in; removed unless moved into place.
struct Staging(PathBuf);

impl Staging {
    fn new(store: &Path) -> Result<Staging, Error> {
        let path = store.join(format!(".pull-{:016x}", fastrand::u64(..)));
        std::fs::create_dir(&path).map_err(io(&path))?;
        Ok(Staging(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// A relative path of normal components only: a skill's manifest names
/// files inside its own directory, never outside.
fn inside(dir: &Path, rel: &Path, what: &str) -> Result<PathBuf, Error> {
    let ok =
        !rel.as_os_str().is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        return Err(Error::Registry(format!(
            "the pulled skill.toml names its {what} {}, outside the skill's directory; refused",
            rel.display()
        )));
    }
    Ok(dir.join(rel))
}

/// What a skill requests, one line per item, for comparing versions.
fn requests(source: &SkillSource) -> BTreeSet<String> {
    let (_, report) = EffectivePolicy::compute(source.manifest.as_ref(), &Grants::default());
    report
        .items
        .iter()
        .map(|i| format!("{} {}", i.capability, i.item))
        .collect()
}

/// How much a verdict vouches for a skill, to pick among signatures.
fn rank(v: &Verdict) -> u8 {
    match v {
        Verdict::Trusted { .. } => 4,
        Verdict::OutOfScope { .. } => 3,
        Verdict::Untrusted { .. } => 2,
        // Above no signature: an attached signature that does not hold
        // must be seen (and refused), not dropped.
        Verdict::Invalid { .. } => 1,
        Verdict::Unsigned => 0,
    }
}

impl From<OciError> for Error {
    fn from(e: OciError) -> Error {
        match e {
            OciError::Unreachable { .. } => Error::Unreachable(e.to_string()),
            e => Error::Registry(e.to_string()),
        }
    }
}

impl SkillStore {
    /// The store in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> SkillStore {
        SkillStore { dir: dir.into() }
    }

    /// `$SKILLBOX_SKILLS_DIR`, else `skillbox/skills` in the user's data
    /// dir (`~/.local/share`).
    pub fn default_location() -> SkillStore {
        match crate::caller::var_os("SKILLBOX_SKILLS_DIR") {
            Some(d) => SkillStore::at(d),
            None => SkillStore::at(
                crate::caller::data_dir()
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join("skillbox/skills"),
            ),
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lockfile's path.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    /// The lockfile.
    pub fn lock(&self) -> Result<Lockfile, Error> {
        Lockfile::read(&self.lock_path()).map_err(Error::Config)
    }

    /// The directory of the artifact `digest` (whether or not it is here).
    pub fn path_of(&self, digest: &str) -> PathBuf {
        self.dir
            .join("sha256")
            .join(digest.strip_prefix("sha256:").unwrap_or(digest))
    }

    /// The skill directory `reference` stands for here, without asking a
    /// registry: by digest, the stored artifact; by tag, the artifact its
    /// repository is locked at, if locked at that tag.
    pub fn resolve(&self, reference: &Reference) -> Result<PathBuf, Error> {
        let repo = reference.repository_name();
        let path = match &reference.digest {
            Some(d) => self.path_of(d),
            None => {
                let lock = self.lock()?;
                let Some(locked) = lock.skills.get(&repo) else {
                    return Err(Error::NotPulled(format!(
                        "{reference} is not pulled here (pull it with `skillbox pull {reference}`)"
                    )));
                };
                if locked.tag.as_deref() != reference.tag.as_deref() {
                    return Err(Error::Locked(format!(
                        "{repo} is locked at {} ({}), not at {reference}: use that, or change \
                         the lock with `skillbox pull {reference}`",
                        locked
                            .tag
                            .as_deref()
                            .map_or(String::new(), |t| format!(":{t}")),
                        locked.digest
                    )));
                }
                self.path_of(&locked.digest)
            }
        };
        if !path.join("skill.toml").is_file() {
            return Err(Error::NotPulled(format!(
                "{reference} is not in the store {} (pull it with `skillbox pull {reference}`)",
                self.dir.display()
            )));
        }
        // The copy must still be the artifact it is stored as: a changed
        // file in the store never runs in its place.
        let source = SkillSource::open(&path, false)?;
        let actual = crate::trust::artifact_of(&source)
            .map_err(|e| Error::Registry(e.to_string()))?
            .map(|(a, _)| a.digest);
        let expected = path
            .file_name()
            .map(|h| format!("sha256:{}", h.to_string_lossy()));
        if actual != expected {
            return Err(Error::Locked(format!(
                "the stored copy of {reference} in {} was changed since it was pulled (it is now                  the artifact {}); refusing to run it: remove that directory and pull again",
                path.display(),
                actual.unwrap_or_default()
            )));
        }
        Ok(path)
    }

    /// Pulls `reference`, checks it (digests, manifest, signature under
    /// `trust`, capabilities beyond the locked version), stores it and
    /// locks its repository at it.
    pub async fn pull(
        &self,
        reference: &Reference,
        trust: &TrustPolicy,
        options: &PullOptions,
    ) -> Result<PullReport, Error> {
        let repo = reference.repository_name();
        let mut lock = self.lock()?;
        let locked = lock.skills.get(&repo).cloned();
        let pulled = pull_skill(reference, &options.limits).await?;
        if let Some(l) = &locked
            && l.digest != pulled.digest
            && reference.digest.is_none()
            && l.tag == reference.tag
            && !options.update
        {
            return Err(Error::Locked(format!(
                "{reference} now names the artifact {}, but this machine locked it at {}: the \
                 tag was moved or the artifact replaced in the registry. Nothing was changed; \
                 to take the new artifact, check with its publisher and pull with --update",
                pulled.digest, l.digest
            )));
        }
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let staging = Staging::new(&self.dir)?;
        let (source, verdict, signature) = materialize(staging.path(), &pulled, trust)?;
        trust.admit(&source)?;
        let mut added = Vec::new();
        if let Some(l) = &locked
            && l.digest != pulled.digest
        {
            let before = SkillSource::open(&self.path_of(&l.digest), false)
                .map(|s| requests(&s))
                .unwrap_or_default();
            added = requests(&source).difference(&before).cloned().collect();
            if !added.is_empty() && !options.accept_new_capabilities {
                return Err(Error::Locked(format!(
                    "{reference} ({}) requests more than the locked version {} of {repo}:\n{}\n\
                     Nothing was changed; if you accept these, pull again with \
                     --accept-new-capabilities",
                    pulled.digest,
                    l.digest,
                    added
                        .iter()
                        .map(|a| format!("  + {a}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )));
            }
        }
        let path = self.path_of(&pulled.digest);
        if !path.join("skill.toml").is_file() {
            std::fs::create_dir_all(path.parent().unwrap_or(&self.dir)).map_err(io(&self.dir))?;
            let _ = std::fs::remove_dir_all(&path);
            std::fs::rename(staging.path(), &path).map_err(io(&path))?;
        } else if let Some(s) = &signature {
            // The stored copy may carry another (or no) signature: keep the
            // one that vouches most.
            let stored = SkillSource::open(&path, false)?;
            if rank(&trust.verdict(&stored).unwrap_or(Verdict::Unsigned)) < rank(&verdict) {
                s.write(&path).map_err(|e| Error::Registry(e.to_string()))?;
            }
        }
        let entry = Locked {
            tag: reference.tag.clone().filter(|_| reference.digest.is_none()),
            digest: pulled.digest.clone(),
            name: source.name.clone(),
            key: signature.as_ref().map(|s| s.key.clone()),
            publisher: match &verdict {
                Verdict::Trusted { publisher, .. } => Some(publisher.clone()),
                _ => None,
            },
        };
        let changed = locked.as_ref() != Some(&entry);
        if changed {
            lock.skills.insert(repo, entry);
            lock.write(&self.lock_path()).map_err(Error::Config)?;
        }
        Ok(PullReport {
            reference: reference.to_string(),
            digest: pulled.digest,
            name: source.name,
            signature: verdict,
            previous: locked.map(|l| l.digest),
            added,
            changed,
            path,
        })
    }
}

/// The store directory an `oci://` reference `path` stands for in the
/// default store (see [`SkillStore::resolve`]); `None` for a path that is
/// not a reference. Never asks a registry.
pub fn local_path(path: &Path) -> Result<Option<PathBuf>, Error> {
    match path.to_str().filter(|s| Reference::is_reference(s)) {
        Some(text) => {
            let reference = Reference::parse(text)?;
            SkillStore::default_location().resolve(&reference).map(Some)
        }
        None => Ok(None),
    }
}

/// Writes the pulled skill into `dir` as a skill directory (skill.toml,
/// its component and input schema where it names them) with the attached
/// signature that vouches most under `trust` as `skill.sig`; the skill as
/// opened from there, that signature's verdict, and the signature.
fn materialize(
    dir: &Path,
    pulled: &Pulled,
    trust: &TrustPolicy,
) -> Result<(SkillSource, Verdict, Option<SkillSignature>), Error> {
    let toml_path = dir.join("skill.toml");
    let manifest = Manifest::parse(&pulled.skill_toml, &toml_path)?;
    std::fs::write(&toml_path, &pulled.skill_toml).map_err(io(&toml_path))?;
    let component = inside(dir, &manifest.skill.component, "component")?;
    let schema = match (&manifest.skill.input_schema, &pulled.input_schema) {
        (Some(rel), Some(text)) => Some((inside(dir, rel, "input schema")?, text)),
        (Some(rel), None) => {
            return Err(Error::Registry(format!(
                "the pulled skill.toml names the input schema {} but the artifact carries none",
                rel.display()
            )));
        }
        _ => None,
    };
    for (path, bytes) in std::iter::once((&component, pulled.component.as_slice()))
        .chain(schema.as_ref().map(|(p, t)| (p, t.as_bytes())))
    {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(path, bytes).map_err(io(path))?;
    }
    let mut best: Option<(Verdict, Option<SkillSignature>)> = None;
    let candidates = std::iter::once(None).chain(pulled.signatures.iter().cloned().map(Some));
    for signature in candidates {
        match &signature {
            Some(s) => s.write(dir).map_err(|e| Error::Registry(e.to_string()))?,
            None => {
                let _ = std::fs::remove_file(dir.join(SIGNATURE_FILE));
            }
        }
        let source = SkillSource::open(dir, false)?;
        let verdict = trust
            .verdict(&source)
            .map_err(|e| Error::Registry(e.to_string()))?;
        if best.as_ref().is_none_or(|(b, _)| rank(&verdict) > rank(b)) {
            best = Some((verdict, signature));
        }
    }
    let (verdict, signature) = best.unwrap_or((Verdict::Unsigned, None));
    match &signature {
        Some(s) => s.write(dir).map_err(|e| Error::Registry(e.to_string()))?,
        None => {
            let _ = std::fs::remove_file(dir.join(SIGNATURE_FILE));
        }
    }
    Ok((SkillSource::open(dir, false)?, verdict, signature))
}
