"""Admin HTTP endpoint: /health and /metrics."""

from __future__ import annotations

import re

from helpers import create_topic, flush_all, make_admin, make_producer

LINE_RE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})?\s+(?P<value>[-+]?(\d+(\.\d*)?([eE][-+]?\d+)?|\.\d+|NaN|[+-]?Inf))(\s+-?\d+)?$"
)


def parse_metrics(text: str) -> dict[str, float]:
    series = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = LINE_RE.match(line)
        assert m, f"not valid Prometheus exposition format: {line!r}"
        series[m.group("name") + (m.group("labels") or "")] = float(m.group("value"))
    return series


def test_health(shared_broker):
    status, body, _ = shared_broker.http_get("/health")
    assert status == 200


def test_unknown_path_is_404(shared_broker):
    status, _, _ = shared_broker.http_get("/definitely-not-here")
    assert status == 404


def test_metrics_format_and_counters(shared_broker, topic):
    status, body, headers = shared_broker.http_get("/metrics")
    assert status == 200
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    assert ctype.startswith("text/plain"), ctype
    before = parse_metrics(body)
    assert before, "no metrics exposed"
    assert re.search(r"^# TYPE \S+ counter$", body, re.M), "no counter declared with # TYPE"

    create_topic(make_admin(shared_broker.bootstrap), topic, partitions=1)
    p = make_producer(shared_broker.bootstrap)
    for i in range(100):
        p.produce(topic, value=b"x" * 100, partition=0)
    flush_all(p)

    after = parse_metrics(shared_broker.metrics())
    grew = {k: (before.get(k, 0.0), v) for k, v in after.items() if v > before.get(k, 0.0)}
    produce_related = {k: v for k, v in grew.items() if re.search(r"produc|request|message|record|bytes_in|bytes", k, re.I)}
    assert produce_related, f"no produce-related counter increased; grew: {sorted(grew)[:30]}"
