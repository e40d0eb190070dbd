//! The transaction coordinator (Kafka's `TransactionCoordinator` / `TransactionStateManager`)
//! as a sans-IO state machine, for transaction protocol versions 1 and 2.
//!
//! A transactional id maps to a producer id and epoch. `InitProducerId` bumps the epoch,
//! which fences any older incarnation of the producer, and aborts a transaction the old
//! incarnation left open. `AddPartitionsToTxn` (and `AddOffsetsToTxn`, through the group's
//! offsets partition) registers the partitions a transaction writes; `EndTxn` moves the
//! transaction to PrepareCommit/PrepareAbort, after which the caller writes a transaction
//! marker to every registered partition ([`MarkerWork`]) and reports completion with
//! [`TransactionCoordinator::complete_markers`]. Transactions older than their timeout are
//! aborted by [`TransactionCoordinator::tick`].
//!
//! Transactions v2 (KIP-890 part 2) are chosen per request by the client's version of the
//! protocol ([`TV2`]: EndTxn v5, AddOffsetsToTxn v4, the implicit adds of Produce v12 and
//! TxnOffsetCommit v5). With it the coordinator bumps the producer epoch on every transaction
//! end, so the markers carry the new epoch and fence any late write of the ended transaction;
//! the client learns the new epoch (or, once the epoch is exhausted, a new producer id) from
//! the EndTxn answer, and a retried EndTxn is recognised by the epoch it replaced. A client of
//! protocol v2 may also abort a transaction the coordinator never saw start.
//!
//! Every state change produces a [`TxnRecord`] for `__transaction_state`, in Kafka's format
//! (`TransactionLogValue` v0, or v1 with the producer ids and client version of v2); the
//! caller persists it before answering. Replaying the records rebuilds the state, and a
//! transaction found in a Prepare state is completed again (markers are idempotent).

use std::collections::{BTreeSet, HashMap};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::record_codec::{put_string, DecodeError, Reader};
use kafka_protocol::error::ResponseError;

/// Name of the internal topic holding transaction state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Transaction states, with Kafka's on-disk codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    Dead = 6,
    PrepareEpochFence = 7,
}

impl TxnState {
    fn from_code(code: i8) -> Option<Self> {
        Some(match code {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name ListTransactions and DescribeTransactions report.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }
}

/// Settings (Kafka's `transaction.*` broker properties).
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms` (default 900000).
    pub max_timeout_ms: i32,
}

impl Default for TxnConfig {
    fn default() -> Self {
        Self {
            max_timeout_ms: 900_000,
        }
    }
}

/// The client's transaction protocol version from which the coordinator bumps the epoch on
/// every transaction end (Kafka's `TransactionVersion.TV_2`).
pub const TV2: i16 = 2;

/// One transactional id's state (Kafka's `TransactionMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// The transaction protocol version of the client's last request that changed the state
    /// (0 for protocol v1 clients, [`TV2`] for v2).
    pub client_transaction_version: i16,
    /// The producer id before the last move to a new one (-1 if none): a retried EndTxn of
    /// the transaction that exhausted the old id's epochs names it.
    pub previous_producer_id: i64,
    /// The producer id the client moves to once the ending transaction is complete (-1 if
    /// none): allocated when a v2 transaction end exhausts the epochs of the current one.
    pub next_producer_id: i64,
    /// The epoch a client's v2 EndTxn replaced (-1 when the last bump was not the client's):
    /// an EndTxn retried with it is answered as the one that bumped. Not persisted, as in
    /// Kafka: after a coordinator failover a retry is fenced.
    pub last_producer_epoch: i16,
}

impl TransactionMetadata {
    /// The producer id and epoch the client continues with: after a v2 end that exhausted
    /// the epochs, the next producer id at epoch 0.
    pub fn client_producer(&self) -> (i64, i16) {
        if self.next_producer_id >= 0 {
            (self.next_producer_id, 0)
        } else {
            (self.producer_id, self.producer_epoch)
        }
    }
}

/// Markers the caller must write, then confirm with `complete_markers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerWork {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub partitions: Vec<(String, i32)>,
}

impl MarkerWork {
    /// The markers that end `txn` (commit or abort) on each of its partitions.
    fn of(txn: &TransactionMetadata, commit: bool) -> Self {
        Self {
            transactional_id: txn.transactional_id.clone(),
            producer_id: txn.producer_id,
            producer_epoch: txn.producer_epoch,
            commit,
            partitions: txn.partitions.iter().cloned().collect(),
        }
    }
}

/// A `__transaction_state` record: the full state of one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord(pub TransactionMetadata);

/// The result of InitProducerId.
pub type InitResult = Result<(i64, i16), ResponseError>;

/// The highest epoch handed out before a transactional id moves to a new producer id.
const MAX_EPOCH: i16 = i16::MAX - 1;

#[derive(Debug, Default)]
pub struct TransactionCoordinator {
    config: TxnConfig,
    txns: HashMap<String, TransactionMetadata>,
    records: Vec<TxnRecord>,
    markers: Vec<MarkerWork>,
}

impl TransactionCoordinator {
    pub fn new(config: TxnConfig) -> Self {
        Self {
            config,
            ..Default::default()
        }
    }

    /// Records to persist and markers to write since the last call.
    pub fn take_output(&mut self) -> (Vec<TxnRecord>, Vec<MarkerWork>) {
        (
            std::mem::take(&mut self.records),
            std::mem::take(&mut self.markers),
        )
    }

    pub fn describe(&self, transactional_id: &str) -> Option<&TransactionMetadata> {
        self.txns.get(transactional_id)
    }

    pub fn list(&self) -> impl Iterator<Item = &TransactionMetadata> {
        self.txns.values()
    }

    fn persist(&mut self, transactional_id: &str, now_ms: i64) {
        let txn = self
            .txns
            .get_mut(transactional_id)
            .expect("persisting a known transaction");
        txn.last_update_ms = now_ms;
        self.records.push(TxnRecord(txn.clone()));
    }

