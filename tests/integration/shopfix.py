"""
shopfix.py - helpers for the shop example's integration tests (test_shop.py):
the real programs of examples/shop (order, stock, payment) on SQLite or
PostgreSQL, RabbitMQ (the shared broker, one fresh vhost per test, or a
private node to restart), and the checks of what a user sees.

  shop_bin(name)        $DTX_SHOP_DIR/name, else next to $DTXD
                        (<build>/examples/shop/name), else build/
  require_amqp()        (url, mgmt URL) from DTX_TEST_AMQP_URL /
                        DTX_TEST_AMQP_MGMT; skips without them, fails with
                        DTX_REQUIRE_AMQP=1
  Mgmt                  RabbitMQ's management API for one vhost
  PrivateBroker         a node of the test's own (amqpfix.py)
  Service               one `stock|payment|order serve` process
  Shop                  dtxd + the three services + their databases: place
                        orders, read the state, check it is consistent
"""

import base64
import json
import os
import signal
import subprocess
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from amqpfix import PrivateBroker  # noqa: F401 (for test_shop.py)
from amqpfix import require_amqp  # noqa: F401 (for test_shop.py)
from bankfix import pg_database, psql
from dtxtest import LogFile, sanitizer_report, wait_until

REPO = Path(__file__).resolve().parents[2]
RABBITMQ_SH = REPO / "scripts" / "rabbitmq.sh"

QUEUES = ("shop.order", "shop.stock", "shop.payment")


def shop_bin(name):
    if os.environ.get("DTX_SHOP_DIR"):
        return Path(os.environ["DTX_SHOP_DIR"]) / name
    dtxd = os.environ.get("DTXD")
    dirs = ([Path(dtxd).resolve().parent] if dtxd else []) + [REPO / "build"]
    for d in dirs:
        p = d / "examples" / "shop" / name
        if p.is_file():
            return p
    return dirs[0] / "examples" / "shop" / name


def require_binaries():
    for n in ("order", "stock", "payment"):
        b = shop_bin(n)
        if not (b.is_file() and os.access(b, os.X_OK)):
            pytest.fail(f"{b} not found: build it with `make` (mk/shop.mk) or set DTX_SHOP_DIR",
                        pytrace=False)


# --------------------------------------------------------------------------
# RabbitMQ


def with_vhost(url, vhost):
    """url (amqp://user:pass@host:port/whatever) on another vhost."""
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + urllib.parse.quote(vhost, safe=""), "", ""))


class Mgmt:
    """RabbitMQ's management HTTP API, for one vhost."""

    def __init__(self, base, vhost="/"):
        u = urllib.parse.urlsplit(base)
        self.base = f"http://{u.hostname}:{u.port}"
        self.user = urllib.parse.unquote(u.username or "guest")
        cred = f"{self.user}:{urllib.parse.unquote(u.password or 'guest')}"
        self.auth = "Basic " + base64.b64encode(cred.encode()).decode()
        self.vhost = vhost
        self.v = urllib.parse.quote(vhost, safe="")

    def call(self, method, path, body=None, timeout=10):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", self.auth)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def create_vhost(self):
        self.call("PUT", f"/api/vhosts/{self.v}")
        self.call("PUT", f"/api/permissions/{self.v}/{urllib.parse.quote(self.user, safe='')}",
                  {"configure": ".*", "write": ".*", "read": ".*"})

    def delete_vhost(self):
        try:
            self.call("DELETE", f"/api/vhosts/{self.v}")
        except OSError:
            pass

    def get(self, queue, count=100, requeue=False):
        """Up to count messages of queue, removed (requeue=False) or put
        back (requeue=True: they come back marked redelivered)."""
        path = f"/api/queues/{self.v}/{urllib.parse.quote(queue, safe='')}/get"
        mode = "ack_requeue_true" if requeue else "ack_requeue_false"
        return self.call("POST", path, {"count": count, "ackmode": mode, "encoding": "auto"})

    def publish(self, exchange, key, payload, properties):
        """Publish as a client would; returns whether it was routed."""
        path = f"/api/exchanges/{self.v}/{urllib.parse.quote(exchange, safe='')}/publish"
        r = self.call("POST", path, {"properties": properties, "routing_key": key,
                                     "payload": payload, "payload_encoding": "string"})
        return r["routed"]


