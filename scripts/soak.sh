#!/usr/bin/env bash
# soak.sh — a long run of many short-lived clients against one broker, to see
# whether its memory, threads or file descriptors creep up, and whether every
# chunk written comes out exactly once.
#
# For SOAK_SECONDS (default 600), over PIPES pipes:
#   WRITERS loops: each iteration is one new `zpipes cat -w` (100-500 lines of
#     random length) or `zpipes write` (1-50 arguments) to a random pipe;
#   READERS loops: each iteration is one new `zpipes cat -r -n K` (K 1-1000) or
#     `zpipes read -n K` (K 1-20) on a random pipe, sent SIGTERM after
#     READ_TIMEOUT seconds if it is still waiting (it then gives back what it
#     did not print);
#   one victim loop (unless KILL_EVERY=0): about every KILL_EVERY seconds a
#     `zpipes cat -r` is SIGKILLed 0.1-0.9 s after it starts;
#   a sampler: every SAMPLE_SECONDS the broker's VmRSS, VmHWM, Threads, open
#     fds, and from `zpipes ls --json` the pipes, opens and queued chunks and
#     bytes, and how long that `zpipes ls` took (a stalled broker shows
#     there), into a CSV.
# Every chunk is a unique id (writer.iteration.index). Afterwards the loops
# stop, what is left is drained, and the script checks
#     written = read + still queued + lost (only SIGKILLed readers may lose)
# with no duplicates and, within one reader, each writer's chunks in order.
# Then it prints the curve and compares the first and last minutes after
# warm-up.
#
# A 10-minute run writes a few hundred MB of ids under $TMPDIR (removed at
# the end unless ZP_KEEP=1).
#
# Usage: scripts/soak.sh      (env: SOAK_SECONDS=600 SAMPLE_SECONDS=10 PIPES=4
#        WRITERS=3 READERS=3 KILL_EVERY=5 READ_TIMEOUT=3 PAUSE=0.05
#        WARMUP=60 WINDOW=120 CSV_OUT=FILE to keep the samples,
#        ZPIPES_BIN=prebuilt binary, ZP_KEEP=1 keeps the work directory)
source "$(dirname "$0")/lib.sh"
zp_init

SOAK_SECONDS=${SOAK_SECONDS:-600}
SAMPLE_SECONDS=${SAMPLE_SECONDS:-10}
PIPES=${PIPES:-4}
WRITERS=${WRITERS:-3}
READERS=${READERS:-3}
KILL_EVERY=${KILL_EVERY:-5}
READ_TIMEOUT=${READ_TIMEOUT:-3}
PAUSE=${PAUSE:-0.05}
WARMUP=${WARMUP:-60}
WINDOW=${WINDOW:-120}
W=$ZP_WORK
STOP_W=$W/stop-writers
STOP_R=$W/stop-readers

zp_serve
echo "soak: ${SOAK_SECONDS}s, $PIPES pipes, $WRITERS writer loops, $READERS reader loops," \
	"SIGKILL every ~${KILL_EVERY}s (0 = never); broker pid $ZP_BROKER at $ZPIPES_ENDPOINT"

pipe_name() { echo "soak$((RANDOM % PIPES))"; }

# append FILE OUT HEADER: add one client's output to its loop's file, after a
# header line, keeping only the ids (not the padding, to save disk). cut ends
# a last line cut short by SIGKILL with a newline, so it stays one
# (unparseable) line instead of spoiling the next.
append() {
	local f=$1 out=$2 header=$3
	{
		echo "#$header"
		cut -d: -f1 "$out"
	} >>"$f"
}

writer_loop() {
	set +e
	local id=$1 it=0 pipe prefix n rc i
	local -a args
	while [[ ! -e $STOP_W ]]; do
		it=$((it + 1))
		pipe=$(pipe_name)
		printf -v prefix 'w%d.%06d' "$id" "$it"
		if ((RANDOM % 3 == 0)); then
			n=$((RANDOM % 50 + 1))
			args=()
			for ((i = 0; i < n; i++)); do printf -v 'args[i]' '%s.%04d' "$prefix" "$i"; done
			"$ZP" write "$pipe" "${args[@]}" 2>>"$W/w$id.err"
			rc=$?
			echo "$prefix $pipe $n $rc write" >>"$W/w$id.log"
		else
			n=$((RANDOM % 401 + 100))
			awk -v p="$prefix" -v n="$n" -v seed="$RANDOM$it" 'BEGIN {
				srand(seed); pad = sprintf("%200s", ""); gsub(/ /, "x", pad)
				for (i = 0; i < n; i++) printf "%s.%04d:%s\n", p, i, substr(pad, 1, int(rand() * 200)) }' |
				"$ZP" cat -w "$pipe" 2>>"$W/w$id.err"
			rc=$?
			echo "$prefix $pipe $n $rc cat" >>"$W/w$id.log"
		fi
		sleep "$PAUSE"
	done
}

