#!/usr/bin/env bash
# tests/docker/dockerd.sh - the test suite's private Docker engine.
#
# Runs a dockerd (and its own containerd) whose every file, socket, mount,
# process and cgroup is tied to one directory DIR, so that tests can use a
# real Docker engine without touching the machine's own one (if any, e.g. one
# on /var/run/docker.sock or a system containerd on /run/containerd) and can
# remove every trace of it afterwards.
#
# Usage:
#   tests/docker/dockerd.sh install      # apt-get docker.io busybox-static if missing
#   DOCKER_HOST=$(tests/docker/dockerd.sh start /tmp/sbxd-1234)
#   ... docker build / run against $DOCKER_HOST ...
#   tests/docker/dockerd.sh stop /tmp/sbxd-1234
#
# Layout of DIR (keep DIR short: unix socket paths must stay < 108 bytes):
#   DIR/.skillbox-dockerd   marker: `stop` only deletes a DIR that has it
#   DIR/docker.sock         the engine's API socket (what `start` prints)
#   DIR/dockerd.log         dockerd's log       DIR/dockerd.pid  its pid
#   DIR/containerd.log      containerd's log    DIR/containerd.sock
#   DIR/daemon.json         empty dockerd config (so /etc/docker/daemon.json
#                           is never read)
#   DIR/containerd.toml     containerd config (every path inside DIR)
#   DIR/containerd/         containerd's root and state
#   DIR/root/               dockerd --data-root (images, containers, overlay2)
#   DIR/exec/               dockerd --exec-root (runc state, netns mounts)
#
# Why dockerd gets its own containerd: dockerd 20.10 uses the *system*
# containerd whenever /run/containerd/containerd.sock exists (it only
# supervises a containerd of its own when that file is absent), which would
# put our containers into another engine's containerd. So we start one
# containerd per DIR and pass it with --containerd.
#
# Containers go into the cgroup /docker-private/<name of DIR> (cgroup v1 and
# v2 alike, cgroupfs driver), so several engines can run side by side and
# `stop` can find and kill every process a container left behind.
#
# Known traces outside DIR that cannot be avoided (all harmless, shared with
# any other Docker on the machine, and left in place): dockerd 20.10 creates
# /etc/docker/key.json and the empty directory /run/docker/plugins if missing;
# containerd's runc-v2 shims put their sockets in /run/containerd/s/ (`stop`
# removes ours, not the directory).

set -euo pipefail