    /// Starts writing markers to end the transaction: PrepareCommit/PrepareAbort.
    fn prepare_end(&mut self, transactional_id: &str, commit: bool, now_ms: i64) {
        let txn = self
            .txns
            .get_mut(transactional_id)
            .expect("known transaction");
        assert!(
            txn.producer_epoch >= 0,
            "markers of {transactional_id} need a valid epoch"
        );
        txn.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        self.markers.push(MarkerWork::of(txn, commit));
        self.persist(transactional_id, now_ms);
    }

    /// InitProducerId for a transactional id (Kafka's `handleInitProducerId`). `expected` is
    /// the producer id and epoch a KIP-360 client (v3+) believes it has; `transaction_version`
    /// is the cluster's finalized `transaction.version` (it decides how an ongoing transaction
    /// is aborted, see [`TransactionCoordinator::tick`]); `allocate` hands out a fresh producer
    /// id.
    ///
    /// As Kafka's `prepareIncrementProducerEpoch`: with no expected epoch, or the current one,
    /// the epoch is bumped (a new producer id once it is exhausted); with the epoch the last
    /// bump replaced (`last_producer_epoch`: the answer of a successful call was lost, or the
    /// coordinator's own abort bumped it) the current epoch is answered as it is; any other is
    /// PRODUCER_FENCED.
    #[allow(clippy::too_many_arguments)]
    pub fn init_producer_id(
        &mut self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        transaction_version: i16,
        now_ms: i64,
        mut allocate: impl FnMut() -> Result<i64, ResponseError>,
    ) -> InitResult {
        if transactional_id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let Some(txn) = self.txns.get_mut(transactional_id) else {
            let producer_id = allocate()?;
            self.txns.insert(
                transactional_id.to_string(),
                TransactionMetadata {
                    transactional_id: transactional_id.to_string(),
                    producer_id,
                    producer_epoch: 0,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    start_ms: -1,
                    last_update_ms: now_ms,
                    client_transaction_version: 0,
                    previous_producer_id: -1,
                    next_producer_id: -1,
                    last_producer_epoch: -1,
                },
            );
            self.persist(transactional_id, now_ms);
            return Ok((producer_id, 0));
        };
        // Markers being written: Kafka's pending transition, answered before anything else.
        if matches!(txn.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Err(ResponseError::ConcurrentTransactions);
        }
        if let Some((pid, epoch)) = expected {
            // The producer id decides here; the epoch below. A client that moved to a new
            // producer id may retry with the exhausted epoch of the previous one.
            let valid =
                pid == txn.producer_id || (pid == txn.previous_producer_id && epoch >= MAX_EPOCH);
            if !valid {
                return Err(ResponseError::ProducerFenced);
            }
        }
        match txn.state {
            TxnState::PrepareCommit
            | TxnState::PrepareAbort
            | TxnState::PrepareEpochFence
            | TxnState::Dead => Err(ResponseError::ConcurrentTransactions),
            TxnState::Ongoing => {
                // Fence the old incarnation and abort what it left open; the client retries and
                // gets another epoch bump once the abort is complete.
                self.fence_and_abort(transactional_id, transaction_version, now_ms);
                Err(ResponseError::ConcurrentTransactions)
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let exhausted = txn.producer_epoch >= MAX_EPOCH;
                if exhausted && expected.is_none_or(|(_, e)| e == txn.producer_epoch) {
                    txn.last_producer_epoch = if expected.is_some() {
                        txn.producer_epoch
                    } else {
                        -1
                    };
                    txn.previous_producer_id = txn.producer_id;
                    txn.producer_id = allocate()?;
                    txn.producer_epoch = 0;
                } else {
                    match expected {
                        None => {
                            txn.producer_epoch += 1;
                            txn.last_producer_epoch = -1;
                        }
                        Some((_, e)) if e == txn.producer_epoch && !exhausted => {
                            txn.last_producer_epoch = txn.producer_epoch;
                            txn.producer_epoch += 1;
                        }
                        // A retry of a call that succeeded (or the epoch the coordinator's own
                        // abort replaced): the current epoch, not bumped again.
                        Some((_, e)) if e == txn.last_producer_epoch => {}
                        Some(_) => return Err(ResponseError::ProducerFenced),
                    }
                }
                txn.next_producer_id = -1;
                txn.timeout_ms = timeout_ms;
                txn.state = TxnState::Empty;
                txn.partitions.clear();
                txn.start_ms = -1;
                let result = (txn.producer_id, txn.producer_epoch);
                self.persist(transactional_id, now_ms);
                Ok(result)
            }
        }
    }

    /// Aborts the ongoing transaction of `transactional_id` on the coordinator's own initiative
    /// (its timeout, or a new incarnation's InitProducerId), fencing its producer with one
    /// epoch bump: Kafka's `prepareFenceProducerEpoch` and `endTransaction(isFromClient =
    /// false)` at the cluster's `transaction_version`.
    ///
    /// With protocol v2 (`transaction_version` >= 2) the abort is a v2 transaction end: the
    /// epoch it replaced is remembered (`last_producer_epoch`), so that the fenced client's
    /// EndTxn(abort) v5 is answered as a retry of the abort, with the new epoch, and its
    /// InitProducerId with the old epoch gets the new one; the abort bumps only once (Kafka
    /// 4.1, KAFKA-19367). With v1 the client keeps nothing: every later call of its
    /// incarnation is fenced.
    fn fence_and_abort(&mut self, transactional_id: &str, transaction_version: i16, now_ms: i64) {
        let txn = self
            .txns
            .get_mut(transactional_id)
            .expect("aborting a known transaction");
        debug_assert_eq!(txn.state, TxnState::Ongoing);
        let v2 = transaction_version >= TV2;
        txn.last_producer_epoch = if v2 { txn.producer_epoch } else { -1 };
        if txn.producer_epoch < i16::MAX {
            txn.producer_epoch += 1;
        } else {
            // Kafka lets the abort through at the last epoch rather than overflow it.
            tracing::error!(%transactional_id, "aborting at the last producer epoch");
        }
        txn.client_transaction_version = if v2 { TV2 } else { 0 };
        txn.next_producer_id = -1;
        self.prepare_end(transactional_id, false, now_ms);
    }

