"""Tenants through the admin HTTP API (issue 17, section 1) against the real binary: a super
user authenticated with HTTP Basic against the SCRAM store creates a tenant and a user of it,
the user logs in over SASL (SCRAM and PLAIN) with librdkafka, and deleting the tenant by force
takes the user with it.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

from confluent_kafka import KafkaException
import pytest

from helpers import make_admin
from test_sasl import AUTHORIZER, sasl_broker


def call(broker, method: str, path: str, body=None, auth=("admin", "admin-secret")):
    """One admin API request; returns the status and the JSON body (None if empty)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(broker.http_url + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text.decode("utf-8", "replace")


def sasl_client(broker, mechanism: str, user: str, password: str) -> dict:
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism,
            "sasl.username": user, "sasl.password": password,
            "bootstrap.servers": f"127.0.0.1:{broker.listener_ports['SASL_PLAINTEXT']}"}


def logs_in(broker, mechanism: str, user: str, password: str) -> bool:
    admin = make_admin(broker.bootstrap, **sasl_client(broker, mechanism, user, password))
    try:
        admin.list_topics(timeout=5)
        return True
    except KafkaException:
        return False


def test_a_super_user_manages_tenants_whose_users_log_in_over_sasl(broker_factory):
    broker = sasl_broker(broker_factory, overrides={**AUTHORIZER, "super.users": "User:admin",
                                                    "allow.everyone.if.no.acl.found": "true"})
    spec = {"name": "acme", "quotas": {"producer_byte_rate": 2000000}, "limits": {"partitions": 100}}
    assert call(broker, "POST", "/v1/tenants", spec, auth=None)[0] == 401
    assert call(broker, "POST", "/v1/tenants", spec, auth=("admin", "wrong"))[0] == 401
    assert call(broker, "GET", "/v1/tenants", auth=("alice", "alice-secret"))[0] == 403

    status, created = call(broker, "POST", "/v1/tenants", spec)
    assert status == 201, created
    assert created["name"] == "acme" and created["id"].startswith("lc-"), created
    status, error = call(broker, "POST", "/v1/tenants", {"name": "bad name"})
    assert status == 400 and "tenant name" in error["error"], error

    user = {"name": "dave", "password": "dave-secret", "mechanism": "SCRAM-SHA-512", "admin": True}
    assert call(broker, "POST", "/v1/tenants/acme/users", user)[0] == 201
    for mechanism in ["SCRAM-SHA-512", "PLAIN"]:
        assert logs_in(broker, mechanism, "dave", "dave-secret"), mechanism
    assert not logs_in(broker, "SCRAM-SHA-512", "dave", "wrong")

    status, described = call(broker, "GET", "/v1/tenants/acme")
    assert status == 200, described
    assert described["users"] == [{"name": "dave", "admin": True}], described
    assert described["limits"] == {"partitions": 100}, described

    assert call(broker, "DELETE", "/v1/tenants/acme?force=true")[0] == 204
    assert call(broker, "GET", "/v1/tenants")[1] == []
    assert not logs_in(broker, "SCRAM-SHA-512", "dave", "dave-secret"), "the user went with its tenant"


@pytest.mark.parametrize("path", ["/v1/tenants", "/v1/tenants/acme"])
def test_without_an_authorizer_the_tenant_api_answers_json(broker, path):
    status, body = call(broker, "GET", path, auth=None)
    assert status in (200, 404), body
    assert isinstance(body, (list, dict)), body


def test_a_tenants_users_share_its_produce_quota(broker_factory):
    from helpers import create_topic, make_producer

    broker = sasl_broker(broker_factory, overrides={"quota.window.num": "3"})
    spec = {"name": "slow", "quotas": {"producer_byte_rate": 50000}}
    assert call(broker, "POST", "/v1/tenants", spec)[0] == 201
    for user in ["erin", "frank"]:
        body = {"name": user, "password": f"{user}-secret"}
        assert call(broker, "POST", "/v1/tenants/slow/users", body)[0] == 201
    topic = "tenant-quota"
    create_topic(make_admin(broker.bootstrap), topic)
    throttled: dict[str, list[float]] = {"erin": [], "frank": []}
    for user in ["erin", "frank"]:
        conf = sasl_client(broker, "SCRAM-SHA-256", user, f"{user}-secret")
        p = make_producer(conf.pop("bootstrap.servers"), **conf,
                          throttle_cb=lambda e, u=user: throttled[u].append(e.throttle_time))
        # 100 KB each, in chunks: together twice the tenant's 2 s burst allowance.
        for chunk in range(4):
            for i in range(25):
                p.produce(topic, value=b"t" * 1000)
            assert p.flush(30) == 0
        p.poll(0)
    assert throttled["frank"] and max(throttled["frank"]) > 0, throttled
    lines = [l for l in broker.metrics().splitlines()
             if l.startswith("strata_quota_usage_total{quota=\"produce\",tenant=\"lc-")]
    assert lines and int(lines[0].split()[-1]) >= 200_000, lines


def test_a_forced_deletion_cut_by_a_crash_finishes_on_restart(broker_factory):
    """Deleting a tenant by force is one metadata batch (its topics, its users' credentials,
    the tenant): killed right after the answer, before its logs are gone from disk, the broker
    comes back without the tenant and removes what is left of its partitions."""
    from helpers import create_topic, make_producer, wait_until

    broker = sasl_broker(broker_factory)
    status, created = call(broker, "POST", "/v1/tenants", {"name": "doomed"})
    assert status == 201, created
    assert call(broker, "POST", "/v1/tenants/doomed/users", {"name": "gina", "password": "gina-secret"})[0] == 201
    topics = [f"{created['id']}_{name}" for name in ["a", "b"]]
    admin = make_admin(broker.bootstrap)
    p = make_producer(broker.bootstrap)
    for topic in topics:
        create_topic(admin, topic, partitions=2)
        for i in range(50):
            p.produce(topic, value=b"x" * 1000, partition=i % 2)
    assert p.flush(30) == 0
    dirs = [broker.partition_dir(t, i) for t in topics for i in range(2)]
    assert all(d.exists() for d in dirs)

    assert call(broker, "DELETE", "/v1/tenants/doomed")[0] == 409, "refused while it holds topics"
    assert call(broker, "DELETE", "/v1/tenants/doomed?force=true")[0] == 204
    broker.kill()
    broker.start()
    assert call(broker, "GET", "/v1/tenants/doomed")[0] == 404
    assert not set(topics) & set(make_admin(broker.bootstrap).list_topics(timeout=10).topics)
    wait_until(lambda: not any(d.exists() for d in dirs), timeout=30, msg="the tenant's logs removed")
    assert not logs_in(broker, "SCRAM-SHA-256", "gina", "gina-secret"), "its user went with it"
