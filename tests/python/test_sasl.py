"""SASL (issue 16, section 3) with real clients: SaslHandshake and SaslAuthenticate (KIP-152)
on SASL_PLAINTEXT and SASL_SSL listeners, SCRAM-SHA-256/512 and PLAIN checked against the one
credential store, failed logins, re-authentication (KIP-368), and SASL principals under the
StandardAuthorizer.

Users come from `strata serve --add-scram`; PLAIN on a SASL_PLAINTEXT listener needs
`sasl.plain.allow.plaintext=true`, since it sends the password itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException

from helpers import BrokerStartError, make_admin, make_consumer, make_producer, round_trip, wait_until
from test_java_client import java_check_classpath, run_java_main  # noqa: F401 - the fixture

MECHANISMS = "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN"
USERS = [
    "SCRAM-SHA-256=[name=alice,password=alice-secret]",
    "SCRAM-SHA-512=[name=alice,password=alice-secret]",
    "SCRAM-SHA-256=[name=admin,password=admin-secret]",
    "SCRAM-SHA-512=[name=bob,password=bob-secret]",
    "SCRAM-SHA-256=[name=carol,password=carol-secret]",
]
SECRETS = ["alice-secret", "admin-secret", "bob-secret", "carol-secret", "wrong-secret"]
AUTHORIZER = {"authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer"}


def add_scram(users=USERS) -> list[str]:
    return [arg for user in users for arg in ("--add-scram", user)]


def sasl_broker(factory, overrides=None, listeners=("PLAINTEXT", "SASL_PLAINTEXT")):
    return factory(
        overrides={
            "sasl.enabled.mechanisms": MECHANISMS,
            "sasl.plain.allow.plaintext": "true",
            **(overrides or {}),
        },
        listeners=list(listeners),
        extra_args=add_scram(),
    )


def sasl_ssl_broker(factory, tmp_path, overrides=None):
    """`sasl_broker` whose SASL listener is SASL_SSL, serving a throw-away CA's server
    certificate; returns the broker and the CA's files (`certs.make_pki`)."""
    pytest.importorskip("cryptography.x509")
    from certs import make_pki

    pki = make_pki(tmp_path / "pki")
    keystore = {"ssl.keystore.type": "PEM", "ssl.keystore.location": str(pki["server_pem"])}
    b = sasl_broker(factory, overrides={**keystore, **(overrides or {})}, listeners=("PLAINTEXT", "SASL_SSL"))
    return b, pki


def sasl_conf(broker, mechanism: str, user: str, password: str, listener="SASL_PLAINTEXT") -> dict:
    """A client's SASL settings, spelt as kafka-python spells them."""
    return {
        "bootstrap_servers": f"127.0.0.1:{broker.listener_ports[listener]}",
        "security_protocol": listener,
        "sasl_mechanism": mechanism,
        "sasl_plain_username": user,
        "sasl_plain_password": password,
    }


def rd(conf: dict) -> dict:
    """confluent-kafka's spelling of a `sasl_conf` (which is kafka-python's)."""
    return {k.replace("sasl_plain_", "sasl_").replace("_", "."): v
            for k, v in conf.items() if k != "bootstrap_servers"}


def produce_consume(broker, conf: dict, n: int = 10) -> list[bytes]:
    return round_trip(conf["bootstrap_servers"], n, **rd(conf))


def metric(broker, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", broker.metrics(), re.M)
    assert m, f"{name} not on /metrics"
    return float(m.group(1))


def own_log(broker) -> str:
    """The broker's log without the harness's `===== start` lines (which quote the command)."""
    return "\n".join(
        l for l in broker.log_path.read_text(errors="replace").splitlines() if not l.startswith("===== start")
    )


def test_confluent_kafka_authenticates_with_each_mechanism(broker_factory):
    # A Kafka operator's JAAS lines carry over: accepted, not needed, never shown.
    plain_jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
                  'username="admin" password="admin-secret" user_admin="admin-secret";')
    b = sasl_broker(broker_factory, overrides={
        "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": plain_jaas,
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
    })
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]:
        conf = sasl_conf(b, mechanism, "alice", "alice-secret")
        assert produce_consume(b, conf) == [f"m{i}".encode() for i in range(10)], mechanism
    # PLAIN checks against either SCRAM credential: bob has only SHA-512's.
    assert len(produce_consume(b, sasl_conf(b, "PLAIN", "bob", "bob-secret"), n=2)) == 2
    assert metric(b, "strata_successful_authentications_total") >= 4
    assert metric(b, "strata_failed_authentications_total") == 0
    assert "admin-secret" not in own_log(b)


