"""Partition reassignment: AlterPartitionReassignments (key 45) and
ListPartitionReassignments (key 46), KIP-455, as `kafka-reassign-partitions.sh` and
`Admin.alterPartitionReassignments` send them.

A reassignment grows the replica set to target + removed replicas, the new replicas copy the
log from the leader and join the ISR, and the controller then drops the removed replicas (and
hands leadership over if the leader was one of them); a removed broker deletes its log.

Cluster scenarios (marked `cluster`):
- a partition with data on [1, 2] (its log start moved inside a batch by DeleteRecords) moves
  to [2, 3] under idempotent acks=all load: in progress while the new replica is paused
  (SIGSTOP) it is listed and Metadata shows the grown set; once resumed the move completes,
  leadership leaves broker 1 and the producer follows, no acknowledged record is lost, the
  replicas are byte-identical and broker 1 deletes its log;
- a move is replaced by another and cancelled; every error code of a bad request.

    STRATA_BIN=target/release/strata python -m pytest -q tests/python/test_reassignments.py
"""

from __future__ import annotations

import logging
import socket
import time

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic
from kafka.protocol.admin import (
    AlterPartitionReassignmentsRequest,
    AlterPartitionReassignmentsResponse,
    ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse,
)

from cluster import Cluster
from helpers import consume_all, make_admin, produce_acked, read_frame, topic_ready, wait_until
from replica_verifier import read_partition_log, verify_replicas
from test_replication import AckedLoad, assert_none_failed

log = logging.getLogger("strata-e2e.reassignments")

UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_REPLICATION_FACTOR = 38
INVALID_REPLICA_ASSIGNMENT = 39
NO_REASSIGNMENT_IN_PROGRESS = 85

OVERRIDES = {"replica.lag.time.max.ms": 3000, "auto.leader.rebalance.enable": "false"}

CANCEL = None  # a partition's replicas in a request: None cancels its reassignment


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _call(port: int, req, response_cls, version: int, timeout: float = 15.0):
    req.with_header(correlation_id=11, client_id="strata-reassign-test")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(bytes(req.encode(header=True, framed=True)))
        return response_cls.decode(read_frame(s), version=version, header=True)


def alter(
    port: int,
    targets: dict[str, dict[int, list[int] | None]],
    version: int = 0,
    allow_rf_change: bool = True,
) -> tuple[int, dict[str, dict[int, int]]]:
    """One AlterPartitionReassignments request; returns (top-level error code,
    {topic: {partition: error code}})."""
    T = AlterPartitionReassignmentsRequest.ReassignableTopic
    P = T.ReassignablePartition
    fields = {
        "timeout_ms": 15000,
        "topics": [
            T(name=t, partitions=[P(partition_index=p, replicas=r) for p, r in ps.items()]) for t, ps in targets.items()
        ],
    }
    if version >= 1:
        fields["allow_replication_factor_change"] = allow_rf_change
    resp = _call(port, AlterPartitionReassignmentsRequest(version=version, **fields), AlterPartitionReassignmentsResponse, version)
    return resp.error_code, {
        r.name: {p.partition_index: p.error_code for p in r.partitions} for r in resp.responses
    }


def listed(port: int, topics: dict[str, list[int]] | None = None) -> dict[tuple[str, int], tuple[list, list, list]]:
    """ListPartitionReassignments; (topic, partition) -> (replicas, adding, removing)."""
    T = ListPartitionReassignmentsRequest.ListPartitionReassignmentsTopics
    req = ListPartitionReassignmentsRequest(
        version=0,
        timeout_ms=15000,
        topics=None if topics is None else [T(name=t, partition_indexes=ps) for t, ps in topics.items()],
    )
    resp = _call(port, req, ListPartitionReassignmentsResponse, 0)
    assert resp.error_code == 0, resp
    return {
        (t.name, p.partition_index): (list(p.replicas), list(p.adding_replicas), list(p.removing_replicas))
        for t in resp.topics
        for p in t.partitions
    }


def create_on(c: Cluster, topic: str, replicas: list[int]) -> None:
    """One partition on `replicas` (the first leads), fully in sync everywhere."""
    admin = make_admin(c.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[replicas])])[topic].result(timeout=20)
    wait_until(lambda: topic_ready(admin, topic, 1), timeout=15, msg=f"{topic} in metadata")
    c.wait_partitions(
        topic,
        lambda ps: ps[0]["leader"] == replicas[0] and sorted(ps[0]["isr"]) == sorted(replicas),
        timeout=20,
        what=f"{topic} on {replicas}",
    )


