"""Replica verifier: do all in-sync replicas of a partition hold the same bytes?

Two layers:

1. A parser for a partition's on-disk log: `<data-dir>/logs/<topic>-<partition>/` holds
   Kafka-format segment files `<20-digit base offset>.log`, each a sequence of whole
   record batches (magic v2):

       0  baseOffset int64 | 8 batchLength int32 | 12 partitionLeaderEpoch int32
       16 magic int8 (2)   | 17 crc uint32 (CRC-32C of bytes 21..)
       21 attributes int16 | 23 lastOffsetDelta int32 | ... (61-byte header, then records)

   `read_partition_log(dir)` turns that into `Batch(base_offset, last_offset,
   partition_leader_epoch, crc, digest)` records (`digest` hashes the batch's bytes, so two
   equal `Batch`es are byte-identical). Only whole batches count: parsing a segment stops at
   the first batch that is incomplete (a torn tail after a crash), has an impossible length,
   a magic other than 2 or (by default) a CRC that does not match; what follows is reported
   as the segment's ignored tail, never as batches. Other files (.index, .timeindex,
   .log.cleaned, .log.deleted, ...) are not read.

2. `verify_replicas(cluster, topics)`: waits (bounded) until, for every partition, every
   replica in the leader's ISR reports (`GET /partitions`) the leader's log end offset,
   leader and leader epoch, and the leader's high watermark has reached its log end; then
   reads every ISR replica's segment files and asserts that they hold the same batches
   (base offset, last offset, partition leader epoch, CRC and bytes) from the first offset
   they all still have up to the leader's high watermark, and that those batches reach the
   high watermark. A mismatch fails with the first differing batch of each replica.

The cluster only needs `nodes` (each with `node_id`, `live`, `partitions()` -> the
`/partitions` JSON list and `partition_dir(topic, partition)`), so the verifier can be
unit-tested with stand-ins.

Run it by hand on a data dir: `python tests/python/replica_verifier.py DIR...` prints the
batches of each partition directory (or of every partition under `DIR/logs`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
import sys
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from helpers import wait_until
from kwire import crc32c

log = logging.getLogger("strata-e2e.verifier")

SEGMENT_RE = re.compile(r"^(\d{20})\.log$")
# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta
_HEAD = struct.Struct(">qiibIhi")
LOG_OVERHEAD = 12  # baseOffset + batchLength: not counted in batchLength
HEADER_SIZE = 61  # fixed v2 batch header
MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD  # 49: a header with no records
CRC_START = 21  # the CRC covers attributes .. end of batch
# A batch this large is garbage, not data (Kafka's message.max.bytes tops out far below).
MAX_BATCH_LENGTH = 1 << 30

# what a /partitions poll may meet while a node starts, stops or changes leaders
TRANSIENT = (OSError, ValueError, KeyError, TypeError, urllib.error.URLError)


# --------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One record batch as stored. Equality (and hashing) covers what the replicas must
    agree on: offsets, partition leader epoch, CRC and the bytes; not where it is stored."""

    base_offset: int
    last_offset: int
    partition_leader_epoch: int
    crc: int
    digest: bytes = field(repr=False)  # BLAKE2b-128 of the whole batch (baseOffset .. end)
    size: int = field(compare=False)
    file: str = field(compare=False, default="")
    position: int = field(compare=False, default=0)

    @property
    def records(self) -> int:
        return self.last_offset - self.base_offset + 1

    def describe(self) -> str:
        return (
            f"offsets {self.base_offset}..{self.last_offset} epoch {self.partition_leader_epoch} "
            f"crc 0x{self.crc:08x} {self.size} bytes digest {self.digest.hex()[:12]} "
            f"({self.file} @ {self.position})"
        )


@dataclass
class SegmentScan:
    path: Path
    base_offset: int  # from the file name
    batches: list[Batch]
    size: int  # file length
    valid_bytes: int  # length of the prefix of whole, valid batches
    stop_reason: str | None  # why parsing stopped before the end (None: the whole file parsed)

    @property
    def ignored_bytes(self) -> int:
        return self.size - self.valid_bytes


