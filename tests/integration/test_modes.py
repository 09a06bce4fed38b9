"""
test_modes.py - TCC, two-phase commit and two-phase messages through the real
dtxd with real HTTP participants: the happy paths, every failure path the
mode has, timeouts, the control endpoints (register, submit, abort, retry),
their bad input, and kill -9 of dtxd at each phase followed by a restart.
"""

import json
import time

import pytest

from dtxtest import FAST_RETRY, assert_error, new_gid, wait_until

# ---------------------------------------------------------------- helpers


def create(dtxd, ttype, gid=None, **options):
    body = {"type": ttype, "retry": dict(FAST_RETRY)}
    if gid is not None:
        body["gid"] = gid
    body.update(options)
    r = dtxd.create(body)
    assert r.status == 201, r
    assert r.body["status"] == "prepared" and r.body["type"] == ttype, r
    return r.body["gid"]


def register(dtxd, gid, body, status=201):
    r = dtxd.post(f"/v1/transactions/{gid}/branches", body)
    assert r.status == status, r
    return r.body["branch"]


def tcc_branch(p, name, payload=None, branch=None):
    b = {"confirm": p.url(f"/{name}/confirm"), "cancel": p.url(f"/{name}/cancel")}
    if payload is not None:
        b["payload"] = payload
    if branch is not None:
        b["branch"] = branch
    return b


def xa_branch(p, name, payload=None, branch=None):
    b = {
        "prepare": p.url(f"/{name}/prepare"),
        "commit": p.url(f"/{name}/commit"),
        "rollback": p.url(f"/{name}/rollback"),
    }
    if payload is not None:
        b["payload"] = payload
    if branch is not None:
        b["branch"] = branch
    return b


def submit(dtxd, gid, body=None, status=200):
    r = dtxd.post(f"/v1/transactions/{gid}/submit", body)
    assert r.status == status, r
    return r.body


def abort(dtxd, gid, body=None, status=200):
    r = dtxd.post(f"/v1/transactions/{gid}/abort", body)
    assert r.status == status, r
    return r.body


def branch_states(txn):
    return [b["status"] for b in txn["branches"]]


# ---------------------------------------------------------------- TCC


def test_tcc_submit_confirms_every_branch(dtxd, participant):
    p = participant
    gid = create(dtxd, "tcc", gid=new_gid("tcc"))
    b1 = register(dtxd, gid, tcc_branch(p, "debit", {"amount": 5}))
    b2 = register(dtxd, gid, tcc_branch(p, "credit", {"amount": 5}))
    assert (b1, b2) == ("1", "2")
    # registered, not yet submitted: nothing is called
    time.sleep(0.1)
    assert p.count() == 0
    t = submit(dtxd, gid, {"wait": True})
    assert t["status"] == "succeeded", t
    assert branch_states(t) == ["succeeded", "succeeded"]
    assert [b["confirm_attempts"] for b in t["branches"]] == [1, 1]
    assert p.count("/debit/confirm") == 1 and p.count("/credit/confirm") == 1
    assert p.count("/debit/cancel") == 0
    c = p.calls("/debit/confirm")[0]
    assert c.op == "confirm" and c.gid == gid and c.branch == "1"
    assert c.header("Dtx-Type") == "tcc"
    assert c.header("Idempotency-Key") == f"{gid}/1/confirm"
    assert c.json() == {"amount": 5}
    # the answer shows tcc names for the URLs
    assert set(t["branches"][0]) >= {"confirm", "cancel", "confirm_attempts", "cancel_attempts"}
    assert "action" not in t["branches"][0]


def test_tcc_abort_cancels_every_registered_branch(dtxd, participant):
    p = participant
    gid = create(dtxd, "tcc")
    register(dtxd, gid, tcc_branch(p, "a"))
    register(dtxd, gid, tcc_branch(p, "b"))
    t = abort(dtxd, gid, {"wait": True})
    assert t["status"] == "failed", t
    assert branch_states(t) == ["compensated", "compensated"]
    assert p.count("/a/cancel") == 1 and p.count("/b/cancel") == 1
    assert p.count("/a/confirm") == 0
    assert {c.op for c in p.calls()} == {"cancel"}
    # abort again: the same answer; submit now: refused
    assert abort(dtxd, gid)["status"] == "failed"
    assert_error(dtxd.post(f"/v1/transactions/{gid}/submit"), 409, "invalid_state", None)


