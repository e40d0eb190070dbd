"""Log compaction (cleanup.policy=compact): the log cleaner keeps the latest record per key with
its original offset, removes tombstones after delete.retention.ms, and compacted topics refuse
records without a key."""

from __future__ import annotations

import os
import re

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from helpers import (
    BrokerStartError,
    DeliveryTracker,
    create_topic,
    flush_all,
    kafka_python_batch_outcomes,
    make_admin,
    make_consumer,
    make_producer,
    wait_until,
    watermarks,
)

# The cleaner sleeps log.cleaner.backoff.ms (Kafka's default 15 s) when it finds nothing to do.
# A broker that does not know the property refuses to start with it; the tests then run with
# the default and simply wait longer.
CLEANER_BACKOFF_MS = 200
SEG_RE = re.compile(r"^(\d{20})\.log$")

COMPACT_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": "4096",
    # Roll the active segment when idle, so that every record becomes cleanable.
    "segment.ms": "300",
    "min.cleanable.dirty.ratio": "0.01",
}


def _broker(broker_factory):
    try:
        return broker_factory(overrides={"log.cleaner.backoff.ms": CLEANER_BACKOFF_MS})
    except BrokerStartError:
        return broker_factory()


def _read_all(bs: str, topic: str, timeout: float = 10.0) -> list[tuple[int, bytes | None, bytes | None]]:
    """Every record of partition 0 from the beginning to the end, as (offset, key, value)."""
    c = make_consumer(bs, **{"enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out = []
        deadline_polls = int(timeout / 0.2)
        for _ in range(deadline_polls):
            for m in c.consume(num_messages=1000, timeout=0.2):
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        return out
                    raise AssertionError(f"consumer error: {m.error()}")
                out.append((m.offset(), m.key(), m.value()))
        raise AssertionError(f"no end of partition within {timeout}s; got {len(out)} records")
    finally:
        c.close()


def _segments(broker, topic) -> list[int]:
    d = broker.partition_dir(topic, 0)
    return sorted(int(m.group(1)) for f in os.listdir(d) if (m := SEG_RE.match(f)))


def _dir_bytes(broker, topic) -> int:
    d = broker.partition_dir(topic, 0)
    return sum((d / f).stat().st_size for f in os.listdir(d) if f.endswith(".log"))


@pytest.mark.timeout(120)
def test_compaction_keeps_latest_value_per_key_with_original_offsets(broker_factory, topic):
    b = _broker(broker_factory)
    bs = b.bootstrap
    create_topic(make_admin(bs), topic, partitions=1, config=COMPACT_CONFIG)
    keys = [f"key-{i}".encode() for i in range(5)]
    rounds = 200
    p = make_producer(bs, **{"compression.type": "lz4", "linger.ms": 5, "batch.size": 16384})
    tracker = DeliveryTracker()
    for r in range(rounds):
        for k in keys:
            v = k + b"=" + str(r).encode() + b"." + b"x" * 100
            p.produce(topic, key=k, value=v, partition=0, on_delivery=tracker.cb((k, r)))
        p.poll(0)
    flush_all(p)
    assert not tracker.failed, tracker.failed
    total = rounds * len(keys)
    latest = {k: tracker.acked[(k, rounds - 1)][1] for k in keys}
    assert watermarks(bs, topic, [0])[0] == (0, total)
    size_before = _dir_bytes(b, topic)
    assert len(_segments(b, topic)) > 2

    expected = sorted((latest[k], k, k + b"=" + str(rounds - 1).encode() + b"." + b"x" * 100) for k in keys)

    def compacted():
        recs = _read_all(bs, topic)
        return recs == expected and recs

    wait_until(compacted, timeout=60, interval=0.3, msg="the log to be compacted to one record per key")
    # Offsets are preserved: the end offset does not move, and neither does the start.
    assert watermarks(bs, topic, [0])[0] == (0, total)
    assert _dir_bytes(b, topic) < size_before / 2, (_dir_bytes(b, topic), size_before)

    # More updates after compaction: still one record per key once cleaned again, at new offsets.
    tracker2 = DeliveryTracker()
    for k in keys[:2]:
        p.produce(topic, key=k, value=b"new", partition=0, on_delivery=tracker2.cb(k))
    flush_all(p)
    for k in keys[:2]:
        latest[k] = tracker2.acked[k][1]
    expected = sorted(
        (latest[k], k, b"new" if k in keys[:2] else k + b"=" + str(rounds - 1).encode() + b"." + b"x" * 100)
        for k in keys
    )
    wait_until(compacted, timeout=60, interval=0.3, msg="the second compaction")

    # The compacted log survives a restart unchanged.
    b.restart()
    assert _read_all(bs, topic, timeout=20) == expected
    assert watermarks(bs, topic, [0])[0] == (0, total + 2)
    leftovers = [f for f in os.listdir(b.partition_dir(topic, 0)) if f.endswith((".cleaned", ".swap"))]
    assert not leftovers, leftovers


@pytest.mark.timeout(120)
def test_tombstones_removed_after_delete_retention(broker_factory, topic):
    b = _broker(broker_factory)
    bs = b.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, partitions=1, config={**COMPACT_CONFIG, "delete.retention.ms": "86400000"})
    p = make_producer(bs, **{"compression.type": "none"})
    tracker = DeliveryTracker()
    for r in range(50):
        for k in (b"a", b"b", b"c"):
            p.produce(topic, key=k, value=b"%s-%d" % (k, r), partition=0, on_delivery=tracker.cb((k, r)))
    p.produce(topic, key=b"b", value=None, partition=0, on_delivery=tracker.cb("tombstone"))
    flush_all(p)
    assert not tracker.failed, tracker.failed
    tomb = tracker.acked["tombstone"][1]
    live = sorted([(tracker.acked[(b"a", 49)][1], b"a", b"a-49"), (tracker.acked[(b"c", 49)][1], b"c", b"c-49")])

    def with_tombstone():
        return _read_all(bs, topic) == sorted(live + [(tomb, b"b", None)])

    wait_until(with_tombstone, timeout=60, interval=0.3, msg="compaction that keeps the tombstone of b")

    # Shorten delete.retention.ms: the cleaner runs again for the expired tombstone alone.
    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("delete.retention.ms", "100", incremental_operation=AlterConfigOpType.SET)],
    )
    admin.incremental_alter_configs([res], request_timeout=10)[res].result(timeout=10)

    def tombstone_gone():
        return _read_all(bs, topic) == live

    wait_until(tombstone_gone, timeout=60, interval=0.3, msg="the tombstone of b to be removed")
    assert watermarks(bs, topic, [0])[0][1] == tomb + 1


