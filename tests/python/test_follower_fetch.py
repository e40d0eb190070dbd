"""Fetch from the closest replica (KIP-392) on a three-node cluster with racks r1, r2, r3.

With `replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector`, the
leader of a partition answers a consumer that gives its `client.rack` with the follower in
that rack as *preferred read replica*, and librdkafka then fetches from that follower, which
serves its records below its own high watermark (read_committed: below its last stable
offset, with the aborted transactions). Each topic here has its leader on node 1 (r1) and
followers on nodes 2 (r2) and 3 (r3); the consumer is in r2.

Which broker served the records is read from `strata_consumer_fetch_bytes_total{replica=
"leader"|"follower"}` on each node's /metrics, and the leader's redirects from
`strata_fetch_preferred_read_replica_total`.

Scenarios: the rack's follower serves every record exactly once and in order (and the
protocol rules, on raw Fetch requests); a read_committed consumer through the follower sees
committed transactions and not aborted ones; without the selector the leader serves; the
follower the consumer reads from is killed and the consumer goes on from the leader.

    python -m pytest -q tests/python/test_follower_fetch.py
"""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from cluster import Cluster
from helpers import Broker, BrokerStartError, make_admin, make_consumer, produce_acked, topic_ready, wait_until
from kwire import RawConn, decode_batches

pytestmark = [pytest.mark.cluster]

log = logging.getLogger("strata-e2e.follower-fetch")

RACK_AWARE = "org.apache.kafka.common.replica.RackAwareReplicaSelector"
RACKS = ["r1", "r2", "r3"]
LEADER, FOLLOWER, OTHER = 1, 2, 3  # node ids; the consumer is in FOLLOWER's rack
CLIENT_RACK = "r2"
SELECTOR = {"replica.selector.class": RACK_AWARE}

OFFSET_OUT_OF_RANGE = 1
NOT_LEADER_OR_FOLLOWER = 6
UNKNOWN_LEADER_EPOCH = 75


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def start_cluster(cluster_factory, selector: bool = True) -> Cluster:
    return cluster_factory(3, racks=RACKS, overrides=SELECTOR if selector else {})


def create_led_by_node_1(c: Cluster, topic: str) -> None:
    """One partition, replicas [1, 2, 3] (so node 1 leads), min.insync.replicas=2; waits until
    every broker sees it led by node 1 with all three in sync."""
    admin = make_admin(c.bootstrap)
    fut = admin.create_topics(
        [NewTopic(topic, num_partitions=1, replica_assignment=[[LEADER, FOLLOWER, OTHER]], config={"min.insync.replicas": "2"})],
        operation_timeout=15,
        request_timeout=15,
    )[topic]
    fut.result(timeout=15)
    wait_until(lambda: topic_ready(admin, topic, 1), timeout=15, msg=f"{topic} in metadata", ignore=(Exception,))
    states = c.wait_in_sync(topic, 1)
    assert states[0]["leader"] == LEADER, states


