//! Bundles the guest SDK into the `skillbox` binary, so that `skillbox new`
//! lays out a skill that builds with only `skillbox` and a Rust toolchain,
//! offline, and the same binary always writes the same files.
//!
//! `sdk/` holds symlinks into `guest-sdk/` and to the workspace's
//! `Cargo.lock`, and `wit` links to the repository's `wit/`: `cargo package`
//! stores what symlinks point to, so the published crate carries the same
//! sources while the repository keeps one copy of each. This writes
//! `$OUT_DIR/bundled_sdk.rs` with:
//! * `SDK_VERSION` and `SDK_FILES` (path in the vendored crate, contents),
//!   the manifest's workspace-inherited fields filled in;
//! * `SDK_LOCK`: the workspace lock's `[[package]]` entries of the SDK's
//!   dependency closure, sorted by name. Optional dependencies are in it:
//!   the vendored SDK is a member of the skill's workspace, and cargo locks
//!   every feature of a workspace member.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let sdk = root.join("sdk");
    let manifest = vendored_manifest(&read(&sdk.join("Cargo.toml.in")));
    let lock = read(&sdk.join("workspace.lock"));
    let packages = parse_lock(&lock);
    let version = env("CARGO_PKG_VERSION");
    let locked = packages.iter().find(|p| p.name == "skillbox-sdk");
    assert!(
        locked.is_some_and(|p| p.version == version),
        "the workspace's Cargo.lock has no skillbox-sdk {version}: the SDK and skillbox must share the workspace's version"
    );
    let closure = closure(&packages);

    let mut out = String::new();
    writeln!(out, "/// The bundled SDK's version.").unwrap();
    writeln!(out, "pub const SDK_VERSION: &str = {version:?};").unwrap();
    writeln!(
        out,
        "/// The bundled SDK's files: path in the crate, contents."
    )
    .unwrap();
    writeln!(out, "pub const SDK_FILES: &[(&str, &str)] = &[").unwrap();
    writeln!(out, "    (\"Cargo.toml\", {manifest:?}),").unwrap();
    let mut files = vec![("README.md".to_owned(), sdk.join("README.md"))];
    files.extend(tree(&sdk.join("src"), "src"));
    files.extend(tree(&root.join("wit"), "wit"));
    for (rel, path) in &files {
        println!("cargo::rerun-if-changed={}", path.display());
        writeln!(out, "    ({rel:?}, include_str!({:?})),", path.display()).unwrap();
    }
    writeln!(out, "];").unwrap();
    writeln!(
        out,
        "/// The SDK's dependency closure as `Cargo.lock` entries: (name, entry)."
    )
    .unwrap();
    writeln!(out, "pub const SDK_LOCK: &[(&str, &str)] = &[").unwrap();
    for p in &closure {
        writeln!(
            out,
            "    ({:?}, {:?}),",
            p.name,
            unambiguous(&p.block, &closure)
        )
        .unwrap();
    }
    writeln!(out, "];").unwrap();
    let dest = Path::new(&env("OUT_DIR")).join("bundled_sdk.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
    for p in [
        "sdk",
        "sdk/src",
        "sdk/Cargo.toml.in",
        "sdk/workspace.lock",
        "wit",
    ] {
        println!("cargo::rerun-if-changed={p}");
    }
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("cargo sets {key} for build scripts"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir`, sorted, as (`prefix/relative path`, path).
fn tree(dir: &Path, prefix: &str) -> Vec<(String, PathBuf)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    let mut files = Vec::new();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let rel = format!("{prefix}/{name}");
        if path.is_dir() {
            files.extend(tree(&path, &rel));
        } else {
            files.push((rel, path));
        }
    }
    files
}

/// The SDK's manifest as a crate of its own: `[package]` fields inherited
/// from the workspace get the values skillbox (which inherits them too) was
/// built with; the workspace's lints and the comments are left out.
fn vendored_manifest(text: &str) -> String {
    let mut out = String::from(
        "# skillbox-sdk as `skillbox new` vendors it: the sources of the\n\
         # published crate of this version.\n",
    );
    let mut section = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            section = line.to_owned();
        }
        // The repository's comments speak of the repository.
        if section == "[lints]" || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix(".workspace = true") {
            Some(key) => {
                let var = match key {
                    "version" => "CARGO_PKG_VERSION",
                    "rust-version" => "CARGO_PKG_RUST_VERSION",
                    "license" => "CARGO_PKG_LICENSE",
                    "repository" => "CARGO_PKG_REPOSITORY",
                    _ => panic!(
                        "guest-sdk/Cargo.toml inherits `{key}` from the workspace; \
                         the vendored SDK cannot: write it out there, or teach host/build.rs"
                    ),
                };
                writeln!(out, "{key} = {:?}", env(var)).unwrap();
            }
            None => writeln!(out, "{line}").unwrap(),
        }
    }
    assert!(
        !out.contains("workspace = true"),
        "guest-sdk/Cargo.toml inherits from the workspace where host/build.rs cannot fill it in"
    );
    out.trim_end().to_owned() + "\n"
}

/// A lock entry whose dependencies are named without their version when
/// `closure` has one version of them, as cargo writes them.
fn unambiguous(block: &str, closure: &[&Locked]) -> String {
    let single = |name: &str| closure.iter().filter(|p| p.name == name).count() == 1;
    block
        .lines()
        .map(
            |l| match l.strip_prefix(" \"").and_then(|d| d.split_once(' ')) {
                Some((name, _)) if single(name) => format!(" \"{name}\",\n"),
                _ => format!("{l}\n"),
            },
        )
        .collect()
}

/// One `[[package]]` entry of a `Cargo.lock`.
struct Locked {
    name: String,
    version: String,
    /// Its dependencies as the lock names them: `name` or `name version`.
    deps: Vec<String>,
    /// The entry's text, from `[[package]]` on.
    block: String,
}

fn parse_lock(text: &str) -> Vec<Locked> {
    text.split("\n[[package]]\n")
        .skip(1)
        .map(|body| {
            let body = body.split("\n\n").next().unwrap_or(body);
            let field = |key: &str| {
                body.lines()
                    .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or_else(|| panic!("Cargo.lock entry without {key}: {body}"))
                    .to_owned()
            };
            let deps = body
                .split_once("dependencies = [\n")
                .map(|(_, list)| list)
                .unwrap_or("")
                .lines()
                .filter_map(|l| {
                    l.trim()
                        .strip_prefix('"')?
                        .strip_suffix("\",")
                        .map(str::to_owned)
                })
                .collect();
            Locked {
                name: field("name"),
                version: field("version"),
                deps,
                block: format!("[[package]]\n{}\n", body.trim_end()),
            }
        })
        .collect()
}

/// skillbox-sdk and everything it depends on, in the lock's order (by name).
fn closure(packages: &[Locked]) -> Vec<&Locked> {
    let find = |dep: &str| {
        let mut parts = dep.split(' ');
        let (name, version) = (parts.next().unwrap(), parts.next());
        packages
            .iter()
            .position(|p| p.name == name && version.is_none_or(|v| p.version == v))
            .unwrap_or_else(|| panic!("Cargo.lock names {dep:?} but has no entry for it"))
    };
    let mut seen = BTreeSet::new();
    let mut todo = vec![find("skillbox-sdk")];
    while let Some(i) = todo.pop() {
        if seen.insert(i) {
            todo.extend(packages[i].deps.iter().map(|d| find(d)));
        }
    }
    seen.into_iter().map(|i| &packages[i]).collect()
}
