"""Fetch semantics on the wire (long poll, out of range, KIP-74), plus
OffsetForLeaderEpoch and DescribeLogDirs."""

from __future__ import annotations

import os
import threading
import time

from confluent_kafka import TopicPartition
from confluent_kafka.admin import OffsetSpec

from helpers import create_topic, flush_all, make_admin, make_producer
from kwire import RawConn, decode_batches, record_batch

OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
UNKNOWN_LEADER_EPOCH = 75


def _produce(bs, topic, n, partition=0, size=10):
    p = make_producer(bs)
    for i in range(n):
        p.produce(topic, value=(b"%d-" % i).ljust(size, b"x"), partition=partition)
    flush_all(p)


def _leader_epoch(admin, topic, partition=0) -> int:
    [(_, fut)] = admin.list_offsets({TopicPartition(topic, partition): OffsetSpec.latest()}, request_timeout=10).items()
    epoch = fut.result(timeout=10).leader_epoch
    assert epoch is not None and epoch >= 0, f"ListOffsets returned no leader epoch: {epoch}"
    return epoch


def test_fetch_out_of_range(shared_broker, topic):
    admin = make_admin(shared_broker.bootstrap)
    create_topic(admin, topic, partitions=1)
    _produce(shared_broker.bootstrap, topic, 10)
    with RawConn("127.0.0.1", shared_broker.port) as c:
        assert c.fetch(topic, 0, 1000)["error_code"] == OFFSET_OUT_OF_RANGE
        assert c.fetch(topic, 0, -5)["error_code"] == OFFSET_OUT_OF_RANGE
        at_end = c.fetch(topic, 0, 10)  # == high watermark: empty, not an error
        assert at_end["error_code"] == 0 and at_end["high_watermark"] == 10
        assert decode_batches(at_end["records"]) == []
        # below the log start offset after DeleteRecords
        [(_, fut)] = admin.delete_records([TopicPartition(topic, 0, 5)]).items()
        fut.result(timeout=10)
        below = c.fetch(topic, 0, 2)
        assert below["error_code"] == OFFSET_OUT_OF_RANGE
        ok = c.fetch(topic, 0, 5)
        assert ok["error_code"] == 0 and ok["log_start_offset"] == 5


def test_fetch_unknown_partition(shared_broker, topic):
    create_topic(make_admin(shared_broker.bootstrap), topic, partitions=1)
    with RawConn("127.0.0.1", shared_broker.port) as c:
        assert c.fetch(topic, 7, 0)["error_code"] == UNKNOWN_TOPIC_OR_PARTITION
        assert c.fetch("no-such-topic-fetch", 0, 0)["error_code"] == UNKNOWN_TOPIC_OR_PARTITION


def test_fetch_long_poll(shared_broker, topic):
    create_topic(make_admin(shared_broker.bootstrap), topic, partitions=1)
    with RawConn("127.0.0.1", shared_broker.port) as c:
        # nothing to return: the broker waits ~max_wait_ms instead of answering at once
        t0 = time.monotonic()
        res = c.fetch(topic, 0, 0, max_wait_ms=500)
        elapsed = time.monotonic() - t0
        assert res["error_code"] == 0 and decode_batches(res["records"]) == []
        assert 0.35 <= elapsed < 3, f"empty fetch with max_wait_ms=500 returned after {elapsed:.3f}s"

    # a parked fetch completes as soon as data arrives
    result = {}

    def parked_fetch():
        with RawConn("127.0.0.1", shared_broker.port) as c:
            t = time.monotonic()
            result["res"] = c.fetch(topic, 0, 0, max_wait_ms=8000)
            result["elapsed"] = time.monotonic() - t

    th = threading.Thread(target=parked_fetch)
    th.start()
    time.sleep(0.3)  # deliberate: let the fetch park before producing (ordering, not waiting)
    with RawConn("127.0.0.1", shared_broker.port) as p:
        assert p.produce(topic, 0, record_batch([(b"k", b"wake-up")]))["error_code"] == 0
    th.join(15)
    assert not th.is_alive()
    recs = decode_batches(result["res"]["records"])
    assert [r.value for r in recs] == [b"wake-up"]
    assert result["elapsed"] < 4, f"parked fetch took {result['elapsed']:.2f}s (max_wait 8s): not woken by produce"


