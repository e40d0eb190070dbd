"""KIP-848 consumer groups (`group.protocol=consumer`) with librdkafka, end to end:
server-side assignment, rebalancing as members come and go, regex subscriptions,
commits validated against member epochs, and the admin view of the group."""

from __future__ import annotations

import struct
import uuid

import pytest
from confluent_kafka import ConsumerGroupType, KafkaError, TopicPartition

from group_helpers import (
    GROUP_ID_NOT_FOUND,
    ILLEGAL_GENERATION,
    REBALANCE_IN_PROGRESS,
    STALE_MEMBER_EPOCH,
    UNKNOWN_MEMBER_ID,
    UNSUPPORTED_VERSION,
    RawGroupClient,
    assignment_bytes,
    open_offsets_transaction,
)
from helpers import create_topic, flush_all, make_admin, make_consumer, make_producer, wait_until
from versioned_wire import VersionedClient

# The broker tells members how often to heartbeat; keep rebalances quick in tests.
FAST = {"group.consumer.heartbeat.interval.ms": 200}
PARTITIONS = 6


@pytest.fixture
def cbroker(broker_factory):
    return broker_factory(overrides=FAST)


class ConsumerMember:
    def __init__(self, bootstrap: str, group: str, subscription: list[str], **conf):
        self.c = make_consumer(
            bootstrap,
            **{
                "group.id": group,
                "group.protocol": "consumer",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                # helpers.make_consumer turns offset storing off; commits here rely on it.
                "enable.auto.offset.store": True,
                **conf,
            },
        )
        # Every assignment change librdkafka reports (assigned, revoked or lost partitions).
        self.rebalance_events: list[str] = []
        self.c.subscribe(
            subscription,
            on_assign=lambda _c, parts: self.rebalance_events.append(f"assign {len(parts)}"),
            on_revoke=lambda _c, parts: self.rebalance_events.append(f"revoke {len(parts)}"),
            on_lost=lambda _c, parts: self.rebalance_events.append(f"lost {len(parts)}"),
        )
        self.seen: set[tuple[str, int, int]] = set()
        self.errors: list[KafkaError] = []

    def poll(self) -> None:
        for m in self.c.consume(num_messages=500, timeout=0.05):
            if m.error() is None:
                self.seen.add((m.topic(), m.partition(), m.offset()))
            elif m.error().code() != KafkaError._PARTITION_EOF:
                self.errors.append(m.error())

    def partitions(self) -> set[int]:
        return {tp.partition for tp in self.c.assignment()}


def produce(bootstrap: str, topic: str, n: int, start: int = 0) -> None:
    p = make_producer(bootstrap)
    for i in range(start, start + n):
        p.produce(topic, key=b"%d" % i, value=b"%d" % i, partition=i % PARTITIONS)
    flush_all(p)


def describe(bootstrap: str, group: str):
    # The suite's admin clients forward librdkafka logs to Python, which librdkafka only
    # delivers from poll(); poll while the describe is pending.
    admin = make_admin(bootstrap)
    future = admin.describe_consumer_groups([group])[group]
    wait_until(lambda: admin.poll(0.05) is not None and future.done(), timeout=15, interval=0.0, msg="describe")
    return future.result()


def poll_until(members, cond, timeout=30, msg=None):
    def step():
        for m in members:
            m.poll()
        return cond()

    return wait_until(step, timeout=timeout, interval=0.0, msg=msg)


