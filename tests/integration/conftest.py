"""
Fixtures of the dtx integration tests.

  dtxd_bin              path of the dtxd binary: $DTXD or <repo>/build/dtxd
  dtxd_factory(*args, start=True, use_env=False, env=None)
                        a new Dtxd (dtxtest.py) on 127.0.0.1, a free port and a
                        data dir under tmp_path; extra command-line args as given
  dtxd                  one started Dtxd with default options
  participant_factory(name)
                        a new Participant (real HTTP service, scriptable per path)
  participant           one Participant named "P"

On failure the report gets the tail of every dtxd's stderr and every
participant's call log of the test.
"""

import os
from pathlib import Path

import pytest

from dtxtest import Dtxd, Participant

REPO = Path(__file__).resolve().parents[2]


def _dtxd_path():
    return Path(os.environ.get("DTXD") or REPO / "build" / "dtxd")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: starts and restarts RabbitMQ or PostgreSQL nodes of its own, or runs a fault "
        "schedule; run once, in the normal pass (the sanitizer pass deselects them: -m 'not slow')")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for d in getattr(item, "_dtxd_instances", []):
        rep.sections.append((f"dtxd stderr tail ({d.log_path})", d.log_tail(120)))
    for p in getattr(item, "_participants", []):
        rep.sections.append((f"participant {p.name} (port {p.port}) calls", p.dump(120)))


@pytest.fixture
def dtxd_bin():
    path = _dtxd_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"dtxd binary not found at {path}: build it with `make` or set DTXD", pytrace=False)
    return path


@pytest.fixture
def dtxd_factory(request, tmp_path, dtxd_bin):
    instances = []
    request.node._dtxd_instances = instances

    def make(*args, start=True, use_env=False, env=None):
        n = len(instances)
        d = Dtxd(
            dtxd_bin,
            tmp_path / f"data{n}",
            tmp_path / f"dtxd{n}.log",
            args=args,
            env=env,
            use_env=use_env,
        )
        instances.append(d)
        if start:
            d.start()
        return d

    yield make
    reports = []
    for d in instances:
        d.cleanup()
        rep = d.sanitizer_report()
        if rep is not None:
            reports.append(f"{d.log_path}:\n{rep}")
    if reports:
        pytest.fail("a sanitizer reported in dtxd's log:\n" + "\n\n".join(reports), pytrace=False)


@pytest.fixture
def dtxd(dtxd_factory):
    return dtxd_factory()


@pytest.fixture
def participant_factory(request):
    made = []
    request.node._participants = made

    def make(name=None):
        p = Participant(name or f"P{len(made)}")
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def participant(participant_factory):
    return participant_factory("P")
