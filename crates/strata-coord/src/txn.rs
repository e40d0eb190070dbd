//! The transaction coordinator (Kafka's `TransactionCoordinator` / `TransactionStateManager`,
//! transaction protocol version 1) as a sans-IO state machine.
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
//! Every state change produces a [`TxnRecord`] for `__transaction_state`, in Kafka's format;
//! the caller persists it before answering. Replaying the records rebuilds the state, and a
//! transaction found in a Prepare state is completed again (markers are idempotent).
//!
//! Status: the state machine and its record format are complete and tested here; the broker
//! does not serve the transactional APIs yet (see the server's `handlers`).

use std::collections::{BTreeSet, HashMap};

use bytes::{BufMut, Bytes, BytesMut};

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
        txn.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        self.markers.push(MarkerWork {
            transactional_id: transactional_id.to_string(),
            producer_id: txn.producer_id,
            producer_epoch: txn.producer_epoch,
            commit,
            partitions: txn.partitions.iter().cloned().collect(),
        });
        self.persist(transactional_id, now_ms);
    }

    /// InitProducerId for a transactional id. `expected` is the producer id and epoch a
    /// KIP-360 client (v3+) believes it has; `allocate` hands out a fresh producer id.
    pub fn init_producer_id(
        &mut self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
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
                },
            );
            self.persist(transactional_id, now_ms);
            return Ok((producer_id, 0));
        };
        if let Some((pid, epoch)) = expected {
            if pid >= 0 && (pid != txn.producer_id || epoch != txn.producer_epoch) {
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
                // gets a second epoch bump once the abort is complete.
                txn.producer_epoch += 1;
                self.prepare_end(transactional_id, false, now_ms);
                Err(ResponseError::ConcurrentTransactions)
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if txn.producer_epoch >= MAX_EPOCH {
                    txn.producer_id = allocate()?;
                    txn.producer_epoch = 0;
                } else {
                    txn.producer_epoch += 1;
                }
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

    /// AddPartitionsToTxn (also used for AddOffsetsToTxn with the group's offsets partition).
    pub fn add_partitions(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
        now_ms: i64,
    ) -> Result<(), ResponseError> {
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
        txn.partitions.extend(partitions.iter().cloned());
        self.persist(transactional_id, now_ms);
        Ok(())
    }

    /// AddPartitionsToTxn with `verify_only` (KIP-890): for each partition, whether the
    /// ongoing transaction of this producer already contains it.
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Vec<bool>, ResponseError> {
        let txn = self.validate(transactional_id, producer_id, producer_epoch)?;
        Ok(partitions
            .iter()
            .map(|p| txn.state == TxnState::Ongoing && txn.partitions.contains(p))
            .collect())
    }

    /// EndTxn: commit or abort the ongoing transaction.
    pub fn end_txn(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        let txn = self.validate(transactional_id, producer_id, producer_epoch)?;
        match (txn.state, commit) {
            (TxnState::Ongoing, _) => {
                self.prepare_end(transactional_id, commit, now_ms);
                Ok(())
            }
            // A retry of an EndTxn that already completed.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(()),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(ResponseError::ConcurrentTransactions)
            }
            _ => Err(ResponseError::InvalidTxnState),
        }
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
        self.persist(&work.transactional_id, now_ms);
    }

    /// Aborts transactions open longer than their timeout, fencing their producer.
    pub fn tick(&mut self, now_ms: i64) {
        let expired: Vec<String> = self
            .txns
            .values()
            .filter(|t| t.state == TxnState::Ongoing && now_ms - t.start_ms > t.timeout_ms as i64)
            .map(|t| t.transactional_id.clone())
            .collect();
        for id in expired {
            tracing::info!(transactional_id = %id, "transaction timed out; aborting");
            let txn = self.txns.get_mut(&id).expect("listed");
            txn.producer_epoch += 1;
            self.prepare_end(&id, false, now_ms);
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
            self.markers.push(MarkerWork {
                transactional_id: id.clone(),
                producer_id: txn.producer_id,
                producer_epoch: txn.producer_epoch,
                commit,
                partitions: txn.partitions.iter().cloned().collect(),
            });
        }
        self.txns.insert(id, txn);
    }
}

impl TxnRecord {
    /// Encodes as Kafka's `TransactionLogKey` v0 and `TransactionLogValue` v0.
    pub fn encode(&self) -> (Bytes, Bytes) {
        let t = &self.0;
        let mut key = BytesMut::new();
        key.put_i16(0);
        put_string(&mut key, &t.transactional_id);
        let mut value = BytesMut::new();
        value.put_i16(0);
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
        value.put_i32(by_topic.len() as i32);
        for (topic, ps) in by_topic {
            put_string(&mut value, topic);
            value.put_i32(ps.len() as i32);
            for p in ps {
                value.put_i32(p);
            }
        }
        value.put_i64(t.last_update_ms);
        value.put_i64(t.start_ms);
        (key.freeze(), value.freeze())
    }

