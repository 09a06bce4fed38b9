"""
test_chaos.py - the chaos bank test: concurrent transfers in every mode
between two banks on two PostgreSQL databases while a fault schedule kills
and stops dtxd, makes the banks fail, hang or die, and restarts PostgreSQL.
Then the faults stop, everything must settle within 60 s, and the checker
looks at the money.

With RabbitMQ (DTX_TEST_AMQP_URL set or DTX_CHAOS_AMQP=1, and
scripts/rabbitmq.sh runnable), a
share of the saga, tcc, 2pc and msg transfers (DTX_CHAOS_AMQP_SHARE, default
0.4) go over AMQP: dtxd gets --amqp-url of a RabbitMQ node of the test's own
(so that the schedule can restart it: fault "restart_rabbitmq", at most
DTX_CHAOS_RMQ_RESTARTS times, default 1), each bank serves its queue with
--amqp, and the transfer client runs with --over amqp. A kill -9 of a bank
kills its AMQP consumer too; bank_fail and bank_hang hit an operation
whichever transport carries it (the bank's fault injection covers both).

What the checker asserts, once settled:
  - every transfer dtxd knows of is final (succeeded or failed);
  - each account holds exactly its opening balance plus the transfers that
    succeeded and nothing else: no effect lost, none applied twice, none
    applied for a transfer that failed or that dtxd never heard of;
  - so the total is conserved; no balance is negative; no money is frozen
    and no hold is left; no prepared transaction is left in either database;
  - at least half of the transfers succeeded (so the test cannot pass by
    refusing work).

Everything is real: dtxd, the bank service (examples/bank) on a PostgreSQL
cluster of the test's own (scripts/pg.sh, so it can be restarted), the
transfer client. The schedule is random with a printed seed
(DTX_CHAOS_SEED replays it). The default run is short; `make
test-chaos-long` runs it for DTX_CHAOS_TRANSFERS transfers (100,000).

Environment: DTX_CHAOS_SECONDS (fault period, default 25), DTX_CHAOS_WORKERS
(concurrent clients, default 6), DTX_CHAOS_TRANSFERS (stop after this many;
default: no limit), DTX_CHAOS_SEED.
"""

import os
import random
import signal
import subprocess
import threading
import time

import pytest

from amqpfix import RABBITMQ_SH, PrivateBroker
from bankfix import (MODES, Bank, PgCluster, amqp_extra, prepared_xacts, require_binaries,
                     transfer_cmd)
from dtxtest import FINAL, wait_until

DBS = ("bank_a", "bank_b")
ACCOUNTS = 8
OPENING = 1000
SETTLE_S = 60
CHAOS_MODES = MODES + ("xa",)


def _env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v else default


