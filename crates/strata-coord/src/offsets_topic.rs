//! Records of the `__consumer_offsets` topic, in Apache Kafka's format, so that the topic
//! means the same to Kafka's tools as to Strata.
//!
//! Keys: an `OffsetCommitKey` (version 1: group, topic, partition) or a `GroupMetadataKey`
//! (version 2: group). Values: `OffsetCommitValue` version 3 and `GroupMetadataValue` version 3.
//! A record with a null value is a tombstone: the offset or the group was deleted.
//! The partition of a group is Kafka's: `abs(java_string_hash(group)) % partitions`.

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::consumer_group::{Assignment, ClassicMetadata, ConsumerGroupSnapshot, MemberSnapshot};

/// Name of the internal topic holding group metadata and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
const GROUP_METADATA_KEY_VERSION: i16 = 2;
const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// The offsets-topic partition that holds `group`: Java's `String.hashCode`, made
/// non-negative as Kafka's `Utils.abs` does, modulo the partition count.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    assert!(partitions > 0);
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// A group member as stored in the group's metadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's metadata as stored (Kafka's `GroupMetadataValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<StoredMember>,
}

/// One decoded record of the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        /// `None`: the offset was deleted.
        value: Option<CommittedOffset>,
    },
    Group {
        group: String,
        /// `None`: the group was deleted.
        value: Option<StoredGroup>,
    },
    /// A KIP-848 group's whole state. Strata-specific (key version
    /// [`CONSUMER_GROUP_SNAPSHOT_KEY_VERSION`]); Kafka splits the same state over several
    /// record types (key versions 3 to 8), which Strata does not write yet.
    ConsumerGroup {
        group: String,
        /// `None`: the group was deleted.
        value: Option<ConsumerGroupSnapshot>,
    },
}

/// Key version of Strata's consumer-group snapshot records: far above Kafka's own key
/// versions so that the two can never be confused.
pub const CONSUMER_GROUP_SNAPSHOT_KEY_VERSION: i16 = 0x7F00;

pub use crate::record_codec::DecodeError;
use crate::record_codec::{put_bytes, put_nullable_string, put_string, Reader};

impl OffsetsRecord {
    pub fn group(&self) -> &str {
        match self {
            OffsetsRecord::Offset { group, .. }
            | OffsetsRecord::Group { group, .. }
            | OffsetsRecord::ConsumerGroup { group, .. } => group,
        }
    }

