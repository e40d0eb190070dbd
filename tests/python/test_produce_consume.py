"""Produce / Fetch round trips with confluent-kafka (librdkafka) and
kafka-python: compression codecs, keys, headers, null values, acks levels,
ordering and offsets, size limits, DeleteRecords."""

from __future__ import annotations

import os
import random
import time

import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import OffsetSpec

from helpers import (
    DeliveryTracker,
    consume_all,
    create_topic,
    expect_kafka_error,
    flush_all,
    kafka_python_batch_outcomes,
    make_admin,
    make_producer,
    wait_until,
    watermarks,
)
from kwire import RawConn, record_batch

PARTITIONS = 3


def _message(i: int):
    """Deterministic message #i: (key, value, headers)."""
    key = None if i % 7 == 3 else f"key-{i}".encode()
    if i % 11 == 5:
        value = None  # null value (tombstone-shaped)
    elif i % 13 == 6:
        value = b""
    elif i == 42:
        value = random.Random(i).randbytes(100_000)  # one big, incompressible record
    else:
        value = (f"value-{i}-" * (1 + i % 40)).encode()
    headers = [("idx", str(i).encode()), ("h-bin", bytes([i % 256, 0, 255]))]
    if i % 5 == 0:
        headers.append(("nullh", None))
    if i % 9 == 0:
        headers.append(("idx", b"dup-name"))  # header names may repeat; order matters
    return key, value, headers


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_round_trip_compression(shared_broker, topic, codec):
    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=PARTITIONS)
    n = 600
    tracker = DeliveryTracker()
    p = make_producer(bs, **{"compression.type": codec, "linger.ms": 20, "acks": "all"})
    for i in range(n):
        key, value, headers = _message(i)
        p.produce(topic, value=value, key=key, headers=headers, partition=i % PARTITIONS, on_delivery=tracker.cb(i))
        if i % 100 == 0:
            p.poll(0)
    flush_all(p)
    assert not tracker.failed, f"delivery failures: {list(tracker.failed.items())[:5]}"
    assert len(tracker.acked) == n

    # delivery reports: per partition offsets 0..k-1 in produce order
    for part in range(PARTITIONS):
        offs = [tracker.acked[i][1] for i in range(part, n, PARTITIONS)]
        assert offs == list(range(len(offs))), f"partition {part}: non-contiguous acked offsets {offs[:20]}"

    assert watermarks(bs, topic, range(PARTITIONS)) == {
        part: (0, len(range(part, n, PARTITIONS))) for part in range(PARTITIONS)
    }

    recs = consume_all(bs, topic, range(PARTITIONS))
    for part in range(PARTITIONS):
        ids = list(range(part, n, PARTITIONS))
        got = recs[part]
        assert [r.offset for r in got] == list(range(len(ids))), f"partition {part}: offsets not contiguous"
        for r, i in zip(got, ids):
            key, value, headers = _message(i)
            assert r.key == key, f"msg {i}: key"
            assert r.value == value, f"msg {i}: value (len {len(r.value or b'')} vs {len(value or b'')})"
            assert r.headers == headers, f"msg {i}: headers"
            assert (tracker.acked[i]) == (part, r.offset)
            assert r.timestamp > 0


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks_levels(shared_broker, topic, acks):
    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=2)
    n = 300
    tracker = DeliveryTracker()
    p = make_producer(bs, acks=acks)
    for i in range(n):
        p.produce(topic, value=b"m%d" % i, key=b"%d" % i, partition=i % 2, on_delivery=tracker.cb(i))
    flush_all(p)
    assert not tracker.failed, list(tracker.failed.items())[:5]
    if acks != "0":
        for part in range(2):
            offs = [tracker.acked[i][1] for i in range(part, n, 2)]
            assert offs == list(range(n // 2))
    # with acks=0 the records must become readable eventually
    want = {0: n // 2, 1: n // 2}
    wait_until(
        lambda: {p_: hi for p_, (lo, hi) in watermarks(bs, topic, [0, 1]).items()} == want,
        15,
        msg=f"high watermarks == {want}",
    )
    recs = consume_all(bs, topic, [0, 1])
    for part in range(2):
        assert [r.value for r in recs[part]] == [b"m%d" % i for i in range(part, n, 2)]


def test_keyed_partitioning_is_stable(shared_broker, topic):
    """Producer-side partitioner: same key -> same partition; broker keeps order."""
    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=4)
    tracker = DeliveryTracker()
    p = make_producer(bs)
    for i in range(400):
        p.produce(topic, key=b"user-%d" % (i % 10), value=b"%d" % i, on_delivery=tracker.cb(i))
    flush_all(p)
    recs = consume_all(bs, topic, range(4))
    seen = {}
    for part, rs in recs.items():
        last = {}
        for r in rs:
            seen.setdefault(r.key, set()).add(part)
            v = int(r.value)
            assert v > last.get(r.key, -1), "per-key order broken"
            last[r.key] = v
    assert all(len(s) == 1 for s in seen.values())
    assert sum(len(rs) for rs in recs.values()) == 400


def test_concurrent_producers_same_partition(shared_broker, topic):
    """Several producers appending to one partition at once: nothing lost,
    torn or reordered within a producer; offsets stay dense."""
    import threading

    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=1)
    n_prod, per = 4, 1500
    errors = []

    def run(pid):
        try:
            codec = ["none", "gzip", "lz4", "zstd"][pid % 4]
            p = make_producer(bs, **{"compression.type": codec, "linger.ms": 1, "enable.idempotence": pid % 2 == 0})
            for i in range(per):
                p.produce(topic, key=b"p%d" % pid, value=b"%d:%06d" % (pid, i), partition=0)
                if i % 100 == 0:
                    p.poll(0)
            flush_all(p)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_prod)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    recs = consume_all(bs, topic, [0], timeout=30)[0]
    assert [r.offset for r in recs] == list(range(n_prod * per))
    by_prod = {}
    for r in recs:
        pid, i = r.value.split(b":")
        assert r.key == b"p" + pid
        by_prod.setdefault(int(pid), []).append(int(i))
    assert by_prod == {pid: list(range(per)) for pid in range(n_prod)}


