//! The persistence-before-reply rule of the transaction service, on real logs: a state change
//! (InitProducerId, AddPartitionsToTxn, EndTxn) is answered only once its record is in
//! `__transaction_state`, and an EndTxn's markers go out only after its prepare record; when
//! the append fails, the answer is the error Kafka gives, no marker is written, and the
//! coordinator holds what the log holds.

use kafka_protocol::error::ResponseError;
use strata_coord::txn::{TxnRecord, TxnState, TRANSACTION_STATE_TOPIC};

use super::*;
use crate::test_fixture::{Node, NODE, OTHER};

const ID: &str = "tx";
const PRODUCER_ID: i64 = 1000;

/// A service that coordinates [`ID`], over a node with a topic "t" for the transaction.
fn coordinating(node: &Node) -> Arc<TxnService> {
    node.create_topic("t", 1);
    let txns = node.txns(node.groups());
    txns.ensure_topic().expect("state topic");
    assert!(txns.coordinates(ID));
    txns
}

fn init(txns: &TxnService) -> Result<(i64, i16), ResponseError> {
    txns.run(|c| c.init_producer_id(ID, 60_000, None, 0, now_ms(), || Ok(PRODUCER_ID)))?
}

/// InitProducerId, then AddPartitionsToTxn of t-0: the transaction is Ongoing.
fn begin(txns: &TxnService) {
    let (pid, epoch) = init(txns).expect("init");
    txns.run(|c| c.add_partitions(ID, pid, epoch, &[("t".into(), 0)], 0, now_ms()))
        .expect("run")
        .expect("add partitions");
}

fn end(txns: &TxnService, commit: bool) -> Result<(i64, i16), ResponseError> {
    txns.run(|c| {
        c.end_txn(ID, PRODUCER_ID, 0, commit, 0, now_ms(), || {
            Ok(PRODUCER_ID + 1)
        })
    })?
}

/// The states of [`ID`] in `__transaction_state`, in log order.
fn states_in_log(node: &Node, txns: &TxnService) -> Vec<TxnState> {
    node.records(TRANSACTION_STATE_TOPIC, txns.partition_of(ID))
        .into_iter()
        .filter_map(|(k, v)| TxnRecord::decode(&k, v.as_deref()).expect("decodes"))
        .filter(|r| r.0.transactional_id == ID)
        .map(|r| r.0.state)
        .collect()
}

/// The transaction markers in t-0: (producer id, commit).
fn markers(node: &Node) -> Vec<(i64, bool)> {
    let mut out = Vec::new();
    internal_topics::replay(&node.replicas, "t", 0, |r| {
        if let Replayed::Marker(m) = r {
            out.push((m.producer_id, m.commit));
        }
    })
    .expect("replay");
    out
}

fn state(txns: &TxnService) -> Option<TxnState> {
    assert!(txns.coordinates(ID));
    txns.run(|c| c.describe(ID).map(|t| t.state)).expect("run")
}

#[test]
fn init_producer_id_is_answered_once_its_record_is_in_the_log() {
    let node = Node::start();
    let txns = coordinating(&node);
    assert_eq!(init(&txns), Ok((PRODUCER_ID, 0)));
    assert_eq!(states_in_log(&node, &txns), [TxnState::Empty]);
}

#[test]
fn end_txn_is_answered_after_prepare_markers_and_completion_are_written() {
    let node = Node::start();
    let txns = coordinating(&node);
    begin(&txns);
    assert!(end(&txns, true).is_ok());
    assert_eq!(
        states_in_log(&node, &txns),
        [
            TxnState::Empty,
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::CompleteCommit
        ]
    );
    assert_eq!(markers(&node), [(PRODUCER_ID, true)]);
    // A new coordinator (restart, failover) finds the same.
    let reloaded = node.txns(node.groups());
    assert_eq!(state(&reloaded), Some(TxnState::CompleteCommit));
}

#[test]
fn an_end_txn_the_log_refuses_writes_no_marker_and_changes_nothing() {
    let node = Node::start();
    let txns = coordinating(&node);
    begin(&txns);
    let logged = states_in_log(&node, &txns);
    node.set_topic_config(TRANSACTION_STATE_TOPIC, "max.message.bytes", Some("1"));

    // Kafka's TransactionStateManager: RecordTooLarge -> UNKNOWN_SERVER_ERROR.
    assert_eq!(end(&txns, true), Err(ResponseError::UnknownServerError));
    assert_eq!(states_in_log(&node, &txns), logged);
    assert!(
        markers(&node).is_empty(),
        "no marker without its prepare record"
    );
    assert_eq!(state(&txns), Some(TxnState::Ongoing));

    // Once the log takes writes again, nothing of the failed call comes back.
    node.set_topic_config(TRANSACTION_STATE_TOPIC, "max.message.bytes", None);
    txns.run(|_| ()).expect("run");
    assert!(markers(&node).is_empty());
    assert_eq!(state(&txns), Some(TxnState::Ongoing));
    // And the client's retry ends the transaction.
    assert!(end(&txns, true).is_ok());
    assert_eq!(markers(&node), [(PRODUCER_ID, true)]);
}

#[test]
fn an_end_txn_after_leadership_moved_is_answered_not_coordinator() {
    let node = Node::start();
    let txns = coordinating(&node);
    begin(&txns);
    node.register_other();
    let partition = txns.partition_of(ID);
    let logged = states_in_log(&node, &txns);
    // The image moves leadership away between the handler's check and the call.
    node.move_partition(TRANSACTION_STATE_TOPIC, partition, vec![NODE, OTHER], OTHER);

    assert_eq!(end(&txns, false), Err(ResponseError::NotCoordinator));
    assert_eq!(states_in_log(&node, &txns), logged);
    assert!(markers(&node).is_empty());
    assert!(!txns.coordinates(ID));
}

#[test]
fn without_a_runtime_a_replicated_state_change_is_not_acknowledged() {
    let node = Node::start();
    let txns = coordinating(&node);
    node.register_other();
    // Led here, with a follower in the ISR that has not fetched: the high watermark waits.
    node.move_partition(
        TRANSACTION_STATE_TOPIC,
        txns.partition_of(ID),
        vec![NODE, OTHER],
        NODE,
    );
    assert!(txns.coordinates(ID));
    assert_eq!(init(&txns), Err(ResponseError::CoordinatorNotAvailable));
}
