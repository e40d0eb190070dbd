"""Consumer groups, classic protocol (Kafka 4.x semantics), end to end.

librdkafka (confluent-kafka) and kafka-python group consumers: subscribe / regex
subscribe, commit and resume, eager (range) and cooperative-sticky rebalances,
static membership (KIP-345), pause/resume/seek, committed offsets across broker
restarts; the group admin APIs; and, over raw frames, the error codes a
coordinator must return (KIP-394 MEMBER_ID_REQUIRED, ILLEGAL_GENERATION,
UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS, FENCED_INSTANCE_ID,
INVALID_SESSION_TIMEOUT, ...), which librdkafka mostly retries silently.

KIP-848 (`group.protocol=consumer`) is not covered.
"""

from __future__ import annotations

import itertools
import time
import uuid

import pytest
from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from group_helpers import (
    FENCED_INSTANCE_ID,
    GROUP_ID_NOT_FOUND,
    ILLEGAL_GENERATION,
    INCONSISTENT_GROUP_PROTOCOL,
    INVALID_SESSION_TIMEOUT,
    MEMBER_ID_REQUIRED,
    REBALANCE_IN_PROGRESS,
    UNKNOWN_MEMBER_ID,
    UNKNOWN_TOPIC_OR_PARTITION,
    Member,
    RawGroupClient,
    assignment_bytes,
    open_offsets_transaction,
    poll_for,
    poll_until,
    subscription_bytes,
)
from helpers import (
    DeliveryTracker,
    create_topic,
    expect_kafka_error,
    flush_all,
    make_admin,
    make_consumer,
    make_producer,
    wait_until,
)
from versioned_wire import VersionedClient

# Kafka's default is 3000 ms; every first join of a group would wait that long.
FAST = {"group.initial.rebalance.delay.ms": 0}


@pytest.fixture
def gbroker(broker_factory):
    return broker_factory(overrides=FAST)


def produce(bootstrap: str, topic: str, ids, partitions: int) -> DeliveryTracker:
    """Produce value b"v<i>" to partition i % partitions for each i; wait for all acks."""
    tracker = DeliveryTracker()
    p = make_producer(bootstrap)
    for i in ids:
        p.produce(topic, value=f"v{i}".encode(), partition=i % partitions, on_delivery=tracker.cb(i))
    flush_all(p)
    assert not tracker.failed, f"delivery failures: {list(tracker.failed.items())[:5]}"
    return tracker


def vals(ids) -> list[bytes]:
    return sorted(f"v{i}".encode() for i in ids)


def committed_map(consumer, topic: str, partitions) -> dict[int, int]:
    res = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    for tp in res:
        assert tp.error is None, f"committed(): {tp}"
    return {tp.partition: tp.offset for tp in res}


def admin_offsets(admin, group: str, partitions: list[TopicPartition] | None = None) -> dict[tuple[str, int], int]:
    """ListConsumerGroupOffsets (OffsetFetch) via confluent-kafka AdminClient."""
    fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, partitions)], request_timeout=15)[group]
    res = fut.result(timeout=20)
    assert res.group_id == group
    for tp in res.topic_partitions:
        assert tp.error is None, f"ListConsumerGroupOffsets partition error: {tp}"
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions}


def describe(admin, group: str):
    return admin.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=20)


def listed_groups(admin, states=None) -> dict[str, object]:
    kw = {"request_timeout": 15}
    if states is not None:
        kw["states"] = states
    res = admin.list_consumer_groups(**kw).result(timeout=20)
    assert not res.errors, f"ListGroups errors: {res.errors}"
    return {g.group_id: g for g in res.valid}


def close_all(members) -> None:
    for m in members:
        try:
            m.close()
        except Exception:  # noqa: BLE001 - best effort in teardown
            pass


# --------------------------------------------------------------------------
# 1. subscribe, commit, resume
# --------------------------------------------------------------------------


def test_subscribe_commit_resume(gbroker, topic):
    bs = gbroker.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, partitions=3)
    other = f"{topic}-other"
    create_topic(admin, other, partitions=1)
    group = f"g-{topic}"
    produce(bs, topic, range(30), 3)

    m1 = Member(bs, group, [topic], "c1")
    try:
        poll_until([m1], lambda: len(m1.records) >= 30, msg=lambda: f"30 records for c1 ({m1!r}, errors {m1.errors})")
        assert not m1.errors, m1.errors
        assert sorted(m1.values()) == vals(range(30)), "first consumer: not exactly the 30 produced records"
        assert m1.assignment() == {(topic, p) for p in range(3)}

        res = m1.c.commit(asynchronous=False)
        assert all(tp.error is None for tp in res), f"commit errors: {res}"
        assert {tp.partition: tp.offset for tp in res if tp.topic == topic} == {0: 10, 1: 10, 2: 10}
        assert committed_map(m1.c, topic, range(3)) == {0: 10, 1: 10, 2: 10}
    finally:
        m1.close()

    # AdminClient view of the same offsets: whole group, then selected partitions
    assert admin_offsets(admin, group) == {(topic, 0): 10, (topic, 1): 10, (topic, 2): 10}
    sel = admin_offsets(admin, group, [TopicPartition(topic, 1), TopicPartition(other, 0)])
    assert sel[(topic, 1)] == 10
    assert sel[(other, 0)] < 0, f"never-committed partition should have no offset, got {sel[(other, 0)]}"

    # a new member of the group starts exactly at the committed offsets
    produce(bs, topic, range(30, 45), 3)
    m2 = Member(bs, group, [topic], "c2")
    try:
        poll_until([m2], lambda: len(m2.records) >= 15, msg=lambda: f"15 new records for c2 ({m2!r})")
        assert not m2.errors, m2.errors
        assert sorted(m2.values()) == vals(range(30, 45)), "resumed consumer re-read old or missed new records"
        for p in range(3):
            offs = sorted(o for t, pp, o, _ in m2.records if pp == p)
            assert offs == list(range(10, 15)), f"partition {p}: resumed at {offs}"
        m2.c.commit(asynchronous=False)
        assert committed_map(m2.c, topic, range(3)) == {0: 15, 1: 15, 2: 15}
    finally:
        m2.close()
    assert admin_offsets(admin, group) == {(topic, 0): 15, (topic, 1): 15, (topic, 2): 15}


