//! Broker metrics, rendered in the Prometheus text format at `/metrics`.
//!
//! Plain atomics: a handful of counters does not justify a metrics framework yet. Request
//! counts are kept per API key in a fixed array (API keys are below [`MAX_API_KEYS`]).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use kafka_protocol::messages::ApiKey;

pub const MAX_API_KEYS: usize = 128;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A latency histogram in Prometheus' cumulative-bucket form, in milliseconds.
pub struct Histogram {
    buckets: [Counter; HISTOGRAM_BOUNDS_MS.len()],
    sum_us: Counter,
    count: Counter,
}

/// Upper bounds of the histogram buckets (the `+Inf` bucket is `count`).
const HISTOGRAM_BOUNDS_MS: [f64; 13] = [
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| Counter::default()),
            sum_us: Counter::default(),
            count: Counter::default(),
        }
    }
}

impl Histogram {
    pub fn observe(&self, elapsed: std::time::Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        for (bound, bucket) in HISTOGRAM_BOUNDS_MS.iter().zip(&self.buckets) {
            if ms <= *bound {
                bucket.add(1);
            }
        }
        self.sum_us.add(elapsed.as_micros() as u64);
        self.count.add(1);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in HISTOGRAM_BOUNDS_MS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {}",
                bound / 1000.0,
                bucket.get()
            );
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count.get());
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.get() as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", self.count.get());
    }
}

/// Reads served from the tier. Shared with the reads themselves, which may finish after the
/// fetch that started them has answered (`remote.fetch.max.wait.ms`).
#[derive(Default)]
pub struct TierReadMetrics {
    pub bytes: Counter,
    pub errors: Counter,
    pub latency: Histogram,
}

/// Values read at scrape time rather than counted.
#[derive(Default)]
pub struct Gauges {
    pub partitions: usize,
    pub log_bytes: u64,
    /// Rolled segments of tiered partitions not yet uploaded.
    pub upload_lag_bytes: u64,
    pub upload_lag_segments: u64,
    pub tier_cache: strata_tier::CacheStats,
    /// Incremental fetch sessions (KIP-227).
    pub fetch_sessions: crate::fetch_session::FetchSessionStats,
    /// Authorization decisions written to the audit log, and dropped because it fell behind.
    pub audit_records_written: u64,
    pub audit_records_dropped: u64,
}

