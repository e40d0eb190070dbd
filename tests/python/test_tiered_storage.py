"""Tiered storage (KIP-405): rolled segments move to an object store, local retention
keeps only a hot tail on disk, and everything from the log start stays readable.

Stores: `local` is the broker's default tier folder `<data-dir>/tier` (topics opt in with
remote.storage.enable=true), `file` is `--object-store file:///...` (topics tiered by
default), `s3` is `--object-store s3://...` against a real S3-compatible server (moto_server,
started per test; the outage tests freeze it with SIGSTOP, which a client sees as a hung
server). Without moto_server the S3 tests skip, unless STRATA_REQUIRE_S3_TEST=1.

The tests look at the store directly: the per-partition manifest.json and the objects next to
it, under `<store root>/<cluster id>/<topic>-<topic id>/<partition>/`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, OffsetSpec, ResourceType

import kwire
from helpers import (
    DeliveryTracker,
    Rec,
    compact_string,
    consume_all,
    create_topic,
    expect_kafka_error,
    flush_all,
    frame,
    free_ports,
    make_admin,
    make_consumer,
    make_producer,
    raw_connect,
    read_frame,
    request_header,
    uvarint,
    wait_until,
    watermarks,
)

SEGMENT = 1 << 20  # segment.bytes: Kafka's minimum at topic level
RECORD = 1000  # value bytes per record
TASK_INTERVAL_MS = 200  # remote.log.manager.task.interval.ms for the tests

KAFKA_STORAGE_ERROR = 56

# ListOffsets special timestamps (-4 and -5: KIP-405 / KIP-1005)
EARLIEST, LATEST, EARLIEST_LOCAL, LATEST_TIERED = -2, -1, -4, -5

SEG_RE = re.compile(r"^(\d{20})\.log$")
TOPIC_DIR_RE = re.compile(r"^(.+)-([0-9a-f]{32})$")


# --------------------------------------------------------------------------
# S3: moto_server
# --------------------------------------------------------------------------


class MotoServer:
    """A moto_server process on 127.0.0.1 with one bucket. `pause()`/`resume()` freeze and
    thaw it with SIGSTOP/SIGCONT: connections are still accepted by the kernel but nothing
    answers, as with a hung store."""

    BUCKET = "strata-tier"
    KEY_ID, SECRET = "testing", "testing"

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.log_path = workdir / "moto.log"
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.paused = False
        self._client = None
        self._throttles: list[threading.Event] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MotoServer":
        binary = shutil.which("moto_server")
        assert binary
        for attempt in range(3):  # a lost race for the free port: try another
            self.port = free_ports(1)[0]
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [binary, "-H", "127.0.0.1", "-p", str(self.port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: signals reach the server itself
                )

            def bucket_created():
                if self.proc.poll() is not None:
                    return "exited"
                req = urllib.request.Request(f"{self.endpoint}/{self.BUCKET}", method="PUT")
                with urllib.request.urlopen(req, timeout=2) as r:
                    return r.status == 200

            got = wait_until(bucket_created, 30, interval=0.1, msg="moto_server to listen", ignore=(OSError,))
            if got is True:
                return self
        raise AssertionError(f"moto_server does not start: {self.log_path.read_text()[-2000:]}")

    def _signal(self, sig) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)  # the group this test started (start_new_session)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def throttle(self, running_s: float = 0.03, paused_s: float = 0.1) -> threading.Event:
        """Makes the store slow (it alternately runs and freezes) until the returned event is
        set; the thread leaves it running."""
        done = threading.Event()

        def run():
            try:
                while not done.is_set():
                    self.pause()
                    done.wait(paused_s)
                    self.resume()
                    done.wait(running_s)
            finally:
                self.resume()

        threading.Thread(target=run, daemon=True, name="moto-throttle").start()
        self._throttles.append(done)
        return done

    def stop(self) -> None:
        if self.proc is None:
            return
        for t in self._throttles:
            t.set()
        self.resume()
        self._signal(signal.SIGKILL)
        self.proc.wait(10)

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=self.KEY_ID,
                aws_secret_access_key=self.SECRET,
                region_name="us-east-1",
                config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2}),
            )
        return self._client


# --------------------------------------------------------------------------
# the tier as the tests see it
# --------------------------------------------------------------------------


class Tier:
    """One object store for a test's brokers, readable from the test."""

    PREFIX = "strata/e2e"  # key prefix inside the bucket

    def __init__(self, kind: str, workdir: Path, moto: MotoServer | None = None):
        self.kind = kind
        self.workdir = workdir
        self.moto = moto
        self.store_dir = workdir / "object-store"  # for kind "file"
        self.s3_options: dict[str, str] = {}
        self.brokers: list = []

    # -- broker side ---------------------------------------------------------
    def broker_args(self) -> list[str]:
        if self.kind == "local":
            return []  # <data-dir>/tier
        if self.kind == "file":
            self.store_dir.mkdir(parents=True, exist_ok=True)
            return ["--object-store", self.store_dir.resolve().as_uri()]
        opts = {
            "aws_endpoint": self.moto.endpoint,
            "aws_allow_http": "true",
            "aws_access_key_id": MotoServer.KEY_ID,
            "aws_secret_access_key": MotoServer.SECRET,
            "aws_region": "us-east-1",
            "aws_virtual_hosted_style_request": "false",
            **self.s3_options,
        }
        args = ["--object-store", f"s3://{MotoServer.BUCKET}/{self.PREFIX}"]
        for k, v in opts.items():
            args += ["--object-store-option", f"{k}={v}"]
        return args

    def topic_config(self) -> dict[str, str]:
        """What a topic needs to be tiered on this store's brokers."""
        return {"remote.storage.enable": "true"} if self.kind == "local" else {}

    def start_broker(self, broker_factory, overrides=None, **kw):
        ov = {
            "remote.log.manager.task.interval.ms": TASK_INTERVAL_MS,
            "log.retention.check.interval.ms": TASK_INTERVAL_MS,
        }
        ov.update(overrides or {})
        b = broker_factory(overrides=ov, extra_args=self.broker_args(), **kw)
        self.brokers.append(b)
        return b

    # -- store side ----------------------------------------------------------
    def _cluster_id(self) -> str:
        b = self.brokers[0]
        props = dict(
            line.split("=", 1) for line in (b.data_dir / "meta.properties").read_text().splitlines() if "=" in line
        )
        return props["cluster.id"].strip()

    def _root(self) -> Path:
        assert self.kind in ("local", "file")
        base = self.brokers[0].data_dir / "tier" if self.kind == "local" else self.store_dir
        return base / self._cluster_id()

    def _key(self, rel: str) -> str:
        return f"{self.PREFIX}/{self._cluster_id()}/{rel}"

    def list(self, rel_prefix: str = "") -> dict[str, int]:
        """Objects under `<cluster root>/<rel_prefix>` as {path relative to the cluster root: size}."""
        out: dict[str, int] = {}
        if self.kind == "s3":
            base = self._key("")
            for page in self.moto.client.get_paginator("list_objects_v2").paginate(
                Bucket=MotoServer.BUCKET, Prefix=base + rel_prefix
            ):
                for o in page.get("Contents", []):
                    out[o["Key"][len(base) :]] = o["Size"]
            return out
        root = self._root()
        start = root / rel_prefix
        if not start.exists():
            return out
        for dirpath, _, files in os.walk(start):
            for f in files:
                p = Path(dirpath) / f
                try:
                    out[p.relative_to(root).as_posix()] = p.stat().st_size
                except FileNotFoundError:
                    pass  # deleted while listing
        return out

    def read(self, rel: str) -> bytes | None:
        if self.kind == "s3":
            try:
                return self.moto.client.get_object(Bucket=MotoServer.BUCKET, Key=self._key(rel))["Body"].read()
            except self.moto.client.exceptions.NoSuchKey:
                return None
        try:
            return (self._root() / rel).read_bytes()
        except FileNotFoundError:
            return None

    def path(self, rel: str) -> Path:
        """A file store's object as a file (to corrupt it)."""
        return self._root() / rel

    def topic_dirs(self) -> dict[str, str]:
        """{`<topic>-<topic id>`: topic} for the topic directories in the tier."""
        out = {}
        for rel in self.list(""):
            top = rel.split("/", 1)[0]
            m = TOPIC_DIR_RE.match(top)
            if m and "/" in rel:
                out[top] = m.group(1)
        return out

    def topic_dir(self, topic: str) -> str | None:
        found = [d for d, t in self.topic_dirs().items() if t == topic]
        assert len(found) <= 1, f"more than one tier directory for topic {topic}: {found}"
        return found[0] if found else None

    def partition_prefix(self, topic: str, partition: int) -> str | None:
        d = self.topic_dir(topic)
        return f"{d}/{partition}/" if d else None

    def manifest(self, topic: str, partition: int = 0) -> dict | None:
        prefix = self.partition_prefix(topic, partition)
        if prefix is None:
            return None
        data = self.read(prefix + "manifest.json")
        return json.loads(data) if data is not None else None

    def partition_objects(self, topic: str, partition: int = 0) -> dict[str, int]:
        """{object name: size} in the partition's tier directory."""
        prefix = self.partition_prefix(topic, partition)
        if prefix is None:
            return {}
        return {k[len(prefix) :]: v for k, v in self.list(prefix).items()}


