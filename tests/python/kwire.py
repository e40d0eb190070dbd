"""A tiny hand-rolled Kafka wire-protocol client for tests that need exact
control over the bytes (idempotence de-duplication, CRC checks, malformed
requests). Only non-flexible request versions are implemented.
"""

from __future__ import annotations

import gzip
import itertools
import socket
import struct
import time
from dataclasses import dataclass

from helpers import frame, kstring, read_frame, request_header, uvarint

API_PRODUCE = 0
API_FETCH = 1
API_LIST_OFFSETS = 2
API_METADATA = 3
API_API_VERSIONS = 18
API_INIT_PRODUCER_ID = 22
API_OFFSET_FOR_LEADER_EPOCH = 23

# ----------------------------------------------------------------------------
# CRC-32C (Castagnoli), table driven; record batches v2 use it.
# ----------------------------------------------------------------------------


def _make_table() -> list[int]:
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _make_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    t = _CRC_TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # standard check value


# ----------------------------------------------------------------------------
# varints
# ----------------------------------------------------------------------------


def zigzag_varint(n: int) -> bytes:
    return uvarint((n << 1) ^ (n >> 63))


def read_zigzag(buf: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    z = 0
    while True:
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    return (z >> 1) ^ -(z & 1), pos


# ----------------------------------------------------------------------------
# record batch v2
# ----------------------------------------------------------------------------


def encode_record(offset_delta: int, ts_delta: int, key: bytes | None, value: bytes | None, headers=()) -> bytes:
    body = bytearray()
    body += b"\x00"  # attributes
    body += zigzag_varint(ts_delta)
    body += zigzag_varint(offset_delta)
    for blob in (key, value):
        if blob is None:
            body += zigzag_varint(-1)
        else:
            body += zigzag_varint(len(blob)) + blob
    body += zigzag_varint(len(headers))
    for hk, hv in headers:
        hkb = hk.encode()
        body += zigzag_varint(len(hkb)) + hkb
        body += zigzag_varint(-1) if hv is None else zigzag_varint(len(hv)) + hv
    return zigzag_varint(len(body)) + bytes(body)


def record_batch(
    records: list[tuple[bytes | None, bytes | None]],
    base_timestamp: int | None = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    base_offset: int = 0,
    corrupt_crc: bool = False,
    compression: int = 0,
    records_count: int | None = None,
    records_section: bytes | None = None,
) -> bytes:
    """One magic-v2 batch of `records`, CRC computed. `compression` sets the codec bits (1:
    the section is gzipped here; other codecs need `records_section`, the section as sent);
    `records_count` overrides the declared count (and last offset delta)."""
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    recs = b"".join(encode_record(i, 0, k, v) for i, (k, v) in enumerate(records))
    if records_section is not None:
        recs = records_section
    elif compression == 1:
        recs = gzip.compress(recs)
    elif compression != 0:
        raise ValueError(f"codec {compression} needs records_section")
    count = len(records) if records_count is None else records_count
    after_crc = (
        struct.pack(
            ">hiqqqhii",
            compression,  # attributes: the codec, CreateTime, not transactional
            count - 1,  # lastOffsetDelta
            base_timestamp,
            base_timestamp,  # maxTimestamp
            producer_id,
            producer_epoch,
            base_sequence,
            count,
        )
        + recs
    )
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0xDEADBEEF
    # partitionLeaderEpoch, magic, crc
    middle = struct.pack(">ibI", -1, 2, crc) + after_crc
    return struct.pack(">qi", base_offset, len(middle)) + middle


@dataclass
class DecodedRecord:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


def decode_batches(data: bytes) -> list[DecodedRecord]:
    """Decode uncompressed v2 record batches (as returned by Fetch)."""
    out = []
    pos = 0
    while pos + 12 <= len(data):
        base_offset, length = struct.unpack_from(">qi", data, pos)
        if pos + 12 + length > len(data):
            break  # partial trailing batch is legal in Fetch responses
        (_ple, magic, _crc, attrs, _lod, base_ts, _max_ts, _pid, _pe, _bs, count) = struct.unpack_from(
            ">ibIhiqqqhii", data, pos + 12
        )
        assert magic == 2, f"unexpected magic {magic}"
        assert attrs & 0x7 == 0, "compressed batch in raw test"
        rpos = pos + 12 + 49
        for _ in range(count):
            _len, rpos = read_zigzag(data, rpos)
            rpos += 1  # attributes
            ts_delta, rpos = read_zigzag(data, rpos)
            off_delta, rpos = read_zigzag(data, rpos)
            kl, rpos = read_zigzag(data, rpos)
            key = None if kl < 0 else data[rpos : rpos + kl]
            rpos += max(kl, 0)
            vl, rpos = read_zigzag(data, rpos)
            value = None if vl < 0 else data[rpos : rpos + vl]
            rpos += max(vl, 0)
            nh, rpos = read_zigzag(data, rpos)
            for _ in range(nh):
                hl, rpos = read_zigzag(data, rpos)
                rpos += hl
                hvl, rpos = read_zigzag(data, rpos)
                rpos += max(hvl, 0)
            out.append(DecodedRecord(base_offset + off_delta, base_ts + ts_delta, key, value))
        pos += 12 + length
    return out


# ----------------------------------------------------------------------------
# a minimal connection
# ----------------------------------------------------------------------------


class Reader:
    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0

    def _unpack(self, fmt: str):
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def i8(self):
        return self._unpack(">b")

    def i16(self):
        return self._unpack(">h")

    def i32(self):
        return self._unpack(">i")

    def i64(self):
        return self._unpack(">q")

    def string(self):
        n = self.i16()
        if n < 0:
            return None
        s = self.buf[self.pos : self.pos + n].decode()
        self.pos += n
        return s

    def bytes_(self):
        n = self.i32()
        if n < 0:
            return None
        b = self.buf[self.pos : self.pos + n]
        self.pos += n
        return b

    def remaining(self) -> int:
        return len(self.buf) - self.pos


class RawConn:
    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._corr = itertools.count(1)
        self._versions: dict[int, tuple[int, int]] | None = None

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, api_key: int, version: int, body: bytes) -> Reader:
        corr = next(self._corr)
        self.sock.sendall(frame(request_header(api_key, version, corr, "strata-raw", flexible=False) + body))
        resp = read_frame(self.sock)
        r = Reader(resp)
        got = r.i32()
        assert got == corr, f"correlation id mismatch: sent {corr}, got {got}"
        return r

    def api_versions(self) -> dict[int, tuple[int, int]]:
        if self._versions is None:
            r = self.call(API_API_VERSIONS, 0, b"")
            err = r.i16()
            assert err == 0, f"ApiVersions v0 error {err}"
            self._versions = {}
            for _ in range(r.i32()):
                k, lo, hi = r.i16(), r.i16(), r.i16()
                self._versions[k] = (lo, hi)
        return self._versions

    def pick(self, api_key: int, *candidates: int) -> int | None:
        lo, hi = self.api_versions().get(api_key, (1, 0))
        for v in candidates:
            if lo <= v <= hi:
                return v
        return None

    # -- InitProducerId v0/v1 ---------------------------------------------
    def init_producer_id(self) -> tuple[int, int]:
        v = self.pick(API_INIT_PRODUCER_ID, 1, 0)
        assert v is not None, f"broker supports no non-flexible InitProducerId version: {self.api_versions().get(22)}"
        r = self.call(API_INIT_PRODUCER_ID, v, kstring(None) + struct.pack(">i", 60000))
        r.i32()  # throttle
        err, pid, epoch = r.i16(), r.i64(), r.i16()
        assert err == 0, f"InitProducerId error {err}"
        return pid, epoch

    # -- Produce v3..v8 (non-flexible) ---------------------------------------
    def produce(self, topic: str, partition: int, batch: bytes, acks: int = -1) -> dict:
        v = self.pick(API_PRODUCE, 8, 7, 6, 5, 4, 3)
        assert v is not None, f"broker supports no Produce version in 3..8: {self.api_versions().get(0)}"
        body = (
            kstring(None)
            + struct.pack(">hii", acks, 10000, 1)
            + kstring(topic)
            + struct.pack(">ii", 1, partition)
            + struct.pack(">i", len(batch))
            + batch
        )
        r = self.call(API_PRODUCE, v, body)
        assert r.i32() == 1
        assert r.string() == topic
        assert r.i32() == 1
        res = {"partition": r.i32(), "error_code": r.i16(), "base_offset": r.i64(), "log_append_time": r.i64()}
        if v >= 5:
            res["log_start_offset"] = r.i64()
        if v >= 8:  # KIP-467
            res["record_errors"] = [(r.i32(), r.string()) for _ in range(r.i32())]
            res["error_message"] = r.string()
        return res

    # -- Fetch v4..v11 (non-flexible) ----------------------------------------
    def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        max_bytes: int = 1 << 20,
        max_wait_ms: int = 100,
        min_bytes: int = 1,
        partition_max_bytes: int | None = None,
        version: int | None = None,
        rack_id: str = "",
        current_leader_epoch: int = -1,
    ) -> dict:
        """A consumer's Fetch of one partition, at `version` (default: the highest of 4..11 the
        broker serves); `rack_id` is the client's rack (v11+, KIP-392), `current_leader_epoch`
        the leader epoch it believes in (v9+, -1: none)."""
        v = version if version is not None else self.pick(API_FETCH, 11, 10, 9, 8, 7, 6, 5, 4)
        assert v is not None, f"broker supports no Fetch version in 4..11: {self.api_versions().get(1)}"
        assert 4 <= v <= 11, f"Fetch v{v} is not implemented here (non-flexible versions only)"
        # replica id, max wait, min bytes, max bytes, isolation level
        body = struct.pack(">iiiib", -1, max_wait_ms, min_bytes, max_bytes, 0)
        if v >= 7:
            body += struct.pack(">ii", 0, -1)  # session id, session epoch (-1 = full fetch, no session)
        body += struct.pack(">i", 1) + kstring(topic) + struct.pack(">i", 1)
        body += struct.pack(">i", partition)
        if v >= 9:
            body += struct.pack(">i", current_leader_epoch)
        body += struct.pack(">q", offset)
        if v >= 5:
            body += struct.pack(">q", -1)  # log start offset (followers only)
        body += struct.pack(">i", max_bytes if partition_max_bytes is None else partition_max_bytes)
        if v >= 7:
            body += struct.pack(">i", 0)  # forgotten topics
        if v >= 11:
            body += kstring(rack_id)
        r = self.call(API_FETCH, v, body)
        r.i32()  # throttle
        if v >= 7:
            top_err = r.i16()
            r.i32()  # session id
            assert top_err == 0, f"Fetch top-level error {top_err}"
        assert r.i32() == 1
        assert r.string() == topic
        assert r.i32() == 1
        res = {"partition": r.i32(), "error_code": r.i16(), "high_watermark": r.i64()}
        res["last_stable_offset"] = r.i64()
        if v >= 5:
            res["log_start_offset"] = r.i64()
        n_aborted = r.i32()
        for _ in range(max(n_aborted, 0)):
            r.i64(), r.i64()
        res["preferred_read_replica"] = r.i32() if v >= 11 else -1
        res["records"] = r.bytes_() or b""
        return res

    def fetch_all(self, topic: str, partition: int, offset: int = 0, timeout: float = 10.0) -> tuple[dict, list[DecodedRecord]]:
        """Fetch repeatedly from `offset` up to the high watermark (a broker may
        legally return fewer batches than fit in max_bytes)."""
        deadline = time.monotonic() + timeout
        out: list[DecodedRecord] = []
        while True:
            res = self.fetch(topic, partition, offset)
            assert res["error_code"] == 0, f"Fetch error {res['error_code']}"
            recs = [r for r in decode_batches(res["records"]) if r.offset >= offset]
            out.extend(recs)
            if recs:
                offset = recs[-1].offset + 1
            if offset >= res["high_watermark"]:
                return res, out
            assert time.monotonic() < deadline, f"fetch_all stuck at offset {offset}, hw {res['high_watermark']}"

    # -- OffsetForLeaderEpoch v2/v3 (non-flexible) ------------------------------
    def offset_for_leader_epoch(self, topic: str, partition: int, leader_epoch: int, current_leader_epoch: int = -1) -> dict:
        v = self.pick(API_OFFSET_FOR_LEADER_EPOCH, 3, 2)
        assert v is not None, f"broker supports no OffsetForLeaderEpoch v2/v3: {self.api_versions().get(23)}"
        body = struct.pack(">i", -1) if v >= 3 else b""  # replica id: consumer
        body += struct.pack(">i", 1) + kstring(topic) + struct.pack(">i", 1)
        body += struct.pack(">iii", partition, current_leader_epoch, leader_epoch)
        r = self.call(API_OFFSET_FOR_LEADER_EPOCH, v, body)
        r.i32()  # throttle
        assert r.i32() == 1
        assert r.string() == topic
        assert r.i32() == 1
        return {"error_code": r.i16(), "partition": r.i32(), "leader_epoch": r.i32(), "end_offset": r.i64()}