def consumer_bytes(node) -> dict[str, float]:
    """{"leader": bytes, "follower": bytes} this node returned to consumers, and "redirects":
    partitions it answered with a preferred read replica."""
    out = {"leader": 0.0, "follower": 0.0, "redirects": 0.0}
    for line in node.metrics().splitlines():
        if line.startswith('strata_consumer_fetch_bytes_total{replica="leader"}'):
            out["leader"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith('strata_consumer_fetch_bytes_total{replica="follower"}'):
            out["follower"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("strata_fetch_preferred_read_replica_total "):
            out["redirects"] = float(line.rsplit(" ", 1)[1])
    return out


def wait_follower_caught_up(c: Cluster, topic: str, end: int, node_id: int = FOLLOWER) -> None:
    """The follower's own high watermark (GET /partitions) reached `end`."""
    wait_until(
        lambda: (c.node(node_id).partition_entry(topic, 0) or {}).get("high_watermark", -1) >= end,
        timeout=15,
        msg=f"node {node_id}'s high watermark of {topic} to reach {end}",
        ignore=(OSError, ValueError),
    )


class Reader:
    """A librdkafka consumer in `CLIENT_RACK` reading partition 0 of `topic` from the start."""

    def __init__(self, bootstrap: str, topic: str, **conf):
        self.c = make_consumer(
            bootstrap,
            **{
                "client.rack": CLIENT_RACK,
                "enable.partition.eof": True,
                "topic.metadata.refresh.interval.ms": 1000,
                **conf,
            },
        )
        self.c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.values: list[bytes] = []
        self.offsets: list[int] = []
        self.at_end = False

    def poll(self) -> bool:
        """One round of consume; True when the consumer reached the end of the partition."""
        for m in self.c.consume(num_messages=500, timeout=0.2):
            if m.error() is None:
                self.values.append(m.value())
                self.offsets.append(m.offset())
                self.at_end = False
            elif m.error().code() == KafkaError._PARTITION_EOF:
                self.at_end = True
            elif not m.error().retriable() and m.error().code() != KafkaError._TRANSPORT:
                raise AssertionError(f"consumer error: {m.error()}")
        return self.at_end

    def read_until(self, count: int, timeout: float = 30.0) -> list[bytes]:
        """Consume until `count` values arrived and the partition's end was reached after them."""
        wait_until(
            lambda: self.poll() and len(self.values) >= count,
            timeout,
            interval=0.0,
            msg=f"{count} records (have {len(self.values)})",
        )
        return self.values

    def close(self) -> None:
        self.c.close()


def assert_in_order_once(values: list[bytes], expected: list[bytes], offsets: list[int]) -> None:
    assert len(offsets) == len(set(offsets)), "a record was delivered twice"
    assert offsets == sorted(offsets), "records out of order"
    assert values == expected, f"got {len(values)} values, wanted {len(expected)}; first difference at " + str(
        next((i for i, (a, b) in enumerate(zip(values, expected)) if a != b), min(len(values), len(expected)))
    )


# --------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_consumer_reads_from_the_follower_in_its_rack(cluster_factory, topic):
    c = start_cluster(cluster_factory)
    create_led_by_node_1(c, topic)
    n = 3000
    expected = [b"v%d" % i for i in range(n)]
    produce_acked(c.bootstrap, topic, [(0, v) for v in expected])
    wait_follower_caught_up(c, topic, n)
    before = {node.node_id: consumer_bytes(node) for node in c.nodes}

    # The protocol, on raw Fetch requests.
    with RawConn("127.0.0.1", c.node(LEADER).port) as leader:
        sent = leader.fetch(topic, 0, 0, version=11, rack_id=CLIENT_RACK)
        assert sent["error_code"] == 0 and sent["preferred_read_replica"] == FOLLOWER, sent
        assert sent["records"] == b"", "the leader skips the read when it sends the consumer elsewhere"
        assert sent["high_watermark"] == n and sent["log_start_offset"] == 0, sent
        for rack in ("r1", "", "elsewhere"):  # the leader's own rack, none, no replica there
            here = leader.fetch(topic, 0, 0, version=11, rack_id=rack)
            assert here["preferred_read_replica"] == -1 and here["records"], (rack, here)
        assert leader.fetch(topic, 0, 0, version=10)["records"], "before v11: the leader, as always"
    with RawConn("127.0.0.1", c.node(FOLLOWER).port) as follower:
        served = follower.fetch(topic, 0, 0, version=11, rack_id=CLIENT_RACK)
        assert served["error_code"] == 0 and served["preferred_read_replica"] == -1, served
        assert served["high_watermark"] == n, served
        assert [r.value for r in decode_batches(served["records"])][:3] == expected[:3]
        epoch = c.partition_states(topic, c.node(FOLLOWER))[0]["epoch"]
        assert follower.fetch(topic, 0, 0, version=11, current_leader_epoch=epoch)["error_code"] == 0
        ahead = follower.fetch(topic, 0, 0, version=11, current_leader_epoch=epoch + 1)
        assert ahead["error_code"] == UNKNOWN_LEADER_EPOCH, f"the follower checks the leader epoch: {ahead}"
        old = follower.fetch(topic, 0, 0, version=10)
        assert old["error_code"] == NOT_LEADER_OR_FOLLOWER, f"Fetch v10 stays leader-only: {old}"
        beyond = follower.fetch(topic, 0, n + 10, version=11, rack_id=CLIENT_RACK)
        assert beyond["error_code"] == OFFSET_OUT_OF_RANGE and beyond["high_watermark"] == -1, (
            f"past the follower's log: out of range without offsets, so that the client asks the leader: {beyond}"
        )

    raw = {node.node_id: consumer_bytes(node) for node in c.nodes}
    r = Reader(c.bootstrap, topic)
    try:
        assert_in_order_once(r.read_until(n), expected, r.offsets)
    finally:
        r.close()
    after = {node.node_id: consumer_bytes(node) for node in c.nodes}
    log.info("consumer bytes before %s, after raw fetches %s, after the consumer %s", before, raw, after)
    assert after[FOLLOWER]["follower"] - raw[FOLLOWER]["follower"] >= n, "the r2 follower served the consumer"
    assert after[LEADER]["leader"] == raw[LEADER]["leader"], "the leader served the consumer no records"
    assert after[LEADER]["redirects"] > raw[LEADER]["redirects"], "the leader sent the consumer to its rack"
    assert after[OTHER]["follower"] == before[OTHER]["follower"] == 0


@pytest.mark.timeout(60)
def test_read_committed_through_the_follower(cluster_factory, topic):
    c = start_cluster(cluster_factory)
    create_led_by_node_1(c, topic)
    p = Producer({"bootstrap.servers": c.bootstrap, "transactional.id": f"txn-{topic}", "linger.ms": 5})
    p.init_transactions(30)
    expected = []
    for t in range(6):
        p.begin_transaction()
        values = [b"t%d-%d" % (t, i) for i in range(50)]
        for v in values:
            p.produce(topic, value=v, partition=0)
        if t % 2 == 0:
            p.commit_transaction(30)
            expected += values
        else:
            # In the log before the abort (abort_transaction drops what was not sent yet).
            assert p.flush(10) == 0
            p.abort_transaction(30)
    p.flush(10)
    leader_end = c.node(LEADER).partition_entry(topic, 0)["log_end_offset"]
    wait_follower_caught_up(c, topic, leader_end)
    before = consumer_bytes(c.node(FOLLOWER))

    committed = Reader(c.bootstrap, topic, **{"isolation.level": "read_committed"})
    try:
        assert_in_order_once(committed.read_until(len(expected)), expected, committed.offsets)
    finally:
        committed.close()
    after = consumer_bytes(c.node(FOLLOWER))
    assert after["follower"] > before["follower"], "the follower served the read_committed consumer"
    assert consumer_bytes(c.node(LEADER))["leader"] == 0

    uncommitted = Reader(c.bootstrap, topic, **{"isolation.level": "read_uncommitted"})
    try:
        assert len(uncommitted.read_until(300)) == 300, "aborted records are there for read_uncommitted"
    finally:
        uncommitted.close()


@pytest.mark.timeout(60)
def test_without_the_selector_the_leader_serves(cluster_factory, topic):
    c = start_cluster(cluster_factory, selector=False)
    create_led_by_node_1(c, topic)
    expected = [b"v%d" % i for i in range(500)]
    produce_acked(c.bootstrap, topic, [(0, v) for v in expected])
    with RawConn("127.0.0.1", c.node(LEADER).port) as leader:
        res = leader.fetch(topic, 0, 0, version=11, rack_id=CLIENT_RACK)
        assert res["preferred_read_replica"] == -1 and res["records"], res
    r = Reader(c.bootstrap, topic)
    try:
        assert_in_order_once(r.read_until(len(expected)), expected, r.offsets)
    finally:
        r.close()
    assert consumer_bytes(c.node(LEADER))["leader"] > 0
    for node in c.nodes:
        m = consumer_bytes(node)
        assert m["follower"] == 0 and m["redirects"] == 0, (node.node_id, m)


@pytest.mark.timeout(60)
def test_consumer_goes_back_to_the_leader_when_its_follower_dies(cluster_factory, topic):
    c = start_cluster(cluster_factory)
    create_led_by_node_1(c, topic)
    first = [b"a%d" % i for i in range(1000)]
    produce_acked(c.bootstrap, topic, [(0, v) for v in first])
    wait_follower_caught_up(c, topic, len(first))

    r = Reader(c.bootstrap, topic)
    try:
        r.read_until(len(first))
        assert consumer_bytes(c.node(FOLLOWER))["follower"] > 0, "read from the r2 follower first"
        leader_bytes = consumer_bytes(c.node(LEADER))["leader"]
        killed_at = time.monotonic()
        c.node(FOLLOWER).kill()
        # acks=all waits until the dead follower is fenced and leaves the ISR.
        second = [b"b%d" % i for i in range(1000)]
        produce_acked(c.bootstrap, topic, [(0, v) for v in second], timeout=30)
        r.read_until(len(first) + len(second), timeout=30)
        log.info("read everything %.1fs after the kill", time.monotonic() - killed_at)
        assert_in_order_once(r.values, first + second, r.offsets)
        assert consumer_bytes(c.node(LEADER))["leader"] > leader_bytes, "the leader served the rest"
    finally:
        r.close()
    # The leader names no fenced replica (nor one out of the ISR).
    states = c.wait_partitions(topic, lambda s: FOLLOWER not in s[0]["isr"], what="node 2 out of the ISR")
    assert FOLLOWER not in states[0]["isr"]
    with RawConn("127.0.0.1", c.node(LEADER).port) as leader:
        res = leader.fetch(topic, 0, 0, version=11, rack_id=CLIENT_RACK)
        assert res["preferred_read_replica"] == -1 and res["records"], res


def test_unknown_replica_selector_is_refused(tmp_path):
    b = Broker(tmp_path / "b", overrides={"replica.selector.class": "com.example.NearestSelector"})
    with pytest.raises(BrokerStartError):
        b.start(timeout=10)
    tail = b.log_tail()
    assert "com.example.NearestSelector" in tail and "RackAwareReplicaSelector" in tail, tail