def segment_objects(seg: dict) -> set[str]:
    """Object names the manifest entry `seg` owns."""
    return {f"{seg['base_offset']:020d}-{seg['id']}.{ext}" for ext in [*seg["files"], "log"]}


def check_manifest(
    tier: Tier, topic: str, partition: int = 0, objects: dict[str, int] | None = None, orphans_ok: bool = False
) -> dict:
    """The manifest is well formed: segments in offset order, contiguous, not overlapping, each
    with its objects present (the .log of the recorded size); no other objects next to it
    (unless `orphans_ok`)."""
    m = tier.manifest(topic, partition)
    assert m is not None, f"no manifest for {topic}-{partition}; tier holds {sorted(tier.list())[:20]}"
    segs = m["segments"]
    assert segs, f"manifest of {topic}-{partition} names no segments: {m}"
    for a, b in zip(segs, segs[1:]):
        assert b["base_offset"] == a["end_offset"] + 1, f"segments not contiguous: {a} then {b}"
    for s in segs:
        assert s["base_offset"] <= s["end_offset"], s
    ids = [s["id"] for s in segs]
    assert len(set(ids)) == len(ids), f"duplicate segment ids: {ids}"
    objects = tier.partition_objects(topic, partition) if objects is None else objects
    named = set().union(*(segment_objects(s) for s in segs)) | {"manifest.json"}
    missing = named - set(objects)
    assert not missing, f"manifest names objects that are not in the store: {sorted(missing)}"
    orphans = set(objects) - named
    assert orphans_ok or not orphans, f"objects in {topic}-{partition}'s tier directory the manifest does not name: {sorted(orphans)}"
    for s in segs:
        name = f"{s['base_offset']:020d}-{s['id']}.log"
        assert objects[name] == s["size_bytes"], f"{name}: {objects[name]} bytes, manifest says {s['size_bytes']}"
    return m


def wait_manifest_clean(tier: Tier, topic: str, partition: int = 0, timeout: float = 15, orphans_ok=False) -> dict:
    """check_manifest, polled: the broker may still be deleting what it no longer needs."""
    last: list[AssertionError] = []

    def clean():
        try:
            return check_manifest(tier, topic, partition, orphans_ok=orphans_ok)
        except AssertionError as e:
            last[:] = [e]
            return None

    try:
        return wait_until(clean, timeout, interval=0.2)
    except AssertionError:
        raise AssertionError(f"after {timeout}s: {last[0] if last else 'no manifest'}") from None


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


def _moto_or_skip(tmp_path: Path) -> MotoServer:
    if shutil.which("moto_server") is None:
        if os.environ.get("STRATA_REQUIRE_S3_TEST") == "1":
            pytest.fail("moto_server not found and STRATA_REQUIRE_S3_TEST=1 (pip install 'moto[server]')")
        pytest.skip("moto_server not found (pip install 'moto[server]'); S3 tests skipped")
    return MotoServer(tmp_path).start()


@pytest.fixture
def tier(request, tmp_path):
    kind = getattr(request, "param", "local")
    moto = _moto_or_skip(tmp_path) if kind == "s3" else None
    t = Tier(kind, tmp_path, moto)
    yield t
    if moto is not None:
        for throttle in moto._throttles:
            throttle.set()
        moto.resume()
        # the brokers go first, so none is left waiting on a store that vanished
        for b in t.brokers:
            b.close()
        moto.stop()


def tier_param(*kinds):
    return pytest.mark.parametrize("tier", list(kinds), indirect=True)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def metrics(broker) -> dict[str, float]:
    """The broker's unlabelled samples, plus labelled ones under their full name."""
    out = {}
    for line in broker.metrics().splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def metric(broker, name: str) -> float:
    m = metrics(broker)
    assert name in m, f"metric {name} not exported; have {sorted(k for k in m if 'tier' in k)}"
    return m[name]


def local_segments(broker, topic: str, partition: int = 0) -> list[int]:
    d = broker.partition_dir(topic, partition)
    return sorted(int(m.group(1)) for f in os.listdir(d) if (m := SEG_RE.match(f)))


def local_bytes(broker, topic: str, partition: int = 0) -> int:
    d = broker.partition_dir(topic, partition)
    total = 0
    for f in os.listdir(d):
        if SEG_RE.match(f):
            try:
                total += (d / f).stat().st_size
            except FileNotFoundError:
                pass
    return total


def all_local_log_bytes(broker) -> int:
    total = 0
    for dirpath, _, files in os.walk(broker.logs_dir):
        for f in files:
            if SEG_RE.match(f):
                try:
                    total += os.stat(os.path.join(dirpath, f)).st_size
                except FileNotFoundError:
                    pass
    return total


def tiered_topic_config(tier: Tier, **extra) -> dict[str, str]:
    cfg = {"segment.bytes": str(SEGMENT), "local.retention.bytes": str(2 * SEGMENT)}
    cfg.update(tier.topic_config())
    cfg.update({k.replace("_", "."): str(v) for k, v in extra.items()})
    return cfg


def value_for(i: int, size: int = RECORD) -> bytes:
    """A distinct, incompressible-looking value for record number i (cheap to regenerate)."""
    head = struct.pack(">Q", i)
    rnd = random.Random(i).randbytes(64)
    body = (rnd * (size // 64 + 1))[: size - 8]
    return head + body


def produce_n(bs: str, topic: str, n: int, start: int = 0, partition: int = 0, timestamp=None, **conf) -> dict[int, bytes]:
    """Produce records start..start+n-1 (value_for(i)) in order; returns {i: value}."""
    c = {"batch.size": 65536, "linger.ms": 5, "compression.type": "none", "enable.idempotence": True}
    c.update(conf)
    p = make_producer(bs, **c)
    out = {}
    for i in range(start, start + n):
        v = value_for(i)
        out[i] = v
        kw = {"timestamp": timestamp(i) if callable(timestamp) else timestamp} if timestamp else {}
        while True:
            try:
                p.produce(topic, value=v, partition=partition, **kw)
                break
            except BufferError:
                p.poll(0.05)
        if i % 500 == 0:
            p.poll(0)
    flush_all(p, 60)
    return out


def tier_caught_up(broker, tier: Tier, topic: str, partition: int = 0):
    """The manifest if every rolled local segment is in the tier (its last segment ends just
    before the active segment), else None."""
    m = tier.manifest(topic, partition)
    if not m or not m["segments"]:
        return None
    segs = local_segments(broker, topic, partition)
    return m if segs and m["segments"][-1]["end_offset"] + 1 == segs[-1] else None


def wait_tiered(broker, tier: Tier, topic: str, partition: int = 0, local_max: int | None = None, timeout: float = 60):
    """Waits until uploads caught up and (if `local_max`) local retention left at most
    `local_max` bytes of segments on disk; returns the manifest."""

    def ready():
        m = tier_caught_up(broker, tier, topic, partition)
        if m is None:
            return None
        if local_max is not None and local_bytes(broker, topic, partition) > local_max:
            return None
        return m

    return wait_until(
        ready,
        timeout,
        interval=0.1,
        msg=lambda: (
            f"{topic}-{partition} to be tiered: local segments {local_segments(broker, topic, partition)} "
            f"({local_bytes(broker, topic, partition)} bytes), manifest ends at "
            f"{[s['end_offset'] for s in (tier.manifest(topic, partition) or {}).get('segments', [])][-3:]}"
        ),
    )


def check_records(recs, expected: dict[int, bytes], lo: int, hi: int) -> None:
    offsets = [r.offset for r in recs]
    assert offsets == list(range(lo, hi)), (
        f"offsets not contiguous {lo}..{hi}: got {len(offsets)} records, "
        f"first {offsets[:3]}, last {offsets[-3:]}, gaps at {[a for a, b in zip(offsets, offsets[1:]) if b != a + 1][:5]}"
    )
    bad = [r.offset for r in recs if r.value != expected[r.offset]]
    assert not bad, f"{len(bad)} records differ from what was produced, first at offsets {bad[:5]}"


def consume_range(bs: str, topic: str, partition: int, start: int, end: int, timeout: float = 30, **conf):
    """confluent-kafka records of one partition from `start` up to `end` (exclusive)."""
    c = make_consumer(bs, **conf)
    out = []
    try:
        c.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        while not out or out[-1].offset + 1 < end:
            assert time.monotonic() < deadline, (
                f"timed out reading {topic}-{partition} from {start}: got {len(out)} records, wanted up to {end}"
            )
            for m in c.consume(num_messages=1000, timeout=0.2):
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"consumer error: {m.error()}")
                if m.offset() < end:
                    out.append(Rec(m.partition(), m.offset(), m.key(), m.value(), [], m.timestamp()[1], m.timestamp()[0]))
        return out
    finally:
        c.close()


def fetch_settled(conn, topic: str, partition: int, offset: int, timeout: float = 10, **kw) -> dict:
    """A raw fetch, repeated while it comes back empty without an error: a fetch waits at
    most remote.fetch.max.wait.ms for the tier (KIP-1018) and the read goes on for the next."""
    deadline = time.monotonic() + timeout
    while True:
        res = conn.fetch(topic, partition, offset, **kw)
        if res["error_code"] != 0 or res["records"] or time.monotonic() > deadline:
            return res
        time.sleep(0.05)


def set_topic_config(admin, topic: str, **configs) -> None:
    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(k.replace("_", "."), str(v), incremental_operation=AlterConfigOpType.SET)
            for k, v in configs.items()
        ],
    )
    admin.incremental_alter_configs([res], request_timeout=10)[res].result(timeout=10)


