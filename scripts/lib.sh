# Shared helpers for the hand-run scripts in this directory (sourced, not run).
# Everything here talks to brokers on private abstract sockets only.

# zp_init: make a work directory, build zpipes into it (or use $ZPIPES_BIN),
# and install the EXIT trap that kills what we started and removes the dir.
# The work directory and the broker's abstract socket are both named
# ZP_PREFIX-SCRIPT.XXXXXX (ZP_PREFIX defaults to zpipes), so runs sharing a
# machine can tell their files and endpoints apart.
zp_init() {
	set -euo pipefail
	ZP_ROOT=$(cd "$(dirname "${BASH_SOURCE[1]}")/.." && pwd)
	ZP_WORK=$(mktemp -d "${TMPDIR:-/tmp}/${ZP_PREFIX:-zpipes}-$(basename "${BASH_SOURCE[1]}" .sh).XXXXXX")
	trap zp_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	if [[ -n ${ZPIPES_BIN:-} ]]; then
		ZP=$ZPIPES_BIN
	else
		ZP=$ZP_WORK/zpipes
		(cd "$ZP_ROOT" && go build -o "$ZP" .)
	fi
	ZPIPES_ENDPOINT="ipc://@$(basename "$ZP_WORK")-$RANDOM$RANDOM"
	export ZPIPES_ENDPOINT
}

# zp_cleanup (the EXIT trap) stops this shell's background jobs that are
# still running — `jobs -pr` lists only live ones, so a pid that has been
# reaped and perhaps reused by somebody else's process is never signalled —
# and removes the work directory.
zp_cleanup() {
	local rc=$? pids
	pids=$(jobs -pr)
	if [[ -n $pids ]]; then
		kill -TERM $pids 2>/dev/null || true
		for _ in $(seq 1 20); do
			[[ -z $(jobs -pr) ]] && break
			sleep 0.1
		done
		pids=$(jobs -pr)
		[[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
		wait 2>/dev/null || true
	fi
	if [[ -n ${ZP_KEEP:-} ]]; then
		echo "kept work directory $ZP_WORK" >&2
	else
		rm -rf "$ZP_WORK"
	fi
	exit "$rc"
}

# zp_serve [FLAGS...]: start a broker on $ZPIPES_ENDPOINT, logging to
# $ZP_BROKER_LOG (default $ZP_WORK/broker.log); sets ZP_BROKER to its pid and
# waits until it answers `zpipes ls`, for up to ZP_SERVE_WAIT seconds
# (default 5; a --store broker replaying a large log needs more).
zp_serve() {
	local log=${ZP_BROKER_LOG:-$ZP_WORK/broker.log} wait=${ZP_SERVE_WAIT:-5}
	"$ZP" serve "$@" 2>>"$log" &
	ZP_BROKER=$!
	zp_wait_ls "$wait" || {
		echo "broker (pid $ZP_BROKER, serve $*) did not answer within $wait s; log:" >&2
		tail -20 "$log" >&2
		return 1
	}
}

# zp_wait_ls SECONDS: wait until `zpipes ls` answers, polling; fails at once
# if the broker ZP_BROKER has exited, or after SECONDS. Each try has a short
# --timeout, so a broker that only starts answering late is seen soon after.
zp_wait_ls() {
	local deadline=$((SECONDS + $1))
	while ((SECONDS <= deadline)); do
		if "$ZP" --timeout 200ms ls >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$ZP_BROKER" 2>/dev/null || return 1
		sleep 0.02
	done
	return 1
}

# zp_kill9_broker: SIGKILL the broker ZP_BROKER and reap it.
zp_kill9_broker() {
	kill -KILL "$ZP_BROKER" 2>/dev/null || true
	wait "$ZP_BROKER" 2>/dev/null || true
}

# zp_status PID FIELD: a /proc/PID/status field, in kB for sizes.
zp_status() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# zp_queued PIPE: chunks queued in PIPE according to `zpipes ls --json` (0 if
# the pipe does not exist).
zp_queued() {
	"$ZP" ls --json | jq --arg p "$1" '[.[] | select(.name == $p) | .chunks] | add // 0'
}

# zp_pct P: the P-th percentile (nearest rank) of the numbers on stdin.
zp_pct() {
	sort -n | awk -v p="$1" '{ v[NR] = $1 } END {
		if (NR == 0) { print "n/a"; exit }
		r = int((p / 100) * NR + 0.999999); if (r < 1) r = 1; if (r > NR) r = NR
		print v[r] }'
}
