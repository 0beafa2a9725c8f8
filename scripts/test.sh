#!/usr/bin/env bash
# The README's second command: the whole test suite. Test guests and skills
# are built from source by the suite itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test -p skillbox -p skillbox-sdk
