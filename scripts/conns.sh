#!/usr/bin/env bash
# conns.sh — what many idle connections and silent sockets cost a broker,
# and whether it still serves a fresh client.
#
# Starts `zpipes serve --max-conns MAX_CONNS` on a private abstract socket and
# runs three floods against it with scripts/connflood, one after another:
#   idle-under  IDLE_UNDER connections that finish the handshake and say
#               nothing (fewer than the limit);
#   idle-over   IDLE_OVER such connections (more than the limit);
#   silent      SILENT sockets that connect and never send a byte; the broker
#               closes them after its 5 s handshake timeout.
# Idle floods are held HOLD seconds, the silent one SILENT_HOLD (longer than
# the handshake timeout, so that the broker, not connflood, closes them). While it is held the broker's open file
# descriptors are sampled every 0.2 s, and a fresh client (`zpipes ls`) is
# tried once with a 1 s limit; for the silent flood it is tried again once
# the broker has closed the silent sockets. After each flood the script
# waits (at most 15 s) for the broker's descriptors to come back down.
# For each flood it prints what connflood got, the peak descriptors, the
# broker's peak RSS so far (VmHWM), the fresh client's result, and the log
# lines the broker wrote meanwhile, by message.
#
# Usage: scripts/conns.sh     (env: MAX_CONNS=1000 IDLE_UNDER=800
#        IDLE_OVER=3000 SILENT=3000 HOLD=3 SILENT_HOLD=7; MAX_CONNS=0 passes no
#        --max-conns, for brokers without it; BROKER_NOFILE=N runs the broker
#        under ulimit -n N, to see it run out of descriptors; ZPIPES_BIN=
#        prebuilt binary)
source "$(dirname "$0")/lib.sh"
zp_init

MAX_CONNS=${MAX_CONNS:-1000}
IDLE_UNDER=${IDLE_UNDER:-800}
IDLE_OVER=${IDLE_OVER:-3000}
SILENT=${SILENT:-3000}
HOLD=${HOLD:-3}
SILENT_HOLD=${SILENT_HOLD:-7}
((IDLE_UNDER + IDLE_OVER + SILENT <= 30000 && HOLD <= 30 && SILENT_HOLD <= 30)) ||
	{ echo "at most 30000 connections in all, and holds of at most 30 s" >&2; exit 2; }
for n in "$IDLE_UNDER" "$IDLE_OVER" "$SILENT"; do
	((n + 200 < $(ulimit -n))) ||
		{ echo "raise ulimit -n: connflood needs a descriptor per connection" >&2; exit 2; }
done

FLOOD=$ZP_WORK/connflood
(cd "$ZP_ROOT" && go build -o "$FLOOD" ./scripts/connflood)
LOG=$ZP_WORK/broker.log
flags=()
if ((MAX_CONNS > 0)); then flags=(--max-conns "$MAX_CONNS"); fi
if [[ -n ${BROKER_NOFILE:-} ]]; then
	# The broker alone gets the lower limit: a wrapper that sets it and execs.
	printf '#!/bin/sh\nulimit -n %d || exit 1\nexec "%s" "$@"\n' "$BROKER_NOFILE" "$ZP" >"$ZP_WORK/zp-limited"
	chmod +x "$ZP_WORK/zp-limited"
	ZP_REAL=$ZP ZP=$ZP_WORK/zp-limited
	zp_serve "${flags[@]}"
	ZP=$ZP_REAL
else
	zp_serve "${flags[@]}"
fi

fds() { find "/proc/$ZP_BROKER/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
ms() { echo $(($(date +%s%N) / 1000000)); }
BASE_FDS=$(fds)
echo "conns: broker pid $ZP_BROKER, ${flags[*]:-no --max-conns}; $BASE_FDS fds idle;" \
	"VmRSS $(zp_status "$ZP_BROKER" VmRSS) kB; fd limit $(awk '/Max open files/ { print $4 }' "/proc/$ZP_BROKER/limits")"

# fresh: try `zpipes ls` once, with 1 s to get its answer.
fresh() {
	local t0 rc out
	t0=$(ms)
	out=$(timeout 1 "$ZP" --timeout 1s ls 2>&1 >/dev/null) && rc=0 || rc=$?
	if ((rc == 0)); then
		echo "OK in $(($(ms) - t0)) ms"
	elif ((rc == 124)); then
		echo "NO ANSWER within 1 s"
	else
		echo "FAILED in $(($(ms) - t0)) ms (exit $rc: ${out//$'\n'/ })"
	fi
}

# flood NAME HOLD ARGS...: run connflood with ARGS for HOLD s and report.
flood() {
	local name=$1 hold=$2 lines0 peak=0 n got probe after="" t0
	shift 2
	lines0=$(wc -l <"$LOG")
	echo
	echo "--- $name: $* ---"
	timeout $((hold + 90)) "$FLOOD" -e "$ZPIPES_ENDPOINT" -hold "${hold}s" "$@" >"$ZP_WORK/flood.out" &
	local pid=$!
	# Sample descriptors until connflood is ready, then probe once.
	until grep -q '^ready$' "$ZP_WORK/flood.out" 2>/dev/null; do
		kill -0 "$pid" 2>/dev/null || break
		n=$(fds); ((n > peak)) && peak=$n
		sleep 0.2
	done
	n=$(fds); ((n > peak)) && peak=$n
	probe=$(fresh)
	while kill -0 "$pid" 2>/dev/null; do
		n=$(fds); ((n > peak)) && peak=$n
		# Silent sockets: try again once the handshake timeout has freed them.
		if [[ $name == silent && -z $after ]] && ((n <= BASE_FDS + 2)); then
			after=$(fresh)
		fi
		sleep 0.2
	done
	wait "$pid" || echo "connflood exited $?"
	got=$(head -n 1 "$ZP_WORK/flood.out")
	t0=$(ms)
	until (($(fds) <= BASE_FDS + 2)) || (($(ms) - t0 > 15000)); do sleep 0.2; done
	sleep 1.2 # a summary of repeated log lines comes within a second
	echo "connflood: $got"
	echo "peak fds $peak (idle $BASE_FDS); fds after $(fds); broker VmHWM $(zp_status "$ZP_BROKER" VmHWM) kB"
	echo "fresh client while held: $probe"
	if [[ -n $after ]]; then echo "fresh client after the handshake timeout: $after"; fi
	echo "log lines: $(($(wc -l <"$LOG") - lines0))"
	tail -n +$((lines0 + 1)) "$LOG" | sed -E 's/.* msg=("[^"]*"|[^ ]*).*/\1/' | sort | uniq -c | sed 's/^/   /'
	tail -n +$((lines0 + 1)) "$LOG" | awk '/ more=/ && n++ < 2 { sub(/^time=[^ ]* /, ""); print "   e.g. " $0 }' 
}

flood idle-under "$HOLD" -idle "$IDLE_UNDER"
flood idle-over "$HOLD" -idle "$IDLE_OVER"
flood silent "$SILENT_HOLD" -silent "$SILENT"

kill -TERM "$ZP_BROKER"
wait "$ZP_BROKER" || echo "broker exited $?"
echo
echo "broker stopped; log lines in all: $(wc -l <"$LOG")"
