//! The backup of the app's state: a `tar.gz` of the state directory with
//! two `sha256sum` manifests beside it, and the check that reads it all
//! back.
//!
//! For an archive `NAME.tar.gz` in the backup directory:
//!
//! * `NAME.sha256` lists the archive (`sha256sum -c NAME.sha256` in the
//!   backup directory checks it);
//! * `NAME.files.sha256` lists every regular file of the state
//!   directory by its relative path (`sha256sum -c` run in the state
//!   directory, or in a directory the archive was extracted into, checks
//!   them).
//!
//! Every file is written under a temporary name (`.NAME….partial`) and
//! renamed when complete, so a file with a final name is a whole one.
//! Symlinks are archived as links (never followed) and are not in the file
//! manifest; sockets, fifos and devices are skipped.
//!
//! This module only touches the filesystem (the skill's preopens): it
//! makes no host calls, so it runs in native unit tests too.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use skillbox_sdk::digest::{self, Sha256};
use skillbox_sdk::{Context, Error};

/// Suffix of the archive.
const ARCHIVE: &str = ".tar.gz";
/// Suffix of files still being written.
const PARTIAL: &str = ".partial";
/// Buffer size for archive I/O.
const BUF: usize = 256 * 1024;

/// A backup that was written (and not yet verified).
#[derive(Debug, Clone)]
pub struct Created {
    /// The archive's base name: `NAME` of `NAME.tar.gz`.
    pub name: String,
    /// `backup_dir/NAME.tar.gz`.
    pub archive: PathBuf,
    /// Hex sha256 of the archive.
    pub sha256: String,
    /// Regular files archived.
    pub files: u64,
    /// Size of the archive.
    pub bytes: u64,
    /// Total size of the archived files.
    pub state_bytes: u64,
    /// Symlinks archived as links.
    pub symlinks: u64,
    /// Entries that are neither files, directories nor symlinks, not archived.
    pub skipped: Vec<String>,
}

/// What the verification read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Regular files in the archive, each matching the manifest.
    pub files: u64,
    /// Their total size.
    pub state_bytes: u64,
}

/// `NAME.sha256`, beside `NAME.tar.gz`.
pub fn manifest_path(archive: &Path) -> PathBuf {
    beside(archive, ".sha256")
}

/// `NAME.files.sha256`, beside `NAME.tar.gz`.
pub fn files_manifest_path(archive: &Path) -> PathBuf {
    beside(archive, ".files.sha256")
}

/// `dir/NAME{suffix}` for `dir/NAME.tar.gz`.
fn beside(archive: &Path, suffix: &str) -> PathBuf {
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(ARCHIVE).unwrap_or(&name);
    archive.with_file_name(format!("{stem}{suffix}"))
}

