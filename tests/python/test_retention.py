"""Log retention by size and by time, segment rolling."""

from __future__ import annotations

import os
import re
import time

from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from helpers import consume_all, create_topic, flush_all, make_admin, make_producer, wait_until, watermarks

SEGMENT = 1048576  # Kafka's minimum topic-level segment.bytes
RECORD = 1000
SEG_RE = re.compile(r"^(\d{20})\.log$")


def _segments(broker, topic, partition=0) -> list[int]:
    """Base offsets of the live .log segment files of a partition."""
    d = broker.partition_dir(topic, partition)
    return sorted(int(m.group(1)) for f in os.listdir(d) if (m := SEG_RE.match(f)))


def _produce(bs, topic, n, timestamp=None, start=0):
    p = make_producer(bs, **{"batch.size": 65536, "linger.ms": 2, "compression.type": "none"})
    payload = {}
    for i in range(start, start + n):
        v = i.to_bytes(4, "big") + os.urandom(RECORD - 4)
        payload[i] = v
        kw = {"timestamp": timestamp} if timestamp else {}
        p.produce(topic, value=v, partition=0, **kw)
        if i % 500 == 0:
            p.poll(0)
    flush_all(p, 60)
    return payload


def test_size_based_retention(broker_factory, topic):
    b = broker_factory(overrides={"log.retention.check.interval.ms": 200})
    bs = b.bootstrap
    create_topic(make_admin(bs), topic, partitions=1, config={"segment.bytes": str(SEGMENT), "retention.bytes": str(SEGMENT)})
    n = 3600  # ~3.6 MB -> 4 segments
    payload = _produce(bs, topic, n)

    def size_of(segs):
        # A segment deleted between the listing and the stat counts as not settled yet.
        try:
            return sum((b.partition_dir(topic, 0) / f"{s:020d}.log").stat().st_size for s in segs)
        except FileNotFoundError:
            return float("inf")

    # Retention runs every 200 ms: a pass that ran while the producer was still writing deletes
    # only what was over the limit then, so wait for the pass after the last write (what is
    # left is then at most retention.bytes + one segment).
    def retained():
        lo, hi = watermarks(bs, topic, [0])[0]
        segs = _segments(b, topic)
        settled = lo > 0 and 0 not in segs and size_of(segs) <= 2 * SEGMENT + 64 * 1024
        return settled and (lo, hi, segs)

    lo, hi, segs = wait_until(retained, 20, interval=0.2, msg="size-based retention to delete the oldest segments")
    print(f"size retention: lo={lo} hi={hi} segments={segs}")
    assert hi == n
    assert (b.partition_dir(topic, 0) / "00000000000000000000.log").exists() is False
    # the log start offset is the base offset of the first remaining segment
    assert lo == segs[0], (lo, segs)
    # and at least retention.bytes worth is kept
    assert (hi - lo) * RECORD >= SEGMENT * 0.9, (lo, hi)

    recs = consume_all(bs, topic, [0])[0]
    assert [r.offset for r in recs] == list(range(lo, hi))
    assert all(r.value == payload[r.offset] for r in recs)


def test_time_based_retention_after_dynamic_config_change(broker_factory, topic):
    b = broker_factory(overrides={"log.retention.check.interval.ms": 200})
    bs = b.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, partitions=1, config={"segment.bytes": str(SEGMENT)})
    old = int(time.time() * 1000) - 3_600_000  # one hour ago: inside the 7 day default
    n_old = 2300
    _produce(bs, topic, n_old, timestamp=old)
    fresh = _produce(bs, topic, 5, start=n_old)  # current timestamps, in the active segment
    segs = _segments(b, topic)
    assert len(segs) >= 3, f"expected segments to roll at segment.bytes={SEGMENT}: {segs}"
    assert watermarks(bs, topic, [0])[0] == (0, n_old + 5)

    # shrink retention to 10 minutes: the segments holding only hour-old records expire
    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("retention.ms", "600000", incremental_operation=AlterConfigOpType.SET)],
    )
    admin.incremental_alter_configs([res], request_timeout=10)[res].result(timeout=10)

    def retained():
        lo, hi = watermarks(bs, topic, [0])[0]
        return lo > 0 and (lo, hi)

    lo, hi = wait_until(retained, 20, interval=0.2, msg="time-based retention to delete expired segments")
    print(f"time retention: lo={lo} hi={hi} segments before={segs} after={_segments(b, topic)}")
    assert hi == n_old + 5
    last_seg = segs[-1]
    assert lo <= last_seg, "retention deleted the segment that holds fresh records"
    recs = consume_all(bs, topic, [0])[0]
    tail = {r.offset: r.value for r in recs if r.offset >= n_old}
    assert tail == fresh


def test_segments_roll_at_segment_bytes(shared_broker, topic):
    bs = shared_broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=1, config={"segment.bytes": str(SEGMENT)})
    _produce(bs, topic, 2500)
    segs = _segments(shared_broker, topic)
    assert len(segs) >= 3 and segs[0] == 0, segs
    d = shared_broker.partition_dir(topic, 0)
    for s in segs[:-1]:
        size = (d / f"{s:020d}.log").stat().st_size
        assert size <= SEGMENT, f"segment {s} is {size} bytes > segment.bytes"
    recs = consume_all(bs, topic, [0])[0]
    assert [r.offset for r in recs] == list(range(2500))