def parse_batches(data: bytes, check_crc: bool = True, file: str = "", start: int = 0) -> tuple[list[Batch], int, str | None]:
    """Parse whole v2 record batches from `data[start:]`.

    Returns (batches, end of the valid prefix, why parsing stopped early or None). Parsing
    stops at the first batch that is incomplete, has an impossible length or magic, or (with
    `check_crc`) a CRC that does not match its bytes."""
    batches: list[Batch] = []
    pos = start
    n = len(data)
    while pos < n:
        if n - pos < LOG_OVERHEAD:
            return batches, pos, f"{n - pos} trailing bytes, less than a batch's offset and length"
        base_offset, length = struct.unpack_from(">qi", data, pos)
        if length < MIN_BATCH_LENGTH or length > MAX_BATCH_LENGTH:
            return batches, pos, f"impossible batchLength {length} at base offset {base_offset}"
        end = pos + LOG_OVERHEAD + length
        if end > n:
            return batches, pos, f"incomplete batch: batchLength {length} but only {n - pos - LOG_OVERHEAD} bytes follow"
        _, _, ple, magic, crc, _attrs, last_delta = _HEAD.unpack_from(data, pos)
        if magic != 2:
            return batches, pos, f"magic {magic} (not 2) at base offset {base_offset}"
        if last_delta < 0 or base_offset < 0:
            return batches, pos, f"impossible offsets: base {base_offset}, lastOffsetDelta {last_delta}"
        if check_crc:
            actual = crc32c(data[pos + CRC_START : end])
            if actual != crc:
                return batches, pos, (
                    f"CRC mismatch at base offset {base_offset}: stored 0x{crc:08x}, computed 0x{actual:08x}"
                )
        batches.append(
            Batch(
                base_offset=base_offset,
                last_offset=base_offset + last_delta,
                partition_leader_epoch=ple,
                crc=crc,
                digest=hashlib.blake2b(data[pos:end], digest_size=16).digest(),
                size=end - pos,
                file=file,
                position=pos,
            )
        )
        pos = end
    return batches, pos, None


def scan_segment(path: Path, check_crc: bool = True) -> SegmentScan:
    path = Path(path)
    m = SEGMENT_RE.match(path.name)
    if not m:
        raise ValueError(f"{path} is not a segment file (<20 digits>.log)")
    data = path.read_bytes()
    batches, valid, reason = parse_batches(data, check_crc=check_crc, file=path.name)
    return SegmentScan(path, int(m.group(1)), batches, len(data), valid, reason)


def segment_files(partition_dir: Path) -> list[Path]:
    """The segment files of a partition directory, by base offset."""
    d = Path(partition_dir)
    if not d.is_dir():
        return []
    segs = [p for p in d.iterdir() if SEGMENT_RE.match(p.name)]
    return sorted(segs, key=lambda p: int(p.name[:20]))


@dataclass
class PartitionLog:
    """A partition directory parsed: its segments and their batches in offset order."""

    dir: Path
    segments: list[SegmentScan]
    batches: list[Batch]
    # anything that a healthy log never shows (a stop inside a non-final segment,
    # offsets going backwards, a batch below its segment's base offset)
    problems: list[str]

    @property
    def log_end_offset(self) -> int | None:
        """Next offset after the last whole batch (None when there is none)."""
        return self.batches[-1].last_offset + 1 if self.batches else None

    @property
    def tail(self) -> str | None:
        """Where and why parsing of the last segment stopped early, if it did."""
        if self.segments and self.segments[-1].stop_reason:
            s = self.segments[-1]
            return f"{s.path.name} @ {s.valid_bytes}: {s.stop_reason} ({s.ignored_bytes} bytes ignored)"
        return None

    def below(self, end: int, start: int = 0) -> list[Batch]:
        """Batches with start <= base_offset < end."""
        return [b for b in self.batches if start <= b.base_offset < end]


def read_partition_log(partition_dir: Path, check_crc: bool = True) -> PartitionLog:
    partition_dir = Path(partition_dir)
    segments = [scan_segment(p, check_crc) for p in segment_files(partition_dir)]
    batches: list[Batch] = []
    problems: list[str] = []
    for i, seg in enumerate(segments):
        if seg.stop_reason and i + 1 < len(segments):
            problems.append(
                f"{seg.path.name} is not the last segment but parsing stopped at byte {seg.valid_bytes} "
                f"of {seg.size}: {seg.stop_reason}"
            )
        for b in seg.batches:
            if b.base_offset < seg.base_offset:
                problems.append(f"{b.describe()} is below its segment's base offset {seg.base_offset}")
            if batches and b.base_offset <= batches[-1].last_offset:
                problems.append(f"offsets go backwards: {batches[-1].describe()} then {b.describe()}")
            batches.append(b)
    return PartitionLog(partition_dir, segments, batches, problems)


# --------------------------------------------------------------------------
# comparing replicas
# --------------------------------------------------------------------------


def first_difference(reference: list[Batch], other: list[Batch]) -> tuple[int, Batch | None, Batch | None] | None:
    """The first index at which two batch lists differ, with the batch each has there (None
    where one list has ended); None if they are equal."""
    for i in range(max(len(reference), len(other))):
        a = reference[i] if i < len(reference) else None
        b = other[i] if i < len(other) else None
        if a != b:
            return i, a, b
    return None