def test_kafka_python_authenticates_with_scram_and_plain(broker_factory):
    from kafka import KafkaConsumer, KafkaProducer

    b = sasl_broker(broker_factory)
    for mechanism in ["SCRAM-SHA-512", "PLAIN"]:
        topic = f"kp-sasl-{uuid.uuid4().hex[:8]}"
        conf = sasl_conf(b, mechanism, "alice", "alice-secret")
        p = KafkaProducer(**conf)
        for i in range(3):
            p.send(topic, f"v{i}".encode()).get(timeout=30)
        p.close()
        c = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=10000, **conf)
        got = [m.value for m in c]
        c.close()
        assert got == [b"v0", b"v1", b"v2"], mechanism


def test_wrong_credentials_fail_and_nothing_secret_is_logged(broker_factory):
    b = sasl_broker(broker_factory, overrides={"connection.failed.authentication.delay.ms": "200"})
    for mechanism, user in [("SCRAM-SHA-256", "alice"), ("PLAIN", "alice"), ("SCRAM-SHA-256", "nobody")]:
        errors = []
        conf = rd(sasl_conf(b, mechanism, user, "wrong-secret"))
        admin = make_admin(f"127.0.0.1:{b.listener_ports['SASL_PLAINTEXT']}", error_cb=errors.append, **conf)
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=5)
        admin.poll(1)  # serves the error callbacks
        assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), (mechanism, user, errors)
        assert any("invalid credentials" in e.str() or "Authentication failed" in e.str() for e in errors), errors
    assert metric(b, "strata_failed_authentications_total") >= 3
    log = own_log(b)
    assert "authentication failed" in log
    for secret in SECRETS:
        assert secret not in log
    # The PLAINTEXT listener and good logins are unaffected.
    assert make_admin(b.bootstrap).list_topics(timeout=10).brokers
    assert len(produce_consume(b, sasl_conf(b, "SCRAM-SHA-256", "alice", "alice-secret"), n=1)) == 1


def test_sasl_ssl_with_plain(broker_factory, tmp_path):
    b, pki = sasl_ssl_broker(broker_factory, tmp_path, {"sasl.plain.allow.plaintext": "false"})
    conf = sasl_conf(b, "PLAIN", "alice", "alice-secret", listener="SASL_SSL")
    got = produce_consume(b, {**conf, "ssl_ca_location": str(pki["ca"])}, n=5)
    assert len(got) == 5


def test_plain_on_a_plaintext_listener_needs_consent_and_gssapi_is_refused(broker_factory):
    b = broker_factory(
        start=False,
        overrides={"sasl.enabled.mechanisms": "PLAIN"},
        listeners=["PLAINTEXT", "SASL_PLAINTEXT"],
    )
    with pytest.raises(BrokerStartError):
        b.start(timeout=15)
    assert "PLAIN on SASL_PLAINTEXT sends passwords in the clear" in b.log_path.read_text()
    b.overrides.pop("sasl.enabled.mechanisms")
    with pytest.raises(BrokerStartError):
        b.start(timeout=15)
    assert "SASL mechanism GSSAPI is not supported" in b.log_path.read_text()


def test_reauthentication_keeps_clients_connected(broker_factory):
    b = sasl_broker(broker_factory, overrides={"connections.max.reauth.ms": "1500"})
    conf = sasl_conf(b, "SCRAM-SHA-256", "alice", "alice-secret")
    topic = f"reauth-{uuid.uuid4().hex[:8]}"
    p = make_producer(conf["bootstrap_servers"], **rd(conf))
    deadline = time.monotonic() + 5
    sent = 0
    while time.monotonic() < deadline:
        p.produce(topic, value=f"m{sent}".encode())
        sent += 1
        p.poll(0.05)
    assert p.flush(30) == 0
    # librdkafka (2.2+) re-authenticates in place before the 1.5 s lifetime ends.
    assert metric(b, "strata_successful_reauthentications_total") >= 1
    got = produce_consume(b, conf, n=3)
    assert len(got) == 3
    assert "expired" not in own_log(b), "librdkafka re-authenticated before expiry"


