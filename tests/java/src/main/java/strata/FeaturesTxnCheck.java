package strata;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.FeatureMetadata;
import org.apache.kafka.clients.admin.FeatureUpdate;
import org.apache.kafka.clients.admin.FinalizedVersionRange;
import org.apache.kafka.clients.admin.SupportedVersionRange;
import org.apache.kafka.clients.admin.UpdateFeaturesOptions;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidUpdateVersionException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Feature versions and transactions v2 with the Java client (see tests/python/test_features.py
 * and test_transactions.py, which run it).
 *
 * <pre>
 *   FeaturesTxnCheck BOOTSTRAP features   describeFeatures / updateFeatures through the Admin
 *   FeaturesTxnCheck BOOTSTRAP txn TOPIC  transactional producer (the client picks transactions
 *                                         v2 when the broker finalizes transaction.version 2):
 *                                         committed and aborted transactions, offsets sent to
 *                                         the transaction, a zombie fenced; prints what it
 *                                         committed for the caller to compare
 *   FeaturesTxnCheck BOOTSTRAP timeout TOPIC
 *                                         transactions left open past transaction.timeout.ms,
 *                                         which the coordinator aborts: the producer aborts
 *                                         and carries on (transactions v2); prints what it
 *                                         committed
 * </pre>
 * Prints one "ok: ..." line per check and exits non-zero on the first failure.
 */
public final class FeaturesTxnCheck {
    private static final Duration TIMEOUT = Duration.ofSeconds(30);

    private final String bootstrap;

