//! The bench report: every result with the machine baselines beside it, as JSON or a table.
//! Units: MB and GB are 10^6 and 10^9 bytes; MiB is 2^20 (memory).

use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::baseline::Baseline;
use crate::producer::Transfer;

#[derive(Serialize, Default)]
pub struct Report {
    pub broker: BrokerInfo,
    pub settings: Settings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub produce: Option<Throughput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consume: Option<Throughput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_partitions: Option<IdlePartitions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_connections: Option<IdleConnections>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup: Option<Startup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiered: Option<Tiered>,
    /// The cost of TLS: the same loads over SSL and over PLAINTEXT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noisy_neighbour: Option<NoisyNeighbour>,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
}

#[derive(Serialize, Default)]
pub struct BrokerInfo {
    pub bootstrap: String,
    /// Whether bench started this broker itself.
    pub private: bool,
    pub pid: Option<u32>,
}

#[derive(Serialize, Default)]
pub struct Settings {
    pub topic: String,
    pub partitions: i32,
    pub record_size: u64,
    pub producers: usize,
    pub consumers: usize,
    pub acks: String,
    pub linger_ms: u64,
    pub batch_size: u64,
    pub compression: String,
    pub idempotence: bool,
}

/// Resources used during one phase.
#[derive(Serialize, Clone, Copy, Debug, Default)]
pub struct Usage {
    pub wall_seconds: f64,
    /// Broker CPU seconds (user + system, all threads); `None` when the broker's process is
    /// not visible.
    pub broker_cpu_seconds: Option<f64>,
    /// The bench process's own CPU seconds: the client side.
    pub client_cpu_seconds: f64,
    pub broker_peak_rss_mib: Option<f64>,
}

impl Usage {
    /// Cores the broker kept busy on average.
    pub fn broker_cores(&self) -> Option<f64> {
        self.broker_cpu_seconds
            .map(|c| c / self.wall_seconds.max(1e-9))
    }

    pub fn client_cores(&self) -> f64 {
        self.client_cpu_seconds / self.wall_seconds.max(1e-9)
    }
}

/// Results as fractions of the machine's limits (1.0 = as fast as the baseline).
#[derive(Serialize, Clone, Copy, Debug)]
pub struct Ratios {
    pub to_disk_page_cache: f64,
    pub to_disk_fdatasync: f64,
    pub to_loopback_tcp: f64,
    pub to_memcpy: f64,
}

impl Ratios {
    pub fn of(mb_per_s: f64, b: &Baseline) -> Self {
        Ratios {
            to_disk_page_cache: mb_per_s / b.disk_page_cache_mb_s,
            to_disk_fdatasync: mb_per_s / b.disk_fdatasync_mb_s,
            to_loopback_tcp: mb_per_s / b.loopback_tcp_mb_s,
            to_memcpy: mb_per_s / b.memcpy_mb_s,
        }
    }
}

#[derive(Serialize)]
pub struct Throughput {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub usage: Usage,
    pub broker_cpu_s_per_gb: Option<f64>,
    pub broker_cores: Option<f64>,
    pub client_cores: f64,
    pub vs_baseline: Option<Ratios>,
}