    /// Checks that the caller is the current incarnation of the transactional id.
    fn validate(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<&TransactionMetadata, ResponseError> {
        let txn = self
            .txns
            .get(transactional_id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        if txn.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if txn.producer_epoch != producer_epoch {
            return Err(ResponseError::ProducerFenced);
        }
        Ok(txn)
    }

    /// AddPartitionsToTxn (also used for AddOffsetsToTxn with the group's offsets partition,
    /// and by partition leaders for the first write of a v2 client's transaction).
    /// `client_transaction_version` is the client's protocol version ([`TV2`] for v2).
    pub fn add_partitions(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
        client_transaction_version: i16,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        // Markers being written (Kafka's pending transition) come before the identity check
        // (KAFKA-18660): a protocol v2 client's next transaction waits for them with the new
        // epoch.
        if self
            .txns
            .get(transactional_id)
            .is_some_and(|t| matches!(t.state, TxnState::PrepareCommit | TxnState::PrepareAbort))
        {
            return Err(ResponseError::ConcurrentTransactions);
        }
        let txn = self.validate(transactional_id, producer_id, producer_epoch)?;
        match txn.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                return Err(ResponseError::ConcurrentTransactions)
            }
            TxnState::Dead => return Err(ResponseError::InvalidTxnState),
            _ => {}
        }
        if txn.state == TxnState::Ongoing && partitions.iter().all(|p| txn.partitions.contains(p)) {
            return Ok(());
        }
        let txn = self.txns.get_mut(transactional_id).expect("validated");
        if txn.state != TxnState::Ongoing {
            txn.state = TxnState::Ongoing;
            txn.start_ms = now_ms;
            txn.partitions.clear();
        }
        txn.client_transaction_version = client_transaction_version;
        txn.partitions.extend(partitions.iter().cloned());
        self.persist(transactional_id, now_ms);
        Ok(())
    }

    /// AddPartitionsToTxn with `verify_only` (KIP-890, Kafka's
    /// `handleVerifyPartitionsInTransaction`): for each partition, whether the ongoing
    /// transaction of this producer already contains it (Kafka answers TRANSACTION_ABORTABLE
    /// for one it does not). A transaction whose markers are being written answers
    /// CONCURRENT_TRANSACTIONS.
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Vec<bool>, ResponseError> {
        let txn = self.validate(transactional_id, producer_id, producer_epoch)?;
        if matches!(txn.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Err(ResponseError::ConcurrentTransactions);
        }
        Ok(partitions
            .iter()
            .map(|p| txn.state == TxnState::Ongoing && txn.partitions.contains(p))
            .collect())
    }