    private FeaturesTxnCheck(String bootstrap) {
        this.bootstrap = bootstrap;
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: FeaturesTxnCheck BOOTSTRAP features|txn [TOPIC]");
            System.exit(2);
        }
        FeaturesTxnCheck c = new FeaturesTxnCheck(args[0]);
        try {
            switch (args[1]) {
                case "features" -> c.features();
                case "txn" -> c.txn(args[2]);
                case "timeout" -> c.timeout(args[2]);
                default -> throw new IllegalArgumentException("unknown mode " + args[1]);
            }
        } catch (Throwable t) {
            System.out.flush();
            System.err.println("FAILED: " + t);
            t.printStackTrace(System.err);
            System.exit(1);
        }
        System.out.println("all checks passed");
        System.out.flush();
        System.exit(0);
    }

    private static void check(boolean cond, String what) {
        if (!cond) {
            throw new AssertionError(what);
        }
    }

    private static void ok(String what) {
        System.out.println("ok: " + what);
        System.out.flush();
    }

    private Properties common() {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        return p;
    }

    // ------------------------------------------------------------------------------------
    // features
    // ------------------------------------------------------------------------------------

    private FeatureMetadata describe(Admin admin) throws Exception {
        return admin.describeFeatures().featureMetadata().get();
    }

    private static short finalizedLevel(FeatureMetadata m, String name) {
        FinalizedVersionRange r = m.finalizedFeatures().get(name);
        return r == null ? 0 : r.maxVersionLevel();
    }

    private void features() throws Exception {
        try (Admin admin = Admin.create(common())) {
            FeatureMetadata m = describe(admin);
            SupportedVersionRange tv = m.supportedFeatures().get("transaction.version");
            check(tv != null && tv.minVersion() == 0 && tv.maxVersion() == 2,
                    "supported transaction.version 0-2: " + m);
            SupportedVersionRange mv = m.supportedFeatures().get("metadata.version");
            check(mv != null && mv.minVersion() == 7 && mv.maxVersion() == 27, "supported metadata.version 7-27: " + m);
            check(finalizedLevel(m, "metadata.version") == 27, "finalized metadata.version 27: " + m);
            check(finalizedLevel(m, "transaction.version") == 2, "finalized transaction.version 2: " + m);
            check(finalizedLevel(m, "group.version") == 1, "finalized group.version 1: " + m);
            long epoch = m.finalizedFeaturesEpoch().orElse(-1L);
            check(epoch > 0, "finalized features epoch: " + m);
            ok("describeFeatures: " + m.finalizedFeatures());

            // An upgrade past what the broker supports is refused with Kafka's error.
            try {
                admin.updateFeatures(Map.of("transaction.version", new FeatureUpdate((short) 3, FeatureUpdate.UpgradeType.UPGRADE)),
                        new UpdateFeaturesOptions()).all().get();
                throw new AssertionError("transaction.version 3 accepted");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof InvalidUpdateVersionException, "InvalidUpdateVersionException: " + e);
            }
            ok("updateFeatures refuses an unsupported level");

            // validateOnly changes nothing; a safe downgrade does, and shows in describeFeatures.
            admin.updateFeatures(Map.of("transaction.version", new FeatureUpdate((short) 0, FeatureUpdate.UpgradeType.SAFE_DOWNGRADE)),
                    new UpdateFeaturesOptions().validateOnly(true)).all().get();
            check(finalizedLevel(describe(admin), "transaction.version") == 2, "validateOnly changed nothing");
            admin.updateFeatures(Map.of("transaction.version", new FeatureUpdate((short) 0, FeatureUpdate.UpgradeType.SAFE_DOWNGRADE)),
                    new UpdateFeaturesOptions()).all().get();
            FeatureMetadata down = waitFor(admin, "transaction.version", (short) 0);
            check(down.finalizedFeaturesEpoch().orElse(-1L) > epoch, "the epoch grew: " + down);
            ok("updateFeatures downgraded transaction.version to 0");
            admin.updateFeatures(Map.of("transaction.version", new FeatureUpdate((short) 2, FeatureUpdate.UpgradeType.UPGRADE)),
                    new UpdateFeaturesOptions()).all().get();
            waitFor(admin, "transaction.version", (short) 2);
            ok("updateFeatures upgraded transaction.version back to 2");
        }
    }

    private FeatureMetadata waitFor(Admin admin, String name, short level) throws Exception {
        long deadline = System.currentTimeMillis() + TIMEOUT.toMillis();
        while (true) {
            FeatureMetadata m = describe(admin);
            if (finalizedLevel(m, name) == level) {
                return m;
            }
            if (System.currentTimeMillis() > deadline) {
                throw new AssertionError(name + " never reached " + level + ": " + m);
            }
            Thread.sleep(100);
        }
    }

    // ------------------------------------------------------------------------------------
    // transactions
    // ------------------------------------------------------------------------------------

    private KafkaProducer<String, String> producer(String transactionalId) {
        return producer(transactionalId, 60000);
    }

    private KafkaProducer<String, String> producer(String transactionalId, int transactionTimeoutMs) {
        Properties p = common();
        p.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, Integer.toString(transactionTimeoutMs));
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        return new KafkaProducer<>(p);
    }

    private void txn(String topic) throws Exception {
        String txnId = "java-txn-" + UUID.randomUUID().toString().substring(0, 8);
        String group = "java-txn-group-" + UUID.randomUUID().toString().substring(0, 8);
        System.out.println("transactional id: " + txnId);
        try (Admin admin = Admin.create(common())) {
            boolean tv2 = finalizedLevel(describe(admin), "transaction.version") >= 2;
            ok("transaction.version " + (tv2 ? ">= 2: the client uses transactions v2" : "< 2: transactions v1"));
        }
        List<String> committed = new ArrayList<>();
        KafkaProducer<String, String> p = producer(txnId);
        p.initTransactions();
        for (int t = 0; t < 6; t++) {
            p.beginTransaction();
            List<String> values = new ArrayList<>();
            for (int i = 0; i < 5; i++) {
                String v = "java-t" + t + "-" + i;
                p.send(new ProducerRecord<>(topic, i % 3, null, v)).get();
                values.add(v);
            }
            if (t == 2) {
                // Offsets sent to the transaction (TV2: TxnOffsetCommit v5 without AddOffsetsToTxn).
                p.sendOffsetsToTransaction(Map.of(new TopicPartition(topic, 0), new OffsetAndMetadata(t + 1)),
                        new org.apache.kafka.clients.consumer.ConsumerGroupMetadata(group));
            }
            if (t % 3 == 1) {
                p.abortTransaction();
            } else {
                p.commitTransaction();
                committed.addAll(values);
            }
        }
        ok("6 transactions ended (4 committed, 2 aborted)");

        // A second producer with the same transactional id fences the first.
        KafkaProducer<String, String> zombie = p;
        KafkaProducer<String, String> p2 = producer(txnId);
        p2.initTransactions();
        try {
            zombie.beginTransaction();
            zombie.send(new ProducerRecord<>(topic, 0, null, "zombie")).get();
            zombie.commitTransaction();
            throw new AssertionError("the zombie committed");
        } catch (ExecutionException | org.apache.kafka.common.KafkaException e) {
            Throwable cause = e instanceof ExecutionException ? e.getCause() : e;
            check(cause instanceof ProducerFencedException
                    || cause instanceof org.apache.kafka.common.errors.InvalidProducerEpochException
                    || (cause.getCause() instanceof ProducerFencedException),
                    "zombie fenced: " + e);
        }
        zombie.close(Duration.ZERO);
        ok("the zombie producer is fenced");
        p2.beginTransaction();
        p2.send(new ProducerRecord<>(topic, 1, null, "java-after-fence")).get();
        p2.commitTransaction();
        committed.add("java-after-fence");
        p2.close();
        ok("the new producer commits");

        try (Admin admin = Admin.create(common())) {
            Map<TopicPartition, OffsetAndMetadata> offsets =
                    admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            OffsetAndMetadata o = offsets.get(new TopicPartition(topic, 0));
            check(o != null && o.offset() == 3, "the transaction's offset is committed: " + offsets);
            ok("offsets sent to a committed transaction are visible");
        }

        Properties c = common();
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        List<String> seen = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            List<TopicPartition> tps = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1),
                    new TopicPartition(topic, 2));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long deadline = System.currentTimeMillis() + TIMEOUT.toMillis();
            while (System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    if (r.value().startsWith("java-")) {
                        seen.add(r.value());
                    }
                }
                if (seen.size() >= committed.size()) {
                    // One more poll: nothing aborted may follow.
                    for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                        if (r.value().startsWith("java-")) {
                            seen.add(r.value());
                        }
                    }
                    break;
                }
            }
        }
        check(new java.util.HashSet<>(seen).equals(new java.util.HashSet<>(committed)) && seen.size() == committed.size(),
                "read_committed sees exactly the committed records: saw " + seen + ", committed " + committed);
        ok("read_committed consumer saw exactly the " + committed.size() + " committed records");
        for (String v : committed) {
            System.out.println("committed: " + v);
        }
    }

    // ------------------------------------------------------------------------------------
    // transactions the coordinator times out
    // ------------------------------------------------------------------------------------

    /** Waits (bounded) until the coordinator has aborted the transaction on its own. */
    private void waitAborted(Admin admin, String txnId) throws Exception {
        long deadline = System.currentTimeMillis() + TIMEOUT.toMillis();
        while (true) {
            org.apache.kafka.clients.admin.TransactionDescription d =
                    admin.describeTransactions(List.of(txnId)).description(txnId).get();
            if (d.state() == org.apache.kafka.clients.admin.TransactionState.COMPLETE_ABORT) {
                return;
            }
            if (System.currentTimeMillis() > deadline) {
                throw new AssertionError("the coordinator never aborted " + txnId + ": " + d);
            }
            Thread.sleep(50);
        }
    }

    private void timeout(String topic) throws Exception {
        String txnId = "java-timeout-" + UUID.randomUUID().toString().substring(0, 8);
        System.out.println("transactional id: " + txnId);
        List<String> committed = new ArrayList<>();
        try (Admin admin = Admin.create(common())) {
            boolean tv2 = finalizedLevel(describe(admin), "transaction.version") >= 2;
            check(tv2, "the cluster finalizes transaction.version 2");
            ok("transaction.version >= 2: the client uses transactions v2");
            KafkaProducer<String, String> p = producer(txnId, 2000);
            p.initTransactions();

            // 1. Left open past its timeout, then written to: the write fails (abortable), the
            //    producer aborts and commits the next transaction.
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, 0, null, "java-timed-out-0")).get();
            waitAborted(admin, txnId);
            try {
                p.send(new ProducerRecord<>(topic, 1, null, "java-late")).get();
                throw new AssertionError("a write of the aborted transaction was taken");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof org.apache.kafka.common.errors.InvalidProducerEpochException,
                        "the late write is refused with an abortable error: " + e.getCause());
                ok("a write after the timeout is refused: " + e.getCause().getClass().getSimpleName());
            }
            p.abortTransaction();
            ok("the producer aborts");
            committed.addAll(commitOne(p, topic, "java-after-late-write"));
            ok("the next transaction commits");

            // 2. Left open past its timeout, then aborted: the abort with the old epoch is the
            //    coordinator's abort retried (EndTxn v5), answered with the new epoch.
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, 2, null, "java-timed-out-1")).get();
            waitAborted(admin, txnId);
            p.abortTransaction();
            ok("the producer aborts a transaction the coordinator already aborted");
            committed.addAll(commitOne(p, topic, "java-after-abort"));
            ok("the next transaction commits");
            p.close();
        }
        readCommitted(topic, committed, "java-");
        for (String v : committed) {
            System.out.println("committed: " + v);
        }
    }

    private static List<String> commitOne(KafkaProducer<String, String> p, String topic, String prefix)
            throws Exception {
        List<String> values = new ArrayList<>();
        p.beginTransaction();
        for (int i = 0; i < 3; i++) {
            String v = prefix + "-" + i;
            p.send(new ProducerRecord<>(topic, i % 3, null, v)).get();
            values.add(v);
        }
        p.commitTransaction();
        return values;
    }

    /** A read_committed consumer sees exactly `committed` among the records starting with `prefix`. */
    private void readCommitted(String topic, List<String> committed, String prefix) {
        Properties c = common();
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        List<String> seen = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            List<TopicPartition> tps = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1),
                    new TopicPartition(topic, 2));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long deadline = System.currentTimeMillis() + TIMEOUT.toMillis();
            while (System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    if (r.value().startsWith(prefix)) {
                        seen.add(r.value());
                    }
                }
                if (seen.size() >= committed.size()) {
                    for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                        if (r.value().startsWith(prefix)) {
                            seen.add(r.value());
                        }
                    }
                    break;
                }
            }
        }
        check(new java.util.HashSet<>(seen).equals(new java.util.HashSet<>(committed)) && seen.size() == committed.size(),
                "read_committed sees exactly the committed records: saw " + seen + ", committed " + committed);
        ok("read_committed consumer saw exactly the " + committed.size() + " committed records");
    }
}
