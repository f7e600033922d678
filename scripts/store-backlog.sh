#!/usr/bin/env bash
# store-backlog.sh — can a `zpipes serve --store DIR` broker queue more
# than it can hold in memory? Issue 9's target: with 2 GiB queued, the
# broker's VmHWM stays at or below 100 MB throughout (chunks past the first
# 16 MiB in memory live in the store's log only, and come back into memory
# as the reader reaches them; see broker/spill.go).
#
#   1. `zpipes serve --store DIR` (limits raised to hold the queue: they
#      bound what is queued, on disk or in memory);
#   2. WRITERS concurrent `zpipes cat -w` (default 1) queue N lines of SIZE
#      bytes in all (default 2,097,152 x 1 KiB = 2 GiB) into one pipe, no
#      reader: time, rate, `du -sb DIR`;
#      the broker's VmRSS is sampled every 0.1 s meanwhile (max reported)
#      and its VmHWM read at the end;
#   3. the broker is stopped (STOP=kill: SIGKILL, or term) and restarted on
#      DIR: the time until `zpipes ls` answers, VmRSS and VmHWM then, and
#      `zpipes ls` must show all N chunks;
#   4. `zpipes cat -r -n N` drains the pipe; every line must be the one
#      written, byte for byte and in its writer's order (awk rebuilds each
#      expected line and compares), with VmRSS sampled meanwhile and VmHWM
#      at the end;
#      the broker's compactions are shown (how long the core spent in each);
#   5. DIR after the drain, and a restart must find 0 chunks queued.
# The verdict is OK if every line came back in order and every VmHWM is at
# most TARGET_MB (default 100, in 10^6 bytes).
#
# Usage: scripts/store-backlog.sh   (env: N=2097152 SIZE=1024 WRITERS=1 STOP=kill
#        LIMIT=3GiB (--max-pipe-bytes and --max-total-bytes; 2 GiB of 1 KiB
#        chunks counts 2.25 GB with their overhead) SERVE_FLAGS=""
#        TARGET_MB=100 DRAIN_TIMEOUT=600 SERVE_WAIT=300 ZPIPES_BIN=prebuilt
#        binary, ZP_KEEP=1 keeps the work directory, ZP_PREFIX=name prefix)
# TMPDIR must be on a real disk, not tmpfs (whose pages count as memory).
#
# Figures, 2026-11-29, after the merge into main (with issue 10's GC floor:
# the broker lets 32 MiB of garbage pile up before collecting, hence the
# higher restart figure), defaults, STOP=kill, 18 s: queue 7.41 s
# (290 MB/s), VmHWM 73.5 MB, DIR 1.003 x payload; restart 1.81 s, VmHWM
# 44.2 MB; drain 8.50 s, every line in order, VmHWM 64.9 MB; five
# compactions of 4-38 ms; DIR 22.1 MB drained, 0 chunks after a restart.
# verdict: OK.
#
# Before the merge, 70e73a6 (this
# script with WRITERS), defaults, STOP=kill, 17 s: queue 6.20 s (347 MB/s),
# VmRSS sampled max 66.2 MB, VmHWM 67.8 MB, DIR 1.003 x payload; restart
# 1.57 s, VmHWM 17.6 MB; drain 9.19 s, every line in order, VmHWM 47.8 MB;
# five compactions of 4-40 ms (kept 16, 9, 6, 5 segments, then copied
# 19 MB); DIR 22.1 MB drained, 0 chunks after a restart. verdict: OK.
#
# Earlier, f3caee4 (the script before WRITERS; lines without the writer's
# number), defaults
# (2,097,152 x 1 KiB = 2 GiB, limits 3GiB), STOP=kill (23 s) / STOP=term (28 s):
#   queue: 6.40 s (336 MB/s) / 10.84 s (198 MB/s); VmRSS sampled max 68.5 /
#     72.5 MB, VmHWM 68.3 / 72.3 MB; DIR 2153.8 MB = 1.003 x payload
#   restart: ls answers after 2.22 / 3.28 s ("store recovered" records=2049
#     chunks=2097152); VmRSS 13.8 / 15.0 MB, VmHWM 17.5 / 17.6 MB
#   drain: 2097152 lines in 13.6 / 13.7 s, every one the line written
#     there, in order; VmRSS sampled max 48.1 / 48.2 MB, VmHWM (restart and
#     drain) 52.3 / 49.2 MB; five compactions on the way: the first four
#     kept 16, 9, 6 and 5 segments of the backlog and copied nothing, the
#     last copied 19 MB; each held the core 7-142 ms
#   drained: DIR 22.1 MB; a restart finds 0 chunks
#   verdict: OK (VmHWM <= 100 MB throughout), both runs
# WRITERS=16 (16 cat -w at once, 128 MiB each), 70e73a6, 19 s: queue
#   5.25 s (409 MB/s), VmHWM 285.8 MB: OVER the target. The Go heap's live
#   bytes after each GC were 100-136 MB while queuing (GODEBUG=gctrace=1):
#   each writer keeps 4 MiB of MWRITEs in flight (cat -w's window) while its
#   replies wait for the fsync, and the log's buffers hold up to 16 MiB
#   more; the heap doubles that before a GC. Restart 1.72 s, VmHWM 18.0 MB;
#   drain 12.0 s in order, VmHWM 128.0 MB: OVER (live heap about 50 MB: a
#   record of 1 MiB read back per writer's queue, replies, the copies of two
#   compactions that kept nothing: 117 MB in 293 ms, 17 MB in 40 ms).
#   Queued chunks are on disk; what grows with the writers is their
#   requests in flight and one read-back write each.
# On the way there, same machine: 9fdc9a6 (every compaction copied the
# spilled backlog, through fresh buffers) peaked at 105-108 MB draining,
# all of it in the first compaction; becff2d (one reused buffer, the log's
# pending bytes held to 2 MiB) at 58-60 MB, but its compactions copied
# 1.04, 0.46, 0.19 and 0.05 GB and held the core 2.8-3.5 s, 1-1.9 s,
# 0.3-0.4 s and 0.1-0.16 s. Before spilling (store-recovery.sh's figures),
# 1 GiB queued took 1.4 GiB of RSS after a restart.
source "$(dirname "$0")/lib.sh"
zp_init

