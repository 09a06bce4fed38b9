#!/usr/bin/env python3
"""A tiny account service for the dtx demo: one balance, four endpoints.

POST /debit, /credit       apply {"amount": N}; 409 if the balance would go
                           below 0 or above the account's cap
POST /debit-undo, /credit-undo  undo it (a no-op if the forward call never
                           happened: a compensation may arrive for an action
                           the service never saw)
GET  /balance              {"balance": N}

Every call is de-duplicated on its Idempotency-Key, so dtxd may repeat a
call (after a timeout or a restart) without applying it twice. Each call is
printed so the demo shows what the coordinator did. Standard library only.
Usage: account_service.py NAME PORT INITIAL_BALANCE [CAP]
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME, PORT, BALANCE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
CAP = int(sys.argv[4]) if len(sys.argv) > 4 else None
lock = threading.Lock()
state = {"balance": BALANCE}
done = {}  # Idempotency-Key -> (status, body)
applied = set()  # "gid/branch" whose forward call changed the balance


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with lock:
            self.answer(200, {"balance": state["balance"]})

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        amount = int(json.loads(raw or b"{}").get("amount", 0))
        key = self.headers.get("Idempotency-Key", "")
        branch = "%s/%s" % (self.headers.get("Dtx-Gid"), self.headers.get("Dtx-Branch"))
        op = self.path.lstrip("/")
        with lock:
            if key in done:
                self.answer(*done[key])
                return
            sign = {"debit": -1, "credit": 1, "debit-undo": 1, "credit-undo": -1}.get(op)
            if sign is None:
                result = (404, {"error": "no such operation"})
            elif op.endswith("-undo"):
                if branch in applied:
                    applied.discard(branch)
                    state["balance"] += sign * amount
                result = (200, {"balance": state["balance"]})
            elif state["balance"] + sign * amount < 0:
                result = (409, {"error": "insufficient funds"})
            elif CAP is not None and state["balance"] + sign * amount > CAP:
                result = (409, {"error": "over the account's cap of %d" % CAP})
            else:
                state["balance"] += sign * amount
                applied.add(branch)
                result = (200, {"balance": state["balance"]})
            done[key] = result
            print("  [%s] %-11s %-4s -> HTTP %d, balance %d"
                  % (NAME, op, amount, result[0], state["balance"]), flush=True)
        self.answer(*result)


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