impl Throughput {
    pub fn new(t: Transfer, usage: Usage, baseline: Option<&Baseline>) -> Self {
        let gb = t.bytes as f64 / 1e9;
        Throughput {
            records: t.records,
            bytes: t.bytes,
            seconds: t.seconds,
            records_per_s: t.records_per_s(),
            mb_per_s: t.mb_per_s(),
            usage,
            broker_cpu_s_per_gb: usage.broker_cpu_seconds.map(|c| c / gb.max(1e-12)),
            broker_cores: usage.broker_cores(),
            client_cores: usage.client_cores(),
            vs_baseline: baseline.map(|b| Ratios::of(t.mb_per_s(), b)),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Serialize, Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub p99_over_p50: f64,
}

impl Percentiles {
    pub fn of(us: &Histogram<u64>) -> Self {
        let ms = |q: f64| us.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            count: us.len(),
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: us.max() as f64 / 1000.0,
            p99_over_p50: ms(0.99) / ms(0.50).max(1e-3),
        }
    }
}

#[derive(Serialize)]
pub struct Latency {
    pub target_records_per_s: f64,
    /// The throughput the rate is half of, when the produce scenario measured it.
    pub peak_records_per_s: Option<f64>,
    pub achieved_records_per_s: f64,
    pub end_to_end: Percentiles,
    /// From the `send` call to the acknowledgement: the producing half of `end_to_end`.
    pub produce_ack: Percentiles,
    pub usage: Usage,
}

#[derive(Serialize)]
pub struct IdlePartitions {
    pub partitions: i32,
    pub broker_rss_before_mib: f64,
    pub broker_rss_after_mib: f64,
    pub per_partition_kib: f64,
}

#[derive(Serialize)]
pub struct IdleConnections {
    pub requested: usize,
    pub opened: usize,
    pub open_seconds: f64,
    pub broker_rss_before_mib: Option<f64>,
    pub broker_rss_after_mib: Option<f64>,
    /// Broker cores used while only the idle connections were open (idle wakeups).
    pub broker_idle_cores: Option<f64>,
    pub without: Percentiles,
    pub with: Percentiles,
    pub probe_records_per_s: f64,
}

#[derive(Serialize)]
pub struct Startup {
    pub small_bytes: u64,
    pub large_bytes: u64,
    /// Start until every partition answers ListOffsets, after a clean shutdown (the fastest of
    /// five restarts, after the data was written back to disk).
    pub small_start_seconds: f64,
    pub large_start_seconds: f64,
    pub large_over_small: f64,
    pub small_stop_seconds: f64,
    pub large_stop_seconds: f64,
}

/// Tiered storage: reads from the tier against reads from local disk, and what holding more
/// data in the tier costs locally. Each part runs on a private broker of its own, started with
/// `--object-store file://<work dir>/.../tier`.
#[derive(Serialize)]
pub struct Tiered {
    /// The tier of the read measurement (a directory on the broker's own disk).
    pub object_store: String,
    pub partitions: i32,
    /// `segment.bytes` of every topic of the scenario.
    pub segment_bytes: u64,
    /// `local.retention.bytes` of the tiered topics, per partition.
    pub local_retention_bytes: u64,
    /// The producers' `batch.size`: at most a quarter segment, so that segments roll at size.
    pub batch_size: u64,
    /// From the last acknowledgement of the tiered topic's records until the broker reported
    /// no upload lag (every rolled segment in the tier, local retention applied).
    pub upload_settle_seconds: f64,
    /// The tiered topic from its log start to its local log start: records only in the tier.
    pub cold: Throughput,
    /// A topic of the same size with everything on local disk (`remote.storage.enable=false`).
    pub hot: Throughput,
    pub cold_over_hot_mb_per_s: f64,
    pub cold_over_hot_broker_cpu_per_gb: Option<f64>,
    /// The tier read cache during the cold read (the broker's counters, as deltas).
    pub cold_cache_hits: u64,
    pub cold_cache_misses: u64,
    pub cold_cache_hit_ratio: Option<f64>,
    /// Record bytes the broker served from the tier during the cold read.
    pub cold_tier_read_bytes: u64,
    /// Bytes the broker fetched from the object store during the cold read (read-ahead too).
    pub cold_store_read_bytes: u64,
    /// What the read cache held right after the cold read (`remote.log.reader.cache.bytes`
    /// bounds it), beside the broker's RSS in `cold.usage`.
    pub cache_bytes_after_cold: Option<u64>,
    /// The growth measurement: the same tiered topic after 1× and after 10× the data.
    pub small: TieredFootprint,
    pub large: TieredFootprint,
    pub local_disk_large_over_small: f64,
    pub start_large_over_small: f64,
    pub caveat: &'static str,
}

/// A tiered broker's local footprint after its uploads and local retention settled.
#[derive(Serialize)]
pub struct TieredFootprint {
    pub bytes_produced: u64,
    /// Disk space (allocated blocks, as `du` counts) under the broker's `logs/`.
    pub local_log_bytes: u64,
    /// Segment files of the tiered topic on local disk.
    pub local_segments: u64,
    /// Bytes of the objects in the tier.
    pub tier_bytes: u64,
    /// Start until every partition answers ListOffsets, after a clean shutdown (fastest of
    /// five restarts, after the data was written back to disk).
    pub start_seconds: f64,
    pub stop_seconds: f64,
}

/// The tls scenario: one private broker, the same produce and consume loads over its
/// PLAINTEXT and its SSL listener, one after the other.
#[derive(Serialize)]
pub struct Tls {
    pub plaintext_produce: Throughput,
    pub ssl_produce: Throughput,
    pub plaintext_consume: Throughput,
    pub ssl_consume: Throughput,
    /// SSL throughput over PLAINTEXT throughput (MB/s); the target is at least 0.7.
    pub produce_ratio: f64,
    pub consume_ratio: f64,
}

/// The noisy-neighbour scenario: a quiet client's latency alone and beside a noisy client
/// held to a produce quota. Targets: the noisy rate within 10% of the quota, and the quiet
/// p99 beside it at most 1.25× the p99 alone.
#[derive(Serialize)]
pub struct NoisyNeighbour {
    pub quota_mb_per_s: f64,
    pub noisy_bytes: u64,
    pub noisy_seconds: f64,
    /// The noisy client's average rate over its run.
    pub noisy_mb_per_s: f64,
    pub noisy_rate_over_quota: f64,
    /// Records per second the quiet client sends.
    pub quiet_rate: f64,
    pub quiet_alone: Percentiles,
    pub quiet_with_noisy: Percentiles,
    pub p99_with_over_alone: f64,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.digits$}"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut o = String::new();
        let s = &self.settings;
        writeln!(
            o,
            "strata bench against {} ({}, pid {})",
            self.broker.bootstrap,
            if self.broker.private {
                "private broker"
            } else {
                "external broker"
            },
            self.broker.pid.map_or("unknown".into(), |p| p.to_string())
        )?;
        writeln!(
            o,
            "topic {} · {} partitions · {} B records · acks={} · linger {} ms · batch {} B · compression {} · {} producer(s), {} consumer(s)",
            s.topic, s.partitions, s.record_size, s.acks, s.linger_ms, s.batch_size, s.compression, s.producers, s.consumers
        )?;
        if let Some(b) = &self.baseline {
            writeln!(o, "\nmachine baselines (MB/s)")?;
            writeln!(
                o,
                "  disk write, page cache   {:>10.0}",
                b.disk_page_cache_mb_s
            )?;
            writeln!(
                o,
                "  disk write, fdatasync    {:>10.0}",
                b.disk_fdatasync_mb_s
            )?;
            writeln!(
                o,
                "  loopback TCP             {:>10.0}",
                b.loopback_tcp_mb_s
            )?;
            writeln!(o, "  memcpy                   {:>10.0}", b.memcpy_mb_s)?;
        }
        for (name, t) in [("produce", &self.produce), ("consume", &self.consume)] {
            let Some(t) = t else { continue };
            writeln!(o, "\n{name}")?;
            writeln!(
                o,
                "  {:.0} records/s · {:.1} MB/s · {} records in {:.2} s",
                t.records_per_s, t.mb_per_s, t.records, t.seconds
            )?;
            writeln!(
                o,
                "  broker CPU {} s/GB · broker {} cores · client {:.2} cores · broker peak RSS {} MiB",
                opt(t.broker_cpu_s_per_gb, 2),
                opt(t.broker_cores, 2),
                t.client_cores,
                opt(t.usage.broker_peak_rss_mib, 0)
            )?;
            if let Some(r) = &t.vs_baseline {
                writeln!(
                    o,
                    "  vs baselines: {:.2}× disk page cache · {:.2}× disk fdatasync · {:.2}× loopback TCP · {:.3}× memcpy",
                    r.to_disk_page_cache, r.to_disk_fdatasync, r.to_loopback_tcp, r.to_memcpy
                )?;
            }
        }
        if let Some(l) = &self.latency {
            let p = &l.end_to_end;
            writeln!(o, "\nend-to-end latency (produce call → consumed)")?;
            writeln!(
                o,
                "  at {:.0} records/s (target {:.0}{}) · {} records",
                l.achieved_records_per_s,
                l.target_records_per_s,
                l.peak_records_per_s
                    .map_or(String::new(), |pk| format!(", half of peak {pk:.0}")),
                p.count
            )?;
            writeln!(o, "  end to end:  {}", percentiles_line(p))?;
            writeln!(o, "  produce ack: {}", percentiles_line(&l.produce_ack))?;
            writeln!(
                o,
                "  broker {} cores · client {:.2} cores",
                opt(l.usage.broker_cores(), 2),
                l.usage.client_cores()
            )?;
        }
        if let Some(i) = &self.idle_partitions {
            writeln!(o, "\nidle partitions")?;
            writeln!(
                o,
                "  {} partitions: broker RSS {:.0} → {:.0} MiB ({:.0} KiB per partition)",
                i.partitions, i.broker_rss_before_mib, i.broker_rss_after_mib, i.per_partition_kib
            )?;
        }
        if let Some(c) = &self.idle_connections {
            writeln!(o, "\nidle connections")?;
            writeln!(
                o,
                "  opened {} of {} in {:.2} s · broker RSS {} → {} MiB · broker idle {} cores",
                c.opened,
                c.requested,
                c.open_seconds,
                opt(c.broker_rss_before_mib, 0),
                opt(c.broker_rss_after_mib, 0),
                opt(c.broker_idle_cores, 4)
            )?;
            writeln!(
                o,
                "  latency at {:.0} records/s without: {}",
                c.probe_records_per_s,
                percentiles_line(&c.without)
            )?;
            writeln!(
                o,
                "  latency at {:.0} records/s with:    {}",
                c.probe_records_per_s,
                percentiles_line(&c.with)
            )?;
        }
        if let Some(s) = &self.startup {
            writeln!(o, "\nstart-up after a clean shutdown")?;
            writeln!(
                o,
                "  {:.1} MB of data: {:.3} s (stop took {:.3} s)",
                s.small_bytes as f64 / 1e6,
                s.small_start_seconds,
                s.small_stop_seconds
            )?;
            writeln!(
                o,
                "  {:.1} MB of data: {:.3} s (stop took {:.3} s) · {:.2}× the small start-up",
                s.large_bytes as f64 / 1e6,
                s.large_start_seconds,
                s.large_stop_seconds,
                s.large_over_small
            )?;
        }
        if let Some(t) = &self.tiered {
            write_tiered(&mut o, t)?;
        }
        if let Some(t) = &self.tls {
            writeln!(
                o,
                "\ntls (one broker, SSL listener against PLAINTEXT listener)"
            )?;
            for (name, plain, ssl, ratio) in [
                (
                    "produce",
                    &t.plaintext_produce,
                    &t.ssl_produce,
                    t.produce_ratio,
                ),
                (
                    "consume",
                    &t.plaintext_consume,
                    &t.ssl_consume,
                    t.consume_ratio,
                ),
            ] {
                writeln!(
                    o,
                    "  {name}: {:.1} MB/s over SSL vs {:.1} MB/s plaintext = {ratio:.2}× · broker CPU {} vs {} s/GB",
                    ssl.mb_per_s,
                    plain.mb_per_s,
                    opt(ssl.broker_cpu_s_per_gb, 2),
                    opt(plain.broker_cpu_s_per_gb, 2),
                )?;
            }
        }
        if let Some(n) = &self.noisy_neighbour {
            writeln!(
                o,
                "\nnoisy neighbour (a quiet client at {:.0} records/s beside a client held to {:.1} MB/s)",
                n.quiet_rate, n.quota_mb_per_s
            )?;
            writeln!(
                o,
                "  noisy client: {:.1} MB/s = {:.2}× its quota ({:.1} MB in {:.1} s)",
                n.noisy_mb_per_s,
                n.noisy_rate_over_quota,
                n.noisy_bytes as f64 / 1e6,
                n.noisy_seconds
            )?;
            writeln!(
                o,
                "  quiet alone:       {}",
                percentiles_line(&n.quiet_alone)
            )?;
            writeln!(
                o,
                "  quiet beside it:   {}",
                percentiles_line(&n.quiet_with_noisy)
            )?;
            writeln!(o, "  p99 beside / alone: {:.2}×", n.p99_with_over_alone)?;
        }
        for n in &self.notes {
            writeln!(o, "\nnote: {n}")?;
        }
        f.write_str(&o)
    }
}

