"""
bankfix.py - helpers for the bank example's integration tests
(test_bank.py): the real account service (examples/bank/bank) on PostgreSQL
or SQLite, the real transfer client (examples/bank/transfer), and the
PostgreSQL settings from the environment.

  pg_conninfo(dbname)   "host=H port=P user=postgres dbname=..." from
                        DTX_TEST_PG_HOST / DTX_TEST_PG_PORT; skips the test when
                        they are unset, fails it when DTX_REQUIRE_PG=1
  reset_pg(conninfo)    drop the bank's tables (a fresh database per test)
  psql(conninfo, sql)   run SQL with psql; the rows as lists of strings
  prepared_xacts(ci)    the names of the "dtx:" prepared transactions of a database
  rollback_prepared(ci) roll back every prepared transaction of a database
  PgCluster             a private PostgreSQL cluster (scripts/pg.sh) a test owns
  PgProxy               a TCP proxy to PostgreSQL that can hold statements
  Bank                  one bank process: start/kill9/restart, accounts, faults;
                        with amqp=URL it also serves its branch operations
                        over RabbitMQ (bank --amqp, queue .queue)
  amqp_extra(src, dst)  the transfer client's arguments for --over amqp, the
                        tcc Trys included (--amqp-url)
  transfer(...)         run the transfer client; returns a TransferResult
"""

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dtxtest import FAST_RETRY, LogFile, free_port, unavailable, wait_until

REPO = Path(__file__).resolve().parents[2]
MODES = ("saga", "tcc", "2pc", "msg")
PG_SH = REPO / "scripts" / "pg.sh"


def build_dir():
    """The build directory of the dtxd under test ($DTXD's directory)."""
    dtxd = os.environ.get("DTXD")
    return Path(dtxd).resolve().parent if dtxd else REPO / "build"


def _example_bin(name, env):
    """$env, else next to $DTXD (build-asan/ has no examples: `make asan`
    builds only dtxd), else build/."""
    if os.environ.get(env):
        return Path(os.environ[env])
    for d in (build_dir(), REPO / "build"):
        p = d / "examples" / "bank" / name
        if p.is_file():
            return p
    return build_dir() / "examples" / "bank" / name


def bank_bin():
    return _example_bin("bank", "BANK_BIN")


def transfer_bin():
    return _example_bin("transfer", "TRANSFER_BIN")


def require_binaries():
    for b in (bank_bin(), transfer_bin()):
        if not (b.is_file() and os.access(b, os.X_OK)):
            pytest.fail(f"{b} not found: build it with `make` (mk/bank.mk)", pytrace=False)


# --------------------------------------------------------------------------
# PostgreSQL


def pg_conninfo(dbname):
    host = os.environ.get("DTX_TEST_PG_HOST")
    port = os.environ.get("DTX_TEST_PG_PORT")
    if not host or not port:
        unavailable("DTX_TEST_PG_HOST / DTX_TEST_PG_PORT are not set: no PostgreSQL for these "
                    "tests", "DTX_REQUIRE_PG")
    return f"host={host} port={port} user=postgres dbname={dbname}"


def pg_database(dbname):
    """pg_conninfo(dbname) of a database created if it does not exist yet."""
    admin = pg_conninfo("postgres")
    if not psql(admin, f"SELECT 1 FROM pg_database WHERE datname = '{dbname}'"):
        psql(admin, f'CREATE DATABASE "{dbname}"')
    return pg_conninfo(dbname)


def pg_target():
    """(host, port) of the test PostgreSQL, as pg_conninfo finds them."""
    pg_conninfo("postgres")  # skips or fails as it does
    return os.environ["DTX_TEST_PG_HOST"], int(os.environ["DTX_TEST_PG_PORT"])


def reset_pg(conninfo):
    """Drop the bank's tables so that the test starts from an empty bank."""
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql not found (postgresql-client): needed to reset the bank databases", pytrace=False)
    r = subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", conninfo, "-c",
         "DROP TABLE IF EXISTS accounts, holds, dtx_barrier"],
        capture_output=True, text=True, timeout=30,
    )
    if r.returncode != 0:
        pytest.fail(f"cannot reset {conninfo}: {r.stderr.strip()}", pytrace=False)


def psql(conninfo, sql, timeout=30):
    """Run sql (one statement or several) with psql; return the rows of the
    last result as lists of strings. Fails the test on an error."""
    exe = shutil.which("psql")
    if exe is None:
        pytest.fail("psql not found (postgresql-client)", pytrace=False)
    r = subprocess.run([exe, "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", conninfo,
                        "-c", sql], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"psql {conninfo!r} {sql!r}: {r.stderr.strip()}")
    return [line.split("\t") for line in r.stdout.splitlines() if line]


def prepared_xacts(conninfo, prefix="dtx:"):
    """The names of the prepared transactions of conninfo's database whose
    name starts with prefix, sorted."""
    rows = psql(conninfo, "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
                          " ORDER BY gid")
    return [r[0] for r in rows if r[0].startswith(prefix)]


