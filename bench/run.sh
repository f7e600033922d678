#!/usr/bin/env bash
# bench/run.sh: end-to-end throughput of zpipes against two baselines measured
# in the same invocation, on the same data:
#
#   fifo      cat FILE > fifo  |  cat fifo > out        (kernel, no framing)
#   unixsock  bench/unixsock: a Go unix-socket stream with bufio, each line
#             length-prefixed, writer process -> reader process (the
#             physical floor for framed lines in Go; no broker, no library)
#   relay     bench/unixsock twice: writer -> relay -> reader, the relay a
#             process that reads the stream's bytes and writes them on,
#             parsing nothing (the two-hop floor: the least work any broker
#             in the middle does; relay/fifo is the most any broker can
#             reach on this machine)
#   pushpull  zmq4 PUSH -> PULL, one message per line   (the library, no broker)
#   zpipes    zpipes cat -w PIPE  |  zpipes cat -r -n N PIPE, via zpipes serve
#   store     the same via zpipes serve --store DIR (every OK fsync'd)
#   store-1s  the same via zpipes serve --store DIR --sync-every 1s
#             (the ratios store/zpipes compare each with memory mode)
#   js1       the same via zpipes serve --store nats://… on one embedded
#             nats-server (bench/natsd, JetStream file store, sync always)
#   js3       the same on a local three-server cluster (R3 stream)
#             (both only with BENCH_NATS=1; ratios js1/zpipes, js3/zpipes)
#
# The ratios are zpipes over fifo, unixsock and pushpull, and each store over
# zpipes. Then a per-process cost table (writer, broker, reader) for each
# zpipes system: CPU seconds per million lines and context switches per MB,
# medians over the timed rounds, and syscalls per MB from one extra transfer
# per workload and system that is NOT timed (counting slows processes down):
# each process under `perf stat -e raw_syscalls:sys_enter`, or under
# `strace -f -c` where perf cannot count syscalls. That transfer is verified
# byte for byte like the others.
#
# After the throughput tables come two short probes, each against a fresh
# zpipes serve (a few seconds in all):
#
#   bench/latency   one-in-flight round trips: WRITE->OK and WRITE->READ,
#                   with a zmq4 REQ/REP round trip as the baseline and a raw
#                   64-byte unix-socket round trip between two processes as
#                   the floor; prints WRITE->OK p50 / raw round trip p50
#   bench/fairness  a light writer's chunk behind a heavy writer's stream:
#                   READs between its OK and its delivery (want <= 2)
#
# Each transfer is timed from the moment the producer and consumer are
# launched until the consumer exits; the output is then compared byte for
# byte with the input (outside the timed region, the same for all systems).
# Systems are interleaved within each round so that machine noise hits all of
# them alike; the ratios use medians from this invocation only.
#
# Usage (from anywhere):  bench/run.sh
#
# Environment:
#   BENCH_QUICK=1          smoke run: 20k/5k lines, 1 round
#   BENCH_ROUNDS=N         rounds (default 5)
#   BENCH_W1_LINES=N       W1 line count (default 1000000), BENCH_W1_WIDTH=64
#   BENCH_W2_LINES=N       W2 line count (default 100000),  BENCH_W2_WIDTH=1024
#                          (widths are payload bytes; each line also has '\n')
#   BENCH_TIMEOUT=SECONDS  limit per producer/consumer process (default 300)
#   BENCH_ZPIPES=PATH      use this zpipes binary instead of building one
#   BENCH_SKIP_ZPIPES=1    baselines only (development)
#   BENCH_STORE=0          skip the --store systems
#   BENCH_STORE_DIR=DIR    where the stores go (default: the temp dir; a tmpfs
#                          makes fsync free, so use a real disk)
#   BENCH_NATS=1           add the JetStream systems js1 and js3
#   BENCH_PROBES=0         skip the latency and fairness probes
#   BENCH_SYSCALLS=HOW     how to count syscalls: auto (default: perf, else
#                          strace, else none), perf, strace, or 0 (skip the
#                          untimed counting transfers)
#   BENCH_OUT=PATH         also write raw samples + summary rows (TSV) there
#
# stdout carries the result tables only; progress goes to stderr.
# Exit status: 0 if every transfer (timed or counted) verified and both
# probes ran; 1 if any failed or zpipes could not be built (unless
# BENCH_SKIP_ZPIPES=1). The probes report fairness and latency, and the
# syscall counts are reported as found; none of them is judged.

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
	def_w1=20000 def_w2=5000 def_rounds=1
