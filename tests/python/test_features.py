"""Feature versions (KIP-584, KIP-1022): ApiVersions v3+ reports the features the broker
supports and the levels the cluster has finalized; UpdateFeatures (57) changes them as Kafka's
controller does, and the change is a metadata record, so it survives a restart and reaches every
node of a cluster.

Requests go through kafka-python 3's versioned message classes (`versioned_wire`), a codec other
than the broker's own; the Java Admin's view (`describeFeatures` / `updateFeatures`) is checked
in test_java_client.py.
"""

from __future__ import annotations


import pytest

from helpers import wait_until
from test_java_client import java_check_classpath, run_java_main  # noqa: F401 - the fixture
from versioned_wire import VersionedClient

INVALID_REQUEST = 42
INVALID_UPDATE_VERSION = 95
UNSUPPORTED_VERSION = 35

UPGRADE, SAFE_DOWNGRADE, UNSAFE_DOWNGRADE = 1, 2, 3

# Kafka 4.1: metadata.version 3.3-IV3 (7) to 4.1-IV1 (27).
LATEST_LEVELS = {"metadata.version": 27, "transaction.version": 2, "group.version": 1}
SUPPORTED = {"metadata.version": (7, 27), "transaction.version": (0, 2), "group.version": (0, 1)}


def api_versions(port: int, version: int = 4):
    with VersionedClient("127.0.0.1", port) as c:
        resp = c.call(18, version, {"client_software_name": "strata-test", "client_software_version": "1.0"})
    assert resp.error_code == 0, resp
    return resp


def finalized(resp) -> dict[str, int]:
    for f in resp.finalized_features:
        assert f.min_version_level == f.max_version_level, resp
    return {f.name: f.max_version_level for f in resp.finalized_features}


def supported(resp) -> dict[str, tuple[int, int]]:
    return {f.name: (f.min_version, f.max_version) for f in resp.supported_features}


def update_features(port: int, updates: list[tuple[str, int, int]], version: int = 2, validate_only: bool = False):
    values = {
        "timeout_ms": 10000,
        "feature_updates": [
            {"feature": name, "max_version_level": level, "upgrade_type": kind, "allow_downgrade": kind != UPGRADE}
            for name, level, kind in updates
        ],
        "validate_only": validate_only,
    }
    with VersionedClient("127.0.0.1", port) as c:
        return c.call(57, version, values)


def test_api_versions_reports_supported_and_finalized_features(broker):
    v4 = api_versions(broker.port, 4)
    assert supported(v4) == SUPPORTED, v4
    assert finalized(v4) == LATEST_LEVELS, "a new cluster starts at the latest levels"
    assert v4.finalized_features_epoch > 0
    # v3 clients cannot read a supported minimum of 0 (KAFKA-17011): Kafka leaves those out.
    v3 = api_versions(broker.port, 3)
    assert supported(v3) == {"metadata.version": (7, 27)}, v3
    assert finalized(v3) == LATEST_LEVELS
    # Before v3 there are no feature fields at all; the answer still decodes for its version.
    assert api_versions(broker.port, 2).api_keys


def test_update_features_validates_and_persists(broker):
    port = broker.port
    before = api_versions(port)
    # A downgrade without a downgrade type is refused, all or nothing, and so is a level
    # nobody supports.
    for updates in (
        [("transaction.version", 0, UPGRADE)],
        [("group.version", 0, SAFE_DOWNGRADE), ("transaction.version", 3, UPGRADE)],
        [("kraft.version", 1, UPGRADE)],
        [("metadata.version", 6, SAFE_DOWNGRADE)],
        # 27 -> 22 crosses 4.0-IV1, which changed the metadata format.
        [("metadata.version", 22, SAFE_DOWNGRADE)],
        [("metadata.version", 22, UNSAFE_DOWNGRADE)],
        [("group.version", 1, 7)],
    ):
        resp = update_features(port, updates)
        assert resp.error_code == INVALID_UPDATE_VERSION, (updates, resp)
        assert resp.error_message, resp
    resp = update_features(port, [("group.version", 1, UPGRADE), ("group.version", 0, SAFE_DOWNGRADE)])
    assert resp.error_code == INVALID_REQUEST, resp
    assert finalized(api_versions(port)) == LATEST_LEVELS, "refused updates change nothing"

    # validate_only (v1+) checks without changing anything; v0-1 answer per feature too.
    resp = update_features(port, [("transaction.version", 0, SAFE_DOWNGRADE)], version=1, validate_only=True)
    assert resp.error_code == 0 and [(r.feature, r.error_code) for r in resp.results] == [
        ("transaction.version", 0)
    ], resp
    assert finalized(api_versions(port)) == LATEST_LEVELS

    resp = update_features(port, [("transaction.version", 0, SAFE_DOWNGRADE), ("metadata.version", 24, SAFE_DOWNGRADE)])
    assert resp.error_code == 0, resp
    after = api_versions(port)
    assert finalized(after) == {"metadata.version": 24, "group.version": 1}, "level 0 is not finalized"
    assert after.finalized_features_epoch > before.finalized_features_epoch

    # v0: `allow_downgrade` instead of a type; a level below 1 deletes the feature.
    resp = update_features(port, [("group.version", 0, SAFE_DOWNGRADE)], version=0)
    assert resp.error_code == 0 and resp.results[0].error_code == 0, resp

    broker.restart()
    assert finalized(api_versions(broker.port)) == {"metadata.version": 24}, "the levels are metadata records"

    resp = update_features(broker.port, [("transaction.version", 2, UPGRADE), ("group.version", 1, UPGRADE),
                                         ("metadata.version", 27, UPGRADE)])
    assert resp.error_code == 0, resp
    assert finalized(api_versions(broker.port)) == LATEST_LEVELS