def rollback_prepared(conninfo):
    """Roll back every prepared transaction of conninfo's database (left by an
    earlier run: they would hold locks on the tables reset_pg drops)."""
    for name in prepared_xacts(conninfo, prefix=""):
        psql(conninfo, "ROLLBACK PREPARED '" + name.replace("'", "''") + "'")


class PgCluster:
    """A PostgreSQL cluster of the test's own (scripts/pg.sh), in a directory
    under /tmp (its parents must be searchable by the postgres user, which
    pytest's tmp_path is not), on a free port. Databases bank_a, bank_b and
    dtx_test exist once started."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="dtx-pg-", dir="/tmp")
        self.port = None

    def start(self):
        if self.port is None:
            self.port = free_port()
        r = subprocess.run([str(PG_SH), "start", self.dir, str(self.port)], capture_output=True,
                           text=True, timeout=180)
        if r.returncode != 0:
            raise AssertionError(f"pg.sh start {self.dir} {self.port}: {r.stderr.strip()}")
        return self

    def stop(self):
        subprocess.run([str(PG_SH), "stop", self.dir], capture_output=True, text=True, timeout=120)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def conninfo(self, dbname):
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"


class PgProxy:
    """A TCP proxy on 127.0.0.1 to a PostgreSQL server (host may be a unix
    socket directory), for the connections of dtxd to its resources. A test
    can hold every client message that contains a byte pattern (e.g. b"COMMIT
    PREPARED": the SQL text travels in clear with sslmode=disable): the
    connection stalls there until release(), which forwards the held
    messages, or drop(), which discards them and closes those connections."""

    def __init__(self, host, port):
        self.target = (host, int(port))
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.mu = threading.Condition()
        self.patterns = set()
        self.held = 0  # messages waiting now
        self.generation = 0  # bumped by release/drop
        self.actions = {}  # generation -> "release" or "drop": what ended it
        self.conns = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _connect(self):
        host, port = self.target
        if host.startswith("/"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(f"{host}/.s.PGSQL.{port}")
        else:
            s = socket.create_connection((host, port))
        return s

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = self._connect()
            except OSError:
                c.close()
                continue
            with self.mu:
                self.conns.append((c, u))
            threading.Thread(target=self._pump, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, False), daemon=True).start()

    @staticmethod
    def _close(*socks):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _pump(self, src, dst, upstream):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream:
                    with self.mu:
                        if any(p in data for p in self.patterns):
                            gen = self.generation
                            self.held += 1
                            self.mu.notify_all()
                            while self.generation == gen and not self.closed:
                                self.mu.wait(0.1)
                            self.held -= 1
                            if self.actions.get(gen) != "release":
                                break
                dst.sendall(data)
        except OSError:
            pass
        self._close(src, dst)

    def hold(self, pattern):
        with self.mu:
            self.patterns.add(pattern)

    def wait_held(self, n=1, timeout=15.0):
        """Wait until at least n messages are held."""
        deadline = time.monotonic() + timeout
        with self.mu:
            while self.held < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"proxy to {self.target}: {self.held} held, wanted {n}")
                self.mu.wait(left)

    def _end_hold(self, action):
        with self.mu:
            self.patterns.clear()
            self.actions[self.generation] = action
            self.generation += 1
            self.mu.notify_all()

    def release(self):
        """Stop holding; forward what was held."""
        self._end_hold("release")

    def drop(self):
        """Stop holding; discard what was held and close those connections."""
        self._end_hold("drop")

    def close(self):
        with self.mu:
            self.closed = True
            self.generation += 1
            self.mu.notify_all()
            conns = list(self.conns)
        self._close(self.lsock)
        for c, u in conns:
            self._close(c, u)


# --------------------------------------------------------------------------
# the bank service


class BankError(Exception):
    pass


# the bank's log line once its queue is bound to the exchange (bank_amqp.c)
AMQP_BOUND = r"amqp: exchange \S+ bound to queue"


class Bank(LogFile):
    """The real bank service on 127.0.0.1 and a free port, with --test-faults.
    The port and database stay the same across restarts; stderr goes to
    log_path.

    amqp (a broker URL) makes it serve its branch operations over RabbitMQ
    too, on queue `queue` (default: a unique "bank.<name>.<port>.<pid>"):
    start() then also waits until the bank has bound the queue to the
    exchange, unless amqp_wait is False (a broker that is down)."""

    def __init__(self, name, db, log_path, *, pool=16, args=(), amqp=None, queue=None,
                 amqp_wait=True):
        self.name = name
        self.db = str(db)
        self.log_path = Path(log_path)
        self.port = free_port()
        self.pool = pool
        self.args = [str(a) for a in args]
        self.amqp = amqp
        self.queue = queue or (f"bank.{name}.{self.port}.{os.getpid()}" if amqp else None)
        self.amqp_wait = amqp_wait
        self.proc = None

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def url(self, path):
        return self.base + path

    def target(self, account):
        """URL:ACCOUNT as the transfer client takes it."""
        return f"{self.base}:{account}"

    def start(self, timeout=10.0):
        cmd = [str(bank_bin()), "--listen", f"127.0.0.1:{self.port}", "--db", self.db,
               "--pool", str(self.pool), "--test-faults"] + self.args
        if self.amqp:
            cmd += ["--amqp", self.amqp, "--amqp-queue", self.queue]
        bound = self.count_log(AMQP_BOUND)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BankError(f"bank {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.request("GET", "/healthz", timeout=1.0)[0] == 200 and (
                        not self.amqp or not self.amqp_wait or self.count_log(AMQP_BOUND) > bound):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill9()
                raise BankError(f"bank {self.name} not healthy after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.02)

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self):
        """SIGTERM; returns the exit status (None when it had to be killed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()
                return None
        return self.proc.returncode if self.proc is not None else None

    # -- HTTP -----------------------------------------------------------

    def request(self, method, path, body=None, headers=None, timeout=15.0):
        """One request; returns (status, parsed JSON or None)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url(path), data=data, method=method)
        req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            raw = e.read()
            status = e.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, None

    def call(self, path, gid, branch, op, account, amount):
        """A branch call as dtxd (or a TCC client) makes it."""
        return self.request("POST", path, {"account": account, "amount": amount},
                            {"Dtx-Gid": gid, "Dtx-Branch": branch, "Dtx-Op": op})

    def set_account(self, account, balance):
        st, body = self.request("POST", "/accounts", {"id": account, "balance": balance})
        assert st == 200, (st, body)
        return body

    def account(self, account):
        st, body = self.request("GET", "/accounts/" + account)
        assert st == 200, (st, body)
        return body

    def balance(self, account):
        return self.account(account)["balance"]

    def accounts(self):
        """{"accounts": [...], "total", "frozen", "holds"}"""
        st, body = self.request("GET", "/accounts")
        assert st == 200, (st, body)
        return body

    def fault(self, path, fail=1, status=500, delay_ms=0):
        """TEST AID: the next `fail` calls to path wait delay_ms, then answer
        status (0: then run normally)."""
        st, body = self.request("POST", "/admin/faults",
                                {"path": path, "fail": fail, "status": status, "delay_ms": delay_ms})
        assert st == 200, (st, body)

    def wait_log(self, pattern, timeout=10.0):
        """Wait until a line of the bank's log matches the regex pattern."""
        rx = re.compile(pattern)
        return wait_until(lambda: any(rx.search(l) for l in self.log_text().splitlines()),
                          timeout, what=f"bank {self.name} log line /{pattern}/")

    def count_log(self, pattern):
        rx = re.compile(pattern)
        return sum(1 for l in self.log_text().splitlines() if rx.search(l))


# --------------------------------------------------------------------------
# the transfer client


class TransferResult:
    def __init__(self, rc, out, gid):
        self.rc = rc
        self.out = out
        self.gid = gid

    def __repr__(self):
        return f"<transfer rc={self.rc} gid={self.gid}\n{self.out}>"


def amqp_extra(src, dst):
    """The transfer client's arguments that make dtxd call src's and dst's
    banks (Bank, or (Bank, account)) over RabbitMQ, and the client publish
    its tcc Trys to their broker too."""
    a = src[0] if isinstance(src, tuple) else src
    b = dst[0] if isinstance(dst, tuple) else dst
    return ["--over", "amqp", "--from-queue", a.queue, "--to-queue", b.queue,
            "--amqp-url", a.amqp]


def retry_arg(retry=None):
    r = retry or FAST_RETRY
    return f"{r['initial_interval_ms']},{r['max_interval_ms']},{r['limit']}"


def transfer_cmd(dtxd, mode, src, dst, amount, *, gid, wait=True, extra=(), retry=None):
    """src/dst: (Bank, account); retry: the policy (FAST_RETRY by default).
    Returns the command line."""
    cmd = [str(transfer_bin()), "--dtx", f"http://{dtxd.listen}", "--from", src[0].target(src[1]),
           "--to", dst[0].target(dst[1]), "--amount", str(amount), "--mode", mode, "--gid", gid,
           "--retry", retry_arg(retry)]
    if wait:
        cmd += ["--wait", "--wait-ms", "30000"]
    return cmd + [str(a) for a in extra]


def transfer(dtxd, mode, src, dst, amount, *, gid, wait=True, extra=(), timeout=60):
    """Run the transfer client to its end."""
    r = subprocess.run(transfer_cmd(dtxd, mode, src, dst, amount, gid=gid, wait=wait, extra=extra),
                       capture_output=True, text=True, timeout=timeout)
    return TransferResult(r.returncode, r.stdout + r.stderr, gid)


def transfer_async(dtxd, mode, src, dst, amount, *, gid, wait=False, extra=(), retry=None):
    """Start the transfer client; returns the Popen (stdout+stderr piped)."""
    return subprocess.Popen(transfer_cmd(dtxd, mode, src, dst, amount, gid=gid, wait=wait, extra=extra,
                                         retry=retry),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
