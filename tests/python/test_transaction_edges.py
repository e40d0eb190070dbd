"""Transaction edge cases as Kafka 4.1's coordinator and partition leaders handle them.

- A transaction left open past its `transaction.timeout.ms` is aborted by the coordinator with
  one epoch bump. On a cluster at `transaction.version` 2 the client of protocol v2 (the Java
  client 4.x) is answered so that it can abort and carry on: its writes get
  INVALID_PRODUCER_EPOCH (abortable), its EndTxn(abort) v5 with the old epoch is the abort's
  retry and answers the new epoch, its commit is INVALID_TXN_STATE. A client of protocol v1
  (librdkafka) is fenced by it, as with Kafka: EndTxn below v5 and AddPartitionsToTxn with the
  old epoch are PRODUCER_FENCED, and a new instance takes the transactional id over. Below
  `transaction.version` 2 the abort leaves nobody anything to carry on with.
- The leaders' check of a write is per producer (Kafka's `VerificationGuard`): another
  producer's marker landing while the check is in flight does not send the write back.
- `transaction.partition.verification.enable` changes at run time (a dynamic broker config).
"""

from __future__ import annotations

import threading
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from helpers import create_topic, make_admin, wait_until
from test_features import SAFE_DOWNGRADE, run_java_check, update_features
from test_java_client import java_check_classpath  # noqa: F401 - the fixture
from test_transactions import read_values
from test_transactions_v2 import describe_txn, produce
from versioned_wire import VersionedClient

PARTITIONS = 3
TIMEOUT_MS = 1000
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
CONCURRENT_TRANSACTIONS = 51
PRODUCER_FENCED = 90
TRANSACTION_ABORTABLE = 120


def init_pid(c: VersionedClient, txn_id: str, version: int = 5, expected=(-1, -1), timeout_ms=TIMEOUT_MS):
    return c.call(22, version, {"transactional_id": txn_id, "transaction_timeout_ms": timeout_ms,
                                "producer_id": expected[0], "producer_epoch": expected[1]})


def end_txn(c: VersionedClient, version: int, txn_id: str, pid: int, epoch: int, commit: bool):
    return c.call(26, version, {"transactional_id": txn_id, "producer_id": pid, "producer_epoch": epoch,
                                "committed": commit})


def add_partitions(c: VersionedClient, txn_id: str, pid: int, epoch: int, topic: str, partitions: list[int]) -> int:
    resp = c.call(24, 3, {"v3_and_below_transactional_id": txn_id, "v3_and_below_producer_id": pid,
                          "v3_and_below_producer_epoch": epoch,
                          "v3_and_below_topics": [{"name": topic, "partitions": partitions}]})
    (code,) = {p.partition_error_code for t in resp.results_by_topic_v3_and_below for p in t.results_by_partition}
    return code


def txn_offset_commit(c: VersionedClient, version: int, txn_id: str, pid: int, epoch: int, group: str,
                      topic: str) -> int:
    resp = c.call(28, version, {
        "transactional_id": txn_id, "group_id": group, "producer_id": pid, "producer_epoch": epoch,
        "generation_id": -1, "member_id": "", "group_instance_id": None,
        "topics": [{"name": topic, "partitions": [{"partition_index": 0, "committed_offset": 1,
                                                   "committed_leader_epoch": -1, "committed_metadata": ""}]}]})
    return resp.topics[0].partitions[0].error_code


def wait_aborted(port: int, txn_id: str, epoch: int) -> None:
    """Until the coordinator aborted the transaction on its own, at `epoch`."""
    wait_until(lambda: (lambda s: (s.transaction_state, s.producer_epoch) == ("CompleteAbort", epoch))(
        describe_txn(port, txn_id)), timeout=15, interval=0.05, msg=f"the coordinator's abort of {txn_id}")


