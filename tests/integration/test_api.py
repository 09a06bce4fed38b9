"""The HTTP API's contract: validation errors with exact codes and fields,
body cap, 404/405, idempotent gids, listing, health, command line, logs."""

import copy
import json
import re
import socket
import subprocess
import time
import urllib.parse

import pytest

from dtxtest import GID_RE, assert_error, free_port, new_gid, saga, step, wait_until

URL_A = "http://127.0.0.1:9/a"
URL_B = "http://127.0.0.1:9/b"


def S(**kw):
    s = {"action": URL_A, "compensate": URL_B}
    s.update(kw)
    return s


def B(**kw):
    b = {"type": "saga", "steps": [S()]}
    b.update(kw)
    return b


def without(d, *path):
    d = copy.deepcopy(d)
    o = d
    for k in path[:-1]:
        o = o[k]
    del o[path[-1]]
    return d


def R(**kw):
    return B(retry={"initial_interval_ms": 100, "max_interval_ms": 1000, "limit": 3, **kw})


BAD = [
    # invalid_json
    ("empty-body", b"", "invalid_json", None),
    ("truncated", b'{"type": "saga"', "invalid_json", None),
    ("not-json", b"type=saga", "invalid_json", None),
    ("trailing-comma", b'{"type": "saga",}', "invalid_json", None),
    ("two-values", b'{"type": "saga"} {}', "invalid_json", None),
    ("array", b"[]", "invalid_json", None),
    ("string", b'"saga"', "invalid_json", None),
    ("number", b"42", "invalid_json", None),
    ("null", b"null", "invalid_json", None),
    ("bad-utf8", b'{"type": "saga", "gid": "\xff\xfe"}', "invalid_json", None),
    # missing_field
    ("no-type", without(B(), "type"), "missing_field", "type"),
    ("no-steps", without(B(), "steps"), "missing_field", "steps"),
    ("no-action", B(steps=[{"compensate": URL_B}]), "missing_field", "steps[0].action"),
    ("no-compensate", B(steps=[{"action": URL_A}]), "missing_field", "steps[0].compensate"),
    ("no-action-step2", B(steps=[S(), {"compensate": URL_B}]), "missing_field", "steps[1].action"),
    # wrong_type
    ("type-number", B(type=1), "wrong_type", "type"),
    ("steps-object", B(steps={"0": S()}), "wrong_type", "steps"),
    ("steps-string", B(steps="x"), "wrong_type", "steps"),
    ("step-string", B(steps=[URL_A]), "wrong_type", "steps[0]"),
    ("step2-array", B(steps=[S(), []]), "wrong_type", "steps[1]"),
    ("action-number", B(steps=[S(action=5)]), "wrong_type", "steps[0].action"),
    ("compensate-object", B(steps=[S(compensate={"u": URL_B})]), "wrong_type", "steps[0].compensate"),
    ("gid-number", B(gid=5), "wrong_type", "gid"),
    ("gid-array", B(gid=["a"]), "wrong_type", "gid"),
    ("retry-array", B(retry=[]), "wrong_type", "retry"),
    ("retry-number", B(retry=5), "wrong_type", "retry"),
    ("initial-string", R(initial_interval_ms="100"), "wrong_type", "retry.initial_interval_ms"),
    ("max-float", R(max_interval_ms=1000.5), "wrong_type", "retry.max_interval_ms"),
    ("limit-bool", R(limit=True), "wrong_type", "retry.limit"),
    ("request-timeout-string", B(request_timeout_ms="100"), "wrong_type", "request_timeout_ms"),
    ("timeout-bool", B(timeout_ms=True), "wrong_type", "timeout_ms"),
    ("wait-string", B(wait="true"), "wrong_type", "wait"),
    ("wait-number", B(wait=1), "wrong_type", "wait"),
    ("wait-timeout-string", B(wait_timeout_ms="5"), "wrong_type", "wait_timeout_ms"),
    # invalid_type
    ("type-bogus", B(type="bogus"), "invalid_type", "type"),
    ("type-uppercase", B(type="SAGA"), "invalid_type", "type"),
    ("type-empty", B(type=""), "invalid_type", "type"),
    # invalid_url
    ("url-ftp", B(steps=[S(action="ftp://127.0.0.1/a")]), "invalid_url", "steps[0].action"),
    ("url-no-scheme", B(steps=[S(action="127.0.0.1:9/a")]), "invalid_url", "steps[0].action"),
    ("url-http-no-host", B(steps=[S(action="http://")]), "invalid_url", "steps[0].action"),
    ("url-https-no-host", B(steps=[S(action="https://")]), "invalid_url", "steps[0].action"),
    ("url-empty", B(steps=[S(action="")]), "invalid_url", "steps[0].action"),
    ("url-file", B(steps=[S(action="file:///etc/passwd")]), "invalid_url", "steps[0].action"),
    ("url-mailto", B(steps=[S(action="mailto:a@b.c")]), "invalid_url", "steps[0].action"),
    ("url-one-slash", B(steps=[S(action="http:/127.0.0.1/a")]), "invalid_url", "steps[0].action"),
    ("url-compensate", B(steps=[S(compensate="gopher://127.0.0.1/b")]), "invalid_url", "steps[0].compensate"),
    ("url-step2", B(steps=[S(), S(action="javascript:alert(1)")]), "invalid_url", "steps[1].action"),
    # unknown_field
    ("unknown-top", B(foo=1), "unknown_field", "foo"),
    ("misspelt-timeout", B(timeout=5), "unknown_field", "timeout"),
    ("unknown-step-field", B(steps=[S(bogus=1)]), "unknown_field", "steps[0].bogus"),
    ("unknown-retry-field", R(bogus=1), "unknown_field", "retry.bogus"),
    # too_many_steps (default --max-steps 100)
    ("101-steps", B(steps=[S()] * 101), "too_many_steps", "steps"),
    # invalid_value
    ("no-steps-in-array", B(steps=[]), "invalid_value", "steps"),
    ("gid-empty", B(gid=""), "invalid_value", "gid"),
    ("gid-space", B(gid="a b"), "invalid_value", "gid"),
    ("gid-slash", B(gid="a/b"), "invalid_value", "gid"),
    ("gid-newline", B(gid="a\nb"), "invalid_value", "gid"),
    ("gid-non-ascii", B(gid="caf\u00e9"), "invalid_value", "gid"),
    ("gid-129", B(gid="g" * 129), "invalid_value", "gid"),
    ("initial-0", R(initial_interval_ms=0), "invalid_value", "retry.initial_interval_ms"),
    ("initial-negative", R(initial_interval_ms=-5), "invalid_value", "retry.initial_interval_ms"),
    ("initial-too-big", R(initial_interval_ms=3600001, max_interval_ms=86400000), "invalid_value", "retry.initial_interval_ms"),
    ("max-below-initial", R(initial_interval_ms=100, max_interval_ms=99), "invalid_value", "retry.max_interval_ms"),
    ("max-too-big", R(max_interval_ms=86400001), "invalid_value", "retry.max_interval_ms"),
    ("limit-negative", R(limit=-1), "invalid_value", "retry.limit"),
    ("limit-too-big", R(limit=1000001), "invalid_value", "retry.limit"),
    ("request-timeout-0", B(request_timeout_ms=0), "invalid_value", "request_timeout_ms"),
    ("request-timeout-too-big", B(request_timeout_ms=600001), "invalid_value", "request_timeout_ms"),
    ("timeout-negative", B(timeout_ms=-1), "invalid_value", "timeout_ms"),
    ("timeout-too-big", B(timeout_ms=31536000001), "invalid_value", "timeout_ms"),
    ("wait-timeout-0", B(wait_timeout_ms=0), "invalid_value", "wait_timeout_ms"),
    ("wait-timeout-over-max", B(wait_timeout_ms=60001), "invalid_value", "wait_timeout_ms"),
]


