#!/usr/bin/env bash
# tests/oci/registry.sh - the test suite's private OCI registry.
#
# Runs a CNCF distribution registry (Debian's docker-registry, 2.8) on
# 127.0.0.1, plain HTTP and without auth, whose config, storage, log and pid
# all live in one directory DIR, so that the OCI tests (skillbox push/pull
# oci://HOST:PORT/REPO:TAG) talk to a real registry and leave no trace.
# skopeo is installed beside it as the reference client: it pushes and pulls
# what skillbox must interoperate with, and verifies cosign-format signatures
# (see tests/oci/README.md).
#
# Usage:
#   tests/oci/registry.sh install     # apt-get docker-registry skopeo if missing
#   ADDR=$(tests/oci/registry.sh start /tmp/sbxr-1234)   # 127.0.0.1:PORT
#   skopeo copy --dest-tls-verify=false oci:layout:x docker://$ADDR/x:1
#   tests/oci/registry.sh stop /tmp/sbxr-1234
#
# Layout of DIR:
#   DIR/.skillbox-registry  marker: `stop` only deletes a DIR that has it
#   DIR/config.yml          the registry's config (see write_config)
#   DIR/data/               filesystem storage (blobs, repositories)
#   DIR/registry.log        the registry's log (access log included)
#   DIR/registry.pid        its pid          DIR/address  what `start` printed
#
# The registry the Debian package installs as a system service (on :5000, on
# every interface, with htpasswd auth) is never used, and `install` sees to it
# that installing the package does not leave that service running.

set -euo pipefail

PROG=${0##*/}
MARKER=.skillbox-registry
# Seconds to wait for /v2/ to answer after starting the registry.
START_TIMEOUT=20
# Seconds the registry gets to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT=10
# Ports tried are drawn from this range (below Linux's ephemeral range, so a
# client's outgoing connection rarely holds one).
PORT_MIN=20000
PORT_MAX=31999
PORT_TRIES=20

usage() {
	cat <<EOF
Usage: $PROG COMMAND [DIR]

The test suite's private OCI registry (CNCF distribution 2.8, Debian's
docker-registry) on 127.0.0.1, plain HTTP, no auth, deletes enabled, all of
whose state lives under DIR.

Commands:
  install     Install docker-registry and skopeo (and curl, openssl, xxd)
              with apt-get if missing, without starting the package's
              system-wide service. Non-interactive; uses sudo -n when not
              root. Quiet on success.
  start DIR   Create DIR, start a registry on a free port of 127.0.0.1 with
              its storage in DIR/data, wait up to ${START_TIMEOUT}s for /v2/ to
              answer, and print exactly one line, 127.0.0.1:PORT. If the
              registry of DIR already runs, just prints that line. On failure
              prints the end of DIR/registry.log and exits 1.
  stop DIR    Stop the registry of DIR and delete DIR. Safe to repeat, and
              after a failed start.
  -h, --help  Show this help.

Example:
  addr=\$($PROG start /tmp/sbxr-1)
  skopeo copy --dest-tls-verify=false oci:/tmp/layout:x docker://\$addr/x:1
  curl -s http://\$addr/v2/x/tags/list
  $PROG stop /tmp/sbxr-1
EOF
}

die() {
	echo "$PROG: $*" >&2
	exit 1
}

warn() {
	echo "$PROG: $*" >&2
}

# ---------------------------------------------------------------- install

# as_root and apt_install.
# shellcheck source=../lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt.sh"

# True if the package's own service (the one on :5000) is running: under
# systemd as docker-registry.service, or started by its init script, which
# records the pid in /var/run/docker-registry.pid.
system_registry_running() {
	if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
		systemctl is-active --quiet docker-registry.service 2>/dev/null && return 0
	fi
	local pid
	pid=$(cat /var/run/docker-registry.pid 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == docker-registry ]]
}

# After a fresh install of docker-registry: keep its service from starting at
# boot, and stop it if it was started anyway (a machine whose policy-rc.d we
# could not put in place, or a systemd that started it by other means).
neutralise_system_service() {
	if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
		as_root systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
	else
		# sysvinit (or no init system, as in a container): the package ran
		# `update-rc.d docker-registry defaults`; keep its links but disabled.
		as_root update-rc.d docker-registry disable >/dev/null 2>&1 || true
		# The package also enabled its systemd unit (a symlink in
		# /etc/systemd/system), for a later boot with systemd.
		as_root deb-systemd-helper disable docker-registry.service >/dev/null 2>&1 || true
		if system_registry_running; then
			as_root /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
		fi
	fi
	if system_registry_running; then
		warn "the system-wide docker-registry service is running and could not be stopped"
		return 1
	fi
}