def test_fetch_returns_oversized_first_batch_kip74(shared_broker, topic):
    create_topic(make_admin(shared_broker.bootstrap), topic, partitions=1)
    big = os.urandom(300_000)
    with RawConn("127.0.0.1", shared_broker.port) as c:
        assert c.produce(topic, 0, record_batch([(None, big)]))["error_code"] == 0
        assert c.produce(topic, 0, record_batch([(None, b"small")]))["error_code"] == 0
        res = c.fetch(topic, 0, 0, max_bytes=1000, partition_max_bytes=1000)
        assert res["error_code"] == 0
        recs = decode_batches(res["records"])
        assert recs and recs[0].value == big, "first batch larger than max_bytes must still be returned"


def test_offset_for_leader_epoch(shared_broker, topic):
    admin = make_admin(shared_broker.bootstrap)
    create_topic(admin, topic, partitions=1)
    _produce(shared_broker.bootstrap, topic, 10)
    epoch = _leader_epoch(admin, topic)
    with RawConn("127.0.0.1", shared_broker.port) as c:
        r = c.offset_for_leader_epoch(topic, 0, epoch)
        assert (r["error_code"], r["leader_epoch"], r["end_offset"]) == (0, epoch, 10), r
        r = c.offset_for_leader_epoch(topic, 0, epoch, current_leader_epoch=epoch)
        assert (r["error_code"], r["end_offset"]) == (0, 10), r
        # an epoch newer than any the log has seen: undefined
        r = c.offset_for_leader_epoch(topic, 0, epoch + 5)
        assert (r["error_code"], r["leader_epoch"], r["end_offset"]) == (0, -1, -1), r
        # the client claims a newer current leader epoch than the broker knows
        r = c.offset_for_leader_epoch(topic, 0, epoch, current_leader_epoch=epoch + 5)
        assert r["error_code"] == UNKNOWN_LEADER_EPOCH, r
        r = c.offset_for_leader_epoch("no-such-topic-olep", 0, 0)
        assert r["error_code"] == UNKNOWN_TOPIC_OR_PARTITION, r


def test_describe_log_dirs(shared_broker, topic):
    from kafka.admin import KafkaAdminClient

    create_topic(make_admin(shared_broker.bootstrap), topic, partitions=2)
    _produce(shared_broker.bootstrap, topic, 50, size=200)
    ka = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap, request_timeout_ms=10000)
    try:
        [per_broker] = ka.describe_log_dirs(topic_partitions={topic: [0, 1]})
    finally:
        ka.close()
    [log_dir] = per_broker["log_dirs"]
    assert log_dir["error_code"] == 0
    assert os.path.realpath(log_dir["log_dir"]).startswith(os.path.realpath(shared_broker.data_dir))
    sizes = {
        p["partition_index"]: p["partition_size"] for t in log_dir["topics"] if t["name"] == topic for p in t["partitions"]
    }
    on_disk = {
        part: sum(f.stat().st_size for f in shared_broker.partition_dir(topic, part).glob("*.log")) for part in (0, 1)
    }
    assert sizes == on_disk
    assert sizes[0] > 50 * 200 and sizes[1] == 0
    # v4+: the data directory's file system, as statvfs counts it (Kafka's FileStore
    # getTotalSpace / getUsableSpace), not -1.
    fs = os.statvfs(log_dir["log_dir"])
    assert log_dir["total_bytes"] == fs.f_blocks * fs.f_frsize, log_dir
    usable = fs.f_bavail * fs.f_frsize
    assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"], log_dir
    assert abs(log_dir["usable_bytes"] - usable) < 1 << 30, (log_dir["usable_bytes"], usable)


def test_describe_log_dirs_before_v4_keeps_the_disk_fields_out(shared_broker, topic):
    """kafka-python pinned to Kafka 2.0 asks DescribeLogDirs v1, which has no disk-space
    fields: the answer must still encode (the connection stays up) and list the partition."""
    from kafka.admin import KafkaAdminClient

    create_topic(make_admin(shared_broker.bootstrap), topic, partitions=1)
    _produce(shared_broker.bootstrap, topic, 5)
    ka = KafkaAdminClient(
        bootstrap_servers=shared_broker.bootstrap, api_version=(2, 0), request_timeout_ms=10000
    )
    try:
        [per_broker] = ka.describe_log_dirs(topic_partitions={topic: [0]})
    finally:
        ka.close()
    [log_dir] = per_broker["log_dirs"]
    assert log_dir["error_code"] == 0
    assert "total_bytes" not in log_dir or log_dir["total_bytes"] == -1, log_dir
    assert [t["name"] for t in log_dir["topics"]] == [topic]