# --------------------------------------------------------------------------
# PostgreSQL


PG_TABLES = "orders, items, reservations, accounts, charges, dtx_barrier"


def pg_databases():
    """{"order": conninfo, "stock": ..., "payment": ...} on the test
    PostgreSQL (bankfix.pg_conninfo: skipped without it, failed with
    DTX_REQUIRE_PG=1), each database created if missing and emptied of the
    shop's tables."""
    out = {}
    for name in ("order", "stock", "payment"):
        out[name] = pg_database(f"shop_{name}")
        psql(out[name], f"DROP TABLE IF EXISTS {PG_TABLES}")
    return out


# --------------------------------------------------------------------------
# the shop


class Service(LogFile):
    """`NAME serve` (stock, payment or order) with its stderr in log_path."""

    def __init__(self, name, db, amqp_url, log_path):
        self.name, self.db, self.amqp_url = name, str(db), amqp_url
        self.log_path = Path(log_path)
        self.proc = None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        assert not self.running
        env = dict(os.environ, SHOP_AMQP_URL=self.amqp_url)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(shop_bin(self.name)), "serve", "--db", self.db],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        wait_until(lambda: "consuming" in self.log_text() or not self.running, timeout=20,
                   what=f"{self.name} to start")
        assert self.running, self.log_tail()
        return self

    def stop(self):
        """SIGTERM: the loop finishes the message in hand and returns.
        Returns the exit status (None if it was not running)."""
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()
                return "did not stop within 20 s of SIGTERM"
        return None

    def kill9(self):
        if self.running:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def count_log(self, needle):
        return sum(1 for line in self.log_text().splitlines() if needle in line)


class Placed:
    def __init__(self, rc, out, order_id):
        self.rc, self.out, self.id = rc, out, order_id

    @property
    def gid(self):
        return f"order-{self.id}"

    def __repr__(self):
        return f"<place {self.id} rc={self.rc}\n{self.out}>"


