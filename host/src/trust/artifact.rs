//! A skill as an OCI artifact, in the CNCF WebAssembly layout: exactly one
//! `application/wasm` layer (the component; wasm tooling such as `wkg`
//! refuses a second layer) and a wasm config
//! (`application/vnd.wasm.config.v0+json`). The skill's `skill.toml` rides
//! in the manifest's annotation `dev.skillbox.manifest`, so that the
//! artifact's manifest digest covers both the component and every
//! capability the skill requests.
//!
//! The artifact is computed the same way, byte for byte, from a skill
//! directory and from what a registry serves, with no timestamp in it: its
//! digest is what a signature names.

use serde::{Deserialize, Serialize};

use crate::skill::sha256_hex;

/// Media type of the OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the wasm config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Media type of the component layer.
pub const WASM_MEDIA_TYPE: &str = "application/wasm";
/// The artifact type of a WebAssembly component.
pub const ARTIFACT_TYPE: &str = "application/vnd.wasm.component.v1+wasm";

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the blob is.
    pub media_type: String,
    /// `sha256:` and its hex digest.
    pub digest: String,
    /// Its length in bytes.
    pub size: u64,
}

impl Descriptor {
    fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: format!("sha256:{}", sha256_hex(bytes)),
            size: bytes.len() as u64,
        }
    }
}

/// The OCI image manifest of a skill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MANIFEST_MEDIA_TYPE`].
    pub media_type: String,
    /// [`ARTIFACT_TYPE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The wasm config.
    pub config: Descriptor,
    /// The component.
    pub layers: Vec<Descriptor>,
    /// [`MANIFEST_ANNOTATION`]: the skill's `skill.toml`, as written;
    /// [`SCHEMA_ANNOTATION`]: its input schema, if it has one.
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// The manifest annotation that carries the skill's `skill.toml`.
pub const MANIFEST_ANNOTATION: &str = "dev.skillbox.manifest";

/// The manifest annotation that carries the text of the input schema
/// `skill.toml` names (`input-schema`), if it names one.
pub const SCHEMA_ANNOTATION: &str = "dev.skillbox.input-schema";

/// The wasm config, with the skill's manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    /// Fixed (the Unix epoch): the artifact must not depend on when it
    /// was made.
    pub created: String,
    /// Always `wasm`.
    pub architecture: String,
    /// Always `wasip2`.
    pub os: String,
    /// The digests of the layers, in order.
    pub layer_digests: Vec<String>,
    /// The component's world, as wasm tooling reads it (required for
    /// `wasip2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentInfo>,
}

/// The names a component imports and exports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentInfo {
    /// Its exports, e.g. `run` or `wasi:cli/run@0.2.0`.
    pub exports: Vec<String>,
    /// Its imports, e.g. `skillbox:skill/exec@0.1.0`.
    pub imports: Vec<String>,
    /// The world it targets, when known (not recorded).
    pub target: Option<String>,
}

impl ComponentInfo {
    /// The top-level imports and exports of the component `bytes`; `None`
    /// when it does not parse as a component.
    pub fn of(bytes: &[u8]) -> Option<ComponentInfo> {
        use wasmparser::{Parser, Payload};
        let mut info = ComponentInfo {
            exports: Vec::new(),
            imports: Vec::new(),
            target: None,
        };
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.ok()? {
                Payload::Version { .. } => depth += 1,
                Payload::End(_) => depth = depth.saturating_sub(1),
                Payload::ComponentImportSection(r) if depth == 1 => {
                    for i in r {
                        info.imports.push(i.ok()?.name.name.to_string());
                    }
                }
                Payload::ComponentExportSection(r) if depth == 1 => {
                    for e in r {
                        info.exports.push(e.ok()?.name.name.to_string());
                    }
                }
                _ => {}
            }
        }
        Some(info)
    }
}

/// A skill's artifact: its config and manifest as bytes, and the digest a
/// signature names.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The config blob.
    pub config: Vec<u8>,
    /// The image manifest.
    pub manifest: Vec<u8>,
    /// `sha256:` and the hex digest of [`Artifact::manifest`].
    pub digest: String,
}

impl Artifact {
    /// The artifact of the component `component` with the manifest
    /// `skill_toml` and the text of the input schema it names, if any
    /// (in the annotation [`SCHEMA_ANNOTATION`], so that the signature
    /// covers it too).
    pub fn of(component: &[u8], skill_toml: &str, input_schema: Option<&str>) -> Artifact {
        let layer = Descriptor::of(WASM_MEDIA_TYPE, component);
        let config = WasmConfig {
            created: "1970-01-01T00:00:00Z".into(),
            architecture: "wasm".into(),
            os: "wasip2".into(),
            layer_digests: vec![layer.digest.clone()],
            component: ComponentInfo::of(component),
        };
        // Serializing these structs cannot fail.
        let config = serde_json::to_vec(&config).unwrap_or_default();
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE.into(),
            artifact_type: Some(ARTIFACT_TYPE.into()),
            config: Descriptor::of(CONFIG_MEDIA_TYPE, &config),
            layers: vec![layer],
            annotations: std::iter::once((MANIFEST_ANNOTATION.to_string(), skill_toml.to_string()))
                .chain(input_schema.map(|s| (SCHEMA_ANNOTATION.to_string(), s.to_string())))
                .collect(),
        };
        let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
        let digest = format!("sha256:{}", sha256_hex(&manifest));
        Artifact {
            config,
            manifest,
            digest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_covers_the_component_and_the_manifest_and_nothing_else() {
        let a = Artifact::of(b"\0asm component", "[skill]\nname = \"x\"\n", None);
        let again = Artifact::of(b"\0asm component", "[skill]\nname = \"x\"\n", None);
        assert_eq!(a.digest, again.digest, "deterministic");
        assert_ne!(
            a.digest,
            Artifact::of(b"\0asm componenT", "[skill]\nname = \"x\"\n", None).digest
        );
        assert_ne!(
            a.digest,
            Artifact::of(b"\0asm component", "[skill]\nname = \"y\"\n", None).digest
        );
        let m: ImageManifest = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m.layers[0].media_type, WASM_MEDIA_TYPE);
        assert_eq!(m.config.media_type, CONFIG_MEDIA_TYPE);
        assert_eq!(m.config.size, a.config.len() as u64);
        let c: WasmConfig = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(c.layer_digests, vec![m.layers[0].digest.clone()]);
        assert_eq!(m.layers.len(), 1, "wasm tooling takes exactly one layer");
        assert_eq!(
            m.annotations[MANIFEST_ANNOTATION],
            "[skill]\nname = \"x\"\n"
        );
    }
}
