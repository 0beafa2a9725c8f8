#!/usr/bin/env bash
# tests/dashboard/browser.sh - the dashboard test's browser and its driver.
#
# Usage:
#   tests/dashboard/browser.sh install   # chromium (apt-get) if missing, and
#                                        # playwright-core (npm ci); prints
#                                        # the node_modules directory
#   tests/dashboard/browser.sh modules   # prints that directory if installed
#
# Installs Debian's chromium package when /usr/bin/chromium is missing, and
# the exact playwright-core of package-lock.json beside this script with
# `npm ci` into a cache directory ($XDG_CACHE_HOME or ~/.cache, then
# skillbox-test/dashboard), done again only when the lockfile changes. The
# test (tests/integration/dashboard.rs) runs dashboard.mjs with node, which
# loads playwright-core from there (SKILLBOX_DASHBOARD_MODULES) and
# launches /usr/bin/chromium headless; playwright-core downloads no browser
# of its own.
set -euo pipefail

PROG=${0##*/}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=${SKILLBOX_DASHBOARD_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/skillbox-test/dashboard}
CHROMIUM=/usr/bin/chromium

# shellcheck source=../lib/apt.sh
source "$HERE/../lib/apt.sh"

install_chromium() {
	[[ -x $CHROMIUM ]] && return 0
	if ! apt_install chromium; then
		echo "$PROG: install failed: apt-get install chromium" >&2
		exit 1
	fi
	[[ -x $CHROMIUM ]] || {
		echo "$PROG: chromium installed, but $CHROMIUM is missing" >&2
		exit 1
	}
}

lock_hash() {
	sha256sum "$HERE/package-lock.json" | cut -d' ' -f1
}

installed() {
	[[ -f $ROOT/node_modules/playwright-core/package.json &&
		$(cat "$ROOT/lock.sha256" 2>/dev/null) == "$(lock_hash)" ]]
}

install_modules() {
	installed && return 0
	mkdir -p "$ROOT"
	cp "$HERE/package.json" "$HERE/package-lock.json" "$ROOT/"
	rm -f "$ROOT/lock.sha256"
	# playwright-core has no install script; --ignore-scripts keeps it so.
	if ! npm ci --prefix "$ROOT" --no-audit --no-fund --ignore-scripts \
		--cache "$ROOT/npm-cache" --prefer-offline --loglevel=error >&2; then
		echo "$PROG: install failed: npm ci (playwright-core)" >&2
		exit 1
	fi
	lock_hash >"$ROOT/lock.sha256"
}

case ${1-} in
install)
	install_chromium
	install_modules
	echo "$ROOT/node_modules"
	;;
modules)
	installed || {
		echo "$PROG: playwright-core is not installed (run: $0 install)" >&2
		exit 1
	}
	echo "$ROOT/node_modules"
	;;
*)
	echo "usage: $PROG install | modules" >&2
	exit 2
	;;
esac
