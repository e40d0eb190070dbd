"""Topic administration: CreateTopics, DeleteTopics, CreatePartitions,
Metadata / DescribeTopicPartitions / DescribeCluster, auto-creation."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import KafkaError, TopicCollection
from confluent_kafka.admin import NewPartitions, NewTopic

from helpers import (
    DeliveryTracker,
    consume_all,
    create_topic,
    expect_kafka_error,
    flush_all,
    make_admin,
    make_consumer,
    make_producer,
    topic_ready,
    wait_until,
    watermarks,
)


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------
# create / describe
# --------------------------------------------------------------------------


def test_create_topic_with_partitions_and_describe(shared_broker, topic):
    admin = make_admin(shared_broker.bootstrap)
    create_topic(admin, topic, partitions=3)

    md = admin.list_topics(timeout=5)
    assert topic in md.topics
    t = md.topics[topic]
    assert sorted(t.partitions) == [0, 1, 2]
    broker_ids = set(md.brokers)
    assert len(broker_ids) == 1
    for p in t.partitions.values():
        assert p.error is None
        assert p.leader in broker_ids
        assert p.replicas == [p.leader]
        assert p.isrs == [p.leader]

    desc = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=10)
    assert desc.name == topic
    assert desc.is_internal is False
    assert [p.id for p in desc.partitions] == [0, 1, 2]
    for p in desc.partitions:
        assert p.leader is not None and p.leader.id in broker_ids
        assert [n.id for n in p.replicas] == [p.leader.id]
        assert [n.id for n in p.isr] == [p.leader.id]
    # KIP-516 topic ids: must be non-zero and stable
    assert str(desc.topic_id) != "AAAAAAAAAAAAAAAAAAAAAA"
    desc2 = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=10)
    assert str(desc2.topic_id) == str(desc.topic_id)

    # partition directories follow the Kafka layout
    for p in range(3):
        wait_until(lambda p=p: shared_broker.partition_dir(topic, p).is_dir(), 5,
                   msg=f"partition dir {topic}-{p}")


def test_create_topic_with_configs(shared_broker, topic):
    from confluent_kafka.admin import ConfigResource, ResourceType

    admin = make_admin(shared_broker.bootstrap)
    create_topic(admin, topic, partitions=2, config={"retention.ms": "123456", "cleanup.policy": "delete"})
    res = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([res])[res].result(timeout=10)
    assert configs["retention.ms"].value == "123456"
    assert configs["cleanup.policy"].value == "delete"


def test_create_topic_validate_only_does_not_create(shared_broker, topic):
    admin = make_admin(shared_broker.bootstrap)
    fut = admin.create_topics([NewTopic(topic, 2, 1)], validate_only=True)[topic]
    assert fut.result(timeout=10) is None
    md = admin.list_topics(timeout=5)
    assert topic not in md.topics, "validate_only created the topic"
    # validation must still reject bad requests
    bad = admin.create_topics([NewTopic(topic, 2, 1, config={"no.such.config": "1"})], validate_only=True)[topic]
    expect_kafka_error(bad, KafkaError.INVALID_CONFIG)
    # and the real thing works afterwards
    create_topic(admin, topic, partitions=2)


def test_create_default_partitions(broker_factory):
    b = broker_factory(overrides={"num.partitions": 4})
    admin = make_admin(b.bootstrap)
    name = _uniq("defparts")
    # -1 partitions / -1 replication factor => broker defaults (CreateTopics v4+)
    admin.create_topics([NewTopic(name)])[name].result(timeout=10)
    wait_until(lambda: topic_ready(admin, name, 4), 10, msg="topic with num.partitions=4 partitions")


@pytest.mark.parametrize(
    "name",
    ["bad/name", "x" * 250, ".", "..", "", "with space", "ünïcode"],
    ids=["slash", "too-long", "dot", "dotdot", "empty", "space", "non-ascii"],
)
def test_create_invalid_topic_name(shared_broker, name):
    admin = make_admin(shared_broker.bootstrap)
    fut = admin.create_topics([NewTopic(name, 1, 1)])[name]
    expect_kafka_error(fut, KafkaError.TOPIC_EXCEPTION)
    assert name not in admin.list_topics(timeout=5).topics


def test_create_max_length_topic_name_ok(shared_broker):
    admin = make_admin(shared_broker.bootstrap)
    name = ("m" + uuid.uuid4().hex).ljust(249, "m")
    assert len(name) == 249
    create_topic(admin, name, partitions=1)


def test_create_duplicate_topic(shared_broker, topic):
    admin = make_admin(shared_broker.bootstrap)
    create_topic(admin, topic, partitions=1)
    fut = admin.create_topics([NewTopic(topic, 1, 1)])[topic]
    expect_kafka_error(fut, KafkaError.TOPIC_ALREADY_EXISTS)


def test_create_invalid_partitions_and_replication(shared_broker):
    admin = make_admin(shared_broker.bootstrap)
    n1, n2 = _uniq("zero-parts"), _uniq("rf3")
    futs = admin.create_topics([NewTopic(n1, 0, 1), NewTopic(n2, 1, 3)])
    expect_kafka_error(futs[n1], KafkaError.INVALID_PARTITIONS)
    # single-broker cluster cannot satisfy replication factor 3
    expect_kafka_error(futs[n2], KafkaError.INVALID_REPLICATION_FACTOR)
    topics = admin.list_topics(timeout=5).topics
    assert n1 not in topics and n2 not in topics


def test_create_batch_mixed_results(shared_broker):
    """One CreateTopics request with a good and a bad topic: per-topic results."""
    admin = make_admin(shared_broker.bootstrap)
    good, bad = _uniq("good"), "bad/" + uuid.uuid4().hex[:6]
    futs = admin.create_topics([NewTopic(good, 1, 1), NewTopic(bad, 1, 1)])
    assert futs[good].result(timeout=10) is None
    expect_kafka_error(futs[bad], KafkaError.TOPIC_EXCEPTION)
    wait_until(lambda: topic_ready(admin, good, 1), 10)


# --------------------------------------------------------------------------
# delete
# --------------------------------------------------------------------------


def test_delete_topic(broker):
    admin = make_admin(broker.bootstrap)
    name = _uniq("todelete")
    create_topic(admin, name, partitions=2)
    p = make_producer(broker.bootstrap)
    for i in range(10):
        p.produce(name, value=b"v%d" % i, partition=i % 2)
    flush_all(p)
    assert broker.partition_dir(name, 0).is_dir()

    admin.delete_topics([name], operation_timeout=10)[name].result(timeout=10)
    wait_until(lambda: name not in admin.list_topics(timeout=5).topics, 10, msg="topic gone from metadata")
    wait_until(
        lambda: not broker.partition_dir(name, 0).exists() and not broker.partition_dir(name, 1).exists(),
        15,
        msg="partition directories removed/renamed",
    )

    # re-creating the same name gives a fresh, empty topic
    create_topic(admin, name, partitions=1)
    assert watermarks(broker.bootstrap, name, [0]) == {0: (0, 0)}


def test_delete_unknown_topic(shared_broker):
    admin = make_admin(shared_broker.bootstrap)
    name = _uniq("never-existed")
    fut = admin.delete_topics([name], operation_timeout=10)[name]
    expect_kafka_error(fut, KafkaError.UNKNOWN_TOPIC_OR_PART)


# --------------------------------------------------------------------------
# create partitions
# --------------------------------------------------------------------------


def test_create_partitions(shared_broker, topic):
    admin = make_admin(shared_broker.bootstrap)
    create_topic(admin, topic, partitions=1)
    admin.create_partitions([NewPartitions(topic, 3)])[topic].result(timeout=10)
    wait_until(lambda: topic_ready(admin, topic, 3), 10, msg="3 partitions in metadata")

    # the new partitions are usable
    p = make_producer(shared_broker.bootstrap)
    for part in range(3):
        p.produce(topic, value=b"p%d" % part, partition=part)
    flush_all(p)
    recs = consume_all(shared_broker.bootstrap, topic, range(3))
    assert {part: [r.value for r in rs] for part, rs in recs.items()} == {0: [b"p0"], 1: [b"p1"], 2: [b"p2"]}

    # shrinking or keeping the count is rejected
    expect_kafka_error(admin.create_partitions([NewPartitions(topic, 2)])[topic], KafkaError.INVALID_PARTITIONS)
    expect_kafka_error(admin.create_partitions([NewPartitions(topic, 3)])[topic], KafkaError.INVALID_PARTITIONS)
    # unknown topic
    unknown = _uniq("nope")
    expect_kafka_error(admin.create_partitions([NewPartitions(unknown, 2)])[unknown], KafkaError.UNKNOWN_TOPIC_OR_PART)


def test_create_partitions_validate_only(shared_broker, topic):
    admin = make_admin(shared_broker.bootstrap)
    create_topic(admin, topic, partitions=1)
    admin.create_partitions([NewPartitions(topic, 4)], validate_only=True)[topic].result(timeout=10)
    assert len(admin.list_topics(topic, timeout=5).topics[topic].partitions) == 1


# --------------------------------------------------------------------------
# cluster / metadata
# --------------------------------------------------------------------------


def test_describe_cluster(shared_broker):
    admin = make_admin(shared_broker.bootstrap)
    desc = admin.describe_cluster(request_timeout=10).result(timeout=10)
    assert desc.cluster_id, "empty cluster id"
    assert len(desc.nodes) == 1
    node = desc.nodes[0]
    assert (node.host, node.port) == ("127.0.0.1", shared_broker.port)
    assert desc.controller is not None and desc.controller.id == node.id
    md = admin.list_topics(timeout=5)
    assert md.cluster_id == desc.cluster_id
    assert md.controller_id == node.id
    assert set(md.brokers) == {node.id}


def test_metadata_unknown_topic_not_auto_created(shared_broker):
    """Metadata with allow_auto_topic_creation=false must not create the topic,
    even though the broker's auto.create.topics.enable defaults to true."""
    c = make_consumer(shared_broker.bootstrap, **{"allow.auto.create.topics": False})
    try:
        name = _uniq("unknown")
        md = c.list_topics(name, timeout=5)
        t = md.topics.get(name)
        assert t is not None and t.error is not None, "unknown topic returned without error"
        assert t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        assert name not in c.list_topics(timeout=5).topics
    finally:
        c.close()