@pytest.mark.timeout(90)
def test_after_a_timeout_at_v2_the_client_is_answered_so_that_it_carries_on(broker):
    """What InitProducerId, AddPartitionsToTxn, Produce (through the leader's check),
    TxnOffsetCommit and EndTxn answer a client whose transaction the coordinator aborted, on
    a cluster at transaction.version 2 (the default), for both protocols."""
    topic = f"to-{uuid.uuid4().hex[:8]}"
    create_topic(make_admin(broker.bootstrap), topic, partitions=PARTITIONS)
    port = broker.port
    with VersionedClient("127.0.0.1", port) as c:
        # Protocol v2: the leaders add the partitions (Produce v12); no AddPartitionsToTxn.
        v2 = f"v2-{topic}"
        init = init_pid(c, v2)
        pid, e = init.producer_id, init.producer_epoch
        assert produce(port, 12, v2, pid, e, 0, topic).error_code == 0
        wait_aborted(port, v2, e + 1)  # one bump
        assert produce(port, 12, v2, pid, e, 1, topic, seq=1).error_code == INVALID_PRODUCER_EPOCH
        assert produce(port, 12, v2, pid, e, 0, topic, seq=1).error_code == INVALID_PRODUCER_EPOCH
        assert txn_offset_commit(c, 5, v2, pid, e, f"g-{v2}", topic) == INVALID_PRODUCER_EPOCH
        assert end_txn(c, 5, v2, pid, e, True).error_code == INVALID_TXN_STATE
        assert end_txn(c, 4, v2, pid, e, False).error_code == PRODUCER_FENCED
        assert add_partitions(c, v2, pid, e, topic, [1]) == PRODUCER_FENCED
        # The abort with the old epoch is the retry of the coordinator's abort: the new epoch.
        retried = end_txn(c, 5, v2, pid, e, False)
        assert (retried.error_code, retried.producer_id, retried.producer_epoch) == (0, pid, e + 1), retried
        assert describe_txn(port, v2).transaction_state == "CompleteAbort", "the retry wrote nothing"
        # ... and so is InitProducerId with the old epoch (KIP-360): not bumped again.
        again = init_pid(c, v2, expected=(pid, e))
        assert (again.error_code, again.producer_id, again.producer_epoch) == (0, pid, e + 1), again
        # The client carries on with the next transaction.
        assert produce(port, 12, v2, pid, e + 1, 2, topic).error_code == 0
        assert txn_offset_commit(c, 5, v2, pid, e + 1, f"g-{v2}", topic) == 0
        committed = end_txn(c, 5, v2, pid, e + 1, True)
        assert (committed.error_code, committed.producer_epoch) == (0, e + 2), committed

        # Protocol v1 on the same cluster: the coordinator's abort is a v2 end (the cluster's
        # protocol), but v1 requests with the old epoch are fenced ...
        v1 = f"v1-{topic}"
        init = init_pid(c, v1, version=4)
        pid, e = init.producer_id, init.producer_epoch
        assert add_partitions(c, v1, pid, e, topic, [0]) == 0
        assert produce(port, 10, v1, pid, e, 0, topic).error_code == 0
        wait_aborted(port, v1, e + 1)
        assert produce(port, 10, v1, pid, e, 1, topic, seq=1).error_code == INVALID_PRODUCER_EPOCH
        assert produce(port, 11, v1, pid, e, 1, topic, seq=1).error_code == INVALID_PRODUCER_EPOCH
        assert txn_offset_commit(c, 4, v1, pid, e, f"g-{v1}", topic) == INVALID_PRODUCER_EPOCH
        assert add_partitions(c, v1, pid, e, topic, [1]) == PRODUCER_FENCED
        assert end_txn(c, 3, v1, pid, e, False).error_code == PRODUCER_FENCED
        assert end_txn(c, 1, v1, pid, e, False).error_code == INVALID_PRODUCER_EPOCH, "no PRODUCER_FENCED before v2"
        # ... but a KIP-360 InitProducerId with the old epoch gets the new one, unbumped.
        again = init_pid(c, v1, version=4, expected=(pid, e))
        assert (again.error_code, again.producer_id, again.producer_epoch) == (0, pid, e + 1), again


@pytest.mark.timeout(90)
def test_after_a_timeout_below_v2_the_client_is_fenced(broker):
    topic = f"to1-{uuid.uuid4().hex[:8]}"
    create_topic(make_admin(broker.bootstrap), topic, partitions=PARTITIONS)
    assert update_features(broker.port, [("transaction.version", 0, SAFE_DOWNGRADE)]).error_code == 0
    port = broker.port
    with VersionedClient("127.0.0.1", port) as c:
        txn = f"v1-{topic}"
        init = init_pid(c, txn, version=4)
        pid, e = init.producer_id, init.producer_epoch
        assert add_partitions(c, txn, pid, e, topic, [0]) == 0
        assert produce(port, 10, txn, pid, e, 0, topic).error_code == 0
        wait_aborted(port, txn, e + 1)
        assert end_txn(c, 3, txn, pid, e, False).error_code == PRODUCER_FENCED
        assert init_pid(c, txn, version=4, expected=(pid, e)).error_code == PRODUCER_FENCED
        fresh = init_pid(c, txn, version=4)
        assert (fresh.error_code, fresh.producer_epoch) == (0, e + 2), fresh


