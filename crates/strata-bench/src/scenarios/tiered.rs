//! The tiered-storage scenario: what reading from the tier costs against reading from local
//! disk, and whether local disk use and start-up time stay flat as the tier grows.
//!
//! It needs brokers it can configure and restart, so it starts its own (`strata serve
//! --object-store file://<work dir>/tiered-*/tier`), one per part, and skips an external
//! broker. Sizes follow `--produce-bytes` (N) and `--partitions`:
//! - reads: a tiered topic and a local-only one (`remote.storage.enable=false`), N each, with
//!   segments of N/partitions/16 (64 KiB to 16 MiB) and a local retention of two segments per
//!   partition. Once uploads settle, the tiered topic is read from its log start to its local
//!   log start (only the tier has those records: "cold"), and the local-only topic end to end
//!   ("hot").
//! - growth: one tiered topic with N, then 10 N, at the same local retention; after each, the
//!   disk space under `logs/` and the fastest of five clean restarts.
//!
//! Disk: N + N on local disk and N in the tier for the reads (removed afterwards), then 10 N
//! in the tier and a few segments per partition locally for the growth part.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{fill_with, metered_on, settled_restarts, unique_name, Bench};
use crate::client::Clients;
use crate::consumer::ConsumerLoad;
use crate::metrics::BrokerMetrics;
use crate::options::{BenchArgs, ByteSize};
use crate::process::{LocalBroker, ProcessStats};
use crate::report::{Throughput, Tiered, TieredFootprint};

/// Segments per partition of the read topics: most of each leaves local disk.
const SEGMENTS_PER_PARTITION: u64 = 16;
const MIN_SEGMENT_BYTES: u64 = 64 << 10;
const MAX_SEGMENT_BYTES: u64 = 16 << 20;
/// `local.retention.bytes` of the tiered topics, in segments (per partition).
const LOCAL_RETENTION_SEGMENTS: u64 = 2;
/// The growth part's large run holds this many times the small run's data.
const GROWTH_FACTOR: u64 = 10;
/// How long uploads may take to settle: this, plus the data at `SLOWEST_UPLOAD_BYTES_PER_S`.
const UPLOAD_SETTLE_BASE: Duration = Duration::from_secs(60);
const SLOWEST_UPLOAD_BYTES_PER_S: f64 = 10e6;

const CAVEAT: &str = "the tier is a file:// directory on the broker's own disk, so cold reads \
    measure the tier path's overhead (object-store reads, CRC checks, the read cache), not \
    network object storage; the page cache was not dropped, so both reads may come from memory";

/// The scenario's topic layout, from the options.
struct Layout {
    partitions: i32,
    /// Produced into each read topic, and into the growth topic's small run.
    bytes: u64,
    segment_bytes: u64,
    local_retention_bytes: u64,
    /// The options with `batch.size` at most a quarter segment, so segments roll at size
    /// even when they are small.
    producer_args: BenchArgs,
}

impl Layout {
    fn of(args: &BenchArgs) -> Self {
        let partitions = args.partitions.max(1);
        let bytes = args.produce_bytes.0.max(args.record_size.0);
        let per_partition = bytes / partitions as u64;
        let segment_bytes =
            (per_partition / SEGMENTS_PER_PARTITION).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES);
        let mut producer_args = args.clone();
        producer_args.batch_size = ByteSize(args.batch_size.0.min(segment_bytes / 4).max(1));
        Layout {
            partitions,
            bytes,
            segment_bytes,
            local_retention_bytes: LOCAL_RETENTION_SEGMENTS * segment_bytes,
            producer_args,
        }
    }

    fn tiered_configs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("remote.storage.enable", "true".into()),
            ("segment.bytes", self.segment_bytes.to_string()),
            (
                "local.retention.bytes",
                self.local_retention_bytes.to_string(),
            ),
        ]
    }

    fn local_configs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("remote.storage.enable", "false".into()),
            ("segment.bytes", self.segment_bytes.to_string()),
        ]
    }
}

/// A private broker with a `file://` tier in its work directory.
struct TieredBroker {
    broker: LocalBroker,
    clients: Clients,
    /// `--object-store`.
    url: String,
    tier_dir: PathBuf,
}

