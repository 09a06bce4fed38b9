"""
The bank example over RabbitMQ end to end: dtxd (--amqp-url) calls the two
real bank services (examples/bank/bank --amqp) through the topic exchange
"dtx.bank", and each bank serves its queue with libdtx's AMQP participant
loop; the real transfer client (--over amqp --amqp-url) drives every mode
(saga, tcc, 2pc, msg). Everything dtxd calls goes over AMQP, and so do the
client's own tcc Trys (dtx_client_set_amqp); msg's local transaction and the
payee check stay HTTP.

What a user sees is checked: the transfer's exit status, dtxd's final state
and the balances - money moves exactly once or not at all, nothing stays
frozen or held - under a bank that is down while transfers are submitted,
RabbitMQ restarted mid-flight, a command republished by hand, and poison
messages on a bank's queue.

Needs RabbitMQ (DTX_TEST_AMQP_URL / DTX_TEST_AMQP_MGMT, scripts/rabbitmq.sh;
skipped without, failed with DTX_REQUIRE_AMQP=1). The PostgreSQL variants
need DTX_TEST_PG_HOST / DTX_TEST_PG_PORT as test_bank.py; the SQLite ones
need nothing more.
"""

import json
import time
import uuid

import pytest

from amqpfix import broker, private_broker  # noqa: F401 (fixtures)
from bankfix import (MODES, Bank, amqp_extra, pg_database, require_binaries, reset_pg, transfer,
                     transfer_async)
from dtxtest import FINAL, new_gid, wait_until

# bank_amqp_a and bank_amqp_b of the shared PostgreSQL: one test at a time (xdist)
pytestmark = pytest.mark.xdist_group("pg_bank_amqp")

DBS = ("sqlite", "pg")


