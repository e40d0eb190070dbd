"""DescribeConfigs / AlterConfigs / IncrementalAlterConfigs."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, ResourceType

from helpers import create_topic, expect_kafka_error, make_admin

# Kafka defaults for topic-level configs when nothing is set at broker level.
KAFKA_TOPIC_DEFAULTS = {
    "cleanup.policy": "delete",
    "retention.ms": "604800000",
    "retention.bytes": "-1",
    "segment.bytes": "1073741824",
    "max.message.bytes": "1048588",
    "message.timestamp.type": "CreateTime",
    "compression.type": "producer",
}


def _src(entry) -> ConfigSource:
    return ConfigSource(entry.source) if not isinstance(entry.source, ConfigSource) else entry.source


def describe(admin, restype, name) -> dict:
    res = ConfigResource(restype, name)
    return admin.describe_configs([res], request_timeout=10)[res].result(timeout=10)


def incremental(admin, topic, *entries, validate_only=False):
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=list(entries))
    return admin.incremental_alter_configs([res], validate_only=validate_only, request_timeout=10)[res]


def _set(name, value):
    return ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)


def _delete(name):
    return ConfigEntry(name, None, incremental_operation=AlterConfigOpType.DELETE)


def test_describe_topic_defaults_and_overrides(broker, topic):
    admin = make_admin(broker.bootstrap)
    create_topic(admin, topic, partitions=1, config={"retention.ms": "3600000", "max.message.bytes": "500000"})
    cfg = describe(admin, ResourceType.TOPIC, topic)
    for name, value in KAFKA_TOPIC_DEFAULTS.items():
        assert name in cfg, f"{name} missing from DescribeConfigs"
    # overridden
    for name, value in {"retention.ms": "3600000", "max.message.bytes": "500000"}.items():
        e = cfg[name]
        assert e.value == value
        assert _src(e) == ConfigSource.DYNAMIC_TOPIC_CONFIG, (name, _src(e))
        assert e.is_default is False
        assert e.is_read_only is False
    # untouched -> Kafka defaults
    for name in ("cleanup.policy", "retention.bytes", "segment.bytes", "message.timestamp.type", "compression.type"):
        e = cfg[name]
        assert e.value == KAFKA_TOPIC_DEFAULTS[name], (name, e.value)
        assert _src(e) == ConfigSource.DEFAULT_CONFIG, (name, _src(e))
        assert e.is_default is True, name


def test_describe_topic_config_from_static_broker_override(broker_factory, topic):
    b = broker_factory(overrides={"log.retention.ms": "7200000", "log.segment.bytes": "2097152"})
    admin = make_admin(b.bootstrap)
    create_topic(admin, topic, partitions=1)
    cfg = describe(admin, ResourceType.TOPIC, topic)
    assert cfg["retention.ms"].value == "7200000"
    assert _src(cfg["retention.ms"]) == ConfigSource.STATIC_BROKER_CONFIG
    assert cfg["segment.bytes"].value == "2097152"
    assert _src(cfg["segment.bytes"]) == ConfigSource.STATIC_BROKER_CONFIG


def test_describe_unknown_topic(shared_broker):
    admin = make_admin(shared_broker.bootstrap)
    res = ConfigResource(ResourceType.TOPIC, "no-such-topic-for-configs")
    expect_kafka_error(admin.describe_configs([res], request_timeout=10)[res], KafkaError.UNKNOWN_TOPIC_OR_PART)


def test_incremental_alter_set_and_delete(shared_broker, topic):
    admin = make_admin(shared_broker.bootstrap)
    create_topic(admin, topic, partitions=1)
    incremental(admin, topic, _set("retention.ms", "1000"), _set("retention.bytes", "4096")).result(timeout=10)
    cfg = describe(admin, ResourceType.TOPIC, topic)
    assert (cfg["retention.ms"].value, _src(cfg["retention.ms"])) == ("1000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert (cfg["retention.bytes"].value, _src(cfg["retention.bytes"])) == ("4096", ConfigSource.DYNAMIC_TOPIC_CONFIG)

    incremental(admin, topic, _delete("retention.ms")).result(timeout=10)
    cfg = describe(admin, ResourceType.TOPIC, topic)
    assert cfg["retention.ms"].value == KAFKA_TOPIC_DEFAULTS["retention.ms"]
    assert _src(cfg["retention.ms"]) == ConfigSource.DEFAULT_CONFIG
    # untouched by the DELETE
    assert cfg["retention.bytes"].value == "4096"


def test_incremental_alter_validate_only(shared_broker, topic):
    admin = make_admin(shared_broker.bootstrap)
    create_topic(admin, topic, partitions=1)
    incremental(admin, topic, _set("retention.ms", "5000"), validate_only=True).result(timeout=10)
    assert describe(admin, ResourceType.TOPIC, topic)["retention.ms"].value == KAFKA_TOPIC_DEFAULTS["retention.ms"]


@pytest.mark.parametrize(
    "name,value",
    [("no.such.config", "1"), ("retention.ms", "not-a-number"), ("cleanup.policy", "sometimes"), ("min.insync.replicas", "0")],
    ids=["unknown-name", "bad-long", "bad-enum", "out-of-range"],
)
def test_incremental_alter_invalid(shared_broker, topic, name, value):
    admin = make_admin(shared_broker.bootstrap)
    create_topic(admin, topic, partitions=1)
    before = describe(admin, ResourceType.TOPIC, topic)
    expect_kafka_error(incremental(admin, topic, _set(name, value)), KafkaError.INVALID_CONFIG)
    after = describe(admin, ResourceType.TOPIC, topic)
    assert {k: v.value for k, v in after.items()} == {k: v.value for k, v in before.items()}


def test_incremental_alter_unknown_topic(shared_broker):
    admin = make_admin(shared_broker.bootstrap)
    expect_kafka_error(incremental(admin, "no-such-topic-to-alter", _set("retention.ms", "1000")), KafkaError.UNKNOWN_TOPIC_OR_PART)


def test_alter_configs_replaces_whole_set(shared_broker, topic):
    """Legacy AlterConfigs is not incremental: unspecified keys revert to defaults."""
    admin = make_admin(shared_broker.bootstrap)
    create_topic(admin, topic, partitions=1, config={"retention.ms": "1234567"})
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.bytes": "999999"})
    admin.alter_configs([res], request_timeout=10)[res].result(timeout=10)
    cfg = describe(admin, ResourceType.TOPIC, topic)
    assert cfg["retention.bytes"].value == "999999"
    assert _src(cfg["retention.bytes"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert cfg["retention.ms"].value == KAFKA_TOPIC_DEFAULTS["retention.ms"]
    assert _src(cfg["retention.ms"]) == ConfigSource.DEFAULT_CONFIG

    bad = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.bytes": "lots"})
    expect_kafka_error(admin.alter_configs([bad], request_timeout=10)[bad], KafkaError.INVALID_CONFIG)
    assert describe(admin, ResourceType.TOPIC, topic)["retention.bytes"].value == "999999"


def test_describe_broker_config(broker_factory):
    b = broker_factory(overrides={"num.partitions": 3, "log.retention.ms": "86400000"})
    admin = make_admin(b.bootstrap)
    [broker_id] = admin.list_topics(timeout=5).brokers
    cfg = describe(admin, ResourceType.BROKER, str(broker_id))
    assert cfg["num.partitions"].value == "3"
    assert _src(cfg["num.partitions"]) == ConfigSource.STATIC_BROKER_CONFIG
    assert cfg["log.retention.ms"].value == "86400000"
    for name in ("message.max.bytes", "auto.create.topics.enable", "log.segment.bytes"):
        assert name in cfg, f"broker config {name} missing"
    assert cfg["auto.create.topics.enable"].value == "true"
    assert _src(cfg["auto.create.topics.enable"]) == ConfigSource.DEFAULT_CONFIG


def test_dynamic_topic_config_survives_restart(broker, topic):
    admin = make_admin(broker.bootstrap)
    create_topic(admin, topic, partitions=1)
    incremental(admin, topic, _set("retention.ms", "4242424")).result(timeout=10)
    broker.restart()
    admin = make_admin(broker.bootstrap)
    cfg = describe(admin, ResourceType.TOPIC, topic)
    assert cfg["retention.ms"].value == "4242424"
    assert _src(cfg["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG


def test_kafka_python_describe_configs(shared_broker, topic):
    from kafka.admin import ConfigResource as KConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient

    admin = make_admin(shared_broker.bootstrap)
    create_topic(admin, topic, partitions=1, config={"retention.ms": "777777"})
    ka = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap, request_timeout_ms=10000)
    try:
        result = ka.describe_configs([KConfigResource(ConfigResourceType.TOPIC, topic)])
        text = repr(result)
        assert "777777" in text, text[:2000]
    finally:
        ka.close()
