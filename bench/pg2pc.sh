#!/usr/bin/env bash
#
# pg2pc.sh - the 2pc-on-PostgreSQL benchmark: a transfer across two
# databases committed through dtxd, against a bare client doing the same
# prepare/commit work with no coordinator, in the same run, on this machine.
#
# Builds nothing: it expects $BUILD/dtxd and $BUILD/bench/pg2pc
# (`make bench-pg2pc` builds them and runs this). Steps:
#   1. machine facts, and a sync-write probe on the filesystem of dtxd's
#      data dir (the cluster's filesystem is printed too);
#   2. a private PostgreSQL cluster (scripts/pg.sh) in a temporary directory
#      on a free port, with max_prepared_transactions and max_connections
#      raised for THREADS; table accounts(id int primary key, balance bigint)
#      with ROWS rows in both bank_a and bank_b;
#   3. bare: pg2pc --mode bare (BEGIN, UPDATE, PREPARE TRANSACTION on A and
#      on B, then COMMIT PREPARED on A and on B; no coordinator);
#   4. dtxd on a fresh data dir under $BUILD/bench-data (real disk, not
#      tmpfs) with bank_a and bank_b as resources, then pg2pc --mode dtx
#      (create, the two prepares, two registrations, submit with wait: dtxd
#      commits);
#   5. after each mode: the balances add up and nothing is left prepared;
#   6. stop everything; print a markdown table and the dtx/bare ratio.
# Table columns: tx/s and latency of the transfers that ended in the
# measured window; CPU cores used in that window by the client, by the
# PostgreSQL cluster (every backend: the client's and dtxd's), by dtxd, and
# by everything else on the machine (other work, kernel threads); CPU ms/tx:
# client + PostgreSQL + dtxd per transfer, the figure that other work on a
# shared box disturbs least; syncs/tx: PostgreSQL's WAL syncs (pg_stat_wal)
# and dtxd's fdatasync + fsync calls (perf stat) per transfer; check: the
# balances add up and nothing is left prepared. Under the table, the mean
# time of each step of a transfer, as the client sees it.
# Everything started here is stopped on exit; the logs of the last run stay
# in $BUILD/bench-data/pg2pc-last/ (the databases and dtxd's data do not).
#
# Environment:
#   DURATION=10            measured seconds per mode
#   WARMUP=2               seconds of load before measuring
#   THREADS=16             client threads (transfers in flight), both modes
#   ROWS=100000            rows per database (split among the threads, so
#                          no two threads ever touch the same row)
#   RESOURCE_CONNECTIONS=8 dtxd's connections per resource
#   DTXD_ARGS=...          extra dtxd options (default: --log-level warn)
#   PG_VIA=tcp             tcp: everyone connects to 127.0.0.1; unix: socket
#   PG_SETTINGS=           extra postgresql.conf lines, ';'-separated
#                          (e.g. "synchronous_commit=off;commit_delay=100")
#   PG_ROOT=/tmp           where the cluster's temporary directory is made
#   MODES="bare dtx dtx1"  modes to run, in order (dtx1: the client prepares both
#                          databases, then one request creates the 2pc with both
#                          resource branches and submits it); also (diagnostic)
#                          bare_check: bare plus the existence check dtxd
#                          runs per branch before committing, sent as dtxd
#                          sends it; bare_check_prep: the same check as a
#                          prepared statement
#   PIN=0                  1: PostgreSQL on the last CPU only, this script
#                          and everything it starts (client, dtxd) on the
#                          others, as if the database had a machine of its own
#   FSYNC_COUNT=1          count dtxd's fdatasync/fsync calls in the window
#                          with `perf stat` (skipped when perf cannot)
#   PG_STATS=0             1: load pg_stat_statements and print, after each
#                          mode, PostgreSQL's time per statement (planning
#                          and execution) over the whole mode, warmup included
#   BUILD=build            build directory
#   PROBE_WRITES=500       sync writes per probe
#   PG_BIN=                the PostgreSQL server binaries (as scripts/pg.sh)
# Needs python3 (a free port), psql, perf (optional).

