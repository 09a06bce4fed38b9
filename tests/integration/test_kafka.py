"""
test_kafka.py - msg steps produced to Kafka (kafka:// targets).

The cluster is librdkafka's mock cluster running in a process of its own
(tests/tools/kafka_mock, found through $KAFKA_MOCK or next to $DTXD): a
Kafka protocol implementation kept in memory, reached over TCP by the real
dtxd and by kcat, which reads the records back. The test talks to the mock
on its stdin to take brokers down and up. Without kcat or the mock binary
the tests are skipped (failed with DTX_REQUIRE_KAFKA=1). The mock is not a
Kafka broker: see docs/API.md "kafka:// targets" for what this does not
cover.
"""

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from dtxtest import (TRACEPARENT_RE, create_submit, first_seen, free_port, msg_body, new_gid,
                     submit, wait_until)

REPO = Path(__file__).resolve().parents[2]


def _mock_path():
    if os.environ.get("KAFKA_MOCK"):
        return Path(os.environ["KAFKA_MOCK"])
    dtxd = Path(os.environ.get("DTXD") or REPO / "build" / "dtxd")
    return dtxd.parent / "tests" / "tools" / "kafka_mock"


def _require():
    missing = []
    if shutil.which("kcat") is None:
        missing.append("kcat (apt-get install kcat)")
    mock = _mock_path()
    if not (mock.is_file() and os.access(mock, os.X_OK)):
        missing.append(f"the mock cluster {mock} (make; or set KAFKA_MOCK)")
    if missing:
        msg = "no Kafka test setup: missing " + ", ".join(missing)
        if os.environ.get("DTX_REQUIRE_KAFKA") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return mock