N=${N:-2097152}
WRITERS=${WRITERS:-1}
SIZE=${SIZE:-1024}
STOP=${STOP:-kill}
LIMIT=${LIMIT:-3GiB}
SERVE_FLAGS=${SERVE_FLAGS:-}
TARGET_MB=${TARGET_MB:-100}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-600}
SERVE_WAIT=${SERVE_WAIT:-300}
((SIZE >= 13)) || { echo "SIZE must be at least 13" >&2; exit 2; }
((N % WRITERS == 0)) || { echo "N must be a multiple of WRITERS" >&2; exit 2; }
W=$ZP_WORK
DIR=$W/store
PAYLOAD=$((N * SIZE))
PIPE=backlog
# shellcheck disable=SC2206 # flags are words
FLAGS=(--store "$DIR" --max-pipe-bytes "$LIMIT" --max-total-bytes "$LIMIT" $SERVE_FLAGS)

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k * 1024 / 1e6 }'; } # from kB
dmb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }       # from bytes
kb() { zp_status "$ZP_BROKER" "$1"; }
# gen W: writer W's N/WRITERS lines of SIZE bytes (the newline not
# counted): the writer, a number, padding.
gen() {
	awk -v N=$((N / WRITERS)) -v S="$SIZE" -v w="$1" 'BEGIN {
		pad = sprintf("%*s", S - 12, ""); gsub(/ /, "x", pad)
		for (i = 1; i <= N; i++) printf "%02d%010d%s\n", w, i, pad }'
}

# sample FILE: VmRSS of the broker every 0.1 s into FILE until stopped.
SAMPLER=
sample_start() {
	: >"$1"
	(
		while kill -0 "$ZP_BROKER" 2>/dev/null; do
			awk '$1 == "VmRSS:" { print $2 }' "/proc/$ZP_BROKER/status" 2>/dev/null >>"$1" || true
			sleep 0.1
		done
	) &
	SAMPLER=$!
}
sample_stop() {
	kill "$SAMPLER" 2>/dev/null || true
	wait "$SAMPLER" 2>/dev/null || true
	sort -n "$1" | tail -1
}

status=0
check_hwm() { # PHASE KB
	if (($2 * 1024 > TARGET_MB * 1000000)); then
		echo "  PROBLEM: VmHWM $(mb "$2") $1, over the ${TARGET_MB} MB target"
		status=1
	fi
}

mkdir -p "$DIR"
WPIDS=()
echo "store-backlog: N=$N x SIZE=$SIZE B, WRITERS=$WRITERS = payload $(dmb $PAYLOAD) ($((PAYLOAD >> 20)) MiB); stop by $STOP; serve ${FLAGS[*]}"
echo "endpoint $ZPIPES_ENDPOINT, binary $ZP, work $W ($(df -h --output=fstype,avail "$W" | tail -1 | xargs))"
T0=$SECONDS

# 1-2. Queue.
ZP_BROKER_LOG=$W/broker-1.log zp_serve "${FLAGS[@]}"
sample_start "$W/rss-queue"
t0=$(now)
for w in $(seq 1 "$WRITERS"); do
	gen "$w" | "$ZP" cat -w "$PIPE" 2>"$W/writer-$w.err" &
	WPIDS+=($!)
done
for pid in "${WPIDS[@]}"; do
	wait "$pid" || { echo "  a writer failed: $(cat "$W"/writer-*.err)"; exit 1; }