set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-16}
ROWS=${ROWS:-100000}
RESOURCE_CONNECTIONS=${RESOURCE_CONNECTIONS:-8}
DTXD_ARGS=${DTXD_ARGS:---log-level warn}
PG_VIA=${PG_VIA:-tcp}
PG_SETTINGS=${PG_SETTINGS:-}
PG_ROOT=${PG_ROOT:-/tmp}
MODES=${MODES:-bare dtx dtx1}
FSYNC_COUNT=${FSYNC_COUNT:-1}
PG_STATS=${PG_STATS:-0}
PIN=${PIN:-0}
PROBE_WRITES=${PROBE_WRITES:-500}
INITIAL=1000000 # every account's starting balance

BENCH=$BUILD/bench/pg2pc
DTXD=$BUILD/dtxd
DATA_ROOT=$BUILD/bench-data
RUN_DIR=$DATA_ROOT/pg2pc-run-$$

# shellcheck source=bench/lib.sh
. bench/lib.sh
require_built "make bench-pg2pc" "$BENCH" "$DTXD"


PIDS=()
PG_DIR=
cleanup() {
    stop_pids
    if [ -n "$PG_DIR" ]; then
        scripts/pg.sh stop "$PG_DIR" >/dev/null 2>&1 || true
        cp "$PG_DIR/postgres.log" "$RUN_DIR/postgres.log" 2>/dev/null || true
        rm -rf "$PG_DIR"
    fi
    rm -rf "$RUN_DIR/dtxd-data" "$RUN_DIR/probe" "$DATA_ROOT/pg2pc-last"
    mv "$RUN_DIR" "$DATA_ROOT/pg2pc-last" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$RUN_DIR"

# ---- 1. machine -----------------------------------------------------------

machine_facts
# sync writes (lib.sh): appending to a new file, then overwriting it
log "sync-write probe on $(fs_of "$RUN_DIR")"
rm -f "$RUN_DIR/probe"
SYNC_APPEND=$(sync_probe "$RUN_DIR/probe")
SYNC_OVERWRITE=$(sync_probe "$RUN_DIR/probe" conv=notrunc)
rm -f "$RUN_DIR/probe"

# ---- 2. PostgreSQL ---------------------------------------------------------

# as scripts/pg.sh picks them: PG_BIN, else the newest installed
# shellcheck disable=SC2012 # version directories, sorted by version
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
export PG_BIN
PG_VERSION=$("$PG_BIN/postgres" --version | awk '{ print $3 }')
PG_DIR=$(mktemp -d "$PG_ROOT/dtx-pg2pc.XXXXXX")
PG_PORT=$(free_port)
PG_FS=$(fs_of "$PG_DIR")
case "$PG_FS" in
tmpfs*) log "warning: the PostgreSQL cluster is on tmpfs ($PG_DIR): set PG_ROOT to a real disk" ;;
esac
log "PostgreSQL $PG_VERSION in $PG_DIR ($PG_FS), port $PG_PORT"
scripts/pg.sh start "$PG_DIR" "$PG_PORT" >"$RUN_DIR/pg.out" 2>&1 || {
    cat "$RUN_DIR/pg.out" >&2
    exit 1
}
psql_db() {
    local db=$1
    shift
    "$PG_BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U postgres -d "$db" -XAtq -v ON_ERROR_STOP=1 "$@"
}
# Settings go to the cluster's postgresql.conf, then a restart. Each thread
# may hold one prepared transaction per database; dtxd holds
# RESOURCE_CONNECTIONS connections to each.
MAX_PREPARED=$((THREADS * 2 + 16))
[ "$MAX_PREPARED" -lt 64 ] && MAX_PREPARED=64
MAX_CONN=$((THREADS * 2 + RESOURCE_CONNECTIONS * 2 + 20))
[ "$MAX_CONN" -lt 100 ] && MAX_CONN=100
{
    echo
    echo "# bench/pg2pc.sh"
    echo "max_prepared_transactions = $MAX_PREPARED"
    echo "max_connections = $MAX_CONN"
    if [ "$PG_STATS" = 1 ]; then
        echo "shared_preload_libraries = 'pg_stat_statements'"
        echo "pg_stat_statements.track_planning = on"
    fi
    IFS=';' read -ra extra <<<"$PG_SETTINGS"
    for s in "${extra[@]}"; do
        [ -n "${s// /}" ] || continue
        echo "${s%%=*} = '${s#*=}'"
    done
} >>"$PG_DIR/data/postgresql.conf"
scripts/pg.sh stop "$PG_DIR"
scripts/pg.sh start "$PG_DIR" "$PG_PORT" >>"$RUN_DIR/pg.out" 2>&1 || {
    cat "$RUN_DIR/pg.out" >&2
    exit 1
}
PG_PID=$(head -1 "$PG_DIR/data/postmaster.pid")
if [ "$PIN" = 1 ] && [ "$(nproc)" -lt 2 ]; then
    log "PIN=1 needs two CPUs: not pinned"
    PIN=0
