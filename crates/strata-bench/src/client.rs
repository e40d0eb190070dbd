//! librdkafka clients configured from the bench options, and the admin calls bench needs.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::options::BenchArgs;

/// What every bench client shares: the bootstrap address and the user's `-X` properties
/// (applied last, so they win).
#[derive(Clone, Debug)]
pub struct Clients {
    pub bootstrap: String,
    extra: Vec<(String, String)>,
}

impl Clients {
    pub fn new(bootstrap: String, args: &BenchArgs) -> anyhow::Result<Self> {
        let extra = args
            .client_properties
            .iter()
            .map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .with_context(|| format!("-X expects KEY=VALUE, got {p:?}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Clients { bootstrap, extra })
    }

    /// These clients with `key=value` set as well (the user's `-X` still win): how the tls
    /// scenario reaches an SSL listener.
    pub fn with_property(mut self, key: &str, value: &str) -> Self {
        self.extra.insert(0, (key.to_string(), value.to_string()));
        self
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "strata-bench");
        c
    }

    fn finish(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    /// Producer settings from the options. `message.max.bytes` grows with `batch.size`, since
    /// librdkafka caps a batch at it.
    pub fn producer(&self, args: &BenchArgs) -> ClientConfig {
        let mut c = self.base();
        let batch = args.batch_size.0.max(1);
        c.set("acks", &args.acks)
            .set("linger.ms", args.linger_ms.to_string())
            .set("batch.size", batch.to_string())
            .set(
                "message.max.bytes",
                (batch + 64 * 1024).max(1_000_000).to_string(),
            )
            .set("compression.type", &args.compression)
            .set("enable.idempotence", args.idempotence.to_string())
            .set("queue.buffering.max.kbytes", "1048576")
            .set("queue.buffering.max.messages", "1000000");
        self.finish(c)
    }

    /// Consumer settings: manual assignment, no commits, large fetches.
    pub fn consumer(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", "strata-bench")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "100")
            .set("queued.min.messages", "100000");
        self.finish(c)
    }

    /// Fails fast, with the address in the message, when no broker answers.
    pub fn check_reachable(&self) -> anyhow::Result<()> {
        let consumer: BaseConsumer = self.consumer().create()?;
        consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .with_context(|| format!("cannot reach a broker at {}", self.bootstrap))?;
        Ok(())
    }

    fn admin_client(&self) -> anyhow::Result<AdminClient<DefaultClientContext>> {
        self.finish(self.base())
            .create()
            .context("cannot create the admin client")
    }

    /// Creates `topic` with `partitions` partitions (replication factor 1, or the broker's
    /// default when it has more brokers) and waits until its metadata shows every partition.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        self.create_topic_with(topic, partitions, &[])
    }

    /// [`Clients::create_topic`] with topic configs (`segment.bytes`, ...).
    pub fn create_topic_with(
        &self,
        topic: &str,
        partitions: i32,
        configs: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let admin = self.admin_client()?;
        let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
        for (key, value) in configs {
            new = new.set(key, value);
        }
        let runtime = runtime()?;
        let results = runtime
            .block_on(admin.create_topics([&new], &admin_options()))
            .with_context(|| format!("cannot create topic {topic}"))?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => bail!("cannot create topic {name}: {code}"),
            }
        }
        self.wait_for_partitions(topic, partitions)
    }

    /// Deletes the topics bench created; failures are only reported.
    pub fn delete_topics(&self, topics: &[String]) {
        if topics.is_empty() {
            return;
        }
        let result = self.admin_client().and_then(|admin| {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            runtime()?
                .block_on(admin.delete_topics(&names, &admin_options()))
                .context("cannot delete the bench topics")
        });
        if let Err(e) = result {
            tracing::warn!("{e:#}");
        }
    }

    fn wait_for_partitions(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let consumer: BaseConsumer = self.consumer().create()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            let ready = md.topics().iter().any(|t| {
                t.name() == topic
                    && t.error().is_none()
                    && t.partitions().len() as i32 >= partitions
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("topic {topic} did not get {partitions} partitions with leaders in 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The (low, high) watermarks of every partition of `topic`.
    pub fn watermarks(&self, topic: &str, partitions: i32) -> anyhow::Result<Vec<(i64, i64)>> {
        self.watermarks_timed(topic, partitions)
            .map(|(marks, _)| marks)
    }

    /// [`Clients::watermarks`], and when the last of them arrived: closing the client
    /// afterwards takes librdkafka about 100 ms more, which is no part of the broker's answer.
    pub fn watermarks_timed(
        &self,
        topic: &str,
        partitions: i32,
    ) -> anyhow::Result<(Vec<(i64, i64)>, Instant)> {
        let consumer: BaseConsumer = self.consumer().create()?;
        let marks = (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .with_context(|| format!("cannot read the offsets of {topic}-{p}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((marks, Instant::now()))
    }
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(30)))
        .operation_timeout(Some(Duration::from_secs(30)))
}

/// The admin client's calls are futures; a small runtime drives them.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime for admin calls")
}
