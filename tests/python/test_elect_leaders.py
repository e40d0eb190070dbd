"""Preferred-leader election: the ElectLeaders API (KIP-460, key 43) and the active
controller's automatic leader balancing (`auto.leader.rebalance.enable`).

When a broker stops, the partitions it led move to other replicas, and after its restart it
only follows. A preferred election gives leadership back to the first replica once that
replica is live and in the ISR: on request (ElectLeaders, as `kafka-leader-election.sh`
sends it) or, every `leader.imbalance.check.interval.seconds`, by the controller itself for
a broker with more than `leader.imbalance.per.broker.percentage` of its preferred
partitions led elsewhere.

Cluster scenarios (marked `cluster`): an RF=3 topic whose preferred leader is a node other
than the active controller; that node is stopped (SIGTERM, controlled shutdown) and
restarted; once it is back in the ISR, (a) ElectLeaders PREFERRED moves leadership back and
a second call answers ELECTION_NOT_NEEDED; (b) with a one-second check interval and a 0%
threshold the controller moves it back by itself. A single node answers
ELECTION_NOT_NEEDED, and the protocol edges (v0, every partition, unknown partitions,
unknown election type) are checked on raw frames.

    python -m pytest -q tests/python/test_elect_leaders.py
"""

from __future__ import annotations

import logging
import socket

import pytest
from confluent_kafka import ElectionType, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic
from kafka.protocol.admin import ElectLeadersRequest, ElectLeadersResponse

from cluster import NO_LEADER, Cluster, ClusterNode
from helpers import consume_all, create_topic, make_admin, produce_acked, read_frame, topic_ready, wait_until

log = logging.getLogger("strata-e2e.elect-leaders")

UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_REQUEST = 42
ELECTION_NOT_NEEDED = 84

# Followers leave the ISR quickly and nothing balances leadership unless a test asks for it.
CLUSTER_OVERRIDES = {"replica.lag.time.max.ms": 2000, "auto.leader.rebalance.enable": "false"}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def raw_elect(
    port: int,
    topic_partitions: dict[str, list[int]] | None,
    election_type: int = 0,
    version: int = 2,
    timeout: float = 10.0,
) -> tuple[int, dict[str, dict[int, int]]]:
    """One ElectLeaders request to 127.0.0.1:port. Returns (top-level error code,
    {topic: {partition: error code}}); v0 has no top-level error (0) nor election type."""
    T = ElectLeadersRequest.TopicPartitions
    fields = {
        "topic_partitions": None
        if topic_partitions is None
        else [T(topic=t, partitions=ps) for t, ps in topic_partitions.items()],
        "timeout_ms": int(timeout * 1000),
    }
    if version >= 1:
        fields["election_type"] = election_type
    req = ElectLeadersRequest(version=version, **fields)
    req.with_header(correlation_id=7, client_id="strata-elect-test")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(bytes(req.encode(header=True, framed=True)))
        resp = ElectLeadersResponse.decode(read_frame(s), version=version, header=True)
    top = resp.error_code if version >= 1 else 0
    return top, {
        r.topic: {p.partition_id: p.error_code for p in r.partition_result} for r in resp.replica_election_results
    }


def elect_preferred(bootstrap: str, partitions: list[TopicPartition] | None) -> dict[tuple[str, int], int]:
    """ElectLeaders PREFERRED through confluent-kafka's AdminClient; (topic, partition) ->
    error code (0 when a new leader was elected)."""
    admin = make_admin(bootstrap)  # kept until the answer: a dropped client cancels the call
    fut = admin.elect_leaders(ElectionType.PREFERRED, partitions)
    out = {}
    for tp, err in fut.result(timeout=20).items():
        # confluent-kafka documents KafkaException values; 2.16 gives KafkaError.
        if isinstance(err, KafkaException):
            err = err.args[0]
        assert err is None or isinstance(err, KafkaError), err
        out[(tp.topic, tp.partition)] = 0 if err is None else err.code()
    return out