def test_compacted_topic_refuses_records_without_key(broker_factory, topic):
    b = _broker(broker_factory)
    bs = b.bootstrap
    create_topic(make_admin(bs), topic, partitions=1, config={"cleanup.policy": "compact"})
    p = make_producer(bs, **{"retries": 0})
    tracker = DeliveryTracker()
    p.produce(topic, value=b"no key", partition=0, on_delivery=tracker.cb("keyless"))
    flush_all(p)
    assert "keyless" in tracker.failed, tracker.acked
    assert tracker.failed["keyless"].code() == KafkaError.INVALID_RECORD, tracker.failed["keyless"]
    p.produce(topic, key=b"k", value=b"with key", partition=0, on_delivery=tracker.cb("keyed"))
    flush_all(p)
    assert tracker.acked["keyed"][1] == 0
    assert _read_all(bs, topic) == [(0, b"k", b"with key")]


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_only_the_keyless_records_of_a_batch_fail(shared_broker, topic, codec):
    """KIP-467: a batch refused for some of its records names them (`record_errors`), so that
    librdkafka fails those with INVALID_RECORD and the others of the batch with
    _INVALID_DIFFERENT_RECORD; nothing of the batch is written. (confluent-kafka does not
    surface the per-record message; the kafka-python test below checks it.)"""
    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=1, config={"cleanup.policy": "compact"})
    # A long linger: the five records go in one batch.
    p = make_producer(bs, **{"retries": 0, "linger.ms": 500, "compression.type": codec})
    tracker = DeliveryTracker()
    keys = [b"a", None, b"c", None, b"e"]
    for i, key in enumerate(keys):
        p.produce(topic, key=key, value=b"v%d" % i, partition=0, on_delivery=tracker.cb(i))
    flush_all(p)
    assert not tracker.acked, tracker.acked
    codes = {i: e.code() for i, e in tracker.failed.items()}
    other = KafkaError._INVALID_DIFFERENT_RECORD
    assert codes == {0: other, 1: KafkaError.INVALID_RECORD, 2: other, 3: KafkaError.INVALID_RECORD, 4: other}
    assert watermarks(bs, topic, [0])[0] == (0, 0)
    # The keyed records go through on their own.
    for i in (0, 2, 4):
        p.produce(topic, key=keys[i], value=b"v%d" % i, partition=0, on_delivery=tracker.cb(("again", i)))
    flush_all(p)
    assert [tracker.acked[("again", i)][1] for i in (0, 2, 4)] == [0, 1, 2]


def test_kafka_python_fails_only_the_keyless_record(shared_broker, topic):
    """kafka-python reads `record_errors` too: the keyless record fails with INVALID_RECORD and
    the broker's message, its batch mates with the generic 'part of a batch' error."""
    from kafka.errors import InvalidRecordError, KafkaError as KpError

    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=1, config={"cleanup.policy": "compact"})
    sends = [dict(topic=topic, key=key, value=b"v", partition=0) for key in (b"a", None, b"c")]
    errors = kafka_python_batch_outcomes(bs, sends)
    assert isinstance(errors[1], InvalidRecordError), errors
    assert "Compacted topic cannot accept message without key" in str(errors[1]), errors[1]
    for e in (errors[0], errors[2]):
        assert isinstance(e, KpError) and not isinstance(e, InvalidRecordError), errors
        assert "part of a batch which had one more more invalid records" in str(e), e
    assert watermarks(bs, topic, [0])[0] == (0, 0)
