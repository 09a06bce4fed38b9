"""
dtxtest.py - helpers for the dtx integration tests (standard library only).

- Dtxd: the real `dtxd` process on 127.0.0.1, a free port and its own data
  dir; start / kill9 / term / restart, and JSON HTTP helpers.
- Participant: a real HTTP service (ThreadingHTTPServer in a thread) whose
  answer per path is scripted by the test, recording every call it receives.
- saga() / step(): build create-request bodies; wait_until(): poll a predicate.

The fixtures in conftest.py hand these out; tests import the helpers from here.
"""

import http.client
import json
import os
import random
import re
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Short retry policy for tests: retries are fast, the whole suite stays quick.
FAST_RETRY = {"initial_interval_ms": 20, "max_interval_ms": 200, "limit": 10}
FINAL = ("succeeded", "failed")
GID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago, chosen below the
    kernel's ephemeral range: servers here are restarted on the same port
    (dtxd, PostgreSQL, RabbitMQ, the banks), and a port from that range (what
    binding port 0 gives) can meanwhile become the local end of another
    process's outgoing connection."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(10000, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free TCP port below {low}")


def new_gid(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_until(predicate, timeout=10.0, interval=0.02, what=None):
    """Call predicate until it returns something truthy; return that value.
    Raises AssertionError (with the last value seen) after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or predicate}; last value: {last!r}"
            )
        time.sleep(interval)


_ABSENT = object()


def assert_error(r, status, code, field=...):
    """An error answer: status, JSON {"error": {code, message, field}}; the
    message names the field when there is one."""
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    assert isinstance(r.body, dict) and set(r.body) == {"error"}, r
    err = r.body["error"]
    assert err.get("code") == code, r
    assert isinstance(err.get("message"), str) and err["message"], r
    assert "field" in err, r
    if field is not ...:
        assert err["field"] == field, r
        if field is not None:
            assert field in err["message"], r


def step(p, name, payload=_ABSENT, *, undo=None):
    """A saga step calling participant p: action POST /<name>, compensate
    POST /<name>-undo (or /<undo>)."""
    s = {"action": p.url("/" + name), "compensate": p.url("/" + (undo or name + "-undo"))}
    if payload is not _ABSENT:
        s["payload"] = payload
    return s


def saga(steps, gid=None, retry=_ABSENT, **options):
    """A POST /v1/transactions body for a saga. retry defaults to FAST_RETRY;
    pass retry=None to leave it out. Other options are copied as given."""
    body = {"type": "saga", "steps": list(steps)}
    if gid is not None:
        body["gid"] = gid
    if retry is _ABSENT:
        retry = dict(FAST_RETRY)
    if retry is not None:
        body["retry"] = retry
    body.update(options)
    return body


# --------------------------------------------------------------------------
# dtxd


class Resp:
    """An HTTP answer: status, parsed JSON body (None if empty / not JSON),
    raw bytes, headers (lower-cased names). Unpacks as (status, body)."""

    def __init__(self, status, raw, headers):
        self.status = status
        self.raw = raw
        self.headers = headers
        try:
            self.body = json.loads(raw) if raw else None
        except ValueError:
            self.body = None

    def __iter__(self):
        return iter((self.status, self.body))

    def __repr__(self):
        return f"<Resp {self.status} {self.raw[:600]!r}>"


def _send_body(sock, raw, chunked):
    """Send raw in pieces, stopping early when the server has already answered
    (e.g. 413 before reading a body over the cap), as curl does."""
    if chunked:
        pieces = [b"%x\r\n%s\r\n" % (len(raw[i : i + 4096]), raw[i : i + 4096]) for i in range(0, len(raw), 4096)]
        pieces.append(b"0\r\n\r\n")
    else:
        pieces = [raw[i : i + 65536] for i in range(0, len(raw), 65536)] or [b""]
    for piece in pieces:
        if select.select([sock], [], [], 0)[0]:
            return  # an answer (or a close) is already waiting
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "WARNING: ThreadSanitizer", "runtime error:")


def sanitizer_report(text):
    """The first sanitizer report (ASan, LSan, TSan, UBSan) in text, or None."""
    for mark in SANITIZER_MARKS:
        i = text.find(mark)
        if i >= 0:
            return text[max(0, i - 200):i + 3000]
    return None


def unavailable(msg, require_env):
    """A part the test needs is not there: skip, or fail when the variable
    require_env is 1 (the default run sets it: nothing may be skipped)."""
    import pytest

    if os.environ.get(require_env) == "1":
        pytest.fail(f"{msg} ({require_env}=1)", pytrace=False)
    pytest.skip(msg)


class LogFile:
    """A process whose output goes to self.log_path."""

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=80):
        return "\n".join(self.log_text().splitlines()[-lines:])


class DtxdError(Exception):
    pass


class Dtxd(LogFile):
    """The real dtxd process. The data dir and port stay the same across
    restarts; stdout and stderr of every run are appended to log_path."""

    def __init__(self, binary, data_dir, log_path, *, args=(), env=None, use_env=False, port=None):
        self.binary = str(binary)
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.args = [str(a) for a in args]
        self.extra_env = dict(env or {})
        self.use_env = use_env
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.proc = None
        self.starts = 0
        # a reply queue of its own (the same across restarts): dtxds running
        # at once on the shared broker must not take each other's replies
        self.reply_queue = f"dtxd.replies.{uuid.uuid4().hex[:12]}"

    # -- process --------------------------------------------------------

    @property
    def listen(self):
        return f"{self.host}:{self.port}"

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def command(self):
        cmd = [self.binary]
        if not self.use_env:
            cmd += ["--listen", self.listen, "--data-dir", str(self.data_dir)]
        if not any(a == "--log-level" or a.startswith("--log-level=") for a in self.args):
            cmd += ["--log-level", "debug"]
        return cmd + self.args

    def environment(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("DTX_")}
        if self.use_env:
            env["DTX_LISTEN"] = self.listen
            env["DTX_DATA_DIR"] = str(self.data_dir)
        env["DTX_AMQP_REPLY_QUEUE"] = self.reply_queue
        env.update(self.extra_env)
        return env

    def start(self, timeout=15.0):
        """Start dtxd and wait until GET /healthz answers 200."""
        if self.running:
            raise DtxdError("dtxd is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        for attempt in range(5):
            self.starts += 1
            with open(self.log_path, "ab") as log:
                log.write(f"=== start #{self.starts}: {' '.join(cmd)}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.environment()
                )
            deadline = time.monotonic() + timeout
            while True:
                rc = self.proc.poll()
                if rc is not None:
                    tail = self.log_tail()
                    # The port may still be held by a previous run's socket.
                    if attempt < 4 and "in use" in tail.lower() and self.starts > 1:
                        time.sleep(0.3)
                        break
                    raise DtxdError(f"dtxd exited with {rc} during start-up:\n{tail}")
                try:
                    if self.request("GET", "/healthz", timeout=1.0).status == 200:
                        return self
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    self.proc.kill()
                    self.proc.wait()
                    raise DtxdError(f"dtxd not healthy after {timeout}s:\n{self.log_tail()}")
                time.sleep(0.02)
        raise DtxdError("dtxd could not be started")

    def restart(self, timeout=15.0):
        """Start again with the same data dir and port (the process must be
        stopped first: kill9() or term())."""
        return self.start(timeout)

    def kill9(self):
        """SIGKILL: no chance to flush or clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def term(self, timeout=15.0):
        """SIGTERM and wait; returns the exit code. Fails (after SIGKILL) if
        the process does not exit within timeout seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"dtxd did not exit within {timeout}s of SIGTERM")

    def cleanup(self):
        """Stop it the way an operator would (SIGTERM), so that a sanitizer
        build checks its shutdown and leaks too; SIGKILL if that hangs."""
        if self.running:
            self.proc.send_signal(signal.SIGCONT)  # in case a test stopped it
            try:
                self.term(15)
            except AssertionError:
                pass

    def sanitizer_report(self):
        """The first sanitizer report in the log, or None."""
        return sanitizer_report(self.log_text())

    # -- HTTP -----------------------------------------------------------

    def request(self, method, path, body=None, *, raw=None, headers=None, timeout=10.0, chunked=False):
        """One request on a fresh connection. body is JSON-encoded; raw
        (bytes/str) is sent as is. Returns Resp."""
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
        if isinstance(raw, str):
            raw = raw.encode()
        hdrs = {}
        if raw is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            if raw is not None and chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            elif raw is not None or method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(raw or b"")))
            conn.endheaders()
            if raw is not None:
                _send_body(conn.sock, raw, chunked)
            resp = conn.getresponse()
            data = resp.read()
            return Resp(resp.status, data, {k.lower(): v for k, v in resp.getheaders()})
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def create(self, body=None, **kw):
        """POST /v1/transactions. A wait=true body gets a longer socket timeout."""
        if isinstance(body, dict) and body.get("wait") and "timeout" not in kw:
            kw["timeout"] = body.get("wait_timeout_ms", 30000) / 1000.0 + 15
        return self.post("/v1/transactions", body, **kw)

    def txn(self, gid):
        """GET /v1/transactions/{gid}; asserts 200 and returns the body."""
        r = self.get("/v1/transactions/" + urllib.parse.quote(gid, safe=""))
        assert r.status == 200, f"GET {gid}: {r!r}"
        return r.body

    def list(self, **params):
        q = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return self.get("/v1/transactions" + ("?" + q if q else ""))

    def wait_txn(self, gid, predicate, timeout=20.0, what=None):
        """Poll GET until predicate(txn) is true; return that txn."""
        holder = {}

        def check():
            holder["t"] = self.txn(gid)
            return predicate(holder["t"])

        try:
            wait_until(check, timeout, what=what or f"{gid} to reach a condition")
        except AssertionError as e:
            raise AssertionError(f"{e}\nlast state: {json.dumps(holder.get('t'), indent=1)}") from None
        return holder["t"]

    def wait_final(self, gid, timeout=20.0):
        return self.wait_txn(gid, lambda t: t["status"] in FINAL, timeout, f"{gid} to finish")


# --------------------------------------------------------------------------
# participant


class Call:
    """One request received by a participant."""

    def __init__(self, method, target, headers, body, arrived):
        self.seq = -1
        self.method = method
        self.target = target  # path with query string
        self.path = target.split("?", 1)[0]
        self.headers = headers  # list of (name, value), as received
        self.body = body  # bytes
        self.time = arrived  # time.monotonic() on arrival
        self.answered_at = None  # time.monotonic() just before the answer was written
        self.status = None  # status answered (None: dropped / client gone / not yet)

    def header(self, name):
        vals = self.header_all(name)
        return vals[0] if vals else None

    def header_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    @property
    def op(self):
        return self.header("Dtx-Op")

    @property
    def gid(self):
        return self.header("Dtx-Gid")

    @property
    def branch(self):
        return self.header("Dtx-Branch")

    @property
    def key(self):
        return self.header("Idempotency-Key")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Call #{self.seq} {self.method} {self.target} op={self.op} gid={self.gid} br={self.branch} -> {self.status}>"


def _read_body(h):
    if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
        out = b""
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return out
            out += h.rfile.read(size)
            h.rfile.readline()
    n = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(n) if n > 0 else b""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as libcurl expects
    server_version = "dtx-test-participant"

    def log_message(self, *args):
        pass

    def _any(self):
        self.server.participant._serve(self)

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops SYNs under load

    def handle_error(self, request, client_address):
        pass  # connections reset by dtxd (timeouts, kill -9) are expected


class Participant:
    """A real HTTP participant service.

    script(path, seq, gid=None) sets the answers for a path (optionally only
    for one gid); seq items are used in order and the last one repeats:
      200, 500, 409, 425, ...      answer that status (body {})
      ("sleep", 2.0, 200)          wait 2 s, then answer 200
      ("block", 200)               wait until release(path), then answer 200
      ("drop",)                    close the connection without answering
      ("json", 200, {...})         answer with that JSON body
    Unscripted paths answer 200. Every call is recorded in arrival order.
    """

    def __init__(self, name="P"):
        self.name = name
        self._cond = threading.Condition()
        self._calls = []
        self._scripts = {}  # (path, gid or None) -> [items, next index]
        self._gates = {}  # path -> threading.Event
        self._release_all = False
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.participant = self
        self.port = self._server.server_address[1]
        self.t0 = time.monotonic()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    # -- scripting ------------------------------------------------------

    def script(self, path, seq, gid=None):
        if isinstance(seq, (int, tuple)):
            seq = [seq]
        seq = list(seq)
        if not seq:
            raise ValueError("empty script")
        for it in seq:
            ok = isinstance(it, int) or (
                isinstance(it, tuple)
                and (
                    (it[0] == "sleep" and len(it) == 3)
                    or (it[0] == "block" and len(it) == 2)
                    or (it[0] == "drop" and len(it) == 1)
                    or (it[0] == "json" and len(it) == 3)
                )
            )
            if not ok:
                raise ValueError(f"bad script item {it!r}")
        with self._cond:
            self._scripts[(path, gid)] = [seq, 0]

    def _gate(self, path):
        with self._cond:
            if path not in self._gates:
                self._gates[path] = threading.Event()
                if self._release_all:
                    self._gates[path].set()
            return self._gates[path]

    def release(self, path=None):
        """Let ("block", ...) answers on path (all paths if None) go, now and later."""
        with self._cond:
            if path is None:
                for g in self._gates.values():
                    g.set()
                self._release_all = True
            else:
                self._gates.setdefault(path, threading.Event()).set()

    def block_again(self, path):
        """Re-arm the gate of path after a release()."""
        with self._cond:
            self._release_all = False
            self._gates[path] = threading.Event()

    def _next_action(self, path, gid):
        s = self._scripts.get((path, gid)) or self._scripts.get((path, None))
        if s is None:
            return 200
        items, i = s
        s[1] = min(i + 1, len(items) - 1)
        return items[i]

    def _serve(self, h):
        arrived = time.monotonic()
        body = _read_body(h)
        call = Call(h.command, h.path, list(h.headers.items()), body, arrived)
        with self._cond:
            call.seq = len(self._calls)
            self._calls.append(call)
            action = self._next_action(call.path, call.gid)
            self._cond.notify_all()
        status, payload = 200, b"{}"
        if isinstance(action, int):
            status = action
        elif action[0] == "sleep":
            self._closing.wait(action[1])
            status = action[2]
        elif action[0] == "block":
            gate = self._gate(call.path)
            while not gate.wait(0.05) and not self._closing.is_set():
                pass
            status = action[1]
        elif action[0] == "json":
            status, payload = action[1], json.dumps(action[2]).encode()
        elif action[0] == "drop":
            call.answered_at = time.monotonic()
            h.close_connection = True
            return
        call.answered_at = time.monotonic()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            h.wfile.flush()
            call.status = status
        except OSError:
            h.close_connection = True

    # -- inspection -----------------------------------------------------

    def calls(self, path=None, *, op=None, gid=None):
        """Recorded calls in arrival order, filtered by path (no query), Dtx-Op, Dtx-Gid."""
        with self._cond:
            cs = list(self._calls)
        return [
            c
            for c in cs
            if (path is None or c.path == path)
            and (op is None or c.op == op)
            and (gid is None or c.gid == gid)
        ]

    def count(self, path=None, **kw):
        return len(self.calls(path, **kw))

    def ops(self, gid=None):
        """[(path, Dtx-Op)] in arrival order."""
        return [(c.path, c.op) for c in self.calls(gid=gid)]

    def wait_calls(self, path=None, n=1, timeout=10.0, **kw):
        """Wait until at least n calls match; return the matching calls."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [
                    c
                    for c in self._calls
                    if (path is None or c.path == path)
                    and (kw.get("op") is None or c.op == kw["op"])
                    and (kw.get("gid") is None or c.gid == kw["gid"])
                ]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"participant {self.name}: {len(got)} calls to {path} {kw}, wanted {n} "
                        f"within {timeout}s; all calls:\n{self.dump()}"
                    )
                self._cond.wait(min(left, 0.1))

    def clear(self):
        with self._cond:
            self._calls.clear()

    def dump(self, limit=200):
        lines = []
        for c in self.calls()[-limit:]:
            lines.append(
                f"#{c.seq} +{c.time - self.t0:8.3f}s {c.method} {c.target} op={c.op} "
                f"gid={c.gid} branch={c.branch} -> {c.status}"
            )
        return "\n".join(lines) or "(no calls)"

    def close(self):
        self._closing.set()
        with self._cond:
            for g in self._gates.values():
                g.set()
        self._server.shutdown()
        self._server.server_close()


