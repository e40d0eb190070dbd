"""A three-node Strata cluster on loopback (issue 6, step 1: the metadata quorum and the
broker lifecycle; no partition replication yet, so every topic has replication factor 1).

Each node runs `strata serve --node-id N --controller-quorum-voters ...` as broker and
controller (see cluster.py). Brokers register with the active controller and heartbeat; a
broker silent for `broker.session.timeout.ms` (3000 here) is fenced, and its partitions have
no leader until it is back (unclean election is off and each partition has one replica).

Run just these with `python -m pytest -q tests/python -m cluster`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

from cluster import NO_LEADER, ProcessLog, bootstrap_of, offsets_partition_for, raw_metadata
from group_helpers import Member, RawGroupClient, poll_until
from helpers import (
    DeliveryTracker,
    consume_all,
    create_topic,
    expect_kafka_error,
    flush_all,
    free_ports,
    kafka_error_code,
    make_admin,
    make_producer,
    register_broker,
    strata_bin,
    wait_until,
)
from kwire import RawConn, record_batch

pytestmark = [pytest.mark.cluster]

log = logging.getLogger("strata-e2e.cluster")

NOT_LEADER_OR_FOLLOWER = 6


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def all_led(n: int):
    """Condition for `Cluster.wait_leaders`: n partitions, each with a leader."""
    return lambda leaders: len(leaders) == n and all(v != NO_LEADER for v in leaders.values())


def spread_over(ids: set[int], n: int):
    """n partitions, each with a leader, and every broker in `ids` leads at least one."""
    return lambda leaders: all_led(n)(leaders) and set(leaders.values()) == ids


def produce(bootstrap: str, topic: str, items: list[tuple[int, bytes]], **conf) -> dict[bytes, tuple[int, int]]:
    """Produce (partition, value) pairs with an idempotent acks=all producer; every one must be
    acknowledged. Returns value -> (partition, offset)."""
    p = make_producer(bootstrap, **{"enable.idempotence": True, "acks": "all", **conf})
    t = DeliveryTracker()
    for part, value in items:
        p.produce(topic, value=value, partition=part, on_delivery=t.cb(value))
        p.poll(0)
    flush_all(p, 30)
    assert not t.failed, f"{len(t.failed)} records not acknowledged, e.g. {next(iter(t.failed.items()))}"
    return t.acked


def values_by_partition(bootstrap: str, topic: str, partitions) -> dict[int, list[bytes]]:
    return {p: [r.value for r in recs] for p, recs in consume_all(bootstrap, topic, partitions).items()}


def create_until_ok(admin, name: str, partitions: int, timeout: float = 30.0) -> int:
    """CreateTopics, retried while the cluster settles (a controller change may fail a
    request); TOPIC_ALREADY_EXISTS after a retry counts as done. Returns the attempts."""
    attempts = [0]

    def attempt():
        attempts[0] += 1
        fut = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)],
            operation_timeout=10,
            request_timeout=10,
        )[name]
        try:
            fut.result(timeout=15)
            return True
        except KafkaException as e:
            if kafka_error_code(e) == KafkaError.TOPIC_ALREADY_EXISTS and attempts[0] > 1:
                return True
            log.info("CreateTopics %s attempt %d: %s", name, attempts[0], e)
            return False

    wait_until(attempt, timeout=timeout, interval=0.2, msg=f"CreateTopics {name} to succeed")
    return attempts[0]


# --------------------------------------------------------------------------
# (a) one active controller, every broker registered
# --------------------------------------------------------------------------


def test_nodes_agree_on_controller_and_brokers(cluster_factory):
    c = cluster_factory(3, racks=["rack-a", "rack-b", "rack-a"])
    ctl = c.active_controller()
    views = c.wait_all_unfenced()
    want = {n.node_id: ("127.0.0.1", n.port, n.rack, False) for n in c.nodes}
    for nid, s in views.items():
        assert s["node_id"] == nid, s
        assert s["controller_id"] == ctl.node_id, s
        assert s["is_active_controller"] is (nid == ctl.node_id), s
        assert isinstance(s["metadata_offset"], int) and s["metadata_offset"] >= 0, s
        got = {b["id"]: (b["host"], b["port"], b["rack"], b["fenced"]) for b in s["brokers"]}
        assert got == want, f"node {nid}'s /cluster brokers"

    # the metadata log is replicated: every node reaches the same offset
    offsets: dict[int, int] = {}

    def same_offset():
        offsets.update({nid: s["metadata_offset"] for nid, s in c.statuses().items()})
        return len(set(offsets.values())) == 1

    wait_until(same_offset, timeout=15, interval=0.1, msg=lambda: f"equal metadata offsets ({offsets})")

    # Kafka Metadata from each node, on a raw socket so that it is that node's answer
    for n in c.nodes:
        md = raw_metadata(n.port)
        assert md["controller_id"] == ctl.node_id, f"node {n.node_id}: {md}"
        assert {i: (b["host"], b["port"], b["rack"]) for i, b in md["brokers"].items()} == {
            i: w[:3] for i, w in want.items()
        }, f"node {n.node_id}'s Metadata brokers"

    # and through confluent-kafka's AdminClient, bootstrapped from one node
    admin = make_admin(c.nodes[1].bootstrap)
    md = admin.list_topics(timeout=10)
    assert {b.id: (b.host, b.port) for b in md.brokers.values()} == {i: w[:2] for i, w in want.items()}
    assert md.controller_id == ctl.node_id
    desc = admin.describe_cluster(request_timeout=10).result(timeout=15)
    assert desc.controller is not None and desc.controller.id == ctl.node_id, desc
    assert {nd.id: (nd.host, nd.port, nd.rack) for nd in desc.nodes} == {i: w[:3] for i, w in want.items()}
    assert len({raw_metadata(n.port)["cluster_id"] for n in c.nodes}) == 1, "nodes disagree on the cluster id"


# --------------------------------------------------------------------------
# (b) partitions spread over the brokers; clients through one node
# --------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_partitions_spread_and_clients_round_trip(cluster, topic):
    c = cluster
    n1, n2 = c.nodes[0], c.nodes[1]
    admin = make_admin(n1.bootstrap)
    create_topic(admin, topic, partitions=6)
    leaders = c.wait_leaders(topic, spread_over(c.broker_ids, 6), what="6 partitions spread over all 3 brokers")
    md = raw_metadata(n2.port, [topic])["topics"][topic]
    for p, info in md["partitions"].items():
        assert info["replicas"] == [leaders[p]] and info["isr"] == [leaders[p]], f"partition {p}: {info}"
        assert info["offline"] == [], f"partition {p}: {info}"

    # produce and fetch go to the leader; another broker says NOT_LEADER_OR_FOLLOWER
    p0_leader = leaders[0]
    other = next(n for n in c.nodes if n.node_id != p0_leader)
    with RawConn("127.0.0.1", other.port) as conn:
        res = conn.produce(topic, 0, record_batch([(None, b"misrouted")]))
        assert res["error_code"] == NOT_LEADER_OR_FOLLOWER, res
        res = conn.fetch(topic, 0, 0)
        assert res["error_code"] == NOT_LEADER_OR_FOLLOWER, res

    # an idempotent confluent-kafka producer bootstrapped from one node reaches every leader
    n = 600
    acked = produce(n1.bootstrap, topic, [(i % 6, b"v%d" % i) for i in range(n)])
    for part in range(6):
        ids = range(part, n, 6)
        assert [acked[b"v%d" % i] for i in ids] == [(part, o) for o in range(len(ids))], f"partition {part}"

    got = values_by_partition(n1.bootstrap, topic, range(6))
    for part in range(6):
        assert got[part] == [b"v%d" % i for i in range(part, n, 6)], f"partition {part}"

    # kafka-python, bootstrapped from another node
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    cons = KafkaConsumer(
        bootstrap_servers=n2.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        request_timeout_ms=10000,
    )
    try:
        tps = [KTP(topic, p) for p in range(6)]
        cons.assign(tps)
        cons.seek_to_beginning(*tps)
        kp: dict[int, list[bytes]] = defaultdict(list)

        def poll_some():
            for tp, records in cons.poll(timeout_ms=200).items():
                kp[tp.partition].extend(r.value for r in records)
            return sum(map(len, kp.values())) >= n

        wait_until(poll_some, 30, interval=0, msg=lambda: f"kafka-python consumed {sum(map(len, kp.values()))}/{n}")
    finally:
        cons.close()
    assert {p: v for p, v in kp.items()} == got


def test_replication_factor_above_the_broker_count_is_refused(cluster, topic):
    """Three brokers hold at most three replicas of a partition."""
    admin = make_admin(cluster.bootstrap)
    fut = admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=4)], request_timeout=15)[topic]
    expect_kafka_error(fut, KafkaError.INVALID_REPLICATION_FACTOR)
    assert topic not in raw_metadata(cluster.nodes[2].port)["topics"]


# --------------------------------------------------------------------------
# (c) kill -9 the active controller
# --------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_kill_active_controller(cluster, topic, record_property):
    c = cluster
    ctl = c.active_controller()
    survivors = c.others(ctl)
    create_topic(make_admin(survivors[0].bootstrap), topic, partitions=6)
    leaders = c.wait_leaders(topic, spread_over(c.broker_ids, 6), what="6 partitions spread over all 3 brokers")
    dead_parts = sorted(p for p, l in leaders.items() if l == ctl.node_id)
    live_parts = sorted(p for p, l in leaders.items() if l != ctl.node_id)
    produce(c.bootstrap, topic, [(i % 6, b"before-%d" % i) for i in range(120)])

    t0 = time.monotonic()
    ctl.kill()
    new = c.active_controller(timeout=30)
    failover_s = time.monotonic() - t0
    assert new.node_id != ctl.node_id

    # topic creation through a surviving node keeps working
    after = f"{topic}-after"
    attempts = create_until_ok(make_admin(bootstrap_of(survivors)), after, partitions=4)
    create_s = time.monotonic() - t0

    c.wait_fenced(ctl.node_id, timeout=30)
    fenced_s = time.monotonic() - t0
    log.info(
        "kill -9 of active controller node %d: node %d active after %.2fs, CreateTopics ok after %.2fs "
        "(%d attempts), node %d fenced after %.2fs",
        ctl.node_id,
        new.node_id,
        failover_s,
        create_s,
        attempts,
        ctl.node_id,
        fenced_s,
    )
    record_property("controller_failover_s", round(failover_s, 3))
    record_property("create_topics_after_kill_s", round(create_s, 3))
    record_property("fenced_after_kill_s", round(fenced_s, 3))

    # survivors' Metadata: the dead broker is gone, its partitions have no leader
    def dead_unled(ls):
        return all(ls.get(p, NO_LEADER) == NO_LEADER for p in dead_parts) and all(
            ls.get(p) == leaders[p] for p in live_parts
        )

    c.wait_leaders(topic, dead_unled, nodes=survivors, what=f"node {ctl.node_id}'s partitions {dead_parts} leaderless")
    for n in survivors:
        md = raw_metadata(n.port, [topic])
        assert set(md["brokers"]) == {s.node_id for s in survivors}, f"node {n.node_id}: {md['brokers']}"
        assert md["controller_id"] == new.node_id, f"node {n.node_id}: controller {md['controller_id']}"
        for p in dead_parts:
            info = md["topics"][topic]["partitions"][p]
            assert ctl.node_id in info["offline"], f"partition {p}: {info}"

    # the other partitions keep taking writes
    produce(bootstrap_of(survivors), topic, [(p, b"during-%d" % p) for p in live_parts])

    # restart: unfenced, leads its partitions again, nothing lost
    ctl.start()
    c.wait_all_unfenced(timeout=30)
    c.wait_leaders(topic, lambda ls: ls == leaders, what=f"node {ctl.node_id} leading {dead_parts} again")
    c.wait_leaders(after, all_led(4), what="every partition of the topic created during the outage led")
    c.active_controller(timeout=30)

    got = values_by_partition(c.bootstrap, topic, range(6))
    for p in range(6):
        want = [b"before-%d" % i for i in range(p, 120, 6)] + ([b"during-%d" % p] if p in live_parts else [])
        assert got[p] == want, f"partition {p} (led by {leaders[p]})"
    produce(c.bootstrap, after, [(p, b"x") for p in range(4)])


# --------------------------------------------------------------------------
# (d) SIGSTOP a node that is not the controller
# --------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_paused_broker_is_fenced_and_rejoins(cluster, topic, record_property):
    c = cluster
    ctl = c.active_controller()
    victim = next(n for n in c.nodes if n.node_id != ctl.node_id)
    rest = c.others(victim)
    create_topic(make_admin(bootstrap_of(rest)), topic, partitions=6)
    leaders = c.wait_leaders(topic, spread_over(c.broker_ids, 6), what="6 partitions spread over all 3 brokers")
    victim_parts = sorted(p for p, l in leaders.items() if l == victim.node_id)
    other_parts = sorted(p for p, l in leaders.items() if l != victim.node_id)
    produce(c.bootstrap, topic, [(p, b"a-%d" % p) for p in range(6)])

    victim.pause()
    t0 = time.monotonic()
    c.wait_fenced(victim.node_id, timeout=20)
    fenced_s = time.monotonic() - t0
    log.info("SIGSTOPped node %d fenced after %.2fs", victim.node_id, fenced_s)
    record_property("fenced_after_sigstop_s", round(fenced_s, 3))
    assert c.active_controller(timeout=10).node_id == ctl.node_id, "pausing a follower changed the controller"

    c.wait_leaders(
        topic,
        lambda ls: all(ls.get(p, NO_LEADER) == NO_LEADER for p in victim_parts)
        and all(ls.get(p) == leaders[p] for p in other_parts),
        nodes=rest,
        what=f"paused node {victim.node_id}'s partitions {victim_parts} leaderless",
    )
    for n in rest:
        assert set(raw_metadata(n.port)["brokers"]) == {r.node_id for r in rest}
    # the other brokers keep serving their partitions
    produce(bootstrap_of(rest), topic, [(p, b"b-%d-%d" % (p, i)) for i in range(20) for p in other_parts])

    victim.resume()
    t1 = time.monotonic()
    c.wait_all_unfenced(timeout=30)
    log.info("node %d unfenced %.2fs after SIGCONT", victim.node_id, time.monotonic() - t1)
    c.wait_leaders(topic, lambda ls: ls == leaders, what=f"node {victim.node_id} leading {victim_parts} again")
    produce(c.bootstrap, topic, [(p, b"c-%d" % p) for p in range(6)])

    got = values_by_partition(c.bootstrap, topic, range(6))
    for p in range(6):
        middle = [b"b-%d-%d" % (p, i) for i in range(20)] if p in other_parts else []
        assert got[p] == [b"a-%d" % p] + middle + [b"c-%d" % p], f"partition {p} (led by {leaders[p]})"


# --------------------------------------------------------------------------
# (e) rolling restart under load
# --------------------------------------------------------------------------


class BackgroundProducer:
    """Produces r0, r1, ... round-robin over the partitions from a thread, acks=all, until
    stopped; records which were acknowledged at which offset."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        self.topic = topic
        self.partitions = partitions
        self.p = make_producer(
            bootstrap,
            **{
                "acks": "all",
                "enable.idempotence": False,
                "message.timeout.ms": 15000,
                "retry.backoff.ms": 100,
                "topic.metadata.refresh.interval.ms": 1000,
            },
        )
        self.lock = threading.Lock()
        self.acked: dict[int, tuple[int, int]] = {}  # i -> (partition, offset)
        self.failed: dict[int, KafkaError] = {}
        self.acked_per_partition = [0] * partitions
        self.sent = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bg-producer", daemon=True)

    def _cb(self, i):
        def cb(err, msg):
            with self.lock:
                if err is None:
                    self.acked[i] = (msg.partition(), msg.offset())
                    self.acked_per_partition[msg.partition()] += 1
                else:
                    self.failed[i] = err

        return cb

    def _run(self):
        i = 0
        while not self._stop.is_set():
            try:
                self.p.produce(self.topic, value=b"r%d" % i, partition=i % self.partitions, on_delivery=self._cb(i))
                i += 1
                self.sent = i
            except BufferError:
                pass
            self.p.poll(0.003)  # paces the load and serves delivery reports

    def start(self):
        self.thread.start()
        return self

    def counts(self) -> list[int]:
        with self.lock:
            return list(self.acked_per_partition)

    def stop(self, flush_timeout: float = 30.0) -> int:
        self._stop.set()
        self.thread.join(10)
        return self.p.flush(flush_timeout)


