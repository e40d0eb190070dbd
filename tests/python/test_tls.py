"""Listeners and TLS (issue 16, sections 1-2): named listeners with Kafka's
`listeners` / `listener.security.protocol.map`, Metadata answering with the endpoints of the
listener a client came in on, SSL listeners with PEM key stores (KIP-651), mutual TLS, and the
wrong protocol on either port closed without harming other clients.

Certificates come from a throw-away CA made by each test module (python `cryptography`).
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from helpers import BrokerStartError, round_trip

pytest.importorskip("cryptography.x509")
from certs import make_pki  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _ssl_overrides(pki, **extra) -> dict[str, str]:
    return {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki["server_pem"]),
        **extra,
    }


def _addr(broker, listener: str) -> str:
    return f"127.0.0.1:{broker.listener_ports[listener]}"


def _ssl_conf(pki, broker, client_cert: bool = False) -> dict:
    conf = {
        "bootstrap.servers": _addr(broker, "SSL"),
        "security.protocol": "SSL",
        "ssl.ca.location": str(pki["ca"]),
    }
    if client_cert:
        conf["ssl.certificate.location"] = str(pki["client_cert"])
        conf["ssl.key.location"] = str(pki["client_key"])
    return conf


def _produce_consume(conf: dict, n: int = 20) -> list[bytes]:
    return round_trip(conf["bootstrap.servers"], n, **{k: v for k, v in conf.items() if k != "bootstrap.servers"})


def _brokers_seen(conf: dict) -> set[tuple[str, int]]:
    md = AdminClient(conf).list_topics(timeout=15)
    return {(b.host, b.port) for b in md.brokers.values()}


def test_ssl_listener_serves_confluent_kafka_and_each_listener_its_own_endpoints(broker_factory, pki):
    b = broker_factory(overrides=_ssl_overrides(pki), listeners=["PLAINTEXT", "SSL"])
    assert _produce_consume(_ssl_conf(pki, b)) == [f"m{i}".encode() for i in range(20)]
    # Metadata names the brokers as reached on the listener the client came in on.
    assert _brokers_seen(_ssl_conf(pki, b)) == {("127.0.0.1", b.listener_ports["SSL"])}
    assert _brokers_seen({"bootstrap.servers": _addr(b, "PLAINTEXT")}) == {
        ("127.0.0.1", b.listener_ports["PLAINTEXT"])
    }


def test_advertised_listeners_per_listener(broker_factory, pki):
    # Start once to learn the ports, then again advertising the SSL listener as localhost.
    b = broker_factory(overrides=_ssl_overrides(pki), listeners=["PLAINTEXT", "SSL"])
    b.stop()
    b.overrides["advertised.listeners"] = f"SSL://localhost:{b.listener_ports['SSL']}"
    b.start()
    assert _brokers_seen(_ssl_conf(pki, b)) == {("localhost", b.listener_ports["SSL"])}
    assert _brokers_seen({"bootstrap.servers": _addr(b, "PLAINTEXT")}) == {
        ("127.0.0.1", b.listener_ports["PLAINTEXT"])
    }


def test_kafka_python_over_ssl_with_inline_pem_key_store(broker_factory, pki):
    from kafka import KafkaConsumer, KafkaProducer

    # KIP-651's inline form: the key and the chain as config values.
    overrides = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.key": pki["server_key"].read_text().replace("\n", " "),
        "ssl.keystore.certificate.chain": pki["server_chain"].read_text().replace("\n", " "),
    }
    b = broker_factory(overrides=overrides, listeners=["PLAINTEXT", "SSL"])
    topic = f"kp-tls-{uuid.uuid4().hex[:8]}"
    common = dict(
        bootstrap_servers=_addr(b, "SSL"), security_protocol="SSL", ssl_cafile=str(pki["ca"])
    )
    p = KafkaProducer(**common)
    for i in range(5):
        p.send(topic, f"v{i}".encode()).get(timeout=30)
    p.close()
    c = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=10000, **common)
    got = [m.value for m in c]
    c.close()
    assert got == [f"v{i}".encode() for i in range(5)]
    # The key is a password-type config: DescribeConfigs shows it as sensitive, value null.
    from confluent_kafka.admin import ConfigResource

    res = ConfigResource(ConfigResource.Type.BROKER, "1")
    admin = AdminClient({"bootstrap.servers": _addr(b, "PLAINTEXT")})
    entries = admin.describe_configs([res])[res].result(timeout=15)
    key = entries["ssl.keystore.key"]
    assert key.is_sensitive and key.value is None
    # Nor does the broker log it (the harness's own line shows the command it ran).
    logged = [l for l in b.log_path.read_text().splitlines() if not l.startswith("===== start")]
    assert not any("PRIVATE KEY" in l for l in logged)


def test_ssl_client_auth_required(broker_factory, pki):
    overrides = _ssl_overrides(
        pki,
        **{
            "listener.name.ssl.ssl.client.auth": "required",
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(pki["ca"]),
        },
    )
    b = broker_factory(overrides=overrides, listeners=["PLAINTEXT", "SSL"])
    assert len(_produce_consume(_ssl_conf(pki, b, client_cert=True), n=5)) == 5
    # Without a certificate the handshake is refused; the broker goes on serving.
    with pytest.raises(KafkaException):
        AdminClient({**_ssl_conf(pki, b), "socket.timeout.ms": 3000}).list_topics(timeout=5)
    assert _brokers_seen(_ssl_conf(pki, b, client_cert=True))
    # The plain ssl.client.auth stays "none" on the PLAINTEXT listener: unaffected.
    assert _brokers_seen({"bootstrap.servers": _addr(b, "PLAINTEXT")})


def _api_versions_request() -> bytes:
    body = struct.pack(">hhi", 18, 0, 1) + struct.pack(">h", 1) + b"t"
    return struct.pack(">i", len(body)) + body


def test_wrong_protocol_on_either_port_is_closed_without_harming_others(broker_factory, pki):
    b = broker_factory(overrides=_ssl_overrides(pki), listeners=["PLAINTEXT", "SSL"])
    ssl_conf = _ssl_conf(pki, b)
    # A plaintext Kafka request on the SSL port: not a ClientHello, closed.
    with socket.create_connection(("127.0.0.1", b.listener_ports["SSL"]), timeout=15) as s:
        s.sendall(_api_versions_request())
        answer = b""
        while chunk := s.recv(100):
            answer += chunk
        # At most a TLS alert record (content type 21), then the close: no Kafka answer.
        assert answer == b"" or answer[0] == 0x15, answer
    # A client that connects to the SSL port and says nothing is closed by the handshake
    # timeout, and meanwhile others are served.
    idle = socket.create_connection(("127.0.0.1", b.listener_ports["SSL"]), timeout=30)
    assert _brokers_seen(ssl_conf)
    # A TLS client on the PLAINTEXT port: its ClientHello reads as an oversized frame, closed.
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    with socket.create_connection(("127.0.0.1", b.listener_ports["PLAINTEXT"]), timeout=15) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    assert _brokers_seen({"bootstrap.servers": _addr(b, "PLAINTEXT")})
    assert _brokers_seen(ssl_conf)
    assert idle.recv(100) == b"", "a silent client is closed after the handshake timeout"
    idle.close()


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0"},
            "SASL mechanism GSSAPI is not supported",
        ),
        (
            {"listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0", "ssl.keystore.type": "PEM"},
            "an SSL listener needs ssl.keystore.location",
        ),
        ({"listeners": "INTERNAL://127.0.0.1:0"}, "listener.security.protocol.map"),
        (
            {
                "listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
                "inter.broker.listener.name": "SASL_PLAINTEXT",
                "sasl.enabled.mechanisms": "SCRAM-SHA-256",
            },
            # Kafka's default inter-broker mechanism, GSSAPI, is not served
            "sasl.mechanism.inter.broker.protocol is GSSAPI",
        ),
        (
            {
                "listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
                "inter.broker.listener.name": "SASL_PLAINTEXT",
                "sasl.enabled.mechanisms": "SCRAM-SHA-256",
                "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256",
            },
            "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config",
        ),
        (
            {
                "listeners": "PLAINTEXT://127.0.0.1:0",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,ADMIN:SSL",
                "ssl.keystore.type": "PEM",
            },
            "admin HTTP: TLS: listener ADMIN: an SSL listener needs ssl.keystore.location",
        ),
        (
            {"listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0", "ssl.keystore.location": "/x.pem"},
            "only PEM stores are supported",
        ),
    ],
)
def test_bad_listener_configs_fail_start_up_with_a_clear_message(broker_factory, overrides, message):
    b = broker_factory(start=False)
    base = b.command

    def command():
        # The test's `listeners` replaces the --listen shorthand.
        cmd = base()
        i = cmd.index("--listen")
        del cmd[i : i + 2]
        return cmd + [x for k, v in overrides.items() for x in ("--override", f"{k}={v}")]

    b.command = command
    with pytest.raises(BrokerStartError):
        b.start(timeout=15)
    assert message in b.log_path.read_text()


def _served_certificate(broker, pki) -> bytes:
    """The DER certificate a new TLS connection to the SSL listener is served."""
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    with socket.create_connection(("127.0.0.1", broker.listener_ports["SSL"]), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


def test_a_renewed_key_store_is_served_without_a_restart(broker_factory, pki, tmp_path):
    import shutil

    from helpers import wait_until

    key_store = tmp_path / "server.pem"
    shutil.copy(pki["server_pem"], key_store)
    b = broker_factory(
        overrides={"ssl.keystore.type": "PEM", "ssl.keystore.location": str(key_store)},
        listeners=["PLAINTEXT", "SSL"],
    )
    first = _served_certificate(b, pki)
    renewed = pki["renewed_server_cert"].read_bytes()
    assert first != renewed
    consumer_conf = _ssl_conf(pki, b)
    assert _brokers_seen(consumer_conf)
    # A bad file is refused and the old certificate stays.
    key_store.write_text("not a key store")
    time.sleep(6)
    assert _served_certificate(b, pki) == first
    assert "cannot be used; keeping the old one" in b.log_path.read_text()
    # The renewed store is served to new connections within the check interval (5 s).
    shutil.copy(pki["renewed_server_pem"], key_store)
    wait_until(lambda: _served_certificate(b, pki) == renewed, timeout=15)
    assert _brokers_seen(consumer_conf)


def test_principal_mapping_rules_name_mtls_principals(broker_factory, pki, tmp_path):
    """KIP-371: `CN=client,OU=eng,O=Strata` becomes `User:client`; the audit log shows it."""
    import json

    audit = tmp_path / "audit.jsonl"
    overrides = _ssl_overrides(
        pki,
        **{
            "listener.name.ssl.ssl.client.auth": "required",
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(pki["ca"]),
            "ssl.principal.mapping.rules": "RULE:^CN=([^,]*),.*$/$1/L, DEFAULT",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "authorizer.audit.log.file": str(audit),
        },
    )
    b = broker_factory(overrides=overrides, listeners=["PLAINTEXT", "SSL"])
    conf = _ssl_conf(pki, b, client_cert=True)
    md = AdminClient(conf).list_topics(topic="mapped", timeout=15)
    assert md.topics["mapped"].error is not None, "no ACL: denied"
    from helpers import wait_until

    wait_until(lambda: audit.exists() and audit.read_text().strip(), timeout=10)
    principals = {json.loads(l)["principal"] for l in audit.read_text().splitlines()}
    assert principals == {"User:client"}, principals

    # A DN no rule applies to is refused at authentication; the broker goes on serving.
    b.stop()
    b.overrides["ssl.principal.mapping.rules"] = "RULE:^CN=nobody,.*$/nobody/"
    b.start()
    with pytest.raises(KafkaException):
        AdminClient({**conf, "socket.timeout.ms": 3000}).list_topics(timeout=5)
    assert "no ssl.principal.mapping.rules rule applies" in b.log_path.read_text()


def test_cipher_suites_limit_what_is_negotiated(broker_factory, pki):
    b = broker_factory(
        overrides=_ssl_overrides(pki, **{"ssl.cipher.suites": "TLS_AES_256_GCM_SHA384"}),
        listeners=["PLAINTEXT", "SSL"],
    )
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    with socket.create_connection(("127.0.0.1", b.listener_ports["SSL"]), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.cipher()[0] == "TLS_AES_256_GCM_SHA384"
    assert _brokers_seen(_ssl_conf(pki, b))
    b.stop()
    b.overrides["ssl.cipher.suites"] = "TLS_RSA_WITH_RC4_128_MD5"
    with pytest.raises(BrokerStartError):
        b.start(timeout=15)
    assert "ssl.cipher.suites: TLS_RSA_WITH_RC4_128_MD5 is not supported" in b.log_path.read_text()
