#!/usr/bin/env bash
# scripts/test.sh - the one command that checks dtx on a fresh Debian 12
# machine (as root): install what the build and the tests need (only what is
# missing), build with the format check, run the unit tests, then the
# integration tests against the real dtxd, then both again against a build
# with AddressSanitizer and UndefinedBehaviorSanitizer; the crash-point sweep,
# the threaded parts under ThreadSanitizer, and the libFuzzer targets briefly
# (make fuzz-smoke; clang and libclang-rt-dev, its libFuzzer runtime). Exits
# non-zero if anything fails.
# Works from any directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# ---- packages ---------------------------------------------------------------
PACKAGES=(
    build-essential pkg-config clang-format clang libclang-rt-dev
    libuv1-dev libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev zlib1g-dev
    libcmocka-dev python3-pytest python3-pytest-xdist curl
    postgresql libpq-dev libsqlite3-dev sqlite3
    rabbitmq-server librabbitmq-dev python3-pika openssl socat
    librdkafka-dev kcat
)
missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    echo "== installing: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "scripts/test.sh: missing packages (${missing[*]}); run as root or install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${missing[@]}"
fi

# ---- services -----------------------------------------------------------------
# PostgreSQL: a private cluster (scripts/pg.sh) in a temporary directory, on a
# free port, stopped and removed on exit. Tests that need it read DTX_TEST_PG
# (database dtx_test) or build conninfos for bank_a / bank_b from
# DTX_TEST_PG_HOST and DTX_TEST_PG_PORT; DTX_REQUIRE_PG=1 makes them fail
# rather than skip if it is missing.
PG_DIR="$(mktemp -d /tmp/dtx-test-pg.XXXXXX)"
cleanup_pg() {
    "$ROOT/scripts/pg.sh" stop "$PG_DIR" >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
}
trap cleanup_pg EXIT
echo "== starting PostgreSQL in $PG_DIR"
PG_PORT=""
for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    if "$ROOT/scripts/pg.sh" start "$PG_DIR" "$port"; then
        PG_PORT="$port"
        break
    fi
done
[ -n "$PG_PORT" ] || {
    echo "scripts/test.sh: could not start PostgreSQL" >&2
    exit 1
}
export DTX_TEST_PG_HOST="$PG_DIR" DTX_TEST_PG_PORT="$PG_PORT"
export DTX_TEST_PG="host=$PG_DIR port=$PG_PORT user=postgres dbname=dtx_test"
export DTX_REQUIRE_PG=1

# RabbitMQ: a private node (scripts/rabbitmq.sh) in a temporary directory, on a
# free port, stopped and removed on exit. Tests read DTX_TEST_AMQP_URL (AMQP)
# and DTX_TEST_AMQP_MGMT (management API); DTX_REQUIRE_AMQP=1 makes them fail
# rather than skip if it is missing.
RMQ_DIR="$(mktemp -d /tmp/dtx-test-rmq.XXXXXX)"
cleanup_rmq() {
    "$ROOT/scripts/rabbitmq.sh" stop "$RMQ_DIR" >/dev/null 2>&1 || true
    rm -rf "$RMQ_DIR"
}
trap 'cleanup_pg; cleanup_rmq' EXIT
echo "== starting RabbitMQ in $RMQ_DIR"
RMQ_PORT=""
for _ in 1 2 3; do
    port=$((20000 + RANDOM % 40000))
    if "$ROOT/scripts/rabbitmq.sh" start "$RMQ_DIR" "$port" >/dev/null; then
        RMQ_PORT="$port"
        break
    fi
done
[ -n "$RMQ_PORT" ] || {
    echo "scripts/test.sh: could not start RabbitMQ" >&2
    exit 1
}
set -a
# shellcheck disable=SC1091
. "$RMQ_DIR/env" # DTX_TEST_AMQP_URL, DTX_TEST_AMQP_MGMT
set +a
export DTX_REQUIRE_AMQP=1
# Kafka: librdkafka's mock cluster (tests/tools/kafka_mock, built by make) and
# kcat; DTX_REQUIRE_KAFKA=1 makes the Kafka tests fail rather than skip.
export DTX_REQUIRE_KAFKA=1
# ---------------------------------------------------------------------------------

# ---- build (includes the clang-format check) ------------------------------------
echo "== make"
make -j"$(nproc)"

# ---- tests -------------------------------------------------------------------------
status=0
echo "== unit tests"
make test-unit || status=1

echo "== integration tests"
# Debian's python3 (with python3-pytest), not whatever python3 is first on PATH.
# Three pytest workers (the tests mostly wait on processes, brokers and
# timers); modules that share databases are grouped on one (xdist_group).
DTXD="$ROOT/build/dtxd" /usr/bin/python3 -m pytest -q -p no:cacheprovider -n 3 --dist loadgroup \
    tests/integration || status=1

# (hits 1 and 2 here; `make test-crash-sweep` alone runs hits 1 to 3)
echo "== crash points: every point at hits 1-2, restart, check (tests/integration/test_crash_points.py)"
DTX_CRASH_HITS=1,2 make test-crash-sweep || status=1

echo "== unit and integration tests under AddressSanitizer + UndefinedBehaviorSanitizer"
make asan || status=1

echo "== the threaded parts under ThreadSanitizer"
make tsan || status=1

echo "== fuzz targets: seed corpora and a short run each (tests/fuzz, docs/RELIABILITY.md)"
make fuzz-smoke || status=1

if ((status)); then
    echo "== FAILED" >&2
else
    echo "== all passed"
fi
exit "$status"