def _uid(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Env:
    """dtxd and two banks serving over AMQP: A holds alice (100), B bob (0)."""

    def __init__(self, dtxd, a, b, url, mgmt):
        self.d, self.A, self.B, self.url, self.mgmt = dtxd, a, b, url, mgmt

    def alice(self):
        return (self.A, "alice")

    def bob(self):
        return (self.B, "bob")

    def balances(self):
        return self.A.balance("alice"), self.B.balance("bob")

    def expect(self, want, timeout=20):
        """Assert the balances are want (alice, bob), waiting for them: a msg
        succeeds for dtxd once the broker has its delivery, and the credit
        lands when the payee's bank has consumed it."""
        try:
            wait_until(lambda: self.balances() == tuple(want), timeout, interval=0.05)
        except AssertionError:
            pass
        assert self.balances() == tuple(want)

    def assert_clean(self):
        for bank in (self.A, self.B):
            s = bank.accounts()
            assert s["frozen"] == 0 and s["holds"] == 0, (bank.name, s)
            assert all(a["balance"] >= 0 for a in s["accounts"]), s

    def extra(self, more=()):
        return amqp_extra(self.A, self.B) + list(more)

    def run(self, mode, amount, *, gid=None, wait=True, extra=()):
        return transfer(self.d, mode, self.alice(), self.bob(), amount, gid=gid or new_gid(mode),
                        wait=wait, extra=self.extra(extra))

    def run_async(self, mode, amount, gid, extra=()):
        return transfer_async(self.d, mode, self.alice(), self.bob(), amount, gid=gid, wait=False,
                              extra=self.extra(extra))


def _dbs(tmp_path, db):
    if db == "sqlite":
        return tmp_path / "a.db", tmp_path / "b.db"
    cis = pg_database("bank_amqp_a"), pg_database("bank_amqp_b")
    for ci in cis:
        reset_pg(ci)
    return cis


def make_env(tmp_path, dtxd_factory, db, url, mgmt):
    require_binaries()
    da, dbb = _dbs(tmp_path, db)
    d = dtxd_factory("--amqp-url", url, "--amqp-reply-queue", _uid("dtxd.replies"))
    tag = uuid.uuid4().hex[:6]
    a = Bank("A", da, tmp_path / "bankA.log", amqp=url, queue=f"bank.a.{tag}")
    b = Bank("B", dbb, tmp_path / "bankB.log", amqp=url, queue=f"bank.b.{tag}")
    try:
        a.start()
        b.start()
    except Exception:
        a.kill9()
        b.kill9()
        raise
    a.set_account("alice", 100)
    b.set_account("bob", 0)
    return Env(d, a, b, url, mgmt)


def _teardown(e):
    for b in (e.A, e.B):
        b.kill9()
        print(f"---- bank {b.name} log tail ({b.log_path})\n{b.log_tail(60)}")
    for b in (e.A, e.B):
        for q in (b.queue, b.queue + ".dead"):
            try:
                e.mgmt.call("DELETE", f"/api/queues/%2F/{q}")
            except Exception:
                pass


@pytest.fixture(params=DBS)
def env(request, tmp_path, dtxd_factory, broker):  # noqa: F811
    url, mgmt = broker
    e = make_env(tmp_path, dtxd_factory, request.param, url, mgmt)
    yield e
    _teardown(e)


@pytest.fixture
def pg_env(tmp_path, dtxd_factory, broker):  # noqa: F811
    url, mgmt = broker
    e = make_env(tmp_path, dtxd_factory, "pg", url, mgmt)
    yield e
    _teardown(e)


# the operations dtxd calls, per mode, as the bank logs them ("amqp <op>")
AMQP_OPS = {
    "saga": [("A", "saga/debit"), ("B", "saga/credit")],
    "tcc": [("A", "tcc/debit/try"), ("B", "tcc/credit/try"),
            ("A", "tcc/debit/confirm"), ("B", "tcc/credit/confirm")],
    "2pc": [("A", "2pc/debit/prepare"), ("B", "2pc/credit/prepare"),
            ("A", "2pc/debit/commit"), ("B", "2pc/credit/commit")],
    "msg": [("B", "msg/credit"), ("A", "msg/check")],
}


def _gid_ops(e, gid):
    """{(bank, op)} the banks served over AMQP for gid."""
    seen = set()
    for bank in (e.A, e.B):
        for line in bank.log_text().splitlines():
            if f"gid={gid}" in line and " amqp " in line:
                seen.add((bank.name, line.split(" amqp ", 1)[1].split()[0]))
    return seen


# --------------------------------------------------------------------------
# every mode


@pytest.mark.parametrize("mode", MODES)
def test_transfer_and_refusal_over_amqp(env, mode):
    e = env
    extra = ["--timeout-ms", "1500"] if mode == "msg" else []
    r = e.run(mode, 10, extra=extra)
    assert r.rc == 0, r
    t = e.d.txn(r.gid)
    assert t["status"] == "succeeded", t
    e.expect((90, 10))
    e.assert_clean()
    # dtxd was given amqp:// URLs and the banks served them over AMQP
    urls = [v for b in t["branches"] for k, v in b.items() if k in (
        "action", "compensate", "confirm", "cancel", "prepare", "commit", "rollback")]
    assert urls and all(u.startswith("amqp://dtx.bank/") for u in urls), t
    want = {op for op in AMQP_OPS[mode] if op[1] != "msg/check"}
    assert want <= _gid_ops(e, r.gid), (want, _gid_ops(e, r.gid))

    # a refusal (insufficient funds) rolls back and changes nothing
    r = e.run(mode, 1000)
    assert r.rc == 1, r
    assert e.d.wait_final(r.gid)["status"] == "failed"
    e.expect((90, 10))
    e.assert_clean()


TRANSIENTS = [("saga", "B", "/saga/credit"), ("tcc", "A", "/tcc/debit/confirm"),
              ("2pc", "B", "/2pc/credit/prepare"), ("2pc", "A", "/2pc/debit/commit"),
              ("msg", "B", "/msg/credit")]


@pytest.mark.parametrize("mode,bank,path", TRANSIENTS)
def test_transient_errors_over_amqp_are_retried(env, mode, bank, path):
    """The bank's injected 500s on an AMQP operation are RETRY: a command is
    asked again by dtxd, a delivery republished by the loop (through the
    default exchange, routing key = the queue). Money moves once."""
    e = env
    b = e.A if bank == "A" else e.B
    b.fault(path, fail=2, status=500)
    r = e.run(mode, 10, extra=["--request-timeout-ms", "1000"])
    assert r.rc == 0, r
    e.expect((90, 10))
    e.assert_clean()
    op = path[1:]
    lines = [l for l in b.log_text().splitlines() if f"gid={r.gid}" in l and f"amqp {op} " in l]
    assert len(lines) == 3 and "RETRY" in lines[0] and "SUCCESS" in lines[-1], lines


def test_msg_check_over_amqp_decides(env):
    """A msg whose local transaction committed but was never submitted: dtxd
    asks the check over AMQP (A's queue), which says committed: delivered.
    One whose local transaction never ran: the check says rolled back."""
    e = env
    gid = new_gid("msgchk")
    r = e.run("msg", 10, gid=gid, wait=False, extra=["--no-submit", "--timeout-ms", "500"])
    assert r.rc == 3, r
    assert e.d.wait_final(gid, timeout=30)["status"] == "succeeded"
    e.expect((90, 10))
    assert ("A", "msg/check") in _gid_ops(e, gid)

    # create a msg directly, never run its local transaction
    gid2 = new_gid("msgrb")
    body = {"gid": gid2, "type": "msg", "timeout_ms": 300,
            "check": f"amqp://dtx.bank/{e.A.queue}.msg.check",
            "steps": [{"action": f"amqp://dtx.bank/{e.B.queue}.msg.credit",
                       "payload": {"account": "bob", "amount": 5}}]}
    resp = e.d.create(body)
    assert resp.status == 201, resp
    assert e.d.wait_final(gid2, timeout=30)["status"] == "failed"
    e.expect((90, 10))
    e.assert_clean()


def test_sigterm_stops_the_bank_cleanly(env):
    e = env
    assert e.run("saga", 10).rc == 0
    t0 = time.monotonic()
    assert e.B.stop() == 0
    assert time.monotonic() - t0 < 5
    e.B.start()
    assert e.run("2pc", 5).rc == 0
    e.expect((85, 15))


# --------------------------------------------------------------------------
# a bank down while transfers are submitted


@pytest.mark.parametrize("db", DBS)
def test_bank_down_while_transfers_are_submitted(tmp_path, dtxd_factory, broker, db):  # noqa: F811
    url, mgmt = broker
    e = make_env(tmp_path, dtxd_factory, db, url, mgmt)
    try:
        slow = ["--retry", "100,500,1000", "--request-timeout-ms", "1000", "--timeout-ms", "60000"]
        # tcc: the Trys are the client's own calls, made while B is up;
        # B goes down before the submit, so the confirms wait in its queue
        tcc = [new_gid("down-tcc") for _ in range(2)]
        for g in tcc:
            r = e.run("tcc", 3, gid=g, wait=False, extra=slow + ["--no-submit"])
            assert "not submitted" in r.out, r
        e.B.kill9()
        gids = {g: 3 for g in tcc}
        procs = []
        for mode in ("saga", "2pc", "msg"):
            for i in range(3):
                g = new_gid(f"down-{mode}")
                gids[g] = 2
                procs.append((g, e.run_async(mode, 2, g, extra=slow)))
        for g in tcc:
            assert e.d.post(f"/v1/transactions/{g}/submit").status in (200, 202)
        for g, p in procs:
            out, _ = p.communicate(timeout=30)
            assert p.returncode == 0, (g, out)  # accepted: dtxd finishes it
        time.sleep(1.5)
        # nothing that needs B's answer can finish while B is down; a msg
        # is done for dtxd once the broker has its delivery (in B's queue)
        assert not any(e.d.txn(g)["status"] == "succeeded" for g in gids if "-msg-" not in g)
        assert all(e.d.txn(g)["status"] == "succeeded" for g in gids if "-msg-" in g)
        e.B.start()
        for g in gids:
            t = e.d.wait_final(g, timeout=60)
            assert t["status"] == "succeeded", t
        total = sum(gids.values())
        e.expect((100 - total, total))
        e.assert_clean()
    finally:
        _teardown(e)


# --------------------------------------------------------------------------
# RabbitMQ restarted mid-flight


@pytest.mark.slow
@pytest.mark.parametrize("db", DBS)
def test_rabbitmq_restart_mid_flight(tmp_path, dtxd_factory, private_broker, db):  # noqa: F811
    pb = private_broker
    e = make_env(tmp_path, dtxd_factory, db, pb.url, pb.mgmt)
    try:
        # A and B hold money on both sides so that every mode can run both ways
        e.B.set_account("bob", 100)
        opening = e.balances()
        slow = ["--retry", "100,1000,1000", "--request-timeout-ms", "2000", "--timeout-ms", "60000"]
        transfers = {}
        procs = []
        for i in range(16):
            mode = MODES[i % 4]
            g = new_gid(f"rmq-{mode}")
            transfers[g] = 1 + i % 5
            procs.append((g, e.run_async(mode, transfers[g], g, extra=slow)))
            if i == 7:
                pb.stop()  # half of them are in flight, the rest start with no broker
        time.sleep(1.0)
        pb.start()
        for g, p in procs:
            p.communicate(timeout=90)
        moved = 0
        for g, amount in transfers.items():
            t = e.d.wait_final(g, timeout=90)
            assert t["status"] in FINAL, t
            if t["status"] == "succeeded":
                moved += amount
        e.expect((opening[0] - moved, opening[1] + moved))
        e.assert_clean()
        # the broker restart made nothing fail that could go through
        assert moved > 0
        # and the banks still serve
        assert e.run("saga", 1, extra=slow).rc == 0
        e.expect((opening[0] - moved - 1, opening[1] + moved + 1))
    finally:
        for b in (e.A, e.B):
            b.kill9()
            print(f"---- bank {b.name} log tail\n{b.log_tail(40)}")


# --------------------------------------------------------------------------
# by hand: a republished command, poison messages


class Hand:
    """Publish to the bank's exchange with pika and read replies."""

    def __init__(self, url):
        import pika

        self.pika = pika
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()
        self.reply_q = self.ch.queue_declare("", exclusive=True).method.queue

    def publish(self, key, body, headers=None, message_id=None, command=True, corr=None):
        props = self.pika.BasicProperties(
            message_id=message_id, headers=headers, delivery_mode=2,
            content_type="application/json",
            reply_to=self.reply_q if command else None,
            correlation_id=corr if command else None)
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.ch.basic_publish("dtx.bank", key, raw, props, mandatory=True)

    def command(self, key, gid, branch, op, body, typ="saga"):
        corr = uuid.uuid4().hex
        self.publish(key, body, {"Dtx-Gid": gid, "Dtx-Branch": branch, "Dtx-Op": op,
                                 "Dtx-Type": typ}, f"{gid}/{branch}/{op}", corr=corr)
        return corr

    def reply(self, corr, timeout=15):
        got = {}

        def poll():
            m, props, body = self.ch.basic_get(self.reply_q, auto_ack=True)
            if m is not None and props.correlation_id == corr:
                got["r"] = (props.headers.get("Dtx-Result"), body.decode())
            return "r" in got

        wait_until(poll, timeout, interval=0.05, what=f"the reply to {corr}")
        return got["r"]

    def close(self):
        self.conn.close()


@pytest.fixture
def hand(env):
    h = Hand(env.url)
    yield h
    h.close()


def test_command_republished_by_hand_applies_once(env, hand):
    e = env
    r = e.run("saga", 10)
    assert r.rc == 0, r
    e.expect((90, 10))
    credit = f"{e.B.queue}.saga.credit"
    body = {"account": "bob", "amount": 10}
    # dtxd's own command again (same message_id): the barrier says duplicate
    res = hand.reply(hand.command(credit, r.gid, "2", "action", body))
    assert res[0] == "SUCCESS", res
    # a msg delivery again (no reply: the command after it tells when it is done)
    m = e.run("msg", 5)
    assert m.rc == 0, m
    hand.publish(f"{e.B.queue}.msg.credit", body | {"amount": 5},
                 {"Dtx-Gid": m.gid, "Dtx-Branch": "1", "Dtx-Op": "action", "Dtx-Type": "msg"},
                 f"{m.gid}/1/action", command=False)
    # a command nobody sent before, published twice: applied once, both SUCCESS
    g = new_gid("hand")
    for _ in range(2):
        res = hand.reply(hand.command(credit, g, "2", "action", {"account": "bob", "amount": 7}))
        assert res[0] == "SUCCESS", res
    e.expect((85, 22))
    e.assert_clean()


def test_poison_messages_are_dead_lettered_and_the_bank_keeps_serving(env, hand):
    e = env
    q = e.B.queue
    dead = q + ".dead"
    good = {"account": "bob", "amount": 3}
    # malformed headers: the loop dead-letters them without the handler
    hand.publish(f"{q}.saga.credit", good, {"Dtx-Branch": "1", "Dtx-Op": "action"},
                 "x/1/action", corr="c1")
    hand.publish(f"{q}.saga.credit", b"\xff\x00not json", None, None, corr="c2")
    # a delivery the bank refuses: unknown routing key, a body that is not
    # JSON, an account that does not exist -> FAILURE, dead-lettered by the loop
    for key, body, tag in ((f"{q}.nope", good, "nope"), (f"{q}.msg.credit", b"{oops", "badjson"),
                           (f"{q}.msg.credit", {"account": "nobody", "amount": 1}, "noacct")):
        g = new_gid(f"poison-{tag}")
        hand.publish(key, body, {"Dtx-Gid": g, "Dtx-Branch": "1", "Dtx-Op": "action",
                                 "Dtx-Type": "msg"}, f"{g}/1/action", command=False)
    # a command with an unknown routing key is answered FAILURE
    res = hand.reply(hand.command(f"{q}.saga.nope", new_gid("poison-cmd"), "1", "action", good))
    assert res[0] == "FAILURE" and "unknown routing key" in res[1], res

    # ... but a check is never answered FAILURE ("rolled back") for it: no reply
    g = new_gid("poison-check")
    corr = hand.command(f"{q}.nope", g, "00", "check", {}, typ="msg")
    with pytest.raises(AssertionError):
        hand.reply(corr, timeout=1.5)
    assert e.B.count_log(rf"amqp refused {g}/00/check .*unknown routing key.* -> RETRY") == 1

    got = e.mgmt.take_n(dead, 5)
    reasons = sorted(m["properties"]["headers"]["x-dtx-reason"] for m in got)
    assert len(got) == 5, reasons
    assert any("Dtx-Gid" in r for r in reasons), reasons
    assert any("unknown routing key" in r for r in reasons), reasons
    assert any("not a JSON object" in r for r in reasons), reasons
    assert any("no such account" in r for r in reasons), reasons
    e.expect((100, 0))
    # the bank keeps serving, in every mode
    for mode in MODES:
        assert e.run(mode, 1).rc == 0
    e.expect((96, 4))
    e.assert_clean()