impl TieredBroker {
    fn start(dir: &Path, args: &BenchArgs) -> anyhow::Result<Self> {
        let tier_dir = std::path::absolute(dir.join("tier"))
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        fs::create_dir_all(&tier_dir)
            .with_context(|| format!("cannot create {}", tier_dir.display()))?;
        let url = format!("file://{}", tier_dir.display());
        let serve_args = ["--object-store".to_string(), url.clone()];
        let broker = LocalBroker::start_with(dir, &serve_args, &args.broker_overrides)?;
        let clients = Clients::new(broker.addr.to_string(), args)?;
        clients.check_reachable()?;
        Ok(TieredBroker {
            broker,
            clients,
            url,
            tier_dir,
        })
    }

    /// Produces `bytes` into `topic`, spread evenly over its partitions: librdkafka's sticky
    /// partitioner put 80 % of a small run into one partition, which then uploads alone and
    /// holds less than its local retention. The user's `-X sticky.partitioning.linger.ms`
    /// still wins.
    fn fill(&self, layout: &Layout, topic: &str, bytes: u64) -> anyhow::Result<()> {
        tracing::info!("tiered: writing {bytes} bytes into {topic}");
        let mut config = self.clients.producer(&layout.producer_args);
        if config.get("sticky.partitioning.linger.ms").is_none() {
            config.set("sticky.partitioning.linger.ms", "0");
        }
        fill_with(config, &layout.producer_args, topic, bytes)
    }

    fn stats(&self) -> ProcessStats {
        ProcessStats::new(self.broker.pid())
    }

    fn metrics(&self) -> anyhow::Result<BrokerMetrics> {
        BrokerMetrics::scrape(self.broker.http)
    }

    /// Waits until every rolled segment is in the tier (the broker applies local retention
    /// right after each upload, under the same lock), and returns how long that took.
    fn wait_for_uploads(&self, bytes: u64) -> anyhow::Result<f64> {
        let started = Instant::now();
        let limit =
            UPLOAD_SETTLE_BASE + Duration::from_secs_f64(bytes as f64 / SLOWEST_UPLOAD_BYTES_PER_S);
        loop {
            let metrics = self.metrics()?;
            let lag = metrics.require("strata_tier_upload_lag_bytes")?;
            tracing::debug!(
                "tiered: upload lag {lag} bytes, {} segments uploaded",
                metrics
                    .get("strata_tier_uploaded_segments_total")
                    .unwrap_or(0.0)
            );
            if lag == 0.0 {
                return Ok(started.elapsed().as_secs_f64());
            }
            if started.elapsed() > limit {
                bail!(
                    "{lag} bytes of rolled segments were still not in the tier {limit:?} after \
                     producing; see {}",
                    self.broker.log_path().display()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.broker
            .data_dir
            .join("logs")
            .join(format!("{topic}-{partition}"))
    }

    /// The first offset of each partition still on local disk (Kafka's local log start
    /// offset): the base offset of its oldest segment file, or the log start if higher.
    fn local_log_starts(&self, topic: &str, log_starts: &[i64]) -> anyhow::Result<Vec<i64>> {
        log_starts
            .iter()
            .enumerate()
            .map(|(p, &log_start)| {
                let dir = self.partition_dir(topic, p as i32);
                let first = segment_bases(&dir)?
                    .into_iter()
                    .min()
                    .with_context(|| format!("no segment in {}", dir.display()))?;
                Ok(first.max(log_start))
            })
            .collect()
    }

    /// Reads `topic` from `starts` to `ends` (per partition) and reports it with the broker's
    /// metrics before and after.
    fn timed_read(
        &self,
        topic: &str,
        starts: Vec<i64>,
        ends: Vec<i64>,
        args: &BenchArgs,
        baseline: Option<&crate::baseline::Baseline>,
    ) -> anyhow::Result<(Throughput, BrokerMetrics, BrokerMetrics)> {
        let load = ConsumerLoad {
            config: self.clients.consumer(),
            topic,
            consumers: args.consumers,
            start_offsets: starts,
            end_offsets: Arc::new(OnceLock::from(ends)),
            latency_epoch: None,
            idle_timeout: Duration::from_secs(30),
        };
        let before = self.metrics()?;
        let (consumed, usage) = metered_on(Some(self.stats()), || load.run())?;
        let after = self.metrics()?;
        Ok((
            Throughput::new(consumed.transfer, usage, baseline),
            before,
            after,
        ))
    }
}

/// Base offsets of the segment files (`<20 digits>.log`) in a partition directory.
fn segment_bases(dir: &Path) -> anyhow::Result<Vec<i64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let name = entry?.file_name();
        if let Some(base) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|stem| stem.parse::<i64>().ok())
        {
            bases.push(base);
        }
    }
    Ok(bases)
}