@pytest.mark.timeout(90)
def test_members_split_partitions_and_take_over(cbroker, topic):
    bs = cbroker.bootstrap
    create_topic(make_admin(bs), topic, partitions=PARTITIONS)
    produce(bs, topic, 600)
    group = f"g-{uuid.uuid4().hex[:8]}"
    a = ConsumerMember(bs, group, [topic])
    b = ConsumerMember(bs, group, [topic])
    poll_until(
        [a, b],
        lambda: len(a.partitions()) == 3 and len(b.partitions()) == 3,
        msg=lambda: f"3/3 split, got {a.partitions()} / {b.partitions()}",
    )
    assert not a.partitions() & b.partitions(), "a partition is owned twice"
    poll_until([a, b], lambda: len(a.seen | b.seen) == 600, msg="all 600 records consumed")
    assert not a.errors and not b.errors, (a.errors, b.errors)

    # b leaves: a takes every partition and reads what is produced next.
    b.c.close()
    poll_until([a], lambda: len(a.partitions()) == PARTITIONS, msg="a owns all partitions after b left")
    produce(bs, topic, 60, start=600)
    poll_until([a], lambda: len({s for s in a.seen if s[2] >= 100}) >= 60, msg="a reads new records")

    desc = describe(bs, group)
    assert desc.type == ConsumerGroupType.CONSUMER
    assert len(desc.members) == 1
    assert {tp.partition for tp in desc.members[0].assignment.topic_partitions} == set(range(PARTITIONS))
    a.c.close()


@pytest.mark.timeout(60)
def test_commit_and_resume(cbroker, topic):
    bs = cbroker.bootstrap
    create_topic(make_admin(bs), topic, partitions=PARTITIONS)
    produce(bs, topic, 120)
    group = f"g-{uuid.uuid4().hex[:8]}"
    a = ConsumerMember(bs, group, [topic])
    poll_until([a], lambda: len(a.seen) == 120, msg="first consumer reads everything")
    a.c.commit(asynchronous=False)
    committed = a.c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
    assert sorted(tp.offset for tp in committed) == [20] * PARTITIONS
    a.c.close()
    produce(bs, topic, 30, start=120)
    b = ConsumerMember(bs, group, [topic])
    poll_until([b], lambda: len(b.seen) >= 30, msg="second consumer resumes")
    assert all(off >= 20 for _, _, off in b.seen), "records before the committed offsets came back"
    b.c.close()
    # A fresh librdkafka admin client may list before it has learnt the brokers and return
    # nothing; ask until the answer names the group.
    admin = make_admin(bs)
    wait_until(
        lambda: any(
            g.group_id == group and g.type == ConsumerGroupType.CONSUMER
            for g in admin.list_consumer_groups().result(timeout=10).valid
        ),
        timeout=15,
        msg="the group is listed as a consumer-protocol group",
    )


@pytest.mark.timeout(60)
def test_regex_subscription_follows_new_topics(cbroker):
    bs = cbroker.bootstrap
    prefix = f"cp{uuid.uuid4().hex[:6]}"
    admin = make_admin(bs)
    create_topic(admin, f"{prefix}-one", partitions=2)
    create_topic(admin, f"other{prefix}", partitions=2)
    a = ConsumerMember(bs, f"g-{prefix}", [f"^{prefix}-.*"], **{"topic.metadata.refresh.interval.ms": 500})
    poll_until([a], lambda: {tp.topic for tp in a.c.assignment()} == {f"{prefix}-one"}, msg="regex matches one topic")
    create_topic(admin, f"{prefix}-two", partitions=3)
    poll_until(
        [a],
        lambda: {tp.topic for tp in a.c.assignment()} == {f"{prefix}-one", f"{prefix}-two"},
        msg="a topic created later joins the subscription",
    )
    assert len(a.c.assignment()) == 5
    a.c.close()


@pytest.mark.timeout(90)
def test_group_survives_broker_restart_without_rejoining(cbroker, topic):
    """The group's epochs and assignments are durable: after a broker restart the member
    keeps its member id, epoch and partitions, and goes on consuming."""
    bs = cbroker.bootstrap
    create_topic(make_admin(bs), topic, partitions=PARTITIONS)
    produce(bs, topic, 60)
    group = f"g-{uuid.uuid4().hex[:8]}"
    a = ConsumerMember(bs, group, [topic])
    poll_until([a], lambda: len(a.seen) == 60, msg="records before the restart")
    before = describe(bs, group)
    [member] = before.members
    events_before = list(a.rebalance_events)
    cbroker.stop()
    cbroker.start()
    produce(bs, topic, 60, start=60)
    poll_until([a], lambda: len(a.seen) == 120, msg="records after the restart")
    after = describe(bs, group)
    [same] = after.members
    assert same.member_id == member.member_id, "the member was not replaced"
    assert {tp.partition for tp in same.assignment.topic_partitions} == set(range(PARTITIONS))
    assert not a.errors, a.errors
    # A member the restarted broker did not know would have been fenced: its partitions
    # lost and assigned again.
    assert a.rebalance_events == events_before, a.rebalance_events[len(events_before):]
    a.c.close()


