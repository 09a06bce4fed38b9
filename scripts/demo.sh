#!/usr/bin/env bash
#
# demo.sh - build dtxd, start it on its embedded log with two account
# services, and run real sagas through it: a transfer that succeeds, and one
# that the second service refuses, so dtxd compensates the first step.
#
# On a fresh Debian 12 machine as root it first installs what the build needs
# (only what is missing). Everything it starts is stopped on exit; the log
# stays in build/demo-data so you can restart dtxd on it and look again.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS="build-essential pkg-config libuv1-dev libmicrohttpd-dev
      libcurl4-openssl-dev libjansson-dev zlib1g-dev curl python3"
missing=""
for p in $PKGS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "== installing:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

echo "== building"
make -s -j"$(nproc)" build/dtxd

PORT=${DTX_DEMO_PORT:-7788}
DATA=build/demo-data
rm -rf "$DATA"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

python3 examples/demo/account_service.py alice 7791 100 &
pids+=($!)
python3 examples/demo/account_service.py bob 7792 0 50 &
pids+=($!)
./build/dtxd --listen 127.0.0.1:$PORT --data-dir "$DATA" --log-level warn &
pids+=($!)
for url in "http://127.0.0.1:$PORT/healthz" http://127.0.0.1:7791/balance \
           http://127.0.0.1:7792/balance; do
    for _ in $(seq 100); do
        curl -sf "$url" >/dev/null && break
        sleep 0.1
    done
done

API=http://127.0.0.1:$PORT/v1/transactions
balances() {
    echo "   balances: alice=$(curl -s 127.0.0.1:7791/balance | python3 -c 'import json,sys; print(json.load(sys.stdin)["balance"])')" \
         "bob=$(curl -s 127.0.0.1:7792/balance | python3 -c 'import json,sys; print(json.load(sys.stdin)["balance"])')"
}
transfer() { # gid amount
    cat <<JSON
{"gid": "$1", "type": "saga", "wait": true,
 "steps": [
  {"action": "http://127.0.0.1:7791/debit",  "compensate": "http://127.0.0.1:7791/debit-undo",  "payload": {"amount": $2}},
  {"action": "http://127.0.0.1:7792/credit", "compensate": "http://127.0.0.1:7792/credit-undo", "payload": {"amount": $2}}
 ]}
JSON
}
show() {
    python3 -c 'import json,sys
t = json.load(sys.stdin)
print("   dtxd says: %s %s" % (t["gid"], t["status"]))
for b in t["branches"]:
    print("     step %s: %-12s action_attempts=%d compensate_attempts=%d last_error=%s"
          % (b["branch"], b["status"], b["action_attempts"], b["compensate_attempts"], b["last_error"]))'
}

echo
echo "== dtxd is up on 127.0.0.1:$PORT (log in $DATA)"
balances
echo
echo "== saga 1: move 30 from alice to bob"
transfer demo-transfer-1 30 | curl -s -X POST "$API" -d @- | show
balances
echo
echo "== saga 2: move 30 more; bob's account is capped at 50, so his service refuses (409)"
echo "   and dtxd compensates every started step, newest first: alice gets her 30 back"
transfer demo-transfer-2 30 | curl -s -X POST "$API" -d @- | show
balances
echo
echo "== the same gid again is idempotent: dtxd answers with the finished transaction"
transfer demo-transfer-1 30 | curl -s -o /dev/null -w "   HTTP %{http_code}\n" -X POST "$API" -d @-
echo
echo "== listing: curl -s '$API?limit=5'"
curl -s "$API?limit=5" | python3 -c 'import json,sys
for t in json.load(sys.stdin)["transactions"]:
    print("   %-18s %-10s %s" % (t["gid"], t["status"], t["created_at"]))'
echo
echo "done. Run it yourself: ./build/dtxd --data-dir $DATA  (see README.md and docs/API.md)"