    /// Encodes the record as (key, value); a tombstone has no value.
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::new();
        match self {
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                key.put_i16(OFFSET_COMMIT_KEY_VERSION);
                put_string(&mut key, group);
                put_string(&mut key, topic);
                key.put_i32(*partition);
                let value = value.as_ref().map(|v| {
                    let mut b = BytesMut::new();
                    b.put_i16(OFFSET_COMMIT_VALUE_VERSION);
                    b.put_i64(v.offset);
                    b.put_i32(v.leader_epoch);
                    put_string(&mut b, &v.metadata);
                    b.put_i64(v.commit_timestamp_ms);
                    b.freeze()
                });
                (key.freeze(), value)
            }
            OffsetsRecord::ConsumerGroup { group, value } => {
                key.put_i16(CONSUMER_GROUP_SNAPSHOT_KEY_VERSION);
                put_string(&mut key, group);
                (key.freeze(), value.as_ref().map(encode_consumer_group))
            }
            OffsetsRecord::Group { group, value } => {
                key.put_i16(GROUP_METADATA_KEY_VERSION);
                put_string(&mut key, group);
                let value = value.as_ref().map(|g| {
                    let mut b = BytesMut::new();
                    b.put_i16(GROUP_METADATA_VALUE_VERSION);
                    put_string(&mut b, &g.protocol_type);
                    b.put_i32(g.generation);
                    put_nullable_string(&mut b, g.protocol.as_deref());
                    put_nullable_string(&mut b, g.leader.as_deref());
                    b.put_i64(g.state_timestamp_ms);
                    b.put_i32(g.members.len() as i32);
                    for m in &g.members {
                        put_string(&mut b, &m.member_id);
                        put_nullable_string(&mut b, m.group_instance_id.as_deref());
                        put_string(&mut b, &m.client_id);
                        put_string(&mut b, &m.client_host);
                        b.put_i32(m.rebalance_timeout_ms);
                        b.put_i32(m.session_timeout_ms);
                        put_bytes(&mut b, &m.subscription);
                        put_bytes(&mut b, &m.assignment);
                    }
                    b.freeze()
                });
                (key.freeze(), value)
            }
        }
    }

    /// Decodes a record; unknown key versions (other Kafka record kinds) give `Ok(None)`.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<Self>, DecodeError> {
        let mut k = Reader {
            buf: key,
            what: "key",
        };
        let version = k.i16()?;
        match version {
            0 | OFFSET_COMMIT_KEY_VERSION => {
                let group = k.string()?;
                let topic = k.string()?;
                let partition = k.i32()?;
                let value = match value {
                    None => None,
                    Some(v) => {
                        let mut r = Reader {
                            buf: v,
                            what: "offset commit value",
                        };
                        let value_version = r.i16()?;
                        let offset = r.i64()?;
                        let leader_epoch = if value_version >= 3 { r.i32()? } else { -1 };
                        let metadata = r.string()?;
                        let commit_timestamp_ms = r.i64()?;
                        Some(CommittedOffset {
                            offset,
                            leader_epoch,
                            metadata,
                            commit_timestamp_ms,
                        })
                    }
                };
                Ok(Some(OffsetsRecord::Offset {
                    group,
                    topic,
                    partition,
                    value,
                }))
            }
            GROUP_METADATA_KEY_VERSION => {
                let group = k.string()?;
                let value = match value {
                    None => None,
                    Some(v) => Some(decode_group(v)?),
                };
                Ok(Some(OffsetsRecord::Group { group, value }))
            }
            CONSUMER_GROUP_SNAPSHOT_KEY_VERSION => {
                let group = k.string()?;
                let value = match value {
                    None => None,
                    Some(v) => Some(decode_consumer_group(v)?),
                };
                Ok(Some(OffsetsRecord::ConsumerGroup { group, value }))
            }
            _ => Ok(None),
        }
    }
}

fn put_uuid(b: &mut BytesMut, id: &Uuid) {
    b.put_slice(id.as_bytes());
}

fn put_assignment(b: &mut BytesMut, a: &Assignment) {
    b.put_i32(a.len() as i32);
    for (topic, partitions) in a {
        put_uuid(b, topic);
        b.put_i32(partitions.len() as i32);
        for p in partitions {
            b.put_i32(*p);
        }
    }
}

/// Version of Strata's consumer-group snapshot value. v1 adds, per member, the metadata of
/// a member of the classic protocol (online migration); v0 members are all consumer-protocol.
const CONSUMER_GROUP_VALUE_VERSION: i16 = 1;

fn encode_consumer_group(g: &ConsumerGroupSnapshot) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(CONSUMER_GROUP_VALUE_VERSION);
    b.put_i32(g.group_epoch);
    b.put_i32(g.assignment_epoch);
    put_string(&mut b, &g.assignor);
    b.put_i32(g.subscribed.len() as i32);
    for (topic, partitions) in &g.subscribed {
        put_uuid(&mut b, topic);
        b.put_i32(*partitions);
    }
    b.put_i32(g.members.len() as i32);
    for m in &g.members {
        put_string(&mut b, &m.id);
        put_nullable_string(&mut b, m.instance_id.as_deref());
        put_nullable_string(&mut b, m.rack_id.as_deref());
        put_string(&mut b, &m.client_id);
        put_string(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.subscribed_names.len() as i32);
        for n in &m.subscribed_names {
            put_string(&mut b, n);
        }
        put_nullable_string(&mut b, m.subscribed_regex.as_deref());
        put_nullable_string(&mut b, m.server_assignor.as_deref());
        b.put_i32(m.epoch);
        b.put_i32(m.previous_epoch);
        put_assignment(&mut b, &m.assigned);
        put_assignment(&mut b, &m.pending_revocation);
        put_assignment(&mut b, &m.target);
        match &m.classic {
            None => b.put_i8(0),
            Some(c) => {
                b.put_i8(1);
                b.put_i32(c.session_timeout_ms);
                b.put_i32(c.protocols.len() as i32);
                for (name, metadata) in &c.protocols {
                    put_string(&mut b, name);
                    put_bytes(&mut b, metadata);
                }
            }
        }
    }
    b.freeze()
}

