#!/usr/bin/env bash
#
# amqp.sh - the RabbitMQ benchmark: msg transactions delivered to RabbitMQ
# through dtxd, against the broker's own pipelined publisher-confirm rate
# from a bare rabbitmq-c client, in the same run, on this machine
# (DESIGN.md section 7: dtx >= 70 % of the baseline).
#
# Builds nothing: it expects $BUILD/dtxd, $BUILD/bench/loadgen and
# $BUILD/bench/amqp_confirm (`make bench-amqp` builds them and runs this).
# Steps:
#   1. machine facts and versions, and a sync-write probe on the filesystem
#      of dtxd's data dir;
#   2. a private RabbitMQ node (scripts/rabbitmq.sh) in a temporary directory
#      under RMQ_ROOT (a real disk, not tmpfs) on a free port; the durable
#      queue QUEUE is declared through the management API;
#   3. baseline: amqp_confirm publishes WARM messages, waits for their
#      confirms, then COUNT more; one connection, one confirm-mode channel,
#      at most WINDOW unconfirmed, each message persistent and mandatory to
#      the default exchange, with the same body (26 bytes) and the same
#      properties (message_id, Dtx-* headers, traceparent) dtxd gives a msg
#      delivery. Measured: COUNT / (first measured publish -> last confirm).
#      Then the queue must hold WARM + COUNT messages; it is purged;
#   4. dtxd on a fresh data dir under $BUILD/bench-data (real disk) with
#      --amqp-url; loadgen runs WARM msg transactions (warms dtxd's broker
#      connection and loadgen's HTTP connections); the queue is purged. Each
#      transaction is one `POST /v1/transactions` of a msg with one step
#      `amqp:///QUEUE` (payload {"account":"A","amount":1}) and
#      "submit": true: dtxd logs it durably, publishes the message, waits for
#      the broker's confirm, logs the delivery and the outcome ("succeeded").
#      Three modes, COUNT transactions each:
#      dtx       "wait": false: dtxd answers 201 "submitted" once the
#                transaction is durable and delivers in the background, as a
#                msg client uses it; loadgen keeps CONCURRENCY creates in
#                flight. Measured: COUNT / (loadgen's start -> the first
#                moment dtxd lists no transaction "submitted", polled every
#                10 ms once loadgen is done), i.e. until the last of them is
#                "succeeded": the delivery rate, not the accept rate.
#      dtx_batch as dtx, but BATCH transactions per request
#                (POST /v1/transactions:batch, each its own transaction,
#                answered once all are durable), BATCH_CONCURRENCY requests
#                in flight: a producer that batches, as the baseline
#                pipelines;
#      dtx_wait  "wait": true: dtxd answers only once the transaction is
#                "succeeded"; loadgen keeps WAIT_CONCURRENCY in flight.
#                Measured: COUNT / (first create sent -> last "succeeded"
#                answer in), loadgen --count's own figure.
#      In both, anything but 201 with the expected status is an error;
#   5. after each dtx mode the queue must hold at least COUNT messages (more
#      only if a delivery was retried): every message is taken off it
#      through the management API, and there must be exactly COUNT distinct
#      message_ids;
#   6. stop everything; print a markdown table, the dtx / baseline ratio
#      (the target's figure: mode dtx), and the CPU each process used.
# CPU columns, in cores, from the start of the measured client to its end
# (dtx: to the last "succeeded"): the client (amqp_confirm or loadgen: its
# own figure over its measured time), dtxd, the broker (its beam.smp), and
# everything else on the machine (other work on a shared box; the kernel's
# threads); CPU µs/msg: client + dtxd + broker CPU per message (baseline:
# over warmup and measured messages), the figure other work on a shared box
# disturbs least. Latency columns: baseline, publish to confirm of each
# message; dtx, loadgen's create (201 "submitted"); dtx_wait, the whole
# transaction.
# Everything started here is stopped on exit (also on Ctrl-C): dtxd, the
# clients, the RabbitMQ node and its epmd; the node's directory and dtxd's
# data are removed; the logs of the last run stay in
# $BUILD/bench-data/amqp-last/.
#
# Environment:
#   COUNT=50000          measured messages / transactions per mode
#   WARM=2000            messages / transactions before measuring (baseline:
#                        in its own connection; dtx: once, before its modes)
#   WINDOW=4096          baseline: unconfirmed messages at most
#   EXTRA_WINDOWS=       more baseline runs with these windows (diagnostic
#                        rows, e.g. "256 1024")
#   CONCURRENCY=256      dtx: creates in flight (loadgen, closed loop)
#   WAIT_CONCURRENCY=1000  dtx_wait: transactions in flight (dtxd serves at
#                        most 1024 connections by default)
#   BATCH=50             dtx_batch: transactions per POST /v1/transactions:batch
#                        (COUNT must be a multiple of it)
#   BATCH_CONCURRENCY=8  dtx_batch: batch requests in flight
#   MODES="baseline dtx dtx_batch dtx_wait"  modes to run, in order
#   QUEUE=dtx.bench      the durable queue every mode publishes to
#   DTXD_ARGS=...        extra dtxd options (default: --log-level warn)
#   RMQ_ROOT=/tmp        where the node's temporary directory is made
#   BUILD=build          build directory
#   PROBE_WRITES=500     sync writes per probe
# Needs curl, python3, rabbitmq-server (scripts/rabbitmq.sh).

