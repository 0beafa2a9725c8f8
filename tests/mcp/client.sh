#!/usr/bin/env bash
# The MCP test client: the official Python SDK (PyPI `mcp`, pinned) in a
# virtualenv of its own, for skillbox's MCP tests.
#
#   client.sh install     create the virtualenv under $MCP_CLIENT_ROOT and install the SDK
#                         (idempotent); prints the virtualenv's python
#
# The tests run tests/mcp/scenarios.py with that python.
set -euo pipefail

MCP_VERSION=2.3.0
ROOT=${MCP_CLIENT_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/skillbox-test/mcp-client}
PY=$ROOT/venv/bin/python

log() { printf 'mcp client harness: %s\n' "$*" >&2; }

case ${1:-} in
install)
  if [[ ! -x $PY ]]; then
    log "creating a virtualenv in $ROOT/venv"
    mkdir -p "$ROOT"
    python3 -m venv "$ROOT/venv" >&2
  fi
  if [[ $("$PY" -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null) != "$MCP_VERSION" ]]; then
    log "installing mcp==$MCP_VERSION"
    "$PY" -m pip install --quiet --disable-pip-version-check "mcp==$MCP_VERSION" >&2
  fi
  echo "$PY"
  ;;
*)
  echo "usage: $0 install" >&2
  exit 2
  ;;
esac
