"""Tiered storage in a three-node cluster sharing one object store (issue 6).

Only a partition's leader uploads; followers read the leader's manifest and drop their own
copies of uploaded segments by local retention, so no node's disk holds the whole log. After
the leader is killed, the new leader serves the tiered records from the shared store and
goes on uploading. A follower that was away while the leader dropped segments, and a replica
a reassignment adds, start after the tier (OFFSET_MOVED_TO_TIERED_STORAGE) instead of copying
the whole log.

Run just these with `python -m pytest -q tests/python/test_tiered_cluster.py`.
"""

from __future__ import annotations

import logging

import pytest

from cluster import NO_LEADER
from helpers import consume_all, create_topic, flush_all, make_admin, make_producer, wait_until
from replica_verifier import segment_files, verify_replicas

pytestmark = [pytest.mark.cluster]

log = logging.getLogger("strata-e2e.tiered-cluster")

TASK_INTERVAL_MS = 200  # remote.log.manager.task.interval.ms: followers read the tier every 10
SEGMENT_BYTES = 16 * 1024
RECORDS = 1500
VALUE = b"x" * 100


def local_segments(node, topic: str) -> int:
    return len(segment_files(node.partition_dir(topic, 0)))


TIERED_TOPIC = {
    "remote.storage.enable": "true",
    "segment.bytes": str(SEGMENT_BYTES),
    "local.retention.bytes": "1",  # every uploaded segment goes locally as soon as it may
    "min.insync.replicas": "2",
}


def tiered_cluster(cluster_factory, tmp_path, topic: str | None):
    """Three nodes sharing one object store, and (unless None) `topic`: one partition on all
    three, tiered as TIERED_TOPIC."""
    c = cluster_factory(
        3,
        overrides={
            "remote.log.manager.task.interval.ms": TASK_INTERVAL_MS,
            "log.retention.check.interval.ms": 200,
            "replica.lag.time.max.ms": 3000,
        },
        extra_args=("--object-store", f"file://{tmp_path / 'shared-tier'}"),
    )
    if topic is not None:
        create_topic(make_admin(c.bootstrap), topic, partitions=1, replication_factor=3, config=TIERED_TOPIC)
        c.wait_in_sync(topic, 1)
    return c


def produce(c, topic: str, start: int, count: int) -> None:
    """Records keyed `start`..`start + count - 1`, idempotent, acks=all."""
    p = make_producer(c.bootstrap, **{"acks": "all", "enable.idempotence": True, "linger.ms": 5})
    for i in range(start, start + count):
        p.produce(topic, key=b"%d" % i, value=VALUE, partition=0)
    flush_all(p)


@pytest.mark.timeout(180)
def test_followers_drop_uploaded_segments_and_a_new_leader_reads_the_tier(cluster_factory, tmp_path, topic):
    c = tiered_cluster(cluster_factory, tmp_path, topic)
    produce(c, topic, 0, RECORDS)
    total_segments = RECORDS * len(VALUE) // SEGMENT_BYTES
    assert total_segments >= 8, total_segments
    counts: dict[int, int] = {}

    def every_node_dropped_uploaded_segments() -> bool:
        counts.clear()
        counts.update({n.node_id: local_segments(n, topic) for n in c.nodes})
        return all(v <= 2 for v in counts.values())

    wait_until(
        every_node_dropped_uploaded_segments,
        timeout=60,
        interval=0.5,
        msg=lambda: f"local segments per node after uploads: {counts} (of ~{total_segments})",
    )
    log.info("local segments per node after uploads: %s (of ~%d)", counts, total_segments)
    verify_replicas(c, [topic])

    leader = c.node(c.leaders(topic)[0])
    log.info("killing leader %d", leader.node_id)
    leader.kill()
    survivors = c.others(leader)
    c.wait_leaders(topic, lambda led: led.get(0) not in (None, NO_LEADER, leader.node_id), nodes=survivors, what="a new leader")
    produce(c, topic, RECORDS, 200)
    recs = consume_all(",".join(n.bootstrap for n in survivors), topic, [0], timeout=60)[0]
    keys = [int(r.key) for r in recs]
    assert keys == list(range(RECORDS + 200)), f"{len(keys)} records, first {keys[:3]}, last {keys[-3:]}"


@pytest.mark.timeout(180)
def test_follower_behind_the_leaders_local_log_starts_after_the_tier(cluster_factory, tmp_path, topic):
    """A follower away while the leader uploaded and dropped its local segments gets
    OFFSET_MOVED_TO_TIERED_STORAGE when it returns: it starts its log where the tier ends,
    fetches the rest from the leader and rejoins the ISR, with identical batches."""
    c = tiered_cluster(cluster_factory, tmp_path, topic)
    leader = c.node(c.leaders(topic)[0])
    follower = c.others(leader)[0]
    log.info("stopping follower %d (leader %d)", follower.node_id, leader.node_id)
    follower.stop()
    produce(c, topic, 0, RECORDS)
    wait_until(
        lambda: local_segments(leader, topic) <= 2,
        timeout=60,
        interval=0.5,
        msg=lambda: f"the leader dropping uploaded segments ({local_segments(leader, topic)} local)",
    )
    follower.start()
    c.wait_in_sync(topic, 1, timeout=60)
    assert local_segments(follower, topic) <= 3, local_segments(follower, topic)
    verify_replicas(c, [topic])
    recs = consume_all(c.bootstrap, topic, [0], timeout=60)[0]
    assert [int(r.key) for r in recs] == list(range(RECORDS))


@pytest.mark.timeout(180)
def test_reassignment_of_a_tiered_partition_completes(cluster_factory, tmp_path, topic):
    """A replica a reassignment adds to a tiered partition whose leader already dropped its
    uploaded segments starts after the tier, catches up and completes the move."""
    from confluent_kafka.admin import NewTopic

    from test_reassignments import alter, replicas_settled

    c = tiered_cluster(cluster_factory, tmp_path, None)
    leader, kept, added = c.nodes
    admin = make_admin(c.bootstrap)
    admin.create_topics(
        [NewTopic(topic, num_partitions=1, replica_assignment=[[leader.node_id, kept.node_id]], config=TIERED_TOPIC)]
    )[topic].result(timeout=20)
    c.wait_in_sync(topic, 1)
    produce(c, topic, 0, RECORDS)
    wait_until(
        lambda: local_segments(leader, topic) <= 2 and local_segments(kept, topic) <= 2,
        timeout=60,
        interval=0.5,
        msg=lambda: f"uploaded segments dropped ({local_segments(leader, topic)}, {local_segments(kept, topic)} local)",
    )
    target = [leader.node_id, added.node_id]
    error, codes = alter(leader.port, {topic: {0: target}})
    assert (error, codes) == (0, {topic: {0: 0}})
    replicas_settled(c, topic, target, timeout=60)
    assert local_segments(added, topic) <= 3, local_segments(added, topic)
    verify_replicas(c, [topic])
    recs = consume_all(c.bootstrap, topic, [0], timeout=60)[0]
    assert [int(r.key) for r in recs] == list(range(RECORDS))
