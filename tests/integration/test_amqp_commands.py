"""
test_amqp_commands.py - saga, tcc and 2pc branches and a msg's check over
RabbitMQ: commands with reply_to and correlation_id, and the participants'
replies (docs/API.md, "amqp:// targets").

The participants here are pika consumers (amqpfix.AmqpParticipant) whose
answers each test scripts, so the tests can send what a broken or slow
participant sends. libdtx's own participant loop is tested in
tests/libdtx/test_amqp_participant.c and, end to end, by the shop example
(test_shop.py).
"""

import json
import os
import subprocess
import threading
import time

import pytest

from amqpfix import amqp_participants, broker, private_broker, uid  # noqa: F401 (fixtures)
from dtxtest import FAST_RETRY, new_gid, unavailable, wait_until

RETRY = {"initial_interval_ms": 50, "max_interval_ms": 300, "limit": 20}


def q(name):
    return f"amqp:///{name}"


def branch_of(txn, bid):
    return next(b for b in txn["branches"] if str(b["branch"]) == str(bid))


def saga_body(queue, n=2, gid=None, **options):
    body = {
        "type": "saga",
        "gid": gid or new_gid("amqp"),
        "steps": [
            {"action": q(queue), "compensate": q(queue), "payload": {"step": i + 1}} for i in range(n)
        ],
        "retry": dict(RETRY),
    }
    body.update(options)
    return body


def test_saga_commands_carry_the_protocol(broker, dtxd_factory, amqp_participants):
    """Every command has message_id gid/branch/op, a fresh correlation_id,
    reply_to = the reply queue, persistent delivery and the Dtx headers; the
    saga succeeds on SUCCESS replies."""
    url, mq = broker
    reply_q = uid("replies")
    d = dtxd_factory("--amqp-url", url, "--amqp-reply-queue", reply_q)
    name = uid("saga")
    p = amqp_participants(name)
    body = saga_body(name)
    r = d.create(body)
    assert r.status == 201, r
    gid = body["gid"]
    t = d.wait_final(gid)
    assert t["status"] == "succeeded", t
    assert p.ops(gid) == [("1", "action"), ("2", "action")]
    for i, c in enumerate(p.calls):
        assert c.message_id == f"{gid}/{i + 1}/action"
        assert c.reply_to == reply_q
        assert c.correlation_id and c.delivery_mode == 2
        assert c.headers["Dtx-Gid"] == gid and c.headers["Dtx-Type"] == "saga"
        assert c.headers["Dtx-Branch"] == str(i + 1) and c.headers["Dtx-Op"] == "action"
        assert c.json() == {"step": i + 1}
    assert len({c.correlation_id for c in p.calls}) == 2
    # the reply queue is durable and now empty
    info = mq.call("GET", f"/api/queues/%2F/{reply_q}")
    assert info["durable"] is True
    wait_until(lambda: mq.call("GET", f"/api/queues/%2F/{reply_q}").get("messages", 0) == 0, 10)


def test_saga_failure_reply_compensates_over_the_queue(broker, dtxd_factory, amqp_participants):
    """A FAILURE reply to the second action rolls back like a 409: the first
    step's compensate is sent over the queue, and the reason shows."""
    url, _ = broker
    d = dtxd_factory("--amqp-url", url)
    name = uid("fail")

    def decide(cmd):
        if cmd.headers["Dtx-Branch"] == "2" and cmd.op == "action":
            return ("FAILURE", b'{"reason": "insufficient funds"}', 0)
        return "SUCCESS"

    p = amqp_participants(name, decide)
    body = saga_body(name)
    assert d.create(body).status == 201
    t = d.wait_final(body["gid"])
    assert t["status"] == "failed", t
    # the refused step is compensated too (its action may have half-run), then step 1
    assert p.ops(body["gid"]) == [("1", "action"), ("2", "action"), ("2", "compensate"),
                                  ("1", "compensate")]
    b2 = branch_of(t, 2)
    assert "FAILURE" in json.dumps(b2) and "insufficient funds" in json.dumps(b2), b2


