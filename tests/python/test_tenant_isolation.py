"""Tenants' name spaces (issue 17, section 2) with real clients: two tenants each have a
topic `orders`, a group `g` and a transactional id `tx`, and neither sees, reads, writes or
fences the other's. Each sees its own logical cluster id, its own ACLs with its own names, and
is refused the physical cluster's APIs. A super user outside every tenant sees the physical
cluster, where the tenants' resources carry their internal names `<tenant-id>_<name>`.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ConfigResource,
    ResourcePatternType,
    ResourceType,
)
import pytest

from helpers import Broker, create_topic, make_admin, make_consumer, make_producer, register_broker, wait_until
from test_java_client import java_check_classpath  # noqa: F401 - the fixture
from test_sasl import AUTHORIZER, MECHANISMS, add_scram, run_sasl_check
from test_tenants import call, sasl_client

PASSWORD = "tenant-secret"


@pytest.fixture(scope="module")
def _tenants(tmp_path_factory):
    """A broker with an authorizer (deny by default) and two tenants, acme and globex, each
    with an admin user; acme also has `acme-app`, an ordinary user. Shared by the module."""
    overrides = {**AUTHORIZER, "super.users": "User:admin", "sasl.enabled.mechanisms": MECHANISMS,
                 "sasl.plain.allow.plaintext": "true"}
    broker = Broker(tmp_path_factory.mktemp("tenants"), name="tenants", overrides=overrides,
                    listeners=["PLAINTEXT", "SASL_PLAINTEXT"], extra_args=add_scram())
    try:
        broker.start()
    except BaseException:
        broker.kill()
        raise
    ids = {}
    for name in ["acme", "globex"]:
        status, created = call(broker, "POST", "/v1/tenants", {"name": name})
        assert status == 201, created
        ids[name] = created["id"]
        user = {"name": f"{name}-admin", "password": PASSWORD, "admin": True}
        assert call(broker, "POST", f"/v1/tenants/{name}/users", user)[0] == 201
    app = {"name": "acme-app", "password": PASSWORD}
    assert call(broker, "POST", "/v1/tenants/acme/users", app)[0] == 201
    tiny = {"name": "tiny", "limits": {"topics": 2, "partitions": 3,
                                       "max_retention_ms": 86_400_000, "max_message_bytes": 100_000}}
    status, created = call(broker, "POST", "/v1/tenants", tiny)
    assert status == 201, created
    ids["tiny"] = created["id"]
    user = {"name": "tiny-admin", "password": PASSWORD, "admin": True}
    assert call(broker, "POST", "/v1/tenants/tiny/users", user)[0] == 201
    yield broker, ids
    broker.close()


@pytest.fixture
def tenants(_tenants, request):
    register_broker(request.node, _tenants[0])
    if not _tenants[0].running:
        pytest.fail(f"the tenants' broker died earlier in this module:\n{_tenants[0].log_tail()}")
    return _tenants


def conf(broker, user: str) -> dict:
    password = "admin-secret" if user == "admin" else PASSWORD
    c = sasl_client(broker, "SCRAM-SHA-256", user, password)
    return {"bootstrap": c.pop("bootstrap.servers"), **c}


def admin_of(broker, user: str):
    c = conf(broker, user)
    return make_admin(c.pop("bootstrap"), **c)


def producer_of(broker, user: str, **extra) -> Producer:
    c = conf(broker, user)
    return make_producer(c.pop("bootstrap"), **c, **extra)


def consumer_of(broker, user: str, group: str, **extra):
    c = conf(broker, user)
    return make_consumer(c.pop("bootstrap"), **c, **{"group.id": group, **extra})


def consume(consumer, n: int, timeout: float = 30) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    return got


def ensure_topic(admin, name: str, partitions: int) -> None:
    if name not in admin.list_topics(timeout=10).topics:
        create_topic(admin, name, partitions)


def test_two_tenants_each_have_their_own_orders(tenants):
    broker, ids = tenants
    for tenant, partitions in [("acme", 2), ("globex", 3)]:
        admin = admin_of(broker, f"{tenant}-admin")
        ensure_topic(admin, "orders", partitions)
        md = admin.list_topics(timeout=10)
        assert set(md.topics) == {"orders"}, md.topics  # no other tenant's, no internal topic
        assert len(md.topics["orders"].partitions) == partitions
        assert md.cluster_id == ids[tenant]
        assert admin.describe_cluster().result(timeout=10).cluster_id == ids[tenant]
        p = producer_of(broker, f"{tenant}-admin")
        for i in range(5):
            p.produce("orders", value=f"{tenant}-{i}".encode())
        assert p.flush(30) == 0

    for tenant in ["acme", "globex"]:
        c = consumer_of(broker, f"{tenant}-admin", "g", **{"enable.auto.commit": True})
        c.subscribe(["orders"])
        got = consume(c, 5)
        assert sorted(got) == [f"{tenant}-{i}".encode() for i in range(5)], got
        c.close()

    # The physical cluster, to a super user: both tenants' topics under their internal names.
    physical = admin_of(broker, "admin")
    names = set(physical.list_topics(timeout=10).topics)
    assert {f"{ids['acme']}_orders", f"{ids['globex']}_orders"} <= names, names
    assert physical.list_topics(timeout=10).cluster_id not in ids.values()


def test_a_tenant_cannot_reach_another_tenants_topic_by_its_internal_name(tenants):
    broker, ids = tenants
    ensure_topic(admin_of(broker, "globex-admin"), "orders", 3)
    internal = f"{ids['globex']}_orders"
    md = admin_of(broker, "acme-admin").list_topics(internal, timeout=10)
    # The name is taken as one in acme's own space: unknown there, or auto-created there
    # (acme's admin may create topics), never globex's three partitions.
    topic = md.topics[internal]
    if topic.error is not None:
        assert topic.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, topic.error
    else:
        assert len(topic.partitions) == 1, topic
        physical = admin_of(broker, "admin").list_topics(timeout=10).topics
        assert f"{ids['acme']}_{internal}" in physical, sorted(physical)


def test_groups_and_offsets_are_per_tenant(tenants):
    broker, ids = tenants
    group = f"g-{uuid.uuid4().hex[:6]}"
    for tenant, n in [("acme", 1), ("globex", 2)]:
        admin = admin_of(broker, f"{tenant}-admin")
        ensure_topic(admin, "orders", 2 if tenant == "acme" else 3)
        p = producer_of(broker, f"{tenant}-admin")
        for i in range(n):
            p.produce("orders", value=b"x", partition=0)
        assert p.flush(30) == 0
        c = consumer_of(broker, f"{tenant}-admin", group, **{"enable.auto.offset.store": True})
        c.subscribe(["orders"])
        assert len(consume(c, n)) >= n
        c.commit(asynchronous=False)
        c.close()

    for tenant in ["acme", "globex"]:
        admin = admin_of(broker, f"{tenant}-admin")
        listed = admin.list_consumer_groups().result(timeout=15)
        ids_seen = {g.group_id for g in listed.valid}
        assert group in ids_seen and all(not g.startswith("lc-") for g in ids_seen), ids_seen
        described = admin.describe_consumer_groups([group])[group].result(timeout=15)
        assert described.group_id == group

    physical_admin = admin_of(broker, "admin")
    physical = {g.group_id for g in physical_admin.list_consumer_groups().result(timeout=15).valid}
    assert {f"{ids['acme']}_{group}", f"{ids['globex']}_{group}"} <= physical, physical


def test_transactional_ids_do_not_fence_across_tenants(tenants):
    broker, _ = tenants
    producers = {}
    for tenant in ["acme", "globex"]:
        ensure_topic(admin_of(broker, f"{tenant}-admin"), "orders", 2 if tenant == "acme" else 3)
        p = producer_of(broker, f"{tenant}-admin", **{"transactional.id": "tx"})
        p.init_transactions(30)
        producers[tenant] = p
    # globex initialised the same transactional id after acme: in one name space that would
    # have fenced acme's producer. Both still commit.
    for tenant, p in producers.items():
        p.begin_transaction()
        p.produce("orders", value=f"txn-{tenant}".encode())
        p.commit_transaction(30)


def test_acls_are_the_tenants_own(tenants):
    broker, ids = tenants
    acme = admin_of(broker, "acme-admin")
    ensure_topic(acme, "orders", 2)
    read_orders = AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL,
                             "User:acme-app", "*", AclOperation.READ, AclPermissionType.ALLOW)
    read_groups = AclBinding(ResourceType.GROUP, "*", ResourcePatternType.LITERAL,
                             "User:acme-app", "*", AclOperation.READ, AclPermissionType.ALLOW)
    for f in acme.create_acls([read_orders, read_groups]).values():
        f.result(timeout=15)

    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    mine = acme.describe_acls(everything).result(timeout=15)
    assert {(b.restype, b.name, b.resource_pattern_type) for b in mine} == {
        (ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL),
        (ResourceType.GROUP, "*", ResourcePatternType.LITERAL),
    }, mine
    globex = admin_of(broker, "globex-admin")
    assert globex.describe_acls(everything).result(timeout=15) == []
    physical_admin = admin_of(broker, "admin")
    physical = physical_admin.describe_acls(everything).result(timeout=15)
    assert {(b.name, b.resource_pattern_type) for b in physical} >= {
        (f"{ids['acme']}_orders", ResourcePatternType.LITERAL),
        (f"{ids['acme']}_", ResourcePatternType.PREFIXED),
    }, physical

    # acme-app may read orders in any group of acme's, and nothing else.
    p = producer_of(broker, "acme-admin")
    p.produce("orders", value=b"for-app")
    assert p.flush(30) == 0
    c = consumer_of(broker, "acme-app", "app-group")
    c.subscribe(["orders"])
    assert b"for-app" in consume(c, 100, timeout=15)
    c.close()
    errors = []
    app = producer_of(broker, "acme-app", **{"message.timeout.ms": 5000},
                      error_cb=lambda e: errors.append(e))
    delivered = []
    app.produce("orders", value=b"no", on_delivery=lambda e, m: delivered.append(e))
    app.flush(15)
    assert delivered and delivered[0] is not None and delivered[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, delivered
    app_admin = admin_of(broker, "acme-app")
    denied = app_admin.create_acls([read_orders])[read_orders]
    with pytest.raises(KafkaException) as e:
        denied.result(timeout=15)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED

    # Another tenant's user cannot be named in acme's ACLs.
    foreign = AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL,
                         "User:globex-admin", "*", AclOperation.READ, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException):
        acme.create_acls([foreign])[foreign].result(timeout=15)

    # Deleting by the tenant's names deletes the tenant's bindings only.
    by_name = AclBindingFilter(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, None, None,
                               AclOperation.ANY, AclPermissionType.ANY)
    deleted = acme.delete_acls([by_name])[by_name].result(timeout=15)
    assert [(b.name, b.principal) for b in deleted] == [("orders", "User:acme-app")], deleted


def test_the_physical_clusters_apis_are_refused_to_tenants(tenants):
    broker, _ = tenants
    acme = admin_of(broker, "acme-admin")
    with pytest.raises(KafkaException) as e:
        acme.describe_configs([ConfigResource(ResourceType.BROKER, "1")])[
            ConfigResource(ResourceType.BROKER, "1")].result(timeout=15)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED, e.value
    # The cluster's log dirs and quorum, asked with kafka-python.
    from kafka import KafkaAdminClient
    from test_sasl import sasl_conf

    kp = KafkaAdminClient(**sasl_conf(broker, "SCRAM-SHA-256", "acme-admin", PASSWORD))
    try:
        # kafka-python keeps DescribeLogDirs' top-level error to itself: no dirs is the sign.
        assert all(not b["log_dirs"] for b in kp.describe_log_dirs()), "no log dirs"
        with pytest.raises(Exception) as e:
            kp.describe_metadata_quorum()
        assert "ClusterAuthorizationFailed" in repr(e.value), repr(e.value)
    finally:
        kp.close()


def test_a_tenant_admin_manages_its_own_users_credentials(tenants):
    """AlterUserScramCredentials and DescribeUserScramCredentials, through kafka-python (a
    refusal of the latter crashes confluent-kafka 2.16), reach only the tenant's users."""
    from kafka import KafkaAdminClient
    from kafka.admin import ScramMechanism, UserScramCredentialUpsertion

    from test_sasl import sasl_conf

    broker, ids = tenants
    kp = KafkaAdminClient(**sasl_conf(broker, "SCRAM-SHA-256", "acme-admin", PASSWORD))
    try:
        described = kp.describe_user_scram_credentials()
        assert sorted(described) == ["acme-admin", "acme-app"], described
        foreign = kp.describe_user_scram_credentials(["globex-admin"])
        assert foreign["globex-admin"]["error"] and not foreign["globex-admin"]["credential_infos"], foreign
        upsert = lambda user: UserScramCredentialUpsertion(user, ScramMechanism.SCRAM_SHA_512, "rotated-secret")
        kp.alter_user_scram_credentials([upsert("acme-app")])
        refused = kp.alter_user_scram_credentials([upsert("globex-admin")])
        assert "ClusterAuthorization" in repr(refused), refused
    finally:
        kp.close()
    rotated = sasl_client(broker, "SCRAM-SHA-512", "acme-app", "rotated-secret")
    app = make_admin(rotated.pop("bootstrap.servers"), **rotated)
    assert app.list_topics(timeout=10).cluster_id == ids["acme"], "logged in with the new password"
    globex = admin_of(broker, "globex-admin")
    assert globex.list_topics(timeout=10).cluster_id == ids["globex"], "globex's password unchanged"