@pytest.mark.timeout(60)
def test_commits_after_a_revocation_need_the_new_epoch(cbroker, topic):
    """Kafka 4's ConsumerGroup.validateOffsetCommit, over raw frames: a member commits with
    its member epoch; while it still holds partitions it must release, its epoch stays and
    its commits go through; once it released them and its epoch moved on, a commit with the
    old epoch is STALE_MEMBER_EPOCH (ILLEGAL_GENERATION in TxnOffsetCommit, which has no
    STALE_MEMBER_EPOCH), and OffsetCommit before v9 (no member epoch) is UNSUPPORTED_VERSION."""
    bs = cbroker.bootstrap
    create_topic(make_admin(bs), topic, partitions=4)
    group = f"g-{uuid.uuid4().hex[:8]}"
    topic_id = None

    with VersionedClient("127.0.0.1", cbroker.port) as c:

        def heartbeat(member_id, epoch, owned, join=False):
            resp = c.call(68, 1, {
                "group_id": group, "member_id": member_id, "member_epoch": epoch, "instance_id": None,
                "rack_id": None, "rebalance_timeout_ms": 30000 if join else -1,
                "subscribed_topic_names": [topic] if join else None, "subscribed_topic_regex": None,
                "server_assignor": None,
                "topic_partitions": [{"topic_id": topic_id, "partitions": sorted(owned)}] if owned else [],
            })
            assert resp.error_code == 0, resp
            return resp

        def partitions(resp):
            nonlocal topic_id
            if resp.assignment is None:
                return None
            tps = resp.assignment.topic_partitions
            for t in tps:
                topic_id = t.topic_id
            return {p for t in tps for p in t.partitions}

        def commit(member_id, epoch, version=9, partition=0):
            resp = c.call(8, version, {
                "group_id": group, "generation_id_or_member_epoch": epoch, "member_id": member_id,
                "group_instance_id": None, "retention_time_ms": -1,
                "topics": [{"name": topic, "partitions": [{"partition_index": partition, "committed_offset": 3,
                                                           "committed_leader_epoch": -1,
                                                           "committed_metadata": ""}]}],
            })
            return resp.topics[0].partitions[0].error_code

        pid, producer_epoch = open_offsets_transaction(c, f"txn-{group}", group)

        def txn_commit(member_id, epoch):
            resp = c.call(28, 4, {
                "transactional_id": f"txn-{group}", "group_id": group, "producer_id": pid,
                "producer_epoch": producer_epoch,
                "generation_id": epoch, "member_id": member_id, "group_instance_id": None,
                "topics": [{"name": topic, "partitions": [{"partition_index": 0, "committed_offset": 3,
                                                           "committed_leader_epoch": -1,
                                                           "committed_metadata": ""}]}],
            })
            return resp.topics[0].partitions[0].error_code

        a_id, b_id = str(uuid.uuid4()), str(uuid.uuid4())
        a = heartbeat(a_id, 0, set(), join=True)
        a_owned, epoch = partitions(a), a.member_epoch
        assert a_owned == {0, 1, 2, 3}, a
        assert commit(a_id, epoch) == 0
        assert commit(a_id, epoch, version=8) == UNSUPPORTED_VERSION

        # b joins: a must release two partitions; it keeps its epoch until it has.
        heartbeat(b_id, 0, set(), join=True)
        revoking = heartbeat(a_id, epoch, a_owned)
        kept = partitions(revoking)
        assert revoking.member_epoch == epoch and len(kept) == 2, revoking
        (moving,) = sorted(a_owned - kept)[:1]
        assert commit(a_id, epoch, partition=moving) == 0, "a commits before it releases"

        released = heartbeat(a_id, epoch, kept)
        assert released.member_epoch > epoch, released
        assert commit(a_id, epoch, partition=moving) == STALE_MEMBER_EPOCH
        assert commit(a_id, released.member_epoch + 1) == STALE_MEMBER_EPOCH
        assert txn_commit(a_id, epoch) == ILLEGAL_GENERATION
        assert commit(a_id, released.member_epoch, partition=min(kept)) == 0
        assert commit("not-a-member", released.member_epoch) == UNKNOWN_MEMBER_ID