# --------------------------------------------------------------------------
# 2. regex subscription
# --------------------------------------------------------------------------


def test_regex_subscription(gbroker):
    bs = gbroker.bootstrap
    admin = make_admin(bs)
    prefix = f"rx{uuid.uuid4().hex[:8]}"
    t_a, t_b, t_other = f"{prefix}-a", f"{prefix}-b", f"not-{prefix}-c"
    create_topic(admin, t_a, partitions=2)
    create_topic(admin, t_other, partitions=1)
    produce(bs, t_a, range(10), 2)
    produce(bs, t_other, range(5), 1)

    m = Member(bs, f"g-{prefix}", [f"^{prefix}-.*"], "rx", **{"topic.metadata.refresh.interval.ms": 300})
    try:
        poll_until(
            [m],
            lambda: m.assignment() == {(t_a, 0), (t_a, 1)} and len({v for _, _, _, v in m.records}) >= 10,
            msg=lambda: f"assignment of {t_a} and its 10 records ({m!r})",
        )
        # a matching topic created after subscribing is picked up by a rebalance
        create_topic(admin, t_b, partitions=1)
        produce(bs, t_b, range(100, 104), 1)
        poll_until(
            [m],
            lambda: m.assignment() == {(t_a, 0), (t_a, 1), (t_b, 0)}
            and len({v for t, _, _, v in m.records if t == t_b}) >= 4,
            msg=lambda: f"assignment including {t_b} ({m!r})",
        )
        assert not m.errors, m.errors
        # the rebalance that adds t_b may re-deliver t_a records (nothing was committed): at least once
        assert sorted({v for t, _, _, v in m.records if t == t_a}) == vals(range(10))
        assert sorted({v for t, _, _, v in m.records if t == t_b}) == vals(range(100, 104))
        assert not any(t == t_other for t, *_ in m.records), "consumed a topic that does not match the regex"
        assert all(t_other not in {t for t, _ in a} for a in m.assigned)

        d = describe(admin, f"g-{prefix}")
        assert d.state == ConsumerGroupState.STABLE
        assert len(d.members) == 1
        got = {(tp.topic, tp.partition) for tp in d.members[0].assignment.topic_partitions}
        assert got == {(t_a, 0), (t_a, 1), (t_b, 0)}, f"DescribeGroups member assignment {got}"
    finally:
        m.close()


# --------------------------------------------------------------------------
# 3 / 4. three members, eager (range) and cooperative-sticky
# --------------------------------------------------------------------------


def _churn(gbroker, topic, strategy: str):
    """Three members join one group on a 6-partition topic while records are
    produced; then one leaves. Returns (members, tracker, snapshots)."""
    bs = gbroker.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, partitions=6)
    group = f"g-{topic}"
    all_parts = {(topic, p) for p in range(6)}
    tracker = DeliveryTracker()
    prod = make_producer(bs)
    counter = itertools.count()

    def produce_some():
        for _ in range(2):
            i = next(counter)
            prod.produce(topic, value=f"v{i}".encode(), partition=i % 6, on_delivery=tracker.cb(i))
        prod.poll(0)

    def balanced(ms, each):
        assigns = [m.assignment() for m in ms]
        return (
            all(len(a) == each for a in assigns)
            and set().union(*assigns) == all_parts
            and sum(len(a) for a in assigns) == 6
        )

    conf = {
        "partition.assignment.strategy": strategy,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 200,
    }
    members: list[Member] = []
    snaps: dict[str, object] = {}
    try:
        m1 = Member(bs, group, [topic], "c1", **conf)
        members.append(m1)
        poll_until(members, lambda: m1.assignment() == all_parts, each=produce_some,
                   msg=lambda: f"c1 owning all 6 partitions ({m1!r})")
        m2 = Member(bs, group, [topic], "c2", **conf)
        members.append(m2)
        poll_until(members, lambda: balanced([m1, m2], 3), each=produce_some,
                   msg=lambda: f"3/3 split: {[m.assignment() for m in members]}")
        snaps["before_c3"] = {m.name: (m.assignment(), len(m.revoked), len(m.assigned)) for m in (m1, m2)}
        m3 = Member(bs, group, [topic], "c3", **conf)
        members.append(m3)
        poll_until(members, lambda: balanced([m1, m2, m3], 2), each=produce_some,
                   msg=lambda: f"2/2/2 split: {[m.assignment() for m in members]}")
        snaps["after_c3"] = {m.name: m.assignment() for m in members}
        for a, b in itertools.combinations([m.assignment() for m in members], 2):
            assert not (a & b), f"overlapping assignments {a} / {b}"

        # c2 leaves (close -> LeaveGroup); the other two take over its partitions
        snaps["before_leave"] = {m.name: (m.assignment(), len(m.revoked), len(m.assigned)) for m in members}
        m2.close()
        live = [m1, m3]
        poll_until(live, lambda: balanced(live, 3), each=produce_some,
                   msg=lambda: f"3/3 split after c2 left: {[m.assignment() for m in live]}")
        snaps["after_leave"] = {m.name: m.assignment() for m in live}
        snaps["after_leave_revoked"] = {m.name: len(m.revoked) for m in live}  # close() revokes again

        d = describe(admin, group)
        assert d.state == ConsumerGroupState.STABLE, f"group state {d.state}"
        assert d.partition_assignor == strategy
        assert len(d.members) == 2, f"members: {[x.member_id for x in d.members]}"
        by_client = {x.client_id: {(tp.topic, tp.partition) for tp in x.assignment.topic_partitions} for x in d.members}
        assert by_client == {"c1": m1.assignment(), "c3": m3.assignment()}, f"DescribeGroups assignments {by_client}"

        # every record produced during the churn was consumed at least once
        flush_all(prod)
        assert not tracker.failed
        produced = set(tracker.acked.values())

        def covered():
            seen = set().union(*({(p, o) for _, p, o, _ in m.records} for m in members))
            return produced <= seen

        poll_until(live, covered, msg=lambda: f"all {len(produced)} produced records consumed by some member")
        for m in members:
            assert not m.errors, f"{m.name}: {m.errors}"
        return members, tracker, snaps
    finally:
        close_all(members)