def test_advertised_listener(broker_factory):
    b = broker_factory()
    port = b.port
    md = make_admin(b.bootstrap).list_topics(timeout=5)
    # default: advertise the listen address
    assert [(x.host, x.port) for x in md.brokers.values()] == [("127.0.0.1", port)]
    b.stop()
    b.advertised_listener = f"localhost:{port}"
    b.start()
    md = make_admin(b.bootstrap).list_topics(timeout=5)
    assert [(x.host, x.port) for x in md.brokers.values()] == [("localhost", port)]


# --------------------------------------------------------------------------
# auto-creation
# --------------------------------------------------------------------------


def test_auto_create_on_produce(broker_factory):
    b = broker_factory(overrides={"auto.create.topics.enable": "true", "num.partitions": 2})
    name = _uniq("auto")
    tracker = DeliveryTracker()
    p = make_producer(b.bootstrap)
    p.produce(name, value=b"hello", key=b"k", on_delivery=tracker.cb(0))
    flush_all(p)
    assert not tracker.failed, tracker.failed
    assert 0 in tracker.acked
    admin = make_admin(b.bootstrap)
    wait_until(lambda: topic_ready(admin, name, 2), 10, msg="auto-created topic with num.partitions=2")
    part, off = tracker.acked[0]
    assert off == 0
    recs = consume_all(b.bootstrap, name, [part])
    assert [(r.key, r.value) for r in recs[part]] == [(b"k", b"hello")]


