//! `digest`: SHA-256 computed by the host for the guest.
//!
//! WebAssembly has no SHA instructions, so a guest's own SHA-256 runs at a
//! fraction of native speed; the `sha2` crate here picks the CPU's SHA
//! extensions at run time (SHA-NI on x86-64, the ARMv8 crypto extensions).
//! It grants no authority: it hashes the bytes the guest hands over, which
//! the guest could hash itself, only slower. So it needs no grant, and the
//! one limit it enforces is on host memory: a run holds at most
//! [`MAX_LIVE`] hashers at once (a few hundred bytes each), so a guest
//! cannot grow the host's memory past its own limit by making them. The
//! bytes of each `update` are copied out of the guest's memory, which the
//! guest's own limit bounds.

use sha2::Digest as _;
use wasmtime::component::{HasData, Resource, ResourceTable};

use crate::bindings::skillbox::skill::digest::{Host, HostSha256};

/// Most hashers a run holds at once.
pub const MAX_LIVE: usize = 256;

/// A hasher held by a guest (the `sha256` resource).
pub struct Sha256(sha2::Sha256);

/// The `digest` capability's part of one run.
#[derive(Default)]
pub struct DigestCtx {
    live: usize,
}

/// A run's `digest` state as its host functions see it: the run's
/// resource table and its hashers' count.
pub struct Digests<'a> {
    /// The run's resource table, where the hashers live.
    pub table: &'a mut ResourceTable,
    /// The run's `digest` state.
    pub ctx: &'a mut DigestCtx,
}

/// Wires `digest` into a linker through [`Digests`].
pub struct HasDigests;

impl HasData for HasDigests {
    type Data<'a> = Digests<'a>;
}

impl Host for Digests<'_> {
    async fn new_sha256(&mut self) -> wasmtime::Result<Result<Resource<Sha256>, String>> {
        if self.ctx.live >= MAX_LIVE {
            return Ok(Err(format!(
                "the run already holds {MAX_LIVE} SHA-256 hashers, the most it may at once; \
                 drop the ones it is done with"
            )));
        }
        let hasher = self.table.push(Sha256(sha2::Sha256::new()))?;
        self.ctx.live += 1;
        Ok(Ok(hasher))
    }
}

impl HostSha256 for Digests<'_> {
    async fn update(&mut self, hasher: Resource<Sha256>, data: Vec<u8>) -> wasmtime::Result<()> {
        self.table.get_mut(&hasher)?.0.update(&data);
        Ok(())
    }

    async fn finish(&mut self, hasher: Resource<Sha256>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get_mut(&hasher)?.0.finalize_reset().to_vec())
    }

    async fn drop(&mut self, hasher: Resource<Sha256>) -> wasmtime::Result<()> {
        self.table.delete(hasher)?;
        self.ctx.live -= 1;
        Ok(())
    }
}