class Chaos:
    """The system under test and the transfers made against it."""

    def __init__(self, tmp_path, dtxd_factory, cluster, seed, rmq=None):
        require_binaries()
        self.tmp = tmp_path
        self.cluster = cluster
        self.rmq = rmq  # a PrivateBroker, or None: HTTP only
        self.amqp_share = float(os.environ.get("DTX_CHAOS_AMQP_SHARE", "0.4")) if rmq else 0.0
        self.rmq_restarts = _env_int("DTX_CHAOS_RMQ_RESTARTS", 1) if rmq else 0
        self.rmq_thread = None
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        res = tmp_path / "resources"
        res.write_text("".join(f"{db} {cluster.conninfo(db)} connect_timeout=3\n" for db in DBS))
        amqp = ("--amqp-url", rmq.url) if rmq else ()
        self.d = dtxd_factory("--resources", res, "--resource-scan-ms", "300",
                              "--orphan-grace-ms", "3000", "--retry-max-ms", "500", *amqp)
        self.banks = [self._bank("A", "bank_a"), self._bank("B", "bank_b")]
        for b in self.banks:
            b.amqp_wait = False  # from now on the broker may be down when a bank restarts
        self.opening = {}
        for b in self.banks:
            for i in range(ACCOUNTS):
                acct = f"{b.name.lower()}{i}"
                b.set_account(acct, OPENING)
                self.opening[(b.name, acct)] = OPENING
        self.transfers = []  # (gid, mode, (bank, acct), (bank, acct), amount)
        self.faults = []     # what the schedule did, for the report
        self.stop_faults = threading.Event()
        self.stop_work = threading.Event()
        self.dtxd_stopped = False

    def _bank(self, name, db):
        b = Bank(name, self.cluster.conninfo(db), self.tmp / f"bank{name}.log",
                 args=("--dtx", f"http://{self.d.listen}", "--resource", db),
                 amqp=self.rmq.url if self.rmq else None)
        return b.start()

    # -- work ---------------------------------------------------------------

    def worker(self, wid, limit):
        n = 0
        rng = random.Random(self.rng.random())
        while not self.stop_work.is_set():
            with self.lock:
                if limit and len(self.transfers) >= limit:
                    return
                k = len(self.transfers)
                a, b = rng.sample(self.banks, 2)
                src = (a, f"{a.name.lower()}{rng.randrange(ACCOUNTS)}")
                dst = (b, f"{b.name.lower()}{rng.randrange(ACCOUNTS)}")
                mode = rng.choice(CHAOS_MODES)
                amount = rng.randint(1, 40)
                over = mode != "xa" and rng.random() < self.amqp_share
                gid = f"chaos-{wid}-{n}-{k}" + ("-amqp" if over else "")
                self.transfers.append((gid, mode, src, dst, amount))
            n += 1
            extra = ["--wait-ms", "3000", "--timeout-ms", "8000", "--request-timeout-ms", "1000",
                     "--retry", "50,500,8", "--quiet"]
            if over:
                extra += amqp_extra(src, dst)
            cmd = transfer_cmd(self.d, mode, src, dst, amount, gid=gid, wait=True, extra=extra)
            try:
                subprocess.run(cmd, capture_output=True, timeout=30)
            except subprocess.TimeoutExpired:
                pass  # the outcome is read from dtxd at the end

    # -- faults -------------------------------------------------------------

    def note(self, what):
        self.faults.append((round(time.monotonic(), 2), what))

    def fault_loop(self):
        rng = self.rng
        kinds = ["kill_dtxd", "stop_dtxd", "bank_fail", "bank_hang", "kill_bank", "restart_pg"]
        while not self.stop_faults.wait(rng.uniform(0.8, 2.0)):
            kind = rng.choice(kinds + (["restart_rabbitmq"] if self.rmq_restarts > 0 else []))
            try:
                getattr(self, kind)(rng)
            except Exception as e:  # a fault that could not be applied is reported, not fatal
                self.note(f"{kind} failed: {e!r}")

    def kill_dtxd(self, rng):
        self.note("kill -9 dtxd")
        self.d.kill9()
        time.sleep(rng.uniform(0, 0.5))
        self.d.restart()

    def stop_dtxd(self, rng):
        s = rng.uniform(0.3, 2.0)
        self.note(f"SIGSTOP dtxd {s:.1f}s")
        self.d.proc.send_signal(signal.SIGSTOP)
        self.dtxd_stopped = True
        time.sleep(s)
        self.d.proc.send_signal(signal.SIGCONT)
        self.dtxd_stopped = False

    def _endpoint(self, rng):
        mode = rng.choice(["saga/debit", "saga/credit", "tcc/debit/confirm", "tcc/credit/try",
                           "2pc/debit/prepare", "2pc/credit/commit", "msg/credit",
                           "saga/debit-undo", "tcc/debit/cancel", "2pc/credit/rollback"])
        return "/" + mode

    def bank_fail(self, rng):
        b, path, n = rng.choice(self.banks), self._endpoint(rng), rng.randint(1, 3)
        self.note(f"bank {b.name} {path}: 500 x{n}")
        b.fault(path, fail=n, status=500)

    def bank_hang(self, rng):
        b, path = rng.choice(self.banks), self._endpoint(rng)
        self.note(f"bank {b.name} {path}: hangs 2.5s")
        b.fault(path, fail=1, status=0, delay_ms=2500)

    def kill_bank(self, rng):
        b = rng.choice(self.banks)
        self.note(f"kill -9 bank {b.name}")
        b.kill9()
        time.sleep(rng.uniform(0, 0.5))
        b.start()

    def restart_rabbitmq(self, rng):
        """Stop the broker node and start it again (its durable queues,
        bindings and persistent messages survive), on a thread of its own:
        the node takes several seconds to stop and to start, during which
        dtxd and the banks' loops retry and the schedule goes on."""
        if self.rmq_thread is not None and self.rmq_thread.is_alive():
            return self.bank_fail(rng)
        self.rmq_restarts -= 1
        self.note("restart RabbitMQ")
        pause = rng.uniform(0, 0.5)

        def restart():
            try:
                self.rmq.stop()
                time.sleep(pause)
                self.rmq.start()
                print("chaos: RabbitMQ up again")
            except Exception as e:  # heal() starts it
                self.note(f"restart RabbitMQ failed: {e!r}")

        self.rmq_thread = threading.Thread(target=restart, daemon=True)
        self.rmq_thread.start()

    def restart_pg(self, rng):
        self.note("restart PostgreSQL")
        self.cluster.stop()
        time.sleep(rng.uniform(0, 0.5))
        self.cluster.start()

    # -- the end ------------------------------------------------------------

    def heal(self):
        """Every part up and answering."""
        if self.d.proc.poll() is None:
            self.d.proc.send_signal(signal.SIGCONT)
        else:
            self.d.restart()
        for b in self.banks:
            if b.proc is None or b.proc.poll() is not None:
                b.start()

        def pg_up():
            try:
                prepared_xacts(self.cluster.conninfo("bank_a"))
                return True
            except Exception:
                return False

        if not pg_up():
            self.cluster.start()
        if self.rmq_thread is not None:
            self.rmq_thread.join(180)
        if self.rmq is not None:
            try:
                self.rmq.mgmt.call("GET", "/api/overview", timeout=3)
            except Exception:
                self.rmq.start()

    def status(self, gid):
        r = self.d.get("/v1/transactions/" + gid)
        if r.status == 404:
            return None
        assert r.status == 200, r
        return r.body

    def settle(self):
        """Wait (at most SETTLE_S) until every known transfer is final and no
        prepared transaction is left; returns {gid: status or None}."""
        deadline = time.monotonic() + SETTLE_S
        outcome = {}
        pending = [t[0] for t in self.transfers]
        while pending:
            left = []
            for gid in pending:
                t = self.status(gid)
                if t is None or t["status"] in FINAL:
                    outcome[gid] = t["status"] if t else None
                else:
                    left.append(gid)
            pending = left
            if pending and time.monotonic() > deadline:
                raise AssertionError(f"{len(pending)} transfers not final {SETTLE_S}s after the "
                                     f"faults stopped, e.g. {self.status(pending[0])}")
            if pending:
                time.sleep(0.5)
        wait_until(lambda: not any(prepared_xacts(self.cluster.conninfo(db)) for db in DBS),
                   max(1.0, deadline - time.monotonic()),
                   what="no prepared transaction left in bank_a and bank_b")
        return outcome

    def check_settled(self, outcome, timeout=30):
        """check(), once the money has landed: over AMQP a msg succeeds for
        dtxd when the broker has its delivery, and the credit lands when the
        payee's bank has consumed it (its queue may still hold a backlog
        after a restart, or a delivery the loop retries). Over HTTP only,
        check() at once."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.check(outcome)
            except AssertionError:
                if self.rmq is None or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def check(self, outcome):
        expect = dict(self.opening)
        succeeded = 0
        for gid, mode, src, dst, amount in self.transfers:
            if outcome[gid] == "succeeded":
                succeeded += 1
                expect[(src[0].name, src[1])] -= amount
                expect[(dst[0].name, dst[1])] += amount
        actual = {}
        for b in self.banks:
            s = b.accounts()
            assert s["frozen"] == 0 and s["holds"] == 0, (b.name, s)
            for a in s["accounts"]:
                actual[(b.name, a["id"])] = a["balance"]
        wrong = {k: (actual.get(k), v) for k, v in expect.items() if actual.get(k) != v}
        assert not wrong, f"balances (actual, expected) that differ: {wrong}"
        assert sum(actual.values()) == sum(self.opening.values())
        assert min(actual.values()) >= 0
        return succeeded


@pytest.fixture
def chaos_rmq():
    """A RabbitMQ node of the test's own when DTX_TEST_AMQP_URL is set or
    DTX_CHAOS_AMQP=1 (the schedule restarts it); None otherwise, or when it
    cannot start (an error with DTX_REQUIRE_AMQP=1): then every transfer is
    HTTP."""
    wanted = os.environ.get("DTX_TEST_AMQP_URL") or os.environ.get("DTX_CHAOS_AMQP") == "1"
    if not wanted or not os.access(RABBITMQ_SH, os.X_OK):
        yield None
        return
    b = PrivateBroker()
    try:
        b.start()
    except (AssertionError, OSError, subprocess.SubprocessError) as e:
        b.cleanup()
        if os.environ.get("DTX_REQUIRE_AMQP") == "1":
            raise
        print(f"chaos: no RabbitMQ node ({e!r}): HTTP only")
        yield None
        return
    yield b
    b.cleanup()


@pytest.fixture
def cluster():
    """A PostgreSQL cluster of the test's own (it restarts it). Without
    PostgreSQL installed the test is skipped (failed with DTX_REQUIRE_PG=1)."""
    c = PgCluster()
    try:
        c.start()
    except (AssertionError, OSError) as e:
        c.cleanup()
        if os.environ.get("DTX_REQUIRE_PG") == "1":
            raise
        pytest.skip(f"cannot start a PostgreSQL cluster (scripts/pg.sh): {e}")
    yield c
    c.cleanup()


@pytest.mark.slow
def test_chaos_bank(tmp_path, dtxd_factory, cluster, chaos_rmq):
    seed = _env_int("DTX_CHAOS_SEED", random.randrange(1 << 30))
    seconds = _env_int("DTX_CHAOS_SECONDS", 25)
    workers = _env_int("DTX_CHAOS_WORKERS", 6)
    limit = _env_int("DTX_CHAOS_TRANSFERS", 0)
    print(f"chaos seed {seed} (DTX_CHAOS_SEED={seed} replays the schedule)")
    c = Chaos(tmp_path, dtxd_factory, cluster, seed, rmq=chaos_rmq)
    try:
        threads = [threading.Thread(target=c.worker, args=(i, limit), daemon=True)
                   for i in range(workers)]
        for t in threads:
            t.start()
        faults = threading.Thread(target=c.fault_loop, daemon=True)
        faults.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds or (limit and len(c.transfers) < limit):
            if limit and len(c.transfers) >= limit:
                break
            time.sleep(0.5)
        c.stop_faults.set()
        faults.join(30)
        c.stop_work.set()
        for t in threads:
            t.join(60)
        c.heal()
        outcome = c.settle()
        succeeded = c.check_settled(outcome)
        total = len(c.transfers)
        known = sum(1 for s in outcome.values() if s is not None)
        print(f"chaos: {total} transfers ({known} reached dtxd), {succeeded} succeeded, "
              f"{len(c.faults)} faults: {[f for _, f in c.faults]}")
        by_mode = {}
        for gid, mode, *_ in c.transfers:
            key = mode + ("/amqp" if gid.endswith("-amqp") else "")
            by_mode.setdefault(key, [0, 0])[0] += 1
            by_mode[key][1] += outcome[gid] == "succeeded"
        print("by mode (transfers, succeeded):", by_mode)
        assert total >= workers, "the clients made almost no transfers"
        assert succeeded * 2 >= total, f"only {succeeded} of {total} transfers succeeded"
        assert len(c.faults) >= min(5, seconds // 3), c.faults
    finally:
        for b in c.banks:
            b.kill9()
