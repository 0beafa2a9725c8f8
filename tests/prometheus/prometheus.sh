#!/usr/bin/env bash
# tests/prometheus/prometheus.sh - the metrics test's Prometheus server.
#
# Usage:
#   tests/prometheus/prometheus.sh install   # apt-get prometheus if missing
#
# Installs Debian's prometheus package (the Prometheus server) without
# starting the system-wide service it ships. The test
# (tests/integration/metrics.rs) starts its own server on 127.0.0.1, with
# its configuration and storage in a temporary directory, scraping the
# daemon under test, and stops it when done.
set -euo pipefail

PROG=${0##*/}

# shellcheck source=../lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt.sh"

cmd_install() {
	command -v prometheus >/dev/null 2>&1 && return 0
	# policy-rc.d forbids starting services for the duration of apt-get
	# (exit status 101 means "action forbidden" to invoke-rc.d and
	# deb-systemd-invoke).
	local policy=/usr/sbin/policy-rc.d
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
		as_root chmod 755 "$policy"
		# shellcheck disable=SC2064
		trap "as_root rm -f '$policy'" EXIT
	fi
	if ! apt_install prometheus; then
		echo "$PROG: install failed: apt-get install prometheus" >&2
		exit 1
	fi
	# Never leave the package's own server (every interface, :9090) on.
	if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
		as_root systemctl disable --now prometheus.service >/dev/null 2>&1 || true
	else
		as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
		as_root /etc/init.d/prometheus stop >/dev/null 2>&1 || true
	fi
}

case ${1-} in
install) cmd_install ;;
*)
	echo "usage: $PROG install" >&2
	exit 2
	;;
esac