def test_group_version_gates_the_consumer_group_protocol(broker):
    heartbeat = {
        "group_id": "features-gv",
        "member_id": "",
        "member_epoch": 0,
        "instance_id": None,
        "rack_id": None,
        "rebalance_timeout_ms": 30000,
        "subscribed_topic_names": ["t"],
        "subscribed_topic_regex": None,
        "server_assignor": None,
        "topic_partitions": [],
    }
    with VersionedClient("127.0.0.1", broker.port) as c:
        assert c.call(68, 0, heartbeat).error_code != UNSUPPORTED_VERSION
    assert update_features(broker.port, [("group.version", 0, SAFE_DOWNGRADE)]).error_code == 0
    with VersionedClient("127.0.0.1", broker.port) as c:
        assert c.call(68, 0, heartbeat).error_code == UNSUPPORTED_VERSION


def run_java_check(classpath: str, *args: str) -> str:
    """Runs strata.FeaturesTxnCheck (tests/java) and returns its output; fails on a failed check."""
    return run_java_main(classpath, "strata.FeaturesTxnCheck", *args)


def test_kafka_python_admin_describes_and_updates_features(broker):
    from kafka import KafkaAdminClient
    from kafka.errors import InvalidUpdateVersionError

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="strata-features")
    try:
        described = admin.describe_features()
        assert described["transaction.version"]["supported"] == (0, 2), described
        assert described["transaction.version"]["finalized"] == (2, 2), described
        assert described["metadata.version"]["finalized"] == (27, 27), described
        assert described["group.version"]["finalized_epoch"] > 0, described
        with pytest.raises(InvalidUpdateVersionError):
            admin.update_features({"transaction.version": 3})
        assert admin.update_features({"transaction.version": ("safe_downgrade", 1)}) == {"transaction.version": "OK"}
        assert admin.describe_features()["transaction.version"]["finalized"] == (1, 1)
    finally:
        admin.close()


@pytest.mark.timeout(240)
def test_java_admin_describes_and_updates_features(java_check_classpath, broker):
    run_java_check(java_check_classpath, broker.bootstrap, "features")


@pytest.mark.cluster
@pytest.mark.timeout(180)
def test_feature_levels_reach_every_node(cluster):
    cluster.wait_all_unfenced()
    ports = [n.port for n in cluster.brokers]
    for port in ports:
        wait_until(lambda: finalized(api_versions(port)) == LATEST_LEVELS, timeout=30, ignore=(OSError,),
                   msg=f"node on {port} reports the bootstrap levels")
    # A change through one node is committed through the quorum and seen by all.
    resp = update_features(ports[1], [("transaction.version", 1, SAFE_DOWNGRADE)])
    assert resp.error_code == 0, resp
    for port in ports:
        wait_until(lambda: finalized(api_versions(port)).get("transaction.version") == 1, timeout=30, ignore=(OSError,),
                   msg=f"node on {port} reports transaction.version 1")
    # And it survives the active controller's failover.
    controller = cluster.active_controller()
    controller.kill()
    controller.start()
    cluster.wait_all_unfenced(timeout=60)
    wait_until(lambda: finalized(api_versions(controller.port)).get("transaction.version") == 1, timeout=30, ignore=(OSError,),
               msg="the restarted controller reports transaction.version 1")
