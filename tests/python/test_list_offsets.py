"""ListOffsets: by timestamp, earliest/latest, max timestamp; record
timestamps (CreateTime and LogAppendTime)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, TopicPartition
from confluent_kafka.admin import OffsetSpec

from helpers import (
    consume_all,
    create_topic,
    flush_all,
    free_ports,
    make_admin,
    make_consumer,
    make_producer,
    wait_until,
)


def _produce_with_timestamps(bs, topic, timestamps):
    p = make_producer(bs, **{"linger.ms": 0})
    for i, ts in enumerate(timestamps):
        p.produce(topic, value=b"r%d" % i, partition=0, timestamp=ts)
        flush_all(p)  # one batch per record: exercises the time index across batches


def test_offsets_for_times(shared_broker, topic):
    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=1)
    now = int(time.time() * 1000)
    # offset:        0           1           2           3 (out of order)
    timestamps = [now - 3000, now - 2000, now - 1000, now - 5000]
    _produce_with_timestamps(bs, topic, timestamps)

    c = make_consumer(bs)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (0, 4)

        cases = {
            now - 6000: 0,  # before everything -> first record
            now - 3000: 0,  # exact match
            now - 2999: 1,
            now - 2000: 1,
            now - 1500: 2,
            now - 1000: 2,
            now - 999: -1,  # nothing at/after -> -1 (end)
            now + 60_000: -1,
        }
        # one lookup per call: a ListOffsets request may not name a partition twice
        got = {}
        for ts in cases:
            [r] = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert r.error is None, r.error
            got[ts] = r.offset
        assert {ts - now: o for ts, o in got.items()} == {ts - now: o for ts, o in cases.items()}

        # special "timestamps": -2 earliest, -1 latest
        res = c.offsets_for_times([TopicPartition(topic, 0, -2)], timeout=10)
        assert res[0].offset == 0
        res = c.offsets_for_times([TopicPartition(topic, 0, -1)], timeout=10)
        assert res[0].offset == 4
    finally:
        c.close()

    recs = consume_all(bs, topic, [0])
    assert [(r.timestamp_type, r.timestamp) for r in recs[0]] == [(TIMESTAMP_CREATE_TIME, ts) for ts in timestamps]


def test_admin_list_offsets(shared_broker, topic):
    bs = shared_broker.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, partitions=2)
    now = int(time.time() * 1000)
    timestamps = [now - 3000, now - 1000, now - 2000]
    _produce_with_timestamps(bs, topic, timestamps)
    tp = TopicPartition(topic, 0)

    def lo(spec):
        [(k, fut)] = admin.list_offsets({tp: spec}, request_timeout=10).items()
        return fut.result(timeout=10)

    assert lo(OffsetSpec.earliest()).offset == 0
    assert lo(OffsetSpec.latest()).offset == 3
    r = lo(OffsetSpec.max_timestamp())
    assert (r.offset, r.timestamp) == (1, now - 1000)
    r = lo(OffsetSpec.for_timestamp(now - 2500))
    assert (r.offset, r.timestamp) == (1, now - 1000)
    r = lo(OffsetSpec.for_timestamp(now - 3000))
    assert (r.offset, r.timestamp) == (0, now - 3000)

    # empty partition 1
    tp1 = TopicPartition(topic, 1)
    res = admin.list_offsets({tp1: OffsetSpec.latest()}, request_timeout=10)
    assert list(res.values())[0].result(timeout=10).offset == 0
    res = admin.list_offsets({tp1: OffsetSpec.for_timestamp(now - 10_000)}, request_timeout=10)
    assert list(res.values())[0].result(timeout=10).offset == -1


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_lookups_name_the_record_inside_a_batch(shared_broker, topic, codec):
    """ListOffsets by timestamp answers the first *record* at or after the target, and
    MAX_TIMESTAMP the record holding the max (KIP-734), not the base offset of their batch
    (Kafka's `LogSegment.findOffsetByTimestamp`), compressed batches included."""
    bs = shared_broker.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, partitions=1)
    now = int(time.time() * 1000)
    # One batch (a long linger), offsets 0..3.
    timestamps = [now - 3000, now - 2000, now - 500, now - 1000]
    p = make_producer(bs, **{"linger.ms": 500, "compression.type": codec})
    for i, ts in enumerate(timestamps):
        p.produce(topic, value=b"r%d" % i, partition=0, timestamp=ts)
    flush_all(p)
    tp = TopicPartition(topic, 0)

    def lo(spec):
        [(_, fut)] = admin.list_offsets({tp: spec}, request_timeout=10).items()
        r = fut.result(timeout=10)
        return (r.offset, r.timestamp)

    assert lo(OffsetSpec.for_timestamp(now - 3000)) == (0, now - 3000)
    assert lo(OffsetSpec.for_timestamp(now - 2500)) == (1, now - 2000)
    assert lo(OffsetSpec.for_timestamp(now - 1500)) == (2, now - 500)
    assert lo(OffsetSpec.for_timestamp(now - 499)) == (-1, -1)
    assert lo(OffsetSpec.max_timestamp()) == (2, now - 500)

    c = make_consumer(bs)
    try:
        [r] = c.offsets_for_times([TopicPartition(topic, 0, now - 2500)], timeout=10)
        assert (r.error, r.offset) == (None, 1)
    finally:
        c.close()

    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    kc = KafkaConsumer(bootstrap_servers=bs, request_timeout_ms=10000)
    try:
        found = kc.offsets_for_times({KTP(topic, 0): now - 1500})[KTP(topic, 0)]
        assert (found.offset, found.timestamp) == (2, now - 500)
    finally:
        kc.close()