reader_loop() {
	set +e
	local id=$1 it=0 pipe k rc kind out
	out=$W/r$id.cur
	while [[ ! -e $STOP_R ]]; do
		it=$((it + 1))
		pipe=$(pipe_name)
		if ((RANDOM % 4 == 0)); then
			kind=read k=$((RANDOM % 20 + 1))
			timeout --foreground -s TERM -k 10 "$READ_TIMEOUT" "$ZP" read -n "$k" "$pipe" >"$out" 2>>"$W/r$id.err"
		else
			kind=cat k=$((RANDOM % 1000 + 1))
			timeout --foreground -s TERM -k 10 "$READ_TIMEOUT" "$ZP" cat -r -n "$k" "$pipe" >"$out" 2>>"$W/r$id.err"
		fi
		rc=$?
		append "$W/r$id.out" "$out" "r$id.$it $pipe $kind $k rc=$rc"
		echo "$kind $rc" >>"$W/r$id.rc"
		sleep "$PAUSE"
	done
}

victim_loop() {
	set +e
	local it=0 pipe pid out=$W/v.cur
	while [[ ! -e $STOP_R ]]; do
		sleep "$(awk -v m="$KILL_EVERY" -v r="$RANDOM" 'BEGIN { print m * (0.5 + r / 32768) }')"
		[[ -e $STOP_R ]] && break
		it=$((it + 1))
		pipe=$(pipe_name)
		"$ZP" cat -r "$pipe" >"$out" 2>>"$W/v.err" &
		pid=$!
		sleep "0.$((RANDOM % 9 + 1))"
		kill -KILL "$pid" 2>/dev/null
		{ wait "$pid"; } 2>/dev/null
		append "$W/v.out" "$out" "v.$it $pipe killed rc=$?"
		echo "$it $pipe $(wc -l <"$out")" >>"$W/v.log"
	done
}

