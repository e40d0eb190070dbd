"""Partition replication across a three-node cluster (issue 6, part 2: Kafka's ISR design).

Topics have three replicas and `min.insync.replicas=2`. Followers fetch from the leader; the
leader drops a follower from the ISR after `replica.lag.time.max.ms` (2000 here) and takes it
back once it has caught up, through the controller; a fenced broker leaves every ISR; a new
leader comes only from the ISR; consumers see only records below the high watermark; on a
leader change, followers truncate what the new leader does not have (KIP-101/279).

Scenarios: (a) kill -9 the leader under an idempotent acks=all producer; (b) min.insync
refusals with two of three brokers down; (c) a follower killed and restarted; (d) the old
leader's divergent acks=1 tail truncated; (e) rolling restart under load; (f) ISR shrink and
expand around a SIGSTOPped follower; (g) NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrinks
under a waiting acks=all produce.

After each scenario `replica_verifier.verify_replicas` checks that every in-sync replica
holds byte-identical batches (offsets, leader epochs, CRCs, bytes) up to the high watermark,
from the segment files of each node's data dir.

The leader-kill scenario logs one line starting `FAILOVER ` (kill -> first acknowledgement
on the new leader, acknowledged and recovered counts) and writes it to
`tests/python/.artifacts/failover.json`.

    python -m pytest -q tests/python/test_replication.py          # or -m cluster
    python -m pytest -q tests/python/test_replication.py -k leader_kill -o log_cli=true
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

from cluster import NO_LEADER, Cluster, ClusterNode, bootstrap_of, broker_entry
from helpers import (
    DeliveryTracker,
    Rec,
    consume_all,
    create_topic,
    make_admin,
    make_producer,
    produce_acked,
    wait_until,
)
from kwire import RawConn, record_batch
from replica_verifier import read_partition_log, segment_files, verify_replicas

pytestmark = [pytest.mark.cluster]

log = logging.getLogger("strata-e2e.replication")

LAG_MS = 2000
FETCH_WAIT_S = 0.5  # replica.fetch.wait.max.ms, Kafka's default (not overridden here)
REPLICATION_OVERRIDES = {"replica.lag.time.max.ms": LAG_MS}
MIN_ISR = {"min.insync.replicas": "2"}

NOT_LEADER_OR_FOLLOWER = 6
NOT_ENOUGH_REPLICAS = 19
NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20

ARTIFACTS = Path(__file__).resolve().parent / ".artifacts"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def create_replicated(c: Cluster, topic: str, partitions: int, rf: int = 3, config: dict | None = None) -> dict[int, dict]:
    """RF=`rf`, min.insync.replicas=2 (unless `config` says otherwise); waits until every
    partition is led and fully in sync in every live broker's Metadata; returns that view."""
    create_topic(
        make_admin(c.bootstrap),
        topic,
        partitions=partitions,
        replication_factor=rf,
        config={**MIN_ISR, **(config or {})},
    )
    states = c.wait_in_sync(topic, partitions)
    for p, s in states.items():
        assert len(s["replicas"]) == rf and len(set(s["replicas"])) == rf, f"partition {p}: {s}"
        assert s["leader"] in s["replicas"], f"partition {p}: {s}"
    return states


def values(recs: list[Rec]) -> list[bytes]:
    return [r.value for r in recs]