@pytest.mark.timeout(150)
def test_rolling_restart_loses_no_acknowledged_record(cluster, topic):
    c = cluster
    create_topic(make_admin(c.bootstrap), topic, partitions=6)
    leaders = c.wait_leaders(topic, spread_over(c.broker_ids, 6), what="6 partitions spread over all 3 brokers")
    bg = BackgroundProducer(c.bootstrap, topic, 6).start()
    try:
        wait_until(lambda: min(bg.counts()) >= 20, timeout=20, msg=lambda: f"load on every partition ({bg.counts()})")
        for node in c.nodes:
            t0 = time.monotonic()
            rc = node.stop()
            assert rc == 0, f"node {node.node_id} exited {rc} on SIGTERM"
            node.start()
            c.wait_all_unfenced(timeout=30)
            c.wait_leaders(topic, lambda ls: ls == leaders, what=f"leaders after restarting node {node.node_id}")
            back = bg.counts()
            wait_until(
                lambda: all(now >= was + 10 for now, was in zip(bg.counts(), back)),
                timeout=30,
                msg=lambda: f"writes to every partition after restarting node {node.node_id} ({back} -> {bg.counts()})",
            )
            log.info("node %d restarted and serving again in %.2fs", node.node_id, time.monotonic() - t0)
        c.active_controller(timeout=30)
    finally:
        left = bg.stop()
    assert left == 0, f"{left} records neither acknowledged nor failed after flush"

    got = consume_all(c.bootstrap, topic, range(6))
    at = {(p, r.offset): r.value for p, recs in got.items() for r in recs}
    lost = [(i, po) for i, po in bg.acked.items() if at.get(po) != b"r%d" % i]
    values = [r.value for recs in got.values() for r in recs]
    log.info(
        "rolling restart: %d sent, %d acknowledged, %d failed (%s), %d records in the log (%d duplicates)",
        bg.sent,
        len(bg.acked),
        len(bg.failed),
        sorted({e.name() for e in bg.failed.values()}),
        len(values),
        len(values) - len(set(values)),
    )
    assert not lost, f"{len(lost)} acknowledged records not at their offsets, e.g. {lost[:5]}"
    assert len(bg.acked) >= 6 * 50


