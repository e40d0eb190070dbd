//! Consumer load: librdkafka consumers on their own threads, each assigned a share of the
//! partitions from given offsets, reading until every partition reaches its end offset.

use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::producer::Transfer;

/// The highest latency the histogram holds: one hour, in microseconds.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// An empty latency histogram in microseconds, three significant digits.
pub fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?)
}

/// How long ago, in microseconds, the record whose value starts with `payload`'s send stamp
/// was sent (see `ProducerLoad::stamp_epoch`); at least 1, at most `MAX_LATENCY_US`.
pub fn stamp_age_us(epoch: Instant, payload: &[u8]) -> Option<u64> {
    let stamp: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    let sent = u64::from_be_bytes(stamp);
    let now = epoch.elapsed().as_nanos() as u64;
    Some((now.saturating_sub(sent) / 1000).clamp(1, MAX_LATENCY_US))
}

/// A consumer run.
pub struct ConsumerLoad<'a> {
    pub config: ClientConfig,
    pub topic: &'a str,
    pub consumers: usize,
    /// Where each partition's reading starts (index = partition).
    pub start_offsets: Vec<i64>,
    /// Where each partition's reading ends (exclusive). Set before `run` for a throughput
    /// run; for a latency run, set by the producing side once it knows the final offsets.
    pub end_offsets: Arc<OnceLock<Vec<i64>>>,
    /// Reads each record's send stamp (see `ProducerLoad::stamp_epoch`) into a histogram.
    pub latency_epoch: Option<Instant>,
    /// Gives up when no record arrives for this long.
    pub idle_timeout: Duration,
}

/// What the consumers read, and the end-to-end latencies in microseconds when asked for.
pub struct Consumed {
    pub transfer: Transfer,
    pub latency_us: Option<Histogram<u64>>,
}

struct Share {
    records: u64,
    bytes: u64,
    latency_us: Option<Histogram<u64>>,
    /// When the last partition reached its end: closing the client afterwards (about 100 ms
    /// in librdkafka) is not part of the read.
    finished_at: Instant,
}

impl ConsumerLoad<'_> {
    pub fn run(&self) -> anyhow::Result<Consumed> {
        let consumers = self.consumers.clamp(1, self.start_offsets.len().max(1));
        let started = Instant::now();
        let shares = thread::scope(|scope| {
            let workers: Vec<_> = (0..consumers)
                .map(|i| {
                    let partitions: Vec<i32> = (0..self.start_offsets.len() as i32)
                        .filter(|p| *p as usize % consumers == i)
                        .collect();
                    scope.spawn(move || self.consume(&partitions))
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .map_err(|_| anyhow::anyhow!("a consumer thread panicked"))?
                })
                .collect::<anyhow::Result<Vec<Share>>>()
        })?;
        let finished_at = shares
            .iter()
            .map(|s| s.finished_at)
            .max()
            .unwrap_or(started);
        let mut transfer = Transfer {
            seconds: finished_at.duration_since(started).as_secs_f64(),
            ..Transfer::default()
        };
        let mut latency: Option<Histogram<u64>> = None;
        for share in shares {
            transfer.records += share.records;
            transfer.bytes += share.bytes;
            if let Some(h) = share.latency_us {
                match &mut latency {
                    Some(all) => all.add(&h).context("cannot merge latency histograms")?,
                    None => latency = Some(h),
                }
            }
        }
        Ok(Consumed {
            transfer,
            latency_us: latency,
        })
    }

    fn consume(&self, partitions: &[i32]) -> anyhow::Result<Share> {
        let consumer: BaseConsumer = self.config.create().context("cannot create a consumer")?;
        let mut assignment = TopicPartitionList::new();
        for &p in partitions {
            assignment.add_partition_offset(
                self.topic,
                p,
                Offset::Offset(self.start_offsets[p as usize]),
            )?;
        }
        consumer.assign(&assignment)?;
        let mut next: Vec<i64> = self.start_offsets.clone();
        let mut share = Share {
            records: 0,
            bytes: 0,
            latency_us: match self.latency_epoch {
                Some(_) => Some(latency_histogram()?),
                None => None,
            },
            finished_at: Instant::now(),
        };
        let mut last_progress = Instant::now();
        loop {
            if let Some(ends) = self.end_offsets.get() {
                if partitions
                    .iter()
                    .all(|&p| next[p as usize] >= ends[p as usize])
                {
                    share.finished_at = Instant::now();
                    return Ok(share);
                }
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {
                    if last_progress.elapsed() > self.idle_timeout {
                        bail!(
                            "no record arrived for {:?}; read {} records so far",
                            self.idle_timeout,
                            share.records
                        );
                    }
                }
                Some(Err(e)) => return Err(e).context("consumer error"),
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    let p = m.partition() as usize;
                    next[p] = m.offset() + 1;
                    // Read ahead past this partition's end while others catch up: not counted.
                    if self
                        .end_offsets
                        .get()
                        .is_some_and(|ends| m.offset() >= ends[p])
                    {
                        continue;
                    }
                    let payload = m.payload().unwrap_or_default();
                    share.records += 1;
                    share.bytes += payload.len() as u64;
                    if let (Some(epoch), Some(h)) = (self.latency_epoch, &mut share.latency_us) {
                        if let Some(age) = stamp_age_us(epoch, payload) {
                            h.saturating_record(age);
                        }
                    }
                }
            }
        }
    }
}