def test_tcc_timeout_before_submit_cancels(dtxd, participant):
    p = participant
    gid = create(dtxd, "tcc", timeout_ms=300)
    register(dtxd, gid, tcc_branch(p, "a"))
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    assert p.count("/a/cancel") == 1
    # too late to register or submit
    assert_error(dtxd.post(f"/v1/transactions/{gid}/branches", tcc_branch(p, "z")), 409,
                 "invalid_state", None)


def test_tcc_confirm_retried_until_it_succeeds(dtxd, participant):
    p = participant
    p.script("/a/confirm", [500, 409, ("drop",), 200])
    gid = create(dtxd, "tcc", retry={"initial_interval_ms": 10, "max_interval_ms": 50, "limit": 10})
    register(dtxd, gid, tcc_branch(p, "a"))
    submit(dtxd, gid)
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    assert p.count("/a/confirm") >= 4
    assert p.count("/a/cancel") == 0
    # a 409 on confirm is not a rollback: the error says so
    assert t["branches"][0]["last_error"] is not None


def test_tcc_confirm_past_limit_flags_needs_attention(dtxd, participant):
    p = participant
    p.script("/a/confirm", [500])
    gid = create(dtxd, "tcc", retry={"initial_interval_ms": 10, "max_interval_ms": 300, "limit": 2})
    register(dtxd, gid, tcc_branch(p, "a"))
    submit(dtxd, gid)
    t = dtxd.wait_txn(gid, lambda t: t["needs_attention"], what="needs_attention")
    assert t["status"] == "submitted"
    listed = dtxd.list(status="submitted").body["transactions"]
    assert any(x["gid"] == gid and x["needs_attention"] for x in listed)
    p.script("/a/confirm", [200])
    # retry now: no need to wait for the longest interval
    r = dtxd.post(f"/v1/transactions/{gid}/retry")
    assert r.status == 200, r
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded" and t["needs_attention"] is False


def test_tcc_register_is_idempotent_on_branch_id(dtxd, participant):
    p = participant
    gid = create(dtxd, "tcc")
    body = tcc_branch(p, "a", {"n": 1}, branch="debit")
    r = dtxd.post(f"/v1/transactions/{gid}/branches", body)
    assert r.status == 201 and r.body == {"gid": gid, "branch": "debit"}, r
    r = dtxd.post(f"/v1/transactions/{gid}/branches", body)
    assert r.status == 200 and r.body == {"gid": gid, "branch": "debit"}, r
    other = dict(body, payload={"n": 2})
    assert_error(dtxd.post(f"/v1/transactions/{gid}/branches", other), 409, "branch_conflict",
                 "branch")
    # generated ids skip the ones in use
    register(dtxd, gid, tcc_branch(p, "b", branch="2"))
    assert register(dtxd, gid, tcc_branch(p, "c")) == "3"
    t = dtxd.txn(gid)
    assert [b["branch"] for b in t["branches"]] == ["debit", "2", "3"]
    # after submit, the same registration still answers the same
    submit(dtxd, gid, {"wait": True})
    r = dtxd.post(f"/v1/transactions/{gid}/branches", body)
    assert r.status == 200, r
    assert_error(dtxd.post(f"/v1/transactions/{gid}/branches", tcc_branch(p, "d")), 409,
                 "invalid_state", None)
    assert p.calls("/a/confirm")[0].branch == "debit"


def test_tcc_without_branches(dtxd):
    gid = create(dtxd, "tcc")
    assert submit(dtxd, gid, {"wait": True})["status"] == "succeeded"
    gid = create(dtxd, "tcc")
    assert abort(dtxd, gid, {"wait": True})["status"] == "failed"


def test_tcc_abort_after_submit_refused(dtxd, participant):
    p = participant
    p.script("/a/confirm", [("block", 200)])
    gid = create(dtxd, "tcc")
    register(dtxd, gid, tcc_branch(p, "a"))
    submit(dtxd, gid)
    p.wait_calls("/a/confirm")
    assert_error(dtxd.post(f"/v1/transactions/{gid}/abort"), 409, "invalid_state", None)
    p.release()
    assert dtxd.wait_final(gid)["status"] == "succeeded"


