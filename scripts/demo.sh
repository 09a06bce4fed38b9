#!/usr/bin/env bash
#
# demo.sh - build dtx, start dtxd on its embedded log with two bank services
# (examples/bank), each on its own SQLite database, and move money between
# them in every mode: saga, tcc, 2pc and msg. Then a transfer the payer
# cannot afford (refused: both balances stay as they were), and one to an
# account that does not exist (the debit already made is undone).
#
# On a fresh Debian 12 machine as root it first installs what the build needs
# (only what is missing). Everything runs in a temporary directory; on exit
# every process it started is stopped and the directory is removed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Only what the demo runs is built (dtxd, libdtx and the bank example), so
# neither the format check (clang-format) nor the unit tests (cmocka) are
# needed here; scripts/test.sh builds and checks everything.
PKGS="build-essential pkg-config libuv1-dev libmicrohttpd-dev libcurl4-openssl-dev
      libjansson-dev zlib1g-dev libpq-dev libsqlite3-dev librabbitmq-dev librdkafka-dev curl python3"
missing=""
for p in $PKGS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "== installing:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# DTX_DEMO_BUILD: the build directory (make B=...), build/ by default.
BUILD=${DTX_DEMO_BUILD:-build}
echo "== building (make B=$BUILD)"
make -s -j"$(nproc)" B="$BUILD" "$BUILD/dtxd" "$BUILD/examples/bank/bank" \
    "$BUILD/examples/bank/transfer"

PORT=${DTX_DEMO_PORT:-7788}
PORT_A=${DTX_DEMO_BANK_A_PORT:-7791}
PORT_B=${DTX_DEMO_BANK_B_PORT:-7792}
DTX=http://127.0.0.1:$PORT
A=http://127.0.0.1:$PORT_A
B=http://127.0.0.1:$PORT_B
DIR=$(mktemp -d /tmp/dtx-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

"$BUILD/dtxd" --listen 127.0.0.1:$PORT --data-dir "$DIR/dtxd" --log-level warn 2>"$DIR/dtxd.log" &
pids+=($!)
"$BUILD"/examples/bank/bank --listen 127.0.0.1:$PORT_A --db "$DIR/bank_a.db" 2>"$DIR/bank_a.log" &
pids+=($!)
"$BUILD"/examples/bank/bank --listen 127.0.0.1:$PORT_B --db "$DIR/bank_b.db" 2>"$DIR/bank_b.log" &
pids+=($!)
for url in "$DTX/healthz" "$A/healthz" "$B/healthz"; do
    for _ in $(seq 100); do
        curl -sf "$url" >/dev/null && break
        sleep 0.1
    done
    curl -sf "$url" >/dev/null || { echo "demo: $url does not answer" >&2; exit 1; }
done

curl -sf -X POST "$A/accounts" -d '{"id": "alice", "balance": 100}' >/dev/null
curl -sf -X POST "$B/accounts" -d '{"id": "bob", "balance": 0}' >/dev/null

balance() { # bank-url account
    curl -s "$1/accounts/$2" | python3 -c 'import json,sys; a = json.load(sys.stdin); print("%d%s" % (a["balance"], " (%d frozen)" % a["frozen"] if a["frozen"] else ""))'
}
balances() {
    echo "   balances: alice@A=$(balance "$A" alice)  bob@B=$(balance "$B" bob)"
}
# Show the branch calls each bank served since the last call of this function.
seen_a=0
seen_b=0
bank_calls() {
    local n
    n=$(wc -l <"$DIR/bank_a.log")
    sed -n "$((seen_a + 1)),${n}p" "$DIR/bank_a.log" | sed -E 's/^bank [^ ]+: /     bank A: /'
    seen_a=$n
    n=$(wc -l <"$DIR/bank_b.log")
    sed -n "$((seen_b + 1)),${n}p" "$DIR/bank_b.log" | sed -E 's/^bank [^ ]+: /     bank B: /'
    seen_b=$n
}
transfer() { # mode amount to-account gid
    echo "   \$ transfer --mode $1 --amount $2 --from A:alice --to B:$3 --wait"
    local rc=0
    "$BUILD"/examples/bank/transfer --dtx "$DTX" --from "$A:alice" --to "$B:$3" --amount "$2" \
        --mode "$1" --gid "$4" --wait | sed 's/^/   /' || rc=$?
    bank_calls
    echo "   exit status $rc"
}

echo
echo "== dtxd on 127.0.0.1:$PORT; bank A on :$PORT_A and bank B on :$PORT_B, each with its own SQLite file"
bank_calls >/dev/null
balances
echo
echo "== saga: dtxd calls A /saga/debit, then B /saga/credit"
transfer saga 30 bob demo-saga
balances
echo
echo "== tcc: the client registers both branches and calls both Trys (A freezes 20),"
echo "   then submits; dtxd confirms both"
transfer tcc 20 bob demo-tcc
balances
echo
echo "== 2pc: dtxd asks both banks to prepare (A reserves 10), logs its decision, commits both"
transfer 2pc 10 bob demo-2pc
balances
echo
echo "== msg: A debits 5 and marks the message in one local transaction; dtxd delivers the credit to B"
transfer msg 5 bob demo-msg
balances
echo
echo "== refused: alice has 35 and sends 500 (2pc): A votes no at prepare, dtxd rolls both back"
transfer 2pc 500 bob demo-refused
balances
echo
echo "== saga to an account that does not exist: B refuses the credit, dtxd undoes A's debit"
transfer saga 10 nobody demo-undo
balances
echo
echo "== dtxd's view: curl -s '$DTX/v1/transactions?limit=10'"
curl -s "$DTX/v1/transactions?limit=10" | python3 -c 'import json,sys
for t in json.load(sys.stdin)["transactions"]:
    print("   %-14s %-5s %s" % (t["gid"], t["type"], t["status"]))'
echo
echo "done. To run the bank by hand see examples/bank/README.md (and README.md, docs/API.md)."
