"""The replica verifier (replica_verifier.py) against a real single-node broker's log.

The segment parser must read exactly what the broker stores: the batches it finds on disk are
the bytes Fetch returns, at the offsets the producer was told; a torn tail is ignored; a
corrupt batch stops the parse. The comparison and the settle-then-compare logic of
`verify_replicas` are checked on copies of that log, through stand-in nodes, so that all of
this runs without a replicated cluster.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from helpers import DeliveryTracker, WaitTimeout, create_topic, flush_all, make_admin, make_producer, watermarks
from kwire import RawConn, crc32c, record_batch
from replica_verifier import (
    Batch,
    compare_replicas,
    parse_batches,
    read_partition_log,
    segment_files,
    verify_replicas,
)

SMALL_SEGMENTS = {"segment.bytes": "4096"}


def produce_batches(bs: str, topic: str, batches: int, per_batch: int, size: int = 80) -> dict[bytes, tuple[int, int]]:
    """`batches` flushes of `per_batch` records each (so, normally, one batch per flush)."""
    p = make_producer(bs, **{"linger.ms": 50, "enable.idempotence": True, "compression.type": "none"})
    t = DeliveryTracker()
    n = 0
    for _ in range(batches):
        for _ in range(per_batch):
            v = b"rec-%05d-" % n
            p.produce(topic, key=b"k%d" % (n % 7), value=v + b"x" * (size - len(v)), partition=0, on_delivery=t.cb(v))
            n += 1
        flush_all(p)
    assert not t.failed, t.failed
    return t.acked


def fetch_bytes(bs_port: int, topic: str, end: int) -> bytes:
    """The raw record-batch bytes of partition 0 from offset 0 up to `end`, via Fetch."""
    out = bytearray()
    offset = 0
    with RawConn("127.0.0.1", bs_port) as conn:
        while offset < end:
            res = conn.fetch(topic, 0, offset, max_bytes=1 << 20)
            assert res["error_code"] == 0, res
            batches, valid, _ = parse_batches(res["records"], file="fetch")
            batches = [b for b in batches if b.last_offset >= offset]
            assert batches, f"Fetch at {offset} returned no whole batch"
            out += res["records"][: valid]
            offset = batches[-1].last_offset + 1
    return bytes(out)


def same_batches(a: list[Batch], b: list[Batch]) -> bool:
    return [(x.base_offset, x.last_offset, x.partition_leader_epoch, x.crc, x.digest) for x in a] == [
        (x.base_offset, x.last_offset, x.partition_leader_epoch, x.crc, x.digest) for x in b
    ]


def copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def patch(path: Path, pos: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write(data)


# --------------------------------------------------------------------------
# the parser against the broker's own files
# --------------------------------------------------------------------------


def test_parsed_segments_are_what_fetch_returns(broker, topic):
    bs = broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=1, config=SMALL_SEGMENTS)
    acked = produce_batches(bs, topic, batches=30, per_batch=10)

    # one hand-built batch: the broker keeps its CRC (it covers attributes..end, not the
    # base offset or leader epoch that the broker rewrites)
    sent = record_batch([(b"raw-k%d" % i, b"raw-v%d" % i) for i in range(3)])
    with RawConn("127.0.0.1", broker.port) as conn:
        res = conn.produce(topic, 0, sent, acks=-1)
    assert res["error_code"] == 0, res
    raw_base = res["base_offset"]

    hw = watermarks(bs, topic, [0])[0][1]
    assert hw == 303
    lg = read_partition_log(broker.partition_dir(topic, 0))
    assert lg.problems == [], lg.problems
    assert lg.tail is None, lg.tail
    assert len(lg.segments) > 2, f"expected several segments with segment.bytes=4096: {segment_files(lg.dir)}"
    assert all(s.base_offset == s.batches[0].base_offset for s in lg.segments if s.batches)

    # contiguous from 0 to the high watermark, every record counted
    assert lg.batches[0].base_offset == 0
    for a, b in zip(lg.batches, lg.batches[1:]):
        assert b.base_offset == a.last_offset + 1, f"gap or overlap: {a.describe()} then {b.describe()}"
    assert lg.log_end_offset == hw
    assert sum(b.records for b in lg.batches) == 303

    # every acknowledged offset is inside exactly one batch
    starts = {b.base_offset for b in lg.batches}
    for value, (part, off) in acked.items():
        assert part == 0
        (holder,) = [b for b in lg.batches if b.base_offset <= off <= b.last_offset]
        assert holder.partition_leader_epoch >= 0, holder
    assert raw_base in starts
    (raw,) = [b for b in lg.batches if b.base_offset == raw_base]
    assert raw.records == 3 and raw.last_offset == hw - 1
    assert raw.crc == struct.unpack_from(">I", sent, 17)[0] == crc32c(sent[21:])
    assert raw.size == len(sent)

    # byte for byte what Fetch serves
    fetched, valid, reason = parse_batches(fetch_bytes(broker.port, topic, hw), file="fetch")
    assert reason is None
    assert same_batches(fetched, lg.batches)


def test_torn_tail_is_ignored_and_corruption_stops_the_parse(broker, topic, tmp_path):
    bs = broker.bootstrap
    create_topic(make_admin(bs), topic, partitions=1)
    produce_batches(bs, topic, batches=6, per_batch=5)
    broker.kill()
    orig = broker.partition_dir(topic, 0)
    clean = read_partition_log(orig)
    assert len(clean.batches) == 6 and clean.tail is None and clean.log_end_offset == 30
    (seg,) = segment_files(orig)
    size = seg.stat().st_size
    last = clean.batches[-1]

    tails = {
        "short header": struct.pack(">q", 30),
        "partial batch": struct.pack(">qi", 30, 500) + os.urandom(30),
        "zeros": b"\x00" * 4096,
        "random": os.urandom(777),
        "bad magic": struct.pack(">qiib", 30, 60, 0, 1) + b"\x00" * 60,
    }
    for name, junk in tails.items():
        d = copy_dir(orig, tmp_path / f"tail-{name.replace(' ', '-')}")
        with open(d / seg.name, "ab") as f:
            f.write(junk)
        lg = read_partition_log(d)
        assert same_batches(lg.batches, clean.batches), name
        assert lg.problems == [], (name, lg.problems)
        assert lg.tail is not None and f"({len(junk)} bytes ignored)" in lg.tail, (name, lg.tail)

    # the last batch cut short: it is not a batch
    d = copy_dir(orig, tmp_path / "cut")
    os.truncate(d / seg.name, size - last.size // 2)
    lg = read_partition_log(d)
    assert same_batches(lg.batches, clean.batches[:-1])
    assert "incomplete batch" in lg.tail and lg.log_end_offset == last.base_offset

    # a flipped byte in the records of batch #2: the CRC catches it, the parse stops there
    d = copy_dir(orig, tmp_path / "flipped")
    victim = clean.batches[2]
    pos = victim.position + victim.size - 3
    patch(d / seg.name, pos, bytes([seg.read_bytes()[pos] ^ 0xFF]))
    lg = read_partition_log(d)
    assert same_batches(lg.batches, clean.batches[:2])
    assert "CRC mismatch at base offset %d" % victim.base_offset in lg.tail
    # ... and without the CRC check the bytes still differ
    lg = read_partition_log(d, check_crc=False)
    assert len(lg.batches) == 6 and lg.batches[2] != clean.batches[2]
    assert lg.batches[2].crc == clean.batches[2].crc

    # a stop inside a segment that is not the last one is a problem, not a tail
    d = copy_dir(orig, tmp_path / "two-segments")
    with open(d / seg.name, "ab") as f:
        f.write(b"\x00" * 100)
    shutil.copy(d / seg.name, d / f"{30:020d}.log")  # offsets 0..29 again: backwards too
    lg = read_partition_log(d)
    assert any("not the last segment" in p for p in lg.problems), lg.problems
    assert any("offsets go backwards" in p for p in lg.problems), lg.problems
    # other files in the directory are not segments
    (d / f"{0:020d}.log.deleted").write_bytes(b"junk")
    (d / f"{0:020d}.log.cleaned").write_bytes(b"junk")
    assert [p.name for p in segment_files(d)] == [f"{0:020d}.log", f"{30:020d}.log"]


# --------------------------------------------------------------------------
# comparing replicas, on copies of one log
# --------------------------------------------------------------------------


@pytest.fixture
def one_log(broker, topic):
    """A stopped broker's partition with 8 batches (offsets 0..39)."""
    create_topic(make_admin(broker.bootstrap), topic, partitions=1)
    produce_batches(broker.bootstrap, topic, batches=8, per_batch=5)
    broker.stop()
    lg = read_partition_log(broker.partition_dir(topic, 0))
    assert len(lg.batches) == 8 and lg.log_end_offset == 40
    return broker.partition_dir(topic, 0), lg


