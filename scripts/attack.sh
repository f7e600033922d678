#!/usr/bin/env bash
# attack.sh — issue 13's attacks on the broker, BEFORE and AFTER.
#
# Builds zpipes at two commits (BEFORE_REV, default e176790, the broker the
# issue was filed against; AFTER_REV, default HEAD) in temporary git
# worktrees, and scripts/attack against AFTER's broker package. Then, for
# each side, each attack gets a fresh `zpipes serve` on a private abstract
# socket, with a small budget and only flags both sides know:
#   1 list      200,000 pipes with 16-byte names (pipelined OPENs), then one
#               connection sends 40 LISTs and never reads, for 10 s; then it
#               closes, and RSS is read 1 s and 6 s later
#   2 inflight  a connection sends 400 × MREAD p 1000 and never reads;
#               another pipelines 400 WRITEs of 1 MiB to p; then both close
#               and p is looked at in LIST
#   3 unread    500 UNREADs of 1 MiB to a pipe nobody read
#   4a names    300,000 pipes with 1024-byte names, one 1-byte chunk each
#   4d empty    300,000 pipes with 1024-byte names, OPENed and left empty
#   4b tiny     one pipe, 1-byte chunks pipelined on one connection until
#               the broker stops taking them
#   4c short    one pipe, 1-byte chunks each written by a connection of its
#               own, 16 at a time, until a write has no OK within 5 s, or 60 s
#   5 lines     serve --max-chunk 1048576 --max-pipe-bytes 1048600
#               --max-total-bytes 1048600; `zpipes cat -w` of 8,192 lines of
#               120 bytes (10 s timeout), then read back what it queued;
#               then cat -w again while cat -r -n 8192 reads
#   5b lines    the same with --max-chunk 1000000, which both sides accept
# Every attack is bounded in count and time (see scripts/attack). While one
# runs, the broker's VmRSS is sampled every 100 ms and a fresh client
# (Dial, OPEN, CLOSE) is tried every second with 1 s to get its OK. For
# each it prints a table of BEFORE and AFTER figures, with the broker's peak
# RSS (VmHWM) and the lines it logged (by message, with the first of each).
#
# Usage: scripts/attack.sh    (env: BEFORE_REV=e176790 AFTER_REV=HEAD
#        ONLY="1 2 3 4a 4d 4b 4c 5 5b" PIPES=200000 NAME_PIPES=300000)
#
# Rerun 2026-11-30 00:13 UTC, BEFORE c37fefd (the previous release), AFTER
# abfcf42 (the GC floor, capped at half of --max-total-bytes; the JetStream
# client linked in, hence the larger idle RSS), load average 0.4-1.0: every
# reply and count the same as BEFORE; broker VmHWM in MiB, BEFORE / AFTER,
# and AFTER less its idle RSS over the budget:
#
#   attack (budget)        idle        peak          (peak - idle) / budget
#   1   LISTs (4 MiB)      9.5 / 13.0  20.2 / 24.7   2.9
#   2   replies (4 MiB)    9.5 / 12.9  31.3 / 35.1   5.6 (17 unanswered 1 MiB WRITEs)
#   3   UNREAD (4 MiB)     9.5 / 13.1  21.4 / 23.0   2.5
#   4a  pipes (16 MiB)     9.5 / 12.9  37.3 / 41.9   1.8
#   4d  empty (16 MiB)     9.3 / 13.1  33.3 / 37.4   1.5
#   4b  1-byte (16 MiB)    9.3 / 13.1  38.0 / 39.8   1.7
#   4c  1-byte conns       9.5 / 13.0  38.7 / 45.6   2.0
#   5b  lines (1 MiB)      -           14.9 / 19.5
#
# Output of the first run committed with it (a machine with 2 cores, shared
# with other sessions running their tests: note the load average), stdout
# only:
#
#   attack.sh: 2026-11-29 21:43 UTC; 2 cores, 24 GiB RAM; BEFORE e176790, AFTER 68b48dc; attacks took 220 s; load average 1.30 3.20 3.65 at the start, 2.75 3.12 3.54 at the end
#
#   == 1. LIST amplification: 200000 pipes, 40 LISTs never read (serve --max-chunk 1048576 --max-total-bytes 4194304 --max-pipe-bytes 2097152) ==
#                                                              BEFORE e176790                     AFTER 68b48dc
#   serve started?                                             yes                                yes
#   RSS at start                                               8.6 MiB                            9.4 MiB
#   pipes asked for (16-byte names, pipelined OPENs)           200000                             200000
#   OPEN OK                                                    200000                             3970
#   OPEN ERROR too many pipes                                  0                                  196030
#   other replies to OPEN                                      none                               none
#   making them took                                           all answered; last reply at 0.8 s  all answered; last reply at 0.5 s
#   RSS with the pipes made                                    75.3 MiB                           16.3 MiB
#   fresh client: WRITE of 1 byte to an open pipe, within 1 s  OK in 0 ms                         OK in 1 ms
#   LISTs sent, never read                                     40                                 40
#   peak RSS over 10 s with them unread                        959.5 MiB                          20.5 MiB
#   fresh client: OPEN OK within 1 s, while attacked           0/10; no answer ×10               10/10 (slowest 67 ms)
#   RSS 1 s after the attacker closed                          1018.2 MiB                         20.5 MiB
#   RSS 6 s after the attacker closed                          1134.9 MiB                         20.5 MiB
#   fresh client: OPEN OK within 1 s, afterwards               2/2 (slowest 0 ms)                 2/2 (slowest 1 ms)
#   broker peak RSS (VmHWM)                                    1134.9 MiB                         20.5 MiB
#   broker stop on SIGTERM                                     exit 0 in 365 ms                   exit 0 in 69 ms
#   log lines written                                          3 (274 bytes)                      5 (615 bytes)
#   log, BEFORE (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=1 discarded_bytes=1 pipes_with_chunks=1
#   log, AFTER (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657 max_conns=4096
#          2  level=INFO msg="request failed" conn=3 cmd=OPEN pipe=attack-000003970 err="too many pipes: the broker's memory budget is full"
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=1 discarded_bytes=1 pipes_with_chunks=1
#
#   == 2. replies in flight: 400 MREADs never read, 400 WRITEs of 1 MiB (serve --max-chunk 1048576 --max-total-bytes 4194304 --max-pipe-bytes 2097152) ==
#                                                              BEFORE e176790                              AFTER 68b48dc
#   serve started?                                             yes                                         yes
#   RSS at start                                               8.4 MiB                                     9.4 MiB
#   MREAD p 1000 sent on one connection, never read            400                                         400
#   WRITEs of 1 MiB pipelined on another                       400                                         400
#   WRITE OK                                                   400                                         1
#   other replies to WRITE                                     none                                        WRITE unanswered ×17
#   writing stopped                                            all answered; last reply at 0.4 s           stopped: no reply for 2s; last reply at 0.0 s
#   peak RSS while writing                                     415.5 MiB                                   30.0 MiB
#   fresh client: OPEN OK within 1 s, while attacked           1/1 (slowest 0 ms)                          3/3 (slowest 2 ms)
#   the pipe in LIST, replies unread                           0 chunks, 0 B, 0 writers blocked            0 chunks, 0 B, 1 writers blocked
#   fresh client: WRITE of 1 byte to another pipe, within 1 s  OK in 0 ms                                  OK in 0 ms
#   the pipe in LIST, 1 s after writer and reader closed       400 chunks, 419430400 B, 0 writers blocked  1 chunks, 1048576 B, 0 writers blocked
#   RSS then                                                   415.6 MiB                                   30.2 MiB
#   broker peak RSS (VmHWM)                                    415.6 MiB                                   30.2 MiB
#   broker stop on SIGTERM                                     exit 0 in 59 ms                             exit 0 in 57 ms
#   log lines written                                          3 (284 bytes)                               3 (295 bytes)
#   log, BEFORE (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=401 discarded_bytes=419430401 pipes_with_chunks=2
#   log, AFTER (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657 max_conns=4096
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=2 discarded_bytes=1048577 pipes_with_chunks=2
#
#   == 3. UNREAD of what was never read: 500 × 1 MiB (serve --max-chunk 1048576 --max-total-bytes 4194304 --max-pipe-bytes 2097152) ==
#                                                              BEFORE e176790                              AFTER 68b48dc
#   serve started?                                             yes                                         yes
#   RSS at start                                               8.4 MiB                                     9.3 MiB
#   UNREADs of 1 MiB pipelined, the pipe never read            500                                         500
#   UNREAD OK                                                  500                                         0
#   UNREAD ERROR bad request                                   0                                           500
#   other replies to UNREAD                                    none                                        none
#   unreading stopped                                          all answered; last reply at 0.7 s           all answered; last reply at 0.5 s
#   peak RSS while unreading                                   514.0 MiB                                   16.5 MiB
#   fresh client: OPEN OK within 1 s, while attacked           1/1 (slowest 0 ms)                          1/1 (slowest 0 ms)
#   the pipe in LIST                                           500 chunks, 524288000 B, 0 writers blocked  0 chunks, 0 B, 0 writers blocked
#   fresh client: WRITE of 1 byte to another pipe, within 1 s  no: no answer                               OK in 0 ms
#   RSS 1 s after the attacker closed                          514.0 MiB                                   14.9 MiB
#   broker peak RSS (VmHWM)                                    514.0 MiB                                   24.3 MiB
#   broker stop on SIGTERM                                     exit 0 in 62 ms                             exit 0 in 58 ms
#   log lines written                                          3 (284 bytes)                               5 (700 bytes)
#   log, BEFORE (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=500 discarded_bytes=524288000 pipes_with_chunks=1
#   log, AFTER (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657 max_conns=4096
#          2  level=INFO msg="request failed" conn=5 cmd=UNREAD pipe=attack-unread err="bad request: UNREAD of 1 chunks (1048576 bytes); this connection took 0 (0 b
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=1 discarded_bytes=1 pipes_with_chunks=1
#
#   == 4a. overhead: 300000 pipes, 1024-byte names, 1 byte each (serve --max-chunk 1048576 --max-total-bytes 16777216 --max-pipe-bytes 16777216) ==
#                                                              BEFORE e176790                     AFTER 68b48dc
#   serve started?                                             yes                                yes
#   RSS at start                                               8.3 MiB                            9.3 MiB
#   pipes asked for (1024-byte names, one 1-byte chunk each)   300000                             300000
#   OPEN OK                                                    300000                             4875
#   OPEN ERROR too many pipes                                  0                                  295125
#   WRITE OK (chunks queued)                                   300000                             4875
#   other replies                                              none                               WRITE ERROR no such pipe ×295125
#   pipelining stopped                                         all answered; last reply at 4.7 s  all answered; last reply at 7.3 s
#   fresh client: OPEN OK within 1 s, while attacked           5/5 (slowest 4 ms)                 8/8 (slowest 13 ms)
#   fresh client: WRITE of 1 byte to an open pipe, within 1 s  OK in 0 ms                         OK in 0 ms
#   peak RSS                                                   1905.2 MiB                         37.2 MiB
#   peak RSS / budget                                          119.1                              2.3
#   RSS per pipe made                                          6630 B                             6005 B
#   broker peak RSS (VmHWM)                                    1905.3 MiB                         37.0 MiB
#   broker stop on SIGTERM                                     exit 0 in 164 ms                   exit 0 in 58 ms
#   log lines written                                          3 (289 bytes)                      12 (1822 bytes)
#   log, BEFORE (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=300001 discarded_bytes=300001 pipes_with_chunks=300001
#   log, AFTER (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657 max_conns=4096
#          9  level=INFO msg="request failed" conn=3 cmd=OPEN pipe=attack-000004875nnnnnnnnnnnnnnnn... err="too many pipes: the broker's memory budget is full"
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=4876 discarded_bytes=4876 pipes_with_chunks=4876
#
#   == 4d. overhead: 300000 empty pipes, 1024-byte names (serve --max-chunk 1048576 --max-total-bytes 16777216 --max-pipe-bytes 16777216) ==
#                                                              BEFORE e176790                     AFTER 68b48dc
#   serve started?                                             yes                                yes
#   RSS at start                                               8.5 MiB                            9.5 MiB
#   pipes asked for (1024-byte names, OPEN only)               300000                             300000
#   OPEN OK                                                    300000                             5460
#   OPEN ERROR too many pipes                                  0                                  294540
#   other replies                                              none                               none
#   pipelining stopped                                         all answered; last reply at 1.7 s  all answered; last reply at 2.7 s
#   fresh client: OPEN OK within 1 s, while attacked           2/2 (slowest 4 ms)                 3/3 (slowest 9 ms)
#   fresh client: WRITE of 1 byte to an open pipe, within 1 s  OK in 0 ms                         OK in 0 ms
#   peak RSS                                                   504.3 MiB                          32.8 MiB
#   peak RSS / budget                                          31.5                               2.0
#   RSS per pipe made                                          1733 B                             4481 B
#   broker peak RSS (VmHWM)                                    504.3 MiB                          32.7 MiB
#   broker stop on SIGTERM                                     exit 0 in 57 ms                    exit 0 in 58 ms
#   log lines written                                          3 (274 bytes)                      7 (1027 bytes)
#   log, BEFORE (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=1 discarded_bytes=1 pipes_with_chunks=1
#   log, AFTER (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657 max_conns=4096
#          4  level=INFO msg="request failed" conn=3 cmd=OPEN pipe=attack-000005460nnnnnnnnnnnnnnnn... err="too many pipes: the broker's memory budget is full"
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=1 discarded_bytes=1 pipes_with_chunks=1
#
#   == 4b. overhead: one pipe of 1-byte chunks, one connection (serve --max-chunk 1048576 --max-total-bytes 16777216 --max-pipe-bytes 16777216) ==
#                                                     BEFORE e176790                                 AFTER 68b48dc
#   serve started?                                    yes                                            yes
#   RSS at start                                      8.4 MiB                                        9.4 MiB
#   WRITE OK (1-byte chunks, pipelined)               671088                                         342342
#   other replies                                     WRITE unanswered ×8192                        WRITE unanswered ×8192
#   writing stopped                                   stopped: no reply for 2s; last reply at 1.1 s  stopped: no reply for 2s; last reply at 1.0 s
#   fresh client: OPEN OK within 1 s, while attacked  4/4 (slowest 1 ms)                             4/4 (slowest 18 ms)
#   the pipe in LIST                                  671088 chunks, 671088 B, 1 writers blocked     342342 chunks, 342342 B, 1 writers blocked
#   peak RSS                                          66.1 MiB                                       39.4 MiB
#   peak RSS / budget                                 4.1                                            2.5
#   RSS per chunk queued                              90 B                                           92 B
#   broker peak RSS (VmHWM)                           66.1 MiB                                       39.4 MiB
#   broker stop on SIGTERM                            exit 0 in 60 ms                                exit 0 in 68 ms
#   log lines written                                 3 (284 bytes)                                  3 (299 bytes)
#   log, BEFORE (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=671088 discarded_bytes=671088 pipes_with_chunks=1
#   log, AFTER (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657 max_conns=4096
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=342342 discarded_bytes=342342 pipes_with_chunks=1
#
#   == 4c. overhead: one pipe of 1-byte chunks, a connection each (serve --max-chunk 1048576 --max-total-bytes 16777216 --max-pipe-bytes 16777216) ==
#                                                           BEFORE e176790                              AFTER 68b48dc
#   serve started?                                          yes                                         yes
#   RSS at start                                            8.4 MiB                                     9.3 MiB
#   WRITE OK (1-byte chunks, a connection each)             345508                                      45461
#   writing stopped                                         time limit 60s                              a write got no answer within 5 s
#   fresh client: OPEN OK within 1 s, while attacked        60/60 (slowest 13 ms)                       17/17 (slowest 13 ms)
#   the pipe in LIST                                        345508 chunks, 345508 B, 0 writers blocked  45461 chunks, 45461 B, 0 writers blocked
#   then a WRITE of 1 byte to it, within 1 s (is it full?)  OK in 0 ms                                  no: no answer
#   peak RSS                                                1972.2 MiB                                  38.1 MiB
#   peak RSS / budget                                       123.3                                       2.4
#   RSS per chunk queued                                    5960 B                                      668 B
#   broker peak RSS (VmHWM)                                 1972.2 MiB                                  38.1 MiB
#   broker stop on SIGTERM                                  exit 0 in 114 ms                            exit 0 in 57 ms
#   log lines written                                       3 (284 bytes)                               3 (297 bytes)
#   log, BEFORE (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=345509 discarded_bytes=345509 pipes_with_chunks=1
#   log, AFTER (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657 max_conns=4096
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=45461 discarded_bytes=45461 pipes_with_chunks=1
#
#   == 5. limits that can never be met (serve --max-chunk 1048576 --max-pipe-bytes 1048600 --max-total-bytes 1048600) ==
#                                                            BEFORE e176790                                    AFTER 68b48dc
#   serve started?                                           yes                                               no: zpipes: serve: broker config: pipe limit 1048600 cannot hold one chunk of the chunk limit 1048576, which counts 1048624 bytes with its overhead
#   cat -w alone of 8,192 lines of 120 B: finished in 10 s?  no: timed out, ignored SIGTERM, SIGKILLed at 12.01 s  -
#   fresh client within 1 s, 0.5 s into cat -w               1/1 (zpipes ls, 9 ms)                             -
#   the pipe in LIST after cat -w                            0 chunks, 0 B, 0 writers blocked                  -
#   lines read back then (cat -r -n 8192, 5 s timeout)       0 (exit 124)                                      -
#   cat -w, cat -r -n 8192 reading: finished in 10 s?        no: timed out, exited on SIGTERM at 10.01 s       -
#   lines cat -r got (10 s timeout)                          0 (exit 124)                                      -
#   broker peak RSS (VmHWM)                                  15.2 MiB                                          -
#   broker stop on SIGTERM                                   exit 0 in 58 ms                                   -
#   log lines written                                        3 (274 bytes)                                     -
#   log, BEFORE (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=0 discarded_bytes=0 pipes_with_chunks=0
#   log, AFTER (count, first line of each message):
#          1  zpipes: serve: broker config: pipe limit 1048600 cannot hold one chunk of the chunk limit 1048576, which counts 1048624 bytes with its overhead
#
#   == 5b. limits that can never be met, a smaller chunk limit (serve --max-chunk 1000000 --max-pipe-bytes 1048600 --max-total-bytes 1048600) ==
#                                                            BEFORE e176790                                    AFTER 68b48dc
#   serve started?                                           yes                                               yes
#   cat -w alone of 8,192 lines of 120 B: finished in 10 s?  no: timed out, ignored SIGTERM, SIGKILLed at 12.01 s  no: timed out, exited on SIGTERM at 10.01 s
#   fresh client within 1 s, 0.5 s into cat -w               1/1 (zpipes ls, 16 ms)                            1/1 (zpipes ls, 14 ms)
#   the pipe in LIST after cat -w                            0 chunks, 0 B, 0 writers blocked                  4992 chunks, 599040 B, 0 writers blocked
#   lines read back then (cat -r -n 8192, 5 s timeout)       0 (exit 124)                                      4992, in order (exit 124)
#   cat -w, cat -r -n 8192 reading: finished in 10 s?        no: timed out, ignored SIGTERM, SIGKILLed at 12.01 s  yes, in 0.02 s
#   lines cat -r got (10 s timeout)                          0 (exit 124)                                      8192, in order (exit 0)
#   broker peak RSS (VmHWM)                                  16.7 MiB                                          15.3 MiB
#   broker stop on SIGTERM                                   exit 0 in 56 ms                                   exit 0 in 60 ms
#   log lines written                                        3 (274 bytes)                                     3 (289 bytes)
#   log, BEFORE (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=0 discarded_bytes=0 pipes_with_chunks=0
#   log, AFTER (count, first line of each message):
#          1  level=INFO msg=listening endpoint=ipc://@attack-attack.2lLQW2-812428657 max_conns=4096
#          1  level=INFO msg=stopping
#          1  level=INFO msg="shutting down" discarded_chunks=0 discarded_bytes=0 pipes_with_chunks=0
#
source "$(dirname "$0")/lib.sh"
ZP_PREFIX=${ZP_PREFIX:-attack}
# The zpipes of each side is built below, so zp_init builds none.
ZPIPES_BIN=unset zp_init
trap attack_cleanup EXIT

