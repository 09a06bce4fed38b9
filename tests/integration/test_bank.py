"""
The bank example end to end: two real account services (examples/bank/bank),
each on its own PostgreSQL database, the real transfer client
(examples/bank/transfer) and the real dtxd, in every mode (saga, tcc, 2pc,
msg). What a user of the bank sees is checked: the transfer's exit status,
dtxd's final state, and the balances - money moves exactly once or not at
all, nothing stays frozen or held.

PostgreSQL comes from DTX_TEST_PG_HOST / DTX_TEST_PG_PORT (databases bank_a
and bank_b); without them the PostgreSQL tests are skipped (failed with
DTX_REQUIRE_PG=1). test_sqlite_* runs the same service on SQLite files and
needs nothing.
"""

import concurrent.futures
import random
import time

import pytest

from bankfix import MODES, Bank, pg_conninfo, require_binaries, reset_pg, transfer, transfer_async
from dtxtest import FAST_RETRY, new_gid

# bank_a and bank_b of the shared PostgreSQL: these modules take turns (xdist)
pytestmark = pytest.mark.xdist_group("pg_bank")


class Env:
    """dtxd and two banks: A holds alice (100), B holds bob (0)."""

    def __init__(self, dtxd, a, b):
        self.d = dtxd
        self.A = a
        self.B = b

    def alice(self):
        return (self.A, "alice")

    def bob(self):
        return (self.B, "bob")

    def balances(self):
        return self.A.balance("alice"), self.B.balance("bob")

    def assert_clean(self):
        for bank in (self.A, self.B):
            s = bank.accounts()
            assert s["frozen"] == 0 and s["holds"] == 0, (bank.name, s)
            assert all(a["balance"] >= 0 and a["frozen"] == 0 for a in s["accounts"]), s

    def run(self, mode, amount, *, gid=None, wait=True, extra=(), src=None, dst=None):
        return transfer(self.d, mode, src or self.alice(), dst or self.bob(), amount,
                        gid=gid or new_gid(mode), wait=wait, extra=extra)


def _start_banks(tmp_path, dbs):
    require_binaries()
    banks = [Bank(name, db, tmp_path / f"bank{name}.log") for name, db in dbs]
    try:
        for b in banks:
            b.start()
    except Exception:
        for b in banks:
            b.kill9()
        raise
    return banks


def _stop_banks(banks):
    for b in banks:
        b.kill9()
        # Shown by pytest only when the test failed (captured teardown output).
        print(f"---- bank {b.name} log tail ({b.log_path})\n{b.log_tail(60)}")


@pytest.fixture
def env(tmp_path, dtxd_factory):
    dbs = [("A", pg_conninfo("bank_a")), ("B", pg_conninfo("bank_b"))]
    for _, ci in dbs:
        reset_pg(ci)
    d = dtxd_factory()
    a, b = _start_banks(tmp_path, dbs)
    a.set_account("alice", 100)
    b.set_account("bob", 0)
    yield Env(d, a, b)
    _stop_banks([a, b])


@pytest.fixture
def sqlite_env(tmp_path, dtxd_factory):
    d = dtxd_factory()
    a, b = _start_banks(tmp_path, [("A", tmp_path / "a.db"), ("B", tmp_path / "b.db")])
    a.set_account("alice", 100)
    b.set_account("bob", 0)
    yield Env(d, a, b)
    _stop_banks([a, b])


def assert_moved(e, r, amount=10):
    assert r.rc == 0, r
    assert e.d.txn(r.gid)["status"] == "succeeded"
    assert e.balances() == (100 - amount, amount)
    e.assert_clean()


def assert_unchanged(e, r):
    assert r.rc == 1, r
    t = e.d.wait_final(r.gid)
    assert t["status"] == "failed", t
    assert e.balances() == (100, 0)
    e.assert_clean()


def assert_consistent(e, gid, amount=10, expect=None):
    """Final, and the balances say the same as dtxd."""
    t = e.d.wait_final(gid, timeout=30)
    if expect is not None:
        assert t["status"] == expect, t
    if t["status"] == "succeeded":
        assert e.balances() == (100 - amount, amount), t
    else:
        assert e.balances() == (100, 0), t
    e.assert_clean()
    return t


def branch(t, bid):
    return next(b for b in t["branches"] if b["branch"] == bid)