def test_fetch_from_middle_offset(shared_broker, topic):
    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=1)
    p = make_producer(bs, **{"linger.ms": 0})
    for i in range(50):
        p.produce(topic, value=b"%d" % i, partition=0)
        if i % 10 == 9:
            p.flush(10)  # several batches
    flush_all(p)
    from helpers import make_consumer

    c = make_consumer(bs)
    try:
        c.assign([TopicPartition(topic, 0, 23)])  # inside a batch
        got = []
        wait_until(lambda: got.extend(m for m in c.consume(100, 0.2) if not m.error()) or len(got) >= 27, 15)
        assert [m.offset() for m in got] == list(range(23, 50))
        assert [m.value() for m in got] == [b"%d" % i for i in range(23, 50)]
    finally:
        c.close()


def test_message_too_large(broker_factory, topic):
    b = broker_factory(overrides={"message.max.bytes": 100_000})
    create_topic(make_admin(b.bootstrap), topic, partitions=1)
    tracker = DeliveryTracker()
    p = make_producer(b.bootstrap, **{"message.max.bytes": 5_000_000, "compression.type": "none"})
    p.produce(topic, value=os.urandom(200_000), partition=0, on_delivery=tracker.cb("big"))
    p.flush(15)  # separate batches: librdkafka does not split a rejected batch
    p.produce(topic, value=b"small", partition=0, on_delivery=tracker.cb("small"))
    p.flush(15)
    assert "big" in tracker.failed, "broker accepted a batch larger than message.max.bytes"
    assert tracker.failed["big"].code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert tracker.acked.get("small") == (0, 0)


def test_topic_max_message_bytes(shared_broker, topic):
    create_topic(make_admin(shared_broker.bootstrap), topic, partitions=1, config={"max.message.bytes": "20000"})
    tracker = DeliveryTracker()
    p = make_producer(shared_broker.bootstrap, **{"compression.type": "none"})
    p.produce(topic, value=os.urandom(50_000), partition=0, on_delivery=tracker.cb("big"))
    p.flush(15)
    assert "big" in tracker.failed, "topic max.message.bytes not enforced"
    assert tracker.failed["big"].code() == KafkaError.MSG_SIZE_TOO_LARGE