set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
COUNT=${COUNT:-50000}
WARM=${WARM:-2000}
WINDOW=${WINDOW:-4096}
EXTRA_WINDOWS=${EXTRA_WINDOWS:-}
CONCURRENCY=${CONCURRENCY:-256}
WAIT_CONCURRENCY=${WAIT_CONCURRENCY:-1000}
MODES=${MODES:-baseline dtx dtx_batch dtx_wait}
BATCH=${BATCH:-50}
BATCH_CONCURRENCY=${BATCH_CONCURRENCY:-8}
case " $MODES " in
*" dtx_batch "*)
    if [ $((COUNT % BATCH)) -ne 0 ]; then
        echo "amqp.sh: COUNT ($COUNT) must be a multiple of BATCH ($BATCH)" >&2
        exit 1
    fi
    ;;
esac
QUEUE=${QUEUE:-dtx.bench}
DTXD_ARGS=${DTXD_ARGS:---log-level warn}
RMQ_ROOT=${RMQ_ROOT:-/tmp}
PROBE_WRITES=${PROBE_WRITES:-500}

LOADGEN=$BUILD/bench/loadgen
BASELINE=$BUILD/bench/amqp_confirm
DTXD=$BUILD/dtxd
DATA_ROOT=$BUILD/bench-data
RUN_DIR=$DATA_ROOT/amqp-run-$$
TICKS=$(getconf CLK_TCK)

# shellcheck source=bench/lib.sh
. bench/lib.sh
require_built "make bench-amqp" "$LOADGEN" "$BASELINE" "$DTXD"


