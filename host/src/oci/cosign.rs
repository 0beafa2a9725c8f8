//! cosign's key-pair signature attachment (`tests/oci/README.md`, "The
//! signature"): an OCI image manifest tagged `sha256-<hex>.sig` beside the
//! signed artifact, one `simplesigning` layer per signature, the layer
//! being the payload and its annotation the base64 DER signature. Written
//! field for field as cosign writes it, so that cosign and containers/image
//! find and read what skillbox attaches, and skillbox reads theirs.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::client::OciError;
use crate::skill::sha256_hex;
use crate::trust::SkillSignature;
use crate::trust::artifact::MANIFEST_MEDIA_TYPE;

/// The layer annotation holding the base64 DER signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The layer annotation holding the signing key's fingerprint
/// ([`SkillSignature::key`]); skillbox's addition, ignored by cosign.
pub const KEY_ANNOTATION: &str = "dev.skillbox.key";
/// The media type of a signature layer (its bytes are the payload).
pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The attachment's config media type.
pub const IMAGE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// cosign's zero time, in its config.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The tag of the signature attachment of the manifest `digest`:
/// `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// A signature attachment, ready to push: its blobs, then its manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The config blob.
    pub config: Vec<u8>,
    /// The attachment's manifest (an OCI image manifest).
    pub manifest: Vec<u8>,
    /// The payloads of the signatures this attachment adds, one per
    /// signature, in manifest order (for [`with_signature`], only the new
    /// one: the others are in the registry already).
    pub layers: Vec<Vec<u8>>,
}

/// The attachment's manifest. Field order is cosign's (Go's struct order).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigManifest {
    schema_version: u32,
    #[serde(default)]
    media_type: String,
    config: SigDescriptor,
    #[serde(default)]
    layers: Vec<SigDescriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigDescriptor {
    media_type: String,
    size: u64,
    digest: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    /// Fields skillbox does not write (`urls`, `data`, …), kept as they
    /// were in another tool's signature.
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// cosign's config of a signature image. No verifier reads it.
#[derive(Serialize)]
struct SigConfig {
    architecture: &'static str,
    created: &'static str,
    history: Vec<History>,
    os: &'static str,
    rootfs: RootFs,
    config: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct History {
    created: &'static str,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

/// The attachment carrying `signatures`, one layer each.
pub fn attachment(signatures: &[SkillSignature]) -> Result<Attachment, OciError> {
    let mut layers = Vec::new();
    let mut descriptors = Vec::new();
    for s in signatures {
        let (payload, descriptor) = layer_of(s)?;
        layers.push(payload);
        descriptors.push(descriptor);
    }
    let (config, manifest) = assemble(descriptors);
    Ok(Attachment {
        config,
        manifest,
        layers,
    })
}

/// The attachment `existing` (the manifest now in the registry, if any)
/// with `signature` added: a signature by the same key is replaced, those
/// by other keys (or by tools that name no key) are kept as they are.
pub fn with_signature(
    existing: Option<&[u8]>,
    signature: &SkillSignature,
) -> Result<Attachment, OciError> {
    let mut descriptors = match existing {
        Some(bytes) => parse(bytes)?.layers,
        None => Vec::new(),
    };
    descriptors.retain(|d| {
        d.media_type != SIMPLESIGNING_MEDIA_TYPE
            || signature.key.is_empty()
            || d.annotations.get(KEY_ANNOTATION) != Some(&signature.key)
    });
    let (payload, descriptor) = layer_of(signature)?;
    descriptors.push(descriptor);
    let (config, manifest) = assemble(descriptors);
    Ok(Attachment {
        config,
        manifest,
        layers: vec![payload],
    })
}

/// The digests of the signature layers of the attachment `manifest`, in
/// manifest order; `None` for a layer of another media type (not a
/// signature, and not to be fetched).
pub fn signature_layers(manifest: &[u8]) -> Result<Vec<Option<String>>, OciError> {
    Ok(parse(manifest)?
        .layers
        .into_iter()
        .map(|d| (d.media_type == SIMPLESIGNING_MEDIA_TYPE).then_some(d.digest))
        .collect())
}

/// The signatures in the attachment `manifest`, whose layers' bytes are
/// `layers` (in manifest order; an entry for a layer of another media type
/// is not read and may be empty). A signature layer without a signature
/// annotation is skipped; one whose bytes are not its digest's is an
/// error.
pub fn signatures_of(manifest: &[u8], layers: &[Vec<u8>]) -> Result<Vec<SkillSignature>, OciError> {
    let m = parse(manifest)?;
    let mut signatures = Vec::new();
    for (i, d) in m.layers.iter().enumerate() {
        if d.media_type != SIMPLESIGNING_MEDIA_TYPE {
            continue;
        }
        let bytes = layers.get(i).ok_or_else(|| OciError::Garbage {
            what: "a signature attachment".into(),
            message: format!("the payload of its layer {i} ({}) is missing", d.digest),
        })?;
        let actual = format!("sha256:{}", sha256_hex(bytes));
        if actual != d.digest {
            return Err(OciError::DigestMismatch {
                what: format!("signature layer {i} of a signature attachment"),
                expected: d.digest.clone(),
                actual,
            });
        }
        let Some(signature) = d.annotations.get(SIGNATURE_ANNOTATION) else {
            continue;
        };
        signatures.push(SkillSignature {
            payload: STANDARD.encode(bytes),
            signature: signature.clone(),
            key: d
                .annotations
                .get(KEY_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
        });
    }
    Ok(signatures)
}

fn parse(manifest: &[u8]) -> Result<SigManifest, OciError> {
    let garbage = |message: String| OciError::Garbage {
        what: "a signature attachment".into(),
        message,
    };
    let m: SigManifest = serde_json::from_slice(manifest).map_err(|e| {
        garbage(format!(
            "not an OCI image manifest ({e}): {}",
            super::client::excerpt(manifest)
        ))
    })?;
    if m.schema_version != 2 || m.media_type != MANIFEST_MEDIA_TYPE {
        return Err(garbage(format!(
            "its manifest is of type {:?} (schema version {}), not {MANIFEST_MEDIA_TYPE} as \
             cosign and containers/image require; delete the tag to sign again",
            m.media_type, m.schema_version
        )));
    }
    Ok(m)
}

/// A signature's payload and its layer descriptor.
fn layer_of(s: &SkillSignature) -> Result<(Vec<u8>, SigDescriptor), OciError> {
    let bad = |message: String| OciError::Signature {
        reference: format!("key {:?}", s.key),
        message,
    };
    let payload = s.payload_bytes().map_err(|e| bad(e.to_string()))?;
    // cosign and containers/image read only standard, padded base64.
    STANDARD
        .decode(&s.signature)
        .map_err(|e| bad(format!("the signature is not standard base64 ({e})")))?;
    let mut annotations = BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), s.signature.clone())]);
    if !s.key.is_empty() {
        annotations.insert(KEY_ANNOTATION.to_string(), s.key.clone());
    }
    let descriptor = SigDescriptor {
        media_type: SIMPLESIGNING_MEDIA_TYPE.into(),
        size: payload.len() as u64,
        digest: format!("sha256:{}", sha256_hex(&payload)),
        annotations,
        other: BTreeMap::new(),
    };
    Ok((payload, descriptor))
}