BEFORE_REV=${BEFORE_REV:-e176790}
AFTER_REV=${AFTER_REV:-HEAD}
ONLY=${ONLY:-1 2 3 4a 4d 4b 4c 5 5b}
PIPES=${PIPES:-200000}
NAME_PIPES=${NAME_PIPES:-300000}
((PIPES <= 1000000 && NAME_PIPES <= 1000000)) || { echo "at most 1000000 pipes" >&2; exit 2; }

# attack_cleanup (the EXIT trap) removes the worktrees, if a failure left
# them, then does what lib.sh's cleanup does.
attack_cleanup() {
	local rc=$? side
	for side in before after; do
		[[ -d $ZP_WORK/$side ]] && git -C "$ZP_ROOT" worktree remove --force "$ZP_WORK/$side" 2>/dev/null
	done
	(exit "$rc")
	zp_cleanup
}

declare -A REV
for side in before after; do
	rev=$BEFORE_REV
	[[ $side == after ]] && rev=$AFTER_REV
	REV[$side]=$(git -C "$ZP_ROOT" rev-parse --short "$rev")
	git -C "$ZP_ROOT" worktree add --detach --quiet "$ZP_WORK/$side" "$rev"
	(cd "$ZP_WORK/$side" && go build -o "$ZP_WORK/zpipes-$side" .)
