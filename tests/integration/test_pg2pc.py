"""
2pc over PostgreSQL prepared transactions, end to end: the bank example's xa
mode (examples/bank: each bank does its change, PREPARE TRANSACTION
'dtx:<gid>:<branch>' and registers the branch with dtxd as a resource), the
real transfer client, and the real dtxd configured with the two bank
databases as resources (--resources FILE), committing and rolling back the
prepared transactions itself.

dtxd reaches its resources through a PgProxy each (bankfix.py), which can
hold the COMMIT PREPARED statements: that is how a test stops dtxd after its
decision and before a commit, or between the two commits, deterministically.
The banks talk to PostgreSQL directly.

Every scenario ends with the balances consistent with dtxd's outcome and
pg_prepared_xacts empty of dtx: transactions on both databases (waiting for
dtxd's periodic scan where the scenario needs it: dtxd runs here with
--resource-scan-ms 300 and --orphan-grace-ms 2000).

PostgreSQL comes from DTX_TEST_PG_HOST / DTX_TEST_PG_PORT (databases bank_a
and bank_b, max_prepared_transactions > 0); without them the tests are
skipped (failed with DTX_REQUIRE_PG=1). The test that restarts PostgreSQL
starts a cluster of its own (scripts/pg.sh) rather than restart a shared one.
"""

import json
import os
import subprocess
import time

import pytest

from bankfix import (Bank, PgCluster, PgProxy, pg_conninfo, pg_target, prepared_xacts, psql,
                     require_binaries, reset_pg, rollback_prepared, transfer, transfer_async)
from dtxtest import FAST_RETRY, new_gid, wait_until

# bank_a and bank_b of the shared PostgreSQL: these modules take turns (xdist)
pytestmark = pytest.mark.xdist_group("pg_bank")

PASSWORD = "secret123"
SCAN_MS = 300
GRACE_MS = 2000
DBS = ("bank_a", "bank_b")


class XaEnv:
    """dtxd with resources bank_a and bank_b (through proxies), bank A on
    bank_a holding alice, bank B on bank_b holding bob."""

    def __init__(self, tmp_path, dtxd_factory, conninfo, target, *, alice=100, bob=0):
        require_binaries()
        self.tmp = tmp_path
        self.conninfo = conninfo  # dbname -> the banks' (and the test's) conninfo
        self.proxy = {db: PgProxy(*target) for db in DBS}
        self.resources = tmp_path / "resources"
        lines = ["# test resources: name conninfo"]
        for db in DBS:
            lines.append(f"{db} host=127.0.0.1 port={self.proxy[db].port} user=postgres "
                         f"dbname={db} sslmode=disable password={PASSWORD} connect_timeout=5")
        self.resources.write_text("\n".join(lines) + "\n")
        self.d = dtxd_factory("--resources", self.resources, "--resource-scan-ms", SCAN_MS,
                              "--orphan-grace-ms", GRACE_MS)
        self.banks = []
        self.A = self._bank("A", "bank_a")
        self.B = self._bank("B", "bank_b")
        self.A.set_account("alice", alice)
        self.B.set_account("bob", bob)
        self.start = (alice, bob)

    def _bank(self, name, db):
        b = Bank(name, self.conninfo[db], self.tmp / f"bank{name}.log",
                 args=("--dtx", f"http://{self.d.listen}", "--resource", db))
        self.banks.append(b)
        return b.start()

    def close(self):
        for b in self.banks:
            b.kill9()
            print(f"---- bank {b.name} log tail ({b.log_path})\n{b.log_tail(60)}")
        for p in self.proxy.values():
            p.close()

    # -- state --------------------------------------------------------------

    def balances(self):
        """(alice, bob); retried while a bank's pooled connection is broken
        (after a PostgreSQL restart)."""
        def read():
            try:
                return self.A.balance("alice"), self.B.balance("bob")
            except (AssertionError, OSError):
                return None
        return wait_until(read, 15, what="the banks to answer")

    def prepared(self, db):
        return prepared_xacts(self.conninfo[db])

    def all_prepared(self):
        return {db: self.prepared(db) for db in DBS}

    def wait_no_prepared(self, timeout=15.0):
        wait_until(lambda: not any(self.all_prepared().values()), timeout,
                   what="pg_prepared_xacts of bank_a and bank_b to be empty of dtx: transactions")

    def assert_consistent(self, gid, amount, expect=None, timeout=30.0):
        """Final in dtxd; balances as its outcome says; nothing prepared left;
        the password nowhere in dtxd's log or answer."""
        t = self.d.wait_final(gid, timeout=timeout)
        if expect is not None:
            assert t["status"] == expect, t
        alice, bob = self.start
        if t["status"] == "succeeded":
            assert self.balances() == (alice - amount, bob + amount), t
        else:
            assert self.balances() == (alice, bob), t
        self.wait_no_prepared()
        for bank in (self.A, self.B):
            s = bank.accounts()
            assert s["frozen"] == 0 and s["holds"] == 0, (bank.name, s)
        assert PASSWORD not in json.dumps(t)
        assert PASSWORD not in self.d.log_text()
        return t

    # -- actions ------------------------------------------------------------

    def run(self, amount, *, gid=None, src=None, dst=None, wait=True, extra=()):
        return transfer(self.d, "xa", src or (self.A, "alice"), dst or (self.B, "bob"), amount,
                        gid=gid or new_gid("xa"), wait=wait, extra=extra)

    def run_async(self, amount, *, gid=None, src=None, dst=None, wait=True, extra=()):
        return transfer_async(self.d, "xa", src or (self.A, "alice"), dst or (self.B, "bob"),
                              amount, gid=gid or new_gid("xa"), wait=wait, extra=extra)

    def hold_commits(self, *dbs):
        for db in dbs or DBS:
            self.proxy[db].hold(b"COMMIT PREPARED")


