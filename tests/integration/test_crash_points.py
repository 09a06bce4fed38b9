"""
test_crash_points.py - the crash sweep: dtxd killed at every durability step
(src/common/crash.h), then restarted on the same data directory, must lose no
acknowledged transaction and leave every participant with one outcome.

For every crash point and every hit number N (1, 2, 3; DTX_CRASH_HITS=1 for a
quick pass) one run:

  1. starts the crash build ($DTXD_CRASH, `make crash`) with
     DTX_CRASH_POINT=<point> DTX_CRASH_HIT=<N>, small log segments (4 KiB) and
     an early compaction threshold (8 KiB), so that rotation and compaction
     happen within a second or two;
  2. runs a small workload against it until it aborts: up to three rounds of
     a saga that succeeds, a saga whose second action is refused (409) and is
     compensated, a concurrent saga (two steps in parallel, a third after both
     that is refused), a tcc that confirms, a tcc that is aborted (cancels), a 2pc
     that commits, a 2pc with a no vote (rollbacks), a msg submitted at
     creation and a msg decided by its check; plus, with RabbitMQ
     (DTX_TEST_AMQP_URL and _MGMT; amqp.* points only), a msg delivered to
     a queue and two sagas whose every call is an AMQP command answered by a
     participant on a queue (one succeeds, one is refused at its second
     step and compensated over AMQP), and with
     PostgreSQL (DTX_TEST_PG_HOST and _PORT), a 2pc over two resources that
     commits and one that rolls back. Every gid is the client's, so
     transactions whose creation was never answered are followed too. A
     request answered 200/201 is *acknowledged*, with the status it showed
     (the workload waits for final states: `wait: true`);
  3. checks that the process died of that point at that hit (stderr "crash
     point <point> hit <N>", SIGABRT), or notes that the workload never
     reached it;
  4. restarts dtxd without the crash variables, waits until every
     transaction is final, and checks:
       - every acknowledged transaction exists; one acknowledged in a final
         state ends in that state; every outcome is one its kind allows
         (the refusing saga fails, the committing 2pc may only have rolled
         back if its commit was never acknowledged, ...);
       - a transaction that does not exist after the restart was never
         acknowledged, and no participant ever heard of it;
       - the participants agree with the outcome (counted by distinct
         Idempotency-Key, as participants de-duplicate): a succeeded saga
         applied every action and was never compensated; a failed one
         compensated every action that was applied, after the last time it
         was sent; tcc confirmed every branch and cancelled none, or the
         reverse; a committed 2pc prepared and committed every branch and
         rolled back none, a failed one committed none and rolled back every
         branch; msg delivered every step, in order, or none; the RabbitMQ
         queue holds every step of every succeeded msg; the AMQP participant
         saw the sagas' commands as the HTTP one sees its calls (by distinct
         message_id); PostgreSQL holds the
         rows of every committed 2pc on both databases, of no failed one, and
         no dtx: prepared transaction of the sweep is left;
       - nothing is flagged needs_attention.

Recovery points (recovery.*) are hit while dtxd starts: for them the run
first makes a log worth recovering (three rounds, then four sagas left
unfinished mid-action, kill -9, and garbage appended to the last segment as
a torn tail), then starts with the crash variables (it must die during
start-up), then restarts without them and checks as above.

Every point must be reached at hit 1 (asserted); a point that a run does not
reach at a higher hit is reported as not reached (a summary table is printed
at the end; DTX_CRASH_REPORT=<file> also writes it to a file). amqp.* points
are skipped without RabbitMQ, pg.* points without PostgreSQL.

Skipped when $DTXD_CRASH is not set or names no executable (failed with
DTX_REQUIRE_CRASH=1). `make test-crash` builds the crash build and runs this
file; about two minutes on two cores (three with RabbitMQ and PostgreSQL).
"""

import http.client
import json
import os
import re
import signal
import time
import uuid
from pathlib import Path

import pytest

from dtxtest import FAST_RETRY, Dtxd, DtxdError, Participant, wait_until

# one sweep at a time (xdist): its runs share bank_a and bank_b
pytestmark = pytest.mark.xdist_group("crash")