WINDOW_MS = 3_600_000


def _timestamp_window_topic(bs, topic):
    create_topic(
        make_admin(bs),
        topic,
        partitions=1,
        config={"message.timestamp.before.max.ms": str(WINDOW_MS), "message.timestamp.after.max.ms": str(WINDOW_MS)},
    )


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_out_of_range_timestamps_fail_only_their_records(shared_broker, topic, codec):
    """Every record's timestamp is checked, not only the batch's first and max (Kafka's
    LogValidator); the refused ones are named (KIP-467) and the rest of their batch fails with
    _INVALID_DIFFERENT_RECORD. That is librdkafka's reading of several named records (each
    INVALID_RECORD); with a single one it fails the whole batch with the partition's error,
    INVALID_TIMESTAMP (`rd_kafka_dr_msgq0`), as against Kafka."""
    bs = shared_broker.bootstrap
    _timestamp_window_topic(bs, topic)
    now = int(time.time() * 1000)
    other = KafkaError._INVALID_DIFFERENT_RECORD
    p = make_producer(bs, **{"retries": 0, "linger.ms": 500, "compression.type": codec})
    tracker = DeliveryTracker()

    def produce_batch(name, timestamps):
        for i, ts in enumerate(timestamps):
            p.produce(topic, value=b"v%d" % i, partition=0, timestamp=ts, on_delivery=tracker.cb((name, i)))
        flush_all(p)
        return {i: tracker.failed[(name, i)].code() for i in range(len(timestamps)) if (name, i) in tracker.failed}

    # The first and the largest timestamps are fine: only looking at each record finds 1 (and 3).
    one_bad = [now, now - 2 * WINDOW_MS, now - 1000, now + 1000]
    assert produce_batch("one", one_bad) == {i: KafkaError.INVALID_TIMESTAMP for i in range(4)}
    two_bad = [now, now - 2 * WINDOW_MS, now - 1000, now - 3 * WINDOW_MS, now + 1000]
    codes = produce_batch("two", two_bad)
    assert codes == {0: other, 1: KafkaError.INVALID_RECORD, 2: other, 3: KafkaError.INVALID_RECORD, 4: other}
    assert not tracker.acked, tracker.acked
    assert watermarks(bs, topic, [0])[0] == (0, 0)
    # In range, the same records are taken.
    for i in (0, 2, 4):
        p.produce(topic, value=b"v%d" % i, partition=0, timestamp=two_bad[i], on_delivery=tracker.cb(("ok", i)))
    flush_all(p)
    assert [tracker.acked[("ok", i)][1] for i in (0, 2, 4)] == [0, 1, 2]


def test_kafka_python_fails_only_the_out_of_range_timestamp(shared_broker, topic):
    from kafka.errors import InvalidTimestampError, KafkaError as KpError

    bs = shared_broker.bootstrap
    _timestamp_window_topic(bs, topic)
    now = int(time.time() * 1000)
    sends = [dict(topic=topic, value=b"v", partition=0, timestamp_ms=ts) for ts in (now, now + 2 * WINDOW_MS, now)]
    errors = kafka_python_batch_outcomes(bs, sends, compression_type="gzip")
    assert isinstance(errors[1], InvalidTimestampError), errors
    assert "of message with offset 1 is out of range" in str(errors[1]), errors[1]
    for e in (errors[0], errors[2]):
        assert isinstance(e, KpError) and not isinstance(e, InvalidTimestampError), errors
    assert watermarks(bs, topic, [0])[0] == (0, 0)


UNKNOWN_SERVER_ERROR = -1
MESSAGE_TOO_LARGE = 10
INVALID_RECORD = 87