def _fresh(conninfo):
    for db in DBS:
        rollback_prepared(conninfo[db])
        reset_pg(conninfo[db])


@pytest.fixture
def xa(tmp_path, dtxd_factory):
    conninfo = {db: pg_conninfo(db) for db in DBS}
    _fresh(conninfo)
    e = XaEnv(tmp_path, dtxd_factory, conninfo, pg_target())
    yield e
    e.close()


@pytest.fixture
def xa_rich(tmp_path, dtxd_factory):
    """As xa, with money on both sides (alice 100, bob 100)."""
    conninfo = {db: pg_conninfo(db) for db in DBS}
    _fresh(conninfo)
    e = XaEnv(tmp_path, dtxd_factory, conninfo, pg_target(), bob=100)
    yield e
    e.close()


def _wait_status(d, gid, status, timeout=20.0):
    """Wait until gid exists in dtxd with this status (a transfer started in
    the background may not have created it yet)."""
    def check():
        r = d.get("/v1/transactions/" + gid)
        return r.status == 200 and r.body["status"] == status and r.body
    return wait_until(check, timeout, what=f"{gid} to be {status}")


def _register(e, gid, branch, resource, payload=None):
    body = {"branch": branch, "resource": resource}
    if payload is not None:
        body["payload"] = payload
    return e.d.post(f"/v1/transactions/{gid}/branches", body)


def _create_2pc(e, gid, **opts):
    body = {"type": "2pc", "gid": gid, "retry": dict(FAST_RETRY)}
    body.update(opts)
    r = e.d.create(body)
    assert r.status == 201, r
    return r.body


# --------------------------------------------------------------------------
# the happy path and the no votes


def test_xa_transfer_commits_both_databases(xa):
    r = xa.run(30)
    assert r.rc == 0, r
    t = xa.assert_consistent(r.gid, 30, "succeeded")
    branches = {b["branch"]: b for b in t["branches"]}
    assert branches["debit"]["resource"] == "bank_a", t
    assert branches["credit"]["resource"] == "bank_b", t
    for b in branches.values():
        assert "prepare" not in b and "commit" not in b and "rollback" not in b, b
        assert b["status"] == "succeeded", b


