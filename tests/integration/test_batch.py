"""POST /v1/transactions:batch: many transactions in one request, each its
own transaction (created, or refused with its own error), answered once every
accepted one is durable; against the real dtxd and a real participant."""

import json
import time

import pytest

from dtxtest import assert_error, new_gid

BATCH = "/v1/transactions:batch"


def msg(p, path="/deliver", **kw):
    body = {"type": "msg", "check": p.url("/check"), "submit": True,
            "steps": [{"action": p.url(path), "payload": {"n": 1}}]}
    body.update(kw)
    return body


def saga(p, **kw):
    body = {"type": "saga", "steps": [{"action": p.url("/a"), "compensate": p.url("/c")}]}
    body.update(kw)
    return body


def test_batch_creates_each_and_runs_them(dtxd, participant):
    """Three msgs and a saga in one request: four transactions, each answered
    201 with its summary, in order; every one of them then runs."""
    p = participant
    gids = [new_gid("b") for _ in range(4)]
    items = [msg(p, gid=g) for g in gids[:3]] + [saga(p, gid=gids[3])]
    r = dtxd.post(BATCH, {"transactions": items})
    assert r.status == 200, r
    res = r.body["results"]
    assert [x["status"] for x in res] == [201] * 4, r
    assert [x["transaction"]["gid"] for x in res] == gids
    assert [x["transaction"]["type"] for x in res] == ["msg"] * 3 + ["saga"]
    assert all(x["transaction"]["status"] == "submitted" for x in res), r
    for g in gids:
        assert dtxd.wait_final(g)["status"] == "succeeded"
    assert p.count("/deliver") == 3 and p.count("/a") == 1
    assert sorted(c.header("Dtx-Gid") for c in p.calls("/deliver")) == sorted(gids[:3])


def test_batch_items_fail_alone(dtxd, participant):
    """A bad item is refused with its own error and field path; the others
    are created; a gid reused with a different body is a 409 for that item;
    the same body again is 200 (the existing transaction)."""
    p = participant
    g_ok, g_dup = new_gid("ok"), new_gid("dup")
    assert dtxd.create(msg(p, gid=g_dup)).status == 201
    items = [
        msg(p, gid=g_ok),
        {"type": "msg", "steps": [{"action": "ftp://x/y"}]},
        msg(p, gid=g_dup),
        msg(p, gid=g_dup, timeout_ms=777),
        "not an object",
        msg(p, wait=True),
        {"type": "saga", "steps": [{"action": p.url("/a")}]},
    ]
    r = dtxd.post(BATCH, {"transactions": items})
    assert r.status == 200, r
    res = r.body["results"]
    assert [x["status"] for x in res] == [201, 400, 200, 409, 400, 400, 400], r
    assert res[0]["transaction"]["gid"] == g_ok
    assert res[1]["error"]["field"] == "transactions[1].steps[0].action"
    assert res[1]["error"]["code"] == "invalid_url"
    assert res[1]["error"]["message"].startswith("transactions[1].steps[0].action ")
    assert res[2]["transaction"]["gid"] == g_dup
    assert res[3]["error"] == {"code": "gid_conflict", "field": "transactions[3].gid",
                               "message": res[3]["error"]["message"]}
    assert res[4]["error"]["field"] == "transactions[4]"
    assert res[4]["error"]["code"] == "invalid_json"
    assert res[4]["error"]["message"].startswith("transactions[4]: ")
    assert res[5]["error"]["field"] == "transactions[5].wait"
    assert res[6]["error"]["field"] == "transactions[6].steps[0].compensate"
    assert dtxd.wait_final(g_ok)["status"] == "succeeded"
    # the refused items left nothing behind
    listed = dtxd.list(limit=100).body["transactions"]
    assert {t["gid"] for t in listed} == {g_ok, g_dup}


@pytest.mark.parametrize("raw,code,field", [
    (b"", "invalid_json", None),
    (b"[]", "invalid_json", None),
    (b'{"transactions": {}}', "wrong_type", "transactions"),
    (b'{"transactions": []}', "invalid_value", "transactions"),
    (b"{}", "missing_field", "transactions"),
    (b'{"transactions": [], "wait": true}', "unknown_field", "wait"),
])
def test_batch_bad_body(dtxd, raw, code, field):
    assert_error(dtxd.post(BATCH, raw=raw), 400, code, field)


def test_batch_limits(dtxd_factory, participant):
    """--max-batch bounds the items (too_many_items); --max-body the bytes
    (413); GET is 405. Nothing of a refused batch is created."""
    d = dtxd_factory("--max-batch", "3", "--max-body", "4096")
    p = participant
    r = d.post(BATCH, {"transactions": [msg(p) for _ in range(4)]})
    assert_error(r, 400, "too_many_items", "transactions")
    r = d.post(BATCH, {"transactions": [msg(p, path="/" + "x" * 3000)] * 2})
    assert r.status == 413, r
    assert_error(d.get(BATCH), 405, "method_not_allowed", None)
    assert d.list().body["transactions"] == []
    r = d.post(BATCH, {"transactions": [msg(p) for _ in range(3)]})
    assert [x["status"] for x in r.body["results"]] == [201] * 3


def test_batch_is_durable_when_answered(dtxd, participant):
    """Every transaction a batch answered 201 survives kill -9 right after the
    answer, and is then run to its end."""
    p = participant
    items = [msg(p) for _ in range(200)]
    r = dtxd.post(BATCH, {"transactions": items})
    assert r.status == 200
    gids = [x["transaction"]["gid"] for x in r.body["results"]]
    assert len(set(gids)) == 200
    dtxd.kill9()
    dtxd.start()
    for g in gids:
        assert dtxd.wait_final(g, timeout=30)["status"] == "succeeded"
    delivered = {c.header("Dtx-Gid") for c in p.calls("/deliver") if c.status == 200}
    assert delivered == set(gids)
