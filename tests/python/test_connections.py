"""Many idle connections cost the broker neither threads nor the ability to serve others."""

from __future__ import annotations

import resource

import pytest

from helpers import consume_all, create_topic, flush_all, make_admin, make_producer, raw_connect, wait_until
from kwire import RawConn

IDLE_CONNECTIONS = 2000


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line")


@pytest.mark.timeout(90)
def test_thousands_of_idle_connections_do_not_stall_others(broker, topic):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE_CONNECTIONS + 200:
        pytest.skip(f"file descriptor limit {hard} is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, IDLE_CONNECTIONS + 500)), hard))
    threads_before = _threads(broker.pid)
    idle = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            idle.append(raw_connect(broker))
        # Every connection is accepted and answered.
        wait_until(
            lambda: f"strata_connections_open {IDLE_CONNECTIONS}" in broker.metrics(),
            30,
            msg=f"{IDLE_CONNECTIONS} open connections in /metrics",
        )
        with RawConn("127.0.0.1", broker.port) as conn:
            assert conn.api_versions()
        # A normal client is served while they idle.
        create_topic(make_admin(broker.bootstrap), topic, partitions=1)
        p = make_producer(broker.bootstrap, acks="all")
        for i in range(100):
            p.produce(topic, key=b"%d" % i, value=b"x")
        flush_all(p)
        assert len(consume_all(broker.bootstrap, topic, [0])[0]) == 100
        threads_after = _threads(broker.pid)
        # Threads come from the runtime's pools, not from connections.
        assert threads_after < threads_before + 64, (threads_before, threads_after)
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: "strata_connections_open 0" in broker.metrics() or "strata_connections_open 1" in broker.metrics(), 30)
    assert broker.running
