#!/usr/bin/env bash
# store-recovery.sh — how long does a `zpipes serve --store DIR` broker take
# to come back with a large queue, how much memory does it need for it, and
# how much disk does the queue take, full and drained?
#
# Two runs, each on a fresh DIR (STOPS="term kill"):
#   1. `zpipes serve --store DIR` (limits raised to hold the queue);
#   2. `zpipes cat -w` queues N chunks of SIZE bytes (default 1,048,576 x
#      1 KiB = 1 GiB) into one pipe: time, rate, the broker's VmRSS, and
#      `du -sb DIR` per queued byte;
#   3. the broker is stopped: SIGTERM (a clean stop; its time is reported)
#      in the first run, SIGKILL in the second;
#   4. it restarts on DIR: the recovery time is from the start of
#      `zpipes serve` until `zpipes ls` answers (polled with a short
#      --timeout), with its "store recovered" log line; then VmRSS and
#      VmHWM from /proc, and `zpipes ls` must show all N chunks;
#   5. `zpipes cat -r -n N` drains the pipe (bounded by DRAIN_TIMEOUT), the
#      lines must be 1..N in order; then `du -sb DIR` again (bytes left),
#      and once more after a clean stop.
# A broker that stops answering during the drain is sent SIGQUIT (its
# goroutines land in the log, shown in short) and the run is a failure.
#
# Usage: scripts/store-recovery.sh   (env: N=1048576 SIZE=1024 STOPS="term kill"
#        LIMIT=2GiB (--max-pipe-bytes and --max-total-bytes) SERVE_FLAGS=""
#        DRAIN_TIMEOUT=300 SERVE_WAIT=300 ZPIPES_BIN=prebuilt binary,
#        ZP_KEEP=1 keeps the work directory (and the stores), ZP_PREFIX=name
#        prefix of the work directory and endpoint)
#
# Figures, 2026-11-29, 2 cores, ext4 /tmp, 0edaf5a, defaults (1 GiB queued:
# 1,048,576 x 1 KiB, limits 2GiB), 26 s in all; run 1 (SIGTERM) / run 2
# (SIGKILL):
#   queue 1 GiB with cat -w (fsync): 2.90 s (370 MB/s) / 2.80 s (384 MB/s);
#     broker VmRSS with it queued 1603 / 1598 MiB
#   DIR full: 1076.9 MB = 1.003 x payload (both runs; also after the stop)
#   SIGTERM stop: 0.11 s (kept_chunks=1048576)
#   recovery until `zpipes ls` answers: 2.63 s / 2.79 s ("store recovered"
#     records=1025 pipes=1 chunks=1048576 bytes=1098907648); then VmRSS
#     1382 / 1369 MiB (= VmHWM): every queued chunk is in memory
#   drain: 4.23 s / 3.80 s, 1048576 lines in order; VmHWM by its end
#     2869 / 2764 MiB
#   FAILED, both runs: about half way through the drain the broker logs
#     level=ERROR msg="store failed: writes are refused from now on"
#     err="append a record of 493222923 bytes: record too large (the limit is 67108864)"
#   (the compaction's checkpoint writes a writer's whole queue as one
#   record, and the log takes records of at most 64 MiB). The reader goes on
#   and gets everything, but from then on nothing is recorded: after the
#   drain DIR still holds 1076.9 MB, a restart brings back 481536 chunks
#   the reader had consumed, and writes fail with "store failed".
#   The same failure with default limits, in 2 s: 240,000 lines of 1 KiB
#   through one cat -w, then cat -r -n 240000 (record of 86629513 bytes).
#   Below it (N=100000, 97 MiB, same day): recovery 0.20 s / 0.31 s, VmRSS
#   138 MiB, DIR 1.003 x payload, 17.3 MB left after the drain.
#
# After the fix (checkpoints write a queue in records of at most 8 MiB, and
# the store's callbacks never wait for the core), same machine and
# defaults, 30 s in all, run 1 (SIGTERM) / run 2 (SIGKILL):
#   queue 1 GiB: 4.21 s (255 MB/s) / 4.86 s (221 MB/s); VmRSS 1554 / 1483 MiB
#   DIR full: 1076.9 MB = 1.003 x payload; SIGTERM stop 0.26 s
#   recovery until `zpipes ls` answers: 3.72 s / 3.79 s, all 1048576 chunks;
#     VmRSS 1382 / 1366 MiB (every queued chunk is in memory)
#   drain: 6.57 s / 5.72 s, in order; three compactions on the way
#     (log 1077 MB with 505 MB live, then 484/208, then 199/66)
#   after the drain: DIR 63.1 MB (the log's slack), 0 chunks after a restart
#   verdict: OK
#
# With spilling (past 16 MiB of chunks in memory, writes stay on disk only;
# replay loads no chunk), same machine and defaults, run 1 (SIGTERM) / run 2
# (SIGKILL); d43a40a (compactions copy the spilled queue), 17 s in all:
#   queue 1 GiB: 2.25 s (477 MB/s) / 2.11 s (508 MB/s); VmRSS 57 / 56 MiB
#   DIR full: 1076.9 MB = 1.003 x payload; SIGTERM stop 0.01 s
#   recovery until `zpipes ls` answers: 0.73 s / 0.71 s, all 1048576 chunks;
#     VmRSS 14 / 14 MiB, VmHWM 16 / 16 MiB
#   drain: 4.66 s / 6.01 s, in order; VmHWM by its end 46 / 47 MiB; three
#     compactions (copying 505, 208 and 66 MB: 0.78 / 0.88 s, 0.33 / 0.49 s,
#     0.15 / 0.12 s of the core's time)
#   after the drain: DIR 63.1 MB, 0 chunks after a restart
#   verdict: OK
# f3caee4 (compactions keep the backlog's segments), 21 s in all, a busier
# machine:
#   queue 1 GiB: 3.72 s / 3.49 s; VmRSS 56 / 53 MiB; DIR 1.003 x payload
#   recovery: 1.39 s / 1.27 s; VmRSS 14 / 15 MiB, VmHWM 16 / 16 MiB
#   drain: 5.07 s / 5.26 s, in order; VmHWM by its end 44 / 49 MiB; four
#     compactions kept 8, 5 and 4 segments and copied nothing, then copied
#     9.4 MB: 5-30 ms of the core's time each
#   after the drain: DIR 12.9 MB, 0 chunks after a restart
#   verdict: OK
#   N=4194304 SIZE=64 STOPS=kill (256 MiB in 4M chunks of 64 B, 6 s): queue
#     2.27 s, VmRSS 48 MiB, DIR 1.031 x payload; recovery 0.33 s (628
#     records), VmRSS and VmHWM 14 MiB; drain 2.80 s in order, VmHWM 36 MiB;
#     two compactions (kept 2 segments, then copied 1.6 MB) of 12-14 ms;
#     DIR 3.0 MB after the drain. verdict: OK
source "$(dirname "$0")/lib.sh"
zp_init

