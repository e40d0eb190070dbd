//! The scenarios of `strata bench`, each measuring the broker's resources around its load.

mod noisy_neighbour;
mod tiered;
mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use crate::baseline;
use crate::client::Clients;
use crate::consumer::{Consumed, ConsumerLoad};
use crate::options::{BenchArgs, Scenario};
use crate::process::{LocalBroker, ProcessStats, RssSampler};
use crate::producer::{Produced, ProducerLoad};
use crate::report::{
    BrokerInfo, IdleConnections, IdlePartitions, Latency, Percentiles, Report, Settings, Startup,
    Throughput, Usage,
};

const MIB: f64 = (1u64 << 20) as f64;

/// One bench run against one broker.
pub struct Bench<'a> {
    args: &'a BenchArgs,
    clients: Clients,
    broker: Option<ProcessStats>,
    work_dir: PathBuf,
    topic: String,
    created_topics: Vec<String>,
    report: Report,
}

impl<'a> Bench<'a> {
    pub fn new(
        args: &'a BenchArgs,
        bootstrap: String,
        pid: Option<u32>,
        private: bool,
        work_dir: PathBuf,
    ) -> anyhow::Result<Self> {
        if args.record_size.0 == 0 || args.partitions < 1 {
            bail!("--record-size and --partitions must be positive");
        }
        let topic = args
            .topic
            .clone()
            .unwrap_or_else(|| unique_name("strata-bench"));
        let mut report = Report {
            broker: BrokerInfo {
                bootstrap: bootstrap.clone(),
                private,
                pid,
            },
            settings: Settings {
                topic: topic.clone(),
                partitions: args.partitions,
                record_size: args.record_size.0,
                producers: args.producers,
                consumers: args.consumers,
                acks: args.acks.clone(),
                linger_ms: args.linger_ms,
                batch_size: args.batch_size.0,
                compression: args.compression.clone(),
                idempotence: args.idempotence,
            },
            ..Report::default()
        };
        if pid.is_none() {
            report.notes.push(
                "the broker's process was not found on this machine: broker CPU and memory are \
                 not reported (pass --broker-pid)"
                    .into(),
            );
        }
        let clients = Clients::new(bootstrap, args)?;
        clients.check_reachable()?;
        Ok(Bench {
            clients,
            args,
            broker: pid.map(ProcessStats::new),
            work_dir,
            topic,
            created_topics: Vec::new(),
            report,
        })
    }

    pub fn into_report(self) -> Report {
        self.report
    }

    pub fn run_all(&mut self) -> anyhow::Result<()> {
        let a = self.args;
        if a.wants(Scenario::Baseline) {
            tracing::info!("measuring the machine's baselines");
            self.report.baseline = Some(
                baseline::measure(&self.work_dir, a.baseline_bytes.0)
                    .context("baseline measurement failed")?,
            );
        }
        let needs_topic = [
            Scenario::Produce,
            Scenario::Consume,
            Scenario::Latency,
            Scenario::IdleConnections,
        ]
        .iter()
        .any(|s| a.wants(*s));
        if needs_topic {
            self.clients.create_topic(&self.topic, a.partitions)?;
            if a.topic.is_none() {
                self.created_topics.push(self.topic.clone());
            }
        }
        if a.wants(Scenario::Produce) {
            self.produce()?;
        }
        if a.wants(Scenario::Consume) {
            self.consume()?;
        }
        if a.wants(Scenario::Latency) {
            self.latency()?;
        }
        if a.wants(Scenario::IdlePartitions) {
            self.idle_partitions()?;
        }
        if a.wants(Scenario::IdleConnections) {
            self.idle_connections()?;
        }
        if a.wants(Scenario::Startup) {
            self.startup()?;
        }
        if a.wants(Scenario::Tiered) {
            self.tiered()?;
        }
        if a.wants(Scenario::Tls) {
            self.tls()?;
        }
        if a.wants(Scenario::NoisyNeighbour) {
            self.noisy_neighbour()?;
        }
        Ok(())
    }

    pub fn cleanup(&mut self) {
        if !self.args.keep_topics {
            self.clients.delete_topics(&self.created_topics);
        }
    }

    /// Runs `f` and reports the broker's and this process's CPU and the broker's peak RSS.
    fn metered<T>(&self, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, Usage)> {
        metered_on(self.broker, f)
    }