# ---------------------------------------------------------------- 2PC


def test_2pc_prepares_then_commits(dtxd, participant):
    p = participant
    gid = create(dtxd, "2pc", gid=new_gid("xa"))
    register(dtxd, gid, xa_branch(p, "a", {"k": 1}))
    register(dtxd, gid, xa_branch(p, "b", {"k": 2}))
    t = submit(dtxd, gid, {"wait": True})
    assert t["status"] == "succeeded", t
    assert branch_states(t) == ["succeeded", "succeeded"]
    ops = [(c.path, c.op) for c in p.calls()]
    prepares = [i for i, (_, op) in enumerate(ops) if op == "prepare"]
    commits = [i for i, (_, op) in enumerate(ops) if op == "commit"]
    assert len(prepares) == 2 and len(commits) == 2
    assert max(prepares) < min(commits), ops  # every vote before any commit
    assert p.count(op="rollback") == 0
    b = t["branches"][0]
    assert (b["prepare_attempts"], b["commit_attempts"], b["rollback_attempts"]) == (1, 1, 0)
    assert p.calls("/a/commit")[0].json() == {"k": 1}
    assert p.calls("/a/prepare")[0].header("Dtx-Type") == "2pc"


def test_2pc_no_vote_rolls_back_all(dtxd, participant):
    p = participant
    p.script("/b/prepare", [409])
    gid = create(dtxd, "2pc")
    register(dtxd, gid, xa_branch(p, "a"))
    register(dtxd, gid, xa_branch(p, "b"))
    register(dtxd, gid, xa_branch(p, "c"))
    t = submit(dtxd, gid, {"wait": True})
    assert t["status"] == "failed", t
    assert branch_states(t) == ["compensated"] * 3
    assert p.count(op="commit") == 0
    for n in "abc":
        assert p.count(f"/{n}/rollback") == 1
    assert "409" in t["branches"][1]["last_error"]


def test_2pc_prepare_exhausting_retries_rolls_back(dtxd, participant):
    p = participant
    p.script("/a/prepare", [500])
    gid = create(dtxd, "2pc", retry={"initial_interval_ms": 5, "max_interval_ms": 20, "limit": 2})
    register(dtxd, gid, xa_branch(p, "a"))
    register(dtxd, gid, xa_branch(p, "b"))
    t = submit(dtxd, gid, {"wait": True})
    assert t["status"] == "failed"
    assert p.count("/a/prepare") == 3
    assert p.count(op="commit") == 0 and p.count(op="rollback") == 2


def test_2pc_timeout_before_decision_rolls_back(dtxd, participant):
    p = participant
    p.script("/b/prepare", [("block", 200)])
    gid = create(dtxd, "2pc", timeout_ms=400)
    register(dtxd, gid, xa_branch(p, "a"))
    register(dtxd, gid, xa_branch(p, "b"))
    submit(dtxd, gid)
    p.wait_calls("/b/prepare")
    t = dtxd.wait_txn(gid, lambda t: t["status"] == "aborting", what="aborting")
    # the rollback of b waits for its prepare's answer
    time.sleep(0.1)
    assert p.count("/b/rollback") == 0
    p.release()
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    assert p.count(op="commit") == 0
    assert p.count("/a/rollback") == 1 and p.count("/b/rollback") == 1
    b_calls = [c.op for c in p.calls() if c.path.startswith("/b/")]
    assert b_calls == ["prepare", "rollback"]


def test_2pc_commit_retried_until_it_succeeds(dtxd, participant):
    p = participant
    p.script("/a/commit", [500, 409, 503, 200])
    gid = create(dtxd, "2pc", retry={"initial_interval_ms": 5, "max_interval_ms": 20, "limit": 10})
    register(dtxd, gid, xa_branch(p, "a"))
    t = submit(dtxd, gid, {"wait": True})
    assert t["status"] == "succeeded", t
    assert p.count("/a/commit") == 4 and p.count(op="rollback") == 0


def test_2pc_abort_while_preparing(dtxd, participant):
    p = participant
    p.script("/a/prepare", [("block", 200)])
    gid = create(dtxd, "2pc")
    register(dtxd, gid, xa_branch(p, "a"))
    register(dtxd, gid, xa_branch(p, "b"))
    submit(dtxd, gid)
    p.wait_calls("/a/prepare")
    t = abort(dtxd, gid)
    assert t["status"] == "aborting"
    p.release()
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed" and p.count(op="commit") == 0


