"""Multi-node Strata clusters for the end-to-end tests (test_cluster.py).

A `Cluster` is N `strata serve` processes on loopback, each a `ClusterNode` (a
`helpers.Broker` with a node id, process roles, a controller port and the shared
`--controller-quorum-voters`). Every port is chosen before the first node starts, because
the voters string names every controller.

- `Cluster.start()` spawns every node first and only then waits for them (a node may not
  answer before the quorum has formed), then waits until the brokers are registered and
  unfenced and one active controller is agreed on.
- Per node: `stop()` (SIGTERM), `kill()` (SIGKILL), `pause()` (SIGSTOP), `resume()`
  (SIGCONT), `start()` / `restart()` on the same ports and data, `status()` (GET /cluster).
- Cluster-wide waits, all bounded polls: `active_controller()`, `wait_all_unfenced()`,
  `wait_fenced(id)`, `wait_leaders(topic, cond)`.
- `metadata(node, topics)` sends a Metadata request to that one node on a raw socket
  (librdkafka would pick any broker it knows), so a test can say exactly whose view it is.
- Replication: `partition_states(topic, node)` (leader, epoch, replicas, ISR per partition from
  one node's Metadata), `wait_partitions(topic, cond)` (every live broker's Metadata agrees
  and satisfies `cond`), `wait_in_sync(topic, n)` (every partition led, ISR = all replicas);
  per node `partitions()` / `partition_entry(topic, p)` (`GET /partitions`: leader, epoch,
  ISR, log start / end offset and high watermark of each partition hosted there).

Nodes are registered with the test item (`helpers.register_broker`) by the fixture, so a
failing test's report has every node's log tail.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
import urllib.error
from pathlib import Path
from typing import Any, Callable, Iterable

from kafka.protocol.metadata import MetadataRequest, MetadataResponse

from helpers import Broker, BrokerStartError, free_ports, read_frame, wait_until

log = logging.getLogger("strata-e2e.cluster")

# Fast failure detection for tests; the broker defaults are 9000 / 2000 ms.
DEFAULT_CLUSTER_OVERRIDES = {
    "broker.session.timeout.ms": 3000,
    "broker.heartbeat.interval.ms": 300,
}

# what a status poll may meet while a node starts, stops or changes leaders
TRANSIENT = (OSError, ValueError, KeyError, TypeError, urllib.error.URLError)

NO_LEADER = -1


class ClusterNode(Broker):
    """One node of a `Cluster`: `strata serve --node-id N --process-roles ... --controller-quorum-voters ...`."""

    def __init__(
        self,
        cluster: "Cluster",
        node_id: int,
        workdir: Path,
        overrides: dict[str, Any],
        roles: str = "broker,controller",
        rack: str | None = None,
        extra_args: Iterable[str] = (),
        listeners: Iterable[str] = (),
    ):
        super().__init__(
            workdir, overrides=overrides, extra_args=extra_args, name=f"node-{node_id}", listeners=listeners
        )
        self.cluster = cluster
        self.node_id = node_id
        self.roles = roles
        self.rack = rack
        self.controller_port: int | None = None
        self.paused = False

    # -- roles and addresses -------------------------------------------------
    @property
    def is_broker(self) -> bool:
        return "broker" in self.roles.split(",")

    @property
    def is_controller(self) -> bool:
        return "controller" in self.roles.split(",")

    @property
    def controller_address(self) -> str:
        return f"127.0.0.1:{self.controller_port}"

    @property
    def live(self) -> bool:
        """Running and not paused: it can answer."""
        return self.running and not self.paused

    def command(self) -> list[str]:
        cmd = super().command()
        cmd += ["--node-id", str(self.node_id), "--process-roles", self.roles]
        # every node gets a controller listener: a voter's, or a broker-only node's (which
        # follows the quorum)
        cmd += ["--controller-quorum-voters", self.cluster.voters, "--controller-listen", self.controller_address]
        if self.rack is not None:
            cmd += ["--broker-rack", self.rack]
        return cmd

    def _ready(self) -> bool:
        # A controller-only node serves no Kafka clients.
        if not self.is_broker:
            return self.health() == 200
        return super()._ready()

    # -- lifecycle -------------------------------------------------------------
    def pause(self) -> None:
        """SIGSTOP: the process stays, answers nothing, heartbeats stop."""
        assert self.running, f"{self!r} is not running"
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        if self.running:
            os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.paused:
            self.resume()  # a stopped process cannot act on SIGTERM
        return super().stop(timeout)

    def kill(self) -> int | None:
        rc = super().kill()
        self.paused = False
        return rc

    # -- admin http ----------------------------------------------------------
    def status(self, timeout: float = 2.0) -> dict:
        """This node's `GET /cluster`: node_id, controller_id, is_active_controller,
        metadata_offset, brokers [{id, host, port, rack, fenced}]."""
        code, body, _ = self.http_get("/cluster", timeout=timeout)
        if code != 200:
            raise ValueError(f"GET /cluster on node {self.node_id} answered {code}: {body[:300]}")
        return json.loads(body)

    def partitions(self, timeout: float = 2.0) -> list[dict]:
        """This node's `GET /partitions`: one entry per partition hosted here, {topic,
        partition, leader, leader_epoch, is_leader, replicas, isr, log_start_offset,
        log_end_offset, high_watermark} (leader, replicas and ISR from its metadata image)."""
        code, body, _ = self.http_get("/partitions", timeout=timeout)
        if code != 200:
            raise ValueError(f"GET /partitions on node {self.node_id} answered {code}: {body[:300]}")
        return json.loads(body)

    def partition_entry(self, topic: str, partition: int, timeout: float = 2.0) -> dict | None:
        """This node's `/partitions` entry for one partition (None if it hosts no replica)."""
        for e in self.partitions(timeout):
            if e.get("topic") == topic and e.get("partition") == partition:
                return e
        return None

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("running" if self.running else "down")
        return f"<ClusterNode {self.node_id} {self.roles} kafka={self.port} ctl={self.controller_port} {state}>"


