#!/usr/bin/env bash
# The README's second command: the whole test suite. Test guests and skills
# are built from source by the suite itself; the relay tests' OpenClaw
# gateway (Node 24 and the npm package `openclaw`, ~0.8 GB, cached under
# ~/.cache/skillbox-test) is installed here first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash tests/openclaw/gateway.sh install
cargo test -p skillbox -p skillbox-sdk
