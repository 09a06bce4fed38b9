"""dtxctl, the command line on top of libdtx, against the real dtxd: every
command, its table and --json output, its exit code for each class of error
(usage, refused, not found, unreachable / not the API, failed, still
running), and bad input files. The tcc/2pc/msg flows also run libdtx's own
live test (tests/libdtx/test_client_live.c) against this dtxd.

The binaries: $DTXCTL (default <repo>/build/dtxctl) and, for the live test,
<repo>/build/tests/libdtx/test_client_live (or $DTX_CLIENT_LIVE)."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from dtxtest import FAST_RETRY, TS_RE, free_port, new_gid, saga, step, wait_until

REPO = Path(__file__).resolve().parents[2]

EXIT_OK, EXIT_USAGE, EXIT_REFUSED, EXIT_NOT_FOUND, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_FAILED, EXIT_STILL_RUNNING = 5, 6

LIST_HEADER = ["GID", "TYPE", "STATUS", "ATTENTION", "CREATED", "BRANCHES"]


@pytest.fixture
def dtxctl_bin():
    path = Path(os.environ.get("DTXCTL") or REPO / "build" / "dtxctl")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"dtxctl not found at {path}: build it with `make build/dtxctl` or set DTXCTL", pytrace=False)
    return path


@pytest.fixture
def ctl(dtxctl_bin, dtxd):
    """run(*args, input=None, url=<dtxd>, env=None) -> CompletedProcess (text)."""

    def run(*args, input=None, url=..., env=None, timeout=60):
        cmd = [str(dtxctl_bin)]
        if url is ...:
            url = f"http://{dtxd.listen}"
        if url is not None:
            cmd += ["--url", url]
        e = {k: v for k, v in os.environ.items() if k != "DTX_URL"}
        e.update(env or {})
        return subprocess.run(
            cmd + [str(a) for a in args], input=input, capture_output=True, text=True, env=e, timeout=timeout
        )

    return run


def write_json(tmp_path, body, name=None):
    p = tmp_path / (name or f"{new_gid('f')}.json")
    p.write_text(body if isinstance(body, str) else json.dumps(body, indent=2))
    return p


def one_error_line(r):
    """stderr is exactly one line naming dtxctl; return it."""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("dtxctl: "), lines
    return lines[0]


def assert_error(r, exit_code, *mentions):
    assert r.returncode == exit_code, (r.returncode, r.stdout, r.stderr)
    line = one_error_line(r)
    for m in mentions:
        assert m in line, (m, line)
    assert r.stdout == "", r.stdout
    return line


def table(text):
    """Rows of an aligned table (the first row is the header): every column
    starts at the same offset in every row; cells are split on those offsets."""
    lines = [l for l in text.splitlines() if l.strip()]
    header = lines[0]
    # a header cell may contain one space ("LAST ERROR"): columns are 2+ spaces apart
    starts = [0] + [m.end() for m in re.finditer(r"\S {2,}(?=\S)", header)]
    rows = []
    for line in lines:
        assert line == line.rstrip(), f"trailing spaces: {line!r}"
        cells = []
        for i, s in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else len(line)
            if s > 0 and s <= len(line):
                assert line[s - 1] == " ", f"column {i} not aligned in {line!r}"
            cells.append(line[s:end].strip())
        rows.append(cells)
    return rows


def show_fields(text):
    """The 'key: value' block at the top of `show`."""
    block = text.split("\n\n", 1)[0]
    out = {}
    for line in block.splitlines():
        k, v = line.split(":", 1)
        out[k.strip()] = v.strip()
    return out


def show_branches(text):
    parts = text.split("\n\n", 1)
    return table(parts[1]) if len(parts) > 1 else None


def saga_file(tmp_path, p, gid=None, names=("debit", "credit"), **opts):
    body = saga([step(p, n, {"n": i}) for i, n in enumerate(names)], gid=gid, **opts)
    return write_json(tmp_path, body), body


# ---------------------------------------------------------------- usage


def test_help_documents_commands_and_exit_codes(ctl):
    for args in (["--help"], ["-h"], ["help"], ["list", "--help"]):
        r = ctl(*args)
        assert r.returncode == 0, r
        assert r.stderr == ""
        for word in ("submit", "list", "show", "retry", "abort", "check", "--url", "--json",
                     "DTX_URL"):
            assert word in r.stdout, word
        codes = dict(re.findall(r"^\s+(\d)\s+(.+)$", r.stdout, re.M))
        assert set(codes) == {"0", "1", "2", "3", "4", "5", "6", "7"}, codes
        assert "attention" in codes["7"]
        assert "usage" in codes["1"]
        assert "refused" in codes["2"]
        assert "no such transaction" in codes["3"]
        assert "reach" in codes["4"]
        assert "failed" in codes["5"]


@pytest.mark.parametrize(
    "args, mention",
    [
        ([], "no command"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["list", "--frob"], "unknown option '--frob'"),
        (["show"], "show: expected one GID"),
        (["show", "a", "b"], "show: expected one GID"),
        (["retry"], "retry: expected one GID"),
        (["abort"], "abort: expected one GID"),
        (["submit"], "submit: expected one FILE"),
        (["list", "extra"], "unexpected argument 'extra'"),
        (["list", "--limit", "0"], "--limit"),
        (["list", "--limit", "1001"], "--limit"),
        (["list", "--limit", "x"], "--limit"),
        (["list", "--limit"], "--limit: expected a value"),
        (["--timeout", "-5", "list"], "--timeout"),
        (["--timeout=abc", "list"], "--timeout"),
        (["list", "--wait"], "--wait"),
        (["show", "--status", "failed", "g"], "--status"),
        (["show", "a/b"], "gid"),
        (["show", "x" * 129], "gid"),
    ],
)
def test_usage_errors_exit_1(ctl, args, mention):
    r = ctl(*args)
    assert_error(r, EXIT_USAGE, mention)


def test_bad_url_is_a_usage_error(ctl):
    for url in ("localhost:7788", "ftp://x", ""):
        r = ctl("list", url=url)
        assert_error(r, EXIT_USAGE, "--url")


# ---------------------------------------------------------------- submit


def test_submit_saga_prints_the_transaction(ctl, dtxd, participant, tmp_path):
    gid = new_gid("sub")
    path, body = saga_file(tmp_path, participant, gid=gid)
    r = ctl("submit", path)
    assert r.returncode == EXIT_OK, r
    assert r.stderr == ""
    f = show_fields(r.stdout)
    assert f["gid"] == gid
    assert f["type"] == "saga"
    assert f["status"] in ("submitted", "succeeded")
    assert f["branches"] == "2"
    assert TS_RE.match(f["created"])
    rows = show_branches(r.stdout)
    assert rows[0] == ["BRANCH", "STATUS", "OP", "ATTEMPTS", "URL", "LAST ERROR"]
    assert [row[0] for row in rows[1:]] == ["1", "", "2", ""]
    assert [row[2] for row in rows[1:]] == ["action", "compensate"] * 2
    assert rows[1][4] == participant.url("/debit")
    assert rows[2][4] == participant.url("/debit-undo")
    assert dtxd.wait_final(gid)["status"] == "succeeded"
    assert participant.count("/debit", gid=gid) == 1


def test_submit_json_prints_the_coordinators_answer(ctl, dtxd, participant, tmp_path):
    gid = new_gid("subj")
    path, body = saga_file(tmp_path, participant, gid=gid, wait=True)
    r = ctl("--json", "submit", path)
    assert r.returncode == EXIT_OK, r
    out = json.loads(r.stdout)
    assert out == dtxd.txn(gid)  # with wait: already final, nothing changes any more
    assert out["status"] == "succeeded"
    assert [b["payload"] for b in out["branches"]] == [{"n": 0}, {"n": 1}]


def test_submit_reads_stdin(ctl, dtxd, participant):
    gid = new_gid("stdin")
    body = saga([step(participant, "a")], gid=gid)
    r = ctl("submit", "-", "--json", input=json.dumps(body))
    assert r.returncode == EXIT_OK, r
    assert json.loads(r.stdout)["gid"] == gid
    assert dtxd.wait_final(gid)["status"] == "succeeded"


def test_submit_same_file_twice_is_idempotent(ctl, dtxd, participant, tmp_path):
    gid = new_gid("idem")
    path, _ = saga_file(tmp_path, participant, gid=gid)
    assert ctl("submit", path).returncode == EXIT_OK
    dtxd.wait_final(gid)
    r = ctl("--json", "submit", path)
    assert r.returncode == EXIT_OK, r
    assert json.loads(r.stdout)["status"] == "succeeded"
    assert participant.count("/debit", gid=gid) == 1


def test_submit_wait_succeeded(ctl, participant, tmp_path):
    participant.script("/debit", [("sleep", 0.3, 200)])
    path, _ = saga_file(tmp_path, participant)
    r = ctl("submit", "--wait", path)
    assert r.returncode == EXIT_OK, r
    f = show_fields(r.stdout)
    assert f["status"] == "succeeded"
    assert TS_RE.match(f["finished"])


def test_submit_wait_failed_exits_5(ctl, dtxd, participant, tmp_path):
    participant.script("/credit", 409)
    gid = new_gid("fail")
    path, _ = saga_file(tmp_path, participant, gid=gid)
    r = ctl("submit", "--wait", path)
    assert r.returncode == EXIT_FAILED, r
    assert show_fields(r.stdout)["status"] == "failed"
    rows = show_branches(r.stdout)
    credit = [row for row in rows if row[0] == "2"][0]
    assert credit[1] == "compensated"  # a refused step is compensated too
    assert credit[5] != "-" and "409" in credit[5]
    # without --wait, a saga still running is no failure
    path2, _ = saga_file(tmp_path, participant)
    assert ctl("submit", path2).returncode == EXIT_OK


def test_submit_wait_timeout_exits_6(ctl, dtxd, participant, tmp_path):
    participant.script("/debit", [("block", 200)])
    gid = new_gid("slow")
    path, _ = saga_file(tmp_path, participant, gid=gid)
    r = ctl("submit", "--wait", "--wait-timeout", "300", path)
    participant.release()
    assert r.returncode == EXIT_STILL_RUNNING, r
    line = one_error_line(r)
    assert gid in line and "submitted" in line
    assert dtxd.wait_final(gid)["status"] == "succeeded"


def test_submit_missing_file(ctl, tmp_path):
    r = ctl("submit", tmp_path / "nope.json")
    assert_error(r, EXIT_USAGE, "cannot open", "nope.json")


@pytest.mark.parametrize(
    "text, mention",
    [
        ("", "invalid JSON"),
        ("{\"type\": \"saga\",", "line 1"),
        ("{\n  \"type\": \"saga\"\n  \"steps\": []\n}", "line 3"),
        ("[1, 2]", "not a JSON object"),
        ("\"saga\"", "invalid JSON"),
        ("{\"type\": \"saga\", \"type\": \"tcc\"}", "duplicate"),
    ],
    ids=["empty", "truncated", "missing-comma", "array", "string", "duplicate-key"],
)
def test_submit_invalid_json_file_exits_1(ctl, dtxd, tmp_path, text, mention):
    path = write_json(tmp_path, text)
    r = ctl("submit", path)
    assert_error(r, EXIT_USAGE, str(path), mention)
    assert dtxd.list().body["transactions"] == []


@pytest.mark.parametrize(
    "body, code, field",
    [
        ({"type": "saga"}, "missing_field", "steps"),
        ({"type": "saga", "steps": [{"action": "http://127.0.0.1:9/a"}]}, "missing_field", "steps[0].compensate"),
        ({"type": "nope"}, "invalid_type", "type"),
        ({"type": "saga", "steps": [], "colour": 1}, None, None),
        ({"type": "tcc", "gid": "a b"}, "invalid_value", "gid"),
        ({"type": "msg", "steps": [{"action": "http://127.0.0.1:9/a"}]}, "missing_field", "check"),
    ],
    ids=["no-steps", "no-compensate", "bad-type", "unknown-or-empty", "bad-gid", "msg-no-check"],
)
def test_submit_refused_body_exits_2(ctl, dtxd, tmp_path, body, code, field):
    r = ctl("submit", write_json(tmp_path, body))
    line = assert_error(r, EXIT_REFUSED, "HTTP 400")
    if code is not None:
        assert f"code {code}" in line
        assert f"field {field}" in line


def test_submit_gid_conflict_exits_2(ctl, dtxd, participant, tmp_path):
    gid = new_gid("conf")
    path, _ = saga_file(tmp_path, participant, gid=gid)
    assert ctl("submit", path).returncode == EXIT_OK
    other, _ = saga_file(tmp_path, participant, gid=gid, names=("other",))
    r = ctl("submit", other)
    assert_error(r, EXIT_REFUSED, "HTTP 409", "code gid_conflict", "field gid")


def test_submit_body_too_large_exits_2(ctl, dtxd, participant, tmp_path):
    body = saga([step(participant, "a", {"blob": "x" * (1024 * 1024 + 10)})])
    r = ctl("submit", write_json(tmp_path, body))
    assert_error(r, EXIT_REFUSED, "HTTP 413", "body_too_large")


# ---------------------------------------------------------------- list


def test_list_table(ctl, dtxd, participant, tmp_path):
    participant.script("/hang", [("block", 200)])
    done, running = new_gid("done"), new_gid("run")
    dtxd.create(saga([step(participant, "a"), step(participant, "b")], gid=done, wait=True))
    dtxd.create(saga([step(participant, "hang")], gid=running))
    tcc = dtxd.create({"type": "tcc"}).body["gid"]
    r = ctl("list")
    participant.release()
    assert r.returncode == EXIT_OK, r
    assert r.stderr == ""
    rows = table(r.stdout)
    assert rows[0] == LIST_HEADER
    by_gid = {row[0]: row for row in rows[1:]}
    assert [row[0] for row in rows[1:]] == [tcc, running, done]  # newest first
    assert by_gid[done][1:3] == ["saga", "succeeded"]
    assert by_gid[done][3] == "no"
    assert TS_RE.match(by_gid[done][4])
    assert by_gid[done][5] == "2"
    assert by_gid[running][1:3] == ["saga", "submitted"]
    assert by_gid[tcc][1:3] == ["tcc", "prepared"]
    assert by_gid[tcc][5] == "0"
    assert "next page" not in r.stdout


def test_list_json_is_the_api_page(ctl, dtxd, participant):
    for _ in range(3):
        dtxd.create(saga([step(participant, "a")], wait=True))
    r = ctl("list", "--json")
    assert r.returncode == EXIT_OK, r
    assert json.loads(r.stdout) == dtxd.list().body


def test_list_empty(ctl):
    r = ctl("list")
    assert r.returncode == EXIT_OK, r
    assert table(r.stdout) == [LIST_HEADER]


def test_list_filters_limit_and_cursor(ctl, dtxd, participant):
    participant.script("/bad", 409)
    ok = [dtxd.create(saga([step(participant, "a")], wait=True)).body["gid"] for _ in range(3)]
    bad = dtxd.create(saga([step(participant, "bad")], wait=True)).body["gid"]
    tcc = dtxd.create({"type": "tcc"}).body["gid"]

    def gids(*args):
        r = ctl("list", *args)
        assert r.returncode == EXIT_OK, r
        return [row[0] for row in table(r.stdout.split("\n\nnext page")[0])[1:]]

    assert gids("--status", "failed") == [bad]
    assert gids("--status=succeeded") == ok[::-1]
    assert gids("--type", "tcc") == [tcc]
    assert gids("--type", "saga", "--status", "prepared") == []
    r = ctl("list", "--limit", "2")
    assert r.returncode == EXIT_OK
    m = re.search(r"^next page: dtxctl list --cursor (\S+)$", r.stdout, re.M)
    assert m, r.stdout
    first = gids("--limit", "2")
    assert first == [tcc, bad]
    second = gids("--limit", "2", "--cursor", m.group(1))
    assert second == [ok[2], ok[1]]
    page = json.loads(ctl("--json", "list", "--limit", "2").stdout)
    assert page["next_cursor"] == m.group(1)


@pytest.mark.parametrize(
    "args, field",
    [(["--status", "bogus"], "status"), (["--type", "xa"], "type"), (["--cursor", "abc"], "cursor")],
)
def test_list_bad_filter_exits_2(ctl, args, field):
    r = ctl("list", *args)
    assert_error(r, EXIT_REFUSED, "HTTP 400", "code invalid_value", f"field {field}")


# ---------------------------------------------------------------- show


def test_show_table(ctl, dtxd, participant):
    gid = new_gid("show")
    dtxd.create(saga([step(participant, "a", {"x": 1}), step(participant, "b")], gid=gid, wait=True))
    r = ctl("show", gid)
    assert r.returncode == EXIT_OK, r
    f = show_fields(r.stdout)
    t = dtxd.txn(gid)
    assert f == {
        "gid": gid,
        "type": "saga",
        "status": "succeeded",
        "needs attention": "no",
        "created": t["created_at"],
        "updated": t["updated_at"],
        "finished": t["finished_at"],
        "retry": "initial 20 ms, max 200 ms, limit 10",
        "timeouts": "request 10000 ms, transaction none",
        "branches": "2",
    }
    rows = show_branches(r.stdout)
    assert rows == [
        ["BRANCH", "STATUS", "OP", "ATTEMPTS", "URL", "LAST ERROR"],
        ["1", "succeeded", "action", "1", participant.url("/a"), "-"],
        ["", "", "compensate", "0", participant.url("/a-undo"), ""],
        ["2", "succeeded", "action", "1", participant.url("/b"), "-"],
        ["", "", "compensate", "0", participant.url("/b-undo"), ""],
    ]


def test_show_concurrent_saga_has_after_column(ctl, dtxd, participant):
    gid = new_gid("dag")
    s = [step(participant, "a"), step(participant, "b"), step(participant, "c")]
    s[2]["after"] = [1, 2]
    dtxd.create(saga(s, gid=gid, wait=True))
    rows = show_branches(ctl("show", gid).stdout)
    assert rows[0] == ["BRANCH", "STATUS", "AFTER", "OP", "ATTEMPTS", "URL", "LAST ERROR"]
    assert [row[2] for row in rows[1:] if row[0]] == ["-", "-", "1,2"]


def test_show_json_is_the_api_object(ctl, dtxd, participant):
    gid = new_gid("showj")
    dtxd.create(saga([step(participant, "a")], gid=gid, wait=True))
    r = ctl("show", "--json", gid)
    assert r.returncode == EXIT_OK, r
    assert json.loads(r.stdout) == dtxd.txn(gid)
    assert r.stdout.endswith("}\n")


def test_show_failed_exits_5(ctl, dtxd, participant):
    participant.script("/a", 409)
    gid = new_gid("showf")
    dtxd.create(saga([step(participant, "a")], gid=gid, wait=True))
    r = ctl("show", gid)
    assert r.returncode == EXIT_FAILED, r
    assert show_fields(r.stdout)["status"] == "failed"
    assert ctl("show", "--json", gid).returncode == EXIT_FAILED


def test_show_needs_attention(ctl, dtxd, participant):
    participant.script("/a", 409)
    participant.script("/a-undo", 500)
    gid = new_gid("attn")
    retry = {"initial_interval_ms": 10, "max_interval_ms": 20, "limit": 1}
    dtxd.create(saga([step(participant, "a")], gid=gid, retry=retry))
    dtxd.wait_txn(gid, lambda t: t["needs_attention"], what="needs_attention")
    f = show_fields(ctl("show", gid).stdout)
    assert f["needs attention"] == "yes"
    assert f["status"] == "aborting"
    rows = table(ctl("list").stdout)
    assert [row[3] for row in rows if row[0] == gid] == ["yes"]


def test_show_not_found_exits_3(ctl):
    r = ctl("show", "no-such-gid")
    assert_error(r, EXIT_NOT_FOUND, "no-such-gid", "HTTP 404", "code not_found", "field gid")


# ---------------------------------------------------------------- retry / abort


def test_retry_running_saga(ctl, dtxd, participant):
    participant.script("/a", [500, 200])
    gid = new_gid("retry")
    slow = {"initial_interval_ms": 60000, "max_interval_ms": 60000, "limit": 5}
    dtxd.create(saga([step(participant, "a")], gid=gid, retry=slow))
    participant.wait_calls("/a", 1, gid=gid)
    r = ctl("retry", gid)
    assert r.returncode == EXIT_OK, r
    assert show_fields(r.stdout)["gid"] == gid
    assert dtxd.wait_final(gid, timeout=10)["status"] == "succeeded"


def test_retry_json(ctl, dtxd, participant):
    participant.script("/a", [500, 200])
    gid = new_gid("retryj")
    slow = {"initial_interval_ms": 60000, "max_interval_ms": 60000, "limit": 5}
    dtxd.create(saga([step(participant, "a")], gid=gid, retry=slow))
    participant.wait_calls("/a", 1, gid=gid)
    r = ctl("--json", "retry", gid)
    assert r.returncode == EXIT_OK, r
    assert json.loads(r.stdout)["gid"] == gid


def test_retry_finished_exits_2(ctl, dtxd, participant):
    gid = new_gid("retryf")
    dtxd.create(saga([step(participant, "a")], gid=gid, wait=True))
    r = ctl("retry", gid)
    assert_error(r, EXIT_REFUSED, "HTTP 409", "code invalid_state")


def test_retry_not_found_exits_3(ctl):
    assert_error(ctl("retry", "nope"), EXIT_NOT_FOUND, "code not_found")


def test_abort_prepared_tcc(ctl, dtxd):
    gid = dtxd.create({"type": "tcc", "retry": FAST_RETRY}).body["gid"]
    r = ctl("abort", gid)
    assert r.returncode == EXIT_OK, r
    assert show_fields(r.stdout)["status"] in ("aborting", "failed")
    assert dtxd.wait_final(gid)["status"] == "failed"
    again = ctl("--json", "abort", gid)  # already failed: answered as it is
    assert again.returncode == EXIT_OK, again
    assert json.loads(again.stdout)["status"] == "failed"


def test_abort_wait_running_saga(ctl, dtxd, participant):
    participant.script("/b", [("block", 200)])
    gid = new_gid("abort")
    dtxd.create(saga([step(participant, "a"), step(participant, "b")], gid=gid))
    participant.wait_calls("/b", 1, gid=gid)
    r = ctl("abort", "--wait", "--wait-timeout", "1000", gid, "--json")
    participant.release()
    assert r.returncode == EXIT_OK, r
    t = json.loads(r.stdout)
    assert t["status"] in ("aborting", "failed")
    assert dtxd.wait_final(gid)["status"] == "failed"
    assert participant.count("/a-undo", gid=gid) >= 1


def test_abort_succeeded_exits_2(ctl, dtxd, participant):
    gid = new_gid("aborts")
    dtxd.create(saga([step(participant, "a")], gid=gid, wait=True))
    r = ctl("abort", gid)
    assert_error(r, EXIT_REFUSED, "HTTP 409", "code invalid_state")


def test_abort_not_found_exits_3(ctl):
    assert_error(ctl("abort", "nope"), EXIT_NOT_FOUND, "HTTP 404", "code not_found")


# ---------------------------------------------------------------- reaching the coordinator


@pytest.mark.parametrize("args", [["list"], ["show", "g"], ["retry", "g"], ["abort", "g"], ["submit", "FILE"]])
def test_unreachable_exits_4(ctl, tmp_path, args):
    args = [str(write_json(tmp_path, {"type": "tcc"})) if a == "FILE" else a for a in args]
    r = ctl(*args, url=f"http://127.0.0.1:{free_port()}")
    assert_error(r, EXIT_UNREACHABLE, "could not reach the coordinator", "127.0.0.1")


def test_dtx_url_environment(ctl, dtxd):
    gid = dtxd.create({"type": "tcc"}).body["gid"]
    r = ctl("show", gid, url=None, env={"DTX_URL": f"http://{dtxd.listen}"})
    assert r.returncode == EXIT_OK, r
    assert show_fields(r.stdout)["gid"] == gid
    # --url wins over the environment
    r = ctl("show", gid, env={"DTX_URL": "http://127.0.0.1:1"})
    assert r.returncode == EXIT_OK, r
    # without either, the default port of a local dtxd (nothing listens there in tests)
    r = ctl("show", gid, url=None, env={"DTX_URL": f"http://127.0.0.1:{free_port()}"})
    assert r.returncode == EXIT_UNREACHABLE


def test_not_the_api_exits_4(ctl, participant):
    participant.script("/v1/transactions", ("json", 200, {"hello": "world"}))
    participant.script("/v1/transactions/g", ("json", 200, [1, 2]))
    r = ctl("list", url=participant.url("").rstrip("/"))
    assert_error(r, EXIT_UNREACHABLE, "not the API", "transactions")
    r = ctl("show", "g", url=participant.url(""))
    assert_error(r, EXIT_UNREACHABLE, "not the API")


def test_request_timeout_exits_4(ctl, participant):
    participant.script("/v1/transactions/g", ("sleep", 3.0, 200))
    r = ctl("--timeout", "200", "show", "g", url=participant.url(""))
    assert_error(r, EXIT_UNREACHABLE, "could not reach the coordinator")


# ---------------------------------------------------------------- tcc / 2pc / msg


def register(dtxd, gid, body):
    r = dtxd.post(f"/v1/transactions/{gid}/branches", body)
    assert r.status in (200, 201), r
    return r.body["branch"]


def test_tcc_prepared_then_submitted(ctl, dtxd, participant, tmp_path):
    gid = new_gid("tcc")
    r = ctl("submit", write_json(tmp_path, {"type": "tcc", "gid": gid, "retry": FAST_RETRY}))
    assert r.returncode == EXIT_OK, r
    assert show_fields(r.stdout)["status"] == "prepared"
    assert show_branches(r.stdout) is None
    for name in ("stock", "pay"):
        register(dtxd, gid, {"confirm": participant.url(f"/{name}/confirm"),
                             "cancel": participant.url(f"/{name}/cancel"), "payload": {"n": name}})
    rows = show_branches(ctl("show", gid).stdout)
    assert rows[0] == ["BRANCH", "STATUS", "OP", "ATTEMPTS", "URL", "LAST ERROR"]
    assert [(row[0], row[2]) for row in rows[1:]] == [("1", "confirm"), ("", "cancel"), ("2", "confirm"), ("", "cancel")]
    assert rows[1][4] == participant.url("/stock/confirm")
    r = dtxd.post(f"/v1/transactions/{gid}/submit", {"wait": True, "wait_timeout_ms": 10000}, timeout=30)
    assert r.status == 200, r
    r = ctl("show", gid)
    assert r.returncode == EXIT_OK, r
    assert show_fields(r.stdout)["status"] == "succeeded"
    rows = show_branches(r.stdout)
    assert [row[3] for row in rows[1:]] == ["1", "0", "1", "0"]
    # once submitted, a tcc can no longer be aborted
    assert_error(ctl("abort", gid), EXIT_REFUSED, "HTTP 409", "code invalid_state")


def test_2pc_prepared_then_aborted(ctl, dtxd, participant, tmp_path):
    gid = new_gid("xa")
    r = ctl("--json", "submit", write_json(tmp_path, {"type": "2pc", "gid": gid, "retry": FAST_RETRY}))
    assert r.returncode == EXIT_OK, r
    assert json.loads(r.stdout)["status"] == "prepared"
    register(dtxd, gid, {"branch": "db1", "prepare": participant.url("/p"), "commit": participant.url("/c"),
                         "rollback": participant.url("/r")})
    rows = show_branches(ctl("show", gid).stdout)
    assert [(row[0], row[2]) for row in rows[1:]] == [("db1", "prepare"), ("", "commit"), ("", "rollback")]
    r = ctl("abort", "--wait", gid)
    assert r.returncode == EXIT_OK, r
    assert dtxd.wait_final(gid)["status"] == "failed"
    assert participant.count("/c", gid=gid) == 0
    assert ctl("show", gid).returncode == EXIT_FAILED


def test_msg_prepared_then_aborted(ctl, dtxd, participant, tmp_path):
    gid = new_gid("msg")
    body = {"type": "msg", "gid": gid, "check": participant.url("/check"), "timeout_ms": 600000,
            "steps": [{"action": participant.url("/deliver"), "payload": {"n": 1}}], "retry": FAST_RETRY}
    r = ctl("submit", "--wait", write_json(tmp_path, body))
    assert r.returncode == EXIT_OK, r  # prepared: nothing to wait for
    f = show_fields(r.stdout)
    assert f["status"] == "prepared"
    assert f["check"] == participant.url("/check")
    rows = show_branches(r.stdout)
    assert rows[1][:3] == ["1", "pending", "action"]
    r = ctl("abort", gid)
    assert r.returncode == EXIT_OK, r
    assert dtxd.wait_final(gid)["status"] == "failed"
    assert participant.count("/deliver", gid=gid) == 0


def test_libdtx_client_live(dtxd, participant_factory):
    """libdtx's C client end to end (create, get, list, wait, register, Try,
    submit, abort, retry, errors) against this dtxd: see test_client_live.c."""
    binary = Path(os.environ.get("DTX_CLIENT_LIVE") or REPO / "build" / "tests" / "libdtx" / "test_client_live")
    if not binary.is_file():
        pytest.fail(f"{binary} not found: build it with `make {binary.relative_to(REPO)}`", pytrace=False)
    p = participant_factory("P")
    p.script("/fail/try", 409)
    p.script("/fail/action", 409)
    p.script("/slow/action", ("sleep", 1.0, 200))
    env = dict(os.environ, DTX_TEST_URL=f"http://{dtxd.listen}", DTX_TEST_PARTICIPANT=p.url("").rstrip("/"))
    r = subprocess.run([str(binary)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED" in r.stdout + r.stderr and "SKIPPED" not in r.stdout + r.stderr


def test_check_lists_what_needs_attention(ctl, dtxd, participant):
    """check: exit 0 and a plain line when nothing needs attention; exit 7 and
    exactly the flagged transactions (table or --json) once a compensation
    has run out of retries."""
    p = participant
    r = ctl("check")
    assert r.returncode == 0, r
    assert r.stdout.strip() == "no transaction needs attention"
    ok = dtxd.create(saga([step(p, "fine")], wait=True)).body["gid"]
    p.script("/b", [409])
    p.script("/a-undo", [500])
    body = saga([step(p, "a"), step(p, "b")],
                retry={"initial_interval_ms": 5, "max_interval_ms": 60000, "limit": 1})
    stuck = dtxd.create(body).body["gid"]
    dtxd.wait_txn(stuck, lambda t: t["needs_attention"], what="needs_attention")
    r = ctl("check")
    assert r.returncode == 7, r
    assert stuck in r.stdout and ok not in r.stdout
    r = ctl("--json", "check")
    assert r.returncode == 7, r
    page = json.loads(r.stdout)
    assert [t["gid"] for t in page["transactions"]] == [stuck]
    # the API filter behind it
    assert [t["gid"] for t in dtxd.list(needs_attention="true").body["transactions"]] == [stuck]
    assert stuck not in [t["gid"] for t in dtxd.list(needs_attention="false").body["transactions"]]
    r = dtxd.get("/v1/transactions?needs_attention=yes")
    assert r.status == 400 and r.body["error"]["field"] == "needs_attention", r
    assert ctl("check", "extra").returncode == 1