/// Space used under a directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct DiskUsage {
    /// Allocated blocks, as `du` counts them.
    allocated_bytes: u64,
    /// File lengths.
    apparent_bytes: u64,
}

/// Walks `dir`. Files that vanish during the walk (retention, a finished upload) are skipped.
fn disk_usage(dir: &Path) -> io::Result<DiskUsage> {
    use std::os::unix::fs::MetadataExt;
    let mut usage = DiskUsage::default();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                usage.allocated_bytes += meta.blocks() * 512;
                usage.apparent_bytes += meta.len();
            }
        }
    }
    Ok(usage)
}

/// The read part's results, before the growth part adds its own.
struct Reads {
    object_store: String,
    upload_settle_seconds: f64,
    cold: Throughput,
    hot: Throughput,
    cache_hits: u64,
    cache_misses: u64,
    tier_read_bytes: u64,
    store_read_bytes: u64,
    cache_bytes_after: Option<u64>,
    /// Tier operations that failed during the part (uploads and reads), from the broker,
    /// with the broker's first warning.
    tier_errors: TierErrors,
}

/// Failed tier operations a broker counted, and the first warning in its log.
#[derive(Default)]
struct TierErrors {
    count: u64,
    first_warning: Option<String>,
}

impl TierErrors {
    /// The errors `tb` counted since `before` (its counters then).
    fn since(tb: &TieredBroker, before: u64) -> anyhow::Result<Self> {
        let count = tier_errors(&tb.metrics()?).saturating_sub(before);
        let first_warning = if count > 0 {
            fs::read_to_string(tb.broker.log_path())
                .ok()
                .and_then(|log| {
                    log.lines()
                        .find(|l| l.contains("WARN") || l.contains("ERROR"))
                        .map(|l| l.chars().take(400).collect())
                })
        } else {
            None
        };
        Ok(TierErrors {
            count,
            first_warning,
        })
    }
}

