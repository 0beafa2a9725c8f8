# tests/lib/apt.sh - sourced by the test harness's install scripts.
#
#   as_root CMD...       CMD as root: directly when root, else `sudo -n`
#                        (never a password prompt: CI has no stdin)
#   apt_install PKG...   installs Debian packages non-interactively, with
#                        `apt-get update` only when the first try fails
#                        (faster, and enough whenever the lists are recent);
#                        prints apt's log and returns 1 when it fails

as_root() {
	if ((EUID == 0)); then
		"$@"
	else
		sudo -n "$@"
	fi
}

apt_install() {
	local log apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
		install --no-install-recommends "$@")
	log=$(mktemp)
	if ! as_root "${apt[@]}" >"$log" 2>&1 </dev/null; then
		if ! { as_root apt-get update -q && as_root "${apt[@]}"; } >>"$log" 2>&1 </dev/null; then
			cat "$log" >&2
			rm -f "$log"
			return 1
		fi
	fi
	rm -f "$log"
}