REPO = Path(__file__).resolve().parents[2]
CRASH_H = REPO / "src" / "common" / "crash.h"
POINTS = re.findall(r'^\s*X\("([a-z0-9_.]+)",', CRASH_H.read_text(), re.M)
HITS = [int(h) for h in os.environ.get("DTX_CRASH_HITS", "1,2,3").split(",") if h.strip()]
COMPACTION = {"log.compact_cut", "log.snapshot_before_rename", "log.snapshot_after_rename",
              "log.snapshot_after_unlink"}
ARGS = ("--segment-size", "4096", "--compact-min-bytes", "8192", "--log-level", "info",
        "--resource-scan-ms", "300", "--orphan-grace-ms", "2000")
REFUSING = ("/refuse", "/no/prepare")  # the participant answers 409 there, 200 elsewhere
ROUNDS = 3
SETTLE_S = 30.0
HELD = 4  # recovery runs: sagas left unfinished at the kill -9

results = {}  # point -> {hit: "crashed" | "not reached" | "skipped: ..."}


def crash_bin():
    path = os.environ.get("DTXD_CRASH")
    msg = None
    if not path:
        msg = "DTXD_CRASH is not set: build the crash-point dtxd with `make crash`"
    elif not (os.path.isfile(path) and os.access(path, os.X_OK)):
        msg = f"DTXD_CRASH={path} is not an executable: build it with `make crash`"
    if msg:
        if os.environ.get("DTX_REQUIRE_CRASH") == "1":
            pytest.fail(msg + " (DTX_REQUIRE_CRASH=1)", pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="module")
def dtxd_crash():
    import subprocess

    path = crash_bin()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTX_")}
    env["DTX_CRASH_POINT"] = "list"
    out = subprocess.run([path, "--version"], capture_output=True, text=True, env=env, timeout=10)
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    if listed != POINTS:
        pytest.fail(f"{path} is not a crash build of this tree (DTX_CRASH_POINT=list printed "
                    f"{out.stdout[:300]!r})", pytrace=False)
    return path


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    yield
    if not results:
        return
    lines = ["crash sweep: point x hit (C = crashed there and recovered correctly, "
             "- = not reached, F = a durability check failed, E = error, s = skipped)"]
    for point in POINTS:
        if point not in results:
            continue
        row = results[point]
        cells = []
        for h in HITS:
            v = row.get(h, "?")
            cells.append({"crashed": "C", "not reached": "-", "FAILED": "F", "error": "E"}.get(
                v, "s" if v.startswith("skipped") else "?"))
        lines.append(f"  {point:30s} {' '.join(cells)}")
    text = "\n".join(lines)
    rep = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if rep is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            rep.write_line("")
            for line in lines:
                rep.write_line(line)
    out = os.environ.get("DTX_CRASH_REPORT")
    if out:
        Path(out).write_text(text + "\n")


# ---------------------------------------------------------------- the table


def test_every_point_in_the_source_is_in_the_table():
    """The table in crash.h and the CRASH_POINT("...") uses agree, both ways."""
    used = set()
    for f in (REPO / "src").rglob("*.c"):
        text = f.read_text()
        for m in re.finditer(r"CRASH_POINT\((.*?)\);", text, re.S):
            used |= set(re.findall(r'"([^"]+)"', m.group(1)))
    assert len(POINTS) == len(set(POINTS)), "a point is listed twice"
    assert used - set(POINTS) == set(), "CRASH_POINT names missing from crash.h"
    assert set(POINTS) - used == set(), "crash.h lists points no code hits"


def test_unknown_point_stops_the_start(dtxd_crash):
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("DTX_")}
    env.update(DTX_CRASH_POINT="log.after_fsnyc")
    r = subprocess.run([dtxd_crash, "--version"], capture_output=True, text=True, env=env,
                       timeout=10)
    assert r.returncode == 2 and "names no crash point" in r.stderr, r
    env.update(DTX_CRASH_POINT="log.after_fsync", DTX_CRASH_HIT="0")
    r = subprocess.run([dtxd_crash, "--version"], capture_output=True, text=True, env=env,
                       timeout=10)
    assert r.returncode == 2 and "DTX_CRASH_HIT" in r.stderr, r


# ---------------------------------------------------------------- workload


class Txn:
    def __init__(self, gid, kind, allowed):
        self.gid = gid
        self.kind = kind
        self.allowed = allowed  # final states this kind may end in
        self.acked = None  # status shown by the last 200/201 answer, None: never acknowledged


def gid_for(kind):
    return f"cs-{kind}-{uuid.uuid4().hex[:10]}"