def test_2pc_abort_after_decision_refused(dtxd, participant):
    p = participant
    p.script("/a/commit", [("block", 200)])
    gid = create(dtxd, "2pc")
    register(dtxd, gid, xa_branch(p, "a"))
    submit(dtxd, gid)
    p.wait_calls("/a/commit")
    assert dtxd.txn(gid)["status"] == "committing"
    assert_error(dtxd.post(f"/v1/transactions/{gid}/abort"), 409, "invalid_state", None)
    assert dtxd.list(status="committing").body["transactions"][0]["gid"] == gid
    p.release()
    assert dtxd.wait_final(gid)["status"] == "succeeded"


# ---------------------------------------------------------------- msg


def msg_body(p, gid=None, n=2, **options):
    body = {
        "type": "msg",
        "check": p.url("/check"),
        "steps": [{"action": p.url(f"/deliver{i + 1}"), "payload": {"i": i + 1}} for i in range(n)],
        "retry": dict(FAST_RETRY),
    }
    if gid:
        body["gid"] = gid
    body.update(options)
    return body


def test_msg_submit_delivers_in_order(dtxd, participant):
    p = participant
    r = dtxd.create(msg_body(p, n=3))
    assert r.status == 201 and r.body["status"] == "prepared", r
    gid = r.body["gid"]
    assert r.body["check"] == p.url("/check")
    time.sleep(0.1)
    assert p.count() == 0
    t = submit(dtxd, gid, {"wait": True})
    assert t["status"] == "succeeded", t
    assert [c.path for c in p.calls()] == ["/deliver1", "/deliver2", "/deliver3"]
    assert p.calls("/deliver2")[0].json() == {"i": 2}
    assert p.calls("/deliver1")[0].header("Dtx-Type") == "msg"
    assert p.count("/check") == 0


def test_msg_delivery_retried_in_order(dtxd, participant):
    p = participant
    p.script("/deliver1", [500, 409, 200])
    gid = dtxd.create(msg_body(p)).body["gid"]
    t = submit(dtxd, gid, {"wait": True})
    assert t["status"] == "succeeded"
    paths = [c.path for c in p.calls()]
    assert paths == ["/deliver1"] * 3 + ["/deliver2"]


def test_msg_check_committed_delivers(dtxd, participant):
    p = participant
    gid = dtxd.create(msg_body(p, timeout_ms=200)).body["gid"]
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    check = p.calls("/check")
    assert len(check) == 1
    assert check[0].op == "check" and check[0].gid == gid and check[0].branch == "00"
    assert p.count("/deliver1") == 1 and p.count("/deliver2") == 1
    assert t["check_attempts"] == 1


def test_msg_check_rolled_back_fails(dtxd, participant):
    p = participant
    p.script("/check", [409])
    gid = dtxd.create(msg_body(p, timeout_ms=200)).body["gid"]
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    assert branch_states(t) == ["pending", "pending"]
    assert p.count("/deliver1") == 0


def test_msg_check_unknown_asks_again(dtxd, participant):
    p = participant
    p.script("/check", [425, 500, ("drop",), 200])
    gid = dtxd.create(msg_body(p, timeout_ms=100)).body["gid"]
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    assert p.count("/check") == 4


def test_msg_submit_after_check_started(dtxd, participant):
    p = participant
    p.script("/check", [("block", 200)])
    gid = dtxd.create(msg_body(p, timeout_ms=100)).body["gid"]
    p.wait_calls("/check")
    # the client submits while dtxd is asking: submitted wins, delivered once
    assert submit(dtxd, gid)["status"] in ("submitted", "succeeded")
    p.release()
    assert dtxd.wait_final(gid)["status"] == "succeeded"
    time.sleep(0.1)
    assert p.count("/deliver1") == 1


def test_msg_abort_before_submit(dtxd, participant):
    p = participant
    gid = dtxd.create(msg_body(p)).body["gid"]
    t = abort(dtxd, gid)
    assert t["status"] == "failed"
    assert_error(dtxd.post(f"/v1/transactions/{gid}/submit"), 409, "invalid_state", None)
    assert p.count() == 0