/// Archives `state_dir` into `backup_dir/BASE.tar.gz` (or `BASE-2.tar.gz`, …
/// if that name is taken) with its manifests. `on_file(files, bytes)` is
/// called after each file.
pub fn create(
    state_dir: &Path,
    backup_dir: &Path,
    base: &str,
    on_file: &mut dyn FnMut(u64, u64),
) -> Result<Created, Error> {
    let meta = fs::metadata(state_dir)
        .with_context(|| format!("reading the state directory {}", state_dir.display()))?;
    if !meta.is_dir() {
        return Err(Error::invalid_input(format!(
            "`state_dir` {} is not a directory",
            state_dir.display()
        )));
    }
    let meta = fs::metadata(backup_dir)
        .with_context(|| format!("reading the backup directory {}", backup_dir.display()))?;
    if !meta.is_dir() {
        return Err(Error::invalid_input(format!(
            "`backup_dir` {} is not a directory",
            backup_dir.display()
        )));
    }
    let name = free_name(backup_dir, base)?;
    let archive = backup_dir.join(format!("{name}{ARCHIVE}"));
    let partial = partial_path(&archive);

    let file = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let out = HashWriter::new(BufWriter::with_capacity(BUF, file))?;
    let mut tar = tar::Builder::new(GzEncoder::new(out, Compression::default()));
    let mut walk = Walk {
        tar: &mut tar,
        sums: BTreeMap::new(),
        state_bytes: 0,
        symlinks: 0,
        skipped: Vec::new(),
        on_file,
    };
    let result = walk.run(state_dir);
    let (sums, state_bytes, symlinks, skipped) =
        (walk.sums, walk.state_bytes, walk.symlinks, walk.skipped);
    let finished = result.and_then(|()| {
        let gz = tar
            .into_inner()
            .with_context(|| format!("writing {}", partial.display()))?;
        let out = gz
            .finish()
            .with_context(|| format!("writing {}", partial.display()))?;
        let (buf, sha256, bytes) = out.finish();
        let file = buf
            .into_inner()
            .map_err(|e| Error::from(e.into_error()))
            .with_context(|| format!("writing {}", partial.display()))?;
        // Durability is best effort: not every filesystem can sync.
        let _ = file.sync_all();
        Ok((sha256, bytes))
    });
    let (sha256, bytes) = match finished {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };

    let archive_name = format!("{name}{ARCHIVE}");
    write_atomic(&manifest_path(&archive), &sum_line(&sha256, &archive_name))?;
    let mut listing = String::new();
    for (path, hex) in &sums {
        listing.push_str(&sum_line(hex, path));
    }
    write_atomic(&files_manifest_path(&archive), &listing)?;
    // The archive last: its final name appearing means the backup is whole.
    fs::rename(&partial, &archive)
        .with_context(|| format!("renaming {} to {}", partial.display(), archive.display()))?;

    Ok(Created {
        name,
        archive,
        sha256,
        files: sums.len() as u64,
        bytes,
        state_bytes,
        symlinks,
        skipped,
    })
}

/// Re-reads `archive` and its manifests: the archive's sha256 must match
/// its manifest, and its regular files must be exactly those of the file
/// manifest, each with the listed sha256.
pub fn verify(archive: &Path) -> Result<Verified, Error> {
    let archive_name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::failed(format!("{} has no file name", archive.display())))?;

    let manifest = manifest_path(archive);
    let text =
        fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let listed = parse_sums(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    let expected = match listed.as_slice() {
        [(name, hex)] if name == archive_name => hex.clone(),
        _ => {
            return Err(Error::failed(format!(
                "{} must list exactly {archive_name}",
                manifest.display()
            )));
        }
    };
    let file = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut reader = HashReader::new(BufReader::with_capacity(BUF, file))?;
    io::copy(&mut reader, &mut io::sink())
        .with_context(|| format!("reading {}", archive.display()))?;
    let actual = reader.finish().0;
    if actual != expected {
        return Err(Error::failed(format!(
            "{} has sha256 {actual}, its manifest says {expected}",
            archive.display()
        )));
    }

    let files_manifest = files_manifest_path(archive);
    let text = fs::read_to_string(&files_manifest)
        .with_context(|| format!("reading {}", files_manifest.display()))?;
    let mut want = BTreeMap::new();
    for (path, hex) in
        parse_sums(&text).with_context(|| format!("parsing {}", files_manifest.display()))?
    {
        if want.insert(path.clone(), hex).is_some() {
            return Err(Error::failed(format!(
                "{} lists {path:?} twice",
                files_manifest.display()
            )));
        }
    }

    let file = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::with_capacity(BUF, file)));
    let reading = |e: io::Error| Error::from(e).context(format!("reading {}", archive.display()));
    let mut seen = 0u64;
    let mut state_bytes = 0u64;
    for entry in tar.entries().map_err(reading)? {
        let entry = entry.map_err(reading)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry
            .path()
            .map_err(reading)?
            .to_string_lossy()
            .into_owned();
        let Some(expected) = want.remove(&path) else {
            return Err(Error::failed(format!(
                "{} holds {path:?}, which the file manifest does not list (or lists once only)",
                archive.display()
            )));
        };
        let mut reader = HashReader::new(entry)?;
        io::copy(&mut reader, &mut io::sink()).map_err(reading)?;
        let (actual, len) = reader.finish();
        if actual != expected {
            return Err(Error::failed(format!(
                "{path:?} in {} has sha256 {actual}, the file manifest says {expected}",
                archive.display()
            )));
        }
        seen += 1;
        state_bytes += len;
    }
    if let Some(missing) = want.keys().next() {
        return Err(Error::failed(format!(
            "{} lacks {} file(s) of the manifest, e.g. {missing:?}",
            archive.display(),
            want.len()
        )));
    }
    Ok(Verified {
        files: seen,
        state_bytes,
    })
}