def test_eager_range_rebalance(gbroker, topic):
    members, tracker, snaps = _churn(gbroker, topic, "range")
    assert len(tracker.acked) > 0
    # range on one topic: contiguous pairs / triples
    for assigns in (snaps["after_c3"], snaps["after_leave"]):
        for a in assigns.values():
            ps = sorted(p for _, p in a)
            assert ps == list(range(ps[0], ps[0] + len(ps))), f"range assignor gave non-contiguous {ps}"


def test_cooperative_sticky_rebalance(gbroker, topic):
    members, tracker, snaps = _churn(gbroker, topic, "cooperative-sticky")
    m = {x.name: x for x in members}
    # c3 joining: c1 and c2 each give up exactly one partition (the one that moves) and keep the rest
    moved = set()
    for name in ("c1", "c2"):
        before, n_rev, _ = snaps["before_c3"][name]
        after = snaps["after_c3"][name]
        n_rev_end = snaps["before_leave"][name][1]
        revoked = set().union(*m[name].revoked[n_rev:n_rev_end])
        assert after <= before, f"{name}: sticky assignor moved kept partitions: {before} -> {after}"
        assert revoked == before - after, f"{name}: revoked {revoked}, expected only {before - after}"
        assert len(revoked) == 1, f"{name}: revoked {revoked}"
        moved |= revoked
    assert snaps["after_c3"]["c3"] == moved
    # c2 leaving: the survivors only gain partitions, nothing is revoked from them
    for name in ("c1", "c3"):
        before, n_rev, _ = snaps["before_leave"][name]
        after = snaps["after_leave"][name]
        assert before <= after, f"{name}: lost partitions when c2 left: {before} -> {after}"
        new_revocations = [r for r in m[name].revoked[n_rev : snaps["after_leave_revoked"][name]] if r]
        assert not new_revocations, f"{name}: cooperative rebalance revoked {new_revocations}"
    assert not any(x.lost for x in members), [x.lost for x in members]


# --------------------------------------------------------------------------
# 5. static membership
# --------------------------------------------------------------------------


def test_static_membership_rejoin_without_rebalance(broker_factory, topic):
    b = broker_factory(overrides={**FAST, "group.min.session.timeout.ms": 1000})
    bs = b.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, partitions=2)
    group = f"g-{topic}"
    conf = {"session.timeout.ms": 4000, "partition.assignment.strategy": "range"}

    def static(iid):
        return Member(bs, group, [topic], f"static-{iid}", **{"group.instance.id": iid}, **conf)

    members: dict[str, Member] = {}
    opened: list[Member] = []
    try:
        members["a"] = static("a")
        opened.append(members["a"])
        poll_until(members.values(), lambda: len(members["a"].assignment()) == 2, msg="a owning both partitions")
        members["b"] = static("b")
        opened.append(members["b"])
        poll_until(
            members.values(),
            lambda: all(len(x.assignment()) == 1 for x in members.values())
            and members["a"].assignment() | members["b"].assignment() == {(topic, 0), (topic, 1)},
            msg=lambda: f"1/1 split ({members})",
        )
        d = describe(admin, group)
        assert d.state == ConsumerGroupState.STABLE
        assert sorted(x.group_instance_id for x in d.members) == ["a", "b"], [x.group_instance_id for x in d.members]
        ids_before = {x.group_instance_id: x.member_id for x in d.members}

        # restart a (the leader, it joined first), then b, each within the session timeout
        for restarted, other in (("a", "b"), ("b", "a")):
            parts = members[restarted].assignment()
            o = members[other]
            o_parts, o_assigned, o_revoked = o.assignment(), len(o.assigned), len(o.revoked)
            members[restarted].close()  # static member: no LeaveGroup
            members[restarted] = static(restarted)
            opened.append(members[restarted])
            poll_until(members.values(), lambda: members[restarted].assignment() == parts,
                       msg=lambda: f"restarted {restarted} getting its old partitions {parts} back")
            # a rebalance would reach `other` via its next heartbeat (300 ms); give it several
            poll_for(members.values(), 1.5)
            assert (len(o.assigned), len(o.revoked)) == (o_assigned, o_revoked), (
                f"static rejoin of {restarted} rebalanced {other}: assigned {o.assigned}, revoked {o.revoked}"
            )
            assert o.assignment() == o_parts
            assert members[restarted].assignment() == parts
            d = describe(admin, group)
            assert d.state == ConsumerGroupState.STABLE
            ids = {x.group_instance_id: x.member_id for x in d.members}
            assert sorted(ids) == ["a", "b"], ids
            assert ids[restarted] != ids_before[restarted], "rejoined static member kept its old member id"
            assert ids[other] == ids_before[other]
            ids_before = ids

        # gone for longer than session.timeout.ms: the static member is removed, b takes over
        members["a"].close()
        t0 = time.monotonic()
        poll_until([members["b"]], lambda: members["b"].assignment() == {(topic, 0), (topic, 1)}, timeout=20,
                   msg=lambda: f"b taking over after a's session expired ({members['b']!r})")
        assert time.monotonic() - t0 > 2.0, "static member removed long before its session timeout (4 s)"
        d = describe(admin, group)
        assert [x.group_instance_id for x in d.members] == ["b"]
    finally:
        close_all(opened)