def test_msg_abort_after_submit_refused(dtxd, participant):
    p = participant
    p.script("/deliver1", [("block", 200)])
    gid = dtxd.create(msg_body(p)).body["gid"]
    submit(dtxd, gid)
    p.wait_calls("/deliver1")
    assert_error(dtxd.post(f"/v1/transactions/{gid}/abort"), 409, "invalid_state", None)
    p.release()
    assert dtxd.wait_final(gid)["status"] == "succeeded"


# ------------------------------------------------------ control endpoints


def test_submit_is_idempotent_and_saga_submit_is_a_no_op(dtxd, participant):
    p = participant
    gid = dtxd.create(msg_body(p)).body["gid"]
    a = submit(dtxd, gid, {"wait": True})
    b = submit(dtxd, gid)
    assert a == b and a["status"] == "succeeded"
    assert p.count("/deliver1") == 1
    r = dtxd.create({"type": "saga", "steps": [{"action": p.url("/s"), "compensate": p.url("/u")}],
                     "wait": True})
    assert submit(dtxd, r.body["gid"])["status"] == "succeeded"


def test_saga_abort_compensates_started_steps(dtxd, participant):
    p = participant
    p.script("/s2", [("block", 200)])
    body = {"type": "saga", "retry": dict(FAST_RETRY), "steps": [
        {"action": p.url("/s1"), "compensate": p.url("/s1-undo")},
        {"action": p.url("/s2"), "compensate": p.url("/s2-undo")},
        {"action": p.url("/s3"), "compensate": p.url("/s3-undo")}]}
    gid = dtxd.create(body).body["gid"]
    p.wait_calls("/s2")
    assert abort(dtxd, gid)["status"] == "aborting"
    p.release()
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    assert branch_states(t) == ["compensated", "compensated", "pending"]
    assert p.count("/s3") == 0


def test_control_endpoint_errors(dtxd, participant):
    p = participant
    for action in ("submit", "abort", "retry", "branches"):
        assert_error(dtxd.post(f"/v1/transactions/nope-{action}/{action}", {}), 404, "not_found",
                     "gid")
        r = dtxd.get(f"/v1/transactions/x/{action}")
        assert_error(r, 405, "method_not_allowed", None)
    assert_error(dtxd.post("/v1/transactions/x/frobnicate", {}), 404, "not_found", None)
    gid = create(dtxd, "tcc")
    bad = [
        ({"wait": "yes"}, 400, "wrong_type", "wait"),
        ({"wait_timeout_ms": 0}, 400, "invalid_value", "wait_timeout_ms"),
        ({"nope": 1}, 400, "unknown_field", "nope"),
    ]
    for body, status, code, field in bad:
        assert_error(dtxd.post(f"/v1/transactions/{gid}/submit", body), status, code, field)
        assert_error(dtxd.post(f"/v1/transactions/{gid}/abort", body), status, code, field)
    r = dtxd.post(f"/v1/transactions/{gid}/submit", raw=b"[1")
    assert_error(r, 400, "invalid_json", None)
    # nothing above changed the transaction
    assert dtxd.txn(gid)["status"] == "prepared"
    # a finished transaction cannot be retried
    abort(dtxd, gid, {"wait": True})
    assert_error(dtxd.post(f"/v1/transactions/{gid}/retry"), 409, "invalid_state", None)