@pytest.mark.timeout(60)
def test_a_write_the_transaction_never_added_is_abortable_from_produce_v11(broker):
    """KIP-890 part 1 with KIP-1050's error: TRANSACTION_ABORTABLE for a client that knows it
    (Produce v11, TxnOffsetCommit v4), INVALID_TXN_STATE below."""
    topic = f"ta-{uuid.uuid4().hex[:8]}"
    create_topic(make_admin(broker.bootstrap), topic, partitions=PARTITIONS)
    with VersionedClient("127.0.0.1", broker.port) as c:
        txn = f"ta-{topic}"
        init = init_pid(c, txn, version=4, timeout_ms=60000)
        pid, e = init.producer_id, init.producer_epoch
        assert add_partitions(c, txn, pid, e, topic, [0]) == 0
        assert produce(broker.port, 10, txn, pid, e, 1, topic).error_code == INVALID_TXN_STATE
        assert produce(broker.port, 11, txn, pid, e, 1, topic).error_code == TRANSACTION_ABORTABLE
        # The group's offsets partition was never added (no AddOffsetsToTxn).
        assert txn_offset_commit(c, 3, txn, pid, e, f"g-{txn}", topic) == INVALID_TXN_STATE
        assert txn_offset_commit(c, 4, txn, pid, e, f"g-{txn}", topic) == TRANSACTION_ABORTABLE
        assert produce(broker.port, 11, txn, pid, e, 0, topic).error_code == 0


@pytest.mark.timeout(240)
def test_java_v2_producer_aborts_and_carries_on_after_a_timeout(java_check_classpath, broker):
    topic = f"tojava-{uuid.uuid4().hex[:8]}"
    create_topic(make_admin(broker.bootstrap), topic, partitions=PARTITIONS)
    out = run_java_check(java_check_classpath, broker.bootstrap, "timeout", topic)
    assert "the client uses transactions v2" in out, out
    committed = sorted(line.split(": ", 1)[1].encode() for line in out.splitlines() if line.startswith("committed: "))
    assert len(committed) == 6, out
    assert sorted(v for v in read_values(broker.bootstrap, topic, range(PARTITIONS), "read_committed")
                  if v.startswith(b"java-")) == committed


@pytest.mark.timeout(120)
def test_librdkafka_v1_producer_is_fenced_by_a_timeout_and_a_new_one_carries_on(broker):
    """librdkafka speaks protocol v1 (EndTxn below v5): the coordinator's abort fences it, as
    Kafka's does; a new instance with the same transactional id commits the next transaction,
    and read_committed consumers see exactly the committed records."""
    bs = broker.bootstrap
    topic = f"tordk-{uuid.uuid4().hex[:8]}"
    create_topic(make_admin(bs), topic, partitions=PARTITIONS)
    txn = f"rdk-{topic}"
    conf = {"bootstrap.servers": bs, "transactional.id": txn, "transaction.timeout.ms": 2000, "linger.ms": 0}
    p = Producer(conf)
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, value=b"rdk-first", partition=0)
    p.commit_transaction(30)
    epoch = describe_txn(broker.port, txn).producer_epoch
    p.begin_transaction()
    for i in range(PARTITIONS):
        p.produce(topic, value=b"rdk-timed-out-%d" % i, partition=i)
    p.flush(30)
    wait_aborted(broker.port, txn, epoch + 1)
    with pytest.raises(KafkaException) as fenced:
        p.abort_transaction(30)
    err = fenced.value.args[0]
    assert err.code() == KafkaError._FENCED and err.fatal(), err
    p2 = Producer(conf)
    p2.init_transactions(30)
    p2.begin_transaction()
    for i in range(PARTITIONS):
        p2.produce(topic, value=b"rdk-next-%d" % i, partition=i)
    p2.commit_transaction(30)
    expected = sorted([b"rdk-first"] + [b"rdk-next-%d" % i for i in range(PARTITIONS)])
    assert sorted(read_values(bs, topic, range(PARTITIONS), "read_committed")) == expected
    assert len(read_values(bs, topic, range(PARTITIONS), "read_uncommitted")) == len(expected) + PARTITIONS