impl Bench<'_> {
    pub(super) fn tiered(&mut self) -> anyhow::Result<()> {
        if self.args.bootstrap.is_some() {
            self.report.notes.push(
                "tiered: skipped: it starts and restarts brokers of its own with an object \
                 store, so it runs only without --bootstrap"
                    .into(),
            );
            return Ok(());
        }
        let layout = Layout::of(self.args);
        let reads = self.tiered_reads(&layout)?;
        let (small, large, growth_errors) = self.tiered_growth(&layout)?;
        for (part, errors) in [("reads", &reads.tier_errors), ("growth", &growth_errors)] {
            if errors.count > 0 {
                self.report.notes.push(format!(
                    "tiered ({part}): the broker counted {} failed tier operations (uploads or \
                     reads); its first warning: {}",
                    errors.count,
                    errors.first_warning.as_deref().unwrap_or("none logged")
                ));
            }
        }
        let lookups = reads.cache_hits + reads.cache_misses;
        self.report.tiered = Some(Tiered {
            object_store: reads.object_store,
            partitions: layout.partitions,
            segment_bytes: layout.segment_bytes,
            local_retention_bytes: layout.local_retention_bytes,
            batch_size: layout.producer_args.batch_size.0,
            upload_settle_seconds: reads.upload_settle_seconds,
            cold_over_hot_mb_per_s: reads.cold.mb_per_s / reads.hot.mb_per_s.max(1e-9),
            cold_over_hot_broker_cpu_per_gb: reads
                .cold
                .broker_cpu_s_per_gb
                .zip(reads.hot.broker_cpu_s_per_gb)
                // A tiny hot read can use less CPU than one clock tick measures.
                .filter(|(_, h)| *h > 0.0)
                .map(|(c, h)| c / h),
            cold: reads.cold,
            hot: reads.hot,
            cold_cache_hits: reads.cache_hits,
            cold_cache_misses: reads.cache_misses,
            cold_cache_hit_ratio: (lookups > 0).then(|| reads.cache_hits as f64 / lookups as f64),
            cold_tier_read_bytes: reads.tier_read_bytes,
            cold_store_read_bytes: reads.store_read_bytes,
            cache_bytes_after_cold: reads.cache_bytes_after,
            local_disk_large_over_small: large.local_log_bytes as f64
                / (small.local_log_bytes as f64).max(1.0),
            start_large_over_small: large.start_seconds / small.start_seconds.max(1e-9),
            small,
            large,
            caveat: CAVEAT,
        });
        Ok(())
    }

    /// Cold reads from the tier against hot reads from local disk, on one broker.
    fn tiered_reads(&self, layout: &Layout) -> anyhow::Result<Reads> {
        let dir = self.work_dir.join("tiered-reads");
        let tb = TieredBroker::start(&dir, self.args)?;
        let errors_before = tier_errors(&tb.metrics()?);
        let partitions = layout.partitions;
        let cold_topic = unique_name("strata-bench-cold");
        let hot_topic = unique_name("strata-bench-hot");
        tb.clients
            .create_topic_with(&hot_topic, partitions, &layout.local_configs())?;
        tb.clients
            .create_topic_with(&cold_topic, partitions, &layout.tiered_configs())?;
        // The local-only topic first, so that the wait for uploads starts right after the
        // tiered topic's last record.
        tb.fill(layout, &hot_topic, layout.bytes)?;
        tb.fill(layout, &cold_topic, layout.bytes)?;
        let upload_settle_seconds = tb.wait_for_uploads(layout.bytes)?;

        let marks = tb.clients.watermarks(&cold_topic, partitions)?;
        let log_starts: Vec<i64> = marks.iter().map(|m| m.0).collect();
        let local_starts = tb.local_log_starts(&cold_topic, &log_starts)?;
        let cold_records: i64 = local_starts
            .iter()
            .zip(&log_starts)
            .map(|(l, s)| l - s)
            .sum();
        if cold_records <= 0 {
            bail!(
                "tiered: no record of {cold_topic} left local disk ({} segments of {} bytes per \
                 partition at most); write more with --produce-bytes",
                layout.bytes / partitions as u64 / layout.segment_bytes,
                layout.segment_bytes
            );
        }
        tracing::info!("tiered: cold read of {cold_records} records from the tier");
        let baseline = self.report.baseline.as_ref();
        let (cold, before, after) =
            tb.timed_read(&cold_topic, log_starts, local_starts, self.args, baseline)?;
        let delta = |name: &str| after.delta(&before, name) as u64;
        let (cache_hits, cache_misses, tier_read_bytes, store_read_bytes) = (
            delta("strata_tier_cache_hits_total"),
            delta("strata_tier_cache_misses_total"),
            delta("strata_tier_read_bytes_total"),
            delta("strata_tier_store_read_bytes_total"),
        );
        let cache_bytes_after = after.get("strata_tier_cache_bytes").map(|b| b as u64);
        tracing::info!("tiered: hot read of {hot_topic}");
        let marks = tb.clients.watermarks(&hot_topic, partitions)?;
        let (hot, _, _) = tb.timed_read(
            &hot_topic,
            marks.iter().map(|m| m.0).collect(),
            marks.iter().map(|m| m.1).collect(),
            self.args,
            baseline,
        )?;
        let errors = TierErrors::since(&tb, errors_before)?;
        let object_store = tb.url.clone();
        drop(tb);
        fs::remove_dir_all(&dir).ok();
        Ok(Reads {
            object_store,
            upload_settle_seconds,
            cold,
            hot,
            cache_hits,
            cache_misses,
            tier_read_bytes,
            store_read_bytes,
            cache_bytes_after,
            tier_errors: errors,
        })
    }

    /// Local disk use and start-up time of a tiered topic holding 1× and then 10× the data,
    /// at the same local retention; also the failed tier operations meanwhile.
    fn tiered_growth(
        &self,
        layout: &Layout,
    ) -> anyhow::Result<(TieredFootprint, TieredFootprint, TierErrors)> {
        let dir = self.work_dir.join("tiered-growth");
        let mut tb = TieredBroker::start(&dir, self.args)?;
        let errors_before = tier_errors(&tb.metrics()?);
        let topic = unique_name("strata-bench-growth");
        let partitions = layout.partitions;
        tb.clients
            .create_topic_with(&topic, partitions, &layout.tiered_configs())?;
        let small = layout.bytes;
        let large = small * GROWTH_FACTOR;
        let footprint = |tb: &mut TieredBroker, bytes: u64| -> anyhow::Result<TieredFootprint> {
            tb.wait_for_uploads(bytes)?;
            let local = disk_usage(&tb.broker.data_dir.join("logs"))?;
            let tier = disk_usage(&tb.tier_dir)?;
            let mut local_segments = 0;
            for p in 0..partitions {
                let mut bases = segment_bases(&tb.partition_dir(&topic, p))?;
                bases.sort_unstable();
                tracing::debug!("tiered: growth: {topic}-{p} has local segments {bases:?}");
                local_segments += bases.len() as u64;
            }
            let (start_seconds, stop_seconds) =
                settled_restarts(&mut tb.broker, &tb.clients, &topic, partitions)?;
            Ok(TieredFootprint {
                bytes_produced: bytes,
                local_log_bytes: local.allocated_bytes,
                local_segments,
                tier_bytes: tier.apparent_bytes,
                start_seconds,
                stop_seconds,
            })
        };
        tb.fill(layout, &topic, small)?;
        let small_footprint = footprint(&mut tb, small)?;
        tb.fill(layout, &topic, large - small)?;
        let large_footprint = footprint(&mut tb, large)?;
        let errors = TierErrors::since(&tb, errors_before)?;
        drop(tb);
        fs::remove_dir_all(&dir).ok();
        Ok((small_footprint, large_footprint, errors))
    }
}

