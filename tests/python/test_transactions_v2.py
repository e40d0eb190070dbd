"""Transactions v2 (KIP-890 part 2) and the partition leaders' check of transactional writes
(part 1).

- The Java client 4.x uses protocol v2 because the broker finalizes `transaction.version` 2:
  every EndTxn (v5) bumps the producer epoch, partitions and offsets join the transaction
  through Produce v12 / TxnOffsetCommit v5, a zombie is fenced. librdkafka (protocol v1)
  runs its transactions against the same broker at the same time; read_committed consumers
  see exactly the committed records of both.
- A transactional write to a partition the transaction never added is refused with
  TRANSACTION_ABORTABLE (Produce v11; INVALID_TXN_STATE before), or added by the leader
  (Produce v12); with
  `transaction.partition.verification.enable=false` it is taken as it is, the hanging
  transaction KIP-890 closes.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from confluent_kafka import Producer

from helpers import create_topic, make_admin, wait_until
from test_features import run_java_check
from test_java_client import java_check_classpath  # noqa: F401 - the fixture
from test_protocol_versions import record_batch
from test_transactions import read_values
from versioned_wire import VersionedClient

INVALID_TXN_STATE = 48
TRANSACTION_ABORTABLE = 120
PARTITIONS = 3


def describe_txn(port: int, txn_id: str):
    with VersionedClient("127.0.0.1", port) as c:
        (state,) = c.call(65, 0, {"transactional_ids": [txn_id]}).transaction_states
    assert state.error_code == 0, state
    return state


def librdkafka_transactions(bs: str, topic: str, txn_id: str, n: int) -> list[bytes]:
    """n transactions of a librdkafka producer (protocol v1), every third aborted; returns the
    committed values."""
    p = Producer({"bootstrap.servers": bs, "transactional.id": txn_id, "linger.ms": 0})
    p.init_transactions(30)
    committed = []
    for t in range(n):
        p.begin_transaction()
        values = [b"rdk-t%d-%d" % (t, i) for i in range(4)]
        for i, v in enumerate(values):
            p.produce(topic, value=v, partition=i % PARTITIONS)
        p.flush(30)
        if t % 3 == 2:
            p.abort_transaction(30)
        else:
            p.commit_transaction(30)
            committed += values
    return committed


@pytest.mark.timeout(240)
def test_java_v2_and_librdkafka_v1_transactions_on_one_broker(java_check_classpath, broker):
    bs = broker.bootstrap
    topic = f"tv2-{uuid.uuid4().hex[:8]}"
    create_topic(make_admin(bs), topic, partitions=PARTITIONS)

    rdk_committed: list[bytes] = []
    rdk_error: list[BaseException] = []

    def rdk() -> None:
        try:
            rdk_committed.extend(librdkafka_transactions(bs, topic, f"rdk-{topic}", 9))
        except BaseException as e:  # noqa: BLE001 - reported below
            rdk_error.append(e)

    t = threading.Thread(target=rdk)
    t.start()
    out = run_java_check(java_check_classpath, bs, "txn", topic)
    t.join(120)
    assert not t.is_alive() and not rdk_error, rdk_error
    assert "the client uses transactions v2" in out, out

    java_committed = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("committed: ")]
    (txn_id,) = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("transactional id: ")]
    # Protocol v2: 6 transaction ends bumped the first producer's epoch to 6, the fencing
    # producer's InitProducerId to 7 and its commit to 8. (Protocol v1 would be at 1.)
    state = describe_txn(broker.port, txn_id)
    assert (state.transaction_state, state.producer_epoch) == ("CompleteCommit", 8), state
    # librdkafka's protocol v1 producer ended 9 transactions without an epoch bump.
    assert describe_txn(broker.port, f"rdk-{topic}").producer_epoch == 0

    committed = sorted([v.encode() for v in java_committed] + rdk_committed)
    assert len(committed) == 21 + 24, committed
    assert sorted(read_values(bs, topic, range(PARTITIONS), "read_committed")) == committed
    uncommitted = read_values(bs, topic, range(PARTITIONS), "read_uncommitted")
    assert len(uncommitted) > len(committed), "aborted records are in the log, hidden by read_committed"


def produce(port: int, version: int, txn_id: str, pid: int, epoch: int, partition: int, topic: str, seq: int = 0):
    with VersionedClient("127.0.0.1", port) as c:
        resp = c.call(0, version, {
            "transactional_id": txn_id, "acks": -1, "timeout_ms": 10000,
            "topic_data": [{"name": topic, "topic_id": uuid.UUID(int=0), "partition_data": [
                {"index": partition, "records": record_batch([b"raw-%d" % partition], producer_id=pid,
                                                              producer_epoch=epoch, base_sequence=seq,
                                                              transactional=True)}]}]})
    return resp.responses[0].partition_responses[0]


def begin(port: int, txn_id: str, topic: str, partitions: list[int]) -> tuple[int, int]:
    with VersionedClient("127.0.0.1", port) as c:
        init = c.call(22, 4, {"transactional_id": txn_id, "transaction_timeout_ms": 60000,
                              "producer_id": -1, "producer_epoch": -1})
        assert init.error_code == 0, init
        added = c.call(24, 3, {"v3_and_below_transactional_id": txn_id,
                               "v3_and_below_producer_id": init.producer_id,
                               "v3_and_below_producer_epoch": init.producer_epoch,
                               "v3_and_below_topics": [{"name": topic, "partitions": partitions}]})
        assert all(p.partition_error_code == 0 for t in added.results_by_topic_v3_and_below
                   for p in t.results_by_partition), added
    return init.producer_id, init.producer_epoch


@pytest.mark.timeout(60)
def test_a_write_to_a_partition_the_transaction_never_added_is_refused(broker):
    topic = f"verify-{uuid.uuid4().hex[:8]}"
    create_topic(make_admin(broker.bootstrap), topic, partitions=PARTITIONS)
    txn_id = f"verify-{topic}"
    pid, epoch = begin(broker.port, txn_id, topic, [0])
    # Protocol v1 (Produce v11): partition 0 was added, partition 1 was not. A client that
    # knows TRANSACTION_ABORTABLE (v11) gets it, an older one INVALID_TXN_STATE (Kafka 4).
    assert produce(broker.port, 11, txn_id, pid, epoch, 0, topic).error_code == 0
    refused = produce(broker.port, 11, txn_id, pid, epoch, 1, topic)
    assert refused.error_code == TRANSACTION_ABORTABLE, refused
    refused = produce(broker.port, 10, txn_id, pid, epoch, 1, topic)
    assert refused.error_code == INVALID_TXN_STATE, refused
    assert [t.partitions for t in describe_txn(broker.port, txn_id).topics] == [[0]]
    # Protocol v2 (Produce v12): the leader adds the partition to the transaction.
    assert produce(broker.port, 12, txn_id, pid, epoch, 2, topic).error_code == 0
    assert [sorted(t.partitions) for t in describe_txn(broker.port, txn_id).topics] == [[0, 2]]
    # A fenced epoch is refused by the coordinator before anything is appended.
    stale = produce(broker.port, 12, txn_id, pid, epoch - 1 if epoch > 0 else epoch + 5, 1, topic)
    assert stale.error_code != 0, stale


@pytest.mark.timeout(60)
def test_without_verification_the_unadded_write_is_taken(broker_factory):
    broker = broker_factory(overrides={"transaction.partition.verification.enable": "false"})
    topic = f"noverify-{uuid.uuid4().hex[:8]}"
    create_topic(make_admin(broker.bootstrap), topic, partitions=PARTITIONS)
    txn_id = f"noverify-{topic}"
    pid, epoch = begin(broker.port, txn_id, topic, [0])
    assert produce(broker.port, 11, txn_id, pid, epoch, 1, topic).error_code == 0
    assert [t.partitions for t in describe_txn(broker.port, txn_id).topics] == [[0]], (
        "the coordinator does not know the write: its transaction would hang on partition 1"
    )
    # Protocol v2 has no other way into the transaction: the leader adds the partition all
    # the same, as Kafka's does.
    assert produce(broker.port, 12, txn_id, pid, epoch, 2, topic).error_code == 0
    assert [sorted(t.partitions) for t in describe_txn(broker.port, txn_id).topics] == [[0, 2]]


@pytest.mark.cluster
@pytest.mark.timeout(240)
def test_java_v2_transactions_across_brokers_and_a_coordinator_failover(java_check_classpath, cluster_factory):
    """The partitions are led by several brokers, which add them to the transaction with
    AddPartitionsToTxn v5 on the coordinator's broker; the transaction state (with the epochs
    protocol v2 bumped) survives the coordinator's death."""
    from test_cluster import TRANSACTION_KEY, replicated_internal_topic_cluster, wait_coordinator

    topic = f"tv2c-{uuid.uuid4().hex[:8]}"
    c = replicated_internal_topic_cluster(cluster_factory, "transaction.state.log", topic)
    out = run_java_check(java_check_classpath, c.bootstrap, "txn", topic)
    assert "the client uses transactions v2" in out, out
    java_committed = sorted(line.split(": ", 1)[1].encode() for line in out.splitlines()
                            if line.startswith("committed: "))
    assert sorted(read_values(c.bootstrap, topic, range(PARTITIONS), "read_committed")) == java_committed
    (txn_id,) = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("transactional id: ")]

    old = c.node(wait_coordinator(c.nodes, txn_id, TRANSACTION_KEY))
    before = describe_txn(old.port, txn_id)
    assert (before.transaction_state, before.producer_epoch) == ("CompleteCommit", 8), before
    old.kill()
    survivors = [n for n in c.nodes if n is not old]
    new = c.node(wait_coordinator(survivors, txn_id, TRANSACTION_KEY, not_on=old.node_id))
    after = wait_until(lambda: describe_txn(new.port, txn_id), timeout=30, ignore=(AssertionError, OSError))
    assert (after.producer_id, after.producer_epoch, after.transaction_state) == (
        before.producer_id, 8, "CompleteCommit"), after
    # The next incarnation goes on from the epoch the records kept.
    with VersionedClient("127.0.0.1", new.port) as client:
        init = client.call(22, 5, {"transactional_id": txn_id, "transaction_timeout_ms": 60000,
                                   "producer_id": -1, "producer_epoch": -1})
    assert (init.error_code, init.producer_id, init.producer_epoch) == (0, before.producer_id, 9), init