def test_register_errors(dtxd, participant):
    p = participant
    saga_gid = dtxd.create({"type": "saga", "steps": [
        {"action": p.url("/s"), "compensate": p.url("/u")}]}).body["gid"]
    assert_error(dtxd.post(f"/v1/transactions/{saga_gid}/branches", tcc_branch(p, "a")), 409,
                 "invalid_state", None)
    tcc = create(dtxd, "tcc")
    xa = create(dtxd, "2pc")
    cases = [
        (tcc, {"cancel": p.url("/c")}, "missing_field", "confirm"),
        (tcc, {"confirm": p.url("/c")}, "missing_field", "cancel"),
        (tcc, dict(tcc_branch(p, "a"), confirm=5), "wrong_type", "confirm"),
        (tcc, dict(tcc_branch(p, "a"), confirm="ftp://x/y"), "invalid_url", "confirm"),
        (tcc, dict(tcc_branch(p, "a"), prepare=p.url("/p")), "unknown_field", "prepare"),
        (tcc, dict(tcc_branch(p, "a"), branch=""), "invalid_value", "branch"),
        (tcc, dict(tcc_branch(p, "a"), branch="x" * 65), "invalid_value", "branch"),
        (tcc, dict(tcc_branch(p, "a"), branch="a/b"), "invalid_value", "branch"),
        (tcc, dict(tcc_branch(p, "a"), branch=3), "wrong_type", "branch"),
        (xa, tcc_branch(p, "a"), "unknown_field", None),
        (xa, {"commit": p.url("/c"), "rollback": p.url("/r")}, "missing_field", "prepare"),
        (xa, dict(xa_branch(p, "a"), rollback=None), "wrong_type", "rollback"),
    ]
    for gid, body, code, field in cases:
        r = dtxd.post(f"/v1/transactions/{gid}/branches", body)
        if field is None:
            assert_error(r, 400, code)
        else:
            assert_error(r, 400, code, field)
    assert_error(dtxd.post(f"/v1/transactions/{tcc}/branches", raw=b"{"), 400, "invalid_json", None)
    assert dtxd.txn(tcc)["branches"] == [] and dtxd.txn(xa)["branches"] == []


def test_too_many_branches(dtxd_factory, participant):
    d = dtxd_factory("--max-steps", "2")
    gid = create(d, "tcc")
    register(d, gid, tcc_branch(participant, "a"))
    register(d, gid, tcc_branch(participant, "b"))
    assert_error(d.post(f"/v1/transactions/{gid}/branches", tcc_branch(participant, "c")), 409,
                 "too_many_branches", None)


def test_create_errors_of_new_modes(dtxd, participant):
    p = participant
    url = p.url("/x")
    cases = [
        ({"type": "tcc", "steps": []}, "invalid_value", "steps"),
        ({"type": "2pc", "check": url}, "invalid_value", "check"),
        ({"type": "saga", "check": url, "steps": [{"action": url, "compensate": url}]},
         "invalid_value", "check"),
        ({"type": "msg", "steps": [{"action": url}]}, "missing_field", "check"),
        ({"type": "msg", "check": 1, "steps": [{"action": url}]}, "wrong_type", "check"),
        ({"type": "msg", "check": "mailto:x", "steps": [{"action": url}]}, "invalid_url", "check"),
        ({"type": "msg", "check": url}, "missing_field", "steps"),
        ({"type": "msg", "check": url, "steps": [{"action": url, "compensate": url}]},
         "unknown_field", "steps[0].compensate"),
        ({"type": "msg", "check": url, "steps": [{"action": url, "after": []}]},
         "unknown_field", "steps[0].after"),
        ({"type": "msg", "check": url, "steps": [{"action": url}], "timeout_ms": 0},
         "invalid_value", "timeout_ms"),
        ({"type": "xa"}, "invalid_type", "type"),
    ]
    for body, code, field in cases:
        assert_error(dtxd.create(body), 400, code, field)
    assert dtxd.list().body["transactions"] == []


def test_same_gid_same_body_for_new_modes(dtxd, participant):
    p = participant
    gid = new_gid("idem")
    body = msg_body(p, gid=gid)
    assert dtxd.create(body).status == 201
    r = dtxd.create(body)
    assert r.status == 200 and r.body["gid"] == gid
    assert_error(dtxd.create(dict(body, check=p.url("/other"))), 409, "gid_conflict", "gid")
    gid = create(dtxd, "tcc", gid=new_gid("idem"))
    register(dtxd, gid, tcc_branch(p, "a"))
    # the branches came by registration: re-creating still matches
    r = dtxd.create({"type": "tcc", "gid": gid, "retry": dict(FAST_RETRY)})
    assert r.status == 200 and len(r.body["branches"]) == 1, r
    assert_error(dtxd.create({"type": "2pc", "gid": gid}), 409, "gid_conflict", "gid")