def batch_fields_diff(a: Batch, b: Batch) -> str:
    diffs = []
    for name in ("base_offset", "last_offset", "partition_leader_epoch", "crc", "size"):
        x, y = getattr(a, name), getattr(b, name)
        if x != y:
            diffs.append(f"{name} {x:#010x} vs {y:#010x}" if name == "crc" else f"{name} {x} vs {y}")
    if not diffs and a.digest != b.digest:
        diffs.append("same header fields, different bytes")
    return ", ".join(diffs)


def compare_replicas(
    logs: dict[int, PartitionLog],
    leader: int,
    high_watermark: int,
    name: str = "partition",
) -> tuple[list[str], dict[str, Any]]:
    """Compare the replicas' batches below `high_watermark` against the leader's.

    The range compared starts at the first offset every replica still has (retention and
    tiering may have removed different prefixes). Returns (errors, summary)."""
    errors: list[str] = []
    firsts = [lg.batches[0].base_offset for lg in logs.values() if lg.batches]
    start = max(firsts) if len(firsts) == len(logs) else 0
    selected = {r: lg.below(high_watermark, start) for r, lg in logs.items()}
    ref = selected[leader]
    for r, lg in sorted(logs.items()):
        who = "leader" if r == leader else "replica"
        for p in lg.problems:
            errors.append(f"{name}: {who} {r}: {p}")
        mine = selected[r]
        if high_watermark > start:
            end = mine[-1].last_offset + 1 if mine else start
            if end < high_watermark:
                tail = f"; its last segment stops early: {lg.tail}" if lg.tail else ""
                errors.append(
                    f"{name}: {who} {r} holds batches only up to offset {end} (from {start}) on disk "
                    f"but the high watermark is {high_watermark}{tail} (dir {lg.dir})"
                )
        if r == leader:
            continue
        diff = first_difference(ref, mine)
        if diff is not None:
            i, a, b = diff
            if a is None:
                what = f"replica {r} has an extra batch #{i}: {b.describe()}"
            elif b is None:
                what = f"replica {r} lacks batch #{i}, the leader's {a.describe()}"
            else:
                what = (
                    f"first differing batch #{i} ({batch_fields_diff(a, b)}):\n"
                    f"    leader  {leader}: {a.describe()}\n"
                    f"    replica {r}: {b.describe()}"
                )
            errors.append(
                f"{name}: replicas differ below the high watermark {high_watermark} "
                f"(compared from offset {start}; leader {leader} has {len(ref)} batches there, "
                f"replica {r} {len(mine)}): {what}"
            )
    summary = {
        "leader": leader,
        "high_watermark": high_watermark,
        "compared_from": start,
        "batches": len(ref),
        "records": sum(b.records for b in ref),
        "replicas": sorted(logs),
    }
    return errors, summary


# --------------------------------------------------------------------------
# against a running cluster
# --------------------------------------------------------------------------


def _entry_key(e: dict) -> tuple[str, int]:
    return e["topic"], int(e["partition"])


def partition_views(cluster) -> tuple[dict[int, dict[tuple[str, int], dict]], dict[int, str]]:
    """GET /partitions of every live broker: ({node: {(topic, partition): entry}}, {node: error})."""
    views: dict[int, dict[tuple[str, int], dict]] = {}
    errors: dict[int, str] = {}
    for n in cluster.nodes:
        if not getattr(n, "live", True) or not getattr(n, "is_broker", True):
            continue
        try:
            views[n.node_id] = {_entry_key(e): e for e in n.partitions()}
        except TRANSIENT as e:
            errors[n.node_id] = repr(e)
    return views, errors


