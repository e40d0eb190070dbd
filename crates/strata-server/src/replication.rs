//! The leader's side of partition replication that talks to the controller: ISR changes
//! (AlterPartition, KIP-497) proposed by [`Partition`]'s leader state, and the periodic ISR
//! check that shrinks the ISR of followers that fell behind for `replica.lag.time.max.ms`.
//!
//! The follower's side (fetching from leaders) is `replica_fetcher`.

use std::sync::Arc;
use std::time::Duration;

use strata_partition::{IsrChange, IsrChangeRefusal};
use tokio::sync::watch;

use std::sync::atomic::{AtomicI64, Ordering};

use strata_quorum::Quorum;

use crate::controller_rpc::{AlterPartitionRequest, AlterPartitionResponse, ALTER_PARTITION_PATH};
use crate::replica_manager::{now_ms, Partition, ReplicaManager};

/// Pause between attempts to deliver an ISR change the controller did not answer.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Attempts to deliver one ISR change before leaving it to the next periodic check.
const MAX_ATTEMPTS: usize = 25;

/// Kafka's `AlterPartitionManager`: delivers the ISR changes this broker's leaders propose
/// to the active controller, with this process's registration epoch, so that a stale process
/// cannot change an ISR.
pub struct AlterPartitionManager {
    /// `None` on a single node, which has no followers.
    quorum: Option<Arc<Quorum>>,
    replicas: Arc<ReplicaManager>,
    node_id: i32,
    /// The epoch the controller gave this process's registration (-1 before it registered).
    broker_epoch: AtomicI64,
}

impl AlterPartitionManager {
    pub fn new(quorum: Option<Arc<Quorum>>, replicas: Arc<ReplicaManager>, node_id: i32) -> Self {
        AlterPartitionManager {
            quorum,
            replicas,
            node_id,
            broker_epoch: AtomicI64::new(-1),
        }
    }

    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Acquire)
    }

    /// Set once the controller has answered this process's registration.
    pub fn set_broker_epoch(&self, epoch: i64) {
        self.broker_epoch.store(epoch, Ordering::Release);
    }

    /// Sends `change` to the active controller in the background and applies its answer.
    /// Transport failures are retried while this broker still leads in `leader_epoch`.
    pub fn propose(
        self: &Arc<Self>,
        partition: Arc<Partition>,
        change: IsrChange,
        leader_epoch: i32,
    ) {
        let Some(quorum) = self.quorum.clone() else {
            return; // a single node has no followers
        };
        let request = AlterPartitionRequest {
            broker_id: self.node_id,
            broker_epoch: self.broker_epoch(),
            topic_id: partition.topic_id,
            partition: partition.index,
            leader_epoch,
            partition_epoch: change.partition_epoch,
            new_isr: change.proposed.iter().copied().collect(),
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let replicas = self.replicas.clone();
        runtime.spawn(async move {
            tracing::info!(topic = %partition.topic, partition = partition.index, isr = ?request.new_isr, partition_epoch = request.partition_epoch, "proposing an ISR change");
            for _ in 0..MAX_ATTEMPTS {
                if !partition.is_leader() || partition.leader_epoch() != leader_epoch {
                    return;
                }
                match quorum
                    .call_leader::<_, AlterPartitionResponse>(ALTER_PARTITION_PATH, &request)
                    .await
                {
                    Ok(r) => {
                        let answer = if r.error_code == 0 {
                            Ok((r.isr, r.partition_epoch))
                        } else {
                            tracing::warn!(topic = %partition.topic, partition = partition.index, error_code = r.error_code, "the controller refused an ISR change");
                            Err(IsrChangeRefusal::from_error_code(r.error_code))
                        };
                        let (replicas, p) = (replicas.clone(), partition.clone());
                        let _ = tokio::task::spawn_blocking(move || {
                            p.on_isr_answer(leader_epoch, answer, now_ms());
                            replicas.notify_appended();
                        })
                        .await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "ISR change not delivered; retrying");
                        tokio::time::sleep(RETRY_BACKOFF).await;
                    }
                }
            }
        });
    }

    /// Every `replica.lag.time.max.ms / 2` (as Kafka's `isr-expiration` task), proposes to
    /// drop followers that have not caught up for the lag time from the ISRs this broker leads.
    pub async fn run_isr_checks(self: Arc<Self>, lag_ms: i64, stop: watch::Receiver<bool>) {
        let period = Duration::from_millis((lag_ms / 2).clamp(10, 30_000) as u64);
        let mut ticker = crate::task::Ticker::new(period, stop);
        loop {
            if !ticker.tick().await {
                return;
            }
            let replicas = self.replicas.clone();
            let changes = tokio::task::spawn_blocking(move || {
                let now = now_ms();
                replicas
                    .all()
                    .into_iter()
                    .filter(|p| p.is_leader())
                    .filter_map(|p| p.maybe_shrink_isr(now).map(|(c, epoch)| (p, c, epoch)))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for (partition, change, epoch) in changes {
                self.propose(partition, change, epoch);
            }
        }
    }
}
