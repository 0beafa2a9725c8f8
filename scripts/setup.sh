#!/usr/bin/env bash
# Installs what skillbox needs to build and test on a fresh machine.
# Idempotent; safe to run again.
set -euo pipefail
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "==> rustup target add wasm32-wasip2" >&2
    rustup target add wasm32-wasip2
fi