else
	def_w1=1000000 def_w2=100000 def_rounds=5
fi
w1_lines=${BENCH_W1_LINES:-$def_w1}
w1_width=${BENCH_W1_WIDTH:-64}
w2_lines=${BENCH_W2_LINES:-$def_w2}
w2_width=${BENCH_W2_WIDTH:-1024}
rounds=${BENCH_ROUNDS:-$def_rounds}
limit=${BENCH_TIMEOUT:-300}
skip_zpipes=${BENCH_SKIP_ZPIPES:-0}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/zpipes-bench.XXXXXX")

# Every process this script starts is a background job of this shell, so
# `jobs -p` is exactly the set to stop. timeout(1) passes SIGTERM on to the
# command it runs.
cleanup() {
	local pids
	pids=$(jobs -p)
	if [[ -n $pids ]]; then
		kill -TERM $pids 2>/dev/null || true
		wait $pids 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '%s\n' "$*" >&2; }

# A random suffix per invocation (plus a counter per transfer) keeps
# concurrent runs, and a lingering process from an earlier transfer, from
# colliding on an abstract socket name.
suffix=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
transfer=0
endpoint() { # KIND -> sets ep
	transfer=$((transfer + 1))
	ep="ipc://@zpipes-bench-$suffix-$1-$transfer"
}

# Microseconds since the epoch, without forking: $EPOCHREALTIME (bash 5) with
# its decimal separator removed, whatever the locale makes it.
now_us() { us=${EPOCHREALTIME//[!0-9]/}; }

# Syscall counting, for the untimed transfers only. count_cmd FILE sets cmd
# to a prefix that runs a command under the chosen counter, its summary in
# FILE; syscalls_in FILE prints the count from that summary (nothing if none).
count_cmd() {
	case $counter in
	perf) cmd=(perf stat -e raw_syscalls:sys_enter -x, -o "$1" --) ;;
	strace) cmd=(strace -f -c -o "$1" --) ;;
	esac
}
syscalls_in() {
	case $counter in
	perf) awk -F, '$3 ~ /^raw_syscalls:sys_enter/ && $1 ~ /^[0-9]+$/ { print $1 }' "$1" 2>/dev/null ;;
	strace) awk '$NF == "total" && $4 ~ /^[0-9]+$/ { print $4 }' "$1" 2>/dev/null ;;
	esac
}
counter=
case ${BENCH_SYSCALLS:-auto} in
0 | none) ;;
auto | perf | strace)
	for try in perf strace; do
		[[ ${BENCH_SYSCALLS:-auto} == auto || ${BENCH_SYSCALLS:-auto} == "$try" ]] || continue
		command -v "$try" >/dev/null || continue
		counter=$try
		count_cmd "$tmp/try.sc"
		if "${cmd[@]}" true 2>/dev/null && [[ -n $(syscalls_in "$tmp/try.sc") ]]; then
			break
		fi
		counter=
	done
	[[ -n $counter ]] || log "cannot count syscalls (BENCH_SYSCALLS=${BENCH_SYSCALLS:-auto}): perf and strace both unusable; no syscalls column"
	;;
*)
	log "BENCH_SYSCALLS must be auto, perf, strace or 0"
	exit 1
	;;
esac
rm -f "$tmp/try.sc"

log "building bench tools"
go build -o "$tmp/gen" ./bench/gen
go build -o "$tmp/pushpull" ./bench/pushpull
go build -o "$tmp/unixsock" ./bench/unixsock
go build -o "$tmp/report" ./bench/report
go build -o "$tmp/latency" ./bench/latency
go build -o "$tmp/fairness" ./bench/fairness
[[ ${BENCH_NATS:-0} == 1 ]] && go build -o "$tmp/natsd" ./bench/natsd

zpipes_note=
zpipes=
if [[ $skip_zpipes == 1 ]]; then
	zpipes_note="zpipes skipped (BENCH_SKIP_ZPIPES=1)"
