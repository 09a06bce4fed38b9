#!/usr/bin/env bash
#
# cpu_ab.sh - dtxd's CPU per 2-step saga, two builds compared in one run:
# the real-CPU counterpart of callgrind.sh, for a change smaller than the
# run-to-run noise of bench/run.sh.
#
# Usage: bench/cpu_ab.sh A_DTXD B_DTXD     (two dtxd binaries)
#
# Builds nothing: it expects $BUILD/bench/loadgen and $BUILD/bench/participant.
# One participant serves every run. Each run starts the build on a fresh data
# dir under $BUILD/bench-data, sends WARM sagas, then COUNT more (loadgen
# --count, closed loop at CONCURRENCY), and reads the CPU time that the dtxd
# process and its loop thread (the main thread) used for those COUNT.
#
# The rounds alternate A,B then B,A. Runs here show a bias by position in a
# pair (the second ran ~6 % slower: the first one's log, just deleted, was
# still being written back), which this order cancels in the means; each run
# also starts after a sync. Prints every run, then per build the mean and
# median microseconds per saga, and B's mean against A's.
#
# Environment:
#   ROUNDS=8           pairs of runs (even)
#   COUNT=20000        measured sagas per run
#   WARM=3000          sagas before measuring
#   CONCURRENCY=128    sagas in flight
#   BUILD=build        where loadgen and participant are
# Needs curl (the health check) and python3 (a free port).

set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

if [ $# -ne 2 ] || [ ! -x "$1" ] || [ ! -x "$2" ]; then
    echo "usage: bench/cpu_ab.sh A_DTXD B_DTXD (two executable dtxd binaries)" >&2
    exit 2
fi
A=$1
B=$2
ROUNDS=${ROUNDS:-8}
COUNT=${COUNT:-20000}
WARM=${WARM:-3000}
CONCURRENCY=${CONCURRENCY:-128}
BUILD=${BUILD:-build}
LOADGEN=$BUILD/bench/loadgen
PARTICIPANT=$BUILD/bench/participant
require_built make "$LOADGEN" "$PARTICIPANT"
TICKS=$(getconf CLK_TCK)

PIDS=()
mkdir -p "$BUILD/bench-data"
RUN_DIR=$(mktemp -d "$BUILD/bench-data/cpu_ab.XXXXXX")
trap 'stop_pids; rm -rf "$RUN_DIR"' EXIT

PPORT=$(free_port)
"$PARTICIPANT" --port "$PPORT" >"$RUN_DIR/participant.out" 2>&1 &
PIDS+=($!)
PURL="http://127.0.0.1:$PPORT"

# run LABEL BINARY: one measured run; appends "LABEL loop_us total_us tps".
run() {
    local label=$1 bin=$2 port data pid l0 t0 l1 t1 out
    port=$(free_port)
    data="$RUN_DIR/data"
    rm -rf "$data"
    sync
    sleep 1
    "$bin" --listen "127.0.0.1:$port" --data-dir "$data" --log-level warn \
        2>"$RUN_DIR/dtxd.err" &
    pid=$!
    PIDS+=("$pid") # stopped on exit if this run fails
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break
        sleep 0.05
    done
    "$LOADGEN" --mode dtx --participant "$PURL" --dtxd "http://127.0.0.1:$port" \
        --count "$WARM" --concurrency "$CONCURRENCY" >/dev/null
    l0=$(cpu_ticks "$pid/task/$pid")
    t0=$(cpu_ticks "$pid")
    out=$("$LOADGEN" --mode dtx --participant "$PURL" --dtxd "http://127.0.0.1:$port" \
        --count "$COUNT" --concurrency "$CONCURRENCY" | grep '^RESULT ')
    l1=$(cpu_ticks "$pid/task/$pid")
    t1=$(cpu_ticks "$pid")
    kill "$pid"
    wait "$pid" || true
    if [ "$(field "$out" errors)" != 0 ]; then
        echo "cpu_ab.sh: $label: $out" >&2
        exit 1
    fi
    awk -v l="$label" -v dl=$((l1 - l0)) -v dt=$((t1 - t0)) -v hz="$TICKS" -v n="$COUNT" \
        -v tps="$(field "$out" tps)" \
        'BEGIN { printf "%s %.1f %.1f %s\n", l, dl * 1e6 / hz / n, dt * 1e6 / hz / n, tps }' |
        tee -a "$RUN_DIR/runs"
}

log "A = $A"
log "B = $B"
log "$ROUNDS rounds of $COUNT sagas (after $WARM), concurrency $CONCURRENCY"
echo "build loop_us/saga dtxd_us/saga sagas/s"
for i in $(seq 1 "$ROUNDS"); do
    if ((i % 2)); then
        run A "$A"
        run B "$B"
    else
        run B "$B"
        run A "$A"
    fi
done

echo
echo "| build | loop thread µs/saga: mean / median | dtxd µs/saga: mean / median | runs |"
echo "|---|---|---|---|"
for b in A B; do
    awk -v b="$b" 'BEGIN { n = 0 } $1 == b { l[n] = $2; t[n] = $3; sl += $2; st += $3; n++ }
        function median(v, n,   i, j, x) {
            for (i = 1; i < n; i++) { x = v[i]; for (j = i - 1; j >= 0 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
            return n % 2 ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
        }
        END { printf "| %s | %.1f / %.1f | %.1f / %.1f | %d |\n", b, sl / n, median(l, n), st / n, median(t, n), n }' \
        "$RUN_DIR/runs"
done
awk '$1 == "A" { a += $2; na++ } $1 == "B" { b += $2; nb++ }
    END { printf "\nB / A, loop thread CPU per saga (means): %.3f\n", (b / nb) / (a / na) }' "$RUN_DIR/runs"