    /// Decodes a record; `None` for a tombstone or a key of another kind.
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
        let _version = r.i16()?;
        let producer_id = r.i64()?;
        let producer_epoch = r.i16()?;
        let timeout_ms = r.i32()?;
        let state = TxnState::from_code(r.i8()?).ok_or_else(|| r.short())?;
        let mut partitions = BTreeSet::new();
        for _ in 0..r.count()? {
            let topic = r.string()?;
            for _ in 0..r.count()? {
                partitions.insert((topic.clone(), r.i32()?));
            }
        }
        let last_update_ms = r.i64()?;
        let start_ms = r.i64()?;
        Ok(Some(TxnRecord(TransactionMetadata {
            transactional_id,
            producer_id,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            start_ms,
            last_update_ms,
        })))
    }
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

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    #[test]
    fn commit_cycle_writes_markers_and_completes() {
        let mut ids = 0;
        let mut c = TransactionCoordinator::default();
        let (pid, epoch) = c
            .init_producer_id("tx", 60_000, None, 0, alloc(&mut ids))
            .unwrap();
        assert_eq!((pid, epoch), (1, 0));
        c.add_partitions("tx", pid, epoch, &[tp("a", 0), tp("b", 1)], 10)
            .unwrap();
        assert_eq!(c.describe("tx").unwrap().state, TxnState::Ongoing);
        c.take_output();
        c.end_txn("tx", pid, epoch, true, 20).unwrap();
        let (records, markers) = c.take_output();
        assert_eq!(records.last().unwrap().0.state, TxnState::PrepareCommit);
        assert_eq!(markers.len(), 1);
        assert!(markers[0].commit);
        assert_eq!(markers[0].partitions, vec![tp("a", 0), tp("b", 1)]);
        assert_eq!(
            c.end_txn("tx", pid, epoch, true, 21),
            Err(ResponseError::ConcurrentTransactions)
        );
        c.complete_markers(&markers[0], 30);
        assert_eq!(c.describe("tx").unwrap().state, TxnState::CompleteCommit);
        assert_eq!(
            c.end_txn("tx", pid, epoch, true, 31),
            Ok(()),
            "retried EndTxn succeeds"
        );
        assert_eq!(
            c.end_txn("tx", pid, epoch, false, 31),
            Err(ResponseError::InvalidTxnState)
        );
    }

    #[test]
    fn verify_only_checks_membership_without_adding() {
        let mut ids = 0;
        let mut c = TransactionCoordinator::default();
        let (pid, epoch) = c
            .init_producer_id("tx", 60_000, None, 0, alloc(&mut ids))
            .unwrap();
        let both = [tp("a", 0), tp("b", 0)];
        assert_eq!(
            c.verify_partitions("tx", pid, epoch, &both),
            Ok(vec![false, false])
        );
        c.add_partitions("tx", pid, epoch, &both[..1], 1).unwrap();
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
        let mut c = TransactionCoordinator::default();
        let (pid, e0) = c
            .init_producer_id("tx", 60_000, None, 0, alloc(&mut ids))
            .unwrap();
        c.add_partitions("tx", pid, e0, &[tp("a", 0)], 1).unwrap();
        c.take_output();
        // A restarted producer: the open transaction is aborted first.
        assert_eq!(
            c.init_producer_id("tx", 60_000, None, 2, alloc(&mut ids)),
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
            c.add_partitions("tx", pid, e0, &[tp("a", 0)], 3),
            Err(ResponseError::ProducerFenced)
        );
        c.complete_markers(&markers[0], 4);
        let (pid2, e2) = c
            .init_producer_id("tx", 60_000, None, 5, alloc(&mut ids))
            .unwrap();
        assert_eq!((pid2, e2), (pid, e0 + 2));
        assert_eq!(
            c.end_txn("tx", pid, e0, true, 6),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            c.end_txn("tx", pid, e2, true, 6),
            Err(ResponseError::InvalidTxnState),
            "nothing ongoing"
        );
        assert_eq!(
            c.add_partitions("nope", pid, e2, &[tp("a", 0)], 7),
            Err(ResponseError::InvalidProducerIdMapping)
        );
    }

    #[test]
    fn timeouts_abort_and_bad_timeouts_are_refused() {
        let mut ids = 0;
        let mut c = TransactionCoordinator::default();
        assert_eq!(
            c.init_producer_id("tx", 0, None, 0, alloc(&mut ids)),
            Err(ResponseError::InvalidTransactionTimeout)
        );
        assert_eq!(
            c.init_producer_id("tx", 1_000_000, None, 0, alloc(&mut ids)),
            Err(ResponseError::InvalidTransactionTimeout)
        );
        let (pid, epoch) = c
            .init_producer_id("tx", 1000, None, 0, alloc(&mut ids))
            .unwrap();
        c.add_partitions("tx", pid, epoch, &[tp("a", 0)], 100)
            .unwrap();
        c.take_output();
        c.tick(1100);
        assert_eq!(c.describe("tx").unwrap().state, TxnState::Ongoing);
        c.tick(1101);
        let (_, markers) = c.take_output();
        assert_eq!(markers.len(), 1);
        assert_eq!(c.describe("tx").unwrap().state, TxnState::PrepareAbort);
        assert_eq!(
            c.end_txn("tx", pid, epoch, true, 1102),
            Err(ResponseError::ProducerFenced)
        );
    }

    #[test]
    fn state_reloads_and_prepared_transactions_resume() {
        let mut ids = 0;
        let mut c = TransactionCoordinator::default();
        let (pid, epoch) = c
            .init_producer_id("tx", 60_000, None, 0, alloc(&mut ids))
            .unwrap();
        c.add_partitions("tx", pid, epoch, &[tp("a", 0), tp("a", 2), tp("b", 1)], 1)
            .unwrap();
        c.end_txn("tx", pid, epoch, false, 2).unwrap();
        let (records, _) = c.take_output();
        let mut reloaded = TransactionCoordinator::default();
        for r in records {
            let (k, v) = r.encode();
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
                .init_producer_id(id, 60_000, None, 0, alloc(&mut ids))
                .unwrap();
            c.add_partitions(id, pid, epoch, &[tp("a", 0)], 1).unwrap();
            c.end_txn(id, pid, epoch, true, 2).unwrap();
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
}
