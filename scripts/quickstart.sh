#!/usr/bin/env bash
# The README's first command: set up, build skillbox and the example skills,
# then run them in the sandbox, end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "==> building skillbox (the first build takes about 10 minutes on two cores; later ones, seconds)" >&2
cargo build -p skillbox
sb=target/debug/skillbox
out=target/skills

echo "==> building the example skills (components + pinned manifests in $out/)" >&2
"$sb" build skills/hello --out "$out/hello"
"$sb" build skills/disk-report --out "$out/disk-report"

echo "==> skillbox run hello" >&2
"$sb" run "$out/hello" --input '{"name": "operator"}'

echo >&2
echo "==> what disk-report asks for, and what it gets when nothing is granted" >&2
"$sb" inspect "$out/disk-report" || true

echo >&2
echo "==> skillbox run disk-report over this repository's skills/ (read-only), du and stat allowed" >&2
"$sb" run "$out/disk-report" \
    --allow-read "$PWD/skills:/data" \
    --allow-exec 'du -k -d 1 .' \
    --allow-exec "stat -f -c '%b %f %S' ." \
    --input '{"path": "/data", "top": 5}'

echo >&2
echo "==> the flagship: skills/upgrade upgrades a sample app in Docker (skills/upgrade/example/demo.sh)" >&2
SKILLBOX="$sb" bash skills/upgrade/example/demo.sh

echo >&2
echo "==> quickstart done: hello, disk-report and the upgrade demo ran as expected" >&2
echo "    (the binary is $sb; put it on PATH with: cargo install --path host)" >&2