def test_only_refused_records_get_an_error_message(shared_broker, topic):
    """Kafka sets a Produce answer's error_message only when its LogValidator refused records
    one by one (KIP-467, `RecordValidationException`); every other error comes with its code
    alone. kafka-python builds its exception from that message."""
    from kafka.errors import MessageSizeTooLargeError

    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=1, config={"max.message.bytes": "2000"})
    [error] = kafka_python_batch_outcomes(bs, [dict(topic=topic, value=b"x" * 5000, partition=0)])
    assert isinstance(error, MessageSizeTooLargeError), error
    assert error.args == (None,), f"the broker sent a message Kafka does not: {error.args}"
    with RawConn("127.0.0.1", shared_broker.port) as c:
        r = c.produce(topic, 0, record_batch([(None, b"x" * 5000)]))
        assert (r["error_code"], r["error_message"], r["record_errors"]) == (MESSAGE_TOO_LARGE, None, []), r
        r = c.produce(topic, 7, record_batch([(None, b"v")]))
        assert (r["error_code"], r["error_message"]) == (3, None), r  # UNKNOWN_TOPIC_OR_PARTITION
    # Refused records keep theirs (and name the records).
    compacted = topic + "-compacted"
    create_topic(make_admin(bs), compacted, partitions=1, config={"cleanup.policy": "compact"})
    with RawConn("127.0.0.1", shared_broker.port) as c:
        r = c.produce(compacted, 0, record_batch([(b"k", b"v"), (None, b"v")]))
        assert r["error_code"] == INVALID_RECORD, r
        assert r["record_errors"] == [
            (1, f"Compacted topic cannot accept message without key in topic partition {compacted}-0")
        ], r
        assert r["error_message"].startswith("One or more records have been rejected due to 1 record errors"), r


def test_compressed_batches_are_read_whatever_the_topic_rules(shared_broker, topic):
    """Kafka's LogValidator reads the records of every batch, compressed ones too, even on a
    topic where no rule could refuse a record (here: no timestamp window at all). That is
    what refuses a batch whose section does not inflate (UNKNOWN_SERVER_ERROR, from Kafka's
    bare KafkaException) and one whose records do not match its count (INVALID_RECORD), both
    without an error message. Strata stored them unread: a batch every consumer would then
    fail on."""
    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=1, config={"message.timestamp.after.max.ms": str(2**63 - 1)})
    records = [(b"k", b"v0"), (b"k", b"v1")]
    with RawConn("127.0.0.1", shared_broker.port) as c:
        garbage = record_batch(records, compression=4, records_section=b"\xab" * 40)  # not zstd
        r = c.produce(topic, 0, garbage)
        assert (r["error_code"], r["error_message"], r["record_errors"]) == (UNKNOWN_SERVER_ERROR, None, []), r
        for count in (1, 3):
            r = c.produce(topic, 0, record_batch(records, compression=1, records_count=count))
            assert (r["error_code"], r["error_message"]) == (INVALID_RECORD, None), (count, r)
        r = c.produce(topic, 0, record_batch(records, compression=1))
        assert (r["error_code"], r["base_offset"]) == (0, 0), r
    assert [m.value for m in consume_all(bs, topic, [0])[0]] == [b"v0", b"v1"]


def test_produce_to_nonexistent_partition(shared_broker, topic):
    create_topic(make_admin(shared_broker.bootstrap), topic, partitions=1)
    tracker = DeliveryTracker()
    p = make_producer(shared_broker.bootstrap, **{"message.timeout.ms": 3000})
    p.produce(topic, value=b"x", partition=5, on_delivery=tracker.cb(0))
    p.flush(10)
    assert 0 in tracker.failed
    assert tracker.failed[0].code() in (KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART)


def test_delete_records(shared_broker, topic):
    bs = shared_broker.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, partitions=1)
    p = make_producer(bs)
    for i in range(20):
        p.produce(topic, value=b"%d" % i, partition=0)
    flush_all(p)
    tp = TopicPartition(topic, 0, 7)
    res = admin.delete_records([tp])
    [(k, fut)] = res.items()
    assert fut.result(timeout=10).low_watermark == 7
    assert watermarks(bs, topic, [0]) == {0: (7, 20)}
    recs = consume_all(bs, topic, [0])
    assert [r.offset for r in recs[0]] == list(range(7, 20))
    assert [r.value for r in recs[0]] == [b"%d" % i for i in range(7, 20)]
    lo = admin.list_offsets({TopicPartition(topic, 0): OffsetSpec.earliest()})
    assert list(lo.values())[0].result(timeout=10).offset == 7
    # beyond the high watermark is an error
    bad = admin.delete_records([TopicPartition(topic, 0, 50)])
    expect_kafka_error(list(bad.values())[0], KafkaError.OFFSET_OUT_OF_RANGE)
    # -1 = up to the high watermark
    done = admin.delete_records([TopicPartition(topic, 0, -1)])
    assert list(done.values())[0].result(timeout=10).low_watermark == 20
    assert watermarks(bs, topic, [0]) == {0: (20, 20)}


