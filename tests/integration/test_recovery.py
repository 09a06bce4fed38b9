"""Crashes and restarts: kill -9 in the middle of a saga or of its
compensation, restart after finish, SIGTERM, and acknowledged creates that
must survive a crash."""

import http.client
import re
import threading
import time

import pytest

from dtxtest import TRACEPARENT_RE, new_gid, saga, step, wait_until


def trace_id(call):
    return TRACEPARENT_RE.match(call.header("traceparent")).group(1)


def test_kill9_while_action_hangs_resumes(dtxd, participant):
    p = participant
    p.script("/s2", [("block", 200), 200])
    gid = new_gid("k9a")
    r = dtxd.create(saga([step(p, "s1", {"n": 1}), step(p, "s2", {"n": 2}), step(p, "s3", {"n": 3})], gid=gid))
    assert r.status == 201, r
    p.wait_calls("/s2")  # s1 succeeded, s2 is hanging in the participant
    dtxd.kill9()
    p.release("/s2")  # the answer goes nowhere
    dtxd.restart()

    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    assert p.count("/s1") == 1  # recorded succeeded: not run again
    s2 = p.calls("/s2")
    assert len(s2) == 2  # outcome unknown at the crash: called again
    assert s2[0].key == s2[1].key == f"{gid}/2/action"
    assert s2[1].json() == {"n": 2}
    assert p.count("/s3") == 1
    assert p.ops(gid) == [("/s1", "action"), ("/s2", "action"), ("/s2", "action"), ("/s3", "action")]
    assert [b["status"] for b in t["branches"]] == ["succeeded"] * 3


def test_trace_id_survives_restart(dtxd, participant):
    p = participant
    p.script("/s2", [("block", 200), 200])
    gid = new_gid("k9t")
    assert dtxd.create(saga([step(p, "s1"), step(p, "s2")], gid=gid)).status == 201
    p.wait_calls("/s2")
    dtxd.kill9()
    p.release("/s2")
    dtxd.restart()
    assert dtxd.wait_final(gid)["status"] == "succeeded"
    assert len({trace_id(c) for c in p.calls(gid=gid)}) == 1


def test_kill9_during_compensation_finishes(dtxd, participant):
    p = participant
    p.script("/s3", [409])
    p.script("/s2-undo", [("block", 200), 200])
    gid = new_gid("k9c")
    r = dtxd.create(saga([step(p, "s1"), step(p, "s2"), step(p, "s3"), step(p, "s4")], gid=gid))
    assert r.status == 201, r
    p.wait_calls("/s2-undo")
    dtxd.kill9()
    p.release("/s2-undo")
    dtxd.restart()

    t = dtxd.wait_final(gid)
    assert t["status"] == "failed"
    assert t["needs_attention"] is False
    assert p.ops(gid) == [
        ("/s1", "action"),
        ("/s2", "action"),
        ("/s3", "action"),
        ("/s3-undo", "compensate"),
        ("/s2-undo", "compensate"),
        ("/s2-undo", "compensate"),
        ("/s1-undo", "compensate"),
    ]
    assert [b["status"] for b in t["branches"]] == ["compensated"] * 3 + ["pending"]


def test_kill9_during_retry_backoff_resumes(dtxd, participant):
    p = participant
    p.script("/s1", [500])
    gid = new_gid("k9r")
    assert dtxd.create(saga([step(p, "s1"), step(p, "s2")], gid=gid)).status == 201
    p.wait_calls("/s1", 2)
    dtxd.kill9()
    p.script("/s1", [200])
    dtxd.restart()
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    assert p.count("/s2") == 1
    assert p.count("/s1-undo") == 0


def test_transaction_timeout_counts_across_restart(dtxd, participant):
    p = participant
    p.script("/s1", [425])
    gid = new_gid("k9ttl")
    t0 = time.monotonic()
    assert dtxd.create(saga([step(p, "s1")], gid=gid, timeout_ms=1000)).status == 201
    p.wait_calls("/s1")
    dtxd.kill9()
    time.sleep(max(0.0, 1.2 - (time.monotonic() - t0)))
    dtxd.restart()
    t = dtxd.wait_final(gid, timeout=10)
    assert t["status"] == "failed"
    assert p.count("/s1-undo") == 1
    assert t["branches"][0]["status"] == "compensated"


@pytest.mark.parametrize("stop", ["kill9", "term"])
def test_restart_after_finish_keeps_transactions(dtxd, participant, stop):
    p = participant
    gids = []
    for i in range(6):
        gid = new_gid(f"fin{i}")
        if i % 3 == 2:
            p.script("/s2", [409], gid=gid)
        r = dtxd.create(saga([step(p, "s1", {"i": i}), step(p, "s2", {"i": i})], gid=gid, wait=True))
        assert r.status == 201 and r.body["status"] in ("succeeded", "failed"), r
        gids.append(gid)
    before = {g: dtxd.txn(g) for g in gids}
    listing = dtxd.list().body
    calls = p.count()

    if stop == "kill9":
        dtxd.kill9()
    else:
        assert dtxd.term() == 0
    dtxd.restart()

    for g in gids:
        assert dtxd.txn(g) == before[g]
    assert dtxd.list().body == listing
    time.sleep(0.3)
    assert p.count() == calls  # nothing finished is run again