def test_sasl_principals_are_authorized_by_acls_and_denials_audited(broker_factory, tmp_path):
    import json

    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    audit = tmp_path / "audit.jsonl"
    b = sasl_broker(broker_factory, overrides={**AUTHORIZER, "super.users": "User:admin",
                                               "authorizer.audit.log.file": str(audit)})
    admin_conf = rd(sasl_conf(b, "SCRAM-SHA-256", "admin", "admin-secret"))
    bootstrap = f"127.0.0.1:{b.listener_ports['SASL_PLAINTEXT']}"
    admin = make_admin(bootstrap, **admin_conf)
    topic = f"acl-{uuid.uuid4().hex[:8]}"
    bindings = [
        AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:alice", "*", op,
                   AclPermissionType.ALLOW)
        for op in (AclOperation.WRITE, AclOperation.CREATE)
    ]
    for f in admin.create_acls(bindings).values():
        f.result(timeout=15)

    def deliver(user: str, password: str) -> list:
        outcomes = []
        conf = rd(sasl_conf(b, "SCRAM-SHA-512", user, password))
        p = make_producer(bootstrap, message_timeout_ms=8000, **conf)
        p.produce(topic, value=b"x", on_delivery=lambda err, msg: outcomes.append(err))
        p.flush(15)
        return outcomes

    wait_until(lambda: deliver("alice", "alice-secret") == [None], timeout=30,
               msg="alice, allowed to write, produces")
    denied = deliver("bob", "bob-secret")
    assert len(denied) == 1 and denied[0] is not None
    assert denied[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, denied
    # On the PLAINTEXT listener the same client is User:ANONYMOUS, denied too.
    p = make_producer(b.bootstrap, message_timeout_ms=5000)
    outcomes = []
    p.produce(topic, value=b"x", on_delivery=lambda err, msg: outcomes.append(err))
    p.flush(10)
    assert outcomes and outcomes[0] is not None

    # Every denial is a JSON line in the audit log: who, from where, on which listener, what.
    def audited():
        if not audit.exists():
            return []
        return [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]

    def denied(principal, listener):
        # The producer learns of its refusal from Metadata (DESCRIBE) before it sends.
        return [r for r in audited() if r["principal"] == principal and r["resource"] == topic
                and r["result"] == "DENIED" and r["listener"] == listener]

    wait_until(lambda: denied("User:bob", "SASL_PLAINTEXT"), timeout=10, msg=lambda: str(audited()))
    record = denied("User:bob", "SASL_PLAINTEXT")[0]
    assert (record["api"], record["operation"], record["resource_type"]) == ("Metadata", "Describe", "Topic")
    assert record["client"] == "127.0.0.1" and record["reason"] == "NoMatchingAcl", record
    assert denied("User:ANONYMOUS", "PLAINTEXT")
    # Questions are not actions: the auto-creation check (CREATE on the cluster) is not audited.
    assert not [r for r in audited() if r["resource_type"] == "Cluster"], audited()
    assert not [r for r in audited() if r["result"] == "ALLOWED"], "allowed actions only when asked"
    assert metric(b, "strata_audit_records_written_total") >= 2


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed")
def test_kcat_from_debian_authenticates_with_scram(broker_factory):
    """Debian's kcat (librdkafka 2.0, before KIP-368 support) over SCRAM."""
    b = sasl_broker(broker_factory)
    addr = f"127.0.0.1:{b.listener_ports['SASL_PLAINTEXT']}"
    topic = f"kcat-sasl-{uuid.uuid4().hex[:8]}"
    common = ["kcat", "-b", addr, "-X", "security.protocol=SASL_PLAINTEXT",
              "-X", "sasl.mechanisms=SCRAM-SHA-256", "-X", "sasl.username=alice",
              "-X", "sasl.password=alice-secret"]
    subprocess.run([*common, "-P", "-t", topic], input=b"one\ntwo\n", check=True, timeout=60)
    out = subprocess.run([*common, "-C", "-t", topic, "-o", "beginning", "-e", "-q"],
                         capture_output=True, check=True, timeout=60)
    assert out.stdout.split() == [b"one", b"two"]


@pytest.mark.parametrize("handshake_version,authenticate_version", [(1, 0), (1, 1), (1, 2), (0, None)])
def test_every_sasl_version_on_the_wire(broker_factory, handshake_version, authenticate_version):
    """SaslHandshake v0-1 and SaslAuthenticate v0-2 encoded and decoded by kafka-python's
    versioned classes (a codec other than the broker's); after a v0 handshake the PLAIN token
    goes bare, length-prefixed, as Kafka's oldest clients send it."""
    import struct

    from versioned_wire import ConnectionClosed, VersionedClient

    b = sasl_broker(broker_factory, overrides={"connections.max.reauth.ms": "60000"})
    port = b.listener_ports["SASL_PLAINTEXT"]
    with VersionedClient("127.0.0.1", port) as c:
        resp = c.call(17, handshake_version, {"mechanism": "PLAIN"})
        assert resp.error_code == 0
        assert list(resp.mechanisms) == MECHANISMS.split(",")
        token = b"\0alice\0alice-secret"
        if authenticate_version is None:
            c.sock.sendall(struct.pack(">i", len(token)) + token)
            assert c._read_frame() == b"", "PLAIN's empty final token, bare"
        else:
            resp = c.call(36, authenticate_version, {"auth_bytes": token})
            assert resp.error_code == 0 and resp.auth_bytes == b""
            if authenticate_version >= 1:
                assert resp.session_lifetime_ms == 60000
        # Authenticated: other requests are served.
        assert c.call(3, 12, {"topics": [], "allow_auto_topic_creation": False,
                              "include_topic_authorized_operations": False}).brokers

    with VersionedClient("127.0.0.1", port) as c:
        resp = c.call(17, handshake_version, {"mechanism": "GSSAPI"})
        assert resp.error_code == 33, resp  # UNSUPPORTED_SASL_MECHANISM
        assert list(resp.mechanisms) == MECHANISMS.split(",")
        with pytest.raises(ConnectionClosed):
            c.call(18, 3, {"client_software_name": "t", "client_software_version": "1"})

    with VersionedClient("127.0.0.1", port) as c:
        # Anything but ApiVersions and SaslHandshake before authentication: closed unanswered.
        with pytest.raises(ConnectionClosed):
            c.call(3, 12, {"topics": [], "allow_auto_topic_creation": False,
                           "include_topic_authorized_operations": False})


def test_groups_and_transactions_need_their_acls(broker_factory):
    """A SASL principal under the StandardAuthorizer: a consumer group needs READ on the group,
    a transactional producer WRITE on its transactional id, as in Kafka."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    b = sasl_broker(broker_factory, overrides={**AUTHORIZER, "super.users": "User:admin"})
    bootstrap = f"127.0.0.1:{b.listener_ports['SASL_PLAINTEXT']}"
    admin = make_admin(bootstrap, **rd(sasl_conf(b, "SCRAM-SHA-256", "admin", "admin-secret")))
    alice = rd(sasl_conf(b, "SCRAM-SHA-256", "alice", "alice-secret"))
    topic, group, txn_id = (f"{kind}-{uuid.uuid4().hex[:8]}" for kind in ("t", "g", "tx"))

    def allow(resource_type, name, *ops):
        bindings = [AclBinding(resource_type, name, ResourcePatternType.LITERAL, "User:alice", "*", op,
                               AclPermissionType.ALLOW) for op in ops]
        for f in admin.create_acls(bindings).values():
            f.result(timeout=15)

    allow(ResourceType.TOPIC, topic, AclOperation.WRITE, AclOperation.READ, AclOperation.CREATE)
    p = make_producer(bootstrap, **alice)
    p.produce(topic, value=b"v")
    assert p.flush(30) == 0

    def consume_error():
        c = make_consumer(bootstrap, group_id=group, **alice)
        c.subscribe([topic])
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is None:
                    continue
                return m.error().code() if m.error() else None
            raise AssertionError("neither a record nor an error")
        finally:
            c.close()

    assert consume_error() == KafkaError.GROUP_AUTHORIZATION_FAILED
    allow(ResourceType.GROUP, group, AclOperation.READ)
    assert consume_error() is None, "with READ on the group the record arrives"

    transactional = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, **alice})
    with pytest.raises(KafkaException) as refused:
        transactional.init_transactions(15)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    allow(ResourceType.TRANSACTIONAL_ID, txn_id, AclOperation.WRITE)
    transactional = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, **alice})
    transactional.init_transactions(30)
    transactional.begin_transaction()
    transactional.produce(topic, value=b"in a transaction")
    transactional.commit_transaction(30)


def run_sasl_check(classpath: str, *args: str) -> None:
    run_java_main(classpath, "strata.SaslCheck", *args)


@pytest.mark.timeout(300)
def test_java_client_over_sasl_ssl_with_acls_its_admin_created(java_check_classpath, broker_factory, tmp_path):
    """The Java client over SASL_SSL (SCRAM-SHA-256, the CA as a PEM trust store): a super
    user's Admin creates ACLs, the user they name produces and consumes, another is refused."""
    b, pki = sasl_ssl_broker(broker_factory, tmp_path, {**AUTHORIZER, "super.users": "User:admin"})
    addr = f"127.0.0.1:{b.listener_ports['SASL_SSL']}"
    run_sasl_check(java_check_classpath, "acls", addr, "SCRAM-SHA-256", "admin", "admin-secret",
                   "alice", "alice-secret", "carol", "carol-secret", str(pki["ca"]))


@pytest.mark.timeout(300)
def test_java_client_authenticates_and_reauthenticates(java_check_classpath, broker_factory):
    """The Java client (kafka-clients 4.x) over SCRAM-SHA-512 and PLAIN, re-authenticating
    (KIP-368) when its session lifetime of 2 s passes mid-run."""
    b = sasl_broker(broker_factory, overrides={"connections.max.reauth.ms": "2000"})
    addr = f"127.0.0.1:{b.listener_ports['SASL_PLAINTEXT']}"
    for mechanism in ["SCRAM-SHA-512", "PLAIN"]:
        run_sasl_check(java_check_classpath, addr, mechanism, "alice", "alice-secret", "3000")
    assert metric(b, "strata_successful_reauthentications_total") >= 1


class Issuer:
    """A throw-away OAuth issuer: an RSA key, its JWKS file and RS256 tokens (KIP-255/768)."""

    def __init__(self, directory, kid: str = "key-1"):
        self.jwks = directory / "jwks.json"
        self.rotate(kid)

    def rotate(self, kid: str) -> None:
        import json

        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key, self.kid = key, kid
        numbers = key.public_key().public_numbers()
        entry = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                 "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                 "e": _b64url(numbers.e.to_bytes(3, "big"))}
        self.jwks.write_text(json.dumps({"keys": [entry]}))

    def token(self, sub: str = "carol", aud: str = "kafka", lifetime_s: int = 300) -> tuple[str, float]:
        import json

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = time.time()
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        claims = {"sub": sub, "aud": aud, "iss": "https://issuer.test", "iat": int(now), "exp": int(now + lifetime_s)}
        signed = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signed}.{_b64url(signature)}", now + lifetime_s


