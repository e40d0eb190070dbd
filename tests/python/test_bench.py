"""`strata bench` smoke tests.

They assert only that the bench ran every scenario and produced numbers: speed is judged from
the bench report (docs/performance.md), never by a timed test.
"""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from helpers import make_admin, strata_bin, wait_until

SMALL = [
    "--produce-bytes", "4MiB",
    "--baseline-bytes", "4MiB",
    "--latency-seconds", "1",
    "--rate", "2000",
]


def run_bench(*args: str, timeout: float = 240) -> dict:
    proc = subprocess.run(
        [str(strata_bin()), "bench", "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"strata bench failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def check_throughput(t: dict, records: int) -> None:
    assert t["records"] == records
    assert t["bytes"] == records * 1024
    for key in ("records_per_s", "mb_per_s", "seconds"):
        assert positive(t[key]), (key, t)


@pytest.mark.timeout(300)
def test_bench_all_scenarios_on_a_private_broker(tmp_path):
    report = run_bench(
        *SMALL,
        "--scenarios", "all",
        "--data-dir", str(tmp_path),
        "--idle-partitions", "20",
        "--idle-connections", "200",
        "--startup-bytes", "4MiB",
        "--startup-small-bytes", "1MiB",
        "--noisy-quota", "1MiB",
        "--noisy-seconds", "5",
    )
    assert report["broker"]["private"] is True
    nn = report["noisy_neighbour"]
    assert nn["quota_mb_per_s"] == 1048576 / 1e6
    for side in ("quiet_alone", "quiet_with_noisy"):
        assert nn[side]["count"] == 2000, nn
        assert 0 < nn[side]["p50_ms"] <= nn[side]["p99_ms"], nn
    assert positive(nn["noisy_mb_per_s"]) and positive(nn["p99_with_over_alone"]), nn
    assert report["broker"]["pid"]
    b = report["baseline"]
    for key in ("disk_page_cache_mb_s", "disk_fdatasync_mb_s", "loopback_tcp_mb_s", "memcpy_mb_s"):
        assert positive(b[key]), key
    check_throughput(report["produce"], 4096)
    check_throughput(report["consume"], 4096)
    for phase in ("produce", "consume"):
        t = report[phase]
        assert positive(t["broker_cpu_s_per_gb"]) or t["broker_cpu_s_per_gb"] == 0
        assert positive(t["vs_baseline"]["to_disk_fdatasync"])
        assert positive(t["usage"]["broker_peak_rss_mib"])
    lat = report["latency"]
    assert lat["target_records_per_s"] == 2000
    assert lat["end_to_end"]["count"] == 2000
    assert 0 < lat["end_to_end"]["p50_ms"] <= lat["end_to_end"]["p99_ms"] <= lat["end_to_end"]["max_ms"]
    idle = report["idle_partitions"]
    assert idle["partitions"] == 20 and positive(idle["broker_rss_after_mib"])
    conns = report["idle_connections"]
    assert conns["opened"] == 200 and conns["with"]["count"] > 0
    start = report["startup"]
    assert positive(start["small_start_seconds"]) and positive(start["large_start_seconds"])
    assert start["large_bytes"] == 4 << 20
    check_tiered(report["tiered"], produced=4 << 20)
    check_tls(report["tls"])
    assert report["notes"] == []
    # The bench cleans up after itself: its private broker is gone.
    assert not any(tmp_path.joinpath("bench").glob("**/strata-bench-*-0"))


def check_tls(t: dict) -> None:
    """The tls scenario ran the same loads over SSL and PLAINTEXT; the ratios are the
    measurement (no target is asserted on a shared machine)."""
    for phase in ("plaintext_produce", "ssl_produce", "plaintext_consume", "ssl_consume"):
        check_throughput(t[phase], 4096)
    assert positive(t["produce_ratio"]) and positive(t["consume_ratio"])


def check_tiered(t: dict, produced: int) -> None:
    assert t["object_store"].startswith("file://")
    hot, cold = t["hot"], t["cold"]
    assert hot["bytes"] == produced
    # Most of the tiered topic left local disk, and the cold read came from the tier.
    assert produced // 2 <= cold["bytes"] < produced
    assert t["cold_tier_read_bytes"] >= cold["bytes"]
    for side in (hot, cold):
        assert positive(side["mb_per_s"]) and positive(side["seconds"])
    assert positive(t["cold_over_hot_mb_per_s"])
    assert t["cold_cache_misses"] > 0 and 0 <= t["cold_cache_hit_ratio"] <= 1
    small, large = t["small"], t["large"]
    assert small["bytes_produced"] == produced and large["bytes_produced"] == 10 * produced
    for f in (small, large):
        assert positive(f["local_log_bytes"]) and positive(f["start_seconds"])
        assert f["local_segments"] > 0
    assert large["tier_bytes"] > 5 * small["tier_bytes"] > 0
    # Local retention keeps local disk about the same whatever the tier holds.
    assert t["local_disk_large_over_small"] < 3
    assert positive(t["start_large_over_small"])


@pytest.mark.timeout(60)
def test_bench_tiered_scenario(tmp_path):
    report = run_bench(
        "--scenarios", "tiered",
        "--data-dir", str(tmp_path),
        "--produce-bytes", "4MiB",
        "--partitions", "2",
        # Uploads settle within a few passes of 100 ms.
        "--broker-override", "remote.log.manager.task.interval.ms=100",
        timeout=55,
    )
    assert report["notes"] == []
    t = report["tiered"]
    assert t["partitions"] == 2
    check_tiered(t, produced=4 << 20)
    assert "produce" not in report and "startup" not in report
    # The tiered brokers' data (local logs and the tier) is gone.
    assert not list(tmp_path.glob("tiered-*"))


@pytest.mark.timeout(60)
def test_bench_tls_scenario_needs_its_own_broker(broker):
    report = run_bench("--bootstrap", broker.bootstrap, "--scenarios", "tls", timeout=55)
    assert "tls" not in report
    assert any(n.startswith("tls: needs a private broker") for n in report["notes"]), report["notes"]


def test_bench_tiered_scenario_needs_its_own_brokers(broker):
    report = run_bench("--bootstrap", broker.bootstrap, "--scenarios", "tiered", timeout=55)
    assert "tiered" not in report
    assert any(n.startswith("tiered: skipped") for n in report["notes"]), report["notes"]


@pytest.mark.timeout(120)
def test_bench_against_a_running_broker_finds_its_process(broker):
    report = run_bench(
        *SMALL,
        "--bootstrap", broker.bootstrap,
        "--scenarios", "produce,consume,latency",
    )
    assert report["broker"]["private"] is False
    assert report["broker"]["pid"] == broker.pid
    check_throughput(report["produce"], 4096)
    check_throughput(report["consume"], 4096)
    assert positive(report["produce"]["usage"]["broker_cpu_seconds"]) or report["produce"]["usage"]["broker_cpu_seconds"] == 0
    # Its topics were deleted afterwards.
    admin = make_admin(broker.bootstrap)
    wait_until(
        lambda: not [t for t in admin.list_topics(timeout=5).topics if t.startswith("strata-bench")],
        timeout=15,
        msg="bench topics deleted",
    )


def test_bench_rejects_bad_options():
    proc = subprocess.run(
        [str(strata_bin()), "bench", "--record-size", "12XB"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "unknown size unit" in proc.stderr


@pytest.mark.timeout(60)
def test_bench_reports_an_unreachable_broker(tmp_path):
    proc = subprocess.run(
        [
            str(strata_bin()), "bench", "--bootstrap", "127.0.0.1:1",
            "--scenarios", "produce", "--produce-bytes", "1MiB",
            "-X", "socket.connection.setup.timeout.ms=2000",
            "-X", "topic.metadata.refresh.interval.ms=500",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "cannot create topic" in proc.stderr or "Error" in proc.stderr
