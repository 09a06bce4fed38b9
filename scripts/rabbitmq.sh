#!/usr/bin/env bash
# scripts/rabbitmq.sh - a private, throw-away RabbitMQ node for the tests.
#
#   scripts/rabbitmq.sh start DIR PORT   start a node whose every file lives
#                                        in DIR, AMQP on 127.0.0.1:PORT, and
#                                        wait until it serves AMQP and its
#                                        management API
#   scripts/rabbitmq.sh stop DIR         stop it (and its epmd); nothing if
#                                        it is not running
#
# The node is dtx-test-PORT@localhost. It does not clash with a system broker:
# its own Erlang cookie (HOME=DIR), its own epmd on a free port
# (ERL_EPMD_PORT), its own distribution ports (the node's and the CLI
# tools', which by default take 35672 and up), its own config, plugins and
# data (RABBITMQ_* under DIR); /etc/rabbitmq is not read. The management
# plugin is enabled offline and listens on 127.0.0.1 on a free port. User
# guest/guest (loopback only, RabbitMQ's default).
#
# The node also listens for AMQP over TLS on another free port, with a
# certificate for "localhost" signed by a throw-away CA made at the first
# start (openssl; DIR/tls/ca.pem). It does not ask clients for certificates.
#
# After a start, DIR/env holds the addresses as shell assignments (also
# printed):
#
#   DTX_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:PORT/%2f
#   DTX_TEST_AMQP_MGMT=http://guest:guest@127.0.0.1:MGMT_PORT
#   DTX_TEST_AMQPS_URL=amqps://guest:guest@localhost:TLS_PORT/%2f
#   DTX_TEST_AMQP_CACERT=DIR/tls/ca.pem
#
# (guest may log in over TLS too: the listener is on 127.0.0.1.)
#
# Run as root, the node runs as the rabbitmq OS user and DIR is given to it
# (DIR's parents must be searchable by rabbitmq; /tmp is). A `start` of a DIR
# whose node was stopped reuses its data: queues and persistent messages
# survive a stop/start, which is what the restart tests need. Logs are in
# DIR/log.
set -euo pipefail

RMQ_SBIN="${RMQ_SBIN:-/usr/lib/rabbitmq/bin}"

die() {
    echo "rabbitmq.sh: $*" >&2
    exit 1
}

usage() {
    die "usage: rabbitmq.sh start DIR PORT | rabbitmq.sh stop DIR"
}

# A port that is free now, below the kernel's ephemeral range: the node binds
# it seconds later (after the plugins are enabled), and a port from that range
# (what binding port 0 gives) may meanwhile become the local end of some
# other process's outgoing connection (seen: dist_port_already_used).
free_port() {
    python3 - <<'PY'
import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    p = random.randrange(10000, lo - 32)  # the CLI uses p .. p + 20 too
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
else:
    raise SystemExit("no free port below %d" % lo)
PY
}

# Run a command as the node's owner, in the node's environment (DIR/node.env).
as_owner() {
    local dir="$1"
    shift
    # shellcheck disable=SC1091
    local -a envs
    mapfile -t envs <"$dir/node.env"
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u rabbitmq -- env "${envs[@]}" "$@"
    else
        env "${envs[@]}" "$@"
    fi
}

# A CA and a server certificate for localhost in DIR (kept across restarts).
make_certs() {
    local d="$1"
    [ -f "$d/server.pem" ] && return 0
    mkdir -p "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=dtx test CA" \
        -keyout "$d/ca.key" -out "$d/ca.pem" >/dev/null 2>&1 || die "openssl: cannot make the CA"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$d/server.key" -out "$d/server.csr" >/dev/null 2>&1 ||
        die "openssl: cannot make the server key"
    printf 'subjectAltName=DNS:localhost\n' >"$d/ext.cnf"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 30 -extfile "$d/ext.cnf" -out "$d/server.pem" >/dev/null 2>&1 ||
        die "openssl: cannot sign the server certificate"
    chmod 644 "$d/ca.pem" "$d/server.pem"
    chmod 600 "$d/server.key" "$d/ca.key"
}