PIDS=()
RMQ_DIR=
cleanup() {
    stop_pids
    if [ -n "$RMQ_DIR" ]; then
        scripts/rabbitmq.sh stop "$RMQ_DIR" >/dev/null 2>&1 || true
        cp -r "$RMQ_DIR/log" "$RUN_DIR/rabbitmq-log" 2>/dev/null || true
        rm -rf "$RMQ_DIR"
    fi
    rm -rf "$RUN_DIR/dtxd-data" "$RUN_DIR/probe" "$DATA_ROOT/amqp-last"
    mv "$RUN_DIR" "$DATA_ROOT/amqp-last" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$RUN_DIR"

# ---- 1. machine -------------------------------------------------------------

machine_facts
LIBRABBITMQ=$(pkg-config --modversion librabbitmq 2>/dev/null || echo "?")
log "$NPROC CPUs, $CPU_MODEL, $MEM, Linux $KERNEL; load average $LOAD0"

# sync writes appending to a new file (lib.sh)
rm -f "$RUN_DIR/probe"
SYNC_APPEND=$(sync_probe "$RUN_DIR/probe")
rm -f "$RUN_DIR/probe"
log "4 KiB O_DSYNC appends on $(fs_of "$RUN_DIR"): $SYNC_APPEND"

# ---- 2. RabbitMQ ------------------------------------------------------------

RMQ_DIR=$(mktemp -d "$RMQ_ROOT/dtx-amqp.XXXXXX")
RMQ_PORT=$(free_port)
RMQ_FS=$(fs_of "$RMQ_DIR")
case "$RMQ_FS" in
tmpfs*) log "warning: the broker's data is on tmpfs ($RMQ_DIR): set RMQ_ROOT to a real disk" ;;
esac
log "RabbitMQ node in $RMQ_DIR ($RMQ_FS), AMQP port $RMQ_PORT"
scripts/rabbitmq.sh start "$RMQ_DIR" "$RMQ_PORT" >"$RUN_DIR/rabbitmq.out" 2>&1 || {
    cat "$RUN_DIR/rabbitmq.out" >&2
    exit 1
}
# shellcheck disable=SC1091 # written by rabbitmq.sh
. "$RMQ_DIR/env"
AMQP_URL=$DTX_TEST_AMQP_URL
BROKER_PID=$(cat "$RMQ_DIR/rabbitmq.pid")

# The management API: mgmt METHOD PATH [JSON]; prints the answer's body.
mgmt() {
    python3 - "$DTX_TEST_AMQP_MGMT" "$@" <<'EOF'
import base64, sys, urllib.parse, urllib.request
base, method, path = sys.argv[1], sys.argv[2], sys.argv[3]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
u = urllib.parse.urlsplit(base)
req = urllib.request.Request(f"{u.scheme}://{u.hostname}:{u.port}{path}", data=body, method=method)
req.add_header("Authorization", "Basic " + base64.b64encode(
    f"{u.username}:{u.password}".encode()).decode())
req.add_header("Content-Type", "application/json")
sys.stdout.write(urllib.request.urlopen(req, timeout=120).read().decode())
EOF
}
QPATH=/api/queues/%2f/$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$QUEUE")
OVERVIEW=$(mgmt GET /api/overview)
RMQ_VERSION=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["rabbitmq_version"])' <<<"$OVERVIEW")
ERL_VERSION=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["erlang_version"])' <<<"$OVERVIEW")
mgmt PUT "$QPATH" '{"durable": true, "auto_delete": false}' >/dev/null
log "RabbitMQ $RMQ_VERSION (Erlang $ERL_VERSION), librabbitmq $LIBRABBITMQ; queue $QUEUE declared durable"

depth() { mgmt GET "$QPATH" | python3 -c 'import json, sys; print(json.load(sys.stdin).get("messages") or 0)'; }

# Wait until the management API counts at least want messages in the queue
# (its figures lag by up to the 5 s statistics interval; the queue was empty
# and seen so before the run) and a second look agrees; print the count (or
# the last one seen after 60 s).
queue_depth() {
    local want=$1 n=-1 last=-2 i
    for ((i = 0; i < 120; i++)); do
        n=$(depth)
        if [ "$n" -ge "$want" ] && [ "$n" = "$last" ]; then
            break
        fi
        last=$n
        sleep 0.5
    done
    echo "$n"
}

# Empty the queue, and wait until the management API has seen it empty (so
# that queue_depth never reads a stale count from the run before).
purge() {
    local i
    mgmt DELETE "$QPATH/contents" >/dev/null
    for ((i = 0; i < 60; i++)); do
        [ "$(depth)" = 0 ] && return 0
        sleep 0.5
    done
    log "warning: the queue does not read empty after a purge"
}