N=${N:-1048576}
SIZE=${SIZE:-1024}
STOPS=${STOPS:-term kill}
LIMIT=${LIMIT:-2GiB}
SERVE_FLAGS=${SERVE_FLAGS:-}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300}
SERVE_WAIT=${SERVE_WAIT:-300}
((SIZE >= 11)) || { echo "SIZE must be at least 11" >&2; exit 2; }
W=$ZP_WORK
PAYLOAD=$((N * SIZE))
PIPE=big
# shellcheck disable=SC2206 # flags are words
FLAGS=(--max-pipe-bytes "$LIMIT" --max-total-bytes "$LIMIT" $SERVE_FLAGS)

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
kb_status() { zp_status "$ZP_BROKER" "$1"; }
# gen: N lines of SIZE bytes (the newline not counted): a number, padding.
gen() {
	awk -v N="$N" -v S="$SIZE" 'BEGIN {
		pad = sprintf("%*s", S - 10, ""); gsub(/ /, "x", pad)
		for (i = 1; i <= N; i++) printf "%010d%s\n", i, pad }'
}

# dump_if_silent LOG: if the broker does not answer ls, SIGQUIT it and show
# its goroutines in short; returns 1 then.
dump_if_silent() {
	if "$ZP" --timeout 5s ls >/dev/null 2>&1; then
		return 0
	fi
	echo "  the broker does not answer; SIGQUIT for its goroutines (whole dump in $1)"
	kill -QUIT "$ZP_BROKER" 2>/dev/null || true
	wait "$ZP_BROKER" 2>/dev/null || true
	awk '/^goroutine / { g = $0; k = 0; next }
		/^github.com\/zpipes\/zpipes/ && k < 2 { if (!k) print "    " g; print "      " $0; k++ }' "$1"
	return 1
}

