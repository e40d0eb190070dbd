//! What a partition leader (or group coordinator) asks the transaction coordinator about a
//! transactional write (Kafka's `AddPartitionsToTxnManager`, KIP-890): whether the
//! partitions are part of the producer's ongoing transaction (part 1, `verify_only`: a
//! transactional write to a partition its transaction never added is refused, so no hanging
//! transaction can hold the last stable offset back), or, for a client of transaction
//! protocol v2, to add them (part 2: such clients leave AddPartitionsToTxn to the leaders).
//!
//! The coordinator is the leader of the transactional id's `__transaction_state` partition:
//! this broker's own [`crate::txn_service::TxnService`] when it leads it, otherwise another
//! broker asked with AddPartitionsToTxn v5 in its batched (broker-to-broker) form. Cost per
//! call: one coordinator round trip (local: a lock and, for an add, one state record
//! appended and replicated), for the first write of a transaction to a partition only; the
//! callers skip partitions whose log already has the producer's transaction open.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use strata_coord::txn::{TRANSACTION_STATE_TOPIC, TV2};

use crate::broker::Broker;
use crate::broker_client::BrokerConnection;
use crate::replica_manager::now_ms;

/// The AddPartitionsToTxn version a broker sends (the batched form, with
/// TRANSACTION_ABORTABLE known).
const BROKER_REQUEST_VERSION: i16 = 5;
/// Longest wait for a remote coordinator's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// CONCURRENT_TRANSACTIONS (the producer's previous transaction is still writing its
/// markers) is retried this many times, this long apart (Kafka's
/// `add.partitions.to.txn.retry.backoff.ms` is 20 ms, up to 100 ms in all).
const CONCURRENT_RETRIES: u32 = 5;
const CONCURRENT_BACKOFF: Duration = Duration::from_millis(20);

/// What to ask of the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnCheck {
    /// Are the partitions in the ongoing transaction? (protocol v1 clients)
    Verify,
    /// Add them to the transaction, starting it if need be (protocol v2 clients).
    Add,
}

/// One transactional write to check: who wrote it and where.
pub struct TxnWrite<'a> {
    pub transactional_id: &'a str,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub partitions: &'a [(String, i32)],
}

/// The coordinator's error code for each partition of `write` (0: it is in the transaction),
/// as it answered; COORDINATOR_NOT_AVAILABLE when it could not be asked. Blocking: call from
/// a blocking thread (it waits on the coordinator's lock, or on another broker).
pub fn check(broker: &Broker, write: &TxnWrite<'_>, what: TxnCheck) -> Vec<i16> {
    let mut attempt = 0;
    loop {
        let codes = match ask(broker, write, what) {
            Ok(codes) => codes,
            Err(e) => vec![e.code(); write.partitions.len()],
        };
        let concurrent = ResponseError::ConcurrentTransactions.code();
        attempt += 1;
        if attempt > CONCURRENT_RETRIES || !codes.contains(&concurrent) {
            return codes;
        }
        std::thread::sleep(CONCURRENT_BACKOFF);
    }
}

/// Kafka's mapping of the coordinator's answer for a Produce request: fencing is
/// INVALID_PRODUCER_EPOCH, and a coordinator that is busy, moving or unreachable is
/// NOT_ENOUGH_REPLICAS, which every client retries.
pub fn produce_error(code: i16) -> i16 {
    use ResponseError::*;
    if code == ProducerFenced.code() {
        InvalidProducerEpoch.code()
    } else if [
        ConcurrentTransactions.code(),
        NotCoordinator.code(),
        CoordinatorNotAvailable.code(),
        CoordinatorLoadInProgress.code(),
        RequestTimedOut.code(),
    ]
    .contains(&code)
    {
        NotEnoughReplicas.code()
    } else {
        code
    }
}

/// The partition's error message of a write the coordinator refused with `code`, as Kafka's
/// `ReplicaManager` words it: only for INVALID_TXN_STATE and for the coordinator errors it
/// turns into NOT_ENOUGH_REPLICAS (see [`produce_error`]); the others carry none.
fn refusal_message(code: i16) -> Option<String> {
    if code == ResponseError::InvalidTxnState.code() {
        Some("Partition was not added to the transaction".into())
    } else if produce_error(code) == ResponseError::NotEnoughReplicas.code()
        && code != ResponseError::NotEnoughReplicas.code()
    {
        Some(format!(
            "Unable to verify the partition has been added to the transaction. Underlying \
             error: {}",
            kafka_error_name(code)
        ))
    } else {
        None
    }
}

