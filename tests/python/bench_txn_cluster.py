"""Per-transaction latency on a 3-node cluster: what the partition leaders' check of
transactional writes (KIP-890) and the coordinator's markers cost when they cross brokers.

Not a test (pytest does not collect it): run it by hand against a release binary,

    STRATA_BIN=target/release/strata python3 tests/python/bench_txn_cluster.py [TXNS] [ROUNDS]

A cluster of three nodes; a topic of 3 partitions, one led by each node (replication factor
1, so the time is the transaction protocol's, not the ISR's); one librdkafka transactional
producer (protocol v1: its leaders verify with AddPartitionsToTxn v5 on the coordinator's
broker) runs TXNS transactions of one record to each partition, each committed, and the
mean wall time per transaction is printed, for each of ROUNDS rounds. Per transaction, two
of the three partitions are led away from the coordinator: two cross-broker checks and two
WriteTxnMarkers. The same run with `transaction.partition.verification.enable=false` gives
the cost without the check.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from confluent_kafka import Producer  # noqa: E402

from cluster import Cluster  # noqa: E402
from helpers import create_topic, make_admin  # noqa: E402

PARTITIONS = 3
WARMUP = 20


def metric(node, name: str) -> float:
    """A counter of one node's /metrics (0 if this binary has none)."""
    for line in node.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def run(txns: int, rounds: int, verification: bool) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="strata-bench-txn-") as tmp:
        c = Cluster(
            Path(tmp),
            n=3,
            overrides={
                "transaction.state.log.num.partitions": 3,
                "transaction.partition.verification.enable": str(verification).lower(),
            },
        )
        c.start()
        try:
            topic = f"bench-txn-{uuid.uuid4().hex[:8]}"
            create_topic(make_admin(c.bootstrap), topic, partitions=PARTITIONS)
            leaders = c.wait_leaders(topic, lambda ls: len(ls) == PARTITIONS and len(set(ls.values())) == 3,
                                     what="one partition led by each node")
            print(f"  leaders {leaders}", flush=True)
            means = []
            for r in range(rounds):
                p = Producer({"bootstrap.servers": c.bootstrap, "transactional.id": f"bench-{topic}-{r}",
                              "linger.ms": 0, "acks": "all", "log_level": 0})
                p.init_transactions(30)
                for i in range(WARMUP + txns):
                    if i == WARMUP:
                        start = time.perf_counter()
                    p.begin_transaction()
                    for part in range(PARTITIONS):
                        p.produce(topic, value=b"v%d" % i, partition=part)
                    p.flush(30)
                    p.commit_transaction(30)
                elapsed = time.perf_counter() - start
                means.append(elapsed * 1000 / txns)
                print(f"  round {r + 1}: {txns} transactions x {PARTITIONS} partitions, "
                      f"{means[-1]:.2f} ms/txn", flush=True)
            pooled = {name: sum(metric(n, name) for n in c.nodes)
                      for name in ("strata_broker_client_connects_total", "strata_broker_client_reuses_total")}
            print(f"  broker-to-broker connections opened {pooled['strata_broker_client_connects_total']:.0f}, "
                  f"requests on a reused one {pooled['strata_broker_client_reuses_total']:.0f}", flush=True)
            return means
        finally:
            c.close()


def main() -> None:
    txns = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    for verification in (True, False):
        print(f"transaction.partition.verification.enable={str(verification).lower()}", flush=True)
        means = run(txns, rounds, verification)
        print(f"  => {min(means):.2f}-{max(means):.2f} ms/txn (median {statistics.median(means):.2f})",
              flush=True)


if __name__ == "__main__":
    main()
