"""Concurrent sagas: steps carrying `"after": [N, ...]` start as soon as the
steps they name have succeeded, independent steps in parallel; on failure
every started step is compensated in reverse dependency order. Validation of
`after`, its representation, idempotent creation, and a kill -9 mid-way."""

import copy
import json
import time

import pytest

from dtxtest import assert_error, new_gid, saga, step

URL_A = "http://127.0.0.1:9/a"
URL_B = "http://127.0.0.1:9/b"


# ---------------------------------------------------------------- helpers


def dep(s, *after):
    """The step s with "after": [after...] (1-based step numbers)."""
    s = dict(s)
    s["after"] = list(after)
    return s


def one(p, path):
    """The single call to path; fails if there is none or more than one."""
    cs = p.calls(path)
    assert len(cs) == 1, (path, cs)
    return cs[0]


def assert_started_after(call, *earlier):
    """call arrived only after every call in earlier was answered."""
    for e in earlier:
        assert e.answered_at is not None, (call, e)
        assert call.time >= e.answered_at, f"{call} arrived before {e} was answered"


def assert_not_called(p, *paths, during=0.3):
    """None of paths is called for `during` seconds (a negative check needs
    some time; everything else in this file polls)."""
    time.sleep(during)
    for path in paths:
        assert p.count(path) == 0, (path, p.calls(path))


def statuses(t):
    return [b["status"] for b in t["branches"]]


# ---------------------------------------------------------------- forward path


def test_independent_steps_start_in_parallel(dtxd, participant):
    p = participant
    p.script("/s1", [("block", 200)])
    p.script("/s2", [("block", 200)])
    gid = new_gid("par")
    body = saga([step(p, "s1", {"n": 1}), step(p, "s2", {"n": 2}), dep(step(p, "s3", {"n": 3}), 1, 2)], gid=gid)
    r = dtxd.create(body)
    assert r.status == 201, r

    # both actions arrive while neither has been answered
    p.wait_calls("/s1", timeout=5)
    p.wait_calls("/s2", timeout=5)
    assert p.calls("/s1")[0].answered_at is None and p.calls("/s2")[0].answered_at is None
    t = dtxd.txn(gid)
    assert t["status"] == "submitted"
    assert statuses(t) == ["running", "running", "pending"]

    # step 3 names 1 and 2: one of them succeeding is not enough
    p.release("/s1")
    dtxd.wait_txn(gid, lambda t: t["branches"][0]["status"] == "succeeded", what="branch 1 succeeded")
    assert_not_called(p, "/s3")
    assert statuses(dtxd.txn(gid)) == ["succeeded", "running", "pending"]

    p.release("/s2")
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    assert t["needs_attention"] is False
    assert statuses(t) == ["succeeded"] * 3
    for b in t["branches"]:
        assert b["action_attempts"] == 1 and b["compensate_attempts"] == 0, b
    s1, s2, s3 = one(p, "/s1"), one(p, "/s2"), one(p, "/s3")
    assert_started_after(s3, s1, s2)
    assert [(c.branch, c.json()) for c in (s1, s2, s3)] == [("1", {"n": 1}), ("2", {"n": 2}), ("3", {"n": 3})]
    assert {c.key for c in (s1, s2, s3)} == {f"{gid}/1/action", f"{gid}/2/action", f"{gid}/3/action"}
    assert not [c for c in p.calls() if c.op != "action"]  # no compensation


def test_empty_after_alone_makes_the_saga_concurrent(dtxd, participant):
    """`after: []` on one step: the saga is concurrent, and a step without
    `after` starts at once too."""
    p = participant
    p.script("/s1", [("block", 200)])
    p.script("/s2", [("block", 200)])
    gid = new_gid("empty")
    r = dtxd.create(saga([step(p, "s1"), dep(step(p, "s2"), )], gid=gid))
    assert r.status == 201, r
    p.wait_calls("/s1", timeout=5)
    p.wait_calls("/s2", timeout=5)  # not waiting for step 1's answer
    p.release()
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    assert p.count("/s1") == 1 and p.count("/s2") == 1


