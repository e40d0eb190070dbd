package strata;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.function.BooleanSupplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterClientQuotasOptions;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.QuorumInfo;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.ReplicaInfo;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidRequestException;
import org.apache.kafka.common.errors.InvalidTopicException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.quota.ClientQuotaAlteration;
import org.apache.kafka.common.quota.ClientQuotaEntity;
import org.apache.kafka.common.quota.ClientQuotaFilter;
import org.apache.kafka.common.quota.ClientQuotaFilterComponent;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Black-box compatibility check of the official Java Kafka client against a
 * Strata broker. Usage: {@code JavaClientCheck <bootstrap>}.
 *
 * <p>Prints one {@code ok: ...} line per passed check. Exits 0 when everything
 * passed, 1 on the first failed check (with a {@code FAILED: ...} line and the
 * stack trace on stderr), 2 on bad usage.
 *
 * <p>Strata has no group coordinator, so consumers use assign() + seek with
 * group.id unset and auto-commit off.
 */
public final class JavaClientCheck {

    private static final Duration API_TIMEOUT = Duration.ofSeconds(15);
    private static final String[] COMPRESSIONS = {"none", "gzip", "snappy", "lz4", "zstd"};

    private final String bootstrap;
    private final String suffix = UUID.randomUUID().toString().substring(0, 8);
    private String step = "startup";

    private JavaClientCheck(String bootstrap) {
        this.bootstrap = bootstrap;
    }

    public static void main(String[] args) {
        if (args.length != 1) {
            System.err.println("usage: JavaClientCheck <bootstrap host:port>");
            System.exit(2);
        }
        JavaClientCheck c = new JavaClientCheck(args[0]);
        long t0 = System.nanoTime();
        try {
            c.run();
        } catch (Throwable t) {
            System.out.flush();
            System.err.println("FAILED: [" + c.step + "] " + describe(t));
            t.printStackTrace(System.err);
            System.err.flush();
            System.exit(1);
        }
        System.out.printf("all checks passed in %.1fs%n", (System.nanoTime() - t0) / 1e9);
        System.out.flush();
        System.exit(0);
    }

    // ------------------------------------------------------------------
    // plumbing
    // ------------------------------------------------------------------

    static final class CheckFailed extends RuntimeException {
        CheckFailed(String msg) {
            super(msg);
        }
    }

    private static String describe(Throwable t) {
        StringBuilder sb = new StringBuilder(t.toString());
        Throwable c = t.getCause();
        while (c != null && c != t) {
            sb.append(" <- caused by ").append(c);
            t = c;
            c = c.getCause();
        }
        return sb.toString();
    }

    private static void check(boolean cond, String fmt, Object... args) {
        if (!cond) {
            throw new CheckFailed(String.format(fmt, args));
        }
    }

    private static void ok(String fmt, Object... args) {
        System.out.println("ok: " + String.format(fmt, args));
        System.out.flush();
    }

    private static void waitFor(String what, long timeoutMs, BooleanSupplier cond) throws InterruptedException {
        long deadline = System.currentTimeMillis() + timeoutMs;
        while (!cond.getAsBoolean()) {
            if (System.currentTimeMillis() > deadline) {
                throw new CheckFailed("timed out after " + timeoutMs + "ms waiting for " + what);
            }
            Thread.sleep(50);
        }
    }

    /** Runs the future and asserts that it fails with the given exception type. */
    private static void expectFailure(Future<?> f, Class<? extends Throwable> type, String what)
            throws InterruptedException {
        try {
            Object v = f.get();
            throw new CheckFailed(what + ": expected " + type.getSimpleName() + ", got success: " + v);
        } catch (ExecutionException e) {
            check(type.isInstance(e.getCause()), "%s: expected %s, got %s", what, type.getSimpleName(),
                    describe(e.getCause()));
        }
    }

    private static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String s(byte[] bytes) {
        return bytes == null ? null : new String(bytes, StandardCharsets.UTF_8);
    }