    /// EndTxn: commit or abort the ongoing transaction. Returns the producer id and epoch the
    /// client continues with (EndTxn v5 answers them). `client_transaction_version` [`TV2`]
    /// bumps the epoch (a new producer id once it is exhausted, from `allocate`), and lets
    /// the client abort a transaction that never started here.
    ///
    /// Protocol v1 (Kafka's `endTransactionWithTV1`): the epoch must be the current one; a
    /// repeated end of a completed transaction succeeds. Protocol v2 (Kafka's TV2
    /// `endTransaction`): an EndTxn whose epoch is one below the current one is a retry of the
    /// end that bumped it — or of the coordinator's own abort, for a client whose transaction
    /// timed out — and is answered with the current producer id and epoch:
    ///
    /// | state          | abort, retry | abort, current | commit, retry | commit, current |
    /// |----------------|--------------|----------------|---------------|-----------------|
    /// | Empty          | FENCED       | bump           | FENCED        | INVALID_TXN_STATE |
    /// | CompleteAbort  | ok           | bump           | INVALID_TXN_STATE | INVALID_TXN_STATE |
    /// | CompleteCommit | INVALID_TXN_STATE | bump      | ok            | INVALID_TXN_STATE |
    ///
    /// While markers are being written (PrepareCommit/PrepareAbort) the answer is
    /// CONCURRENT_TRANSACTIONS, the client retries.
    #[allow(clippy::too_many_arguments)]
    pub fn end_txn(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        client_transaction_version: i16,
        now_ms: i64,
        allocate: impl FnOnce() -> Result<i64, ResponseError>,
    ) -> Result<(i64, i16), ResponseError> {
        use TxnState::*;
        let tv2 = client_transaction_version >= TV2;
        let txn = self
            .txns
            .get(transactional_id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        let current = txn.client_producer();
        if !tv2 {
            self.validate(transactional_id, producer_id, producer_epoch)?;
            match (txn.state, commit) {
                (Ongoing, _) => {}
                (CompleteCommit, true) | (CompleteAbort, false) => return Ok(current),
                // Markers being written (Kafka's pending transition), whichever end is asked.
                (PrepareCommit | PrepareAbort | PrepareEpochFence, _) => {
                    return Err(ResponseError::ConcurrentTransactions)
                }
                _ => return Err(ResponseError::InvalidTxnState),
            }
        } else {
            // A retry of an end that moved to a new producer id (the old one's epochs ran out).
            let retry_on_overflow = txn.previous_producer_id == producer_id
                && producer_epoch == MAX_EPOCH
                && txn.producer_epoch == 0;
            // A retry of an end that bumped the epoch.
            let retry_on_bump = i32::from(txn.producer_epoch) == i32::from(producer_epoch) + 1;
            if txn.producer_id != producer_id && !retry_on_overflow {
                return Err(ResponseError::InvalidProducerIdMapping);
            }
            if matches!(txn.state, PrepareCommit | PrepareAbort) {
                // Kafka's pending transition, checked before the epoch (KAFKA-18464).
                return Err(ResponseError::ConcurrentTransactions);
            }
            let valid_epoch = match txn.state {
                Ongoing | Empty | Dead | PrepareEpochFence => producer_epoch == txn.producer_epoch,
                PrepareCommit | PrepareAbort => retry_on_bump,
                CompleteCommit | CompleteAbort => {
                    retry_on_bump || retry_on_overflow || producer_epoch == txn.producer_epoch
                }
            };
            if !valid_epoch {
                return Err(ResponseError::ProducerFenced);
            }
            let retry = retry_on_bump || retry_on_overflow;
            match (txn.state, commit) {
                (Ongoing, _) => {}
                (CompleteCommit, true) | (CompleteAbort, false) if retry => return Ok(current),
                // An abort needs no transaction the coordinator saw start; it bumps the epoch
                // all the same, fencing whatever the client may still have in flight.
                (Empty | CompleteCommit | CompleteAbort, false) if !retry => {}
                _ => return Err(ResponseError::InvalidTxnState),
            }
        }
        let txn = self.txns.get(transactional_id).expect("validated");
        let next_producer_id = if tv2 && txn.producer_epoch >= MAX_EPOCH {
            allocate()?
        } else {
            -1
        };
        let txn = self.txns.get_mut(transactional_id).expect("validated");
        if txn.state != Ongoing {
            txn.partitions.clear();
            txn.start_ms = now_ms;
        }
        txn.client_transaction_version = client_transaction_version;
        if tv2 {
            txn.last_producer_epoch = txn.producer_epoch;
            txn.producer_epoch += 1;
            txn.next_producer_id = next_producer_id;
        }
        self.prepare_end(transactional_id, commit, now_ms);
        Ok(self.txns[transactional_id].client_producer())
    }

    /// The markers of `work` are written: the transaction is complete.
    pub fn complete_markers(&mut self, work: &MarkerWork, now_ms: i64) {
        let Some(txn) = self.txns.get_mut(&work.transactional_id) else {
            return;
        };
        let expected = if work.commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        if txn.state != expected
            || txn.producer_id != work.producer_id
            || txn.producer_epoch != work.producer_epoch
        {
            return; // superseded; nothing to complete
        }
        txn.state = if work.commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        txn.partitions.clear();
        txn.start_ms = -1;
        if txn.next_producer_id >= 0 {
            // The ended transaction exhausted its producer id's epochs: move to the next one.
            txn.previous_producer_id = txn.producer_id;
            txn.producer_id = txn.next_producer_id;
            txn.producer_epoch = 0;
            txn.next_producer_id = -1;
        }
        self.persist(&work.transactional_id, now_ms);
    }

    /// Aborts transactions open longer than their timeout, fencing their producer with one
    /// epoch bump (Kafka's `abortTimedOutTransactions`, at the cluster's finalized
    /// `transaction_version`, not the client's; see `fence_and_abort`).
    pub fn tick(&mut self, now_ms: i64, transaction_version: i16) {
        let expired: Vec<String> = self
            .txns
            .values()
            .filter(|t| t.state == TxnState::Ongoing && now_ms - t.start_ms > t.timeout_ms as i64)
            .map(|t| t.transactional_id.clone())
            .collect();
        for id in expired {
            tracing::info!(transactional_id = %id, "transaction timed out; aborting");
            self.fence_and_abort(&id, transaction_version, now_ms);
        }
    }

    /// Forgets the transactions for which `belongs` holds, and their pending markers: another
    /// broker now coordinates them (it leads their `__transaction_state` partition). Returns
    /// how many were forgotten.
    pub fn unload(&mut self, belongs: impl Fn(&str) -> bool) -> usize {
        let before = self.txns.len();
        self.txns.retain(|id, _| !belongs(id));
        self.markers.retain(|m| !belongs(&m.transactional_id));
        self.records.retain(|r| !belongs(&r.0.transactional_id));
        before - self.txns.len()
    }

    /// Applies a record read back from `__transaction_state`; a transaction left in a Prepare
    /// state is queued for its markers again.
    pub fn load(&mut self, record: TxnRecord) {
        let txn = record.0;
        let id = txn.transactional_id.clone();
        let prepared = match txn.state {
            TxnState::PrepareCommit => Some(true),
            TxnState::PrepareAbort => Some(false),
            _ => None,
        };
        self.markers.retain(|m| m.transactional_id != id);
        if let Some(commit) = prepared {
            self.markers.push(MarkerWork::of(&txn, commit));
        }
        self.txns.insert(id, txn);
    }
}

/// The `TransactionLogValue` version that carries protocol v2's fields (flexible: tagged
/// previous and next producer ids and the client's protocol version). Kafka writes it once
/// `transaction.version` is at least 1.
pub const TXN_LOG_VALUE_FLEXIBLE: i16 = 1;

impl TxnRecord {
    /// Encodes as Kafka's `TransactionLogKey` v0 and `TransactionLogValue` of `version` (0,
    /// or [`TXN_LOG_VALUE_FLEXIBLE`], whose tagged fields are written only when not at their
    /// defaults, as Kafka's generated code does).
    pub fn encode(&self, version: i16) -> (Bytes, Bytes) {
        let t = &self.0;
        let flexible = version >= TXN_LOG_VALUE_FLEXIBLE;
        let mut key = BytesMut::new();
        key.put_i16(0);
        put_string(&mut key, &t.transactional_id);
        let mut value = BytesMut::new();
        value.put_i16(if flexible { TXN_LOG_VALUE_FLEXIBLE } else { 0 });
        value.put_i64(t.producer_id);
        value.put_i16(t.producer_epoch);
        value.put_i32(t.timeout_ms);
        value.put_i8(t.state as i8);
        let mut by_topic: Vec<(&String, Vec<i32>)> = Vec::new();
        for (topic, p) in &t.partitions {
            match by_topic.last_mut() {
                Some((name, ps)) if *name == topic => ps.push(*p),
                _ => by_topic.push((topic, vec![*p])),
            }
        }
        if flexible {
            put_uvarint(&mut value, by_topic.len() as u64 + 1);
            for (topic, ps) in by_topic {
                put_uvarint(&mut value, topic.len() as u64 + 1);
                value.put_slice(topic.as_bytes());
                put_uvarint(&mut value, ps.len() as u64 + 1);
                for p in ps {
                    value.put_i32(p);
                }
                put_uvarint(&mut value, 0); // the entry's tagged fields
            }
        } else {
            value.put_i32(by_topic.len() as i32);
            for (topic, ps) in by_topic {
                put_string(&mut value, topic);
                value.put_i32(ps.len() as i32);
                for p in ps {
                    value.put_i32(p);
                }
            }
        }
        value.put_i64(t.last_update_ms);
        value.put_i64(t.start_ms);
        if flexible {
            let mut tagged: Vec<(u64, Vec<u8>)> = Vec::new();
            if t.previous_producer_id != -1 {
                tagged.push((0, t.previous_producer_id.to_be_bytes().to_vec()));
            }
            if t.next_producer_id != -1 {
                tagged.push((1, t.next_producer_id.to_be_bytes().to_vec()));
            }
            if t.client_transaction_version != 0 {
                tagged.push((2, t.client_transaction_version.to_be_bytes().to_vec()));
            }
            put_uvarint(&mut value, tagged.len() as u64);
            for (tag, data) in tagged {
                put_uvarint(&mut value, tag);
                put_uvarint(&mut value, data.len() as u64);
                value.put_slice(&data);
            }
        }
        (key.freeze(), value.freeze())
    }