class AckedLoad:
    """An idempotent acks=all confluent-kafka producer running in a thread until stopped.

    Record i has the value b"<i>" and goes to partition i % partitions, so the ids of each
    partition are produced in increasing order. The delivery reports record which ids were
    acknowledged, at which offset, and when (time.monotonic(), taken in the callback, which
    the thread serves every few milliseconds)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, pace: float = 0.003, **conf: Any):
        self.topic = topic
        self.partitions = partitions
        self.pace = pace
        self.p = make_producer(
            bootstrap,
            **{
                "enable.idempotence": True,
                "acks": "all",
                "message.timeout.ms": 30000,
                "retry.backoff.ms": 50,
                "topic.metadata.refresh.interval.ms": 1000,
                "error_cb": self._on_error,
                **conf,
            },
        )
        self.lock = threading.Lock()
        self.acked: dict[int, tuple[int, int, float]] = {}  # id -> (partition, offset, ack time)
        self.failed: dict[int, KafkaError] = {}
        self.errors: list[KafkaError] = []  # client-level errors (error_cb); fatal ones fail the test
        self.per_partition = [0] * partitions
        self.sent = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"load-{topic}", daemon=True)

    def _on_error(self, err: KafkaError) -> None:
        with self.lock:
            self.errors.append(err)

    def _cb(self, i: int):
        def cb(err, msg):
            now = time.monotonic()
            with self.lock:
                if err is None:
                    self.acked[i] = (msg.partition(), msg.offset(), now)
                    self.per_partition[msg.partition()] += 1
                else:
                    self.failed[i] = err

        return cb

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                self.p.produce(self.topic, value=b"%d" % i, partition=i % self.partitions, on_delivery=self._cb(i))
                i += 1
                self.sent = i
            except BufferError:
                pass
            self.p.poll(self.pace)

    def start(self) -> "AckedLoad":
        self.thread.start()
        return self

    def stop(self, flush_timeout: float = 40.0) -> int:
        """Stop producing, wait for every outstanding delivery report; returns how many are
        still outstanding (0 expected)."""
        self._stop.set()
        self.thread.join(10)
        return self.p.flush(flush_timeout)

    def counts(self) -> list[int]:
        with self.lock:
            return list(self.per_partition)

    def acked_after(self, t: float) -> list[int]:
        with self.lock:
            out = [0] * self.partitions
            for part, _, at in self.acked.values():
                if at > t:
                    out[part] += 1
            return out

    def fatal(self) -> list[KafkaError]:
        with self.lock:
            return [e for e in self.errors if e.fatal()]

    def check(self) -> None:
        fatal = self.fatal()
        assert not fatal, f"producer fatal error: {fatal}"

    def wait_progress(self, more: int, timeout: float = 30.0, what: str = "", cluster: Cluster | None = None) -> None:
        """Wait until every partition has `more` acknowledgements beyond now (on timeout, the
        message shows `cluster`'s view of the partitions, if given)."""
        base = self.counts()

        def where() -> str:
            if cluster is None:
                return ""
            try:
                states = cluster.partition_states(self.topic)
            except Exception as e:  # noqa: BLE001 - diagnostics only
                return f"; partitions: ({e!r})"
            return "; partitions: " + ", ".join(
                f"{p}: leader {s['leader']} epoch {s['epoch']} isr {sorted(s['isr'])}" for p, s in sorted(states.items())
            )

        def moved():
            self.check()
            return all(now >= was + more for now, was in zip(self.counts(), base))

        wait_until(
            moved,
            timeout=timeout,
            interval=0.05,
            msg=lambda: f"{more} more acknowledgements on every partition {what} ({base} -> {self.counts()}; "
            f"{self.summary()}; last client errors {[str(e) for e in self.errors[-3:]]}){where()}",
        )

    def assert_settled(self, left: int) -> None:
        """After `stop()` returned `left`: no fatal error, and every record has its delivery
        report."""
        self.check()
        assert left == 0, f"{left} records without a delivery report after flush; {self.summary()}"

    def summary(self) -> str:
        names = Counter(e.name() for e in self.failed.values())
        return f"{self.sent} sent, {len(self.acked)} acknowledged, {len(self.failed)} failed {dict(names)}"


def check_exactly_once(load: AckedLoad, got: dict[int, list[Rec]]) -> dict[str, int]:
    """Every acknowledged id is in the log exactly once, in its partition, at the offset its
    acknowledgement gave, and each partition holds its ids in increasing order (the order in
    which the one idempotent producer sent them). Returns counts."""
    problems: list[str] = []
    where: dict[int, tuple[int, int]] = {}
    total = dups = 0
    for p, recs in sorted(got.items()):
        ids = [int(r.value) for r in recs]
        total += len(ids)
        c = Counter(ids)
        twice = sorted(i for i, n in c.items() if n > 1)
        dups += sum(n - 1 for n in c.values())
        if twice:
            problems.append(f"partition {p}: {len(twice)} ids more than once, e.g. {twice[:5]}")
        wrong = [i for i in ids if i % load.partitions != p]
        if wrong:
            problems.append(f"partition {p}: ids of other partitions {wrong[:5]}")
        bad = next((k for k in range(1, len(ids)) if ids[k] <= ids[k - 1]), None)
        if bad is not None:
            problems.append(
                f"partition {p}: out of order at offset {recs[bad].offset}: id {ids[bad]} after {ids[bad - 1]}"
            )
        for r, i in zip(recs, ids):
            where.setdefault(i, (p, r.offset))
    missing = sorted(i for i in load.acked if i not in where)
    if missing:
        problems.append(
            f"{len(missing)} acknowledged records not in the log, e.g. "
            + ", ".join(f"id {i} acked at {load.acked[i][:2]}" for i in missing[:5])
        )
    moved = sorted(
        i for i, (p, off, _) in load.acked.items() if i in where and off >= 0 and where[i] != (p, off)
    )
    if moved:
        problems.append(
            f"{len(moved)} records not at their acknowledged offsets, e.g. "
            + ", ".join(f"id {i}: acked {load.acked[i][:2]}, found {where[i]}" for i in moved[:5])
        )
    assert not problems, "\n".join(problems)
    return {
        "acked": len(load.acked),
        "recovered": sum(1 for i in load.acked if i in where),
        "records_in_log": total,
        "duplicates": dups,
        "unacknowledged_in_log": sum(1 for i in where if i not in load.acked),
    }


def assert_none_failed(load: AckedLoad) -> None:
    """Checked last (after what was acknowledged has been verified): with idempotence,
    unlimited retries and message.timeout.ms=30000, a record fails only if its partition
    could not take acks=all writes for 30 s, far longer than any failover here should take."""
    assert not load.failed, (
        f"records failed despite idempotence and retries (a partition unavailable for "
        f"message.timeout.ms): {load.summary()}; failed per partition "
        f"{dict(Counter(i % load.partitions for i in load.failed))}, first ids {sorted(load.failed)[:10]}"
    )


def raw_produce_to_leader(c: Cluster, topic: str, partition: int, batch: bytes, acks: int, timeout: float = 30.0) -> dict:
    """Produce one batch on a raw connection to the partition's current leader, asking again
    while leadership moves (NOT_LEADER_OR_FOLLOWER, no leader, connection errors)."""
    last: dict[str, Any] = {}

    def attempt():
        leader = c.partition_states(topic)[partition]["leader"]
        if leader == NO_LEADER:
            last["res"] = "no leader"
            return None
        with RawConn("127.0.0.1", c.node(leader).port) as conn:
            res = conn.produce(topic, partition, batch, acks=acks)
        last["res"] = res
        return None if res["error_code"] == NOT_LEADER_OR_FOLLOWER else {**res, "leader": leader}

    return wait_until(
        attempt, timeout=timeout, interval=0.1, msg=lambda: f"a produce answered by the leader ({last})", ignore=(OSError, ValueError)
    )


def unread_bytes_from(node: ClusterNode, port: int) -> list[int]:
    """For each established TCP connection of `node`'s process to `port` on this host, the
    bytes its kernel has received that the process has not read yet (/proc/net/tcp rx_queue).
    A stopped process reads nothing, so an answer sent to it stays counted here."""
    inodes = set()
    fd_dir = Path(f"/proc/{node.pid}/fd")
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[len("socket:[") : -1]))
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            # sl local_address rem_address st tx_queue:rx_queue tr:when retrnsmt uid timeout inode
            if len(f) < 10 or f[3] != "01":  # ESTABLISHED
                continue
            if int(f[9]) in inodes and int(f[2].rsplit(":", 1)[1], 16) == port:
                out.append(int(f[4].split(":")[1], 16))
    return out