class AmqpCall:
    """An AMQP command as the checks see an HTTP call (branch, op, key,
    time, path: "/refuse" when it was refused)."""

    def __init__(self, cmd, refused):
        self.branch = cmd.headers.get("Dtx-Branch")
        self.op = cmd.op
        self.key = cmd.message_id
        self.time = cmd.arrived
        self.path = "/refuse" if refused else "/"

    def __repr__(self):
        return f"<amqp {self.key} {self.path}>"


class Amqp:
    """The RabbitMQ part of the workload (DTX_TEST_AMQP_URL / _MGMT): a queue
    for msg deliveries, and a participant answering commands on another
    (FAILURE for a payload {"refuse": true}, else SUCCESS)."""

    def __init__(self):
        from amqpfix import AmqpParticipant, Mgmt

        self.url = os.environ["DTX_TEST_AMQP_URL"]
        self.mq = Mgmt(os.environ["DTX_TEST_AMQP_MGMT"])
        self.queue = f"dtx-crash-{uuid.uuid4().hex[:8]}"
        self.mq.queue(self.queue)
        self.cmd_queue = f"{self.queue}.cmd"
        self.got = []
        self.participant = AmqpParticipant(self.url, self.cmd_queue, self.decide)

    @staticmethod
    def refuses(cmd):
        return cmd.op == "action" and (cmd.json() or {}).get("refuse") is True

    def decide(self, cmd):
        return "FAILURE" if self.refuses(cmd) else "SUCCESS"

    def calls(self, gid):
        with self.participant.lock:
            return [AmqpCall(c, self.refuses(c)) for c in self.participant.calls if c.gid == gid]

    def messages(self):
        self.got += [m["properties"]["message_id"] for m in self.mq.take(self.queue)]
        return self.got

    def close(self):
        self.participant.stop()
        for q in (self.queue, self.cmd_queue):
            try:
                self.mq.call("DELETE", f"/api/queues/%2F/{q}")
            except Exception:
                pass


class Pg:
    """The PostgreSQL part of the workload (DTX_TEST_PG_HOST / _PORT): each
    2pc branch inserts a row (gid, branch) in table crash_sweep of bank_a or
    bank_b and prepares it as dtx:<gid>:<branch>."""

    DBS = ("bank_a", "bank_b")

    def __init__(self, tmp):
        from bankfix import pg_conninfo, psql

        self.psql = psql
        self.conninfo = {db: pg_conninfo(db) for db in self.DBS}
        for ci in self.conninfo.values():
            psql(ci, "CREATE TABLE IF NOT EXISTS crash_sweep (gid text, branch text)")
        self.resources = tmp / "resources"
        self.resources.write_text("".join(f"{db} {ci} sslmode=disable connect_timeout=5\n"
                                          for db, ci in self.conninfo.items()))

    def prepare(self, db, gid, branch):
        self.psql(self.conninfo[db], f"BEGIN; INSERT INTO crash_sweep VALUES ('{gid}', '{branch}');"
                                     f" PREPARE TRANSACTION 'dtx:{gid}:{branch}'")

    def rows(self, db, gid):
        return self.psql(self.conninfo[db], f"SELECT branch FROM crash_sweep WHERE gid = '{gid}'")

    def prepared(self, db, gid):
        return self.psql(self.conninfo[db], "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE "
                                            f"'dtx:{gid}:%'")


