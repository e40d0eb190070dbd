//! Command-line options of `strata bench`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// One measurement `strata bench` can run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// The machine's limits: disk write (page cache, fdatasync), loopback TCP, memcpy.
    Baseline,
    /// Producer throughput and the broker's CPU per GB produced.
    Produce,
    /// Consumer throughput (reads back what `produce` wrote) and CPU per GB consumed.
    Consume,
    /// End-to-end latency (produce call to consume) at a fixed rate.
    Latency,
    /// Broker memory with many idle partitions.
    IdlePartitions,
    /// Latency and broker CPU with many idle connections open.
    IdleConnections,
    /// Start-up time after a clean shutdown, small data vs large data (private broker only).
    Startup,
    /// Tiered storage (private brokers with a `file://` tier; skipped with --bootstrap): cold
    /// reads from the tier vs hot reads from local disk, and local disk use and start-up time
    /// with 1× and 10× the data at the same local retention. Sized by --produce-bytes.
    Tiered,
    /// The cost of TLS (a private broker with an SSL listener; skipped with --bootstrap):
    /// produce and consume throughput and broker CPU over SSL against PLAINTEXT, in the same
    /// run. Sized by --produce-bytes.
    Tls,
    /// Isolation under quotas: a quiet client's end-to-end latency alone and while a noisy
    /// client held to a produce quota (--noisy-quota) produces flat out, and the noisy
    /// client's rate against its quota.
    NoisyNeighbour,
    /// Every scenario above.
    All,
}

/// Options of `strata bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// The broker to measure (HOST:PORT). Without it, bench starts a private Strata broker.
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap: Option<String>,
    /// The broker's process id, for its CPU time and memory. Found from the listening port
    /// when the broker runs on this machine.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Where the private broker keeps its data and where the disk baseline writes
    /// (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A broker property for the private broker (repeatable): --broker-override log.flush.interval.messages=1
    #[arg(long = "broker-override", value_name = "KEY=VALUE")]
    pub broker_overrides: Vec<String>,
    /// Which measurements to run, comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "baseline,produce,consume,latency"
    )]
    pub scenarios: Vec<Scenario>,
    /// Topic to use (default: a new `strata-bench-<random>` topic).
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions of the bench topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Size of each record's value.
    #[arg(long, default_value = "1KiB")]
    pub record_size: ByteSize,
    /// How much the produce scenario writes. The tiered scenario writes this much into each of
    /// its two read topics, and this much then ten times as much for its growth measurement.
    #[arg(long, default_value = "1GiB")]
    pub produce_bytes: ByteSize,
    /// Producer clients, each on its own thread.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumer clients, each on its own thread, splitting the partitions.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Producer acks: 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Producer linger.ms.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Producer batch.size.
    #[arg(long, default_value = "1MiB")]
    pub batch_size: ByteSize,
    /// Producer compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Use the idempotent producer.
    #[arg(long)]
    pub idempotence: bool,
    /// Records per second for the latency scenario (default: half the peak the produce
    /// scenario measured, or 10000 without it).
    #[arg(long)]
    pub rate: Option<u64>,
    /// How long the latency scenario produces.
    #[arg(long, default_value_t = 10.0)]
    pub latency_seconds: f64,
    /// How much each disk and network baseline moves.
    #[arg(long, default_value = "512MiB")]
    pub baseline_bytes: ByteSize,
    /// Partitions created by the idle-partitions scenario.
    #[arg(long, default_value_t = 1000)]
    pub idle_partitions: i32,
    /// The noisy-neighbour scenario's producer_byte_rate for the noisy client, per second.
    #[arg(long, default_value = "8MiB")]
    pub noisy_quota: ByteSize,
    /// How long the noisy client would take at exactly its quota (it sends that much); its
    /// rate is its quota only over several of the quota window's periods.
    #[arg(long, default_value_t = 60.0)]
    pub noisy_seconds: f64,
    /// Connections opened by the idle-connections scenario.
    #[arg(long, default_value_t = 10_000)]
    pub idle_connections: usize,
    /// Data written before the large start-up measurement.
    #[arg(long, default_value = "10GiB")]
    pub startup_bytes: ByteSize,
    /// Data written before the small start-up measurement.
    #[arg(long, default_value = "10MiB")]
    pub startup_small_bytes: ByteSize,
    /// A librdkafka property for every bench client (repeatable): -X socket.send.buffer.bytes=1048576
    #[arg(short = 'X', long = "client-property", value_name = "KEY=VALUE")]
    pub client_properties: Vec<String>,
    /// Keep the topics bench created (they are deleted by default).
    #[arg(long)]
    pub keep_topics: bool,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// Whether `scenario` was asked for, directly or through `all`.
    pub fn wants(&self, scenario: Scenario) -> bool {
        self.scenarios
            .iter()
            .any(|s| *s == scenario || *s == Scenario::All)
    }
}

/// A byte count written the way people write them: `1024`, `64KiB`, `1MiB`, `10GB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a size such as 1024, 64KiB or 1GiB"))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            other => return Err(format!("unknown size unit {other:?} in {s:?}")),
        };
        n.checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= scale && n.is_multiple_of(scale) {
                return write!(f, "{}{unit}", n / scale);
            }
        }
        write!(f, "{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn parses_sizes() {
        assert_eq!("1024".parse(), Ok(ByteSize(1024)));
        assert_eq!("1KiB".parse(), Ok(ByteSize(1024)));
        assert_eq!("10GB".parse(), Ok(ByteSize(10_000_000_000)));
        assert_eq!("512mib".parse(), Ok(ByteSize(512 << 20)));
        assert!("12XB".parse::<ByteSize>().is_err());
        assert!("GiB".parse::<ByteSize>().is_err());
        assert!("99999999999GiB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(1 << 30).to_string(), "1GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }
}