def pick_follower(c: Cluster, leader: int) -> ClusterNode:
    """A node that is not `leader`, preferably not the active controller either."""
    ctl = c.active_controller().node_id
    return sorted(c.others(c.node(leader)), key=lambda n: (n.node_id == ctl, n.node_id))[0]


# --------------------------------------------------------------------------
# (a) kill -9 the leader under an idempotent acks=all producer
# --------------------------------------------------------------------------

N_AFTER_KILL = 100  # acknowledgements per partition after the kill


@pytest.mark.timeout(150)
def test_leader_kill_loses_no_acknowledged_record(cluster_factory, topic, record_property):
    c = cluster_factory(3, overrides=REPLICATION_OVERRIDES)
    states = create_replicated(c, topic, 3)
    victim = c.node(states[0]["leader"])
    old_epoch, old_isr = states[0]["epoch"], sorted(states[0]["isr"])
    survivors = c.others(victim)
    was_controller = c.active_controller().node_id == victim.node_id

    load = AckedLoad(c.bootstrap, topic, 3).start()
    try:
        wait_until(
            lambda: load.check() or min(load.counts()) >= 100,
            timeout=30,
            msg=lambda: f"100 acknowledgements on every partition before the kill ({load.counts()})",
        )
        acked_before = len(load.acked)
        t_kill = time.monotonic()
        victim.kill()
        new = c.wait_partitions(
            topic,
            lambda ps: ps[0]["leader"] not in (NO_LEADER, victim.node_id) and ps[0]["epoch"] > old_epoch,
            timeout=30,
            nodes=survivors,
            what=f"a new leader for partition 0 after killing node {victim.node_id}",
        )
        t_elected = time.monotonic()
        new_leader, new_epoch = new[0]["leader"], new[0]["epoch"]
        assert new_leader in old_isr, f"new leader {new_leader} was not in the ISR {old_isr}"
        assert victim.node_id not in new[0]["isr"], f"the dead leader is still in the ISR: {new[0]}"
        wait_until(
            lambda: load.check() or min(load.acked_after(t_kill)) >= N_AFTER_KILL,
            timeout=60,
            msg=lambda: f"{N_AFTER_KILL} acknowledgements per partition after the kill ({load.acked_after(t_kill)}; {load.summary()})",
        )
    finally:
        left = load.stop()
    load.assert_settled(left)

    # every acknowledged record, exactly once and in order, read back from the survivors
    got = consume_all(bootstrap_of(survivors), topic, range(3))
    counts = check_exactly_once(load, got)
    p0_ids = {int(r.value) for r in got[0]}
    p0_acked = [i for i, (p, _, _) in load.acked.items() if p == 0]

    # the first record the new leader wrote (its batches carry the new leader epoch), and
    # when its acknowledgement came
    epochs = {r.offset: r.leader_epoch for r in got[0]}
    if any(e is None for e in epochs.values()):  # client without leader epochs: read the batches
        batches = read_partition_log(c.node(new_leader).partition_dir(topic, 0)).batches
        epochs = {o: b.partition_leader_epoch for b in batches for o in range(b.base_offset, b.last_offset + 1)}
    first_new = next((r for r in got[0] if epochs.get(r.offset, -1) > old_epoch), None)
    assert first_new is not None, (
        f"no record of partition 0 carries a leader epoch above {old_epoch} (new leader {new_leader} epoch "
        f"{new_epoch}); epochs seen: {sorted(set(epochs.values()))}"
    )
    first_id = int(first_new.value)
    assert first_id in load.acked, f"first record on the new leader (id {first_id}) was never acknowledged"
    failover_s = load.acked[first_id][2] - t_kill

    result = {
        "topic": topic,
        "partition": 0,
        "killed_leader": victim.node_id,
        "killed_was_active_controller": was_controller,
        "new_leader": new_leader,
        "leader_epoch_before": old_epoch,
        "leader_epoch_after": new_epoch,
        "first_offset_on_new_leader": first_new.offset,
        "kill_to_new_leader_in_metadata_s": round(t_elected - t_kill, 3),
        "kill_to_first_ack_on_new_leader_s": round(failover_s, 3),
        "acked": counts["acked"],
        "recovered": counts["recovered"],
        "acked_before_kill": acked_before,
        "acked_after_kill": sum(load.acked_after(t_kill)),
        "acked_partition0": len(p0_acked),
        "recovered_partition0": sum(1 for i in p0_acked if i in p0_ids),
        "records_in_log": counts["records_in_log"],
        "duplicates": counts["duplicates"],
        "failed": len(load.failed),
        "broker.session.timeout.ms": int(victim.overrides["broker.session.timeout.ms"]),
        "replica.lag.time.max.ms": LAG_MS,
    }
    line = "FAILOVER " + " ".join(f"{k}={v}" for k, v in result.items())
    log.info("%s", line)
    print(line)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "failover.json").write_text(json.dumps(result, indent=2) + "\n")
    for k in ("kill_to_first_ack_on_new_leader_s", "acked", "recovered"):
        record_property(k, result[k])
    assert counts["recovered"] == counts["acked"]

    # the killed node comes back, catches up, rejoins every ISR; all replicas identical
    victim.start()
    c.wait_all_unfenced(timeout=30)
    c.wait_in_sync(topic, 3, timeout=45)
    verify_replicas(c, [topic], full_isr=True, partitions={topic: 3})
    assert_none_failed(load)


