package strata;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.CommonClientConfigs;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.config.SaslConfigs;
import org.apache.kafka.common.config.SslConfigs;
import org.apache.kafka.common.errors.TopicAuthorizationException;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;
import org.apache.kafka.common.errors.SaslAuthenticationException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * SASL with the Java client (see tests/python/test_sasl.py, which runs it).
 *
 * <pre>
 *   SaslCheck BOOTSTRAP MECHANISM USER PASSWORD PAUSE_MS [CA_PEM]
 *   SaslCheck acls BOOTSTRAP MECHANISM ADMIN ADMIN_PASSWORD USER PASSWORD OTHER OTHER_PASSWORD [CA_PEM]
 * </pre>
 * Over SASL_PLAINTEXT (SASL_SSL with the CA of CA_PEM) with MECHANISM (PLAIN, SCRAM-SHA-256,
 * SCRAM-SHA-512): the Admin describes the cluster, an idempotent producer writes, and after
 * PAUSE_MS (past the broker's connections.max.reauth.ms, so the clients re-authenticate,
 * KIP-368) writes again and a group consumer reads everything back; a wrong password fails with
 * SaslAuthenticationException. {@code acls}: ADMIN (a super user) creates ACLs with the Admin
 * letting USER write and read a topic and use a group; USER then produces and consumes, and
 * OTHER is refused with TopicAuthorizationException.
 * Prints one "ok: ..." line per check and exits non-zero on the first failure.
 */
public final class SaslCheck {
    private static final Duration TIMEOUT = Duration.ofSeconds(30);

    /// The CA file of a SASL_SSL listener; null for SASL_PLAINTEXT.
    private static String caFile;

    public static void main(String[] args) throws Exception {
        if (args.length > 0 && args[0].equals("acls")) {
            if (args.length < 9) {
                usage();
            }
            caFile = args.length > 9 ? args[9] : null;
            acls(args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8]);
            System.out.println("all checks passed");
            return;
        }
        if (args.length < 5) {
            usage();
        }
        String bootstrap = args[0];
        String mechanism = args[1];
        String user = args[2];
        String password = args[3];
        long pauseMs = Long.parseLong(args[4]);
        caFile = args.length > 5 ? args[5] : null;

        try (Admin admin = Admin.create(props(bootstrap, mechanism, user, password))) {
            int brokers = admin.describeCluster().nodes().get().size();
            check(brokers == 1, "describeCluster over " + mechanism + " sees the broker");
        }