# --------------------------------------------------------------------------
# SQLite: the same service with nothing installed


@pytest.mark.parametrize("mode", MODES)
def test_sqlite_transfer_and_refusal(sqlite_env, mode):
    e = sqlite_env
    r = e.run(mode, 10)
    assert "succeeded" in r.out, r
    assert_moved(e, r)
    r = e.run(mode, 1000)
    assert r.rc == 1, r
    assert e.d.wait_final(r.gid)["status"] == "failed"
    assert e.balances() == (90, 10)
    e.assert_clean()


# --------------------------------------------------------------------------
# success and business failure, every mode


@pytest.mark.parametrize("mode", MODES)
def test_transfer_succeeds(env, mode):
    r = env.run(mode, 10)
    assert_moved(env, r)


@pytest.mark.parametrize("mode", MODES)
def test_insufficient_funds_changes_nothing(env, mode):
    r = env.run(mode, 101)
    assert_unchanged(env, r)


@pytest.mark.parametrize("mode", MODES)
def test_unknown_payee_rolls_back_the_debit(env, mode):
    r = env.run(mode, 10, dst=(env.B, "nobody"))
    assert_unchanged(env, r)


# Every forward step that may refuse, refused (409 before the database).
REFUSALS = [
    ("saga", "A", "/saga/debit"),
    ("saga", "B", "/saga/credit"),
    ("tcc", "A", "/tcc/debit/try"),
    ("tcc", "B", "/tcc/credit/try"),
    ("2pc", "A", "/2pc/debit/prepare"),
    ("2pc", "B", "/2pc/credit/prepare"),
    ("msg", "A", "/msg/start"),
]


@pytest.mark.parametrize("mode,bank,path", REFUSALS)
def test_refusal_at_each_step_rolls_back(env, mode, bank, path):
    getattr(env, bank).fault(path, fail=1, status=409)
    r = env.run(mode, 10)
    assert_unchanged(env, r)


# Transient 500s at every step, then success: dtxd (or the client, for a
# Try) retries and the barrier keeps each change to one.
TRANSIENTS = [
    ("saga", "A", "/saga/debit"),
    ("saga", "B", "/saga/credit"),
    ("tcc", "A", "/tcc/debit/try"),
    ("tcc", "A", "/tcc/debit/confirm"),
    ("tcc", "B", "/tcc/credit/confirm"),
    ("2pc", "A", "/2pc/debit/prepare"),
    ("2pc", "B", "/2pc/credit/prepare"),
    ("2pc", "A", "/2pc/debit/commit"),
    ("2pc", "B", "/2pc/credit/commit"),
    ("msg", "A", "/msg/start"),
    ("msg", "B", "/msg/credit"),
]


@pytest.mark.parametrize("mode,bank,path", TRANSIENTS)
def test_transient_errors_are_retried(env, mode, bank, path):
    getattr(env, bank).fault(path, fail=2, status=500)
    if path == "/msg/start":
        # The client cannot know whether the local transaction committed:
        # it leaves the decision to dtxd, which asks A's check.
        r = env.run(mode, 10, wait=False, extra=["--timeout-ms", "300"])
        assert r.rc == 3 and "outcome unknown" in r.out, r
        # 500 answered before the database: the local debit never ran, so
        # the check says rolled back and the transfer fails, money untouched.
        assert_consistent(env, r.gid, expect="failed")
        return
    r = env.run(mode, 10)
    assert_moved(env, r)
    if mode != "tcc" or "try" not in path:
        t = env.d.txn(r.gid)
        assert any(sum(v for k, v in b.items() if k.endswith("_attempts")) >= 3 for b in t["branches"]), t


# Undo steps fail transiently too and still complete.
UNDO_TRANSIENTS = [
    ("saga", ("B", "/saga/credit", 409), ("A", "/saga/debit-undo")),
    ("tcc", ("B", "/tcc/credit/try", 409), ("A", "/tcc/debit/cancel")),
    ("2pc", ("B", "/2pc/credit/prepare", 409), ("A", "/2pc/debit/rollback")),
]


@pytest.mark.parametrize("mode,refuse,undo", UNDO_TRANSIENTS)
def test_transient_errors_on_undo_are_retried(env, mode, refuse, undo):
    getattr(env, refuse[0]).fault(refuse[1], fail=1, status=refuse[2])
    getattr(env, undo[0]).fault(undo[1], fail=3, status=500)
    r = env.run(mode, 10)
    assert_unchanged(env, r)
    assert getattr(env, undo[0]).count_log(undo[1].replace("/", r"\/") + r" .* -> 200 applied") == 1


