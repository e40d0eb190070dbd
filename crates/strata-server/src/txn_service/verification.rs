//! What a partition leader (or group coordinator) asks the transaction coordinator about a
//! transactional write (Kafka's `AddPartitionsToTxnManager`, KIP-890): whether the
//! partitions are part of the producer's ongoing transaction (part 1, `verify_only`: a
//! transactional write to a partition its transaction never added is refused, so no hanging
//! transaction can hold the last stable offset back), or, for a client of transaction
//! protocol v2, to add them (part 2: such clients leave AddPartitionsToTxn to the leaders).
//!
//! The coordinator is the leader of the transactional id's `__transaction_state` partition:
//! this broker's own [`crate::txn_service::TxnService`] when it leads it, otherwise another
//! broker asked with AddPartitionsToTxn v5 in its batched (broker-to-broker) form, over the
//! broker's pooled connections ([`crate::broker_client::BrokerPool`]). Cost per call: one
//! coordinator round trip (local: a lock and, for an add, one state record appended and
//! replicated), for the first write of a transaction to a partition only; the callers skip
//! partitions whose log already has the producer's transaction open.
//!
//! The answers reach the client as Kafka 4.1 gives them, by the version of the client's
//! request ([`TxnOperation`]): fencing is INVALID_PRODUCER_EPOCH; a partition the transaction
//! does not hold is TRANSACTION_ABORTABLE (KIP-890/KIP-1050), INVALID_TXN_STATE for clients
//! that predate it; a coordinator that is busy, moving or unreachable is retried by the client
//! through an error it retries.

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
use strata_log::VerificationGuard;

use super::TxnService;
use crate::replica_manager::now_ms;

/// The AddPartitionsToTxn version a broker sends (the batched form, with
/// TRANSACTION_ABORTABLE known).
const BROKER_REQUEST_VERSION: i16 = 5;
/// Longest wait for a remote coordinator's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// CONCURRENT_TRANSACTIONS (the producer's previous transaction is still writing its
/// markers) is retried this many times, this long apart (Kafka's
/// `add.partitions.to.txn.retry.backoff.ms` is 20 ms, up to 100 ms in all), each time with a
/// new check.
const CONCURRENT_RETRIES: u32 = 5;
const CONCURRENT_BACKOFF: Duration = Duration::from_millis(20);

/// What the client's request version lets the leader ask and answer (Kafka's
/// `AddPartitionsToTxnManager.TransactionSupportedOperation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOperation {
    /// Verify only, for a client that does not know TRANSACTION_ABORTABLE (Produce up to v10,
    /// TxnOffsetCommit up to v3): it gets INVALID_TXN_STATE instead.
    DefaultError,
    /// Verify only (Produce v11, TxnOffsetCommit v4).
    GenericErrorSupported,
    /// Add the partition to the transaction (protocol v2: Produce v12+, TxnOffsetCommit v5+).
    AddPartition,
}

impl TxnOperation {
    /// Kafka's `produceRequestVersionToTransactionSupportedOperation`.
    pub fn for_produce(version: i16) -> Self {
        match version {
            v if v > 11 => TxnOperation::AddPartition,
            11 => TxnOperation::GenericErrorSupported,
            _ => TxnOperation::DefaultError,
        }
    }

    /// Kafka's `txnOffsetCommitRequestVersionToTransactionSupportedOperation`.
    pub fn for_txn_offset_commit(version: i16) -> Self {
        match version {
            v if v > 4 => TxnOperation::AddPartition,
            4 => TxnOperation::GenericErrorSupported,
            _ => TxnOperation::DefaultError,
        }
    }

    /// Protocol v2: the transaction's end bumps the epoch.
    pub fn supports_epoch_bump(self) -> bool {
        self == TxnOperation::AddPartition
    }

    /// Whether the coordinator is asked at all: an add always is (it is what puts the
    /// partition in the transaction); a verification only while
    /// `transaction.partition.verification.enable` holds (Kafka's
    /// `ReplicaManager.maybeStartTransactionVerificationForPartition`).
    pub fn asks_coordinator(self, verification_enabled: bool) -> bool {
        self.supports_epoch_bump() || verification_enabled
    }
}