@pytest.mark.timeout(90)
def test_regex_subscriptions_match_only_the_tenants_topics(tenants):
    broker, _ = tenants
    for tenant in ["acme", "globex"]:
        admin = admin_of(broker, f"{tenant}-admin")
        ensure_topic(admin, f"rx-{tenant}", 1)
        p = producer_of(broker, f"{tenant}-admin")
        p.produce(f"rx-{tenant}", value=tenant.encode())
        assert p.flush(30) == 0
    for protocol in ["classic", "consumer"]:
        c = consumer_of(broker, "acme-admin", f"rx-{protocol}", **{"group.protocol": protocol})
        c.subscribe(["^rx-.*"])
        wait_until(lambda: consume(c, 1, timeout=1) or c.assignment(), timeout=30,
                   msg=f"{protocol} regex assignment")
        assert {tp.topic for tp in c.assignment()} == {"rx-acme"}, c.assignment()
        c.close()


def test_kafka_python_sees_the_tenants_world(tenants):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    from test_sasl import sasl_conf

    broker, _ = tenants
    kconf = sasl_conf(broker, "SCRAM-SHA-256", "globex-admin", PASSWORD)
    ensure_topic(admin_of(broker, "globex-admin"), "orders", 3)
    admin = KafkaAdminClient(**kconf)
    assert "orders" in admin.list_topics() and all(not t.startswith("__") for t in admin.list_topics())
    producer = KafkaProducer(**kconf)
    producer.send("orders", b"from-kafka-python").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer("orders", group_id="kp", auto_offset_reset="earliest",
                             consumer_timeout_ms=10000, **kconf)
    values = [m.value for m in consumer]
    consumer.close()
    admin.close()
    assert b"from-kafka-python" in values and not any(v.startswith(b"acme") for v in values), values


