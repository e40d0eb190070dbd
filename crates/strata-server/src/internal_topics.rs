//! What the coordinators share about their internal topics (`__consumer_offsets`,
//! `__transaction_state`): creating them on first use, writing records as batches, and
//! reading every record back at start-up.

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use strata_meta::{ControllerError, CreateTopicSpec};

use crate::metadata_changes::MetadataChanges;
use crate::replica_manager::ReplicaManager;

/// The error a coordinator answers when its log refuses an append, as Kafka's coordinators
/// map it: a storage failure means this broker cannot coordinate (NOT_COORDINATOR, the
/// client looks again); records too large, or anything else the log refuses in records the
/// coordinator built itself, are UNKNOWN_SERVER_ERROR.
pub fn append_error(e: &strata_log::LogError) -> ResponseError {
    match e {
        strata_log::LogError::Io { .. } | strata_log::LogError::StorageCorruption(_) => {
            ResponseError::NotCoordinator
        }
        _ => ResponseError::UnknownServerError,
    }
}

/// Bytes read per step while replaying an internal topic.
const REPLAY_READ_BYTES: usize = 1024 * 1024;

/// Creates a compacted internal topic if it does not exist yet (Kafka creates them on the
/// first FindCoordinator that needs them).
pub fn ensure_topic(
    meta: &MetadataChanges,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    segment_bytes: i64,
) -> Result<(), String> {
    if meta.image().topic(name).is_some() {
        return Ok(());
    }
    let spec = CreateTopicSpec {
        name: name.to_string(),
        num_partitions: partitions,
        replication_factor: replication_factor.max(1),
        assignments: Vec::new(),
        configs: vec![
            ("cleanup.policy".into(), Some("compact".into())),
            ("compression.type".into(), Some("producer".into())),
            ("segment.bytes".into(), Some(segment_bytes.to_string())),
        ],
    };
    let created = meta
        .commit(|image| {
            match meta
                .controller()
                .create_topic(image, &spec, (partitions, 1))
            {
                Ok((_, records)) => (records, Ok(())),
                Err(ControllerError::TopicAlreadyExists(_)) => (Vec::new(), Ok(())),
                Err(e) => (Vec::new(), Err(e)),
            }
        })
        .map_err(|e| format!("cannot create {name}: {e}"))?;
    created.map_err(|e| format!("cannot create {name}: {e}"))?;
    tracing::info!(topic = name, partitions, "created internal topic");
    Ok(())
}

/// Encodes key/value records as one uncompressed batch; `producer` makes it a transactional
/// batch of that producer (id, epoch), as the group coordinator writes TxnOffsetCommit.
pub fn encode_batch(
    records: impl IntoIterator<Item = (Bytes, Option<Bytes>)>,
    producer: Option<(i64, i16)>,
    now_ms: i64,
) -> Result<BytesMut, String> {
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let batch: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch wherever offset − sequence changes; sequences
            // that follow the offsets keep every record in one batch whose base sequence is
            // -1 (none), as Kafka's coordinators write one batch per append.
            sequence: i as i32 - 1,
            timestamp: now_ms,
            key: Some(key),
            value,
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &batch,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("cannot encode records: {e}"))?;
    Ok(buf)
}

/// A transaction marker read back: the producer and whether it committed.
pub struct Marker {
    pub producer_id: i64,
    pub commit: bool,
}

/// One record read back: a data record (with its producer id when transactional) or a
/// transaction marker.
pub enum Replayed {
    Data {
        transactional_producer: Option<i64>,
        key: Bytes,
        value: Option<Bytes>,
    },
    Marker(Marker),
}

/// Reads every record of `topic`/`partition` from the log start. Blocking.
pub fn replay(
    replicas: &ReplicaManager,
    topic: &str,
    partition: i32,
    mut each: impl FnMut(Replayed),
) -> Result<(), String> {
    let Some(hosted) = replicas.partition(topic, partition) else {
        return Ok(());
    };
    let log = hosted.log();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log
            .read(offset, REPLAY_READ_BYTES, true)
            .map_err(|e| e.to_string())?;
        if read.records.is_empty() {
            break;
        }
        let mut buf = read.records.clone();
        let sets = RecordBatchDecoder::decode_all(&mut buf)
            .map_err(|e| format!("undecodable batch in {topic}-{partition}: {e}"))?;
        let mut next = offset;
        for set in sets {
            for record in set.records {
                next = next.max(record.offset + 1);
                if record.offset < offset {
                    continue;
                }
                let Some(key) = record.key else { continue };
                if record.control {
                    // Control record key: [i16 version][i16 type: 0 abort, 1 commit].
                    if key.len() >= 4 {
                        each(Replayed::Marker(Marker {
                            producer_id: record.producer_id,
                            commit: i16::from_be_bytes([key[2], key[3]]) == 1,
                        }));
                    }
                    continue;
                }
                each(Replayed::Data {
                    transactional_producer: record.transactional.then_some(record.producer_id),
                    key,
                    value: record.value,
                });
            }
        }
        assert!(next > offset, "replaying {topic} must make progress");
        offset = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn one_append_is_one_batch_without_a_sequence() {
        for producer in [None, Some((7, 2))] {
            let records = (0..5).map(|i| (Bytes::from(format!("k{i}")), Some(Bytes::from("v"))));
            let mut buf = encode_batch(records, producer, 1_000).unwrap().freeze();
            let batches = RecordBatchDecoder::decode_batch_info(&mut buf.clone()).unwrap();
            assert_eq!(batches.len(), 1, "{producer:?}");
            assert_eq!(batches[0].record_count, 5);
            assert_eq!(batches[0].base_sequence, -1);
            let decoded = RecordBatchDecoder::decode_all(&mut buf).unwrap();
            let keys: Vec<_> = decoded[0].records.iter().map(|r| r.key.clone()).collect();
            assert_eq!(keys[4], Some(Bytes::from("k4")));
        }
    }
}