def broker_entry(status: dict, broker_id: int) -> dict | None:
    """The entry for `broker_id` in a /cluster view, or None."""
    for b in status.get("brokers") or []:
        if b.get("id") == broker_id:
            return b
    return None


class Cluster:
    def __init__(
        self,
        workdir: Path,
        n: int = 3,
        overrides: dict[str, Any] | None = None,
        roles: list[str] | None = None,
        racks: list[str | None] | None = None,
        extra_args: Iterable[str] = (),
        listeners: Iterable[str] = (),
    ):
        self.workdir = Path(workdir)
        merged = {**DEFAULT_CLUSTER_OVERRIDES, **(overrides or {})}
        roles = roles or ["broker,controller"] * n
        racks = racks or [None] * n
        assert len(roles) == n and len(racks) == n
        self.nodes = [
            ClusterNode(self, i + 1, self.workdir / f"node-{i + 1}", merged, roles[i], racks[i], extra_args, listeners)
            for i in range(n)
        ]

    # -- addresses -------------------------------------------------------------
    def node(self, node_id: int) -> ClusterNode:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(f"no node {node_id} in {self.nodes}")

    @property
    def brokers(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.is_broker]

    @property
    def broker_ids(self) -> set[int]:
        return {n.node_id for n in self.brokers}

    @property
    def voters(self) -> str:
        return ",".join(f"{n.node_id}@{n.controller_address}" for n in self.nodes if n.is_controller)

    @property
    def bootstrap(self) -> str:
        """Every broker, for clients that should survive the loss of any one node."""
        return bootstrap_of(self.brokers)

    def live_nodes(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.live]

    def others(self, *nodes: ClusterNode) -> list[ClusterNode]:
        ids = {n.node_id for n in nodes}
        return [n for n in self.nodes if n.node_id not in ids]

    def _assign_ports(self) -> None:
        # Kafka, admin HTTP and controller ports, and one more per named listener beyond the
        # first (which is `port`).
        per_node = 3 + max(len(self.nodes[0].listeners) - 1, 0)
        ports = free_ports(per_node * len(self.nodes))
        for i, n in enumerate(self.nodes):
            mine = ports[per_node * i : per_node * (i + 1)]
            n.port, n.http_port, n.controller_port = mine[:3]
            n.listener_ports = dict(zip(n.listeners, [n.port, *mine[3:]]))

    # -- lifecycle -------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "Cluster":
        for attempt in range(3):
            self._assign_ports()
            for n in self.nodes:
                n._spawn()
            deadline = time.monotonic() + timeout
            try:
                for n in self.nodes:
                    n._wait_ready(max(1.0, deadline - time.monotonic()))
                break
            except BrokerStartError:
                clash = any("in use" in n.log_tail(20).lower() for n in self.nodes)
                for n in self.nodes:
                    n.kill()
                if clash and attempt < 2:
                    log.info("port clash while starting the cluster; new ports, attempt %d", attempt + 2)
                    continue
                raise
        started = time.monotonic()
        self.wait_all_unfenced(timeout=timeout)
        ctl = self.active_controller(timeout=timeout)
        log.info(
            "cluster of %d up (+%.2fs to registered and agreed), active controller node %d",
            len(self.nodes),
            time.monotonic() - started,
            ctl.node_id,
        )
        return self

    def close(self) -> None:
        """SIGTERM every node at once (one by one, the last ones would each wait for a
        controller that is already gone), then wait for each, SIGKILL if it hangs."""
        for n in self.nodes:
            if n.paused:
                n.resume()
            if n.running:
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            n.close()

    # -- views -----------------------------------------------------------------
    def status(self, node: ClusterNode | int) -> dict:
        """`GET /cluster` of one node (a ClusterNode or its id)."""
        return (self.node(node) if isinstance(node, int) else node).status()

    def statuses(self, nodes: Iterable[ClusterNode] | None = None) -> dict[int, dict]:
        """GET /cluster of each node (default: every live one). Raises if one does not answer."""
        return {n.node_id: n.status() for n in (self.live_nodes() if nodes is None else nodes)}

    def active_controller(self, timeout: float = 30.0) -> ClusterNode:
        """Wait until exactly one live node says it is the active controller and every live node
        names it as controller_id; return it."""
        last: dict[int, Any] = {}

        def agreed():
            last.clear()
            views = {}
            for n in self.live_nodes():
                try:
                    views[n.node_id] = n.status()
                    last[n.node_id] = {
                        k: views[n.node_id].get(k) for k in ("controller_id", "is_active_controller")
                    }
                except TRANSIENT as e:
                    last[n.node_id] = repr(e)
                    return None
            active = [i for i, s in views.items() if s.get("is_active_controller")]
            if len(active) != 1:
                return None
            if any(s.get("controller_id") != active[0] for s in views.values()):
                return None
            return self.node(active[0])

        return wait_until(
            agreed,
            timeout=timeout,
            interval=0.1,
            msg=lambda: f"one active controller agreed on by every live node (views: {last})",
        )

    def wait_all_unfenced(self, timeout: float = 30.0, ids: Iterable[int] | None = None) -> dict[int, dict]:
        """Wait until every live node's /cluster lists every broker (default: all broker-role
        nodes) as registered and unfenced; return the views."""
        want = set(self.broker_ids if ids is None else ids)
        last: dict[int, Any] = {}

        def unfenced():
            views = self.statuses()
            for nid, s in views.items():
                last[nid] = [(b.get("id"), b.get("fenced")) for b in s.get("brokers") or []]
            ok = all(
                (b := broker_entry(s, i)) is not None and b.get("fenced") is False
                for s in views.values()
                for i in want
            )
            return views if ok else None

        return wait_until(
            unfenced,
            timeout=timeout,
            interval=0.1,
            msg=lambda: f"brokers {sorted(want)} registered and unfenced in every live node's view ({last})",
            ignore=TRANSIENT,
        )

    def wait_fenced(self, broker_id: int, timeout: float = 30.0) -> dict[int, dict]:
        """Wait until every live node's /cluster shows `broker_id` fenced (or not listed)."""
        last: dict[int, Any] = {}

        def fenced():
            views = self.statuses()
            for nid, s in views.items():
                last[nid] = broker_entry(s, broker_id)
            ok = all((b := broker_entry(s, broker_id)) is None or b.get("fenced") is True for s in views.values())
            return views if ok else None

        return wait_until(
            fenced,
            timeout=timeout,
            interval=0.1,
            msg=lambda: f"broker {broker_id} fenced in every live node's view ({last})",
            ignore=TRANSIENT,
        )

    # -- Kafka metadata ----------------------------------------------------------
    def metadata(self, node: ClusterNode, topics: list[str] | None = None, timeout: float = 5.0) -> dict:
        return raw_metadata(node.port, topics, timeout=timeout)

    def leaders(self, topic: str, node: ClusterNode | None = None) -> dict[int, int]:
        """partition -> leader id (-1 when none) of `topic` in `node`'s Metadata response."""
        node = node or self.live_brokers()[0]
        t = self.metadata(node, [topic])["topics"][topic]
        if t["error"] != 0:
            raise ValueError(f"Metadata for {topic} from node {node.node_id}: error {t['error']}")
        return {p: v["leader"] for p, v in t["partitions"].items()}

    def wait_leaders(
        self,
        topic: str,
        cond: Callable[[dict[int, int]], bool],
        timeout: float = 30.0,
        nodes: Iterable[ClusterNode] | None = None,
        what: str = "a leader condition",
    ) -> dict[int, int]:
        """Poll the Metadata of `nodes` (default: every live broker) until each one's view of
        `topic`'s leaders satisfies `cond` and they all agree; return the leaders."""
        return self._wait_agreed(
            lambda n: self.leaders(topic, n),
            cond,
            timeout,
            nodes,
            f"{what} for {topic} (leaders per node's Metadata",
        )

    def _wait_agreed(
        self,
        view: Callable[[ClusterNode], Any],
        cond: Callable[[Any], bool],
        timeout: float,
        nodes: Iterable[ClusterNode] | None,
        what: str,
        key: Callable[[Any], Any] = lambda v: v,
        shown: Callable[[Any], Any] = lambda v: v,
    ) -> Any:
        """Poll `view(node)` of `nodes` (default: every live broker) until the views agree (by
        `key`) and satisfy `cond`; return the view. A timeout shows each node's last view."""
        last: dict[int, Any] = {}

        def check():
            views = {}
            for n in list(nodes) if nodes is not None else self.live_brokers():
                views[n.node_id] = view(n)
                last[n.node_id] = shown(views[n.node_id])
            first = next(iter(views.values()))
            if all(key(v) == key(first) for v in views.values()) and cond(first):
                return first
            return None

        return wait_until(check, timeout=timeout, interval=0.1, msg=lambda: f"{what}: {last})", ignore=TRANSIENT)

    def live_brokers(self) -> list[ClusterNode]:
        return [n for n in self.brokers if n.live]

    # -- replication ---------------------------------------------------------------
    def partition_states(self, topic: str, node: ClusterNode | None = None) -> dict[int, dict]:
        """partition -> {"leader", "epoch", "replicas", "isr", "offline", "error"} of `topic` in
        `node`'s Metadata response (default: the first live broker)."""
        node = node or self.live_brokers()[0]
        t = self.metadata(node, [topic])["topics"][topic]
        if t["error"] != 0:
            raise ValueError(f"Metadata for {topic} from node {node.node_id}: error {t['error']}")
        return t["partitions"]

    def wait_partitions(
        self,
        topic: str,
        cond: Callable[[dict[int, dict]], bool],
        timeout: float = 30.0,
        nodes: Iterable[ClusterNode] | None = None,
        what: str = "a partition condition",
    ) -> dict[int, dict]:
        """Poll the Metadata of `nodes` (default: every live broker) until they agree on each
        partition's leader, epoch, replicas and ISR and that view satisfies `cond`; return it."""
        return self._wait_agreed(
            lambda n: self.partition_states(topic, n),
            cond,
            timeout,
            nodes,
            f"{what} for {topic} (per node's Metadata",
            key=lambda states: {
                p: (s["leader"], s["epoch"], list(s["replicas"]), sorted(s["isr"])) for p, s in states.items()
            },
            shown=lambda states: {
                p: f"leader {s['leader']} epoch {s['epoch']} isr {sorted(s['isr'])}" for p, s in states.items()
            },
        )

    def wait_in_sync(
        self, topic: str, partitions: int, timeout: float = 30.0, nodes: Iterable[ClusterNode] | None = None
    ) -> dict[int, dict]:
        """Wait until every partition of `topic` has a leader and its ISR is all of its replicas,
        in every live broker's (or `nodes`') Metadata."""
        return self.wait_partitions(
            topic,
            fully_in_sync(partitions),
            timeout=timeout,
            nodes=nodes,
            what=f"{partitions} partitions led, every replica in the ISR",
        )