fi
if [ "$PIN" = 1 ]; then
    LAST_CPU=$(($(nproc) - 1))
    # the postmaster and its children now; backends forked later inherit it
    for p in "$PG_PID" $(ps --ppid "$PG_PID" -o pid=); do
        taskset -a -p -c "$LAST_CPU" "$p" >/dev/null
    done
    taskset -p -c "0-$((LAST_CPU - 1))" $$ >/dev/null
    log "PostgreSQL pinned to CPU $LAST_CPU, client and dtxd to CPUs 0-$((LAST_CPU - 1))"
fi
PG_CONF=$(psql_db postgres -c "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name)
    FROM pg_settings WHERE name IN ('max_prepared_transactions', 'max_connections',
    'synchronous_commit', 'fsync', 'wal_sync_method', 'commit_delay', 'shared_buffers')")
log "PostgreSQL settings: $PG_CONF"

for db in bank_a bank_b; do
    psql_db "$db" <<EOF
DROP TABLE IF EXISTS accounts;
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO accounts SELECT g, $INITIAL FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE accounts;
EOF
done
psql_db postgres -c "CHECKPOINT" >/dev/null
if [ "$PG_STATS" = 1 ]; then
    psql_db postgres -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
fi

if [ "$PG_VIA" = unix ]; then
    PG_HOST=$PG_DIR
else
    PG_HOST=127.0.0.1
fi
conninfo() { echo "host=$PG_HOST port=$PG_PORT user=postgres dbname=$1 sslmode=disable"; }

# Balances add up across both databases and nothing is prepared: "ok", or
# what is wrong.
check_consistent() {
    local a b p
    a=$(psql_db bank_a -c "SELECT sum(balance) FROM accounts")
    b=$(psql_db bank_b -c "SELECT sum(balance) FROM accounts")
    p=$(psql_db postgres -c "SELECT count(*) FROM pg_prepared_xacts")
    if [ "$((a + b))" = "$((2 * ROWS * INITIAL))" ] && [ "$p" = 0 ]; then
        echo ok
    else
        echo "INCONSISTENT: sum A $a + sum B $b (expected $((2 * ROWS * INITIAL))), $p prepared left"
    fi
}

# Statements by PostgreSQL time since the last reset: calls, microseconds
# per call (planning + execution; the client's and the network's time is
# not in it), of which planning. COMMIT/PREPARE TRANSACTION with their
# names are grouped.
pg_statements() {
    psql_db postgres -F ' | ' <<'EOF'
SELECT regexp_replace(query, '''[^'']*''', '''...''') AS statement, sum(calls) AS calls,
       round((sum(total_plan_time + total_exec_time) / sum(calls) * 1000)::numeric, 1) AS us,
       round((sum(total_plan_time) / sum(calls) * 1000)::numeric, 1) AS plan_us
FROM pg_stat_statements GROUP BY 1 HAVING sum(calls) > 0
ORDER BY sum(total_plan_time + total_exec_time) DESC LIMIT 8;
EOF
}

# ---- 3./4. the modes --------------------------------------------------------

declare -A RESULTS CHECK FSYNCS
DTXD_PID=

# Count fdatasync + fsync calls of pid over the measured window into FSYNCS[name].
count_fsyncs() {
    local name=$1 pid=$2 out
    sleep "$WARMUP"
    out=$(perf stat -x, -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync -p "$pid" \
        -- sleep "$DURATION" 2>&1 >/dev/null) || return 0
    awk -F, '$1 ~ /^[0-9]+$/ { n += $1 } END { print n + 0 }' <<<"$out" >"$RUN_DIR/$name.fsyncs"
}

run_mode() {
    local name=$1 rc=0 counter=
    shift
    if [ "$FSYNC_COUNT" = 1 ] && [ -n "$DTXD_PID" ] && command -v perf >/dev/null; then
        count_fsyncs "$name" "$DTXD_PID" &
        counter=$!
    fi
    "$BENCH" --conninfo-a "$(conninfo bank_a)" --conninfo-b "$(conninfo bank_b)" \
        --threads "$THREADS" --rows "$ROWS" --duration "$DURATION" --warmup "$WARMUP" \
        --pg-pid "$PG_PID" "$@" >"$RUN_DIR/$name.out" 2>"$RUN_DIR/$name.err" &
    local pid=$!
    PIDS+=("$pid")
    if [ "$PG_STATS" = 1 ]; then
        psql_db postgres -c "SELECT pg_stat_statements_reset()" >/dev/null
    fi
    wait "$pid" || rc=$?
    if [ -n "$counter" ]; then
        wait "$counter" 2>/dev/null || true
    fi
    sed 's/^/    /' "$RUN_DIR/$name.out" >&2
    if [ -s "$RUN_DIR/$name.err" ]; then
        head -5 "$RUN_DIR/$name.err" | sed 's/^/    stderr: /' >&2
    fi
    RESULTS[$name]=$(grep '^RESULT ' "$RUN_DIR/$name.out" || true)
    [ -z "${RESULTS[$name]}" ] && echo "pg2pc.sh: $name failed (exit $rc)" >&2
    FSYNCS[$name]=$(cat "$RUN_DIR/$name.fsyncs" 2>/dev/null || echo -)
    if [ "$PG_STATS" = 1 ]; then
        (pg_statements || true) | sed 's/^/    pg_stat_statements: /' >&2
    fi
    CHECK[$name]=$(check_consistent)
    log "$name: ${CHECK[$name]}"
}

start_dtxd() {
    DPORT=$(free_port)
    DDATA=$RUN_DIR/dtxd-data
    mkdir -p "$DDATA"
    {
        echo "# pg2pc.sh resources"
        echo "bank_a $(conninfo bank_a)"
        echo "bank_b $(conninfo bank_b)"
    } >"$RUN_DIR/resources"
    log "dtxd on 127.0.0.1:$DPORT, data in $DDATA ($(fs_of "$RUN_DIR")), \
$RESOURCE_CONNECTIONS connections per resource"
    # shellcheck disable=SC2086 # DTXD_ARGS is a list of options
    "$DTXD" --listen "127.0.0.1:$DPORT" --data-dir "$DDATA" --resources "$RUN_DIR/resources" \
        --resource-connections "$RESOURCE_CONNECTIONS" $DTXD_ARGS >"$RUN_DIR/dtxd.log" 2>&1 &
    DTXD_PID=$!
    PIDS+=("$DTXD_PID")
    for _ in $(seq 300); do
        kill -0 "$DTXD_PID" 2>/dev/null || break
        if [ "$(curl -s -o /dev/null -w '%{http_code}' -m 1 "http://127.0.0.1:$DPORT/healthz" ||
            true)" = 200 ]; then
            return 0
        fi
        sleep 0.05
    done
    tail -20 "$RUN_DIR/dtxd.log" | sed 's/^/    dtxd: /' >&2
    return 1
}

stop_dtxd() {
    [ -n "$DTXD_PID" ] || return 0
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
    DTXD_PID=
}

DTX_NOTE=
for mode in $MODES; do
    case $mode in
    bare)
        log "bare: prepare A, prepare B, commit A, commit B; no coordinator \
(${DURATION}s, $THREADS threads)"
        run_mode bare --mode bare
        ;;
    dtx)
        if start_dtxd; then
            log "dtx: create, prepare A and B, register both, submit with wait \
(${DURATION}s, $THREADS threads)"
            run_mode dtx --mode dtx --dtxd "http://127.0.0.1:$DPORT" --dtxd-pid "$DTXD_PID"
        else
            DTX_NOTE="failed: dtxd did not answer /healthz"
        fi
        stop_dtxd
        ;;
    dtx1)
        if start_dtxd; then
            log "dtx1: prepare A and B, then one request: create with both branches, submit, \
wait (${DURATION}s, $THREADS threads)"
            run_mode dtx1 --mode dtx1 --dtxd "http://127.0.0.1:$DPORT" --dtxd-pid "$DTXD_PID"
        else
            DTX_NOTE="failed: dtxd did not answer /healthz"
        fi
        stop_dtxd
        ;;
    bare_check | bare_check_prep)
        kind=query
        [ "$mode" = bare_check_prep ] && kind=prepared
        log "$mode: bare, plus dtxd's existence check per branch ($kind) before the commits"
        run_mode "$mode" --mode bare --check "$kind"
        ;;
    *)
        echo "pg2pc.sh: unknown mode $mode" >&2
        exit 1
        ;;
    esac