def group_epochs(port: int, group: str):
    """ConsumerGroupDescribe over raw frames (librdkafka's admin view has no epochs):
    (group epoch, {instance id or member id: member epoch})."""
    with VersionedClient("127.0.0.1", port) as c:
        (g,) = c.call(69, 0, {"group_ids": [group], "include_authorized_operations": False}).groups
    assert g.error_code == 0, g
    return g.group_epoch, {m.instance_id or m.member_id: m.member_epoch for m in g.members}


@pytest.mark.timeout(90)
def test_static_member_restart_keeps_its_partitions(cbroker, topic):
    """KIP-848 static membership: a consumer with group.instance.id that closes leaves with
    epoch -2; its partitions stay its own for the session (no rebalance, the other member
    gets none of them), and its next incarnation takes them back without a rebalance."""
    bs = cbroker.bootstrap
    create_topic(make_admin(bs), topic, partitions=PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:8]}"
    conf = {"group.instance.id": "static-a"}  # the session (45 s) is the broker's
    a = ConsumerMember(bs, group, [topic], **conf)
    b = ConsumerMember(bs, group, [topic])
    poll_until([a, b], lambda: len(a.partitions()) == 3 and len(b.partitions()) == 3,
               msg=lambda: f"3/3 split, got {a.partitions()} / {b.partitions()}")
    a_parts, b_parts = a.partitions(), b.partitions()
    epoch, _ = group_epochs(cbroker.port, group)
    a.c.close()
    wait_until(lambda: group_epochs(cbroker.port, group)[1].get("static-a") == -2, timeout=15,
               msg=lambda: f"the static member kept with epoch -2: {group_epochs(cbroker.port, group)}")

    # b heartbeats on; a's partitions stay a's and the group does not rebalance.
    b_events = len(b.rebalance_events)
    for _ in range(20):  # about a second of b's heartbeats
        b.poll()
    assert b.partitions() == b_parts, "b took partitions of the static member that left"
    assert group_epochs(cbroker.port, group)[0] == epoch

    a2 = ConsumerMember(bs, group, [topic], **conf)
    poll_until([a2, b], lambda: a2.partitions() == a_parts, msg=lambda: f"a2 got {a2.partitions()}, a had {a_parts}")
    assert b.partitions() == b_parts and len(b.rebalance_events) == b_events, b.rebalance_events
    epoch_after, members = group_epochs(cbroker.port, group)
    assert epoch_after == epoch, "the new incarnation took over without a rebalance"
    assert "static-a" in members and len(members) == 2, members
    a2.c.close()
    b.c.close()