def test_list_filters_new_types_and_states(dtxd, participant):
    p = participant
    tcc = create(dtxd, "tcc")
    xa = create(dtxd, "2pc")
    m = dtxd.create(msg_body(p)).body["gid"]
    assert {t["gid"] for t in dtxd.list(type="tcc").body["transactions"]} == {tcc}
    assert {t["gid"] for t in dtxd.list(type="2pc").body["transactions"]} == {xa}
    assert {t["gid"] for t in dtxd.list(type="msg").body["transactions"]} == {m}
    assert {t["gid"] for t in dtxd.list(status="prepared").body["transactions"]} == {tcc, xa, m}
    assert_error(dtxd.get("/v1/transactions?type=xa"), 400, "invalid_value", "type")


# ---------------------------------------------------------------- crashes


def test_tcc_kill9_after_submit_confirms_on_restart(dtxd, participant):
    p = participant
    p.script("/a/confirm", [("block", 200)])
    gid = create(dtxd, "tcc")
    register(dtxd, gid, tcc_branch(p, "a"))
    register(dtxd, gid, tcc_branch(p, "b"))
    submit(dtxd, gid)
    p.wait_calls("/a/confirm")
    dtxd.kill9()
    p.release()
    dtxd.restart()
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    assert p.count("/a/cancel") == 0 and p.count("/b/cancel") == 0
    assert p.count("/a/confirm") >= 1 and p.count("/b/confirm") >= 1


def test_tcc_kill9_while_prepared_keeps_branches_and_times_out(dtxd, participant):
    p = participant
    gid = create(dtxd, "tcc", timeout_ms=1500)
    register(dtxd, gid, tcc_branch(p, "a", branch="x"))
    dtxd.kill9()
    dtxd.restart()
    t = dtxd.txn(gid)
    assert t["status"] == "prepared" and [b["branch"] for b in t["branches"]] == ["x"]
    # registration goes on after the restart; the timeout still holds
    register(dtxd, gid, tcc_branch(p, "b"))
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    assert p.count("/a/cancel") == 1 and p.count("/b/cancel") == 1


def test_2pc_kill9_before_decision_rolls_back(dtxd, participant):
    p = participant
    p.script("/b/prepare", [("block", 200)])
    gid = create(dtxd, "2pc")
    register(dtxd, gid, xa_branch(p, "a"))
    register(dtxd, gid, xa_branch(p, "b"))
    submit(dtxd, gid)
    p.wait_calls("/b/prepare")
    wait_until(lambda: p.count("/a/prepare") == 1)
    dtxd.kill9()
    p.release()
    dtxd.restart()
    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    assert p.count(op="commit") == 0
    assert p.count("/a/rollback") == 1 and p.count("/b/rollback") == 1


def test_2pc_kill9_after_decision_commits(dtxd, participant):
    p = participant
    p.script("/b/commit", [("block", 200)])
    gid = create(dtxd, "2pc")
    register(dtxd, gid, xa_branch(p, "a"))
    register(dtxd, gid, xa_branch(p, "b"))
    submit(dtxd, gid)
    p.wait_calls("/b/commit")
    dtxd.kill9()
    p.release()
    dtxd.restart()
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    assert p.count(op="rollback") == 0
    assert p.count("/b/commit") >= 1


def test_msg_kill9_prepared_then_check_decides(dtxd, participant):
    p = participant
    gid = dtxd.create(msg_body(p, timeout_ms=800)).body["gid"]
    dtxd.kill9()
    dtxd.restart()
    assert dtxd.txn(gid)["status"] == "prepared"
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    assert p.count("/check") == 1 and p.count("/deliver2") == 1


def test_msg_kill9_mid_delivery_resumes(dtxd, participant):
    p = participant
    p.script("/deliver2", [("block", 200)])
    gid = dtxd.create(msg_body(p, n=3)).body["gid"]
    submit(dtxd, gid)
    p.wait_calls("/deliver2")
    dtxd.kill9()
    p.release()
    dtxd.restart()
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    assert p.count("/deliver1") == 1  # its success was on disk: not sent again
    assert p.count("/deliver3") == 1
    assert p.count("/check") == 0


# ------------------------------------------- branches with the create request


