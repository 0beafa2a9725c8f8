//! A skill's signature, in cosign's key-pair format: an ECDSA P-256
//! signature (ASN.1 DER, base64) over cosign's "simple signing" payload,
//! which names the skill artifact's manifest digest
//! ([`Artifact`](super::artifact::Artifact)). Beside a skill it is the file
//! `skill.sig`; in a registry, cosign's signature attachment.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::keys::{KeyError, PublicKey, SigningKey};

/// The file a skill directory keeps its signature in.
pub const SIGNATURE_FILE: &str = "skill.sig";

/// The payload's `type`.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";

/// Cosign's simple-signing payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// What is signed.
    pub critical: Critical,
    /// Free annotations (none are written).
    #[serde(default)]
    pub optional: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The signed claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Critical {
    /// Where the artifact lives.
    pub identity: Identity,
    /// Which artifact.
    pub image: Image,
    /// [`PAYLOAD_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
}

/// The artifact's reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// A repository reference (`host/repo`), or the skill's name for a
    /// skill signed before it was pushed anywhere.
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

/// The artifact's digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:…` of the artifact's manifest.
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// A signature as stored beside a skill (`skill.sig`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillSignature {
    /// The payload's bytes, base64: exactly what was signed.
    pub payload: String,
    /// Base64 of the DER ECDSA P-256 signature over the payload.
    pub signature: String,
    /// [`PublicKey::fingerprint`] of the key that signed.
    pub key: String,
}

/// What a verified signature says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Signed {
    /// The artifact digest it covers.
    pub digest: String,
    /// The reference it names.
    pub reference: String,
    /// The signing key's fingerprint.
    pub key: String,
}

impl SkillSignature {
    /// Signs the artifact `digest` (at `reference`) with `key`.
    pub fn sign(key: &SigningKey, reference: &str, digest: &str) -> SkillSignature {
        let payload = Payload {
            critical: Critical {
                identity: Identity {
                    docker_reference: reference.into(),
                },
                image: Image {
                    docker_manifest_digest: digest.into(),
                },
                kind: PAYLOAD_TYPE.into(),
            },
            optional: None,
        };
        let bytes = serde_json::to_vec(&payload).unwrap_or_default();
        SkillSignature {
            signature: key.sign(&bytes),
            payload: STANDARD.encode(&bytes),
            key: key.public().fingerprint(),
        }
    }

    /// The payload's bytes.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, KeyError> {
        STANDARD
            .decode(self.payload.trim())
            .map_err(|e| KeyError::Malformed(format!("the signature's payload is not base64: {e}")))
    }

    /// What the payload claims, unverified.
    pub fn claims(&self) -> Result<Payload, KeyError> {
        let payload: Payload = serde_json::from_slice(&self.payload_bytes()?).map_err(|e| {
            KeyError::Malformed(format!(
                "the signature's payload is not a simple-signing payload: {e}"
            ))
        })?;
        if payload.critical.kind != PAYLOAD_TYPE {
            return Err(KeyError::Malformed(format!(
                "the signature's payload is of type {:?}, not {PAYLOAD_TYPE:?}",
                payload.critical.kind
            )));
        }
        Ok(payload)
    }

    /// Checks the signature with `key` and that it covers `digest`.
    pub fn verify(&self, key: &PublicKey, digest: &str) -> Result<Signed, KeyError> {
        let payload = self.claims()?;
        key.verify(&self.payload_bytes()?, &self.signature)?;
        let signed = &payload.critical.image.docker_manifest_digest;
        if signed != digest {
            return Err(KeyError::BadSignature(format!(
                "{} (it signs the artifact {signed}, and this skill is {digest}: the component or \
                 its skill.toml changed since it was signed)",
                key.fingerprint()
            )));
        }
        Ok(Signed {
            digest: digest.into(),
            reference: payload.critical.identity.docker_reference,
            key: key.fingerprint(),
        })
    }

    /// Reads `dir`'s `skill.sig`, if it has one.
    pub fn read(dir: &Path) -> Result<Option<SkillSignature>, KeyError> {
        let path = dir.join(SIGNATURE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(KeyError::Io { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| KeyError::Malformed(format!("{}: {e}", path.display())))
    }

    /// Writes it as `dir`'s `skill.sig`.
    pub fn write(&self, dir: &Path) -> Result<(), KeyError> {
        let path = dir.join(SIGNATURE_FILE);
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        std::fs::write(&path, text).map_err(|source| KeyError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_for_its_digest_and_key_only() {
        let key = SigningKey::generate();
        let s = SkillSignature::sign(&key, "hello", "sha256:aa");
        let signed = s.verify(&key.public(), "sha256:aa").unwrap();
        assert_eq!(signed.reference, "hello");
        let e = s
            .verify(&key.public(), "sha256:bb")
            .unwrap_err()
            .to_string();
        assert!(e.contains("changed since it was signed"), "{e}");
        assert!(
            s.verify(&SigningKey::generate().public(), "sha256:aa")
                .is_err()
        );
        // A payload changed after signing no longer verifies.
        let mut forged = s.clone();
        let other = SkillSignature::sign(&key, "hello", "sha256:bb");
        forged.payload = other.payload;
        assert!(matches!(
            forged.verify(&key.public(), "sha256:bb"),
            Err(KeyError::BadSignature(_))
        ));
        // The payload is cosign's.
        let p: serde_json::Value = serde_json::from_slice(&s.payload_bytes().unwrap()).unwrap();
        assert_eq!(p["critical"]["type"], PAYLOAD_TYPE);
        assert_eq!(
            p["critical"]["image"]["docker-manifest-digest"],
            "sha256:aa"
        );
    }
}