done
cp -r "$ZP_ROOT/scripts/attack" "$ZP_WORK/after/scripts/"
(cd "$ZP_WORK/after" && go build -o "$ZP_WORK/attack" ./scripts/attack)
for side in before after; do git -C "$ZP_ROOT" worktree remove --force "$ZP_WORK/$side"; done
ATTACK=$ZP_WORK/attack

ms() { echo $(($(date +%s%N) / 1000000)); }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
row() { printf '%s\t%s\n' "$1" "$2"; }

# stop_broker: SIGTERM, then SIGKILL after 15 s; prints a row.
stop_broker() {
	local t0 rc
	t0=$(ms)
	kill -TERM "$ZP_BROKER"
	while kill -0 "$ZP_BROKER" 2>/dev/null && (($(ms) - t0 < 15000)); do sleep 0.05; done
	kill -KILL "$ZP_BROKER" 2>/dev/null && echo "(SIGKILLed after 15 s)" >&2
	wait "$ZP_BROKER" && rc=0 || rc=$?
	row "broker stop on SIGTERM" "exit $rc in $(($(ms) - t0)) ms"
}

# fresh: `zpipes ls` once, with 1 s to get its answer.
fresh() {
	local t0 rc
	t0=$(ms)
	timeout 1 "$ZP" --timeout 1s ls >/dev/null 2>&1 && rc=0 || rc=$?
	if ((rc == 0)); then echo "1/1 (zpipes ls, $(($(ms) - t0)) ms)"; else echo "0/1 (zpipes ls: exit $rc)"; fi
}