def test_2pc_created_with_branches_and_submitted_in_one_request(dtxd, participant):
    p = participant
    gid = new_gid("one")
    body = {"type": "2pc", "gid": gid, "retry": dict(FAST_RETRY), "submit": True, "wait": True,
            "branches": [xa_branch(p, "a", {"k": 1}, branch="a"), xa_branch(p, "b")]}
    r = dtxd.create(body)
    assert r.status == 201, r
    t = r.body
    assert t["status"] == "succeeded", t
    assert [b["branch"] for b in t["branches"]] == ["a", "1"]
    assert branch_states(t) == ["succeeded", "succeeded"]
    assert p.count(op="prepare") == 2 and p.count(op="commit") == 2
    assert p.calls("/a/commit")[0].branch == "a"
    # the same request again: the same transaction, nothing called again
    r = dtxd.create(body)
    assert r.status == 200 and r.body["status"] == "succeeded", r
    assert p.count(op="commit") == 2
    # other branches under the same gid: a conflict
    assert_error(dtxd.create(dict(body, branches=[xa_branch(p, "c", branch="a")])), 409,
                 "gid_conflict", "gid")


def test_tcc_created_with_branches_then_registered_more(dtxd, participant):
    p = participant
    gid = new_gid("tb")
    body = {"type": "tcc", "gid": gid, "retry": dict(FAST_RETRY),
            "branches": [tcc_branch(p, "a", branch="x")]}
    assert dtxd.create(body).status == 201
    # a generated id counts from the number of branches already there
    assert register(dtxd, gid, tcc_branch(p, "b")) == "2"
    # re-creating still matches: the inline branch is there as given
    assert dtxd.create(body).status == 200
    t = submit(dtxd, gid, {"wait": True})
    assert t["status"] == "succeeded" and [b["branch"] for b in t["branches"]] == ["x", "2"]


def test_2pc_one_request_no_vote_rolls_back(dtxd, participant):
    p = participant
    p.script("/b/prepare", [409])
    body = {"type": "2pc", "retry": dict(FAST_RETRY), "submit": True, "wait": True,
            "branches": [xa_branch(p, "a"), xa_branch(p, "b")]}
    t = dtxd.create(body).body
    assert t["status"] == "failed" and branch_states(t) == ["compensated", "compensated"]
    assert p.count(op="commit") == 0


def test_msg_created_submitted_is_delivered_without_check(dtxd, participant):
    p = participant
    r = dtxd.create(msg_body(p, submit=True, wait=True))
    assert r.status == 201 and r.body["status"] == "succeeded", r
    assert p.count("/check") == 0 and p.count("/deliver2") == 1


def test_inline_branches_and_submit_errors(dtxd, participant):
    p = participant
    url = p.url("/x")
    saga_step = {"action": url, "compensate": url}
    cases = [
        ({"type": "saga", "steps": [saga_step], "submit": True}, "invalid_value", "submit"),
        ({"type": "tcc", "submit": "yes"}, "wrong_type", "submit"),
        ({"type": "saga", "steps": [saga_step], "branches": []}, "invalid_value", "branches"),
        ({"type": "msg", "check": url, "steps": [{"action": url}], "branches": []},
         "invalid_value", "branches"),
        ({"type": "tcc", "branches": {}}, "wrong_type", "branches"),
        ({"type": "tcc", "branches": [5]}, "wrong_type", "branches[0]"),
        ({"type": "tcc", "branches": [{"confirm": url}]}, "missing_field", "branches[0].cancel"),
        ({"type": "tcc", "branches": [dict(tcc_branch(p, "a"), prepare=url)]}, "unknown_field",
         "branches[0].prepare"),
        ({"type": "2pc", "branches": [xa_branch(p, "a"), dict(xa_branch(p, "b"), commit="ftp://x")]},
         "invalid_url", "branches[1].commit"),
        ({"type": "2pc", "branches": [xa_branch(p, "a", branch="k"), xa_branch(p, "b", branch="k")]},
         "invalid_value", "branches[1]"),
        ({"type": "2pc", "branches": [{"branch": "r", "resource": "nope"}]}, "invalid_value",
         "branches[0].resource"),
    ]
    for body, code, field in cases:
        assert_error(dtxd.create(body), 400, code, field)
    assert dtxd.list().body["transactions"] == []


def test_too_many_inline_branches(dtxd_factory, participant):
    d = dtxd_factory("--max-steps", "2")
    body = {"type": "tcc", "branches": [tcc_branch(participant, n) for n in "abc"]}
    assert_error(d.create(body), 400, "too_many_steps", "branches")