def _b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def oauth_broker(factory, issuer: Issuer, overrides=None):
    return factory(
        overrides={
            "sasl.enabled.mechanisms": "OAUTHBEARER",
            "sasl.oauthbearer.jwks.endpoint.url": f"file://{issuer.jwks}",
            "sasl.oauthbearer.expected.audience": "kafka",
            "sasl.oauthbearer.expected.issuer": "https://issuer.test",
            **(overrides or {}),
        },
        listeners=["PLAINTEXT", "SASL_PLAINTEXT"],
    )


def oauth_conf(broker, token_source) -> dict:
    return {
        "bootstrap.servers": f"127.0.0.1:{broker.listener_ports['SASL_PLAINTEXT']}",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "OAUTHBEARER",
        "oauth_cb": lambda _config: token_source(),
    }


def test_oauthbearer_tokens_are_validated_against_the_jwks(broker_factory, tmp_path):
    pytest.importorskip("cryptography")
    issuer = Issuer(tmp_path)
    b = oauth_broker(broker_factory, issuer, {"sasl.oauthbearer.jwks.endpoint.refresh.ms": "1000"})
    conf = oauth_conf(b, issuer.token)
    bootstrap = conf.pop("bootstrap.servers")
    p = make_producer(bootstrap, **conf)
    p.produce("oauth-topic", value=b"v")
    assert p.flush(30) == 0
    assert metric(b, "strata_successful_authentications_total") >= 1

    def refused(token_source) -> list:
        errors = []
        bad = {**oauth_conf(b, token_source), "error_cb": errors.append}
        admin = make_admin(bad.pop("bootstrap.servers"), **bad)
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=5)
        admin.poll(1)
        return [e.str() for e in errors if e.code() == KafkaError._AUTHENTICATION]

    assert any("audience" in e for e in refused(lambda: issuer.token(aud="other"))), "wrong audience"
    # librdkafka itself refuses to send a token it was told is expired: tell it otherwise.
    expired = lambda: (issuer.token(lifetime_s=-120)[0], time.time() + 300)  # noqa: E731
    assert any("expired" in e for e in refused(expired)), "expired"
    (tmp_path / "other").mkdir()
    impostor = Issuer(tmp_path / "other")  # the same key id, another key
    assert any("signature does not verify" in e for e in refused(impostor.token)), "forged"
    impostor.rotate("stranger")
    assert any("no key" in e for e in refused(impostor.token)), "a signer the JWKS does not name"
    # A rotated key is read again from the JWKS (refresh.ms=1000) and its tokens accepted.
    issuer.rotate("key-2")
    wait_until(lambda: not refused_quietly(b, issuer), timeout=15)