# --------------------------------------------------------------------------
# (b) min.insync.replicas with two of three replicas gone
# --------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_min_insync_replicas_enforced_for_acks_all(cluster_factory, topic):
    """Two of the three brokers killed: acks=all is refused with NOT_ENOUGH_REPLICAS (before
    the append: nothing is written), acks=1 still works; once they are back, acks=all works.

    Node 1 is the only controller voter (nodes 2 and 3 are brokers only): with three
    combined nodes, killing two would take the metadata quorum with them, and then nothing
    could shrink the ISR or fence anyone."""
    c = cluster_factory(3, overrides=REPLICATION_OVERRIDES, roles=["broker,controller", "broker", "broker"])
    create_replicated(c, topic, 1)
    survivor = c.node(1)
    dead = c.others(survivor)
    before = [b"all-before-%d" % i for i in range(20)]
    produce_acked(c.bootstrap, topic, [(0, v) for v in before])

    for n in dead:
        n.kill()
    for n in dead:
        c.wait_fenced(n.node_id, timeout=30)
    c.wait_partitions(
        topic,
        lambda ps: ps[0]["leader"] == 1 and sorted(ps[0]["isr"]) == [1],
        nodes=[survivor],
        timeout=30,
        what="node 1 leading partition 0 with the ISR [1]",
    )
    end_before = wait_until(
        lambda: survivor.partition_entry(topic, 0), timeout=10, msg="node 1's /partitions entry", ignore=(OSError, ValueError)
    )["log_end_offset"]

    # a raw acks=all produce: refused before the append
    with RawConn("127.0.0.1", survivor.port) as conn:
        res = conn.produce(topic, 0, record_batch([(None, b"refused-raw")]), acks=-1)
    assert res["error_code"] == NOT_ENOUGH_REPLICAS, f"acks=all with ISR [1] < min.insync.replicas 2: {res}"

    # librdkafka, acks=all without retries: the delivery report carries NOT_ENOUGH_REPLICAS
    p = make_producer(survivor.bootstrap, **{"acks": "all", "enable.idempotence": False, "retries": 0})
    t = DeliveryTracker()
    p.produce(topic, value=b"refused-rdkafka", partition=0, on_delivery=t.cb("refused"))
    assert p.flush(20) == 0
    assert "refused" in t.failed, f"acks=all was acknowledged with ISR [1]: {t.acked}"
    assert t.failed["refused"].code() == KafkaError.NOT_ENOUGH_REPLICAS, t.failed["refused"]
    assert survivor.partition_entry(topic, 0)["log_end_offset"] == end_before, "a refused acks=all produce appended"

    # acks=1 is still acknowledged, and (ISR of one) visible to consumers right away
    acks1 = [b"acks1-%d" % i for i in range(10)]
    produce_acked(survivor.bootstrap, topic, [(0, v) for v in acks1], acks=1, **{"enable.idempotence": False})
    assert values(consume_all(survivor.bootstrap, topic, [0])[0]) == before + acks1

    # back to three: they catch up, rejoin the ISR, acks=all works again
    for n in dead:
        n.start()
    c.wait_all_unfenced(timeout=30)
    c.wait_in_sync(topic, 1, timeout=45)
    res = raw_produce_to_leader(c, topic, 0, record_batch([(None, b"after-raw")]), acks=-1)
    assert res["error_code"] == 0, res
    after = [b"all-after-%d" % i for i in range(20)]
    produce_acked(c.bootstrap, topic, [(0, v) for v in after])
    verify_replicas(c, [topic], full_isr=True, partitions={topic: 1})
    assert values(consume_all(c.bootstrap, topic, [0])[0]) == before + acks1 + [b"after-raw"] + after