def test_no_reply_is_retried_with_the_same_message_id(broker, dtxd_factory, amqp_participants):
    """The first attempt gets no reply: after request_timeout_ms the command
    is published again with the same message_id and a new correlation_id;
    the reply to that one finishes the step."""
    url, _ = broker
    d = dtxd_factory("--amqp-url", url)
    name = uid("silent")
    seen = []

    def decide(cmd):
        seen.append(cmd.message_id)
        return None if seen.count(cmd.message_id) == 1 else "SUCCESS"

    p = amqp_participants(name, decide)
    body = saga_body(name, n=1, request_timeout_ms=400)
    assert d.create(body).status == 201
    t = d.wait_final(body["gid"])
    assert t["status"] == "succeeded", t
    first, second = p.calls[0], p.calls[1]
    assert first.message_id == second.message_id == f"{body['gid']}/1/action"
    assert first.correlation_id != second.correlation_id
    assert second.arrived - first.arrived >= 0.35
    assert branch_of(t, 1)["action_attempts"] == 2, t


def test_late_reply_to_a_given_up_attempt_is_dropped(broker, dtxd_factory, amqp_participants):
    """A reply that arrives after its attempt timed out finds no call: a
    FAILURE then must not fail the saga, which the next attempt's SUCCESS
    finishes."""
    url, _ = broker
    d = dtxd_factory("--amqp-url", url)
    name = uid("late")
    late = []
    n = {"calls": 0}

    def decide(cmd):
        n["calls"] += 1
        if n["calls"] == 1:
            late.append(cmd)  # answered later, by hand
            return None
        return "SUCCESS"

    p = amqp_participants(name, decide)
    body = saga_body(name, n=1, request_timeout_ms=300)
    assert d.create(body).status == 201
    wait_until(lambda: len(p.calls) >= 2, 10, what="the retry")
    # now answer the first attempt with a FAILURE: too late, dropped
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_publish("", late[0].reply_to, b"too late",
                     pika.BasicProperties(correlation_id=late[0].correlation_id,
                                          headers={"Dtx-Result": "FAILURE"}))
    conn.close()
    t = d.wait_final(body["gid"])
    assert t["status"] == "succeeded", t
    assert d.txn(body["gid"])["status"] == "succeeded"


def test_ongoing_is_asked_again(broker, dtxd_factory, amqp_participants):
    """ONGOING (as 425) asks again after the fixed interval until the
    participant has an answer."""
    url, _ = broker
    d = dtxd_factory("--amqp-url", url)
    name = uid("ongoing")
    n = {"calls": 0}

    def decide(cmd):
        n["calls"] += 1
        return "ONGOING" if n["calls"] <= 2 else "SUCCESS"

    p = amqp_participants(name, decide)
    body = saga_body(name, n=1)
    assert d.create(body).status == 201
    t = d.wait_final(body["gid"])
    assert t["status"] == "succeeded", t
    assert [c.message_id for c in p.calls] == [f"{body['gid']}/1/action"] * 3


@pytest.mark.parametrize("result", ["", "MAYBE", "success"])
def test_a_reply_without_a_valid_result_is_transient(broker, dtxd_factory, amqp_participants, result):
    """A reply whose Dtx-Result is missing or not one of the three words is
    a transient failure: retried, never taken as success or failure."""
    url, _ = broker
    d = dtxd_factory("--amqp-url", url)
    name = uid("bad")
    n = {"calls": 0}

    def decide(cmd):
        n["calls"] += 1
        return result if n["calls"] == 1 else "SUCCESS"

    p = amqp_participants(name, decide)
    body = saga_body(name, n=1)
    assert d.create(body).status == 201
    t = d.wait_final(body["gid"])
    assert t["status"] == "succeeded", t
    assert len(p.calls) == 2