# --------------------------------------------------------------------------
# timeouts


def test_tcc_never_submitted_is_cancelled_at_its_timeout(env):
    r = env.run("tcc", 10, wait=False, extra=["--no-submit", "--timeout-ms", "1200"])
    assert r.rc == 3 and "not submitted" in r.out, r
    # Both Trys reserved: the money is frozen until dtxd decides.
    assert env.A.account("alice")["frozen"] == 10
    t = env.d.wait_final(r.gid)
    assert t["status"] == "failed", t
    assert env.balances() == (100, 0)
    env.assert_clean()


def test_2pc_never_submitted_is_rolled_back_at_its_timeout(env):
    r = env.run("2pc", 10, wait=False, extra=["--no-submit", "--timeout-ms", "300"])
    assert r.rc == 3, r
    assert_consistent(env, r.gid, expect="failed")


def test_msg_never_submitted_after_commit_is_delivered(env):
    r = env.run("msg", 10, wait=False, extra=["--no-submit", "--timeout-ms", "1000"])
    assert r.rc == 3 and "committed" in r.out, r
    assert env.balances() == (90, 0)  # debited locally, not yet delivered
    assert_consistent(env, r.gid, expect="succeeded")
    env.A.wait_log(r"/msg/check .* -> 200 committed")


def test_msg_whose_local_transaction_never_ran_is_aborted_by_the_check(env):
    gid = new_gid("msg")
    r = env.d.create({"gid": gid, "type": "msg", "check": env.A.url("/msg/check"),
                      "steps": [{"action": env.B.url("/msg/credit"), "payload": {"account": "bob", "amount": 10}}],
                      "timeout_ms": 300, "retry": FAST_RETRY})
    assert r.status == 201, r
    assert_consistent(env, gid, expect="failed")
    # The check's answer is final: the local transaction can no longer commit.
    st, body = env.A.request("POST", "/msg/start", {"account": "alice", "amount": 10}, {"Dtx-Gid": gid})
    assert st == 409, body
    assert env.balances() == (100, 0)


# --------------------------------------------------------------------------
# kill -9 of dtxd at each phase, then restart: it finishes consistently


# (mode, faults [(bank, path, status)], the delayed path, expected outcome)
KILLS = [
    ("saga", [], ("B", "/saga/credit"), "succeeded"),
    ("saga", [("B", "/saga/credit", 409)], ("A", "/saga/debit-undo"), "failed"),
    ("tcc", [], ("B", "/tcc/credit/confirm"), "succeeded"),
    ("tcc", [("B", "/tcc/credit/try", 409)], ("A", "/tcc/debit/cancel"), "failed"),
    ("2pc", [], ("B", "/2pc/credit/prepare"), None),
    ("2pc", [], ("B", "/2pc/credit/commit"), "succeeded"),
    ("2pc", [("B", "/2pc/credit/prepare", 409)], ("A", "/2pc/debit/rollback"), "failed"),
    ("msg", [], ("B", "/msg/credit"), "succeeded"),
]


@pytest.mark.parametrize("mode,faults,held,expect", KILLS,
                         ids=[f"{m}-{h[1].rsplit('/', 1)[1]}" for m, _, h, _ in KILLS])
def test_kill9_at_each_phase_then_restart(env, mode, faults, held, expect):
    for bank, path, status in faults:
        getattr(env, bank).fault(path, fail=1, status=status)
    bank = getattr(env, held[0])
    # Hold the phase: the first call of the path waits 1.5 s before it runs.
    bank.fault(held[1], fail=1, status=0, delay_ms=1500)
    gid = new_gid(mode)
    p = transfer_async(env.d, mode, env.alice(), env.bob(), 10, gid=gid, wait=False)
    bank.wait_log(held[1].replace("/", r"\/") + r" +delaying")
    env.d.kill9()
    p.wait(30)
    env.d.restart()
    assert_consistent(env, gid, expect=expect)


@pytest.mark.parametrize("mode,path", [("saga", "/saga/credit"), ("tcc", "/tcc/credit/confirm"),
                                       ("2pc", "/2pc/credit/commit"), ("msg", "/msg/credit")])
