#!/usr/bin/env bash
# rss.sh — the broker's memory with a large queue, and after draining it.
#
# Starts `zpipes serve`, writes N chunks of SIZE bytes (default 1,000,000 x 64
# B = 64 MB of payload) into one pipe with `zpipes cat -w` and no reader, then
# reads VmRSS and VmHWM from /proc/PID/status and checks the target
#     RSS <= 2 x payload + 20 MB          (MB = 10^6 bytes)
# Then drains the pipe with `zpipes cat -r -n N` (counting the lines) and
# samples RSS every second for POLL_SECONDS, since the Go runtime gives
# memory back to the OS lazily, and reports the peak (VmHWM), which is
# reached during the drain. Go runtime settings such as GOGC=50 or
# GOMEMLIMIT=120MiB in the environment reach the broker too. CYCLES>1 fills
# and drains again, to show whether a second round costs more memory.
#
# Usage: scripts/rss.sh       (env: N=1000000 SIZE=64 POLL_SECONDS=60 CYCLES=1
#        SERVE_FLAGS="..." extra flags for serve, ZPIPES_BIN=prebuilt binary)
source "$(dirname "$0")/lib.sh"
zp_init

N=${N:-1000000}
SIZE=${SIZE:-64}
POLL_SECONDS=${POLL_SECONDS:-60}
CYCLES=${CYCLES:-1}
PAYLOAD=$((N * SIZE))
TARGET=$((2 * PAYLOAD + 20000000))

mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB (%.1f MiB)", b / 1e6, b / 1048576 }'; }
rss() { echo $(($(zp_status "$ZP_BROKER" VmRSS) * 1024)); }
hwm() { echo $(($(zp_status "$ZP_BROKER" VmHWM) * 1024)); }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f s", b - a }'; }

# Lines of SIZE bytes (without the newline): a number, then padding.
awk -v N="$N" -v S="$SIZE" 'BEGIN {
	pad = sprintf("%*s", S - 10, ""); gsub(/ /, ".", pad)
	for (i = 1; i <= N; i++) printf "%010d%s\n", i, pad }' >"$ZP_WORK/input"

# shellcheck disable=SC2086
zp_serve ${SERVE_FLAGS:-}
echo "rss: broker pid $ZP_BROKER at $ZPIPES_ENDPOINT; $N chunks x $SIZE B = payload $(mb $PAYLOAD)"
echo "broker idle: VmRSS $(mb "$(rss)")"
status=0
for cycle in $(seq 1 "$CYCLES"); do
	echo
	echo "--- cycle $cycle ---"
	t0=$(now)
	"$ZP" cat -w big <"$ZP_WORK/input"
	t1=$(now)
	queued=$(zp_queued big)
	r=$(rss) h=$(hwm)
	echo "written in $(secs "$t0" "$t1"); queued chunks: $queued"
	echo "after write:  VmRSS $(mb "$r")  VmHWM $(mb "$h")"
	awk -v r="$r" -v h="$h" -v p="$PAYLOAD" 'BEGIN { printf "              RSS/payload %.2f   HWM/payload %.2f\n", r / p, h / p }'
	if ((r <= TARGET)); then verdict=PASS; else verdict=FAIL; status=1; fi
	echo "target RSS <= 2 x payload + 20 MB = $(mb $TARGET): $verdict (margin $(mb $((TARGET - r))))"
	sleep 2
	echo "2 s later:    VmRSS $(mb "$(rss)")"

	t0=$(now)
	got=$("$ZP" cat -r -n "$N" big | wc -l)
	t1=$(now)
	left=$(zp_queued big)
	echo "drained $got chunks in $(secs "$t0" "$t1"); left in pipe: $left"
	if ((got != N || left != 0)); then echo "  MISMATCH: expected $N read and 0 left"; status=1; fi
	echo "RSS after draining (time since drain: VmRSS):"
	start=$(now)
	for s in $(seq 0 "$POLL_SECONDS"); do
		r=$(rss)
		if ((s <= 5 || s % 5 == 0)); then
			printf '  t=%3ds  %s\n' "$s" "$(mb "$r")"
		fi
		((s == POLL_SECONDS)) || sleep "$(awk -v st="$start" -v s="$s" -v n="$(now)" 'BEGIN { d = st + s + 1 - n; print (d > 0 ? d : 0) }')"
	done
	h=$(hwm)
	if ((h <= TARGET)); then verdict=PASS; else verdict=FAIL; fi
	echo "peak VmHWM so far $(mb "$h") = $(awk -v h="$h" -v p="$PAYLOAD" 'BEGIN { printf "%.2f", h / p }') x payload;" \
		"peak <= target: $verdict (the peak comes during the drain; it is reported, not part of the exit status)"
done
echo
echo "threads $(zp_status "$ZP_BROKER" Threads), fds $(ls "/proc/$ZP_BROKER/fd" | wc -l)"
exit $status
