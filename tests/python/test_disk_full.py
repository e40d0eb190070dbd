"""A full disk: produce gets KAFKA_STORAGE_ERROR, the broker stays up, and every
record acknowledged before (and after) the disk filled is read back intact.

The data directory lives on a small tmpfs mounted for the test (needs root, as
in CI); the test skips where mounting is not allowed.
"""

from __future__ import annotations

import subprocess

import pytest

import kwire
from helpers import Broker, consume_all, create_topic, make_admin, register_broker

KAFKA_STORAGE_ERROR = 56
FS_SIZE = "3m"
BALLAST_BYTES = 768 * 1024


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.timeout(90)
def test_disk_full_is_a_storage_error_and_loses_nothing(tmp_path, small_fs, topic, request):
    # One offsets partition: the consumers below create __consumer_offsets on the small disk.
    broker = Broker(tmp_path / "broker", overrides={"offsets.topic.num.partitions": 1, "transaction.state.log.num.partitions": 1})
    broker.data_dir = small_fs / "data"  # the broker's own log stays on the big disk
    # Space an operator can free later, as one would after a full-disk alert.
    ballast = small_fs / "ballast"
    ballast.write_bytes(b"\0" * BALLAST_BYTES)
    register_broker(request.node, broker)
    broker.start()
    try:
        create_topic(make_admin(broker.bootstrap), topic, partitions=1)
        acked: list[tuple[int, bytes]] = []  # (base offset, value) per acknowledged batch
        errors: list[int] = []
        value = b"v" * 16_000
        with kwire.RawConn("127.0.0.1", broker.port) as conn:
            # 3 MiB of tmpfs holds fewer than 200 such batches; stop at the first refusals.
            for i in range(400):
                batch = kwire.record_batch([(b"%d" % i, value)])
                res = conn.produce(topic, 0, batch, acks=-1)
                if res["error_code"] == 0:
                    acked.append((res["base_offset"], b"%d" % i))
                else:
                    errors.append(res["error_code"])
                    if len(errors) >= 5:
                        break
        assert errors, "the disk never filled up; the test proves nothing"
        assert set(errors) == {KAFKA_STORAGE_ERROR}, f"expected only KAFKA_STORAGE_ERROR, got {set(errors)}"
        assert len(acked) > 10
        assert broker.running and broker.health() == 200, "broker went down on a full disk"
        assert "strata_storage_errors_total 0" not in broker.metrics()

        # Acknowledged offsets are contiguous and all of them read back intact.
        offsets = [o for o, _ in acked]
        assert offsets == list(range(len(acked))), "acknowledged offsets have gaps or repeats"
        recs = consume_all(broker.bootstrap, topic, [0], timeout=30)[0]
        assert [(r.offset, r.key) for r in recs] == acked
        assert all(r.value == value for r in recs)

        # A crash on the full disk loses nothing acknowledged either: once space is freed,
        # the restarted broker serves every acknowledged record.
        broker.kill()
        ballast.unlink()
        broker.start()
        recs = consume_all(broker.bootstrap, topic, [0], timeout=30)[0]
        assert [(r.offset, r.key) for r in recs] == acked
    finally:
        broker.kill()
