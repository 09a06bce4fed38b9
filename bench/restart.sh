#!/usr/bin/env bash
#
# restart.sh - the restart benchmark (DESIGN.md section 7: with 1,000,000
# live transactions in the log, dtxd is back to serving in <= 2 s).
#
# Builds nothing: it expects $BUILD/dtxd and $BUILD/bench/loadgen
# (`make bench-restart` builds them and runs this). Steps:
#   1. machine facts;
#   2. dtxd on a fresh data dir under $BUILD/bench-data (a real disk); loadgen
#      creates LIVE transactions through POST /v1/transactions:batch (BATCH
#      per request, CONCURRENCY requests in flight). Each is a tcc with two
#      registered branches (confirm and cancel URLs, a payload each) and a
#      one-hour timeout: it stays live ("prepared"), as a transaction whose
#      client has not yet submitted. dtxd's resident memory is read then;
#   3. RESTARTS times: kill -9 dtxd, start it again on the same directory and
#      time it from the start of the process to the first 200 of GET /healthz
#      (dtxd listens only once the log is replayed and every unfinished
#      transaction resumed), then one create must succeed, and the log line
#      "recovered" must count every transaction created. The page cache is
#      warm (the log was just written or read); COLD=1 drops it before each
#      start (needs root), for a restart after a reboot;
#   4. print a markdown table.
# Variables: BUILD (build), LIVE (1000000), BATCH (50), CONCURRENCY (8),
# RESTARTS (5), COLD (0), DTXD_ARGS (--log-level info: the timing lines
# are info lines).
# Needs python3 (a free port) and curl.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh

BUILD=${BUILD:-build}
LIVE=${LIVE:-1000000}
BATCH=${BATCH:-50}
CONCURRENCY=${CONCURRENCY:-8}
RESTARTS=${RESTARTS:-5}
COLD=${COLD:-0}
DTXD_ARGS=${DTXD_ARGS:---log-level info}
DTXD=$BUILD/dtxd
LOADGEN=$BUILD/bench/loadgen
require_built "make bench-restart" "$DTXD" "$LOADGEN"
if ((LIVE % BATCH)); then
    echo "restart.sh: LIVE ($LIVE) must be a multiple of BATCH ($BATCH)" >&2
    exit 1
fi

PIDS=()
RUN_DIR=$(mktemp -d /tmp/dtx-restart.XXXXXX)
mkdir -p "$BUILD/bench-data"
DATA=$(mktemp -d "$BUILD/bench-data/restart.XXXXXX")
DTXD_PID=
cleanup() {
    if [ -n "$DTXD_PID" ]; then
        { kill -9 "$DTXD_PID" && wait "$DTXD_PID"; } 2>/dev/null || true
    fi
    stop_pids
    rm -rf "$RUN_DIR" "$DATA"
}
trap cleanup EXIT

machine_facts
PORT=$(free_port)
URL="http://127.0.0.1:$PORT"

# start_dtxd N: start dtxd (log in $RUN_DIR/dtxd.N.err); DTXD_PID, T_START (ns).
start_dtxd() {
    T_START=$(date +%s%N)
    # shellcheck disable=SC2086
    "$DTXD" --listen "127.0.0.1:$PORT" --data-dir "$DATA" $DTXD_ARGS 2>"$RUN_DIR/dtxd.$1.err" &
    DTXD_PID=$!
}

# serving N: wait (60 s at most) for GET /healthz to answer 200; SERVING_MS.
serving() {
    local end=$((SECONDS + 60))
    until curl -sf -o /dev/null "$URL/healthz"; do
        if ! kill -0 "$DTXD_PID" 2>/dev/null || ((SECONDS > end)); then
            echo "restart.sh: dtxd did not come up:" >&2
            tail -5 "$RUN_DIR/dtxd.$1.err" >&2
            exit 1
        fi
        sleep 0.005
    done
    SERVING_MS=$((($(date +%s%N) - T_START) / 1000000))
}

rss_mb() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

cat >"$RUN_DIR/tcc.json" <<'EOF'
{"type":"tcc","timeout_ms":3600000,"branches":[{"branch":"debit","confirm":"http://127.0.0.1:9/debit-confirm","cancel":"http://127.0.0.1:9/debit-cancel","payload":{"account":"A","amount":30}},{"branch":"credit","confirm":"http://127.0.0.1:9/credit-confirm","cancel":"http://127.0.0.1:9/credit-cancel","payload":{"account":"B","amount":30}}]}
EOF

log "dtxd on $DATA ($(fs_of "$DATA")); creating $LIVE live tcc transactions"
start_dtxd 0
serving 0
t0=$(date +%s.%N)
"$LOADGEN" --mode dtx --dtxd "$URL" --body "$RUN_DIR/tcc.json" --batch "$BATCH" --wait false \
    --count "$LIVE" --concurrency "$CONCURRENCY" >"$RUN_DIR/fill.out"
FILL_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
FILL_RSS=$(rss_mb "$DTXD_PID")
LOG_MB=$(du -sm "$DATA" | cut -f1)
log "created in $FILL_S s; dtxd resident ${FILL_RSS} MB; log ${LOG_MB} MB"

ROWS=()
EXPECT=$LIVE
for i in $(seq 1 "$RESTARTS"); do
    { kill -9 "$DTXD_PID" && wait "$DTXD_PID"; } 2>/dev/null || true
    if [ "$COLD" = 1 ]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
    fi
    start_dtxd "$i"
    serving "$i"
    err="$RUN_DIR/dtxd.$i.err"
    got=$(sed -n 's/.*msg="recovered" transactions=\([0-9]*\).*/\1/p' "$err")
    replay=$(sed -n 's/.*msg="log replayed".* ms=\([0-9]*\).*/\1/p' "$err")
    readlog=$(sed -n 's/.*msg="log recovered".* ms=\([0-9]*\).*/\1/p' "$err")
    if [ "$got" != "$EXPECT" ]; then
        echo "restart.sh: restart $i recovered ${got:-?} transactions, expected $EXPECT" >&2
        exit 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$RUN_DIR/tcc.json" \
        "$URL/v1/transactions")
    if [ "$code" != 201 ]; then
        echo "restart.sh: a create after restart $i answered $code" >&2
        exit 1
    fi
    EXPECT=$((EXPECT + 1))
    ROWS+=("| $i | $SERVING_MS | $readlog | $replay | $(rss_mb "$DTXD_PID") | $got |")
    log "restart $i: serving after $SERVING_MS ms (log read $readlog ms, replayed $replay ms)"
done

echo
echo "### $(date -u +%Y-%m-%dT%H:%MZ): restart with $LIVE live transactions"
echo
echo "| restart | to serving ms | reading the log ms | log replayed ms | resident MB | transactions |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "Target: serving within 2,000 ms. Page cache: $([ "$COLD" = 1 ] && echo "dropped before each start" || echo "warm")."
echo "Filled in $FILL_S s ($(field "$(grep '^RESULT ' "$RUN_DIR/fill.out")" tps) transactions/s); resident after filling: $FILL_RSS MB; log: $LOG_MB MB."
echo "Machine: $NPROC CPUs, $CPU_MODEL, $MEM RAM, Linux $KERNEL; load average at the start $LOAD0."
echo "dtxd data dir on $(fs_of "$DATA"), $DTXD_ARGS."