start() {
    local dir="$1" port="$2"
    [[ "$port" =~ ^[0-9]+$ ]] || die "bad port: $port"
    [ -x "$RMQ_SBIN/rabbitmq-server" ] || die "no RabbitMQ in $RMQ_SBIN (install rabbitmq-server)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    # (not `rabbitmqctl status`: the CLI would start an epmd on the old port)
    if [ -f "$dir/rabbitmq.pid" ] && kill -0 "$(cat "$dir/rabbitmq.pid")" 2>/dev/null; then
        die "a node is already running in $dir (rabbitmq.sh stop $dir first)"
    fi
    local mgmt epmd dist ctl tls
    mgmt="$(free_port)"
    tls="$(free_port)"
    epmd="$(free_port)"
    dist="$(free_port)"
    ctl="$(free_port)"
    mkdir -p "$dir/mnesia" "$dir/log"
    make_certs "$dir/tls"
    cat >"$dir/rabbitmq.conf" <<EOF
# scripts/rabbitmq.sh
listeners.tcp.default = 127.0.0.1:$port
listeners.ssl.default = 127.0.0.1:$tls
ssl_options.cacertfile = $dir/tls/ca.pem
ssl_options.certfile = $dir/tls/server.pem
ssl_options.keyfile = $dir/tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
management.tcp.ip = 127.0.0.1
management.tcp.port = $mgmt
EOF
    : >"$dir/rabbitmq-env.conf"
    # One assignment a line: env(1) arguments for every command on this node.
    cat >"$dir/node.env" <<EOF
HOME=$dir
RABBITMQ_NODENAME=dtx-test-$port@localhost
RABBITMQ_DIST_PORT=$dist
RABBITMQ_CTL_DIST_PORT_MIN=$ctl
RABBITMQ_CTL_DIST_PORT_MAX=$((ctl + 20))
ERL_EPMD_PORT=$epmd
ERL_EPMD_ADDRESS=127.0.0.1
RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf
RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf
RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config
RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
RABBITMQ_MNESIA_BASE=$dir/mnesia
RABBITMQ_LOG_BASE=$dir/log
RABBITMQ_PID_FILE=$dir/rabbitmq.pid
RABBITMQ_LOGS=$dir/log/node.log
EOF
    rm -f "$dir/.erlang.cookie"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/.erlang.cookie"
    chmod 400 "$dir/.erlang.cookie"
    if [ "$(id -u)" -eq 0 ]; then
        chown -R rabbitmq: "$dir"
    fi
    chmod 700 "$dir"

    as_owner "$dir" "$RMQ_SBIN/rabbitmq-plugins" --offline enable rabbitmq_management \
        >"$dir/log/plugins.log" 2>&1 || {
        cat "$dir/log/plugins.log" >&2
        die "could not enable the management plugin"
    }
    as_owner "$dir" "$RMQ_SBIN/rabbitmq-server" >"$dir/log/server.out" 2>&1 &
    local server=$! i up=0
    # await_startup fails at once until the node has registered with epmd
    for ((i = 0; i < 120; i++)); do
        if as_owner "$dir" "$RMQ_SBIN/rabbitmqctl" -q --timeout 30 await_startup \
            >"$dir/log/await.log" 2>&1; then
            up=1
            break
        fi
        kill -0 "$server" 2>/dev/null || break
        sleep 0.5
    done
    if ((!up)); then
        tail -n 30 "$dir/log/server.out" >&2 || true
        cat "$dir/log/await.log" >&2 || true
        stop "$dir" >/dev/null 2>&1 || true
        die "RabbitMQ did not start on port $port (is the port taken?); logs in $dir/log"
    fi
    local ok=0
    for ((i = 0; i < 300; i++)); do
        if python3 - "$mgmt" <<'EOF' 2>/dev/null; then
import base64, sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/overview")
req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
urllib.request.urlopen(req, timeout=2).read()
EOF
            ok=1
            break
        fi
        sleep 0.1
    done
    ((ok)) || {
        stop "$dir" >/dev/null 2>&1 || true
        die "the management API did not answer on 127.0.0.1:$mgmt; logs in $dir/log"
    }
    cat >"$dir/env" <<EOF
DTX_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:$port/%2f
DTX_TEST_AMQP_MGMT=http://guest:guest@127.0.0.1:$mgmt
DTX_TEST_AMQPS_URL=amqps://guest:guest@localhost:$tls/%2f
DTX_TEST_AMQP_CACERT=$dir/tls/ca.pem
EOF
    cat "$dir/env"
}

stop() {
    local dir="$1"
    [ -f "$dir/node.env" ] || return 0
    as_owner "$dir" "$RMQ_SBIN/rabbitmqctl" -q --timeout 60 shutdown >/dev/null 2>&1 || true
    local epmd
    epmd="$(sed -n 's/^ERL_EPMD_PORT=//p' "$dir/node.env")"
    # epmd refuses -kill while a node (the CLI's own, for a moment) is
    # registered: try until it is gone
    local i
    for ((i = 0; i < 50; i++)); do
        as_owner "$dir" epmd -port "$epmd" -kill >/dev/null 2>&1 || true
        as_owner "$dir" epmd -port "$epmd" -names >/dev/null 2>&1 || return 0
        sleep 0.1
    done
    echo "rabbitmq.sh: epmd on port $epmd did not stop" >&2
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