/// Removes `.APP-….partial` files that an interrupted earlier run left in
/// `backup_dir`; returns how many.
pub fn remove_partials(backup_dir: &Path, app: &str) -> u64 {
    let prefix = format!(".{app}-");
    let Ok(entries) = fs::read_dir(backup_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&prefix)
            && name.ends_with(PARTIAL)
            && entry.file_type().is_ok_and(|t| t.is_file())
            && fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// `BASE`, or `BASE-2`, `BASE-3`, … if an archive of that name exists.
fn free_name(dir: &Path, base: &str) -> Result<String, Error> {
    for n in 1..1000 {
        let name = if n == 1 {
            base.to_owned()
        } else {
            format!("{base}-{n}")
        };
        let taken = fs::symlink_metadata(dir.join(format!("{name}{ARCHIVE}"))).is_ok();
        if !taken {
            return Ok(name);
        }
    }
    Err(Error::failed(format!(
        "{} already holds 999 backups named {base}*",
        dir.display()
    )))
}

/// `dir/.NAME.partial` for `dir/NAME`.
fn partial_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{}{PARTIAL}", name.unwrap_or_default()))
}

/// Writes `path` whole or not at all.
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), Error> {
    let partial = partial_path(path);
    let write = || -> io::Result<()> {
        let mut f = File::create(&partial)?;
        f.write_all(contents.as_bytes())?;
        let _ = f.sync_all();
        fs::rename(&partial, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&partial);
        Error::from(e).context(format!("writing {}", path.display()))
    })
}

/// The state of one archive walk.
struct Walk<'a, W: Write> {
    tar: &'a mut tar::Builder<W>,
    /// Relative path → hex sha256 of every regular file.
    sums: BTreeMap<String, String>,
    state_bytes: u64,
    symlinks: u64,
    skipped: Vec<String>,
    on_file: &'a mut dyn FnMut(u64, u64),
}

impl<W: Write> Walk<'_, W> {
    /// Archives everything below `root`, in name order, without following
    /// symlinks and without recursion.
    fn run(&mut self, root: &Path) -> Result<(), Error> {
        // (relative path of a directory, "" for the root)
        let mut pending = vec![String::new()];
        while let Some(rel) = pending.pop() {
            let dir = if rel.is_empty() {
                root.to_owned()
            } else {
                root.join(&rel)
            };
            let mut names = Vec::new();
            for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
                let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
                let name = entry.file_name().into_string().map_err(|n| {
                    Error::failed(format!(
                        "{}: a file name is not UTF-8: {n:?}",
                        dir.display()
                    ))
                })?;
                names.push(name);
            }
            names.sort();
            // Subdirectories are pushed in reverse so they pop in order.
            let mut subdirs = Vec::new();
            for name in names {
                let rel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let path = root.join(&rel);
                let meta = fs::symlink_metadata(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                let kind = meta.file_type();
                if kind.is_dir() {
                    let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime);
                    self.tar
                        .append_data(&mut h, format!("{rel}/"), io::empty())
                        .with_context(|| format!("archiving {}", path.display()))?;
                    subdirs.push(rel);
                } else if kind.is_symlink() {
                    let target = fs::read_link(&path)
                        .with_context(|| format!("reading the link {}", path.display()))?;
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0, mtime);
                    self.tar
                        .append_link(&mut h, &rel, &target)
                        .with_context(|| format!("archiving {}", path.display()))?;
                    self.symlinks += 1;
                } else if kind.is_file() {
                    self.file(&path, rel, meta.len(), mtime)?;
                } else {
                    self.skipped.push(rel);
                }
            }
            pending.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }

    /// Archives one regular file of `size` bytes, hashing what is archived.
    fn file(&mut self, path: &Path, rel: String, size: u64, mtime: u64) -> Result<(), Error> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // `take`: the header promised `size` bytes, so a file that grew
        // meanwhile is archived (and listed) as it was at `size`.
        let mut reader = HashReader::new(BufReader::with_capacity(BUF, file).take(size))?;
        let mut h = header(tar::EntryType::Regular, 0o644, size, mtime);
        self.tar
            .append_data(&mut h, &rel, &mut reader)
            .with_context(|| format!("archiving {}", path.display()))?;
        let (hex, len) = reader.finish();
        if len != size {
            return Err(Error::failed(format!(
                "{} shrank from {size} to {len} bytes while it was being archived; run the \
                 upgrade again when the app is not writing its state",
                path.display()
            )));
        }
        self.sums.insert(rel, hex);
        self.state_bytes += size;
        (self.on_file)(self.sums.len() as u64, self.state_bytes);
        Ok(())
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(mtime);
    h
}