def test_sigterm_exits_zero_and_restart_keeps_everything(dtxd, participant):
    p = participant
    done = []
    for i in range(3):
        r = dtxd.create(saga([step(p, "d", {"i": i})], wait=True))
        assert r.status == 201, r
        done.append(r.body["gid"])
    before = {g: dtxd.txn(g) for g in done}
    p.script("/s1", [("block", 200), 200])
    gid = new_gid("term")
    assert dtxd.create(saga([step(p, "s1"), step(p, "s2")], gid=gid)).status == 201
    p.wait_calls("/s1")

    assert dtxd.term() == 0
    with pytest.raises(OSError):
        dtxd.get("/healthz", timeout=2)  # no longer accepting
    p.release("/s1")
    dtxd.restart()

    for g in done:
        assert dtxd.txn(g) == before[g]
    t = dtxd.wait_final(gid)
    assert t["status"] == "succeeded"
    assert p.count("/s2") == 1
    assert p.count("/s1") in (1, 2)


def test_sigterm_with_retries_waiting(dtxd, participant):
    """SIGTERM while transactions have retry, timeout and wait timers armed:
    a clean exit 0 (under the sanitizers: no use of freed timers), and the
    restart carries on."""
    p = participant
    p.script("/s2", [409])
    p.script("/s1-undo", [500, 500, 200])
    slow = {"initial_interval_ms": 5000, "max_interval_ms": 5000, "limit": 10}
    gid = new_gid("termretry")
    body = saga([step(p, "s1"), step(p, "s2")], gid=gid, retry=slow, timeout_ms=600000)
    assert dtxd.create(body).status == 201
    p.wait_calls("/s1-undo")  # the compensation now waits 5 s for its retry
    waiting = new_gid("termwait")
    p.script("/w1", [("block", 200)])
    assert dtxd.create(saga([step(p, "w1")], gid=waiting)).status == 201
    p.wait_calls("/w1")
    assert dtxd.term() == 0
    p.release()
    dtxd.restart()
    t = dtxd.wait_final(gid, timeout=30)
    assert t["status"] == "failed"
    assert dtxd.wait_final(waiting)["status"] == "succeeded"


@pytest.mark.parametrize("stop", ["kill9", "term"])
def test_acknowledged_creates_survive(dtxd, participant, stop):
    """Create as fast as possible from several threads, stop dtxd the moment
    50 are acknowledged; every acknowledged gid must be there after restart."""
    p = participant
    acked = {}
    lock = threading.Lock()

    for rnd in range(3):
        stopping = threading.Event()
        round_acked = []

        def worker(w):
            n = 0
            while not stopping.is_set():
                gid = f"ack-{rnd}-{w}-{n}"
                n += 1
                body = saga([step(p, "s1", {"g": gid})], gid=gid)
                try:
                    r = dtxd.create(body, timeout=5)
                except (OSError, http.client.HTTPException):
                    time.sleep(0.01)
                    continue
                if r.status == 201:
                    with lock:
                        acked[gid] = body
                        round_acked.append(gid)
                elif r.status != 503:
                    with lock:
                        acked.setdefault("!unexpected", []).append((gid, repr(r)))

        threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(4)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(round_acked) >= 50, timeout=30, interval=0.001, what="50 acknowledged creates")
            if stop == "kill9":
                dtxd.kill9()
            else:
                assert dtxd.term() == 0
        finally:
            stopping.set()
            for t in threads:
                t.join(10)
        dtxd.restart()

    assert "!unexpected" not in acked, acked.get("!unexpected")[:5]
    for gid, body in acked.items():
        r = dtxd.get("/v1/transactions/" + gid)
        assert r.status == 200, (gid, r)
        assert r.body["branches"][0]["payload"] == {"g": gid}
        assert r.body["branches"][0]["action"] == body["steps"][0]["action"]
    for gid in acked:
        assert dtxd.wait_final(gid)["status"] == "succeeded"
        assert p.count("/s1", gid=gid) >= 1


def test_many_segments_recovered(dtxd_factory, participant):
    d = dtxd_factory("--segment-size", "65536")
    gids = []
    for i in range(150):
        gid = f"seg-{i:04d}"
        r = d.create(saga([step(participant, "s1", {"pad": "p" * 500, "i": i})], gid=gid))
        assert r.status == 201, r
        gids.append(gid)
    for g in gids:
        d.wait_final(g)
    before = {g: d.txn(g) for g in gids}
    d.kill9()
    d.restart()
    for g in gids:
        assert d.txn(g) == before[g]
    assert participant.count() == 150


