//! Signing keys: ECDSA P-256 key pairs, the kind cosign generates, with
//! public keys as PEM `PUBLIC KEY` (SubjectPublicKeyInfo), the file a
//! publisher hands out and cosign reads, and private keys as PEM PKCS#8.
//!
//! A [`KeyStore`] keeps the operator's (or publisher's) keys in a directory
//! of their own, never in a skill directory: `keys/NAME.key` (mode 0600, in
//! a 0700 directory) with `keys/NAME.pub`, and the publishers' public keys
//! the operator trusts in `trusted/NAME.pub`.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey as EcKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What went wrong with a key or a signature.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file that is not a key of the expected kind.
    #[error("{0}")]
    Malformed(String),
    /// A signature that the key does not verify.
    #[error("the signature does not verify with key {0}")]
    BadSignature(String),
    /// A key name already taken, or unknown.
    #[error("{0}")]
    Name(String),
    /// Reading or writing the store.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A public key: verifies signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY` (an ECDSA P-256 SubjectPublicKeyInfo, as
    /// `cosign generate-key-pair` writes to `cosign.pub`).
    pub fn from_pem(text: &str) -> Result<PublicKey, KeyError> {
        VerifyingKey::from_public_key_pem(text.trim())
            .map(PublicKey)
            .map_err(|e| {
                KeyError::Malformed(format!(
                    "not an ECDSA P-256 public key in PEM (`-----BEGIN PUBLIC KEY-----`): {e}"
                ))
            })
    }

    /// The key as PEM `PUBLIC KEY`.
    pub fn to_pem(&self) -> String {
        self.0.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// `sha256:` and the hex sha256 of the key's DER encoding: names the key
    /// in messages and lockfiles.
    pub fn fingerprint(&self) -> String {
        let der = self
            .0
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(der)))
    }

    /// Checks `signature` (base64 of an ASN.1 DER ECDSA signature, cosign's
    /// encoding) over `payload`.
    pub fn verify(&self, payload: &[u8], signature: &str) -> Result<(), KeyError> {
        let bad = || KeyError::BadSignature(self.fingerprint());
        let der = STANDARD.decode(signature.trim()).map_err(|_| bad())?;
        let sig = Signature::from_der(&der).map_err(|_| bad())?;
        self.0.verify(payload, &sig).map_err(|_| bad())
    }
}

/// A private key: signs.
pub struct SigningKey(EcKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public().fingerprint())
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> SigningKey {
        SigningKey(EcKey::random(&mut rand_core::OsRng))
    }

    /// Reads a PEM PKCS#8 `PRIVATE KEY` (unencrypted).
    pub fn from_pem(text: &str) -> Result<SigningKey, KeyError> {
        EcKey::from_pkcs8_pem(text.trim())
            .map(SigningKey)
            .map_err(|e| {
                KeyError::Malformed(format!(
                    "not an unencrypted ECDSA P-256 private key in PEM (`-----BEGIN PRIVATE KEY-----`): {e}"
                ))
            })
    }

    fn to_pem(&self) -> Result<String, KeyError> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|p| p.to_string())
            .map_err(|e| KeyError::Malformed(e.to_string()))
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }

    /// Signs `payload`: base64 of the ASN.1 DER signature (ECDSA with
    /// SHA-256), as cosign encodes it.
    pub fn sign(&self, payload: &[u8]) -> String {
        let sig: Signature = self.0.sign(payload);
        STANDARD.encode(sig.to_der().as_bytes())
    }
}

/// One key of a [`KeyStore`], as `skillbox keys list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct KeyInfo {
    /// Its name in the store.
    pub name: String,
    /// [`PublicKey::fingerprint`].
    pub fingerprint: String,
    /// Whether the store holds its private half (a key of yours).
    pub private: bool,
    /// Whether it is among the trusted publishers' keys.
    pub trusted: bool,
}