/// Failed uploads and reads the broker counted since it started.
fn tier_errors(m: &BrokerMetrics) -> u64 {
    [
        "strata_tier_upload_errors_total",
        "strata_tier_read_errors_total",
    ]
    .iter()
    .map(|n| m.get(n).unwrap_or(0.0) as u64)
    .sum()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn layout(argv: &[&str]) -> Layout {
        let cli = Cli::try_parse_from([&["bench"], argv].concat()).unwrap();
        Layout::of(&cli.bench)
    }

    #[test]
    fn layout_scales_with_the_data() {
        // 1 GiB over 6 partitions: 16 segments of 11 MB per partition; batches unchanged.
        let l = layout(&[]);
        assert_eq!(l.segment_bytes, (1 << 30) / 6 / 16);
        assert_eq!(l.local_retention_bytes, 2 * l.segment_bytes);
        assert_eq!(l.producer_args.batch_size.0, 1 << 20);
        // Much data: segments capped at 16 MiB.
        let l = layout(&["--produce-bytes", "100GiB"]);
        assert_eq!(l.segment_bytes, 16 << 20);
        // Little data: 64 KiB segments and batches of a quarter of that.
        let l = layout(&["--produce-bytes", "4MiB"]);
        assert_eq!(l.segment_bytes, 64 << 10);
        assert_eq!(l.producer_args.batch_size.0, 16 << 10);
    }

    #[test]
    fn walks_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("t-0");
        fs::create_dir_all(&part).unwrap();
        fs::write(part.join("00000000000000000000.log"), vec![1u8; 10_000]).unwrap();
        fs::write(part.join("00000000000000000042.log"), b"x").unwrap();
        fs::write(part.join("00000000000000000042.index"), b"").unwrap();
        fs::write(part.join("00000000000000000007.log.deleted"), b"x").unwrap();
        let usage = disk_usage(dir.path()).unwrap();
        assert_eq!(usage.apparent_bytes, 10_002);
        assert!(usage.allocated_bytes >= 10_000);
        let mut bases = segment_bases(&part).unwrap();
        bases.sort();
        assert_eq!(bases, vec![0, 42]);
        assert_eq!(
            disk_usage(&dir.path().join("gone")).unwrap(),
            DiskUsage::default()
        );
    }
}