/// One transactional write to check: who wrote it and where.
pub struct TxnWrite<'a> {
    pub transactional_id: &'a str,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub partitions: &'a [(String, i32)],
}

/// The coordinator's error code for each partition of `write` (0: it is in the transaction),
/// as a partition leader sees it (Kafka's `AddPartitionsToTxnManager`: PRODUCER_FENCED is
/// INVALID_PRODUCER_EPOCH, TRANSACTION_ABORTABLE is INVALID_TXN_STATE for clients that
/// predate it); NETWORK_EXCEPTION when another broker could not be asked. Blocking: call
/// from a blocking thread (it waits on the coordinator's lock, or on another broker).
fn check(txns: &TxnService, write: &TxnWrite<'_>, op: TxnOperation) -> Vec<i16> {
    let codes = match ask(txns, write, op) {
        Ok(codes) => codes,
        Err(e) => vec![e.code(); write.partitions.len()],
    };
    codes
        .into_iter()
        .map(|code| {
            use ResponseError::*;
            if code == ProducerFenced.code() {
                InvalidProducerEpoch.code()
            } else if code == TransactionAbortable.code() && op == TxnOperation::DefaultError {
                InvalidTxnState.code()
            } else {
                code
            }
        })
        .collect()
}

/// Kafka's name of an error, as its messages spell it.
fn error_name(code: i16) -> String {
    use ResponseError::*;
    match ResponseError::try_from_code(code) {
        Some(NetworkException) => "NETWORK_EXCEPTION".into(),
        Some(CoordinatorLoadInProgress) => "COORDINATOR_LOAD_IN_PROGRESS".into(),
        Some(CoordinatorNotAvailable) => "COORDINATOR_NOT_AVAILABLE".into(),
        Some(NotCoordinator) => "NOT_COORDINATOR".into(),
        Some(ConcurrentTransactions) => "CONCURRENT_TRANSACTIONS".into(),
        Some(e) => format!("{e:?}"),
        None => format!("error {code}"),
    }
}

/// How a Produce answers the coordinator's refusal (Kafka's `ReplicaManager`), with Kafka's
/// message where it gives one (empty where it gives none): a partition not in the transaction
/// is INVALID_TXN_STATE; a coordinator that is
/// busy, moving or unreachable is NOT_ENOUGH_REPLICAS, which every client retries without a
/// metadata refresh, but for a protocol v2 client CONCURRENT_TRANSACTIONS, which it knows.
pub fn produce_error(code: i16, op: TxnOperation) -> (i16, String) {
    use ResponseError::*;
    let unverified = || {
        (
            NotEnoughReplicas.code(),
            format!(
                "Unable to verify the partition has been added to the transaction. Underlying error: {}",
                error_name(code)
            ),
        )
    };
    match ResponseError::try_from_code(code) {
        Some(InvalidTxnState) => (code, "Partition was not added to the transaction".into()),
        Some(
            NetworkException | CoordinatorLoadInProgress | CoordinatorNotAvailable | NotCoordinator,
        ) => unverified(),
        Some(ConcurrentTransactions) if !op.supports_epoch_bump() => unverified(),
        Some(TransactionAbortable) => (
            code,
            "The partition is not part of the producer's ongoing transaction; abort it".into(),
        ),
        // Kafka's answer carries no message for the rest.
        _ => (code, String::new()),
    }
}

/// How a TxnOffsetCommit answers the coordinator's refusal (Kafka's
/// `GroupCoordinatorService.handleOperationException`).
pub fn txn_offset_commit_error(code: i16, _op: TxnOperation) -> (i16, String) {
    use ResponseError::*;
    let mapped = match ResponseError::try_from_code(code) {
        // Retried without a coordinator lookup by clients that do not retry the network error.
        Some(NetworkException) => CoordinatorLoadInProgress.code(),
        Some(NotEnoughReplicas | RequestTimedOut | UnknownTopicOrPartition) => {
            CoordinatorNotAvailable.code()
        }
        Some(NotLeaderOrFollower | KafkaStorageError) => NotCoordinator.code(),
        _ => code,
    };
    (mapped, error_name(code))
}

