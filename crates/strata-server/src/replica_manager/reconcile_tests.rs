//! Reconcile against real metadata records and real partition directories: the image is the
//! truth for which partitions are hosted here, with which leadership, and which files exist.

use std::sync::Arc;

use crate::test_fixture::{Node, NODE, OTHER};

fn dir_of(node: &Node, topic: &str, partition: i32) -> std::path::PathBuf {
    node.dir
        .path()
        .join("logs")
        .join(format!("{topic}-{partition}"))
}

fn hosted(node: &Node) -> Vec<(String, i32)> {
    let mut all: Vec<(String, i32)> = node
        .replicas
        .all()
        .iter()
        .map(|p| (p.topic.clone(), p.index))
        .collect();
    all.sort();
    all
}

#[test]
fn a_new_topic_led_here_is_hosted_with_its_leader_epoch_and_files() {
    let node = Node::start();
    node.create_topic("t", 2);
    assert_eq!(hosted(&node), [("t".into(), 0), ("t".into(), 1)]);
    let image = node.image();
    let topic_id = image.topic("t").expect("topic").topic_id;
    for index in 0..2 {
        let p = node.replicas.partition("t", index).expect("hosted");
        assert!(p.is_leader());
        assert_eq!(p.leader_epoch(), 0);
        assert_eq!(p.topic_id, topic_id);
        let metadata =
            std::fs::read_to_string(dir_of(&node, "t", index).join("partition.metadata"))
                .expect("partition.metadata");
        assert!(metadata.contains(&topic_id.to_string()), "{metadata}");
        assert!(node.replicas.leader_or_error(&image, "t", index).is_ok());
    }
}

#[test]
fn leadership_moving_away_leaves_a_follower_with_the_new_epoch() {
    let node = Node::start();
    node.register_other();
    node.create_topic("t", 1);
    node.move_partition("t", 0, vec![NODE, OTHER], OTHER);
    let p = node
        .replicas
        .partition("t", 0)
        .expect("still hosted: a replica");
    assert!(!p.is_leader());
    assert_eq!(p.leader_epoch(), 1);
    assert!(!p.is_replicated_leader());
    assert!(dir_of(&node, "t", 0).exists(), "a follower keeps its log");
    assert_eq!(
        node.replicas.leader_or_error(&node.image(), "t", 0).err(),
        Some(kafka_protocol::error::ResponseError::NotLeaderOrFollower)
    );
    // Led here again in a newer epoch, now with a follower: the leader state is there.
    node.move_partition("t", 0, vec![NODE, OTHER], NODE);
    let again = node.replicas.partition("t", 0).expect("hosted");
    assert!(Arc::ptr_eq(&p, &again), "the same log, not reopened");
    assert!(again.is_leader());
    assert_eq!(again.leader_epoch(), 2);
    assert!(again.is_replicated_leader());
}

#[test]
fn a_replica_moved_off_this_node_is_no_longer_hosted_and_its_files_go() {
    let node = Node::start();
    node.register_other();
    node.create_topic("t", 2);
    let removed = node.replicas.partition("t", 0).expect("hosted");
    node.move_partition("t", 0, vec![OTHER], OTHER);
    assert_eq!(hosted(&node), [("t".into(), 1)]);
    assert!(!dir_of(&node, "t", 0).exists());
    assert!(dir_of(&node, "t", 1).exists());
    assert!(
        removed.is_removed(),
        "a task still holding it must not touch the path"
    );
    assert!(!removed.is_leader());
    assert_eq!(
        node.replicas.replica_or_error(&node.image(), "t", 0).err(),
        Some(kafka_protocol::error::ResponseError::NotLeaderOrFollower)
    );
}

#[test]
fn a_deleted_topic_is_no_longer_hosted_and_its_files_go() {
    let node = Node::start();
    node.create_topic("t", 2);
    node.create_topic("u", 1);
    let topic_id = node.image().topic("t").expect("topic").topic_id;
    node.commit(vec![strata_meta::MetadataRecord::RemoveTopic { topic_id }]);
    assert_eq!(hosted(&node), [("u".into(), 0)]);
    assert!(!dir_of(&node, "t", 0).exists());
    assert!(!dir_of(&node, "t", 1).exists());
    assert_eq!(
        node.replicas.replica_or_error(&node.image(), "t", 0).err(),
        Some(kafka_protocol::error::ResponseError::UnknownTopicOrPartition)
    );
    // Created again under the same name: a new log (new topic id), not the old one's data.
    node.create_topic("t", 1);
    let new_id = node.image().topic("t").expect("topic").topic_id;
    let p = node.replicas.partition("t", 0).expect("hosted");
    assert_eq!(p.topic_id, new_id);
    assert_ne!(new_id, topic_id);
    assert_eq!(p.log().log_end_offset(), 0);
}

#[test]
fn reconcile_is_idempotent_on_the_same_image() {
    let node = Node::start();
    node.register_other();
    node.create_topic("t", 2);
    node.move_partition("t", 1, vec![NODE, OTHER], OTHER);
    // Some data, so that a reopened or truncated log would show.
    let p0 = node.replicas.partition("t", 0).expect("hosted");
    {
        let batch = crate::internal_topics::encode_batch(
            [(
                bytes::Bytes::from_static(b"k"),
                Some(bytes::Bytes::from_static(b"v")),
            )],
            None,
            0,
        )
        .expect("batch");
        let mut log = p0.log();
        log.append_as_leader(&batch, p0.leader_epoch(), 0)
            .expect("append");
    }
    let image = node.image();
    let before: Vec<_> = node
        .replicas
        .all()
        .iter()
        .map(|p| (p.topic.clone(), p.index, p.leader_epoch(), p.is_leader()))
        .collect();
    for _ in 0..3 {
        let failures = node.replicas.reconcile(&image, &node.config);
        assert!(failures.is_empty());
    }
    let after: Vec<_> = node
        .replicas
        .all()
        .iter()
        .map(|p| (p.topic.clone(), p.index, p.leader_epoch(), p.is_leader()))
        .collect();
    let sorted = |mut v: Vec<(String, i32, i32, bool)>| {
        v.sort();
        v
    };
    assert_eq!(sorted(before), sorted(after));
    let again = node.replicas.partition("t", 0).expect("hosted");
    assert!(Arc::ptr_eq(&p0, &again), "the same open log");
    assert_eq!(again.log().log_end_offset(), 1);
    assert!(!again.is_removed());
}
