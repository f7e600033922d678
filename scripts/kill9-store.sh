#!/usr/bin/env bash
# kill9-store.sh — does a `zpipes serve --store DIR` broker SIGKILLed while
# writers stream into it keep every line it acknowledged, in order, with no
# duplicates and no holes? And how much does `--sync-every 1s` lose?
#
# For each of RUNS runs (then SYNC_RUNS more with --sync-every SYNC_EVERY):
#   1. a fresh DIR; `zpipes serve --store DIR` starts;
#   2. WRITERS writers (1 or 2) each stream numbered lines, A000000001:xxx,
#      B000000001:xxx, ... (LINE_BYTES bytes with the newline, endless) into
#      the same pipe with `zpipes cat -w`;
#   3. after a random delay, uniform in [DELAY_MIN, DELAY_MAX] seconds
#      (SYNC_DELAY_MAX for the --sync-every runs), `zpipes ls --json` notes
#      whether writers are blocked (the pipe full: 256 MiB by default, about
#      3M lines of 64 B; none of the 100 fsync runs below got there), and
#      the broker is SIGKILLed. The --sync-every runs get SYNC_SERVE_FLAGS
#      (larger limits, so that writers are still writing when the kill comes);
#   4. each writer fails (exit 3) saying `(N chunks written)`: N is what the
#      broker acknowledged to it. If it says no count, N is 0 only if it
#      never reached the broker (`no broker at`); otherwise the run is
#      counted as "writer without a count" and N taken as 0;
#   5. the broker restarts on the same DIR (the time until `zpipes ls`
#      answers is the recovery time); `zpipes ls --json` gives the chunks
#      queued, `zpipes cat -r -n THAT PIPE` drains them, and the pipe must
#      then be empty;
#   6. per writer, the lines read back must be 1, 2, 3, ... M with M >= N:
#        acknowledged lost = numbers 1..N not read back (must be 0 with fsync),
#        duplicates/order  = a number not above the one before (must be 0),
#        holes             = numbers skipped, below N and above it (must be 0),
#        stored beyond N   = M - N: on disk, not yet acknowledged (allowed).
# A run with a problem keeps its directory (the store as the SIGKILL left it,
# copied before the restart, the broker logs, the output) and prints the
# broker's log lines. The exit status is 1 if a fsync run lost an
# acknowledged line or any run had a duplicate, a hole, a line left behind
# or a writer without a count; --sync-every losses are reported, not failed.
#
# What a SIGKILL tests: the broker process dies, the kernel does not, so
# whatever the broker had handed to write(2) survives in the page cache
# whether or not it was fsync'd. A lost acknowledged line here means the OK
# left before the broker had written the line out at all; fsync itself
# (power loss) is not tested, and --sync-every loses here only what the
# broker still held in its own memory, not up to 1 s of writes.
#
# Usage: scripts/kill9-store.sh   (env: RUNS=50 SYNC_RUNS=10 SYNC_EVERY=1s
#        WRITERS=2 LINE_BYTES=64 DELAY_MIN=0.05 DELAY_MAX=1.5 SYNC_DELAY_MAX=2.5
#        SERVE_FLAGS="" (every broker) SYNC_SERVE_FLAGS="--max-pipe-bytes
#        1GiB --max-total-bytes 1GiB" (the --sync-every brokers besides)
#        SEED=random SERVE_WAIT=120 DRAIN_TIMEOUT=30 KEEP_CRASHED=1 (copy
#        the crashed store, kept only for runs with a problem or a recovery
#        slower than SLOW_RECOVERY=20 s) RESULTS_OUT=FILE per-run table,
#        ZPIPES_BIN=prebuilt binary, ZP_KEEP=1 keeps the work directory,
#        ZP_PREFIX=name prefix of the work directory and endpoint)
#
# Figures, 2026-11-29, 2 cores, ext4 /tmp, 0edaf5a, defaults (50 fsync runs
# then 10 --sync-every 1s runs; 2 writers x 64 B lines). Two whole runs,
# SEED=15162 (8m06s) and SEED=6573 (8m18s):
#
#   fsync, 50 + 50 runs: drained completely 50 of 50 both times
#     acknowledged lines per run  min 98880  median 687872  max 2136896    (SEED=15162)
#                                 min 79936  median 1045632  max 2867264   (SEED=6573)
#     acknowledged lost           0 in every run (sum 0 of 41284160 and of 60612416)
#     duplicates, holes, malformed lines, leftovers, writers without a count: 0
#     stored beyond N (not acked) median 1600, max 7168 (45 runs with any);
#                                 median 1152, max 6144 (43 runs)
#     recovery (s until ls)       min 0.24  median 1.49  max 44.10 (one run:
#                                 2136960 chunks; the next longest 6.88);
#                                 min 0.09  median 1.47  max 4.42
#     recovery dropped a torn tail: 4 runs; 1 run
#
#   --sync-every 1s, 10 + 10 runs: drained completely 7 of 10, then 5 of 10.
#   In the 3 + 5 others the restarted broker FROZE during the drain (no
#   answer to anything, no log line; the reader waits for good). Every
#   SIGQUIT dump shows the same deadlock: the core goroutine in
#   logStore.compact -> wal.(*Log).Append, waiting for room in the log's
#   buffer (sync.Cond.Wait, wal/log.go:231), while the log's syncer
#   goroutine (wal/syncer.go:61) is in a commit callback, core.go:138 ->
#   Server.notify (server.go:276), waiting for the core to take an event.
#   A store left by one of these kills (5841216 chunks, 363 MB) froze 3 of
#   3 times when drained again with --sync-every 1s, after 3956736 chunks
#   each time, and drained fully 3 of 3 times in fsync mode.
#     in the runs that drained: acknowledged lost min 1024  median 6400  max 14080
#     (0.33% of 15639104; at most 0.005 s of writing), then min 5120 median
#     10816 max 35392 (0.72% of 10877568; at most 0.031 s of writing);
#     duplicates, holes: 0. As said above, a SIGKILL loses only what the
#     broker still held, not the 1 s window a power loss could.
#
#   After the fix (the store's callbacks go into a mailbox the core empties;
#   checkpoint records at most 8 MiB), RUNS=10 SYNC_RUNS=10, 110 s:
#     fsync: drained 10 of 10; acknowledged lost 0 of 13276992; duplicates,
#       holes, leftovers 0; stored beyond N median 1024; recovery median
#       1.82 s (max 4.79); one torn tail dropped
#     --sync-every 1s: drained 10 of 10 (no freeze); acknowledged lost
#       57536 of 17139200 (0.34%, at most 0.005 s of writing); duplicates,
#       holes 0; recovery median 1.26 s (max 7.52)
#     The store that froze before drained 5841216 of 5841216, 2 of 2 times.
#
#   With spilling (queues past 16 MiB of chunks in memory wait on disk
#   only, and replay builds them as extents of the log), RUNS=10
#   SYNC_RUNS=10: d43a40a, SEED=31806, 86 s / f3caee4 (compactions keep
#   the backlog's segments), SEED=14571, 91 s:
#     fsync: drained 10 of 10 / 10 of 10; acknowledged lost 0 of 17840192 /
#       0 of 10197385; duplicates, holes, leftovers, store errors 0; stored
#       beyond N median 1088 / 2624; recovery median 0.17 s (max 0.43) /
#       0.10 s (max 0.59); torn tails dropped 0 / 1
#     --sync-every 1s: drained 10 of 10 / 10 of 10; acknowledged lost 78976
#       of 25850240 (0.31%, at most 0.009 s of writing) / 210176 of 29604288
#       (0.71%, at most 0.061 s); duplicates, holes 0; recovery median
#       0.22 s (max 0.56) / 0.21 s (max 0.45)
#
#   Spilling merged into main (a174cc0, with the wire and GC changes of
#   issue 10), defaults (RUNS=50 SYNC_RUNS=10), SEED=30966, 214 s:
#     fsync: drained 50 of 50; acknowledged lost 0 of 63441218 (0 in every
#       run); duplicates, holes, malformed lines, leftovers, store errors,
#       writers without a count 0; stored beyond N median 1024, max 25024;
#       recovery median 0.14 s (max 0.36); torn tails dropped 6; writers
#       blocked on a full pipe at the kill in 8 runs
#     --sync-every 1s: drained 10 of 10; acknowledged lost 145984 of
#       22841408 (0.64%, at most 0.026 s of writing); duplicates, holes 0;
#       recovery median 0.16 s (max 0.33)
source "$(dirname "$0")/lib.sh"
zp_init

