//! What each tenant does on this broker, for `/metrics` with a `tenant` label, and its live
//! connections, which its `connections` limit bounds.
//!
//! Entries exist only for tenants in the metadata (the request seam and the connection know a
//! tenant from the image), so their number is bounded by the tenants'; a deleted tenant's entry
//! goes at the next scrape once its last connection has closed.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    requests: u64,
    bytes_in: u64,
    bytes_out: u64,
    connections: u64,
}

/// One metric's value in a tenant's row.
type Column = fn(&(Counters, TenantStorage)) -> u64;

/// Per-tenant counters of this broker.
#[derive(Debug, Default)]
pub struct TenantMetrics {
    tenants: Mutex<HashMap<String, Counters>>,
}

/// A tenant's connection, counted until dropped.
#[derive(Debug)]
pub struct TenantConnection {
    metrics: Arc<TenantMetrics>,
    tenant_id: String,
}

impl Drop for TenantConnection {
    fn drop(&mut self) {
        self.metrics.update(&self.tenant_id, |c| {
            debug_assert!(c.connections > 0, "a connection counted once");
            c.connections = c.connections.saturating_sub(1);
        });
    }
}

/// What [`TenantMetrics::render`] reports per tenant besides its counters: its partitions
/// hosted here and their bytes on local disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TenantStorage {
    pub partitions: u64,
    pub local_bytes: u64,
}

impl TenantMetrics {
    fn update<T>(&self, tenant_id: &str, f: impl FnOnce(&mut Counters) -> T) -> T {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        match tenants.get_mut(tenant_id) {
            Some(c) => f(c),
            None => f(tenants.entry(tenant_id.to_string()).or_default()),
        }
    }

    /// One request of the tenant's, `bytes_in` in its frame and `bytes_out` in its answer.
    pub fn record_request(&self, tenant_id: &str, bytes_in: usize, bytes_out: usize) {
        self.update(tenant_id, |c| {
            c.requests += 1;
            c.bytes_in += bytes_in as u64;
            c.bytes_out += bytes_out as u64;
        });
    }

    /// Counts a new connection of the tenant, unless it already holds `limit` (then the number
    /// it holds is the error).
    pub fn connect(
        self: &Arc<Self>,
        tenant_id: &str,
        limit: Option<u64>,
    ) -> Result<TenantConnection, u64> {
        self.update(tenant_id, |c| match limit {
            Some(limit) if c.connections >= limit => Err(c.connections),
            _ => {
                c.connections += 1;
                Ok(())
            }
        })?;
        Ok(TenantConnection {
            metrics: Arc::clone(self),
            tenant_id: tenant_id.to_string(),
        })
    }

    /// Appends the tenants' metrics in Prometheus' text format: those of `storage` (the live
    /// tenants, with what they hold here) and any other with connections still open.
    pub fn render(&self, storage: &BTreeMap<String, TenantStorage>, out: &mut String) {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        tenants.retain(|id, c| storage.contains_key(id) || c.connections > 0);
        let mut rows: BTreeMap<&str, (Counters, TenantStorage)> = storage
            .iter()
            .map(|(id, s)| (id.as_str(), (Counters::default(), *s)))
            .collect();
        for (id, c) in tenants.iter() {
            rows.entry(id).or_default().0 = *c;
        }
        let metrics: [(&str, &str, &str, Column); 6] = [
            (
                "strata_tenant_requests_total",
                "counter",
                "Requests of the tenant's clients.",
                |r| r.0.requests,
            ),
            (
                "strata_tenant_bytes_in_total",
                "counter",
                "Bytes of the tenant's request frames.",
                |r| r.0.bytes_in,
            ),
            (
                "strata_tenant_bytes_out_total",
                "counter",
                "Bytes of the answers to the tenant's clients.",
                |r| r.0.bytes_out,
            ),
            (
                "strata_tenant_connections",
                "gauge",
                "The tenant's open connections.",
                |r| r.0.connections,
            ),
            (
                "strata_tenant_partitions",
                "gauge",
                "The tenant's partitions hosted on this broker.",
                |r| r.1.partitions,
            ),
            (
                "strata_tenant_local_storage_bytes",
                "gauge",
                "Bytes of the tenant's partitions on this broker's disk.",
                |r| r.1.local_bytes,
            ),
        ];
        for (name, kind, help, value) in metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (id, row) in &rows {
                let _ = writeln!(out, "{name}{{tenant=\"{id}\"}} {}", value(row));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_to_the_limit_and_released_on_drop() {
        let metrics = Arc::new(TenantMetrics::default());
        let first = metrics.connect("lc-aaaa1", Some(2)).expect("first");
        let second = metrics.connect("lc-aaaa1", Some(2)).expect("second");
        assert_eq!(metrics.connect("lc-aaaa1", Some(2)).err(), Some(2));
        assert!(
            metrics.connect("lc-bbbb2", Some(1)).is_ok(),
            "another tenant's own limit"
        );
        drop(first);
        let third = metrics.connect("lc-aaaa1", Some(2)).expect("a freed place");
        drop((second, third));
        assert!(metrics.connect("lc-aaaa1", None).is_ok(), "no limit");
    }

    #[test]
    fn rendering_labels_each_live_tenant_and_forgets_deleted_ones() {
        let metrics = Arc::new(TenantMetrics::default());
        metrics.record_request("lc-aaaa1", 100, 40);
        metrics.record_request("lc-gone1", 1, 1);
        let storage = BTreeMap::from([(
            "lc-aaaa1".to_string(),
            TenantStorage {
                partitions: 3,
                local_bytes: 4096,
            },
        )]);
        let mut out = String::new();
        metrics.render(&storage, &mut out);
        for line in [
            "strata_tenant_requests_total{tenant=\"lc-aaaa1\"} 1",
            "strata_tenant_bytes_in_total{tenant=\"lc-aaaa1\"} 100",
            "strata_tenant_bytes_out_total{tenant=\"lc-aaaa1\"} 40",
            "strata_tenant_partitions{tenant=\"lc-aaaa1\"} 3",
            "strata_tenant_local_storage_bytes{tenant=\"lc-aaaa1\"} 4096",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
        }
        assert!(!out.contains("lc-gone1"), "{out}");
    }
}