    /// Decodes a record of either value version; `None` for a tombstone or a key of another
    /// kind. Unknown tagged fields are skipped, as Kafka's readers do.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<Self>, DecodeError> {
        let mut k = Reader {
            buf: key,
            what: "transaction state key",
        };
        if key.len() < 2 || k.i16()? != 0 {
            return Ok(None);
        }
        let transactional_id = k.string()?;
        let Some(v) = value else {
            return Ok(None);
        };
        let mut r = Reader {
            buf: v,
            what: "transaction state",
        };
        let flexible = r.i16()? >= TXN_LOG_VALUE_FLEXIBLE;
        let producer_id = r.i64()?;
        let producer_epoch = r.i16()?;
        let timeout_ms = r.i32()?;
        let state = TxnState::from_code(r.i8()?).ok_or_else(|| r.short())?;
        let mut partitions = BTreeSet::new();
        if flexible {
            for _ in 0..r.compact_count()? {
                let topic = r.compact_string()?;
                for _ in 0..r.compact_count()? {
                    partitions.insert((topic.clone(), r.i32()?));
                }
                r.skip_tagged_fields(|_, _| Ok(()))?;
            }
        } else {
            for _ in 0..r.count()? {
                let topic = r.string()?;
                for _ in 0..r.count()? {
                    partitions.insert((topic.clone(), r.i32()?));
                }
            }
        }
        let last_update_ms = r.i64()?;
        let start_ms = r.i64()?;
        let mut txn = TransactionMetadata {
            transactional_id,
            producer_id,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            start_ms,
            last_update_ms,
            client_transaction_version: 0,
            previous_producer_id: -1,
            next_producer_id: -1,
            last_producer_epoch: -1,
        };
        if flexible {
            r.skip_tagged_fields(|tag, mut data| {
                match tag {
                    0 if data.len() == 8 => txn.previous_producer_id = data.get_i64(),
                    1 if data.len() == 8 => txn.next_producer_id = data.get_i64(),
                    2 if data.len() == 2 => txn.client_transaction_version = data.get_i16(),
                    0..=2 => return Err(format!("tagged field {tag} of {} bytes", data.len())),
                    _ => {}
                }
                Ok(())
            })?;
        }
        Ok(Some(TxnRecord(txn)))
    }
}