RUNS=${RUNS:-50}
SYNC_RUNS=${SYNC_RUNS:-10}
SYNC_EVERY=${SYNC_EVERY:-1s}
WRITERS=${WRITERS:-2}
LINE_BYTES=${LINE_BYTES:-64}
DELAY_MIN=${DELAY_MIN:-0.05}
DELAY_MAX=${DELAY_MAX:-1.5}
SYNC_DELAY_MAX=${SYNC_DELAY_MAX:-2.5}
SERVE_FLAGS=${SERVE_FLAGS:-}
SYNC_SERVE_FLAGS=${SYNC_SERVE_FLAGS:---max-pipe-bytes 1GiB --max-total-bytes 1GiB}
SEED=${SEED:-$$}
SERVE_WAIT=${SERVE_WAIT:-120}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-30}
SLOW_RECOVERY=${SLOW_RECOVERY:-20}
KEEP_CRASHED=${KEEP_CRASHED:-1}
((WRITERS == 1 || WRITERS == 2)) || { echo "WRITERS must be 1 or 2" >&2; exit 2; }
((LINE_BYTES >= 12)) || { echo "LINE_BYTES must be at least 12" >&2; exit 2; }
RANDOM=$SEED
W=$ZP_WORK
PIPE=k9store
IDS=(A B)
IDS=("${IDS[@]:0:WRITERS}")