def test_diamond_respects_order(dtxd, participant):
    p = participant
    p.script("/s1", [("sleep", 0.2, 200)])
    p.script("/s2", [("block", 200)])
    p.script("/s3", [("block", 200)])
    gid = new_gid("dia")
    body = saga(
        [step(p, "s1"), dep(step(p, "s2"), 1), dep(step(p, "s3"), 1), dep(step(p, "s4"), 2, 3)],
        gid=gid,
    )
    r = dtxd.create(body)
    assert r.status == 201, r

    p.wait_calls("/s2", timeout=5)
    p.wait_calls("/s3", timeout=5)  # 2 and 3 run in parallel
    assert statuses(dtxd.txn(gid)) == ["succeeded", "running", "running", "pending"]
    p.release("/s2")  # the first step 4 names: not enough alone
    dtxd.wait_txn(gid, lambda t: t["branches"][1]["status"] == "succeeded", what="branch 2 succeeded")
    assert_not_called(p, "/s4")
    p.release("/s3")

    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    assert statuses(t) == ["succeeded"] * 4
    s1, s2, s3, s4 = (one(p, f"/s{i}") for i in range(1, 5))
    assert_started_after(s2, s1)
    assert_started_after(s3, s1)
    assert_started_after(s4, s2, s3)
    assert p.count() == 4  # each action once, nothing else


@pytest.mark.parametrize("outcome", ["succeed", "fail"])
def test_after_may_name_a_later_step(dtxd, participant, outcome):
    """Step numbers, not positions, decide the order: 1 after 3, 2 after 1
    runs 3, 1, 2 and compensates 2, 1, 3."""
    p = participant
    if outcome == "fail":
        p.script("/s2", [409])
    gid = new_gid("fwd")
    r = dtxd.create(saga([dep(step(p, "s1"), 3), dep(step(p, "s2"), 1), step(p, "s3")], gid=gid))
    assert r.status == 201, r
    t = dtxd.wait_final(gid)
    calls = p.calls(gid=gid)
    if outcome == "succeed":
        assert t["status"] == "succeeded"
        assert p.ops(gid) == [("/s3", "action"), ("/s1", "action"), ("/s2", "action")]
    else:
        assert t["status"] == "failed"
        assert statuses(t) == ["compensated"] * 3
        assert p.ops(gid) == [
            ("/s3", "action"),
            ("/s1", "action"),
            ("/s2", "action"),
            ("/s2-undo", "compensate"),
            ("/s1-undo", "compensate"),
            ("/s3-undo", "compensate"),
        ]
    for a, b in zip(calls, calls[1:]):
        assert_started_after(b, a)


# ---------------------------------------------------------------- failure