class Shop:
    """dtxd and the three services on one broker URL (a vhost of its own),
    with databases dbs = {"order", "stock", "payment"} -> SQLite path or
    conninfo. The initial stock and balances are remembered for check()."""

    def __init__(self, dtxd, amqp_url, mgmt, dbs, tmp_path):
        self.d, self.url, self.mq, self.dbs = dtxd, amqp_url, mgmt, dbs
        self.tmp = Path(tmp_path)
        self.svc = {n: Service(n, dbs[n], amqp_url, self.tmp / f"{n}.log")
                    for n in ("order", "stock", "payment")}
        self.initial_stock, self.initial_balance = {}, {}

    # -- programs -------------------------------------------------------

    def run(self, prog, *args, timeout=90, check=True):
        env = dict(os.environ, SHOP_AMQP_URL=self.url)
        r = subprocess.run([str(shop_bin(prog))] + [str(a) for a in args], capture_output=True,
                           text=True, timeout=timeout, env=env)
        assert sanitizer_report(r.stderr) is None, (prog, args, r.stderr)
        if check:
            assert r.returncode == 0, (prog, args, r.stdout, r.stderr)
        return r

    def setup(self):
        self.run("order", "setup")

    def start(self, *names):
        for n in names or ("order", "stock", "payment"):
            self.svc[n].start()

    def stop_all(self):
        """SIGTERM every running service; returns {name: exit status} of
        those that ran (0 is a clean stop), and for a service whose log
        holds a sanitizer report, that report instead."""
        out = {n: s.stop() for n, s in self.svc.items() if s.running}
        for n, s in self.svc.items():
            rep = sanitizer_report(s.log_text())
            if rep is not None:
                out[n] = rep
        return out

    def set_stock(self, item, n):
        self.run("stock", "set", "--db", self.dbs["stock"], item, n)
        self.initial_stock[item] = n

    def set_balance(self, customer, n):
        self.run("payment", "set", "--db", self.dbs["payment"], customer, n)
        self.initial_balance[customer] = n

    def place_cmd(self, customer, item, qty, amount, *, order_id, wait=True,
                  retry="50,500,50", request_timeout_ms=None, dtx=None):
        cmd = [str(shop_bin("order")), "place", "--db", self.dbs["order"], "--dtx",
               dtx or f"http://{self.d.listen}", "--customer", customer, "--item", item, "--qty", str(qty),
               "--amount", str(amount), "--id", order_id, "--retry", retry]
        if request_timeout_ms is not None:
            cmd += ["--request-timeout-ms", str(request_timeout_ms)]
        if wait:
            cmd += ["--wait", "--wait-ms", "60000"]
        return cmd

    def place(self, customer, item, qty, amount, *, order_id=None, wait=True, timeout=90, **kw):
        order_id = order_id or f"o-{uuid.uuid4().hex[:10]}"
        r = subprocess.run(self.place_cmd(customer, item, qty, amount, order_id=order_id,
                                          wait=wait, **kw),
                           capture_output=True, text=True, timeout=timeout)
        assert sanitizer_report(r.stderr) is None, r.stderr
        return Placed(r.returncode, r.stdout + r.stderr, order_id)

    # -- state ----------------------------------------------------------

    def show(self, prog):
        return json.loads(self.run(prog, "show", "--db", self.dbs[prog]).stdout)

    def orders(self):
        return {o["id"]: o for o in self.show("order")["orders"]}

    def stock(self):
        s = self.show("stock")
        return {i["id"]: i for i in s["items"]}, s["reservations"]

    def payment(self):
        s = self.show("payment")
        return {a["customer"]: a["balance"] for a in s["accounts"]}, s["charges"]

    def wait_final(self, order_ids, timeout=90):
        """Wait until dtxd has finished every order's saga; returns
        {order id: "succeeded" | "failed"}."""
        out = {}
        for oid in order_ids:
            out[oid] = self.d.wait_txn(f"order-{oid}", lambda t: t["status"] in ("succeeded", "failed"),
                                       timeout=timeout, what=f"order {oid} final")["status"]
        return out

    def check(self, order_ids=None):
        """What every user and the shop's owner see agrees: every order is
        paid (its saga succeeded) or cancelled (failed); a paid order holds
        exactly one live reservation and one live charge of its own
        quantity and amount, a cancelled one none; stock and balances are
        the initial ones minus exactly the paid orders. Returns the orders."""
        orders = self.orders()
        ids = list(order_ids) if order_ids is not None else list(orders)
        final = self.wait_final(ids)
        orders = self.orders()
        items, reservations = self.stock()
        balances, charges = self.payment()
        live_res = [r for r in reservations if not r["released"]]
        live_chg = [c for c in charges if not c["refunded"]]
        for oid in ids:
            o = orders[oid]
            want = {"succeeded": "paid", "failed": "cancelled"}[final[oid]]
            assert o["status"] == want, (o, final[oid])
            mine_r = [r for r in live_res if r["order"] == oid]
            mine_c = [c for c in live_chg if c["order"] == oid]
            if want == "paid":
                assert [(r["item"], r["qty"]) for r in mine_r] == [(o["item"], o["qty"])], (o, mine_r)
                assert [(c["customer"], c["amount"]) for c in mine_c] == [(o["customer"], o["amount"])], (o, mine_c)
            else:
                assert mine_r == [] and mine_c == [], (o, mine_r, mine_c)
            # at most one reservation / charge ever made per order
            assert len([r for r in reservations if r["order"] == oid]) <= 1, reservations
            assert len([c for c in charges if c["order"] == oid]) <= 1, charges
        paid = [orders[i] for i in orders if orders[i]["status"] == "paid"]
        for item, n in self.initial_stock.items():
            sold = sum(o["qty"] for o in paid if o["item"] == item)
            assert items[item]["available"] == n - sold, (item, items[item], sold)
            assert items[item]["reserved"] == sold == sum(r["qty"] for r in live_res if r["item"] == item)
        for cust, n in self.initial_balance.items():
            spent = sum(o["amount"] for o in paid if o["customer"] == cust)
            assert balances[cust] == n - spent, (cust, balances[cust], spent)
        return orders

    def report(self):
        """Logs for a failed test (printed: pytest shows them on failure)."""
        for s in self.svc.values():
            print(f"---- {s.name} log tail ({s.log_path})\n{s.log_tail(80)}")