# Take every message off the queue (management API, in chunks); print
# "total distinct" of their message_ids.
drain_ids() {
    python3 - "$DTX_TEST_AMQP_MGMT" "$QPATH" <<'EOF'
import base64, json, sys, urllib.parse, urllib.request
u = urllib.parse.urlsplit(sys.argv[1])
url = f"{u.scheme}://{u.hostname}:{u.port}{sys.argv[2]}/get"
auth = "Basic " + base64.b64encode(f"{u.username}:{u.password}".encode()).decode()
total, ids = 0, set()
while True:
    body = json.dumps({"count": 5000, "ackmode": "ack_requeue_false", "encoding": "auto",
                       "truncate": 64}).encode()
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Authorization", auth)
    req.add_header("Content-Type", "application/json")
    msgs = json.load(urllib.request.urlopen(req, timeout=300))
    if not msgs:
        break
    total += len(msgs)
    ids.update(m["properties"].get("message_id") for m in msgs)
print(total, len(ids))
EOF
}

# ---- 3./4. the modes --------------------------------------------------------

declare -A RESULTS CPU CHECK SECS RATE CPUUS
DTXD_PID=

machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }

# measure_start / measure_end NAME CLIENT_CPU MESSAGES: wall time and the CPU
# of dtxd (if running), of the broker and of the whole machine in between,
# into SECS[NAME], CPU[NAME] ("client / dtxd / broker / other", in cores) and
# CPUUS[NAME] (client + dtxd + broker CPU microseconds per message).
measure_start() {
    M_B0=$(cpu_ticks "$BROKER_PID")
    M_D0=0
    [ -n "$DTXD_PID" ] && M_D0=$(cpu_ticks "$DTXD_PID")
    M_M0=$(machine_ticks)
    M_T0=$(date +%s.%N)
}
measure_end() {
    local name=$1 client=${2:-0} msgs=$3 t1 b1 d1=0 m1
    t1=$(date +%s.%N)
    b1=$(cpu_ticks "$BROKER_PID")
    [ -n "$DTXD_PID" ] && d1=$(cpu_ticks "$DTXD_PID")
    m1=$(machine_ticks)
    SECS[$name]=$(awk -v a="$M_T0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    CPU[$name]=$(awk -v s="${SECS[$name]}" -v hz="$TICKS" -v c="$client" -v d=$((d1 - M_D0)) \
        -v b=$((b1 - M_B0)) -v m=$((m1 - M_M0)) -v dtx="$DTXD_PID" 'BEGIN {
            d = d / hz / s; b = b / hz / s; m = m / hz / s; o = m - c - d - b
            printf "%.2f / %s / %.2f / %.2f", c, dtx == "" ? "–" : sprintf("%.2f", d), b,
                o < 0 ? 0 : o }')
    CPUUS[$name]=$(awk -v s="${SECS[$name]}" -v hz="$TICKS" -v c="$client" -v d=$((d1 - M_D0)) \
        -v b=$((b1 - M_B0)) -v n="$msgs" 'BEGIN { printf "%.0f", (c * s + (d + b) / hz) * 1e6 / n }')
}

# show NAME: print a client's output (indented) and keep its RESULT line.
show() {
    local name=$1
    sed 's/^/    /' "$RUN_DIR/$name.out" >&2
    if [ -s "$RUN_DIR/$name.err" ]; then
        head -5 "$RUN_DIR/$name.err" | sed 's/^/    stderr: /' >&2
    fi
    RESULTS[$name]=$(grep '^RESULT ' "$RUN_DIR/$name.out" || true)
    [ -n "${RESULTS[$name]}" ] || log "$name failed"
}