def test_compare_replicas_names_the_first_differing_batch(one_log, tmp_path):
    orig, lg = one_log
    seg = segment_files(orig)[0].name
    a = copy_dir(orig, tmp_path / "a")
    b = copy_dir(orig, tmp_path / "b")
    logs = {1: read_partition_log(a), 2: read_partition_log(b), 3: read_partition_log(orig)}
    errors, summary = compare_replicas(logs, leader=1, high_watermark=40, name="t-0")
    assert errors == []
    assert summary["batches"] == 8 and summary["records"] == 40 and summary["compared_from"] == 0

    # batch #3 rewritten with another partition leader epoch (not covered by the CRC)
    third = lg.batches[3]
    patch(b / seg, third.position + 12, struct.pack(">i", 7))
    logs[2] = read_partition_log(b)
    errors, _ = compare_replicas(logs, leader=1, high_watermark=40, name="t-0")
    assert len(errors) == 1, errors
    assert "first differing batch #3" in errors[0] and "partition_leader_epoch 0 vs 7" in errors[0], errors[0]
    assert "replica 2" in errors[0] and f"offsets {third.base_offset}..{third.last_offset}" in errors[0]
    # ... but only below the high watermark counts
    errors, _ = compare_replicas(logs, leader=1, high_watermark=third.base_offset, name="t-0")
    assert errors == []

    # a replica missing the last two batches
    c = copy_dir(orig, tmp_path / "c")
    os.truncate(c / seg, lg.batches[6].position)
    logs = {1: read_partition_log(a), 3: read_partition_log(c)}
    errors, _ = compare_replicas(logs, leader=1, high_watermark=40, name="t-0")
    assert any("replica 3 holds batches only up to offset 30" in e for e in errors), errors
    assert any("replica 3 lacks batch #6" in e for e in errors), errors
    # ... is fine if the high watermark is where it ends
    assert compare_replicas(logs, leader=1, high_watermark=30)[0] == []

    # a replica whose log starts later (retention) is compared from its first batch
    e = copy_dir(orig, tmp_path / "e")
    data = (e / seg).read_bytes()
    (e / seg).unlink()
    (e / f"{lg.batches[2].base_offset:020d}.log").write_bytes(data[lg.batches[2].position :])
    errors, summary = compare_replicas({1: read_partition_log(a), 2: read_partition_log(e)}, 1, 40)
    assert errors == [] and summary["compared_from"] == lg.batches[2].base_offset