def test_auto_create_disabled(broker_factory):
    b = broker_factory(overrides={"auto.create.topics.enable": "false"})
    name = _uniq("noauto")
    tracker = DeliveryTracker()
    p = make_producer(b.bootstrap, **{"message.timeout.ms": 3000, "topic.metadata.propagation.max.ms": 1000})
    p.produce(name, value=b"x", on_delivery=tracker.cb(0))
    p.flush(15)
    assert 0 in tracker.failed, "produce to a missing topic succeeded although auto-create is disabled"
    assert tracker.failed[0].code() in (
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._MSG_TIMED_OUT,
    ), tracker.failed[0]
    assert name not in make_admin(b.bootstrap).list_topics(timeout=5).topics


# --------------------------------------------------------------------------
# kafka-python admin client
# --------------------------------------------------------------------------


def test_kafka_python_admin_create_delete(shared_broker):
    from kafka.admin import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

    name = _uniq("kpadmin")
    ka = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap, request_timeout_ms=10000)
    try:
        ka.create_topics({name: {"num_partitions": 3, "replication_factor": 1, "configs": {"retention.ms": "86400000"}}})
        wait_until(lambda: name in ka.list_topics(), 10, msg="kafka-python sees the topic")
        [desc] = ka.describe_topics([name])
        assert desc["error_code"] == 0
        assert sorted(p["partition_index"] for p in desc["partitions"]) == [0, 1, 2]

        with pytest.raises(TopicAlreadyExistsError):
            ka.create_topics({name: {"num_partitions": 1, "replication_factor": 1}})

        ka.delete_topics([name])
        wait_until(lambda: name not in ka.list_topics(), 10, msg="kafka-python: topic deleted")
        with pytest.raises(UnknownTopicOrPartitionError):
            ka.delete_topics([name])
    finally:
        ka.close()
