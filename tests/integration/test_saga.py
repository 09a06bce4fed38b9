"""Sagas against real participant services: the forward path, failures and
compensation, retries, 425, timeouts, needs_attention, what participants
receive, `wait`, and concurrent load."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dtxtest import FAST_RETRY, TRACEPARENT_RE, TS_RE, new_gid, saga, step, timeline, wait_until


def gaps(calls):
    return [b.time - a.time for a, b in zip(calls, calls[1:])]


def assert_sequential(calls):
    """Each call arrived only after the previous one was answered."""
    for a, b in zip(calls, calls[1:]):
        assert a.answered_at is not None and b.time >= a.answered_at, (a, b)


# ---------------------------------------------------------------- success


def test_success_runs_each_action_once_in_order(dtxd, participant_factory):
    a = participant_factory("A")
    b = participant_factory("B")
    a.script("/debit", [("sleep", 0.3, 200)])  # step 2 must wait for step 1's answer
    gid = new_gid("ok")
    body = saga(
        [
            step(a, "debit", {"account": "A", "amount": 30}),
            step(b, "credit", {"account": "B", "amount": 30}),
        ],
        gid=gid,
    )
    r = dtxd.create(body)
    assert r.status == 201, r
    assert r.headers.get("content-type", "").startswith("application/json")
    assert r.body["gid"] == gid
    assert r.body["type"] == "saga"
    assert r.body["status"] in ("submitted", "succeeded")

    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    assert t["needs_attention"] is False
    assert t["finished_at"] is not None
    assert [br["branch"] for br in t["branches"]] == ["1", "2"]
    for br in t["branches"]:
        assert br["status"] == "succeeded"
        assert br["action_attempts"] == 1
        assert br["compensate_attempts"] == 0
        assert br["last_error"] is None
    assert timeline(a, b, gid=gid) == [("A", "/debit", "action"), ("B", "/credit", "action")]
    (debit,) = a.calls("/debit")
    (credit,) = b.calls("/credit")
    assert credit.time >= debit.answered_at


def test_transaction_representation(dtxd, participant):
    gid = new_gid("repr")
    retry = {"initial_interval_ms": 25, "max_interval_ms": 250, "limit": 4}
    steps = [step(participant, "s1", {"k": 1}), step(participant, "s2")]
    r = dtxd.create(saga(steps, gid=gid, retry=retry, request_timeout_ms=4321, timeout_ms=60000))
    assert r.status == 201, r
    t = dtxd.wait_final(gid)
    assert t["gid"] == gid and t["type"] == "saga" and t["status"] == "succeeded"
    assert t["retry"] == retry
    assert t["request_timeout_ms"] == 4321
    assert t["timeout_ms"] == 60000
    for k in ("created_at", "updated_at", "finished_at"):
        assert TS_RE.match(t[k]), (k, t[k])
    assert t["created_at"] <= t["updated_at"] and t["created_at"] <= t["finished_at"]
    assert len(t["branches"]) == 2
    for i, (br, s) in enumerate(zip(t["branches"], steps), start=1):
        assert br["branch"] == str(i)
        assert br["action"] == s["action"]
        assert br["compensate"] == s["compensate"]
        assert TS_RE.match(br["updated_at"]), br
    assert t["branches"][0]["payload"] == {"k": 1}
    assert t["branches"][1]["payload"] == {}


# ---------------------------------------------------------------- failure


@pytest.mark.parametrize("failing", [1, 2, 3])
def test_409_compensates_started_steps_newest_first(dtxd, participant, failing):
    p = participant
    p.script(f"/s{failing}", [409])
    gid = new_gid("f")
    r = dtxd.create(saga([step(p, f"s{i}", {"n": i}) for i in range(1, 5)], gid=gid))
    assert r.status == 201, r
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    assert t["needs_attention"] is False
    assert t["finished_at"] is not None

    expected = [(f"/s{i}", "action") for i in range(1, failing + 1)]
    expected += [(f"/s{i}-undo", "compensate") for i in range(failing, 0, -1)]
    assert p.ops(gid) == expected
    assert_sequential(p.calls(gid=gid))
    for i in range(failing + 1, 5):  # never started: neither action nor compensation
        assert p.count(f"/s{i}") == 0 and p.count(f"/s{i}-undo") == 0

    brs = t["branches"]
    for i, br in enumerate(brs, start=1):
        if i <= failing:
            assert br["status"] == "compensated", br
            assert br["action_attempts"] == 1 and br["compensate_attempts"] == 1, br
            # the refusal stays visible after the compensation: why it failed
            if i == failing:
                assert br["last_error"] and "409" in br["last_error"], br
            else:
                assert br["last_error"] is None, br
        else:
            assert br["status"] == "pending", br
            assert br["action_attempts"] == 0 and br["compensate_attempts"] == 0, br


@pytest.mark.parametrize("fault", [500, 503, 404, ("drop",)], ids=["500", "503", "404", "conn-drop"])
def test_transient_action_failures_retried_then_succeed(dtxd, participant, fault):
    p = participant
    p.script("/s1", [fault, fault, 200])
    gid = new_gid("tr")
    retry = {"initial_interval_ms": 20, "max_interval_ms": 100, "limit": 5}
    r = dtxd.create(saga([step(p, "s1", {"x": 1}), step(p, "s2")], gid=gid, retry=retry))
    assert r.status == 201, r
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    calls = p.calls("/s1")
    assert len(calls) == 3
    assert {c.key for c in calls} == {f"{gid}/1/action"}
    assert all(c.json() == {"x": 1} for c in calls)
    assert max(gaps(calls)) < 0.1 + 0.4  # bounded by max_interval_ms (plus slack)
    assert p.ops(gid) == [("/s1", "action")] * 3 + [("/s2", "action")]
    # libcurl silently re-sends a request once when a reused connection closes
    # before any answer: the participant can see one call dtxd did not count.
    drops = 2 if fault == ("drop",) else 0
    assert 3 - drops <= t["branches"][0]["action_attempts"] <= 3
    assert t["branches"][1]["action_attempts"] == 1
    assert t["needs_attention"] is False


def test_timeout_retried_then_succeeds(dtxd, participant):
    p = participant
    p.script("/s1", [("sleep", 2.0, 200), 200])
    gid = new_gid("to")
    r = dtxd.create(saga([step(p, "s1")], gid=gid, request_timeout_ms=300))
    assert r.status == 201, r
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    c1, c2 = p.calls("/s1")
    # the second call came after the request timeout, not after the slow answer
    assert 0.28 <= c2.time - c1.time < 1.8, gaps([c1, c2])
    assert c1.key == c2.key == f"{gid}/1/action"
    assert t["branches"][0]["action_attempts"] == 2
    assert p.count("/s1-undo") == 0


def test_425_polled_at_fixed_interval_without_counting_as_failure(dtxd, participant):
    p = participant
    p.script("/s1", [425] * 5 + [200])
    gid = new_gid("425")
    # limit 0: a single transient failure would roll back; 425 must not count
    retry = {"initial_interval_ms": 100, "max_interval_ms": 5000, "limit": 0}
    r = dtxd.create(saga([step(p, "s1"), step(p, "s2")], gid=gid, retry=retry))
    assert r.status == 201, r
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded", t
    calls = p.calls("/s1")
    assert len(calls) == 6
    for g in gaps(calls):
        assert 0.09 <= g < 0.6, gaps(calls)  # initial_interval_ms each time, no backoff growth
    assert t["branches"][0]["action_attempts"] == len(calls)
    assert t["needs_attention"] is False
    assert p.ops(gid) == [("/s1", "action")] * 6 + [("/s2", "action")]


@pytest.mark.parametrize("fault", ["500", "timeout"])
def test_action_retry_limit_exhausted_compensates(dtxd, participant, fault):
    p = participant
    limit = 2
    if fault == "timeout":
        p.script("/s2", [("sleep", 2.0, 200)])
    else:
        p.script("/s2", [500])
    gid = new_gid("ex")
    retry = {"initial_interval_ms": 20, "max_interval_ms": 100, "limit": limit}
    r = dtxd.create(
        saga([step(p, "s1"), step(p, "s2"), step(p, "s3")], gid=gid, retry=retry, request_timeout_ms=200)
    )
    assert r.status == 201, r
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    assert t["needs_attention"] is False
    # the first call and `limit` retries, then the saga rolls back
    assert p.ops(gid) == (
        [("/s1", "action")]
        + [("/s2", "action")] * (limit + 1)
        + [("/s2-undo", "compensate"), ("/s1-undo", "compensate")]
    )
    b1, b2, b3 = t["branches"]
    assert b2["status"] == "compensated" and b2["action_attempts"] == limit + 1
    assert b1["status"] == "compensated" and b1["action_attempts"] == 1
    assert b3["status"] == "pending" and b3["action_attempts"] == 0


@pytest.mark.parametrize("answer", [425, 500])
def test_transaction_timeout_rolls_back(dtxd, participant, answer):
    p = participant
    p.script("/s2", [answer])  # never finishes
    gid = new_gid("ttl")
    retry = {"initial_interval_ms": 20, "max_interval_ms": 50, "limit": 1000000}
    t0 = time.monotonic()
    r = dtxd.create(saga([step(p, "s1"), step(p, "s2"), step(p, "s3")], gid=gid, retry=retry, timeout_ms=600))
    assert r.status == 201, r
    t = dtxd.wait_final(gid, timeout=10)
    assert t["status"] == "failed"
    undo2 = p.calls("/s2-undo")
    assert len(undo2) == 1
    assert 0.58 <= undo2[0].time - t0 < 4.0, undo2[0].time - t0
    # nothing of the forward path after the rollback started
    assert not [c for c in p.calls("/s2") if c.time > undo2[0].time]
    ops = p.ops(gid)
    assert ops[-2:] == [("/s2-undo", "compensate"), ("/s1-undo", "compensate")]
    assert set(ops[:-2]) == {("/s1", "action"), ("/s2", "action")}
    assert p.count("/s3") == 0 and p.count("/s3-undo") == 0
    assert [b["status"] for b in t["branches"]] == ["compensated", "compensated", "pending"]


# ---------------------------------------------------------------- compensation


@pytest.mark.parametrize(
    "seq,limit",
    [([409, 409, 200], 10), ([500, ("drop",), 200], 10), ([425, 425, 425, 200], 0)],
    ids=["409-is-transient", "500-and-drop", "425-not-counted"],
)
def test_compensation_retried_until_success(dtxd, participant, seq, limit):
    p = participant
    p.script("/s2", [409])
    p.script("/s1-undo", seq)
    gid = new_gid("cr")
    retry = {"initial_interval_ms": 20, "max_interval_ms": 2000, "limit": limit}
    r = dtxd.create(saga([step(p, "s1"), step(p, "s2")], gid=gid, retry=retry))
    assert r.status == 201, r
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    assert t["needs_attention"] is False
    undo = p.calls("/s1-undo")
    assert len(undo) == len(seq)
    assert {c.key for c in undo} == {f"{gid}/1/compensate"}
    assert max(gaps(undo)) < 1.0, gaps(undo)  # never pushed to the 2 s flagged interval
    assert t["branches"][0]["status"] == "compensated"
    drops = seq.count(("drop",))  # see test_transient_action_failures_retried_then_succeed
    assert len(seq) - drops <= t["branches"][0]["compensate_attempts"] <= len(seq)
    assert p.ops(gid) == [("/s1", "action"), ("/s2", "action"), ("/s2-undo", "compensate")] + [
        ("/s1-undo", "compensate")
    ] * len(seq)


def test_compensation_needs_attention_then_recovers(dtxd, participant):
    p = participant
    p.script("/s2", [409])
    p.script("/s1-undo", [500])
    gid = new_gid("na")
    limit = 2
    retry = {"initial_interval_ms": 20, "max_interval_ms": 200, "limit": limit}
    r = dtxd.create(saga([step(p, "s1"), step(p, "s2")], gid=gid, retry=retry))
    assert r.status == 201, r

    t = dtxd.wait_txn(gid, lambda t: t["needs_attention"] is True, timeout=10, what="needs_attention")
    assert t["status"] == "aborting"
    assert t["finished_at"] is None
    assert t["branches"][0]["status"] == "compensating"
    assert isinstance(t["branches"][0]["last_error"], str) and t["branches"][0]["last_error"]
    assert t["branches"][1]["status"] == "compensated"
    assert p.count("/s1-undo") >= limit + 1

    # still retried past the limit, every max_interval_ms
    n = p.count("/s1-undo")
    late = p.wait_calls("/s1-undo", n + 3, timeout=5)[n - 1 :]
    for g in gaps(late):
        assert 0.15 <= g < 1.0, gaps(late)
    assert dtxd.txn(gid)["status"] == "aborting"

    p.script("/s1-undo", [200])
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    assert t["needs_attention"] is False
    assert t["finished_at"] is not None
    assert t["branches"][0]["status"] == "compensated"
    assert t["branches"][0]["compensate_attempts"] == p.count("/s1-undo")
    assert p.count("/s2-undo") == 1 and p.count("/s1") == 1 and p.count("/s2") == 1


# ---------------------------------------------------------------- what participants see


def test_participant_headers_exact(dtxd, participant_factory):
    a = participant_factory("A")
    b = participant_factory("B")
    b.script("/s2", [409])
    gid = new_gid("hdr")
    steps = [
        {"action": a.url("/s1?acct=A&x=1"), "compensate": a.url("/s1-undo?acct=A"), "payload": {"a": 1}},
        step(b, "s2", {"b": 2}),
    ]
    r = dtxd.create(saga(steps, gid=gid))
    assert r.status == 201, r
    assert dtxd.wait_final(gid)["status"] == "failed"

    calls = sorted(a.calls() + b.calls(), key=lambda c: c.time)
    assert [(c.target, c.branch, c.op) for c in calls] == [
        ("/s1?acct=A&x=1", "1", "action"),
        ("/s2", "2", "action"),
        ("/s2-undo", "2", "compensate"),
        ("/s1-undo?acct=A", "1", "compensate"),
    ]
    trace_ids = set()
    for c in calls:
        assert c.method == "POST"
        for name in ("Content-Type", "Dtx-Gid", "Dtx-Branch", "Dtx-Op", "Dtx-Type", "Idempotency-Key", "traceparent"):
            assert len(c.header_all(name)) == 1, (name, c.headers)
        assert c.header("Content-Type") == "application/json"
        assert c.header("Dtx-Gid") == gid
        assert c.header("Dtx-Type") == "saga"
        assert c.header("Idempotency-Key") == f"{gid}/{c.branch}/{c.op}"
        m = TRACEPARENT_RE.match(c.header("traceparent"))
        assert m, c.header("traceparent")
        assert m.group(1) != "0" * 32 and m.group(2) != "0" * 16
        trace_ids.add(m.group(1))
    assert len(trace_ids) == 1  # one trace id per transaction

    # another transaction gets another trace id
    gid2 = new_gid("hdr2")
    assert dtxd.create(saga([step(a, "t1")], gid=gid2, wait=True)).status == 201
    (c,) = a.calls("/t1")
    assert TRACEPARENT_RE.match(c.header("traceparent")).group(1) not in trace_ids


PAYLOADS = [
    {"account": "A", "amount": 30, "nested": {"list": [1, 2, {"deep": None}], "t": True}, "uni": "żółw € ☃"},
    [1, "two", 3.5, False, None, {"k": []}],
    "just a string with \"quotes\" and \\ backslash",
    12345678901234,
    -0.25,
    {},
]


def test_payload_delivered_as_body(dtxd, participant):
    p = participant
    n = len(PAYLOADS)
    p.script(f"/s{n + 2}", [409])  # last step fails: every payload also goes to a compensation
    steps = [step(p, f"s{i + 1}", pl) for i, pl in enumerate(PAYLOADS)]
    steps.append(step(p, f"s{n + 1}"))  # no payload: {}
    steps.append(step(p, f"s{n + 2}", {"last": True}))
    gid = new_gid("pl")
    r = dtxd.create(saga(steps, gid=gid))
    assert r.status == 201, r
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    expected = PAYLOADS + [{}, {"last": True}]
    for i, pl in enumerate(expected, start=1):
        (act,) = p.calls(f"/s{i}")
        (comp,) = p.calls(f"/s{i}-undo")
        assert act.json() == pl, (i, act.body)
        assert comp.json() == pl, (i, comp.body)
        assert t["branches"][i - 1]["payload"] == pl


# ---------------------------------------------------------------- wait


def test_wait_answers_with_final_state(dtxd, participant):
    p = participant
    gid = new_gid("w")
    p.script("/s1", [("sleep", 0.3, 200)])
    r = dtxd.create(saga([step(p, "s1"), step(p, "s2")], gid=gid, wait=True, wait_timeout_ms=10000))
    assert r.status == 201, r
    assert r.body["status"] == "succeeded"
    assert r.body["finished_at"] is not None
    assert [b["status"] for b in r.body["branches"]] == ["succeeded", "succeeded"]
    assert p.count("/s2") == 1  # already called when the answer came
    assert r.body == dtxd.txn(gid)

    gid = new_gid("wf")
    p.script("/f2", [409])
    r = dtxd.create(saga([step(p, "f1"), step(p, "f2")], gid=gid, wait=True))
    assert r.status == 201, r
    assert r.body["status"] == "failed"
    assert [b["status"] for b in r.body["branches"]] == ["compensated", "compensated"]
    assert p.count("/f1-undo") == 1
    assert r.body == dtxd.txn(gid)


def test_wait_timeout_answers_202_while_running(dtxd, participant):
    p = participant
    p.script("/s1", [("sleep", 1.5, 200)])
    gid = new_gid("w202")
    t0 = time.monotonic()
    r = dtxd.create(saga([step(p, "s1")], gid=gid, wait=True, wait_timeout_ms=300))
    elapsed = time.monotonic() - t0
    assert r.status == 202, r
    assert 0.28 <= elapsed < 1.3, elapsed
    assert r.body["gid"] == gid
    assert r.body["status"] == "submitted"
    assert r.body["finished_at"] is None
    assert dtxd.txn(gid)["status"] == "submitted"  # durable and still running
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    assert p.count("/s1") == 1


# ---------------------------------------------------------------- load


def test_concurrent_load_each_step_called_exactly_once(dtxd, participant_factory):
    a = participant_factory("A")
    b = participant_factory("B")
    n = 200
    gids = [new_gid(f"load{i}") for i in range(n)]

    def create(i):
        gid = gids[i]
        body = saga(
            [step(a, "debit", {"i": i}), step(b, "credit", {"i": i})],
            gid=gid,
            wait=(i % 2 == 0),
        )
        return dtxd.create(body, timeout=60)

    with ThreadPoolExecutor(max_workers=20) as ex:
        answers = list(ex.map(create, range(n)))
    bad = [(g, r) for g, r in zip(gids, answers) if r.status != 201]
    assert not bad, bad[:5]
    for i, r in enumerate(answers):
        if i % 2 == 0:
            assert r.body["status"] == "succeeded", r

    pending = set(gids)

    def all_done():
        for g in list(pending):
            t = dtxd.txn(g)
            assert t["status"] in ("submitted", "succeeded"), t
            if t["status"] == "succeeded":
                pending.discard(g)
        return not pending

    wait_until(all_done, timeout=60, interval=0.1, what="all sagas to succeed")

    assert a.count() == n and b.count() == n
    assert a.count("/debit-undo") == 0 and b.count("/credit-undo") == 0
    for i, g in enumerate(gids):
        (d,) = a.calls(gid=g)
        (c,) = b.calls(gid=g)
        assert (d.path, d.op, d.json()) == ("/debit", "action", {"i": i})
        assert (c.path, c.op, c.json()) == ("/credit", "action", {"i": i})
        assert c.time >= d.answered_at


def test_concurrent_creates_of_one_gid_run_it_once(dtxd, participant):
    gid = new_gid("same")
    body = saga([step(participant, "s1", {"v": 1})], gid=gid)
    barrier = threading.Barrier(10)

    def create(_):
        barrier.wait()
        return dtxd.create(body)

    with ThreadPoolExecutor(max_workers=10) as ex:
        answers = list(ex.map(create, range(10)))
    statuses = sorted(r.status for r in answers)
    assert statuses == [200] * 9 + [201], answers
    assert all(r.body["gid"] == gid for r in answers)
    assert dtxd.wait_final(gid)["status"] == "succeeded"
    time.sleep(0.2)
    assert participant.count("/s1") == 1
