#!/usr/bin/env bash
#
# callgrind.sh - instructions per saga in dtxd, the stable yardstick.
#
# Throughput on the shared 2-core machine moves by +-20% from run to run;
# the instructions dtxd executes per saga do not (+-0.5%). This runs dtxd under
# valgrind's callgrind, warms it up with WARM sagas, zeroes the counters,
# runs COUNT sagas (loadgen --count, closed loop at CONCURRENCY), dumps, and
# prints the instructions per saga: all of them, and without memset.
#
# Why without memset: valgrind counts a `rep stosb` (glibc's memset for large
# sizes) once per byte, so memset weighs about 30 times what it costs on the
# CPU. libmicrohttpd zeroes its connection pool on every request, so the
# total overstates that part; compare both figures.
#
# Needs valgrind. Builds nothing: it expects $BUILD/dtxd, $BUILD/bench/loadgen
# and $BUILD/bench/participant. The profile stays in $BUILD/callgrind/ for
# callgrind_annotate (e.g. --inclusive=yes --tree=calling). Kernel time is not
# counted: a syscall is one instruction here.
#
# Environment:
#   COUNT=10000       measured sagas
#   WARM=3000         sagas before the counters are zeroed
#   CONCURRENCY=128   sagas in flight
#   BUILD=build       build directory

set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
COUNT=${COUNT:-10000}
WARM=${WARM:-3000}
CONCURRENCY=${CONCURRENCY:-128}
OUT=$BUILD/callgrind

# shellcheck source=bench/lib.sh
. bench/lib.sh
require_built make "$BUILD/dtxd" "$BUILD/bench/loadgen" "$BUILD/bench/participant"
command -v valgrind >/dev/null || {
    echo "callgrind.sh: valgrind not found (apt-get install valgrind)" >&2
    exit 1
}


PIDS=()
cleanup() {
    stop_pids
    rm -rf "$OUT/data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$OUT"
mkdir -p "$OUT/data"

"$BUILD/bench/participant" --port 0 >"$OUT/participant.out" 2>"$OUT/participant.err" &
PIDS+=("$!")
PPORT=
for _ in $(seq 100); do
    PPORT=$(awk '/^PORT / { print $2 }' "$OUT/participant.out")
    [ -n "$PPORT" ] && break
    sleep 0.05
done
[ -n "$PPORT" ] || { echo "callgrind.sh: the participant did not start" >&2; exit 1; }

DPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p" --dump-instr=no \
    "$BUILD/dtxd" --listen "127.0.0.1:$DPORT" --data-dir "$OUT/data" --log-level warn \
    >"$OUT/dtxd.log" 2>&1 &
VPID=$!
PIDS+=("$VPID")
up=0
for _ in $(seq 300); do
    if curl -s -o /dev/null -m 1 "http://127.0.0.1:$DPORT/healthz"; then
        up=1
        break
    fi
    sleep 0.1
done
[ "$up" = 1 ] || { echo "callgrind.sh: dtxd did not come up (see $OUT/dtxd.log)" >&2; exit 1; }

loadgen() {
    "$BUILD/bench/loadgen" --mode dtx --participant "http://127.0.0.1:$PPORT" \
        --dtxd "http://127.0.0.1:$DPORT" --concurrency "$CONCURRENCY" --count "$1"
}
loadgen "$WARM" >"$OUT/warm.out"
callgrind_control -z "$VPID" >/dev/null 2>&1
loadgen "$COUNT" >"$OUT/loadgen.out"
callgrind_control -d "$VPID" >/dev/null 2>&1
grep '^RESULT ' "$OUT/loadgen.out" | tr ' ' '\n' | grep -E '^(done|errors)=' | tr '\n' ' '
echo

# the dump after the zeroing is part 1
PROF=$(ls "$OUT"/callgrind.out.*.1)
TOTAL=$(awk '/^summary:/ { print $2 }' "$PROF")
MEMSET=$(callgrind_annotate --auto=no --threshold=100 --inclusive=no "$PROF" 2>/dev/null |
    awk '/memset/ { gsub(",", "", $1); s += $1 } END { print s + 0 }')
awk -v t="$TOTAL" -v m="$MEMSET" -v n="$COUNT" 'BEGIN {
    printf "instructions per saga: %.0f (without memset: %.0f; memset %.0f)\n", t / n, (t - m) / n, m / n
}'
echo "profile: $PROF"