@pytest.mark.parametrize("body,code,field", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_create_request_rejected(dtxd, body, code, field):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = dtxd.post("/v1/transactions", raw=raw)
    assert_error(r, 400, code, field)


def test_rejected_request_creates_nothing(dtxd):
    gid = new_gid("rej")
    r = dtxd.create(B(gid=gid, steps=[S(action="ftp://x/y")]))
    assert_error(r, 400, "invalid_url", "steps[0].action")
    assert_error(dtxd.get("/v1/transactions/" + gid), 404, "not_found")
    l = dtxd.list()
    assert l.status == 200 and l.body["transactions"] == [], l


GOOD = [
    ("gid-128-all-chars", {"gid": ("AZaz09._:-" * 13)[:128]}),
    ("gid-1-char", {"gid": "x"}),
    ("retry-min", {"retry": {"initial_interval_ms": 1, "max_interval_ms": 1, "limit": 0}}),
    ("retry-max", {"retry": {"initial_interval_ms": 3600000, "max_interval_ms": 86400000, "limit": 1000000}}),
    ("request-timeout-min", {"request_timeout_ms": 1}),
    ("request-timeout-max", {"request_timeout_ms": 600000}),
    ("timeout-0", {"timeout_ms": 0}),
    ("timeout-max", {"timeout_ms": 31536000000}),
    ("wait-false-timeout-max", {"wait": False, "wait_timeout_ms": 60000}),
    ("100-steps", {"steps": 100}),
]


@pytest.mark.parametrize("opts", [g[1] for g in GOOD], ids=[g[0] for g in GOOD])
def test_boundary_values_accepted(dtxd, participant, opts):
    opts = dict(opts)
    nsteps = opts.pop("steps", 1)
    body = saga([step(participant, f"s{i}") for i in range(nsteps)], **{"retry": None, **opts})
    r = dtxd.create(body)
    assert r.status == 201, r
    t = dtxd.txn(r.body["gid"])
    assert len(t["branches"]) == nsteps
    for k in ("gid", "retry", "request_timeout_ms", "timeout_ms"):
        if k in opts:
            assert t[k] == opts[k], (k, t[k])


def test_defaults_filled_in(dtxd, participant):
    r = dtxd.create(saga([step(participant, "s1")], retry=None))
    assert r.status == 201, r
    t = dtxd.txn(r.body["gid"])
    assert t["retry"] == {"initial_interval_ms": 100, "max_interval_ms": 30000, "limit": 10}
    assert t["request_timeout_ms"] == 10000
    assert t["timeout_ms"] == 0


def test_generated_gid(dtxd, participant):
    gids = set()
    for _ in range(3):
        r = dtxd.create(saga([step(participant, "s1")]))
        assert r.status == 201, r
        assert GID_RE.match(r.body["gid"]), r.body["gid"]
        assert dtxd.txn(r.body["gid"])["gid"] == r.body["gid"]
        gids.add(r.body["gid"])
    assert len(gids) == 3


def test_flags_set_defaults(dtxd_factory, participant):
    d = dtxd_factory(
        "--retry-initial-ms", "20", "--retry-max-ms", "300", "--retry-limit", "3", "--request-timeout-ms", "1234"
    )
    participant.script("/s1", [500])
    r = d.create(saga([step(participant, "s1")], retry=None))
    assert r.status == 201, r
    gid = r.body["gid"]
    t = d.txn(gid)
    assert t["retry"] == {"initial_interval_ms": 20, "max_interval_ms": 300, "limit": 3}
    assert t["request_timeout_ms"] == 1234
    assert d.wait_final(gid)["status"] == "failed"
    assert participant.count("/s1") == 3 + 1


def test_max_steps_flag(dtxd_factory, participant):
    d = dtxd_factory("--max-steps", "3")
    r = d.create(saga([step(participant, f"s{i}") for i in range(4)]))
    assert_error(r, 400, "too_many_steps", "steps")
    r = d.create(saga([step(participant, f"s{i}") for i in range(3)]))
    assert r.status == 201, r


def test_max_wait_flag(dtxd_factory, participant):
    d = dtxd_factory("--max-wait-ms", "1000")
    r = d.create(saga([step(participant, "s1")], wait=True, wait_timeout_ms=1001))
    assert_error(r, 400, "invalid_value", "wait_timeout_ms")
    r = d.create(saga([step(participant, "s1")], wait=True, wait_timeout_ms=1000))
    assert r.status == 201, r


# ---------------------------------------------------------------- body cap


def body_of_size(participant, size):
    """A valid create body of exactly size bytes."""
    body = saga([step(participant, "s1", "")])
    base = len(json.dumps(body).encode())
    assert size >= base
    body["steps"][0]["payload"] = "x" * (size - base)
    raw = json.dumps(body).encode()
    assert len(raw) == size
    return raw


def test_body_over_cap_413(dtxd_factory, participant):
    d = dtxd_factory("--max-body", "4096")
    r = d.post("/v1/transactions", raw=body_of_size(participant, 4097))
    assert_error(r, 413, "body_too_large")
    r = d.post("/v1/transactions", raw=body_of_size(participant, 20000), chunked=True)
    assert_error(r, 413, "body_too_large")
    r = d.post("/v1/transactions", raw=body_of_size(participant, 4096))
    assert r.status == 201, r
    assert d.wait_final(r.body["gid"])["status"] == "succeeded"


def raw_exchange(d, head, body=b"", *, shut=True):
    """Send head and body on a fresh connection without looking at the
    answer first (as libcurl and dtxctl do), then read it to the end."""
    with socket.create_connection(("127.0.0.1", d.port), timeout=15) as s:
        s.sendall(head + body)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def test_413_reaches_a_client_that_sends_its_whole_body(dtxd_factory, participant):
    """A body over the cap with its Content-Length is read and dropped
    before the 413 (closing with it unread would reset the connection under
    a client still writing, which then sees "broken pipe" instead of the
    error); a client that waits for 100 Continue gets the 413 before sending
    anything."""
    d = dtxd_factory("--max-body", "65536")
    body = body_of_size(participant, 600000)
    head = (b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n" % len(body))
    for _ in range(10):
        out = raw_exchange(d, head + b"\r\n", body)
        assert out.startswith(b"HTTP/1.1 413"), out[:200]
        assert b'"body_too_large"' in out
    out = raw_exchange(d, head + b"Expect: 100-continue\r\n\r\n", shut=False)
    assert out.startswith(b"HTTP/1.1 413"), out[:200]  # no 100 Continue first
    assert d.list().body["transactions"] == []
    assert d.get("/healthz").status == 200


def test_default_body_cap_is_1mib(dtxd, participant):
    r = dtxd.post("/v1/transactions", raw=body_of_size(participant, 1024 * 1024 + 1), timeout=30)
    assert_error(r, 413, "body_too_large")
    assert dtxd.list().body["transactions"] == []
    r = dtxd.post("/v1/transactions", raw=body_of_size(participant, 1024 * 1024), timeout=30)
    assert r.status == 201, r


# ---------------------------------------------------------------- 404 / 405


@pytest.mark.parametrize("path", ["/v1/transactions/no-such-gid", "/", "/v1", "/v2/transactions", "/v1/nothing"])
def test_not_found(dtxd, path):
    assert_error(dtxd.get(path), 404, "not_found")


@pytest.mark.parametrize(
    "method,path",
    [
        ("DELETE", "/v1/transactions"),
        ("PUT", "/v1/transactions"),
        ("PATCH", "/v1/transactions"),
        ("POST", "/v1/transactions/{gid}"),
        ("DELETE", "/v1/transactions/{gid}"),
        ("PUT", "/v1/transactions/{gid}"),
        ("POST", "/healthz"),
    ],
)
def test_method_not_allowed(dtxd, participant, method, path):
    gid = new_gid("m")
    assert dtxd.create(saga([step(participant, "s1")], gid=gid)).status == 201
    r = dtxd.request(method, path.format(gid=gid), raw=b"{}")
    assert_error(r, 405, "method_not_allowed")
    assert dtxd.txn(gid)["gid"] == gid


# ---------------------------------------------------------------- idempotent create


def test_same_gid_same_body_returns_existing(dtxd, participant):
    gid = new_gid("idem")
    body = saga([step(participant, "s1", {"a": 1, "b": [1, 2]}), step(participant, "s2")], gid=gid, timeout_ms=60000)
    r1 = dtxd.create(dict(body, wait=True))
    assert r1.status == 201, r1
    assert r1.body["status"] == "succeeded"

    # whitespace differs, wait options differ: still the same transaction
    raw = json.dumps(dict(body, wait=False, wait_timeout_ms=5000), indent=3).encode()
    for attempt in (json.dumps(body).encode(), raw, json.dumps(dict(body, wait=True)).encode()):
        r = dtxd.post("/v1/transactions", raw=attempt)
        assert r.status == 200, r
        assert r.body == dtxd.txn(gid)
    time.sleep(0.2)
    assert participant.count("/s1") == 1 and participant.count("/s2") == 1


def test_same_gid_while_running_returns_current_state(dtxd, participant):
    participant.script("/s1", [("block", 200)])
    gid = new_gid("idemrun")
    body = saga([step(participant, "s1")], gid=gid)
    r1 = dtxd.create(body)
    assert r1.status == 201, r1
    participant.wait_calls("/s1")
    r2 = dtxd.create(body)
    assert r2.status == 200, r2
    assert r2.body["gid"] == gid and r2.body["status"] == "submitted"
    participant.release("/s1")
    assert dtxd.wait_final(gid)["status"] == "succeeded"
    assert participant.count("/s1") == 1


CONFLICTS = [
    ("payload", lambda b: b["steps"][0].update(payload={"a": 2})),
    ("action-url", lambda b: b["steps"][0].update(action=b["steps"][0]["action"] + "x")),
    ("compensate-url", lambda b: b["steps"][0].update(compensate=b["steps"][0]["compensate"] + "x")),
    ("extra-step", lambda b: b["steps"].append(dict(b["steps"][0]))),
    ("retry", lambda b: b["retry"].update(limit=b["retry"]["limit"] + 1)),
    ("request-timeout", lambda b: b.update(request_timeout_ms=999)),
    ("timeout", lambda b: b.update(timeout_ms=12345)),
]


@pytest.mark.parametrize("change", [c[1] for c in CONFLICTS], ids=[c[0] for c in CONFLICTS])
def test_same_gid_different_body_conflicts(dtxd, participant, change):
    gid = new_gid("conf")
    body = saga([step(participant, "s1", {"a": 1})], gid=gid, request_timeout_ms=5000)
    r = dtxd.create(dict(body, wait=True))
    assert r.status == 201, r
    before = dtxd.txn(gid)
    other = copy.deepcopy(body)
    change(other)
    r = dtxd.create(other)
    assert_error(r, 409, "gid_conflict")
    assert dtxd.txn(gid) == before
    time.sleep(0.1)
    assert participant.count() == 1


# ---------------------------------------------------------------- listing


def list_all(d, **params):
    """Follow next_cursor; returns (gids, pages)."""
    gids, pages, cursor = [], [], None
    for _ in range(100):
        r = d.list(cursor=cursor, **params)
        assert r.status == 200, r
        assert set(r.body) >= {"transactions", "next_cursor"}, r
        pages.append([t["gid"] for t in r.body["transactions"]])
        gids += pages[-1]
        cursor = r.body["next_cursor"]
        if cursor is None:
            return gids, pages
        assert isinstance(cursor, str) and cursor, r
    raise AssertionError("pagination does not end")


def test_list_filters_limit_cursor(dtxd, participant):
    r = dtxd.list()
    assert r.status == 200 and r.body == {"transactions": [], "next_cursor": None}, r

    gids = [f"list-{i}-{new_gid('x')}" for i in range(7)]
    failing = {gids[1], gids[4]}
    for g in gids:
        if g in failing:
            participant.script("/s2", [409], gid=g)
        r = dtxd.create(saga([step(participant, "s1"), step(participant, "s2")], gid=g, wait=True))
        assert r.status == 201, r
    newest_first = list(reversed(gids))

    r = dtxd.list()
    assert r.status == 200, r
    assert [t["gid"] for t in r.body["transactions"]] == newest_first
    assert r.body["next_cursor"] is None
    for t in r.body["transactions"]:
        assert set(t) >= {"gid", "type", "status", "needs_attention", "created_at", "updated_at", "finished_at", "branch_count"}
        assert t["type"] == "saga"
        assert t["status"] == ("failed" if t["gid"] in failing else "succeeded")
        assert t["needs_attention"] is False
        assert t["branch_count"] == 2
        assert t["finished_at"] is not None

    got, pages = list_all(dtxd, limit=3)
    assert got == newest_first
    assert [len(p) for p in pages] == [3, 3, 1]

    got, pages = list_all(dtxd, limit=1)
    assert got == newest_first and len(pages) == 7

    assert list_all(dtxd, status="failed")[0] == [g for g in newest_first if g in failing]
    got, pages = list_all(dtxd, status="succeeded", limit=2)
    assert got == [g for g in newest_first if g not in failing]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert list_all(dtxd, type="saga")[0] == newest_first
    assert list_all(dtxd, type="saga", status="failed", limit=1)[0] == [g for g in newest_first if g in failing]
    for st in ("prepared", "submitted", "aborting"):
        assert list_all(dtxd, status=st)[0] == []
    assert list_all(dtxd, limit=1000)[0] == newest_first


def test_list_shows_running_transactions(dtxd, participant):
    participant.script("/s1", [("block", 200)])
    done = dtxd.create(saga([step(participant, "d1")], wait=True))
    assert done.status == 201 and done.body["status"] == "succeeded", done
    r = dtxd.create(saga([step(participant, "s1")]))
    assert r.status == 201, r
    gid = r.body["gid"]
    participant.wait_calls("/s1")
    l = dtxd.list(status="submitted")
    assert [t["gid"] for t in l.body["transactions"]] == [gid]
    assert l.body["transactions"][0]["finished_at"] is None
    participant.release("/s1")
    dtxd.wait_final(gid)
    assert [t["gid"] for t in dtxd.list(status="succeeded").body["transactions"]] == [gid, done.body["gid"]]


def test_list_default_limit_50(dtxd, participant):
    for i in range(55):
        assert dtxd.create(saga([step(participant, "s1")], gid=f"dl-{i:03d}")).status == 201
    r = dtxd.list()
    assert r.status == 200, r
    assert [t["gid"] for t in r.body["transactions"]] == [f"dl-{i:03d}" for i in range(54, 4, -1)]
    assert r.body["next_cursor"] is not None
    r = dtxd.list(cursor=r.body["next_cursor"])
    assert [t["gid"] for t in r.body["transactions"]] == [f"dl-{i:03d}" for i in range(4, -1, -1)]
    assert r.body["next_cursor"] is None


@pytest.mark.parametrize(
    "query,field",
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=", "limit"),
        ("status=bogus", "status"),
        ("status=SUCCEEDED", "status"),
        ("type=bogus", "type"),
        ("cursor=not-a-cursor%20%21", "cursor"),
    ],
)
def test_list_bad_query(dtxd, query, field):
    assert_error(dtxd.get("/v1/transactions?" + query), 400, "invalid_value", field)


# ---------------------------------------------------------------- operational


def test_healthz(dtxd):
    r = dtxd.get("/healthz")
    assert r.status == 200, r
    assert r.body == {"status": "ok"}
    assert r.headers.get("content-type", "").startswith("application/json")


OPTIONS = [
    "--listen",
    "--data-dir",
    "--log-level",
    "--retry-initial-ms",
    "--retry-max-ms",
    "--retry-limit",
    "--request-timeout-ms",
    "--max-body",
    "--max-steps",
    "--max-wait-ms",
    "--retention",
    "--segment-size",
    "--help",
]


def test_help_lists_every_option(dtxd_bin):
    p = subprocess.run([str(dtxd_bin), "--help"], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p
    text = (p.stdout + p.stderr).decode(errors="replace")
    missing = [o for o in OPTIONS if not re.search(re.escape(o) + r"\b", text)]
    assert not missing, f"--help does not mention {missing}:\n{text}"


@pytest.mark.parametrize(
    "args,mention",
    [
        (["--no-such-flag"], "no-such-flag"),
        (["--log-level", "loud"], "log-level"),
        (["--max-body", "lots"], "max-body"),
        (["--retry-limit", "-1"], "retry-limit"),
        (["--listen", "not-an-address"], "listen"),
    ],
)
def test_bad_command_line_exits_nonzero(dtxd_bin, tmp_path, args, mention):
    cmd = [str(dtxd_bin), "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d")]
    if args[0] == "--listen":
        cmd = [str(dtxd_bin), "--data-dir", str(tmp_path / "d")]
    cmd += args
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"dtxd {args} kept running instead of refusing the command line")
    assert p.returncode != 0, p
    err = p.stderr.decode(errors="replace")
    assert mention in err, err