# --------------------------------------------------------------------------
# (c) a follower killed and restarted
# --------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_killed_follower_catches_up_and_rejoins_isr(cluster_factory, topic):
    c = cluster_factory(3, overrides=REPLICATION_OVERRIDES)
    states = create_replicated(c, topic, 1)
    leader = states[0]["leader"]
    follower = pick_follower(c, leader)
    rest = c.others(follower)
    first = [b"a-%d" % i for i in range(200)]
    produce_acked(c.bootstrap, topic, [(0, v) for v in first])

    follower.kill()
    # acks=all with min.insync=2 keeps being acknowledged (once the ISR has dropped the follower)
    t0 = time.monotonic()
    during = [b"b-%d" % i for i in range(300)]
    produce_acked(bootstrap_of(rest), topic, [(0, v) for v in during])
    log.info("300 acks=all records acknowledged %.2fs after killing follower %d", time.monotonic() - t0, follower.node_id)
    out = c.wait_partitions(
        topic,
        lambda ps: follower.node_id not in ps[0]["isr"] and ps[0]["leader"] == leader,
        nodes=rest,
        timeout=30,
        what=f"node {follower.node_id} out of the ISR, node {leader} still leading",
    )
    assert len(out[0]["isr"]) == 2, out

    follower.start()
    t1 = time.monotonic()
    c.wait_all_unfenced(timeout=30)
    back = c.wait_in_sync(topic, 1, timeout=45)
    log.info("node %d back in the ISR %.2fs after its restart: %s", follower.node_id, time.monotonic() - t1, back[0])
    assert follower.node_id in back[0]["isr"]
    entry = follower.partition_entry(topic, 0)
    assert entry is not None and entry["is_leader"] is (back[0]["leader"] == follower.node_id), entry
    assert follower.node_id in entry["isr"], entry

    report = verify_replicas(c, [topic], full_isr=True, partitions={topic: 1})
    assert report[f"{topic}-0"]["records"] == 500, report
    assert values(consume_all(c.bootstrap, topic, [0])[0]) == first + during


# --------------------------------------------------------------------------
# (d) a divergent tail on the old leader is truncated
# --------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_old_leader_truncates_its_divergent_tail(cluster_factory, topic):
    """Both followers are stopped (SIGSTOP), the leader alone acknowledges a few acks=1
    records, then it is killed and the followers continue.

    The acks=1 records are lost, as Kafka loses them: acks=1 means the leader appended them
    and answered without waiting for any follower, so no other replica had them; they stayed
    above the high watermark (no consumer ever saw them); the new leader comes from the ISR
    and does not have them, so it writes new records at the same offsets under a new leader
    epoch; when the old leader returns it asks the new leader where its epoch ended
    (OffsetForLeaderEpoch) and truncates the divergent tail. Everything acknowledged with
    acks=all was on every ISR member and is still there.

    The window (stop followers -> their outstanding fetches answered -> acks=1 produce -> kill
    leader -> resume followers) lasts about a second, under the 3 s broker session timeout
    and the 2 s replica lag time, so the followers are never fenced and stay in the ISR; with
    two of three controller voters stopped, the quorum could not change the ISR meanwhile
    anyway."""
    c = cluster_factory(3, overrides=REPLICATION_OVERRIDES)
    states = create_replicated(c, topic, 1)
    old = c.node(states[0]["leader"])
    followers = c.others(old)
    old_epoch = states[0]["epoch"]
    before = [b"all-before-%d" % i for i in range(50)]
    produce_acked(c.bootstrap, topic, [(0, v) for v in before])
    # the followers have everything, and the high watermark covers it
    x = verify_replicas(c, [topic], full_isr=True, partitions={topic: 1})[f"{topic}-0"]["high_watermark"]
    assert x == len(before)

    lone = [[b"acks1-only-%d-%d" % (i, j) for j in range(4)] for i in range(3)]
    for f in followers:
        f.pause()
    t_pause = time.monotonic()
    try:
        # A follower's fetch waits at the leader up to replica.fetch.wait.max.ms (500 ms) for
        # new records. One outstanding at the SIGSTOP would carry the acks=1 records to the
        # stopped follower (its kernel keeps the answer; the follower appends it after
        # SIGCONT). So first wait until each follower's connection to the leader holds an
        # unread answer (its outstanding fetch came back empty), or longer than a fetch can
        # wait (it had none outstanding). After that no fetch reaches the leader.
        unread: dict[int, list[int]] = {}

        def no_fetch_outstanding():
            for f in followers:
                unread[f.node_id] = unread_bytes_from(f, old.port)
            return time.monotonic() - t_pause > FETCH_WAIT_S + 0.7 or all(
                any(q > 0 for q in unread[f.node_id]) for f in followers
            )

        wait_until(no_fetch_outstanding, timeout=5, interval=0.02, msg=lambda: f"followers' fetches answered ({unread})")
        log.info("followers stopped; unread bytes on their connections to the leader: %s", unread)
        with RawConn("127.0.0.1", old.port) as conn:
            bases = []
            for recs in lone:
                res = conn.produce(topic, 0, record_batch([(None, v) for v in recs]), acks=1)
                assert res["error_code"] == 0, f"acks=1 produce to the leader alone: {res}"
                bases.append(res["base_offset"])
            assert bases == [x, x + 4, x + 8], bases
            # above the high watermark: not served to consumers
            res = conn.fetch(topic, 0, x)
            assert res["error_code"] == 0 and res["high_watermark"] == x, res
            assert res["records"] == b"", "records above the high watermark were served to a consumer"
        entry = old.partition_entry(topic, 0)
        assert (entry["log_end_offset"], entry["high_watermark"]) == (x + 12, x), entry
        old.kill()
    finally:
        for f in followers:
            f.resume()

    new = c.wait_partitions(
        topic,
        lambda ps: ps[0]["leader"] in {f.node_id for f in followers} and ps[0]["epoch"] > old_epoch,
        nodes=followers,
        timeout=30,
        what=f"a follower leading partition 0 after node {old.node_id} died",
    )
    assert old.node_id not in new[0]["isr"], new
    after = [b"all-after-%d" % i for i in range(30)]
    acked = produce_acked(bootstrap_of(followers), topic, [(0, v) for v in after])
    assert sorted(off for _, off in acked.values()) == list(range(x, x + 30)), (
        "the new leader did not continue at the old high watermark, where the old leader's "
        f"acks=1-only records were: {sorted(acked.values())[:3]}..."
    )

    old.start()
    c.wait_all_unfenced(timeout=30)
    c.wait_in_sync(topic, 1, timeout=45)
    report = verify_replicas(c, [topic], full_isr=True, partitions={topic: 1})[f"{topic}-0"]
    assert report["high_watermark"] == x + 30, report
    for seg in segment_files(old.partition_dir(topic, 0)):
        assert b"acks1-only" not in seg.read_bytes(), f"node {old.node_id} kept its divergent tail in {seg}"
    batches = read_partition_log(old.partition_dir(topic, 0)).batches
    at_x = next(b for b in batches if b.base_offset <= x <= b.last_offset)
    assert at_x.partition_leader_epoch > old_epoch, f"offset {x} on node {old.node_id}: {at_x.describe()}"
    assert values(consume_all(c.bootstrap, topic, [0])[0]) == before + after