def test_xa_insufficient_funds_prepares_nothing(xa):
    r = xa.run(500)
    assert r.rc == 1, r
    xa.assert_consistent(r.gid, 500, "failed")
    assert xa.A.count_log(r"/xa/debit .* -> 409 refused") == 1, xa.A.log_tail()
    assert xa.B.count_log(r"/xa/credit") == 0, xa.B.log_tail()


def test_xa_unknown_payee_rolls_back_the_prepared_debit(xa):
    r = xa.run(30, dst=(xa.B, "nobody"))
    assert r.rc == 1, r
    t = xa.assert_consistent(r.gid, 30, "failed")
    assert [b["branch"] for b in t["branches"]] == ["debit"], t


def test_branch_not_prepared_votes_no_and_rolls_back_the_other(xa):
    """B prepared and registered its credit; A's branch is registered but its
    transaction was never prepared: dtxd's phase 1 finds it absent (a no
    vote) and rolls back B's prepared transaction."""
    gid = new_gid("xa-novote")
    _create_2pc(xa, gid)
    st, body = xa.B.request("POST", "/xa/credit", {"account": "bob", "amount": 30},
                            {"Dtx-Gid": gid, "Dtx-Branch": "credit"})
    assert st == 200, body
    assert xa.prepared("bank_b") == [f"dtx:{gid}:credit"]
    r = _register(xa, gid, "debit", "bank_a", {"account": "alice", "amount": 30})
    assert r.status in (200, 201), r
    assert xa.prepared("bank_a") == []
    r = xa.d.post(f"/v1/transactions/{gid}/submit", {"wait": True, "wait_timeout_ms": 20000},
                  timeout=40)
    assert r.status in (200, 202), r
    xa.assert_consistent(gid, 30, "failed")


def test_register_unknown_resource_is_400(xa):
    gid = new_gid("xa-unknown")
    _create_2pc(xa, gid)
    r = _register(xa, gid, "x", "no_such_db")
    assert r.status == 400, r
    assert r.body["error"]["code"] == "invalid_value", r
    assert r.body["error"]["field"] == "resource", r
    # and through the bank: its registration fails, it rolls its prepared
    # transaction back itself and answers 502
    st, body = xa.A.request("POST", "/xa/debit", {"account": "alice", "amount": 5},
                            {"Dtx-Gid": new_gid("nogid"), "Dtx-Branch": "debit"})
    assert st == 502, body
    assert xa.prepared("bank_a") == []
    assert xa.balances() == (100, 0)


def test_repeated_prepare_call_registers_again_without_a_second_change(xa):
    gid = new_gid("xa-dup")
    _create_2pc(xa, gid)
    hdrs = {"Dtx-Gid": gid, "Dtx-Branch": "debit"}
    for expect in ("prepared", "duplicate"):
        st, body = xa.A.request("POST", "/xa/debit", {"account": "alice", "amount": 30}, hdrs)
        assert (st, body["result"]) == (200, expect), body
    assert xa.prepared("bank_a") == [f"dtx:{gid}:debit"]
    st, body = xa.B.request("POST", "/xa/credit", {"account": "bob", "amount": 30},
                            {"Dtx-Gid": gid, "Dtx-Branch": "credit"})
    assert st == 200, body
    r = xa.d.post(f"/v1/transactions/{gid}/submit", {"wait": True, "wait_timeout_ms": 20000},
                  timeout=40)
    assert r.status in (200, 202), r
    xa.assert_consistent(gid, 30, "succeeded")


# --------------------------------------------------------------------------
# crashes of dtxd


