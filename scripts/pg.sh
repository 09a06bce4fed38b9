#!/usr/bin/env bash
# scripts/pg.sh - a private, throw-away PostgreSQL cluster for the tests.
#
#   scripts/pg.sh start DIR PORT   initdb a cluster in DIR/data (unless one is
#                                  there), start it and wait until it accepts
#                                  connections; create databases dtx_test,
#                                  bank_a and bank_b (unless they exist)
#   scripts/pg.sh stop DIR         stop it (fast shutdown); nothing if it is
#                                  not running
#
# The cluster listens on a unix socket in DIR and on 127.0.0.1:PORT, trusts
# every local connection, and has one superuser, postgres:
#
#   psql "host=DIR port=PORT user=postgres dbname=dtx_test"
#
# max_prepared_transactions is on (2pc branches on PostgreSQL resources need
# PREPARE TRANSACTION). Run as root, the server runs as the postgres OS user
# (PostgreSQL refuses root) and DIR is given to it, so DIR's parents must be
# searchable by postgres (/tmp is); otherwise it runs as the current user.
# The log is DIR/postgres.log. PG_BIN overrides where the server binaries
# are (default: the newest /usr/lib/postgresql/*/bin).
set -euo pipefail

die() {
    echo "pg.sh: $*" >&2
    exit 1
}

usage() {
    die "usage: pg.sh start DIR PORT | pg.sh stop DIR"
}

pg_bin() {
    if [ -n "${PG_BIN:-}" ]; then
        echo "$PG_BIN"
        return
    fi
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$d" ] || die "no PostgreSQL server found in /usr/lib/postgresql (install postgresql)"
    echo "$d"
}

# Run a command as the cluster's owner.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    local dir="$1" port="$2" bin data
    [[ "$port" =~ ^[0-9]+$ ]] || die "bad port: $port"
    bin="$(pg_bin)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    data="$dir/data"
    # The socket path must fit in sun_path (107 bytes).
    ((${#dir} + 20 < 107)) || die "directory name too long for a unix socket: $dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
    fi
    chmod 700 "$dir"

    if [ ! -f "$data/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C \
            >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            die "initdb failed"
        }
        cat >>"$data/postgresql.conf" <<EOF

# scripts/pg.sh
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_prepared_transactions = 64
EOF
    fi

    if as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        die "a server is already running in $data (pg.sh stop $dir first)"
    fi
    # The port is given at start, so a cluster can be restarted on another.
    if ! as_owner "$bin/pg_ctl" -D "$data" -l "$dir/postgres.log" -o "-p $port" -w -t 60 \
        start >/dev/null; then
        tail -n 20 "$dir/postgres.log" >&2 || true
        die "could not start PostgreSQL on port $port (is the port taken?)"
    fi
    local i
    for ((i = 0; i < 100; i++)); do
        if "$bin/pg_isready" -q -h "$dir" -p "$port" -U postgres; then
            break
        fi
        sleep 0.1
    done
    "$bin/pg_isready" -q -h "$dir" -p "$port" -U postgres || die "PostgreSQL is not ready"

    local db
    for db in dtx_test bank_a bank_b; do
        if [ -z "$("$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -XAtq \
            -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
            "$bin/createdb" -h "$dir" -p "$port" -U postgres "$db"
        fi
    done
}

stop() {
    local dir="$1" bin
    bin="$(pg_bin)"
    [ -f "$dir/data/postmaster.pid" ] || return 0
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
}

case "${1:-}" in
start)
    [ $# -eq 3 ] || usage
    start "$2" "$3"
    ;;
stop)
    [ $# -eq 2 ] || usage
    stop "$2"
    ;;
*)
    usage
    ;;
esac
