"""Helpers for the consumer-group end-to-end tests (test_groups.py).

- `Member`: a confluent-kafka group consumer that records what it consumed and
  every rebalance callback, polled by the test (never from a thread).
- `poll_until`: round-robin poll a set of members until a condition holds.
- `RawGroupClient`: one TCP connection speaking the group APIs with exact
  versions (requests/responses built by kafka-python's JSON-schema messages), for
  error codes that librdkafka hides behind its own retry logic.
"""

from __future__ import annotations

import itertools
import struct
import time
from typing import Any, Callable, Iterable

from confluent_kafka import KafkaError, TopicPartition
from kafka.protocol.admin import (
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    ListGroupsRequest,
    ListGroupsResponse,
)
from kafka.protocol.consumer import (
    HeartbeatRequest,
    HeartbeatResponse,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    LeaveGroupResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetDeleteRequest,
    OffsetDeleteResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    SyncGroupRequest,
    SyncGroupResponse,
)
from kafka.protocol.metadata import FindCoordinatorRequest, FindCoordinatorResponse

from helpers import make_consumer, raw_connect, read_frame, wait_until

# Kafka error codes used by the group tests
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
FENCED_INSTANCE_ID = 82
GROUP_SUBSCRIBED_TO_TOPIC = 86
STALE_MEMBER_EPOCH = 113
UNSUPPORTED_VERSION = 35


# --------------------------------------------------------------------------
# confluent-kafka group members
# --------------------------------------------------------------------------


def tp_set(parts: Iterable[TopicPartition]) -> set[tuple[str, int]]:
    return {(tp.topic, tp.partition) for tp in parts}


class Member:
    """A subscribed confluent-kafka consumer plus a log of what happened to it.

    Rebalance callbacks only record; confluent-kafka then performs the
    (incremental_)assign/unassign itself, as it does without callbacks.
    """

    def __init__(self, bootstrap: str, group: str, topics: list[str], name: str = "m", **conf: Any):
        base = {
            "group.id": group,
            "client.id": name,
            "heartbeat.interval.ms": 300,
            "session.timeout.ms": 10000,
            "enable.auto.offset.store": True,
            "topic.metadata.refresh.interval.ms": 1000,
        }
        base.update({k.replace("_", "."): v for k, v in conf.items()})
        self.name = name
        self.group = group
        self.records: list[tuple[str, int, int, bytes | None]] = []  # topic, partition, offset, value
        self.assigned: list[set[tuple[str, int]]] = []
        self.revoked: list[set[tuple[str, int]]] = []
        self.lost: list[set[tuple[str, int]]] = []
        self.errors: list[KafkaError] = []
        self.closed = False
        self.c = make_consumer(bootstrap, **base)
        self.c.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    # callbacks -------------------------------------------------------------
    def _on_assign(self, consumer, parts):
        self.assigned.append(tp_set(parts))

    def _on_revoke(self, consumer, parts):
        self.revoked.append(tp_set(parts))

    def _on_lost(self, consumer, parts):
        self.lost.append(tp_set(parts))

    # polling ---------------------------------------------------------------
    def poll(self, timeout: float = 0.05) -> int:
        if self.closed:
            return 0
        n = 0
        for m in self.c.consume(num_messages=500, timeout=timeout):
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self.errors.append(err)
                continue
            self.records.append((m.topic(), m.partition(), m.offset(), m.value()))
            n += 1
        return n

    def assignment(self) -> set[tuple[str, int]]:
        return tp_set(self.c.assignment())

    def values(self) -> list[bytes | None]:
        return [r[3] for r in self.records]

    def positions(self) -> set[tuple[str, int, int]]:
        return {(t, p, o) for t, p, o, _ in self.records}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.c.close()

    def __repr__(self) -> str:
        return f"<Member {self.name} records={len(self.records)} assigned={self.assigned} revoked={self.revoked}>"


def poll_until(
    members: Iterable[Member],
    cond: Callable[[], Any],
    timeout: float = 20.0,
    msg: str | Callable[[], str] | None = None,
    each: Callable[[], None] | None = None,
) -> Any:
    """Round-robin poll all (open) members until `cond()` is truthy."""
    members = list(members)

    def step():
        for m in members:
            m.poll(0.02)
        if each is not None:
            each()
        return cond()

    return wait_until(step, timeout=timeout, interval=0.0, msg=msg)


def poll_for(members: Iterable[Member], seconds: float) -> None:
    """Keep members alive (serving callbacks/heartbeats) for a fixed time window.

    Used only where a test must show that something does *not* happen."""
    members = list(members)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for m in members:
            m.poll(0.02)


# --------------------------------------------------------------------------
# consumer protocol payloads (ConsumerProtocolSubscription / Assignment v0)
# --------------------------------------------------------------------------