def test_limits_are_refused_with_policy_violation(tenants):
    from confluent_kafka.admin import NewPartitions, NewTopic

    broker, _ = tenants
    tiny = admin_of(broker, "tiny-admin")

    def create(name, partitions, config=None):
        return tiny.create_topics([NewTopic(name, partitions, config=config or {})])[name]

    create("one", 2).result(timeout=15)
    for future, why in [
        (create("two", 2), "3 partitions at most"),
        (create("two", 1, {"retention.ms": "-1"}), "infinite retention"),
        (create("two", 1, {"retention.ms": "86400001"}), "retention above the limit"),
        (create("two", 1, {"max.message.bytes": "200000"}), "message size above the limit"),
        (tiny.create_partitions([NewPartitions("one", 4)])["one"], "grown past 3 partitions"),
    ]:
        with pytest.raises(KafkaException) as e:
            future.result(timeout=15)
        error = e.value.args[0]
        assert error.code() == KafkaError.POLICY_VIOLATION, (why, error)
        assert "tiny" in error.str(), (why, error)
    create("two", 1, {"retention.ms": "3600000"}).result(timeout=15)
    with pytest.raises(KafkaException) as e:
        create("three", 0 + 1).result(timeout=15)
    assert e.value.args[0].code() == KafkaError.POLICY_VIOLATION, "a third topic"
    resource = ConfigResource(ResourceType.TOPIC, "two", set_config={"retention.ms": "-1"})
    with pytest.raises(KafkaException) as e:
        tiny.alter_configs([resource])[resource].result(timeout=15)
    assert e.value.args[0].code() == KafkaError.POLICY_VIOLATION


