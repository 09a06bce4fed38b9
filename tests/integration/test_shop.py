"""
The shop example end to end (examples/shop): an order -> stock -> payment
saga run by the real dtxd over RabbitMQ, whose participants are the real
`order`, `stock` and `payment` services consuming their queues with
libdtx's AMQP participant loop. What a user sees is checked: the `order
place` exit status, each order's status, the stock and the balances, and
that they agree with dtxd (Shop.check).

RabbitMQ comes from DTX_TEST_AMQP_URL / DTX_TEST_AMQP_MGMT (skipped without
them, failed with DTX_REQUIRE_AMQP=1); each test gets a vhost of its own, so
the shop's fixed exchange and queue names never meet another test's. The
broker-restart test starts a node of its own. Every test runs on SQLite
files, and again on PostgreSQL when DTX_TEST_PG_HOST / DTX_TEST_PG_PORT are
set (databases shop_order, shop_stock, shop_payment, created if missing).
The programs are found next to $DTXD (<build>/examples/shop/) or in
$DTX_SHOP_DIR.
"""

import json
import time
import uuid

import pytest

from dtxtest import free_port, wait_until
from shopfix import Mgmt, PrivateBroker, Shop, pg_databases, require_amqp, require_binaries, with_vhost

# the shop's databases of the shared PostgreSQL: one test at a time (xdist)
pytestmark = pytest.mark.xdist_group("pg_shop")


@pytest.fixture(params=["sqlite", "pg"])
def dbs(request, tmp_path):
    if request.param == "pg":
        return pg_databases()
    return {n: str(tmp_path / f"{n}.db") for n in ("order", "stock", "payment")}


def make_shop(dtxd_factory, tmp_path, url, mgmt_url, dbs, *dtxd_args):
    vhost = f"dtx-shop-{uuid.uuid4().hex[:8]}"
    mq = Mgmt(mgmt_url, vhost)
    mq.create_vhost()
    vurl = with_vhost(url, vhost)
    # the URL in the environment: a password on the command line shows in ps
    d = dtxd_factory(*dtxd_args, env={"DTX_AMQP_URL": vurl})
    s = Shop(d, vurl, mq, dbs, tmp_path)
    s.setup()
    return s


@pytest.fixture
def shop(dtxd_factory, tmp_path, dbs):
    require_binaries()
    url, mgmt_url = require_amqp()
    s = make_shop(dtxd_factory, tmp_path, url, mgmt_url, dbs)
    s.set_stock("apple", 10)
    s.set_stock("pear", 5)
    s.set_balance("alice", 1000)
    s.set_balance("bob", 100)
    yield s
    stopped = s.stop_all()
    s.report()
    s.mq.delete_vhost()
    assert all(rc == 0 for rc in stopped.values()), stopped


# ---------------------------------------------------------------- outcomes


def test_order_paid(shop):
    shop.start()
    r = shop.place("alice", "apple", 2, 300)
    assert r.rc == 0 and f"order {r.id} paid" in r.out, r
    orders = shop.check([r.id])
    assert orders[r.id]["status"] == "paid"
    items, reservations = shop.stock()
    assert items["apple"] == {"id": "apple", "available": 8, "reserved": 2}
    assert len(reservations) == 1 and reservations[0]["released"] == 0
    balances, charges = shop.payment()
    assert balances == {"alice": 700, "bob": 100}
    assert [(c["customer"], c["amount"], c["refunded"]) for c in charges] == [("alice", 300, 0)]
    t = shop.d.txn(r.gid)
    assert t["status"] == "succeeded"
    assert [b["status"] for b in t["branches"]] == ["succeeded"] * 4


