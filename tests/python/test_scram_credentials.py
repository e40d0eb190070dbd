"""SCRAM credentials (KIP-554): AlterUserScramCredentials and DescribeUserScramCredentials from
librdkafka's and kafka-python's admin clients, and `strata serve --add-scram` bootstrapping.

The clients salt the password themselves; the broker keeps only the derived keys and answers
describe with mechanism and iterations. Authenticating with these credentials (SASL) is wired
to listeners separately."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from kafka.admin import KafkaAdminClient
from kafka.admin import ScramMechanism as KpMechanism
from kafka.admin import UserScramCredentialDeletion as KpDeletion
from kafka.admin import UserScramCredentialUpsertion as KpUpsertion

from helpers import make_admin

RESOURCE_NOT_FOUND = 91


def own_lines(broker) -> str:
    """The broker's log without the test harness's `===== start` lines (which quote the
    command line, passwords included)."""
    text = broker.log_path.read_text(errors="replace")
    return "\n".join(line for line in text.splitlines() if not line.startswith("===== start"))


def kafka_python_admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)


def described(admin: KafkaAdminClient, users=None) -> dict[str, object]:
    """kafka-python's describe as {user: sorted [(mechanism code, iterations)] or error}."""
    out = {}
    for user, d in admin.describe_user_scram_credentials(users).items():
        out[user] = d["error"] or sorted((int(c["mechanism"]), c["iterations"]) for c in d["credential_infos"])
    return out


@pytest.mark.timeout(120)
def test_librdkafka_admin_alters_and_describes_credentials(shared_broker) -> None:
    admin = make_admin(shared_broker.bootstrap)
    sha256 = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)
    sha512 = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    futures = admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion("rd-alice", sha256, b"alice-secret"),
        UserScramCredentialUpsertion("rd-bob", sha512, b"bob-secret", b"fixed-salt"),
    ])
    for f in futures.values():
        f.result(timeout=30)

    descriptions = admin.describe_user_scram_credentials(["rd-alice", "rd-bob"])
    alice = descriptions["rd-alice"].result(timeout=30)
    assert [(c.mechanism, c.iterations) for c in alice.scram_credential_infos] == [
        (ScramMechanism.SCRAM_SHA_256, 4096)
    ]
    bob = descriptions["rd-bob"].result(timeout=30)
    assert [(c.mechanism, c.iterations) for c in bob.scram_credential_infos] == [
        (ScramMechanism.SCRAM_SHA_512, 8192)
    ]

    # Too few iterations: UNACCEPTABLE_CREDENTIAL, with Kafka's message.
    bad = admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion("rd-carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 1024), b"x")
    ])
    with pytest.raises(KafkaException, match="Too few iterations"):
        bad["rd-carol"].result(timeout=30)

    gone = admin.alter_user_scram_credentials([
        UserScramCredentialDeletion("rd-alice", ScramMechanism.SCRAM_SHA_256)
    ])
    gone["rd-alice"].result(timeout=30)
    with pytest.raises(KafkaException, match="does not exist"):
        admin.describe_user_scram_credentials(["rd-alice"])["rd-alice"].result(timeout=30)


@pytest.mark.timeout(120)
def test_kafka_python_admin_alters_and_describes_credentials(shared_broker) -> None:
    admin = kafka_python_admin(shared_broker.bootstrap)
    try:
        result = admin.alter_user_scram_credentials([
            KpUpsertion("kp-dave", KpMechanism.SCRAM_SHA_256, "dave-secret", iterations=4096),
            KpUpsertion("kp-erin", KpMechanism.SCRAM_SHA_512, "erin-secret", iterations=16384),
        ])
        assert result == {"kp-dave": None, "kp-erin": None}, result
        # The same user twice in one request is refused as a whole.
        twice = admin.alter_user_scram_credentials([
            KpUpsertion("kp-dave", KpMechanism.SCRAM_SHA_512, "x", iterations=4096),
            KpDeletion("kp-dave", KpMechanism.SCRAM_SHA_256),
        ])
        assert "twice" in (twice["kp-dave"] or ""), twice
        missing = admin.alter_user_scram_credentials([KpDeletion("kp-nobody", KpMechanism.SCRAM_SHA_256)])
        assert "does not exist" in (missing["kp-nobody"] or ""), missing
        too_many = admin.alter_user_scram_credentials([
            KpUpsertion("kp-frank", KpMechanism.SCRAM_SHA_256, "x", iterations=16385)
        ])
        assert too_many["kp-frank"] == "Too many iterations", too_many

        got = described(admin, ["kp-dave", "kp-erin", "kp-nobody"])
        assert got["kp-dave"] == [(1, 4096)], got
        assert got["kp-erin"] == [(2, 16384)], got
        assert "does not exist" in str(got["kp-nobody"]), got
        everyone = described(admin)
        assert {"kp-dave", "kp-erin"} <= set(everyone), everyone
        assert "kp-frank" not in everyone
    finally:
        admin.close()


@pytest.mark.timeout(120)
def test_add_scram_creates_a_credential_only_when_the_user_has_none(broker_factory) -> None:
    broker = broker_factory(extra_args=[
        "--add-scram", "SCRAM-SHA-256=[name=admin,password=admin-secret]",
        "--add-scram", 'SCRAM-SHA-512=[name=admin,password="admin-secret",iterations=8192]',
    ])
    admin = kafka_python_admin(broker.bootstrap)
    try:
        assert described(admin, ["admin"]) == {"admin": [(1, 4096), (2, 8192)]}
        # Changed since start-up: a restart with the same --add-scram must not overwrite it.
        changed = admin.alter_user_scram_credentials([
            KpUpsertion("admin", KpMechanism.SCRAM_SHA_256, "rotated", iterations=5000)
        ])
        assert changed == {"admin": None}, changed
    finally:
        admin.close()
    broker.stop()
    broker.start()
    admin = kafka_python_admin(broker.bootstrap)
    try:
        assert described(admin, ["admin"]) == {"admin": [(1, 5000), (2, 8192)]}
    finally:
        admin.close()
    log = own_lines(broker)
    assert "SCRAM credential created" in log
    assert "admin-secret" not in log and "rotated" not in log


def test_a_bad_add_scram_argument_stops_start_up_without_echoing_the_password(broker_factory) -> None:
    broker = broker_factory(start=False, extra_args=[
        "--add-scram", "SCRAM-SHA-256=[name=admin,password=hunter2,iterations=10]",
    ])
    with pytest.raises(Exception):
        broker.start(timeout=10)
    log = own_lines(broker)
    assert "iterations" in log and "hunter2" not in log