baseline() {
    local name=$1 window=$2 n pid
    log "$name: amqp_confirm, $WARM + $COUNT messages, window $window"
    measure_start
    "$BASELINE" --url "$AMQP_URL" --queue "$QUEUE" --count "$COUNT" --warmup "$WARM" \
        --window "$window" >"$RUN_DIR/$name.out" 2>"$RUN_DIR/$name.err" &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || true
    show "$name"
    # the window holds the warmup too
    measure_end "$name" "$(field "${RESULTS[$name]}" cpu)" $((WARM + COUNT))
    SECS[$name]=$(field "${RESULTS[$name]}" seconds)
    RATE[$name]=$(field "${RESULTS[$name]}" rate)
    n=$(queue_depth $((WARM + COUNT)))
    if [ "$n" = $((WARM + COUNT)) ]; then
        CHECK[$name]="queue got $n = $WARM + $COUNT"
    else
        CHECK[$name]="WRONG: queue holds $n, expected $((WARM + COUNT))"
    fi
    log "$name: ${CHECK[$name]}"
    purge
}

# After a dtx mode: the queue holds COUNT distinct message_ids (and is
# emptied doing so).
check_dtx() {
    local name=$1 n total distinct
    n=$(queue_depth "$COUNT")
    read -r total distinct < <(drain_ids)
    if [ "$distinct" = "$COUNT" ]; then
        CHECK[$name]="queue got $total, $distinct distinct message_ids"
    else
        CHECK[$name]="WRONG: queue got $total (depth seen $n), $distinct distinct message_ids, expected $COUNT"
    fi
    log "$name: ${CHECK[$name]}"
    purge
}

start_dtxd() {
    DDATA=$RUN_DIR/dtxd-data
    mkdir -p "$DDATA"
    DPORT=$(free_port)
    DTXD_URL=http://127.0.0.1:$DPORT
    log "dtxd on 127.0.0.1:$DPORT, data in $DDATA ($(fs_of "$DDATA"))"
    # the URL holds a password: through the environment, as docs/API.md advises
    # shellcheck disable=SC2086 # DTXD_ARGS is a list of options
    DTX_AMQP_URL=$AMQP_URL "$DTXD" --listen "127.0.0.1:$DPORT" --data-dir "$DDATA" $DTXD_ARGS \
        >"$RUN_DIR/dtxd.log" 2>&1 &
    DTXD_PID=$!
    PIDS+=("$DTXD_PID")
    for _ in $(seq 300); do
        kill -0 "$DTXD_PID" 2>/dev/null || break
        if [ "$(curl -s -o /dev/null -w '%{http_code}' -m 1 "$DTXD_URL/healthz" || true)" = 200 ]; then
            return 0
        fi
        sleep 0.05
    done
    tail -20 "$RUN_DIR/dtxd.log" | sed 's/^/    dtxd: /' >&2
    log "dtxd did not answer /healthz"
    exit 1
}

# wait_delivered DTXD_URL LOADGEN_PID: once loadgen has exited, poll dtxd
# every 10 ms until it lists no transaction in "submitted"; print the
# wall-clock time then and the number of polls.
wait_delivered() {
    python3 - "$1" "$2" <<'EOF'
import json, sys, time, urllib.request
url, pid = sys.argv[1] + "/v1/transactions?status=submitted&limit=1", int(sys.argv[2])
def running():
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
while running():
    time.sleep(0.01)
polls = 0
while True:
    polls += 1
    if not json.load(urllib.request.urlopen(url, timeout=30))["transactions"]:
        break
    time.sleep(0.01)
print(f"{time.time():.6f} {polls}")
EOF
}

msg_body() {
    echo "{\"type\":\"msg\",\"check\":\"http://127.0.0.1:9/unused\",\"submit\":true,\"wait\":$1,\
\"steps\":[{\"action\":\"amqp:///$QUEUE\",\"payload\":{\"account\":\"A\",\"amount\":1}}]}"
}

