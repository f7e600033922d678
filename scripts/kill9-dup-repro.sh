#!/usr/bin/env bash
# kill9-dup-repro.sh — reproducer: a SIGKILLed `zpipes cat -r` gets chunks it
# already printed given back to the pipe, so the next reader prints them
# again (duplicates), besides losing what was in flight.
#
# Each run writes K numbered lines (100 bytes each) to a fresh pipe, starts
# `zpipes cat -r PIPE > out`, and as soon as out is not empty (the first
# MREAD reply has been printed) stops the reader with SIGSTOP,
# waits PAUSE seconds (the broker is then blocked writing the next replies of
# the same batch), and SIGKILLs it. Whatever the pipe then holds is read
# with `cat -r -n` and compared with what the killed reader printed.
#
# Before bab8aaa most runs showed "duplicates 4096": the whole first reply
# came back to the pipe although the reader had printed it, because the
# broker's writer (broker/conn.go, writeLoop/giveBack), when a write failed
# because the peer died, gave back the whole batch of replies, including
# those that had reached the kernel earlier in the same batch and that the
# peer had already read. Since bab8aaa every run should show 0 duplicates.
#
# Usage: scripts/kill9-dup-repro.sh    (env: RUNS=10 K=100000 PAUSE=0.3)
source "$(dirname "$0")/lib.sh"
zp_init
RUNS=${RUNS:-10}
K=${K:-100000}
PAUSE=${PAUSE:-0.3}
W=$ZP_WORK
awk -v K="$K" 'BEGIN { for (i = 1; i <= K; i++) printf "%08d%091d\n", i, 0 }' >"$W/input"
zp_serve
echo "kill9-dup-repro: $RUNS runs, K=$K, broker at $ZPIPES_ENDPOINT"
dup_runs=0
for run in $(seq 1 "$RUNS"); do
	pipe=dup$run
	"$ZP" cat -w "$pipe" <"$W/input"
	rm -f "$W/out" # a stale file would look like output at once
	"$ZP" cat -r "$pipe" >"$W/out" &
	reader=$!
	until [[ -s $W/out ]]; do :; done # builtin test: no fork, no delay
	kill -STOP "$reader"
	sleep "$PAUSE"
	kill -KILL "$reader"
	{ wait "$reader"; } 2>/dev/null || true
	printed=$(wc -l <"$W/out")
	sleep 0.2 # the broker notices the dead peer and gives chunks back
	queued=$(zp_queued "$pipe")
	: >"$W/rest"
	# (-n 0 would mean no limit, and wait for more)
	((queued == 0)) || "$ZP" cat -r -n "$queued" "$pipe" >"$W/rest"
	dups=$(sort "$W/out" "$W/rest" | uniq -d | wc -l)
	lost=$((K - $(sort -u "$W/out" "$W/rest" | wc -l)))
	((dups == 0)) || dup_runs=$((dup_runs + 1))
	printf 'run %2d: killed reader printed %6d; pipe then held %6d; duplicates %6d; lost %6d\n' \
		"$run" "$printed" "$queued" "$dups" "$lost"
done
echo "runs with duplicates: $dup_runs of $RUNS (expected 0: chunks a reader printed must never come back)"
((dup_runs == 0))