# --------------------------------------------------------------------------
# (e) rolling restart under load
# --------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_rolling_restart_under_idempotent_load(cluster_factory, topic):
    c = cluster_factory(3, overrides=REPLICATION_OVERRIDES)
    create_replicated(c, topic, 3)
    load = AckedLoad(c.bootstrap, topic, 3).start()
    try:
        load.wait_progress(30, what="before the first restart", cluster=c)
        for node in c.nodes:
            t0 = time.monotonic()
            rc = node.stop()
            assert rc == 0, f"node {node.node_id} exited {rc} on SIGTERM"
            # two replicas left, min.insync=2: acks=all goes on
            load.wait_progress(20, what=f"while node {node.node_id} is down", cluster=c)
            node.start()
            c.wait_all_unfenced(timeout=30)
            c.wait_in_sync(topic, 3, timeout=45)
            load.wait_progress(20, what=f"after node {node.node_id} rejoined", cluster=c)
            log.info("node %d restarted and back in every ISR in %.2fs", node.node_id, time.monotonic() - t0)
    finally:
        left = load.stop()
    load.assert_settled(left)
    counts = check_exactly_once(load, consume_all(c.bootstrap, topic, range(3)))
    assert counts["duplicates"] == 0
    log.info("rolling restart: %s; %s", load.summary(), counts)
    verify_replicas(c, [topic], full_isr=True, partitions={topic: 3})
    assert_none_failed(load)


# --------------------------------------------------------------------------
# (f) ISR shrink and expand
# --------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_stalled_follower_leaves_isr_and_returns(cluster_factory, topic, record_property):
    """A SIGSTOPped follower leaves the ISR after replica.lag.time.max.ms (the leader's lag
    check: the broker session timeout is set far higher, so it is not fenced meanwhile) while
    acks=all keeps succeeding with two in sync; after SIGCONT it catches up and is back."""
    c = cluster_factory(3, overrides={**REPLICATION_OVERRIDES, "broker.session.timeout.ms": 20000})
    states = create_replicated(c, topic, 1)
    leader = states[0]["leader"]
    victim = pick_follower(c, leader)
    rest = c.others(victim)
    load = AckedLoad(bootstrap_of(rest), topic, 1).start()
    try:
        load.wait_progress(50, what="before the follower stops", cluster=c)
        victim.pause()
        t0 = time.monotonic()
        shrunk = c.wait_partitions(
            topic,
            lambda ps: victim.node_id not in ps[0]["isr"],
            nodes=rest,
            timeout=LAG_MS / 1000 + 15,
            what=f"stalled node {victim.node_id} out of the ISR",
        )
        shrink_s = time.monotonic() - t0
        assert shrunk[0]["leader"] == leader and sorted(shrunk[0]["isr"]) == sorted(n.node_id for n in rest), shrunk
        fenced = broker_entry(c.status(leader), victim.node_id)
        assert fenced is not None and fenced["fenced"] is False, (
            f"node {victim.node_id} was fenced, so this is not the lag check at work: {fenced}"
        )
        assert shrink_s >= LAG_MS / 1000 / 2, f"ISR shrank {shrink_s:.2f}s after the stop, before the lag time"
        load.wait_progress(50, timeout=20, what=f"with node {victim.node_id} out of the ISR", cluster=c)

        victim.resume()
        t1 = time.monotonic()
        c.wait_in_sync(topic, 1, timeout=30)
        expand_s = time.monotonic() - t1
        load.wait_progress(20, what="after the follower returned", cluster=c)
    finally:
        if victim.paused:
            victim.resume()
        left = load.stop()
    log.info(
        "node %d: out of the ISR %.2fs after SIGSTOP (replica.lag.time.max.ms=%d), back %.2fs after SIGCONT",
        victim.node_id,
        shrink_s,
        LAG_MS,
        expand_s,
    )
    record_property("isr_shrink_s", round(shrink_s, 3))
    record_property("isr_expand_s", round(expand_s, 3))
    load.assert_settled(left)
    check_exactly_once(load, consume_all(c.bootstrap, topic, [0]))
    verify_replicas(c, [topic], full_isr=True, partitions={topic: 1})
    assert_none_failed(load)


