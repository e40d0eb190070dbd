"""A consume-transform-produce worker with exactly-once semantics, run as its own process by
test_transactions.py so that the test can SIGKILL it in the middle of a transaction.

usage: eos_worker.py BOOTSTRAP INPUT OUTPUT GROUP TXN_ID BATCH [--hang-after-records N]

Reads INPUT (read_committed, group GROUP), writes each value upper-cased to OUTPUT, and
commits the input offsets in the same transaction, BATCH records per transaction. With
--hang-after-records N it stops right after producing its Nth record, inside an open
transaction (flushed to the broker but not committed), and waits to be killed. Exits 0 once INPUT is drained.
"""

from __future__ import annotations

import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer


def main() -> int:
    bootstrap, input_topic, output_topic, group, txn_id, batch = sys.argv[1:7]
    batch = int(batch)
    hang_after = int(sys.argv[8]) if len(sys.argv) > 8 and sys.argv[7] == "--hang-after-records" else None
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            # The killed incarnation stays a group member until its session expires; keep
            # that short so the restarted worker's rebalance completes quickly.
            "session.timeout.ms": 6000,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, "transaction.timeout.ms": 60000})
    producer.init_transactions(30)
    consumer.subscribe([input_topic])
    produced = 0
    idle_since = time.monotonic()
    eof: set[int] = set()
    while True:
        msgs = consumer.consume(num_messages=batch, timeout=0.5)
        records = []
        for m in msgs:
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                raise RuntimeError(m.error())
            eof.discard(m.partition())
            records.append(m)
        if not records:
            assignment = consumer.assignment()
            if assignment and len(eof) >= len(assignment) and time.monotonic() - idle_since > 1.0:
                return 0
            continue
        idle_since = time.monotonic()
        producer.begin_transaction()
        for m in records:
            producer.produce(output_topic, key=m.key(), value=m.value().upper())
            produced += 1
            if hang_after is not None and produced >= hang_after:
                producer.flush(30)
                print("hanging mid-transaction", flush=True)
                time.sleep(3600)
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
        )
        producer.commit_transaction(30)


if __name__ == "__main__":
    sys.exit(main())