def describe_topic(admin, topic: str) -> dict:
    res = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([res], request_timeout=10)[res].result(timeout=10)


# -- ListOffsets v9 (flexible) by hand: EARLIEST_LOCAL (-4) and LATEST_TIERED (-5) ------


def _read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7


def _skip_tags(buf: bytes, pos: int) -> int:
    n, pos = _read_uvarint(buf, pos)
    for _ in range(n):
        _, pos = _read_uvarint(buf, pos)
        size, pos = _read_uvarint(buf, pos)
        pos += size
    return pos


def list_offsets_raw(
    broker, topic: str, partition: int, timestamp: int, timeout: float = 10
) -> tuple[int, int, int, int]:
    """ListOffsets v9 for one partition: (error code, timestamp, offset, leader epoch)."""
    body = struct.pack(">ib", -1, 0)  # replica id, isolation level
    body += uvarint(2) + compact_string(topic)  # one topic
    body += uvarint(2) + struct.pack(">iiq", partition, -1, timestamp) + b"\x00"  # one partition
    body += b"\x00" + b"\x00"  # topic tags, request tags
    s = raw_connect(broker, timeout=timeout)
    try:
        s.sendall(frame(request_header(2, 9, 7, "strata-e2e", flexible=True) + body))
        resp = read_frame(s)
    finally:
        s.close()
    (corr,) = struct.unpack_from(">i", resp, 0)
    assert corr == 7
    pos = _skip_tags(resp, 4) + 4  # header tags, throttle time
    n_topics, pos = _read_uvarint(resp, pos)
    assert n_topics - 1 == 1
    name_len, pos = _read_uvarint(resp, pos)
    pos += name_len - 1
    n_parts, pos = _read_uvarint(resp, pos)
    assert n_parts - 1 == 1
    p, err, ts, off, epoch = struct.unpack_from(">ihqqi", resp, pos)
    assert p == partition
    return err, ts, off, epoch


def raw_offset(broker, topic, partition, spec) -> int:
    return raw_offset_and_epoch(broker, topic, partition, spec)[0]


def raw_offset_and_epoch(broker, topic, partition, spec) -> tuple[int, int]:
    err, _, off, epoch = list_offsets_raw(broker, topic, partition, spec)
    assert err == 0, f"ListOffsets {spec} on {topic}-{partition}: error {err}"
    return off, epoch


def admin_offset(admin, topic, partition, spec):
    tp = TopicPartition(topic, partition)
    return admin.list_offsets({tp: spec}, request_timeout=10)[tp].result(timeout=10)


def kafka_python_read(bs: str, topic: str, partition: int, start: int, end: int, timeout: float = 60, **conf):
    """(offset, value) from `start` up to `end` (exclusive) with kafka-python."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    c = KafkaConsumer(bootstrap_servers=bs, enable_auto_commit=False, request_timeout_ms=30000, **conf)
    try:
        tp = KTP(topic, partition)
        c.assign([tp])
        c.seek(tp, start)
        out = []
        deadline = time.monotonic() + timeout
        while not out or out[-1][0] + 1 < end:
            assert time.monotonic() < deadline, f"kafka-python read {len(out)} records from {start}, wanted up to {end}"
            for recs in c.poll(timeout_ms=500, max_records=5000).values():
                out.extend((r.offset, r.value) for r in recs if r.offset < end)
        return out
    finally:
        c.close()


# --------------------------------------------------------------------------
# 1. round trip: far more than local retention, read back from offset 0
# --------------------------------------------------------------------------


@tier_param("local", "s3")
@pytest.mark.timeout(120)
def test_consume_from_zero_reads_through_the_tier(tier, broker_factory, topic):
    b = tier.start_broker(broker_factory)
    bs = b.bootstrap
    create_topic(make_admin(bs), topic, config=tiered_topic_config(tier))
    n = 12_000  # ~12 MB: 11+ segments of 1 MiB against 2 MiB of local retention
    expected = produce_n(bs, topic, n)

    m = wait_tiered(b, tier, topic, local_max=3 * SEGMENT + 64 * 1024)
    segs = local_segments(b, topic)
    local_start = segs[0]
    assert local_start > 5 * SEGMENT // RECORD, f"local retention kept too much: {segs}"
    # (leftovers of failed upload attempts are the subject of other tests)
    m = check_manifest(tier, topic, orphans_ok=True)
    assert m["segments"][0]["base_offset"] == 0 and m["log_start_offset"] == 0, m["segments"][0]
    assert m["segments"][-1]["end_offset"] >= local_start, "a gap between the tier and the local log"
    # The first and last uploaded .log objects are the bytes the manifest's CRC-32C names.
    for s in (m["segments"][0], m["segments"][-1]):
        data = tier.read(tier.partition_prefix(topic, 0) + f"{s['base_offset']:020d}-{s['id']}.log")
        assert kwire.crc32c(data) == s["crc32c"], f"segment {s['base_offset']}: CRC-32C differs from the manifest"
    assert watermarks(bs, topic, [0])[0] == (0, n), "the log start must not move with local retention"

    before = metrics(b)
    assert before["strata_tier_uploaded_segments_total"] >= len(m["segments"])
    assert before["strata_tier_uploaded_bytes_total"] >= sum(s["size_bytes"] for s in m["segments"])
    assert before["strata_tier_upload_lag_segments"] == 0 and before["strata_tier_upload_lag_bytes"] == 0

    # confluent-kafka (librdkafka) from offset 0: through the tier into the local log
    recs = consume_all(bs, topic, [0], timeout=60)[0]
    check_records(recs, expected, 0, n)
    after = metrics(b)
    tier_bytes = sum(s["size_bytes"] for s in m["segments"] if s["end_offset"] < local_start)
    assert after["strata_tier_read_bytes_total"] - before["strata_tier_read_bytes_total"] >= tier_bytes * 0.9, (
        "the records below the local log start were not served from the tier"
    )
    assert after["strata_tier_read_errors_total"] == 0

    # kafka-python, with small fetches, from 0 across the tier/local boundary
    end = min(n, local_start + 500)
    got = kafka_python_read(bs, topic, 0, 0, end, max_partition_fetch_bytes=100_000, fetch_max_bytes=200_000)
    assert [o for o, _ in got] == list(range(end))
    assert all(v == expected[o] for o, v in got), "kafka-python read different bytes"


# --------------------------------------------------------------------------
# 2. kill -9 while segments upload
# --------------------------------------------------------------------------


def orphans(tier: Tier, topic: str, partition: int = 0) -> set[str]:
    """Objects of the partition no manifest entry names (listed before the manifest is read,
    so an upload finishing in between cannot look like an orphan)."""
    objects = tier.partition_objects(topic, partition)
    m = tier.manifest(topic, partition) or {"segments": []}
    named = set().union(set(), *(segment_objects(s) for s in m["segments"])) | {"manifest.json"}
    return set(objects) - named


def half_done(tier: Tier, topic: str) -> bool:
    """An upload is under way: objects the manifest does not name yet (S3), or a file that
    object_store's local store is still writing (`<name>#<n>`, renamed into place when done)."""
    if tier.kind == "s3":
        return bool(orphans(tier, topic))
    prefix = tier.partition_prefix(topic, 0)
    if prefix is None:
        return False
    try:
        return any("#" in name for name in os.listdir(tier.path(prefix)))
    except FileNotFoundError:
        return False