# --------------------------------------------------------------------------
# (g) the ISR shrinks below min.insync.replicas while acks=all waits
# --------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_isr_shrinking_during_acks_all_wait_gives_after_append(cluster_factory, topic):
    """min.insync.replicas=3: with all three in sync an acks=all produce passes the check
    before the append, then waits for a follower that is stopped. When the leader drops that
    follower from the ISR (replica.lag.time.max.ms), the high watermark passes the record with
    only two in sync: NOT_ENOUGH_REPLICAS_AFTER_APPEND, and the record stays in the log (a
    retrying producer would write it twice, which is why Kafka names the error apart)."""
    c = cluster_factory(3, overrides=REPLICATION_OVERRIDES)
    states = create_replicated(c, topic, 1, config={"min.insync.replicas": "3"})
    leader = c.node(states[0]["leader"])
    victim = pick_follower(c, leader.node_id)
    before = [b"before-%d" % i for i in range(10)]
    produce_acked(c.bootstrap, topic, [(0, v) for v in before])

    victim.pause()
    try:
        t0 = time.monotonic()
        with RawConn("127.0.0.1", leader.port, timeout=30) as conn:
            res = conn.produce(topic, 0, record_batch([(None, b"after-append")]), acks=-1)
        waited = time.monotonic() - t0
        assert res["error_code"] == NOT_ENOUGH_REPLICAS_AFTER_APPEND, (
            f"acks=all while the ISR shrank from 3 to 2 (min.insync.replicas=3): {res} after {waited:.2f}s"
        )
        assert res["base_offset"] in (-1, len(before)), res
        # the check before the append now refuses
        with RawConn("127.0.0.1", leader.port, timeout=30) as conn:
            res = conn.produce(topic, 0, record_batch([(None, b"refused")]), acks=-1)
        assert res["error_code"] == NOT_ENOUGH_REPLICAS, res
    finally:
        victim.resume()
    log.info("NOT_ENOUGH_REPLICAS_AFTER_APPEND after %.2fs (replica.lag.time.max.ms=%d)", waited, LAG_MS)

    c.wait_in_sync(topic, 1, timeout=30)
    res = raw_produce_to_leader(c, topic, 0, record_batch([(None, b"ok")]), acks=-1)
    assert res["error_code"] == 0, res
    verify_replicas(c, [topic], full_isr=True, partitions={topic: 1})
    assert values(consume_all(c.bootstrap, topic, [0])[0]) == before + [b"after-append", b"ok"]


def test_a_follower_behind_on_the_high_watermark_is_answered_at_once(cluster_factory, topic):
    """KIP-1166 (Fetch v18): a follower reports its high watermark; when it is behind the
    leader's, the leader answers at once instead of holding the fetch for `max_wait_ms`, so the
    follower (and the consumers that read from it) learns the new high watermark sooner."""
    import uuid

    from versioned_wire import VersionedClient

    c = cluster_factory(n=3, overrides=REPLICATION_OVERRIDES)
    states = create_replicated(c, topic, partitions=1)
    leader_id = states[0]["leader"]
    follower_id = next(r for r in states[0]["replicas"] if r != leader_id)
    produce_acked(c.bootstrap, topic, [(0, b"a"), (0, b"b"), (0, b"c")])
    leader = c.node(leader_id)
    with VersionedClient("127.0.0.1", leader.port) as conn:
        md = conn.call(3, 12, {"topics": [{"name": topic, "topic_id": uuid.UUID(int=0)}]})
        topic_id = md.topics[0].topic_id
        epoch = md.topics[0].partitions[0].leader_epoch

        def replica_fetch(follower_hw: int) -> float:
            request = {
                "replica_state": {"replica_id": follower_id, "replica_epoch": -1},
                "max_wait_ms": 2000,
                "min_bytes": 1,
                "max_bytes": 1 << 20,
                "session_id": 0,
                "session_epoch": -1,
                "topics": [{"topic_id": topic_id, "partitions": [
                    {"partition": 0, "current_leader_epoch": epoch, "fetch_offset": 3,
                     "last_fetched_epoch": epoch, "log_start_offset": 0,
                     "partition_max_bytes": 1 << 20, "high_watermark": follower_hw}]}],
            }
            start = time.monotonic()
            resp = conn.call(1, 18, request)
            elapsed = time.monotonic() - start
            (part,) = resp.responses[0].partitions
            assert part.error_code == 0 and part.high_watermark == 3, resp
            return elapsed

        # Caught up (its high watermark is the leader's): nothing to send, the fetch waits.
        assert replica_fetch(3) >= 1.5
        # Behind on the high watermark: answered at once with the leader's.
        assert replica_fetch(1) < 1.0