def test_kill9_after_prepares_before_the_decision_rolls_back(xa):
    """Both banks prepared and registered, no submit (the client is gone),
    dtxd killed: after the restart nothing is decided, the transaction's
    timeout rolls it back, and dtxd runs ROLLBACK PREPARED on both."""
    r = xa.run(30, wait=False, extra=("--no-submit", "--timeout-ms", "3000"))
    assert r.rc == 3 and "not submitted" in r.out, r
    assert xa.all_prepared() == {"bank_a": [f"dtx:{r.gid}:debit"],
                                 "bank_b": [f"dtx:{r.gid}:credit"]}
    xa.d.kill9()
    xa.d.restart()
    # still deciding: a restart must not touch them (the timeout decides)
    if xa.d.txn(r.gid)["status"] == "prepared":
        assert xa.prepared("bank_a") == [f"dtx:{r.gid}:debit"]
    xa.assert_consistent(r.gid, 30, "failed")


def test_kill9_during_the_vote_rolls_back(xa):
    """Submitted, dtxd's phase-1 look-ups held (the votes are slow), dtxd
    killed: no decision is logged, so the restarted dtxd rolls back (presumed
    abort) and both prepared transactions are rolled back."""
    for db in DBS:
        # the vote runs dtxd's prepared statement dtx_vote (its Bind names it)
        xa.proxy[db].hold(b"dtx_vote")
    p = xa.run_async(30, wait=False)
    gid = p.args[p.args.index("--gid") + 1]
    _wait_status(xa.d, gid, "submitted")
    for db in DBS:
        xa.proxy[db].wait_held()
    time.sleep(0.3)
    assert xa.d.txn(gid)["status"] == "submitted"
    assert xa.all_prepared() == {"bank_a": [f"dtx:{gid}:debit"], "bank_b": [f"dtx:{gid}:credit"]}
    xa.d.kill9()
    for db in DBS:
        xa.proxy[db].drop()
    p.wait(30)
    xa.d.restart()
    xa.assert_consistent(gid, 30, "failed")


def test_kill9_after_the_decision_before_any_commit(xa):
    xa.hold_commits()
    p = xa.run_async(30, wait=False)
    gid = p.args[p.args.index("--gid") + 1]
    _wait_status(xa.d, gid, "committing")
    for db in DBS:
        xa.proxy[db].wait_held()
    assert xa.all_prepared() == {"bank_a": [f"dtx:{gid}:debit"], "bank_b": [f"dtx:{gid}:credit"]}
    xa.d.kill9()
    for db in DBS:
        xa.proxy[db].drop()
    p.wait(30)
    assert xa.balances() == (100, 0)  # nothing committed yet
    xa.d.restart()
    xa.assert_consistent(gid, 30, "succeeded")


def test_kill9_between_the_two_commits(xa):
    xa.hold_commits()
    p = xa.run_async(30, wait=False)
    gid = p.args[p.args.index("--gid") + 1]
    _wait_status(xa.d, gid, "committing")
    for db in DBS:
        xa.proxy[db].wait_held()
    xa.proxy["bank_a"].release()  # the first commit goes through ...
    wait_until(lambda: xa.prepared("bank_a") == [], 15, what="bank_a's COMMIT PREPARED")
    assert xa.prepared("bank_b") == [f"dtx:{gid}:credit"]  # ... the second is held
    assert xa.balances() == (70, 0)
    xa.d.kill9()
    xa.proxy["bank_b"].drop()
    p.wait(30)
    xa.d.restart()
    xa.assert_consistent(gid, 30, "succeeded")


def test_phase2_survives_a_lost_connection_without_a_restart(xa):
    """dtxd's connection to a resource breaks in the middle of its COMMIT
    PREPARED: dtxd reconnects and retries (no restart)."""
    xa.hold_commits("bank_b")
    p = xa.run_async(30, wait=False)
    gid = p.args[p.args.index("--gid") + 1]
    xa.proxy["bank_b"].wait_held()
    xa.proxy["bank_b"].drop()
    p.wait(30)
    xa.assert_consistent(gid, 30, "succeeded")