def test_kill9_of_the_payee_bank_then_restart(env, mode, path):
    """The payee's bank dies in the middle of a call (before its change):
    dtxd keeps retrying until it is back, and the money arrives once. A
    saga's action has a retry limit: with FAST_RETRY's 10 attempts, full
    jitter could spend them in under 0.3 s, before the bank is back (seen
    once on a loaded machine), so here the limit outlasts its restart."""
    env.B.fault(path, fail=1, status=0, delay_ms=5000)
    gid = new_gid(mode)
    retry = dict(FAST_RETRY, limit=100)  # ~10 s of retries at the 200 ms cap
    p = transfer_async(env.d, mode, env.alice(), env.bob(), 10, gid=gid, wait=False, retry=retry)
    env.B.wait_log(path + r" +delaying")
    env.B.kill9()
    p.wait(30)
    time.sleep(0.3)  # a few refused connections: transient, retried
    env.B.start()
    assert_consistent(env, gid, expect="succeeded")


def test_kill9_before_tcc_submit_then_submit(env):
    r = env.run("tcc", 10, wait=False, extra=["--no-submit"])
    assert r.rc == 3, r
    env.d.kill9()
    env.d.restart()
    s = env.d.post(f"/v1/transactions/{r.gid}/submit", {"wait": True})
    assert s.status == 200, s
    assert_consistent(env, r.gid, expect="succeeded")


def test_kill9_while_msg_check_runs(env):
    env.A.fault("/msg/check", fail=1, status=0, delay_ms=1500)
    r = env.run("msg", 10, wait=False, extra=["--no-submit", "--timeout-ms", "200"])
    assert r.rc == 3, r
    env.A.wait_log(r"/msg/check +delaying")
    env.d.kill9()
    env.d.restart()
    assert_consistent(env, r.gid, expect="succeeded")


# --------------------------------------------------------------------------
# barrier disorder: the bank's endpoints called directly, as a confused
# network would deliver them


def test_cancel_before_try_blocks_the_late_try(env):
    gid = new_gid("tcc")
    st, body = env.A.call("/tcc/debit/cancel", gid, "debit", "cancel", "alice", 10)
    assert (st, body["result"]) == (200, "null_undo")
    st, body = env.A.call("/tcc/debit/try", gid, "debit", "try", "alice", 10)
    assert (st, body["result"]) == (409, "late")
    assert env.A.account("alice") == {"id": "alice", "balance": 100, "frozen": 0}
    env.assert_clean()


def test_compensate_before_action_and_rollback_before_prepare(env):
    gid = new_gid("dis")
    st, body = env.A.call("/saga/debit-undo", gid, "1", "compensate", "alice", 10)
    assert (st, body["result"]) == (200, "null_undo")
    st, body = env.A.call("/saga/debit", gid, "1", "action", "alice", 10)
    assert (st, body["result"]) == (409, "late")
    st, body = env.A.call("/2pc/debit/rollback", gid, "2", "rollback", "alice", 10)
    assert (st, body["result"]) == (200, "null_undo")
    st, body = env.A.call("/2pc/debit/prepare", gid, "2", "prepare", "alice", 10)
    assert (st, body["result"]) == (409, "late")
    assert env.balances() == (100, 0)
    env.assert_clean()


def test_duplicate_deliveries_apply_once(env):
    gid = new_gid("dup")
    for _ in range(3):
        st, _ = env.B.call("/msg/credit", gid, "1", "action", "bob", 7)
        assert st == 200
    for _ in range(2):
        assert env.A.call("/tcc/debit/try", gid, "t", "try", "alice", 5)[0] == 200
    assert env.A.account("alice")["frozen"] == 5
    results = [env.A.call("/tcc/debit/confirm", gid, "t", "confirm", "alice", 5)[1]["result"] for _ in range(3)]
    assert results == ["applied", "duplicate", "duplicate"]
    results = [env.A.call("/saga/debit", gid, "s", "action", "alice", 10)[1]["result"] for _ in range(2)]
    assert results == ["applied", "duplicate"]
    assert env.balances() == (85, 7)
    env.assert_clean()