elif [[ -n ${BENCH_ZPIPES:-} ]]; then
	zpipes=$BENCH_ZPIPES
else
	log "building zpipes"
	if go build -o "$tmp/zpipes" . 2>"$tmp/build.log"; then
		zpipes=$tmp/zpipes
	else
		zpipes_note="zpipes not built: 'go build .' failed; baselines only"
		log "$zpipes_note:"
		head -n 20 "$tmp/build.log" >&2
	fi
fi

log "generating workloads in $tmp"
"$tmp/gen" "$w1_lines" "$w1_width" "$tmp/W1"
"$tmp/gen" "$w2_lines" "$w2_width" "$tmp/W2"

# finish_transfer RPID WPID waits for the consumer, stops the clock, then
# reaps the producer (stopping it if the consumer failed, so that it cannot
# hang on a peer that is gone). Sets elapsed and returns non-zero on failure.
finish_transfer() {
	local rpid=$1 wpid=$2 rc=0
	wait "$rpid" || rc=$?
	now_us
	elapsed=$((us - t0))
	if ((rc != 0)); then
		log "  consumer exited with status $rc"
		kill -TERM "$wpid" 2>/dev/null || true
	fi
	wait "$wpid" || { log "  producer exited with status $?"; rc=1; }
	return "$rc"
}

run_fifo() { # IN LINES OUT
	local in=$1 out=$3 fifo=$tmp/fifo rpid wpid
	rm -f "$fifo"
	mkfifo "$fifo"
	now_us
	t0=$us
	timeout "$limit" cat "$fifo" >"$out" &
	rpid=$!
	timeout "$limit" cat "$in" >"$fifo" &
	wpid=$!
	finish_transfer "$rpid" "$wpid"
}

# run_pair PROG READ WRITE ADDR IN LINES OUT: a bench program's reader
# (`PROG READ ADDR LINES > OUT`, which binds) and writer (`PROG WRITE ADDR
# IN`, which dials and retries until the reader is bound).
run_pair() {
	local prog=$1 rverb=$2 wverb=$3 addr=$4 in=$5 n=$6 out=$7 rpid wpid
	now_us
	t0=$us
	timeout "$limit" "$tmp/$prog" "$rverb" "$addr" "$n" >"$out" &
	rpid=$!
	timeout "$limit" "$tmp/$prog" "$wverb" "$addr" "$in" &
	wpid=$!
	finish_transfer "$rpid" "$wpid"
}

run_pushpull() { # IN LINES OUT
	endpoint pp
	run_pair pushpull pull push "$ep" "$@"
}

run_unixsock() { # IN LINES OUT
	endpoint us
	run_pair unixsock read write "${ep#ipc://}" "$@"
}

