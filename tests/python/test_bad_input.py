"""Malformed and hostile input on the Kafka port. After each case the broker
must still serve normal clients."""

from __future__ import annotations

import os
import socket
import struct
import time
import uuid

import pytest

from helpers import (
    Broker,
    DeliveryTracker,
    compact_string,
    consume_all,
    create_topic,
    flush_all,
    frame,
    make_admin,
    make_producer,
    raw_connect,
    register_broker,
    read_frame,
    request_header,
    wait_closed,
)
from kwire import Reader

MAX_REQUEST = 1048576
UNSUPPORTED_VERSION = 35


@pytest.fixture(scope="module")
def _bad_input_broker(tmp_path_factory):
    b = Broker(
        tmp_path_factory.mktemp("bad-input"),
        overrides={"socket.request.max.bytes": MAX_REQUEST},
        name="bad-input-broker",
    )
    b.start()
    yield b
    b.kill()


@pytest.fixture
def bb(_bad_input_broker, request):
    register_broker(request.node, _bad_input_broker)
    if not _bad_input_broker.running:
        pytest.fail(f"broker died earlier in this module:\n{_bad_input_broker.log_tail()}")
    yield _bad_input_broker
    # after every case: still alive, healthy, and serving a real client
    assert _bad_input_broker.running, "broker process died"
    assert _bad_input_broker.health() == 200
    _client_round_trip(_bad_input_broker)


def _client_round_trip(b: Broker):
    admin = make_admin(b.bootstrap)
    t = f"after-bad-input-{uuid.uuid4().hex[:8]}"
    create_topic(admin, t, partitions=1)
    tracker = DeliveryTracker()
    p = make_producer(b.bootstrap)
    p.produce(t, value=b"still-works", partition=0, on_delivery=tracker.cb(0))
    flush_all(p, 15)
    assert tracker.acked == {0: (0, 0)}
    assert [r.value for r in consume_all(b.bootstrap, t, [0], timeout=15)[0]] == [b"still-works"]


def _assert_closed(sock: socket.socket, what: str, timeout: float = 5.0):
    closed, _ = wait_closed(sock, timeout)
    sock.close()
    assert closed, f"broker kept the connection open after {what}"


# --------------------------------------------------------------------------
# (a) garbage
# --------------------------------------------------------------------------


def test_http_request_on_kafka_port(bb):
    s = raw_connect(bb)
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")  # size prefix 0x47455420 ~ 1.2 GB
    _assert_closed(s, "an HTTP request")


def test_garbage_frame(bb):
    s = raw_connect(bb)
    s.sendall(frame(b"\xff" * 8))  # api key -1
    _assert_closed(s, "a frame of 0xff bytes")


def test_frame_too_short_for_header(bb):
    s = raw_connect(bb)
    s.sendall(frame(b"\x00\x12\x00"))
    _assert_closed(s, "a 3-byte request")


def test_garbage_body_for_known_api(bb):
    s = raw_connect(bb)
    # Metadata v1 with a topics array length of -256 and nothing else
    s.sendall(frame(request_header(3, 1, 7, "junk", flexible=False) + b"\xff\xff\xff\x00"))
    _assert_closed(s, "a Metadata request with a garbage body")


def test_negative_length(bb):
    s = raw_connect(bb)
    s.sendall(struct.pack(">i", -16) + b"\x00" * 16)
    _assert_closed(s, "a negative length prefix")


def test_disconnect_mid_request(bb):
    s = raw_connect(bb)
    s.sendall(struct.pack(">i", 100) + b"\x00\x12\x00\x00")
    s.close()  # broker must just drop it


# --------------------------------------------------------------------------
# (b) oversized length prefix
# --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0x7FFFFFFF, MAX_REQUEST + 1], ids=["2GiB", "limit+1"])
def test_oversized_length_prefix(bb, size):
    rss_before = bb.rss_kib()
    s = raw_connect(bb)
    s.sendall(struct.pack(">i", size) + b"\x00\x12\x00\x00\x00\x00\x00\x01")
    # the broker must close without waiting for (or buffering) the announced bytes
    _assert_closed(s, f"a length prefix of {size} > socket.request.max.bytes={MAX_REQUEST}", timeout=5)
    rss_after = bb.rss_kib()
    if rss_before and rss_after:
        assert rss_after - rss_before < 200 * 1024, f"RSS grew from {rss_before} KiB to {rss_after} KiB"


def test_produce_request_near_limit_is_accepted(bb):
    """A request just under socket.request.max.bytes must be read and served."""
    t = f"near-limit-{uuid.uuid4().hex[:8]}"
    create_topic(make_admin(bb.bootstrap), t, partitions=1)
    tracker = DeliveryTracker()
    p = make_producer(bb.bootstrap, **{"compression.type": "none", "linger.ms": 0})
    value = os.urandom(MAX_REQUEST - 64 * 1024)
    p.produce(t, value=value, partition=0, on_delivery=tracker.cb(0))
    flush_all(p, 15)
    assert tracker.acked == {0: (0, 0)}, tracker.failed
    [r] = consume_all(bb.bootstrap, t, [0], timeout=15)[0]
    assert r.value == value


# --------------------------------------------------------------------------
# (c) unknown API key
# --------------------------------------------------------------------------