def replicas_settled(c: Cluster, topic: str, replicas: list[int], timeout: float = 30.0) -> dict:
    """Every live broker's Metadata lists exactly `replicas`, all in sync, led by one of them."""
    return c.wait_partitions(
        topic,
        lambda ps: ps[0]["replicas"] == replicas and sorted(ps[0]["isr"]) == sorted(replicas)
        and ps[0]["leader"] in replicas,
        timeout=timeout,
        what=f"replicas {replicas}, all in sync",
    )[0]


def roles(c: Cluster) -> tuple:
    """(a, b, new): `new` is not the active controller, so that pausing it never stalls
    metadata commits; a and b are the other two, in id order."""
    ctl = c.active_controller().node_id
    new = next(n for n in reversed(c.nodes) if n.node_id != ctl)
    a, b = (n for n in c.nodes if n is not new)
    return a, b, new


def batch_inside(node, topic: str) -> int:
    """An offset strictly inside a multi-record batch of `node`'s log of `topic`-0."""
    batches = read_partition_log(node.partition_dir(topic, 0)).batches
    b = next(b for b in batches if b.last_offset > b.base_offset + 1)
    return b.base_offset + 1


# --------------------------------------------------------------------------
# cluster
# --------------------------------------------------------------------------


@pytest.mark.cluster
def test_move_under_load_loses_nothing_and_hands_leadership_over(cluster_factory, topic):
    c = cluster_factory(3, overrides=OVERRIDES)
    a, b, new = roles(c)
    A, B, N = a.node_id, b.node_id, new.node_id
    create_on(c, topic, [A, B])
    produce_acked(c.bootstrap, topic, [(0, b"before-%d" % i) for i in range(3000)])
    # The log start inside a batch: a new replica must start at that batch's base, then
    # follow the leader's log start (the known gap this move used to hit).
    start = batch_inside(a, topic)
    admin = make_admin(c.bootstrap)  # kept until the answer: a dropped client cancels the call
    [(_, fut)] = admin.delete_records([TopicPartition(topic, 0, start)]).items()
    assert fut.result(timeout=15).low_watermark == start

    load = AckedLoad(c.bootstrap, topic, 1).start()
    try:
        load.wait_progress(30, what="before the move", cluster=c)
        # The new replica paused: the move cannot complete and stays observable.
        new.pause()
        try:
            assert alter(b.port, {topic: {0: [B, N]}}) == (0, {topic: {0: 0}})
            ongoing = {(topic, 0): ([B, N, A], [N], [A])}
            assert listed(b.port) == ongoing
            wait_until(lambda: listed(a.port, {topic: [0, 1]}) == ongoing, timeout=10, msg="the leader lists the move")
            states = c.partition_states(topic, b)
            assert states[0]["replicas"] == [B, N, A], states
            assert states[0]["leader"] == A and sorted(states[0]["isr"]) == sorted([A, B]), states
            load.wait_progress(20, what="while the move is in progress", cluster=c)
        finally:
            new.resume()
        t0 = time.monotonic()
        final = replicas_settled(c, topic, [B, N], timeout=40)
        log.info("move completed %.2fs after the new replica resumed: %s", time.monotonic() - t0, final)
        assert final["leader"] == B, "the leader was removed: the first in-sync target replica leads"
        assert all(listed(n.port) == {} for n in c.nodes)
        load.wait_progress(30, what=f"after leadership moved to broker {B}", cluster=c)
        wait_until(lambda: not a.partition_dir(topic, 0).exists(), timeout=15, msg=f"broker {A} deleting its replica")
    finally:
        left = load.stop()
    load.check()
    assert left == 0, f"{left} records without a delivery report; {load.summary()}"
    # The removed leader answered its waiting acks=all produces at once (NOT_LEADER), not at
    # their 30 s timeout: acknowledgements never stalled for long.
    times = sorted(at for _, _, at in load.acked.values())
    stall = max(b - a for a, b in zip(times, times[1:]))
    assert stall < 10, f"acknowledgements stalled for {stall:.1f}s"

    # Every acknowledged record above the deleted ones, once, at its offset.
    got = consume_all(c.bootstrap, topic, [0])[0]
    assert got and got[0].offset == start, f"reads start at the log start {start}, got {got[:1]}"
    where = {}
    for r in got:
        if not r.value.startswith(b"before-"):
            assert int(r.value) not in where, f"id {int(r.value)} twice"
            where[int(r.value)] = r.offset
    lost = sorted(i for i, (_, off, _) in load.acked.items() if where.get(i) != off)
    assert not lost, f"{len(lost)} acknowledged records lost or moved, e.g. {[(i, load.acked[i][:2], where.get(i)) for i in lost[:5]]}"
    assert [r.value for r in got if r.value.startswith(b"before-")] == [b"before-%d" % i for i in range(start, 3000)]
    report = verify_replicas(c, [topic], full_isr=True, partitions={topic: 1})
    assert report[f"{topic}-0"]["isr"] == sorted([B, N])
    assert_none_failed(load)


