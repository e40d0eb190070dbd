"""Transactions end to end: an exactly-once consume-transform-produce loop whose worker is
SIGKILLed in the middle of a transaction and restarted with the same transactional id.
read_committed consumers see every input record exactly once in the output; a
read_uncommitted consumer also sees the records of the aborted transaction."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Producer, TopicPartition

from helpers import create_topic, flush_all, make_admin, make_consumer, make_producer, wait_until

WORKER = Path(__file__).with_name("eos_worker.py")
INPUT_RECORDS = 300
PARTITIONS = 3
FAST = {"group.initial.rebalance.delay.ms": 0}


@pytest.fixture
def tbroker(broker_factory):
    return broker_factory(overrides=FAST)


def read_values(bs, topic, partitions, isolation, timeout=30):
    """Every value of `topic` from the beginning to the end each partition has for this
    isolation level (transaction markers occupy offsets but are never delivered, so the
    end is found through end-of-partition events rather than the high watermark)."""
    c = make_consumer(bs, **{"isolation.level": isolation, "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        values, at_end = [], set()

        def drained():
            for m in c.consume(num_messages=500, timeout=0.2):
                if m.error() is None:
                    values.append(m.value())
                    at_end.discard(m.partition())
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                else:
                    raise AssertionError(m.error())
            return len(at_end) == len(partitions)

        wait_until(drained, timeout, interval=0.0, msg=f"reading {topic} ({isolation}) to its end")
        return values
    finally:
        c.close()


def run_worker(bs, inp, out, group, txn_id, extra=()):
    return subprocess.Popen(
        [sys.executable, str(WORKER), bs, inp, out, group, txn_id, "50", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.timeout(120)
def test_exactly_once_pipeline_survives_a_killed_producer(tbroker):
    bs = tbroker.bootstrap
    tag = uuid.uuid4().hex[:8]
    inp, out, group, txn_id = f"in-{tag}", f"out-{tag}", f"eos-{tag}", f"txn-{tag}"
    admin = make_admin(bs)
    create_topic(admin, inp, partitions=PARTITIONS)
    create_topic(admin, out, partitions=PARTITIONS)
    p = make_producer(bs)
    for i in range(INPUT_RECORDS):
        p.produce(inp, key=b"%d" % i, value=b"v%d" % i, partition=i % PARTITIONS)
    flush_all(p)

    crashing = run_worker(bs, inp, out, group, txn_id, ["--hang-after-records", "120"])
    line = crashing.stdout.readline()
    assert "hanging mid-transaction" in line, f"worker output: {line}{crashing.stdout.read() if crashing.poll() is not None else ''}"
    crashing.kill()
    crashing.wait(10)

    finishing = run_worker(bs, inp, out, group, txn_id)
    output, _ = finishing.communicate(timeout=90)
    assert finishing.returncode == 0, output

    committed = sorted(read_values(bs, out, list(range(PARTITIONS)), "read_committed"))
    assert committed == sorted(b"V%d" % i for i in range(INPUT_RECORDS)), "each input exactly once in the committed output"
    uncommitted = read_values(bs, out, list(range(PARTITIONS)), "read_uncommitted")
    assert len(uncommitted) > INPUT_RECORDS, "the aborted transaction's records are visible to read_uncommitted"


@pytest.mark.timeout(60)
def test_zombie_producer_is_fenced(tbroker):
    bs = tbroker.bootstrap
    topic = f"z-{uuid.uuid4().hex[:8]}"
    create_topic(make_admin(bs), topic, partitions=1)
    conf = {"bootstrap.servers": bs, "transactional.id": f"zombie-{topic}"}
    old = Producer(conf)
    old.init_transactions(30)
    old.begin_transaction()
    old.produce(topic, value=b"zombie")
    old.flush(10)
    new = Producer(conf)
    new.init_transactions(30)  # fences `old` and aborts its open transaction
    new.begin_transaction()
    new.produce(topic, value=b"live")
    new.commit_transaction(30)
    with pytest.raises(KafkaException) as e:
        old.commit_transaction(10)
    assert e.value.args[0].fatal() or e.value.args[0].txn_requires_abort(), e.value
    assert read_values(bs, topic, [0], "read_committed") == [b"live"]
    assert sorted(read_values(bs, topic, [0], "read_uncommitted")) == [b"live", b"zombie"]


def test_transactional_offsets_are_unstable_until_commit(tbroker):
    """TxnOffsetCommit offsets stay invisible until EndTxn commits them; meanwhile an
    OffsetFetch with require_stable gets UNSTABLE_OFFSET_COMMIT (as read_committed consumers
    send it), and a plain one still sees the last committed offset."""
    from kafka.protocol.producer import (
        AddOffsetsToTxnRequest,
        AddOffsetsToTxnResponse,
        EndTxnRequest,
        EndTxnResponse,
        InitProducerIdRequest,
        InitProducerIdResponse,
        TxnOffsetCommitRequest,
        TxnOffsetCommitResponse,
    )

    from group_helpers import RawGroupClient
    from helpers import raw_connect, read_frame

    sock = raw_connect(tbroker)
    calls = iter(range(1, 100))

    def call(req_cls, resp_cls, version, **fields):
        req = req_cls(version=version, **fields)
        req.with_header(correlation_id=next(calls), client_id="raw-txn")
        sock.sendall(bytes(req.encode(header=True, framed=True)))
        return resp_cls.decode(read_frame(sock), version=version, header=True)

    tag = uuid.uuid4().hex[:8]
    txn, group, topic = f"tx-{tag}", f"g-{tag}", f"t-{tag}"
    # Offsets of a topic the cluster does not have are refused (UNKNOWN_TOPIC_OR_PARTITION).
    create_topic(make_admin(tbroker.bootstrap), topic, partitions=1)
    init = call(InitProducerIdRequest, InitProducerIdResponse, 1, transactional_id=txn, transaction_timeout_ms=60000)
    assert init.error_code == 0
    ids = dict(transactional_id=txn, producer_id=init.producer_id, producer_epoch=init.producer_epoch)
    assert call(AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, 1, group_id=group, **ids).error_code == 0
    T = TxnOffsetCommitRequest.TxnOffsetCommitRequestTopic
    P = T.TxnOffsetCommitRequestPartition
    commit = call(
        TxnOffsetCommitRequest,
        TxnOffsetCommitResponse,
        2,
        group_id=group,
        topics=[T(name=topic, partitions=[P(partition_index=0, committed_offset=5, committed_leader_epoch=-1, committed_metadata="")])],
        **ids,
    )
    assert [p.error_code for t in commit.topics for p in t.partitions] == [0]

    groups = RawGroupClient(tbroker)
    try:
        _, stable = groups.fetch_offsets({group: [(topic, 0)]}, require_stable=True)[group]
        assert stable[(topic, 0)][2] == 88  # UNSTABLE_OFFSET_COMMIT
        _, plain = groups.fetch_offsets({group: [(topic, 0)]})[group]
        assert plain[(topic, 0)][0] == -1
        assert call(EndTxnRequest, EndTxnResponse, 1, committed=True, **ids).error_code == 0
        _, after = groups.fetch_offsets({group: [(topic, 0)]}, require_stable=True)[group]
        assert after[(topic, 0)][0] == 5 and after[(topic, 0)][2] == 0
    finally:
        groups.close()
        sock.close()
