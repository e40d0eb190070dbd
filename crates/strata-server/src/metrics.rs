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

pub struct Metrics {
    requests: [Counter; MAX_API_KEYS],
    request_errors: [Counter; MAX_API_KEYS],
    pub connections_accepted: Counter,
    pub connections_closed_bad_input: Counter,
    pub connections_open: AtomicI64,
    pub produce_records: Counter,
    pub produce_bytes: Counter,
    pub fetch_bytes: Counter,
    pub storage_errors: Counter,
    pub retention_segments_deleted: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| Counter::default()),
            request_errors: std::array::from_fn(|_| Counter::default()),
            connections_accepted: Counter::default(),
            connections_closed_bad_input: Counter::default(),
            connections_open: AtomicI64::new(0),
            produce_records: Counter::default(),
            produce_bytes: Counter::default(),
            fetch_bytes: Counter::default(),
            storage_errors: Counter::default(),
            retention_segments_deleted: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn request(&self, api_key: ApiKey) {
        if let Some(c) = self.requests.get(api_key as i16 as usize) {
            c.add(1);
        }
    }

    pub fn request_error(&self, api_key: ApiKey) {
        if let Some(c) = self.request_errors.get(api_key as i16 as usize) {
            c.add(1);
        }
    }

    /// Renders every metric; `partitions` and `log_bytes` are gauges read at scrape time.
    pub fn render(&self, partitions: usize, log_bytes: u64) -> String {
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
            "strata_storage_errors_total",
            "Log I/O errors reported as KAFKA_STORAGE_ERROR.",
            self.storage_errors.get(),
        );
        counter(
            "strata_retention_segments_deleted_total",
            "Segments deleted by retention.",
            self.retention_segments_deleted.get(),
        );
        let _ = writeln!(out, "# HELP strata_connections_open Client connections open now.\n# TYPE strata_connections_open gauge\nstrata_connections_open {}", self.connections_open.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP strata_partitions Partitions hosted.\n# TYPE strata_partitions gauge\nstrata_partitions {partitions}");
        let _ = writeln!(out, "# HELP strata_log_size_bytes Bytes in partition logs.\n# TYPE strata_log_size_bytes gauge\nstrata_log_size_bytes {log_bytes}");
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