done

# ---- 6. report -------------------------------------------------------------

per_tx() {
    awk -v n="$1" -v t="$2" -v d="$DURATION" \
        'BEGIN { if (n == "-" || n == "" || t <= 0) print "-"; else printf "%.2f", n / (t * d) }'
}

row() {
    local name=$1 label=$2 r=${RESULTS[$1]:-}
    if [ -z "$r" ]; then
        echo "| $label | ${3:-failed} | | | | | | | | |"
        return
    fi
    local tps cpu_ms
    tps=$(field "$r" tps)
    # CPU of client + PostgreSQL + dtxd per transfer, in ms
    cpu_ms=$(awk -v a="$(field "$r" client_cpu)" -v b="$(field "$r" pg_cpu)" \
        -v c="$(field "$r" dtxd_cpu)" -v t="$tps" \
        'BEGIN { if (t > 0) printf "%.2f", (a + b + c) * 1000 / t; else print "-" }')
    printf '| %s | %s | %s | %s | %s | %s | %s / %s / %s / %s | %s | %s / %s | %s |\n' "$label" \
        "$tps" "$(field "$r" p50_ms)" "$(field "$r" p99_ms)" "$(field "$r" max_ms)" \
        "$(field "$r" errors)" "$(field "$r" client_cpu)" "$(field "$r" pg_cpu)" \
        "$(field "$r" dtxd_cpu)" "$(field "$r" other_cpu)" "$cpu_ms" \
        "$(field "$r" wal_syncs_per_tx)" "$(per_tx "${FSYNCS[$name]:--}" "$tps")" \
        "${CHECK[$name]:-}"
}