fn ask(
    txns: &TxnService,
    write: &TxnWrite<'_>,
    op: TxnOperation,
) -> Result<Vec<i16>, ResponseError> {
    let partition = txns.partition_of(write.transactional_id);
    let image = txns.meta.image();
    let leader = image
        .topic(TRANSACTION_STATE_TOPIC)
        .and_then(|t| t.partitions.get(partition as usize))
        .map(|p| p.leader)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    if leader == txns.config.node_id {
        ask_local(txns, write, op)
    } else if leader >= 0 {
        ask_remote(txns, leader, write, op)
    } else {
        Err(ResponseError::CoordinatorNotAvailable)
    }
}

fn ask_local(
    txns: &TxnService,
    write: &TxnWrite<'_>,
    op: TxnOperation,
) -> Result<Vec<i16>, ResponseError> {
    if !txns.coordinates(write.transactional_id) {
        return Err(ResponseError::NotCoordinator);
    }
    let n = write.partitions.len();
    let answer = txns.run(|c| {
        if op.supports_epoch_bump() {
            c.add_partitions(
                write.transactional_id,
                write.producer_id,
                write.producer_epoch,
                write.partitions,
                TV2,
                now_ms(),
            )
            .map(|()| vec![0; n])
        } else {
            c.verify_partitions(
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
                            ResponseError::TransactionAbortable.code()
                        }
                    })
                    .collect()
            })
        }
    })?;
    Ok(answer.unwrap_or_else(|e| vec![e.code(); n]))
}

fn ask_remote(
    txns: &TxnService,
    leader: i32,
    write: &TxnWrite<'_>,
    op: TxnOperation,
) -> Result<Vec<i16>, ResponseError> {
    let image = txns.meta.image();
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
            .with_verify_only(!op.supports_epoch_bump())
            .with_topics(topics),
    ]);
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
    // Kafka's manager answers a disconnection or a timeout with NETWORK_EXCEPTION.
    let response: AddPartitionsToTxnResponse = runtime
        .block_on(tokio::time::timeout(
            REQUEST_TIMEOUT,
            txns.peers.send(
                &txns.metrics,
                &address,
                ApiKey::AddPartitionsToTxn,
                BROKER_REQUEST_VERSION,
                &request,
            ),
        ))
        .map_err(|_| ResponseError::NetworkException)?
        .map_err(|e| {
            tracing::warn!(coordinator = leader, error = %e, "cannot ask the transaction coordinator");
            ResponseError::NetworkException
        })?;
    if response.error_code != 0 {
        // The client must not see the brokers' authorization: the write was not verified.
        let code = if response.error_code == ResponseError::ClusterAuthorizationFailed.code() {
            ResponseError::InvalidTxnState.code()
        } else {
            response.error_code
        };
        return Ok(vec![code; write.partitions.len()]);
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
                .map_or(ResponseError::NetworkException.code(), |p| {
                    p.partition_error_code
                })
        })
        .collect())
}

/// One transactional batch of a request, as the leader checks it before appending.
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
    /// The coordinator confirmed (or made) the partition part of the transaction; the check
    /// `guard` must still stand (no marker of this producer ended the transaction since).
    Verified {
        producer_id: i64,
        producer_epoch: i16,
        guard: VerificationGuard,
    },
    /// Not hosted here: the append that follows fails on its own.
    NotHosted,
    /// Refused: the error code and message to answer.
    Refused(i16, String),
}

impl WriteGuard {
    /// Checks the verdict against the log about to be appended to (its lock held). A write
    /// whose transaction ended meanwhile is INVALID_TXN_STATE, as Kafka's
    /// `UnifiedLog.batchMissingRequiredVerification` answers, or INVALID_PRODUCER_EPOCH when
    /// the marker that ended it also fenced its epoch (Kafka checks the epoch first). Refused
    /// here rather than by the append, so that a caller that changes state before appending
    /// (the group coordinator's TxnOffsetCommit) does not.
    pub fn admit(&self, log: &strata_log::Log) -> Result<(), (i16, String)> {
        let ended = |producer_id: i64, producer_epoch: i16| {
            match log.producer_epoch(producer_id)
        {
            Some(current) if current > producer_epoch => Err((
                ResponseError::InvalidProducerEpoch.code(),
                format!(
                    "Epoch of producer {producer_id} is {producer_epoch}, which is smaller than the last seen epoch {current}"
                ),
            )),
            _ => Err((
                ResponseError::InvalidTxnState.code(),
                "Record was not part of an ongoing transaction".to_string(),
            )),
        }
        };
        match self {
            WriteGuard::Ongoing {
                producer_id,
                producer_epoch,
            } => {
                if log.has_ongoing_transaction(*producer_id, *producer_epoch) {
                    Ok(())
                } else {
                    ended(*producer_id, *producer_epoch)
                }
            }
            WriteGuard::Verified {
                producer_id,
                producer_epoch,
                guard,
            } => {
                if log.txn_verification_valid(*producer_id, *guard, now_ms()) {
                    Ok(())
                } else {
                    ended(*producer_id, *producer_epoch)
                }
            }
            WriteGuard::NotHosted => Ok(()),
            WriteGuard::Refused(code, message) => Err((*code, message.clone())),
        }
    }
}