/// One line of `sha256sum` output. Like GNU coreutils, a name holding a
/// backslash or a line break is escaped and the line starts with `\`.
pub fn sum_line(hex: &str, name: &str) -> String {
    if name.contains(['\\', '\n', '\r']) {
        let escaped = name
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        format!("\\{hex}  {escaped}\n")
    } else {
        format!("{hex}  {name}\n")
    }
}

/// Parses `sha256sum` output into (name, hex) pairs, in order.
pub fn parse_sums(text: &str) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = || Error::failed(format!("line {} is not `SHA256  NAME`: {line:?}", i + 1));
        let (escaped, line) = match line.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let (hex, rest) = line.split_at_checked(64).ok_or_else(bad)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let name = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .ok_or_else(bad)?;
        let name = if escaped {
            unescape(name).ok_or_else(bad)?
        } else {
            name.to_owned()
        };
        out.push((name, hex.to_ascii_lowercase()));
    }
    Ok(out)
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
}

/// Hashes and counts what is written through it (the SHA-256 computed by
/// the host, at native speed).
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Result<Self, Error> {
        Ok(HashWriter {
            inner,
            hasher: Sha256::new()?,
            count: 0,
        })
    }

    /// The writer, the hex sha256 and the byte count.
    fn finish(mut self) -> (W, String, u64) {
        (self.inner, digest::hex(&self.hasher.finish()), self.count)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes and counts what is read through it (as [`HashWriter`]).
struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashReader<R> {
    fn new(inner: R) -> Result<Self, Error> {
        Ok(HashReader {
            inner,
            hasher: Sha256::new()?,
            count: 0,
        })
    }

    /// The hex sha256 and the byte count.
    fn finish(mut self) -> (String, u64) {
        (digest::hex(&self.hasher.finish()), self.count)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let p = std::env::temp_dir()
                .join(format!("upgrade-test-{tag}-{}-{nanos}", std::process::id()));
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn state(root: &Path) {
        fs::create_dir_all(root.join("db/empty")).unwrap();
        fs::write(root.join("config.toml"), "port = 1\n").unwrap();
        fs::write(root.join("db/data.bin"), vec![7u8; 300_000]).unwrap();
        fs::write(root.join("db/odd\\name\nx"), "odd").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("../config.toml", root.join("db/link")).unwrap();
    }

    #[test]
    fn sum_lines_round_trip() {
        let hex = "ab".repeat(32);
        for name in [
            "plain.txt",
            "with space",
            "back\\slash",
            "new\nline",
            "cr\r",
        ] {
            let line = sum_line(&hex, name);
            assert_eq!(parse_sums(&line).unwrap(), [(name.to_owned(), hex.clone())]);
        }
        assert_eq!(
            sum_line(&hex, "a\\b"),
            format!("\\{hex}  a\\\\b\n"),
            "GNU-style escaping"
        );
        assert!(parse_sums("xyz  a\n").is_err());
        let binary = format!("{hex} *bin\n");
        assert_eq!(parse_sums(&binary).unwrap()[0].0, "bin");
    }

    #[test]
    fn creates_and_verifies_a_backup() {
        let src = TempDir::new("src");
        let dst = TempDir::new("dst");
        state(&src.0);
        let mut calls = 0;
        let made = create(&src.0, &dst.0, "app-20260101T000000Z", &mut |_, _| {
            calls += 1
        })
        .unwrap();
        assert_eq!(made.name, "app-20260101T000000Z");
        assert_eq!(made.files, 3);
        assert_eq!(calls, 3);
        assert_eq!(made.state_bytes, 300_000 + 9 + 3);
        assert_eq!(made.bytes, fs::metadata(&made.archive).unwrap().len());
        let v = verify(&made.archive).unwrap();
        assert_eq!((v.files, v.state_bytes), (3, made.state_bytes));

        assert_eq!(
            manifest_path(&made.archive),
            dst.0.join("app-20260101T000000Z.sha256")
        );
        assert_eq!(
            files_manifest_path(&made.archive),
            dst.0.join("app-20260101T000000Z.files.sha256")
        );
        let sums = fs::read_to_string(manifest_path(&made.archive)).unwrap();
        assert_eq!(
            sums,
            format!("{}  app-20260101T000000Z.tar.gz\n", made.sha256)
        );
        let files = fs::read_to_string(files_manifest_path(&made.archive)).unwrap();
        let names: Vec<String> = parse_sums(&files)
            .unwrap()
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(names, ["config.toml", "db/data.bin", "db/odd\\name\nx"]);
        // No temporary files are left behind.
        let left: Vec<_> = fs::read_dir(&dst.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");

        // A second backup in the same second gets its own name.
        let again = create(&src.0, &dst.0, "app-20260101T000000Z", &mut |_, _| {}).unwrap();
        assert_eq!(again.name, "app-20260101T000000Z-2");
    }

    #[test]
    fn verification_catches_tampering() {
        let src = TempDir::new("src");
        let dst = TempDir::new("dst");
        state(&src.0);
        let made = create(&src.0, &dst.0, "app-x", &mut |_, _| {}).unwrap();

        // A file manifest entry that does not match the archive.
        let fm = files_manifest_path(&made.archive);
        let good = fs::read_to_string(&fm).unwrap();
        let other = "0".repeat(64);
        let first = good.lines().next().unwrap();
        let bad = good.replacen(&first[..64], &other, 1);
        fs::write(&fm, &bad).unwrap();
        let e = verify(&made.archive).unwrap_err().to_string();
        assert!(
            e.contains("config.toml") && e.contains("file manifest says"),
            "{e}"
        );

        // A file missing from the archive.
        fs::write(&fm, format!("{good}{other}  ghost\n")).unwrap();
        let e = verify(&made.archive).unwrap_err().to_string();
        assert!(e.contains("lacks 1 file") && e.contains("ghost"), "{e}");

        // A file the manifest does not list.
        let without_first: String = good.lines().skip(1).map(|l| format!("{l}\n")).collect();
        fs::write(&fm, without_first).unwrap();
        let e = verify(&made.archive).unwrap_err().to_string();
        assert!(e.contains("does not list"), "{e}");
        fs::write(&fm, &good).unwrap();
        verify(&made.archive).unwrap();

        // A changed archive.
        let mut bytes = fs::read(&made.archive).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&made.archive, bytes).unwrap();
        let e = verify(&made.archive).unwrap_err().to_string();
        assert!(e.contains("its manifest says"), "{e}");
    }

    #[test]
    fn stale_partials_of_the_app_are_removed() {
        let dst = TempDir::new("partials");
        fs::write(dst.0.join(".app-1.tar.gz.partial"), "x").unwrap();
        fs::write(dst.0.join(".other-1.tar.gz.partial"), "x").unwrap();
        fs::write(dst.0.join("app-1.tar.gz"), "x").unwrap();
        assert_eq!(remove_partials(&dst.0, "app"), 1);
        assert!(dst.0.join(".other-1.tar.gz.partial").exists());
        assert!(dst.0.join("app-1.tar.gz").exists());
    }

    #[test]
    fn a_missing_state_dir_is_an_error() {
        let dst = TempDir::new("dst");
        let e = create(&dst.0.join("nope"), &dst.0, "a", &mut |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("reading the state directory"), "{e}");
    }
}