# lines: attack 5, with the side's own CLI: cat -w alone, as the issue
# did (8,192 lines of 120 B are more than the 1048600 bytes the broker may
# hold, with or without the 24 B it counts per chunk: no broker can take
# them all with nobody reading), then read back what it queued; then on a
# second pipe cat -w while cat -r reads, both within 10 s.
lines() {
	local t0 rc got probe rpid
	awk 'BEGIN { for (i = 1; i <= 8192; i++) printf "%08d%0112d\n", i, 0 }' >"$ZP_WORK/lines.in"
	t0=$(ms)
	timeout -k 2 10 "$ZP" cat -w attack-lines <"$ZP_WORK/lines.in" 2>"$ZP_WORK/lines.err" &
	local pid=$!
	sleep 0.5
	probe=$(fresh)
	wait "$pid" && rc=0 || rc=$?
	row "cat -w alone of 8,192 lines of 120 B: finished in 10 s?" "$(ended "$rc" "$t0")"
	row "fresh client within 1 s, 0.5 s into cat -w" "$probe"
	"$ATTACK" -e "$ZPIPES_ENDPOINT" pipe attack-lines | sed 's/^pipe attack-lines/the pipe in LIST after cat -w/'
	timeout -k 2 5 "$ZP" cat -r -n 8192 attack-lines >"$ZP_WORK/lines.out" 2>/dev/null && rc=0 || rc=$?
	row "lines read back then (cat -r -n 8192, 5 s timeout)" "$(compare "$rc")"

	timeout -k 2 10 "$ZP" cat -r -n 8192 attack-lines2 >"$ZP_WORK/lines.out" 2>/dev/null &
	rpid=$!
	t0=$(ms)
	timeout -k 2 10 "$ZP" cat -w attack-lines2 <"$ZP_WORK/lines.in" 2>"$ZP_WORK/lines.err" && rc=0 || rc=$?
	row "cat -w, cat -r -n 8192 reading: finished in 10 s?" "$(ended "$rc" "$t0")"
	wait "$rpid" && rc=0 || rc=$?
	row "lines cat -r got (10 s timeout)" "$(compare "$rc")"
}

