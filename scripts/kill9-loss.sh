#!/usr/bin/env bash
# kill9-loss.sh — how many chunks does a `zpipes cat -r` lose when it is
# killed with SIGKILL, and does anything get duplicated or reordered?
#
# For each of RUNS runs, on a fresh pipe:
#   1. `zpipes cat -w PIPE` writes K numbered lines (LINE_BYTES bytes each,
#      newline included) followed by the marker END, all from one stdin, so
#      END is the last chunk of the pipe;
#   2. `zpipes cat -r PIPE > out1` is started and SIGKILLed as soon as out1
#      holds at least T bytes, T uniform in [1, size of all output] (so the
#      kill lands anywhere from the first flush to after the last line);
#   3. `zpipes cat -r --eof END PIPE > out2` reads what is left (skipped if
#      out1 already holds END; if END never comes it is interrupted after
#      TIMEOUT seconds, which prints what it has, and END counts as lost);
#   4. `zpipes ls --json` must show the pipe empty.
# lost = K - distinct numbers seen in out1+out2; duplicates = numbers seen
# more than once; order violations = a number not greater than the one
# before it in the same file; a partial last line in out1 counts as lost.
#
# Usage: scripts/kill9-loss.sh            (env: RUNS=100 K=20000 LINE_BYTES=100
#        FRESH_BROKER=0 TIMEOUT=5 BUCKET=1000
#        RESULTS_OUT=FILE keeps the per-run table ZPIPES_BIN=prebuilt binary
#        ZP_KEEP=1 keeps the work directory)
source "$(dirname "$0")/lib.sh"
zp_init

RUNS=${RUNS:-100}
K=${K:-20000}
LINE_BYTES=${LINE_BYTES:-100}
FRESH_BROKER=${FRESH_BROKER:-0}
TIMEOUT=${TIMEOUT:-5}
BUCKET=${BUCKET:-1000}
((LINE_BYTES >= 9)) || { echo "LINE_BYTES must be at least 9" >&2; exit 2; }

KILLAT=$ZP_WORK/killat
(cd "$ZP_ROOT" && go build -o "$KILLAT" ./scripts/killat)

W=$ZP_WORK
# Lines: 8-digit number, then padding to LINE_BYTES with the newline.
awk -v K="$K" -v B="$LINE_BYTES" 'BEGIN {
	pad = sprintf("%*s", B - 9, ""); gsub(/ /, "x", pad)
	for (i = 1; i <= K; i++) printf "%08d%s\n", i, pad
	print "END" }' >"$W/input"
TOTAL=$(stat -c %s "$W/input")

echo "kill9-loss: RUNS=$RUNS K=$K LINE_BYTES=$LINE_BYTES (stream $TOTAL bytes) FRESH_BROKER=$FRESH_BROKER"
echo "endpoint $ZPIPES_ENDPOINT, binary $ZP"

start_broker() { zp_serve; }
stop_broker() {
	kill -TERM "$ZP_BROKER" 2>/dev/null || true
	wait "$ZP_BROKER" 2>/dev/null || true
}
((FRESH_BROKER)) || start_broker