done
t1=$(now)
queued=$(zp_queued "$PIPE")
hwm_q=$(kb VmHWM) rss_q=$(kb VmRSS)
max_q=$(sample_stop "$W/rss-queue")
disk_full=$(du -sb "$DIR" | cut -f1)
echo "queue: $queued chunks in $(secs "$t0" "$t1") s ($(awk -v b=$PAYLOAD -v a="$t0" -v c="$t1" 'BEGIN { printf "%.1f MB/s", b / 1e6 / (c - a) }'));" \
	"broker VmRSS sampled max $(mb "$max_q"), at the end $(mb "$rss_q"), VmHWM $(mb "$hwm_q"); DIR $(dmb "$disk_full")" \
	"= $(awk -v a="$disk_full" -v b=$PAYLOAD 'BEGIN { printf "%.3f", a / b }') x payload"
check_hwm "while queuing" "$hwm_q"
((queued == N)) || { echo "  PROBLEM: $queued queued, $N written"; status=1; }

# 3. Restart.
kill -"${STOP^^}" "$ZP_BROKER"
wait "$ZP_BROKER" 2>/dev/null || true
t0=$(now)
if ! ZP_BROKER_LOG=$W/broker-2.log ZP_SERVE_WAIT=$SERVE_WAIT zp_serve "${FLAGS[@]}"; then
	echo "PROBLEM: the broker did not come back within ${SERVE_WAIT}s"
	exit 1
fi
t1=$(now)
recovery=$(secs "$t0" "$t1")
hwm_r=$(kb VmHWM) rss_r=$(kb VmRSS)
queued=$(zp_queued "$PIPE")
echo "restart after SIG${STOP^^}: ls answered after $recovery s; VmRSS $(mb "$rss_r"), VmHWM $(mb "$hwm_r"); queued $queued of $N"
grep -h 'msg="store recovered"\|level=WARN\|level=ERROR' "$W/broker-2.log" | sed 's/^/    /' || true
check_hwm "after the restart" "$hwm_r"
((queued == N)) || { echo "  PROBLEM: $queued chunks after the restart, $N were acknowledged"; status=1; }

# 4. Drain.
sample_start "$W/rss-drain"
t0=$(now)
rc=0
timeout -k 10 -s INT "$DRAIN_TIMEOUT" "$ZP" cat -r -n "$N" "$PIPE" 2>"$W/reader.err" |
	awk -v S="$SIZE" -v K="$WRITERS" -v M=$((N / WRITERS)) 'BEGIN { pad = sprintf("%*s", S - 12, ""); gsub(/ /, "x", pad) }
		{ w = substr($0, 1, 2) + 0; n = ++next_[w]; if ($0 != sprintf("%02d%010d%s", w, n, pad)) bad++ }
		END { for (w = 1; w <= K; w++) if (next_[w] != M) bad++; print NR, bad + 0 }' >"$W/drain" || rc=$?
t1=$(now)
read -r got bad <"$W/drain"
hwm_d=$(kb VmHWM) rss_d=$(kb VmRSS)
max_d=$(sample_stop "$W/rss-drain")
echo "drain: $got lines in $(secs "$t0" "$t1") s, $bad not the line written there;" \
	"broker VmRSS sampled max $(mb "$max_d"), at the end $(mb "$rss_d"), VmHWM (restart and drain) $(mb "$hwm_d")"
[[ -s $W/reader.err ]] && sed 's/^/    reader: /' "$W/reader.err"
grep -h 'compacting\|level=WARN\|level=ERROR' "$W/broker-2.log" | sed 's/^/    /' || true
check_hwm "while draining" "$hwm_d"
((got == N && bad == 0 && rc == 0)) || { echo "  PROBLEM: drain rc=$rc, $got of $N lines, $bad wrong"; status=1; }
if grep -q 'level=ERROR' "$W/broker-2.log"; then
	echo "  PROBLEM: the broker logged an error (above)"
	status=1
fi

# 5. Drained.
disk_drained=$(du -sb "$DIR" | cut -f1)
kill -TERM "$ZP_BROKER"
wait "$ZP_BROKER" 2>/dev/null || true
back=?
if ZP_BROKER_LOG=$W/broker-3.log ZP_SERVE_WAIT=$SERVE_WAIT zp_serve "${FLAGS[@]}"; then
	back=$(zp_queued "$PIPE")
	kill -TERM "$ZP_BROKER"
	wait "$ZP_BROKER" 2>/dev/null || true
fi
echo "drained: DIR $(dmb "$disk_drained"); a restart finds $back chunks queued (must be 0)"
[[ $back == 0 ]] || status=1

echo
echo "=== store-backlog summary: $N x $SIZE B = $((PAYLOAD >> 20)) MiB, $((SECONDS - T0)) s in all ==="
echo "VmHWM: queuing $(mb "$hwm_q"), after restart $(mb "$hwm_r") (in $recovery s), restart+drain $(mb "$hwm_d"); target <= $TARGET_MB MB"
((status == 0)) && echo "verdict: OK" || echo "verdict: PROBLEMS (see above)"
exit $status