# sample T0: append one line to samples.csv.
sample() {
	local t a b json
	t=$(($(date +%s) - $1))
	a=$(date +%s%N)
	json=$("$ZP" ls --json 2>/dev/null || echo '[]')
	b=$(date +%s%N)
	printf '%d,%s,%s,%s,%s,%s,%d\n' "$t" "$(zp_status "$ZP_BROKER" VmRSS)" "$(zp_status "$ZP_BROKER" VmHWM)" \
		"$(zp_status "$ZP_BROKER" Threads)" "$(ls "/proc/$ZP_BROKER/fd" | wc -l)" \
		"$(jq -r '"\(length),\([.[].opens] | add // 0),\([.[].chunks] | add // 0),\([.[].bytes] | add // 0)"' <<<"$json")" \
		$(((b - a) / 1000000)) >>"$W/samples.csv"
}

sampler() {
	set +e
	while :; do
		sample "$1"
		sleep "$SAMPLE_SECONDS"
	done
}

T0=$(date +%s)
echo "t,rss_kb,hwm_kb,threads,fds,pipes,opens,queued_chunks,queued_bytes,ls_ms" >"$W/samples.csv"
sampler "$T0" &
SAMPLER=$!
for i in $(seq 1 "$WRITERS"); do
	writer_loop "$i" &
	WPIDS+=($!)
done
for i in $(seq 1 "$READERS"); do
	reader_loop "$i" &
	RPIDS+=($!)
done
if ((KILL_EVERY > 0)); then
	victim_loop &
	RPIDS+=($!)
fi

while (($(date +%s) - T0 < SOAK_SECONDS)); do
	sleep 5
	if ! kill -0 "$ZP_BROKER" 2>/dev/null; then
		echo "THE BROKER DIED after $(($(date +%s) - T0)) s; log:" >&2
		tail -30 "$W/broker.log" >&2
		exit 1
	fi
	if ((($(date +%s) - T0) % 60 < 5)); then
		echo "  ... $(($(date +%s) - T0)) s: $(tail -1 "$W/samples.csv")"
	fi
done
echo "stopping writers, then readers ..."
touch "$STOP_W"
wait "${WPIDS[@]}" || true
touch "$STOP_R"
wait "${RPIDS[@]}" || true
sleep 1 # let the broker take back what the last killed reader left in flight
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
TEND=$(($(date +%s) - T0))
sample "$T0" # a last sample with no client running, before the drain

# Drain what is left, pipe by pipe.
queued_total=0
: >"$W/final.out"
for p in $(seq 0 $((PIPES - 1))); do
	q=$(zp_queued "soak$p")
	queued_total=$((queued_total + q))
	if ((q > 0)); then
		"$ZP" cat -r -n "$q" "soak$p" >"$W/final.cur"
		append "$W/final.out" "$W/final.cur" "final soak$p $q"
	fi
done
left_after=$("$ZP" ls --json | jq '[.[].chunks] | add // 0')
# No client is connected now: any open count left belongs to a dead client.
opens_left=$("$ZP" ls --json | jq '[.[].opens] | add // 0')
pipes_left=$("$ZP" ls --json | jq -c '[.[] | select(.opens > 0) | "\(.name):\(.opens)"]')

# --- accounting --- (a grep that finds nothing is no failure here)
set +o pipefail
cat "$W"/w*.log >"$W/writes.log"
awk '$4 == 0 { for (i = 0; i < $3; i++) printf "%s.%04d\n", $1, i }' "$W/writes.log" | LC_ALL=C sort >"$W/written.ids"
cat "$W"/r*.out "$W"/final.out $( ((KILL_EVERY > 0)) && echo "$W/v.out") 2>/dev/null |
	awk '!/^#/ { sub(/:.*/, ""); print }' | LC_ALL=C sort >"$W/read.ids"
LC_ALL=C uniq "$W/read.ids" >"$W/read.uniq"
written=$(wc -l <"$W/written.ids")
read_total=$(wc -l <"$W/read.ids")
read_distinct=$(wc -l <"$W/read.uniq")
dup_ids=$(LC_ALL=C uniq -d "$W/read.ids" | wc -l)
dup_extra=$((read_total - read_distinct))
lost=$(LC_ALL=C comm -23 "$W/written.ids" "$W/read.uniq" | wc -l)
unknown=$(LC_ALL=C comm -13 "$W/written.ids" "$W/read.uniq" | wc -l)
final_read=$(grep -vc '^#' "$W/final.out" || true)
victim_read=0 kills=0
if ((KILL_EVERY > 0)) && [[ -e $W/v.log ]]; then
	victim_read=$(grep -vc '^#' "$W/v.out" || true)
	kills=$(wc -l <"$W/v.log")
fi
# Order: within one client's output, each writer invocation's chunks must
# come in increasing index order.
order_bad=$(cat "$W"/r*.out "$W"/final.out $( ((KILL_EVERY > 0)) && echo "$W/v.out") 2>/dev/null | awk '
	/^#/ { delete last; next }
	{ sub(/:.*/, ""); n = split($0, f, "."); if (n != 3) next
	  k = f[1] "." f[2]; i = f[3] + 0
	  if ((k in last) && i <= last[k]) bad++
	  last[k] = i }
	END { print bad + 0 }')
wfail=$(awk '$4 != 0' "$W/writes.log" | wc -l)

echo
echo "=== soak summary (${TEND}s, broker pid $ZP_BROKER) ==="
echo "writer invocations: $(wc -l <"$W/writes.log") ($(grep -c ' cat$' "$W/writes.log") cat -w, $(grep -c ' write$' "$W/writes.log") write); failed: $wfail"
awk '$4 != 0 { print "  failed writer: " $0 }' "$W/writes.log" | head -5
echo "reader invocations by kind and exit status:"
cat "$W"/r*.rc | sort | uniq -c | sort -k2,2 -k3,3n | awk '{ printf "  %-4s rc=%-4s %6d\n", $2, $3, $1 }'
echo "  (rc 124 = still waiting after ${READ_TIMEOUT}s, stopped by SIGTERM; 137 = did not stop on SIGTERM: a hang)"
echo "SIGKILLed readers: $kills (they printed $victim_read chunks)"
echo
echo "chunks written (acknowledged):   $written"
echo "chunks read by readers:          $((read_total - final_read))   (of which by SIGKILLed readers: $victim_read)"
echo "chunks left queued at the end:   $queued_total (drained: $final_read; left after drain: $left_after)"
echo "written - read - queued:         $((written - read_total))"
echo "lost (written, never read):      $lost   ($(awk -v l="$lost" -v k="$kills" 'BEGIN { if (k) printf "%.1f per SIGKILL", l / k; else print "no SIGKILLs" }'))"
echo "duplicates:                      $dup_ids chunks read more than once ($dup_extra extra reads)"
echo "unknown ids read:                $unknown   (partial lines cut by SIGKILL, or chunks of failed writers)"
echo "order violations:                $order_bad"
echo "open counts left, no client up:  $opens_left $pipes_left  (SIGKILLed readers never CLOSE)"
echo "broker log lines by level:       $(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^level=/) print $i }' "$W/broker.log" | sort | uniq -c | tr '\n' ' ')"
grep -v 'level=INFO msg=listening\|msg="request failed"' "$W/broker.log" | head -5 | sed 's/^/  /'
echo "broker request failures:         $(grep -o 'msg="request failed".*err=.*' "$W/broker.log" | sed 's/.*err=//' | sort | uniq -c | tr '\n' ' ')"
echo "client stderr (by message):"
cat "$W"/*.err 2>/dev/null | sed -E 's/"soak[0-9]+"/"PIPE"/g; s/[0-9]+ chunks/N chunks/g' | sort | uniq -c | sort -rn | head -8 | sed 's/^/  /'

echo
echo "--- samples (t s, VmRSS MB, VmHWM MB, threads, fds, pipes, opens, queued chunks, queued MB, zpipes ls ms); the last one with no client running ---"
awk -F, 'NR > 1 { printf "  %5d  %7.1f  %7.1f  %3d  %4d  %3d  %4d  %8d  %7.2f  %5d\n", $1, $2 / 1000, $3 / 1000, $4, $5, $6, $7, $8, $9 / 1e6, $10 }' "$W/samples.csv"
awk -F, 'NR > 1 { n++; s += $10; if ($10 > m) m = $10 } END { if (n) printf "zpipes ls latency: mean %.0f ms, max %d ms\n", s / n, m }' "$W/samples.csv"

# Flatness: the first WINDOW seconds after WARMUP against the last WINDOW
# seconds of the run (the quiet final sample excluded).
awk -F, -v wu="$WARMUP" -v win="$WINDOW" -v end="$TEND" '
	NR == 1 || $1 >= end { next }
	$1 >= wu && $1 < wu + win { a++; ar += $2; at += $4; af += $5; if ($2 > amax) amax = $2 }
	$1 >= end - win { b++; br += $2; bt += $4; bf += $5; if ($2 > bmax) bmax = $2 }
	$1 >= wu { n++; sx += $1; sy += $2; sxx += $1 * $1; sxy += $1 * $2 }
	END {
		if (!a || !b) { print "\nflatness: run too short for the windows (WARMUP/WINDOW)"; exit }
		printf "\nflatness (warm-up %ds; first window %d-%ds, %d samples; last window %d-%ds, %d samples):\n", wu, wu, wu + win, a, end - win, end, b
		printf "  VmRSS mean  %7.1f MB -> %7.1f MB  (%+.1f%%), max %.1f -> %.1f MB\n", ar / a / 1000, br / b / 1000, 100 * (br / b - ar / a) / (ar / a), amax / 1000, bmax / 1000
		printf "  threads     %7.1f    -> %7.1f\n", at / a, bt / b
		printf "  fds         %7.1f    -> %7.1f\n", af / a, bf / b
		slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
		printf "  VmRSS trend after warm-up: %+.2f MB per 10 min (least squares over %d samples)\n", slope * 600 / 1000, n
		flat = (br / b <= 1.2 * ar / a + 5000) && (bt / b <= at / a + 2) && (bf / b <= af / a + 3)
		print "  verdict: " (flat ? "FLAT" : "NOT FLAT") " (RSS within 20% + 5 MB, threads within 2, fds within 3)"
	}' "$W/samples.csv"
if [[ -n ${CSV_OUT:-} ]]; then cp "$W/samples.csv" "$CSV_OUT"; echo "samples in $CSV_OUT"; fi

ok=1
((wfail == 0 && dup_ids == 0 && order_bad == 0 && left_after == 0)) || ok=0
((kills > 0 || lost == 0)) || ok=0
echo
if ((ok)); then echo "accounting: OK"; else echo "accounting: PROBLEMS (see above)"; fi
((ok))