# --------------------------------------------------------------------------
# (i) inside the cluster over TLS (issue 16, section 5): mutual TLS on the controller
#     listener; replication and every broker-to-broker call over an SSL listener with client
#     certificates, or a SASL_SSL one with SCRAM; a leader kill loses nothing
# --------------------------------------------------------------------------

BROKER_LOGIN = ("broker", "broker-secret")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pytest.importorskip("cryptography.x509")
    from certs import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


def inside_over_tls(pki, inter: str) -> dict[str, str]:
    """Clients on PLAINTEXT; the inter-broker listener INTERNAL is `inter` (SSL with client
    certificates, or SASL_SSL with SCRAM-SHA-512); the controller listener is SSL, which is
    always mutual. Every node presents the same certificate, signed by the test CA."""
    stores = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki["server_pem"]),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(pki["ca"]),
    }
    overrides = {
        **REPLICATION_OVERRIDES,
        "listener.security.protocol.map": f"PLAINTEXT:PLAINTEXT,INTERNAL:{inter},CONTROLLER:SSL",
        "inter.broker.listener.name": "INTERNAL",
    }
    for listener in ("internal", "controller"):
        overrides.update({f"listener.name.{listener}.{k}": v for k, v in stores.items()})
    if inter == "SSL":
        overrides["listener.name.internal.ssl.client.auth"] = "required"
    else:
        user, password = BROKER_LOGIN
        overrides.update(
            {
                "listener.name.internal.sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
                "listener.name.internal.scram-sha-512.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required "
                    f'username="{user}" password="{password}";'
                ),
            }
        )
    return overrides


def controller_listener_answers(node: ClusterNode, pki, certificate: bool, tls: bool = True) -> bool:
    """Whether `node`'s controller listener serves GET /raft/status to a peer with (or
    without) a certificate of the test CA, or to one speaking plain HTTP."""
    request = b"GET /raft/status HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", node.controller_port), timeout=5) as raw:
            if not tls:
                raw.sendall(request)
                return raw.recv(64).startswith(b"HTTP/1.1 200")
            ctx = ssl.create_default_context(cafile=str(pki["ca"]))
            if certificate:
                ctx.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(request)
                return s.recv(64).startswith(b"HTTP/1.1 200")
    except (ssl.SSLError, OSError):
        return False


@pytest.mark.timeout(180)
@pytest.mark.parametrize("inter", ["SSL", "SASL_SSL"])
def test_leader_kill_with_tls_inside_the_cluster(cluster_factory, topic, pki, inter):
    extra = []
    if inter == "SASL_SSL":
        user, password = BROKER_LOGIN
        extra = ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
    c = cluster_factory(
        3, overrides=inside_over_tls(pki, inter), listeners=["PLAINTEXT", "INTERNAL"], extra_args=extra
    )
    # Registration, heartbeats and metadata went over the mutual-TLS controller listener; a
    # peer without a certificate, or without TLS, is not served there.
    node = c.nodes[0]
    assert controller_listener_answers(node, pki, certificate=True)
    assert not controller_listener_answers(node, pki, certificate=False)
    assert not controller_listener_answers(node, pki, certificate=False, tls=False)

    # With min.insync.replicas=2, acks=all records are acknowledged only once followers
    # fetched them from the leader's INTERNAL listener, the only one brokers use with each
    # other (with a wrong inter-broker password nothing is acknowledged).
    states = create_replicated(c, topic, 3)
    victim = c.node(states[0]["leader"])
    survivors = c.others(victim)
    load = AckedLoad(c.bootstrap, topic, 3).start()
    try:
        wait_until(
            lambda: load.check() or min(load.counts()) >= 50,
            timeout=30,
            msg=lambda: f"50 acknowledgements on every partition before the kill ({load.counts()})",
        )
        t_kill = time.monotonic()
        victim.kill()
        c.wait_partitions(
            topic,
            lambda ps: ps[0]["leader"] not in (NO_LEADER, victim.node_id),
            timeout=30,
            nodes=survivors,
            what=f"a new leader for partition 0 after killing node {victim.node_id}",
        )
        wait_until(
            lambda: load.check() or min(load.acked_after(t_kill)) >= 50,
            timeout=60,
            msg=lambda: f"50 acknowledgements per partition after the kill ({load.acked_after(t_kill)}; {load.summary()})",
        )
    finally:
        left = load.stop()
    load.assert_settled(left)
    counts = check_exactly_once(load, consume_all(bootstrap_of(survivors), topic, range(3)))
    assert counts["recovered"] == counts["acked"], counts

    # The killed node logs in again and catches up.
    victim.start()
    c.wait_all_unfenced(timeout=30)
    c.wait_in_sync(topic, 3, timeout=45)