cmd_install() {
	local missing=()
	command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
	command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
	command -v curl >/dev/null 2>&1 || missing+=(curl)
	# cosign_interop.sh signs and re-encodes signatures with these.
	command -v openssl >/dev/null 2>&1 || missing+=(openssl)
	command -v xxd >/dev/null 2>&1 || missing+=(xxd)
	((${#missing[@]} == 0)) && return 0

	# policy-rc.d is how Debian lets an installer forbid starting services:
	# invoke-rc.d (sysvinit) and deb-systemd-invoke (systemd) both ask it, and
	# exit status 101 means "action forbidden". Container images usually ship
	# one; where there is none, put one in place for the duration of apt-get.
	local policy=/usr/sbin/policy-rc.d our_policy=""
	if [[ ! -e $policy ]]; then
		our_policy=$policy
		printf '#!/bin/sh\n# Put here by skillbox tests/oci/registry.sh install; removed when it ends.\nexit 101\n' |
			as_root tee "$policy" >/dev/null
		as_root chmod 755 "$policy"
		# shellcheck disable=SC2064
		trap "as_root rm -f '$policy'" EXIT
	fi

	apt_install "${missing[@]}" || die "install failed: apt-get install ${missing[*]}"

	if [[ -n $our_policy ]]; then
		as_root rm -f "$our_policy"
		trap - EXIT
	fi
	if [[ " ${missing[*]} " == *" docker-registry "* ]]; then
		neutralise_system_service || die "stop it with: systemctl disable --now docker-registry (or /etc/init.d/docker-registry stop)"
	fi
}

# ---------------------------------------------------------------- helpers

# Normalise DIR to an absolute path without trailing slash or '..'.
normalise_dir() {
	local dir=${1-}
	[[ -n $dir ]] || die "missing DIR (see --help)"
	dir=$(realpath -m -- "$dir")
	case $dir in
	/ | /tmp | /var | /var/tmp | /root | /home | /usr | /etc | /run)
		die "refusing to use $dir as the registry directory"
		;;
	esac
	[[ $dir != *[[:space:]]* ]] || die "DIR must not contain spaces: $dir"
	printf '%s\n' "$dir"
}

# Pids of docker-registry processes serving DIR's config: matching on the
# config's full path keeps /tmp/sbxr-1 from matching /tmp/sbxr-12.
pids_of() {
	local dir=$1 p comm cmdline
	for p in /proc/[0-9]*; do
		{ read -r comm <"$p/comm"; } 2>/dev/null || continue
		[[ $comm == docker-registr* ]] || continue
		cmdline=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
		[[ $cmdline == *" $dir/config.yml "* ]] && echo "${p#/proc/}"
	done
	return 0
}

# True if any of the pids is still alive (a zombie does not count).
any_alive() {
	local p stat
	for p in "$@"; do
		{ read -r stat <"/proc/$p/stat"; } 2>/dev/null || continue
		stat=${stat##*) }
		[[ ${stat:0:1} == Z ]] || return 0
	done
	return 1
}

# Send SIGTERM to the pids, wait up to $1 seconds, then SIGKILL the rest.
terminate() {
	local timeout=$1 i
	shift
	(($# > 0)) || return 0
	kill -TERM "$@" 2>/dev/null || true
	for ((i = 0; i < timeout * 10; i++)); do
		any_alive "$@" || return 0
		sleep 0.1
	done
	warn "still running after ${timeout}s, sending SIGKILL to: $*"
	kill -KILL "$@" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		any_alive "$@" || return 0
		sleep 0.1
	done
	warn "could not kill: $*"
}

# True if a distribution registry answers GET /v2/ at ADDR: status 200 and the
# header every distribution registry sets.
answers() {
	local addr=$1 headers
	headers=$(curl -s --noproxy '*' --max-time 2 -o /dev/null -D - "http://$addr/v2/" 2>/dev/null) || return 1
	[[ $headers == "HTTP/1.1 200"* ]] &&
		grep -qi '^docker-distribution-api-version: registry/2.0' <<<"$headers"
}

# True if something listens on 127.0.0.1:PORT or on every address at PORT.
port_taken() {
	local port=$1
	ss -Hltn "( sport = :$port )" 2>/dev/null | grep -q . && return 0
	# No ss (iproute2 missing): probe with a connection.
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# Take DIR's lock (fd 9) so that start and stop of one DIR never overlap.
lock_dir() {
	exec 9>"$1/.lock"
	flock -w 60 9 || die "timed out waiting for the lock on $1"
}

show_log() {
	local log=$1
	echo "--- last 30 lines of $log ---" >&2
	if [[ -s $log ]]; then tail -n 30 "$log" >&2; else echo "(empty)" >&2; fi
}

# ---------------------------------------------------------------- start

write_config() {
	local dir=$1 port=$2
	# No `auth` section: anonymous push and pull. No `tls` section: plain
	# HTTP. No blob descriptor cache: a deleted blob must be gone at once.
	# Upload purging off: it would delete uploads of a test paused at a
	# breakpoint for a day; DIR is deleted whole instead.
	cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
EOF
}

cmd_start() {
	local dir
	dir=$(normalise_dir "${1-}")
	command -v docker-registry >/dev/null 2>&1 || die "docker-registry not found; run '$PROG install'"
	command -v curl >/dev/null 2>&1 || die "curl not found; run '$PROG install'"

	if [[ -e $dir && ! -e $dir/$MARKER ]] && [[ -n $(ls -A "$dir") ]]; then
		die "$dir exists, is not empty and was not made by $PROG; refusing to use it"
	fi
	mkdir -p "$dir/data"
	touch "$dir/$MARKER"
	lock_dir "$dir"

	local running
	running=$(pids_of "$dir")
	if [[ -n $running ]]; then
		local addr
		addr=$(cat "$dir/address" 2>/dev/null) || addr=""
		if [[ -n $addr ]] && answers "$addr"; then
			echo "$addr"
			return 0
		fi
		# A registry of DIR that does not answer is stale: replace it.
		# shellcheck disable=SC2086
		terminate "$STOP_TIMEOUT" $running
	fi
	rm -f "$dir/registry.pid" "$dir/address"

	# The registry overrides its config from REGISTRY_* variables (e.g.
	# REGISTRY_HTTP_ADDR); none of the caller's may leak in.
	local unset_env=() v
	for v in $(compgen -e); do
		[[ $v == REGISTRY_* ]] && unset_env+=(-u "$v")
	done

	local try port pid i
	for ((try = 0; try < PORT_TRIES; try++)); do
		port=$((PORT_MIN + RANDOM % (PORT_MAX - PORT_MIN + 1)))
		port_taken "$port" && continue
		write_config "$dir" "$port"
		: >"$dir/registry.log"
		# setsid: own session, so the caller's Ctrl-C or process-group kill
		# does not reach the registry; `stop` ends it. Lock fd 9 is not
		# inherited.
		setsid env "${unset_env[@]}" docker-registry serve "$dir/config.yml" \
			>>"$dir/registry.log" 2>&1 </dev/null 9>&- &
		pid=$!
		for ((i = 0; i < START_TIMEOUT * 10; i++)); do
			if ! any_alive "$pid"; then
				# Lost the port to another process between the check and
				# the bind: draw another one.
				grep -q 'address already in use' "$dir/registry.log" && continue 2
				warn "docker-registry exited during start-up"
				show_log "$dir/registry.log"
				exit 1
			fi
			if answers "127.0.0.1:$port"; then
				echo "$pid" >"$dir/registry.pid"
				echo "127.0.0.1:$port" >"$dir/address"
				echo "127.0.0.1:$port"
				return 0
			fi
			sleep 0.1
		done
		warn "docker-registry did not answer on 127.0.0.1:$port within ${START_TIMEOUT}s"
		show_log "$dir/registry.log"
		terminate "$STOP_TIMEOUT" "$pid"
		exit 1
	done
	die "no free port found in $PORT_TRIES tries ($PORT_MIN-$PORT_MAX)"
}

# ---------------------------------------------------------------- stop

cmd_stop() {
	local dir
	dir=$(normalise_dir "${1-}")
	if [[ -d $dir ]]; then
		if [[ ! -e $dir/$MARKER && -n $(ls -A "$dir") ]]; then
			die "$dir was not made by $PROG (no $MARKER); refusing to delete it"
		fi
		lock_dir "$dir"
	fi
	# shellcheck disable=SC2046
	terminate "$STOP_TIMEOUT" $(pids_of "$dir")
	# shellcheck disable=SC2046
	if any_alive $(pids_of "$dir"); then
		die "the registry of $dir is still alive"
	fi
	rm -rf -- "$dir"
}

# ---------------------------------------------------------------- main

main() {
	local cmd=${1-}
	case $cmd in
	install)
		(($# == 1)) || die "usage: $PROG install"
		cmd_install
		;;
	start | stop)
		(($# == 2)) || die "usage: $PROG $cmd DIR"
		"cmd_$cmd" "$2"
		;;
	-h | --help | help)
		usage
		;;
	"")
		usage >&2
		exit 2
		;;
	*)
		warn "unknown command: $cmd"
		usage >&2
		exit 2
		;;
	esac
}

main "$@"
