"""Shared helpers for the Strata end-to-end tests.

Nothing in here sleeps to *wait* for something: every wait is a poll against
a condition with a deadline (see `wait_until`).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "release" / "strata"

log = logging.getLogger("strata-e2e")

# brokers used by a test item, so that failure reports can show their log tail
BROKERS_KEY = pytest.StashKey[list]()


def register_broker(node, broker: "Broker") -> None:
    node.stash.setdefault(BROKERS_KEY, []).append(broker)
RDKAFKA_LOG = logging.getLogger("librdkafka")


# --------------------------------------------------------------------------
# polling
# --------------------------------------------------------------------------


class WaitTimeout(AssertionError):
    pass


def wait_until(
    fn: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.05,
    msg: str | Callable[[], str] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll `fn` until it returns a truthy value; return that value.

    Exceptions listed in `ignore` count as "not yet". On timeout raises
    WaitTimeout (an AssertionError) describing the last value / exception.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: BaseException | None = None
    while True:
        try:
            last = fn()
            last_exc = None
            if last:
                return last
        except ignore as e:  # noqa: PERF203
            last_exc = e
        if time.monotonic() >= deadline:
            what = msg() if callable(msg) else (msg or getattr(fn, "__name__", "condition"))
            detail = f"last exception: {last_exc!r}" if last_exc else f"last value: {last!r}"
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}; {detail}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# broker process management
# --------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    """Ask the kernel for n distinct free TCP ports on 127.0.0.1."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def strata_bin() -> Path:
    return Path(os.environ.get("STRATA_BIN") or DEFAULT_BIN)


class BrokerStartError(AssertionError):
    pass


_LIVE_BROKERS: set["Broker"] = set()


@atexit.register
def _kill_leftovers() -> None:
    for b in list(_LIVE_BROKERS):
        try:
            b.kill()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