fn decode_consumer_group(v: &[u8]) -> Result<ConsumerGroupSnapshot, DecodeError> {
    let mut r = Reader {
        buf: v,
        what: "consumer group snapshot",
    };
    let version = r.i16()?;
    let group_epoch = r.i32()?;
    let assignment_epoch = r.i32()?;
    let assignor = r.string()?;
    let mut subscribed = Vec::new();
    for _ in 0..r.count()? {
        subscribed.push((r.uuid()?, r.i32()?));
    }
    let mut members = Vec::new();
    for _ in 0..r.count()? {
        let id = r.string()?;
        let instance_id = r.nullable_string()?;
        let rack_id = r.nullable_string()?;
        let client_id = r.string()?;
        let client_host = r.string()?;
        let rebalance_timeout_ms = r.i32()?;
        let mut subscribed_names = Vec::new();
        for _ in 0..r.count()? {
            subscribed_names.push(r.string()?);
        }
        members.push(MemberSnapshot {
            id,
            instance_id,
            rack_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            subscribed_names,
            subscribed_regex: r.nullable_string()?,
            server_assignor: r.nullable_string()?,
            epoch: r.i32()?,
            previous_epoch: r.i32()?,
            assigned: r.assignment()?,
            pending_revocation: r.assignment()?,
            target: r.assignment()?,
            classic: if version >= 1 && r.i8()? != 0 {
                let session_timeout_ms = r.i32()?;
                let mut protocols = Vec::new();
                for _ in 0..r.count()? {
                    protocols.push((r.string()?, r.bytes()?));
                }
                Some(ClassicMetadata {
                    session_timeout_ms,
                    protocols,
                })
            } else {
                None
            },
        });
    }
    Ok(ConsumerGroupSnapshot {
        group_epoch,
        assignment_epoch,
        assignor,
        subscribed,
        members,
    })
}

fn decode_group(v: &[u8]) -> Result<StoredGroup, DecodeError> {
    let mut r = Reader {
        buf: v,
        what: "group metadata value",
    };
    let version = r.i16()?;
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 {
            r.nullable_string()?
        } else {
            None
        };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        members.push(StoredMember {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(StoredGroup {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp_ms,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_kafka() {
        // Values computed with Java: Math.abs("group".hashCode()) % 50 etc.
        assert_eq!(partition_for("", 50), 0);
        assert_eq!(
            "group"
                .encode_utf16()
                .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(u as i32)),
            98629247
        );
        assert_eq!(partition_for("group", 50), 98629247 % 50);
        assert!((0..50).contains(&partition_for("a-very-long-group-name-that-overflows", 50)));
    }

    #[test]
    fn records_round_trip() {
        let records = [
            OffsetsRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: Some(CommittedOffset {
                    offset: 42,
                    leader_epoch: 1,
                    metadata: "m".into(),
                    commit_timestamp_ms: 7,
                }),
            },
            OffsetsRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: None,
            },
            OffsetsRecord::Group {
                group: "g".into(),
                value: Some(StoredGroup {
                    protocol_type: "consumer".into(),
                    generation: 5,
                    protocol: Some("range".into()),
                    leader: Some("m1".into()),
                    state_timestamp_ms: 9,
                    members: vec![StoredMember {
                        member_id: "m1".into(),
                        group_instance_id: Some("i1".into()),
                        client_id: "c".into(),
                        client_host: "/127.0.0.1".into(),
                        rebalance_timeout_ms: 300000,
                        session_timeout_ms: 45000,
                        subscription: Bytes::from_static(b"sub"),
                        assignment: Bytes::from_static(b"asg"),
                    }],
                }),
            },
            OffsetsRecord::Group {
                group: "g".into(),
                value: None,
            },
        ];
        for r in records {
            let (k, v) = r.encode();
            assert_eq!(OffsetsRecord::decode(&k, v.as_deref()).unwrap(), Some(r));
        }
        assert!(OffsetsRecord::decode(&[0, 1, 0], None).is_err());
        assert_eq!(OffsetsRecord::decode(&[0, 9], None).unwrap(), None);
    }
}