@pytest.mark.cluster
def test_replace_cancel_and_bad_requests(cluster_factory, topic):
    c = cluster_factory(3, overrides=OVERRIDES)
    a, b, new = roles(c)
    A, B, N = a.node_id, b.node_id, new.node_id
    create_on(c, topic, [A, B])
    produce_acked(c.bootstrap, topic, [(0, b"r-%d" % i) for i in range(200)])

    # Bad requests, answered per partition; nothing changes.
    for version in (0, 1):
        top, codes = alter(a.port, {topic: {7: [A, B], 0: []}, "no-such-topic": {0: [A, B]}}, version=version)
        assert top == 0
        assert codes == {
            topic: {7: UNKNOWN_TOPIC_OR_PARTITION, 0: INVALID_REPLICA_ASSIGNMENT},
            "no-such-topic": {0: UNKNOWN_TOPIC_OR_PARTITION},
        }
        for target, code in (
            ([B, B], INVALID_REPLICA_ASSIGNMENT),
            ([B, 9], INVALID_REPLICA_ASSIGNMENT),
            (CANCEL, NO_REASSIGNMENT_IN_PROGRESS),
        ):
            assert alter(a.port, {topic: {0: target}}, version=version) == (0, {topic: {0: code}}), (version, target)
    # v1 (KIP-860): a replication factor change only when allowed.
    assert alter(a.port, {topic: {0: [A, B, N]}}, version=1, allow_rf_change=False) == (
        0,
        {topic: {0: INVALID_REPLICATION_FACTOR}},
    )
    assert listed(a.port) == {} and listed(a.port, {topic: [0], "no-such-topic": [0]}) == {}
    assert c.partition_states(topic, a)[0]["replicas"] == [A, B]

    new.pause()
    try:
        assert alter(a.port, {topic: {0: [A, N]}}, version=1, allow_rf_change=False) == (0, {topic: {0: 0}})
        assert listed(a.port, {topic: [0]}) == {(topic, 0): ([A, N, B], [N], [B])}
        # Replaced: computed from the grown set; [B, A] needs no new replica and both are in
        # sync, so it completes at once (dropping N, which never caught up).
        assert alter(a.port, {topic: {0: [B, A]}}) == (0, {topic: {0: 0}})
        assert listed(a.port) == {}
        states = c.partition_states(topic, a)
        assert states[0]["replicas"] == [B, A] and states[0]["leader"] == A, states
        # A move again, then cancelled: back to the replicas before it.
        assert alter(a.port, {topic: {0: [N, B]}}) == (0, {topic: {0: 0}})
        assert listed(a.port) == {(topic, 0): ([N, B, A], [N], [A])}
        assert alter(a.port, {topic: {0: CANCEL}}) == (0, {topic: {0: 0}})
        assert listed(a.port) == {}
        assert alter(a.port, {topic: {0: CANCEL}}) == (0, {topic: {0: NO_REASSIGNMENT_IN_PROGRESS}})
    finally:
        new.resume()
    final = replicas_settled(c, topic, [B, A])
    assert final["leader"] == A, "cancelling kept the leader"
    wait_until(lambda: not new.partition_dir(topic, 0).exists(), timeout=15, msg=f"broker {N} holding no replica")
    assert [r.value for r in consume_all(c.bootstrap, topic, [0])[0]] == [b"r-%d" % i for i in range(200)]
    verify_replicas(c, [topic], full_isr=True, partitions={topic: 1})