        String topic = "java-sasl-" + UUID.randomUUID();
        Properties producerProps = props(bootstrap, mechanism, user, password);
        producerProps.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        producerProps.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        producerProps.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        producerProps.put(ProducerConfig.ACKS_CONFIG, "all");
        List<String> sent = new ArrayList<>();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(producerProps)) {
            for (int i = 0; i < 5; i++) {
                producer.send(new ProducerRecord<>(topic, "before-" + i)).get();
                sent.add("before-" + i);
            }
            Thread.sleep(pauseMs);
            for (int i = 0; i < 5; i++) {
                producer.send(new ProducerRecord<>(topic, "after-" + i)).get();
                sent.add("after-" + i);
            }
        }
        check(true, "idempotent producer wrote across the session lifetime");

        Properties consumerProps = props(bootstrap, mechanism, user, password);
        consumerProps.put(ConsumerConfig.GROUP_ID_CONFIG, "java-sasl-" + UUID.randomUUID());
        consumerProps.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        consumerProps.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        consumerProps.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        List<String> got = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(consumerProps)) {
            consumer.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + TIMEOUT.toMillis();
            while (got.size() < sent.size() && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    got.add(r.value());
                }
            }
            consumer.commitSync();
        }
        check(got.equals(sent), "group consumer read back " + got.size() + " records");

        try (Admin admin = Admin.create(props(bootstrap, mechanism, user, password + "-wrong"))) {
            admin.describeCluster().nodes().get();
            check(false, "a wrong password is refused");
        } catch (ExecutionException e) {
            check(e.getCause() instanceof SaslAuthenticationException,
                    "a wrong password is refused: " + e.getCause());
        }
        System.out.println("all checks passed");
    }

    private static void usage() {
        System.err.println("usage: SaslCheck BOOTSTRAP MECHANISM USER PASSWORD PAUSE_MS [CA_PEM]\n"
                + "       SaslCheck acls BOOTSTRAP MECHANISM ADMIN ADMIN_PASSWORD USER PASSWORD OTHER OTHER_PASSWORD [CA_PEM]");
        System.exit(2);
    }

    private static void acls(String bootstrap, String mechanism, String admin, String adminPassword,
            String user, String password, String other, String otherPassword) throws Exception {
        String topic = "java-acl-" + UUID.randomUUID();
        String group = "java-acl-group-" + UUID.randomUUID();
        String principal = "User:" + user;
        try (Admin a = Admin.create(props(bootstrap, mechanism, admin, adminPassword))) {
            List<AclBinding> bindings = new ArrayList<>();
            for (AclOperation op : List.of(AclOperation.WRITE, AclOperation.READ, AclOperation.CREATE)) {
                bindings.add(new AclBinding(new ResourcePattern(ResourceType.TOPIC, topic, PatternType.LITERAL),
                        new AccessControlEntry(principal, "*", op, AclPermissionType.ALLOW)));
            }
            bindings.add(new AclBinding(new ResourcePattern(ResourceType.GROUP, group, PatternType.LITERAL),
                    new AccessControlEntry(principal, "*", AclOperation.READ, AclPermissionType.ALLOW)));
            a.createAcls(bindings).all().get();
            int listed = a.describeAcls(AclBindingFilter.ANY).values().get().size();
            check(listed >= bindings.size(), "the Admin created and lists " + listed + " ACLs");
        }
        Properties producerProps = props(bootstrap, mechanism, user, password);
        producerProps.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        producerProps.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        // Idempotence needs IDEMPOTENT_WRITE or WRITE on some topic: the topic's WRITE serves.
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(producerProps)) {
            producer.send(new ProducerRecord<>(topic, "allowed")).get();
        }
        check(true, principal + " produces with its ACLs");
        Properties consumerProps = props(bootstrap, mechanism, user, password);
        consumerProps.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        consumerProps.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        consumerProps.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        consumerProps.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(consumerProps)) {
            consumer.subscribe(List.of(topic));
            List<String> got = new ArrayList<>();
            long deadline = System.currentTimeMillis() + TIMEOUT.toMillis();
            while (got.isEmpty() && System.currentTimeMillis() < deadline) {
                consumer.poll(Duration.ofMillis(200)).forEach(r -> got.add(r.value()));
            }
            consumer.commitSync();
            check(got.equals(List.of("allowed")), principal + " consumes in its group");
        }
        Properties otherProps = props(bootstrap, mechanism, other, otherPassword);
        otherProps.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        otherProps.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        otherProps.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false");
        otherProps.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 15000);
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(otherProps)) {
            producer.send(new ProducerRecord<>(topic, "refused")).get();
            check(false, "User:" + other + " is refused");
        } catch (ExecutionException e) {
            check(e.getCause() instanceof TopicAuthorizationException,
                    "User:" + other + " is refused: " + e.getCause());
        }
    }

    private static Properties props(String bootstrap, String mechanism, String user, String password) {
        String module = mechanism.equals("PLAIN")
                ? "org.apache.kafka.common.security.plain.PlainLoginModule"
                : "org.apache.kafka.common.security.scram.ScramLoginModule";
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(CommonClientConfigs.SECURITY_PROTOCOL_CONFIG, caFile == null ? "SASL_PLAINTEXT" : "SASL_SSL");
        if (caFile != null) {
            p.put(SslConfigs.SSL_TRUSTSTORE_TYPE_CONFIG, "PEM");
            p.put(SslConfigs.SSL_TRUSTSTORE_LOCATION_CONFIG, caFile);
        }
        p.put(SaslConfigs.SASL_MECHANISM, mechanism);
        p.put(SaslConfigs.SASL_JAAS_CONFIG,
                module + " required username=\"" + user + "\" password=\"" + password + "\";");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, (int) TIMEOUT.toMillis());
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 15000);
        return p;
    }

    private static void check(boolean ok, String what) {
        if (!ok) {
            System.out.println("FAILED: " + what);
            System.exit(1);
        }
        System.out.println("ok: " + what);
    }
}