# --------------------------------------------------------------------------
# PostgreSQL restarted during phase 2 (a cluster of the test's own)


@pytest.fixture
def own_cluster():
    pg_conninfo("postgres")  # skip / fail as the other tests without PostgreSQL
    c = PgCluster()
    try:
        c.start()
    except AssertionError:
        c.cleanup()
        raise
    yield c
    c.cleanup()


def test_postgres_restarted_during_phase2(tmp_path, dtxd_factory, own_cluster):
    conninfo = {db: own_cluster.conninfo(db) for db in DBS}
    e = XaEnv(tmp_path, dtxd_factory, conninfo, ("127.0.0.1", own_cluster.port))
    try:
        e.hold_commits()
        p = e.run_async(30, wait=False)
        gid = p.args[p.args.index("--gid") + 1]
        _wait_status(e.d, gid, "committing")
        for db in DBS:
            e.proxy[db].wait_held()
        own_cluster.stop()
        for db in DBS:
            e.proxy[db].drop()
        p.wait(30)
        time.sleep(1.0)  # dtxd retries against a server that is down
        assert e.d.txn(gid)["status"] == "committing"
        own_cluster.start()
        e.assert_consistent(gid, 30, "succeeded", timeout=60)
    finally:
        e.close()


# --------------------------------------------------------------------------
# participants that crash


def test_participant_killed_after_prepare_before_register(xa):
    """Bank A prepares its debit and dies before registering it: the
    transfer aborts; dtxd knows the gid as failed and rolls the prepared
    transaction back at its next scan."""
    xa.A.fault("/xa/debit@prepared", fail=1, status=0, delay_ms=60000)
    p = xa.run_async(30, wait=True)
    gid = p.args[p.args.index("--gid") + 1]
    xa.A.wait_log(r"/xa/debit .*prepared; delaying")
    assert xa.prepared("bank_a") == [f"dtx:{gid}:debit"]
    xa.A.kill9()
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 1, out
    xa.A.start()
    xa.assert_consistent(gid, 30, "failed")


def test_orphan_with_an_unknown_gid_is_rolled_back_after_the_grace(xa):
    """A participant prepared a dtx: transaction and was never heard of
    again: dtxd does not know its gid. It is rolled back once older than
    --orphan-grace-ms, not before; a prepared transaction that is not
    dtx:'s is left alone."""
    gid = new_gid("orphan")
    ci = xa.conninfo["bank_a"]
    psql(ci, f"BEGIN; UPDATE accounts SET balance = balance - 1 WHERE id = 'alice';"
             f" PREPARE TRANSACTION 'dtx:{gid}:debit'")
    psql(ci, "BEGIN; SELECT 1; PREPARE TRANSACTION 'other-xact-of-the-test'")
    try:
        t0 = time.monotonic()
        assert xa.prepared("bank_a") == [f"dtx:{gid}:debit"]
        time.sleep(GRACE_MS / 1000 / 2)
        if time.monotonic() - t0 < GRACE_MS / 1000 - 0.3:
            assert xa.prepared("bank_a") == [f"dtx:{gid}:debit"], "rolled back before the grace"
        xa.wait_no_prepared(timeout=GRACE_MS / 1000 + 10)
        assert xa.balances() == (100, 0)
        assert prepared_xacts(ci, prefix="other-") == ["other-xact-of-the-test"]
    finally:
        psql(ci, "ROLLBACK PREPARED 'other-xact-of-the-test'")


# --------------------------------------------------------------------------
# deadlocks