# gen ID: endless numbered lines of LINE_BYTES bytes for writer ID; dies of
# SIGPIPE when its cat -w is gone.
gen() {
	awk -v id="$1" -v B="$LINE_BYTES" 'BEGIN {
		pad = sprintf("%*s", B - 12, ""); gsub(/ /, "x", pad)
		for (i = 1; ; i++) printf "%s%09d:%s\n", id, i, pad }'
}

# writer ID DIR: one cat -w fed by gen; its stderr and status land in DIR.
# The timeout is a backstop: a writer the broker's death did not stop is
# told so by SIGTERM, and still says its count.
writer() {
	set +e +o pipefail
	gen "$1" | timeout -k 5 300 "$ZP" cat -w "$PIPE" 2>"$2/$1.err"
	echo "${PIPESTATUS[1]}" >"$2/$1.rc"
}

# rand_delay MAX: seconds, uniform in [DELAY_MIN, MAX], to the millisecond.
rand_delay() {
	awk -v a="$DELAY_MIN" -v b="$1" -v r="$(((RANDOM << 15) | RANDOM))" 'BEGIN { printf "%.3f", a + (b - a) * r / 1073741824 }'
}

now() { date +%s.%N; }

RESULTS=$W/results.tsv
printf 'mode\trun\tdelay\tacked\tnocount\tread\tlost\tdups\tholes_below\tholes_above\tbeyond\tbad\tleft\topens\trecovery_s\trecovered_chunks\tdisk_bytes\twriter_rc\tblocked\tdrain\tstore_errors\ttorn_tail\n' >"$RESULTS"
problems=0