@tier_param("s3", "local")
@pytest.mark.timeout(150)
def test_kill9_during_uploads_loses_nothing_and_leaves_no_orphans(tier, broker_factory, topic):
    """kill -9 at random moments while a producer (acks=all) writes and segments upload;
    after the restarts every acknowledged record reads back from offset 0, the manifest is
    contiguous, and what the interrupted uploads left in the store is deleted."""
    b = tier.start_broker(broker_factory)
    bs = b.bootstrap
    create_topic(make_admin(bs), topic, config=tiered_topic_config(tier, local_retention_bytes=SEGMENT))
    seed = random.randrange(1 << 30)
    print(f"kill timing seed {seed}")
    rng = random.Random(seed)
    acked: dict[int, int] = {}  # record number -> offset
    caught: list[set[str]] = []  # leftovers of half-done uploads at each kill
    next_id = 0

    def caught_one() -> bool:  # a kill that interrupted what half_done() looks for
        return any(c if tier.kind == "s3" else any("#" in name for name in c) for c in caught)

    cycle = 0
    while cycle < 3 or (not caught_one() and cycle < 8):
        tracker = DeliveryTracker()
        stop = threading.Event()
        first = next_id

        def produce_until_stopped():
            nonlocal next_id
            p = make_producer(
                bs,
                **{"enable.idempotence": True, "linger.ms": 5, "batch.size": 65536, "compression.type": "none",
                   "message.timeout.ms": 60000},
            )
            while not stop.is_set() or next_id - first < 2000:
                j = next_id
                while True:
                    try:
                        p.produce(topic, value=value_for(j), partition=0, on_delivery=tracker.cb(j))
                        break
                    except BufferError:
                        p.poll(0.05)
                next_id += 1
                if j % 250 == 0:
                    p.poll(0)
                    time.sleep(0.08)  # pacing: ~3 MB/s, so that segments keep rolling and uploading
            p.flush(90)

        t = threading.Thread(target=produce_until_stopped, daemon=True)
        t.start()
        # A slow store, so that uploads take a while and one is likely in flight at the kill.
        slow = tier.moto.throttle() if tier.moto else None
        time.sleep(rng.uniform(0.4, 1.0))  # a random moment while segments roll and upload
        # ... preferably one where an upload is half done (objects written, manifest not yet;
        # for a file store, a file still being written)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not half_done(tier, topic):
            pass
        b.kill()
        if slow:
            slow.set()
        caught.append(orphans(tier, topic))
        b.start()
        stop.set()
        t.join(120)
        assert not t.is_alive(), "producer did not finish"
        assert not tracker.failed, f"deliveries failed across the restart: {list(tracker.failed.items())[:3]}"
        assert len(tracker.acked) == next_id - first
        acked.update({ident: off for ident, (_, off) in tracker.acked.items()})
        cycle += 1
    print(f"leftovers at each kill: {[len(c) for c in caught]}")

    wait_until(
        lambda: metric(b, "strata_tier_upload_lag_segments") == 0 and tier_caught_up(b, tier, topic),
        60,
        interval=0.2,
        msg="uploads to catch up after the restarts",
    )
    assert local_segments(b, topic)[0] > 0, "local retention never ran"

    # Nothing acknowledged is lost; offsets have no gaps.
    _, hi = watermarks(bs, topic, [0])[0]
    recs = consume_all(bs, topic, [0], timeout=60)[0]
    assert [r.offset for r in recs] == list(range(hi))
    by_offset = {r.offset: r.value for r in recs}
    lost = [ident for ident, off in acked.items() if by_offset.get(off) != value_for(ident)]
    assert not lost, f"{len(lost)} acknowledged records lost or changed, e.g. record {lost[0]} at offset {acked[lost[0]]}"
    assert len(acked) == next_id

    # The manifest has contiguous, non-overlapping segments from 0, each with its objects.
    m = check_manifest(tier, topic, orphans_ok=True)
    assert m["segments"][0]["base_offset"] == 0
    # After the restarts the broker deleted what the interrupted uploads left behind.
    # (Leftovers of uploads that failed after the last restart are another matter: see
    # test_store_outage_delays_uploads_but_not_produce.)
    leftovers = set().union(*caught)
    assert leftovers, "no kill happened with an upload half done; the test proves nothing about cleanup"
    wait_until(
        lambda: not (leftovers & set(tier.partition_objects(topic))),
        10,
        interval=0.2,
        msg=lambda: f"leftovers of uploads interrupted by kill -9 to be deleted after the restart: "
        f"{sorted(leftovers & set(tier.partition_objects(topic)))}",
    )


# --------------------------------------------------------------------------
# 3. store outage: produce keeps working, uploads resume afterwards
# --------------------------------------------------------------------------

# Requests to a frozen store time out after this (each is retried by the object_store client).
OUTAGE_S3_OPTIONS = {"timeout": "500ms", "connect_timeout": "500ms"}


@tier_param("s3")
@pytest.mark.timeout(150)
def test_store_outage_delays_uploads_but_not_produce(tier, broker_factory, topic):
    tier.s3_options = OUTAGE_S3_OPTIONS
    b = tier.start_broker(broker_factory)
    bs = b.bootstrap
    create_topic(make_admin(bs), topic, config=tiered_topic_config(tier, local_retention_bytes=SEGMENT))
    expected = produce_n(bs, topic, 3000)
    before_outage = wait_tiered(b, tier, topic)
    errors0 = metric(b, "strata_tier_upload_errors_total")

    tier.moto.pause()
    outage_start = time.monotonic()
    t0 = time.monotonic()
    expected.update(produce_n(bs, topic, 5000, start=3000))
    produce_secs = time.monotonic() - t0
    assert produce_secs < 20, f"produce took {produce_secs:.1f}s during the store outage"
    # A fetch of offsets only in the tier answers promptly (remote.fetch.max.wait.ms, KIP-1018)
    # without data, or with KAFKA_STORAGE_ERROR: never hangs, never returns other bytes.
    with kwire.RawConn("127.0.0.1", b.port, timeout=60) as c:
        t0 = time.monotonic()
        res = c.fetch(topic, 0, 0, max_wait_ms=0)
        fetch_secs = time.monotonic() - t0
    assert res["error_code"] in (0, KAFKA_STORAGE_ERROR) and res["records"] == b"", (
        f"fetch of a tier-only offset while the store is down: error {res['error_code']}, "
        f"{len(res['records'])} record bytes"
    )
    assert fetch_secs < 5, f"a fetch from the tier took {fetch_secs:.1f}s while the store was down"

    wait_until(
        lambda: metric(b, "strata_tier_upload_errors_total") > errors0,
        60,
        interval=0.5,
        msg="strata_tier_upload_errors_total to rise while the store is down",
    )
    lag = metric(b, "strata_tier_upload_lag_segments")
    assert lag >= 4, f"upload lag should have grown to the segments produced during the outage, is {lag}"
    assert metric(b, "strata_tier_upload_lag_bytes") >= 4 * SEGMENT * 0.9
    # Local retention deleted nothing that is not in the tier, and the local hot tail still
    # serves reads while the store is down.
    local_start = local_segments(b, topic)[0]
    assert 0 < local_start <= before_outage["segments"][-1]["end_offset"] + 1, (local_start, before_outage["segments"][-1])
    check_records(consume_range(bs, topic, 0, local_start, 8000), expected, local_start, 8000)
    outage_secs = time.monotonic() - outage_start

    tier.moto.resume()
    wait_until(
        lambda: metric(b, "strata_tier_upload_lag_segments") == 0,
        60,
        interval=0.2,
        msg="the upload lag to drain after the store came back",
    )
    m = wait_tiered(b, tier, topic, local_max=2 * SEGMENT + 64 * 1024)
    recs = consume_all(bs, topic, [0], timeout=60)[0]
    check_records(recs, expected, 0, 8000)
    print(f"outage {outage_secs:.1f}s, produce during outage {produce_secs:.1f}s, tier segments {len(m['segments'])}")
    # The failed upload attempts leave nothing behind once the store is back: the partition's
    # directory holds exactly what the manifest names (no restart needed to clean up).
    wait_manifest_clean(tier, topic, 0, timeout=10)


# --------------------------------------------------------------------------
# 4. log.local.untiered.max.bytes: produce refused while uploads cannot free local disk
# --------------------------------------------------------------------------


@tier_param("s3")
@pytest.mark.timeout(150)
def test_local_disk_limit_refuses_produce_until_uploads_catch_up(tier, broker_factory, topic):
    tier.s3_options = OUTAGE_S3_OPTIONS
    limit = 4 * SEGMENT
    b = tier.start_broker(broker_factory, overrides={"log.local.untiered.max.bytes": limit})
    bs = b.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, config=tiered_topic_config(tier, local_retention_bytes=SEGMENT))
    expected = produce_n(bs, topic, 1500)
    acked: dict[int, int] = {i: i for i in expected}  # record number -> offset
    wait_tiered(b, tier, topic, local_max=2 * SEGMENT)

    tier.moto.pause()
    tracker = DeliveryTracker()
    p = make_producer(
        bs,
        **{"linger.ms": 5, "batch.size": 65536, "compression.type": "none", "enable.idempotence": True,
           "message.timeout.ms": 4000, "retry.backoff.ms": 100},
    )
    i = 1500
    bytes_at_refusal = None
    deadline = time.monotonic() + 45
    # ~2 MB/s, well within what a check at least once a second keeps near the limit
    next_burst = time.monotonic()
    while time.monotonic() < deadline:
        for _ in range(200):
            p.produce(topic, value=value_for(i), partition=0, on_delivery=tracker.cb(i))
            i += 1
        p.poll(0)
        next_burst += 0.1
        time.sleep(max(0.0, next_burst - time.monotonic()))  # pacing (a rate, not a wait)
        if metric(b, "strata_produce_rejected_disk_limit_total") > 0:
            bytes_at_refusal = all_local_log_bytes(b)
            break
    assert bytes_at_refusal is not None, (
        f"produce was never refused with the store down: local logs hold {all_local_log_bytes(b)} bytes, "
        f"log.local.untiered.max.bytes={limit}"
    )
    p.flush(15)
    codes = {e.code() for e in tracker.failed.values()}
    assert tracker.failed, "no delivery failed while produce was refused"
    assert codes <= {KafkaError.KAFKA_STORAGE_ERROR, KafkaError._MSG_TIMED_OUT}, codes
    # The refusal is KAFKA_STORAGE_ERROR on the wire (retriable).
    with kwire.RawConn("127.0.0.1", b.port) as c:
        res = c.produce(topic, 0, kwire.record_batch([(None, b"refused")]), acks=-1)
    assert res["error_code"] == KAFKA_STORAGE_ERROR, res
    # Internal topics keep working: a consumer group can commit offsets.
    c = make_consumer(bs, **{"group.id": f"g-{topic}"})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 42)], asynchronous=False)
        [got] = c.committed([TopicPartition(topic, 0)], timeout=10)
        assert got.offset == 42
    finally:
        c.close()
    acked.update({ident: off for ident, (_, off) in tracker.acked.items()})

    tier.moto.resume()
    # Uploads and local retention free the disk; produce succeeds again.
    p2 = make_producer(bs, **{"enable.idempotence": True, "message.timeout.ms": 90000, "linger.ms": 5})
    t2 = DeliveryTracker()
    for j in range(i, i + 300):
        p2.produce(topic, value=value_for(j), partition=0, on_delivery=t2.cb(j))
    flush_all(p2, 90)
    assert not t2.failed and len(t2.acked) == 300, t2.failed
    acked.update({ident: off for ident, (_, off) in t2.acked.items()})
    wait_until(lambda: all_local_log_bytes(b) < limit, 30, interval=0.2, msg="local logs to shrink below the limit")

    # Every acknowledged record is there, byte for byte.
    _, hi = watermarks(bs, topic, [0])[0]
    recs = {r.offset: r.value for r in consume_all(bs, topic, [0], timeout=60)[0]}
    assert len(recs) == hi
    bad = [ident for ident, off in acked.items() if recs.get(off) != value_for(ident)]
    assert not bad, f"{len(bad)} acknowledged records missing or different, e.g. record {bad[0]} at offset {acked[bad[0]]}"
    print(f"local bytes at the first refusal: {bytes_at_refusal} (limit {limit}); acked {len(acked)}, failed {len(tracker.failed)}")
    assert bytes_at_refusal <= limit + 3 * SEGMENT, (
        f"local logs grew to {bytes_at_refusal} bytes before produce was refused (log.local.untiered.max.bytes={limit})"
    )