class StandInNode:
    """What verify_replicas needs of a node: an id, liveness, /partitions and a partition dir."""

    def __init__(self, node_id: int, dirs: dict[tuple[str, int], Path], entries):
        self.node_id = node_id
        self.live = True
        self.dirs = dirs
        self.entries = entries  # callable -> list of /partitions entries
        self.calls = 0

    def partitions(self):
        self.calls += 1
        return self.entries(self)

    def partition_dir(self, topic: str, partition: int) -> Path:
        return self.dirs[(topic, partition)]


class StandInCluster:
    def __init__(self, nodes):
        self.nodes = nodes


def entry(topic, leader, epoch, me, leo, hw=None, isr=(1, 2, 3)):
    return {
        "topic": topic,
        "partition": 0,
        "leader": leader,
        "leader_epoch": epoch,
        "is_leader": me == leader,
        "replicas": [1, 2, 3],
        "isr": list(isr),
        "log_start_offset": 0,
        "log_end_offset": leo,
        "high_watermark": leo if hw is None else hw,
    }


def test_verify_replicas_waits_for_followers_then_compares(one_log, tmp_path, topic):
    orig, lg = one_log
    dirs = {i: copy_dir(orig, tmp_path / f"n{i}") for i in (1, 2, 3)}

    # node 3 reports a lagging log end for its first polls, and the leader a lagging high
    # watermark: the verifier waits rather than compares
    def entries(node):
        lagging = node.calls < 4
        leo = 35 if lagging and node.node_id == 3 else 40
        hw = 35 if lagging and node.node_id == 1 else None
        return [entry(topic, 1, 4, node.node_id, leo, hw)]

    c = StandInCluster([StandInNode(i, {(topic, 0): dirs[i]}, entries) for i in (1, 2, 3)])
    report = verify_replicas(c, [topic], timeout=10, full_isr=True, partitions={topic: 1})
    assert c.nodes[2].calls >= 4
    assert report[f"{topic}-0"] == {
        "leader": 1,
        "leader_epoch": 4,
        "high_watermark": 40,
        "compared_from": 0,
        "batches": 8,
        "records": 40,
        "isr": [1, 2, 3],
        "replicas": [1, 2, 3],
    }

    # a replica outside the ISR is not compared (and need not answer)
    patch(dirs[3] / segment_files(orig)[0].name, lg.batches[1].position + 12, struct.pack(">i", 9))
    c = StandInCluster(
        [StandInNode(i, {(topic, 0): dirs[i]}, lambda n: [entry(topic, 1, 4, n.node_id, 40, isr=(1, 2))]) for i in (1, 2, 3)]
    )
    c.nodes[2].live = False
    assert verify_replicas(c, [topic], timeout=5)[f"{topic}-0"]["isr"] == [1, 2]

    # in the ISR, the same divergence fails with the first differing batch
    c = StandInCluster([StandInNode(i, {(topic, 0): dirs[i]}, lambda n: [entry(topic, 1, 4, n.node_id, 40)]) for i in (1, 2, 3)])
    with pytest.raises(AssertionError) as e:
        verify_replicas(c, [topic], timeout=5)
    msg = str(e.value)
    assert f"{topic}-0: replicas differ below the high watermark 40" in msg, msg
    assert "first differing batch #1 (partition_leader_epoch 0 vs 9)" in msg, msg
    assert "replica 2" not in msg, msg

    # never settled: a bounded wait, and the message says what is missing
    c = StandInCluster(
        [
            StandInNode(i, {(topic, 0): dirs[i]}, lambda n: [entry(topic, 1, 4, n.node_id, 40 if n.node_id != 2 else 38)])
            for i in (1, 2, 3)
        ]
    )
    with pytest.raises(WaitTimeout) as e:
        verify_replicas(c, [topic], timeout=1)
    assert "replica 2 log end 38 != leader's 40" in str(e.value), str(e.value)
    # two nodes claiming leadership is not settled either
    c = StandInCluster(
        [StandInNode(i, {(topic, 0): dirs[i]}, lambda n: [{**entry(topic, 1, 4, n.node_id, 40), "is_leader": n.node_id != 3}]) for i in (1, 2, 3)]
    )
    with pytest.raises(WaitTimeout) as e:
        verify_replicas(c, [topic], timeout=1)
    assert "nodes claiming leadership: [1, 2]" in str(e.value), str(e.value)


