"""Incremental fetch sessions (KIP-227) with real clients and on the wire.

kafka-python 3 (like the Java client) opens a fetch session with its first full fetch and then
sends only the partitions whose position changed; the broker answers only partitions with
news. librdkafka (confluent-kafka) does not use sessions at all: it sends session id 0 with
epoch -1 on every fetch, so its tests here check that it keeps working without one.

The wire tests use kafka-python's versioned message classes (versioned_wire.py), a codec
other than the broker's own, to check each rule: session ids and epochs, the errors
FETCH_SESSION_ID_NOT_FOUND (70), INVALID_FETCH_SESSION_EPOCH (71) and
FETCH_SESSION_TOPIC_ID_ERROR (106), forgotten partitions, closing, a full cache and the
followers' privilege in eviction. The measurement at the end compares the bytes of a fetch of
1000 idle partitions with and without a session.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from helpers import (
    consume_all,
    create_topic,
    make_admin,
    make_consumer,
    make_producer,
    produce_acked,
    wait_until,
)
from replica_verifier import verify_replicas
from versioned_wire import VersionedClient

FETCH = 1
METADATA = 3
FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71
UNKNOWN_TOPIC_ID = 100
FETCH_SESSION_TOPIC_ID_ERROR = 106
ARTIFACTS = Path(__file__).parent / ".artifacts"


def metrics(broker) -> dict[str, float]:
    out = {}
    for line in broker.metrics().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def sessions(broker) -> tuple[int, int, int]:
    """(sessions cached, partitions cached, sessions created since start)."""
    m = metrics(broker)
    return (
        int(m["strata_fetch_sessions"]),
        int(m["strata_fetch_session_partitions"]),
        int(m["strata_fetch_sessions_created_total"]),
    )


def fetch_wire(broker) -> tuple[int, int, int]:
    """(Fetch requests, request bytes, response bytes) so far."""
    m = metrics(broker)
    return (
        int(m.get('strata_requests_total{api="Fetch"}', 0)),
        int(m.get('strata_request_bytes_total{api="Fetch"}', 0)),
        int(m.get('strata_response_bytes_total{api="Fetch"}', 0)),
    )


def python_consumer(broker, sessions_on: bool = True, **conf) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        enable_incremental_fetch_sessions=sessions_on,
        **conf,
    )


def produce(broker, topic: str, records: list[tuple[int, bytes]]) -> None:
    p = make_producer(broker.bootstrap)
    for partition, value in records:
        p.produce(topic, value=value, partition=partition)
    assert p.flush(30) == 0


def drain(consumer: KafkaConsumer, want: int, seen: dict, timeout: float = 30.0) -> None:
    """Polls until `seen` ({(partition, offset): value}) holds `want` records; a record seen
    twice fails the test."""
    deadline = time.monotonic() + timeout
    while len(seen) < want:
        assert time.monotonic() < deadline, f"got {len(seen)} of {want} records"
        for tp, recs in consumer.poll(timeout_ms=200).items():
            for r in recs:
                key = (tp.partition, r.offset)
                assert key not in seen, f"record {key} delivered twice"
                seen[key] = r.value


def test_kafka_python_consumer_of_many_partitions_uses_one_session(broker, topic):
    n = 300
    create_topic(make_admin(broker.bootstrap), topic, partitions=n)
    produce(broker, topic, [(p, f"{p}-{i}".encode()) for p in range(n) for i in range(3)])
    c = python_consumer(broker)
    c.assign([TopicPartition(topic, p) for p in range(n)])
    c.seek_to_beginning()
    seen: dict = {}
    drain(c, 3 * n, seen)
    assert seen == {(p, i): f"{p}-{i}".encode() for p in range(n) for i in range(3)}
    cached, partitions, created = sessions(broker)
    assert (cached, partitions) == (1, n), f"sessions {cached}, partitions {partitions}"
    assert created >= 1
    c.close()


def test_session_survives_records_on_a_few_partitions(broker, topic):
    n = 200
    create_topic(make_admin(broker.bootstrap), topic, partitions=n)
    c = python_consumer(broker)
    c.assign([TopicPartition(topic, p) for p in range(n)])
    c.seek_to_beginning()
    deadline = time.monotonic() + 20
    while sessions(broker)[0] < 1:
        assert time.monotonic() < deadline, "no session was created"
        c.poll(timeout_ms=100)
    _, _, created = sessions(broker)
    requests0, request_bytes0, _ = fetch_wire(broker)
    seen: dict = {}
    sent = {}
    hot = [3, 77, 150]
    for round_ in range(10):
        batch = [(p, f"r{round_}-p{p}-{i}".encode()) for p in hot for i in range(5)]
        produce(broker, topic, batch)
        for p, v in batch:
            sent.setdefault(p, []).append(v)
        for _ in range(3):
            for tp, recs in c.poll(timeout_ms=100).items():
                for r in recs:
                    assert (tp.partition, r.offset) not in seen, "delivered twice"
                    seen[(tp.partition, r.offset)] = r.value
    drain(c, 150, seen)
    for p in hot:
        got = [seen[(p, o)] for o in range(len(sent[p]))]
        assert got == sent[p], f"partition {p}: records out of order or missing"
    assert len(seen) == 150
    cached, partitions, created_after = sessions(broker)
    assert created_after == created, "the session was replaced instead of kept"
    assert (cached, partitions) == (1, n)
    # Every fetch since carried only the partitions whose position moved, not all 200.
    requests, request_bytes, _ = fetch_wire(broker)
    per_request = (request_bytes - request_bytes0) / max(1, requests - requests0)
    assert per_request < 600, f"{per_request:.0f} bytes per fetch request: not incremental"
    c.close()


def test_librdkafka_consumer_fetches_without_a_session(broker, topic):
    create_topic(make_admin(broker.bootstrap), topic, partitions=20)
    produce(broker, topic, [(p, b"x%d" % i) for p in range(20) for i in range(5)])
    c = make_consumer(broker.bootstrap)
    from confluent_kafka import TopicPartition as CTopicPartition

    c.assign([CTopicPartition(topic, p, 0) for p in range(20)])
    got = set()
    deadline = time.monotonic() + 30
    while len(got) < 100:
        assert time.monotonic() < deadline, f"got {len(got)} of 100"
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            assert (m.partition(), m.offset()) not in got
            got.add((m.partition(), m.offset()))
    c.close()
    # librdkafka sends session id 0, epoch -1: sessionless fetches, no session created.
    assert sessions(broker) == (0, 0, 0)


# ---------------------------------------------------------------------------
# the protocol, request by request
# ---------------------------------------------------------------------------


def fetch(client, version, session_id, epoch, topics, forgotten=(), max_wait_ms=0, replica_id=-1):
    return client.call(
        FETCH,
        version,
        {
            "replica_id": replica_id,
            "max_wait_ms": max_wait_ms,
            "min_bytes": 1 if max_wait_ms else 0,
            "max_bytes": 1 << 20,
            "isolation_level": 0,
            "session_id": session_id,
            "session_epoch": epoch,
            "topics": list(topics),
            "forgotten_topics_data": list(forgotten),
            "rack_id": "",
        },
    )


def by_name(topic, offsets: dict[int, int]):
    return {
        "topic": topic,
        "topic_id": uuid.UUID(int=0),
        "partitions": [
            {
                "partition": p,
                "current_leader_epoch": -1,
                "fetch_offset": o,
                "last_fetched_epoch": -1,
                "log_start_offset": -1,
                "partition_max_bytes": 1 << 20,
            }
            for p, o in offsets.items()
        ],
    }


def by_id(topic_id, offsets: dict[int, int]):
    t = by_name("", offsets)
    t["topic_id"] = topic_id
    return t


def answered(resp) -> dict[int, tuple[int, int, int]]:
    """{partition: (error code, high watermark, record bytes)} of every partition answered."""
    out = {}
    for t in resp.responses:
        for p in t.partitions:
            out[p.partition_index] = (p.error_code, p.high_watermark, len(p.records or b""))
    return out


def topic_id_of(client, topic) -> uuid.UUID:
    resp = client.call(
        METADATA, 12, {"topics": [{"name": topic, "topic_id": uuid.UUID(int=0)}],
                       "allow_auto_topic_creation": False,
                       "include_topic_authorized_operations": False},
    )
    return resp.topics[0].topic_id


def test_session_rules_on_the_wire(broker, topic):
    create_topic(make_admin(broker.bootstrap), topic, partitions=3)
    produce(broker, topic, [(1, b"one")])
    with VersionedClient("127.0.0.1", broker.port) as c:
        # A full fetch with epoch 0 opens a session and answers every partition.
        resp = fetch(c, 12, 0, 0, [by_name(topic, {0: 0, 1: 0, 2: 0})])
        sid = resp.session_id
        assert resp.error_code == 0 and sid != 0
        got = answered(resp)
        assert set(got) == {0, 1, 2} and got[1][2] > 0
        assert sessions(broker)[:2] == (1, 3)
        # Incremental, moving partition 1 past its record: nothing is new, nothing answered.
        resp = fetch(c, 12, sid, 1, [by_name(topic, {1: 1})])
        assert (resp.error_code, resp.session_id, answered(resp)) == (0, sid, {})
        # A record on partition 2, which the request does not name: answered alone.
        produce(broker, topic, [(2, b"two")])
        resp = fetch(c, 12, sid, 2, [])
        got = answered(resp)
        assert list(got) == [2] and got[2][1] == 1 and got[2][2] > 0, got
        # The epoch already used, or one ahead: INVALID_FETCH_SESSION_EPOCH, nothing else.
        for epoch in (2, 9):
            resp = fetch(c, 12, sid, epoch, [by_name(topic, {2: 1})])
            assert (resp.error_code, resp.session_id, resp.responses) == (
                INVALID_FETCH_SESSION_EPOCH, 0, []), epoch
        # A session id the broker never gave.
        resp = fetch(c, 12, sid ^ 0x5A5A, 3, [])
        assert (resp.error_code, resp.session_id) == (FETCH_SESSION_ID_NOT_FOUND, 0)
        # A session opened with names cannot be used with topic ids (v13+).
        resp = fetch(c, 13, sid, 3, [])
        assert (resp.error_code, resp.session_id) == (FETCH_SESSION_TOPIC_ID_ERROR, 0)
        # Forgetting partition 0 (the errors above left the session as it was).
        resp = fetch(c, 12, sid, 3, [by_name(topic, {2: 1})],
                     forgotten=[{"topic": topic, "topic_id": uuid.UUID(int=0), "partitions": [0]}])
        assert resp.error_code == 0 and answered(resp) == {}
        assert sessions(broker)[:2] == (1, 2)
        # A full fetch naming the session with epoch -1 closes it and opens none.
        resp = fetch(c, 12, sid, -1, [by_name(topic, {0: 0})])
        assert resp.error_code == 0 and resp.session_id == 0 and set(answered(resp)) == {0}
        assert sessions(broker)[:2] == (0, 0)
        resp = fetch(c, 12, sid, 4, [])
        assert resp.error_code == FETCH_SESSION_ID_NOT_FOUND

        # Topic ids (v13+): an unknown id is answered with UNKNOWN_TOPIC_ID every time.
        tid = topic_id_of(c, topic)
        resp = fetch(c, 13, 0, 0, [by_id(tid, {0: 0, 1: 1, 2: 1})])
        sid = resp.session_id
        assert sid != 0 and set(answered(resp)) == {0, 1, 2}
        stranger = uuid.uuid4()
        resp = fetch(c, 13, sid, 1, [by_id(stranger, {0: 0})])
        assert resp.error_code == 0
        assert [(t.topic_id, [p.error_code for p in t.partitions]) for t in resp.responses] == [
            (stranger, [UNKNOWN_TOPIC_ID])]
        resp = fetch(c, 13, sid, 2, [])
        assert [p.error_code for t in resp.responses for p in t.partitions] == [UNKNOWN_TOPIC_ID]
        resp = fetch(c, 12, sid, 3, [])
        assert resp.error_code == FETCH_SESSION_TOPIC_ID_ERROR
        # A long poll waits on the session's partitions, named or not (the unknown topic is
        # forgotten first: an error answers a fetch at once).
        produce_later = make_producer(broker.bootstrap)
        started = time.monotonic()
        c.send(FETCH, 13, {
            "replica_id": -1, "max_wait_ms": 5000, "min_bytes": 1, "max_bytes": 1 << 20,
            "isolation_level": 0, "session_id": sid, "session_epoch": 3, "topics": [],
            "forgotten_topics_data": [{"topic": "", "topic_id": stranger, "partitions": [0]}],
            "rack_id": "",
        })
        # Not waiting for a condition: giving the fetch time to park, so that the record's
        # arrival is what ends it (if it came first, the test would pass without a long poll).
        time.sleep(0.3)
        produce_later.produce(topic, value=b"late", partition=0)
        produce_later.flush(10)
        resp = c.receive(FETCH, 13, c.correlation_id)
        assert time.monotonic() - started < 4.5, "the long poll missed the record"
        got = {(t.topic_id, p.partition_index): len(p.records or b"") for t in resp.responses
               for p in t.partitions if p.error_code == 0}
        assert got.get((tid, 0), 0) > 0, got


def test_a_full_cache_answers_without_a_session_and_followers_evict_consumers(broker_factory, topic):
    broker = broker_factory(overrides={"max.incremental.fetch.session.cache.slots": 1})
    create_topic(make_admin(broker.bootstrap), topic, partitions=2)
    with VersionedClient("127.0.0.1", broker.port) as c:
        first = fetch(c, 12, 0, 0, [by_name(topic, {0: 0, 1: 0})]).session_id
        assert first != 0
        # No room, and a young consumer session is not evicted for another consumer's.
        resp = fetch(c, 12, 0, 0, [by_name(topic, {0: 0, 1: 0})])
        assert resp.error_code == 0 and resp.session_id == 0 and set(answered(resp)) == {0, 1}
        assert metrics(broker)["strata_fetch_session_evictions_total"] == 0
        # A follower's session (replica id >= 0) is privileged: it takes the consumer's place.
        follower = fetch(c, 12, 0, 0, [by_name(topic, {0: 0})], replica_id=7).session_id
        assert follower != 0
        assert metrics(broker)["strata_fetch_session_evictions_total"] == 1
        assert fetch(c, 12, first, 1, []).error_code == FETCH_SESSION_ID_NOT_FOUND
        assert sessions(broker)[:2] == (1, 1)
    # A real consumer still gets every record without a session.
    produce(broker, topic, [(p, b"v%d" % i) for p in (0, 1) for i in range(10)])
    consumer = python_consumer(broker)
    consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    consumer.seek_to_beginning()
    seen: dict = {}
    drain(consumer, 20, seen)
    consumer.close()


# ---------------------------------------------------------------------------
# followers
# ---------------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.timeout(150)
def test_followers_replicate_through_sessions(cluster_factory, topic):
    c = cluster_factory(3)
    n = 30
    create_topic(make_admin(c.bootstrap), topic, partitions=n, replication_factor=3,
                 config={"min.insync.replicas": "2"})
    states = c.wait_in_sync(topic, n, timeout=45)
    first = [(p, b"a-%d-%d" % (p, i)) for p in range(n) for i in range(20)]
    produce_acked(c.bootstrap, topic, first)
    verify_replicas(c, [topic], full_isr=True, partitions={topic: n})
    # Each node fetches from every other node that leads something it follows: one
    # privileged session per (follower, leader) pair, holding the partitions it follows there.
    leaders = {s["leader"] for s in states.values()}
    pairs = sum(len(leaders - {node.node_id}) for node in c.nodes)
    followed = sum(len(s["replicas"]) - 1 for s in states.values())
    # (__consumer_offsets and other internal topics are not created: no groups here.)
    wait_until(
        lambda: [sum(x) for x in zip(*(sessions(node)[:2] for node in c.nodes))] == [pairs, followed],
        timeout=20,
        msg=f"{pairs} follower sessions holding {followed} partitions",
    )
    # Idle followers ask with incremental requests, a few dozen bytes each.
    before = [fetch_wire(node) for node in c.nodes]
    time.sleep(2)  # measuring idle traffic over a time span, not waiting for a condition
    after = [fetch_wire(node) for node in c.nodes]
    requests = sum(a[0] - b[0] for a, b in zip(after, before))
    request_bytes = sum(a[1] - b[1] for a, b in zip(after, before))
    assert requests >= 6, f"only {requests} follower fetches in 2 s"
    assert request_bytes / requests < 150, f"{request_bytes / requests:.0f} bytes per follower fetch"
    # Records keep flowing to every replica through the sessions.
    second = [(p, b"b-%d-%d" % (p, i)) for p in range(n) for i in range(10)]
    produce_acked(c.bootstrap, topic, second)
    verify_replicas(c, [topic], full_isr=True, partitions={topic: n})
    got = consume_all(c.bootstrap, topic, range(n))
    for p in range(n):
        want = [v for q, v in first + second if q == p]
        assert [r.value for r in got[p]] == want, f"partition {p}"


# ---------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------


def bytes_per_fetch(broker, topic, n, sessions_on: bool, seconds: float) -> dict:
    c = python_consumer(broker, sessions_on=sessions_on)
    c.assign([TopicPartition(topic, p) for p in range(n)])
    c.seek_to_beginning()
    # Warm up: positions known and (with sessions) the session open.
    deadline = time.monotonic() + 30
    while True:
        c.poll(timeout_ms=100)
        requests, _, _ = fetch_wire(broker)
        if requests >= 3 and (not sessions_on or sessions(broker)[0] >= 1):
            break
        assert time.monotonic() < deadline, "consumer never fetched"
    requests0, req0, resp0 = fetch_wire(broker)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        c.poll(timeout_ms=100)
    requests, req, resp = fetch_wire(broker)
    c.close()
    count = requests - requests0
    assert count >= 5, f"only {count} fetches measured"
    return {
        "fetches": count,
        "request_bytes_per_fetch": (req - req0) / count,
        "response_bytes_per_fetch": (resp - resp0) / count,
    }


@pytest.mark.timeout(180)
def test_measure_bytes_per_fetch_of_1000_idle_partitions(broker, topic):
    n = 1000
    create_topic(make_admin(broker.bootstrap), topic, partitions=n, timeout=60)
    without = bytes_per_fetch(broker, topic, n, sessions_on=False, seconds=4)
    with_ = bytes_per_fetch(broker, topic, n, sessions_on=True, seconds=4)
    result = {
        "partitions": n,
        "client": "kafka-python 3",
        "without_session": without,
        "with_session": with_,
        "request_ratio": without["request_bytes_per_fetch"] / with_["request_bytes_per_fetch"],
        "response_ratio": without["response_bytes_per_fetch"] / with_["response_bytes_per_fetch"],
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fetch_sessions.json").write_text(json.dumps(result, indent=2))
    print("FETCH_SESSIONS " + json.dumps(result))
    assert result["request_ratio"] > 20, result
    assert result["response_ratio"] > 20, result
