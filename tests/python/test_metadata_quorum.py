"""DescribeQuorum (API 55, KIP-595/KIP-836): `kafka-metadata-quorum.sh describe` against Strata.

Every node answers with the Raft leader's view (Kafka's brokers forward the request to the
controller): the same leader, epoch and voters wherever it is asked; broker-only nodes are
observers. Offsets are Raft log indexes + 1, so the high watermark is `/cluster`'s
`quorum.committed_index` + 1. A single node answers as a quorum of one.

Requests are encoded with kafka-python's protocol classes and sent to one chosen node.
"""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest
from kafka.protocol.admin import DescribeQuorumRequest, DescribeQuorumResponse

from cluster import Cluster, ClusterNode
from helpers import create_topic, make_admin, read_frame, wait_until

METADATA_TOPIC = "__cluster_metadata"
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3


def describe_quorum(
    port: int, topics: dict[str, list[int]] | None = None, version: int = 2, timeout: float = 20.0
):
    """One DescribeQuorum request to 127.0.0.1:port (default: `__cluster_metadata`-0); the
    decoded response."""
    topics = topics if topics is not None else {METADATA_TOPIC: [0]}
    T = DescribeQuorumRequest.TopicData
    req = DescribeQuorumRequest(
        version=version,
        topics=[T(topic_name=t, partitions=[T.PartitionData(partition_index=p) for p in ps]) for t, ps in topics.items()],
    )
    req.with_header(correlation_id=5, client_id="strata-quorum-test")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(bytes(req.encode(header=True, framed=True)))
        return DescribeQuorumResponse.decode(read_frame(s), version=version, header=True)


def quorum_partition(port: int, version: int = 2):
    """`__cluster_metadata`-0 of a DescribeQuorum answered without error."""
    resp = describe_quorum(port, version=version)
    assert resp.error_code == NONE, resp
    [topic] = resp.topics
    assert topic.topic_name == METADATA_TOPIC
    [p] = topic.partitions
    assert p.partition_index == 0
    assert p.error_code == NONE, p
    return p


def http_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def check_offsets(p) -> None:
    """No replica is past the leader's end, and the high watermark sits between what a
    majority of voters holds and the leader's end."""
    ends = {r.replica_id: r.log_end_offset for r in p.current_voters}
    leader_end = ends[p.leader_id]
    assert 0 < p.high_watermark <= leader_end, p
    for r in list(p.current_voters) + list(p.observers):
        assert r.log_end_offset <= leader_end, p
    holding = sum(1 for end in ends.values() if end >= p.high_watermark)
    assert holding > len(ends) // 2, f"a majority holds the high watermark: {p}"


def agreed_view(nodes: list[ClusterNode], expect_leader: int, timeout: float = 30.0) -> dict:
    """DescribeQuorum of each of `nodes` once all name `expect_leader`; {node id: partition}."""
    views: dict[int, object] = {}

    def all_agree():
        views.clear()
        for n in nodes:
            views[n.node_id] = quorum_partition(n.port)
        return all(v.leader_id == expect_leader for v in views.values())

    wait_until(all_agree, timeout=timeout, interval=0.2, msg=lambda: f"every node names leader {expect_leader}: {views}")
    return dict(views)


@pytest.mark.cluster
@pytest.mark.timeout(180)
def test_every_node_reports_the_leaders_quorum_and_failover_raises_the_epoch(cluster_factory, topic):
    c: Cluster = cluster_factory(4, roles=["broker,controller"] * 3 + ["broker"])
    leader = c.active_controller()
    views = agreed_view(c.nodes, leader.node_id)
    epochs = {v.leader_epoch for v in views.values()}
    assert len(epochs) == 1, views
    for asked, p in views.items():
        assert sorted(r.replica_id for r in p.current_voters) == [1, 2, 3], (asked, p)
        assert [r.replica_id for r in p.observers] == [4], (asked, p)
        check_offsets(p)

    # KIP-836: every replica answers the leader's heartbeats, so each has fetch and caught-up
    # times (the leader's own are the time of the answer).
    def heard_from_all():
        p = quorum_partition(c.node(4).port)
        return all(
            r.last_fetch_timestamp > 0 and r.last_caught_up_timestamp > 0
            for r in list(p.current_voters) + list(p.observers)
        )

    wait_until(heard_from_all, timeout=20, interval=0.2, msg="every replica has fetch and caught-up times")

    # The high watermark is /cluster's committed index + 1 (read after, so at least as far).
    hw = quorum_partition(leader.port).high_watermark
    committed = http_json(f"{leader.http_url}/cluster")["quorum"]["committed_index"]
    assert hw <= committed + 1, (hw, committed)

    # v0 and v1 decode too (v0 without timestamps).
    for version in (0, 1):
        p = quorum_partition(c.node(4).port, version=version)
        assert p.leader_id == leader.node_id

    # Metadata commits move the high watermark.
    admin = make_admin(c.bootstrap)
    create_topic(admin, topic, partitions=1, replication_factor=3)
    wait_until(
        lambda: quorum_partition(leader.port).high_watermark > hw,
        timeout=20,
        msg="the high watermark passes the topic's creation",
    )

    old_epoch = epochs.pop()
    leader.kill()
    survivors = c.live_nodes()
    new_leader = c.active_controller(timeout=60)
    assert new_leader.node_id != leader.node_id
    for asked, p in agreed_view(survivors, new_leader.node_id).items():
        assert p.leader_epoch > old_epoch, (asked, p)
        assert sorted(r.replica_id for r in p.current_voters) == [1, 2, 3], "a dead voter is still a voter"
        check_offsets(p)
        [dead] = [r for r in p.current_voters if r.replica_id == leader.node_id]
        assert (dead.last_fetch_timestamp, dead.last_caught_up_timestamp) == (-1, -1), (asked, p)


@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_other_partitions_are_unknown_everywhere(cluster_factory):
    c: Cluster = cluster_factory(3)
    for asked in (
        {"orders": [0]},
        {METADATA_TOPIC: [1]},
        {METADATA_TOPIC: [0, 1]},
        {METADATA_TOPIC: [0], "orders": [0]},
    ):
        resp = describe_quorum(c.nodes[0].port, topics=asked)
        assert resp.error_code == NONE
        got = {(t.topic_name, p.partition_index): p.error_code for t in resp.topics for p in t.partitions}
        assert got == {(t, p): UNKNOWN_TOPIC_OR_PARTITION for t, ps in asked.items() for p in ps}, (asked, resp)


def test_single_node_is_a_quorum_of_one(broker):
    status = http_json(f"{broker.http_url}/cluster")
    node_id = status["node_id"]
    p = quorum_partition(broker.port)
    assert p.leader_id == node_id
    assert p.leader_epoch == 1
    assert [r.replica_id for r in p.current_voters] == [node_id]
    assert list(p.observers) == []
    [me] = p.current_voters
    assert me.log_end_offset == p.high_watermark
    # The metadata offset only grows; it is read around the request.
    assert status["metadata_offset"] <= p.high_watermark <= http_json(f"{broker.http_url}/cluster")["metadata_offset"]
    assert me.last_fetch_timestamp > 0
