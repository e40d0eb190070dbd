"""Every API version the broker advertises, answered as Kafka answers it.

One test sweeps the ApiVersions answer: for every API key and every version in its advertised
range it sends a populated request (a real topic with data, a real group, a real transactional
id, as the API needs), encoded by kafka-python 3's versioned message classes — a codec other than
the broker's — decodes the answer for that version (no bytes may be left over), checks its error
codes, and checks that the connection is still open. The key list comes from ApiVersions, so an
API added later is swept too, and fails until it has a request builder below.

A broker that cannot encode a response closes the connection; that shows here as
`ConnectionClosed`, and the broker log's `cannot encode` line is reported with it.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from confluent_kafka import TopicPartition
from kafka.record.default_records import DefaultRecordBatchBuilder

from group_helpers import assignment_bytes, subscription_bytes
from helpers import create_topic, make_admin, make_consumer, make_producer, wait_until
from versioned_wire import ConnectionClosed, DecodeError, VersionedClient, error_codes

# Kafka error codes the sweep may legitimately meet.
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
MEMBER_ID_REQUIRED = 79
ELECTION_NOT_NEEDED = 84
TRANSACTIONAL_ID_NOT_FOUND = 105
INVALID_REGULAR_EXPRESSION = 128
RESOURCE_NOT_FOUND = 91
INVALID_REQUEST = 42
ILLEGAL_SASL_STATE = 34
SCRAM_SHA_256 = 1
SCRAM_SHA_512 = 2

TOPIC = "sweep"
PARTITIONS = 3
GROUP = "sweep-group"
RECORDS_PER_PARTITION = 5
ZERO_UUID = uuid.UUID(int=0)
FAST_GROUPS = {"group.initial.rebalance.delay.ms": 0}


def record_batch(
    values: list[bytes],
    timestamp_ms: int | None = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
) -> bytes:
    """A v2 record batch built by kafka-python's record builder."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=transactional,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        batch_size=1 << 20,
    )
    ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    for i, v in enumerate(values):
        builder.append(i, timestamp=ts + i, key=None, value=v, headers=[])
    return bytes(builder.build())


