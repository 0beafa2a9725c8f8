//! A skill to and from a registry: the artifact of
//! [`Artifact::of`](crate::trust::Artifact::of) under a tag, and its
//! signatures in cosign's attachment beside it.
//!
//! A pull accepts only an artifact whose manifest is byte for byte the one
//! skillbox derives from its component and `skill.toml`: so the digest a
//! signature names is the same whether the skill is read from disk or from
//! a registry, and nothing a registry adds (another layer, other
//! annotations) can ride along unsigned.

use serde::Deserialize;

use super::client::{OciError, Registry};
use super::cosign::{self, signature_tag};
use super::reference::Reference;
use crate::trust::SkillSignature;
use crate::trust::artifact::{
    Artifact, CONFIG_MEDIA_TYPE, MANIFEST_ANNOTATION, MANIFEST_MEDIA_TYPE, SCHEMA_ANNOTATION,
    WASM_MEDIA_TYPE,
};

/// Size limits of a pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PullLimits {
    /// Most bytes of a manifest, of the config, and of each signature
    /// payload.
    pub manifest: u64,
    /// Most bytes of the component.
    pub component: u64,
}

impl Default for PullLimits {
    fn default() -> Self {
        PullLimits {
            manifest: 4 << 20,
            component: 256 << 20,
        }
    }
}

/// A pulled skill, every byte of it checked against its digest.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The reference pulled, as asked.
    pub reference: Reference,
    /// `sha256:…` of [`Pulled::manifest`]: the artifact digest.
    pub digest: String,
    /// The artifact's manifest, exactly as the registry served it.
    pub manifest: Vec<u8>,
    /// The wasm config.
    pub config: Vec<u8>,
    /// The component.
    pub component: Vec<u8>,
    /// The skill's `skill.toml`, from the manifest's annotation.
    pub skill_toml: String,
    /// The input schema it names, from the manifest's annotation.
    pub input_schema: Option<String>,
    /// The signatures attached to the artifact (unverified: the caller
    /// checks them against its trusted keys).
    pub signatures: Vec<SkillSignature>,
}

/// The fields of an image manifest a pull looks at, read leniently so that
/// a manifest of another kind is told apart by what it lacks.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Loose {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<LooseDescriptor>,
    #[serde(default)]
    layers: Option<Vec<LooseDescriptor>>,
    #[serde(default)]
    annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LooseDescriptor {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    size: u64,
}

