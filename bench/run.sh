#!/usr/bin/env bash
#
# run.sh - the 2-step saga benchmark: dtxd against its no-coordinator baseline,
# in the same run, on this machine.
#
# Builds nothing: it expects $BUILD/dtxd, $BUILD/bench/loadgen and
# $BUILD/bench/participant (`make` produces them; `make bench` builds them and
# runs this). Steps:
#   1. machine facts, and a sync-write probe on the data dir's filesystem;
#   2. start the trivial participant;
#   3. baseline: loadgen calls a1 then a2 on the participant, no coordinator;
#   4. start dtxd on a fresh data dir under $BUILD/bench-data (real disk, not
#      tmpfs), wait for /healthz, then loadgen submits 2-step sagas to it;
#   5. stop everything; print a markdown table, the dtx/baseline ratio, and
#      how much CPU each process used while measured.
# If dtxd is missing or does not come up, the dtx row says so and the
# baseline still stands. Everything started here is killed on exit; the logs
# of the last run stay in $BUILD/bench-data/last/ (the dtxd data dir does not).
#
# Environment:
#   DURATION=10        measured seconds per mode
#   WARMUP=2           seconds of load before measuring
#   CONCURRENCY=128    transactions in flight
#   PARTICIPANT_THREADS=1
#   HALF_RATE=auto     after the closed-loop dtx run, run dtx open-loop at this
#                      many sagas/s (auto: half the rate just measured; 0: skip)
#                      for the latency-at-half-load figure of DESIGN.md section 7
#   DTX_NOWAIT=0       1: also run dtx mode with "wait": false
#   DTXD_ARGS=...      extra dtxd options (default: --log-level warn)
#   BUILD=build        build directory
#   PROBE_WRITES=500   sync writes per probe
# The load generator, participant and dtxd all run on this box; nothing is
# pinned to a CPU. Needs curl (the health check) and python3 (a free port).

set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-128}
PARTICIPANT_THREADS=${PARTICIPANT_THREADS:-1}
DTX_NOWAIT=${DTX_NOWAIT:-0}
HALF_RATE=${HALF_RATE:-auto}
DTXD_ARGS=${DTXD_ARGS:---log-level warn}
PROBE_WRITES=${PROBE_WRITES:-500}

LOADGEN=$BUILD/bench/loadgen
PARTICIPANT=$BUILD/bench/participant
DTXD=$BUILD/dtxd
DATA_ROOT=$BUILD/bench-data
RUN_DIR=$DATA_ROOT/run-$$
TICKS=$(getconf CLK_TCK)

# shellcheck source=bench/lib.sh
. bench/lib.sh
require_built make "$LOADGEN" "$PARTICIPANT"