def refused_quietly(broker, issuer: Issuer) -> bool:
    conf = oauth_conf(broker, issuer.token)
    admin = make_admin(conf.pop("bootstrap.servers"), **conf)
    try:
        admin.list_topics(timeout=3)
        return False
    except KafkaException:
        return True


def test_oauthbearer_session_ends_with_the_token_and_is_renewed(broker_factory, tmp_path):
    """KIP-368 with OAUTHBEARER: the session lasts until the token's exp; librdkafka fetches a
    new token and re-authenticates in place."""
    pytest.importorskip("cryptography")
    issuer = Issuer(tmp_path)
    b = oauth_broker(broker_factory, issuer, {"connections.max.reauth.ms": "600000"})
    calls = []

    def short_lived():
        calls.append(1)
        return issuer.token(lifetime_s=4)

    conf = oauth_conf(b, short_lived)
    bootstrap = conf.pop("bootstrap.servers")
    p = make_producer(bootstrap, **conf)
    deadline = time.monotonic() + 8
    sent = 0
    while time.monotonic() < deadline:
        p.produce("oauth-reauth", value=f"m{sent}".encode())
        sent += 1
        p.poll(0.1)
    assert p.flush(30) == 0
    assert len(calls) >= 2, "librdkafka asked for a new token"
    assert metric(b, "strata_successful_reauthentications_total") >= 1