def test_payment_refused_releases_stock_and_cancels(shop):
    """bob cannot pay: the reservation made by step 2 is released by its
    compensation, sent over the stock queue; the order ends cancelled and
    bob's balance is untouched."""
    shop.start()
    r = shop.place("bob", "apple", 3, 500)
    assert r.rc == 1, r
    assert f"order {r.id} cancelled" in r.out and "insufficient funds" in r.out, r
    shop.check([r.id])
    assert shop.orders()[r.id]["status"] == "cancelled"
    items, reservations = shop.stock()
    assert items["apple"] == {"id": "apple", "available": 10, "reserved": 0}
    # it was reserved, then released: once each
    assert [(x["order"], x["qty"], x["released"]) for x in reservations] == [(r.id, 3, 1)]
    assert shop.svc["stock"].count_log(f"stock.release {r.gid}/2/compensate -> SUCCESS") == 1
    balances, charges = shop.payment()
    assert balances["bob"] == 100 and charges == []
    t = shop.d.txn(r.gid)
    assert t["status"] == "failed"
    assert "insufficient funds" in (t["branches"][2]["last_error"] or ""), t
    assert t["branches"][3]["status"] == "pending"  # never started


def test_out_of_stock_never_charges(shop):
    shop.start()
    r = shop.place("alice", "pear", 6, 100)
    assert r.rc == 1 and "out of stock" in r.out, r
    shop.check([r.id])
    items, reservations = shop.stock()
    assert items["pear"]["available"] == 5 and reservations == []
    assert shop.payment() == ({"alice": 1000, "bob": 100}, [])
    assert shop.svc["payment"].count_log("payment.charge") == 0


def test_orders_race_for_the_last_units(shop):
    """Concurrent orders for more pears than there are: exactly as many
    succeed as the stock allows, nothing is oversold or charged twice."""
    import concurrent.futures

    shop.start()
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        rs = list(ex.map(lambda i: shop.place("alice", "pear", 1, 10), range(8)))
    assert sorted(r.rc for r in rs) == [0] * 5 + [1] * 3, rs
    shop.check([r.id for r in rs])
    items, _ = shop.stock()
    assert items["pear"] == {"id": "pear", "available": 0, "reserved": 5}
    assert shop.payment()[0]["alice"] == 1000 - 50


# ---------------------------------------------------------------- faults


def test_place_again_after_dtxd_unreachable(shop):
    """`place` that cannot reach dtxd leaves the order pending and says so;
    placing the same id again goes on with it, once."""
    shop.start()
    r = shop.place("alice", "apple", 1, 100, dtx=f"http://127.0.0.1:{free_port()}")
    assert r.rc == 3 and f"order {r.id} pending" in r.out, r
    assert shop.orders()[r.id]["status"] == "pending"
    r2 = shop.place("alice", "apple", 1, 100, order_id=r.id)
    assert r2.rc == 0 and f"order {r.id} paid" in r2.out, r2
    # and once more: the same saga, nothing charged twice
    r3 = shop.place("alice", "apple", 1, 100, order_id=r.id)
    assert r3.rc == 0, r3
    shop.check([r.id])
    assert shop.payment()[0]["alice"] == 900
    # other contents under the same id are refused
    assert shop.place("alice", "apple", 2, 100, order_id=r.id).rc == 2


def test_dtxd_killed_mid_flight(shop):
    """kill -9 of dtxd while sagas are between their steps: after the
    restart it picks them up (replies that came meanwhile wait in its reply
    queue) and every order ends consistent."""
    shop.start()
    placed = [shop.place("alice" if i % 4 else "bob", "apple", 1, 60, wait=False) for i in range(8)]
    assert all(r.rc == 0 for r in placed), placed
    shop.d.kill9()
    time.sleep(0.5)
    shop.d.restart()
    orders = shop.check([r.id for r in placed])
    assert sorted(o["status"] for o in orders.values() if o["customer"] == "bob") == ["cancelled", "paid"]
    assert {o["status"] for o in orders.values() if o["customer"] == "alice"} == {"paid"}