pub struct Metrics {
    requests: [Counter; MAX_API_KEYS],
    request_errors: [Counter; MAX_API_KEYS],
    /// Bytes of request frames received, by API, length prefix included (as on the wire).
    request_bytes: [Counter; MAX_API_KEYS],
    /// Bytes of response frames sent, by API, length prefix included.
    response_bytes: [Counter; MAX_API_KEYS],
    pub connections_accepted: Counter,
    pub connections_closed_bad_input: Counter,
    /// Connections closed for their address's `connection_creation_rate` (KIP-612).
    pub connections_throttled: Counter,
    /// SASL (Kafka's `successful-authentication-total` and friends).
    pub successful_authentications: Counter,
    pub successful_reauthentications: Counter,
    pub failed_authentications: Counter,
    /// Responses the broker built but could not encode for the version asked (a broker bug).
    pub responses_unencodable: Counter,
    pub connections_open: AtomicI64,
    pub produce_records: Counter,
    pub produce_bytes: Counter,
    pub fetch_bytes: Counter,
    /// Record bytes this broker returned to consumers as a partition's leader...
    pub consumer_fetch_bytes_leader: Counter,
    /// ... and as a follower (KIP-392 fetch from the closest replica).
    pub consumer_fetch_bytes_follower: Counter,
    /// Partitions of consumer fetches answered with a preferred read replica (KIP-392).
    pub preferred_read_replica_answers: Counter,
    pub storage_errors: Counter,
    pub retention_segments_deleted: Counter,
    pub tier_bytes_uploaded: Counter,
    pub tier_segments_uploaded: Counter,
    pub tier_upload_errors: Counter,
    pub tier_segments_deleted: Counter,
    pub tier_reads: std::sync::Arc<TierReadMetrics>,
    pub produce_rejected_disk_limit: Counter,
    /// TCP connections opened to other brokers for transaction markers and transactional
    /// write checks ([`crate::broker_client::BrokerPool`]), and requests sent on a reused one.
    pub broker_client_connects: Counter,
    pub broker_client_reuses: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| Counter::default()),
            request_errors: std::array::from_fn(|_| Counter::default()),
            request_bytes: std::array::from_fn(|_| Counter::default()),
            response_bytes: std::array::from_fn(|_| Counter::default()),
            connections_accepted: Counter::default(),
            connections_closed_bad_input: Counter::default(),
            connections_throttled: Counter::default(),
            successful_authentications: Counter::default(),
            successful_reauthentications: Counter::default(),
            failed_authentications: Counter::default(),
            responses_unencodable: Counter::default(),
            connections_open: AtomicI64::new(0),
            produce_records: Counter::default(),
            produce_bytes: Counter::default(),
            fetch_bytes: Counter::default(),
            consumer_fetch_bytes_leader: Counter::default(),
            consumer_fetch_bytes_follower: Counter::default(),
            preferred_read_replica_answers: Counter::default(),
            storage_errors: Counter::default(),
            retention_segments_deleted: Counter::default(),
            tier_bytes_uploaded: Counter::default(),
            tier_segments_uploaded: Counter::default(),
            tier_upload_errors: Counter::default(),
            tier_segments_deleted: Counter::default(),
            tier_reads: Default::default(),
            produce_rejected_disk_limit: Counter::default(),
            broker_client_connects: Counter::default(),
            broker_client_reuses: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn request(&self, api_key: ApiKey) {
        if let Some(c) = self.requests.get(api_key as i16 as usize) {
            c.add(1);
        }
    }

    /// A request frame of `frame_bytes` (length prefix included) and the response frame
    /// sent for it (`None` when none is, as for Produce with acks=0).
    pub fn request_bytes(
        &self,
        api_key: ApiKey,
        frame_bytes: usize,
        response_bytes: Option<usize>,
    ) {
        let index = api_key as i16 as usize;
        if let Some(c) = self.request_bytes.get(index) {
            c.add(frame_bytes as u64);
        }
        if let (Some(c), Some(n)) = (self.response_bytes.get(index), response_bytes) {
            c.add(n as u64);
        }
    }

    pub fn request_error(&self, api_key: ApiKey) {
        if let Some(c) = self.request_errors.get(api_key as i16 as usize) {
            c.add(1);
        }
    }

    /// Renders every metric, with `gauges` read at scrape time.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "strata_connections_accepted_total",
            "Client connections accepted.",
            self.connections_accepted.get(),
        );
        counter(
            "strata_connections_closed_bad_input_total",
            "Connections closed for malformed or oversized requests.",
            self.connections_closed_bad_input.get(),
        );
        counter(
            "strata_connections_throttled_total",
            "Connections closed, after their throttle time, for their address's connection_creation_rate (KIP-612).",
            self.connections_throttled.get(),
        );
        counter(
            "strata_successful_authentications_total",
            "SASL authentications that succeeded (not counting re-authentications).",
            self.successful_authentications.get(),
        );
        counter(
            "strata_successful_reauthentications_total",
            "SASL re-authentications (KIP-368) that succeeded.",
            self.successful_reauthentications.get(),
        );
        counter(
            "strata_failed_authentications_total",
            "SASL authentications that failed; each closed its connection.",
            self.failed_authentications.get(),
        );
        counter(
            "strata_responses_unencodable_total",
            "Responses that could not be encoded for the version asked (a broker bug; the connection was closed).",
            self.responses_unencodable.get(),
        );
        counter(
            "strata_produce_records_total",
            "Records appended by Produce.",
            self.produce_records.get(),
        );
        counter(
            "strata_produce_bytes_total",
            "Record-batch bytes appended by Produce.",
            self.produce_bytes.get(),
        );
        counter(
            "strata_fetch_bytes_total",
            "Record-batch bytes returned by Fetch.",
            self.fetch_bytes.get(),
        );
        counter(
            "strata_fetch_preferred_read_replica_total",
            "Partitions of consumer fetches answered with a preferred read replica to fetch from instead (KIP-392).",
            self.preferred_read_replica_answers.get(),
        );
        counter(
            "strata_storage_errors_total",
            "Log I/O errors reported as KAFKA_STORAGE_ERROR.",
            self.storage_errors.get(),
        );
        counter(
            "strata_broker_client_connects_total",
            "TCP connections opened to other brokers for transaction markers and transactional write checks.",
            self.broker_client_connects.get(),
        );
        counter(
            "strata_broker_client_reuses_total",
            "Transaction markers and transactional write checks sent to another broker on a pooled connection.",
            self.broker_client_reuses.get(),
        );
        counter(
            "strata_retention_segments_deleted_total",
            "Segments deleted by retention.",
            self.retention_segments_deleted.get(),
        );
        let tier_counters = [
            (
                "strata_tier_uploaded_bytes_total",
                "Segment bytes uploaded to the tier.",
                &self.tier_bytes_uploaded,
            ),
            (
                "strata_tier_uploaded_segments_total",
                "Segments uploaded to the tier.",
                &self.tier_segments_uploaded,
            ),
            (
                "strata_tier_upload_errors_total",
                "Failed tier operations of the upload task (retried with backoff).",
                &self.tier_upload_errors,
            ),
            (
                "strata_tier_deleted_segments_total",
                "Segments deleted from the tier by retention and DeleteRecords.",
                &self.tier_segments_deleted,
            ),
            (
                "strata_tier_read_bytes_total",
                "Record bytes fetched from the tier.",
                &self.tier_reads.bytes,
            ),
            (
                "strata_tier_read_errors_total",
                "Fetches from the tier that failed.",
                &self.tier_reads.errors,
            ),
            (
                "strata_produce_rejected_disk_limit_total",
                "Produce partitions refused because data not yet in the tier reached log.local.untiered.max.bytes.",
                &self.produce_rejected_disk_limit,
            ),
        ];
        for (name, help, c) in tier_counters {
            counter(name, help, c.get());
        }
        let cache = &gauges.tier_cache;
        for (name, help, value) in [
            (
                "strata_tier_cache_hits_total",
                "Tier reads served from the read cache.",
                cache.hits,
            ),
            (
                "strata_tier_cache_misses_total",
                "Tier reads that went to the object store.",
                cache.misses,
            ),
            (
                "strata_tier_store_read_bytes_total",
                "Bytes fetched from the object store (reads and read-ahead).",
                cache.remote_bytes_read,
            ),
        ] {
            counter(name, help, value);
        }
        counter(
            "strata_audit_records_written_total",
            "Authorization decisions written to authorizer.audit.log.file.",
            gauges.audit_records_written,
        );
        counter(
            "strata_audit_records_dropped_total",
            "Authorization decisions not recorded because the audit log writer fell behind.",
            gauges.audit_records_dropped,
        );
        counter(
            "strata_fetch_sessions_created_total",
            "Incremental fetch sessions created (KIP-227).",
            gauges.fetch_sessions.created,
        );
        counter(
            "strata_fetch_session_evictions_total",
            "Incremental fetch sessions evicted to make room for another (Kafka's IncrementalFetchSessionEvictionsPerSec).",
            gauges.fetch_sessions.evictions,
        );
        counter(
            "strata_fetch_session_expirations_total",
            "Incremental fetch sessions dropped after incremental.fetch.session.expiry.ms unused.",
            gauges.fetch_sessions.expirations,
        );
        self.tier_reads.latency.render(
            &mut out,
            "strata_tier_read_seconds",
            "Latency of fetches served from the tier.",
        );
        let hit_ratio = if cache.hits + cache.misses == 0 {
            0.0
        } else {
            cache.hits as f64 / (cache.hits + cache.misses) as f64
        };
        let partitions = gauges.partitions;
        let log_bytes = gauges.log_bytes;
        for (name, help, value) in [
            (
                "strata_tier_upload_lag_bytes",
                "Bytes of rolled segments not yet in the tier.",
                gauges.upload_lag_bytes as f64,
            ),
            (
                "strata_tier_upload_lag_segments",
                "Rolled segments not yet in the tier.",
                gauges.upload_lag_segments as f64,
            ),
            (
                "strata_fetch_sessions",
                "Incremental fetch sessions cached (Kafka's NumIncrementalFetchSessions).",
                gauges.fetch_sessions.sessions as f64,
            ),
            (
                "strata_fetch_session_partitions",
                "Partitions cached in all incremental fetch sessions (Kafka's NumIncrementalFetchPartitionsCached).",
                gauges.fetch_sessions.partitions as f64,
            ),
            (
                "strata_tier_cache_bytes",
                "Bytes held by the tier read cache.",
                cache.bytes_cached as f64,
            ),
            (
                "strata_tier_cache_hit_ratio",
                "Hits / (hits + misses) of the tier read cache since start.",
                hit_ratio,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let _ = writeln!(out, "# HELP strata_connections_open Client connections open now.\n# TYPE strata_connections_open gauge\nstrata_connections_open {}", self.connections_open.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP strata_partitions Partitions hosted.\n# TYPE strata_partitions gauge\nstrata_partitions {partitions}");
        let _ = writeln!(out, "# HELP strata_log_size_bytes Bytes in partition logs.\n# TYPE strata_log_size_bytes gauge\nstrata_log_size_bytes {log_bytes}");
        let name = "strata_consumer_fetch_bytes_total";
        let _ = writeln!(
            out,
            "# HELP {name} Record-batch bytes returned to consumers, by this broker's role in the partition (follower: KIP-392).\n# TYPE {name} counter\n{name}{{replica=\"leader\"}} {}\n{name}{{replica=\"follower\"}} {}",
            self.consumer_fetch_bytes_leader.get(),
            self.consumer_fetch_bytes_follower.get(),
        );
        for (name, help, counters) in [
            (
                "strata_requests_total",
                "Requests received, by API.",
                &self.requests,
            ),
            (
                "strata_request_errors_total",
                "Requests that failed as a whole, by API.",
                &self.request_errors,
            ),
            (
                "strata_request_bytes_total",
                "Bytes of request frames received, by API (length prefix included).",
                &self.request_bytes,
            ),
            (
                "strata_response_bytes_total",
                "Bytes of response frames sent, by API (length prefix included).",
                &self.response_bytes,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (key, c) in counters.iter().enumerate() {
                let value = c.get();
                if value == 0 {
                    continue;
                }
                if let Ok(api) = ApiKey::try_from(key as i16) {
                    let _ = writeln!(out, "{name}{{api=\"{api:?}\"}} {value}");
                }
            }
        }
        out
    }
}