def _restart_on_new_ports(b):
    """Restarts a single node on other ports: it registers again, which bumps the leader epoch
    of the partitions it leads, as a broker's re-registration does in Kafka."""
    b.stop()
    b.port, b.http_port = free_ports(2)
    b.start()


def test_answers_carry_the_leader_epoch_of_the_record(broker_factory, topic):
    """Kafka answers a lookup by timestamp or MAX_TIMESTAMP with the leader epoch of the batch
    holding the record found, EARLIEST with the earliest epoch of its leader-epoch cache (when
    that starts at the log start) and LATEST with the current epoch: clients keep the epoch
    with the offset to detect a truncated log (KIP-320). Strata answered the current epoch
    for all of them."""
    b = broker_factory()
    create_topic(make_admin(b.bootstrap), topic, partitions=1)
    now = int(time.time() * 1000)
    tp = TopicPartition(topic, 0)

    def lo(admin, spec):
        [(_, fut)] = admin.list_offsets({tp: spec}, request_timeout=10).items()
        r = fut.result(timeout=10)
        return (r.offset, r.leader_epoch)

    # Offsets 0 and 1 (the max timestamp) in the first epoch, 2 in the next.
    _produce_with_timestamps(b.bootstrap, topic, [now - 3000, now - 100])
    first = lo(make_admin(b.bootstrap), OffsetSpec.latest())[1]
    _restart_on_new_ports(b)
    admin = make_admin(b.bootstrap)
    wait_until(lambda: lo(admin, OffsetSpec.latest())[1] > first, 20, msg="a new leader epoch")
    _produce_with_timestamps(b.bootstrap, topic, [now - 2000])
    current = lo(admin, OffsetSpec.latest())
    assert current[0] == 3 and current[1] > first, (first, current)

    assert lo(admin, OffsetSpec.for_timestamp(now - 3500)) == (0, first)
    assert lo(admin, OffsetSpec.for_timestamp(now - 2500)) == (1, first)
    assert lo(admin, OffsetSpec.max_timestamp()) == (1, first)
    assert lo(admin, OffsetSpec.earliest()) == (0, first)
    c = make_consumer(b.bootstrap)
    try:
        [r] = c.offsets_for_times([TopicPartition(topic, 0, now - 3500)], timeout=10)
        assert (r.error, r.offset, r.leader_epoch) == (None, 0, first), r
    finally:
        c.close()

    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    kc = KafkaConsumer(bootstrap_servers=b.bootstrap, request_timeout_ms=10000)
    try:
        found = kc.offsets_for_times({KTP(topic, 0): now - 2500})[KTP(topic, 0)]
        assert (found.offset, found.leader_epoch) == (1, first), found
    finally:
        kc.close()

    # Once the log starts in the new epoch, EARLIEST and the lookups answer it.
    [(_, fut)] = admin.delete_records([TopicPartition(topic, 0, 2)]).items()
    fut.result(timeout=10)
    assert lo(admin, OffsetSpec.earliest()) == (2, current[1])
    assert lo(admin, OffsetSpec.for_timestamp(now - 3500)) == (2, current[1])