def test_services_killed_mid_flight(shop):
    """kill -9 of the stock and then the payment service while orders flow:
    a command they held unacknowledged is redelivered after their restart
    (the barrier makes a second delivery harmless), and every order is paid
    exactly once."""
    shop.start()
    kw = dict(wait=False, retry="50,500,100000", request_timeout_ms=1500)
    placed = []
    for i in range(24):
        placed.append(shop.place("alice", "apple" if i % 2 else "pear", 1, 10, **kw))
        if i == 6:
            shop.svc["stock"].kill9()
        if i == 10:
            shop.svc["stock"].start()
        if i == 14:
            shop.svc["payment"].kill9()
        if i == 18:
            shop.svc["payment"].start()
    assert all(r.rc == 0 for r in placed), placed
    orders = shop.check([r.id for r in placed])
    # 12 orders for each item: all 10 apples and all 5 pears sold, the rest cancelled
    assert [o["status"] for o in orders.values()].count("paid") == 15, orders
    items, _ = shop.stock()
    assert items["apple"]["available"] == 0 and items["pear"]["available"] == 0, items
    assert shop.payment()[0]["alice"] == 1000 - 150


def test_payment_down_then_up(shop):
    """The payment service is down while orders are placed: their charge
    commands wait in its queue (dtxd publishes them again every second,
    so several copies of each pile up). Once it starts, every order
    completes, each charged exactly once."""
    shop.start("order", "stock")
    plan = [("alice", "apple", 1, 100), ("alice", "apple", 2, 200), ("alice", "pear", 1, 50),
            ("bob", "apple", 1, 500), ("bob", "pear", 1, 60)]  # bob's first cannot pay
    placed = [shop.place(*p, wait=False, retry="50,500,100000", request_timeout_ms=1000) for p in plan]
    assert all(r.rc == 0 for r in placed), placed
    # every saga reaches its charge and waits there
    for r in placed:
        shop.d.wait_txn(r.gid, lambda t: t["branches"][2]["action_attempts"] >= 2, timeout=30,
                        what="charges retried while the payment service is down")
    assert all(o["status"] == "pending" for o in shop.orders().values())
    assert all(i["reserved"] > 0 for i in shop.stock()[0].values())
    shop.start("payment")
    shop.check([r.id for r in placed])
    status = {oid: o["status"] for oid, o in shop.orders().items()}
    assert sorted(status.values()) == ["cancelled"] + ["paid"] * 4, status
    assert status[placed[3].id] == "cancelled"
    balances, charges = shop.payment()
    assert balances == {"alice": 650, "bob": 40}
    assert len(charges) == 4  # one per paid order: the copies did nothing
    assert shop.svc["payment"].count_log("payment.charge") >= 5
    assert shop.svc["payment"].count_log("-> SUCCESS: charged") == 4


def test_duplicate_command_applied_once(shop):
    """A command republished by hand with the same message_id (as a broker
    or a confused client might) is applied once, even after its saga has
    finished."""
    shop.start("order", "payment")
    r = shop.place("alice", "apple", 4, 100, wait=False, request_timeout_ms=60000)
    assert r.rc == 0, r
    # the reserve command waits in shop.stock: look at it, leave it there
    msgs = wait_until(lambda: shop.mq.get("shop.stock", requeue=True), timeout=20,
                      what="the reserve command in shop.stock")
    assert len(msgs) == 1, msgs
    cmd = msgs[0]
    p = cmd["properties"]
    assert p["message_id"] == f"{r.gid}/2/action"
    assert p["headers"]["Dtx-Op"] == "action" and p["reply_to"]
    props = {k: p[k] for k in ("message_id", "correlation_id", "reply_to", "headers",
                               "content_type", "delivery_mode")}

    def republish():
        assert shop.mq.publish("shop", cmd["routing_key"], cmd["payload"], props)

    republish()
    republish()
    shop.start("stock")
    shop.check([r.id])
    assert shop.orders()[r.id]["status"] == "paid"
    assert shop.stock()[0]["apple"] == {"id": "apple", "available": 6, "reserved": 4}
    # once more after the saga has finished; then an order behind it in the
    # same queue, so that we know it has been taken
    republish()
    r2 = shop.place("alice", "apple", 1, 100)
    assert r2.rc == 0, r2
    shop.check([r.id, r2.id])
    items, reservations = shop.stock()
    assert items["apple"] == {"id": "apple", "available": 5, "reserved": 5}
    assert sorted(x["qty"] for x in reservations) == [1, 4]
    # the handler ran once for it: the copies were answered by the barrier
    assert shop.svc["stock"].count_log(f"stock.reserve {r.gid}/2/action") == 1
    assert shop.mq.get("shop.stock.dead") == []