class Broker:
    """One `strata serve` process with a fixed data dir and fixed ports.

    `start()` may be called again after `stop()`/`kill()`: it reuses the same
    ports and data dir, so clients configured with `bootstrap` reconnect.
    """

    def __init__(
        self,
        workdir: Path,
        overrides: dict[str, Any] | None = None,
        extra_args: Iterable[str] = (),
        advertised_listener: str | None = None,
        name: str = "broker",
        listeners: Iterable[str] = (),
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / f"{name}.log"
        self.overrides = {k: str(v) for k, v in (overrides or {}).items()}
        self.extra_args = list(extra_args)
        self.advertised_listener = advertised_listener
        self.name = name
        # Named listeners (Kafka's `listeners`), e.g. ["PLAINTEXT", "SSL"]: the first one's
        # port is `port`; `listener_ports` has every one's. Empty: the `--listen` shorthand.
        self.listeners = [n.upper() for n in listeners]
        self.listener_ports: dict[str, int] = {}
        self.port: int | None = None
        self.http_port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.start_count = 0

    # -- addresses ---------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    def partition_dir(self, topic: str, partition: int) -> Path:
        return self.logs_dir / f"{topic}-{partition}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        if self.listeners:
            spec = ",".join(f"{n}://127.0.0.1:{self.listener_ports[n]}" for n in self.listeners)
            listen = ["--override", f"listeners={spec}"]
        else:
            listen = ["--listen", f"127.0.0.1:{self.port}"]
        cmd = [
            str(strata_bin()),
            "serve",
            *listen,
            "--data-dir",
            str(self.data_dir),
            "--http",
            f"127.0.0.1:{self.http_port}",
        ]
        if self.advertised_listener:
            cmd += ["--advertised-listener", self.advertised_listener]
        for k, v in self.overrides.items():
            cmd += ["--override", f"{k}={v}"]
        cmd += self.extra_args
        return cmd

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "Broker":
        if self.running:
            raise RuntimeError("broker already running")
        binary = strata_bin()
        if not binary.exists():
            raise BrokerStartError(
                f"strata binary not found at {binary}; build it with "
                "`cargo build --release -p strata` or set STRATA_BIN"
            )
        first = self.port is None
        attempts = 3 if first else 1
        for attempt in range(attempts):
            if first:
                ports = free_ports(2 + max(len(self.listeners) - 1, 0))
                self.port, self.http_port = ports[0], ports[1]
                self.listener_ports = dict(zip(self.listeners, [ports[0], *ports[2:]]))
            self._spawn()
            try:
                self._wait_ready(timeout)
                return self
            except BrokerStartError:
                self.kill()
                if attempt + 1 < attempts and "in use" in self.log_tail(20).lower():
                    continue  # lost a port race: pick new ports and retry
                raise
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        self.start_count += 1
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        with open(self.log_path, "ab") as f:
            f.write(f"\n===== start #{self.start_count}: {' '.join(cmd)}\n".encode())
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env={**os.environ, "NO_COLOR": "1"},
                start_new_session=True,
            )
        finally:
            logf.close()
        _LIVE_BROKERS.add(self)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise BrokerStartError(
                    f"strata exited with code {rc} during startup; log tail:\n{self.log_tail()}"
                )
            if self._ready():
                return
            if time.monotonic() >= deadline:
                raise BrokerStartError(
                    f"strata not healthy within {timeout}s (GET {self.http_url}/health); "
                    f"log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _ready(self) -> bool:
        """Started: /health answers 200 and the Kafka port accepts connections."""
        return self.health() == 200 and self._kafka_port_open()

    def _kafka_port_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait. Returns the exit code. Raises if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                _LIVE_BROKERS.discard(self)
                raise AssertionError(f"strata did not exit within {timeout}s of SIGTERM")
        _LIVE_BROKERS.discard(self)
        return self.proc.returncode

    def close(self, timeout: float = 10.0) -> None:
        """Stop at the end of a test or fixture: SIGTERM, then SIGKILL whatever is left
        (a broker hung on SIGTERM is not the failure being reported there)."""
        try:
            self.stop(timeout=timeout)
        except AssertionError:
            pass  # hung on SIGTERM; stop() already SIGKILLed it
        finally:
            self.kill()

    def kill(self) -> int | None:
        """SIGKILL (no clean shutdown) and wait."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        _LIVE_BROKERS.discard(self)
        return self.proc.returncode

    def restart(self, timeout: float = 30.0) -> "Broker":
        self.stop()
        return self.start(timeout)

    # -- admin http --------------------------------------------------------
    def http_get(self, path: str, timeout: float = 2.0) -> tuple[int, str, dict]:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace"), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace"), dict(e.headers or {})

    def health(self) -> int | None:
        try:
            return self.http_get("/health", timeout=1.0)[0]
        except (OSError, urllib.error.URLError):
            return None

    def metrics(self) -> str:
        status, body, _ = self.http_get("/metrics")
        assert status == 200, f"/metrics returned {status}: {body[:500]}"
        return body

    # -- diagnostics -------------------------------------------------------
    def log_tail(self, lines: int = 60) -> str:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return "(no broker log)"
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    def rss_kib(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def __repr__(self) -> str:
        return f"<Broker {self.name} {self.bootstrap} data={self.data_dir}>"


# --------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------


def _base(bootstrap: str) -> dict:
    return {
        "bootstrap.servers": bootstrap,
        "logger": RDKAFKA_LOG,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "socket.connection.setup.timeout.ms": 5000,
    }


def _conf_keys(conf: dict[str, Any]) -> dict[str, Any]:
    """`linger_ms=5` -> `linger.ms`; callbacks (`error_cb`, `stats_cb`, ...) keep their names."""
    return {(k if callable(v) else k.replace("_", ".")): v for k, v in conf.items()}


def make_producer(bootstrap: str, **conf: Any) -> Producer:
    c = _base(bootstrap)
    c.update({"linger.ms": 5, "message.timeout.ms": 30000})
    c.update(_conf_keys(conf))
    return Producer(c)


def make_consumer(bootstrap: str, **conf: Any) -> Consumer:
    c = _base(bootstrap)
    c.update(
        {
            # confluent-kafka insists on a group.id; tests that use groups pass their own.
            "group.id": "strata-e2e-unused",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
        }
    )
    c.update(_conf_keys(conf))
    return Consumer(c)


def round_trip(bootstrap: str, n: int = 10, **conf: Any) -> list[bytes]:
    """Produces m0..m<n-1> to a new topic and reads them back in a consumer group, both
    clients with `conf` (security settings, say); returns the values read within 30 s."""
    topic = f"rt-{uuid.uuid4().hex[:8]}"
    p = make_producer(bootstrap, **conf)
    for i in range(n):
        p.produce(topic, value=f"m{i}".encode())
    assert p.flush(30) == 0, f"records to {topic} not acknowledged"
    c = make_consumer(bootstrap, **{"group.id": f"g-{topic}", **conf})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    c.close()
    return got


def make_admin(bootstrap: str, **conf: Any) -> AdminClient:
    c = _base(bootstrap)
    c.update(_conf_keys(conf))
    return AdminClient(c)


def topic_ready(admin: AdminClient, topic: str, partitions: int | None = None) -> bool:
    md = admin.list_topics(topic, timeout=5)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return False
    if partitions is not None and len(t.partitions) != partitions:
        return False
    return all(p.error is None and p.leader >= 0 for p in t.partitions.values()) and len(t.partitions) > 0


def create_topic(
    admin: AdminClient,
    name: str,
    partitions: int = 1,
    config: dict[str, str] | None = None,
    replication_factor: int = 1,
    timeout: float = 15.0,
) -> None:
    fut = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=replication_factor, config=config or {})],
        operation_timeout=timeout,
        request_timeout=timeout,
    )[name]
    fut.result(timeout=timeout)
    wait_until(
        lambda: topic_ready(admin, name, partitions),
        timeout=timeout,
        msg=f"topic {name} with {partitions} partitions to show up in metadata",
        ignore=(KafkaException,),
    )


def kafka_error_code(exc: BaseException) -> int | None:
    """Extract the KafkaError code from a KafkaException (or None)."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0].code()
    return None


def expect_kafka_error(fut, *codes: int, timeout: float = 15.0) -> KafkaError:
    """Assert that a future from AdminClient fails with one of `codes`."""
    try:
        res = fut.result(timeout=timeout)
    except KafkaException as e:
        err = e.args[0]
        assert err.code() in codes, f"expected error in {[KafkaError(c).name() for c in codes]}, got {err}"
        return err
    raise AssertionError(f"expected error {[KafkaError(c).name() for c in codes]}, got success: {res!r}")


@dataclass
class Rec:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp: int
    timestamp_type: int
    # the partitionLeaderEpoch of the record's batch (None if the client does not say)
    leader_epoch: int | None = None


class DeliveryTracker:
    """Delivery-report callback that records outcomes per message id."""

    def __init__(self) -> None:
        self.acked: dict[Any, tuple[int, int]] = {}  # id -> (partition, offset)
        self.failed: dict[Any, KafkaError] = {}

    def cb(self, ident: Any) -> Callable:
        def _cb(err, msg):
            if err is None:
                self.acked[ident] = (msg.partition(), msg.offset())
            else:
                self.failed[ident] = err

        return _cb

    @property
    def done(self) -> int:
        return len(self.acked) + len(self.failed)


def flush_all(p: Producer, timeout: float = 30.0) -> None:
    remaining = p.flush(timeout)
    assert remaining == 0, f"{remaining} messages still undelivered after flush({timeout})"


def produce_acked(
    bootstrap: str, topic: str, items: Iterable[tuple[int, bytes]], timeout: float = 30.0, **conf: Any
) -> dict[bytes, tuple[int, int]]:
    """Produce (partition, value) pairs with an idempotent acks=all producer (override with
    `conf`); every one must be acknowledged. Returns value -> (partition, offset)."""
    p = make_producer(bootstrap, **{"enable.idempotence": True, "acks": "all", **conf})
    t = DeliveryTracker()
    for part, value in items:
        p.produce(topic, value=value, partition=part, on_delivery=t.cb(value))
        p.poll(0)
    flush_all(p, timeout)
    assert not t.failed, f"{len(t.failed)} records not acknowledged, e.g. {next(iter(t.failed.items()))}"
    return t.acked


def kafka_python_batch_outcomes(bootstrap: str, sends: list[dict[str, Any]], **conf: Any) -> list[Exception | None]:
    """Sends `sends` (keyword arguments of kafka-python's `KafkaProducer.send`) in one batch
    (a long linger, no retries) and returns what became of each: None when acknowledged,
    else its exception."""
    from kafka import KafkaProducer

    prod = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=500, retries=0, request_timeout_ms=10000, **conf)
    try:
        futures = [prod.send(**send) for send in sends]
        prod.flush(timeout=20)
    finally:
        prod.close(timeout=5)
    return [f.exception for f in futures]