class MockCluster:
    """tests/tools/kafka_mock: bootstrap servers on its first line, then
    one command a line on stdin, answered "ok" or "error ..."."""

    def __init__(self, binary, brokers=1):
        self.proc = subprocess.Popen(
            [str(binary), str(brokers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.bootstrap = self.proc.stdout.readline().strip()
        assert self.bootstrap, "kafka_mock printed no bootstrap servers"

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer == "ok", f"kafka_mock {line!r}: {answer!r}"

    def down(self, broker=-1):
        self.command(f"down {broker}")

    def up(self, broker=-1):
        self.command(f"up {broker}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def read(self, topic):
        """Every record of topic, as kcat sees it (-J), in (partition,
        offset) order; headers as a dict (each name appears once)."""
        out = subprocess.run(
            ["kcat", "-C", "-b", self.bootstrap, "-t", topic, "-e", "-J", "-q",
             "-X", "topic.metadata.refresh.interval.ms=1000"],
            capture_output=True, text=True, timeout=60,
        )
        recs = []
        for line in out.stdout.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            h = r.get("headers") or []
            r["headers"] = dict(zip(h[0::2], h[1::2]))
            recs.append(r)
        recs.sort(key=lambda r: (r["partition"], r["offset"]))
        return recs

    def read_n(self, topic, n, timeout=30):
        """Records of topic once there are at least n."""
        got = {}

        def enough():
            got["r"] = self.read(topic)
            return len(got["r"]) >= n

        wait_until(enough, timeout, interval=0.3, what=f"{n} records in {topic}")
        return got["r"]


@pytest.fixture
def kafka():
    mock = _require()
    c = MockCluster(mock)
    try:
        yield c
    finally:
        c.stop()


def topic_name(prefix):
    return f"dtx-{prefix}-{uuid.uuid4().hex[:8]}"


def ids(records):
    return [r["headers"]["Dtx-Message-Id"] for r in records]


# ---------------------------------------------------------------- delivery


def test_msg_delivered_with_key_and_headers(kafka, dtxd_factory):
    topic = topic_name("orders")
    d = dtxd_factory("--kafka-brokers", kafka.bootstrap)
    gid = new_gid("kafka")
    t = create_submit(d, msg_body([f"kafka://{topic}"] * 3, gid=gid), wait=True)
    assert t["status"] == "succeeded", t
    recs = kafka.read_n(topic, 3)
    assert len(recs) == 3, recs
    assert len({r["partition"] for r in recs}) == 1  # key = gid: one partition
    assert ids(recs) == [f"{gid}/1/action", f"{gid}/2/action", f"{gid}/3/action"]
    for n, r in enumerate(recs, 1):
        assert r["key"] == gid
        assert json.loads(r["payload"]) == {"i": n}
        h = r["headers"]
        assert h["Dtx-Gid"] == gid and h["Dtx-Branch"] == str(n)
        assert h["Dtx-Op"] == "action" and h["Dtx-Type"] == "msg"
        assert TRACEPARENT_RE.match(h["traceparent"]), h
        assert set(h) == {"Dtx-Gid", "Dtx-Branch", "Dtx-Op", "Dtx-Type", "Dtx-Message-Id", "traceparent"}


def test_many_transactions_keep_their_order(kafka, dtxd_factory):
    """Twenty transactions at once, four steps each: every one's records are
    in its own partition in step order, none lost, none twice."""
    topic = topic_name("many")
    d = dtxd_factory("--kafka-brokers", kafka.bootstrap)
    gids = [new_gid("many") for _ in range(20)]
    for g in gids:
        assert d.create(msg_body([f"kafka://{topic}"] * 4, gid=g)).status == 201
    for g in gids:
        submit(d, g)
    for g in gids:
        assert d.wait_final(g)["status"] == "succeeded"
    recs = kafka.read_n(topic, 80)
    got = ids(recs)
    assert len(got) == 80 and len(set(got)) == 80
    for g in gids:
        mine = [r for r in recs if r["key"] == g]
        assert len({r["partition"] for r in mine}) == 1
        assert ids(mine) == [f"{g}/{n}/action" for n in range(1, 5)]


def test_steps_to_different_topics(kafka, dtxd_factory):
    a, b = topic_name("a"), topic_name("b")
    d = dtxd_factory("--kafka-brokers", kafka.bootstrap)
    gid = create_submit(d, msg_body([f"kafka://{a}", f"kafka://{b}"]), wait=True)["gid"]
    assert d.txn(gid)["status"] == "succeeded"
    assert ids(kafka.read_n(a, 1)) == [f"{gid}/1/action"]
    assert ids(kafka.read_n(b, 1)) == [f"{gid}/2/action"]


# ---------------------------------------------------------------- faults


def test_broker_down_mid_flight_then_up(kafka, dtxd_factory):
    """The cluster goes down while deliveries are under way and while a
    transaction waits to deliver: they fail TRANSIENT (with a clear error)
    and are retried; once it is back everything is delivered, nothing is
    lost, each transaction in order (a retry may leave a duplicate, with
    the same Dtx-Message-Id)."""
    topic = topic_name("down")
    d = dtxd_factory("--kafka-brokers", kafka.bootstrap, "--request-timeout-ms", "1000")
    retry = {"initial_interval_ms": 50, "max_interval_ms": 300, "limit": 100000}
    gids = [new_gid("dn") for _ in range(20)]
    for g in gids:
        assert d.create(msg_body([f"kafka://{topic}"] * 3, gid=g, retry=retry)).status == 201
    for g in gids:
        submit(d, g)
    kafka.down()  # mid-delivery
    late = create_submit(d, msg_body([f"kafka://{topic}"] * 2, retry=retry))["gid"]
    t = d.wait_txn(late, lambda t: t["branches"][0]["last_error"] is not None, what="an error")
    assert t["status"] == "submitted", t
    err = t["branches"][0]["last_error"]
    assert f'kafka topic "{topic}"' in err, err
    assert "no delivery report within 1000 ms" in err or "message.timeout.ms" in err, err
    time.sleep(1.0)
    assert d.txn(late)["status"] == "submitted"
    kafka.up()
    for g in gids + [late]:
        assert d.wait_final(g, timeout=60)["status"] == "succeeded"
    want = {f"{g}/{n}/action" for g in gids for n in (1, 2, 3)} | {f"{late}/1/action", f"{late}/2/action"}

    def all_there():
        got = set(ids(kafka.read(topic)))
        return want <= got and got

    got = wait_until(all_there, 30, interval=0.5, what="every step in the topic")
    assert got == want  # nothing lost, nothing unexpected
    recs = kafka.read(topic)
    for g in gids + [late]:
        mine = first_seen(ids(r for r in recs if r["key"] == g))
        assert mine == sorted(mine, key=lambda i: int(i.split("/")[1]))


def test_kill9_mid_delivery(kafka, dtxd_factory):
    """kill -9 of dtxd while it delivers: after the restart every step is
    delivered; a step may be there twice, with the same Dtx-Message-Id."""
    topic = topic_name("k9")
    d = dtxd_factory("--kafka-brokers", kafka.bootstrap)
    gids = [new_gid("k9") for _ in range(30)]
    for g in gids:
        assert d.create(msg_body([f"kafka://{topic}"] * 4, gid=g)).status == 201
    for g in gids:
        submit(d, g)
    time.sleep(0.05)
    d.kill9()
    d.restart()
    for g in gids:
        assert d.wait_final(g, timeout=60)["status"] == "succeeded"
    want = {f"{g}/{n}/action" for g in gids for n in range(1, 5)}
    got = wait_until(lambda: want <= set(ids(kafka.read(topic))) and kafka.read(topic), 30,
                     interval=0.5, what="every step in the topic")
    assert set(ids(got)) == want
    for g in gids:
        assert first_seen(ids(r for r in got if r["key"] == g)) == [f"{g}/{n}/action" for n in range(1, 5)]


def test_sigterm_with_the_cluster_down(kafka, dtxd_factory):
    """Deliveries held by an unreachable cluster do not hold dtxd's exit:
    SIGTERM abandons them (they continue at the next start)."""
    topic = topic_name("term")
    d = dtxd_factory("--kafka-brokers", kafka.bootstrap)
    kafka.down()
    gid = create_submit(d, msg_body([f"kafka://{topic}"]))["gid"]
    time.sleep(0.5)
    t0 = time.monotonic()
    assert d.term(timeout=20) == 0
    assert time.monotonic() - t0 < 8
    kafka.up()
    d.restart()
    assert d.wait_final(gid, timeout=60)["status"] == "succeeded"
    assert ids(kafka.read_n(topic, 1))[0] == f"{gid}/1/action"


# ---------------------------------------------------------------- validation


def test_kafka_targets_validated(kafka, dtxd_factory):
    d = dtxd_factory("--kafka-brokers", kafka.bootstrap)
    for bad in ("kafka://", "kafka://a/b", "kafka://..", "kafka://top%20ic", "kafka://a b"):
        r = d.create(msg_body([bad]))
        assert r.status == 400 and r.body["error"]["code"] == "invalid_url", (bad, r)
        assert r.body["error"]["field"] == "steps[0].action", r
    # without --kafka-brokers no transport serves kafka://
    plain = dtxd_factory()
    r = plain.create(msg_body(["kafka://orders"]))
    assert r.status == 400 and r.body["error"]["code"] == "invalid_url", r


def test_other_modes_refused_at_validation(kafka, dtxd_factory, participant):
    """kafka:// serves msg deliveries only: anywhere else (a saga's action or
    compensate, a tcc/2pc branch's URLs, a msg's check) the request is
    refused with invalid_url on that field, and nothing is made."""
    d = dtxd_factory("--kafka-brokers", kafka.bootstrap)
    k = f"kafka://{topic_name('no')}"
    http = participant.url("/x")
    cases = [
        ({"type": "saga", "steps": [{"action": k, "compensate": http}]}, "steps[0].action"),
        ({"type": "saga", "steps": [{"action": http, "compensate": k}]}, "steps[0].compensate"),
        ({"type": "msg", "check": k, "steps": [{"action": k}]}, "check"),
        ({"type": "tcc", "branches": [{"confirm": k, "cancel": http}]}, "branches[0].confirm"),
        ({"type": "2pc", "branches": [{"prepare": http, "commit": http, "rollback": k}]},
         "branches[0].rollback"),
    ]
    for body, field in cases:
        r = d.create(body)
        assert r.status == 400, (body, r)
        assert r.body["error"]["code"] == "invalid_url" and r.body["error"]["field"] == field, r
        assert "msg steps only" in r.body["error"]["message"], r
        assert field in r.body["error"]["message"], r
    assert d.list().body["transactions"] == []


# ---------------------------------------------------------------- configuration


def test_options_from_the_environment_and_secrets_never_logged(kafka, dtxd_factory):
    """DTX_KAFKA_OPTION_<KEY> sets a librdkafka property; the log names the
    property, never its value."""
    secret = "pw-" + uuid.uuid4().hex
    topic = topic_name("env")
    d = dtxd_factory(env={
        "DTX_KAFKA_BROKERS": kafka.bootstrap,
        "DTX_KAFKA_OPTION_SASL_PASSWORD": secret,  # unused on PLAINTEXT, but set
        "DTX_KAFKA_OPTION_LINGER_MS": "1",
    })
    assert create_submit(d, msg_body([f"kafka://{topic}"]), wait=True)["status"] == "succeeded"
    d.term()
    log = d.log_text()
    assert "sasl.password" in log and "linger.ms" in log
    assert secret not in log


def test_bad_options_refused_at_start(kafka, dtxd_bin, tmp_path):
    secret = "bogus-" + uuid.uuid4().hex

    def run(*args, env=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("DTX_")}
        e.update(env or {})
        return subprocess.run(
            [str(dtxd_bin), "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d"), *args],
            capture_output=True, text=True, timeout=20, env=e,
        )

    r = run("--kafka-brokers", kafka.bootstrap, "--kafka-option", f"security.protocol={secret}")
    assert r.returncode == 1, r
    assert "security.protocol" in r.stderr and secret not in r.stderr + r.stdout
    r = run("--kafka-brokers", kafka.bootstrap, "--kafka-option", "acks=1")
    assert r.returncode == 1 and "acks" in r.stderr, r
    r = run("--kafka-brokers", kafka.bootstrap, "--kafka-option", "no-equals-sign")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr, r
    r = run("--kafka-option", "linger.ms=1")
    assert r.returncode == 1 and "--kafka-brokers" in r.stderr, r
