//! SHA-256 computed by the host, at native speed.
//!
//! WebAssembly has no SHA instructions: a SHA-256 compiled into a skill runs
//! at a fraction of what the same machine does natively. [`Sha256`] hands
//! the bytes to the host, which hashes them with the CPU's SHA extensions
//! where it has them. Use it for what a skill checksums in bulk: a backup's
//! manifests, the verification of an archive.
//!
//! It grants nothing: it hashes only the bytes the skill gives it, and needs
//! no line in `skill.toml`. Outside WebAssembly (a skill's native unit
//! tests) the same type computes the same digests in-process.
//!
//! ```
//! use std::io::Write;
//! use skillbox_sdk::digest::{self, Sha256};
//!
//! # fn main() -> skillbox_sdk::Result<()> {
//! let mut hasher = Sha256::new()?;
//! hasher.update(b"hello ");
//! write!(hasher, "world")?;
//! assert_eq!(
//!     digest::hex(&hasher.finish()),
//!     "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
//! );
//! # Ok(())
//! # }
//! ```

use crate::Error;

/// Bytes gathered in the guest before they cross to the host: one call per
/// 64 KiB, whatever the size of the writes.
const CHUNK: usize = 64 * 1024;

/// A SHA-256 in progress. Also an [`std::io::Write`], so that it can sit
/// under a writer (or be fed with [`std::io::copy`]).
pub struct Sha256 {
    inner: Inner,
    pending: Vec<u8>,
}

#[cfg(target_family = "wasm")]
type Inner = crate::__private::skillbox::skill::digest::Sha256;

#[cfg(not(target_family = "wasm"))]
type Inner = sha2::Sha256;

impl Sha256 {
    /// A new hasher. Fails with [`ErrorKind::Failed`](crate::ErrorKind::Failed)
    /// when the run already holds as many hashers as the host allows at once
    /// (256): drop the ones you are done with.
    pub fn new() -> Result<Sha256, Error> {
        #[cfg(target_family = "wasm")]
        let inner = crate::__private::skillbox::skill::digest::new_sha256()
            .map_err(|reason| Error::failed(format!("cannot start a SHA-256: {reason}")))?;
        #[cfg(not(target_family = "wasm"))]
        let inner = <sha2::Sha256 as sha2::Digest>::new();
        Ok(Sha256 {
            inner,
            pending: Vec::new(),
        })
    }

    /// Adds `data` to what is hashed.
    pub fn update(&mut self, data: &[u8]) {
        if self.pending.len() + data.len() <= CHUNK {
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(CHUNK);
            }
            self.pending.extend_from_slice(data);
            return;
        }
        self.send();
        if data.len() >= CHUNK {
            hash(&mut self.inner, data);
        } else {
            self.pending.extend_from_slice(data);
        }
    }

    /// The SHA-256 of everything added since the hasher was made or last
    /// finished; the hasher starts over.
    pub fn finish(&mut self) -> [u8; 32] {
        self.send();
        #[cfg(target_family = "wasm")]
        let out = self.inner.finish();
        #[cfg(not(target_family = "wasm"))]
        let out = sha2::Digest::finalize_reset(&mut self.inner).to_vec();
        let mut digest = [0; 32];
        digest.copy_from_slice(&out);
        digest
    }

    /// Hands the bytes gathered so far to the hash.
    fn send(&mut self) {
        if !self.pending.is_empty() {
            hash(&mut self.inner, &self.pending);
            self.pending.clear();
        }
    }
}

fn hash(inner: &mut Inner, data: &[u8]) {
    #[cfg(target_family = "wasm")]
    inner.update(data);
    #[cfg(not(target_family = "wasm"))]
    sha2::Digest::update(inner, data);
}

impl std::io::Write for Sha256 {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The SHA-256 of `data`, in one call.
pub fn sha256(data: &[u8]) -> Result<[u8; 32], Error> {
    let mut hasher = Sha256::new()?;
    hasher.update(data);
    Ok(hasher.finish())
}

/// `digest` in lower-case hex, as `sha256sum` prints it.
pub fn hex(digest: &[u8]) -> String {
    use std::fmt::Write;
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_and_finish_give_the_digest_of_everything_added() {
        // Sizes around the chunk, so that every path of `update` runs.
        let data: Vec<u8> = (0..5 * CHUNK + 7).map(|i| (i * 31 % 251) as u8).collect();
        let whole = sha256(&data).unwrap();
        let mut h = Sha256::new().unwrap();
        let mut at = 0;
        for n in [1, CHUNK - 1, 3, CHUNK, 2 * CHUNK + 5, 10] {
            let end = (at + n).min(data.len());
            h.update(&data[at..end]);
            at = end;
        }
        h.update(&data[at..]);
        assert_eq!(h.finish(), whole);
        // It starts over.
        h.update(b"abc");
        assert_eq!(
            hex(&h.finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
