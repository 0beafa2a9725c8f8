//! Workloads the benchmarks run both inside a guest and natively.
//!
//! Inputs are generated (a fixed xorshift stream), so both sides hash and
//! compress the same bytes without reading them from anywhere.

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// One mebibyte.
pub const MIB: usize = 1 << 20;

/// Fills `buf` with the deterministic stream continuing from `state`.
fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// Compressible text-like data: words of a small vocabulary, picked by
/// the stream.
fn fill_text(buf: &mut [u8], state: &mut u64) {
    const WORDS: [&[u8]; 16] = [
        b"the ",
        b"skill ",
        b"runs ",
        b"in ",
        b"a ",
        b"sandbox ",
        b"with ",
        b"only ",
        b"what ",
        b"it ",
        b"was ",
        b"granted ",
        b"and ",
        b"nothing ",
        b"else ",
        b"\n",
    ];
    let mut picks = [0u8; 8];
    let mut at = 0;
    while at < buf.len() {
        fill(&mut picks, state);
        for p in picks {
            let word = WORDS[(p & 15) as usize];
            let n = word.len().min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&word[..n]);
            at += n;
            if at == buf.len() {
                break;
            }
        }
    }
}

/// The hex sha256 of `mib` MiB of the stream.
pub fn sha256(mib: usize) -> String {
    let mut h = Sha256::new();
    stream(mib, |chunk| h.update(chunk));
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes [`sha256`] hashes, handed to `f` one MiB at a time (for
/// hashing them some other way).
pub fn stream(mib: usize, mut f: impl FnMut(&[u8])) {
    let (mut state, mut buf) = (0x9e37_79b9_7f4a_7c15u64, vec![0u8; MIB]);
    for _ in 0..mib {
        fill(&mut buf, &mut state);
        f(&buf);
    }
}

/// The gzip-compressed size of `mib` MiB of text-like data (level 6).
pub fn gzip(mib: usize) -> u64 {
    let (mut state, mut buf) = (0x2545_f491_4f6c_dd1du64, vec![0u8; MIB]);
    let mut z = flate2::write::GzEncoder::new(Counter(0), flate2::Compression::default());
    for _ in 0..mib {
        fill_text(&mut buf, &mut state);
        z.write_all(&buf)
            .expect("compressing to a counter cannot fail");
    }
    z.finish().map(|c| c.0).unwrap_or(0)
}

struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fills `dir` with an application's state of about `mib` MiB, the
/// backup benchmark's input: three quarters text-like (logs, JSON: what
/// compresses) and one quarter random (images, compressed blobs: what does
/// not), in a few large files and many small ones across subdirectories.
/// Returns the files written.
pub fn state_dir(dir: &Path, mib: usize) -> std::io::Result<u64> {
    let (mut state, mut files) = (0x6a09_e667_f3bc_c908u64, 0u64);
    let total = mib * MIB;
    // Half the bytes in four large files, half in 64 KiB files.
    let large = (total / 8).max(1);
    let small = 64 * 1024;
    let mut written = 0usize;
    let mut n = 0usize;
    while written < total {
        let size = if n < 4 { large } else { small }.min(total - written);
        let sub = dir.join(format!("d{}", n % 16));
        std::fs::create_dir_all(&sub)?;
        let mut buf = vec![0u8; size];
        if n % 4 == 3 {
            fill(&mut buf, &mut state);
        } else {
            fill_text(&mut buf, &mut state);
        }
        std::fs::write(sub.join(format!("f{n}.dat")), &buf)?;
        written += size;
        n += 1;
        files += 1;
    }
    Ok(files)
}

/// Writes `mib` MiB to `dir/bench-io.bin` in 1 MiB writes, syncs it, reads
/// it back in 1 MiB reads and removes it; the bytes read.
pub fn file_io(dir: &Path, mib: usize) -> std::io::Result<u64> {
    let path = dir.join("bench-io.bin");
    let (mut state, mut buf) = (0x51_7cc1_b727_220au64, vec![0u8; MIB]);
    {
        let mut f = std::fs::File::create(&path)?;
        for _ in 0..mib {
            fill(&mut buf, &mut state);
            f.write_all(&buf)?;
        }
        f.sync_all()?;
    }
    let mut f = std::fs::File::open(&path)?;
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    std::fs::remove_file(&path)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_are_deterministic_and_do_their_work() {
        assert_eq!(sha256(1), sha256(1));
        assert_ne!(sha256(1), sha256(2));
        let z = gzip(1);
        assert!(
            z > 0 && z < MIB as u64 / 2,
            "text-like data compresses: {z}"
        );
        let dir = std::env::temp_dir();
        assert_eq!(file_io(&dir, 2).unwrap(), 2 * MIB as u64);
    }
}
