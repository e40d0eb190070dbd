//! The leader's side of partition replication that talks to the controller: ISR changes
//! (AlterPartition, KIP-497) proposed by [`Partition`]'s leader state, and the periodic ISR
//! check that shrinks the ISR of followers that fell behind for `replica.lag.time.max.ms`.
//!
//! The follower's side (fetching from leaders) is `replica_fetcher`.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_partition::{IsrChange, IsrChangeRefusal};
use tokio::sync::watch;
use uuid::Uuid;

use crate::broker::Broker;
use crate::replica_manager::{now_ms, Partition};

pub const ALTER_PARTITION_PATH: &str = "/controller/v1/alter-partition";
/// Pause between attempts to deliver an ISR change the controller did not answer.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Attempts to deliver one ISR change before leaving it to the next periodic check.
const MAX_ATTEMPTS: usize = 25;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlterPartitionRequest {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// The committed ISR and partition epoch, or a Kafka error code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlterPartitionResponse {
    pub error_code: i16,
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
}

/// Sends `change` to the active controller in the background and applies its answer.
/// Transport failures are retried while this broker still leads in `leader_epoch`.
pub fn propose_isr_change(
    broker: Arc<Broker>,
    partition: Arc<Partition>,
    change: IsrChange,
    leader_epoch: i32,
) {
    let Some(quorum) = broker.store.quorum().cloned() else {
        return; // a single node has no followers
    };
    let request = AlterPartitionRequest {
        broker_id: broker.config.node_id,
        broker_epoch: broker.broker_epoch(),
        topic_id: partition.topic_id,
        partition: partition.index,
        leader_epoch,
        partition_epoch: change.partition_epoch,
        new_isr: change.proposed.iter().copied().collect(),
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
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
                    let b = broker.clone();
                    let p = partition.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        p.on_isr_answer(leader_epoch, answer, now_ms());
                        b.replicas.notify_appended();
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
pub async fn run_isr_checks(broker: Arc<Broker>, stop: watch::Receiver<bool>) {
    let lag_ms: i64 = broker.config.broker_value("replica.lag.time.max.ms");
    let period = Duration::from_millis((lag_ms / 2).clamp(10, 30_000) as u64);
    let mut ticker = crate::broker::Ticker::new(period, stop);
    loop {
        if !ticker.tick().await {
            return;
        }
        let b = broker.clone();
        let changes = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            b.replicas
                .all()
                .into_iter()
                .filter(|p| p.is_leader())
                .filter_map(|p| p.maybe_shrink_isr(now).map(|(c, epoch)| (p, c, epoch)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (partition, change, epoch) in changes {
            propose_isr_change(broker.clone(), partition, change, epoch);
        }
    }
}