def test_tcc_confirm_and_cancel_over_amqp(broker, dtxd_factory, amqp_participants):
    """TCC branches registered with amqp:// confirm and cancel URLs: submit
    confirms each one over the queue, abort cancels each one."""
    url, _ = broker
    d = dtxd_factory("--amqp-url", url)
    name = uid("tcc")
    p = amqp_participants(name)
    for action, op in (("submit", "confirm"), ("abort", "cancel")):
        gid = new_gid("tcc")
        r = d.create({"type": "tcc", "gid": gid, "retry": dict(RETRY)})
        assert r.status == 201, r
        for b in ("a", "b"):
            r = d.post(f"/v1/transactions/{gid}/branches",
                       {"branch": b, "confirm": q(name), "cancel": q(name), "payload": {"b": b}})
            assert r.status in (200, 201), r
        r = d.post(f"/v1/transactions/{gid}/{action}", {"wait": True})
        assert r.status == 200, r
        t = d.wait_final(gid)
        assert t["status"] == ("succeeded" if action == "submit" else "failed"), t
        assert sorted(p.ops(gid)) == [("a", op), ("b", op)]


def test_2pc_prepare_failure_rolls_back_every_branch(broker, dtxd_factory, amqp_participants):
    """2pc over AMQP: one branch votes FAILURE on prepare, so every branch is
    rolled back; with both voting SUCCESS both are committed."""
    url, _ = broker
    d = dtxd_factory("--amqp-url", url)
    name = uid("xa")

    def decide(cmd):
        if cmd.op == "prepare" and cmd.json().get("vote") == "no":
            return "FAILURE"
        return "SUCCESS"

    p = amqp_participants(name, decide)
    for vote, status, phase2 in (("no", "failed", "rollback"), ("yes", "succeeded", "commit")):
        gid = new_gid("xa")
        branches = [
            {"branch": b, "prepare": q(name), "commit": q(name), "rollback": q(name),
             "payload": {"vote": vote if b == "b" else "yes"}}
            for b in ("a", "b")
        ]
        r = d.create({"type": "2pc", "gid": gid, "branches": branches, "submit": True,
                      "retry": dict(RETRY)})
        assert r.status == 201, r
        t = d.wait_final(gid)
        assert t["status"] == status, t
        ops = p.ops(gid)
        assert sorted(o for o in ops if o[1] == "prepare") == [("a", "prepare"), ("b", "prepare")]
        assert sorted(o for o in ops if o[1] != "prepare") == [("a", phase2), ("b", phase2)], ops


def test_msg_check_over_amqp(broker, dtxd_factory, amqp_participants):
    """A msg never submitted: dtxd asks its amqp:// check after timeout_ms.
    SUCCESS (committed) delivers the step; FAILURE (rolled back) fails the
    transaction and delivers nothing."""
    url, mq = broker
    d = dtxd_factory("--amqp-url", url)
    check = uid("check")
    out = uid("out")
    mq.queue(out)
    answers = {}
    p = amqp_participants(check, lambda cmd: answers[cmd.gid])
    for committed in (True, False):
        gid = new_gid("msg")
        answers[gid] = "SUCCESS" if committed else "FAILURE"
        r = d.create({"type": "msg", "gid": gid, "check": q(check), "timeout_ms": 200,
                      "steps": [{"action": q(out), "payload": {"gid": gid}}], "retry": dict(RETRY)})
        assert r.status == 201, r
        t = d.wait_final(gid)
        assert [op for (_, op) in p.ops(gid)] == ["check"], p.ops(gid)
        assert p.calls[-1].headers["Dtx-Type"] == "msg" and p.calls[-1].reply_to
        if committed:
            assert t["status"] == "succeeded", t
            got = mq.take_n(out, 1)
            assert [m["properties"]["message_id"] for m in got] == [f"{gid}/1/action"]
        else:
            assert t["status"] == "failed", t
    assert mq.take(out) == []