# --------------------------------------------------------------------------
# 6. pause / resume / seek inside a group
# --------------------------------------------------------------------------


def test_pause_resume_seek_in_group(gbroker, topic):
    bs = gbroker.bootstrap
    create_topic(make_admin(bs), topic, partitions=2)
    group = f"g-{topic}"
    produce(bs, topic, range(20), 2)  # 10 per partition

    def count(m, p):
        return sum(1 for _, pp, _, _ in m.records if pp == p)

    m = Member(bs, group, [topic], "pr")
    try:
        poll_until([m], lambda: len(m.records) >= 20, msg=lambda: f"20 records ({m!r})")
        p0 = TopicPartition(topic, 0)
        m.c.pause([p0])
        produce(bs, topic, [20, 22, 24, 26, 28], 2)  # partition 0 first ...
        produce(bs, topic, [21, 23, 25, 27, 29], 2)  # ... then partition 1
        poll_until([m], lambda: count(m, 1) >= 15, msg=lambda: f"partition 1 records while 0 is paused ({m!r})")
        assert count(m, 0) == 10, "records from a paused partition were delivered"
        m.c.resume([p0])
        poll_until([m], lambda: count(m, 0) >= 15, msg="partition 0 records after resume")

        m.c.seek(TopicPartition(topic, 1, 3))
        poll_until([m], lambda: count(m, 1) >= 27, msg=lambda: f"re-read of partition 1 from offset 3 ({m!r})")
        p1_offsets = [o for _, p, o, _ in m.records if p == 1]
        assert p1_offsets == list(range(15)) + list(range(3, 15)), p1_offsets
        assert not m.errors, m.errors

        # explicit offsets with metadata
        res = m.c.commit(
            offsets=[TopicPartition(topic, 0, 7, metadata="seven"), TopicPartition(topic, 1, 15)],
            asynchronous=False,
        )
        assert all(tp.error is None for tp in res), res
        got = m.c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
        assert [(tp.partition, tp.offset) for tp in got] == [(0, 7), (1, 15)]
        assert got[0].metadata == "seven", f"commit metadata not returned: {got[0].metadata!r}"
    finally:
        m.close()

    m2 = Member(bs, group, [topic], "pr2")
    try:
        poll_until([m2], lambda: len(m2.records) >= 8, msg=lambda: f"8 records from committed offsets ({m2!r})")
        assert sorted((p, o) for _, p, o, _ in m2.records) == [(0, o) for o in range(7, 15)]
    finally:
        m2.close()


# --------------------------------------------------------------------------
# 7. committed offsets survive a broker restart (clean and SIGKILL)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["clean", "sigkill"])
def test_committed_offsets_survive_restart(broker_factory, topic, how):
    b = broker_factory(overrides={**FAST, "offsets.topic.num.partitions": 5})
    bs = b.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, partitions=2)
    group = f"g-{topic}"
    produce(bs, topic, range(20), 2)

    m = Member(bs, group, [topic], "before")
    try:
        poll_until([m], lambda: len(m.records) >= 20, msg="20 records")
        m.c.commit(offsets=[TopicPartition(topic, 0, 7, metadata="m0"), TopicPartition(topic, 1, 4)],
                   asynchronous=False)
    finally:
        m.close()
    assert admin_offsets(admin, group) == {(topic, 0): 7, (topic, 1): 4}

    md = admin.list_topics("__consumer_offsets", timeout=10).topics.get("__consumer_offsets")
    assert md is not None and md.error is None, f"__consumer_offsets not in metadata: {md}"
    assert len(md.partitions) == 5, f"__consumer_offsets has {len(md.partitions)} partitions, configured 5"

    if how == "clean":
        assert b.stop() == 0
    else:
        b.kill()
    b.start()

    admin = make_admin(bs)
    # (while a coordinator loads __consumer_offsets it answers COORDINATOR_LOAD_IN_PROGRESS, which
    # librdkafka retries; an empty answer is final)
    assert admin_offsets(admin, group) == {(topic, 0): 7, (topic, 1): 4}, "committed offsets lost in restart"
    groups = listed_groups(admin)
    assert group in groups, f"group not listed after restart: {sorted(groups)}"
    assert groups[group].state == ConsumerGroupState.EMPTY

    m2 = Member(bs, group, [topic], "after")
    try:
        poll_until([m2], lambda: len(m2.records) >= 9, msg=lambda: f"9 records from committed offsets ({m2!r})")
        assert sorted((p, o) for _, p, o, _ in m2.records) == [(0, o) for o in range(7, 10)] + [
            (1, o) for o in range(4, 10)
        ]
        got = m2.c.committed([TopicPartition(topic, 0)], timeout=10)[0]
        assert (got.offset, got.metadata) == (7, "m0")
    finally:
        m2.close()


# --------------------------------------------------------------------------
# 8. kafka-python
# --------------------------------------------------------------------------


