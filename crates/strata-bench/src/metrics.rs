//! A Strata broker's Prometheus `/metrics` page, read over plain HTTP/1.0 (no client library:
//! one GET per reading, on the loopback address of a broker this bench started).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};

/// The largest page accepted: the broker's page is a few KiB, independent of partition count.
const MAX_PAGE_BYTES: u64 = 4 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

/// One reading of the broker's metrics: sample name (with its labels, if any) → value.
#[derive(Debug, Default, Clone)]
pub struct BrokerMetrics {
    samples: HashMap<String, f64>,
}

impl BrokerMetrics {
    /// GETs `http://<addr>/metrics` and parses it.
    pub fn scrape(addr: SocketAddr) -> anyhow::Result<Self> {
        let context = || format!("cannot read the broker's metrics at http://{addr}/metrics");
        let mut conn = TcpStream::connect_timeout(&addr, TIMEOUT).with_context(context)?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.set_write_timeout(Some(TIMEOUT))?;
        // HTTP/1.0: the server closes the connection after the reply and sends no chunks.
        write!(conn, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").with_context(context)?;
        let mut reply = String::new();
        conn.take(MAX_PAGE_BYTES)
            .read_to_string(&mut reply)
            .with_context(context)?;
        let (head, body) = reply
            .split_once("\r\n\r\n")
            .with_context(|| format!("{}: no end of headers", context()))?;
        let status = head.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("200") {
            bail!("{}: the broker answered {status:?}", context());
        }
        Ok(Self::parse(body))
    }

    /// Parses the text exposition format; comments and lines that are not `name value` are
    /// skipped.
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.trim().rsplit_once(' ')?;
                Some((name.trim().to_string(), value.parse().ok()?))
            })
            .collect();
        BrokerMetrics { samples }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.samples.get(name).copied()
    }

    /// `name`'s value, or an error saying the broker does not export it.
    pub fn require(&self, name: &str) -> anyhow::Result<f64> {
        self.get(name).with_context(|| {
            format!("the broker's /metrics has no {name} (a Strata broker without tiered storage?)")
        })
    }

    /// How much counter `name` grew since `before`; 0 when either reading lacks it.
    pub fn delta(&self, before: &Self, name: &str) -> f64 {
        match (self.get(name), before.get(name)) {
            (Some(after), Some(before)) => (after - before).max(0.0),
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_exposition_format() {
        let m = BrokerMetrics::parse(
            "# HELP strata_tier_upload_lag_bytes Bytes.\n\
             # TYPE strata_tier_upload_lag_bytes gauge\n\
             strata_tier_upload_lag_bytes 0\n\
             strata_tier_cache_hits_total 12\n\
             strata_tier_read_seconds_bucket{le=\"0.001\"} 3\n\
             strata_tier_cache_hit_ratio 0.75\n\
             garbage\n",
        );
        assert_eq!(m.get("strata_tier_upload_lag_bytes"), Some(0.0));
        assert_eq!(m.get("strata_tier_cache_hits_total"), Some(12.0));
        assert_eq!(
            m.get("strata_tier_read_seconds_bucket{le=\"0.001\"}"),
            Some(3.0)
        );
        assert_eq!(m.get("strata_tier_cache_hit_ratio"), Some(0.75));
        assert_eq!(m.get("garbage"), None);
        assert!(m.require("strata_missing").is_err());
        let later = BrokerMetrics::parse("strata_tier_cache_hits_total 20\n");
        assert_eq!(later.delta(&m, "strata_tier_cache_hits_total"), 8.0);
        assert_eq!(later.delta(&m, "strata_missing"), 0.0);
    }
}
