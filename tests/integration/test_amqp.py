"""
test_amqp.py - msg steps delivered to RabbitMQ (amqp:// targets).

The broker comes from DTX_TEST_AMQP_URL (AMQP) and DTX_TEST_AMQP_MGMT (its
management API, http://user:pass@host:port), as scripts/rabbitmq.sh prints
them; without them the tests are skipped (failed with DTX_REQUIRE_AMQP=1).
Queues, exchanges and bindings are made, and messages read back, over the
management API with the standard library. The test that restarts the broker
starts a node of its own (scripts/rabbitmq.sh) rather than restart the
shared one.
"""

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from dtxtest import FAST_RETRY, free_port, new_gid, wait_until

REPO = Path(__file__).resolve().parents[2]
RABBITMQ_SH = REPO / "scripts" / "rabbitmq.sh"


def _require():
    url, mgmt = os.environ.get("DTX_TEST_AMQP_URL"), os.environ.get("DTX_TEST_AMQP_MGMT")
    if not url or not mgmt:
        msg = "no RabbitMQ: set DTX_TEST_AMQP_URL and DTX_TEST_AMQP_MGMT (scripts/rabbitmq.sh)"
        if os.environ.get("DTX_REQUIRE_AMQP") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return url, mgmt


class Mgmt:
    """RabbitMQ's management HTTP API, for the "/" vhost."""

    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.base = f"http://{u.hostname}:{u.port}"
        cred = f"{urllib.parse.unquote(u.username or 'guest')}:{urllib.parse.unquote(u.password or 'guest')}"
        self.auth = "Basic " + base64.b64encode(cred.encode()).decode()

    def call(self, method, path, body=None, timeout=10):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", self.auth)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def queue(self, name):
        self.call("PUT", f"/api/queues/%2F/{urllib.parse.quote(name, safe='')}", {"durable": True})

    def exchange(self, name, kind="direct"):
        self.call("PUT", f"/api/exchanges/%2F/{urllib.parse.quote(name, safe='')}", {"type": kind, "durable": True})

    def bind(self, exchange, queue, key):
        e, q = urllib.parse.quote(exchange, safe=""), urllib.parse.quote(queue, safe="")
        self.call("POST", f"/api/bindings/%2F/e/{e}/q/{q}", {"routing_key": key})

    def user(self, name, password):
        self.call("PUT", f"/api/users/{name}", {"password": password, "tags": ""})
        self.call("PUT", f"/api/permissions/%2F/{name}", {"configure": ".*", "write": ".*", "read": ".*"})

    def take(self, name, count=1000):
        """Remove and return up to count messages of queue name, in order."""
        path = f"/api/queues/%2F/{urllib.parse.quote(name, safe='')}/get"
        return self.call("POST", path, {"count": count, "ackmode": "ack_requeue_false", "encoding": "auto"})

    def take_n(self, name, n, timeout=20):
        """Take messages of queue name until there are at least n (the
        queue's statistics lag: read the messages themselves); then wait a
        moment for stragglers (duplicates) and take those too."""
        got = []

        def enough():
            got.extend(self.take(name))
            return len(got) >= n

        wait_until(enough, timeout, interval=0.2, what=f"{n} messages in {name}")
        time.sleep(0.3)
        got.extend(self.take(name))
        return got


@pytest.fixture
def broker():
    url, mgmt = _require()
    return url, Mgmt(mgmt)


def uid(prefix):
    return f"dtx-{prefix}-{uuid.uuid4().hex[:8]}"


def msg_body(targets, gid=None, retry=None, **options):
    """A msg transaction delivering payload {"i": n} to each target in turn."""
    body = {
        "type": "msg",
        "check": "http://127.0.0.1:9/check",
        "steps": [{"action": t, "payload": {"i": i + 1}} for i, t in enumerate(targets)],
        "retry": retry or dict(FAST_RETRY),
    }
    if gid:
        body["gid"] = gid
    body.update(options)
    return body


def submit(dtxd, gid, body=None):
    r = dtxd.post(f"/v1/transactions/{gid}/submit", body or {})
    assert r.status == 200, r
    return r.body


def create_submit(dtxd, body, wait=False):
    r = dtxd.create(body)
    assert r.status == 201, r
    return submit(dtxd, r.body["gid"], {"wait": True} if wait else None)


def ids(messages):
    return [m["properties"]["message_id"] for m in messages]


def first_seen(seq):
    out = []
    for x in seq:
        if x not in out:
            out.append(x)
    return out


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


def test_other_modes_refused_at_validation(broker, dtxd_factory, participant):
    """amqp:// serves msg deliveries only, for now: anywhere else (a saga's
    action or compensate, a tcc/2pc branch's URLs, a msg's check) the
    request is refused with invalid_url on that field, and nothing is made."""
    url, mq = broker
    d = dtxd_factory("--amqp-url", url)
    q = f"amqp:///{uid('q')}"
    http = participant.url("/x")
    cases = [
        ({"type": "saga", "steps": [{"action": q, "compensate": http}]}, "steps[0].action"),
        ({"type": "saga", "steps": [{"action": http, "compensate": q}]}, "steps[0].compensate"),
        ({"type": "msg", "check": q, "steps": [{"action": q}]}, "check"),
        ({"type": "tcc", "branches": [{"confirm": q, "cancel": http}]}, "branches[0].confirm"),
        ({"type": "2pc", "branches": [{"prepare": http, "commit": http, "rollback": q}]},
         "branches[0].rollback"),
    ]
    for body, field in cases:
        r = d.create(body)
        assert r.status == 400, (body, r)
        assert r.body["error"]["code"] == "invalid_url" and r.body["error"]["field"] == field, r
        assert "msg steps only" in r.body["error"]["message"], r
    assert d.list().body["transactions"] == []


# ---------------------------------------------------------------- faults


class PrivateBroker:
    """A RabbitMQ node of this test's own (scripts/rabbitmq.sh), to stop and
    start. Its directory is under /tmp: the rabbitmq user must reach it."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="dtx-test-rmq-", dir="/tmp")
        self.port = free_port()
        self.url = self.mgmt = None

    def start(self):
        out = subprocess.run([str(RABBITMQ_SH), "start", self.dir, str(self.port)],
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]
        env = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
        self.url, self.mgmt = env["DTX_TEST_AMQP_URL"], Mgmt(env["DTX_TEST_AMQP_MGMT"])

    def stop(self):
        subprocess.run([str(RABBITMQ_SH), "stop", self.dir], capture_output=True, timeout=180)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_broker():
    _require()
    if not os.access(RABBITMQ_SH, os.X_OK) or shutil.which("python3") is None:
        pytest.skip("scripts/rabbitmq.sh not runnable")
    b = PrivateBroker()
    try:
        b.start()
        yield b
    finally:
        b.cleanup()


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