# --------------------------------------------------------------------------
# (f) consumer group offsets through a restart of the coordinator
# --------------------------------------------------------------------------


def find_coordinator(node, key: str, key_type: int = 0) -> int | None:
    """The coordinator `node` names for a group (key type 0) or transactional id (1)."""
    cli = RawGroupClient(node)
    try:
        (coord,) = cli.find_coordinators([key], key_type=key_type).coordinators
    finally:
        cli.close()
    return coord.node_id if coord.error_code == 0 else None


@pytest.mark.timeout(120)
def test_group_offsets_survive_coordinator_restart(cluster_factory, topic):
    c = cluster_factory(3, overrides={"offsets.topic.num.partitions": 6})
    create_topic(make_admin(c.bootstrap), topic, partitions=3)
    c.wait_leaders(topic, all_led(3), what="3 partitions led")
    produce(c.bootstrap, topic, [(i % 3, b"v%d" % i) for i in range(30)])
    group = f"g-{topic}"

    # every node names the same coordinator: the leader of the group's __consumer_offsets partition
    coords: dict[int, int | None] = {}

    def agreed():
        coords.update({n.node_id: find_coordinator(n, group) for n in c.nodes})
        return len(set(coords.values())) == 1 and None not in coords.values()

    wait_until(agreed, timeout=30, interval=0.2, msg=lambda: f"one coordinator for {group} ({coords})")
    coord = c.node(next(iter(coords.values())))
    offsets_md = raw_metadata(c.nodes[0].port, ["__consumer_offsets"])["topics"]["__consumer_offsets"]
    part = offsets_partition_for(group, len(offsets_md["partitions"]))
    assert offsets_md["partitions"][part]["leader"] == coord.node_id, (part, offsets_md["partitions"][part])

    m1 = Member(c.bootstrap, group, [topic], "before", group_protocol="classic")
    try:
        poll_until([m1], lambda: len(m1.records) >= 30, timeout=30, msg=lambda: f"30 records ({m1!r})")
        m1.c.commit(asynchronous=False)
        committed = m1.c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == {0: 10, 1: 10, 2: 10}
    finally:
        m1.close()
    produce(c.bootstrap, topic, [(i % 3, b"v%d" % i) for i in range(30, 45)])

    log.info("restarting coordinator node %d of group %s", coord.node_id, group)
    assert coord.stop() == 0
    coord.start()
    c.wait_all_unfenced(timeout=30)
    wait_until(
        lambda: find_coordinator(c.nodes[0], group) == coord.node_id,
        timeout=30,
        interval=0.2,
        msg=f"node {coord.node_id} coordinating {group} again",
        ignore=(OSError,),
    )

    m2 = Member(c.bootstrap, group, [topic], "after", group_protocol="classic")
    try:
        poll_until([m2], lambda: len(m2.records) >= 15, timeout=40, msg=lambda: f"15 new records ({m2!r})")
        assert sorted(m2.values(), key=lambda v: int(v[1:])) == [b"v%d" % i for i in range(30, 45)]
        assert min(o for _, _, o, _ in m2.records) == 10, "did not resume from the committed offsets"
        committed = m2.c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == {0: 10, 1: 10, 2: 10}
    finally:
        m2.close()