# one_run MODE RUN: steps 1-6; appends a line to RESULTS.
one_run() {
	local mode=$1 run=$2 d=$W/$1-$2 flags=() maxd=$DELAY_MAX delay t0 t1 id blocked
	# shellcheck disable=SC2206 # flags are words
	flags=($SERVE_FLAGS)
	# shellcheck disable=SC2206
	[[ $mode == sync ]] && flags+=(--sync-every "$SYNC_EVERY" $SYNC_SERVE_FLAGS) maxd=$SYNC_DELAY_MAX
	mkdir -p "$d/store"
	ZP_BROKER_LOG=$d/broker1.log zp_serve --store "$d/store" "${flags[@]}"
	local -a wpids=()
	for id in "${IDS[@]}"; do
		writer "$id" "$d" &
		wpids+=($!)
	done
	delay=$(rand_delay "$maxd")
	sleep "$delay"
	blocked=$("$ZP" ls --json 2>/dev/null | jq '[.[].blocked] | add // 0' || echo '?')
	zp_kill9_broker
	# The writers should fail at once; give them 10 s, then stop them.
	local deadline=$((SECONDS + 10)) pid
	for pid in "${wpids[@]}"; do
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.02; done
	done
	for pid in "${wpids[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then
			echo "$mode run $run: a writer was still running 10 s after the broker's SIGKILL" >&2
			pkill -TERM -P "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done

	# Acknowledged counts.
	local acked=() nocount=0 rcs="" n err
	for id in "${IDS[@]}"; do
		err=$(cat "$d/$id.err")
		n=$(sed -n 's/.*[( ]\([0-9][0-9]*\) chunks written.*/\1/p' <<<"$err" | tail -1)
		if [[ -z $n ]]; then
			n=0
			[[ $err == *"no broker at"* ]] || nocount=$((nocount + 1))
		fi
		acked+=("$n")
		rcs+="${rcs:+,}$(cat "$d/$id.rc")"
	done
	local disk
	disk=$(du -sb "$d/store" | cut -f1)
	((KEEP_CRASHED)) && cp -a "$d/store" "$d/crashed"

	# Restart on the same DIR and drain.
	t0=$(now)
	if ! ZP_BROKER_LOG=$d/broker2.log ZP_SERVE_WAIT=$SERVE_WAIT zp_serve --store "$d/store" "${flags[@]}"; then
		ZP_KEEP=1
		echo "$mode run $run: PROBLEM: the broker did not come back on its store within ${SERVE_WAIT}s; kept in $d" >&2
		sed 's/^/    /' "$d/broker1.log" "$d/broker2.log" >&2
		exit 1
	fi
	t1=$(now)
	local recov recovered left opens json
	recov=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
	recovered=$(sed -n 's/.*msg="store recovered".* chunks=\([0-9]*\).*/\1/p' "$d/broker2.log" | tail -1)
	# The drain: a frozen broker leaves a TAKE waiting for good (it looks like
	# an empty pipe), so it is bounded by DRAIN_TIMEOUT; then a broker that
	# does not answer `ls` is sent SIGQUIT, and its goroutines land in its log.
	local drain=ok q
	q=$("$ZP" --timeout 5s ls --json | jq --arg p "$PIPE" '[.[] | select(.name == $p) | .chunks] | add // 0') || q=0 drain=frozen
	: >"$d/out"
	if ((q > 0)); then
		timeout -k 10 -s INT "$DRAIN_TIMEOUT" "$ZP" cat -r -n "$q" "$PIPE" >"$d/out" 2>"$d/reader.err" || drain=failed
	fi
	left=-1 opens=-1
	if [[ $drain != frozen ]] && json=$("$ZP" --timeout 5s ls --json 2>>"$d/reader.err"); then
		left=$(jq --arg p "$PIPE" '[.[] | select(.name == $p) | .chunks] | add // 0' <<<"$json")
		opens=$(jq '[.[].opens] | add // 0' <<<"$json")
		kill -TERM "$ZP_BROKER" 2>/dev/null || true
	else
		drain=frozen
		echo "$mode run $run: the restarted broker stopped answering; SIGQUIT for its goroutines (in $d/broker2.log)" >&2
		kill -QUIT "$ZP_BROKER" 2>/dev/null || true
	fi
	wait "$ZP_BROKER" 2>/dev/null || true
	local store_errors torn
	store_errors=$(grep -c 'level=ERROR' "$d/broker2.log" || true)
	torn=$(grep -c 'msg="store: dropped a damaged tail"' "$d/broker2.log" || true)
	[[ $drain == ok ]] || echo "$mode run $run: the drain $drain after $(wc -l <"$d/out") of $q chunks: $(tr '\n' ' ' <"$d/reader.err")" >&2

	# Check each writer's sequence. Lines of writer w must be 1..M; with no
	# step back the numbers read are distinct, so those <= N count exactly.
	local res
	res=$(awk -v B="$LINE_BYTES" -v ids="${IDS[*]}" -v acks="${acked[*]}" '
		BEGIN { k = split(ids, I, " "); split(acks, A, " "); for (j = 1; j <= k; j++) N[I[j]] = A[j] + 0 }
		length($0) != B - 1 || !($0 ~ /^[AB][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]:/) { bad++; next }
		{
			w = substr($0, 1, 1); n = substr($0, 2, 9) + 0; read++
			if (n <= last[w]) { back[w]++; if (!shown++) printf "first step back: writer %s %d after %d\n", w, n, last[w] > "/dev/stderr" }
			else {
				if (n > last[w] + 1) {
					lo = last[w] + 1; hi = n - 1
					if (!shownh++) printf "first hole: writer %s %d-%d (acknowledged up to %d)\n", w, lo, hi, N[w] > "/dev/stderr"
					if (lo <= N[w]) hb += (hi < N[w] ? hi : N[w]) - lo + 1
					if (hi > N[w]) ha += hi - (lo > N[w] ? lo : N[w] + 1) + 1
				}
				last[w] = n
			}
			if (n <= N[w]) le[w]++
			else beyond++
		}
		END {
			for (j = 1; j <= k; j++) {
				w = I[j]; d += back[w]
				if (!back[w]) lost += N[w] - le[w]
				else inexact = inexact " " w
			}
			printf "%d %d %d %d %d %d %d %s\n", read, lost, d, hb, ha, beyond, bad, (inexact == "" ? "-" : inexact)
		}' "$d/out" 2>"$d/check.err")
	local rd lost dups hb ha beyond bad inexact
	read -r rd lost dups hb ha beyond bad inexact <<<"$res"
	if [[ $inexact != - ]]; then
		# Steps back: count the acknowledged numbers read at least once.
		lost=0
		local j=0
		for id in "${IDS[@]}"; do
			n=$(grep "^$id" "$d/out" | cut -c2-10 | sort -u | awk -v N="${acked[j]}" '$1 + 0 <= N' | wc -l)
			lost=$((lost + acked[j] - n))
			j=$((j + 1))
		done
	fi
	local total=0
	for n in "${acked[@]}"; do total=$((total + n)); done
	printf '%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%d\n' "$mode" "$run" "$delay" "$total" "$nocount" \
		"$rd" "$lost" "$dups" "$hb" "$ha" "$beyond" "$bad" "$left" "$opens" "$recov" "${recovered:-?}" "$disk" "$rcs" "$blocked" "$drain" "$store_errors" "$torn" >>"$RESULTS"

	local bad_run=0
	((dups || hb || ha || bad || left || nocount || store_errors)) && bad_run=1
	[[ $drain == ok ]] || bad_run=1
	[[ $mode == fsync && $drain == ok ]] && ((lost)) && bad_run=1
	if ((bad_run)); then
		problems=$((problems + 1))
		ZP_KEEP=1
		echo "$mode run $run: PROBLEM after ${delay}s: acked ${acked[*]} (writers: $(cat "$d"/*.err | tr '\n' ' '))"
		echo "  drain $drain; read $rd: acknowledged lost $lost, duplicates $dups, holes $hb below N + $ha above, beyond N $beyond, bad lines $bad, left $left; kept in $d"
		sed 's/^/  check: /' "$d/check.err"
		echo "  broker (killed) log:"
		sed 's/^/    /' "$d/broker1.log"
		echo "  broker (restarted) log:"
		sed '/^SIGQUIT/,$d; /msg="handshake failed"/d; s/^/    /' "$d/broker2.log"
		if grep -q '^SIGQUIT' "$d/broker2.log"; then
			# Each goroutine of ours: its state and its first two frames in zpipes.
			echo "  its goroutines at SIGQUIT (the whole dump is in $d/broker2.log):"
			awk '/^goroutine / { g = $0; k = 0; next }
				/^github.com\/zpipes\/zpipes/ && k < 2 { if (!k) print "    " g; print "      " $0; k++ }' "$d/broker2.log"
		fi
	elif awk -v r="$recov" -v s="$SLOW_RECOVERY" 'BEGIN { exit !(r > s) }'; then
		ZP_KEEP=1
		rm -rf "$d/store" "$d/out"
		echo "$mode run $run: recovery took ${recov}s (> ${SLOW_RECOVERY}s); the store as the SIGKILL left it is kept in $d/crashed"
		sed '/msg="handshake failed"/d; s/^/    /' "$d/broker2.log"
	else
		rm -rf "$d"
	fi
}

echo "kill9-store: RUNS=$RUNS (fsync) + SYNC_RUNS=$SYNC_RUNS (--sync-every $SYNC_EVERY $SYNC_SERVE_FLAGS), WRITERS=$WRITERS," \
	"LINE_BYTES=$LINE_BYTES, kill after ${DELAY_MIN}-${DELAY_MAX}s (sync: ${DELAY_MIN}-${SYNC_DELAY_MAX}s), SEED=$SEED, SERVE_FLAGS=${SERVE_FLAGS:-none}"
echo "endpoint $ZPIPES_ENDPOINT, binary $ZP, work $W"
T0=$SECONDS
for run in $(seq 1 "$RUNS"); do
	one_run fsync "$run"
	((run % 10 == 0)) && echo "  ... $run fsync runs ($((SECONDS - T0)) s)"
done
for run in $(seq 1 "$SYNC_RUNS"); do
	one_run sync "$run"
done

# Summary. Runs whose drain did not finish (the restarted broker froze or
# failed) are counted apart: what they read says nothing of what was kept.
sel() { awk -F'\t' -v m="$1" -v c="$2" 'NR > 1 && $1 == m && $20 == "ok" { print $c }' "$RESULTS"; }
sum() { awk '{ s += $1 } END { print s + 0 }'; }
stats() { printf 'min %s  median %s  max %s  sum %s' "$(zp_pct 0 <"$1")" "$(zp_pct 50 <"$1")" "$(zp_pct 100 <"$1")" "$(sum <"$1")"; }
summary() {
	local m=$1 title=$2 nr nok
	nr=$(awk -F'\t' -v m="$m" 'NR > 1 && $1 == m' "$RESULTS" | wc -l)
	((nr > 0)) || return 0
	nok=$(sel "$m" 2 | wc -l)
	for c in 3 4 7 8 9 10 11 12 13 14 15 16 17; do sel "$m" "$c" >"$W/col$c"; done
	echo
	echo "=== kill9-store summary: $title, $nr runs, $WRITERS writer(s) x ${LINE_BYTES}-byte lines ==="
	printf '%-28s %s\n' "drained completely" "$nok of $nr runs$(awk -F'\t' -v m="$m" 'NR > 1 && $1 == m && $20 != "ok" { printf "%s run %d %s (%s chunks recovered, %d read)", (n++ ? ";" : ":"), $2, $20, $16, $6 }' "$RESULTS")"
	printf '%-28s %s\n' "runs with store errors" "$(awk -F'\t' -v m="$m" 'NR > 1 && $1 == m && $21 > 0' "$RESULTS" | wc -l) (level=ERROR in the restarted broker's log)"
	printf '%-28s %s\n' "recovery dropped a torn tail" "$(awk -F'\t' -v m="$m" 'NR > 1 && $1 == m && $22 > 0' "$RESULTS" | wc -l) runs (WARN \"store: dropped a damaged tail\": a record cut by the SIGKILL)"
	echo "figures below: the $nok runs drained completely"
	printf '%-28s %s\n' "kill delay (s)" "min $(zp_pct 0 <"$W/col3")  median $(zp_pct 50 <"$W/col3")  max $(zp_pct 100 <"$W/col3")"
	printf '%-28s %s\n' "writers blocked at the kill" "$(sel "$m" 19 | awk '$1 > 0' | wc -l) runs (pipe full; in the others they were writing)"
	printf '%-28s %s\n' "acknowledged lines per run" "$(stats "$W/col4")"
	printf '%-28s %s   (runs with any: %d)\n' "acknowledged lost" "$(stats "$W/col7")" "$(awk '$1 > 0' "$W/col7" | wc -l)"
	if [[ $m == sync ]]; then
		# The loss as seconds of writing at the run's own acknowledged rate.
		awk -F'\t' 'NR > 1 && $1 == "sync" && $20 == "ok" && $4 > 0 { printf "%.3f\n", $7 / ($4 / $3) }' "$RESULTS" >"$W/secs"
		printf '%-28s %s\n' "  as seconds of writing" "min $(zp_pct 0 <"$W/secs")  median $(zp_pct 50 <"$W/secs")  max $(zp_pct 100 <"$W/secs")"
		printf '%-28s %s\n' "  share of acknowledged" "$(awk -F'\t' 'NR > 1 && $1 == "sync" && $20 == "ok" { l += $7; a += $4 } END { printf "%.2f%% (%d of %d)", a ? 100 * l / a : 0, l, a }' "$RESULTS")"
	fi
	printf '%-28s %s\n' "duplicates / steps back" "$(sum <"$W/col8")"
	printf '%-28s %s below N, %s above N\n' "holes" "$(sum <"$W/col9")" "$(sum <"$W/col10")"
	printf '%-28s %s   (runs with any: %d)\n' "stored beyond N (not acked)" "$(stats "$W/col11")" "$(awk '$1 > 0' "$W/col11" | wc -l)"
	printf '%-28s %s\n' "malformed lines" "$(sum <"$W/col12")"
	printf '%-28s %s\n' "writers without a count" "$(sel "$m" 5 | sum)"
	printf '%-28s %s\n' "writer exit statuses" "$(sel "$m" 18 | tr ',' '\n' | sort | uniq -c | awk '{ printf "%s%dx %s", (NR > 1 ? ", " : ""), $1, $2 }')"
	printf '%-28s %s\n' "left after the drain" "$(sum <"$W/col13") chunks; opens after restart: $(sum <"$W/col14")"
	printf '%-28s %s\n' "recovery (s until ls)" "min $(zp_pct 0 <"$W/col15")  median $(zp_pct 50 <"$W/col15")  max $(zp_pct 100 <"$W/col15")"
	printf '%-28s %s\n' "chunks recovered per run" "min $(zp_pct 0 <"$W/col16")  median $(zp_pct 50 <"$W/col16")  max $(zp_pct 100 <"$W/col16")"
	awk '{ printf "%.1f\n", $1 / 1e6 }' "$W/col17" >"$W/mb"
	printf '%-28s %s\n' "DIR at the kill (MB)" "min $(zp_pct 0 <"$W/mb")  median $(zp_pct 50 <"$W/mb")  max $(zp_pct 100 <"$W/mb")"
}
summary fsync "fsync before every OK (default)"
summary sync "--sync-every $SYNC_EVERY (losses are the documented window)"
echo
echo "total time: $((SECONDS - T0)) s"
if [[ -n ${RESULTS_OUT:-} ]]; then
	cp "$RESULTS" "$RESULTS_OUT"
	echo "per-run table in $RESULTS_OUT"
fi
echo "verdict: $problems run(s) with a problem (fsync: acknowledged lost; any: a drain that did not finish, a store error, duplicates, holes, leftovers, writers without a count)"
((problems == 0))