# dtx: loadgen creates COUNT msg transactions with "wait": false (each
# answered once durable, CONCURRENCY in flight) while dtxd delivers them; the
# clock runs from loadgen's start until dtxd lists none still "submitted".
# dtx_batch: the same, BATCH transactions per POST /v1/transactions:batch,
# BATCH_CONCURRENCY requests in flight. dtx_async NAME IN_FLIGHT [loadgen args]
dtx_async() {
    local name=$1 conc=$2 pid poller t_end polls
    shift 2
    log "$name: $COUNT msg transactions, wait false, $conc requests in flight${1:+ ($*)}; \
until every one is succeeded"
    msg_body false >"$RUN_DIR/msg-async.json"
    measure_start
    "$LOADGEN" --mode dtx --dtxd "$DTXD_URL" --body "$RUN_DIR/msg-async.json" --wait false \
        --count "$COUNT" --concurrency "$conc" "$@" >"$RUN_DIR/$name.out" 2>"$RUN_DIR/$name.err" &
    pid=$!
    PIDS+=("$pid")
    wait_delivered "$DTXD_URL" "$pid" >"$RUN_DIR/$name.done" &
    poller=$!
    PIDS+=("$poller")
    wait "$pid" || true
    wait "$poller" || true
    show "$name"
    measure_end "$name" "$(field "${RESULTS[$name]}" loadgen_cpu)" "$COUNT"
    t_end='' polls=''
    read -r t_end polls <"$RUN_DIR/$name.done" || true
    if [ -n "$t_end" ] && [ -n "${RESULTS[$name]}" ]; then
        SECS[$name]=$(awk -v a="$M_T0" -v b="$t_end" 'BEGIN { printf "%.3f", b - a }')
        RATE[$name]=$(awk -v n="$COUNT" -v s="${SECS[$name]}" 'BEGIN { printf "%.1f", n / s }')
        log "$name: all $COUNT succeeded ${SECS[$name]} s after the first create \
($polls polls after loadgen's last answer): ${RATE[$name]}/s"
    fi
    check_dtx "$name"
}

# dtx_wait: loadgen keeps WAIT_CONCURRENCY msg transactions with "wait": true
# in flight; loadgen's own rate (first create sent to last "succeeded" in).
dtx_wait() {
    local name=dtx_wait pid
    log "$name: $COUNT msg transactions, wait true, $WAIT_CONCURRENCY in flight"
    msg_body true >"$RUN_DIR/msg-wait.json"
    measure_start
    "$LOADGEN" --mode dtx --dtxd "$DTXD_URL" --body "$RUN_DIR/msg-wait.json" --count "$COUNT" \
        --concurrency "$WAIT_CONCURRENCY" >"$RUN_DIR/$name.out" 2>"$RUN_DIR/$name.err" &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || true
    show "$name"
    measure_end "$name" "$(field "${RESULTS[$name]}" loadgen_cpu)" "$COUNT"
    SECS[$name]=$(field "${RESULTS[$name]}" duration_s)
    RATE[$name]=$(field "${RESULTS[$name]}" tps)
    check_dtx "$name"
}

for mode in $MODES; do
    case $mode in
    baseline)
        baseline baseline "$WINDOW"
        for w in $EXTRA_WINDOWS; do
            baseline "baseline_w$w" "$w"
        done
        ;;
    dtx | dtx_batch | dtx_wait)
        if [ -z "$DTXD_PID" ]; then
            start_dtxd
            log "dtx warmup: $WARM msg transactions, wait true"
            msg_body true >"$RUN_DIR/msg-warm.json"
            "$LOADGEN" --mode dtx --dtxd "$DTXD_URL" --body "$RUN_DIR/msg-warm.json" \
                --count "$WARM" --concurrency "$CONCURRENCY" >"$RUN_DIR/dtx-warm.out" 2>&1 ||
                log "dtx warmup: $(grep -E '^errors' "$RUN_DIR/dtx-warm.out" || echo failed)"
            log "dtx warmup: queue got $(queue_depth "$WARM")"
            purge
        fi
        case $mode in
        dtx) dtx_async dtx "$CONCURRENCY" ;;
        dtx_batch) dtx_async dtx_batch "$BATCH_CONCURRENCY" --batch "$BATCH" ;;
        *) dtx_wait ;;
        esac
        ;;
    *)
        echo "amqp.sh: unknown mode $mode" >&2
        exit 1
        ;;
    esac