fn percentiles_line(p: &Percentiles) -> String {
    format!(
        "p50 {:.2} ms · p90 {:.2} · p99 {:.2} · p99.9 {:.2} · max {:.2} · p99/p50 {:.2}",
        p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms, p.p99_over_p50
    )
}

fn write_tiered(o: &mut String, t: &Tiered) -> fmt::Result {
    const MB: f64 = 1e6;
    writeln!(o, "\ntiered storage (tier {})", t.object_store)?;
    writeln!(
        o,
        "  {} partitions · segments {:.1} MB · local retention {:.1} MB per partition · batches {:.0} KB · uploads settled {:.2} s after producing",
        t.partitions,
        t.segment_bytes as f64 / MB,
        t.local_retention_bytes as f64 / MB,
        t.batch_size as f64 / 1e3,
        t.upload_settle_seconds
    )?;
    for (name, r) in [
        ("cold, from the tier ", &t.cold),
        ("hot, from local disk", &t.hot),
    ] {
        writeln!(
            o,
            "  {name}: {:.1} MB/s · {:.1} MB in {:.2} s · broker CPU {} s/GB · broker {} cores · client {:.2} cores · broker peak RSS {} MiB",
            r.mb_per_s,
            r.bytes as f64 / MB,
            r.seconds,
            opt(r.broker_cpu_s_per_gb, 2),
            opt(r.broker_cores, 2),
            r.client_cores,
            opt(r.usage.broker_peak_rss_mib, 0)
        )?;
    }
    writeln!(
        o,
        "  cold/hot: {:.2}× throughput · {}× broker CPU per GB",
        t.cold_over_hot_mb_per_s,
        opt(t.cold_over_hot_broker_cpu_per_gb, 2),
    )?;
    writeln!(
        o,
        "  read cache during the cold read: hit ratio {} ({} hits, {} misses) · {:.1} MB from the store · {} MiB cached after",
        opt(t.cold_cache_hit_ratio, 2),
        t.cold_cache_hits,
        t.cold_cache_misses,
        t.cold_store_read_bytes as f64 / MB,
        opt(t.cache_bytes_after_cold.map(|b| b as f64 / (1u64 << 20) as f64), 0)
    )?;
    for (label, f) in [("1× ", &t.small), ("10×", &t.large)] {
        writeln!(
            o,
            "  {label} data ({:.1} MB produced): local logs {:.1} MB in {} segments · tier {:.1} MB · start-up {:.3} s (stop took {:.3} s)",
            f.bytes_produced as f64 / MB,
            f.local_log_bytes as f64 / MB,
            f.local_segments,
            f.tier_bytes as f64 / MB,
            f.start_seconds,
            f.stop_seconds
        )?;
    }
    writeln!(
        o,
        "  10× vs 1×: {:.2}× local disk · {:.2}× start-up",
        t.local_disk_large_over_small, t.start_large_over_small
    )?;
    writeln!(o, "  ({})", t.caveat)
}