# --------------------------------------------------------------------------
# (g) bad cluster flags
# --------------------------------------------------------------------------


def run_serve(tmp_path: Path, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    kafka, http = free_ports(2)
    cmd = [
        str(strata_bin()),
        "serve",
        "--listen",
        f"127.0.0.1:{kafka}",
        "--http",
        f"127.0.0.1:{http}",
        "--data-dir",
        str(tmp_path / "data"),
        *args,
    ]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(cmd)}` still running after {timeout}s; it should refuse its flags")


@pytest.mark.parametrize(
    "voters",
    [
        "1@127.0.0.1",  # no port
        "1-127.0.0.1:9093",  # no @
        "x@127.0.0.1:9093",  # id not a number
        "1@127.0.0.1:port",  # port not a number
        "1@127.0.0.1:9093,1@127.0.0.1:9094",  # the same id twice
    ],
)
def test_malformed_quorum_voters_refused(tmp_path, voters):
    r = run_serve(tmp_path, "--controller-quorum-voters", voters)
    out = r.stdout + r.stderr
    assert r.returncode > 0, f"exit {r.returncode}; output:\n{out}"
    assert "unexpected argument" not in out, out
    assert "voters" in out.lower(), f"message does not name the flag:\n{out}"
    assert "panicked" not in out, out


@pytest.mark.parametrize("roles", [None, "controller"])
def test_controller_not_among_voters_refused(tmp_path, roles):
    ports = free_ports(3)
    voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(ports))
    args = ["--node-id", "4", "--controller-quorum-voters", voters]
    if roles:
        args += ["--process-roles", roles]
    r = run_serve(tmp_path, *args)
    out = r.stdout + r.stderr
    assert r.returncode > 0, f"exit {r.returncode}; output:\n{out}"
    assert "unexpected argument" not in out, out
    assert re.search(r"\b4\b", out) and "voter" in out.lower(), f"message does not say node 4 is not a voter:\n{out}"
    assert "panicked" not in out, out


def test_unknown_process_role_refused(tmp_path):
    r = run_serve(tmp_path, "--process-roles", "broker,janitor")
    out = r.stdout + r.stderr
    assert r.returncode > 0, f"exit {r.returncode}; output:\n{out}"
    assert "unexpected argument" not in out, out
    assert "janitor" in out and "role" in out.lower(), out


# --------------------------------------------------------------------------
# (h) strata dev cluster
# --------------------------------------------------------------------------


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def dev_base_port(n: int) -> int:
    """A base port whose Kafka, controller and HTTP ranges are free right now."""
    for _ in range(50):
        base = random.randrange(20000, 60000)
        if all(port_free(base + off + i) for off in (0, 100, 200) for i in range(n)):
            return base
    raise AssertionError("no free port range for strata dev cluster")


class DevCluster:
    """`strata dev cluster N` as a child process, its output in a file."""

    def __init__(self, tmp_path: Path, request, n: int = 3, extra: tuple[str, ...] = ()):
        self.n = n
        self.base = dev_base_port(n)
        self.data_dir = tmp_path / "dev-cluster"
        self.out_path = tmp_path / "dev-cluster.out"
        self.cmd = [
            str(strata_bin()),
            "dev",
            "cluster",
            str(n),
            "--base-port",
            str(self.base),
            "--data-dir",
            str(self.data_dir),
            "--override",
            "broker.session.timeout.ms=3000",
            "--override",
            "broker.heartbeat.interval.ms=300",
            *extra,
        ]
        with open(self.out_path, "wb") as out:
            # its own process group: the cleanup can kill it and every node it started
            self.proc = subprocess.Popen(
                self.cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        register_broker(request.node, ProcessLog(self.out_path, self.proc, "strata dev cluster"))
        for i in range(1, n + 1):
            register_broker(request.node, ProcessLog(self.data_dir / f"node-{i}.log", None, f"node-{i}"))

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> str:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"strata dev cluster exited {self.proc.returncode}:\n{self.output()}")
            m = re.search(r"bootstrap servers: (\S+)", self.output())
            return m.group(1) if m else None

        return wait_until(ready, timeout=timeout, interval=0.1, msg=lambda: f"dev cluster ready:\n{self.output()}")

    def node_pids(self) -> dict[int, int]:
        return {int(n): int(p) for n, p in re.findall(r"node (\d+)\s+pid (\d+)", self.output())}

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        for pid in self.node_pids().values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def pid_gone(pid: int) -> bool:
    """No such process, or only a zombie left (an exited child that its new parent has not
    reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture
def dev_cluster(tmp_path, request):
    made: list[DevCluster] = []

    def make(n: int = 3, extra: tuple[str, ...] = ()) -> DevCluster:
        d = DevCluster(tmp_path, request, n, extra)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


@pytest.mark.timeout(150)
def test_dev_cluster_serves_clients_and_stops_on_sigterm(dev_cluster, topic):
    d = dev_cluster(3)
    bootstrap = d.wait_ready()
    assert bootstrap == ",".join(f"127.0.0.1:{d.base + i}" for i in range(3))
    pids = d.node_pids()
    assert sorted(pids) == [1, 2, 3], d.output()

    # node i answers on BASE+200+i-1 as node i, and sees three unfenced brokers
    for i in range(1, 4):
        with urllib.request.urlopen(f"http://127.0.0.1:{d.base + 200 + i - 1}/cluster", timeout=5) as r:
            view = json.loads(r.read())
        assert view["node_id"] == i, view
        assert sorted((b["id"], b["port"], b["fenced"]) for b in view["brokers"]) == [
            (j, d.base + j - 1, False) for j in range(1, 4)
        ], view

    admin = make_admin(bootstrap)
    create_topic(admin, topic, partitions=3)
    produce(bootstrap, topic, [(i % 3, b"dev-%d" % i) for i in range(30)])
    got = values_by_partition(bootstrap, topic, range(3))
    assert got == {p: [b"dev-%d" % i for i in range(p, 30, 3)] for p in range(3)}

    d.proc.send_signal(signal.SIGTERM)
    try:
        rc = d.proc.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"strata dev cluster still running 60s after SIGTERM:\n{d.output()}")
    assert rc == 0, d.output()
    for node, pid in pids.items():
        assert pid_gone(pid), f"node {node} (pid {pid}) still running after the dev cluster exited"
    for i in range(1, 4):
        assert (d.data_dir / f"node-{i}").is_dir()
        assert (d.data_dir / f"node-{i}.log").stat().st_size > 0
        assert (d.data_dir / f"node-{i}" / ".strata_cleanshutdown").exists(), f"node {i} did not shut down cleanly"


@pytest.mark.timeout(150)
def test_dev_cluster_stops_all_when_a_node_dies(dev_cluster):
    d = dev_cluster(3)
    d.wait_ready()
    pids = d.node_pids()
    os.kill(pids[2], signal.SIGKILL)
    try:
        rc = d.proc.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"strata dev cluster still running 60s after node 2 died:\n{d.output()}")
    out = d.output()
    assert rc != 0, out
    assert "node 2" in out and "unexpectedly" in out, out
    for node, pid in pids.items():
        assert pid_gone(pid), f"node {node} (pid {pid}) still running after the dev cluster exited"


def test_dev_cluster_refuses_bad_arguments(tmp_path):
    def run(*args):
        r = subprocess.run(
            [str(strata_bin()), "dev", "cluster", *args, "--data-dir", str(tmp_path / "dc")],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        return r.returncode, r.stdout + r.stderr

    rc, out = run("0")
    assert rc != 0 and "1..=99" in out, out
    rc, out = run("3", "--base-port", "65400")
    assert rc != 0 and "too high" in out, out
    rc, out = run("3", "--override", "no-equals-sign")
    assert rc != 0 and "KEY=VALUE" in out, out

    # a port of the layout in use: one clear error, nothing started
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        base = port - 200 - 1  # node 2's admin HTTP port
        others_free = all(
            port_free(base + off + i) for off in (0, 100, 200) for i in range(3) if base + off + i != port
        )
        rc, out = run("3", "--base-port", str(base))
    assert rc != 0, out
    assert "not free" in out and "--base-port" in out, out
    if others_free:
        assert f"port {port} (admin HTTP port of node 2)" in out, out
    assert not (tmp_path / "dc").exists(), "a refused dev cluster created its data directory"


TRANSACTION_KEY = 1  # FindCoordinator key type of a transactional id


def replicated_internal_topic_cluster(cluster_factory, internal: str, topic: str):
    """Three nodes whose internal topic (`internal` is "offsets.topic" or
    "transaction.state.log") has 3 partitions on all three, and `topic` likewise."""
    c = cluster_factory(
        3,
        overrides={
            f"{internal}.num.partitions": 3,
            f"{internal}.replication.factor": 3,
            "replica.lag.time.max.ms": 3000,
        },
    )
    create_topic(make_admin(c.bootstrap), topic, partitions=3, replication_factor=3)
    c.wait_leaders(topic, all_led(3), what="3 partitions led")
    return c


def wait_coordinator(nodes, key: str, key_type: int = 0, not_on: int | None = None) -> int:
    """The coordinator of `key` that all `nodes` name, once it is not `not_on`."""
    coords: dict[int, int | None] = {}

    def agreed():
        coords.clear()
        coords.update({n.node_id: find_coordinator(n, key, key_type) for n in nodes})
        named = set(coords.values())
        return len(named) == 1 and None not in named and not_on not in named

    wait_until(agreed, timeout=40, interval=0.2, msg=lambda: f"one coordinator for {key} ({coords})", ignore=(OSError,))
    return next(iter(coords.values()))


@pytest.mark.timeout(150)
def test_group_coordinator_moves_with_its_offsets_partition(cluster_factory, topic):
    """With a replicated __consumer_offsets, killing the coordinator's node moves the group to
    the partition's new leader, which has the committed offsets and serves the group."""
    c = replicated_internal_topic_cluster(cluster_factory, "offsets.topic", topic)
    produce(c.bootstrap, topic, [(i % 3, b"v%d" % i) for i in range(30)])
    group = f"g-{topic}"
    old = c.node(wait_coordinator(c.nodes, group))
    m1 = Member(c.bootstrap, group, [topic], "before", group_protocol="classic")
    try:
        poll_until([m1], lambda: len(m1.records) >= 30, timeout=30, msg=lambda: f"30 records ({m1!r})")
        m1.c.commit(asynchronous=False)
    finally:
        m1.close()
    produce(c.bootstrap, topic, [(i % 3, b"v%d" % i) for i in range(30, 45)])

    log.info("killing coordinator node %d of group %s", old.node_id, group)
    old.kill()
    survivors = [n for n in c.nodes if n is not old]
    wait_coordinator(survivors, group, not_on=old.node_id)
    bootstrap = ",".join(n.bootstrap for n in survivors)
    m2 = Member(bootstrap, group, [topic], "after", group_protocol="classic")
    try:
        poll_until([m2], lambda: len(m2.records) >= 15, timeout=60, msg=lambda: f"15 new records ({m2!r})")
        assert min(o for _, _, o, _ in m2.records) == 10, "did not resume from the committed offsets"
        committed = m2.c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == {0: 10, 1: 10, 2: 10}
    finally:
        m2.close()


def read_committed(bootstrap: str, topic: str, partitions: int) -> list[bytes]:
    """Every value a read_committed consumer reads from the start of `topic` until each
    partition is at its end; fails if a partition never gets there (a transaction left
    open holds its last stable offset)."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{topic}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values: list[bytes] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + 40
    try:
        while len(at_end) < partitions and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                continue
            at_end.discard(m.partition())
            values.append(m.value())
    finally:
        consumer.close()
    stalled = set(range(partitions)) - at_end
    assert not stalled, f"read_committed stalled on partitions {stalled}"
    return values


@pytest.mark.timeout(120)
def test_transactions_span_partitions_on_every_broker(cluster, topic):
    """The transaction coordinator writes markers to partitions led by other brokers
    (WriteTxnMarkers), so read_committed consumers see committed records of every partition
    and never those of an aborted transaction."""
    from confluent_kafka import Producer

    c = cluster
    create_topic(make_admin(c.bootstrap), topic, partitions=6, replication_factor=2)
    c.wait_leaders(topic, spread_over(c.broker_ids, 6), what="6 partitions spread over all 3 brokers")
    producer = Producer({"bootstrap.servers": c.bootstrap, "transactional.id": f"tx-{topic}"})
    producer.init_transactions(30)
    for outcome in ("commit", "abort", "commit"):
        producer.begin_transaction()
        for p in range(6):
            producer.produce(topic, value=f"{outcome}-{p}".encode(), partition=p)
        if outcome == "commit":
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    values = read_committed(c.bootstrap, topic, 6)
    assert sorted(values) == sorted([f"commit-{p}".encode() for p in range(6)] * 2), values


@pytest.mark.timeout(150)
def test_transaction_coordinator_moves_with_its_partition(cluster_factory, topic):
    """With a replicated __transaction_state, killing the transaction coordinator's node moves
    its transactions to the partition's new leader: the producer commits the transaction it
    had open, and goes on with new ones, and read_committed consumers see exactly the
    committed records."""
    from confluent_kafka import Producer

    c = replicated_internal_topic_cluster(cluster_factory, "transaction.state.log", topic)
    tid = f"tx-{topic}"
    producer = Producer(
        {"bootstrap.servers": c.bootstrap, "transactional.id": tid, "transaction.timeout.ms": 60000}
    )
    producer.init_transactions(30)
    old = c.node(wait_coordinator(c.nodes, tid, TRANSACTION_KEY))

    def transaction(name: str, end=None):
        producer.begin_transaction()
        for p in range(3):
            producer.produce(topic, value=f"{name}-{p}".encode(), partition=p)
        producer.flush(30)
        if end is not None:
            end(30)

    transaction("first", producer.commit_transaction)
    transaction("open")  # left open across the coordinator's death

    log.info("killing transaction coordinator node %d of %s", old.node_id, tid)
    old.kill()
    survivors = [n for n in c.nodes if n is not old]
    wait_coordinator(survivors, tid, TRANSACTION_KEY, not_on=old.node_id)
    producer.commit_transaction(60)
    transaction("aborted", producer.abort_transaction)
    transaction("last", producer.commit_transaction)

    values = read_committed(",".join(n.bootstrap for n in survivors), topic, 3)
    expected = [f"{name}-{p}".encode() for name in ("first", "open", "last") for p in range(3)]
    assert sorted(values) == sorted(expected), values