def _s(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def subscription_bytes(topics: list[str], user_data: bytes = b"") -> bytes:
    out = struct.pack(">h", 0) + struct.pack(">i", len(topics))
    for t in topics:
        out += _s(t)
    out += struct.pack(">i", len(user_data)) + user_data
    return out


def assignment_bytes(assign: dict[str, list[int]], user_data: bytes = b"") -> bytes:
    out = struct.pack(">h", 0) + struct.pack(">i", len(assign))
    for t, parts in assign.items():
        out += _s(t) + struct.pack(">i", len(parts)) + b"".join(struct.pack(">i", p) for p in parts)
    out += struct.pack(">i", len(user_data)) + user_data
    return out


# --------------------------------------------------------------------------
# raw group protocol client
# --------------------------------------------------------------------------

_RESPONSES = {
    FindCoordinatorRequest: FindCoordinatorResponse,
    JoinGroupRequest: JoinGroupResponse,
    SyncGroupRequest: SyncGroupResponse,
    HeartbeatRequest: HeartbeatResponse,
    LeaveGroupRequest: LeaveGroupResponse,
    OffsetCommitRequest: OffsetCommitResponse,
    OffsetFetchRequest: OffsetFetchResponse,
    OffsetDeleteRequest: OffsetDeleteResponse,
    DescribeGroupsRequest: DescribeGroupsResponse,
    ListGroupsRequest: ListGroupsResponse,
    DeleteGroupsRequest: DeleteGroupsResponse,
}

# pinned versions: the newest classic-protocol version of each API that Kafka 4.x serves
JOIN_V = 9
SYNC_V = 5
HEARTBEAT_V = 4
LEAVE_V = 5
COMMIT_V = 8  # v9 is for KIP-848 groups, v10 replaces names with topic ids
FETCH_V = 8
DESCRIBE_V = 5
LIST_V = 5
DELETE_V = 2
OFFSET_DELETE_V = 0
FIND_V = 4


class RawGroupClient:
    """One connection; each call sends one request and reads its response.

    `send()` and `recv()` are separate so that a test can leave a JoinGroup
    parked at the coordinator while it uses other connections."""

    _ids = itertools.count(1)

    def __init__(self, broker, client_id: str = "raw-group", timeout: float = 20.0):
        self.sock = raw_connect(broker, timeout=timeout)
        self.client_id = client_id
        self.pending: list[tuple[int, type, int]] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, req_cls, version: int, **fields) -> None:
        corr = next(self._ids)
        req = req_cls(version=version, **fields)
        req.with_header(correlation_id=corr, client_id=self.client_id)
        self.sock.sendall(bytes(req.encode(header=True, framed=True)))
        self.pending.append((corr, _RESPONSES[req_cls], version))

    def recv(self):
        corr, resp_cls, version = self.pending.pop(0)
        data = read_frame(self.sock)
        resp = resp_cls.decode(data, version=version, header=True)
        assert resp.header.correlation_id == corr, f"correlation id {resp.header.correlation_id} != {corr}"
        return resp

    def call(self, req_cls, version: int, **fields):
        self.send(req_cls, version, **fields)
        return self.recv()

    # -- conveniences ---------------------------------------------------------
    def join(
        self,
        group: str,
        member_id: str = "",
        topics: list[str] | None = None,
        session_timeout_ms: int = 10000,
        rebalance_timeout_ms: int = 10000,
        instance_id: str | None = None,
        protocols: list[tuple[str, bytes]] | None = None,
        send_only: bool = False,
    ):
        if protocols is None:
            protocols = [("range", subscription_bytes(topics or []))]
        fields = dict(
            group_id=group,
            session_timeout_ms=session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            member_id=member_id,
            group_instance_id=instance_id,
            protocol_type="consumer",
            protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name=n, metadata=m) for n, m in protocols],
            reason=None,
        )
        if send_only:
            return self.send(JoinGroupRequest, JOIN_V, **fields)
        return self.call(JoinGroupRequest, JOIN_V, **fields)

    def join_new_member(self, group: str, **kw):
        """KIP-394: first JoinGroup gets MEMBER_ID_REQUIRED + an id; join again with it."""
        r = self.join(group, **kw)
        assert r.error_code == MEMBER_ID_REQUIRED, f"first JoinGroup: expected MEMBER_ID_REQUIRED, got {r.error_code}"
        assert r.member_id, "MEMBER_ID_REQUIRED response without a member id"
        return self.join(group, member_id=r.member_id, **kw)

    def sync(self, group: str, generation: int, member_id: str, assignments: dict[str, bytes] | None = None,
             instance_id: str | None = None, protocol_name: str = "range", send_only: bool = False):
        return (self.send if send_only else self.call)(
            SyncGroupRequest,
            SYNC_V,
            group_id=group,
            generation_id=generation,
            member_id=member_id,
            group_instance_id=instance_id,
            protocol_type="consumer",
            protocol_name=protocol_name,
            assignments=[
                SyncGroupRequest.SyncGroupRequestAssignment(member_id=m, assignment=a)
                for m, a in (assignments or {}).items()
            ],
        )

    def heartbeat(self, group: str, generation: int, member_id: str, instance_id: str | None = None) -> int:
        r = self.call(
            HeartbeatRequest, HEARTBEAT_V, group_id=group, generation_id=generation, member_id=member_id,
            group_instance_id=instance_id,
        )
        return r.error_code

    def commit(self, group: str, generation: int, member_id: str, offsets: dict[tuple[str, int], int],
               instance_id: str | None = None, metadata: str | None = "") -> dict[tuple[str, int], int]:
        """OffsetCommit; returns {(topic, partition): error_code}."""
        by_topic: dict[str, list] = {}
        P = OffsetCommitRequest.OffsetCommitRequestTopic.OffsetCommitRequestPartition
        for (t, p), off in offsets.items():
            by_topic.setdefault(t, []).append(
                P(partition_index=p, committed_offset=off, committed_leader_epoch=-1, committed_metadata=metadata)
            )
        r = self.call(
            OffsetCommitRequest,
            COMMIT_V,
            group_id=group,
            generation_id_or_member_epoch=generation,
            member_id=member_id,
            group_instance_id=instance_id,
            topics=[OffsetCommitRequest.OffsetCommitRequestTopic(name=t, partitions=ps) for t, ps in by_topic.items()],
        )
        return {(t.name, p.partition_index): p.error_code for t in r.topics for p in t.partitions}

    def fetch_offsets(self, groups: dict[str, list[tuple[str, int]] | None], require_stable: bool = False):
        """OffsetFetch v8 (multi-group). Returns {group: (error, {(t, p): (offset, metadata, error)})}."""
        G = OffsetFetchRequest.OffsetFetchRequestGroup
        T = G.OffsetFetchRequestTopics
        reqs = []
        for g, parts in groups.items():
            if parts is None:
                reqs.append(G(group_id=g, topics=None))
            else:
                by_topic: dict[str, list[int]] = {}
                for t, p in parts:
                    by_topic.setdefault(t, []).append(p)
                reqs.append(G(group_id=g, topics=[T(name=t, partition_indexes=ps) for t, ps in by_topic.items()]))
        r = self.call(OffsetFetchRequest, FETCH_V, groups=reqs, require_stable=require_stable)
        out = {}
        for g in r.groups:
            out[g.group_id] = (
                g.error_code,
                {
                    (t.name, p.partition_index): (p.committed_offset, p.metadata, p.error_code)
                    for t in g.topics
                    for p in t.partitions
                },
            )
        return out

    def leave(self, group: str, members: list[tuple[str, str | None]]):
        """Batched LeaveGroup (v3+): members = [(member_id, group_instance_id)]."""
        M = LeaveGroupRequest.MemberIdentity
        return self.call(
            LeaveGroupRequest,
            LEAVE_V,
            group_id=group,
            members=[M(member_id=m, group_instance_id=i, reason=None) for m, i in members],
        )

    def describe(self, groups: list[str]):
        r = self.call(DescribeGroupsRequest, DESCRIBE_V, groups=groups, include_authorized_operations=False)
        return {g.group_id: g for g in r.groups}

    def list_groups(self, states: list[str] | None = None, types: list[str] | None = None):
        r = self.call(ListGroupsRequest, LIST_V, states_filter=states or [], types_filter=types or [])
        return r

    def find_coordinators(self, keys: list[str], key_type: int = 0):
        return self.call(FindCoordinatorRequest, FIND_V, key_type=key_type, coordinator_keys=keys)


def open_offsets_transaction(client, transactional_id: str, group: str) -> tuple[int, int]:
    """Starts a transaction that will commit offsets for `group`, as a transactional producer of
    protocol v1 does (InitProducerId, then AddOffsetsToTxn v3), over a `VersionedClient`; returns
    its producer id and epoch. Leaders check a TxnOffsetCommit against the transaction
    (KIP-890 part 1), so a commit needs a real one."""
    init = client.call(22, 5, {"transactional_id": transactional_id, "transaction_timeout_ms": 60000,
                               "producer_id": -1, "producer_epoch": -1})
    assert init.error_code == 0, init
    added = client.call(25, 3, {"transactional_id": transactional_id, "producer_id": init.producer_id,
                                "producer_epoch": init.producer_epoch, "group_id": group})
    assert added.error_code == 0, added
    return init.producer_id, init.producer_epoch
