"""Clients from the field: old releases, and current ones told to speak old versions.

- Debian's kcat (1.7.1 linking librdkafka 2.0.2, `apt install kcat`): produce, consume with
  and without a group, list metadata, query offsets by time (`-Q`).
- kafka-python with `api_version` pinned to a range of broker releases: it then picks the
  request versions that release served, without asking ApiVersions.
- librdkafka with `api.version.request=false` and `broker.version.fallback`: the versions it
  assumes for those releases, again without ApiVersions.

Every version these clients pick is one the broker advertises, so each must be answered as
Kafka answers it; the broker log must not show a response it could not encode.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid

import pytest
from confluent_kafka import TopicPartition

from helpers import create_topic, make_admin, make_consumer, make_producer, wait_until

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
requires_kcat = pytest.mark.skipif(
    KCAT is None and os.environ.get("STRATA_REQUIRE_KCAT") != "1",
    reason="kcat is not installed (apt install kcat)",
)

FAST_GROUPS = {"group.initial.rebalance.delay.ms": 0}


@pytest.fixture
def old_broker(broker_factory):
    b = broker_factory(overrides=FAST_GROUPS)
    yield b
    log = b.log_path.read_text(errors="replace")
    bad = [line for line in log.splitlines() if "cannot encode" in line or "closing connection" in line]
    assert not bad, "the broker refused or could not answer an old client:\n" + "\n".join(bad)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------------------------
# Debian's kcat (librdkafka 2.0.x)
# --------------------------------------------------------------------------------------------


def kcat(broker, *args: str, input: bytes | None = None, timeout: float = 30) -> str:
    assert KCAT is not None, "kcat is required here (apt install kcat)"
    proc = subprocess.run(
        [KCAT, "-b", broker.bootstrap, *args],
        input=input,
        capture_output=True,
        timeout=timeout,
    )
    out = proc.stdout.decode(errors="replace")
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"kcat {' '.join(args)} exited {proc.returncode}:\n{out}\n{err}"
    return out


@requires_kcat
def test_kcat_version_is_an_old_librdkafka() -> None:
    out = subprocess.run([KCAT, "-V"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", out)
    assert m, out
    # The point of these tests is a client older than the suite's confluent-kafka.
    import confluent_kafka

    assert tuple(map(int, m.groups())) < tuple(map(int, confluent_kafka.libversion()[0].split(".")[:3]))


@requires_kcat
@pytest.mark.timeout(120)
def test_kcat_produce_consume_metadata_and_offsets_by_time(old_broker) -> None:
    topic = unique("kcat")
    # The README's example: produce (auto-creating the topic), then consume to the end.
    before = int(time.time() * 1000)
    kcat(old_broker, "-t", topic, "-P", "-K:", input=b"k1:hello\nk2:world\n")
    time.sleep(0.05)
    middle = int(time.time() * 1000)
    time.sleep(0.05)
    kcat(old_broker, "-t", topic, "-P", "-K:", input=b"k3:again\n")

    out = kcat(old_broker, "-t", topic, "-C", "-e", "-f", "%k=%s@%o\n")
    assert out.split() == ["k1=hello@0", "k2=world@1", "k3=again@2"], out

    # Metadata listing (-L) names the topic and this broker.
    listing = kcat(old_broker, "-L", "-t", topic)
    assert f'topic "{topic}" with 1 partitions' in listing, listing
    assert "partition 0, leader 1" in listing, listing

    # Offsets by time (-Q): the first record at or after the time.
    first = kcat(old_broker, "-Q", "-t", f"{topic}:0:{before}")
    assert re.search(rf"{re.escape(topic)} \[0\]\s+offset 0\b", first), first
    later = kcat(old_broker, "-Q", "-t", f"{topic}:0:{middle}")
    assert re.search(rf"{re.escape(topic)} \[0\]\s+offset 2\b", later), later


@requires_kcat
@pytest.mark.timeout(120)
def test_kcat_consumes_with_a_group_and_resumes_from_its_commit(old_broker) -> None:
    topic = unique("kcat-group")
    group = unique("kcat-group")
    kcat(old_broker, "-t", topic, "-P", input=b"a\nb\nc\n")
    out = kcat(old_broker, "-G", group, topic, "-e", "-o", "beginning", "-f", "%s\n", timeout=60)
    assert out.split() == ["a", "b", "c"], out
    kcat(old_broker, "-t", topic, "-P", input=b"d\n")
    # The group committed its position: a second run sees only the new record.
    out = kcat(old_broker, "-G", group, topic, "-e", "-f", "%s\n", timeout=60)
    assert out.split() == ["d"], out


# --------------------------------------------------------------------------------------------
# kafka-python pinned to old broker versions
# --------------------------------------------------------------------------------------------

KAFKA_PYTHON_VERSIONS = [(1, 1), (2, 0), (2, 4), (2, 8), (3, 0), (3, 6), (4, 0)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("api_version", KAFKA_PYTHON_VERSIONS, ids=lambda v: "%d.%d" % v)
def test_kafka_python_pinned_api_version(old_broker, api_version) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition as KTP

    bs = old_broker.bootstrap
    topic = unique("kp-pinned")
    group = unique("kp-pinned")
    admin = KafkaAdminClient(bootstrap_servers=bs, api_version=api_version, request_timeout_ms=10000)
    try:
        from kafka.admin import NewTopic

        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        wait_until(lambda: topic in admin.list_topics(), timeout=10, msg="topic created")

        producer = KafkaProducer(bootstrap_servers=bs, api_version=api_version, linger_ms=0)
        t0 = int(time.time() * 1000) - 10_000
        futures = [
            producer.send(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % 2, timestamp_ms=t0 + i)
            for i in range(10)
        ]
        producer.flush(30)
        offsets = [f.get(timeout=10).offset for f in futures]
        assert sorted(offsets) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4], offsets
        producer.close()

        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bs,
            api_version=api_version,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=20000,
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
        )
        seen = []
        for msg in consumer:
            seen.append(msg.value)
            if len(seen) == 10:
                break
        assert sorted(seen) == sorted(b"v%d" % i for i in range(10)), seen
        consumer.commit()
        tps = [KTP(topic, 0), KTP(topic, 1)]
        assert [consumer.committed(tp) for tp in tps] == [5, 5]
        # Offsets by time: the record with timestamp t0 + 4 is offset 2 of partition 0.
        found = consumer.offsets_for_times({KTP(topic, 0): t0 + 4})
        assert found[KTP(topic, 0)].offset == 2, found
        ends = consumer.end_offsets(tps)
        assert ends == {tps[0]: 5, tps[1]: 5}, ends
        consumer.close()

        groups = {g["group_id"] for g in admin.list_groups()}
        assert group in groups, groups
        committed = admin.list_group_offsets([group])[group]
        assert {tp.partition: o.offset for tp, o in committed.items()} == {0: 5, 1: 5}, committed
        admin.delete_topics([topic])
    finally:
        admin.close()


# --------------------------------------------------------------------------------------------
# librdkafka without ApiVersions (api.version.request=false)
# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fallback", ["0.11.0", "1.0.0", "2.0.0"])
def test_librdkafka_version_fallback(old_broker, fallback) -> None:
    topic = unique("fallback")
    group = unique("fallback")
    create_topic(make_admin(old_broker.bootstrap), topic, partitions=2)
    legacy = {"api_version_request": False, "broker_version_fallback": fallback}
    p = make_producer(old_broker.bootstrap, linger_ms=0, **legacy)
    t0 = int(time.time() * 1000) - 10_000
    acked = []
    for i in range(10):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % 2, timestamp=t0 + i,
                  on_delivery=lambda err, msg: acked.append((err, msg.offset())))
    assert p.flush(30) == 0
    assert all(err is None for err, _ in acked) and len(acked) == 10, acked

    c = make_consumer(old_broker.bootstrap, group_id=group, enable_auto_offset_store=True, **legacy)
    c.subscribe([topic])
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < 10 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            seen.append(m.value())
    assert sorted(seen) == sorted(b"v%d" % i for i in range(10)), seen
    c.commit(asynchronous=False)
    committed = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
    assert [tp.offset for tp in committed] == [5, 5], committed
    # Offsets by time go through ListOffsets at the fallback's version.
    found = c.offsets_for_times([TopicPartition(topic, 0, t0 + 4)], timeout=10)
    assert found[0].offset == 2, found
    c.close()