# --------------------------------------------------------------------------
# 5. uploads while producers roll segments faster than a (slow) store takes them
# --------------------------------------------------------------------------


@tier_param("s3")
@pytest.mark.timeout(90)
def test_slow_store_uploads_without_errors_while_segments_roll(tier, broker_factory, topic):
    """A slow but healthy store: each upload takes a while, and meanwhile producers roll
    more segments (each roll takes a producer-state snapshot and prunes old ones). Uploads
    must not fail for that (no upload errors, no retries with backoff, no leftovers)."""
    b = tier.start_broker(broker_factory)
    bs = b.bootstrap
    create_topic(make_admin(bs), topic, config=tiered_topic_config(tier, local_retention_bytes=SEGMENT))
    per_segment = SEGMENT // RECORD  # about the records that fill a segment (1024)
    p = make_producer(bs, **{"batch.size": 65536, "linger.ms": 5, "compression.type": "none", "enable.idempotence": True})
    expected: dict[int, bytes] = {}

    def burst(n):
        for i in range(len(expected), len(expected) + n):
            expected[i] = value_for(i)
            p.produce(topic, value=expected[i], partition=0)
        flush_all(p, 30)

    burst(10)  # connected, producer id assigned
    slow = tier.moto.throttle(running_s=0.03, paused_s=0.4)
    try:
        for cycle in range(5):
            wait_until(lambda: metric(b, "strata_tier_upload_lag_segments") == 0, 30, interval=0.1, msg="uploads to catch up")
            if metric(b, "strata_tier_upload_errors_total") > 0:
                break  # already shown
            burst(per_segment + 80)  # a segment rolls; the next pass (within 200 ms) starts uploading it ...
            time.sleep(0.3)  # pacing: let that pass begin
            burst(2 * per_segment + 60)  # ... and two more roll while that upload is under way
        wait_until(lambda: metric(b, "strata_tier_upload_lag_segments") == 0, 30, interval=0.1, msg="uploads to catch up")
    finally:
        slow.set()
    wait_tiered(b, tier, topic, local_max=2 * SEGMENT + 64 * 1024)
    recs = consume_all(bs, topic, [0], timeout=60)[0]
    check_records(recs, expected, 0, len(expected))
    errors = metric(b, "strata_tier_upload_errors_total")
    failures = [ln for ln in b.log_path.read_text().splitlines() if "tiered storage pass failed" in ln]
    assert errors == 0, f"{int(errors)} upload failures on a healthy store, e.g.: {failures[:1]}"
    check_manifest(tier, topic)


# --------------------------------------------------------------------------
# 6. ListOffsets across the tier and the local log
# --------------------------------------------------------------------------


def produce_batches(broker, topic: str, partition: int, n_batches: int, per_batch: int, ts) -> dict[int, bytes]:
    """Raw produce of `n_batches` batches of `per_batch` records; every record of batch k has
    timestamp ts(k). Returns {offset: value}."""
    out = {}
    with kwire.RawConn("127.0.0.1", broker.port) as c:
        for k in range(n_batches):
            vals = [value_for(k * per_batch + r) for r in range(per_batch)]
            res = c.produce(topic, partition, kwire.record_batch([(None, v) for v in vals], base_timestamp=ts(k)))
            assert res["error_code"] == 0, res
            assert res["base_offset"] == k * per_batch
            out.update({k * per_batch + r: v for r, v in enumerate(vals)})
    return out


