"""
test_amqp.py - msg steps delivered to RabbitMQ (amqp:// targets).

The broker: see amqpfix.py. Commands with replies (saga, tcc, 2pc, a msg's
check) are in test_amqp_commands.py. Queues, exchanges and bindings are made, and messages read back, over the
management API with the standard library. The test that restarts the broker
starts a node of its own (scripts/rabbitmq.sh) rather than restart the
shared one.
"""

import json
import re
import time
import urllib.parse
import uuid

import pytest

from amqpfix import broker, private_broker, uid  # noqa: F401 (fixtures)
from dtxtest import create_submit, first_seen, msg_body, new_gid, submit, wait_until


def ids(messages):
    return [m["properties"]["message_id"] for m in messages]


# ---------------------------------------------------------------- delivery


def test_msg_delivered_to_exchange_in_order(broker, dtxd_factory):
    url, mq = broker
    ex, q = uid("ex"), uid("q")
    mq.exchange(ex)
    mq.queue(q)
    mq.bind(ex, q, "order.created")
    d = dtxd_factory("--amqp-url", url)
    gid = new_gid("amqp")
    t = create_submit(d, msg_body([f"amqp://{ex}/order.created"] * 3, gid=gid), wait=True)
    assert t["status"] == "succeeded", t
    msgs = mq.take_n(q, 3)
    assert ids(msgs) == [f"{gid}/1/action", f"{gid}/2/action", f"{gid}/3/action"]
    for n, m in enumerate(msgs, 1):
        p = m["properties"]
        assert json.loads(m["payload"]) == {"i": n}
        assert p["delivery_mode"] == 2  # persistent
        assert p["content_type"] == "application/json"
        h = p["headers"]
        assert h["Dtx-Gid"] == gid and h["Dtx-Branch"] == str(n)
        assert h["Dtx-Op"] == "action" and h["Dtx-Type"] == "msg"
        assert re.match(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$", h["traceparent"])
        assert m["exchange"] == ex and m["routing_key"] == "order.created"
    assert mq.take(q) == []


def test_default_exchange_and_many_transactions_keep_order(broker, dtxd_factory):
    """amqp:///<queue> is the default exchange. Several transactions at once:
    each one's deliveries arrive in its own order."""
    url, mq = broker
    q = uid("q")
    mq.queue(q)
    d = dtxd_factory("--amqp-url", url)
    gids = [new_gid("many") for _ in range(20)]
    for g in gids:
        assert d.create(msg_body([f"amqp:///{q}"] * 4, gid=g)).status == 201
    for g in gids:
        submit(d, g)
    for g in gids:
        assert d.wait_final(g)["status"] == "succeeded"
    msgs = mq.take_n(q, 80)
    got = ids(msgs)
    assert len(got) == 80 and len(set(got)) == 80
    for g in gids:
        mine = [i for i in got if i.startswith(g + "/")]
        assert mine == [f"{g}/{n}/action" for n in range(1, 5)]


def test_unroutable_is_retried_until_bound(broker, dtxd_factory):
    url, mq = broker
    ex, q = uid("ex"), uid("q")
    mq.exchange(ex)
    mq.queue(q)
    d = dtxd_factory("--amqp-url", url)
    retry = {"initial_interval_ms": 50, "max_interval_ms": 200, "limit": 1000}
    gid = create_submit(d, msg_body([f"amqp://{ex}/k1", f"amqp://{ex}/k1"], retry=retry))["gid"]
    t = d.wait_txn(gid, lambda t: (t["branches"][0]["last_error"] or "").find("unroutable") >= 0
                   and t["branches"][0]["action_attempts"] >= 3, what="unroutable retries")
    assert t["status"] == "submitted"
    assert ex in t["branches"][0]["last_error"] and "k1" in t["branches"][0]["last_error"]
    assert t["branches"][1]["status"] == "pending"  # in order: nothing after it went out
    mq.bind(ex, q, "k1")
    assert d.wait_final(gid)["status"] == "succeeded"
    assert ids(mq.take_n(q, 2)) == [f"{gid}/1/action", f"{gid}/2/action"]


def test_missing_exchange_is_retried_until_declared(broker, dtxd_factory):
    """Publishing to an exchange that does not exist closes the channel
    (404): TRANSIENT, the channel is reopened, the retry succeeds once the
    exchange is there."""
    url, mq = broker
    ex, q = uid("ex"), uid("q")
    d = dtxd_factory("--amqp-url", url)
    retry = {"initial_interval_ms": 50, "max_interval_ms": 200, "limit": 1000}
    gid = create_submit(d, msg_body([f"amqp://{ex}/k"], retry=retry))["gid"]
    t = d.wait_txn(gid, lambda t: "NOT_FOUND" in (t["branches"][0]["last_error"] or ""),
                   what="a 404 from the broker")
    assert t["status"] == "submitted"
    mq.exchange(ex)
    mq.queue(q)
    mq.bind(ex, q, "k")
    assert d.wait_final(gid)["status"] == "succeeded"
    assert ids(mq.take_n(q, 1)) == [f"{gid}/1/action"]


def test_amqp_targets_validated(broker, dtxd_factory):
    url, mq = broker
    d = dtxd_factory("--amqp-url", url)
    for bad in ("amqp:///", "amqp://no-routing-key", "amqp://ex/%zz"):
        r = d.create(msg_body([bad]))
        assert r.status == 400 and r.body["error"]["code"] == "invalid_url", (bad, r)
    # without --amqp-url no transport serves amqp://
    plain = dtxd_factory()
    r = plain.create(msg_body(["amqp:///q"]))
    assert r.status == 400 and r.body["error"]["code"] == "invalid_url", r


# ---------------------------------------------------------------- faults


@pytest.mark.slow
def test_broker_restart_loses_nothing(private_broker, dtxd_factory):
    """Stop the broker while deliveries are under way and while a transaction
    waits to deliver; start it again: everything is delivered, nothing lost,
    and the only duplicates carry the same message_id."""
    b = private_broker
    q = uid("q")
    b.mgmt.queue(q)
    d = dtxd_factory("--amqp-url", b.url, "--request-timeout-ms", "2000")
    retry = {"initial_interval_ms": 50, "max_interval_ms": 300, "limit": 100000}
    gids = [new_gid("rs") for _ in range(30)]
    for g in gids:
        assert d.create(msg_body([f"amqp:///{q}"] * 3, gid=g, retry=retry)).status == 201
    for g in gids:
        submit(d, g)
    b.stop()  # mid-delivery
    late = create_submit(d, msg_body([f"amqp:///{q}"] * 2, retry=retry))["gid"]
    t = d.wait_txn(late, lambda t: t["branches"][0]["last_error"] is not None, what="an error")
    assert t["status"] == "submitted", t
    time.sleep(1.0)
    assert d.txn(late)["status"] == "submitted"
    b.start()
    for g in gids + [late]:
        assert d.wait_final(g, timeout=60)["status"] == "succeeded"
    want = {f"{g}/{n}/action" for g in gids for n in (1, 2, 3)} | {f"{late}/1/action", f"{late}/2/action"}
    got = ids(b.mgmt.take_n(q, len(want), timeout=30))
    assert set(got) == want  # nothing lost, nothing unexpected
    for g in gids + [late]:
        mine = first_seen(i for i in got if i.startswith(g + "/"))
        assert mine == sorted(mine, key=lambda i: int(i.split("/")[1]))  # in order


def test_kill9_mid_delivery(broker, dtxd_factory):
    """kill -9 of dtxd while it delivers: after the restart every step is
    delivered; a step may be there twice, with the same message_id."""
    url, mq = broker
    q = uid("q")
    mq.queue(q)
    d = dtxd_factory("--amqp-url", url)
    gids = [new_gid("k9") for _ in range(40)]
    for g in gids:
        assert d.create(msg_body([f"amqp:///{q}"] * 5, gid=g)).status == 201
    for g in gids:
        submit(d, g)
    time.sleep(0.02)
    d.kill9()
    d.restart()
    for g in gids:
        assert d.wait_final(g, timeout=60)["status"] == "succeeded"
    want = {f"{g}/{n}/action" for g in gids for n in range(1, 6)}
    got = ids(mq.take_n(q, len(want), timeout=30))
    assert set(got) == want
    for g in gids:
        mine = [i for i in got if i.startswith(g + "/")]
        assert first_seen(mine) == [f"{g}/{n}/action" for n in range(1, 6)]


def test_password_never_logged(broker, dtxd_factory):
    url, mq = broker
    user, password = uid("user"), "pw-" + uuid.uuid4().hex
    mq.user(user, password)
    u = urllib.parse.urlsplit(url)
    good = f"amqp://{user}:{password}@{u.hostname}:{u.port}{u.path}"
    bad = f"amqp://{user}:{password}-wrong@{u.hostname}:{u.port}{u.path}"
    q = uid("q")
    mq.queue(q)
    # in the environment, not on the command line (where ps shows it)
    d = dtxd_factory(env={"DTX_AMQP_URL": good})
    assert create_submit(d, msg_body([f"amqp:///{q}"]), wait=True)["status"] == "succeeded"
    d.term()
    # a refused login is logged, without the password
    d2 = dtxd_factory(env={"DTX_AMQP_URL": bad})
    gid = create_submit(d2, msg_body([f"amqp:///{q}"]))["gid"]
    t = d2.wait_txn(gid, lambda t: t["branches"][0]["last_error"] is not None, what="an error")
    assert t["status"] == "submitted"
    d2.term()
    for log in (d.log_text(), d2.log_text()):
        assert user in log
        assert password not in log
    assert "login" in d2.log_text() or "log in" in d2.log_text()


def test_sigterm_while_the_broker_does_not_answer(dtxd_factory):
    """A "broker" that accepts TCP connections and never says a word (a
    stopped or wedged RabbitMQ): dtxd's connection thread is stuck in the
    AMQP handshake, and SIGTERM must still end dtxd promptly, exit 0."""
    import socket
    import threading

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held = []

    def accept():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)  # keep it open, answer nothing

    threading.Thread(target=accept, daemon=True).start()
    try:
        port = srv.getsockname()[1]
        d = dtxd_factory("--amqp-url", f"amqp://guest:guest@127.0.0.1:{port}/%2f")
        wait_until(lambda: held, timeout=10, what="dtxd to connect to the silent broker")
        time.sleep(0.5)  # well inside the handshake
        t0 = time.monotonic()
        assert d.term(timeout=20) == 0
        assert time.monotonic() - t0 < 8, "the handshake held the exit"
    finally:
        srv.close()
        for c in held:
            c.close()