# ended RC T0: how a command that started at T0 ended.
ended() {
	local t
	t=$(awk -v ms=$(($(ms) - $2)) 'BEGIN { printf "%.2f s", ms / 1000 }')
	case $1 in
	0) echo "yes, in $t" ;;
	124) echo "no: timed out, exited on SIGTERM at $t" ;;
	137) echo "no: timed out, ignored SIGTERM, SIGKILLed at $t" ;;
	*) echo "no: exit $1 at $t: $(head -c 200 "$ZP_WORK/lines.err")" ;;
	esac
}

# compare RC: lines.out against the first lines of lines.in.
compare() {
	local got
	got=$(wc -l <"$ZP_WORK/lines.out")
	if ((got == 0)); then
		echo "0 (exit $1)"
	elif head -n "$got" "$ZP_WORK/lines.in" | cmp -s - "$ZP_WORK/lines.out"; then
		echo "$got, in order (exit $1)"
	else
		echo "$got, NOT the first $got in order (exit $1)"
	fi
}

# run SIDE ID SERVE_FLAGS... -- ATTACK_ARGS...: one attack on a fresh
# broker of SIDE, its rows in $ZP_WORK/SIDE.ID.
run() {
	local side=$1 id=$2 flags=() out log
	shift 2
	while [[ $1 != -- ]]; do flags+=("$1"); shift; done
	shift
	out=$ZP_WORK/$side.$id log=$ZP_WORK/$side.$id.log
	ZP=$ZP_WORK/zpipes-$side
	echo "$side: attack $id ..." >&2
	if ! ZP_BROKER_LOG=$log zp_serve "${flags[@]}"; then
		row "serve started?" "no: $(tail -n 1 "$log")" >"$out"
		return
	fi
	row "serve started?" "yes" >"$out"
	if [[ $1 == lines ]]; then
		lines >>"$out"
	else
		timeout 300 "$ATTACK" -e "$ZPIPES_ENDPOINT" -pid "$ZP_BROKER" "$@" >>"$out" ||
			row "attack tool" "exit $?" >>"$out"
	fi
	row "broker peak RSS (VmHWM)" "$(mib "$(zp_status "$ZP_BROKER" VmHWM)")" >>"$out"
	stop_broker >>"$out"
	row "log lines written" "$(wc -l <"$log") ($(wc -c <"$log") bytes)" >>"$out"
}

