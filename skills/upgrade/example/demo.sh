#!/usr/bin/env bash
# Upgrades the sample app in app/ with the `upgrade` skill, end to end:
#   1. `skillbox run`: first deployment of v1 (nothing runs yet: "installed");
#   2. a background task on the daemon (`skillbox serve`, SQLite store):
#      the upgrade to v2, followed with `skillbox tasks wait`;
#   3. `skillbox run` of a broken v3 (no health page): rolled back to v2.
#
# The Docker engine is $DOCKER_HOST when set; otherwise a private engine is
# started for the demo (Debian's docker.io, installed if missing) and
# stopped at the end. Work files (state, backups, the daemon's data) go to
# target/upgrade-demo/. Environment: PORT (default 18080) for the app,
# SKILLBOX (default target/debug/skillbox).
set -euo pipefail
cd "$(dirname "$0")/../../.."
sb=${SKILLBOX:-target/debug/skillbox}
port=${PORT:-18080}
work=$PWD/target/upgrade-demo
app=skillbox-demo

say() { printf '\n==> %s\n' "$*" >&2; }

bash tests/docker/dockerd.sh install # docker.io, busybox-static, curl if missing
cleanup() {
    [[ -n ${daemon:-} ]] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    if [[ -n ${engine:-} ]]; then
        bash tests/docker/dockerd.sh stop "$engine" >/dev/null 2>&1 || true
    else
        docker rm -f "$app" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
if [[ -z ${DOCKER_HOST:-} ]]; then
    engine=/tmp/sbxd-demo-$$
    say "starting a private Docker engine in $engine"
    DOCKER_HOST=$(bash tests/docker/dockerd.sh start "$engine")
    export DOCKER_HOST
fi

say "building the upgrade skill (component + pinned manifest in target/skills/upgrade)"
"$sb" build skills/upgrade --out target/skills/upgrade

rm -rf "$work"
mkdir -p "$work/state/uploads" "$work/backups" "$work/data"
cp -r skills/upgrade/example/app "$work/src"
cp /bin/busybox "$work/src/busybox"
echo "accounts: 3" >"$work/state/app.db"
echo "a logo" >"$work/state/uploads/logo.txt"

grants=(
    --allow-read "$work/src:/src"
    --allow-read "$work/state:/state"
    --allow-write "$work/backups:/backup"
    --allow-exec 'uname -a' --allow-exec 'df -hP .'
    --allow-net "127.0.0.1:$port"
    --allow-docker "$app:*"
    --allow-docker-build --allow-docker-build-arg APP_VERSION
    --allow-docker-network host
    --timeout 30m
)
input() {
    cat <<EOF
{"app": "$app", "image": "$app", "version": "$1", "context": "/src",
 "build_args": {"APP_VERSION": "$1"}, "state_dir": "/state", "backup_dir": "/backup",
 "health_url": "http://127.0.0.1:$port/health", "retries": 10, "retry_interval_ms": 300,
 "container": {"network": "host", "env": {"PORT": "$port"}, "init": true,
               "mounts": [{"source": "/state", "target": "/www/state", "read_only": true}]}}
EOF
}

say "what the skill asks for, against what is granted"
"$sb" inspect target/skills/upgrade "${grants[@]}"

say "skillbox run upgrade: first deployment of v1"
"$sb" run target/skills/upgrade "${grants[@]}" --input "$(input v1)"
echo "GET /version -> $(curl -fsS "http://127.0.0.1:$port/version")"

say "upgrade to v2 as a background task on the daemon (skillbox serve, SQLite store in $work/data)"
"$sb" serve --data-dir "$work/data" 2>"$work/serve.log" &
daemon=$!
for _ in $(seq 100); do [[ -S $work/data/skillbox.sock ]] && break; sleep 0.1; done
id=$("$sb" spawn target/skills/upgrade --data-dir "$work/data" "${grants[@]}" \
    --label demo-upgrade --input "$(input v2)")
echo "task $id"
"$sb" tasks wait "$id" --data-dir "$work/data"
echo "GET /version -> $(curl -fsS "http://127.0.0.1:$port/version")"

say "a broken v3 (no /health): the skill must roll back to v2, and the run fail"
rm "$work/src/www/health"
code=0
"$sb" run target/skills/upgrade "${grants[@]}" --input "$(input v3)" \
    >"$work/v3.out" 2>"$work/v3.err" || code=$?
if [[ $code == 0 ]]; then
    echo "error: the broken v3 was not refused; see $work/v3.out" >&2
    exit 1
fi
echo "as intended, the run failed (exit $code) and rolled back:"
grep -m1 '^error:' "$work/v3.err" | sed 's/^error: /  /' || true
echo "GET /version -> $(curl -fsS "http://127.0.0.1:$port/version")"

say "backups (verify with: cd $work/backups && sha256sum -c NAME.sha256)"
ls -l "$work/backups"