def _settled(views, errors, topics, full_isr: bool, expected: dict[str, int] | None, last: dict) -> dict | None:
    """The leader's entry and ISR of every partition of `topics` once they are settled, else
    None (and why in `last`)."""
    last.clear()
    out: dict[tuple[str, int], tuple[int, dict]] = {}
    for topic in topics:
        parts = sorted({p for v in views.values() for (t, p) in v if t == topic})
        want = expected.get(topic) if expected else None
        if not parts or (want is not None and parts != list(range(want))):
            last[topic] = f"partitions reported by live nodes: {parts} (expected {want}); errors {errors}"
            continue
        for p in parts:
            key = f"{topic}-{p}"
            leaders = [nid for nid, v in views.items() if v.get((topic, p), {}).get("is_leader")]
            if len(leaders) != 1:
                last[key] = f"nodes claiming leadership: {leaders}"
                continue
            lid = leaders[0]
            le = views[lid][(topic, p)]
            isr = [int(r) for r in le["isr"]]
            lag = []
            if le.get("leader") != lid:
                lag.append(f"leader {lid}'s entry names leader {le.get('leader')}")
            if lid not in isr:
                lag.append(f"leader {lid} not in its own ISR {isr}")
            if full_isr and sorted(isr) != sorted(int(r) for r in le["replicas"]):
                lag.append(f"ISR {isr} is not all of the replicas {le['replicas']}")
            if le["high_watermark"] != le["log_end_offset"]:
                lag.append(f"leader high watermark {le['high_watermark']} < log end {le['log_end_offset']}")
            for r in isr:
                if r == lid:
                    continue
                fe = views.get(r, {}).get((topic, p))
                if fe is None:
                    lag.append(f"ISR member {r} not answering ({errors.get(r, 'no entry / not live')})")
                    continue
                if (fe.get("leader"), fe.get("leader_epoch")) != (lid, le["leader_epoch"]):
                    lag.append(
                        f"replica {r} follows {fe.get('leader')} epoch {fe.get('leader_epoch')}, "
                        f"not {lid} epoch {le['leader_epoch']}"
                    )
                if fe["log_end_offset"] != le["log_end_offset"]:
                    lag.append(f"replica {r} log end {fe['log_end_offset']} != leader's {le['log_end_offset']}")
            if lag:
                last[key] = "; ".join(lag)
                continue
            out[(topic, p)] = (lid, le)
    return None if last else out


def verify_replicas(
    cluster,
    topics: Iterable[str],
    timeout: float = 60.0,
    full_isr: bool = False,
    partitions: dict[str, int] | None = None,
    check_crc: bool = True,
) -> dict[str, dict]:
    """Wait until the replicas of every partition of `topics` are settled, then assert that
    every ISR replica holds the leader's batches up to the leader's high watermark.

    Settled (all bounded by `timeout`): exactly one live node is the partition's leader; every
    ISR member answers `/partitions` naming that leader and epoch, with the leader's log end
    offset; the leader's high watermark has reached its log end; with `full_isr`, the ISR is
    every replica. `partitions` (topic -> count), when given, is the number of partitions to
    expect. Run it with the load stopped: a partition that keeps growing never settles.

    Returns {"topic-p": summary} (leader, ISR, high watermark, batches and records compared).
    """
    topics = list(topics)
    last: dict[str, str] = {}

    def settled():
        views, errors = partition_views(cluster)
        return _settled(views, errors, topics, full_isr, partitions, last)

    snapshot = wait_until(
        settled,
        timeout=timeout,
        interval=0.1,
        msg=lambda: "in-sync replicas caught up with their leaders: "
        + "; ".join(f"{k}: {v}" for k, v in sorted(last.items())),
        ignore=TRANSIENT,
    )

    nodes = {n.node_id: n for n in cluster.nodes}
    errors: list[str] = []
    report: dict[str, dict] = {}
    for (topic, p), (lid, le) in sorted(snapshot.items()):
        isr = sorted(int(r) for r in le["isr"])
        logs = {r: read_partition_log(nodes[r].partition_dir(topic, p), check_crc) for r in isr}
        errs, summary = compare_replicas(logs, lid, int(le["high_watermark"]), name=f"{topic}-{p}")
        summary.update(leader_epoch=le["leader_epoch"], isr=isr, replicas=sorted(int(r) for r in le["replicas"]))
        errors.extend(errs)
        report[f"{topic}-{p}"] = summary
    if errors:
        raise AssertionError("replica verification failed:\n" + "\n".join(errors))
    log.info(
        "replicas verified: %s",
        ", ".join(
            f"{k} (leader {s['leader']} epoch {s['leader_epoch']}, ISR {s['isr']}, "
            f"{s['batches']} batches / {s['records']} records below hw {s['high_watermark']})"
            for k, s in report.items()
        ),
    )
    return report


# --------------------------------------------------------------------------
# by hand
# --------------------------------------------------------------------------


def _main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for arg in argv:
        root = Path(arg)
        dirs = [root] if segment_files(root) else sorted(p for p in (root / "logs").glob("*") if p.is_dir())
        for d in dirs:
            lg = read_partition_log(d)
            print(f"== {d}: {len(lg.batches)} batches, log end {lg.log_end_offset}, tail {lg.tail}")
            for problem in lg.problems:
                print(f"   PROBLEM {problem}")
            for b in lg.batches:
                print(f"   {b.describe()}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_main(sys.argv[1:]))
    except BrokenPipeError:  # `| head`
        sys.exit(0)