done
if [ -n "$DTXD_PID" ] && grep -qiE 'error|fatal|panic' "$RUN_DIR/dtxd.log"; then
    grep -iE 'error|fatal|panic' "$RUN_DIR/dtxd.log" | head -5 | sed 's/^/    dtxd: /' >&2
fi

# ---- 6. report --------------------------------------------------------------

row() {
    local name=$1 label=$2 r=${RESULTS[$1]:-} b=${RATE[baseline]:-} ratio=– lat
    if [ -z "$r" ] || [ -z "${RATE[$name]:-}" ]; then
        echo "| $label | failed | | | | | | | ${CHECK[$name]:-} |"
        return
    fi
    [ -n "$b" ] && ratio=$(awk -v d="${RATE[$name]}" -v b="$b" 'BEGIN { printf "%.2f", d / b }')
    case $name in
    baseline*) lat="confirm $(field "$r" confirm_p50_ms) / $(field "$r" confirm_p99_ms)" ;;
    dtx) lat="create $(field "$r" p50_ms) / $(field "$r" p99_ms)" ;;
    dtx_batch) lat="batch $(field "$r" p50_ms) / $(field "$r" p99_ms)" ;;
    *) lat="txn $(field "$r" p50_ms) / $(field "$r" p99_ms)" ;;
    esac
    printf '| %s | %s | %s | %.0f | %s | %s | %s | %s | %s |\n' "$label" "$COUNT" \
        "${SECS[$name]}" "${RATE[$name]}" "$ratio" "${CPU[$name]}" "${CPUUS[$name]}" "$lat" \
        "${CHECK[$name]:-}"
}

report() {
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ): $COUNT messages per mode after $WARM warmup"
    echo
    echo "| mode | messages | s | msgs/s | / baseline | CPU cores: client / dtxd / broker / other | CPU µs/msg | p50 / p99 ms | check |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for mode in $MODES; do
        case $mode in
        baseline)
            row baseline "baseline: rabbitmq-c, confirms, window $WINDOW"
            for w in $EXTRA_WINDOWS; do
                row "baseline_w$w" "baseline, window $w"
            done
            ;;
        dtx) row dtx "dtx: msg, wait false, $CONCURRENCY creates in flight, until all succeeded" ;;
        dtx_batch) row dtx_batch "dtx: msg in batches of $BATCH (POST /v1/transactions:batch), \
wait false, $BATCH_CONCURRENCY batches in flight, until all succeeded" ;;
        dtx_wait) row dtx_wait "dtx: msg, wait true, $WAIT_CONCURRENCY in flight" ;;
        esac
    done
    echo
    if [ -n "${RATE[baseline]:-}" ] && [ -n "${RATE[dtx]:-}" ]; then
        awk -v d="${RATE[dtx]}" -v b="${RATE[baseline]}" \
            'BEGIN { printf "dtx / baseline: %.2f (target >= 0.70)\n\n", d / b }'
    fi
    if [ -n "${RATE[baseline]:-}" ] && [ -n "${RATE[dtx_batch]:-}" ]; then
        awk -v d="${RATE[dtx_batch]}" -v b="${RATE[baseline]}" \
            'BEGIN { printf "dtx_batch / baseline: %.2f\n\n", d / b }'
    fi
    echo "Machine: $NPROC CPUs, $CPU_MODEL, $MEM RAM, Linux $KERNEL; load average at the start $LOAD0."
    echo "RabbitMQ $RMQ_VERSION, Erlang $ERL_VERSION, data on $RMQ_FS; librabbitmq $LIBRABBITMQ;"
    echo "dtxd data dir on $(fs_of "$RUN_DIR")${DTXD_ARGS:+, $DTXD_ARGS}."
    echo "4 KiB O_DSYNC appends: $SYNC_APPEND."
}
report | tee "$RUN_DIR/summary.md"