/// Pushes the skill (`component` with `skill_toml` and its input schema)
/// to `to`, with
/// `signature` attached if given, and returns the artifact digest.
///
/// The blobs go first and the manifest last, so a tag never names an
/// artifact whose blobs are missing. `to` with only a digest pushes the
/// manifest under that digest, which must be the artifact's.
pub async fn push_skill(
    to: &Reference,
    component: &[u8],
    skill_toml: &str,
    input_schema: Option<&str>,
    signature: Option<&SkillSignature>,
) -> Result<String, OciError> {
    let registry = Registry::new(&to.registry)?;
    let repo = to.repository.as_str();
    let artifact = Artifact::of(component, skill_toml, input_schema);
    if let Some(d) = &to.digest
        && *d != artifact.digest
    {
        return Err(OciError::DigestMismatch {
            what: format!("the skill to push to {to}"),
            expected: d.clone(),
            actual: artifact.digest,
        });
    }
    // A signature of another artifact would be attached where no verifier
    // could ever accept it: refuse before anything is sent.
    if let Some(s) = signature {
        let bad = |message: String| OciError::Signature {
            reference: to.to_string(),
            message,
        };
        let claims = s.claims().map_err(|e| bad(e.to_string()))?;
        cosign::attachment(std::slice::from_ref(s)).map_err(|e| match e {
            OciError::Signature { message, .. } => bad(message),
            e => e,
        })?;
        let signed = claims.critical.image.docker_manifest_digest;
        if signed != artifact.digest {
            return Err(bad(format!(
                "it signs the artifact {signed}, and the skill pushed is {}: the component or \
                     its skill.toml changed since it was signed; sign it again",
                artifact.digest
            )));
        }
    }
    registry.push_blob(repo, component).await?;
    registry.push_blob(repo, &artifact.config).await?;
    let under = to.tag.as_deref().unwrap_or(&artifact.digest);
    let digest = registry
        .push_manifest(repo, under, MANIFEST_MEDIA_TYPE, &artifact.manifest)
        .await?;
    if digest != artifact.digest {
        return Err(OciError::DigestMismatch {
            what: format!("the manifest pushed to {to}"),
            expected: artifact.digest,
            actual: digest,
        });
    }
    if let Some(s) = signature {
        let tag = signature_tag(&digest);
        let existing = match registry
            .manifest(repo, &tag, PullLimits::default().manifest)
            .await
        {
            Ok((bytes, _, _)) => Some(bytes),
            Err(OciError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let attachment = cosign::with_signature(existing.as_deref(), s)?;
        for layer in &attachment.layers {
            registry.push_blob(repo, layer).await?;
        }
        registry.push_blob(repo, &attachment.config).await?;
        registry
            .push_manifest(repo, &tag, MANIFEST_MEDIA_TYPE, &attachment.manifest)
            .await?;
    }
    Ok(digest)
}

/// Pulls the skill at `from`, checks every byte against its digest and
/// that the artifact is exactly what `skillbox push` stores, and collects
/// its signatures (unverified).
pub async fn pull_skill(from: &Reference, limits: &PullLimits) -> Result<Pulled, OciError> {
    let registry = Registry::new(&from.registry)?;
    let repo = from.repository.as_str();
    let not_a_skill = |message: String| OciError::NotASkill {
        reference: from.to_string(),
        message,
    };
    let (manifest, media_type, digest) = registry
        .manifest(repo, from.manifest_ref(), limits.manifest)
        .await?;
    if media_type != MANIFEST_MEDIA_TYPE {
        return Err(not_a_skill(format!(
            "its manifest is of type {media_type:?}, not a single artifact \
             ({MANIFEST_MEDIA_TYPE})"
        )));
    }
    let m: Loose = serde_json::from_slice(&manifest).map_err(|e| OciError::Garbage {
        what: format!("the manifest of {from}"),
        message: format!(
            "not a JSON manifest ({e}): {}",
            super::client::excerpt(&manifest)
        ),
    })?;
    if m.media_type.as_deref() != Some(MANIFEST_MEDIA_TYPE) {
        return Err(not_a_skill(format!(
            "its manifest's mediaType field is {:?}, not {MANIFEST_MEDIA_TYPE:?}",
            m.media_type
        )));
    }
    let config = m
        .config
        .ok_or_else(|| not_a_skill("its manifest has no config".into()))?;
    if config.media_type != CONFIG_MEDIA_TYPE {
        return Err(not_a_skill(format!(
            "its config is of type {:?}, not {CONFIG_MEDIA_TYPE} (a WebAssembly artifact)",
            config.media_type
        )));
    }
    let layers = m.layers.unwrap_or_default();
    let [layer] = layers.as_slice() else {
        return Err(not_a_skill(format!(
            "it has {} layers; a skill has exactly one, the component ({WASM_MEDIA_TYPE})",
            layers.len()
        )));
    };
    if layer.media_type != WASM_MEDIA_TYPE {
        return Err(not_a_skill(format!(
            "its layer is of type {:?}, not {WASM_MEDIA_TYPE}",
            layer.media_type
        )));
    }
    let mut annotations = m.annotations.unwrap_or_default();
    let input_schema = annotations.remove(SCHEMA_ANNOTATION);
    let skill_toml = annotations.remove(MANIFEST_ANNOTATION).ok_or_else(|| {
        not_a_skill(format!(
            "its manifest has no {MANIFEST_ANNOTATION} annotation (the skill's skill.toml); \
                 push skills with `skillbox push`"
        ))
    })?;
    // Refused before a byte of them is fetched.
    for (d, limit, what) in [
        (&config, limits.manifest, "config"),
        (layer, limits.component, "component"),
    ] {
        if d.size > limit {
            return Err(OciError::TooLarge {
                what: format!("the {what} of {from} ({} bytes)", d.size),
                limit,
            });
        }
    }
    let config = registry.blob(repo, &config.digest, limits.manifest).await?;
    let component = registry.blob(repo, &layer.digest, limits.component).await?;
    let derived = Artifact::of(&component, &skill_toml, input_schema.as_deref());
    if derived.digest != digest {
        return Err(not_a_skill(format!(
            "not pushed by skillbox push: its manifest ({digest}) differs from the one skillbox \
             derives from its component and skill.toml ({}), so a signature could not cover \
             the same bytes; push it again with `skillbox push`",
            derived.digest
        )));
    }
    let signatures = signatures(&registry, repo, &digest, limits.manifest)
        .await
        .map_err(|e| match e {
            // cosign's parser does not know where the attachment came from.
            OciError::Garbage { message, .. } => OciError::Garbage {
                what: format!(
                    "the signature attachment {} of {}",
                    signature_tag(&digest),
                    from.repository_name()
                ),
                message,
            },
            e => e,
        })?;
    Ok(Pulled {
        reference: from.clone(),
        digest,
        manifest,
        config,
        component,
        skill_toml,
        input_schema,
        signatures,
    })
}

/// The signatures attached to the manifest `digest` of `repo`; none if
/// there is no attachment.
async fn signatures(
    registry: &Registry,
    repo: &str,
    digest: &str,
    max: u64,
) -> Result<Vec<SkillSignature>, OciError> {
    let manifest = match registry.manifest(repo, &signature_tag(digest), max).await {
        Ok((bytes, _, _)) => bytes,
        Err(OciError::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut layers = Vec::new();
    for d in cosign::signature_layers(&manifest)? {
        layers.push(match d {
            Some(d) => registry.blob(repo, &d, max).await?,
            None => Vec::new(),
        });
    }
    cosign::signatures_of(&manifest, &layers)
}