echo "store-recovery: N=$N x SIZE=$SIZE B = payload $(mb $PAYLOAD) ($((PAYLOAD >> 20)) MiB); stops: $STOPS; serve flags: ${FLAGS[*]}"
echo "endpoint $ZPIPES_ENDPOINT, binary $ZP, work $W ($(df -h --output=fstype,avail "$W" | tail -1 | xargs))"
status=0
T0=$SECONDS
SUMMARY=()
for stop in $STOPS; do
	dir=$W/store-$stop log1=$W/broker-$stop-1.log log2=$W/broker-$stop-2.log
	mkdir -p "$dir"
	echo
	echo "--- run: stop by $stop ---"
	ZP_BROKER_LOG=$log1 zp_serve --store "$dir" "${FLAGS[@]}"
	t0=$(now)
	if ! gen | "$ZP" cat -w "$PIPE" 2>"$W/writer-$stop.err"; then
		echo "  the writer failed: $(cat "$W/writer-$stop.err")"
		status=1
		continue
	fi
	t1=$(now)
	queued=$(zp_queued "$PIPE")
	disk_full=$(du -sb "$dir" | cut -f1)
	rss_full=$(kb_status VmRSS)
	echo "  queued $queued chunks in $(secs "$t0" "$t1") s ($(awk -v b=$PAYLOAD -v a="$t0" -v c="$t1" 'BEGIN { printf "%.1f MB/s", b / 1e6 / (c - a) }'));" \
		"broker VmRSS $((rss_full / 1024)) MiB; DIR $(mb "$disk_full") = $(ratio "$disk_full" $PAYLOAD) x payload"

	t0=$(now)
	if [[ $stop == term ]]; then
		kill -TERM "$ZP_BROKER"
	else
		kill -KILL "$ZP_BROKER"
	fi
	wait "$ZP_BROKER" 2>/dev/null || true
	t1=$(now)
	disk_stopped=$(du -sb "$dir" | cut -f1)
	echo "  stopped by SIG${stop^^} in $(secs "$t0" "$t1") s; DIR $(mb "$disk_stopped") = $(ratio "$disk_stopped" $PAYLOAD) x payload"
	grep -h 'msg="shutting down"\|level=WARN\|level=ERROR\|compacting' "$log1" | sed 's/^/    /' || true

	t0=$(now)
	if ! ZP_BROKER_LOG=$log2 ZP_SERVE_WAIT=$SERVE_WAIT zp_serve --store "$dir" "${FLAGS[@]}"; then
		echo "  PROBLEM: the broker did not come back within ${SERVE_WAIT}s"
		status=1
		ZP_KEEP=1
		continue
	fi
	t1=$(now)
	recovery=$(secs "$t0" "$t1")
	rss=$(kb_status VmRSS) hwm=$(kb_status VmHWM)
	queued=$(zp_queued "$PIPE")
	echo "  recovery: $recovery s until ls answered; VmRSS $((rss / 1024)) MiB, VmHWM $((hwm / 1024)) MiB; queued $queued of $N"
	grep -h 'msg="store recovered"\|level=WARN\|level=ERROR' "$log2" | sed 's/^/    /' || true
	((queued == N)) || { echo "  PROBLEM: $queued chunks after the restart, $N were acknowledged"; status=1; }

	t0=$(now)
	rc=0
	timeout -k 10 -s INT "$DRAIN_TIMEOUT" "$ZP" cat -r -n "$queued" "$PIPE" 2>"$W/reader-$stop.err" |
		awk -v S="$SIZE" '{ n = substr($0, 1, 10) + 0; if (n != NR || length($0) != S) bad++ } END { print NR, bad + 0 }' >"$W/drain-$stop" || rc=$?
	t1=$(now)
	read -r got bad <"$W/drain-$stop"
	hwm2=$(kb_status VmHWM || echo 0)
	echo "  drained $got chunks in $(secs "$t0" "$t1") s (out of order or malformed: $bad); VmHWM now $((hwm2 / 1024)) MiB"
	[[ -s $W/reader-$stop.err ]] && sed 's/^/    reader: /' "$W/reader-$stop.err"
	grep -h 'compacting\|level=WARN\|level=ERROR' "$log2" | sed 's/^/    /' || true
	if ! dump_if_silent "$log2"; then
		status=1
		ZP_KEEP=1
		SUMMARY+=("$stop: recovery $recovery s, VmRSS $((rss / 1024)) MiB, VmHWM $((hwm / 1024)) MiB; disk $(ratio "$disk_full" $PAYLOAD) x payload; drain FROZE after $got of $N chunks")
		continue
	fi
	((got == N && bad == 0 && rc == 0)) || { echo "  PROBLEM: drain rc=$rc, $got of $N chunks, $bad bad"; status=1; }
	if grep -q 'level=ERROR' "$log2"; then
		echo "  PROBLEM: the broker logged an error (above)"
		status=1
	fi
	disk_drained=$(du -sb "$dir" | cut -f1)
	left=$(zp_queued "$PIPE")
	kill -TERM "$ZP_BROKER"
	wait "$ZP_BROKER" 2>/dev/null || true
	disk_after=$(du -sb "$dir" | cut -f1)
	echo "  after the drain: $left chunks left; DIR $(mb "$disk_drained"), after a clean stop $(mb "$disk_after")"
	# What the drain consumed must stay consumed across a restart.
	back=?
	if ZP_BROKER_LOG=$W/broker-$stop-3.log ZP_SERVE_WAIT=$SERVE_WAIT zp_serve --store "$dir" "${FLAGS[@]}"; then
		back=$(zp_queued "$PIPE")
		kill -TERM "$ZP_BROKER"
		wait "$ZP_BROKER" 2>/dev/null || true
	fi
	echo "  restarted once more on the drained DIR: $back chunks queued again (must be 0)"
	[[ $back == 0 ]] || status=1
	SUMMARY+=("$stop: recovery $recovery s, VmRSS $((rss / 1024)) MiB, VmHWM $((hwm / 1024)) MiB (drain: $((hwm2 / 1024)) MiB); disk $(ratio "$disk_full" $PAYLOAD) x payload full, $(mb "$disk_drained") drained ($(mb "$disk_after") after a clean stop); back after a restart: $back")
	rm -rf "$dir"
done
echo
echo "=== store-recovery summary: $N chunks x $SIZE B = $((PAYLOAD >> 20)) MiB queued, $((SECONDS - T0)) s in all ==="
for l in "${SUMMARY[@]}"; do echo "$l"; done
((status == 0)) && echo "verdict: OK" || echo "verdict: PROBLEMS (see above)"
exit $status
