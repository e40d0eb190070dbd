//! Producer load: librdkafka producers on their own threads, optionally paced to a rate, and
//! optionally stamping each record with its send time for end-to-end latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

use crate::consumer::{latency_histogram, stamp_age_us};

/// What a producer run moved, counted from delivery reports (acknowledged records only).
#[derive(Clone, Copy, Debug, Default)]
pub struct Transfer {
    pub records: u64,
    pub bytes: u64,
    /// From the first send to the last acknowledgement.
    pub seconds: f64,
}

impl Transfer {
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.seconds.max(1e-9)
    }

    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }
}

/// What a producer run moved and, for stamped records, how long each took from the `send`
/// call to its acknowledgement, in microseconds.
pub struct Produced {
    pub transfer: Transfer,
    pub ack_latency_us: Option<Histogram<u64>>,
}

/// A producer run.
pub struct ProducerLoad<'a> {
    pub config: ClientConfig,
    pub topic: &'a str,
    pub producers: usize,
    pub record_size: usize,
    pub records: u64,
    /// Records per second across all producers; `None` sends as fast as the client can.
    pub rate: Option<f64>,
    /// Writes the send time (nanoseconds since this instant) into each record's first 8 bytes.
    pub stamp_epoch: Option<Instant>,
}

/// Counts delivery reports of all producer threads; the first failure is kept for the error
/// message.
#[derive(Clone)]
struct DeliveryCounter(Arc<Deliveries>);

struct Deliveries {
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Send-to-acknowledgement latencies of stamped records (see `ProducerLoad::stamp_epoch`).
    ack_latency: Option<(Instant, Mutex<Histogram<u64>>)>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                self.0.acked.fetch_add(1, Ordering::Relaxed);
                if let Some((epoch, histogram)) = &self.0.ack_latency {
                    let age = m.payload().and_then(|p| stamp_age_us(*epoch, p));
                    if let (Some(age), Ok(mut h)) = (age, histogram.lock()) {
                        h.saturating_record(age);
                    }
                }
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.0.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

impl ProducerLoad<'_> {
    pub fn run(&self) -> anyhow::Result<Produced> {
        let producers = self.producers.max(1);
        if self.stamp_epoch.is_some() && self.record_size < 8 {
            bail!("latency needs records of at least 8 bytes for the send timestamp");
        }
        let ack_latency = match self.stamp_epoch {
            Some(epoch) => Some((epoch, Mutex::new(latency_histogram()?))),
            None => None,
        };
        let counter = DeliveryCounter(Arc::new(Deliveries {
            acked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
            ack_latency,
        }));
        let start = Arc::new(Barrier::new(producers));
        let started = Instant::now();
        let finished_at = thread::scope(|scope| -> anyhow::Result<Instant> {
            let workers: Vec<_> = (0..producers)
                .map(|i| {
                    let share = self.records / producers as u64
                        + u64::from((i as u64) < self.records % producers as u64);
                    let rate = self.rate.map(|r| r / producers as f64);
                    let (counter, start) = (counter.clone(), start.clone());
                    scope.spawn(move || self.produce(share, rate, counter, &start))
                })
                .collect();
            let mut last = started;
            for w in workers {
                let finished = w
                    .join()
                    .map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
                last = last.max(finished);
            }
            Ok(last)
        })?;
        let seconds = finished_at.duration_since(started).as_secs_f64();
        let failed = counter.0.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = counter
                .0
                .first_error
                .lock()
                .ok()
                .and_then(|f| f.clone())
                .unwrap_or_default();
            bail!("{failed} records were not acknowledged; the first error: {first}");
        }
        let records = counter.0.acked.load(Ordering::Relaxed);
        let ack_latency_us = match &counter.0.ack_latency {
            Some((_, h)) => Some(
                h.lock()
                    .map_err(|_| anyhow::anyhow!("a delivery callback panicked"))?
                    .clone(),
            ),
            None => None,
        };
        Ok(Produced {
            transfer: Transfer {
                records,
                bytes: records * self.record_size as u64,
                seconds,
            },
            ack_latency_us,
        })
    }

    fn produce(
        &self,
        records: u64,
        rate: Option<f64>,
        counter: DeliveryCounter,
        start: &Barrier,
    ) -> anyhow::Result<Instant> {
        let producer: BaseProducer<DeliveryCounter> = self
            .config
            .create_with_context(counter)
            .context("cannot create a producer")?;
        let pool = letter_pool(self.record_size);
        let mut stamped = vec![0u8; self.record_size];
        start.wait();
        let began = Instant::now();
        for i in 0..records {
            if let Some(rate) = rate {
                let due = began + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if due > now {
                    producer.poll(Duration::ZERO);
                    thread::sleep(due - now);
                }
            }
            // Each record is a different window of the pool, so that a batch is not one record
            // repeated (which any codec shrinks to nothing).
            let at =
                (i.wrapping_mul(0x9E37_79B1) % (pool.len() - self.record_size + 1) as u64) as usize;
            let mut payload = &pool[at..at + self.record_size];
            if let Some(epoch) = self.stamp_epoch {
                stamped.copy_from_slice(payload);
                let sent = epoch.elapsed().as_nanos() as u64;
                stamped[..8].copy_from_slice(&sent.to_be_bytes());
                payload = &stamped;
            }
            let mut record = BaseRecord::<(), [u8]>::to(self.topic).payload(payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(e).context("cannot send a record"),
                }
            }
            if i % 256 == 0 {
                producer.poll(Duration::ZERO);
            }
        }
        producer
            .flush(Duration::from_secs(300))
            .context("records still unacknowledged after 300 s")?;
        // Before the client closes (which is no part of producing).
        Ok(Instant::now())
    }
}

/// Random uppercase letters, as Kafka's own producer benchmark uses, in a pool much larger than a
/// batch and than the codecs' match windows, so that compressed runs see about the ratio of
/// text (roughly 1.6:1) rather than of one record repeated.
fn letter_pool(record_size: usize) -> Vec<u8> {
    let len = (16usize << 20).max(4 * record_size);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            // xorshift64: fast, and random enough to leave a compressor no long matches.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'A' + (state % 26) as u8
        })
        .collect()
}