def test_invalid_amqp_urls_refused_on_every_field(broker, dtxd_factory):
    """An amqp:// URL that names no exchange and routing key is refused with
    invalid_url on its field, in every mode, and nothing is made."""
    url, _ = broker
    d = dtxd_factory("--amqp-url", url)
    bad, ok = "amqp:///", "amqp:///x"
    cases = [
        ({"type": "saga", "steps": [{"action": bad, "compensate": ok}]}, "steps[0].action"),
        ({"type": "saga", "steps": [{"action": ok, "compensate": bad}]}, "steps[0].compensate"),
        ({"type": "msg", "check": bad, "steps": [{"action": ok}]}, "check"),
        ({"type": "tcc", "branches": [{"confirm": bad, "cancel": ok}]}, "branches[0].confirm"),
        ({"type": "2pc", "branches": [{"prepare": ok, "commit": ok, "rollback": bad}]},
         "branches[0].rollback"),
    ]
    for body, field in cases:
        r = d.create(body)
        assert r.status == 400, (body, r)
        assert r.body["error"]["code"] == "invalid_url" and r.body["error"]["field"] == field, r
    assert d.list().body["transactions"] == []


def test_restart_while_waiting_for_a_reply(broker, dtxd_factory, amqp_participants):
    """dtxd is killed (-9) while a command waits for its reply. After the
    restart it publishes the command again (same message_id); the reply to
    the attempt from before the crash is dropped, the new one counts."""
    url, _ = broker
    d = dtxd_factory("--amqp-url", url)
    name = uid("crash")
    gate = threading.Event()
    first = []

    def decide(cmd):
        if not first:
            first.append(cmd)
            gate.wait(20)  # hold the first attempt until dtxd is back
            return "SUCCESS"
        return "SUCCESS"

    p = amqp_participants(name, decide)
    body = saga_body(name, n=1, request_timeout_ms=30000)
    assert d.create(body).status == 201
    wait_until(lambda: first, 10, what="the first command")
    d.kill9()
    d.start()
    gate.set()
    t = d.wait_final(body["gid"], timeout=40)
    assert t["status"] == "succeeded", t
    ids = [c.message_id for c in p.calls]
    assert ids == [f"{body['gid']}/1/action"] * 2, ids
    assert p.calls[0].correlation_id != p.calls[1].correlation_id


@pytest.mark.slow
def test_broker_restart_while_commands_wait(private_broker, dtxd_factory):
    """The broker stops while commands are published and waiting for
    replies, then comes back: every saga still ends succeeded and each
    participant saw each of its commands (by message_id) until one was
    answered; no saga was reported done without its reply."""
    from amqpfix import AmqpParticipant

    b = private_broker
    d = dtxd_factory("--amqp-url", b.url)
    name = uid("restart")
    # enough retries to outlast the restart (an exhausted action rolls back)
    patient = {"initial_interval_ms": 100, "max_interval_ms": 1000, "limit": 1000}
    gids = []
    for i in range(10):
        body = saga_body(name, n=2, request_timeout_ms=1000, retry=patient)
        assert d.create(body).status == 201
        gids.append(body["gid"])
    time.sleep(0.3)
    b.stop()
    time.sleep(1.0)
    for i in range(5):
        body = saga_body(name, n=2, request_timeout_ms=1000, retry=patient)
        assert d.create(body).status == 201
        gids.append(body["gid"])
    for g in gids:
        assert d.txn(g)["status"] != "succeeded"
    b.start()
    p = AmqpParticipant(b.url, name)
    try:
        for g in gids:
            t = d.wait_final(g, timeout=60)
            assert t["status"] == "succeeded", t
            got = {m for (m, op) in p.ops(g)}
            assert got == {"1", "2"}, p.ops(g)
    finally:
        p.stop()


# ---------------------------------------------------------------- TLS


@pytest.fixture
def tls_broker(broker):
    url, cacert = os.environ.get("DTX_TEST_AMQPS_URL"), os.environ.get("DTX_TEST_AMQP_CACERT")
    if not url or not cacert:
        unavailable("no TLS listener: set DTX_TEST_AMQPS_URL and DTX_TEST_AMQP_CACERT "
                    "(scripts/rabbitmq.sh)", "DTX_REQUIRE_AMQP")
    return url, cacert