def test_late_try_after_abort_through_dtxd(env):
    """A TCC client registers, dtxd cancels (abort) before the Try arrives:
    the Try is refused and nothing stays frozen."""
    gid = new_gid("tcc")
    assert env.d.create({"gid": gid, "type": "tcc", "retry": FAST_RETRY}).status == 201
    r = env.d.post(f"/v1/transactions/{gid}/branches",
                   {"branch": "debit", "confirm": env.A.url("/tcc/debit/confirm"),
                    "cancel": env.A.url("/tcc/debit/cancel"), "payload": {"account": "alice", "amount": 10}})
    assert r.status == 201, r
    assert env.d.post(f"/v1/transactions/{gid}/abort", {"wait": True}).status == 200
    assert env.d.wait_final(gid)["status"] == "failed"
    st, body = env.A.call("/tcc/debit/try", gid, "debit", "try", "alice", 10)
    assert (st, body["result"]) == (409, "late")
    env.assert_clean()


def test_wrong_or_missing_headers_are_refused(env):
    st, _ = env.A.request("POST", "/saga/debit", {"account": "alice", "amount": 1})
    assert st == 400
    st, _ = env.A.call("/saga/debit", "g", "1", "try", "alice", 1)
    assert st == 400
    st, _ = env.A.call("/saga/debit", "g", "1", "action", "alice", -1)
    assert st == 400
    assert env.balances() == (100, 0)


# --------------------------------------------------------------------------
# the bank invariant under concurrency, failures and timeouts


def test_bank_invariant_under_concurrent_mixed_transfers(env):
    check_invariant(env)


def test_sqlite_bank_invariant_under_concurrent_mixed_transfers(sqlite_env):
    check_invariant(sqlite_env)


def check_invariant(env):
    rnd = random.Random(20261121)
    accts = [(env.A, f"a{i}") for i in range(3)] + [(env.B, f"b{i}") for i in range(3)]
    for bank, name in accts:
        bank.set_account(name, 200)
    total = sum(b.accounts()["total"] for b in (env.A, env.B))
    for bank in (env.A, env.B):
        for path, n, status in [
            ("/saga/debit", 6, 409), ("/saga/credit", 8, 500), ("/saga/debit-undo", 4, 500),
            ("/tcc/credit/try", 6, 409), ("/tcc/debit/confirm", 8, 500), ("/tcc/debit/cancel", 4, 500),
            ("/2pc/debit/prepare", 8, 500), ("/2pc/credit/prepare", 6, 409), ("/2pc/credit/commit", 8, 500),
            ("/msg/credit", 8, 500), ("/msg/start", 4, 409),
        ]:
            bank.fault(path, fail=n, status=status)

    jobs = []
    for i in range(220):
        src, dst = rnd.sample(accts, 2)
        mode = MODES[i % 4]
        extra = []
        if i % 13 in (1, 3) and mode in ("tcc", "msg"):
            extra = ["--no-submit", "--timeout-ms", "500"]  # a client that vanished
        jobs.append((mode, src, dst, rnd.randint(1, 120), new_gid(f"inv{i}-{mode}"), extra))

    def run(job):
        mode, src, dst, amount, gid, extra = job
        return transfer(env.d, mode, src, dst, amount, gid=gid, wait=not extra, extra=extra, timeout=90)

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=24) as ex:
        results = list(ex.map(run, jobs))
    codes = [r.rc for r in results]
    assert set(codes) <= {0, 1, 3}, [r for r in results if r.rc not in (0, 1, 3)][:3]

    statuses = {}
    for r, job in zip(results, jobs):
        t = env.d.wait_final(r.gid, timeout=max(5, 60 - (time.monotonic() - t0)))
        assert not t["needs_attention"], t
        statuses.setdefault((job[0], t["status"]), 0)
        statuses[(job[0], t["status"])] += 1
        if r.rc == 0:
            assert t["status"] == "succeeded", (r, t)
        elif r.rc == 1:
            assert t["status"] == "failed", (r, t)
    print("outcomes:", sorted(statuses.items()))
    for mode in MODES:
        assert statuses.get((mode, "succeeded"), 0) > 0, statuses
        assert statuses.get((mode, "failed"), 0) > 0, statuses

    # Money is neither made nor lost, nothing is left frozen or held.
    after = [b.accounts() for b in (env.A, env.B)]
    assert sum(s["total"] for s in after) == total, after
    for s in after:
        assert s["frozen"] == 0 and s["holds"] == 0, s
        assert all(a["balance"] >= 0 for a in s["accounts"]), s