PROG=${0##*/}
MARKER=.skillbox-dockerd
CGROUP_TOP=docker-private
# Seconds to wait for the API to answer after starting dockerd.
START_TIMEOUT=30
# Seconds dockerd gets to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT=15
# Longest DIR allowed: the longest socket dockerd makes is
# DIR/exec/libnetwork/<12 hex>.sock (DIR + 32 bytes), and sun_path holds 107.
MAX_DIR_LEN=72

usage() {
	cat <<EOF
Usage: $PROG COMMAND [DIR]

The test suite's private Docker engine: a dockerd with its own containerd,
all of whose state lives under DIR (use a short path such as /tmp/sbxd-XXXX).

Commands:
  install     Install docker.io and busybox-static with apt-get if dockerd,
              containerd, runc or /bin/busybox is missing. Quiet on success.
  start DIR   Create DIR and start the engine in it (log: DIR/dockerd.log).
              Waits up to ${START_TIMEOUT}s for the API, then prints exactly one line,
              unix://DIR/docker.sock, and exits 0. If the engine of DIR
              already runs, just prints that line. On failure prints the
              last 30 lines of the log to stderr, stops what it started,
              and exits 1 (run 'stop DIR' to remove DIR).
  stop DIR    Remove all containers, stop dockerd and containerd, kill
              whatever is left of them, unmount everything under DIR,
              remove the engine's cgroups and delete DIR. Safe to repeat,
              and after a failed or partial start.
  -h, --help  Show this help.

Only processes whose command line names DIR are ever signalled; another
dockerd on the machine (e.g. /var/run/docker.sock) is never touched.

Example:
  export DOCKER_HOST=\$($PROG start /tmp/sbxd-1)
  DOCKER_BUILDKIT=0 docker build --network none -t app ./app
  docker run --rm --network host app
  $PROG stop /tmp/sbxd-1
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

cmd_install() {
	local missing=()
	command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
	if ! command -v containerd >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
		# docker.io depends on both; asking for it pulls them in.
		[[ " ${missing[*]-} " == *" docker.io "* ]] || missing+=(docker.io)
	fi
	[[ -x /bin/busybox ]] || missing+=(busybox-static)
	command -v curl >/dev/null 2>&1 || missing+=(curl)
	((${#missing[@]} == 0)) && return 0

	local log
	log=$(mktemp)
	# Try without refreshing the package lists first: it is faster and works
	# whenever the lists are recent enough.
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		"${missing[@]}" >"$log" 2>&1; then
		if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
			--no-install-recommends "${missing[@]}"; } >>"$log" 2>&1; then
			cat "$log" >&2
			rm -f "$log"
			die "install failed: apt-get install ${missing[*]}"
		fi
	fi
	rm -f "$log"
}

# ---------------------------------------------------------------- helpers

# Normalise DIR to an absolute path without trailing slash or '..'.
normalise_dir() {
	local dir=${1-}
	[[ -n $dir ]] || die "missing DIR (see --help)"
	dir=$(realpath -m -- "$dir")
	case $dir in
	/ | /tmp | /var | /var/tmp | /root | /home | /usr | /etc | /run)
		die "refusing to use $dir as the engine directory"
		;;
	esac
	[[ $dir != *[[:space:]]* ]] || die "DIR must not contain spaces: $dir"
	printf '%s\n' "$dir"
}

# Name of this engine's cgroup below /docker-private: the basename of DIR
# plus a hash of the full path, so that two DIRs never share one.
cgroup_name() {
	local dir=$1 hash
	hash=$(printf '%s' "$dir" | sha256sum)
	printf '%s-%s\n' "${dir##*/}" "${hash:0:8}"
}

# Print the pids of the processes whose command line contains "DIR/" and whose
# program is one of the given names (dockerd, containerd, ...). Matching on
# "DIR/" with the slash keeps /tmp/sbxd-1 from matching /tmp/sbxd-12.
pids_of() {
	local dir=$1
	shift
	local p comm cmdline name
	for p in /proc/[0-9]*; do
		{ read -r comm <"$p/comm"; } 2>/dev/null || continue
		for name in "$@"; do
			# comm is cut to 15 characters (containerd-shim-runc-v2).
			if [[ $comm == "${name:0:15}" ]]; then
				cmdline=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
				[[ $cmdline == *"$dir/"* ]] && echo "${p#/proc/}"
				break
			fi
		done
	done
}

# True if any of the pids is still alive (a zombie waiting for its parent to
# reap it does not count).
any_alive() {
	local p stat
	for p in "$@"; do
		{ read -r stat <"/proc/$p/stat"; } 2>/dev/null || continue
		# Field 3, after the parenthesised command name, is the state.
		stat=${stat##*) }
		[[ ${stat:0:1} == Z ]] || return 0
	done
	return 1
}

# Send SIGTERM to the pids, wait up to $1 seconds, then SIGKILL the rest.
terminate() {
	local timeout=$1
	shift
	(($# > 0)) || return 0
	kill -TERM "$@" 2>/dev/null || true
	local i
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

# True if the engine of DIR answers /_ping.
ping() {
	local sock=$1/docker.sock
	[[ -S $sock ]] || return 1
	[[ $(curl -s --max-time 2 --unix-socket "$sock" http://docker/_ping 2>/dev/null) == OK ]]
}

# Take DIR's lock (fd 9) so that start and stop of one DIR never overlap.
lock_dir() {
	exec 9>"$1/.lock"
	flock -w 120 9 || die "timed out waiting for the lock on $1"
}

# ---------------------------------------------------------------- start

write_configs() {
	local dir=$1
	echo '{}' >"$dir/daemon.json"
	# Every path containerd would otherwise put under /var/lib/containerd,
	# /run/containerd or /opt/containerd is moved into DIR. The CRI plugin and
	# the snapshotters dockerd does not use are disabled.
	cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$dir/containerd.sock"

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$dir/containerd/opt"
  [plugins."io.containerd.runtime.v1.linux"]
    runtime_root = "$dir/containerd/runc"
EOF
}

# Print the last lines of a log to stderr.
show_log() {
	local log=$1 lines=$2
	echo "--- last $lines lines of $log ---" >&2
	if [[ -s $log ]]; then
		tail -n "$lines" "$log" >&2
	else
		echo "(empty)" >&2
	fi
}

# Report a failed start (with the log of the daemon that failed), stop what
# was started, and exit 1. DIR and its logs stay for `stop`.
start_failed() {
	local dir=$1 log=$2
	shift 2
	warn "$*"
	show_log "$log" 30
	# shellcheck disable=SC2046
	terminate 5 $(pids_of "$dir" dockerd)
	# shellcheck disable=SC2046
	terminate 5 $(pids_of "$dir" containerd)
	exit 1
}

cmd_start() {
	local dir
	dir=$(normalise_dir "${1-}")
	((${#dir} <= MAX_DIR_LEN)) ||
		die "DIR is too long (${#dir} > $MAX_DIR_LEN bytes; unix socket paths must stay < 108): $dir"
	command -v dockerd >/dev/null 2>&1 || die "dockerd not found; run '$PROG install'"
	command -v containerd >/dev/null 2>&1 || die "containerd not found; run '$PROG install'"
	command -v curl >/dev/null 2>&1 || die "curl not found; run '$PROG install'"

	if [[ -e $dir && ! -e $dir/$MARKER ]] && [[ -n $(ls -A "$dir") ]]; then
		die "$dir exists, is not empty and was not made by $PROG; refusing to use it"
	fi
	mkdir -p "$dir"
	touch "$dir/$MARKER"
	lock_dir "$dir"

	local url=unix://$dir/docker.sock
	local dockerd_pids
	dockerd_pids=$(pids_of "$dir" dockerd)
	if [[ -n $dockerd_pids ]]; then
		# Already running (or still starting): wait for it to answer.
		local i
		for ((i = 0; i < START_TIMEOUT * 10; i++)); do
			if ping "$dir"; then
				echo "$url"
				return 0
			fi
			# shellcheck disable=SC2086
			any_alive $dockerd_pids || break
			sleep 0.1
		done
		start_failed "$dir" "$dir/dockerd.log" "the dockerd of $dir runs but does not answer on $url"
	fi

	# A containerd without its dockerd is left over from a failed start or a
	# killed dockerd: replace it by a fresh one.
	# shellcheck disable=SC2046
	terminate 5 $(pids_of "$dir" containerd)

	write_configs "$dir"
	# Stale files of a dead engine would mislead dockerd (pid file naming a
	# reused pid) or our wait for containerd's socket.
	rm -f "$dir/dockerd.pid" "$dir/containerd.sock" "$dir/containerd.sock.ttrpc"
	: >"$dir/dockerd.log"
	: >"$dir/containerd.log"

	# setsid: own session, so the caller's Ctrl-C or process-group kill does
	# not reach the daemons; `stop` ends them. Lock fd 9 is not inherited.
	setsid containerd --config "$dir/containerd.toml" \
		>>"$dir/containerd.log" 2>&1 </dev/null 9>&- &
	local containerd_pid=$! i
	for ((i = 0; i < 100; i++)); do
		[[ -S $dir/containerd.sock ]] && break
		kill -0 "$containerd_pid" 2>/dev/null ||
			start_failed "$dir" "$dir/containerd.log" "containerd exited during start-up"
		sleep 0.1
	done
	[[ -S $dir/containerd.sock ]] || start_failed "$dir" "$dir/containerd.log" "containerd did not create $dir/containerd.sock in 10s"

	setsid dockerd \
		--config-file "$dir/daemon.json" \
		--host "$url" \
		--containerd "$dir/containerd.sock" \
		--data-root "$dir/root" \
		--exec-root "$dir/exec" \
		--pidfile "$dir/dockerd.pid" \
		--iptables=false --ip6tables=false --ip-masq=false \
		--bridge=none \
		--storage-driver overlay2 \
		--exec-opt native.cgroupdriver=cgroupfs \
		--cgroup-parent "/$CGROUP_TOP/$(cgroup_name "$dir")" \
		>>"$dir/dockerd.log" 2>&1 </dev/null 9>&- &
	local dockerd_pid=$!

	for ((i = 0; i < START_TIMEOUT * 10; i++)); do
		if ping "$dir"; then
			echo "$url"
			return 0
		fi
		kill -0 "$dockerd_pid" 2>/dev/null || start_failed "$dir" "$dir/dockerd.log" "dockerd exited during start-up"
		sleep 0.1
	done
	start_failed "$dir" "$dir/dockerd.log" "dockerd did not answer on $url within ${START_TIMEOUT}s"
}

# ---------------------------------------------------------------- stop

# Remove every container through the API (this also stops them and lets
# dockerd unmount their filesystems).
remove_containers() {
	local dir=$1 sock=$1/docker.sock ids id
	ping "$dir" || return 0
	ids=$(curl -s --max-time 10 --unix-socket "$sock" \
		'http://docker/containers/json?all=1' | grep -o '"Id":"[0-9a-f]*"' | cut -d'"' -f4) || true
	for id in $ids; do
		curl -s --max-time 30 -o /dev/null --unix-socket "$sock" \
			-X DELETE "http://docker/containers/$id?force=1&v=1" || true
	done
}

# Kill every process in the engine's cgroups (container processes orphaned
# by a killed shim), then remove the cgroups bottom-up, and /docker-private
# itself when no other engine uses it.
remove_cgroups() {
	local name=$1 top sub try pids
	for top in /sys/fs/cgroup/*/"$CGROUP_TOP" /sys/fs/cgroup/"$CGROUP_TOP"; do
		[[ -d $top ]] || continue
		sub=$top/$name
		if [[ -d $sub ]]; then
			for ((try = 0; try < 50; try++)); do
				pids=$(find "$sub" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
				[[ -z $pids ]] && break
				# shellcheck disable=SC2086
				kill -KILL $pids 2>/dev/null || true
				sleep 0.1
			done
			# rmdir can fail with EBUSY for a moment after the last exit.
			for ((try = 0; try < 50; try++)); do
				find "$sub" -depth -type d -exec rmdir {} + 2>/dev/null || true
				[[ -d $sub ]] || break
				sleep 0.1
			done
			[[ -d $sub ]] && warn "could not remove cgroup $sub"
		fi
		# Succeeds only when empty, i.e. when no other engine still uses it.
		rmdir "$top" 2>/dev/null || true
	done
}

# Mount points at or below DIR, deepest (most recently mounted) first.
mounts_under() {
	local dir=$1
	# Field 5 of mountinfo is the mount point (octal-escaped; DIR has no
	# spaces). tac: children are listed after their parents.
	awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | tac
}

unmount_all() {
	local dir=$1 m try
	for ((try = 0; try < 5; try++)); do
		local left
		left=$(mounts_under "$dir")
		[[ -z $left ]] && return 0
		while read -r m; do
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
		done <<<"$left"
	done
	left=$(mounts_under "$dir")
	[[ -z $left ]] || warn "still mounted: $(echo "$left" | tr '\n' ' ')"
}

cmd_stop() {
	local dir
	dir=$(normalise_dir "${1-}")
	if [[ -d $dir ]]; then
		if [[ ! -e $dir/$MARKER && -n $(ls -A "$dir") ]]; then
			die "$dir was not made by $PROG (no $MARKER); refusing to delete it"
		fi
		lock_dir "$dir"
	fi

	# 1. Containers, through the API while dockerd still answers.
	remove_containers "$dir"

	# 2. dockerd: SIGTERM, SIGKILL after $STOP_TIMEOUT s.
	# shellcheck disable=SC2046
	terminate "$STOP_TIMEOUT" $(pids_of "$dir" dockerd)

	# 3. containerd (it does not stop the shims; they are handled next).
	# shellcheck disable=SC2046
	terminate 5 $(pids_of "$dir" containerd)

	# 4. Processes left in the engine's cgroups (containers that outlived
	# dockerd), then the cgroups. Killed before their shims, so that the
	# shims, not PID 1, reap them.
	remove_cgroups "$(cgroup_name "$dir")"

	# 5. Leftover shims and runc (only if a container outlived dockerd).
	# Their ids name their sockets in /run/containerd/s: sha256 of
	# "<containerd address>/<namespace>/<id>".
	local shims ids="" p
	shims=$(pids_of "$dir" containerd-shim-runc-v2 containerd-shim runc)
	for p in $shims; do
		ids+=" $(tr '\0' '\n' 2>/dev/null <"/proc/$p/cmdline" | sed -n '/^-id$/{n;p}')" || true
	done
	if [[ -n $shims ]]; then
		# shellcheck disable=SC2086
		kill -KILL $shims 2>/dev/null || true
	fi
	if [[ -d $dir/root/containers ]]; then
		ids+=" $(ls "$dir/root/containers")"
	fi
	local id hash
	for id in $ids; do
		hash=$(printf '%s' "$dir/containerd.sock/moby/$id" | sha256sum)
		rm -f "/run/containerd/s/${hash%% *}"
	done

	# 6. Mounts: overlay2 layers, the nsfs of exec/netns/*, the data root.
	unmount_all "$dir"

	# 7. DIR itself.
	if [[ -d $dir ]]; then
		rm -rf -- "$dir" 2>/dev/null || { sleep 1 && rm -rf -- "$dir"; } ||
			die "could not remove $dir"
	fi
	# shellcheck disable=SC2046
	if any_alive $(pids_of "$dir" dockerd containerd containerd-shim-runc-v2 runc); then
		die "processes of $dir are still alive"
	fi
	return 0
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
		((EUID == 0)) || die "$cmd needs root"
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