@tier_param("local", "s3")
@pytest.mark.timeout(90)
def test_list_offsets_across_tiers(tier, broker_factory, topic):
    b = tier.start_broker(broker_factory)
    bs = b.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, partitions=2, config=tiered_topic_config(tier, local_retention_bytes=SEGMENT))
    plain = topic + "-plain"
    create_topic(admin, plain, config={"remote.storage.enable": "false"})
    produce_n(bs, plain, 10)

    per, n_batches = 50, 120  # ~50 KB batches, ~20 per segment
    t0 = int(time.time() * 1000) - 6 * 3600 * 1000
    spike = t0 + 3 * 3600 * 1000
    produce_batches(b, topic, 0, n_batches, per, lambda k: t0 + k * 1000)
    produce_batches(b, topic, 1, n_batches, per, lambda k: spike if k == 3 else t0 + k * 1000)
    end = n_batches * per
    manifests = {p: wait_tiered(b, tier, topic, p, local_max=2 * SEGMENT + 64 * 1024) for p in (0, 1)}
    local_start = {p: local_segments(b, topic, p)[0] for p in (0, 1)}
    assert min(local_start.values()) >= 30 * per, f"too little of the log is only in the tier: {local_start}"

    # earliest / latest / EARLIEST_LOCAL / LATEST_TIERED
    for p in (0, 1):
        assert admin_offset(admin, topic, p, OffsetSpec.earliest()).offset == 0
        assert admin_offset(admin, topic, p, OffsetSpec.latest()).offset == end
        assert raw_offset(b, topic, p, EARLIEST) == 0
        assert raw_offset(b, topic, p, EARLIEST_LOCAL) == local_start[p]
        assert raw_offset(b, topic, p, LATEST_TIERED) == manifests[p]["segments"][-1]["end_offset"]
        assert raw_offset(b, topic, p, LATEST) == end
    # a topic that is not tiered: nothing in the tier, everything local
    assert raw_offset(b, plain, 0, LATEST_TIERED) == -1
    assert raw_offset(b, plain, 0, EARLIEST_LOCAL) == 0

    # timestamps that lie only in the tier, at the local boundary, and in the local log
    tier_only = [k for k in range(n_batches) if (k + 1) * per <= local_start[0]]
    local_only = [k for k in range(n_batches) if k * per >= manifests[0]["segments"][-1]["end_offset"] + 1]
    assert len(tier_only) >= 20 and local_only, (local_start, manifests[0]["segments"][-1])
    ks = sorted({0, 1, 2, tier_only[len(tier_only) // 2], tier_only[-1], tier_only[-1] + 1, local_only[0], n_batches - 1})
    c = make_consumer(bs)
    try:
        for k in ks:
            for target in (t0 + k * 1000 - 500, t0 + k * 1000):
                r = admin_offset(admin, topic, 0, OffsetSpec.for_timestamp(target))
                assert (r.offset, r.timestamp) == (k * per, t0 + k * 1000), (
                    f"for_timestamp(t0{target - t0:+d}) -> offset {r.offset}, timestamp t0{r.timestamp - t0:+d}; "
                    f"expected offset {k * per} (local log starts at {local_start[0]})"
                )
            [tp] = c.offsets_for_times([TopicPartition(topic, 0, t0 + k * 1000 - 1)], timeout=10)
            assert tp.error is None and tp.offset == k * per, (k, tp)
    finally:
        c.close()
    r = admin_offset(admin, topic, 0, OffsetSpec.for_timestamp(t0 + n_batches * 1000))
    assert r.offset == -1, "a timestamp after every record has no offset"

    # MAX_TIMESTAMP: in the local log for partition 0, in the tier only for partition 1
    r = admin_offset(admin, topic, 0, OffsetSpec.max_timestamp())
    assert (r.offset, r.timestamp) == ((n_batches - 1) * per, t0 + (n_batches - 1) * 1000)
    assert 4 * per <= local_start[1]
    r = admin_offset(admin, topic, 1, OffsetSpec.max_timestamp())
    assert (r.offset, r.timestamp) == (3 * per, spike), f"max timestamp in the tier: got offset {r.offset}"
    # ... and that record in the tier is the first at or after any earlier timestamp
    r = admin_offset(admin, topic, 1, OffsetSpec.for_timestamp(t0 + 10_000))
    assert (r.offset, r.timestamp) == (3 * per, spike)
    assert tier_caught_up(b, tier, topic, 0)["segments"][0]["base_offset"] == 0


def restart_on_new_ports(b) -> None:
    """Restarts a single node on other ports: it registers again, which bumps the leader
    epoch of the partitions it leads (as a broker's re-registration does in Kafka)."""
    b.stop()
    b.port, b.http_port = free_ports(2)
    b.start()


@tier_param("local")
@pytest.mark.timeout(120)
def test_list_offsets_answer_leader_epochs_across_tiers(tier, broker_factory, topic):
    """The leader epoch of a ListOffsets answer is Kafka's for every special timestamp and in
    the tier: the batch's for a record found by timestamp or MAX_TIMESTAMP (in the tier:
    `RemoteLogManager.lookupTimestamp`), the leader-epoch cache's for EARLIEST,
    EARLIEST_LOCAL and LATEST_TIERED (`epochForOffset`), the current one for LATEST."""
    b = tier.start_broker(broker_factory)
    create_topic(make_admin(b.bootstrap), topic, config=tiered_topic_config(tier, local_retention_bytes=SEGMENT))
    per = 50
    t0 = int(time.time() * 1000) - 6 * 3600 * 1000
    spike = t0 + 3 * 3600 * 1000
    ts = lambda k: spike if k == 50 else t0 + k * 1000  # noqa: E731

    def produce(batches):
        with kwire.RawConn("127.0.0.1", b.port) as c:
            for k in batches:
                vals = [value_for(k * per + r) for r in range(per)]
                res = c.produce(topic, 0, kwire.record_batch([(None, v) for v in vals], base_timestamp=ts(k)))
                assert (res["error_code"], res["base_offset"]) == (0, k * per), res

    def epoch_now():
        return raw_offset_and_epoch(b, topic, 0, LATEST)[1]

    # Epoch A: batches 0..59 (the max timestamp at 50), epoch B: 60..119, epoch C: 120..121.
    epochs = []
    for batches in (range(0, 60), range(60, 120), range(120, 122)):
        if epochs:
            restart_on_new_ports(b)
            wait_until(lambda: epoch_now() > epochs[-1], 20, msg="a new leader epoch")
        epochs.append(epoch_now())
        produce(batches)
        if len(epochs) == 2:
            wait_tiered(b, tier, topic, 0, local_max=2 * SEGMENT + 64 * 1024)
    a, b_epoch, c_epoch = epochs
    m = tier.manifest(topic, 0)
    tier_end = m["segments"][-1]["end_offset"]
    local_start = local_segments(b, topic, 0)[0]
    assert 120 * per > tier_end and tier_end + 1 >= local_start > 60 * per, (local_start, tier_end)

    assert raw_offset_and_epoch(b, topic, 0, EARLIEST) == (0, a)
    assert raw_offset_and_epoch(b, topic, 0, EARLIEST_LOCAL) == (local_start, b_epoch)
    wait_until(lambda: raw_offset(b, topic, 0, LATEST_TIERED) == tier_end, 10, msg="LATEST_TIERED after the restart")
    assert raw_offset_and_epoch(b, topic, 0, LATEST_TIERED) == (tier_end, b_epoch)
    assert raw_offset_and_epoch(b, topic, 0, LATEST) == (122 * per, c_epoch)
    admin = make_admin(b.bootstrap)
    tp = TopicPartition(topic, 0)
    # In the tier only (lookups past batch 50 find it first: it holds the max).
    for spec, offset, epoch in [
        (OffsetSpec.for_timestamp(t0 + 10 * 1000), 10 * per, a),
        (OffsetSpec.for_timestamp(t0 + 40 * 1000 - 1), 40 * per, a),
        (OffsetSpec.max_timestamp(), 50 * per, a),
    ]:
        r = admin.list_offsets({tp: spec}, request_timeout=10)[tp].result(timeout=10)
        assert (r.offset, r.leader_epoch) == (offset, epoch), (spec, r, epochs)


# --------------------------------------------------------------------------
# 7. retention of the whole log through the tier; DeleteRecords
# --------------------------------------------------------------------------


def check_deleted_from_tier(tier: Tier, topic: str, gone: list[dict], kept: dict) -> None:
    """The objects of the manifest entries `gone` leave the store (the manifest goes first,
    then the objects)."""
    assert {s["id"] for s in gone}.isdisjoint(s["id"] for s in kept["segments"])
    doomed = set().union(*(segment_objects(s) for s in gone))
    wait_until(
        lambda: not (doomed & set(tier.partition_objects(topic))),
        10,
        interval=0.2,
        msg=lambda: f"objects of deleted tier segments to go: {sorted(doomed & set(tier.partition_objects(topic)))[:6]}",
    )


@tier_param("local", "s3")
@pytest.mark.timeout(90)
def test_retention_bytes_deletes_from_the_tier(tier, broker_factory, topic):
    b = tier.start_broker(broker_factory)
    bs = b.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, config=tiered_topic_config(tier, local_retention_bytes=SEGMENT))
    n = 8000
    expected = produce_n(bs, topic, n)
    before = wait_tiered(b, tier, topic, local_max=2 * SEGMENT + 64 * 1024)
    assert len(before["segments"]) >= 6
    deleted0 = metric(b, "strata_tier_deleted_segments_total")

    set_topic_config(admin, topic, retention_bytes=3 * SEGMENT)

    def moved():
        lo, hi = watermarks(bs, topic, [0])[0]
        m = tier.manifest(topic)
        return lo > 0 and m and m["segments"] and m["segments"][0]["base_offset"] == lo and (lo, hi, m)

    lo, hi, after = wait_until(moved, 30, interval=0.2, msg="retention.bytes to move the log start through the tier")
    assert hi == n
    gone = [s for s in before["segments"] if s["end_offset"] < lo]
    assert gone and gone[-1]["end_offset"] + 1 == lo, "retention removes whole tier segments"
    assert after["log_start_offset"] == lo
    # what is left of the whole log is still at least retention.bytes, and not a segment more
    total = sum(s["size_bytes"] for s in after["segments"]) + local_bytes(b, topic) - sum(
        (b.partition_dir(topic, 0) / f"{s:020d}.log").stat().st_size
        for s in local_segments(b, topic)
        if s <= after["segments"][-1]["end_offset"]
    )
    assert 3 * SEGMENT <= total < 4 * SEGMENT + 64 * 1024, total
    wait_until(
        lambda: metric(b, "strata_tier_deleted_segments_total") - deleted0 >= len(gone), 10,
        msg="strata_tier_deleted_segments_total to count the deleted segments",
    )
    wait_manifest_clean(tier, topic, orphans_ok=True)
    check_deleted_from_tier(tier, topic, gone, after)
    assert raw_offset(b, topic, 0, EARLIEST) == lo
    recs = consume_all(bs, topic, [0], timeout=60)[0]  # from the earliest offset, in the tier
    check_records(recs, expected, lo, n)


@tier_param("local")
@pytest.mark.timeout(90)
def test_retention_ms_deletes_old_segments_from_the_tier(tier, broker_factory, topic):
    b = tier.start_broker(broker_factory)
    bs = b.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, config=tiered_topic_config(tier, local_retention_bytes=SEGMENT))
    old_ts = int(time.time() * 1000) - 2 * 3600 * 1000
    n_old, n_new = 4500, 2500
    expected = produce_n(bs, topic, n_old, timestamp=old_ts)
    expected.update(produce_n(bs, topic, n_new, start=n_old))
    before = wait_tiered(b, tier, topic, local_max=2 * SEGMENT + 64 * 1024)
    # the segment holding the first fresh record: everything before it is old
    bases = sorted({s["base_offset"] for s in before["segments"]} | set(local_segments(b, topic)))
    first_kept = max(x for x in bases if x <= n_old)
    assert first_kept >= 3 * 1000, bases

    set_topic_config(admin, topic, retention_ms=3600 * 1000)  # 1 h: the old records expire
    lo = wait_until(
        lambda: (lo := watermarks(bs, topic, [0])[0][0]) > 0 and lo,
        30,
        interval=0.2,
        msg="retention.ms to move the log start through the tier",
    )
    assert lo == first_kept, f"log start {lo}; the first segment with fresh records starts at {first_kept}"
    after = wait_manifest_clean(tier, topic, orphans_ok=True)
    gone = [s for s in before["segments"] if s["end_offset"] < lo]
    assert after["segments"][0]["base_offset"] == lo
    check_deleted_from_tier(tier, topic, gone, after)
    assert metric(b, "strata_tier_deleted_segments_total") >= len(gone)
    recs = consume_all(bs, topic, [0], timeout=60)[0]
    check_records(recs, expected, lo, n_old + n_new)


@tier_param("local", "s3")
@pytest.mark.timeout(90)
def test_delete_records_in_the_tier(tier, broker_factory, topic):
    b = tier.start_broker(broker_factory)
    bs = b.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, config=tiered_topic_config(tier, local_retention_bytes=SEGMENT))
    n = 6000
    expected = produce_n(bs, topic, n)
    before = wait_tiered(b, tier, topic, local_max=2 * SEGMENT + 64 * 1024)
    local_start = local_segments(b, topic)[0]
    target = before["segments"][2]["base_offset"] + 123  # inside the third tier segment
    assert target < local_start
    deleted0 = metric(b, "strata_tier_deleted_segments_total")

    [(_, fut)] = admin.delete_records([TopicPartition(topic, 0, target)], request_timeout=10).items()
    assert fut.result(timeout=10).low_watermark == target
    assert watermarks(bs, topic, [0])[0] == (target, n)
    assert raw_offset(b, topic, 0, EARLIEST) == target
    assert raw_offset(b, topic, 0, EARLIEST_LOCAL) == local_start

    # the next pass deletes the tier segments wholly below the new log start
    after = wait_until(
        lambda: (m := tier.manifest(topic)) and m["segments"][0]["base_offset"] == before["segments"][2]["base_offset"] and m,
        15,
        interval=0.2,
        msg="the tier segments below the DeleteRecords offset to go",
    )
    assert after["log_start_offset"] == target
    check_deleted_from_tier(tier, topic, before["segments"][:2], after)
    wait_manifest_clean(tier, topic, orphans_ok=True)
    assert metric(b, "strata_tier_deleted_segments_total") - deleted0 == 2
    # reading from the earliest offset starts in the middle of a tier segment, at the target
    recs = consume_all(bs, topic, [0], timeout=60)[0]
    check_records(recs, expected, target, n)
    with kwire.RawConn("127.0.0.1", b.port) as c:
        assert c.fetch(topic, 0, target - 1)["error_code"] == 1  # OFFSET_OUT_OF_RANGE


