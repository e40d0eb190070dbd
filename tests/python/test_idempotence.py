"""Idempotent producer (InitProducerId + producer id / sequence numbers)."""

from __future__ import annotations

from helpers import DeliveryTracker, consume_all, create_topic, flush_all, make_admin, make_producer
from kwire import RawConn, record_batch

# Kafka error codes
NONE = 0
CORRUPT_MESSAGE = 2
DUPLICATE_SEQUENCE_NUMBER = 46
OUT_OF_ORDER_SEQUENCE_NUMBER = 45


def test_idempotent_producer_exactly_once_in_order(shared_broker, topic):
    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=2)
    n = 4000
    tracker = DeliveryTracker()
    p = make_producer(
        bs,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "batch.num.messages": 50,  # many small in-flight batches
            "linger.ms": 1,
            "compression.type": "lz4",
        },
    )
    for i in range(n):
        p.produce(topic, key=b"%d" % (i % 17), value=b"%08d" % i, partition=i % 2, on_delivery=tracker.cb(i))
        if i % 200 == 0:
            p.poll(0)
    flush_all(p, 60)
    assert not tracker.failed, list(tracker.failed.items())[:5]

    recs = consume_all(bs, topic, [0, 1])
    for part in range(2):
        vals = [int(r.value) for r in recs[part]]
        expected = list(range(part, n, 2))
        assert len(vals) == len(set(vals)), f"partition {part}: duplicates"
        assert vals == expected, f"partition {part}: content/order mismatch (first diff at {_first_diff(vals, expected)})"
        assert [r.offset for r in recs[part]] == list(range(len(expected)))
        assert [tracker.acked[i] for i in expected] == [(part, o) for o in range(len(expected))]


def _first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def test_kafka_python_idempotent_default(shared_broker, topic):
    """kafka-python 3 enables idempotence by default."""
    from kafka import KafkaProducer

    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=1)
    prod = KafkaProducer(bootstrap_servers=bs, linger_ms=2, request_timeout_ms=10000)
    try:
        futs = [prod.send(topic, value=b"%d" % i, partition=0) for i in range(1000)]
        prod.flush(timeout=30)
        offsets = [f.get(timeout=10).offset for f in futs]
    finally:
        prod.close(timeout=5)
    assert offsets == list(range(1000))
    recs = consume_all(bs, topic, [0])
    assert [r.value for r in recs[0]] == [b"%d" % i for i in range(1000)]


def test_raw_duplicate_batch_is_deduplicated(shared_broker, topic):
    """Re-sending an already-written batch (same producer id/epoch/sequence)
    must not append it again; a sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER."""
    create_topic(make_admin(shared_broker.bootstrap), topic, partitions=1)
    with RawConn("127.0.0.1", shared_broker.port) as c:
        pid, epoch = c.init_producer_id()
        assert pid >= 0 and epoch >= 0

        b0 = record_batch([(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2")], producer_id=pid, producer_epoch=epoch, base_sequence=0)
        r = c.produce(topic, 0, b0)
        assert (r["error_code"], r["base_offset"]) == (NONE, 0), r

        # exact retry of the same batch: accepted (no error) but not appended again
        r = c.produce(topic, 0, b0)
        assert r["error_code"] in (NONE, DUPLICATE_SEQUENCE_NUMBER), r
        if r["error_code"] == NONE:
            assert r["base_offset"] == 0, f"duplicate reported a new offset: {r}"

        b1 = record_batch([(b"k3", b"v3")], producer_id=pid, producer_epoch=epoch, base_sequence=3)
        r = c.produce(topic, 0, b1)
        assert (r["error_code"], r["base_offset"]) == (NONE, 3), r

        # a gap in the sequence
        gap = record_batch([(b"kx", b"vx")], producer_id=pid, producer_epoch=epoch, base_sequence=10)
        r = c.produce(topic, 0, gap)
        assert r["error_code"] == OUT_OF_ORDER_SEQUENCE_NUMBER, r

        f, recs = c.fetch_all(topic, 0, 0)
        assert f["high_watermark"] == 4, {k: v for k, v in f.items() if k != "records"}
        assert [(x.offset, x.key, x.value) for x in recs] == [
            (0, b"k0", b"v0"),
            (1, b"k1", b"v1"),
            (2, b"k2", b"v2"),
            (3, b"k3", b"v3"),
        ]


def test_raw_corrupt_crc_rejected(shared_broker, topic):
    create_topic(make_admin(shared_broker.bootstrap), topic, partitions=1)
    with RawConn("127.0.0.1", shared_broker.port) as c:
        r = c.produce(topic, 0, record_batch([(b"k", b"v")], corrupt_crc=True))
        assert r["error_code"] == CORRUPT_MESSAGE, r
        # good batch afterwards still lands at offset 0
        r = c.produce(topic, 0, record_batch([(b"k", b"v")]))
        assert (r["error_code"], r["base_offset"]) == (NONE, 0), r
        f, recs = c.fetch_all(topic, 0, 0)
        assert [(x.offset, x.value) for x in recs] == [(0, b"v")]


def test_describe_producers_lists_idempotent_producer_state(broker, topic):
    """DescribeProducers (KIP-664) reports the producer id, epoch and last sequence a
    partition holds for an idempotent producer."""
    from kafka.protocol.admin import DescribeProducersRequest, DescribeProducersResponse

    from helpers import raw_connect, read_frame

    create_topic(make_admin(broker.bootstrap), topic, partitions=1)
    with RawConn("127.0.0.1", broker.port) as conn:
        pid, epoch = conn.init_producer_id()
        for seq in (0, 1, 2):
            batch = record_batch([(b"k", b"v")], producer_id=pid, producer_epoch=epoch, base_sequence=seq)
            assert conn.produce(topic, 0, batch)["error_code"] == 0
    req = DescribeProducersRequest(version=0, topics=[(topic, [0, 7])])
    req.with_header(correlation_id=1, client_id="t")
    sock = raw_connect(broker)
    try:
        sock.sendall(bytes(req.encode(header=True, framed=True)))
        resp = DescribeProducersResponse.decode(read_frame(sock), version=0, header=True)
    finally:
        sock.close()
    [t] = resp.topics
    p0, p7 = sorted(t.partitions, key=lambda p: p.partition_index)
    assert p0.error_code == 0
    assert [(s.producer_id, s.producer_epoch, s.last_sequence) for s in p0.active_producers] == [(pid, epoch, 2)]
    assert p7.error_code == 3  # UNKNOWN_TOPIC_OR_PARTITION