def test_kafka_python_group_and_admin(gbroker, topic):
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka import TopicPartition as KTP
    from kafka.structs import OffsetAndMetadata

    bs = gbroker.bootstrap
    create_topic(make_admin(bs), topic, partitions=2)
    group, group2 = f"g-{topic}", f"g2-{topic}"
    produce(bs, topic, range(20), 2)

    def consumer(client_id):
        c = KafkaConsumer(
            topic,
            bootstrap_servers=bs,
            group_id=group,
            client_id=client_id,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            heartbeat_interval_ms=300,
            session_timeout_ms=10000,
            request_timeout_ms=30000,
        )
        # kafka-python 3.0.12 can stall for good in a rejoin (a client bug, not the broker's):
        # when the leader's first assignment ran before it had the topic's metadata, the
        # metadata that arrives next makes it rejoin; the leader's own assignment in that
        # rejoin makes `need_rejoin()` false again, so if `poll()` returned on its timeout
        # while the JoinGroup/SyncGroup task was in flight, the finished task is never
        # collected: the member stays REBALANCING with heartbeats off and no partitions
        # until the broker expires its session. With the initial rebalance delay at 0 the
        # first join can beat the metadata fetch. Fetching the topic's metadata before the
        # first poll makes the first assignment final (no second rebalance).
        assert c.partitions_for_topic(topic) == {0, 1}
        return c

    def drain(c, got, n):
        def step():
            for recs in c.poll(timeout_ms=100).values():
                got.extend(recs)
            return len(got) >= n

        wait_until(step, timeout=30, interval=0, msg=lambda: f"{n} records via kafka-python (got {len(got)})")

    admin = KafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=30000)
    c = consumer("kp1")
    try:
        got = []
        drain(c, got, 20)
        assert sorted(r.value for r in got) == vals(range(20))
        c.commit()
        assert {p: c.committed(KTP(topic, p)) for p in range(2)} == {0: 10, 1: 10}

        listed = {g["group_id"]: g for g in admin.list_groups()}
        assert group in listed, f"ListGroups: {listed}"
        assert listed[group]["protocol_type"] == "consumer"
        d = admin.describe_groups([group])[group]
        assert d["error"] is None, d
        assert d["group_state"] == "Stable"
        assert d["protocol_type"] == "consumer"
        assert d["protocol_data"] == "range"
        assert len(d["members"]) == 1
        mem = d["members"][0]
        assert mem["client_id"] == "kp1"
        parts = {(a["topic"], p) for a in mem["member_assignment"]["assigned_partitions"] for p in a["partitions"]}
        assert parts == {(topic, 0), (topic, 1)}
    finally:
        c.close()

    d = admin.describe_groups([group])[group]
    assert d["group_state"] == "Empty" and not d["members"], d

    produce(bs, topic, range(20, 30), 2)
    c2 = consumer("kp2")
    try:
        got = []
        drain(c2, got, 10)
        assert sorted(r.value for r in got) == vals(range(20, 30))
        assert min(r.offset for r in got) == 10, "kafka-python consumer did not resume at the committed offsets"
        c2.commit()
    finally:
        c2.close()

    # a second group's offsets written by the admin client, then both read in one OffsetFetch (v8)
    res = admin.alter_group_offsets(group2, {KTP(topic, 0): OffsetAndMetadata(3, "meta", -1)})
    assert all(e.errno == 0 for e in res.values()), res
    offs = admin.list_group_offsets([group, group2])
    assert {tp.partition: om.offset for tp, om in offs[group].items()} == {0: 15, 1: 15}, offs
    assert {tp.partition: (om.offset, om.metadata) for tp, om in offs[group2].items()} == {0: (3, "meta")}, offs

    # OffsetDelete on an empty group
    res = admin.delete_group_offsets(group2, [KTP(topic, 0)])
    assert all(e.errno == 0 for e in res.values()), res
    after = admin.list_group_offsets([group2])[group2]
    assert all(om.offset < 0 for om in after.values()), f"offsets after OffsetDelete: {after}"
    admin.close()


# --------------------------------------------------------------------------
# 9. AdminClient group APIs
# --------------------------------------------------------------------------


def test_admin_group_apis(gbroker, topic):
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTP

    bs = gbroker.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, partitions=2)
    produce(bs, topic, range(10), 2)
    g_active, g_empty = f"active-{topic}", f"empty-{topic}"

    # offsets for a group nobody has joined: the group exists, Empty
    fut = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(g_empty, [TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 6)])]
    )[g_empty]
    res = fut.result(timeout=20)
    assert all(tp.error is None for tp in res.topic_partitions), res.topic_partitions
    assert admin_offsets(admin, g_empty) == {(topic, 0): 4, (topic, 1): 6}

    m = Member(bs, g_active, [topic], "m-active")
    kp_admin = KafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=30000)
    try:
        poll_until([m], lambda: len(m.records) >= 10, msg="10 records")
        m.c.commit(asynchronous=False)

        everything = listed_groups(admin)
        assert everything[g_active].state == ConsumerGroupState.STABLE
        assert everything[g_empty].state == ConsumerGroupState.EMPTY
        assert not everything[g_active].is_simple_consumer_group
        stable = listed_groups(admin, states={ConsumerGroupState.STABLE})
        assert g_active in stable and g_empty not in stable, sorted(stable)
        empty = listed_groups(admin, states={ConsumerGroupState.EMPTY})
        assert g_empty in empty and g_active not in empty, sorted(empty)
        both = listed_groups(admin, states={ConsumerGroupState.EMPTY, ConsumerGroupState.STABLE})
        assert {g_active, g_empty} <= set(both)

        d = describe(admin, g_active)
        assert d.group_id == g_active
        assert d.state == ConsumerGroupState.STABLE
        assert not d.is_simple_consumer_group
        assert d.partition_assignor == "range"
        assert d.coordinator is not None and d.coordinator.port == gbroker.port
        assert len(d.members) == 1
        mem = d.members[0]
        assert mem.client_id == "m-active" and mem.member_id and mem.group_instance_id is None
        assert {(tp.topic, tp.partition) for tp in mem.assignment.topic_partitions} == {(topic, 0), (topic, 1)}
        de = describe(admin, g_empty)
        assert de.state == ConsumerGroupState.EMPTY and de.members == []

        # offsets of a group with live members cannot be set from outside (Kafka: UNKNOWN_MEMBER_ID)
        try:
            r = admin.alter_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(g_active, [TopicPartition(topic, 0, 1)])]
            )[g_active].result(timeout=20)
            errs = [tp.error.code() if tp.error else None for tp in r.topic_partitions]
        except KafkaException as e:
            errs = [e.args[0].code()]
        assert errs == [KafkaError.UNKNOWN_MEMBER_ID], f"AlterConsumerGroupOffsets on a live group: {errs}"

        # OffsetDelete while the group is subscribed to the topic
        res = kp_admin.delete_group_offsets(g_active, [KTP(topic, 0)])
        assert [e.errno for e in res.values()] == [KafkaError.GROUP_SUBSCRIBED_TO_TOPIC], res

        expect_kafka_error(admin.delete_consumer_groups([g_active], request_timeout=15)[g_active],
                           KafkaError.NON_EMPTY_GROUP)
        assert admin_offsets(admin, g_active) == {(topic, 0): 5, (topic, 1): 5}
    finally:
        m.close()

    wait_until(lambda: describe(admin, g_active).state == ConsumerGroupState.EMPTY, timeout=10,
               msg="group Empty after its only member closed")
    admin.delete_consumer_groups([g_active], request_timeout=15)[g_active].result(timeout=20)
    assert g_active not in listed_groups(admin)
    assert all(o < 0 for o in admin_offsets(admin, g_active, [TopicPartition(topic, 0), TopicPartition(topic, 1)]).values())
    expect_kafka_error(admin.delete_consumer_groups([g_active], request_timeout=15)[g_active],
                       KafkaError.GROUP_ID_NOT_FOUND)

    # OffsetDelete on an empty group removes just that partition's offset
    res = kp_admin.delete_group_offsets(g_empty, [KTP(topic, 0)])
    assert [e.errno for e in res.values()] == [0], res
    left = admin_offsets(admin, g_empty, [TopicPartition(topic, 0), TopicPartition(topic, 1)])
    assert left[(topic, 1)] == 6 and left[(topic, 0)] < 0, left
    kp_admin.close()