def test_verify_replicas_on_a_single_broker(broker, topic):
    """Once `/partitions` exists, the verifier runs against a real (one-replica) broker."""
    status, body, _ = broker.http_get("/partitions")
    if status == 404:
        pytest.skip("this strata has no GET /partitions yet")
    create_topic(make_admin(broker.bootstrap), topic, partitions=2)
    p = make_producer(broker.bootstrap, **{"enable.idempotence": True})
    for i in range(100):
        p.produce(topic, value=b"%d" % i, partition=i % 2)
    flush_all(p)

    import json

    class Node:
        live = True
        is_broker = True

        def __init__(self, b):
            self.b = b
            self.node_id = None

        def partitions(self):
            status, body, _ = self.b.http_get("/partitions")
            assert status == 200, (status, body)
            return json.loads(body)

        def partition_dir(self, t, p):
            return self.b.partition_dir(t, p)

    node = Node(broker)
    mine = [e for e in node.partitions() if e["topic"] == topic]
    assert len(mine) == 2, mine
    node.node_id = mine[0]["leader"]
    report = verify_replicas(StandInCluster([node]), [topic], timeout=15, partitions={topic: 2})
    assert {k: v["records"] for k, v in report.items()} == {f"{topic}-0": 50, f"{topic}-1": 50}