def watermarks(bootstrap: str, topic: str, partitions: Iterable[int], timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    c = make_consumer(bootstrap)
    try:
        return {
            p: tuple(c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False))
            for p in partitions
        }
    finally:
        c.close()


def consume_all(
    bootstrap: str,
    topic: str,
    partitions: Iterable[int],
    timeout: float = 30.0,
    until: dict[int, int] | None = None,
    consumer_conf: dict | None = None,
) -> dict[int, list[Rec]]:
    """Read each partition from its beginning up to `until[p]` (default: the
    current high watermark) and return the records per partition."""
    partitions = list(partitions)
    c = make_consumer(bootstrap, **(consumer_conf or {}))
    try:
        if until is None:
            wm = {
                p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False) for p in partitions
            }
            until = {p: hi for p, (lo, hi) in wm.items()}
            start_at = {p: lo for p, (lo, hi) in wm.items()}
        else:
            start_at = {p: 0 for p in partitions}
        out: dict[int, list[Rec]] = {p: [] for p in partitions}
        pending = {p for p in partitions if until[p] > start_at[p]}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                got = {p: (len(v), v[-1].offset if v else None) for p, v in out.items()}
                raise AssertionError(
                    f"timed out after {timeout}s consuming {topic}: got (count, last offset) {got}, "
                    f"wanted up to offsets {until}"
                )
            for m in c.consume(num_messages=1000, timeout=0.2):
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"consumer error: {m.error()}")
                p = m.partition()
                ts_type, ts = m.timestamp()
                out[p].append(
                    Rec(p, m.offset(), m.key(), m.value(), list(m.headers() or []), ts, ts_type, m.leader_epoch())
                )
                if m.offset() + 1 >= until[p]:
                    pending.discard(p)
        return out
    finally:
        c.close()


# --------------------------------------------------------------------------
# raw wire protocol
# --------------------------------------------------------------------------


def kstring(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def compact_string(s: str) -> bytes:
    b = s.encode()
    return uvarint(len(b) + 1) + b


def request_header(api_key: int, api_version: int, correlation_id: int, client_id: str | None, flexible: bool) -> bytes:
    h = struct.pack(">hhi", api_key, api_version, correlation_id) + kstring(client_id)
    if flexible:
        h += b"\x00"  # empty tagged fields (request header v2)
    return h


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def raw_connect(broker: Broker, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_frame(s: socket.socket) -> bytes:
    (size,) = struct.unpack(">i", recv_exact(s, 4))
    assert 0 <= size < 100 * 1024 * 1024, f"implausible response size {size}"
    return recv_exact(s, size)


def wait_closed(s: socket.socket, timeout: float = 5.0) -> tuple[bool, bytes]:
    """Read until the peer closes the connection (EOF or reset).

    Returns (closed, bytes_received_before_close)."""
    deadline = time.monotonic() + timeout
    got = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, bytes(got)
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return False, bytes(got)
        except (ConnectionResetError, BrokenPipeError):
            return True, bytes(got)
        if not chunk:
            return True, bytes(got)
        got += chunk