def test_a_tenants_connections_are_limited_and_its_metrics_labelled(tenants):
    """A tenant that may hold two connections: a third, authenticated, is closed, and a place
    is taken again once one closes. The tenant is this test's alone, and the wire client opens
    exactly the connections the test counts (a librdkafka client left over from another test
    would reconnect into a freed place)."""
    from versioned_wire import ConnectionClosed, VersionedClient

    broker, ids = tenants
    status, created = call(broker, "POST", "/v1/tenants", {"name": "conns", "limits": {"connections": 2}})
    assert status == 201, created
    user = {"name": "conns-user", "password": PASSWORD}
    assert call(broker, "POST", "/v1/tenants/conns/users", user)[0] == 201
    port = broker.listener_ports["SASL_PLAINTEXT"]
    metadata = {"topics": [], "allow_auto_topic_creation": False,
                "include_topic_authorized_operations": False}

    def login():
        c = VersionedClient("127.0.0.1", port)
        assert c.call(17, 1, {"mechanism": "PLAIN"}).error_code == 0
        assert c.call(36, 2, {"auth_bytes": b"\0conns-user\0" + PASSWORD.encode()}).error_code == 0
        return c

    def served(c) -> bool:
        try:
            return c.call(3, 12, metadata).cluster_id == created["id"]
        finally:
            c.close()

    first, second = login(), login()
    assert first.call(3, 12, metadata).cluster_id == created["id"]
    third = login()
    with pytest.raises(ConnectionClosed):
        third.call(3, 12, metadata)
    third.close()
    second.close()
    wait_until(lambda: served(login()), timeout=15, ignore=(ConnectionClosed, OSError, AssertionError),
               msg="a freed place is taken again")
    first.close()

    text = broker.metrics()
    tenant = ids["acme"]
    for name in ["strata_tenant_requests_total", "strata_tenant_bytes_in_total",
                 "strata_tenant_bytes_out_total", "strata_tenant_partitions"]:
        values = [int(l.split()[-1]) for l in text.splitlines()
                  if l.startswith(f'{name}{{tenant="{tenant}"}}')]
        assert values and values[0] > 0, (name, values)


@pytest.mark.timeout(300)
def test_the_java_client_works_inside_a_tenant(tenants, java_check_classpath):
    """kafka-clients 4.x as a tenant's user: its Admin, an idempotent producer and a group
    consumer (tests/java SaslCheck), all inside the tenant's name space."""
    broker, ids = tenants
    addr = f"127.0.0.1:{broker.listener_ports['SASL_PLAINTEXT']}"
    run_sasl_check(java_check_classpath, addr, "SCRAM-SHA-256", "globex-admin", PASSWORD, "0")
    physical = admin_of(broker, "admin").list_topics(timeout=10).topics
    assert any(t.startswith(f"{ids['globex']}_") and t != f"{ids['globex']}_orders" for t in physical), sorted(physical)