def test_kafka_python_over_sasl_ssl_with_scram_and_oauthbearer(broker_factory, tmp_path):
    """kafka-python 3 over SASL_SSL: SCRAM-SHA-256, and OAUTHBEARER with a token the test signs
    (its token provider sends a KIP-342 extension, which is accepted and ignored)."""
    pytest.importorskip("cryptography.x509")
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.net.sasl.oauth import AbstractTokenProvider

    issuer = Issuer(tmp_path)
    b, pki = sasl_ssl_broker(broker_factory, tmp_path, {
        "sasl.enabled.mechanisms": "SCRAM-SHA-256,OAUTHBEARER",
        "sasl.oauthbearer.jwks.endpoint.url": f"file://{issuer.jwks}",
        "sasl.oauthbearer.expected.audience": "kafka",
    })

    class Tokens(AbstractTokenProvider):
        def token(self):
            return issuer.token(sub="dave")[0]

        def extensions(self):
            return {"traceId": "t1"}

    common = {"bootstrap_servers": f"127.0.0.1:{b.listener_ports['SASL_SSL']}", "security_protocol": "SASL_SSL",
              "ssl_cafile": str(pki["ca"])}
    logins = {
        "SCRAM-SHA-256": {"sasl_plain_username": "alice", "sasl_plain_password": "alice-secret"},
        "OAUTHBEARER": {"sasl_oauth_token_provider": Tokens()},
    }
    for mechanism, login in logins.items():
        conf = {**common, "sasl_mechanism": mechanism, **login}
        topic = f"kp-sasl-ssl-{uuid.uuid4().hex[:8]}"
        p = KafkaProducer(**conf)
        p.send(topic, b"v").get(timeout=30)
        p.close()
        c = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=10000, **conf)
        assert [m.value for m in c] == [b"v"], mechanism
        c.close()