    fn producer_load(
        &self,
        records: u64,
        rate: Option<f64>,
        stamp: Option<Instant>,
    ) -> ProducerLoad<'_> {
        ProducerLoad {
            config: self.clients.producer(self.args),
            topic: &self.topic,
            producers: self.args.producers,
            record_size: self.args.record_size.0 as usize,
            records,
            rate,
            stamp_epoch: stamp,
        }
    }

    fn produce(&mut self) -> anyhow::Result<()> {
        let records = (self.args.produce_bytes.0 / self.args.record_size.0).max(1);
        tracing::info!("produce: {records} records");
        let load = self.producer_load(records, None, None);
        let (produced, usage) = self.metered(|| load.run())?;
        self.report.produce = Some(Throughput::new(
            produced.transfer,
            usage,
            self.report.baseline.as_ref(),
        ));
        Ok(())
    }

    fn consume(&mut self) -> anyhow::Result<()> {
        let marks = self.clients.watermarks(&self.topic, self.args.partitions)?;
        let total: i64 = marks.iter().map(|(lo, hi)| hi - lo).sum();
        if total == 0 {
            self.report
                .notes
                .push("consume: the topic is empty (run the produce scenario too)".into());
            return Ok(());
        }
        tracing::info!("consume: {total} records");
        let load = ConsumerLoad {
            config: self.clients.consumer(),
            topic: &self.topic,
            consumers: self.args.consumers,
            start_offsets: marks.iter().map(|m| m.0).collect(),
            end_offsets: Arc::new(OnceLock::from(
                marks.iter().map(|m| m.1).collect::<Vec<_>>(),
            )),
            latency_epoch: None,
            idle_timeout: Duration::from_secs(30),
        };
        let (consumed, usage) = self.metered(|| load.run())?;
        self.report.consume = Some(Throughput::new(
            consumed.transfer,
            usage,
            self.report.baseline.as_ref(),
        ));
        Ok(())
    }

    fn latency(&mut self) -> anyhow::Result<()> {
        let peak = self.report.produce.as_ref().map(|p| p.records_per_s);
        let rate = match (self.args.rate, peak) {
            (Some(r), _) => r as f64,
            (None, Some(peak)) => (peak / 2.0).max(1.0),
            (None, None) => 10_000.0,
        };
        tracing::info!(
            "latency: {rate:.0} records/s for {} s",
            self.args.latency_seconds
        );
        let ((produced, consumed), usage) =
            self.metered(|| self.paced_round_trip(rate, self.args.latency_seconds))?;
        let (Some(histogram), Some(acks)) = (consumed.latency_us, produced.ack_latency_us) else {
            bail!("the latency run recorded no latencies");
        };
        self.report.latency = Some(Latency {
            target_records_per_s: rate,
            peak_records_per_s: if self.args.rate.is_none() { peak } else { None },
            achieved_records_per_s: produced.transfer.records_per_s(),
            end_to_end: Percentiles::of(&histogram),
            produce_ack: Percentiles::of(&acks),
            usage,
        });
        Ok(())
    }

    /// Produces stamped records at `rate` for `seconds` while consumers read them from the
    /// current end of the bench topic, and returns both sides.
    fn paced_round_trip(&self, rate: f64, seconds: f64) -> anyhow::Result<(Produced, Consumed)> {
        self.paced_round_trip_on(&self.topic, rate, seconds)
    }

    /// [`Bench::paced_round_trip`] through `topic`.
    fn paced_round_trip_on(
        &self,
        topic: &str,
        rate: f64,
        seconds: f64,
    ) -> anyhow::Result<(Produced, Consumed)> {
        let starts: Vec<i64> = self
            .clients
            .watermarks(topic, self.args.partitions)?
            .iter()
            .map(|m| m.1)
            .collect();
        let epoch = Instant::now();
        let ends = Arc::new(OnceLock::new());
        let consumers = ConsumerLoad {
            config: self.clients.consumer(),
            topic,
            consumers: self.args.consumers,
            start_offsets: starts,
            end_offsets: ends.clone(),
            latency_epoch: Some(epoch),
            idle_timeout: Duration::from_secs(30) + Duration::from_secs_f64(seconds),
        };
        let records = ((rate * seconds) as u64).max(1);
        let producer = ProducerLoad {
            topic,
            ..self.producer_load(records, Some(rate), Some(epoch))
        };
        thread::scope(|scope| {
            let reader = scope.spawn(|| consumers.run());
            // Let the consumers connect and start fetching before the first record.
            thread::sleep(Duration::from_millis(1000));
            let produced = producer.run();
            let finals = self
                .clients
                .watermarks(topic, self.args.partitions)
                .map(|m| m.iter().map(|m| m.1).collect::<Vec<_>>());
            // Always release the consumers, even when producing failed.
            let release = match &finals {
                Ok(f) => f.clone(),
                Err(_) => vec![i64::MIN; self.args.partitions as usize],
            };
            let _ = ends.set(release);
            let consumed = reader
                .join()
                .map_err(|_| anyhow::anyhow!("the latency consumer panicked"))?;
            finals?;
            Ok((produced?, consumed?))
        })
    }

    fn idle_partitions(&mut self) -> anyhow::Result<()> {
        let Some(broker) = self.broker else {
            self.report
                .notes
                .push("idle-partitions: needs the broker's process to read its memory".into());
            return Ok(());
        };
        let n = self.args.idle_partitions.max(1);
        thread::sleep(Duration::from_secs(1));
        let before = broker.rss_bytes()?;
        let topic = unique_name("strata-bench-idle");
        tracing::info!("idle partitions: creating {topic} with {n} partitions");
        self.clients.create_topic(&topic, n)?;
        self.created_topics.push(topic.clone());
        // One record in every partition, so each has a live segment with data in it.
        let producer: BaseProducer = self.clients.producer(self.args).create()?;
        for p in 0..n {
            producer
                .send(
                    BaseRecord::<(), [u8]>::to(&topic)
                        .partition(p)
                        .payload(b"idle"),
                )
                .map_err(|(e, _)| e)?;
        }
        producer
            .flush(Duration::from_secs(60))
            .context("the idle partitions' records were not acknowledged")?;
        thread::sleep(Duration::from_secs(2));
        let after = broker.rss_bytes()?;
        self.report.idle_partitions = Some(IdlePartitions {
            partitions: n,
            broker_rss_before_mib: before as f64 / MIB,
            broker_rss_after_mib: after as f64 / MIB,
            per_partition_kib: after.saturating_sub(before) as f64 / 1024.0 / n as f64,
        });
        Ok(())
    }

    fn idle_connections(&mut self) -> anyhow::Result<()> {
        let addr = self
            .clients
            .bootstrap
            .to_socket_addrs()?
            .next()
            .context("the bootstrap address does not resolve")?;
        // A light probe: the latency of a modest stream, with and without the idle crowd.
        let probe_rate = 1000.0;
        let probe_seconds = self.args.latency_seconds.clamp(1.0, 5.0);
        let probe = |bench: &Self| -> anyhow::Result<Percentiles> {
            let (_, consumed) = bench.paced_round_trip(probe_rate, probe_seconds)?;
            let h = consumed
                .latency_us
                .context("the probe recorded no latencies")?;
            Ok(Percentiles::of(&h))
        };
        tracing::info!("idle connections: probe without");
        let without = probe(self)?;
        let rss_before = self.broker.and_then(|b| b.rss_bytes().ok());
        let requested = self.args.idle_connections;
        tracing::info!("idle connections: opening {requested}");
        let started = Instant::now();
        let mut open = Vec::with_capacity(requested);
        let mut failure = None;
        for i in 0..requested {
            match open_kafka_connection(addr, i as i32) {
                Ok(c) => open.push(c),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let open_seconds = started.elapsed().as_secs_f64();
        if let Some(e) = failure {
            self.report.notes.push(format!(
                "idle-connections: stopped at {} connections: {e:#}",
                open.len()
            ));
        }
        let idle_cores = match self.broker {
            Some(b) => {
                let before = b.cpu_seconds()?;
                let t = Instant::now();
                thread::sleep(Duration::from_secs(3));
                Some((b.cpu_seconds()? - before) / t.elapsed().as_secs_f64())
            }
            None => None,
        };
        let rss_after = self.broker.and_then(|b| b.rss_bytes().ok());
        tracing::info!("idle connections: probe with {} open", open.len());
        let with = probe(self)?;
        self.report.idle_connections = Some(IdleConnections {
            requested,
            opened: open.len(),
            open_seconds,
            broker_rss_before_mib: rss_before.map(|r| r as f64 / MIB),
            broker_rss_after_mib: rss_after.map(|r| r as f64 / MIB),
            broker_idle_cores: idle_cores,
            without,
            with,
            probe_records_per_s: probe_rate,
        });
        drop(open);
        Ok(())
    }

    /// Start-up time after a clean shutdown, with little and with much data, on a broker of
    /// its own (the measured broker must be restartable, so only a private one will do).
    fn startup(&mut self) -> anyhow::Result<()> {
        let dir = self.work_dir.join("startup");
        let mut broker = LocalBroker::start(&dir, &self.args.broker_overrides)?;
        let clients = Clients::new(broker.addr.to_string(), self.args)?;
        let topic = unique_name("strata-bench-startup");
        let partitions = self.args.partitions;
        clients.create_topic(&topic, partitions)?;
        let fill = |bytes: u64| fill(&clients, self.args, &topic, bytes);
        let small = self.args.startup_small_bytes.0;
        let large = self.args.startup_bytes.0.max(small);
        tracing::info!("startup: writing {small} bytes");
        fill(small)?;
        let (small_start, small_stop) =
            settled_restarts(&mut broker, &clients, &topic, partitions)?;
        tracing::info!("startup: writing up to {large} bytes");
        fill(large - small)?;
        let (large_start, large_stop) =
            settled_restarts(&mut broker, &clients, &topic, partitions)?;
        self.report.startup = Some(Startup {
            small_bytes: small,
            large_bytes: large,
            small_start_seconds: small_start,
            large_start_seconds: large_start,
            large_over_small: large_start / small_start.max(1e-9),
            small_stop_seconds: small_stop,
            large_stop_seconds: large_stop,
        });
        drop(broker);
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}

/// Runs `f` and reports `broker`'s and this process's CPU and `broker`'s peak RSS.
fn metered_on<T>(
    broker: Option<ProcessStats>,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Usage)> {
    let me = ProcessStats::current();
    let sampler = broker.map(RssSampler::start);
    let broker_before = broker.and_then(|b| b.cpu_seconds().ok());
    let client_before = me.cpu_seconds()?;
    let started = Instant::now();
    let value = f()?;
    let wall_seconds = started.elapsed().as_secs_f64();
    let broker_after = broker.and_then(|b| b.cpu_seconds().ok());
    let usage = Usage {
        wall_seconds,
        broker_cpu_seconds: broker_before.zip(broker_after).map(|(b, a)| a - b),
        client_cpu_seconds: me.cpu_seconds()? - client_before,
        broker_peak_rss_mib: sampler.map(|s| s.finish() as f64 / MIB),
    };
    Ok((value, usage))
}

/// Produces `bytes` of records (at least one) into `topic` as fast as the producers can.
fn fill(clients: &Clients, args: &BenchArgs, topic: &str, bytes: u64) -> anyhow::Result<()> {
    fill_with(clients.producer(args), args, topic, bytes)
}

/// [`fill`] with producers of `config`.
fn fill_with(
    config: ClientConfig,
    args: &BenchArgs,
    topic: &str,
    bytes: u64,
) -> anyhow::Result<()> {
    let record_size = args.record_size.0;
    let load = ProducerLoad {
        config,
        topic,
        producers: args.producers,
        record_size: record_size as usize,
        records: (bytes / record_size).max(1),
        rate: None,
        stamp_epoch: None,
    };
    load.run().map(|_| ())
}

/// Writes back every dirty page first, so that a start-up is not timed while the kernel is
/// still writing the data just produced, then restarts five times and keeps the fastest (the
/// least disturbed by the rest of the machine). Returns (seconds to ready, seconds to stop) of
/// that run.
fn settled_restarts(
    broker: &mut LocalBroker,
    clients: &Clients,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<(f64, f64)> {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let runs = (0..5)
        .map(|_| restart(broker, clients, topic, partitions))
        .collect::<anyhow::Result<Vec<_>>>()?;
    runs.into_iter()
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .context("no restart was timed")
}

/// One clean stop and start, until every partition of `topic` answers ListOffsets (its log is
/// loaded): (seconds to ready, seconds to stop).
fn restart(
    broker: &mut LocalBroker,
    clients: &Clients,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<(f64, f64)> {
    let stop = broker.stop()?.as_secs_f64();
    let started = Instant::now();
    broker.start_again()?;
    let deadline = started + Duration::from_secs(600);
    let mut attempts = 1;
    let ready_at = loop {
        match clients.watermarks_timed(topic, partitions) {
            Ok((_, at)) => break at,
            Err(e) if Instant::now() > deadline => {
                bail!("the restarted broker did not serve {topic} within 600 s: {e:#}")
            }
            Err(e) => tracing::debug!("start-up attempt {attempts}: {e:#}"),
        }
        attempts += 1;
        thread::sleep(Duration::from_millis(5));
    };
    let ready = ready_at.duration_since(started).as_secs_f64();
    tracing::debug!(
        "restart: ready in {ready:.3} s after {attempts} attempt(s), stop took {stop:.3} s"
    );
    Ok((ready, stop))
}

fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos:08x}", std::process::id())
}

/// Reads one response frame (at least a correlation id, at most 1 MiB) of the `api` request
/// just sent.
fn read_response_frame(conn: &mut TcpStream, api: &str) -> anyhow::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    conn.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(4..=1 << 20).contains(&len) {
        bail!("the broker answered {api} with a frame of {len} bytes");
    }
    let mut reply = vec![0u8; len as usize];
    conn.read_exact(&mut reply)?;
    Ok(reply)
}

/// Opens a TCP connection and completes one ApiVersions v0 exchange on it, so the broker has
/// fully accepted it as a Kafka connection; then the connection stays idle.
fn open_kafka_connection(addr: SocketAddr, correlation_id: i32) -> anyhow::Result<TcpStream> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let client_id = b"strata-bench-idle";
    let mut body = Vec::with_capacity(32);
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // version 0
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    conn.write_all(&frame)?;
    let reply = read_response_frame(&mut conn, "ApiVersions")?;
    if reply[..4] != correlation_id.to_be_bytes() {
        bail!("the broker answered ApiVersions with the wrong correlation id");
    }
    Ok(conn)
}