def test_unknown_api_key(bb):
    s = raw_connect(bb)
    s.sendall(frame(request_header(9999, 0, 1, "unknown", flexible=False)))
    _assert_closed(s, "an unknown api key")


def test_unsupported_version_of_other_api(bb):
    """An unsupported version of a non-ApiVersions API: Kafka closes the connection."""
    s = raw_connect(bb)
    s.sendall(frame(request_header(3, 999, 1, "weird", flexible=False)))
    _assert_closed(s, "Metadata v999")


# --------------------------------------------------------------------------
# (d) ApiVersions
# --------------------------------------------------------------------------


def _parse_api_versions_v0(resp: bytes, corr: int) -> tuple[int, dict[int, tuple[int, int]]]:
    r = Reader(resp)
    assert r.i32() == corr, "correlation id not echoed"
    err = r.i16()
    n = r.i32()
    assert 0 <= n < 1000
    keys = {}
    for _ in range(n):
        k, lo, hi = r.i16(), r.i16(), r.i16()
        keys[k] = (lo, hi)
    assert r.remaining() == 0, f"{r.remaining()} trailing bytes in ApiVersions v0 response"
    assert len(resp) == 4 + 2 + 4 + 6 * n
    return err, keys


def test_api_versions_too_new_version_kip511(bb):
    s = raw_connect(bb)
    corr = 0x1234
    hdr = request_header(18, 99, corr, "kip511-test", flexible=True)
    body = compact_string("strata-tests") + compact_string("1.0") + b"\x00"
    s.sendall(frame(hdr + body))
    resp = read_frame(s)
    err, keys = _parse_api_versions_v0(resp, corr)
    assert err == UNSUPPORTED_VERSION
    # Kafka lists (at least) its ApiVersions range so the client can retry with a supported version
    assert 18 in keys, "ApiVersions range missing from the UNSUPPORTED_VERSION response"
    lo, hi = keys[18]
    assert lo == 0 and hi >= 3, keys[18]
    # the connection stays usable: a v0 request now succeeds and agrees on the range
    s.sendall(frame(request_header(18, 0, corr + 1, "kip511-test", flexible=False)))
    err, keys2 = _parse_api_versions_v0(read_frame(s), corr + 1)
    assert err == 0
    assert keys2[18] == keys[18]
    for k in (0, 1, 2, 3):  # Produce, Fetch, ListOffsets, Metadata
        assert k in keys2, f"api key {k} not advertised"
    s.close()


def test_api_versions_v3_flexible(bb):
    """ApiVersions v3: flexible body, but the response header is still v0
    (no tagged-fields byte after the correlation id)."""
    s = raw_connect(bb)
    hdr = request_header(18, 3, 77, "v3-test", flexible=True)
    body = compact_string("strata-tests") + compact_string("1.0") + b"\x00"
    s.sendall(frame(hdr + body))
    resp = read_frame(s)
    s.close()
    r = Reader(resp)
    assert r.i32() == 77
    assert r.i16() == 0, "error code"

    def uvar():
        shift = n = 0
        while True:
            b = resp[r.pos]
            r.pos += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    count = uvar() - 1
    assert 0 < count < 1000, f"implausible api key count {count} (response header v1 by mistake?)"
    keys = {}
    def skip_tagged_fields():
        for _ in range(uvar()):
            uvar()  # tag
            size = uvar()  # (read before moving past it: `r.pos += uvar()` would lose the varint)
            r.pos += size

    for _ in range(count):
        k, lo, hi = r.i16(), r.i16(), r.i16()
        keys[k] = (lo, hi)
        skip_tagged_fields()
    r.i32()  # throttle
    skip_tagged_fields()
    assert r.remaining() == 0, f"{r.remaining()} trailing bytes in ApiVersions v3 response"
    assert 18 in keys and keys[18][1] >= 3
    # the advertised set is coherent: every supported API in the brief is present
    for k in (0, 1, 2, 3, 18, 19, 20, 21, 22, 23, 32, 33, 35, 37, 44, 60, 75):
        assert k in keys, f"api key {k} not advertised"


def test_pipelined_requests_answered_in_order(bb):
    s = raw_connect(bb)
    reqs = b"".join(frame(request_header(18, 0, corr, "pipeline", flexible=False)) for corr in range(10, 20))
    s.sendall(reqs)
    s.settimeout(5)
    corrs = [struct.unpack_from(">i", read_frame(s))[0] for _ in range(10)]
    s.close()
    assert corrs == list(range(10, 20))


def test_request_dribbled_byte_by_byte(bb):
    s = raw_connect(bb)
    data = frame(request_header(18, 0, 5, "slow", flexible=False))
    for i in range(len(data)):
        s.send(data[i : i + 1])
        time.sleep(0.005)  # deliberately fragment the request on the wire
    s.settimeout(5)
    err, keys = _parse_api_versions_v0(read_frame(s), 5)
    s.close()
    assert err == 0 and 18 in keys


def test_many_idle_connections_do_not_block_service(bb):
    socks = [raw_connect(bb) for _ in range(50)]
    try:
        for s in socks[::2]:
            s.sendall(struct.pack(">i", 50))  # half a request, then silence
        _client_round_trip(bb)
    finally:
        for s in socks:
            s.close()