class Run:
    """One point x hit: a participant, dtxd, the workload and the checks."""

    def __init__(self, binary, tmp, point, hit, amqp=None, pg=None):
        self.point, self.hit = point, hit
        self.p = Participant(f"P-{point}-{hit}")
        self.p.script("/refuse", 409)
        self.p.script("/no/prepare", 409)
        self.p.script("/hold", ("block", 200))
        self.amqp, self.pg = amqp, pg
        args = list(ARGS)
        if amqp:
            args += ["--amqp-url", amqp.url]
        if pg:
            args += ["--resources", str(pg.resources)]
        self.crash_env = {"DTX_CRASH_POINT": point, "DTX_CRASH_HIT": str(hit)}
        self.d = Dtxd(binary, tmp / "data", tmp / "dtxd.log", args=args)
        self.txns = {}
        self.crashed = False

    def close(self):
        self.d.cleanup()
        self.p.close()
        if self.amqp:
            self.amqp.close()

    # -- requests -------------------------------------------------------

    def alive(self):
        return self.d.running

    def send(self, txn, method, path, body):
        """One request; records an acknowledgement. None when dtxd is gone."""
        if not self.alive():
            return None
        try:
            r = self.d.request(method, path, body, timeout=30)
        except (OSError, http.client.HTTPException):
            return None
        if r.status in (200, 201):
            txn.acked = r.body["status"]
            return r
        raise AssertionError(f"{method} {path} for {txn.kind}: unexpected answer {r!r}")

    def new(self, kind, allowed):
        t = Txn(gid_for(kind), kind, allowed)
        self.txns[t.gid] = t
        return t

    def create(self, t, body):
        body = dict(body, gid=t.gid)
        body.setdefault("retry", dict(FAST_RETRY))
        return self.send(t, "POST", "/v1/transactions", body)

    # -- the workload ---------------------------------------------------

    def round(self):
        P = self.p
        wait = {"wait": True, "wait_timeout_ms": 20000}

        def saga_step(a, undo):
            return {"action": P.url(a), "compensate": P.url(undo)}

        def tcc_branch(n):
            return {"branch": n, "confirm": P.url(f"/t{n}/confirm"), "cancel": P.url(f"/t{n}/cancel")}

        def xa_branch(n, prepare=None):
            return {"branch": n, "prepare": P.url(prepare or f"/x{n}/prepare"),
                    "commit": P.url(f"/x{n}/commit"), "rollback": P.url(f"/x{n}/rollback")}

        # a msg decided by its check (asked 150 ms after creation, meanwhile the rest runs)
        t = self.new("msg_check", {"succeeded"})
        self.create(t, {"type": "msg", "check": P.url("/check"), "timeout_ms": 150,
                        "steps": [{"action": P.url("/m1")}, {"action": P.url("/m2")}]})
        t = self.new("saga_ok", {"succeeded"})
        self.create(t, dict(wait, type="saga", steps=[saga_step("/sa", "/sa-undo"),
                                                       saga_step("/sb", "/sb-undo")]))
        t = self.new("saga_fail", {"failed"})
        self.create(t, dict(wait, type="saga", steps=[saga_step("/sc", "/sc-undo"),
                                                       saga_step("/refuse", "/refuse-undo")]))
        t = self.new("saga_dag", {"failed"})
        self.create(t, dict(wait, type="saga", steps=[
            saga_step("/da", "/da-undo"), saga_step("/db", "/db-undo"),
            dict(saga_step("/refuse", "/refuse-undo"), after=[1, 2])]))
        t = self.new("tcc_ok", {"succeeded"})
        self.create(t, dict(wait, type="tcc", submit=True, timeout_ms=3000,
                            branches=[tcc_branch("a"), tcc_branch("b")]))
        t = self.new("tcc_cancel", {"failed"})
        if self.create(t, {"type": "tcc", "timeout_ms": 3000,
                           "branches": [tcc_branch("a"), tcc_branch("b")]}):
            self.send(t, "POST", f"/v1/transactions/{t.gid}/abort", wait)
        t = self.new("2pc_ok", {"succeeded", "failed"})
        self.create(t, dict(wait, type="2pc", submit=True, timeout_ms=3000,
                            branches=[xa_branch("a"), xa_branch("b")]))
        t = self.new("2pc_no", {"failed"})
        self.create(t, dict(wait, type="2pc", submit=True, timeout_ms=3000,
                            branches=[xa_branch("a"), xa_branch("b", "/no/prepare")]))
        t = self.new("msg_ok", {"succeeded"})
        self.create(t, dict(wait, type="msg", submit=True, check=P.url("/check"),
                            steps=[{"action": P.url("/m1")}, {"action": P.url("/m2")}]))
        if self.amqp:
            t = self.new("amqp_msg", {"succeeded"})
            q = f"amqp:///{self.amqp.queue}"
            self.create(t, dict(wait, type="msg", submit=True, check=P.url("/check"),
                                steps=[{"action": q}, {"action": q}]))
            c = f"amqp:///{self.amqp.cmd_queue}"
            t = self.new("amqp_saga_ok", {"succeeded"})
            self.create(t, dict(wait, type="saga", steps=[
                {"action": c, "compensate": c, "payload": {"n": 1}},
                {"action": c, "compensate": c, "payload": {"n": 2}}]))
            t = self.new("amqp_saga_fail", {"failed"})
            self.create(t, dict(wait, type="saga", steps=[
                {"action": c, "compensate": c, "payload": {"n": 1}},
                {"action": c, "compensate": c, "payload": {"refuse": True}}]))
        if self.pg:
            t = self.new("pg_ok", {"succeeded", "failed"})
            self.pg.prepare("bank_a", t.gid, "a")
            self.pg.prepare("bank_b", t.gid, "b")
            self.create(t, dict(wait, type="2pc", submit=True, timeout_ms=5000,
                                branches=[{"branch": "a", "resource": "bank_a"},
                                          {"branch": "b", "resource": "bank_b"}]))
            t = self.new("pg_no", {"failed"})
            self.pg.prepare("bank_a", t.gid, "a")  # b never prepared: its vote is no
            self.create(t, dict(wait, type="2pc", submit=True, timeout_ms=5000,
                                branches=[{"branch": "a", "resource": "bank_a"},
                                          {"branch": "b", "resource": "bank_b"}]))

    def start_crashing(self):
        """Start with the crash variables; False if it died during start-up."""
        self.d.extra_env = dict(self.crash_env)
        try:
            self.d.start()
            return True
        except DtxdError:
            return False

    def workload(self):
        """Rounds until dtxd dies (compaction points: until 8 s have passed)."""
        t0 = time.monotonic()
        n = 0
        while self.alive():
            if self.point in COMPACTION:
                if time.monotonic() - t0 > 8.0:
                    break
            elif n >= ROUNDS:
                break
            self.round()
            n += 1
        # background work (the msg checked later, retries) may still reach it
        try:
            self.d.proc.wait(1.0 if self.point not in COMPACTION else 2.0)
        except Exception:
            pass

    def make_recoverable_log(self):
        """Recovery points: a log with finished and unfinished transactions and
        a torn tail, left by a kill -9."""
        self.d.extra_env = {}
        args = self.d.args
        # no compaction while it is made: several segments to recover (a
        # snapshot is recovered after every crash at a compaction point)
        self.d.args = args + ["--compact-min-bytes", str(1 << 20)]
        self.d.start()
        self.d.args = args
        for _ in range(ROUNDS):
            self.round()
        for _ in range(HELD):
            t = self.new("saga_held", {"succeeded"})
            self.create(t, {"type": "saga", "steps": [
                {"action": self.p.url("/hold"), "compensate": self.p.url("/hold-undo")},
                {"action": self.p.url("/sa"), "compensate": self.p.url("/sa-undo")}]})
        self.p.wait_calls("/hold", HELD)
        self.d.kill9()
        self.p.release("/hold")
        segs = sorted(self.d.data_dir.glob("*.log"))
        with open(segs[-1], "ab") as f:
            f.write(os.urandom(300))

    def judge_crash(self):
        """Record whether the process died at the point and hit."""
        if self.alive():
            self.d.kill9()  # not reached: a kill -9 at the end instead
            self.crashed = False
            return
        rc = self.d.proc.wait(10)
        line = f"crash point {self.point} hit {self.hit}"
        log = self.d.log_text()
        assert line in log, f"dtxd exited {rc} without {line!r}:\n{self.d.log_tail()}"
        assert rc == -signal.SIGABRT, rc
        self.crashed = True

    # -- after the restart ----------------------------------------------

    def settle(self):
        self.d.extra_env = {}
        self.d.start()
        self.p.release("/hold")
        final = {}

        def done():
            for gid in self.txns:
                if gid in final:
                    continue
                r = self.d.get(f"/v1/transactions/{gid}")
                if r.status == 404:
                    final[gid] = None
                elif r.status == 200 and r.body["status"] in ("succeeded", "failed"):
                    final[gid] = r.body
            return len(final) == len(self.txns)

        try:
            wait_until(done, SETTLE_S, interval=0.05, what="every transaction to be final")
        except AssertionError:
            stuck = {g: self.d.get(f"/v1/transactions/{g}").body for g in self.txns
                     if g not in final}
            raise AssertionError(f"not final {SETTLE_S}s after the restart: "
                                 f"{json.dumps(stuck, indent=1)[:4000]}") from None
        return final

    def check(self, final):
        problems = []
        for gid, t in self.txns.items():
            body = final[gid]
            calls = self.p.calls(gid=gid)
            if t.kind.startswith("amqp_saga"):
                calls = self.amqp.calls(gid)
            if body is None:
                if t.acked is not None:
                    problems.append(f"{t.kind} {gid} acknowledged ({t.acked}) but lost")
                if calls:
                    problems.append(f"{t.kind} {gid} does not exist but participants were called: "
                                    f"{calls}")
                continue
            status = body["status"]
            if t.acked in ("succeeded", "failed") and status != t.acked:
                problems.append(f"{t.kind} {gid} acknowledged {t.acked}, now {status}")
            if status not in t.allowed:
                problems.append(f"{t.kind} {gid} ended {status}, allowed {sorted(t.allowed)}")
            if body.get("needs_attention"):
                problems.append(f"{t.kind} {gid} needs attention: {body}")
            problems += [f"{t.kind} {gid} ({status}): {p}" for p in
                         self.agree(t, body, calls)]
        if self.amqp:
            problems += self.check_amqp(final)
        if self.pg:
            problems += self.check_pg(final)
        return problems

    def agree(self, t, body, calls):
        """What the participants saw against the final state."""
        out = []
        status = body["status"]
        branches = [b["branch"] for b in body["branches"]]

        def of(branch, op):
            return [c for c in calls if c.branch == branch and c.op == op]

        def applied(cs):
            return [c for c in cs if c.path not in REFUSING]

        def keys(cs):
            return {c.key for c in cs}

        if body["type"] == "saga":
            for b in branches:
                acts, comps = applied(of(b, "action")), applied(of(b, "compensate"))
                if status == "succeeded":
                    if len(keys(acts)) != 1:
                        out.append(f"step {b}: action applied {len(keys(acts))} times")
                    if of(b, "compensate"):
                        out.append(f"step {b}: compensated in a succeeded saga")
                elif acts:
                    if not comps:
                        out.append(f"step {b}: action applied, never compensated")
                    elif max(c.time for c in acts) > max(c.time for c in comps):
                        out.append(f"step {b}: action sent after its last compensation")
            # reverse dependency order: a step's compensation is sent only
            # after every step that waits for it was compensated
            steps = body["branches"]
            concurrent = any("after" in st for st in steps)
            for i, st in enumerate(steps):
                after = st.get("after", [i] if i > 0 and not concurrent else [])
                done = applied(of(st["branch"], "compensate"))
                if not done:
                    continue
                for n in after:
                    dep = of(steps[n - 1]["branch"], "compensate")
                    if dep and min(c.time for c in dep) < min(c.time for c in done):
                        out.append(f"step {steps[n - 1]['branch']} compensated before step "
                                   f"{st['branch']}, which waits for it")
        elif body["type"] == "tcc":
            for b in branches:
                conf, canc = of(b, "confirm"), of(b, "cancel")
                if status == "succeeded" and (not conf or canc):
                    out.append(f"branch {b}: {len(conf)} confirms, {len(canc)} cancels")
                if status == "failed" and (conf or not canc):
                    out.append(f"branch {b}: {len(conf)} confirms, {len(canc)} cancels")
        elif body["type"] == "2pc":
            if any("resource" in b for b in body["branches"]):
                return out  # PostgreSQL branches: check_pg
            prep = [c for c in calls if c.op == "prepare"]
            for b in branches:
                com, rb = of(b, "commit"), of(b, "rollback")
                if status == "succeeded":
                    if not applied(of(b, "prepare")) or not com or rb:
                        out.append(f"branch {b}: prepared {len(of(b, 'prepare'))}, committed "
                                   f"{len(com)}, rolled back {len(rb)}")
                    if com and prep and min(c.time for c in com) < max(
                            min(c.time for c in of(x, "prepare")) for x in branches):
                        out.append(f"branch {b}: committed before every branch was prepared")
                elif com or not rb:
                    out.append(f"branch {b}: committed {len(com)}, rolled back {len(rb)}")
        elif body["type"] == "msg":
            if any(s.get("action", "").startswith("amqp:") for s in body["branches"]):
                return out  # check_amqp
            first = []
            for b in branches:
                d = of(b, "action")
                if status == "succeeded" and not d:
                    out.append(f"step {b}: never delivered")
                if status == "failed" and d:
                    out.append(f"step {b}: delivered in a failed msg")
                first.append(min((c.time for c in d), default=None))
            if status == "succeeded" and None not in first and first != sorted(first):
                out.append(f"steps delivered out of order: {first}")
        return out

    def check_amqp(self, final):
        out = []
        want = {}
        for gid, t in self.txns.items():
            if t.kind == "amqp_msg" and final[gid] is not None:
                want[gid] = [f"{gid}/{b['branch']}/action" for b in final[gid]["branches"]]
        need = {m for ids in want.values() for m in ids}
        try:
            wait_until(lambda: need <= set(self.amqp.messages()), 20, interval=0.2,
                       what="every step of every succeeded amqp msg in the queue")
        except AssertionError as e:
            out.append(str(e)[:500])
        got = self.amqp.messages()
        for gid, t in self.txns.items():
            if t.kind != "amqp_msg":
                continue
            mine = []
            for m in got:
                if m.startswith(gid + "/") and m not in mine:
                    mine.append(m)
            if final[gid] is None and mine:
                out.append(f"amqp {gid}: does not exist but messages were published: {mine}")
            elif final[gid] is not None and mine != want[gid]:
                out.append(f"amqp {gid}: queue has {mine}, wanted {want[gid]} in that order")
        return out

    def check_pg(self, final):
        out = []
        pgs = [(g, t) for g, t in self.txns.items() if t.kind in ("pg_ok", "pg_no")]

        def none_prepared():
            return not any(self.pg.prepared(db, g) for g, _ in pgs for db in Pg.DBS)

        try:
            wait_until(none_prepared, 20, interval=0.3, what="no dtx: prepared transaction left")
        except AssertionError:
            out.append("prepared transactions left: " + str(
                {g: [self.pg.prepared(db, g) for db in Pg.DBS] for g, _ in pgs}))
        for gid, t in pgs:
            body = final[gid]
            rows = {db: len(self.pg.rows(db, gid)) for db in Pg.DBS}
            if body is not None and body["status"] == "succeeded":
                if rows != {"bank_a": 1, "bank_b": 1}:
                    out.append(f"{t.kind} {gid} committed, rows {rows}")
            elif any(rows.values()):
                out.append(f"{t.kind} {gid} {body and body['status']}, rows {rows}")
        return out