/// Kafka's name of an error code (`Errors.name()`, e.g. `COORDINATOR_NOT_AVAILABLE`).
fn kafka_error_name(code: i16) -> String {
    let Some(error) = ResponseError::try_from_code(code) else {
        return "NONE".into();
    };
    let camel = error.to_string();
    let mut name = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

fn ask(broker: &Broker, write: &TxnWrite<'_>, what: TxnCheck) -> Result<Vec<i16>, ResponseError> {
    let partition = broker.txns.partition_of(write.transactional_id);
    let image = broker.image();
    let leader = image
        .topic(TRANSACTION_STATE_TOPIC)
        .and_then(|t| t.partitions.get(partition as usize))
        .map(|p| p.leader)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    if leader == broker.config.node_id {
        ask_local(broker, write, what)
    } else if leader >= 0 {
        ask_remote(broker, leader, write, what)
    } else {
        Err(ResponseError::CoordinatorNotAvailable)
    }
}

fn ask_local(
    broker: &Broker,
    write: &TxnWrite<'_>,
    what: TxnCheck,
) -> Result<Vec<i16>, ResponseError> {
    if !broker.txns.coordinates(broker, write.transactional_id) {
        return Err(ResponseError::NotCoordinator);
    }
    let n = write.partitions.len();
    let answer = broker.txns.run(broker, |c| match what {
        TxnCheck::Verify => c
            .verify_partitions(
                write.transactional_id,
                write.producer_id,
                write.producer_epoch,
                write.partitions,
            )
            .map(|present| {
                present
                    .into_iter()
                    .map(|p| {
                        if p {
                            0
                        } else {
                            ResponseError::InvalidTxnState.code()
                        }
                    })
                    .collect()
            }),
        TxnCheck::Add => c
            .add_partitions(
                write.transactional_id,
                write.producer_id,
                write.producer_epoch,
                write.partitions,
                TV2,
                now_ms(),
            )
            .map(|()| vec![0; n]),
    })?;
    Ok(answer.unwrap_or_else(|e| vec![e.code(); n]))
}

fn ask_remote(
    broker: &Broker,
    leader: i32,
    write: &TxnWrite<'_>,
    what: TxnCheck,
) -> Result<Vec<i16>, ResponseError> {
    let image = broker.image();
    let address = image
        .broker(leader)
        .filter(|b| !b.fenced)
        .map(|b| format!("{}:{}", b.host, b.port))
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (topic, index) in write.partitions {
        match topics.iter_mut().find(|t| t.name.as_str() == topic) {
            Some(t) => t.partitions.push(*index),
            None => topics.push(
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![*index]),
            ),
        }
    }
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                write.transactional_id.to_string(),
            )))
            .with_producer_id(ProducerId(write.producer_id))
            .with_producer_epoch(write.producer_epoch)
            .with_verify_only(what == TxnCheck::Verify)
            .with_topics(topics),
    ]);
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
    let response: AddPartitionsToTxnResponse = runtime
        .block_on(async {
            tokio::time::timeout(REQUEST_TIMEOUT, async {
                let mut conn =
                    BrokerConnection::connect(&address, "strata-partition-leader").await?;
                conn.send(ApiKey::AddPartitionsToTxn, BROKER_REQUEST_VERSION, &request)
                    .await
            })
            .await
        })
        .map_err(|_| ResponseError::RequestTimedOut)?
        .map_err(|e| {
            tracing::warn!(coordinator = leader, error = %e, "cannot ask the transaction coordinator");
            ResponseError::CoordinatorNotAvailable
        })?;
    if response.error_code != 0 {
        return Ok(vec![response.error_code; write.partitions.len()]);
    }
    let results = response
        .results_by_transaction
        .iter()
        .find(|r| r.transactional_id.as_str() == write.transactional_id);
    Ok(write
        .partitions
        .iter()
        .map(|(topic, index)| {
            results
                .and_then(|r| r.topic_results.iter().find(|t| t.name.as_str() == topic))
                .and_then(|t| {
                    t.results_by_partition
                        .iter()
                        .find(|p| p.partition_index == *index)
                })
                .map_or(ResponseError::CoordinatorNotAvailable.code(), |p| {
                    p.partition_error_code
                })
        })
        .collect())
}

/// One transactional batch of a Produce request, as the leader checks it before appending.
pub struct ProducedBatch {
    pub topic: String,
    pub partition: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// The verdict on one partition's transactional batch, checked again under the log's lock
/// at append time (Kafka's `VerificationGuard`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteGuard {
    /// The producer's transaction was already open in the log: the write may go on as long
    /// as it still is.
    Ongoing {
        producer_id: i64,
        producer_epoch: i16,
    },
    /// The coordinator confirmed (or made) the partition part of the transaction while the
    /// log had appended this many markers: no marker may have come in since.
    Verified { markers_appended: u64 },
    /// Refused: the Produce error code, and the partition's error message where Kafka
    /// words one (see [`refusal_message`]).
    Refused(i16, Option<String>),
}