/// The config and manifest of an attachment with these layers.
fn assemble(layers: Vec<SigDescriptor>) -> (Vec<u8>, Vec<u8>) {
    let config = SigConfig {
        architecture: "",
        created: ZERO_TIME,
        history: layers
            .iter()
            .map(|_| History { created: ZERO_TIME })
            .collect(),
        os: "",
        rootfs: RootFs {
            kind: "layers",
            diff_ids: layers.iter().map(|d| d.digest.clone()).collect(),
        },
        config: BTreeMap::new(),
    };
    // Serializing these structs cannot fail.
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let manifest = SigManifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.into(),
        config: SigDescriptor {
            media_type: IMAGE_CONFIG_MEDIA_TYPE.into(),
            size: config.len() as u64,
            digest: format!("sha256:{}", sha256_hex(&config)),
            annotations: BTreeMap::new(),
            other: BTreeMap::new(),
        },
        layers,
        annotations: BTreeMap::new(),
    };
    (config, serde_json::to_vec(&manifest).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::SigningKey;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_signature_tag_is_cosigns() {
        assert_eq!(
            signature_tag(DIGEST),
            "sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.sig"
        );
    }

    #[test]
    fn an_attachment_is_laid_out_as_cosign_writes_it() {
        let key = SigningKey::generate();
        let s = SkillSignature::sign(&key, "127.0.0.1:5000/skills/hello", DIGEST);
        let a = attachment(std::slice::from_ref(&s)).unwrap();

        // The payload: cosign's bytes exactly.
        let payload = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"127.0.0.1:5000/skills/hello"}},"image":{{"docker-manifest-digest":"{DIGEST}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        assert_eq!(a.layers, vec![payload.as_bytes().to_vec()]);
        let pd = format!("sha256:{}", sha256_hex(payload.as_bytes()));

        let config = format!(
            r#"{{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{{"created":"0001-01-01T00:00:00Z"}}],"os":"","rootfs":{{"type":"layers","diff_ids":["{pd}"]}},"config":{{}}}}"#
        );
        assert_eq!(String::from_utf8(a.config.clone()).unwrap(), config);

        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"sha256:{}"}},"layers":[{{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":{},"digest":"{pd}","annotations":{{"dev.cosignproject.cosign/signature":"{}","dev.skillbox.key":"{}"}}}}]}}"#,
            config.len(),
            sha256_hex(config.as_bytes()),
            payload.len(),
            s.signature,
            s.key,
        );
        assert_eq!(String::from_utf8(a.manifest.clone()).unwrap(), manifest);

        // And back, still verifying.
        let back = signatures_of(&a.manifest, &a.layers).unwrap();
        assert_eq!(back, vec![s]);
        back[0].verify(&key.public(), DIGEST).unwrap();
        assert_eq!(signature_layers(&a.manifest).unwrap(), vec![Some(pd)]);
    }

    #[test]
    fn a_signature_replaces_its_own_keys_and_keeps_the_others() {
        let (k1, k2) = (SigningKey::generate(), SigningKey::generate());
        let s1 = SkillSignature::sign(&k1, "r", DIGEST);
        let s2 = SkillSignature::sign(&k2, "r", DIGEST);
        let first = with_signature(None, &s1).unwrap();
        assert_eq!(first, attachment(std::slice::from_ref(&s1)).unwrap());
        let both = with_signature(Some(&first.manifest), &s2).unwrap();
        assert_eq!(both.layers, vec![s2.payload_bytes().unwrap()]);
        let all = [s1.payload_bytes().unwrap(), s2.payload_bytes().unwrap()];
        assert_eq!(
            signatures_of(&both.manifest, &all).unwrap(),
            vec![s1.clone(), s2.clone()]
        );
        let c: serde_json::Value = serde_json::from_slice(&both.config).unwrap();
        assert_eq!(c["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
        assert_eq!(c["history"].as_array().unwrap().len(), 2);

        // k1 signs again (here: another reference): its old layer goes.
        let s1b = SkillSignature::sign(&k1, "r2", DIGEST);
        let again = with_signature(Some(&both.manifest), &s1b).unwrap();
        let all = [s2.payload_bytes().unwrap(), s1b.payload_bytes().unwrap()];
        assert_eq!(signatures_of(&again.manifest, &all).unwrap(), vec![s2, s1b]);
    }

    #[test]
    fn foreign_layers_are_ignored_and_broken_ones_refused() {
        let key = SigningKey::generate();
        let s = SkillSignature::sign(&key, "r", DIGEST);
        let a = attachment(std::slice::from_ref(&s)).unwrap();
        let payload = a.layers[0].clone();
        let pd = format!("sha256:{}", sha256_hex(&payload));

        // Another tool's layer, a signature without our key annotation, and
        // a simplesigning layer without a signature.
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_MEDIA_TYPE}","config":{{"mediaType":"x","size":1,"digest":"sha256:00"}},"layers":[
              {{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","size":1,"digest":"sha256:11"}},
              {{"mediaType":"{SIMPLESIGNING_MEDIA_TYPE}","size":1,"digest":"{pd}","annotations":{{"{SIGNATURE_ANNOTATION}":"{}"}}}},
              {{"mediaType":"{SIMPLESIGNING_MEDIA_TYPE}","size":1,"digest":"{pd}"}}]}}"#,
            s.signature
        );
        let layers = vec![Vec::new(), payload.clone(), payload.clone()];
        let got = signatures_of(manifest.as_bytes(), &layers).unwrap();
        assert_eq!(
            got,
            vec![SkillSignature {
                key: String::new(),
                ..s.clone()
            }]
        );
        assert_eq!(
            signature_layers(manifest.as_bytes()).unwrap(),
            vec![None, Some(pd.clone()), Some(pd.clone())]
        );

        // A payload that is not what its descriptor says.
        let mut tampered = payload.clone();
        tampered[0] ^= 1;
        let e = signatures_of(&a.manifest, &[tampered]).unwrap_err();
        assert!(matches!(e, OciError::DigestMismatch { .. }), "{e:?}");
        // A missing payload.
        let e = signatures_of(&a.manifest, &[]).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        // Not an OCI manifest.
        let docker = String::from_utf8(a.manifest.clone()).unwrap().replace(
            MANIFEST_MEDIA_TYPE,
            "application/vnd.docker.distribution.manifest.v2+json",
        );
        let e = signatures_of(docker.as_bytes(), &a.layers)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not application/vnd.oci.image.manifest.v1+json"),
            "{e}"
        );
        let e = signatures_of(b"<html>", &[]).unwrap_err().to_string();
        assert!(e.contains("not an OCI image manifest"), "{e}");

        // Foreign layers survive a merge, fields and all.
        let merged = with_signature(Some(manifest.as_bytes()), &s).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&merged.manifest).unwrap();
        let layers = m["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 4, "{m}");
        assert_eq!(
            layers[0]["mediaType"],
            "application/vnd.dev.sigstore.bundle.v0.3+json"
        );
        assert_eq!(layers[3]["annotations"][KEY_ANNOTATION], s.key.as_str());
    }

    #[test]
    fn a_malformed_signature_is_not_attached() {
        let key = SigningKey::generate();
        let mut s = SkillSignature::sign(&key, "r", DIGEST);
        s.signature = s.signature.trim_end_matches('=').replace('+', "-") + "!";
        let e = attachment(&[s]).unwrap_err().to_string();
        assert!(e.contains("standard base64"), "{e}");
    }
}