def test_configured_from_environment(dtxd_factory, participant):
    d = dtxd_factory(use_env=True)  # only DTX_LISTEN and DTX_DATA_DIR, no flags
    r = d.create(saga([step(participant, "s1")], wait=True))
    assert r.status == 201 and r.body["status"] == "succeeded", r
    assert any(d.data_dir.iterdir()), "nothing written to DTX_DATA_DIR"


LOGFMT = re.compile(r'^ts=\S+ level=(debug|info|warn|error|fatal) msg=("([^"\\]|\\.)*"|\S+)( |$)')


def log_lines(d):
    return [l for l in d.log_text().splitlines() if l and not l.startswith("=== start")]


def test_logs_are_logfmt_on_stderr(dtxd, participant):
    participant.script("/s2", [500, 409])
    assert dtxd.create(saga([step(participant, "s1"), step(participant, "s2")], wait=True)).status == 201
    assert dtxd.post("/v1/transactions", raw=b"{").status == 400
    lines = log_lines(dtxd)
    assert lines
    bad = [l for l in lines if not LOGFMT.match(l)]
    assert not bad, bad[:5]


def test_log_level_filters(dtxd_factory, participant):
    d = dtxd_factory("--log-level", "warn")
    assert d.create(saga([step(participant, "s1")], wait=True)).status == 201
    assert d.term() == 0
    lines = log_lines(d)
    assert not [l for l in lines if re.search(r"\blevel=(debug|info)\b", l)], lines[:5]