def test_log_append_time(shared_broker, topic):
    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=1, config={"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    _produce_with_timestamps(bs, topic, [1_000_000, 2_000_000])  # ancient CreateTime, must be overwritten
    after = int(time.time() * 1000)
    recs = consume_all(bs, topic, [0])
    assert len(recs[0]) == 2
    for r in recs[0]:
        assert r.timestamp_type == TIMESTAMP_LOG_APPEND_TIME, r
        assert before - 1000 <= r.timestamp <= after + 1000, (before, r.timestamp, after)


def test_default_timestamps_are_create_time(shared_broker, topic):
    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=1)
    before = int(time.time() * 1000)
    p = make_producer(bs)
    p.produce(topic, value=b"now", partition=0)
    flush_all(p)
    after = int(time.time() * 1000)
    [r] = consume_all(bs, topic, [0])[0]
    assert r.timestamp_type == TIMESTAMP_CREATE_TIME
    assert before - 1000 <= r.timestamp <= after + 1000


def test_read_committed_offsets_stop_at_the_last_stable_offset(shared_broker, topic):
    """A read_committed client's LATEST is the last stable offset, and a timestamp lookup
    landing in an open transaction finds nothing (Kafka bounds both by what the client may
    fetch); read_uncommitted sees up to the high watermark."""
    from confluent_kafka import IsolationLevel, Producer

    bs = shared_broker.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, partitions=1)
    now = int(time.time() * 1000)
    _produce_with_timestamps(bs, topic, [now - 3000, now - 2000])  # offsets 0, 1
    tp = TopicPartition(topic, 0)
    txn = Producer({"bootstrap.servers": bs, "transactional.id": f"tx-{topic}"})
    txn.init_transactions(30)
    txn.begin_transaction()
    txn.produce(topic, value=b"open", partition=0, timestamp=now - 1000)  # offset 2
    txn.flush(30)

    def lo(spec, isolation):
        [(_, fut)] = admin.list_offsets({tp: spec}, isolation_level=isolation, request_timeout=10).items()
        return fut.result(timeout=10).offset

    assert lo(OffsetSpec.latest(), IsolationLevel.READ_UNCOMMITTED) == 3
    assert lo(OffsetSpec.latest(), IsolationLevel.READ_COMMITTED) == 2
    assert lo(OffsetSpec.for_timestamp(now - 1500), IsolationLevel.READ_UNCOMMITTED) == 2
    assert lo(OffsetSpec.for_timestamp(now - 1500), IsolationLevel.READ_COMMITTED) == -1
    assert lo(OffsetSpec.for_timestamp(now - 2500), IsolationLevel.READ_COMMITTED) == 1
    txn.commit_transaction(30)
    # offset 3 is the commit marker
    assert lo(OffsetSpec.latest(), IsolationLevel.READ_COMMITTED) == 4
    assert lo(OffsetSpec.for_timestamp(now - 1500), IsolationLevel.READ_COMMITTED) == 2