# --------------------------------------------------------------------------
# 10. errors
# --------------------------------------------------------------------------


def test_raw_group_protocol_errors(gbroker, topic):
    """The coordinator's answers, request by request (librdkafka retries most of these)."""
    create_topic(make_admin(gbroker.bootstrap), topic, partitions=2)
    G, GS = f"g-{topic}", f"static-{topic}"
    sub = subscription_bytes([topic])
    c1, c2, c3, c4 = (RawGroupClient(gbroker, client_id=f"raw-{i}") for i in range(1, 5))
    try:
        # FindCoordinator v4, batched keys
        r = c1.find_coordinators([G, GS])
        coords = {x.key: x for x in r.coordinators}
        assert set(coords) == {G, GS}
        for x in coords.values():
            assert x.error_code == 0 and x.node_id >= 0 and x.port == gbroker.port, x

        # FindCoordinator v0 (key only) and v3 (key + key type)
        from kafka.protocol.metadata import FindCoordinatorRequest

        for v, extra in ((0, {}), (3, {"key_type": 0})):
            r = c1.call(FindCoordinatorRequest, v, key=G, **extra)
            assert (r.error_code, r.port) == (0, gbroker.port) and r.node_id >= 0, f"FindCoordinator v{v}: {r}"

        # KIP-394: a new member gets MEMBER_ID_REQUIRED first
        j1 = c1.join(G, topics=[topic])
        assert j1.error_code == MEMBER_ID_REQUIRED and j1.member_id
        m1 = j1.member_id
        j1 = c1.join(G, member_id=m1, topics=[topic])
        assert j1.error_code == 0, j1
        gen = j1.generation_id
        assert gen >= 1
        assert (j1.leader, j1.member_id, j1.protocol_type, j1.protocol_name) == (m1, m1, "consumer", "range")
        assert [(x.member_id, bytes(x.metadata)) for x in j1.members] == [(m1, sub)]

        a1 = assignment_bytes({topic: [0, 1]})
        s1 = c1.sync(G, gen, m1, {m1: a1})
        assert s1.error_code == 0 and bytes(s1.assignment) == a1 and s1.protocol_name == "range", s1

        assert c1.heartbeat(G, gen, m1) == 0
        assert c1.heartbeat(G, gen + 1, m1) == ILLEGAL_GENERATION
        assert c1.heartbeat(G, gen, "no-such-member") == UNKNOWN_MEMBER_ID

        assert c1.commit(G, gen, m1, {(topic, 0): 1}) == {(topic, 0): 0}
        assert c1.commit(G, gen + 1, m1, {(topic, 0): 2}) == {(topic, 0): ILLEGAL_GENERATION}
        assert c1.commit(G, gen, "no-such-member", {(topic, 0): 2}) == {(topic, 0): UNKNOWN_MEMBER_ID}
        # a "simple" commit (no member, generation -1) is refused while the group has members
        assert c1.commit(G, -1, "", {(topic, 0): 2}) == {(topic, 0): UNKNOWN_MEMBER_ID}

        # no protocol in common with the group
        j = c2.join(G, protocols=[("roundrobin", sub)])
        assert j.error_code == INCONSISTENT_GROUP_PROTOCOL, j.error_code

        # a second member joins: the group rebalances, m1 learns it from its heartbeat
        j2 = c2.join(G, topics=[topic])
        assert j2.error_code == MEMBER_ID_REQUIRED
        m2 = j2.member_id
        c2.join(G, member_id=m2, topics=[topic], send_only=True)  # parked until m1 rejoins
        wait_until(lambda: c1.heartbeat(G, gen, m1) == REBALANCE_IN_PROGRESS, timeout=10,
                   msg="REBALANCE_IN_PROGRESS on heartbeat")
        # commits with the current generation are still accepted while preparing the rebalance
        assert c1.commit(G, gen, m1, {(topic, 0): 3}) == {(topic, 0): 0}
        j1 = c1.join(G, member_id=m1, topics=[topic])
        j2 = c2.recv()
        assert j1.error_code == 0 and j2.error_code == 0, (j1, j2)
        gen2 = j1.generation_id
        assert gen2 == gen + 1 and j2.generation_id == gen2
        assert j1.leader == j2.leader == m1
        assert sorted(x.member_id for x in j1.members) == sorted([m1, m2])
        assert list(j2.members) == [], "followers must not get the member list"

        assert c1.commit(G, gen, m1, {(topic, 0): 4}) == {(topic, 0): ILLEGAL_GENERATION}
        # joined but not yet synced: CompletingRebalance
        assert c1.commit(G, gen2, m1, {(topic, 0): 4}) == {(topic, 0): REBALANCE_IN_PROGRESS}

        c2.sync(G, gen2, m2, send_only=True)  # follower waits for the leader's assignment
        a_m1, a_m2 = assignment_bytes({topic: [0]}), assignment_bytes({topic: [1]})
        s1 = c1.sync(G, gen2, m1, {m1: a_m1, m2: a_m2})
        s2 = c2.recv()
        assert (s1.error_code, bytes(s1.assignment)) == (0, a_m1)
        assert (s2.error_code, bytes(s2.assignment)) == (0, a_m2)
        assert c1.commit(G, gen2, m1, {(topic, 0): 5}) == {(topic, 0): 0}
        assert c2.commit(G, gen2, m2, {(topic, 1): 6}) == {(topic, 1): 0}
        assert c2.heartbeat(G, gen2, m2) == 0

        d = c1.describe([G])[G]
        assert (d.error_code, d.group_state, d.protocol_type, d.protocol_data) == (0, "Stable", "consumer", "range")
        got = {x.member_id: (x.client_id, bytes(x.member_metadata), bytes(x.member_assignment)) for x in d.members}
        assert got == {m1: ("raw-1", sub, a_m1), m2: ("raw-2", sub, a_m2)}, got

        lg = c1.list_groups(states=["Stable"])
        assert lg.error_code == 0
        stable = {x.group_id: x for x in lg.groups}
        assert G in stable and stable[G].group_state == "Stable" and stable[G].protocol_type == "consumer"
        assert stable[G].group_type.lower() == "classic"
        assert G not in {x.group_id for x in c1.list_groups(states=["Empty"]).groups}
        assert G in {x.group_id for x in c1.list_groups(types=["classic"]).groups}
        assert G not in {x.group_id for x in c1.list_groups(types=["consumer"]).groups}

        # OffsetFetch v8 with several groups, one of them unknown
        unknown = f"unknown-{topic}"
        f = c1.fetch_offsets({G: None, unknown: [(topic, 0)]})
        assert f[G][0] == 0 and {k: v[0] for k, v in f[G][1].items()} == {(topic, 0): 5, (topic, 1): 6}, f
        assert f[unknown][0] == 0 and f[unknown][1][(topic, 0)][0] == -1, f

        # static membership: a second instance with the same group.instance.id fences the first
        s = c3.join(GS, topics=[topic], instance_id="s1")
        assert s.error_code == 0 and s.member_id, f"static member join: {s.error_code}"  # no MEMBER_ID_REQUIRED
        ms1, sgen = s.member_id, s.generation_id
        assert c3.sync(GS, sgen, ms1, {ms1: a1}, instance_id="s1").error_code == 0
        s = c4.join(GS, topics=[topic], instance_id="s1")
        assert s.error_code == 0 and s.member_id != ms1, s
        ms1b = s.member_id
        assert s.generation_id == sgen, "static rejoin with unchanged metadata must not bump the generation"
        assert c3.heartbeat(GS, sgen, ms1, instance_id="s1") == FENCED_INSTANCE_ID
        assert c3.commit(GS, sgen, ms1, {(topic, 0): 9}, instance_id="s1") == {(topic, 0): FENCED_INSTANCE_ID}
        assert c4.heartbeat(GS, sgen, ms1b, instance_id="s1") == 0

        # batched LeaveGroup: by instance id, and an unknown member
        lv = c4.leave(GS, [("", "s1"), ("no-such-member", None)])
        assert lv.error_code == 0
        assert [(x.member_id, x.group_instance_id, x.error_code) for x in lv.members] == [
            ("", "s1", 0),
            ("no-such-member", None, UNKNOWN_MEMBER_ID),
        ], lv.members
        assert c4.describe([GS])[GS].group_state == "Empty"

        lv = c1.leave(G, [(m1, None), (m2, None)])
        assert lv.error_code == 0 and [x.error_code for x in lv.members] == [0, 0], lv
        d = c1.describe([G])[G]
        assert d.group_state == "Empty" and list(d.members) == []

        # a (stale) member after the group emptied
        assert c1.heartbeat(G, gen2, m1) == UNKNOWN_MEMBER_ID
        assert c1.commit(G, gen2, m1, {(topic, 0): 7}) == {(topic, 0): UNKNOWN_MEMBER_ID}

        # DeleteGroups, batched, one unknown
        from kafka.protocol.admin import DeleteGroupsRequest

        dr = c1.call(DeleteGroupsRequest, 2, groups_names=[G, unknown])
        assert {x.group_id: x.error_code for x in dr.results} == {G: 0, unknown: GROUP_ID_NOT_FOUND}
        f = c1.fetch_offsets({G: [(topic, 0)]})
        assert f[G][1][(topic, 0)][0] == -1, f"offsets of a deleted group: {f}"
    finally:
        for c in (c1, c2, c3, c4):
            c.close()