def test_crossing_transfers_resolve_by_lock_timeout(xa_rich):
    """alice->bob (T1) and bob->alice (T2) at once, each debit prepared before
    either credit runs: T1's credit waits for bob (held by T2's prepared
    debit), T2's for alice (held by T1's). PostgreSQL sees no deadlock (a
    prepared transaction waits on no one); the banks' lock_timeout (2s)
    does: T1's credit gives up first, T1 aborts, its debit is rolled back,
    which frees alice for T2. Bounded: well under the 30s of a hang."""
    e = xa_rich
    # Each credit waits 1.5s before it runs, so that both debits are prepared
    # first (T1's at 0s, T2's at 1s). T1's credit then waits for bob from
    # 1.5s and gives up at 3.5s; T2's waits for alice from 2.5s and would give
    # up at 4.5s, but T1's abort frees alice about 1s before that.
    e.B.fault("/xa/credit", fail=1, status=0, delay_ms=1500)
    e.A.fault("/xa/credit", fail=1, status=0, delay_ms=1500)
    t0 = time.monotonic()
    p1 = e.run_async(30, gid=new_gid("cross1"))
    time.sleep(1.0)
    p2 = e.run_async(20, gid=new_gid("cross2"), src=(e.B, "bob"), dst=(e.A, "alice"))
    out1, _ = p1.communicate(timeout=60)
    out2, _ = p2.communicate(timeout=60)
    elapsed = time.monotonic() - t0
    assert elapsed < 15, (elapsed, out1, out2)
    g1 = p1.args[p1.args.index("--gid") + 1]
    g2 = p2.args[p2.args.index("--gid") + 1]
    s1 = e.d.wait_final(g1)["status"]
    s2 = e.d.wait_final(g2)["status"]
    assert sorted([s1, s2]) == ["failed", "succeeded"], (s1, out1, s2, out2)
    alice, bob = 100, 100
    if s1 == "succeeded":
        alice, bob = alice - 30, bob + 30
    if s2 == "succeeded":
        alice, bob = alice + 20, bob - 20
    assert e.balances() == (alice, bob)
    e.wait_no_prepared()
    log = e.A.log_text() + e.B.log_text()
    assert "lock_timeout" in log, log[-3000:]
    assert PASSWORD not in e.d.log_text()


# --------------------------------------------------------------------------
# secrets, SQLite


def test_resource_password_is_never_shown(tmp_path, dtxd_factory, xa):
    r = xa.run(10)
    assert r.rc == 0, r
    xa.assert_consistent(r.gid, 10, "succeeded")
    answers = [xa.d.get("/v1/transactions/" + r.gid), xa.d.get("/v1/transactions"),
               xa.d.get("/healthz"), xa.d.get("/metrics")]
    for a in answers:
        assert PASSWORD.encode() not in a.raw, a
    assert PASSWORD not in xa.d.log_text()
    # a resource given by the environment, and one whose server is down
    d2 = dtxd_factory(env={
        "DTX_RESOURCE_bank_a": f"host=127.0.0.1 port={xa.proxy['bank_a'].port} user=postgres "
                               f"dbname=bank_a sslmode=disable password={PASSWORD}",
        "DTX_RESOURCE_down": f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/bank_b",
    }, start=False)
    d2.start()
    time.sleep(1.0)  # a few scans, the failing one included
    for path in ("/healthz", "/v1/transactions", "/metrics"):
        assert PASSWORD.encode() not in d2.get(path).raw
    assert PASSWORD not in d2.log_text(), d2.log_tail()


def test_sqlite_bank_refuses_xa(tmp_path):
    require_binaries()
    b = Bank("S", tmp_path / "s.db", tmp_path / "bankS.log")
    b.start()
    try:
        st, body = b.request("POST", "/xa/debit", {"account": "a", "amount": 1},
                             {"Dtx-Gid": "g", "Dtx-Branch": "debit"})
        assert st == 501 and "PREPARE TRANSACTION" in body["error"], body
    finally:
        b.kill9()
    from bankfix import bank_bin
    r = subprocess.run([str(bank_bin()), "--listen", "127.0.0.1:1", "--db", str(tmp_path / "x.db"),
                        "--dtx", "http://127.0.0.1:1", "--resource", "x"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "PREPARE TRANSACTION" in r.stderr, r