# table ID TITLE: the rows of both sides, side by side, then their logs.
table() {
	local id=$1 side
	echo
	echo "== $id. $2 =="
	awk -F '\t' -v b="BEFORE ${REV[before]}" -v a="AFTER ${REV[after]}" '
		FNR == 1 { f++ }
		!seen[$1]++ { order[++n] = $1; if (length($1) > w1) w1 = length($1) }
		{ v[f, $1] = $2; if (f == 1 && length($2) > w2) w2 = length($2) }
		END {
			if (w2 > 48) w2 = 48
			if (w2 < length(b)) w2 = length(b)
			printf "%-*s  %-*s  %s\n", w1, "", w2, b, a
			for (i = 1; i <= n; i++) {
				k = order[i]
				printf "%-*s  %-*s  %s\n", w1, k, w2, ((1, k) in v) ? v[1, k] : "-", ((2, k) in v) ? v[2, k] : "-"
			}
		}' "$ZP_WORK/before.$id" "$ZP_WORK/after.$id"
	for side in before after; do
		[[ -s $ZP_WORK/$side.$id.log ]] || continue
		echo "log, ${side^^} (count, first line of each message):"
		sed -E 's/^time=[^ ]* //' "$ZP_WORK/$side.$id.log" | awk '
			{ m = $0
			  if (match($0, / msg=("[^"]*"|[^ ]*)/)) m = substr($0, RSTART + 5, RLENGTH - 5)
			  if (!(m in c)) { order[++n] = m; first[m] = $0 }
			  c[m]++ }
			END { for (i = 1; i <= n; i++) printf "  %6d  %s\n", c[order[i]], substr(first[order[i]], 1, 150) }'
	done
}

# Both sides refuse a pipe limit that cannot hold one chunk of the chunk
# limit (16 MiB by default, plus 24 B), hence --max-chunk.
small=(--max-chunk 1048576 --max-total-bytes 4194304 --max-pipe-bytes 2097152)
mid=(--max-chunk 1048576 --max-total-bytes 16777216 --max-pipe-bytes 16777216)
never=(--max-chunk 1048576 --max-pipe-bytes 1048600 --max-total-bytes 1048600)
never2=(--max-chunk 1000000 --max-pipe-bytes 1048600 --max-total-bytes 1048600)
declare -A title=(
	[1]="LIST amplification: $PIPES pipes, 40 LISTs never read (serve ${small[*]})"
	[2]="replies in flight: 400 MREADs never read, 400 WRITEs of 1 MiB (serve ${small[*]})"
	[3]="UNREAD of what was never read: 500 × 1 MiB (serve ${small[*]})"
	[4a]="overhead: $NAME_PIPES pipes, 1024-byte names, 1 byte each (serve ${mid[*]})"
	[4d]="overhead: $NAME_PIPES empty pipes, 1024-byte names (serve ${mid[*]})"
	[4b]="overhead: one pipe of 1-byte chunks, one connection (serve ${mid[*]})"
	[4c]="overhead: one pipe of 1-byte chunks, a connection each (serve ${mid[*]})"
	[5]="limits that can never be met (serve ${never[*]})"
	[5b]="limits that can never be met, a smaller chunk limit (serve ${never2[*]})"
)
T0=$SECONDS LOAD0=$(cut -d ' ' -f 1-3 /proc/loadavg)
for side in before after; do
	for id in $ONLY; do
		case $id in
		1) run "$side" 1 "${small[@]}" -- -pipes "$PIPES" list ;;
		2) run "$side" 2 "${small[@]}" -- inflight ;;
		3) run "$side" 3 "${small[@]}" -- unread ;;
		4a) run "$side" 4a "${mid[@]}" -- -budget 16777216 -pipes "$NAME_PIPES" names ;;
		4d) run "$side" 4d "${mid[@]}" -- -budget 16777216 -pipes "$NAME_PIPES" empty ;;
		4b) run "$side" 4b "${mid[@]}" -- -budget 16777216 tiny ;;
		4c) run "$side" 4c "${mid[@]}" -- -budget 16777216 short ;;
		5) run "$side" 5 "${never[@]}" -- lines ;;
		5b) run "$side" 5b "${never2[@]}" -- lines ;;
		*) echo "unknown attack $id" >&2; exit 2 ;;
		esac
	done
done
echo "attack.sh: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM;" \
	"BEFORE ${REV[before]}, AFTER ${REV[after]}; attacks took $((SECONDS - T0)) s;" \
	"load average $LOAD0 at the start, $(cut -d ' ' -f 1-3 /proc/loadavg) at the end"
for id in $ONLY; do table "$id" "${title[$id]}"; done