report() {
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ): ${DURATION}s after ${WARMUP}s warmup, $THREADS threads"
    echo
    echo "| mode | tx/s | p50 ms | p99 ms | max ms | errors | CPU cores: client / PostgreSQL / dtxd / other | CPU ms/tx | syncs/tx: PostgreSQL WAL / dtxd | check |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for mode in $MODES; do
        case $mode in
        bare) row bare "bare (prepare A, B; commit A, B)" ;;
        bare_check) row "$mode" "bare + dtxd's existence checks, planned each time" ;;
        bare_check_prep) row "$mode" "bare + existence checks, prepared statement" ;;
        dtx) row dtx "dtx (create, prepare A, B, register ×2, submit+wait)" "${DTX_NOTE:-failed}" ;;
        dtx1) row dtx1 "dtx1 (prepare A, B; one create+submit+wait with both branches)" "${DTX_NOTE:-failed}" ;;
        esac
    done
    echo
    local b d
    b=$(field "${RESULTS[bare]:-}" tps)
    d=$(field "${RESULTS[dtx]:-}" tps)
    if [ -n "$b" ] && [ -n "$d" ]; then
        awk -v d="$d" -v b="$b" 'BEGIN { printf "dtx / bare throughput: %.2f (target >= 0.80)\n\n", d / b }'
    fi
    d=$(field "${RESULTS[dtx1]:-}" tps)
    if [ -n "$b" ] && [ -n "$d" ]; then
        awk -v d="$d" -v b="$b" 'BEGIN { printf "dtx1 / bare throughput: %.2f (target >= 0.80)\n\n", d / b }'
    fi
    echo "Mean ms per step (counted transfers):"
    echo
    for mode in $MODES; do
        [ -f "$RUN_DIR/$mode.out" ] || continue
        echo "- $mode:$(sed -n 's/^  mean ms per step://p' "$RUN_DIR/$mode.out")"
    done
    echo
    echo "Machine: $NPROC CPUs, $CPU_MODEL, $MEM RAM, Linux $KERNEL."
    echo "PostgreSQL $PG_VERSION ($PG_CONF), cluster on $PG_FS, clients via $PG_VIA;"
    echo "dtxd data dir on $(fs_of "$RUN_DIR"), --resource-connections $RESOURCE_CONNECTIONS${DTXD_ARGS:+, $DTXD_ARGS}."
    if [ "$PIN" = 1 ]; then
        echo "PostgreSQL pinned to CPU $LAST_CPU, client and dtxd to CPUs 0-$((LAST_CPU - 1))."
    fi
    echo "4 KiB O_DSYNC writes: append $SYNC_APPEND, overwrite $SYNC_OVERWRITE."
}
report | tee "$RUN_DIR/summary.md"
