//! The log cleaner task (Kafka's `LogCleaner` thread): compacts the partitions whose topic has
//! `cleanup.policy` containing `compact`.
//!
//! Each pass visits every hosted partition on a blocking thread: `Log::plan_compaction` under the
//! partition's lock (cheap), `CompactionPlan::execute` without it (reads the old segments, writes
//! the cleaned ones under temporary names), then `Log::finish_compaction` under the lock again
//! (swaps the files in). Produce and fetch on the partition continue while `execute` runs.
//! As in Kafka, the cleaner goes straight on to the next pass while it finds work and sleeps
//! `log.cleaner.backoff.ms` when a pass cleaned nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::replica_manager::{now_ms, Partition, ReplicaManager};

/// Kafka's default `log.cleaner.backoff.ms`.
pub const DEFAULT_BACKOFF_MS: i64 = 15_000;
/// Lower bound on the sleep between idle passes.
const MIN_BACKOFF_MS: i64 = 10;

/// `log.cleaner.backoff.ms` from the static broker properties, if it is set and valid.
fn backoff_ms(config: &ServerConfig) -> i64 {
    config
        .props
        .get("log.cleaner.backoff.ms")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|v| *v >= 0)
        .unwrap_or(DEFAULT_BACKOFF_MS)
        .max(MIN_BACKOFF_MS)
}

/// Runs until `stop` turns true.
pub(crate) async fn run(
    config: &ServerConfig,
    replicas: Arc<ReplicaManager>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let backoff = Duration::from_millis(backoff_ms(config) as u64);
    loop {
        if *stop.borrow() {
            return;
        }
        let (r, m) = (replicas.clone(), metrics.clone());
        let stop_flag = stop.clone();
        let cleaned = tokio::task::spawn_blocking(move || clean_pass(&r, &m, &stop_flag))
            .await
            .unwrap_or(0);
        if cleaned > 0 {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = crate::task::stopped(&mut stop) => return,
        }
    }
}

/// One pass over all partitions; returns how many were compacted. Blocking.
fn clean_pass(replicas: &ReplicaManager, metrics: &Metrics, stop: &watch::Receiver<bool>) -> usize {
    let mut cleaned = 0;
    for partition in replicas.all() {
        if *stop.borrow() {
            break;
        }
        match clean_partition(&partition) {
            Ok(true) => cleaned += 1,
            Ok(false) => {}
            Err(e) => {
                metrics.storage_errors.add(1);
                tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "log compaction failed");
            }
        }
    }
    cleaned
}

/// Plans, executes and finishes one compaction of `partition` if it needs one.
fn clean_partition(partition: &Partition) -> Result<bool, strata_log::LogError> {
    let Some(plan) = partition.log().plan_compaction(now_ms())? else {
        return Ok(false);
    };
    // The expensive part, without the partition's lock.
    let output = plan.execute()?;
    // `finish_compaction` logs what it did, with the partition's directory.
    let stats = partition.log().finish_compaction(output)?;
    Ok(stats.is_some())
}
