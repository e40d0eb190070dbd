"""ACLs and the StandardAuthorizer (issue 16, section 4) with real clients.

On PLAINTEXT every client is `User:ANONYMOUS`. Creating ACLs needs ALTER on the cluster, so each
test says how its client gets it: as a super user (the admin-API test), or through
`allow.everyone.if.no.acl.found=true` while no ACL names the cluster (the enforcement test,
whose denials then come from ACLs on the topics themselves).
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaError
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePattern,
    ResourcePatternFilter,
)
from kafka.admin import ResourceType as KpResourceType

from helpers import DeliveryTracker, create_topic, make_admin, make_consumer, make_producer

AUTHORIZER = {"authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer"}


def kp_acl(principal: str, topic: str, op: ACLOperation, permission: ACLPermissionType,
           pattern: ACLResourcePatternType = ACLResourcePatternType.LITERAL) -> ACL:
    return ACL(principal=principal, host="*", operation=op, permission_type=permission,
               resource_pattern=ResourcePattern(KpResourceType.TOPIC, topic, pattern))


def test_kafka_python_admin_creates_describes_and_deletes_acls(broker_factory):
    broker = broker_factory(overrides={**AUTHORIZER, "super.users": "User:ANONYMOUS"})
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        read_alice = kp_acl("User:alice", "orders", ACLOperation.READ, ACLPermissionType.ALLOW)
        deny_bob = kp_acl("User:bob", "ord", ACLOperation.WRITE, ACLPermissionType.DENY,
                          ACLResourcePatternType.PREFIXED)
        created = admin.create_acls([read_alice, deny_bob])
        assert len(created["succeeded"]) == 2 and not created["failed"], created

        everything = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                               permission_type=ACLPermissionType.ANY,
                               resource_pattern=ResourcePatternFilter(KpResourceType.ANY, None,
                                                                      ACLResourcePatternType.ANY))
        acls, error = admin.describe_acls(everything)
        assert error.errno == 0, error
        assert {(a.principal, a.resource_pattern.resource_name, a.resource_pattern.pattern_type,
                 a.operation, a.permission_type) for a in acls} == {
            ("User:alice", "orders", ACLResourcePatternType.LITERAL, ACLOperation.READ, ACLPermissionType.ALLOW),
            ("User:bob", "ord", ACLResourcePatternType.PREFIXED, ACLOperation.WRITE, ACLPermissionType.DENY),
        }

        # MATCH: every ACL that applies to the topic `orders`: the literal and the prefixed one.
        applying = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                             permission_type=ACLPermissionType.ANY,
                             resource_pattern=ResourcePatternFilter(KpResourceType.TOPIC, "orders",
                                                                    ACLResourcePatternType.MATCH))
        acls, _ = admin.describe_acls(applying)
        assert len(acls) == 2, acls
        acls, _ = admin.describe_acls(ACLFilter(
            principal=None, host=None, operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY,
            resource_pattern=ResourcePatternFilter(KpResourceType.TOPIC, "payments", ACLResourcePatternType.MATCH)))
        assert acls == [], acls

        by_bob = ACLFilter(principal="User:bob", host=None, operation=ACLOperation.ANY,
                           permission_type=ACLPermissionType.ANY,
                           resource_pattern=ResourcePatternFilter(KpResourceType.ANY, None,
                                                                  ACLResourcePatternType.ANY))
        [(_, deleted, error)] = admin.delete_acls([by_bob])
        assert error.errno == 0, error
        assert [(a.principal, a.resource_pattern.resource_name) for a in deleted] == [("User:bob", "ord")]
        acls, _ = admin.describe_acls(everything)
        assert [a.principal for a in acls] == ["User:alice"], acls
    finally:
        admin.close()


def produce_outcome(bootstrap: str, topic: str) -> KafkaError | None:
    p = make_producer(bootstrap, **{"message.timeout.ms": 10000})
    t = DeliveryTracker()
    p.produce(topic, value=b"v", on_delivery=t.cb(0))
    p.flush(15)
    assert t.done == 1, "the delivery report came"
    return t.failed.get(0)


def consume_outcome(bootstrap: str, topic: str, timeout: float = 15.0) -> KafkaError | bytes:
    """The first record or error a consumer of `topic` sees: subscribed in a group of its own
    (librdkafka reports a subscribed topic it may not describe, and a refused fetch, as
    consumer errors)."""
    c = make_consumer(bootstrap, **{"group.id": f"acl-{topic}-{time.monotonic_ns()}",
                                    "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return msg.error()
            return msg.value()
        raise AssertionError(f"nothing consumed from {topic} within {timeout}s")
    finally:
        c.close()


def test_acls_allow_and_deny_produce_and_consume_for_anonymous(broker_factory):
    # allow.everyone.if.no.acl.found: the cluster (no ACL names it) lets the test's client
    # create ACLs; a topic with ACLs is decided by them alone.
    broker = broker_factory(overrides={**AUTHORIZER, "allow.everyone.if.no.acl.found": "true"})
    bs = broker.bootstrap
    admin = make_admin(bs)
    for topic in ("open", "closed", "granted", "others", "write-only"):
        create_topic(admin, topic)
    anonymous = "User:ANONYMOUS"

    def binding(topic: str, principal: str, op: AclOperation, permission: AclPermissionType) -> AclBinding:
        return AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, principal, "*", op, permission)

    futures = admin.create_acls([
        binding("closed", anonymous, AclOperation.WRITE, AclPermissionType.DENY),
        binding("closed", anonymous, AclOperation.READ, AclPermissionType.DENY),
        binding("granted", anonymous, AclOperation.WRITE, AclPermissionType.ALLOW),
        binding("granted", "User:*", AclOperation.READ, AclPermissionType.ALLOW),
        binding("others", "User:bob", AclOperation.ALL, AclPermissionType.ALLOW),
        binding("write-only", anonymous, AclOperation.WRITE, AclPermissionType.ALLOW),
    ])
    for f in futures.values():
        f.result(timeout=15)
    found = admin.describe_acls(AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
        AclPermissionType.ANY)).result(timeout=15)
    assert len(found) == 6, found

    # No ACL on `open`: everyone may. ALLOWs on `granted`: produce and consume.
    assert produce_outcome(bs, "open") is None
    assert consume_outcome(bs, "open") == b"v"
    assert produce_outcome(bs, "granted") is None
    assert consume_outcome(bs, "granted") == b"v"
    # DENYs on `closed`; on `others` ACLs exist for bob only, so ANONYMOUS matches none.
    for topic in ("closed", "others"):
        err = produce_outcome(bs, topic)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (topic, err)
        err = consume_outcome(bs, topic)
        assert isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (topic, err)

    # WRITE implies DESCRIBE, not READ: the topic is visible and takes records, and the fetch
    # itself is refused.
    assert produce_outcome(bs, "write-only") is None
    err = consume_outcome(bs, "write-only")
    assert isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err

    # Metadata lists only what ANONYMOUS may DESCRIBE.
    listed = set(admin.list_topics(timeout=10).topics)
    assert {"open", "granted", "write-only"} <= listed and not {"closed", "others"} & listed, listed

    # Deleting both DENYs leaves no ACL on `closed`: allow.everyone.if.no.acl.found applies.
    deleted = admin.delete_acls([AclBindingFilter(
        ResourceType.TOPIC, "closed", ResourcePatternType.LITERAL, anonymous, "*", AclOperation.ANY,
        AclPermissionType.DENY)])
    [matched] = [f.result(timeout=15) for f in deleted.values()]
    assert len(matched) == 2, matched
    assert produce_outcome(bs, "closed") is None, "no ACL left on the topic: allow.everyone applies"