def test_compaction_keeps_live_and_finished_transactions(dtxd_factory, participant):
    """Small segments and a low compaction threshold force several
    compactions while one saga is stuck mid-way; after kill -9 and restart
    every finished saga reads back identically and the stuck one resumes
    without re-running its recorded step."""
    p = participant
    d = dtxd_factory("--segment-size", "65536", "--compact-min-bytes", "65536")
    p.script("/hold", [("block", 200)])
    live = "compact-live"
    r = d.create(saga([step(p, "first"), step(p, "hold")], gid=live))
    assert r.status == 201, r
    p.wait_calls("/hold", 1)

    gids = []
    for i in range(400):
        gid = f"compact-{i:04d}"
        r = d.create(saga([step(p, "s1", {"pad": "p" * 400, "i": i})], gid=gid, wait=True))
        assert r.status == 201 and r.body["status"] == "succeeded", r
        gids.append(gid)
    # the engine asks for compaction once a second; wait for it to happen
    wait_until(lambda: d.log_text().count("log compacted") >= 2, timeout=15, what="compactions")
    segments = sorted(x.name for x in d.data_dir.iterdir() if x.name.endswith(".log"))
    assert len(segments) <= 4, segments  # old segments were dropped

    before = {g: d.txn(g) for g in gids}
    d.kill9()
    d.restart()
    for g in gids:
        assert d.txn(g) == before[g]
    t = d.txn(live)
    assert t["status"] == "submitted"
    assert t["branches"][0]["status"] == "succeeded"
    p.release("/hold")
    assert d.wait_final(live)["status"] == "succeeded"
    assert p.count("/first") == 1  # recorded as done: never sent again


def test_compaction_in_slices_while_transactions_change(dtxd_factory, participant):
    """The loop encodes live transactions for a snapshot in slices, serving
    between them, so a transaction may change after the cut and before it is
    encoded. 50,000 live tcc transactions; 2,000 of them are submitted or
    aborted one by one while compactions run (at least one over several
    slices); kill -9 right after the last acknowledged request, restart:
    every submitted one ends succeeded with only its confirms called, every
    aborted one failed with only its cancels, and the untouched ones are
    still prepared with nothing called."""
    p = participant
    # a compaction about once a second (each sealed segment asks for one),
    # each encoding 50,000 live transactions over tens of slices
    d = dtxd_factory("--segment-size", "65536", "--compact-min-bytes", "0")
    n, changed = 50000, 2000

    def tcc(g):
        return {"type": "tcc", "gid": g, "timeout_ms": 600000, "branches": [
            {"branch": "a", "confirm": p.url("/ca"), "cancel": p.url("/xa"), "payload": {"n": 1}},
            {"branch": "b", "confirm": p.url("/cb"), "cancel": p.url("/xb"), "payload": {"n": 2}}]}

    gids = [f"slice-{i:05d}" for i in range(n)]
    for k in range(0, n, 1000):
        r = d.post("/v1/transactions:batch", {"transactions": [tcc(g) for g in gids[k:k + 1000]]})
        assert r.status == 200, r
        assert [x["status"] for x in r.body["results"]] == [201] * 1000

    ops = {}
    for i, g in enumerate(gids[:changed]):
        op = "submit" if i % 2 == 0 else "abort"
        r = d.post(f"/v1/transactions/{g}/{op}")
        assert r.status == 200, r
        ops[g] = op
    d.kill9()
    sliced = [int(m) for m in re.findall(r"compaction snapshot handed.* slices=(\d+)", d.log_text())]
    assert any(x >= 2 for x in sliced), sliced  # the window this test is about
    d.restart()

    for g, op in ops.items():
        t = d.wait_final(g, timeout=30)
        assert t["status"] == ("succeeded" if op == "submit" else "failed"), t
        want = [("/ca", "confirm"), ("/cb", "confirm")] if op == "submit" else \
            [("/xa", "cancel"), ("/xb", "cancel")]
        assert sorted(set(p.ops(g))) == want, (g, p.ops(g))
    for g in gids[changed::997]:
        assert d.txn(g)["status"] == "prepared"
    assert d.list(status="prepared", limit=1).body["transactions"], "untouched ones kept"
    assert p.count("/ca") + p.count("/xa") >= changed  # a call cut by the kill may repeat
    untouched = {c.header("Dtx-Gid") for c in p.calls()} - set(ops)
    assert not untouched, sorted(untouched)[:5]


def test_retention_drops_finished_transactions(dtxd_factory, participant):
    """Finished transactions stay queryable for --retention seconds, then
    disappear, also after a restart; unfinished ones are never dropped."""
    p = participant
    d = dtxd_factory("--retention", "1")
    p.script("/hold", [("block", 200)])
    done = "ret-done"
    r = d.create(saga([step(p, "s1")], gid=done, wait=True))
    assert r.status == 201 and r.body["status"] == "succeeded", r
    live = "ret-live"
    assert d.create(saga([step(p, "hold")], gid=live)).status == 201
    assert d.txn(done)["status"] == "succeeded"
    wait_until(lambda: d.get("/v1/transactions/" + done).status == 404, timeout=5,
               what="retention expiry")
    d.kill9()
    d.restart()
    assert d.get("/v1/transactions/" + done).status == 404
    assert d.txn(live)["status"] == "submitted"
    p.release("/hold")
    assert d.wait_final(live)["status"] == "succeeded"