def kafka_python_member(bs: str, group: str, topic: str, client_id: str):
    """A classic-protocol group member (kafka-python, eager range assignor)."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topic,
        bootstrap_servers=bs,
        group_id=group,
        client_id=client_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        heartbeat_interval_ms=200,
        session_timeout_ms=10000,
        request_timeout_ms=30000,
    )
    # See test_groups.test_kafka_python_group_and_admin: without the topic's metadata before
    # the first join, kafka-python 3.0.12 can stall in its second rebalance.
    c.partitions_for_topic(topic)
    return c


def list_group_type(port: int, group: str):
    with VersionedClient("127.0.0.1", port) as c:
        resp = c.call(16, 5, {"states_filter": [], "types_filter": []})
    return {g.group_id: (g.group_type, g.group_state) for g in resp.groups}.get(group)


@pytest.mark.timeout(120)
def test_classic_and_consumer_members_share_a_group_across_upgrade_and_downgrade(cbroker, topic):
    """Kafka 4's online migration with real clients: a kafka-python (classic protocol) group
    is upgraded when a librdkafka member of the consumer protocol joins; both then share the
    partitions, the kafka-python member still speaking JoinGroup/SyncGroup/Heartbeat; when
    the librdkafka member leaves, the group is a classic group again and kafka-python gets
    every partition back. Every record is read, none by two members at once."""
    bs = cbroker.bootstrap
    create_topic(make_admin(bs), topic, partitions=PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:8]}"
    produce(bs, topic, 60)  # 10 a partition
    kp = kafka_python_member(bs, group, topic, "kp-classic")
    kp_seen: set[tuple[int, int]] = set()

    def kp_poll():
        for tp, records in kp.poll(timeout_ms=50).items():
            kp_seen.update((tp.partition, r.offset) for r in records)

    def kp_parts():
        return {tp.partition for tp in kp.assignment()}

    try:
        wait_until(lambda: kp_poll() or len(kp_seen) == 60, timeout=30, interval=0,
                   msg=lambda: f"kafka-python alone reads all 60 (got {len(kp_seen)})")
        assert kp_parts() == set(range(PARTITIONS))
        assert list_group_type(cbroker.port, group) == ("classic", "Stable")
        kp.commit()

        # Upgrade: a consumer-protocol member joins the classic group.
        lk = ConsumerMember(bs, group, [topic])

        def split():
            kp_poll()
            lk.poll()
            return len(kp_parts()) == 3 and len(lk.partitions()) == 3 and not (kp_parts() & lk.partitions())

        wait_until(split, timeout=45, interval=0,
                   msg=lambda: f"a 3/3 split, got kafka-python {kp_parts()} / librdkafka {lk.partitions()}")
        assert list_group_type(cbroker.port, group)[0] == "consumer"
        with VersionedClient("127.0.0.1", cbroker.port) as c:
            (g,) = c.call(69, 1, {"group_ids": [group], "include_authorized_operations": False}).groups
        # KIP-1099 member types: 0 classic protocol, 1 consumer protocol
        types = sorted((m.member_type, m.client_id) for m in g.members)
        assert [t for t, _ in types] == [0, 1] and types[0][1] == "kp-classic", types
        assert g.group_state in ("Assigning", "Reconciling", "Stable"), g  # Kafka's spelling
        # Kafka 4: the classic DescribeGroups does not describe the consumer group, its classic
        # member notwithstanding; ListGroups v5 lists it once, as a consumer group.
        with VersionedClient("127.0.0.1", cbroker.port) as c:
            (d,) = c.call(15, 6, {"groups": [group], "include_authorized_operations": False}).groups
        assert (d.error_code, d.group_state, list(d.members)) == (GROUP_ID_NOT_FOUND, "Dead", []), d
        assert listed(cbroker.port, types=["Consumer"])[group][0] == "consumer"
        assert group not in listed(cbroker.port, types=["classic"])


        def found_by_its_state():  # the state may move between the two calls: ask again
            state = listed(cbroker.port)[group][1]
            return group in listed(cbroker.port, states=[f" {state.upper()} "], types=["consumer"])

        wait_until(found_by_its_state, timeout=10, msg="ListGroups filters by state in any case")

        # Both read what is produced now, each from its own partitions, resuming at the commit.
        produce(bs, topic, 60, start=60)
        wait_until(lambda: split() and len({o for o in kp_seen if o[1] >= 10}) + len(lk.seen) >= 60,
                   timeout=30, interval=0,
                   msg=lambda: f"new records: kafka-python {len(kp_seen) - 60}, librdkafka {len(lk.seen)}")
        assert {part for part, offset in kp_seen if offset >= 10} <= kp_parts()
        assert {p for _, p, _ in lk.seen} == lk.partitions()
        assert all(off >= 10 for _, _, off in lk.seen), "librdkafka did not resume at the committed offsets"

        # Downgrade: the last consumer-protocol member leaves; kafka-python has it all again.
        lk.c.close()
        wait_until(lambda: kp_poll() or kp_parts() == set(range(PARTITIONS)), timeout=45, interval=0,
                   msg=lambda: f"kafka-python owns every partition again (has {kp_parts()})")
        assert list_group_type(cbroker.port, group) == ("classic", "Stable")
    finally:
        kp.close()


@pytest.mark.timeout(60)
def test_the_migration_policy_can_forbid_an_upgrade(broker_factory, topic):
    # Kafka's names, in any case (CaseInsensitiveValidString): this is "downgrade".
    b = broker_factory(overrides={**FAST, "group.consumer.migration.policy": "DownGrade"})
    create_topic(make_admin(b.bootstrap), topic, partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    kp = kafka_python_member(b.bootstrap, group, topic, "kp")
    try:
        wait_until(lambda: kp.poll(timeout_ms=50) is not None and len(kp.assignment()) == 2, timeout=30,
                   interval=0, msg="kafka-python joins")
        with VersionedClient("127.0.0.1", b.port) as c:
            resp = c.call(68, 1, {
                "group_id": group, "member_id": str(uuid.uuid4()), "member_epoch": 0, "instance_id": None,
                "rack_id": None, "rebalance_timeout_ms": 30000, "subscribed_topic_names": [topic],
                "subscribed_topic_regex": None, "server_assignor": None, "topic_partitions": [],
            })
        assert resp.error_code == 69, resp  # GROUP_ID_NOT_FOUND
        assert resp.error_message == (
            f"Cannot upgrade classic group {group} to consumer group because online upgrade is disabled."
        )
        assert list_group_type(b.port, group)[0] == "classic"
    finally:
        kp.close()


# --------------------------------------------------------------------------
# Kafka 4.1's answers at the edges, over raw frames
# --------------------------------------------------------------------------

FENCED_MEMBER_EPOCH = 110
# Classic members get their JoinGroup answer at once.
EDGES = {**FAST, "group.initial.rebalance.delay.ms": 0}


class RawConsumerMember:
    """ConsumerGroupHeartbeat v1 frames for one member of `group`."""

    def __init__(self, client: VersionedClient, group: str, topic: str, member_id: str | None = None,
                 instance_id: str | None = None):
        self.c, self.group, self.topic = client, group, topic
        self.member_id = member_id or str(uuid.uuid4())
        self.instance_id = instance_id
        self.topic_id = None

    def beat(self, epoch: int, owned: set[int] | None = None, join: bool = False):
        return self.c.call(68, 1, {
            "group_id": self.group, "member_id": self.member_id, "member_epoch": epoch,
            "instance_id": self.instance_id, "rack_id": None,
            "rebalance_timeout_ms": 30000 if join else -1,
            "subscribed_topic_names": [self.topic] if join else None, "subscribed_topic_regex": None,
            "server_assignor": None,
            "topic_partitions": [{"topic_id": self.topic_id, "partitions": sorted(owned)}] if owned else [],
        })

    def join(self):
        return self.beat(0, join=True)

    def partitions(self, resp) -> set[int] | None:
        if resp.assignment is None:
            return None
        for t in resp.assignment.topic_partitions:
            self.topic_id = t.topic_id
        return {p for t in resp.assignment.topic_partitions for p in t.partitions}


def assigned_partitions(raw: bytes) -> set[int]:
    """The partitions of a ConsumerProtocolAssignment (any version: they come first)."""
    (n_topics,) = struct.unpack_from(">i", raw, 2)
    at, out = 6, set()
    for _ in range(n_topics):
        (name_len,) = struct.unpack_from(">h", raw, at)
        at += 2 + name_len
        (n,) = struct.unpack_from(">i", raw, at)
        out.update(struct.unpack_from(f">{n}i", raw, at + 4))
        at += 4 + 4 * n
    return out


def listed(port: int, states=(), types=()):
    with VersionedClient("127.0.0.1", port) as c:
        resp = c.call(16, 5, {"states_filter": list(states), "types_filter": list(types)})
    return {g.group_id: (g.group_type, g.group_state, g.protocol_type) for g in resp.groups}


@pytest.mark.timeout(60)
def test_heartbeats_to_unknown_groups_and_rejoins_with_epoch_zero(broker_factory, topic):
    """A heartbeat that is not a join, to a group that does not exist: GROUP_ID_NOT_FOUND.
    A member still in the group that rejoins with epoch 0: accepted as a retry of its first
    join, FENCED_MEMBER_EPOCH once it has moved past it (Kafka 4.1)."""
    b = broker_factory(overrides=EDGES)
    create_topic(make_admin(b.bootstrap), topic, partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    with VersionedClient("127.0.0.1", b.port) as c:
        a = RawConsumerMember(c, group, topic)
        r = a.beat(3)
        assert (r.error_code, r.error_message) == (GROUP_ID_NOT_FOUND, f"Consumer group {group} not found."), r
        r = a.beat(-1)
        assert (r.error_code, r.error_message) == (GROUP_ID_NOT_FOUND, f"Group {group} not found."), r

        first = a.join()
        assert (first.error_code, first.member_epoch, a.partitions(first)) == (0, 1, {0, 1}), first
        again = a.join()  # as if the first answer had been lost
        assert (again.error_code, again.member_epoch, a.partitions(again)) == (0, 1, {0, 1}), again

        other = RawConsumerMember(c, group, topic)
        assert other.join().error_code == 0
        kept = a.partitions(a.beat(1, {0, 1}))
        assert len(kept) == 1
        moved = a.beat(1, kept)
        assert (moved.error_code, moved.member_epoch) == (0, 2), moved
        fenced = a.join()
        assert fenced.error_code == FENCED_MEMBER_EPOCH, fenced
        # The member is still there, with its epoch and partition.
        assert a.beat(2, kept).error_code == 0


@pytest.mark.timeout(60)
def test_describe_apis_answer_for_their_own_kind_of_group(broker_factory, topic):
    """Kafka 4: DescribeGroups describes classic groups only (a consumer group is Dead, and
    GROUP_ID_NOT_FOUND from v6); ConsumerGroupDescribe consumer groups only; its states are
    spelt as Kafka spells them."""
    b = broker_factory(overrides=EDGES)
    create_topic(make_admin(b.bootstrap), topic, partitions=2)
    group, classic = f"g-{uuid.uuid4().hex[:8]}", f"k-{uuid.uuid4().hex[:8]}"
    raw = RawGroupClient(b)
    try:
        with VersionedClient("127.0.0.1", b.port) as c:
            assert RawConsumerMember(c, group, topic).join().error_code == 0
            k = raw.join(classic, topics=[topic], instance_id="k1")
            both = assignment_bytes({topic: [0, 1]})
            assert raw.sync(classic, k.generation_id, k.member_id, {k.member_id: both}, instance_id="k1").error_code == 0
            for v in (5, 6):
                (d,) = c.call(15, v, {"groups": [group], "include_authorized_operations": False}).groups
                assert (d.group_state, d.protocol_type, list(d.members)) == ("Dead", "", []), d
                assert (d.error_code, getattr(d, "error_message", None)) == (
                    (GROUP_ID_NOT_FOUND, f"Group {group} is not a classic group.") if v >= 6 else (0, None)
                ), d
            (d,) = c.call(15, 6, {"groups": [classic], "include_authorized_operations": False}).groups
            assert (d.error_code, d.group_state, len(d.members)) == (0, "Stable", 1), d
            groups = c.call(69, 1, {"group_ids": [group, classic], "include_authorized_operations": False}).groups
            by_id = {g.group_id: g for g in groups}
            assert by_id[group].error_code == 0 and by_id[group].group_state == "Stable", by_id[group]
            assert (by_id[classic].error_code, by_id[classic].error_message) == (
                GROUP_ID_NOT_FOUND, f"Group {classic} is not a consumer group."), by_id[classic]
    finally:
        raw.close()


@pytest.mark.timeout(60)
def test_a_classic_static_member_replacing_the_last_consumer_member_downgrades(broker_factory, topic):
    """Kafka's validateOnlineDowngradeWithReplacedMember: a static member that comes back with
    the classic protocol under the instance id of the group's last consumer-protocol member
    turns the group into a classic group and takes that member's partitions, without a
    rebalance when it subscribes to the same topics."""
    b = broker_factory(overrides=EDGES)
    create_topic(make_admin(b.bootstrap), topic, partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    raw = RawGroupClient(b, client_id="classic-incarnation")
    try:
        with VersionedClient("127.0.0.1", b.port) as c:
            c1 = RawConsumerMember(c, group, topic, instance_id="i1")
            joined = c1.join()
            assert (joined.member_epoch, c1.partitions(joined)) == (1, {0, 1}), joined
            assert listed(b.port)[group][0] == "consumer"

            j = raw.join(group, topics=[topic], instance_id="i1")
            assert (j.error_code, j.generation_id, j.protocol_name) == (0, 1, "range"), j
            assert j.member_id != c1.member_id
            assert listed(b.port)[group] == ("classic", "Stable", "consumer")
            s = raw.sync(group, 1, j.member_id, instance_id="i1")
            assert s.error_code == 0 and assigned_partitions(bytes(s.assignment)) == {0, 1}, s
            assert raw.heartbeat(group, 1, j.member_id, instance_id="i1") == 0
            d = raw.describe([group])[group]
            assert [(m.member_id, m.group_instance_id) for m in d.members] == [(j.member_id, "i1")], d
            # The consumer-protocol incarnation has no group to heartbeat to any more.
            r = c1.beat(1, {0, 1})
            assert (r.error_code, r.error_message) == (GROUP_ID_NOT_FOUND, f"Group {group} is not a consumer group.")
    finally:
        raw.close()


@pytest.mark.timeout(60)
def test_leave_group_removes_a_consumer_protocol_member(broker_factory, topic):
    """Kafka's classicGroupLeaveToConsumerGroup does not ask which protocol the named member
    uses: LeaveGroup removes a member of the consumer protocol too."""
    b = broker_factory(overrides=EDGES)
    create_topic(make_admin(b.bootstrap), topic, partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    raw = RawGroupClient(b)
    try:
        with VersionedClient("127.0.0.1", b.port) as c:
            c1 = RawConsumerMember(c, group, topic)
            owned = c1.partitions(c1.join())
            lv = raw.leave(group, [(c1.member_id, None), ("nobody", None)])
            assert lv.error_code == 0
            assert [x.error_code for x in lv.members] == [0, UNKNOWN_MEMBER_ID], lv
            assert c1.beat(1, owned).error_code == UNKNOWN_MEMBER_ID
            assert listed(b.port)[group] == ("consumer", "Empty", "consumer")
            # A LeaveGroup to the empty consumer group answers each member.
            lv = raw.leave(group, [(c1.member_id, None)])
            assert (lv.error_code, [x.error_code for x in lv.members]) == (0, [UNKNOWN_MEMBER_ID]), lv
    finally:
        raw.close()


@pytest.mark.timeout(60)
def test_an_upgrade_takes_a_classic_member_that_never_synced(broker_factory, topic):
    """A classic member that joined but never sent SyncGroup has no assignment: Kafka upgrades
    the group anyway, the member starting with no partitions."""
    b = broker_factory(overrides=EDGES)
    create_topic(make_admin(b.bootstrap), topic, partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    raw = RawGroupClient(b)
    try:
        j = raw.join_new_member(group, topics=[topic])
        assert (j.error_code, j.generation_id) == (0, 1), j
        with VersionedClient("127.0.0.1", b.port) as c:
            c1 = RawConsumerMember(c, group, topic)
            r = c1.join()
            # The classic member owns nothing, so c1 gets its share at once.
            assert (r.error_code, r.member_epoch, len(c1.partitions(r))) == (0, 2, 1), r
        assert listed(b.port)[group][0] == "consumer"
        # The classic member learns of the new epoch when it syncs, and rejoins.
        assert raw.sync(group, 1, j.member_id).error_code == REBALANCE_IN_PROGRESS
    finally:
        raw.close()