def moved_away_and_back_in_sync(c: Cluster, topic: str) -> tuple[ClusterNode, int]:
    """Creates `topic` (one partition, RF=3) with a preferred leader that is not the active
    controller, stops that node (SIGTERM) so that leadership moves, produces through the new
    leader, restarts the node and waits until it is back in the ISR. Returns the preferred
    node and the leader that took over (-1 if the controller already moved it back)."""
    ctl = c.active_controller().node_id
    preferred = next(n for n in c.nodes if n.node_id != ctl)
    replicas = [preferred.node_id] + sorted(n.node_id for n in c.nodes if n is not preferred)
    admin = make_admin(c.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[replicas])], operation_timeout=15)[topic].result(timeout=20)
    wait_until(lambda: topic_ready(admin, topic, 1), timeout=15, msg=f"{topic} in metadata", ignore=(KafkaException,))
    c.wait_in_sync(topic, 1, timeout=20)
    c.wait_leaders(topic, lambda ls: ls == {0: preferred.node_id}, timeout=15, what="the preferred replica leading")
    produce_acked(c.bootstrap, topic, [(0, b"before-%d" % i) for i in range(10)])

    preferred.stop()
    others = c.others(preferred)
    moved = c.wait_leaders(
        topic,
        lambda ls: ls[0] not in (NO_LEADER, preferred.node_id),
        nodes=others,
        timeout=20,
        what=f"leadership away from stopped node {preferred.node_id}",
    )[0]
    log.info("node %d stopped; partition 0 now led by %d", preferred.node_id, moved)
    produce_acked(",".join(n.bootstrap for n in others), topic, [(0, b"after-%d" % i) for i in range(10)])

    preferred.start()
    c.wait_all_unfenced(timeout=30)
    states = c.wait_partitions(
        topic,
        lambda ps: preferred.node_id in ps[0]["isr"] and ps[0]["leader"] != NO_LEADER,
        timeout=30,
        what=f"node {preferred.node_id} back in the ISR",
    )
    log.info("node %d back in the ISR: %s", preferred.node_id, states[0])
    return preferred, moved


def assert_all_records(c: Cluster, topic: str) -> None:
    want = [b"before-%d" % i for i in range(10)] + [b"after-%d" % i for i in range(10)]
    assert [r.value for r in consume_all(c.bootstrap, topic, [0])[0]] == want


# --------------------------------------------------------------------------
# single node
# --------------------------------------------------------------------------


def test_single_node_needs_no_election(broker, topic):
    create_topic(make_admin(broker.bootstrap), topic, partitions=2)
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    assert elect_preferred(broker.bootstrap, tps) == {(topic, 0): ELECTION_NOT_NEEDED, (topic, 1): ELECTION_NOT_NEEDED}
    # Every partition: those that need no election are left out of the answer.
    assert elect_preferred(broker.bootstrap, None) == {}

    for version in (0, 1, 2):
        top, results = raw_elect(broker.port, {topic: [0, 5], "no-such-topic": [0]}, version=version)
        assert top == 0, version
        assert results == {
            topic: {0: ELECTION_NOT_NEEDED, 5: UNKNOWN_TOPIC_OR_PARTITION},
            "no-such-topic": {0: UNKNOWN_TOPIC_OR_PARTITION},
        }, version
    top, results = raw_elect(broker.port, None)
    assert top == 0 and results.get(topic) == {}, results
    # Unclean: the partition has a leader.
    assert raw_elect(broker.port, {topic: [1]}, election_type=1) == (0, {topic: {1: ELECTION_NOT_NEEDED}})
    # An election type Kafka does not define fails the request, on every named partition.
    assert raw_elect(broker.port, {topic: [0]}, election_type=7) == (INVALID_REQUEST, {topic: {0: INVALID_REQUEST}})


# --------------------------------------------------------------------------
# cluster
# --------------------------------------------------------------------------


@pytest.mark.cluster
def test_elect_leaders_moves_leadership_back_to_the_preferred_replica(cluster_factory, topic):
    c = cluster_factory(3, overrides=CLUSTER_OVERRIDES)
    preferred, moved = moved_away_and_back_in_sync(c, topic)
    # Nothing balances leadership here: the replica that took over still leads.
    assert c.leaders(topic) == {0: moved}

    tp = [TopicPartition(topic, 0)]
    assert elect_preferred(c.bootstrap, tp) == {(topic, 0): 0}
    c.wait_leaders(topic, lambda ls: ls == {0: preferred.node_id}, timeout=15, what="the preferred replica leading again")
    assert preferred.partition_entry(topic, 0)["is_leader"] is True
    assert elect_preferred(c.bootstrap, tp) == {(topic, 0): ELECTION_NOT_NEEDED}
    assert elect_preferred(c.bootstrap, None) == {}
    assert_all_records(c, topic)


@pytest.mark.cluster
def test_controller_moves_leadership_back_by_itself(cluster_factory, topic):
    c = cluster_factory(
        3,
        overrides={
            **CLUSTER_OVERRIDES,
            "auto.leader.rebalance.enable": "true",
            "leader.imbalance.check.interval.seconds": 1,
            "leader.imbalance.per.broker.percentage": 0,
        },
    )
    preferred, _ = moved_away_and_back_in_sync(c, topic)
    c.wait_leaders(
        topic,
        lambda ls: ls == {0: preferred.node_id},
        timeout=15,
        what="the controller giving leadership back to the preferred replica",
    )
    assert c.wait_in_sync(topic, 1, timeout=15)[0]["leader"] == preferred.node_id
    assert elect_preferred(c.bootstrap, [TopicPartition(topic, 0)]) == {(topic, 0): ELECTION_NOT_NEEDED}
    assert_all_records(c, topic)