def test_poison_messages_dead_lettered(shop):
    """Messages that are no dtx command land in shop.stock.dead with their
    reason; the service keeps serving."""
    shop.start()
    base = {"content_type": "application/json", "delivery_mode": 2}
    assert shop.mq.publish("shop", "stock.reserve", "garbage", dict(base))
    no_reply_to = dict(base, message_id="x-1/2/action",
                       headers={"Dtx-Gid": "x-1", "Dtx-Branch": "2", "Dtx-Op": "action",
                                "Dtx-Type": "saga"})
    assert shop.mq.publish("shop", "stock.reserve", json.dumps({"order": "x"}), no_reply_to)
    dead = []
    wait_until(lambda: dead.extend(shop.mq.get("shop.stock.dead")) or len(dead) >= 2, timeout=20,
               what="two dead letters")
    assert sorted(m["payload"] for m in dead) == sorted(["garbage", json.dumps({"order": "x"})])
    for m in dead:
        assert m["properties"]["headers"].get("x-dtx-reason"), m
    assert shop.svc["stock"].running
    r = shop.place("alice", "apple", 1, 100)
    assert r.rc == 0, r
    shop.check([r.id])
    assert shop.stock()[0]["apple"]["available"] == 9


@pytest.mark.slow
def test_broker_restart_mid_flight(dtxd_factory, tmp_path, dbs):
    """The RabbitMQ node stops while orders keep coming in and starts again:
    dtxd and the three services reconnect, and every order ends paid or
    cancelled with stock and balances to match."""
    import threading

    require_binaries()
    require_amqp()
    b = PrivateBroker()
    shop = None
    try:
        b.start()
        shop = make_shop(dtxd_factory, tmp_path, b.url, b.mgmt_url, dbs)
        shop.set_stock("apple", 100000)
        shop.set_balance("alice", 10000000)
        shop.set_balance("bob", 250)  # two of bob's orders, no more
        shop.start()
        kw = dict(wait=False, retry="50,1000,100000", request_timeout_ms=2000)
        placed, done = [], threading.Event()

        def placer():
            i = 0
            while not done.is_set():
                placed.append(shop.place("alice" if i % 3 else "bob", "apple", 1 + i % 2, 100, **kw))
                i += 1
                time.sleep(0.1)

        t = threading.Thread(target=placer)
        t.start()
        try:
            wait_until(lambda: len(placed) >= 10, timeout=30, what="orders before the stop")
            b.stop()  # while orders are under way
            n_down = len(placed)
            wait_until(lambda: len(placed) >= n_down + 5, timeout=30, what="orders while down")
            for s in shop.svc.values():
                assert s.running, s.log_tail()
            b.start()
            wait_until(lambda: len(placed) >= n_down + 15, timeout=60, what="orders after the start")
        finally:
            done.set()
            t.join()
        assert all(r.rc == 0 for r in placed), [r for r in placed if r.rc != 0]
        # the node's management port changes with each start
        shop.mq = Mgmt(b.mgmt_url, shop.mq.vhost)
        orders = shop.check([r.id for r in placed])
        alice = [o["status"] for o in orders.values() if o["customer"] == "alice"]
        bob = [o["status"] for o in orders.values() if o["customer"] == "bob"]
        assert set(alice) == {"paid"}, alice
        assert sorted(bob) == ["cancelled"] * (len(bob) - 2) + ["paid"] * 2, bob
        for s in shop.svc.values():
            assert s.running, s.log_tail()
        assert shop.mq.get("shop.stock.dead") == [] and shop.mq.get("shop.payment.dead") == []
        stopped = shop.stop_all()
        assert all(rc == 0 for rc in stopped.values()), stopped
    finally:
        if shop is not None:
            for s in shop.svc.values():
                s.kill9()
            shop.report()
        b.cleanup()