RESULTS=$W/results.tsv
printf 'run\ttarget\tseen\tfinal\tn1\tn2\tlost\tdups\torder1\torder2\tpartial\tend\tleft\trc2\n' >"$RESULTS"
problems=0
for run in $(seq 1 "$RUNS"); do
	((FRESH_BROKER)) && start_broker
	pipe=k9-$run
	if ! "$ZP" cat -w "$pipe" <"$W/input"; then
		echo "run $run: cat -w failed" >&2
		exit 1
	fi
	target=$(((RANDOM << 15 | RANDOM) % TOTAL + 1))
	kres=$("$KILLAT" -out "$W/out1" -min-bytes "$target" -timeout "${TIMEOUT}s" -- "$ZP" cat -r "$pipe")
	seen=$(sed -n 's/.*size_seen=\([0-9]*\).*/\1/p' <<<"$kres")
	final=$(sed -n 's/.*size_final=\([0-9]*\).*/\1/p' <<<"$kres")
	if [[ $kres != *killed=true* ]]; then
		echo "run $run: reader was not killed by SIGKILL ($kres)" >&2
	fi
	rc2=-
	: >"$W/out2"
	if ! grep -qx END "$W/out1"; then
		rc2=0
		# --foreground: plain timeout signals the child twice (it and then its
		# process group), and a second SIGINT makes zpipes exit at once.
		timeout --foreground -s INT "$TIMEOUT" "$ZP" cat -r --eof END "$pipe" >"$W/out2" 2>>"$W/reader2.log" || rc2=$?
	fi
	if ! kill -0 "$ZP_BROKER" 2>/dev/null; then
		echo "run $run: the broker died; its log:" >&2
		tail -20 "$W/broker.log" >&2
		exit 1
	fi
	left=$(zp_queued "$pipe")
	# Analyse: complete lines only; a partial line is one not LINE_BYTES-1 long.
	read -r n1 n2 lost dups o1 o2 partial endseen < <(awk -v K="$K" -v B="$LINE_BYTES" -v out2="$W/out2" -v rc2="$rc2" '
		FNR == 1 { f = (FILENAME == out2) ? 2 : 1; last = 0 }
		$0 == "END" { endseen++; next }
		length($0) != B - 1 || $0 !~ /^[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]/ { partial++; next }
		{
			n = substr($0, 1, 8) + 0
			cnt[f]++
			if (seen[n]++) dups++
			if (n <= last) order[f]++
			last = n
		}
		END {
			u = 0; for (x in seen) u++
			printf "%d %d %d %d %d %d %d %d\n", cnt[1], cnt[2], K - u, dups, order[1], order[2], partial, endseen + (rc2 == "0")
		}' "$W/out1" "$W/out2")
	printf '%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n' "$run" "$target" "$seen" "$final" \
		"$n1" "$n2" "$lost" "$dups" "$o1" "$o2" "$partial" "$endseen" "$left" "$rc2" >>"$RESULTS"
	if ((dups || o1 || o2 || left || endseen != 1)) || [[ $rc2 != 0 && $rc2 != - ]]; then
		problems=$((problems + 1))
		if ((problems <= 10)); then
			echo "run $run: PROBLEM n1=$n1 n2=$n2 lost=$lost dups=$dups order=$o1/$o2 END=$endseen left=$left rc2=$rc2"
		fi
	fi
	((FRESH_BROKER)) && stop_broker
	if ((run % 10 == 0)); then echo "  ... $run runs"; fi
done

# Summary.
col() { awk -F'\t' -v c="$1" 'NR > 1 { print $c }' "$RESULTS"; }
echo
echo "=== kill9-loss summary: $RUNS runs, K=$K chunks of $((LINE_BYTES - 1)) bytes + END marker ==="
for name in lost:7 dups:8 n1:5; do
	c=${name#*:}
	printf '%-22s min %s  median %s  p90 %s  max %s  sum %s\n' "${name%:*}" \
		"$(col "$c" | zp_pct 0)" "$(col "$c" | zp_pct 50)" "$(col "$c" | zp_pct 90)" "$(col "$c" | zp_pct 100)" \
		"$(col "$c" | awk '{ s += $1 } END { print s + 0 }')"
done
# Runs where the kill came after reader 1 had printed everything say
# little; the ones killed mid-stream are the interesting ones.
mid() { awk -F'\t' -v K="$K" -v c="$1" 'NR > 1 && $5 < K { print $c }' "$RESULTS"; }
nmid=$(mid 7 | wc -l)
for name in lost:7 dups:8; do
	c=${name#*:}
	printf '%-22s min %s  median %s  p90 %s  max %s  (%d runs killed mid-stream)\n' "${name%:*} mid-stream" \
		"$(mid "$c" | zp_pct 0)" "$(mid "$c" | zp_pct 50)" "$(mid "$c" | zp_pct 90)" "$(mid "$c" | zp_pct 100)" "$nmid"
done
echo "one MREAD reply: at most cat -r's --batch chunks (8192 since 61a9b44, 4096 before) and" \
	"at most 1 MiB = $((1048576 / (LINE_BYTES - 1))) chunks of $((LINE_BYTES - 1)) bytes"
echo "runs with lost = 0:      $(col 7 | awk '$1 == 0' | wc -l)"
echo "runs with duplicates:    $(col 8 | awk '$1 > 0' | wc -l)"
echo "runs with order errors:  $(awk -F'\t' 'NR > 1 && ($9 > 0 || $10 > 0)' "$RESULTS" | wc -l)"
echo "runs with partial line:  $(col 11 | awk '$1 > 0' | wc -l)"
echo "runs where END was lost: $(col 12 | awk '$1 == 0' | wc -l)   (reader 2 interrupted after ${TIMEOUT}s)"
echo "runs with END twice:     $(col 12 | awk '$1 > 1' | wc -l)"
echo "runs leaving chunks:     $(col 13 | awk '$1 > 0' | wc -l)   (pipe not empty after reader 2)"
echo "reader 1 printed all:    $(col 5 | awk -v K="$K" '$1 == K' | wc -l)"
echo
echo "histogram of lost chunks (bucket $BUCKET):"
col 7 | awk -v b="$BUCKET" '
	{ k = ($1 == 0) ? -1 : int(($1 - 1) / b); h[k]++; if (k > m) m = k }
	END {
		printf "  %13s  %3d %s\n", "0", h[-1], bar(h[-1])
		for (k = 0; k <= m; k++) printf "  %6d-%-6d  %3d %s\n", k * b + 1, (k + 1) * b, h[k], bar(h[k])
	}
	function bar(n,   s) { s = ""; while (n-- > 0) s = s "#"; return s }'
if awk -F'\t' 'NR > 1 && $8 > 0 { f = 1 } END { exit !f }' "$RESULTS"; then
	echo
	echo "histogram of duplicated chunks (bucket $BUCKET):"
	col 8 | awk -v b="$BUCKET" '
		{ k = ($1 == 0) ? -1 : int(($1 - 1) / b); h[k]++; if (k > m) m = k }
		END {
			printf "  %13s  %3d\n", "0", h[-1]
			for (k = 0; k <= m; k++) printf "  %6d-%-6d  %3d\n", k * b + 1, (k + 1) * b, h[k]
		}'
fi
echo
echo "pipes still listed by the broker: $("$ZP" ls --json | jq 'length') (opens held: $("$ZP" ls --json | jq '[.[].opens] | add // 0'), chunks: $("$ZP" ls --json | jq '[.[].chunks] | add // 0'))"
if [[ -n ${RESULTS_OUT:-} ]]; then
	cp "$RESULTS" "$RESULTS_OUT"
	echo "per-run table in $RESULTS_OUT"
fi
echo "verdict: $problems run(s) with duplicates, reordering, leftovers or a lost END"
((problems == 0))