def test_invalid_session_timeout(broker_factory, topic):
    b = broker_factory(overrides={**FAST, "group.min.session.timeout.ms": 6000, "group.max.session.timeout.ms": 20000})
    create_topic(make_admin(b.bootstrap), topic, partitions=1)
    group = f"g-{topic}"

    raw = RawGroupClient(b)
    try:
        for bad in (5999, 20001):
            r = raw.join(group, topics=[topic], session_timeout_ms=bad)
            assert r.error_code == INVALID_SESSION_TIMEOUT, f"session {bad} ms: error {r.error_code}"
        for ok in (6000, 20000):
            r = raw.join(group, topics=[topic], session_timeout_ms=ok)
            assert r.error_code == MEMBER_ID_REQUIRED, f"session {ok} ms: error {r.error_code}"
    finally:
        raw.close()

    # the same through librdkafka: a consumer error from poll(), and it never gets partitions
    for bad in (1000, 30000):
        m = Member(b.bootstrap, group, [topic], f"bad-{bad}", **{"session.timeout.ms": bad})
        try:
            poll_until(
                [m],
                lambda: any(e.code() == KafkaError.INVALID_SESSION_TIMEOUT for e in m.errors),
                timeout=15,
                msg=lambda: f"INVALID_SESSION_TIMEOUT from poll() (errors {m.errors})",
            )
            assert m.assignment() == set() and not m.assigned
        finally:
            m.close()