    private Properties common() {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "strata-java-check");
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, "50");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        p.put(AdminClientConfig.SOCKET_CONNECTION_SETUP_TIMEOUT_MS_CONFIG, "5000");
        return p;
    }

    private Admin admin() {
        Properties p = common();
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, String.valueOf(API_TIMEOUT.toMillis()));
        return Admin.create(p);
    }

    private KafkaProducer<byte[], byte[]> producer(Map<String, String> overrides) {
        Properties p = common();
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "15000");
        p.putAll(overrides);
        return new KafkaProducer<>(p);
    }

    private KafkaConsumer<byte[], byte[]> consumer() {
        Properties p = common();
        // no group.id: Strata has no group coordinator
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "100");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "5000");
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, String.valueOf(API_TIMEOUT.toMillis()));
        return new KafkaConsumer<>(p);
    }

    private void createTopic(Admin admin, String name, int partitions, Map<String, String> configs)
            throws Exception {
        admin.createTopics(List.of(new NewTopic(name, partitions, (short) 1).configs(configs))).all().get();
        waitFor("topic " + name + " to have " + partitions + " partitions with leaders", 15000,
                () -> topicReady(admin, name, partitions));
    }

    private static boolean topicReady(Admin admin, String name, int partitions) {
        try {
            TopicDescription d = admin.describeTopics(List.of(name)).allTopicNames().get().get(name);
            return d != null && d.partitions().size() == partitions
                    && d.partitions().stream().allMatch(p -> p.leader() != null && p.leader().id() >= 0);
        } catch (Exception e) {
            return false;
        }
    }

    private static List<TopicPartition> partitions(String topic, int n) {
        List<TopicPartition> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            out.add(new TopicPartition(topic, i));
        }
        return out;
    }

    // ------------------------------------------------------------------
    // checks
    // ------------------------------------------------------------------

    private void run() throws Exception {
        try (Admin admin = admin()) {
            adminChecks(admin);
            produceConsumeChecks(admin);
            inFlightChecks(admin);
        }
    }

    private void adminChecks(Admin admin) throws Exception {
        step = "admin.describeCluster";
        DescribeClusterResult dc = admin.describeCluster();
        String clusterId = dc.clusterId().get();
        Collection<Node> nodes = dc.nodes().get();
        Node controller = dc.controller().get();
        check(clusterId != null && !clusterId.isEmpty(), "cluster id is empty: %s", clusterId);
        check(nodes.size() == 1, "expected exactly one node, got %s", nodes);
        Node node = nodes.iterator().next();
        ok("describeCluster: clusterId=%s nodes=%s controller=%s", clusterId, nodes, controller);

        // A single node is a quorum of one (KIP-595 DescribeQuorum, as kafka-metadata-quorum.sh).
        step = "admin.describeMetadataQuorum";
        QuorumInfo quorum = admin.describeMetadataQuorum().quorumInfo().get();
        check(quorum.leaderId() == node.id(), "quorum leader %d is not the node %d", quorum.leaderId(), node.id());
        check(quorum.voters().size() == 1 && quorum.voters().get(0).replicaId() == node.id(),
            "expected the node as the only voter, got %s", quorum.voters());
        check(quorum.observers().isEmpty(), "expected no observers, got %s", quorum.observers());
        check(quorum.highWatermark() >= 0 && quorum.voters().get(0).logEndOffset() == quorum.highWatermark(),
            "high watermark %d, voter %s", quorum.highWatermark(), quorum.voters().get(0));
        ok("describeMetadataQuorum: leader=%d epoch=%d highWatermark=%d", quorum.leaderId(), quorum.leaderEpoch(),
            quorum.highWatermark());

        step = "admin.createTopics";
        String topic = "jcc-admin-" + suffix;
        createTopic(admin, topic, 3, Map.of("retention.ms", "3600000"));
        ok("createTopics %s (3 partitions, retention.ms=3600000)", topic);

        step = "admin.createTopics(existing)";
        expectFailure(admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1))).all(),
                TopicExistsException.class, "create existing topic");
        ok("createTopics of an existing topic fails with TopicExistsException");

        step = "admin.createTopics(invalid name)";
        expectFailure(admin.createTopics(List.of(new NewTopic("bad name!" + suffix, 1, (short) 1))).all(),
                InvalidTopicException.class, "create topic with invalid name");
        ok("createTopics with an invalid name fails with InvalidTopicException");

        step = "admin.describeTopics";
        TopicDescription td = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
        check(td != null, "describeTopics returned nothing for %s", topic);
        check(td.name().equals(topic), "describeTopics name %s", td.name());
        check(!td.isInternal(), "topic reported as internal");
        check(td.topicId() != null && !td.topicId().toString().isEmpty(), "no topic id: %s", td);
        check(td.partitions().size() == 3, "expected 3 partitions, got %s", td.partitions());
        for (int i = 0; i < 3; i++) {
            TopicPartitionInfo pi = td.partitions().get(i);
            check(pi.partition() == i, "partition %d listed as %s", i, pi);
            check(pi.leader() != null && pi.leader().id() == node.id(), "partition %d leader %s", i, pi.leader());
            check(pi.replicas().size() == 1 && pi.isr().size() == 1, "partition %d replicas/isr %s", i, pi);
        }
        ok("describeTopics: id=%s partitions=3 leader=%d", td.topicId(), node.id());

        step = "admin.listTopics";
        Set<String> names = admin.listTopics().names().get();
        check(names.contains(topic), "listTopics %s lacks %s", names, topic);
        ok("listTopics includes %s", topic);

        step = "admin.createPartitions";
        admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(4))).all().get();
        waitFor("topic to have 4 partitions", 15000, () -> topicReady(admin, topic, 4));
        ok("createPartitions to 4");

        step = "admin.describeConfigs";
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config cfg = admin.describeConfigs(List.of(res)).all().get().get(res);
        ConfigEntry rms = cfg.get("retention.ms");
        check(rms != null, "describeConfigs has no retention.ms: %s", cfg);
        check("3600000".equals(rms.value()), "retention.ms = %s", rms.value());
        check(rms.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, "retention.ms source %s",
                rms.source());
        ok("describeConfigs: retention.ms=3600000 source=%s (%d entries)", rms.source(), cfg.entries().size());

        step = "admin.incrementalAlterConfigs";
        admin.incrementalAlterConfigs(Map.of(res, List.of(new AlterConfigOp(
                new ConfigEntry("retention.bytes", "1073741824"), AlterConfigOp.OpType.SET)))).all().get();
        Config cfg2 = admin.describeConfigs(List.of(res)).all().get().get(res);
        ConfigEntry rb = cfg2.get("retention.bytes");
        check(rb != null && "1073741824".equals(rb.value()), "retention.bytes after alter: %s", rb);
        check(rb.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, "retention.bytes source %s",
                rb.source());
        check("3600000".equals(cfg2.get("retention.ms").value()), "retention.ms changed by incremental alter: %s",
                cfg2.get("retention.ms"));
        ok("incrementalAlterConfigs SET retention.bytes=1073741824 visible in describeConfigs");

        // records for deleteRecords (partition 0) and listOffsets (partition 1)
        step = "admin: produce records for deleteRecords/listOffsets";
        TopicPartition tp0 = new TopicPartition(topic, 0);
        TopicPartition tp1 = new TopicPartition(topic, 1);
        long base = System.currentTimeMillis() - 60_000;
        long[] ts = {base, base + 3000, base + 2000};
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of())) {
            for (int i = 0; i < 5; i++) {
                p.send(new ProducerRecord<>(topic, 0, b("k" + i), b("v" + i))).get();
            }
            // separate requests, timestamps out of order: max timestamp is at offset 1
            for (int i = 0; i < ts.length; i++) {
                RecordMetadata md = p.send(new ProducerRecord<>(topic, 1, ts[i], b("t" + i), b("t" + i))).get();
                check(md.offset() == i, "partition 1 record %d got offset %d", i, md.offset());
            }
        }

        step = "admin.deleteRecords";
        long low = admin.deleteRecords(Map.of(tp0, RecordsToDelete.beforeOffset(3))).lowWatermarks().get(tp0)
                .get().lowWatermark();
        check(low == 3, "deleteRecords low watermark %d, expected 3", low);
        long earliest0 = admin.listOffsets(Map.of(tp0, OffsetSpec.earliest())).partitionResult(tp0).get().offset();
        check(earliest0 == 3, "earliest offset after deleteRecords is %d, expected 3", earliest0);
        ok("deleteRecords before offset 3: low watermark 3, earliest offset 3");

        step = "admin.describeLogDirs";
        Map<Integer, Map<String, LogDirDescription>> dirs =
                admin.describeLogDirs(List.of(node.id())).allDescriptions().get();
        Map<String, LogDirDescription> mine = dirs.get(node.id());
        check(mine != null && !mine.isEmpty(), "describeLogDirs returned no dirs: %s", dirs);
        Set<TopicPartition> seen = new HashSet<>();
        for (Map.Entry<String, LogDirDescription> e : mine.entrySet()) {
            check(e.getValue().error() == null, "log dir %s error %s", e.getKey(), e.getValue().error());
            for (Map.Entry<TopicPartition, ReplicaInfo> r : e.getValue().replicaInfos().entrySet()) {
                if (r.getKey().topic().equals(topic)) {
                    seen.add(r.getKey());
                }
            }
        }
        check(seen.containsAll(partitions(topic, 4)), "describeLogDirs lists %s for %s", seen, topic);
        ok("describeLogDirs: %d dir(s), all 4 partitions of %s present", mine.size(), topic);

        step = "admin.listOffsets";
        ListOffsetsResultInfo e1 = admin.listOffsets(Map.of(tp1, OffsetSpec.earliest())).partitionResult(tp1).get();
        ListOffsetsResultInfo l1 = admin.listOffsets(Map.of(tp1, OffsetSpec.latest())).partitionResult(tp1).get();
        ListOffsetsResultInfo f1 = admin.listOffsets(Map.of(tp1, OffsetSpec.forTimestamp(base + 1500)))
                .partitionResult(tp1).get();
        ListOffsetsResultInfo f2 = admin.listOffsets(Map.of(tp1, OffsetSpec.forTimestamp(base + 10_000)))
                .partitionResult(tp1).get();
        ListOffsetsResultInfo m1 = admin.listOffsets(Map.of(tp1, OffsetSpec.maxTimestamp())).partitionResult(tp1)
                .get();
        check(e1.offset() == 0, "earliest = %s", e1);
        check(l1.offset() == 3, "latest = %s", l1);
        check(f1.offset() == 1 && f1.timestamp() == base + 3000, "forTimestamp(base+1500) = %s, expected offset 1 "
                + "ts %d", f1, base + 3000);
        check(f2.offset() == -1, "forTimestamp(after all records) = %s, expected offset -1", f2);
        check(m1.offset() == 1 && m1.timestamp() == base + 3000, "maxTimestamp = %s, expected offset 1 ts %d", m1,
                base + 3000);
        ok("listOffsets: earliest=0 latest=3 forTimestamp=1 (none past the end) maxTimestamp=1");

        step = "admin.deleteTopics";
        admin.deleteTopics(List.of(topic)).all().get();
        waitFor("listTopics to lack " + topic, 15000, () -> {
            try {
                return !admin.listTopics().names().get().contains(topic);
            } catch (Exception e) {
                return false;
            }
        });
        ok("deleteTopics %s: gone from listTopics", topic);

        clientQuotas(admin);
    }

    /** AlterClientQuotas / DescribeClientQuotas (KIP-546) as kafka-configs uses them. */
    private void clientQuotas(Admin admin) throws Exception {
        step = "admin.alterClientQuotas";
        String user = "strata-quota-" + UUID.randomUUID();
        ClientQuotaEntity entity = new ClientQuotaEntity(Map.of(ClientQuotaEntity.USER, user));
        ClientQuotaFilter only = ClientQuotaFilter.containsOnly(
            List.of(ClientQuotaFilterComponent.ofEntity(ClientQuotaEntity.USER, user)));
        List<ClientQuotaAlteration> set = List.of(new ClientQuotaAlteration(entity, List.of(
            new ClientQuotaAlteration.Op("producer_byte_rate", 1048576.0),
            new ClientQuotaAlteration.Op("request_percentage", 50.0))));
        admin.alterClientQuotas(set, new AlterClientQuotasOptions().validateOnly(true)).all().get();
        check(admin.describeClientQuotas(only).entities().get().isEmpty(),
            "validateOnly must not set quotas");
        admin.alterClientQuotas(set).all().get();
        Map<ClientQuotaEntity, Map<String, Double>> described =
            admin.describeClientQuotas(only).entities().get();
        check(described.equals(Map.of(entity, Map.of("producer_byte_rate", 1048576.0,
            "request_percentage", 50.0))), "describeClientQuotas: %s", described);
        ok("alterClientQuotas (validateOnly, then set) and describeClientQuotas: %s", described.get(entity));

        step = "admin.alterClientQuotas invalid";
        expectFailure(admin.alterClientQuotas(List.of(new ClientQuotaAlteration(entity, List.of(
                new ClientQuotaAlteration.Op("producer_byte_rate", 1.5))))).all(),
            InvalidRequestException.class, "a fractional byte rate");
        ClientQuotaEntity ipAndUser = new ClientQuotaEntity(
            Map.of(ClientQuotaEntity.USER, user, ClientQuotaEntity.IP, "127.0.0.1"));
        expectFailure(admin.alterClientQuotas(List.of(new ClientQuotaAlteration(ipAndUser, List.of(
                new ClientQuotaAlteration.Op("connection_creation_rate", 5.0))))).all(),
            InvalidRequestException.class, "an ip entity combined with a user");
        ok("alterClientQuotas refuses a fractional byte rate and ip combined with user (InvalidRequestException)");

        step = "admin.alterClientQuotas remove";
        admin.alterClientQuotas(List.of(new ClientQuotaAlteration(entity, List.of(
            new ClientQuotaAlteration.Op("producer_byte_rate", null),
            new ClientQuotaAlteration.Op("request_percentage", null))))).all().get();
        check(admin.describeClientQuotas(only).entities().get().isEmpty(), "quotas removed");
        ok("alterClientQuotas removes both quotas: describeClientQuotas finds none");
    }

    /** One record we expect to read back. */
    private record Expected(String producer, int idx, String key, String value, List<Header> headers,
                            int partition, long offset) {
    }

    private void produceConsumeChecks(Admin admin) throws Exception {
        step = "produce: create topic";
        String topic = "jcc-data-" + suffix;
        int nParts = 3;
        createTopic(admin, topic, nParts, Map.of());
        List<Expected> expected = new ArrayList<>();
        final int perProducer = 300;

        for (String comp : COMPRESSIONS) {
            step = "produce: default producer compression=" + comp;
            String tag = "default-" + comp;
            try (KafkaProducer<byte[], byte[]> p = producer(Map.of(
                    ProducerConfig.COMPRESSION_TYPE_CONFIG, comp, ProducerConfig.LINGER_MS_CONFIG, "5"))) {
                expected.addAll(sendBatch(p, topic, tag, perProducer, true));
            }
            ok("producer (idempotent, acks=all defaults) compression=%s: %d records acked", comp, perProducer);
        }

        step = "produce: non-idempotent acks=1";
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false",
                ProducerConfig.ACKS_CONFIG, "1", ProducerConfig.LINGER_MS_CONFIG, "5"))) {
            expected.addAll(sendBatch(p, topic, "acks1", perProducer, true));
        }
        ok("producer enable.idempotence=false acks=1: %d records acked", perProducer);

        step = "produce: acks=0";
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false",
                ProducerConfig.ACKS_CONFIG, "0", ProducerConfig.LINGER_MS_CONFIG, "5",
                ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4"))) {
            expected.addAll(sendBatch(p, topic, "acks0", perProducer, false));
        }
        ok("producer acks=0: %d records sent", perProducer);

        step = "consume: read back";
        List<TopicPartition> tps = partitions(topic, nParts);
        Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> got = consumeAll(tps, expected.size());

        step = "consume: verify";
        Map<String, Expected> byKey = new HashMap<>();
        for (Expected e : expected) {
            check(byKey.put(e.key(), e) == null, "duplicate expected key %s", e.key());
        }
        Set<String> seenKeys = new HashSet<>();
        // per (producer, partition): last idx seen, to check per-partition send order
        Map<String, Integer> lastIdx = new HashMap<>();
        int total = 0;
        for (TopicPartition tp : tps) {
            long prevOffset = -1;
            for (ConsumerRecord<byte[], byte[]> r : got.get(tp)) {
                total++;
                check(prevOffset < 0 || r.offset() == prevOffset + 1, "%s: offset %d follows %d (not contiguous)", tp,
                        r.offset(), prevOffset);
                check(prevOffset >= 0 || r.offset() == 0, "%s: first offset %d", tp, r.offset());
                prevOffset = r.offset();
                String key = s(r.key());
                Expected e = byKey.get(key);
                check(e != null, "%s@%d: unexpected key %s", tp, r.offset(), key);
                check(seenKeys.add(key), "%s@%d: key %s read twice", tp, r.offset(), key);
                check(e.value().equals(s(r.value())), "%s@%d: value %s, expected %s", tp, r.offset(), s(r.value()),
                        e.value());
                List<Header> hs = Arrays.asList(r.headers().toArray());
                check(hs.equals(e.headers()), "%s@%d: headers %s, expected %s", tp, r.offset(), hs, e.headers());
                if (e.offset() >= 0) {
                    check(e.partition() == r.partition() && e.offset() == r.offset(),
                            "key %s acked at %d@%d but read at %s@%d", key, e.partition(), e.offset(), tp, r.offset());
                }
                check(r.timestamp() > 0, "%s@%d: timestamp %d", tp, r.offset(), r.timestamp());
                String po = e.producer() + "/" + tp.partition();
                Integer prev = lastIdx.put(po, e.idx());
                check(prev == null || prev < e.idx(), "%s: producer %s record %d read after %d", tp, e.producer(),
                        e.idx(), prev);
            }
        }
        check(total == expected.size() && seenKeys.size() == expected.size(), "read %d records (%d distinct), "
                + "expected %d", total, seenKeys.size(), expected.size());
        ok("consumer (assign + seekToBeginning): %d records across %d partitions: keys, values, headers, "
                + "per-partition order and contiguous offsets verified", total, nParts);
    }

    private static List<Expected> sendBatch(KafkaProducer<byte[], byte[]> p, String topic, String tag, int n,
                                            boolean acked) throws Exception {
        List<Future<RecordMetadata>> futures = new ArrayList<>();
        List<Expected> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            String key = tag + "-k" + i;
            // repetitive values so that compression actually does something
            String value = tag + "-value-" + i + "-" + "x".repeat(50 + (i % 100));
            List<Header> headers = new ArrayList<>();
            headers.add(new RecordHeader("producer", b(tag)));
            headers.add(new RecordHeader("idx", b(Integer.toString(i))));
            if (i % 3 == 0) {
                headers.add(new RecordHeader("null-header", null));
            }
            headers.add(new RecordHeader("dup", b("a")));
            headers.add(new RecordHeader("dup", b("b")));
            ProducerRecord<byte[], byte[]> rec = new ProducerRecord<>(topic, null, b(key), b(value), headers);
            futures.add(p.send(rec));
            out.add(new Expected(tag, i, key, value, headers, -1, -1));
        }
        p.flush();
        List<Expected> res = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            RecordMetadata md = futures.get(i).get();
            Expected e = out.get(i);
            if (acked) {
                check(md.offset() >= 0, "%s record %d acked with offset %d", tag, i, md.offset());
                res.add(new Expected(e.producer(), e.idx(), e.key(), e.value(), e.headers(), md.partition(),
                        md.offset()));
            } else {
                res.add(e);
            }
        }
        return res;
    }

    private Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> consumeAll(List<TopicPartition> tps,
                                                                                 int expectedCount) throws Exception {
        Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> got = new HashMap<>();
        for (TopicPartition tp : tps) {
            got.put(tp, new ArrayList<>());
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer()) {
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            long endTotal = end.values().stream().mapToLong(Long::longValue).sum();
            check(endTotal == expectedCount, "end offsets %s sum to %d, expected %d records", end, endTotal,
                    expectedCount);
            long deadline = System.currentTimeMillis() + 20_000;
            int count = 0;
            while (tps.stream().anyMatch(tp -> c.position(tp) < end.get(tp))) {
                if (System.currentTimeMillis() > deadline) {
                    Map<TopicPartition, Long> pos = new HashMap<>();
                    for (TopicPartition tp : tps) {
                        pos.put(tp, c.position(tp));
                    }
                    throw new CheckFailed("timed out consuming: positions " + pos + ", end offsets " + end
                            + ", records " + count);
                }
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    got.get(new TopicPartition(r.topic(), r.partition())).add(r);
                    count++;
                }
            }
        }
        return got;
    }

    private static double metric(KafkaProducer<?, ?> p, String name) {
        return p.metrics().entrySet().stream()
                .filter(e -> e.getKey().name().equals(name) && e.getKey().group().equals("producer-metrics"))
                .mapToDouble(e -> ((Number) e.getValue().metricValue()).doubleValue())
                .findFirst().orElse(Double.NaN);
    }

    private void inFlightChecks(Admin admin) throws Exception {
        step = "in-flight: create topic";
        String topic = "jcc-inflight-" + suffix;
        int nParts = 2;
        int n = 20_000;
        createTopic(admin, topic, nParts, Map.of());

        step = "in-flight: produce";
        long t0 = System.nanoTime();
        Map<Integer, List<Long>> offsetsBySend = new HashMap<>();
        double requests;
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of(
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true",
                ProducerConfig.ACKS_CONFIG, "all",
                "max.in.flight.requests.per.connection", "5",
                ProducerConfig.LINGER_MS_CONFIG, "0",
                // small batches => many requests, so several are in flight at once
                ProducerConfig.BATCH_SIZE_CONFIG, "512"))) {
            List<Future<RecordMetadata>> fs = new ArrayList<>(n);
            for (int i = 0; i < n; i++) {
                fs.add(p.send(new ProducerRecord<>(topic, i % nParts, null, b(Integer.toString(i)))));
            }
            p.flush();
            requests = metric(p, "request-total");
            for (int i = 0; i < n; i++) {
                RecordMetadata md = fs.get(i).get();
                check(md.partition() == i % nParts, "record %d went to partition %d", i, md.partition());
                offsetsBySend.computeIfAbsent(md.partition(), k -> new ArrayList<>()).add(md.offset());
            }
        }
        for (Map.Entry<Integer, List<Long>> e : offsetsBySend.entrySet()) {
            List<Long> offs = e.getValue();
            for (int j = 0; j < offs.size(); j++) {
                check(offs.get(j) == j, "partition %d: send #%d acked at offset %d", e.getKey(), j, offs.get(j));
            }
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        ok("idempotent producer max.in.flight=5: %d records acked in %.1fs (%.0f requests), offsets match send "
                + "order", n, secs, requests);

        step = "in-flight: consume";
        List<TopicPartition> tps = partitions(topic, nParts);
        Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> got = consumeAll(tps, n);
        int total = 0;
        for (TopicPartition tp : tps) {
            List<ConsumerRecord<byte[], byte[]>> rs = got.get(tp);
            for (int j = 0; j < rs.size(); j++) {
                ConsumerRecord<byte[], byte[]> r = rs.get(j);
                int want = j * nParts + tp.partition();
                check(r.offset() == j, "%s: record #%d at offset %d", tp, j, r.offset());
                check(Integer.toString(want).equals(s(r.value())), "%s@%d: value %s, expected %d", tp, r.offset(),
                        s(r.value()), want);
            }
            total += rs.size();
        }
        check(total == n, "read %d records, expected %d", total, n);
        ok("in-flight: all %d records read back exactly once, in order per partition", n);
    }
}