/// The keys of one user or operator, in a directory of their own.
#[derive(Clone, Debug)]
pub struct KeyStore {
    dir: PathBuf,
}

/// Key names: what a file name can hold without surprises.
fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(KeyError::Name(format!(
            "key name {name:?}: 1-64 letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

impl KeyStore {
    /// The store in `dir` (created on the first write).
    pub fn at(dir: impl Into<PathBuf>) -> KeyStore {
        KeyStore { dir: dir.into() }
    }

    /// The default store: `$SKILLBOX_KEYS`, else `skillbox` in the user's
    /// configuration directory (`~/.config/skillbox`).
    pub fn default_location() -> KeyStore {
        match crate::caller::var_os("SKILLBOX_KEYS") {
            Some(d) => KeyStore::at(d),
            None => KeyStore::at(
                crate::caller::config_dir()
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join("skillbox"),
            ),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn private_dir(&self) -> PathBuf {
        self.dir.join("keys")
    }

    fn trusted_dir(&self) -> PathBuf {
        self.dir.join("trusted")
    }

    fn make_dir(path: &Path) -> Result<(), KeyError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io(path))
    }

    /// Writes `text` to a new file `path` (never over an existing one).
    fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), KeyError> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => KeyError::Name(format!(
                    "{} exists already; choose another name or remove it first",
                    path.display()
                )),
                _ => KeyError::Io {
                    path: path.to_owned(),
                    source: e,
                },
            })?;
        f.write_all(text.as_bytes()).map_err(io(path))?;
        f.sync_all().map_err(io(path))
    }

    /// Generates the key pair `name`; its public key.
    pub fn generate(&self, name: &str) -> Result<PublicKey, KeyError> {
        check_name(name)?;
        let dir = self.private_dir();
        Self::make_dir(&dir)?;
        let key = SigningKey::generate();
        let public = key.public();
        Self::write_new(&dir.join(format!("{name}.key")), &key.to_pem()?, 0o600)?;
        Self::write_new(&dir.join(format!("{name}.pub")), &public.to_pem(), 0o644)?;
        Ok(public)
    }

    /// The private key `name` of this store, or the key file at that path.
    pub fn signing_key(&self, name_or_path: &str) -> Result<SigningKey, KeyError> {
        let path = if name_or_path.contains('/') {
            PathBuf::from(name_or_path)
        } else {
            check_name(name_or_path)?;
            self.private_dir().join(format!("{name_or_path}.key"))
        };
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => KeyError::Name(format!(
                "no private key {} (make one with `skillbox keys generate NAME`)",
                path.display()
            )),
            _ => KeyError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        SigningKey::from_pem(&text)
    }

    /// Trusts `key` under `name`: skills it signed are the publisher
    /// `name`'s.
    pub fn trust(&self, name: &str, key: &PublicKey) -> Result<(), KeyError> {
        check_name(name)?;
        if let Some((known, _)) = self
            .trusted()?
            .into_iter()
            .find(|(_, k)| k.fingerprint() == key.fingerprint())
        {
            return Err(KeyError::Name(format!(
                "key {} is trusted already, as {known:?}",
                key.fingerprint()
            )));
        }
        let dir = self.trusted_dir();
        Self::make_dir(&dir)?;
        Self::write_new(&dir.join(format!("{name}.pub")), &key.to_pem(), 0o644)
    }

    /// Stops trusting the key `name`.
    pub fn untrust(&self, name: &str) -> Result<(), KeyError> {
        check_name(name)?;
        let path = self.trusted_dir().join(format!("{name}.pub"));
        std::fs::remove_file(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                KeyError::Name(format!("no trusted key named {name:?}"))
            }
            _ => KeyError::Io { path, source: e },
        })
    }

    fn read_dir(dir: &Path, ext: &str) -> Result<Vec<(String, PathBuf)>, KeyError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(dir)(e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let path = e.map_err(io(dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(stem) = name.strip_suffix(ext) {
                out.push((stem.to_string(), path.clone()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The trusted publishers' keys, by name.
    pub fn trusted(&self) -> Result<Vec<(String, PublicKey)>, KeyError> {
        Self::read_dir(&self.trusted_dir(), ".pub")?
            .into_iter()
            .map(|(name, path)| {
                let text = std::fs::read_to_string(&path).map_err(io(&path))?;
                let key = PublicKey::from_pem(&text)
                    .map_err(|e| KeyError::Malformed(format!("{}: {e}", path.display())))?;
                Ok((name, key))
            })
            .collect()
    }

    /// Every key of the store: yours (with a private half) and the trusted
    /// ones.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let trusted = self.trusted()?;
        let mut out = Vec::new();
        for (name, path) in Self::read_dir(&self.private_dir(), ".pub")? {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let key = PublicKey::from_pem(&text)?;
            let fingerprint = key.fingerprint();
            out.push(KeyInfo {
                trusted: trusted.iter().any(|(_, k)| k.fingerprint() == fingerprint),
                name,
                fingerprint,
                private: true,
            });
        }
        for (name, key) in trusted {
            let fingerprint = key.fingerprint();
            if !out.iter().any(|k| k.fingerprint == fingerprint) {
                out.push(KeyInfo {
                    name,
                    fingerprint,
                    private: false,
                    trusted: true,
                });
            }
        }
        Ok(out)
    }

    /// The public key `name` of this store (yours or trusted).
    pub fn public_key(&self, name: &str) -> Result<PublicKey, KeyError> {
        check_name(name)?;
        for path in [
            self.private_dir().join(format!("{name}.pub")),
            self.trusted_dir().join(format!("{name}.pub")),
        ] {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return PublicKey::from_pem(&text);
            }
        }
        Err(KeyError::Name(format!(
            "no key named {name:?} in {}",
            self.dir.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_sign_verify_and_round_trip_through_pem() {
        let key = SigningKey::generate();
        let sig = key.sign(b"payload");
        key.public().verify(b"payload", &sig).unwrap();
        assert!(matches!(
            key.public().verify(b"payloaD", &sig),
            Err(KeyError::BadSignature(_))
        ));
        let other = SigningKey::generate();
        assert!(other.public().verify(b"payload", &sig).is_err());
        assert!(key.public().verify(b"payload", "not base64!").is_err());
        let again = SigningKey::from_pem(&key.to_pem().unwrap()).unwrap();
        assert_eq!(again.public(), key.public());
        let public = PublicKey::from_pem(&key.public().to_pem()).unwrap();
        assert_eq!(public.fingerprint(), key.public().fingerprint());
        assert!(public.fingerprint().starts_with("sha256:"));
        assert!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .is_err()
        );
    }

    #[test]
    fn a_store_keeps_private_keys_private_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::at(dir.path());
        let public = store.generate("acme").unwrap();
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path().join("keys/acme.key")), 0o600);
        assert_eq!(mode(dir.path().join("keys")), 0o700);
        assert!(matches!(store.generate("acme"), Err(KeyError::Name(_))));
        assert!(store.generate("../x").is_err());
        let key = store.signing_key("acme").unwrap();
        assert_eq!(key.public(), public);
        let e = store.signing_key("nobody").unwrap_err().to_string();
        assert!(e.contains("skillbox keys generate"), "{e}");

        let other = SigningKey::generate().public();
        store.trust("vendor", &other).unwrap();
        let e = store.trust("again", &other).unwrap_err().to_string();
        assert!(e.contains("trusted already") && e.contains("vendor"), "{e}");
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert!(
            listed
                .iter()
                .any(|k| k.name == "acme" && k.private && !k.trusted)
        );
        assert!(
            listed
                .iter()
                .any(|k| k.name == "vendor" && !k.private && k.trusted)
        );
        store.untrust("vendor").unwrap();
        assert!(store.trusted().unwrap().is_empty());
        assert!(store.untrust("vendor").is_err());
    }
}
