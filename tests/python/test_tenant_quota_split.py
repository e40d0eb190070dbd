"""A tenant's quota is cluster-wide (issue 17, section 3): on a 3-node cluster, the brokers
split a tenant's produce quota by demand, through the rates they report in their heartbeats
to the active controller. Load spread over the three brokers gets the quota once, not three
times; load on one broker gets most of it, not a third.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka.admin import NewTopic
import pytest

from helpers import make_admin, make_producer
from test_sasl import MECHANISMS, add_scram
from test_tenants import call

QUOTA = 300_000  # bytes per second, cluster-wide
SASL_CLUSTER = {
    "sasl.enabled.mechanisms": MECHANISMS,
    "sasl.plain.allow.plaintext": "true",
    "sasl.mechanism.inter.broker.protocol": "PLAIN",
    "listener.name.sasl_plaintext.plain.sasl.jaas.config":
        'org.apache.kafka.common.security.plain.PlainLoginModule required '
        'username="admin" password="admin-secret";',
    # A short window, so that the rate and the shares settle within seconds.
    "quota.window.num": 3,
}


def client(node, **extra) -> dict:
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": "pat", "sasl.password": "pat-secret", **extra}


def produce_for(bootstrap: str, topic: str, partition: int, seconds: float, acked: list[int]) -> None:
    p = make_producer(bootstrap, **client(None), **{"linger.ms": 20, "batch.size": 200_000})
    value = b"q" * 10_000
    deadline = time.monotonic() + seconds

    def done(err, msg):
        if err is None:
            acked.append(len(msg.value()))

    while time.monotonic() < deadline:
        try:
            p.produce(topic, value=value, partition=partition, on_delivery=done)
        except BufferError:
            pass
        p.poll(0.01)
    p.flush(30)


def rate_over(bootstrap: str, placements: list[tuple[str, int]], warmup: float, seconds: float) -> float:
    """Bytes per second acknowledged to the tenant's producers (one per partition), counted
    after `warmup`."""
    acked: list[list[int]] = [[] for _ in placements]
    threads = [threading.Thread(target=produce_for, args=(bootstrap, t, p, warmup + seconds, acked[i]))
               for i, (t, p) in enumerate(placements)]
    for t in threads:
        t.start()
    time.sleep(warmup)
    before = sum(sum(a) for a in acked)
    time.sleep(seconds)
    after = sum(sum(a) for a in acked)
    for t in threads:
        t.join()
    return (after - before) / seconds


@pytest.mark.timeout(240)
def test_a_tenant_quota_is_split_across_brokers_by_demand(cluster_factory):
    c = cluster_factory(3, overrides=SASL_CLUSTER, listeners=["SASL_PLAINTEXT"], extra_args=add_scram())
    node = c.nodes[0]
    status, created = call(node, "POST", "/v1/tenants", {"name": "spread", "quotas": {"producer_byte_rate": QUOTA}})
    assert status == 201, created
    assert call(node, "POST", "/v1/tenants/spread/users", {"name": "pat", "password": "pat-secret"})[0] == 201
    admin = make_admin(c.bootstrap, **client(None))
    # One partition led by each broker (replication factor 1, placed by hand).
    topic = NewTopic("load", num_partitions=3, replica_assignment=[[1], [2], [3]])
    admin.create_topics([topic])["load"].result(timeout=30)

    spread = rate_over(c.bootstrap, [("load", 0), ("load", 1), ("load", 2)], warmup=8, seconds=12)
    one = rate_over(c.bootstrap, [("load", 0)], warmup=8, seconds=12)
    shares = [l for l in c.nodes[0].metrics().splitlines() if l.startswith("strata_tenant_quota_share{")]
    assert shares and float(shares[0].split()[-1]) > 0.5, f"broker 1's share: {shares}"
    print(f"spread over three brokers: {spread / QUOTA:.2f}x the quota; on one: {one / QUOTA:.2f}x")
    # Unsplit, each broker would allow the whole quota (3x); split evenly, one broker a third.
    assert spread < 1.6 * QUOTA, f"spread load got {spread / QUOTA:.2f}x the quota"
    assert one > 0.6 * QUOTA, f"load on one broker got only {one / QUOTA:.2f}x the quota"