def bootstrap_of(nodes: Iterable[ClusterNode]) -> str:
    return ",".join(n.bootstrap for n in nodes)


def fully_in_sync(partitions: int, replication_factor: int | None = None) -> Callable[[dict[int, dict]], bool]:
    """Condition for `Cluster.wait_partitions`: `partitions` partitions, each led, its ISR all of
    its replicas (and, if given, `replication_factor` of them)."""

    def ok(states: dict[int, dict]) -> bool:
        return len(states) == partitions and all(
            s["leader"] != NO_LEADER
            and sorted(s["isr"]) == sorted(s["replicas"])
            and (replication_factor is None or len(s["replicas"]) == replication_factor)
            for s in states.values()
        )

    return ok


def raw_metadata(port: int, topics: list[str] | None = None, timeout: float = 5.0, version: int = 12) -> dict:
    """One Metadata request to 127.0.0.1:port. Returns
    {"controller_id", "cluster_id", "brokers": {id: {"host", "port", "rack"}},
     "topics": {name: {"error", "partitions": {p: {"leader", "epoch", "replicas", "isr", "offline", "error"}}}}}."""
    T = MetadataRequest.MetadataRequestTopic
    req = MetadataRequest(
        version=version,
        topics=None if topics is None else [T(name=t) for t in topics],
        allow_auto_topic_creation=False,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    )
    req.with_header(correlation_id=1, client_id="strata-cluster-test")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(bytes(req.encode(header=True, framed=True)))
        resp = MetadataResponse.decode(read_frame(s), version=version, header=True)
    return {
        "controller_id": resp.controller_id,
        "cluster_id": resp.cluster_id,
        "brokers": {b.node_id: {"host": b.host, "port": b.port, "rack": b.rack} for b in resp.brokers},
        "topics": {
            t.name: {
                "error": t.error_code,
                "partitions": {
                    p.partition_index: {
                        "leader": p.leader_id,
                        "epoch": p.leader_epoch,
                        "replicas": list(p.replica_nodes),
                        "isr": list(p.isr_nodes),
                        "offline": list(p.offline_replicas or []),
                        "error": p.error_code,
                    }
                    for p in t.partitions
                },
            }
            for t in resp.topics
        },
    }


def java_string_hash(s: str) -> int:
    """Java's String.hashCode (over UTF-16 code units), as a signed 32-bit int."""
    h = 0
    data = s.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def offsets_partition_for(group: str, partitions: int) -> int:
    """The __consumer_offsets partition of `group` (Kafka: Utils.abs(hashCode) % partitions)."""
    h = java_string_hash(group)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


class ProcessLog:
    """A log file shown in a failing test's report (`helpers.register_broker`), for processes
    that are not `Broker`s: `strata dev cluster` and the nodes it starts."""

    def __init__(self, log_path: Path, proc=None, name: str = "process"):
        self.log_path = Path(log_path)
        self.proc = proc
        self.name = name

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return f"(no log at {self.log_path})"
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
