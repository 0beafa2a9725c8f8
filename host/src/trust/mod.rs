//! Who made a skill: signatures over a skill as a whole (its component and
//! its `skill.toml`, through the skill's OCI artifact digest), in cosign's
//! key-pair format, and the keys that make and check them.
//!
//! * [`artifact`]: the skill as an OCI artifact; its digest is what is
//!   signed.
//! * [`signature`]: cosign's simple-signing payload and ECDSA P-256
//!   signature, kept beside a skill as `skill.sig`.
//! * [`keys`]: key pairs and the store of one's own and trusted keys.
//!
//! Why cosign's format rather than a format of our own: a publisher can
//! check a skillbox signature with the tools of the container ecosystem
//! (cosign, or containers/image's `sigstoreSigned` policy), and a key made
//! by `cosign generate-key-pair` (once decrypted to PKCS#8) signs for
//! skillbox; everything verifies offline, with no transparency log.

pub mod artifact;
pub mod keys;
pub mod policy;
pub mod signature;

pub use artifact::Artifact;
pub use keys::{KeyError, KeyInfo, KeyStore, PublicKey, SigningKey};
pub use policy::{Refused, TRUST_FILE, TrustConfig, TrustPolicy, set_require_signature, set_scope};
pub use signature::{SIGNATURE_FILE, Signed, SkillSignature};

use std::path::Path;

use serde::Serialize;

use crate::skill::SkillSource;

/// What a skill's signature comes to, against the trusted keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    /// No `skill.sig` (or a bare component, which has no manifest to sign).
    Unsigned,
    /// Signed by a trusted key, over exactly this component and manifest.
    Trusted {
        /// The name the operator trusts the key under.
        publisher: String,
        /// What the signature says.
        signed: Signed,
    },
    /// Signed by a key that is not trusted (the signature itself was not
    /// checked: any key can sign anything).
    Untrusted {
        /// The signing key's fingerprint, as the signature names it.
        key: String,
    },
    /// Signed by a trusted key whose publisher the trust policy allows only
    /// other skills (`[publishers.NAME] skills` of `trust.toml`).
    OutOfScope {
        /// The publisher's name.
        publisher: String,
        /// The key's fingerprint.
        key: String,
        /// The skills the publisher may sign.
        skills: Vec<String>,
    },
    /// Signed by a trusted key, but the signature does not hold: the skill
    /// changed since, or the signature was forged or damaged.
    Invalid {
        /// What failed.
        reason: String,
    },
}

impl Verdict {
    /// The verdict in words, for `inspect` and refusals.
    pub fn describe(&self) -> String {
        match self {
            Verdict::Unsigned => "unsigned".into(),
            Verdict::Trusted { publisher, signed } => {
                format!("signed by {publisher} ({}), trusted", signed.key)
            }
            Verdict::Untrusted { key } => format!(
                "signed by the key {key}, which is not trusted (trust its publisher's public key \
                 with `skillbox keys trust FILE --name NAME`)"
            ),
            Verdict::OutOfScope {
                publisher,
                key,
                skills,
            } => format!(
                "signed by {publisher} ({key}), who is trusted only for {}",
                skills.join(", ")
            ),
            Verdict::Invalid { reason } => format!("signature INVALID: {reason}"),
        }
    }
}

/// A skill's files as its artifact carries them.
#[derive(Clone, Debug)]
pub struct SkillFiles {
    /// The directory of its `skill.toml` (and of its signature).
    pub dir: std::path::PathBuf,
    /// `skill.toml`, as written.
    pub skill_toml: String,
    /// The input schema `skill.toml` names, if any, as written.
    pub input_schema: Option<String>,
}

/// The files of an opened skill besides its component; `None` for a bare
/// component.
pub fn skill_files(source: &SkillSource) -> Result<Option<SkillFiles>, KeyError> {
    let Some(path) = &source.manifest_path else {
        return Ok(None);
    };
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| KeyError::Io {
            path: path.to_owned(),
            source: e,
        })
    };
    let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
    let input_schema = match source
        .manifest
        .as_ref()
        .and_then(|m| m.skill.input_schema.as_ref())
    {
        Some(rel) => Some(read(&dir.join(rel))?),
        None => None,
    };
    Ok(Some(SkillFiles {
        skill_toml: read(path)?,
        input_schema,
        dir,
    }))
}

/// The artifact of an opened skill (its component, its `skill.toml` and
/// input schema as read from disk) and the directory its signature lives
/// in. `None` for a bare component.
pub fn artifact_of(
    source: &SkillSource,
) -> Result<Option<(Artifact, std::path::PathBuf)>, KeyError> {
    Ok(skill_files(source)?.map(|f| {
        (
            Artifact::of(&source.bytes, &f.skill_toml, f.input_schema.as_deref()),
            f.dir,
        )
    }))
}

/// Checks `source`'s signature (`skill.sig` beside its manifest) against
/// the trusted keys of `keys`.
pub fn verify(source: &SkillSource, keys: &KeyStore) -> Result<Verdict, KeyError> {
    let Some((artifact, dir)) = artifact_of(source)? else {
        return Ok(Verdict::Unsigned);
    };
    let signature = match SkillSignature::read(&dir) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(Verdict::Unsigned),
        Err(e) => {
            return Ok(Verdict::Invalid {
                reason: e.to_string(),
            });
        }
    };
    let trusted = keys.trusted()?;
    let Some((publisher, key)) = trusted
        .iter()
        .find(|(_, k)| k.fingerprint() == signature.key)
    else {
        return Ok(Verdict::Untrusted { key: signature.key });
    };
    Ok(match signature.verify(key, &artifact.digest) {
        Ok(signed) => Verdict::Trusted {
            publisher: publisher.clone(),
            signed,
        },
        Err(e) => Verdict::Invalid {
            reason: e.to_string(),
        },
    })
}

/// Signs `source` with `key` (under `reference`, by default the skill's
/// name) and writes `skill.sig` beside its manifest. Refuses a key file
/// inside the skill's directory: a private key must never ship with a
/// skill.
pub fn sign(
    source: &SkillSource,
    key: &SigningKey,
    reference: Option<&str>,
) -> Result<SkillSignature, KeyError> {
    let Some((artifact, dir)) = artifact_of(source)? else {
        return Err(KeyError::Malformed(format!(
            "{} is a bare component: only a skill with a skill.toml can be signed",
            source.component_path.display()
        )));
    };
    let signature = SkillSignature::sign(key, reference.unwrap_or(&source.name), &artifact.digest);
    signature.write(&dir)?;
    Ok(signature)
}
