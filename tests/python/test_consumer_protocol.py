"""KIP-848 consumer groups (`group.protocol=consumer`) with librdkafka, end to end:
server-side assignment, rebalancing as members come and go, regex subscriptions,
commits validated against member epochs, and the admin view of the group."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import ConsumerGroupType, KafkaError, TopicPartition

from helpers import create_topic, flush_all, make_admin, make_consumer, make_producer, wait_until

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
