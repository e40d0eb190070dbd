"""Client byte-rate quotas enforced as Kafka enforces them (KIP-13, KIP-219, KIP-546).

Quotas are set with AlterClientQuotas; producers and consumers over theirs get
`throttle_time_ms` in their answers and their connection is muted that long (librdkafka reports
it through `throttle_cb`); clients older than KIP-219 get their answer late instead. Nothing is
lost: a throttled fetch answers nothing and is asked again.

The brokers here keep 3 quota samples of a second (`quota.window.num=3`), so a client's first
burst allowance is 2 s of its quota rather than Kafka's default 10 s, and the tests stay short.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid

from confluent_kafka import TopicPartition
from kafka.record.default_records import DefaultRecordBatchBuilder

from helpers import create_topic, make_admin, make_consumer, make_producer
from versioned_wire import VersionedClient

SHORT_WINDOW = {"quota.window.num": "3"}
RECORD = b"q" * 1000


def set_quota(broker, name: str | None, key: str, value: float | None, entity_type: str = "client-id") -> None:
    """Sets (or with `value` None removes) quota `key` of entity `entity_type`=`name` (None: the
    default entity)."""
    with VersionedClient("127.0.0.1", broker.port, client_id="quota-admin") as admin:
        resp = admin.call(49, 1, {
            "entries": [{"entity": [{"entity_type": entity_type, "entity_name": name}],
                         "ops": [{"key": key, "value": value or 0.0, "remove": value is None}]}],
            "validate_only": False,
        })
    assert [e.error_code for e in resp.entries] == [0], resp


def metric_lines(broker, prefix: str) -> list[str]:
    return [line for line in broker.metrics().splitlines() if line.startswith(prefix)]


def throttle_lines(broker, client_id: str) -> list[str]:
    return [line for line in metric_lines(broker, "strata_quota_throttle_time_ms_total{")
            if f'client_id="{client_id}"' in line]


def quota_broker(broker_factory, name: str, partitions: int = 1):
    """A broker with the short quota window and a new topic of `partitions` partitions."""
    broker = broker_factory(overrides=SHORT_WINDOW)
    topic = f"quota-{name}-{uuid.uuid4().hex[:6]}"
    create_topic(make_admin(broker.bootstrap), topic, partitions=partitions)
    return broker, topic


def produce_in_chunks(broker, topic: str, client_id: str, records: int, throttles: list[float]) -> float:
    """Produces `records` records of 1 KB, 50 at a time, each chunk flushed; returns seconds."""
    p = make_producer(broker.bootstrap, **{"client.id": client_id,
                                            "throttle_cb": lambda e: throttles.append(e.throttle_time)})
    started = time.monotonic()
    for start in range(0, records, 50):
        for i in range(start, min(start + 50, records)):
            p.produce(topic, key=str(i).encode(), value=RECORD)
        assert p.flush(60) == 0, "records not acknowledged"
    elapsed = time.monotonic() - started
    p.poll(0)
    return elapsed


def test_a_producer_over_its_quota_is_throttled_and_keeps_every_record(broker_factory):
    broker, topic = quota_broker(broker_factory, "produce")
    set_quota(broker, "q-producer", "producer_byte_rate", 50_000)

    throttled: list[float] = []
    # 300 KB at 50 KB/s, of which 2 s' worth (100 KB) passes at once: about 4 s.
    elapsed = produce_in_chunks(broker, topic, "q-producer", 300, throttled)
    assert throttled and max(throttled) > 0, "librdkafka saw no throttle_time_ms"
    assert elapsed >= 2.5, f"300 KB at 50 KB/s took only {elapsed:.1f} s"
    assert throttle_lines(broker, "q-producer"), broker.metrics()

    free: list[float] = []
    produce_in_chunks(broker, topic, "q-free", 300, free)
    assert not [t for t in free if t > 0], f"a client without a quota was throttled: {free}"
    assert not throttle_lines(broker, "q-free")

    c = make_consumer(broker.bootstrap)
    c.assign([TopicPartition(topic, 0, 0)])
    keys = []
    deadline = time.monotonic() + 30
    while len(keys) < 600 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            keys.append(int(m.key()))
    c.close()
    assert sorted(keys) == sorted(list(range(300)) * 2), "every acknowledged record, once"


def test_a_consumer_over_its_quota_is_throttled_and_reads_everything_once(broker_factory):
    broker, topic = quota_broker(broker_factory, "fetch", partitions=2)
    produce_in_chunks(broker, topic, "q-loader", 300, [])
    set_quota(broker, "q-consumer", "consumer_byte_rate", 50_000)

    throttled: list[float] = []
    c = make_consumer(broker.bootstrap, **{"client.id": "q-consumer",
                                          "group.id": f"g-{topic}",
                                          "throttle_cb": lambda e: throttled.append(e.throttle_time)})
    c.subscribe([topic])
    keys = []
    started = time.monotonic()
    deadline = started + 60
    while len(keys) < 300 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            keys.append(int(m.key()))
    elapsed = time.monotonic() - started
    c.close()
    assert sorted(keys) == list(range(300)), "every record exactly once"
    assert throttled and max(throttled) > 0, "librdkafka saw no throttle_time_ms"
    assert elapsed >= 2.5, f"300 KB at 50 KB/s took only {elapsed:.1f} s"
    assert throttle_lines(broker, "q-consumer"), broker.metrics()


def produce_request(topic: str, size: int) -> dict:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    builder.append(0, timestamp=int(time.time() * 1000), key=None, value=b"x" * size, headers=[])
    return {"transactional_id": None, "acks": 1, "timeout_ms": 10000,
            "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": bytes(builder.build())}]}]}


def test_kip_219_mutes_new_clients_after_the_answer_and_delays_old_clients_answers(broker_factory):
    broker, topic = quota_broker(broker_factory, "kip219")
    api_versions = {"client_software_name": "t", "client_software_version": "1"}
    # ~40 KB against 10 KB/s over the 2 s minimum window: 20 KB/s, twice the quota, 2 s throttle.
    for client, version in [("raw-new", 9), ("raw-old", 5)]:
        set_quota(broker, client, "producer_byte_rate", 10_000)
        with VersionedClient("127.0.0.1", broker.port, client_id=client) as conn:
            sent = time.monotonic()
            resp = conn.call(0, version, produce_request(topic, 40_000))
            answered = time.monotonic() - sent
            assert resp.responses[0].partition_responses[0].error_code == 0, resp
            assert 1500 <= resp.throttle_time_ms <= 2500, resp
            conn.call(18, 3, api_versions)
            next_answered = time.monotonic() - sent - answered
        if version >= 6:
            # KIP-219: answered at once, then nothing more is read for the throttle time.
            assert answered < 1.0, f"v{version} answer took {answered:.2f} s"
            assert next_answered >= 1.5, f"the next request was served after {next_answered:.2f} s"
        else:
            # Before KIP-219 the client does not wait by itself: the broker answers late.
            assert answered >= 1.5, f"v{version} answer came after {answered:.2f} s"
            assert next_answered < 1.0, f"the next request waited {next_answered:.2f} s"


def test_an_address_over_its_connection_creation_rate_has_new_connections_closed(broker_factory):
    broker = broker_factory(overrides=SHORT_WINDOW)
    # 3 connections a second from any address: 6 over the 2 s minimum window pass at once.
    set_quota(broker, None, "connection_creation_rate", 3, entity_type="ip")
    api_versions = struct.pack(">hhih", 18, 0, 1, -1)
    answered = 0
    sockets = []
    for _ in range(12):
        s = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
        sockets.append(s)
        s.sendall(struct.pack(">i", len(api_versions)) + api_versions)
        try:
            answered += len(s.recv(4)) == 4
        except (ConnectionResetError, socket.timeout):
            pass
    for s in sockets:
        s.close()
    unanswered = 12 - answered
    assert answered >= 6, f"only {answered} of the first connections were served"
    assert unanswered >= 3, f"{answered} of 12 connections served at 3/s"
    metric = metric_lines(broker, "strata_connections_throttled_total ")
    assert metric and int(metric[0].split()[1]) >= unanswered, metric
    # Without the quota, connections are served again.
    time.sleep(1.5)
    set_quota(broker, None, "connection_creation_rate", None, entity_type="ip")
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as s:
            s.sendall(struct.pack(">i", len(api_versions)) + api_versions)
            assert len(s.recv(4)) == 4


def test_librdkafka_sees_the_throttle_of_a_controller_mutation_quota(broker_factory):
    broker = broker_factory(overrides=SHORT_WINDOW)
    # 1 partition a second, a bucket of 3 (3 samples of 1 s): a topic of 7 partitions
    # overdraws it by 4. librdkafka's CreateTopics (before v6) is served and throttled ~4 s.
    set_quota(broker, "q-admin", "controller_mutation_rate", 1)
    throttled: list[float] = []
    admin = make_admin(broker.bootstrap, **{"client.id": "q-admin",
                                            "throttle_cb": lambda e: throttled.append(e.throttle_time)})
    topic = f"quota-mutation-{uuid.uuid4().hex[:6]}"
    create_topic(admin, topic, partitions=7)
    admin.poll(1)
    assert throttled and 3.0 <= max(throttled) <= 4.5, throttled
    lines = metric_lines(broker, 'strata_quota_usage_total{quota="controller_mutation",tenant="",user="",client_id="q-admin"')
    assert lines and lines[0].endswith(" 7"), lines


def test_a_request_quota_throttles_a_client_of_any_api(broker_factory):
    broker, topic = quota_broker(broker_factory, "request")
    # A vanishing share of a thread: every request is over it; the throttle is bounded by the
    # 1 s sample window (KIP-124).
    set_quota(broker, "q-busy", "request_percentage", 0.0001)
    throttled: list[float] = []
    p = make_producer(broker.bootstrap, **{"client.id": "q-busy",
                                            "throttle_cb": lambda e: throttled.append(e.throttle_time)})
    for i in range(5):
        p.produce(topic, value=b"r%d" % i)
        assert p.flush(30) == 0
    p.poll(0)
    assert throttled and max(throttled) <= 1.0 and max(throttled) > 0, throttled
    lines = metric_lines(broker, 'strata_quota_throttled_responses_total{quota="request",tenant="",user="",client_id="q-busy"')
    assert lines and int(lines[0].split()[-1]) > 0, lines