@pytest.mark.cluster
@pytest.mark.timeout(180)
def test_another_producers_marker_during_a_check_does_not_send_the_write_back(cluster_factory):
    """Producer A's write to partition P is checked with A's coordinator on another broker,
    which is paused meanwhile; producer B commits a transaction on P, whose marker lands
    while A's check is in flight. A's write is taken: the check is per producer."""
    from test_cluster import TRANSACTION_KEY, all_led, find_coordinator

    c = cluster_factory(3, overrides={"transaction.state.log.num.partitions": 6})
    topic = f"il-{uuid.uuid4().hex[:8]}"
    create_topic(make_admin(c.bootstrap), topic, partitions=PARTITIONS)
    leaders = c.wait_leaders(topic, all_led(PARTITIONS), what="3 partitions led")
    partition, leader = next(iter(leaders.items()))

    def txn_id_coordinated_by(node_ids: set[int], prefix: str) -> tuple[str, int]:
        for _ in range(200):
            tid = f"{prefix}-{uuid.uuid4().hex[:8]}"
            coord = wait_until(lambda t=tid: find_coordinator(c.node(leader), t, TRANSACTION_KEY),
                               timeout=30, interval=0.1, msg=f"a coordinator for {tid}", ignore=(OSError,))
            if coord in node_ids:
                return tid, coord
        raise AssertionError(f"no transactional id coordinated by {node_ids}")

    others = c.broker_ids - {leader}
    a_txn, a_coord = txn_id_coordinated_by(others, "a")
    b_txn, b_coord = txn_id_coordinated_by(c.broker_ids - {a_coord}, "b")
    ports = {n.node_id: n.port for n in c.nodes}

    def begin(txn: str, coord: int) -> tuple[int, int]:
        with VersionedClient("127.0.0.1", ports[coord]) as cl:
            init = init_pid(cl, txn, version=4, timeout_ms=60000)
            assert init.error_code == 0, init
            assert add_partitions(cl, txn, init.producer_id, init.producer_epoch, topic, [partition]) == 0
        return init.producer_id, init.producer_epoch

    a_pid, a_epoch = begin(a_txn, a_coord)
    b_pid, b_epoch = begin(b_txn, b_coord)
    assert produce(ports[leader], 10, b_txn, b_pid, b_epoch, partition, topic).error_code == 0

    def connects(node_id: int) -> float:
        (line,) = [m for m in c.node(node_id).metrics().splitlines()
                   if m.startswith("strata_broker_client_connects_total ")]
        return float(line.split()[1])

    connects_before = connects(leader)
    paused = c.node(a_coord)
    paused.pause()
    answer: list = []
    try:
        writer = threading.Thread(
            target=lambda: answer.append(produce(ports[leader], 10, a_txn, a_pid, a_epoch, partition, topic)))
        writer.start()
        # A's write reached the leader once it connects to the paused broker for the check.
        wait_until(lambda: connects(leader) > connects_before, timeout=10, interval=0.01,
                   msg="the leader asks A's coordinator")
        assert not answer, "the check should be waiting on A's coordinator"
        with VersionedClient("127.0.0.1", ports[b_coord]) as cl:
            assert end_txn(cl, 3, b_txn, b_pid, b_epoch, True).error_code == 0
        wait_until(lambda: describe_txn(ports[b_coord], b_txn).transaction_state == "CompleteCommit",
                   timeout=10, interval=0.02, msg="B's marker written")
    finally:
        paused.resume()
    writer.join(30)
    assert answer and answer[0].error_code == 0, answer
    with VersionedClient("127.0.0.1", ports[a_coord]) as cl:
        assert end_txn(cl, 3, a_txn, a_pid, a_epoch, True).error_code == 0


@pytest.mark.timeout(60)
def test_verification_can_be_turned_off_and_on_at_run_time(broker):
    """`transaction.partition.verification.enable` is a dynamic broker config (per broker or
    cluster-wide, as Kafka's): an unadded write is refused, taken once it is off, refused again."""
    topic = f"dyn-{uuid.uuid4().hex[:8]}"
    create_topic(make_admin(broker.bootstrap), topic, partitions=4)
    key = "transaction.partition.verification.enable"
    this_broker, cluster_default = "1", ""

    def set_verification(resource_name: str, value: str | None) -> None:
        with VersionedClient("127.0.0.1", broker.port) as c:
            resp = c.call(44, 1, {"resources": [{
                "resource_type": 4, "resource_name": resource_name,
                "configs": [{"name": key, "config_operation": 0 if value is not None else 1, "value": value}]}],
                "validate_only": False})
        assert [r.error_code for r in resp.responses] == [0], resp

    def described(resource_name: str):
        with VersionedClient("127.0.0.1", broker.port) as c:
            resp = c.call(32, 4, {"resources": [{"resource_type": 4, "resource_name": resource_name,
                                                 "configuration_keys": [key]}],
                                  "include_synonyms": False, "include_documentation": False})
        (entry,) = resp.results[0].configs
        return entry

    assert not described(this_broker).read_only
    with VersionedClient("127.0.0.1", broker.port) as c:
        txn = f"dyn-{topic}"
        init = init_pid(c, txn, version=4, timeout_ms=60000)
        pid, e = init.producer_id, init.producer_epoch
        assert add_partitions(c, txn, pid, e, topic, [0]) == 0
    assert produce(broker.port, 10, txn, pid, e, 1, topic).error_code == INVALID_TXN_STATE
    set_verification(this_broker, "false")
    assert described(this_broker).value == "false"
    assert produce(broker.port, 10, txn, pid, e, 1, topic).error_code == 0
    set_verification(cluster_default, "true")
    assert produce(broker.port, 10, txn, pid, e, 2, topic).error_code == 0, "the broker's own value wins"
    set_verification(this_broker, None)
    assert described(this_broker).value == "true"
    assert produce(broker.port, 10, txn, pid, e, 3, topic).error_code == INVALID_TXN_STATE