def test_tls_broker(broker, tls_broker, dtxd_factory, amqp_participants):
    """amqps:// with the CA that signed the broker's certificate: commands
    and replies go over TLS (the broker lists dtxd's connection as TLS)."""
    url, cacert = tls_broker
    _, mq = broker
    d = dtxd_factory("--amqp-cacert", cacert, env={"DTX_AMQP_URL": url})
    name = uid("tls")
    p = amqp_participants(name)
    body = saga_body(name)
    assert d.create(body).status == 201
    t = d.wait_final(body["gid"])
    assert t["status"] == "succeeded", t
    assert len(p.calls) == 2
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    # the management API's connection list lags a few seconds
    wait_until(lambda: any(c.get("ssl") and c.get("port") == port
                           for c in mq.call("GET", "/api/connections")), 20,
               interval=0.5, what="a TLS connection")
    assert "guest:guest" not in d.log_text() and "amqps://guest@localhost" in d.log_text()


def test_tls_refuses_an_unknown_certificate(broker, tls_broker, dtxd_factory, tmp_path):
    """A broker whose certificate does not chain to the given CA is never
    talked to: the step stays pending with the verification error in
    last_error, nothing is published, and the password is not logged."""
    url, _ = tls_broker
    other = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=not the broker's CA", "-keyout", str(tmp_path / "k.pem"),
                    "-out", str(other)], check=True, capture_output=True)
    d = dtxd_factory("--amqp-cacert", str(other), env={"DTX_AMQP_URL": url})
    name = uid("tlsbad")
    _, mq = broker
    mq.queue(name)
    body = saga_body(name, n=1)
    assert d.create(body).status == 201
    t = d.wait_txn(body["gid"], lambda t: branch_of(t, 1)["action_attempts"] >= 2, timeout=20)
    err = branch_of(t, 1)["last_error"]
    assert "broker unreachable" in json.dumps(err), err
    assert t["status"] == "submitted"
    assert "certificate" in d.log_text() or "SSL" in d.log_text() or "TLS" in d.log_text()
    assert "guest:guest" not in d.log_text()
    assert mq.take(name) == []


def test_tls_without_cacert_uses_the_system_store(broker, tls_broker, dtxd_factory,
                                                  amqp_participants):
    """With no --amqp-cacert the system's CA store verifies the broker
    (OpenSSL's default paths; SSL_CERT_FILE points them at the test CA here,
    as an operator's /etc/ssl/certs would hold a real one)."""
    url, cacert = tls_broker
    name = uid("tlssys")
    p = amqp_participants(name)
    d = dtxd_factory(env={"DTX_AMQP_URL": url, "SSL_CERT_FILE": cacert})
    body = saga_body(name, n=1)
    assert d.create(body).status == 201
    assert d.wait_final(body["gid"])["status"] == "succeeded"
    assert len(p.calls) == 1


def test_a_failure_text_that_is_not_utf8_stays_valid_json(broker, dtxd_factory, amqp_participants):
    """A FAILURE reply's body becomes the branch's last_error. Whatever its
    bytes (cut in the middle of a character, invalid UTF-8, control
    characters, quotes), GET answers valid JSON: bad bytes become U+FFFD."""
    url, _ = broker
    d = dtxd_factory("--amqp-url", url)
    name = uid("utf8")
    # invalid UTF-8, a control character, a quote and a backslash, then
    # enough text that the 200-byte cut falls inside the final "é"
    body_bytes = b"bad\xff\xfe\x01\"\\ " + b"a" * 190 + "\u00e9".encode()

    def decide(cmd):
        if cmd.op == "action":
            return ("FAILURE", body_bytes, 0)
        return "SUCCESS"

    amqp_participants(name, decide)
    body = saga_body(name, n=1)
    assert d.create(body).status == 201
    t = d.wait_final(body["gid"])  # parses the JSON answer
    assert t["status"] == "failed", t
    err = branch_of(t, 1)["last_error"]
    assert err.startswith('the participant replied FAILURE: bad\ufffd\ufffd\x01"\\ '), err
    assert err.endswith("a" * 190), err  # cut before the "é", not inside it