def timeline(*participants, gid=None):
    """Calls of several participants merged in arrival order:
    [(participant name, path, Dtx-Op)]."""
    cs = []
    for p in participants:
        cs += [(c.time, p.name, c.path, c.op) for c in p.calls(gid=gid)]
    cs.sort(key=lambda x: x[0])
    return [(n, path, op) for _, n, path, op in cs]


# --------------------------------------------------------------------------
# msg transactions (the AMQP and Kafka delivery tests)


def msg_body(targets, gid=None, retry=None, **options):
    """A msg transaction delivering payload {"i": n} to each target in turn."""
    body = {
        "type": "msg",
        "check": "http://127.0.0.1:9/check",
        "steps": [{"action": t, "payload": {"i": i + 1}} for i, t in enumerate(targets)],
        "retry": retry or dict(FAST_RETRY),
    }
    if gid:
        body["gid"] = gid
    body.update(options)
    return body


def submit(dtxd, gid, body=None):
    r = dtxd.post(f"/v1/transactions/{gid}/submit", body or {})
    assert r.status == 200, r
    return r.body


def create_submit(dtxd, body, wait=False):
    r = dtxd.create(body)
    assert r.status == 201, r
    return submit(dtxd, r.body["gid"], {"wait": True} if wait else None)


def first_seen(seq):
    """seq without repeats, in the order of first appearance."""
    out = []
    for x in seq:
        if x not in out:
            out.append(x)
    return out