fn put_uvarint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(next: &mut i64) -> impl FnMut() -> Result<i64, ResponseError> + '_ {
        move || {
            *next += 1;
            Ok(*next)
        }
    }

    /// A coordinator where "tx" has just been initialised (60 s timeout, protocol v1):
    /// (coordinator, producer id, epoch).
    fn initialised(ids: &mut i64) -> (TransactionCoordinator, i64, i16) {
        let mut c = TransactionCoordinator::default();
        let (pid, epoch) = c
            .init_producer_id("tx", 60_000, None, 0, 0, alloc(ids))
            .unwrap();
        (c, pid, epoch)
    }

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    /// EndTxn from a client of transaction protocol v1 (no epoch bump, no new producer id).
    fn end_v1(
        c: &mut TransactionCoordinator,
        id: &str,
        pid: i64,
        epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        c.end_txn(id, pid, epoch, commit, 0, now_ms, || {
            panic!("protocol v1 never moves to a new producer id")
        })
        .map(|answer| assert_eq!(answer, (pid, epoch)))
    }

    #[test]
    fn commit_cycle_writes_markers_and_completes() {
        let mut ids = 0;
        let (mut c, pid, epoch) = initialised(&mut ids);
        assert_eq!((pid, epoch), (1, 0));
        c.add_partitions("tx", pid, epoch, &[tp("a", 0), tp("b", 1)], 0, 10)
            .unwrap();
        assert_eq!(c.describe("tx").unwrap().state, TxnState::Ongoing);
        c.take_output();
        end_v1(&mut c, "tx", pid, epoch, true, 20).unwrap();
        let (records, markers) = c.take_output();
        assert_eq!(records.last().unwrap().0.state, TxnState::PrepareCommit);
        assert_eq!(markers.len(), 1);
        assert!(markers[0].commit);
        assert_eq!(markers[0].partitions, vec![tp("a", 0), tp("b", 1)]);
        assert_eq!(
            end_v1(&mut c, "tx", pid, epoch, true, 21),
            Err(ResponseError::ConcurrentTransactions)
        );
        c.complete_markers(&markers[0], 30);
        assert_eq!(c.describe("tx").unwrap().state, TxnState::CompleteCommit);
        assert_eq!(
            end_v1(&mut c, "tx", pid, epoch, true, 31),
            Ok(()),
            "retried EndTxn succeeds"
        );
        assert_eq!(
            end_v1(&mut c, "tx", pid, epoch, false, 31),
            Err(ResponseError::InvalidTxnState)
        );
    }

    #[test]
    fn verify_only_checks_membership_without_adding() {
        let mut ids = 0;
        let (mut c, pid, epoch) = initialised(&mut ids);
        let both = [tp("a", 0), tp("b", 0)];
        assert_eq!(
            c.verify_partitions("tx", pid, epoch, &both),
            Ok(vec![false, false])
        );
        c.add_partitions("tx", pid, epoch, &both[..1], 0, 1)
            .unwrap();
        assert_eq!(
            c.verify_partitions("tx", pid, epoch, &both),
            Ok(vec![true, false])
        );
        assert_eq!(
            c.verify_partitions("tx", pid, epoch + 1, &both),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            c.describe("tx").unwrap().partitions.len(),
            1,
            "verification adds nothing"
        );
    }

    #[test]
    fn new_incarnation_fences_and_aborts_the_old_one() {
        let mut ids = 0;
        let (mut c, pid, e0) = initialised(&mut ids);
        c.add_partitions("tx", pid, e0, &[tp("a", 0)], 0, 1)
            .unwrap();
        c.take_output();
        // A restarted producer: the open transaction is aborted first.
        assert_eq!(
            c.init_producer_id("tx", 60_000, None, 0, 2, alloc(&mut ids)),
            Err(ResponseError::ConcurrentTransactions)
        );
        let (_, markers) = c.take_output();
        assert!(!markers[0].commit);
        assert_eq!(
            markers[0].producer_epoch,
            e0 + 1,
            "markers carry the fencing epoch"
        );
        assert_eq!(
            c.add_partitions("tx", pid, e0, &[tp("a", 0)], 0, 3),
            Err(ResponseError::ConcurrentTransactions),
            "markers being written come first (KAFKA-18660)"
        );
        c.complete_markers(&markers[0], 4);
        assert_eq!(
            c.add_partitions("tx", pid, e0, &[tp("a", 0)], 0, 4),
            Err(ResponseError::ProducerFenced)
        );
        let (pid2, e2) = c
            .init_producer_id("tx", 60_000, None, 0, 5, alloc(&mut ids))
            .unwrap();
        assert_eq!((pid2, e2), (pid, e0 + 2));
        assert_eq!(
            end_v1(&mut c, "tx", pid, e0, true, 6),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            end_v1(&mut c, "tx", pid, e2, true, 6),
            Err(ResponseError::InvalidTxnState),
            "nothing ongoing"
        );
        assert_eq!(
            c.add_partitions("nope", pid, e2, &[tp("a", 0)], 0, 7),
            Err(ResponseError::InvalidProducerIdMapping)
        );
    }

    #[test]
    fn timeouts_abort_and_bad_timeouts_are_refused() {
        let mut ids = 0;
        let mut c = TransactionCoordinator::default();
        assert_eq!(
            c.init_producer_id("tx", 0, None, 0, 0, alloc(&mut ids)),
            Err(ResponseError::InvalidTransactionTimeout)
        );
        assert_eq!(
            c.init_producer_id("tx", 1_000_000, None, 0, 0, alloc(&mut ids)),
            Err(ResponseError::InvalidTransactionTimeout)
        );
        let (pid, epoch) = c
            .init_producer_id("tx", 1000, None, 0, 0, alloc(&mut ids))
            .unwrap();
        c.add_partitions("tx", pid, epoch, &[tp("a", 0)], 0, 100)
            .unwrap();
        c.take_output();
        c.tick(1100, 0);
        assert_eq!(c.describe("tx").unwrap().state, TxnState::Ongoing);
        c.tick(1101, 0);
        let (_, markers) = c.take_output();
        assert_eq!(markers.len(), 1);
        assert_eq!(c.describe("tx").unwrap().state, TxnState::PrepareAbort);
        assert_eq!(
            end_v1(&mut c, "tx", pid, epoch, true, 1102),
            Err(ResponseError::ProducerFenced)
        );
    }

    #[test]
    fn state_reloads_and_prepared_transactions_resume() {
        let mut ids = 0;
        let (mut c, pid, epoch) = initialised(&mut ids);
        c.add_partitions(
            "tx",
            pid,
            epoch,
            &[tp("a", 0), tp("a", 2), tp("b", 1)],
            0,
            1,
        )
        .unwrap();
        end_v1(&mut c, "tx", pid, epoch, false, 2).unwrap();
        let (records, _) = c.take_output();
        let mut reloaded = TransactionCoordinator::default();
        for r in records {
            let (k, v) = r.encode(0);
            reloaded.load(TxnRecord::decode(&k, Some(&v)).unwrap().unwrap());
        }
        let t = reloaded.describe("tx").unwrap();
        assert_eq!(t.state, TxnState::PrepareAbort);
        assert_eq!(t.partitions.len(), 3);
        let (_, markers) = reloaded.take_output();
        assert_eq!(markers.len(), 1, "the abort is resumed after a restart");
        assert!(TxnRecord::decode(&[0, 0, 0, 5, b'a'], Some(&[0, 0, 1])).is_err());
    }

    #[test]
    fn unload_forgets_only_the_moved_transactions_and_their_markers() {
        let mut ids = 0;
        let mut c = TransactionCoordinator::default();
        for id in ["moved", "kept"] {
            let (pid, epoch) = c
                .init_producer_id(id, 60_000, None, 0, 0, alloc(&mut ids))
                .unwrap();
            c.add_partitions(id, pid, epoch, &[tp("a", 0)], 0, 1)
                .unwrap();
            end_v1(&mut c, id, pid, epoch, true, 2).unwrap();
        }
        assert_eq!(c.unload(|id| id == "moved"), 1);
        assert!(c.describe("moved").is_none());
        assert_eq!(c.describe("kept").unwrap().state, TxnState::PrepareCommit);
        let (records, markers) = c.take_output();
        assert!(records.iter().all(|r| r.0.transactional_id == "kept"));
        assert_eq!(markers.len(), 1);
        assert_eq!(markers[0].transactional_id, "kept");
        assert_eq!(c.unload(|_| false), 0);
    }

    fn end_v2(
        c: &mut TransactionCoordinator,
        pid: i64,
        epoch: i16,
        commit: bool,
        ids: &mut i64,
    ) -> Result<(i64, i16), ResponseError> {
        c.end_txn("tx", pid, epoch, commit, TV2, 0, alloc(ids))
    }

    /// Writes the markers of everything pending and completes it, as the broker does.
    fn complete_all(c: &mut TransactionCoordinator) -> Vec<MarkerWork> {
        let (_, markers) = c.take_output();
        for m in &markers {
            c.complete_markers(m, 0);
        }
        markers
    }

    #[test]
    fn v2_bumps_the_epoch_on_every_end_and_answers_retries() {
        let mut ids = 0;
        let (mut c, pid, e0) = initialised(&mut ids);
        c.add_partitions("tx", pid, e0, &[tp("a", 0)], TV2, 1)
            .unwrap();
        assert_eq!(end_v2(&mut c, pid, e0, true, &mut ids), Ok((pid, e0 + 1)));
        let markers = complete_all(&mut c);
        assert_eq!(
            markers[0].producer_epoch,
            e0 + 1,
            "markers carry the new epoch"
        );
        let t = c.describe("tx").unwrap();
        assert_eq!(
            (t.state, t.client_transaction_version),
            (TxnState::CompleteCommit, TV2)
        );
        // The answer was lost: the retry names the old epoch and gets the same answer.
        assert_eq!(end_v2(&mut c, pid, e0, true, &mut ids), Ok((pid, e0 + 1)));
        assert_eq!(
            end_v2(&mut c, pid, e0, false, &mut ids),
            Err(ResponseError::InvalidTxnState)
        );
        // A late write of the ended transaction is fenced; the next one uses the new epoch.
        assert_eq!(
            c.add_partitions("tx", pid, e0, &[tp("a", 0)], TV2, 2),
            Err(ResponseError::ProducerFenced)
        );
        c.add_partitions("tx", pid, e0 + 1, &[tp("b", 0)], TV2, 3)
            .unwrap();
        assert_eq!(
            end_v2(&mut c, pid, e0 + 1, false, &mut ids),
            Ok((pid, e0 + 2))
        );
        complete_all(&mut c);
        // v2 may abort what the coordinator never saw start (it bumps all the same), but
        // not commit it.
        assert_eq!(
            end_v2(&mut c, pid, e0 + 2, true, &mut ids),
            Err(ResponseError::InvalidTxnState)
        );
        assert_eq!(
            end_v2(&mut c, pid, e0 + 2, false, &mut ids),
            Ok((pid, e0 + 3))
        );
        let markers = complete_all(&mut c);
        assert!(markers[0].partitions.is_empty() && !markers[0].commit);
        // InitProducerId from a client whose EndTxn answer was lost (KIP-360) is no zombie:
        // it is answered the current epoch, not bumped again (Kafka's
        // `prepareIncrementProducerEpoch`), as often as it asks.
        for now in [4, 5] {
            assert_eq!(
                c.init_producer_id("tx", 60_000, Some((pid, e0 + 2)), TV2, now, alloc(&mut ids)),
                Ok((pid, e0 + 3))
            );
        }
        assert_eq!(
            c.init_producer_id("tx", 60_000, Some((pid, e0 + 1)), TV2, 5, alloc(&mut ids)),
            Err(ResponseError::ProducerFenced),
            "only the epoch the last end replaced"
        );
        // With the current epoch it bumps, and remembers the one it replaced.
        assert_eq!(
            c.init_producer_id("tx", 60_000, Some((pid, e0 + 3)), TV2, 6, alloc(&mut ids)),
            Ok((pid, e0 + 4))
        );
        assert_eq!(
            c.init_producer_id("tx", 60_000, Some((pid, e0 + 3)), TV2, 7, alloc(&mut ids)),
            Ok((pid, e0 + 4))
        );
        assert_eq!(
            c.init_producer_id(
                "tx",
                60_000,
                Some((pid + 1, e0 + 4)),
                TV2,
                8,
                alloc(&mut ids)
            ),
            Err(ResponseError::ProducerFenced),
            "another producer id"
        );
    }

    /// A transaction left open past its timeout, on a cluster at `transaction.version` 2: the
    /// coordinator aborts it with one epoch bump, and the client (whatever its protocol) is
    /// answered so that it can abort and carry on, as Kafka 4.1 answers it.
    #[test]
    fn a_timed_out_transaction_at_v2_is_aborted_and_its_client_carries_on() {
        let mut ids = 0;
        let mut c = TransactionCoordinator::default();
        let (pid, e) = c
            .init_producer_id("tx", 1000, None, TV2, 0, alloc(&mut ids))
            .unwrap();
        c.add_partitions("tx", pid, e, &[tp("a", 0), tp("b", 1)], TV2, 100)
            .unwrap();
        c.take_output();
        c.tick(1101, TV2);
        let (records, markers) = c.take_output();
        assert_eq!(markers.len(), 1);
        assert_eq!(
            (markers[0].producer_epoch, markers[0].commit),
            (e + 1, false),
            "one bump: the abort's markers fence the old epoch"
        );
        let t = &records.last().unwrap().0;
        assert_eq!(
            (t.state, t.producer_epoch, t.client_transaction_version),
            (TxnState::PrepareAbort, e + 1, TV2)
        );
        // While the markers are written everything waits.
        assert_eq!(
            end_v2(&mut c, pid, e, false, &mut ids),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(
            end_v2(&mut c, pid, e, true, &mut ids),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(
            c.add_partitions("tx", pid, e, &[tp("a", 0)], TV2, 1102),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(
            c.verify_partitions("tx", pid, e, &[tp("a", 0)]),
            Err(ResponseError::ProducerFenced)
        );
        c.complete_markers(&markers[0], 1103);
        c.take_output();
        // Protocol v2: the client's EndTxn(abort) with its old epoch is a retry of the abort;
        // a commit is refused; protocol v1 calls with the old epoch are fenced.
        assert_eq!(
            end_v2(&mut c, pid, e, true, &mut ids),
            Err(ResponseError::InvalidTxnState)
        );
        assert_eq!(
            end_v1(&mut c, "tx", pid, e, false, 1104),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            c.add_partitions("tx", pid, e, &[tp("a", 0)], 0, 1104),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            c.verify_partitions("tx", pid, e, &[tp("a", 0)]),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(end_v2(&mut c, pid, e, false, &mut ids), Ok((pid, e + 1)));
        assert_eq!(
            c.describe("tx").unwrap().state,
            TxnState::CompleteAbort,
            "the retry wrote nothing"
        );
        assert!(c.take_output().0.is_empty());
        // A KIP-360 InitProducerId with the old epoch gets the new one, unbumped.
        assert_eq!(
            c.init_producer_id("tx", 1000, Some((pid, e)), TV2, 1105, alloc(&mut ids)),
            Ok((pid, e + 1))
        );
        // The next transaction goes through at the new epoch.
        c.add_partitions("tx", pid, e + 1, &[tp("a", 0)], TV2, 1106)
            .unwrap();
        assert_eq!(end_v2(&mut c, pid, e + 1, true, &mut ids), Ok((pid, e + 2)));
        let markers = complete_all(&mut c);
        assert_eq!(
            (markers[0].producer_epoch, markers[0].commit),
            (e + 2, true)
        );
    }

    /// At `transaction.version` below 2 the coordinator's abort leaves its client nothing to
    /// carry on with (Kafka's protocol v1: the timeout fences it).
    #[test]
    fn a_timed_out_transaction_below_v2_fences_its_client() {
        let mut ids = 0;
        let mut c = TransactionCoordinator::default();
        let (pid, e) = c
            .init_producer_id("tx", 1000, None, 0, 0, alloc(&mut ids))
            .unwrap();
        c.add_partitions("tx", pid, e, &[tp("a", 0)], 0, 100)
            .unwrap();
        c.take_output();
        c.tick(1101, 0);
        let markers = complete_all(&mut c);
        assert_eq!(markers[0].producer_epoch, e + 1);
        let t = c.describe("tx").unwrap();
        assert_eq!(
            (t.state, t.client_transaction_version),
            (TxnState::CompleteAbort, 0)
        );
        assert_eq!(
            end_v1(&mut c, "tx", pid, e, false, 1104),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            c.init_producer_id("tx", 1000, Some((pid, e)), 0, 1105, alloc(&mut ids)),
            Err(ResponseError::ProducerFenced)
        );
        // A new incarnation goes on.
        assert_eq!(
            c.init_producer_id("tx", 1000, None, 0, 1106, alloc(&mut ids)),
            Ok((pid, e + 2))
        );
    }

    /// A new incarnation's InitProducerId aborts the open transaction of the old one with one
    /// epoch bump at v2 as at v1 (Kafka 4.1, KAFKA-19367), and its retry bumps again.
    #[test]
    fn fencing_an_open_transaction_bumps_once() {
        for tv in [0, TV2] {
            let mut ids = 0;
            let mut c = TransactionCoordinator::default();
            let (pid, e) = c
                .init_producer_id("tx", 60_000, None, tv, 0, alloc(&mut ids))
                .unwrap();
            c.add_partitions("tx", pid, e, &[tp("a", 0)], tv, 1)
                .unwrap();
            c.take_output();
            assert_eq!(
                c.init_producer_id("tx", 60_000, None, tv, 2, alloc(&mut ids)),
                Err(ResponseError::ConcurrentTransactions)
            );
            assert_eq!(
                c.init_producer_id("tx", 60_000, None, tv, 3, alloc(&mut ids)),
                Err(ResponseError::ConcurrentTransactions),
                "the abort's markers are being written"
            );
            let markers = complete_all(&mut c);
            assert_eq!(markers[0].producer_epoch, e + 1, "protocol {tv}");
            assert_eq!(
                c.init_producer_id("tx", 60_000, None, tv, 4, alloc(&mut ids)),
                Ok((pid, e + 2))
            );
        }
    }

    #[test]
    fn v2_moves_to_a_new_producer_id_when_the_epochs_run_out() {
        let mut ids = 100;
        let mut c = TransactionCoordinator::default();
        let (pid, _) = c
            .init_producer_id("tx", 60_000, None, 0, 0, alloc(&mut ids))
            .unwrap();
        let mut exhausted = c.describe("tx").unwrap().clone();
        exhausted.producer_epoch = MAX_EPOCH;
        c.load(TxnRecord(exhausted));
        c.add_partitions("tx", pid, MAX_EPOCH, &[tp("a", 0)], TV2, 1)
            .unwrap();
        let (next_pid, epoch) = end_v2(&mut c, pid, MAX_EPOCH, true, &mut ids).unwrap();
        assert_eq!((next_pid != pid, epoch), (true, 0));
        let markers = complete_all(&mut c);
        assert_eq!(
            (markers[0].producer_id, markers[0].producer_epoch),
            (pid, i16::MAX),
            "the old id's last epoch ends the transaction"
        );
        let t = c.describe("tx").unwrap();
        assert_eq!(
            (
                t.producer_id,
                t.producer_epoch,
                t.previous_producer_id,
                t.next_producer_id
            ),
            (next_pid, 0, pid, -1)
        );
        assert_eq!(
            end_v2(&mut c, pid, MAX_EPOCH, true, &mut ids),
            Ok((next_pid, 0)),
            "a retry names the old id"
        );
        c.add_partitions("tx", next_pid, 0, &[tp("a", 0)], TV2, 2)
            .unwrap();
    }

    #[test]
    fn records_of_both_value_versions_round_trip() {
        let mut ids = 0;
        let mut c = TransactionCoordinator::default();
        let (pid, e) = c
            .init_producer_id("tx", 60_000, None, 0, 0, alloc(&mut ids))
            .unwrap();
        c.add_partitions("tx", pid, e, &[tp("a", 0), tp("a", 3), tp("bb", 1)], TV2, 1)
            .unwrap();
        let mut txn = c.describe("tx").unwrap().clone();
        txn.previous_producer_id = 7;
        txn.next_producer_id = 9;
        let record = TxnRecord(txn.clone());
        let (k, v1) = record.encode(TXN_LOG_VALUE_FLEXIBLE);
        assert_eq!(&v1[..2], &[0, 1], "value version 1");
        assert_eq!(
            TxnRecord::decode(&k, Some(&v1)).unwrap(),
            Some(record.clone())
        );
        // Version 0 has no place for protocol v2's fields.
        let (_, v0) = record.encode(0);
        let back = TxnRecord::decode(&k, Some(&v0)).unwrap().unwrap().0;
        assert_eq!(back.partitions, txn.partitions);
        assert_eq!(
            (
                back.previous_producer_id,
                back.next_producer_id,
                back.client_transaction_version
            ),
            (-1, -1, 0)
        );
        // Defaults are not written as tagged fields, and unknown tags are skipped.
        let mut plain = txn.clone();
        (
            plain.previous_producer_id,
            plain.next_producer_id,
            plain.client_transaction_version,
        ) = (-1, -1, 0);
        let (_, v) = TxnRecord(plain.clone()).encode(TXN_LOG_VALUE_FLEXIBLE);
        assert_eq!(*v.last().unwrap(), 0, "an empty tagged-field section");
        let mut unknown = v[..v.len() - 1].to_vec();
        unknown.extend_from_slice(&[1, 9, 2, 0xAB, 0xCD]);
        assert_eq!(
            TxnRecord::decode(&k, Some(&unknown)).unwrap(),
            Some(TxnRecord(plain))
        );
        assert!(TxnRecord::decode(&k, Some(&v1[..v1.len() - 3])).is_err());
    }
}