def test_static_member_fenced_by_same_instance_id(gbroker, topic):
    """KIP-345: a second live consumer with the same group.instance.id takes over the
    membership; the first one is fenced (a fatal FENCED_INSTANCE_ID error in librdkafka)."""
    bs = gbroker.bootstrap
    create_topic(make_admin(bs), topic, partitions=2)
    group = f"g-{topic}"
    conf = {"group.instance.id": "dup", "session.timeout.ms": 10000}
    first = Member(bs, group, [topic], "first", **conf)
    second = None
    try:
        poll_until([first], lambda: len(first.assignment()) == 2, msg="first member assigned")
        second = Member(bs, group, [topic], "second", **conf)
        poll_until([first, second], lambda: len(second.assignment()) == 2,
                   msg=lambda: f"second instance taking over the assignment ({second!r})")
        poll_until(
            [first, second],
            lambda: any(e.code() in (KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID) for e in first.errors),
            timeout=10,
            msg=lambda: f"fatal FENCED_INSTANCE_ID on the first instance (errors {first.errors})",
        )
        # librdkafka reports _FATAL carrying the broker's FENCED_INSTANCE_ID message
        assert any("fenced" in e.str().lower() for e in first.errors), first.errors
        assert not second.errors, second.errors
        d = describe(make_admin(bs), group)
        assert [(x.client_id, x.group_instance_id) for x in d.members] == [("second", "dup")]
    finally:
        close_all([m for m in (first, second) if m is not None])


def test_commits_to_unknown_topics_and_partitions(gbroker, topic):
    """As Kafka's KafkaApis: an offset for a topic the cluster does not have, or for a
    partition index beyond the topic's count, answers UNKNOWN_TOPIC_OR_PARTITION and is not
    stored; the other offsets of the same request are committed. When every offset is
    unknown, the coordinator is not asked: not even the group's generation is checked."""
    bs = gbroker.bootstrap
    create_topic(make_admin(bs), topic, partitions=2)
    group, missing = f"g-{topic}", f"missing-{topic}"
    raw = RawGroupClient(gbroker)
    try:
        r = raw.commit(group, -1, "", {(topic, 0): 5, (topic, 2): 6, (topic, -1): 6, (missing, 0): 7})
        assert r == {
            (topic, 0): 0,
            (topic, 2): UNKNOWN_TOPIC_OR_PARTITION,
            (topic, -1): UNKNOWN_TOPIC_OR_PARTITION,
            (missing, 0): UNKNOWN_TOPIC_OR_PARTITION,
        }, r
        err, offsets = raw.fetch_offsets({group: None})[group]
        assert err == 0 and {k: v[0] for k, v in offsets.items()} == {(topic, 0): 5}, offsets
        # no known partition left: answered before the coordinator, whose answer for this
        # unknown group and generation would be GROUP_ID_NOT_FOUND / ILLEGAL_GENERATION
        r = raw.commit(f"nobody-{topic}", 3, "m", {(missing, 0): 1, (topic, 9): 1})
        assert r == {(missing, 0): UNKNOWN_TOPIC_OR_PARTITION, (topic, 9): UNKNOWN_TOPIC_OR_PARTITION}, r
        assert raw.commit(f"nobody-{topic}", 3, "m", {(topic, 1): 1}) == {(topic, 1): ILLEGAL_GENERATION}
        assert f"nobody-{topic}" not in {g.group_id for g in raw.list_groups().groups}
    finally:
        raw.close()

    # TxnOffsetCommit (v0 and the newest served) answers the same way per partition. (Its
    # own group: the offsets it stores stay pending, as this producer never ends a
    # transaction, and read_committed consumers would wait on them.)
    with VersionedClient("127.0.0.1", gbroker.port) as c:
        pid, epoch = open_offsets_transaction(c, f"txn-{topic}", f"txn-{group}")
        for v in (0, 4):
            resp = c.call(28, v, {
                "transactional_id": f"txn-{topic}", "group_id": f"txn-{group}", "producer_id": pid,
                "producer_epoch": epoch,
                "generation_id": -1, "member_id": "", "group_instance_id": None,
                "topics": [
                    {"name": missing, "partitions": [{"partition_index": 0, "committed_offset": 1,
                                                      "committed_leader_epoch": -1, "committed_metadata": ""}]},
                    {"name": topic, "partitions": [{"partition_index": p, "committed_offset": 1,
                                                    "committed_leader_epoch": -1, "committed_metadata": ""}
                                                   for p in (1, 5)]},
                ],
            })
            got = {(t.name, p.partition_index): p.error_code for t in resp.topics for p in t.partitions}
            assert got == {
                (missing, 0): UNKNOWN_TOPIC_OR_PARTITION,
                (topic, 1): 0,
                (topic, 5): UNKNOWN_TOPIC_OR_PARTITION,
            }, f"TxnOffsetCommit v{v}: {got}"

    # librdkafka fails the commit with the partitions' error; the known partition is stored
    c = make_consumer(bs, **{"group.id": group, "enable.auto.commit": False})
    try:
        offsets = [TopicPartition(topic, 1, 8), TopicPartition(topic, 4, 8), TopicPartition(missing, 0, 8)]
        with pytest.raises(KafkaException) as failed:
            c.commit(offsets=offsets, asynchronous=False)
        assert failed.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, failed.value
        assert committed_map(c, topic, [1]) == {1: 8}
    finally:
        c.close()