# --------------------------------------------------------------------------
# 8. transactions: aborted records stay hidden when read_committed reads the tier
# --------------------------------------------------------------------------


def read_values(bs: str, topic: str, count: int, timeout: float = 30, **conf) -> list[bytes]:
    """The first `count` record values of partition 0 from offset 0."""
    c = make_consumer(bs, **conf)
    out: list[bytes] = []
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + timeout
        while len(out) < count:
            assert time.monotonic() < deadline, f"read {len(out)} of {count} records"
            for m in c.consume(num_messages=1000, timeout=0.2):
                if m.error() is None:
                    out.append(m.value())
        return out
    finally:
        c.close()


@tier_param("local")
@pytest.mark.timeout(90)
def test_read_committed_from_the_tier_skips_aborted_transactions(tier, broker_factory, topic):
    b = tier.start_broker(
        broker_factory, overrides={"transaction.state.log.num.partitions": 1, "offsets.topic.num.partitions": 1}
    )
    bs = b.bootstrap
    create_topic(make_admin(bs), topic, config=tiered_topic_config(tier, local_retention_bytes=SEGMENT))
    p = make_producer(
        bs, **{"transactional.id": f"tx-{topic}", "linger.ms": 5, "batch.size": 65536, "compression.type": "none"}
    )
    p.init_transactions(15)
    committed, everything = [], []
    i = 0
    for k in range(14):  # ~300 KB per transaction; every other one aborted
        p.begin_transaction()
        vals = [value_for(j) for j in range(i, i + 300)]
        i += 300
        for v in vals:
            p.produce(topic, value=v, partition=0)
        flush_all(p, 15)  # written, then committed or aborted (abort would drop unsent ones)
        everything += vals
        if k % 2 == 0:
            p.commit_transaction(15)
            committed += vals
        else:
            p.abort_transaction(15)
    m = wait_tiered(b, tier, topic, local_max=2 * SEGMENT + 64 * 1024)
    assert local_segments(b, topic)[0] > 700, "the first (committed, aborted) transactions must be in the tier only"
    assert any("txnindex" in s["files"] for s in m["segments"]), f"aborted transactions were not uploaded: {m}, {local_segments(b, topic)}"

    assert read_values(bs, topic, len(committed), **{"isolation.level": "read_committed"}) == committed
    assert read_values(bs, topic, len(everything), **{"isolation.level": "read_uncommitted"}) == everything
    # ... also after a crash (the local log recovers; the tier part must stay filtered)
    b.kill()
    b.start()
    assert read_values(bs, topic, len(committed), **{"isolation.level": "read_committed"}) == committed


# --------------------------------------------------------------------------
# 9. DeleteTopics deletes the topic's tier data, also across a crash
# --------------------------------------------------------------------------


def delete_topic(admin, topic: str) -> None:
    admin.delete_topics([topic], operation_timeout=10, request_timeout=10)[topic].result(timeout=15)
    wait_until(lambda: topic not in admin.list_topics(timeout=5).topics, 10, msg=f"{topic} to leave the metadata")


@tier_param("file")
@pytest.mark.timeout(90)
def test_delete_topic_deletes_its_tier_data_also_after_a_crash(tier, broker_factory, topic):
    b = tier.start_broker(broker_factory)
    bs = b.bootstrap
    admin = make_admin(bs)
    doomed, crashed, kept = topic + "-a", topic + "-b", topic + "-keep"
    for t in (doomed, crashed, kept):
        create_topic(admin, t, partitions=2, config=tiered_topic_config(tier, local_retention_bytes=SEGMENT))
    expected = {}
    for t in (doomed, crashed, kept):
        for p in (0, 1):
            expected[(t, p)] = produce_n(bs, t, 2500, partition=p)
    for t in (doomed, crashed, kept):
        for p in (0, 1):
            wait_tiered(b, tier, t, p)
    dirs = {t: tier.topic_dir(t) for t in (doomed, crashed, kept)}
    kept_before = {p: tier.manifest(kept, p) for p in (0, 1)}
    kept_objects = tier.list(dirs[kept] + "/")

    # 1. Deleted while the broker runs: the next pass removes the whole directory.
    delete_topic(admin, doomed)
    wait_until(lambda: not tier.list(dirs[doomed] + "/"), 15, interval=0.2, msg=f"tier data of {doomed} to be deleted")
    wait_until(lambda: not tier.path(dirs[doomed]).exists(), 5, msg="the emptied topic directory to go")

    # 2. Deleted just before a crash, with no pass in between: the restarted broker deletes it.
    b.stop()
    b.overrides["remote.log.manager.task.interval.ms"] = "600000"  # one pass at start-up, then none
    b.start()
    wait_until(lambda: metric(b, "strata_tier_upload_lag_segments") == 0, 10)
    delete_topic(admin, crashed)
    b.kill()
    assert tier.list(dirs[crashed] + "/"), (
        "test setup: the tier data of the deleted topic was gone before the crash; "
        "the restart case is not exercised"
    )
    b.overrides["remote.log.manager.task.interval.ms"] = str(TASK_INTERVAL_MS)
    b.start()
    wait_until(lambda: not tier.list(dirs[crashed] + "/"), 15, interval=0.2, msg=f"tier data of {crashed} to be deleted after the restart")

    # The other topic's data is untouched and readable from offset 0.
    assert tier.list(dirs[kept] + "/") == kept_objects
    assert {p: tier.manifest(kept, p) for p in (0, 1)} == kept_before
    for p in (0, 1):
        assert local_segments(b, kept, p)[0] > 0
        recs = consume_all(bs, kept, [p], timeout=30)[p]
        check_records(recs, expected[(kept, p)], 0, 2500)


# --------------------------------------------------------------------------
# 10. a corrupted tier object is an error for the fetch, never data
# --------------------------------------------------------------------------


def batches_of(data: bytes) -> list[tuple[int, int, int, int]]:
    """(position, size, base offset, last offset) of each record batch in a .log file."""
    out, pos = [], 0
    while pos + 61 <= len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        (last_delta,) = struct.unpack_from(">i", data, pos + 23)
        out.append((pos, 12 + length, base, base + last_delta))
        pos += 12 + length
    return out


