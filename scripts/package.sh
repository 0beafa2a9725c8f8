#!/usr/bin/env bash
# Publishing is one command away: `skillbox-sdk` and `skillbox` package,
# carry what they need (the WIT contract and the bundled SDK, stored through
# symlinks) and nothing else (no target/, tests or test data), build from
# the package alone, and pass `cargo publish --dry-run` (which never
# uploads; the build it would repeat is skipped). Extra arguments go to
# every cargo call (e.g. --allow-dirty, or --offline when cargo's cache has
# every dependency).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
version=$(cargo pkgid -p skillbox | sed 's/.*[#@]//')

check_list() { # CRATE CARGO-ARG…: nothing of the repository's tooling is packaged
    local crate=$1 list
    shift
    list=$(cargo package -p "$crate" --list "$@" 2>/dev/null)
    if grep -E '(^|/)(target|tests|benches|examples)/|\.wasm$|\.crate$' <<<"$list"; then
        echo "error: $crate would publish the files above" >&2
        exit 1
    fi
}

need() { # CRATE FILE…: the packaged .crate holds FILEs
    local crate=$1 file list
    shift
    list=$(tar tzf "$target/package/$crate-$version.crate")
    for file in "$@"; do
        grep -qx "$crate-$version/$file" <<<"$list" ||
            { echo "error: $crate-$version.crate lacks $file" >&2; exit 1; }
    done
}

same_as() { # CRATE FILE REPO-FILE: the packaged FILE is the repository's
    tar xzf "$target/package/$1-$version.crate" -O "$1-$version/$2" | cmp - "$3" ||
        { echo "error: $1's $2 is not $3" >&2; exit 1; }
}

for crate in skillbox-sdk skillbox; do
    echo "==> cargo package -p $crate (builds the packaged crate on its own)" >&2
    check_list "$crate" "$@"
    cargo package -p "$crate" "$@"
    if [[ " $* " == *" --offline "* ]]; then
        echo "==> offline: cargo publish --dry-run -p $crate skipped (it asks the registry)" >&2
    else
        echo "==> cargo publish --dry-run -p $crate (the registry's checks; uploads nothing)" >&2
        cargo publish --dry-run --no-verify -p "$crate" "$@"
    fi
done
need skillbox-sdk wit/skill.wit src/lib.rs README.md
same_as skillbox-sdk wit/skill.wit wit/skill.wit
need skillbox wit/skill.wit build.rs sdk/Cargo.toml.in sdk/workspace.lock sdk/src/lib.rs README.md
same_as skillbox wit/skill.wit wit/skill.wit
same_as skillbox sdk/src/lib.rs guest-sdk/src/lib.rs
echo "==> both crates package, build from their package and hold what they need" >&2
