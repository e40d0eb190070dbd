"""pytest fixtures for the Strata end-to-end suite.

Fixtures
--------
broker          function-scoped, fresh data dir, default settings.
broker_factory  function-scoped factory: broker_factory(overrides={...}, ...)
                returns a started Broker; all are torn down after the test.
shared_broker   one broker per test module, for cheap tests that only use
                their own uniquely-named topics.
admin           confluent-kafka AdminClient for `broker`.
topic           a unique topic name (not yet created).
cluster_factory function-scoped factory: cluster_factory(n=3, overrides={...},
                racks=[...], roles=[...], start=True) returns a started
                cluster.Cluster; every node is torn down after the test.
cluster         a started 3-node cluster (each node broker and controller).

Environment
-----------
STRATA_BIN      path to the broker binary (default target/release/strata).
STRATA_E2E_TIMEOUT  default per-test timeout in seconds (default 60).
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from pathlib import Path

import pytest

from cluster import Cluster
from helpers import BROKERS_KEY, Broker, make_admin, register_broker


# --------------------------------------------------------------------------
# broker log tail in failure reports
# --------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for b in item.stash.get(BROKERS_KEY, []):
            running = "running" if b.running else f"exited rc={b.proc.returncode if b.proc else None}"
            rep.sections.append(
                (f"strata broker log tail ({b.log_path}, {running})", b.log_tail(80))
            )


# --------------------------------------------------------------------------
# responses the broker could not encode fail the test that caused them
# --------------------------------------------------------------------------

# How much of each broker log has been checked already (a module's shared broker serves many
# tests; each is held to the lines written while it ran).
_LOG_CHECKED: dict[Path, int] = {}


def _unencodable_lines(log_path: Path) -> list[str]:
    try:
        with open(log_path, "rb") as f:
            f.seek(_LOG_CHECKED.get(log_path, 0))
            new = f.read()
            _LOG_CHECKED[log_path] = f.tell()
    except FileNotFoundError:
        return []
    return [line for line in new.decode("utf-8", "replace").splitlines() if "cannot encode" in line]


@pytest.fixture(autouse=True)
def _no_unencodable_responses(request):
    """Every response a broker builds must be encodable for the version the client asked; a
    broker that cannot encode one closes the client's connection and logs `cannot encode`. Such a
    line in any broker log of the test fails the test, whether or not the client noticed."""
    yield
    bad = []
    for b in request.node.stash.get(BROKERS_KEY, []):
        bad += _unencodable_lines(Path(b.log_path))
    assert not bad, "the broker could not encode responses:\n" + "\n".join(bad)


# --------------------------------------------------------------------------
# per-test timeout (SIGALRM; no extra plugin needed)
# --------------------------------------------------------------------------


class TestTimeout(Exception):
    __test__ = False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    marker = item.get_closest_marker("timeout")
    seconds = int(marker.args[0]) if marker else int(os.environ.get("STRATA_E2E_TIMEOUT", "60"))

    def _alarm(signum, frame):
        raise TestTimeout(f"test exceeded its {seconds}s timeout")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture
def broker_factory(tmp_path: Path, request):
    brokers: list[Broker] = []

    def make(overrides=None, start=True, **kw) -> Broker:
        b = Broker(tmp_path / f"broker{len(brokers)}", overrides=overrides, **kw)
        brokers.append(b)
        register_broker(request.node, b)
        if start:
            b.start()
        return b

    yield make
    for b in brokers:
        b.close()


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


@pytest.fixture(scope="module")
def _module_broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("shared-broker"), name="shared-broker")
    try:
        b.start()
    except BaseException:
        b.kill()
        raise
    yield b
    b.close()


@pytest.fixture
def shared_broker(_module_broker, request) -> Broker:
    register_broker(request.node, _module_broker)
    if not _module_broker.running:
        pytest.fail(f"shared broker died earlier in this module; log tail:\n{_module_broker.log_tail()}")
    return _module_broker


@pytest.fixture
def admin(broker):
    return make_admin(broker.bootstrap)


@pytest.fixture
def cluster_factory(tmp_path: Path, request):
    clusters: list[Cluster] = []

    def make(n: int = 3, overrides=None, start: bool = True, **kw) -> Cluster:
        c = Cluster(tmp_path / f"cluster{len(clusters)}", n=n, overrides=overrides, **kw)
        clusters.append(c)
        for node in c.nodes:
            register_broker(request.node, node)
        if start:
            c.start()
        return c

    yield make
    for c in clusters:
        c.close()


@pytest.fixture
def cluster(cluster_factory) -> Cluster:
    return cluster_factory(3)


@pytest.fixture
def topic(request) -> str:
    base = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name).strip("-.")[:60]
    return f"{base}-{uuid.uuid4().hex[:8]}"