# run_relay: the unixsock reader binds one address, the relay binds another
# and dials the reader's, the writer dials the relay's; both dials retry
# until their peer is bound.
run_relay() { # IN LINES OUT
	local in=$1 n=$2 out=$3 rpid lpid wpid rc=0
	endpoint us-r
	local raddr=${ep#ipc://}
	endpoint us-l
	local laddr=${ep#ipc://}
	now_us
	t0=$us
	timeout "$limit" "$tmp/unixsock" read "$raddr" "$n" >"$out" &
	rpid=$!
	timeout "$limit" "$tmp/unixsock" relay "$laddr" "$raddr" &
	lpid=$!
	timeout "$limit" "$tmp/unixsock" write "$laddr" "$in" &
	wpid=$!
	finish_transfer "$rpid" "$wpid" || rc=$?
	((rc == 0)) || kill -TERM "$lpid" 2>/dev/null || true
	wait "$lpid" || { log "  relay exited with status $?"; rc=1; }
	return "$rc"
}

# wait_bound EP PID: zmq4 binds an ipc://@name endpoint as an abstract unix
# socket, which shows up in /proc/net/unix as @name once it is listening.
wait_bound() {
	local name=${1#ipc://} pid=$2 i
	for ((i = 0; i < 1000; i++)); do
		grep -qF -- "$name" /proc/net/unix && return 0
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.01
	done
	return 1
}

run_store() { # IN LINES OUT
	local dir
	dir=$(mktemp -d "${BENCH_STORE_DIR:-$tmp}/store.XXXXXX")
	serve_args=(--store "$dir")
	run_zpipes "$@" || { rm -rf "$dir"; return 1; }
	rm -rf "$dir"
}

run_store-1s() { # IN LINES OUT
	local dir
	dir=$(mktemp -d "${BENCH_STORE_DIR:-$tmp}/store.XXXXXX")
	serve_args=(--store "$dir" --sync-every 1s)
	run_zpipes "$@" || { rm -rf "$dir"; return 1; }
	rm -rf "$dir"
}

# run_js N IN LINES OUT: a transfer through zpipes serve --store nats://…
# on N fresh embedded nats-servers, stopped afterwards.
run_js() {
	local nodes=$1 dir npid urls rc=0
	shift
	dir=$(mktemp -d "${BENCH_STORE_DIR:-$tmp}/js.XXXXXX")
	# exec: the coprocess is natsd itself, so that kill stops it.
	coproc natsd { exec "$tmp/natsd" -n "$nodes" -dir "$dir" 2>>"$tmp/natsd.log"; }
	npid=$natsd_PID
	if ! read -r -t 30 urls <&"${natsd[0]}"; then
		log "  natsd did not start; its stderr:"
		tail -n 5 "$tmp/natsd.log" >&2
		kill -TERM "$npid" 2>/dev/null || true
		wait "$npid" 2>/dev/null || true
		rm -rf "$dir"
		elapsed=0
		return 1
	fi
	serve_args=(--store "$urls")
	run_zpipes "$@" || rc=$?
	kill -TERM "$npid" 2>/dev/null || true
	wait "$npid" 2>/dev/null || true
	rm -rf "$dir"
	return "$rc"
}
run_js1() { run_js 1 "$@"; }
run_js3() { run_js 3 "$@"; }

# Per-process cost of a zpipes transfer: CPU seconds (user + system) and
# context switches (voluntary + involuntary), which travel between machines
# better than lines/s. The writer and reader run under /usr/bin/time; the
# broker's are read from /proc before it stops (every thread's switches).
if [[ -x /usr/bin/time ]]; then
	timed=(/usr/bin/time -f '%U %S %w %c')
else
	timed=() # no cost figures
	log "no /usr/bin/time: the per-process cost table is left out"
fi
broker_cost() { # PID -> "user sys voluntary involuntary" (seconds, counts)
	local pid=$1 hz
	hz=$(getconf CLK_TCK)
	awk -v hz="$hz" '{ printf "%.2f %.2f", $14 / hz, $15 / hz }' "/proc/$pid/stat" 2>/dev/null || return 0
	cat /proc/"$pid"/task/*/status 2>/dev/null |
		awk '/^voluntary_ctxt_switches/ { v += $2 } /^nonvoluntary_ctxt_switches/ { n += $2 } END { printf " %d %d\n", v, n }'
}

# run_zpipes IN LINES OUT: one transfer through a fresh zpipes serve. With
# counting=1 it is the untimed transfer: every process runs under the
# syscall counter and their counts go to syscalls.tsv instead of cost.tsv.
serve_args=()
counting=0
run_zpipes() { # IN LINES OUT
	local in=$1 n=$2 out=$3 spid bpid rpid wpid rc=0 i who
	local wcmd rcmd scmd
	endpoint zp
	rss_kb=-
	if ((counting)); then
		count_cmd "$tmp/writer.sc"
		wcmd=("${cmd[@]}")
		count_cmd "$tmp/reader.sc"
		rcmd=("${cmd[@]}")
		count_cmd "$tmp/broker.sc"
		scmd=("${cmd[@]}")
	elif ((${#timed[@]})); then
		wcmd=("${timed[@]}" -o "$tmp/writer.cost")
		rcmd=("${timed[@]}" -o "$tmp/reader.cost")
		scmd=()
	else
		wcmd=() rcmd=() scmd=()
	fi
	"${scmd[@]}" "$zpipes" serve -e "$ep" "${serve_args[@]}" 2>>"$tmp/serve.log" &
	serve_args=()
	spid=$!
	if ! wait_bound "$ep" "$spid"; then
		log "  zpipes serve did not bind $ep; its stderr:"
		tail -n 5 "$tmp/serve.log" >&2
		kill -TERM "$spid" 2>/dev/null || true
		wait "$spid" 2>/dev/null || true
		elapsed=0
		return 1
	fi
	# Under a counter, the broker is the counter's child; it is the one to
	# stop, so that the counter sees it exit and writes its summary.
	bpid=$spid
	if ((counting)); then
		bpid=$(pgrep -P "$spid" | head -n 1) || true
		if [[ -z $bpid ]]; then
			log "  no broker process under $counter (pid $spid)"
			bpid=$spid
		fi
	fi

	now_us
	t0=$us
	timeout "$limit" "${rcmd[@]}" "$zpipes" -e "$ep" cat -r -n "$n" jobs >"$out" &
	rpid=$!
	timeout "$limit" "${wcmd[@]}" "$zpipes" -e "$ep" cat -w jobs <"$in" &
	wpid=$!
	finish_transfer "$rpid" "$wpid" || rc=$?
	if ((!counting)); then
		broker_cost "$bpid" >"$tmp/broker.cost"
		for who in writer broker reader; do
			[[ -s $tmp/$who.cost ]] || continue
			local cpu_user cpu_sys vol invol
			# The last line: time(1) puts "Command exited with non-zero
			# status N" before the figures of a process that failed.
			read -r cpu_user cpu_sys vol invol < <(tail -n 1 "$tmp/$who.cost") || continue
			[[ -n $invol ]] || continue
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$sys_name" "$who" "$n" \
				"$(wc -c <"$in")" "$(awk -v u="$cpu_user" -v s="$cpu_sys" 'BEGIN { print u + s }')" "$((vol + invol))" >>"$tmp/cost.tsv"
		done
		rm -f "$tmp"/*.cost

		# VmHWM is the broker's peak resident set over its life, which is
		# this one transfer: each transfer gets a fresh broker.
		rss_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$bpid/status" 2>/dev/null) || true
		[[ -n $rss_kb ]] || rss_kb=-
	fi
	kill -TERM "$bpid" 2>/dev/null || true
	for ((i = 0; i < 500; i++)); do
		kill -0 "$spid" 2>/dev/null || break
		sleep 0.01
	done
	if kill -0 "$spid" 2>/dev/null; then
		log "  zpipes serve ignored SIGTERM for 5s; killing it"
		kill -KILL "$bpid" "$spid" 2>/dev/null || true
		rc=1
	fi
	wait "$spid" || log "  zpipes serve exited with status $? after SIGTERM"
	if ((counting)); then
		local count
		for who in writer broker reader; do
			count=$(syscalls_in "$tmp/$who.sc")
			if [[ -z $count ]]; then
				log "  no syscall count for the $who in $tmp/$who.sc"
				continue
			fi
			printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$sys_name" "$who" "$n" "$(wc -c <"$in")" "$count" >>"$tmp/syscalls.tsv"
		done
		rm -f "$tmp"/*.sc
	fi
	return "$rc"
}

# run_probe NAME ARGS...: runs the probe program NAME against a fresh
# broker, its table on stdout under a heading.
run_probe() {
	local name=$1 spid rc=0 i
	shift
	endpoint "$name"
	"$zpipes" serve -e "$ep" 2>>"$tmp/serve.log" &
	spid=$!
	if ! wait_bound "$ep" "$spid"; then
		log "$name probe: zpipes serve did not bind $ep"
		kill -TERM "$spid" 2>/dev/null || true
		wait "$spid" 2>/dev/null || true
		return 1
	fi
	log "running the $name probe"
	echo
	echo "$name (bench/$name)"
	timeout "$limit" "$tmp/$name" -e "$ep" "$@" || { rc=$?; log "$name probe exited with status $rc"; }
	kill -TERM "$spid" 2>/dev/null || true
	for ((i = 0; i < 500; i++)); do
		kill -0 "$spid" 2>/dev/null || break
		sleep 0.01
	done
	kill -KILL "$spid" 2>/dev/null || true
	wait "$spid" 2>/dev/null || true
	return "$rc"
}

raw=$tmp/raw.tsv
: >"$raw"
systems=(fifo unixsock relay pushpull)
[[ -n $zpipes ]] && systems+=(zpipes)
[[ -n $zpipes && ${BENCH_STORE:-1} != 0 ]] && systems+=(store store-1s)
[[ -n $zpipes && ${BENCH_NATS:-0} == 1 ]] && systems+=(js1 js3)
failures=0

{
	echo "zpipes throughput benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "host: $(nproc) cores, $(uname -sr), $(go env GOVERSION), rounds: $rounds"
	echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (+ local changes)')"
	[[ -z $zpipes_note ]] || echo "NOTE: $zpipes_note"
	echo
}

for ((round = 1; round <= rounds; round++)); do
	for wl in W1 W2; do
		if [[ $wl == W1 ]]; then lines=$w1_lines width=$w1_width; else lines=$w2_lines width=$w2_width; fi
		for sys in "${systems[@]}"; do
			out=$tmp/out
			rm -f "$out"
			rss_kb=-
			status=ok
			sys_name=$sys
			if ! "run_$sys" "$tmp/$wl" "$lines" "$out"; then
				status=fail
			elif ! cmp -s "$tmp/$wl" "$out"; then
				status=fail
				log "  output differs from input: $(cmp "$tmp/$wl" "$out" 2>&1 | head -n 1)"
			fi
			rm -f "$out"
			printf 'run\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n' \
				"$wl" "$sys" "$round" "$lines" "$width" "$elapsed" "$rss_kb" "$status" >>"$raw"
			if [[ $status == ok ]]; then
				log "round $round/$rounds $wl $sys: $((lines * 1000000 / (elapsed > 0 ? elapsed : 1))) lines/s ($((elapsed / 1000)) ms)"
			else
				failures=$((failures + 1))
				log "round $round/$rounds $wl $sys: FAILED"
			fi
		done
	done
done

"$tmp/report" "$raw"

# The untimed transfers that count syscalls: one per workload and zpipes
# system, after the timed rounds so that they cannot disturb them.
if [[ -n $counter ]]; then
	echo "# counted by: $(if [[ $counter == perf ]]; then echo 'perf stat -e raw_syscalls:sys_enter'; else echo 'strace -f -c'; fi)" >"$tmp/syscalls.tsv"
	for wl in W1 W2; do
		if [[ $wl == W1 ]]; then lines=$w1_lines; else lines=$w2_lines; fi
		for sys in "${systems[@]}"; do
			[[ $sys == zpipes || $sys == store* ]] || continue
			out=$tmp/out
			rm -f "$out"
			sys_name=$sys
			counting=1
			status=ok
			"run_$sys" "$tmp/$wl" "$lines" "$out" || status=fail
			counting=0
			if [[ $status == ok ]] && ! cmp -s "$tmp/$wl" "$out"; then
				status=fail
				log "  output differs from input: $(cmp "$tmp/$wl" "$out" 2>&1 | head -n 1)"
			fi
			rm -f "$out"
			if [[ $status == fail ]]; then
				failures=$((failures + 1))
			fi
			log "syscall count $wl $sys (untimed, under $counter): $status"
		done
	done
fi

if [[ -s $tmp/cost.tsv || -s $tmp/syscalls.tsv ]]; then
	echo
	touch "$tmp/cost.tsv"
	if [[ -n $counter ]]; then
		"$tmp/report" -cost "$tmp/cost.tsv" -syscalls "$tmp/syscalls.tsv"
	else
		"$tmp/report" -cost "$tmp/cost.tsv"
	fi
fi

if [[ ${BENCH_PROBES:-1} != 0 && -n $zpipes ]]; then
	if [[ ${BENCH_QUICK:-0} == 1 ]]; then
		latency_args=(-n 5000 -warmup 500) fairness_args=(-trials 20)
	else
		latency_args=() fairness_args=()
	fi
	run_probe latency "${latency_args[@]}" || failures=$((failures + 1))
	run_probe fairness "${fairness_args[@]}" || failures=$((failures + 1))
fi

if [[ -n ${BENCH_OUT:-} ]]; then
	{ cat "$raw"; "$tmp/report" -tsv "$raw"; } >"$BENCH_OUT"
	log "raw samples and summary written to $BENCH_OUT"
fi

if ((failures > 0)); then
	log "$failures transfer(s) or probe(s) failed"
	exit 1
fi
if [[ -n $zpipes_note && $skip_zpipes != 1 ]]; then
	log "$zpipes_note"
	exit 1
fi