impl WriteGuard {
    /// Checks the verdict against the log about to be appended to (its lock held).
    /// Refused writes carry the partition's error message where Kafka sets one.
    pub fn admit(&self, log: &strata_log::Log) -> Result<(), (i16, Option<String>)> {
        // The transaction ended while the write was checked: the client retries. (Kafka's
        // log refuses such a write with INVALID_TXN_STATE, without a message.)
        let overtaken = || Err((ResponseError::NotEnoughReplicas.code(), None));
        match self {
            WriteGuard::Ongoing {
                producer_id,
                producer_epoch,
            } => {
                if log.has_ongoing_transaction(*producer_id, *producer_epoch) {
                    Ok(())
                } else {
                    overtaken()
                }
            }
            WriteGuard::Verified { markers_appended } => {
                if log.txn_markers_appended() == *markers_appended {
                    Ok(())
                } else {
                    overtaken()
                }
            }
            WriteGuard::Refused(code, message) => Err((*code, message.clone())),
        }
    }
}

/// Checks the transactional batches of one Produce request before they are appended
/// (KIP-890): a partition whose log has the producer's transaction open needs nothing more;
/// the others are checked with the coordinator in one call per producer, verified for a
/// protocol v1 client (Produce up to v11, which adds its partitions itself) or added for a
/// v2 client (Produce v12). Returns a guard per batch, in order. Blocking; holds no log lock
/// while it asks the coordinator (lock order: coordinator, then log).
pub fn guard_produce(
    broker: &Broker,
    transactional_id: &str,
    produce_version: i16,
    batches: &[ProducedBatch],
) -> Vec<WriteGuard> {
    let what = if produce_version >= 12 {
        TxnCheck::Add
    } else {
        TxnCheck::Verify
    };
    let mut guards: Vec<Option<WriteGuard>> = batches
        .iter()
        .map(|b| {
            let partition = crate::handlers::hosted(broker, &b.topic, b.partition).ok()?;
            let log = partition.log();
            Some(
                if log.has_ongoing_transaction(b.producer_id, b.producer_epoch) {
                    WriteGuard::Ongoing {
                        producer_id: b.producer_id,
                        producer_epoch: b.producer_epoch,
                    }
                } else {
                    WriteGuard::Verified {
                        markers_appended: log.txn_markers_appended(),
                    }
                },
            )
        })
        .collect();
    let mut producers: Vec<(i64, i16)> = batches
        .iter()
        .zip(&guards)
        .filter(|(_, g)| matches!(g, Some(WriteGuard::Verified { .. })))
        .map(|(b, _)| (b.producer_id, b.producer_epoch))
        .collect();
    producers.sort_unstable();
    producers.dedup();
    for (producer_id, producer_epoch) in producers {
        let indexes: Vec<usize> = (0..batches.len())
            .filter(|&i| {
                matches!(guards[i], Some(WriteGuard::Verified { .. }))
                    && (batches[i].producer_id, batches[i].producer_epoch)
                        == (producer_id, producer_epoch)
            })
            .collect();
        let partitions: Vec<(String, i32)> = indexes
            .iter()
            .map(|&i| (batches[i].topic.clone(), batches[i].partition))
            .collect();
        let write = TxnWrite {
            transactional_id,
            producer_id,
            producer_epoch,
            partitions: &partitions,
        };
        for (&i, code) in indexes.iter().zip(check(broker, &write, what)) {
            if code != 0 {
                guards[i] = Some(WriteGuard::Refused(
                    produce_error(code),
                    refusal_message(code),
                ));
            }
        }
    }
    // A partition that is not hosted here fails on its own in the append that follows.
    guards
        .into_iter()
        .map(|g| {
            g.unwrap_or(WriteGuard::Verified {
                markers_appended: u64::MAX,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_kafkas_messages_only_where_kafka_sets_them() {
        assert_eq!(
            refusal_message(ResponseError::InvalidTxnState.code()).as_deref(),
            Some("Partition was not added to the transaction")
        );
        for (error, name) in [
            (
                ResponseError::CoordinatorNotAvailable,
                "COORDINATOR_NOT_AVAILABLE",
            ),
            (
                ResponseError::CoordinatorLoadInProgress,
                "COORDINATOR_LOAD_IN_PROGRESS",
            ),
            (ResponseError::NotCoordinator, "NOT_COORDINATOR"),
            (
                ResponseError::ConcurrentTransactions,
                "CONCURRENT_TRANSACTIONS",
            ),
        ] {
            assert_eq!(
                produce_error(error.code()),
                ResponseError::NotEnoughReplicas.code()
            );
            assert_eq!(
                refusal_message(error.code()),
                Some(format!(
                    "Unable to verify the partition has been added to the transaction. \
                     Underlying error: {name}"
                ))
            );
        }
        // Errors answered as they are carry no message (Kafka's `hasCustomErrorMessage`).
        for error in [
            ResponseError::ProducerFenced,
            ResponseError::InvalidProducerEpoch,
            ResponseError::TransactionalIdAuthorizationFailed,
        ] {
            assert_eq!(refusal_message(error.code()), None, "{error}");
        }
    }
}