@tier_param("local")
@pytest.mark.parametrize("where", ["record", "base-offset"])
@pytest.mark.timeout(60)
def test_corrupted_tier_object_is_a_storage_error(tier, broker_factory, topic, where):
    """One flipped bit in an uploaded .log object: inside a record (covered by the batch's
    CRC-32C), or in a batch's base offset (not covered by the batch CRC, but by the CRC-32C
    of the whole object that the manifest records). Either way a fetch there must fail with
    KAFKA_STORAGE_ERROR rather than return records that were never written."""
    b = tier.start_broker(broker_factory)
    bs = b.bootstrap
    create_topic(make_admin(bs), topic, config=tiered_topic_config(tier, local_retention_bytes=SEGMENT))
    n = 5000
    expected = produce_n(bs, topic, n)
    m = wait_tiered(b, tier, topic, local_max=2 * SEGMENT + 64 * 1024)
    seg = m["segments"][0]
    assert local_segments(b, topic)[0] > seg["end_offset"], "segment 0 must be in the tier only"

    # Corrupt the fourth batch of segment 0 (nothing read the tier yet: nothing is cached).
    obj = tier.path(tier.partition_prefix(topic, 0) + f"{seg['base_offset']:020d}-{seg['id']}.log")
    data = bytearray(obj.read_bytes())
    pos, size, first, last = batches_of(bytes(data))[3]
    if where == "record":
        data[pos + size // 2] ^= 0x01
    else:
        data[pos + 7] ^= 0x04  # lowest byte of the base offset: the batch claims offsets 4 off
    obj.write_bytes(bytes(data))
    assert kwire.crc32c(bytes(data)) != seg["crc32c"]
    errors0 = metric(b, "strata_tier_read_errors_total")

    with kwire.RawConn("127.0.0.1", b.port) as c:
        # the corrupted batch: KAFKA_STORAGE_ERROR, no records
        for offset in (first, (first + last) // 2):
            res = fetch_settled(c, topic, 0, offset, max_bytes=64 * 1024)
            got = kwire.decode_batches(res["records"])
            wrong = [r.offset for r in got if r.value != expected.get(r.offset)]
            assert not wrong, (
                f"fetch at {offset} returned {len(wrong)} records that were never written at their offsets "
                f"(first {wrong[:3]}), error code {res['error_code']}"
            )
            assert res["error_code"] == KAFKA_STORAGE_ERROR, (offset, res["error_code"], len(res["records"]))
            assert res["records"] == b""
        # before it, intact batches are served (what is returned is checked, not the object)
        res = fetch_settled(c, topic, 0, 0, max_bytes=pos // 2)
        assert res["error_code"] == 0
        got = kwire.decode_batches(res["records"])
        assert got and got[-1].offset < first and all(r.value == expected[r.offset] for r in got)
    assert metric(b, "strata_tier_read_errors_total") > errors0

    # A consumer positioned there receives nothing (rather than the corrupted record) ...
    cons = make_consumer(bs)
    try:
        cons.assign([TopicPartition(topic, 0, first)])
        received = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            received += [x for x in cons.consume(num_messages=100, timeout=0.2) if x.error() is None]
        assert not received, f"received {len(received)} records from a corrupted batch, first offset {received[0].offset()}"
    finally:
        cons.close()
    # ... while the rest of the log reads fine, from the tier and locally.
    start = seg["end_offset"] + 1
    check_records(consume_range(bs, topic, 0, start, n), expected, start, n)


# --------------------------------------------------------------------------
# 11. topic config rules of tiered storage
# --------------------------------------------------------------------------


@tier_param("file")
@pytest.mark.timeout(60)
def test_tiered_topic_config_validation(tier, broker_factory, shared_broker, topic):
    b = tier.start_broker(broker_factory)
    admin = make_admin(b.bootstrap)

    def create(name, config):
        return admin.create_topics([NewTopic(name, 1, 1, config=config)], request_timeout=10)[name]

    invalid = {
        "compact": {"remote.storage.enable": "true", "cleanup.policy": "compact"},
        "compact-delete": {"remote.storage.enable": "true", "cleanup.policy": "compact,delete"},
        "local-ms": {"retention.ms": "60000", "local.retention.ms": "120000"},
        "local-bytes": {"retention.bytes": str(SEGMENT), "local.retention.bytes": str(2 * SEGMENT)},
        "local-bytes-unlimited": {"retention.bytes": str(SEGMENT), "local.retention.bytes": "-1"},
        "local-ms-unlimited": {"retention.ms": "60000", "local.retention.ms": "-1"},
    }
    for name, config in invalid.items():
        expect_kafka_error(create(f"{topic}-{name}", config), KafkaError.INVALID_CONFIG)
    assert not {f"{topic}-{n}" for n in invalid} & set(admin.list_topics(timeout=5).topics)
    # the same rules hold for a validate-only request and on a broker without --object-store
    plain = make_admin(shared_broker.bootstrap)
    fut = plain.create_topics(
        [NewTopic(f"{topic}-plain", 1, 1, config=invalid["compact"])], validate_only=True, request_timeout=10
    )[f"{topic}-plain"]
    expect_kafka_error(fut, KafkaError.INVALID_CONFIG)

    # valid combinations
    create_topic(admin, f"{topic}-ok", config={"retention.bytes": str(4 * SEGMENT), "local.retention.bytes": str(SEGMENT)})
    create_topic(admin, f"{topic}-ok2", config={"retention.ms": "-1", "local.retention.ms": "-1"})

    # A new topic on a broker with --object-store is tiered, and says so.
    create_topic(admin, topic)
    d = describe_topic(admin, topic)
    assert d["remote.storage.enable"].value == "true"
    assert d["local.retention.ms"].value == "-2" and d["local.retention.bytes"].value == "-2"
    # ... without --object-store it is not
    create_topic(plain, f"{topic}-plain")
    assert describe_topic(plain, f"{topic}-plain")["remote.storage.enable"].value == "false"

    # IncrementalAlterConfigs applies the same rules to an existing topic.
    def alter(name, **configs):
        res = ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in configs.items()
            ],
        )
        return admin.incremental_alter_configs([res], request_timeout=10)[res]

    ok = f"{topic}-ok"
    expect_kafka_error(alter(ok, **{"local.retention.bytes": str(8 * SEGMENT)}), KafkaError.INVALID_CONFIG)
    expect_kafka_error(alter(ok, **{"retention.bytes": str(SEGMENT // 2)}), KafkaError.INVALID_CONFIG)
    set_topic_config(admin, ok, remote_storage_enable="true")
    expect_kafka_error(alter(ok, **{"cleanup.policy": "compact"}), KafkaError.INVALID_CONFIG)
    d = describe_topic(admin, ok)
    assert (d["cleanup.policy"].value, d["local.retention.bytes"].value, d["retention.bytes"].value) == (
        "delete", str(SEGMENT), str(4 * SEGMENT)
    ), "a refused change must not be applied"


@tier_param("file")
@pytest.mark.timeout(60)
def test_tiered_by_default_topic_cannot_become_compacted(tier, broker_factory, topic):
    """On a broker with --object-store a topic is tiered without setting
    remote.storage.enable itself; switching it to compaction must be refused as for a topic
    that sets it (Kafka: "Remote log storage is unsupported for the compacted topics"):
    otherwise its tier data silently stops being governed (no retention, no uploads)."""
    b = tier.start_broker(broker_factory)
    bs = b.bootstrap
    admin = make_admin(bs)
    create_topic(admin, topic, config={"segment.bytes": str(SEGMENT), "local.retention.bytes": str(SEGMENT)})
    assert describe_topic(admin, topic)["remote.storage.enable"].value == "true"
    produce_n(bs, topic, 3000)
    m = wait_tiered(b, tier, topic, local_max=2 * SEGMENT + 64 * 1024)
    assert raw_offset(b, topic, 0, LATEST_TIERED) == m["segments"][-1]["end_offset"]

    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)],
    )
    fut = admin.incremental_alter_configs([res], request_timeout=10)[res]
    expect_kafka_error(fut, KafkaError.INVALID_CONFIG)


# --------------------------------------------------------------------------
# 12. a clean restart keeps the tiered log whole
# --------------------------------------------------------------------------


@tier_param("local", "s3")
@pytest.mark.timeout(90)
def test_restart_serves_offset_zero_from_the_tier(tier, broker_factory, topic):
    b = tier.start_broker(broker_factory)
    bs = b.bootstrap
    create_topic(make_admin(bs), topic, config=tiered_topic_config(tier, local_retention_bytes=SEGMENT))
    n = 5000
    expected = produce_n(bs, topic, n)
    before = wait_tiered(b, tier, topic, local_max=2 * SEGMENT + 64 * 1024)
    local_start = local_segments(b, topic)[0]
    offsets = {s: raw_offset(b, topic, 0, s) for s in (EARLIEST, EARLIEST_LOCAL, LATEST_TIERED, LATEST)}
    assert offsets == {
        EARLIEST: 0,
        EARLIEST_LOCAL: local_start,
        LATEST_TIERED: before["segments"][-1]["end_offset"],
        LATEST: n,
    }

    b.restart()
    # straight after the restart: the same log start, local log start and end
    for s in (EARLIEST, EARLIEST_LOCAL, LATEST):
        assert raw_offset(b, topic, 0, s) == offsets[s], s
    # LATEST_TIERED is known once the manifest is read again (-1 until then, as in Kafka)
    assert raw_offset(b, topic, 0, LATEST_TIERED) in (-1, offsets[LATEST_TIERED])
    wait_until(lambda: raw_offset(b, topic, 0, LATEST_TIERED) == offsets[LATEST_TIERED], 10, msg="LATEST_TIERED after the restart")
    with kwire.RawConn("127.0.0.1", b.port) as c:
        res = fetch_settled(c, topic, 0, 0)
        assert res["error_code"] == 0 and res["log_start_offset"] == 0
        got = kwire.decode_batches(res["records"])
        assert got and got[0].offset == 0 and all(r.value == expected[r.offset] for r in got)
    recs = consume_all(bs, topic, [0], timeout=60)[0]
    check_records(recs, expected, 0, n)
    assert local_segments(b, topic)[0] == local_start
    # Nothing is uploaded again: with the manifest read, no local segment is pending.
    assert metric(b, "strata_tier_upload_lag_segments") == 0
    assert metric(b, "strata_tier_uploaded_segments_total") == 0
    assert tier.manifest(topic) == before
    check_manifest(tier, topic)


@pytest.mark.parametrize("tier", ["local", "s3"], indirect=True)
def test_lost_partition_directory_starts_after_the_tier(tier, broker_factory, topic):
    """A tiered partition whose local directory is lost (a replaced disk) loses only its
    untiered tail: after a restart it serves everything the tier holds, and an idempotent
    producer's next records land right after the tier's last offset."""
    b = tier.start_broker(broker_factory)
    bs = b.bootstrap
    create_topic(make_admin(bs), topic, config=tiered_topic_config(tier, local_retention_bytes=SEGMENT))
    n = 5000
    expected = produce_n(bs, topic, n)
    manifest = wait_tiered(b, tier, topic, local_max=2 * SEGMENT + 64 * 1024)
    tier_next = manifest["segments"][-1]["end_offset"] + 1
    assert 0 < tier_next < n

    b.stop()
    shutil.rmtree(b.partition_dir(topic, 0))
    b.start()
    # Served before any pass could run: start-up asked the tier about the empty partition.
    for spec, want in ((EARLIEST, 0), (EARLIEST_LOCAL, tier_next), (LATEST, tier_next)):
        assert raw_offset(b, topic, 0, spec) == want, spec
    expected.update(produce_n(bs, topic, 100, start=tier_next))
    assert raw_offset(b, topic, 0, LATEST) == tier_next + 100
    recs = consume_all(bs, topic, [0], timeout=60)[0]
    check_records(recs, expected, 0, tier_next + 100)
