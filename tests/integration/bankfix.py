"""
bankfix.py - helpers for the bank example's integration tests
(test_bank.py): the real account service (examples/bank/bank) on PostgreSQL
or SQLite, the real transfer client (examples/bank/transfer), and the
PostgreSQL settings from the environment.

  pg_conninfo(dbname)   "host=H port=P user=postgres dbname=..." from
                        DTX_TEST_PG_HOST / DTX_TEST_PG_PORT; skips the test when
                        they are unset, fails it when DTX_REQUIRE_PG=1
  reset_pg(conninfo)    drop the bank's tables (a fresh database per test)
  Bank                  one bank process: start/kill9/restart, accounts, faults
  transfer(...)         run the transfer client; returns a TransferResult
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dtxtest import FAST_RETRY, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
MODES = ("saga", "tcc", "2pc", "msg")


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
        msg = "DTX_TEST_PG_HOST / DTX_TEST_PG_PORT are not set: no PostgreSQL for the bank tests"
        if os.environ.get("DTX_REQUIRE_PG") == "1":
            pytest.fail(msg + " (DTX_REQUIRE_PG=1)", pytrace=False)
        pytest.skip(msg)
    return f"host={host} port={port} user=postgres dbname={dbname}"


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


# --------------------------------------------------------------------------
# the bank service


class BankError(Exception):
    pass


class Bank:
    """The real bank service on 127.0.0.1 and a free port, with --test-faults.
    The port and database stay the same across restarts; stderr goes to
    log_path."""

    def __init__(self, name, db, log_path, *, pool=16):
        self.name = name
        self.db = str(db)
        self.log_path = Path(log_path)
        self.port = free_port()
        self.pool = pool
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
               "--pool", str(self.pool), "--test-faults"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BankError(f"bank {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.request("GET", "/healthz", timeout=1.0)[0] == 200:
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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=60):
        return "\n".join(self.log_text().splitlines()[-lines:])

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


def retry_arg(retry=None):
    r = retry or FAST_RETRY
    return f"{r['initial_interval_ms']},{r['max_interval_ms']},{r['limit']}"


def transfer_cmd(dtxd, mode, src, dst, amount, *, gid, wait=True, extra=()):
    """src/dst: (Bank, account). Returns the command line."""
    cmd = [str(transfer_bin()), "--dtx", f"http://{dtxd.listen}", "--from", src[0].target(src[1]),
           "--to", dst[0].target(dst[1]), "--amount", str(amount), "--mode", mode, "--gid", gid,
           "--retry", retry_arg()]
    if wait:
        cmd += ["--wait", "--wait-ms", "30000"]
    return cmd + [str(a) for a in extra]


def transfer(dtxd, mode, src, dst, amount, *, gid, wait=True, extra=(), timeout=60):
    """Run the transfer client to its end."""
    r = subprocess.run(transfer_cmd(dtxd, mode, src, dst, amount, gid=gid, wait=wait, extra=extra),
                       capture_output=True, text=True, timeout=timeout)
    return TransferResult(r.returncode, r.stdout + r.stderr, gid)


def transfer_async(dtxd, mode, src, dst, amount, *, gid, wait=False, extra=()):
    """Start the transfer client; returns the Popen (stdout+stderr piped)."""
    return subprocess.Popen(transfer_cmd(dtxd, mode, src, dst, amount, gid=gid, wait=wait, extra=extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