FAULTS = {
    # how step 2 fails, and what step 1 (blocked meanwhile) answers at last
    "409": dict(s2=[("block", 409)], late=200, opts={}),
    "409-late-409": dict(s2=[("block", 409)], late=409, opts={}),
    "retries-exhausted": dict(
        s2=[("block", 500), 500],
        late=200,
        opts={"retry": {"initial_interval_ms": 20, "max_interval_ms": 50, "limit": 2}},
    ),
    "timeout": dict(
        s2=[("block", 425), 425],
        late=200,
        opts={"timeout_ms": 800, "retry": {"initial_interval_ms": 20, "max_interval_ms": 50, "limit": 1000000}},
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_failure_in_parallel_branch_compensates_started_steps(dtxd, participant, fault):
    f = FAULTS[fault]
    p = participant
    p.script("/s1", [("block", f["late"])])
    p.script("/s2", f["s2"])
    gid = new_gid("pf")
    body = saga([step(p, "s1"), step(p, "s2"), dep(step(p, "s3"), 1, 2)], gid=gid, **f["opts"])
    r = dtxd.create(body)
    assert r.status == 201, r
    p.wait_calls("/s1", timeout=5)
    p.wait_calls("/s2", timeout=5)  # both started before step 2 fails
    p.release("/s2")

    # step 2 is compensated; step 1's action is still out: not compensated yet
    p.wait_calls("/s2-undo", timeout=10)
    t = dtxd.wait_txn(gid, lambda t: t["branches"][1]["status"] == "compensated", what="branch 2 compensated")
    assert t["status"] == "aborting"
    assert t["finished_at"] is None
    assert t["branches"][0]["status"] in ("running", "compensating"), t["branches"][0]
    assert t["branches"][2]["status"] == "pending"
    assert_not_called(p, "/s1-undo")

    p.release("/s1")
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    assert t["needs_attention"] is False
    assert t["finished_at"] is not None
    assert statuses(t) == ["compensated", "compensated", "pending"]

    s1 = one(p, "/s1")
    u1, u2 = one(p, "/s1-undo"), one(p, "/s2-undo")
    assert_started_after(u1, s1)  # compensated only after its action answered
    assert_started_after(u2, p.calls("/s2")[-1])
    assert u1.key == f"{gid}/1/compensate" and u2.key == f"{gid}/2/compensate"
    assert p.count("/s3") == 0 and p.count("/s3-undo") == 0  # never started
    b1, b2, b3 = t["branches"]
    assert b1["action_attempts"] == 1 and b1["compensate_attempts"] == 1, b1
    assert b2["compensate_attempts"] == 1, b2
    assert b2["action_attempts"] == len(p.calls("/s2")), b2
    if fault == "retries-exhausted":
        assert b2["action_attempts"] == 3, b2  # the first call and `limit` retries
    if fault.startswith("409"):
        assert b2["action_attempts"] == 1, b2
        assert b2["last_error"] and "409" in b2["last_error"], b2
    assert b3["action_attempts"] == 0 and b3["compensate_attempts"] == 0, b3


def test_chain_compensated_in_reverse_dependency_order(dtxd, participant):
    p = participant
    p.script("/s3", [409])
    # slow compensations: a compensation started too early overlaps the previous one
    p.script("/s3-undo", [("sleep", 0.2, 200)])
    p.script("/s2-undo", [("sleep", 0.2, 200)])
    gid = new_gid("chain")
    r = dtxd.create(saga([step(p, "s1"), dep(step(p, "s2"), 1), dep(step(p, "s3"), 2)], gid=gid))
    assert r.status == 201, r
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    assert statuses(t) == ["compensated"] * 3
    assert p.ops(gid) == [
        ("/s1", "action"),
        ("/s2", "action"),
        ("/s3", "action"),
        ("/s3-undo", "compensate"),
        ("/s2-undo", "compensate"),
        ("/s1-undo", "compensate"),
    ]
    calls = p.calls(gid=gid)
    for a, b in zip(calls, calls[1:]):
        assert_started_after(b, a)


def test_diamond_compensated_in_reverse_dependency_order(dtxd, participant):
    p = participant
    p.script("/s4", [409])
    p.script("/s4-undo", [("sleep", 0.2, 200)])
    p.script("/s2-undo", [("sleep", 0.3, 200)])
    p.script("/s3-undo", [("sleep", 0.1, 200)])
    gid = new_gid("diaf")
    body = saga(
        [step(p, "s1"), dep(step(p, "s2"), 1), dep(step(p, "s3"), 1), dep(step(p, "s4"), 2, 3)],
        gid=gid,
    )
    r = dtxd.create(body)
    assert r.status == 201, r
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    assert statuses(t) == ["compensated"] * 4
    u1, u2, u3, u4 = (one(p, f"/s{i}-undo") for i in range(1, 5))
    assert_started_after(u4, one(p, "/s4"))
    assert_started_after(u2, u4)
    assert_started_after(u3, u4)
    assert_started_after(u1, u2, u3)
    for i in range(1, 5):
        assert p.count(f"/s{i}") == 1


def test_dependent_in_flight_delays_compensation_of_its_dependency(dtxd, participant):
    """1; 2 after 1 (still running); 3 after 1 refused: 1 is compensated only
    after 2, and 2 only after its action answered."""
    p = participant
    p.script("/s2", [("block", 200)])
    p.script("/s3", [("block", 409)])
    p.script("/s2-undo", [("sleep", 0.2, 200)])
    gid = new_gid("inflight")
    r = dtxd.create(saga([step(p, "s1"), dep(step(p, "s2"), 1), dep(step(p, "s3"), 1)], gid=gid))
    assert r.status == 201, r
    p.wait_calls("/s2", timeout=5)
    p.wait_calls("/s3", timeout=5)
    p.release("/s3")
    p.wait_calls("/s3-undo", timeout=10)
    dtxd.wait_txn(gid, lambda t: t["branches"][2]["status"] == "compensated", what="branch 3 compensated")
    assert_not_called(p, "/s2-undo", "/s1-undo")
    assert dtxd.txn(gid)["status"] == "aborting"

    p.release("/s2")
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    assert statuses(t) == ["compensated"] * 3
    u1, u2, u3 = (one(p, f"/s{i}-undo") for i in range(1, 4))
    assert_started_after(u2, one(p, "/s2"))
    assert_started_after(u1, u2, u3)
    assert_started_after(u3, one(p, "/s3"))


# ---------------------------------------------------------------- validation


def S(*after, **kw):
    s = {"action": URL_A, "compensate": URL_B}
    if after:
        (s["after"],) = after
    s.update(kw)
    return s


def B(*steps):
    return {"type": "saga", "steps": list(steps)}


BAD_AFTER = [
    # not an array
    ("after-number", B(S(1), S()), "wrong_type", "steps[0].after"),
    ("after-string", B(S(), S("1")), "wrong_type", "steps[1].after"),
    ("after-object", B(S(), S({"0": 1})), "wrong_type", "steps[1].after"),
    ("after-null", B(S(), S(None)), "wrong_type", "steps[1].after"),
    ("after-bool", B(S(), S(True)), "wrong_type", "steps[1].after"),
    # an element not an integer
    ("elem-string", B(S(), S(["1"])), "wrong_type", "steps[1].after[0]"),
    ("elem-float", B(S(), S(), S([1, 1.5])), "wrong_type", "steps[2].after[1]"),
    ("elem-bool", B(S(), S([True])), "wrong_type", "steps[1].after[0]"),
    ("elem-null", B(S(), S(), S([2, None])), "wrong_type", "steps[2].after[1]"),
    ("elem-array", B(S(), S([[1]])), "wrong_type", "steps[1].after[0]"),
    ("elem-object", B(S(), S([{"n": 1}])), "wrong_type", "steps[1].after[0]"),
    # out of range, the step itself, repeated
    ("elem-0", B(S(), S([0])), "invalid_value", "steps[1].after[0]"),
    ("elem-negative", B(S(), S(), S([1, -1])), "invalid_value", "steps[2].after[1]"),
    ("elem-past-last", B(S(), S(), S([1, 4])), "invalid_value", "steps[2].after[1]"),
    ("elem-huge", B(S(), S([2**40])), "invalid_value", "steps[1].after[0]"),
    ("elem-self", B(S(), S([2])), "invalid_value", "steps[1].after[0]"),
    ("elem-self-single-step", B(S([1])), "invalid_value", "steps[0].after[0]"),
    ("elem-self-later", B(S(), S(), S([1, 2, 3])), "invalid_value", "steps[2].after[2]"),
    ("elem-repeated", B(S(), S(), S([1, 2, 1])), "invalid_value", "steps[2].after[2]"),
    ("elem-repeated-adjacent", B(S(), S([1, 1])), "invalid_value", "steps[1].after[1]"),
    # cycles: reported at the lowest index of a step on the cycle
    ("cycle-2", B(S([2]), S([1])), "dependency_cycle", "steps[0].after"),
    ("cycle-2-later", B(S(), S([3]), S([2])), "dependency_cycle", "steps[1].after"),
    ("cycle-3", B(S([3]), S([1]), S([2])), "dependency_cycle", "steps[0].after"),
    # steps[0] depends on the cycle 2->3->4->2 but is not on it
    ("cycle-3-entered-from-0", B(S([2]), S([3]), S([4]), S([2])), "dependency_cycle", "steps[1].after"),
    # the cycle 3->5->4->3 (indexes 2, 3, 4); steps[1] only leads into it
    ("cycle-3-unordered", B(S(), S([4]), S([5]), S([3]), S([4])), "dependency_cycle", "steps[2].after"),
    ("cycle-with-extra-deps", B(S(), S([1, 3]), S([1, 2])), "dependency_cycle", "steps[1].after"),
]


@pytest.mark.parametrize("body,code,field", [c[1:] for c in BAD_AFTER], ids=[c[0] for c in BAD_AFTER])
def test_bad_after_rejected_and_creates_nothing(dtxd, body, code, field):
    gid = new_gid("bad")
    body = dict(body, gid=gid)
    r = dtxd.post("/v1/transactions", raw=json.dumps(body).encode())
    assert_error(r, 400, code, field)
    assert_error(dtxd.get("/v1/transactions/" + gid), 404, "not_found")
    l = dtxd.list()
    assert l.status == 200 and l.body["transactions"] == [], l


def test_valid_after_shapes_accepted(dtxd, participant):
    """The boundary of the checks above: every step number 1..n other than
    the step itself, forward references, and acyclic long chains."""
    p = participant
    n = 5
    cases = [
        [dep(step(p, "a1"))],  # a single step with after: []
        [step(p, "b1"), dep(step(p, "b2"), 1), dep(step(p, "b3"), 1, 2), dep(step(p, "b4"), 3, 2, 1)],
        [dep(step(p, f"c{i}"), *[j for j in range(1, n + 1) if j != i]) if i == n else step(p, f"c{i}") for i in range(1, n + 1)],
        [dep(step(p, f"d{i}"), i + 1) if i < n else step(p, f"d{i}") for i in range(1, n + 1)],  # n-1 .. 1 after n
    ]
    for steps in cases:
        gid = new_gid("ok")
        r = dtxd.create(saga(steps, gid=gid, wait=True))
        assert r.status == 201, (steps, r)
        assert r.body["status"] == "succeeded", r
    assert p.count() == sum(len(c) for c in cases)
    d = [c.path for c in p.calls() if c.path.startswith("/d")]
    assert d == [f"/d{i}" for i in range(n, 0, -1)]


# ---------------------------------------------------------------- representation, idempotence


def test_get_shows_after_only_for_concurrent_sagas(dtxd, participant):
    p = participant
    gid = new_gid("rep")
    steps = [step(p, "s1"), dep(step(p, "s2")), dep(step(p, "s3"), 1), dep(step(p, "s4"), 3, 2)]
    r = dtxd.create(saga(steps, gid=gid, wait=True))
    assert r.status == 201, r
    assert r.body["status"] == "succeeded"
    t = dtxd.txn(gid)
    assert r.body == t
    assert [b["branch"] for b in t["branches"]] == ["1", "2", "3", "4"]
    # a step given without `after` shows [] in a concurrent saga; the others as given
    assert [b.get("after", "absent") for b in t["branches"]] == [[], [], [1], [3, 2]]

    gid = new_gid("seq")
    r = dtxd.create(saga([step(p, "q1"), step(p, "q2")], gid=gid, wait=True))
    assert r.status == 201, r
    for body in (r.body, dtxd.txn(gid)):
        for b in body["branches"]:
            assert "after" not in b, b


def test_same_gid_same_after_returns_existing(dtxd, participant):
    p = participant
    p.script("/s2", [("block", 200)])
    gid = new_gid("idem")
    body = saga([step(p, "s1", {"a": 1}), dep(step(p, "s2")), dep(step(p, "s3"), 1, 2)], gid=gid)
    r = dtxd.create(body)
    assert r.status == 201, r
    p.wait_calls("/s2")

    # while running: the current state
    r = dtxd.create(body)
    assert r.status == 200, r
    assert r.body["gid"] == gid and r.body["status"] == "submitted"
    assert [b["after"] for b in r.body["branches"]] == [[], [], [1, 2]]

    p.release("/s2")
    assert dtxd.wait_final(gid)["status"] == "succeeded"
    # the order inside after means nothing: [2, 1] is the same body as [1, 2]
    reordered = json.loads(json.dumps(body))
    reordered["steps"][2]["after"] = [2, 1]
    for raw in (json.dumps(body), json.dumps(dict(body, wait=True), indent=2),
                json.dumps(reordered)):
        r = dtxd.post("/v1/transactions", raw=raw.encode())
        assert r.status == 200, r
        assert r.body == dtxd.txn(gid)
    time.sleep(0.2)
    assert p.count("/s1") == 1 and p.count("/s2") == 1 and p.count("/s3") == 1


def _set_after(i, after):
    def change(b):
        if after is None:
            b["steps"][i].pop("after", None)
        else:
            b["steps"][i]["after"] = after

    return change


def _drop_all_after(b):
    for s in b["steps"]:
        s.pop("after", None)


AFTER_CONFLICTS = [
    # base: 1; 2 after 1; 3 after 1
    ("concurrent", "other-dependency", _set_after(2, [2])),
    ("concurrent", "extra-dependency", _set_after(2, [1, 2])),
    ("concurrent", "fewer-dependencies", _set_after(1, [])),
    ("concurrent", "all-after-removed", _drop_all_after),
    # base: 1, 2, 3 in order
    ("sequential", "empty-after-added", _set_after(0, [])),
    ("sequential", "after-added", _set_after(2, [1])),
]


@pytest.mark.parametrize("base,change", [c[0::2] for c in AFTER_CONFLICTS], ids=[c[1] for c in AFTER_CONFLICTS])
def test_same_gid_different_after_conflicts(dtxd, participant, base, change):
    p = participant
    gid = new_gid("conf")
    if base == "concurrent":
        steps = [step(p, "s1"), dep(step(p, "s2"), 1), dep(step(p, "s3"), 1)]
    else:
        steps = [step(p, "s1"), step(p, "s2"), step(p, "s3")]
    body = saga(steps, gid=gid)
    r = dtxd.create(dict(body, wait=True))
    assert r.status == 201, r
    assert r.body["status"] == "succeeded"
    before = dtxd.txn(gid)
    other = copy.deepcopy(body)
    change(other)
    assert other != body
    r = dtxd.create(other)
    assert_error(r, 409, "gid_conflict")
    assert dtxd.txn(gid) == before
    time.sleep(0.1)
    assert p.count() == 3


# ---------------------------------------------------------------- crash


def test_kill9_while_parallel_branch_blocked_resumes(dtxd, participant):
    p = participant
    p.script("/s2", [("block", 200), 200])
    gid = new_gid("k9par")
    body = saga([step(p, "s1", {"n": 1}), step(p, "s2", {"n": 2}), dep(step(p, "s3", {"n": 3}), 1, 2)], gid=gid)
    r = dtxd.create(body)
    assert r.status == 201, r
    p.wait_calls("/s2")
    dtxd.wait_txn(gid, lambda t: t["branches"][0]["status"] == "succeeded", what="branch 1 succeeded")
    # GET may show a state whose record is still being fsync'ed; the log
    # commits in append order, so an acknowledged create appended after it
    # means branch 1's success is on disk.
    assert dtxd.create(saga([step(p, "barrier")])).status == 201
    dtxd.kill9()
    p.release("/s2")  # the answer goes nowhere
    dtxd.restart()

    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    assert statuses(t) == ["succeeded"] * 3
    assert [b.get("after") for b in t["branches"]] == [[], [], [1, 2]]  # kept across the restart
    assert p.count("/s1") == 1  # recorded succeeded: not run again
    s2 = p.calls("/s2")
    assert len(s2) == 2  # outcome unknown at the crash: called again
    assert s2[0].key == s2[1].key == f"{gid}/2/action"
    assert s2[1].json() == {"n": 2}
    s3 = one(p, "/s3")
    assert_started_after(s3, s2[1])
    assert not [c for c in p.calls(gid=gid) if c.op != "action"]