def amqp_env():
    return os.environ.get("DTX_TEST_AMQP_URL") and os.environ.get("DTX_TEST_AMQP_MGMT")


def pg_env():
    return os.environ.get("DTX_TEST_PG_HOST") and os.environ.get("DTX_TEST_PG_PORT")


@pytest.mark.parametrize("point", POINTS)
def test_crash_point(point, dtxd_crash, tmp_path):
    row = results.setdefault(point, {})
    if point.startswith("amqp.") and not amqp_env():
        for h in HITS:
            row[h] = "skipped: no RabbitMQ"
        pytest.skip("no RabbitMQ: set DTX_TEST_AMQP_URL and DTX_TEST_AMQP_MGMT")
    if point.startswith("pg.") and not pg_env():
        for h in HITS:
            row[h] = "skipped: no PostgreSQL"
        pytest.skip("no PostgreSQL: set DTX_TEST_PG_HOST and DTX_TEST_PG_PORT")
    failures = []
    for hit in HITS:
        tmp = tmp_path / f"hit{hit}"
        tmp.mkdir()
        amqp = Amqp() if amqp_env() and point.startswith("amqp.") else None
        pg = Pg(tmp) if pg_env() and point.startswith("pg.") else None
        run = Run(dtxd_crash, tmp, point, hit, amqp=amqp, pg=pg)
        try:
            if point.startswith("recovery."):
                run.make_recoverable_log()
                if run.start_crashing():
                    pass  # started: the point was not reached
            elif run.start_crashing():
                run.workload()
            run.judge_crash()
            row[hit] = "crashed" if run.crashed else "not reached"
            problems = run.check(run.settle())
        except Exception as e:
            row[hit] = "error"
            failures.append(f"hit {hit}: {type(e).__name__}: {e}\n--- dtxd log tail:\n"
                            f"{run.d.log_tail(40)}")
            continue
        finally:
            run.close()
        if problems:
            row[hit] = "FAILED"
            failures.append(f"hit {hit} ({row[hit]}): " + "\n  ".join(problems) +
                            f"\n--- dtxd log tail:\n{run.d.log_tail(40)}")
    assert not failures, f"crash point {point}:\n" + "\n".join(failures)
    if 1 in HITS:
        assert row[1] == "crashed", f"crash point {point} was not reached at hit 1 by the workload"