/// Checks the transactional batches of one request before they are appended (KIP-890): a
/// partition whose log has the producer's transaction open needs nothing more; the others
/// start a check in their log (its guard) and are checked with the coordinator in one call per
/// producer, verified or added as `op` says. CONCURRENT_TRANSACTIONS is retried a few times,
/// each with a new check. `refuse` turns the coordinator's error into the request's answer.
/// Returns a guard per batch, in order. Blocking; holds no log lock while it asks the
/// coordinator (lock order: coordinator, then log).
pub fn guard_writes(
    txns: &TxnService,
    transactional_id: &str,
    op: TxnOperation,
    batches: &[ProducedBatch],
    refuse: fn(i16, TxnOperation) -> (i16, String),
) -> Vec<WriteGuard> {
    let mut guards: Vec<Option<WriteGuard>> = Vec::with_capacity(batches.len());
    let mut hosted = Vec::with_capacity(batches.len());
    for b in batches {
        let partition = txns
            .replicas
            .leader_or_error(&txns.meta.image(), &b.topic, b.partition)
            .ok();
        let ongoing = partition.as_ref().map(|p| {
            p.log()
                .has_ongoing_transaction(b.producer_id, b.producer_epoch)
        });
        guards.push(match ongoing {
            None => Some(WriteGuard::NotHosted),
            Some(true) => Some(WriteGuard::Ongoing {
                producer_id: b.producer_id,
                producer_epoch: b.producer_epoch,
            }),
            Some(false) => None,
        });
        hosted.push(partition);
    }
    for attempt in 1..=CONCURRENT_RETRIES + 1 {
        let pending: Vec<usize> = (0..batches.len())
            .filter(|&i| guards[i].is_none())
            .collect();
        if pending.is_empty() {
            break;
        }
        if attempt > 1 {
            std::thread::sleep(CONCURRENT_BACKOFF);
        }
        let now = now_ms();
        let started: Vec<(usize, VerificationGuard)> = pending
            .iter()
            .filter_map(|&i| {
                let b = &batches[i];
                let partition = hosted[i].as_ref()?;
                let guard = partition.log().start_txn_verification(
                    b.producer_id,
                    b.producer_epoch,
                    op.supports_epoch_bump(),
                    now,
                );
                Some((i, guard))
            })
            .collect();
        let mut producers: Vec<(i64, i16)> = started
            .iter()
            .map(|&(i, _)| (batches[i].producer_id, batches[i].producer_epoch))
            .collect();
        producers.sort_unstable();
        producers.dedup();
        for (producer_id, producer_epoch) in producers {
            let of_producer: Vec<(usize, VerificationGuard)> = started
                .iter()
                .copied()
                .filter(|&(i, _)| {
                    (batches[i].producer_id, batches[i].producer_epoch)
                        == (producer_id, producer_epoch)
                })
                .collect();
            let partitions: Vec<(String, i32)> = of_producer
                .iter()
                .map(|&(i, _)| (batches[i].topic.clone(), batches[i].partition))
                .collect();
            let write = TxnWrite {
                transactional_id,
                producer_id,
                producer_epoch,
                partitions: &partitions,
            };
            for (&(i, guard), code) in of_producer.iter().zip(check(txns, &write, op)) {
                let concurrent = code == ResponseError::ConcurrentTransactions.code();
                guards[i] = if code == 0 {
                    Some(WriteGuard::Verified {
                        producer_id,
                        producer_epoch,
                        guard,
                    })
                } else if concurrent && attempt <= CONCURRENT_RETRIES {
                    None // asked again after the backoff, with a new check
                } else {
                    let (code, message) = refuse(code, op);
                    Some(WriteGuard::Refused(code, message))
                };
            }
        }
    }
    guards
        .into_iter()
        .map(|g| g.unwrap_or(WriteGuard::NotHosted))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_write_is_admitted_unless_its_own_transaction_ended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = now_ms();
        let mut log =
            strata_log::Log::open(dir.path(), strata_log::LogConfig::default(), false, now)
                .expect("log");
        let verified =
            |log: &mut strata_log::Log, producer_id, producer_epoch, v2| WriteGuard::Verified {
                producer_id,
                producer_epoch,
                guard: log.start_txn_verification(producer_id, producer_epoch, v2, now),
            };
        let one = verified(&mut log, 1, 0, false);
        let three = verified(&mut log, 3, 0, true);
        log.append_txn_marker(2, 0, true, 0, 0, now)
            .expect("marker");
        assert_eq!(one.admit(&log), Ok(()), "another producer's marker");
        assert_eq!(three.admit(&log), Ok(()));
        log.append_txn_marker(1, 0, false, 0, 0, now)
            .expect("marker");
        assert_eq!(
            one.admit(&log).map_err(|e| e.0),
            Err(ResponseError::InvalidTxnState.code()),
            "its own transaction ended"
        );
        // A fencing marker (a timeout at protocol v2): the write's epoch is stale.
        log.append_txn_marker(3, 1, false, 0, 0, now)
            .expect("marker");
        assert_eq!(
            three.admit(&log).map_err(|e| e.0),
            Err(ResponseError::InvalidProducerEpoch.code())
        );
        assert_eq!(WriteGuard::NotHosted.admit(&log), Ok(()));
    }

    #[test]
    fn the_request_version_decides_what_is_asked_and_answered() {
        use ResponseError::*;
        use TxnOperation::*;
        assert_eq!(TxnOperation::for_produce(10), DefaultError);
        assert_eq!(TxnOperation::for_produce(11), GenericErrorSupported);
        assert_eq!(TxnOperation::for_produce(12), AddPartition);
        assert_eq!(TxnOperation::for_txn_offset_commit(3), DefaultError);
        assert_eq!(
            TxnOperation::for_txn_offset_commit(4),
            GenericErrorSupported
        );
        assert_eq!(TxnOperation::for_txn_offset_commit(5), AddPartition);
        assert!(AddPartition.asks_coordinator(false));
        assert!(!DefaultError.asks_coordinator(false) && DefaultError.asks_coordinator(true));
        let produce = |code: ResponseError, op| produce_error(code.code(), op).0;
        assert_eq!(
            produce(InvalidTxnState, DefaultError),
            InvalidTxnState.code()
        );
        assert_eq!(
            produce(TransactionAbortable, GenericErrorSupported),
            TransactionAbortable.code()
        );
        for busy in [
            NetworkException,
            CoordinatorLoadInProgress,
            CoordinatorNotAvailable,
            NotCoordinator,
        ] {
            assert_eq!(produce(busy, AddPartition), NotEnoughReplicas.code());
        }
        assert_eq!(
            produce(ConcurrentTransactions, GenericErrorSupported),
            NotEnoughReplicas.code()
        );
        assert_eq!(
            produce(ConcurrentTransactions, AddPartition),
            ConcurrentTransactions.code()
        );
        assert_eq!(
            produce(InvalidProducerEpoch, AddPartition),
            InvalidProducerEpoch.code()
        );
        let offsets = |code: ResponseError| txn_offset_commit_error(code.code(), AddPartition).0;
        assert_eq!(offsets(NetworkException), CoordinatorLoadInProgress.code());
        assert_eq!(offsets(NotEnoughReplicas), CoordinatorNotAvailable.code());
        assert_eq!(offsets(InvalidProducerEpoch), InvalidProducerEpoch.code());
        assert_eq!(
            offsets(ConcurrentTransactions),
            ConcurrentTransactions.code()
        );
    }
}