PIDS=()
cleanup() {
    stop_pids
    # keep the logs of the last run for a post-mortem, not its data
    rm -rf "$RUN_DIR/dtxd-data" "$RUN_DIR/probe" "$DATA_ROOT/last"
    mv "$RUN_DIR" "$DATA_ROOT/last" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$RUN_DIR"

# cores used between two tick counts over the measured window
cores() { awk -v a="$1" -v b="$2" -v t="$TICKS" -v d="$3" 'BEGIN { printf "%.2f", (b - a) / t / d }'; }

# ---- 1. machine -----------------------------------------------------------

machine_facts
FSTYPE=$(df --output=fstype "$RUN_DIR" | tail -1 | tr -d ' ')
DEVICE=$(df --output=source "$RUN_DIR" | tail -1 | tr -d ' ')

# Sync-write probe (lib.sh): appending to a new file, then overwriting it.
log "sync-write probe on $FSTYPE ($DEVICE)"
rm -f "$RUN_DIR/probe"
SYNC_APPEND=$(sync_probe "$RUN_DIR/probe")
SYNC_OVERWRITE=$(sync_probe "$RUN_DIR/probe" conv=notrunc)
rm -f "$RUN_DIR/probe"

# ---- 2. participant --------------------------------------------------------

"$PARTICIPANT" --port 0 --threads "$PARTICIPANT_THREADS" >"$RUN_DIR/participant.out" \
    2>"$RUN_DIR/participant.err" &
PART_PID=$!
PIDS+=("$PART_PID")
PPORT=
for _ in $(seq 100); do
    PPORT=$(awk '/^PORT / { print $2 }' "$RUN_DIR/participant.out")
    [ -n "$PPORT" ] && break
    kill -0 "$PART_PID" 2>/dev/null || break
    sleep 0.05
done
if [ -z "$PPORT" ]; then
    echo "run.sh: the participant did not start:" >&2
    cat "$RUN_DIR/participant.err" >&2
    exit 1
fi
PURL=http://127.0.0.1:$PPORT
log "participant on $PURL"

# Run the load generator as mode <name>: keep its RESULT line in RESULTS, and
# the cores the participant and dtxd used meanwhile in CPU_PART / CPU_DTXD
# (over the loadgen's whole life, warmup and drain included, so a little
# under the measured window's figure; loadgen's own is for the window).
declare -A RESULTS CPU_PART CPU_DTXD
run_loadgen() {
    local name=$1
    shift
    local p0 p1 d0=0 d1=0 t0 t1 rc=0
    p0=$(cpu_ticks "$PART_PID")
    [ -n "${DTXD_PID:-}" ] && d0=$(cpu_ticks "$DTXD_PID")
    t0=$(date +%s.%N)
    # in the background, so that a signal's trap runs at once rather than
    # after the load generator is done
    "$LOADGEN" --participant "$PURL" --concurrency "$CONCURRENCY" --duration "$DURATION" \
        --warmup "$WARMUP" "$@" >"$RUN_DIR/$name.out" 2>"$RUN_DIR/$name.err" &
    local lg=$!
    PIDS+=("$lg")
    wait "$lg" || rc=$?
    t1=$(date +%s.%N)
    p1=$(cpu_ticks "$PART_PID")
    [ -n "${DTXD_PID:-}" ] && d1=$(cpu_ticks "$DTXD_PID")
    local wall
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    sed 's/^/    /' "$RUN_DIR/$name.out" >&2
    if [ -s "$RUN_DIR/$name.err" ]; then
        head -5 "$RUN_DIR/$name.err" | sed 's/^/    stderr: /' >&2
    fi
    RESULTS[$name]=$(grep '^RESULT ' "$RUN_DIR/$name.out" || true)
    CPU_PART[$name]=$(cores "$p0" "$p1" "$wall")
    CPU_DTXD[$name]=$( [ -n "${DTXD_PID:-}" ] && cores "$d0" "$d1" "$wall" || echo -)
    if [ -z "${RESULTS[$name]}" ]; then
        echo "run.sh: loadgen $name failed (exit $rc)" >&2
    fi
}

# ---- 3. baseline -----------------------------------------------------------

log "baseline: a1 then a2, no coordinator (${DURATION}s, concurrency $CONCURRENCY)"
run_loadgen baseline --mode baseline

# ---- 4. dtx ----------------------------------------------------------------

DTX_NOTE=
DTXD_PID=
if [ ! -x "$DTXD" ]; then
    DTX_NOTE="pending: $DTXD not built"
else
    DPORT=$(free_port)
    DDATA=$RUN_DIR/dtxd-data
    mkdir -p "$DDATA"
    log "dtxd on 127.0.0.1:$DPORT, data in $DDATA"
    # shellcheck disable=SC2086 # DTXD_ARGS is a list of options
    "$DTXD" --listen "127.0.0.1:$DPORT" --data-dir "$DDATA" $DTXD_ARGS \
        >"$RUN_DIR/dtxd.log" 2>&1 &
    DTXD_PID=$!
    PIDS+=("$DTXD_PID")
    up=0
    for _ in $(seq 300); do
        if ! kill -0 "$DTXD_PID" 2>/dev/null; then
            break
        fi
        code=$(curl -s -o /dev/null -w '%{http_code}' -m 1 "http://127.0.0.1:$DPORT/healthz" || true)
        if [ "$code" = 200 ]; then
            up=1
            break
        fi
        sleep 0.05
    done
    if [ "$up" = 1 ]; then
        log "dtx: 2-step sagas with wait=true"
        run_loadgen dtx --mode dtx --dtxd "http://127.0.0.1:$DPORT"
        RATE=$HALF_RATE
        if [ "$RATE" = auto ]; then
            RATE=$(field "${RESULTS[dtx]:-}" tps | awk '{ printf "%.0f", $1 / 2 }')
        fi
        if [ -n "$RATE" ] && [ "$RATE" != 0 ]; then
            log "dtx: 2-step sagas with wait=true, open loop at $RATE/s"
            run_loadgen dtx_rate --mode dtx --rate "$RATE" --dtxd "http://127.0.0.1:$DPORT"
        fi
        if [ "$DTX_NOWAIT" = 1 ]; then
            log "dtx: 2-step sagas with wait=false"
            run_loadgen dtx_nowait --mode dtx --wait false --dtxd "http://127.0.0.1:$DPORT"
        fi
    else
        DTX_NOTE="failed: dtxd did not answer /healthz (see its log below)"
        tail -20 "$RUN_DIR/dtxd.log" | sed 's/^/    dtxd: /' >&2
    fi
    kill "$DTXD_PID" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$DTXD_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -9 "$DTXD_PID" 2>/dev/null || true
    wait "$DTXD_PID" 2>/dev/null || true
    if grep -qiE 'error|fatal|panic' "$RUN_DIR/dtxd.log"; then
        grep -iE 'error|fatal|panic' "$RUN_DIR/dtxd.log" | head -5 | sed 's/^/    dtxd: /' >&2
    fi
fi

kill "$PART_PID" 2>/dev/null || true
wait "$PART_PID" 2>/dev/null || true
sed 's/^/    /' "$RUN_DIR/participant.err" >&2

# ---- 5. report -------------------------------------------------------------

row() {
    local name=$1 label=$2 r=${RESULTS[$1]:-}
    if [ -z "$r" ]; then
        echo "| $label | ${3:-failed} | | | | | |"
        return
    fi
    printf '| %s | %s | %s | %s | %s | %s | %s / %s / %s |\n' "$label" "$(field "$r" tps)" \
        "$(field "$r" p50_ms)" "$(field "$r" p99_ms)" "$(field "$r" max_ms)" \
        "$(field "$r" errors)" "$(field "$r" loadgen_cpu)" "${CPU_PART[$name]}" \
        "${CPU_DTXD[$name]}"
}

report() {
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ): ${DURATION}s after ${WARMUP}s warmup, concurrency $CONCURRENCY"
    echo
    echo "| mode | tx/s | p50 ms | p99 ms | max ms | errors | CPU cores: loadgen / participant / dtxd |"
    echo "|---|---|---|---|---|---|---|"
    row baseline "baseline (a1, a2; no coordinator)"
    if [ -n "$DTX_NOTE" ]; then
        echo "| dtx (2-step saga, wait=true) | $DTX_NOTE | | | | | |"
    else
        row dtx "dtx (2-step saga, wait=true)"
        if [ -n "${RESULTS[dtx_rate]:-}" ]; then
            row dtx_rate "dtx, open loop at $(field "${RESULTS[dtx_rate]}" rate | cut -d. -f1)/s"
        fi
        if [ "$DTX_NOWAIT" = 1 ]; then
            row dtx_nowait "dtx (2-step saga, wait=false)"
        fi
    fi
    echo
    B_TPS=$(field "${RESULTS[baseline]:-}" tps)
    D_TPS=$(field "${RESULTS[dtx]:-}" tps)
    if [ -n "$B_TPS" ] && [ -n "$D_TPS" ]; then
        awk -v d="$D_TPS" -v b="$B_TPS" 'BEGIN { printf "dtx / baseline throughput: %.2f\n\n", d / b }'
    fi
    echo "Machine: $NPROC CPUs, $CPU_MODEL, $MEM RAM, Linux $KERNEL."
    echo "Data dir: $FSTYPE on $DEVICE; 4 KiB O_DSYNC writes: append $SYNC_APPEND, overwrite $SYNC_OVERWRITE."
}
report | tee "$RUN_DIR/summary.md"
