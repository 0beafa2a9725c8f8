#!/usr/bin/env bash
# Builds the skillbox OpenClaw plugin into an installable package directory,
# with the TypeScript compiler and type definitions that ship with the
# `openclaw` package itself (its dependencies include typescript, typebox and
# @types/node), so nothing else is downloaded; then runs the plugin's unit
# tests (node --test).
#
#   build.sh OUT                 build into OUT (dist/, skills/, manifest)
#   build.sh OUT --install ARGS  and `openclaw plugins install OUT ARGS`
#
# The openclaw package is the one whose `openclaw` command is on PATH, or
# OPENCLAW_PACKAGE=DIR. Then: openclaw plugins install OUT (see README.md).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $# -ge 1 ]] || { echo "usage: $0 OUT [--install [openclaw plugins install flags]]" >&2; exit 2; }
OUT=$1; shift

die() { echo "skillbox plugin build: $*" >&2; exit 1; }
command -v node >/dev/null || die "node is not on PATH (OpenClaw needs Node 24 too)"
PKG=${OPENCLAW_PACKAGE:-}
if [[ -z $PKG ]]; then
  bin=$(command -v openclaw) || die "openclaw is not on PATH; set OPENCLAW_PACKAGE to the installed openclaw package directory"
  PKG=$(dirname "$(readlink -f "$bin")")
fi
[[ -f $PKG/package.json && -d $PKG/dist/plugin-sdk ]] || die "$PKG is not an openclaw package (no dist/plugin-sdk)"

find_dep() {  # the package directory of $1 next to or inside the openclaw package
  local d
  for d in "$PKG/node_modules/$1" "$(dirname "$PKG")/$1"; do
    [[ -f $d/package.json ]] && { echo "$d"; return; }
  done
  die "$1 not found beside the openclaw package at $PKG"
}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/node_modules/@types"
ln -s "$PKG" "$stage/node_modules/openclaw"
ln -s "$(find_dep typescript)" "$stage/node_modules/typescript"
ln -s "$(find_dep typebox)" "$stage/node_modules/typebox"
ln -s "$(find_dep @types/node)" "$stage/node_modules/@types/node"
cp -r "$HERE/src" "$HERE/tsconfig.json" "$HERE/openclaw.plugin.json" "$HERE/package.json" "$stage/"
node "$stage/node_modules/typescript/bin/tsc" -p "$stage/tsconfig.json"
node --test --test-reporter=dot "$stage"/dist/test/*.test.js >&2

rm -rf "$OUT"
mkdir -p "$OUT"
cp -r "$HERE/package.json" "$HERE/openclaw.plugin.json" "$HERE/README.md" "$HERE/skills" "$OUT/"
cp -r "$stage/dist" "$OUT/dist"
rm -rf "$OUT/dist/test"
echo "skillbox plugin built in $OUT" >&2

if [[ ${1:-} == --install ]]; then
  shift
  exec openclaw plugins install "$OUT" "$@"
fi