# --------------------------------------------------------------------------
# kafka-python
# --------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "gzip"])
@pytest.mark.parametrize("idempotent", [True, False], ids=["idem", "plain"])
def test_kafka_python_round_trip(shared_broker, topic, compression, idempotent):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTP

    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=2)
    prod = KafkaProducer(
        bootstrap_servers=bs,
        compression_type=compression,
        linger_ms=5,
        acks="all",
        enable_idempotence=idempotent,
        request_timeout_ms=10000,
    )
    n = 200
    futures = []
    try:
        for i in range(n):
            headers = [("idx", str(i).encode()), ("kind", b"kp")]
            key = None if i % 10 == 0 else f"k{i}".encode()
            futures.append(prod.send(topic, value=f"v{i}".encode() * 3, key=key, headers=headers, partition=i % 2))
        prod.flush(timeout=20)
        metas = [f.get(timeout=10) for f in futures]
    finally:
        prod.close(timeout=5)
    for part in range(2):
        assert [m.offset for m in metas[part::2]] == list(range(n // 2))

    cons = KafkaConsumer(
        bootstrap_servers=bs,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        request_timeout_ms=10000,
    )
    try:
        tps = [KTP(topic, 0), KTP(topic, 1)]
        cons.assign(tps)
        cons.seek_to_beginning(*tps)
        got = {0: [], 1: []}

        def poll_some():
            for tp, records in cons.poll(timeout_ms=200).items():
                got[tp.partition].extend(records)
            return sum(map(len, got.values())) >= n

        wait_until(poll_some, 20, msg=lambda: f"kafka-python consumed {sum(map(len, got.values()))}/{n}")
    finally:
        cons.close()
    for part in range(2):
        ids = list(range(part, n, 2))
        assert [r.offset for r in got[part]] == list(range(len(ids)))
        for r, i in zip(got[part], ids):
            assert r.value == f"v{i}".encode() * 3
            assert r.key == (None if i % 10 == 0 else f"k{i}".encode())
            assert [(h[0], h[1]) for h in r.headers] == [("idx", str(i).encode()), ("kind", b"kp")]


def test_cross_client_compat(shared_broker, topic):
    """Written by librdkafka (gzip), read by kafka-python, and vice versa."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTP

    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=1)
    p = make_producer(bs, **{"compression.type": "gzip"})
    for i in range(50):
        p.produce(topic, key=b"ck%d" % i, value=b"from-librdkafka-%d" % i, headers=[("src", b"ck")], partition=0)
    flush_all(p)
    kp = KafkaProducer(bootstrap_servers=bs, linger_ms=5)
    try:
        for i in range(50):
            kp.send(topic, key=b"kp%d" % i, value=b"from-kafka-python-%d" % i, headers=[("src", b"kp")], partition=0)
        kp.flush(timeout=20)
    finally:
        kp.close(timeout=5)

    recs = consume_all(bs, topic, [0])
    assert [r.value for r in recs[0]] == [b"from-librdkafka-%d" % i for i in range(50)] + [
        b"from-kafka-python-%d" % i for i in range(50)
    ]
    cons = KafkaConsumer(bootstrap_servers=bs, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100)
    try:
        tp = KTP(topic, 0)
        cons.assign([tp])
        cons.seek(tp, 0)
        got = []
        wait_until(lambda: got.extend(cons.poll(timeout_ms=200).get(tp, [])) or len(got) >= 100, 20)
        assert [r.key for r in got[:2]] == [b"ck0", b"ck1"]
        assert [r.offset for r in got] == list(range(100))
    finally:
        cons.close()