@dataclass
class Sweep:
    """The world the requests refer to, and the connection they go over.

    In the strict pass (`strict`) the requests name the real topic and group and every error
    code must be 0 or one the builder allows. In the error pass they name a topic and group that
    do not exist: the answers are errors, and only their encoding is checked (they must decode
    for the version asked and leave the connection open), since error paths build responses
    differently."""

    broker: Any
    topic: str
    group: str
    topic_id: uuid.UUID
    first_timestamp: int
    ranges: dict[int, tuple[int, int]]
    strict: bool = True
    client: VersionedClient | None = None
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def max_versions(self) -> dict[int, int]:
        return {k: hi for k, (_, hi) in self.ranges.items()}

    def connect(self) -> VersionedClient:
        if self.client is None:
            self.client = VersionedClient("127.0.0.1", self.broker.port)
        return self.client

    def reconnect(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None

    def unique(self, prefix: str) -> str:
        n = self.counters.get(prefix, 0)
        self.counters[prefix] = n + 1
        return f"{prefix}-{n}"

    def call(self, api_key: int, version: int, values: dict[str, Any], allow: tuple[int, ...] = ()) -> Any:
        """Sends one request and, in the strict pass, checks that every error code in the
        answer is 0 or allowed."""
        resp = self.connect().call(api_key, version, values)
        if self.strict:
            bad = [(where, code) for where, code in error_codes(resp) if code != NONE and code not in allow]
            assert not bad, f"unexpected error codes {bad} in {resp}"
        return resp

    def latest(self, api_key: int, values: dict[str, Any], allow: tuple[int, ...] = ()) -> Any:
        """A set-up call at the newest advertised version."""
        return self.call(api_key, self.max_versions[api_key], values, allow)


# --------------------------------------------------------------------------------------------
# request builders: one per API key, each given the sweep and the version to send
# --------------------------------------------------------------------------------------------


def produce(s: Sweep, v: int) -> None:
    resp = s.call(
        0,
        v,
        {
            "transactional_id": None,
            "acks": -1,
            "timeout_ms": 10000,
            "topic_data": [
                {
                    "name": s.topic,
                    "topic_id": s.topic_id,
                    "partition_data": [{"index": 0, "records": record_batch([b"swept-%d" % v])}],
                }
            ],
        },
    )
    (topic,) = resp.responses
    if v >= 13:
        assert topic.topic_id == s.topic_id, resp
    else:
        assert topic.name == s.topic, resp
    part = topic.partition_responses[0]
    assert part.base_offset >= RECORDS_PER_PARTITION, resp


def fetch(s: Sweep, v: int) -> None:
    resp = s.call(
        1,
        v,
        {
            "replica_id": -1,
            "max_wait_ms": 0,
            "min_bytes": 1,
            "max_bytes": 1 << 20,
            "isolation_level": 0,
            "session_id": 0,
            "session_epoch": -1,
            "topics": [
                {
                    "topic": s.topic,
                    "topic_id": s.topic_id,
                    "partitions": [
                        {"partition": p, "current_leader_epoch": -1, "fetch_offset": 0,
                         "log_start_offset": -1, "partition_max_bytes": 1 << 20}
                        for p in range(PARTITIONS)
                    ],
                }
            ],
            "forgotten_topics_data": [],
            "rack_id": "",
        },
    )
    parts = resp.responses[0].partitions
    assert len(parts) == PARTITIONS, resp
    if v >= 13:
        assert resp.responses[0].topic_id == s.topic_id, resp
    else:
        assert resp.responses[0].topic == s.topic, resp
    for p in parts:
        assert p.high_watermark >= RECORDS_PER_PARTITION, resp
        assert p.records is not None and len(bytes(p.records)) > 0, f"no records in {p}"


def list_offsets(s: Sweep, v: int) -> None:
    targets = [-1, -2, s.first_timestamp + 1]
    for ts in targets:
        resp = s.call(
            2,
            v,
            {
                "replica_id": -1,
                "isolation_level": 0,
                "timeout_ms": 10000,
                "topics": [
                    {
                        "name": s.topic,
                        "partitions": [
                            {"partition_index": p, "current_leader_epoch": -1, "timestamp": ts}
                            for p in range(PARTITIONS)
                        ],
                    }
                ],
            },
        )
        for p in resp.topics[0].partitions:
            assert p.offset >= 0, f"ListOffsets v{v} timestamp {ts}: {p}"


def metadata(s: Sweep, v: int) -> None:
    resp = s.call(
        3,
        v,
        {
            "topics": [{"name": s.topic, "topic_id": ZERO_UUID}],
            "allow_auto_topic_creation": False,
            "include_cluster_authorized_operations": v <= 10,
            "include_topic_authorized_operations": True,
        },
    )
    assert len(resp.brokers) == 1, resp
    (topic,) = resp.topics
    assert topic.name == s.topic and len(topic.partitions) == PARTITIONS, resp
    if v >= 10:
        assert topic.topic_id == s.topic_id, resp
    if v >= 2:
        assert resp.cluster_id, resp


def offset_commit(s: Sweep, v: int) -> None:
    s.call(
        8,
        v,
        {
            "group_id": s.group,
            "generation_id_or_member_epoch": -1,
            "member_id": "",
            "group_instance_id": None,
            "retention_time_ms": -1,
            "topics": [
                {
                    "name": s.topic,
                    "partitions": [
                        {"partition_index": 0, "committed_offset": 2, "committed_leader_epoch": -1,
                         "committed_metadata": "swept"}
                    ],
                }
            ],
        },
    )


def offset_fetch(s: Sweep, v: int) -> None:
    topics = [{"name": s.topic, "partition_indexes": [0, 1]}]
    resp = s.call(
        9,
        v,
        {
            "group_id": s.group,
            "topics": topics,
            "groups": [{"group_id": s.group, "topics": topics}],
            "require_stable": True,
        },
    )
    groups = resp.groups if v >= 8 else [resp]
    (group,) = groups
    committed = [p.committed_offset for t in group.topics for p in t.partitions]
    assert committed and all(o >= 0 for o in committed), resp


def find_coordinator(s: Sweep, v: int) -> None:
    resp = s.call(10, v, {"key": s.group, "key_type": 0, "coordinator_keys": [s.group]})
    node = resp.coordinators[0].node_id if v >= 4 else resp.node_id
    assert node >= 0, resp


@dataclass
class ClassicMember:
    group: str
    member_id: str
    generation: int


def classic_join(s: Sweep, group: str, join_v: int | None = None, sync_v: int | None = None) -> ClassicMember:
    """A one-member classic group through JoinGroup and SyncGroup at the given versions."""
    join_v = s.max_versions[11] if join_v is None else join_v
    sync_v = s.max_versions[14] if sync_v is None else sync_v
    join = {
        "group_id": group,
        "session_timeout_ms": 10000,
        "rebalance_timeout_ms": 10000,
        "member_id": "",
        "group_instance_id": None,
        "protocol_type": "consumer",
        "protocols": [{"name": "range", "metadata": subscription_bytes([s.topic])}],
        "reason": None,
    }
    resp = s.call(11, join_v, join, allow=(MEMBER_ID_REQUIRED,))
    if resp.error_code == MEMBER_ID_REQUIRED:
        assert join_v >= 4 and resp.member_id, resp
        resp = s.call(11, join_v, {**join, "member_id": resp.member_id})
    assert resp.leader == resp.member_id and resp.generation_id >= 1, resp
    assert [m.member_id for m in resp.members] == [resp.member_id], resp
    member = ClassicMember(group, resp.member_id, resp.generation_id)
    sync = s.call(
        14,
        sync_v,
        {
            "group_id": group,
            "generation_id": member.generation,
            "member_id": member.member_id,
            "group_instance_id": None,
            "protocol_type": "consumer",
            "protocol_name": "range",
            "assignments": [
                {"member_id": member.member_id, "assignment": assignment_bytes({s.topic: [0, 1, 2]})}
            ],
        },
    )
    assert bytes(sync.assignment) == assignment_bytes({s.topic: [0, 1, 2]}), sync
    return member


def classic_leave(s: Sweep, m: ClassicMember, v: int | None = None) -> None:
    v = s.max_versions[13] if v is None else v
    s.call(
        13,
        v,
        {"group_id": m.group, "member_id": m.member_id,
         "members": [{"member_id": m.member_id, "group_instance_id": None, "reason": "swept"}]},
    )


def join_group(s: Sweep, v: int) -> None:
    classic_leave(s, classic_join(s, s.unique(f"sweep-join-v{v}"), join_v=v))


def sync_group(s: Sweep, v: int) -> None:
    classic_leave(s, classic_join(s, s.unique(f"sweep-sync-v{v}"), sync_v=v))


def heartbeat(s: Sweep, v: int) -> None:
    m = classic_join(s, s.unique(f"sweep-heartbeat-v{v}"))
    s.call(12, v, {"group_id": m.group, "generation_id": m.generation, "member_id": m.member_id,
                   "group_instance_id": None})
    classic_leave(s, m)


def leave_group(s: Sweep, v: int) -> None:
    m = classic_join(s, s.unique(f"sweep-leave-v{v}"))
    classic_leave(s, m, v)


def describe_groups(s: Sweep, v: int) -> None:
    m = classic_join(s, s.unique(f"sweep-describe-v{v}"))
    resp = s.call(15, v, {"groups": [m.group, s.group], "include_authorized_operations": True})
    stable, empty = resp.groups
    assert stable.group_state == "Stable" and len(stable.members) == 1, resp
    assert empty.group_state == "Empty", resp
    classic_leave(s, m)


def list_groups(s: Sweep, v: int) -> None:
    resp = s.call(16, v, {"states_filter": [], "types_filter": []})
    assert s.group in {g.group_id for g in resp.groups}, resp


def api_versions(s: Sweep, v: int) -> None:
    resp = s.call(18, v, {"client_software_name": "strata-sweep", "client_software_version": "1.0"})
    served = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
    assert served[18][1] == s.max_versions[18], resp


def create_topics(s: Sweep, v: int) -> None:
    name = s.unique(f"sweep-create-v{v}")
    resp = s.call(
        19,
        v,
        {
            "topics": [
                {"name": name, "num_partitions": 2, "replication_factor": 1, "assignments": [],
                 "configs": [{"name": "retention.ms", "value": "3600000"}]}
            ],
            "timeout_ms": 10000,
            "validate_only": False,
        },
    )
    (topic,) = resp.topics
    assert topic.name == name, resp
    if v >= 7:
        assert topic.topic_id != ZERO_UUID, resp
    if v >= 5:
        assert topic.num_partitions == 2 and topic.replication_factor == 1, resp
        assert any(c.name == "retention.ms" and c.value == "3600000" for c in topic.configs), resp


def create_one(s: Sweep, name: str, partitions: int = 1) -> uuid.UUID:
    resp = s.latest(
        19,
        {"topics": [{"name": name, "num_partitions": partitions, "replication_factor": 1,
                     "assignments": [], "configs": []}],
         "timeout_ms": 10000, "validate_only": False},
    )
    return resp.topics[0].topic_id


def delete_topics(s: Sweep, v: int) -> None:
    name = s.unique(f"sweep-delete-v{v}")
    topic_id = create_one(s, name)
    resp = s.call(
        20,
        v,
        {"topic_names": [name], "topics": [{"name": name, "topic_id": ZERO_UUID}], "timeout_ms": 10000},
    )
    (result,) = resp.responses
    assert result.name == name, resp
    if v >= 6:
        assert result.topic_id == topic_id, resp


def delete_records(s: Sweep, v: int) -> None:
    name = s.unique(f"sweep-delete-records-v{v}")
    topic_id = create_one(s, name)
    s.latest(0, {"transactional_id": None, "acks": -1, "timeout_ms": 10000,
                 "topic_data": [{"name": name, "topic_id": topic_id,
                                 "partition_data": [{"index": 0, "records": record_batch([b"a", b"b", b"c"])}]}]})
    resp = s.call(21, v, {"topics": [{"name": name, "partitions": [{"partition_index": 0, "offset": 2}]}],
                          "timeout_ms": 10000})
    assert resp.topics[0].partitions[0].low_watermark == 2, resp


def init_producer_id(s: Sweep, v: int) -> None:
    for txn_id in (None, s.unique(f"sweep-init-v{v}")):
        resp = s.call(22, v, {"transactional_id": txn_id, "transaction_timeout_ms": 60000,
                              "producer_id": -1, "producer_epoch": -1})
        assert resp.producer_id >= 0 and resp.producer_epoch >= 0, resp


def offset_for_leader_epoch(s: Sweep, v: int) -> None:
    resp = s.call(
        23,
        v,
        {"replica_id": -1,
         "topics": [{"topic": s.topic, "partitions": [{"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]}]},
    )
    assert resp.topics[0].partitions[0].end_offset >= RECORDS_PER_PARTITION, resp


@dataclass
class Txn:
    transactional_id: str
    producer_id: int
    producer_epoch: int


def begin_txn(s: Sweep, prefix: str) -> Txn:
    txn_id = s.unique(prefix)
    resp = s.latest(22, {"transactional_id": txn_id, "transaction_timeout_ms": 60000,
                         "producer_id": -1, "producer_epoch": -1})
    return Txn(txn_id, resp.producer_id, resp.producer_epoch)


def add_partitions(s: Sweep, t: Txn, v: int) -> Any:
    topics = [{"name": s.topic, "partitions": [0]}]
    return s.call(
        24,
        v,
        {
            "v3_and_below_transactional_id": t.transactional_id,
            "v3_and_below_producer_id": t.producer_id,
            "v3_and_below_producer_epoch": t.producer_epoch,
            "v3_and_below_topics": topics,
            "transactions": [{"transactional_id": t.transactional_id, "producer_id": t.producer_id,
                              "producer_epoch": t.producer_epoch, "verify_only": False, "topics": topics}],
        },
    )


def end_txn(s: Sweep, t: Txn, commit: bool, v: int | None = None) -> Any:
    v = s.max_versions[26] if v is None else v
    return s.call(26, v, {"transactional_id": t.transactional_id, "producer_id": t.producer_id,
                          "producer_epoch": t.producer_epoch, "committed": commit})


def add_partitions_to_txn(s: Sweep, v: int) -> None:
    if v >= 4:
        # v4+ is the batched form a broker sends to verify partitions (KIP-890): the client form
        # added the partition first, and the verification finds it there.
        t = begin_txn(s, f"sweep-add-partitions-v{v}")
        add_partitions(s, t, 3)
        resp = s.call(24, v, {"transactions": [
            {"transactional_id": t.transactional_id, "producer_id": t.producer_id,
             "producer_epoch": t.producer_epoch, "verify_only": True,
             "topics": [{"name": s.topic, "partitions": [0]}]}]})
        assert resp.results_by_transaction[0].transactional_id == t.transactional_id, resp
    else:
        t = begin_txn(s, f"sweep-add-partitions-v{v}")
        resp = add_partitions(s, t, v)
        assert resp.results_by_topic_v3_and_below[0].name == s.topic, resp
    end_txn(s, t, commit=False)


def add_offsets_to_txn(s: Sweep, v: int) -> None:
    t = begin_txn(s, f"sweep-add-offsets-v{v}")
    s.call(25, v, {"transactional_id": t.transactional_id, "producer_id": t.producer_id,
                   "producer_epoch": t.producer_epoch, "group_id": s.unique("sweep-txn-group")})
    end_txn(s, t, commit=False)


def txn_produce(s: Sweep, t: Txn, values: list[bytes]) -> None:
    s.latest(0, {"transactional_id": t.transactional_id, "acks": -1, "timeout_ms": 10000,
                 "topic_data": [{"name": s.topic, "topic_id": s.topic_id, "partition_data": [
                     {"index": 0, "records": record_batch(values, producer_id=t.producer_id,
                                                          producer_epoch=t.producer_epoch,
                                                          base_sequence=0, transactional=True)}]}]})


def end_txn_api(s: Sweep, v: int) -> None:
    for commit in (True, False):
        t = begin_txn(s, f"sweep-end-txn-v{v}")
        add_partitions(s, t, 3)
        txn_produce(s, t, [b"in-txn"])
        end_txn(s, t, commit=commit, v=v)


def write_txn_markers(s: Sweep, v: int) -> None:
    # A coordinator's markers for an idempotent producer with nothing open: Kafka appends them.
    pid = s.latest(22, {"transactional_id": None, "transaction_timeout_ms": 60000,
                        "producer_id": -1, "producer_epoch": -1})
    resp = s.call(
        27,
        v,
        {"markers": [{"producer_id": pid.producer_id, "producer_epoch": pid.producer_epoch,
                      "transaction_result": False, "coordinator_epoch": 0, "transaction_version": 1,
                      "topics": [{"name": s.topic, "partition_indexes": [2]}]}]},
    )
    assert resp.markers[0].producer_id == pid.producer_id, resp


def txn_offset_commit(s: Sweep, v: int) -> None:
    t = begin_txn(s, f"sweep-txn-offset-commit-v{v}")
    group = s.unique("sweep-txn-group")
    s.latest(25, {"transactional_id": t.transactional_id, "producer_id": t.producer_id,
                  "producer_epoch": t.producer_epoch, "group_id": group})
    s.call(
        28,
        v,
        {"transactional_id": t.transactional_id, "group_id": group, "producer_id": t.producer_id,
         "producer_epoch": t.producer_epoch, "generation_id": -1, "member_id": "", "group_instance_id": None,
         "topics": [{"name": s.topic, "partitions": [
             {"partition_index": 0, "committed_offset": 1, "committed_leader_epoch": -1,
              "committed_metadata": "swept"}]}]},
    )
    end_txn(s, t, commit=True)


def update_features(s: Sweep, v: int) -> None:
    # Finalizes transaction.version at the level a new cluster has: a change that changes
    # nothing, so that the sweep leaves the cluster as it found it (v0 has no validate_only).
    resp = s.call(57, v, {"timeout_ms": 10000, "validate_only": v >= 1,
                          "feature_updates": [{"feature": "transaction.version", "max_version_level": 2,
                                               "upgrade_type": 1, "allow_downgrade": False}]})
    if v <= 1:
        assert [r.feature for r in resp.results] == ["transaction.version"], resp


TOPIC_RESOURCE = 2
BROKER_RESOURCE = 4


def describe_configs(s: Sweep, v: int) -> None:
    resp = s.call(
        32,
        v,
        {"resources": [
            {"resource_type": TOPIC_RESOURCE, "resource_name": s.topic, "configuration_keys": None},
            {"resource_type": BROKER_RESOURCE, "resource_name": "1", "configuration_keys": ["log.retention.ms"]},
        ],
         "include_synonyms": True, "include_documentation": True},
    )
    topic, broker = resp.results
    assert any(c.name == "retention.ms" for c in topic.configs), resp
    assert [c.name for c in broker.configs] == ["log.retention.ms"], resp


def alter_configs(s: Sweep, v: int) -> None:
    s.call(
        33,
        v,
        {"resources": [{"resource_type": TOPIC_RESOURCE, "resource_name": s.topic,
                        "configs": [{"name": "retention.ms", "value": str(86400000 + v)}]}],
         "validate_only": False},
    )


def describe_log_dirs(s: Sweep, v: int) -> None:
    for topics in (None, [{"topic": s.topic, "partitions": [0, 1, 2]}]):
        resp = s.call(35, v, {"topics": topics})
        partitions = {(t.name, p.partition_index) for r in resp.results for t in r.topics for p in t.partitions}
        assert {(s.topic, p) for p in range(PARTITIONS)} <= partitions, resp


def create_partitions(s: Sweep, v: int) -> None:
    name = s.unique(f"sweep-create-partitions-v{v}")
    create_one(s, name)
    s.call(37, v, {"topics": [{"name": name, "count": 3, "assignments": None}], "timeout_ms": 10000,
                   "validate_only": False})


def delete_groups(s: Sweep, v: int) -> None:
    group = s.unique(f"sweep-delete-group-v{v}")
    s.latest(8, {"group_id": group, "generation_id_or_member_epoch": -1, "member_id": "",
                 "group_instance_id": None, "topics": [{"name": s.topic, "partitions": [
                     {"partition_index": 0, "committed_offset": 1, "committed_leader_epoch": -1,
                      "committed_metadata": None}]}]})
    resp = s.call(42, v, {"groups_names": [group]})
    assert resp.results[0].group_id == group, resp


def elect_leaders(s: Sweep, v: int) -> None:
    resp = s.call(
        43,
        v,
        {"election_type": 0, "topic_partitions": [{"topic": s.topic, "partitions": [0]}], "timeout_ms": 10000},
        allow=(ELECTION_NOT_NEEDED,),
    )
    assert resp.replica_election_results[0].topic == s.topic, resp


def incremental_alter_configs(s: Sweep, v: int) -> None:
    s.call(
        44,
        v,
        {"resources": [{"resource_type": TOPIC_RESOURCE, "resource_name": s.topic,
                        "configs": [{"name": "retention.ms", "config_operation": 0, "value": str(90000000 + v)}]}],
         "validate_only": False},
    )


def alter_partition_reassignments(s: Sweep, v: int) -> None:
    # Moving a partition onto the replicas it already has completes at once.
    s.call(
        45,
        v,
        {"timeout_ms": 10000, "allow_replication_factor_change": True,
         "topics": [{"name": s.topic, "partitions": [{"partition_index": 0, "replicas": [1]}]}]},
    )


def list_partition_reassignments(s: Sweep, v: int) -> None:
    s.call(46, v, {"timeout_ms": 10000, "topics": None})


def offset_delete(s: Sweep, v: int) -> None:
    group = s.unique(f"sweep-offset-delete-v{v}")
    s.latest(8, {"group_id": group, "generation_id_or_member_epoch": -1, "member_id": "",
                 "group_instance_id": None, "topics": [{"name": s.topic, "partitions": [
                     {"partition_index": 1, "committed_offset": 1, "committed_leader_epoch": -1,
                      "committed_metadata": None}]}]})
    s.call(47, v, {"group_id": group, "topics": [{"name": s.topic, "partitions": [{"partition_index": 1}]}]})


def describe_quorum(s: Sweep, v: int) -> None:
    resp = s.call(55, v, {"topics": [{"topic_name": "__cluster_metadata", "partitions": [{"partition_index": 0}]}]})
    assert resp.topics[0].partitions[0].leader_id == 1, resp


def describe_cluster(s: Sweep, v: int) -> None:
    resp = s.call(60, v, {"include_cluster_authorized_operations": True, "endpoint_type": 1,
                          "include_fenced_brokers": True})
    assert [b.broker_id for b in resp.brokers] == [1], resp


def describe_producers(s: Sweep, v: int) -> None:
    resp = s.call(61, v, {"topics": [{"name": s.topic, "partition_indexes": [0, 1, 2]}]})
    assert len(resp.topics[0].partitions) == PARTITIONS, resp


def describe_transactions(s: Sweep, v: int) -> None:
    t = begin_txn(s, f"sweep-describe-txn-v{v}")
    add_partitions(s, t, 3)
    resp = s.call(65, v, {"transactional_ids": [t.transactional_id, "sweep-no-such-txn"]},
                  allow=(TRANSACTIONAL_ID_NOT_FOUND,))
    found, missing = resp.transaction_states
    assert found.error_code == NONE and found.transaction_state == "Ongoing", resp
    assert missing.error_code == TRANSACTIONAL_ID_NOT_FOUND, resp
    end_txn(s, t, commit=False)


def list_transactions(s: Sweep, v: int) -> None:
    t = begin_txn(s, f"sweep-list-txn-v{v}")
    resp = s.call(66, v, {"state_filters": [], "producer_id_filters": [], "duration_filter": -1,
                          "transactional_id_pattern": None})
    assert t.transactional_id in {x.transactional_id for x in resp.transaction_states}, resp
    if v >= 2:
        # KIP-1152: the whole id must match the pattern.
        listed = s.call(66, v, {"transactional_id_pattern": "sweep-list-txn-v2-.*"})
        assert {x.transactional_id for x in listed.transaction_states} == {t.transactional_id}, listed
        assert not s.call(66, v, {"transactional_id_pattern": "list-txn"}).transaction_states
        bad = s.call(66, v, {"transactional_id_pattern": "("}, allow=(INVALID_REGULAR_EXPRESSION,))
        assert bad.error_code == INVALID_REGULAR_EXPRESSION, bad


def consumer_group_heartbeat(s: Sweep, v: int) -> None:
    group = s.unique(f"sweep-consumer-group-v{v}")
    member_id = str(uuid.uuid4()) if v >= 1 else ""
    resp = s.call(
        68,
        v,
        {"group_id": group, "member_id": member_id, "member_epoch": 0, "instance_id": None, "rack_id": None,
         "rebalance_timeout_ms": 30000, "subscribed_topic_names": [s.topic], "subscribed_topic_regex": None,
         "server_assignor": None, "topic_partitions": []},
    )
    assert resp.member_id and resp.member_epoch >= 1, resp
    s.call(68, v, {"group_id": group, "member_id": resp.member_id, "member_epoch": -1,
                   "subscribed_topic_names": None, "topic_partitions": None})


def consumer_group_describe(s: Sweep, v: int) -> None:
    group = s.unique(f"sweep-consumer-group-describe-v{v}")
    joined = s.latest(
        68,
        {"group_id": group, "member_id": str(uuid.uuid4()), "member_epoch": 0, "rebalance_timeout_ms": 30000,
         "subscribed_topic_names": [s.topic], "topic_partitions": []},
    )
    resp = s.call(69, v, {"group_ids": [group], "include_authorized_operations": True})
    (g,) = resp.groups
    assert [m.member_id for m in g.members] == [joined.member_id], resp
    s.latest(68, {"group_id": group, "member_id": joined.member_id, "member_epoch": -1,
                  "subscribed_topic_names": None, "topic_partitions": None})


def list_config_resources(s: Sweep, v: int) -> None:
    resp = s.call(74, v, {"resource_types": []})
    if v >= 1:
        listed = {(r.resource_type, r.resource_name) for r in resp.config_resources}
        assert (TOPIC_RESOURCE, s.topic) in listed or not s.strict, resp
        assert (BROKER_RESOURCE, "1") in listed, resp
        only_topics = s.call(74, v, {"resource_types": [TOPIC_RESOURCE]})
        assert {r.resource_type for r in only_topics.config_resources} == {TOPIC_RESOURCE}, only_topics


# The sweep's broker has no authorizer: the ACL APIs answer SECURITY_DISABLED, as Kafka's do
# (tests/python/test_acls.py drives them on a broker with the StandardAuthorizer).
SECURITY_DISABLED = 54
ANY_ACL_FILTER = {"resource_type_filter": 1, "resource_name_filter": None, "pattern_type_filter": 1,
                  "principal_filter": None, "host_filter": None, "operation": 1, "permission_type": 1}


def describe_acls(s: Sweep, v: int) -> None:
    resp = s.call(29, v, ANY_ACL_FILTER, allow=(SECURITY_DISABLED,))
    assert resp.error_code == SECURITY_DISABLED and resp.resources == [], resp


def create_acls(s: Sweep, v: int) -> None:
    resp = s.call(30, v, {"creations": [
        {"resource_type": 2, "resource_name": s.topic, "resource_pattern_type": 3, "principal": "User:sweep",
         "host": "*", "operation": 3, "permission_type": 3}]}, allow=(SECURITY_DISABLED,))
    assert [r.error_code for r in resp.results] == [SECURITY_DISABLED], resp


def delete_acls(s: Sweep, v: int) -> None:
    resp = s.call(31, v, {"filters": [ANY_ACL_FILTER]}, allow=(SECURITY_DISABLED,))
    assert [r.error_code for r in resp.filter_results] == [SECURITY_DISABLED], resp


def describe_topic_partitions(s: Sweep, v: int) -> None:
    resp = s.call(75, v, {"topics": [{"name": s.topic}], "response_partition_limit": 2000, "cursor": None})
    assert len(resp.topics[0].partitions) == PARTITIONS, resp
    assert resp.topics[0].topic_id == s.topic_id, resp


def describe_user_scram_credentials(s: Sweep, v: int) -> None:
    user = s.unique(f"sweep-scram-describe-v{v}")
    s.latest(51, {"deletions": [], "upsertions": [scram_upsertion(user, SCRAM_SHA_512, 8192)]})
    resp = s.call(50, v, {"users": [{"name": user}, {"name": "sweep-scram-nobody"}]}, allow=(RESOURCE_NOT_FOUND,))
    found = {r.user: r for r in resp.results}
    assert found["sweep-scram-nobody"].error_code == RESOURCE_NOT_FOUND, resp
    infos = [(c.mechanism, c.iterations) for c in found[user].credential_infos]
    assert infos == [(SCRAM_SHA_512, 8192)], resp
    everyone = s.call(50, v, {"users": None})
    assert user in {r.user for r in everyone.results}, everyone


def quota_entry(user: str, key: str, value: float | None) -> dict[str, Any]:
    """One AlterClientQuotas entry: set `key` of user `user`, or remove it (value None)."""
    return {"entity": [{"entity_type": "user", "entity_name": user}],
            "ops": [{"key": key, "value": value or 0.0, "remove": value is None}]}


def describe_client_quotas(s: Sweep, v: int) -> None:
    user = s.unique(f"sweep-quota-describe-v{v}")
    s.latest(49, {"entries": [quota_entry(user, "consumer_byte_rate", 4096.0)], "validate_only": False})
    exact = {"components": [{"entity_type": "user", "match_type": 0, "match": user}], "strict": True}
    resp = s.call(48, v, exact)
    found = [([(e.entity_type, e.entity_name) for e in entry.entity], [(q.key, q.value) for q in entry.values])
             for entry in resp.entries]
    assert found == [([("user", user)], [("consumer_byte_rate", 4096.0)])], resp
    bad = {"components": [{"entity_type": "user", "match_type": 0, "match": None}], "strict": False}
    refused = s.call(48, v, bad, allow=(INVALID_REQUEST,))
    assert (refused.error_code, refused.entries) == (INVALID_REQUEST, None), refused


def alter_client_quotas(s: Sweep, v: int) -> None:
    user = s.unique(f"sweep-quota-alter-v{v}")
    for entry, code in [
        (quota_entry(user, "producer_byte_rate", 1024.0), NONE),
        (quota_entry(user, "producer_byte_rate", 0.5), INVALID_REQUEST),
        (quota_entry(user, "producer_byte_rate", None), NONE),
    ]:
        resp = s.call(49, v, {"entries": [entry], "validate_only": False}, allow=(INVALID_REQUEST,))
        assert [(e.error_code, [(x.entity_type, x.entity_name) for x in e.entity]) for e in resp.entries] == [
            (code, [("user", user)])
        ], resp


def sasl_handshake(s: Sweep, v: int) -> None:
    # The sweep's listener is PLAINTEXT: nothing to authenticate, and Kafka's KafkaApis
    # answers ILLEGAL_SASL_STATE. The exchange on SASL listeners is swept in test_sasl.py.
    resp = s.call(17, v, {"mechanism": "PLAIN"}, allow=(ILLEGAL_SASL_STATE,))
    assert resp.error_code == ILLEGAL_SASL_STATE, resp


def sasl_authenticate(s: Sweep, v: int) -> None:
    resp = s.call(36, v, {"auth_bytes": b"\0sweep\0sweep-secret"}, allow=(ILLEGAL_SASL_STATE,))
    assert resp.error_code == ILLEGAL_SASL_STATE, resp


def scram_upsertion(user: str, mechanism: int, iterations: int) -> dict[str, Any]:
    """A credential as a client sends it: salted by the client, never the password."""
    salt = os.urandom(16)
    algorithm = "sha256" if mechanism == SCRAM_SHA_256 else "sha512"
    return {"name": user, "mechanism": mechanism, "iterations": iterations, "salt": salt,
            "salted_password": hashlib.pbkdf2_hmac(algorithm, b"sweep-secret", salt, iterations)}


def alter_user_scram_credentials(s: Sweep, v: int) -> None:
    user = s.unique(f"sweep-scram-alter-v{v}")
    resp = s.call(51, v, {"deletions": [], "upsertions": [scram_upsertion(user, SCRAM_SHA_256, 4096)]})
    assert [(r.user, r.error_code) for r in resp.results] == [(user, NONE)], resp
    gone = s.call(51, v, {"deletions": [{"name": user, "mechanism": SCRAM_SHA_256}], "upsertions": []})
    assert [(r.user, r.error_code) for r in gone.results] == [(user, NONE)], gone


BUILDERS: dict[int, Callable[[Sweep, int], None]] = {
    0: produce,
    1: fetch,
    2: list_offsets,
    3: metadata,
    8: offset_commit,
    9: offset_fetch,
    10: find_coordinator,
    11: join_group,
    12: heartbeat,
    13: leave_group,
    14: sync_group,
    15: describe_groups,
    16: list_groups,
    17: sasl_handshake,
    18: api_versions,
    19: create_topics,
    20: delete_topics,
    21: delete_records,
    22: init_producer_id,
    23: offset_for_leader_epoch,
    24: add_partitions_to_txn,
    25: add_offsets_to_txn,
    26: end_txn_api,
    27: write_txn_markers,
    28: txn_offset_commit,
    29: describe_acls,
    30: create_acls,
    31: delete_acls,
    32: describe_configs,
    33: alter_configs,
    35: describe_log_dirs,
    36: sasl_authenticate,
    37: create_partitions,
    42: delete_groups,
    43: elect_leaders,
    44: incremental_alter_configs,
    45: alter_partition_reassignments,
    46: list_partition_reassignments,
    47: offset_delete,
    48: describe_client_quotas,
    49: alter_client_quotas,
    50: describe_user_scram_credentials,
    51: alter_user_scram_credentials,
    55: describe_quorum,
    57: update_features,
    60: describe_cluster,
    61: describe_producers,
    65: describe_transactions,
    66: list_transactions,
    68: consumer_group_heartbeat,
    69: consumer_group_describe,
    74: list_config_resources,
    75: describe_topic_partitions,
}


# --------------------------------------------------------------------------------------------
# the sweep
# --------------------------------------------------------------------------------------------


def populate(broker, bootstrap: str) -> Sweep:
    """The sweep's world on a running broker or cluster: a topic with records on every
    partition, and an empty classic group with committed offsets. Requests go to `broker`."""
    admin = make_admin(bootstrap)
    create_topic(admin, TOPIC, partitions=PARTITIONS)
    first_ts = int(time.time() * 1000) - 60_000
    p = make_producer(bootstrap, linger_ms=0)
    for part in range(PARTITIONS):
        for i in range(RECORDS_PER_PARTITION):
            p.produce(TOPIC, value=b"v%d" % i, partition=part, timestamp=first_ts + i)
    assert p.flush(30) == 0
    c = make_consumer(bootstrap, group_id=GROUP)
    c.commit(offsets=[TopicPartition(TOPIC, part, 1) for part in range(PARTITIONS)], asynchronous=False)
    c.close()
    with VersionedClient("127.0.0.1", broker.port) as client:
        versions = client.call(18, 3, {"client_software_name": "strata-sweep", "client_software_version": "1.0"})
        assert versions.error_code == NONE, versions
        md = client.call(3, 12, {"topics": [{"name": TOPIC, "topic_id": ZERO_UUID}],
                                 "allow_auto_topic_creation": False,
                                 "include_topic_authorized_operations": False})
    return Sweep(broker=broker, topic=TOPIC, group=GROUP, topic_id=md.topics[0].topic_id,
                 first_timestamp=first_ts,
                 ranges={k.api_key: (k.min_version, k.max_version) for k in versions.api_keys})


@pytest.fixture
def sweep(broker_factory) -> Sweep:
    broker = broker_factory(overrides=FAST_GROUPS)
    s = populate(broker, broker.bootstrap)
    yield s
    s.reconnect()


def sweep_all(s: Sweep) -> tuple[int, list[str]]:
    """Every advertised version of every API through its builder: (versions swept, failures)."""
    failures: list[str] = []
    swept = 0
    for api_key, (lo, hi) in sorted(s.ranges.items()):
        builder = BUILDERS.get(api_key)
        if builder is None:
            failures.append(f"API {api_key} v{lo}-{hi} is advertised but the sweep has no request builder")
            continue
        for v in range(lo, hi + 1):
            swept += 1
            try:
                builder(s, v)
            except (ConnectionClosed, DecodeError, OSError) as e:
                failures.append(f"API {api_key} ({builder.__name__}) v{v}: {type(e).__name__}: {e}")
                s.reconnect()
                continue
            except (AssertionError, ValueError, KeyError, AttributeError, IndexError) as e:
                # A semantic check: binding in the strict pass only (an error answer lacks
                # what a success has).
                if s.strict:
                    failures.append(f"API {api_key} ({builder.__name__}) v{v}: {type(e).__name__}: {e}")
            try:
                # The connection must still answer after whatever the builder sent.
                s.connect().call(18, 0, {})
            except (ConnectionClosed, DecodeError, OSError) as e:
                failures.append(f"API {api_key} ({builder.__name__}) v{v}: connection lost: {e}")
                s.reconnect()
    return swept, failures


def encode_failures(broker) -> list[str]:
    log = broker.log_path.read_text(errors="replace")
    return [line for line in log.splitlines() if "cannot encode" in line]


@pytest.mark.timeout(300)
def test_every_advertised_api_version(sweep: Sweep) -> None:
    swept, failures = sweep_all(sweep)
    failures += encode_failures(sweep.broker)
    assert not failures, f"{len(failures)} failures in {swept} versions:\n" + "\n".join(failures)
    assert swept >= 150, f"only {swept} versions swept"


@pytest.mark.timeout(300)
def test_every_advertised_api_version_error_answers(sweep: Sweep) -> None:
    """The same requests naming a topic, group and topic id that do not exist."""
    sweep.strict = False
    sweep.topic = "sweep-no-such-topic"
    sweep.group = "sweep-no-such-group"
    sweep.topic_id = uuid.uuid4()
    swept, failures = sweep_all(sweep)
    failures += encode_failures(sweep.broker)
    assert not failures, f"{len(failures)} failures in {swept} versions:\n" + "\n".join(failures)


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_every_advertised_api_version_on_a_cluster(cluster_factory) -> None:
    """The sweep against one node of three, which leads only some partitions and coordinates only
    some groups and transactions: the answers it gives for the others (NOT_LEADER_OR_FOLLOWER
    with the leader's endpoint, NOT_COORDINATOR, ...) must encode for every version too."""
    cluster = cluster_factory(n=3, overrides=FAST_GROUPS)
    node = cluster.node(1)
    s = populate(node, cluster.bootstrap)
    s.strict = False
    try:
        swept, failures = sweep_all(s)
    finally:
        s.reconnect()
    for n in cluster.nodes:
        failures += encode_failures(n)
    assert not failures, f"{len(failures)} failures in {swept} versions:\n" + "\n".join(failures)
