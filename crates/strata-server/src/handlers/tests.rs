//! Handlers driven in-process, without a socket, on a whole single-node broker over real files
//! ([`TestBroker`]). Each request goes the way a client's does, minus the socket: encoded at
//! its version with a header, decoded by `strata_protocol` as the connection decodes it,
//! admitted by the session, handled with a [`RequestContext`], and the response encoded at that
//! version (a field the version lacks, set by mistake, fails the encode as it would close the
//! connection) and decoded back as the client reads it.
//!
//! What is checked: the handlers' error paths with Kafka's codes (unknown topics, partitions
//! and topic ids; not the leader; the client's leader epoch; Produce's refusals; CreateTopics'
//! validation) and what the context carries into a handler (the version, the client id, the
//! peer).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, DeleteRecordsRequest, DeleteRecordsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, DescribeProducersRequest, DescribeProducersResponse, FetchRequest,
    FetchResponse, GroupId, JoinGroupRequest, JoinGroupResponse, ListOffsetsRequest,
    ListOffsetsResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use uuid::Uuid;

use crate::session::Session;
use crate::test_fixture::{TestBroker, NODE, OTHER};

/// The client's address as the session has it.
const PEER: &str = "192.0.2.7:40001";
/// Longest a handler may take to answer before the test fails (none waits on purpose).
const ANSWER_LIMIT: Duration = Duration::from_secs(10);
const CORRELATION_ID: i32 = 7;

fn code(e: ResponseError) -> i16 {
    e.code()
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn name(v: &str) -> TopicName {
    TopicName(s(v))
}

/// A client connection as the handlers see it: a session and the client id of its headers.
struct Client {
    session: Session,
    client_id: String,
}

impl Client {
    fn new() -> Client {
        Client::at(PEER.parse().expect("addr"), "handler-test")
    }

    fn at(peer: SocketAddr, client_id: &str) -> Client {
        Client {
            session: Session::plaintext(peer),
            client_id: client_id.to_string(),
        }
    }

    /// One request/response exchange (see the module doc). `None` when the handler sends no
    /// response.
    async fn send<Req: Encodable, Resp: Decodable>(
        &mut self,
        broker: &TestBroker,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Option<Resp> {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(CORRELATION_ID)
            .with_client_id(Some(s(&self.client_id)));
        let mut frame = BytesMut::new();
        header
            .encode(&mut frame, api_key.request_header_version(version))
            .expect("request header encodes");
        request
            .encode(&mut frame, version)
            .unwrap_or_else(|e| panic!("{api_key:?} v{version} request encodes: {e:#}"));
        let frame_bytes = strata_protocol::frame::LENGTH_PREFIX_BYTES + frame.len();
        let decoded = strata_protocol::decode_request(frame.freeze())
            .unwrap_or_else(|e| panic!("{api_key:?} v{version} request decodes: {e}"));
        let mut ctx = crate::connection::admit(
            &broker.broker,
            &mut self.session,
            api_key,
            decoded.header,
            &decoded.body,
            Instant::now(),
            frame_bytes,
        )
        .expect("an API the test may send");
        let response = tokio::time::timeout(
            ANSWER_LIMIT,
            super::handle(&broker.broker, &mut ctx, decoded.body),
        )
        .await
        .unwrap_or_else(|_| panic!("{api_key:?} v{version} answered within {ANSWER_LIMIT:?}"))?;
        let chunks = strata_protocol::encode_response(CORRELATION_ID, api_key, version, &response)
            .unwrap_or_else(|e| panic!("{api_key:?} v{version} response encodes: {e:#}"));
        let mut frame = Bytes::from(chunks.concat());
        let size = frame.get_i32() as usize;
        assert_eq!(size, frame.len(), "length prefix");
        let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))
            .expect("response header decodes");
        assert_eq!(header.correlation_id, CORRELATION_ID);
        let body = Resp::decode(&mut frame, version)
            .unwrap_or_else(|e| panic!("{api_key:?} v{version} response decodes: {e:#}"));
        assert!(frame.is_empty(), "the response fills its frame");
        Some(body)
    }
}

/// One exchange on a fresh connection that must be answered.
async fn ask<Req: Encodable, Resp: Decodable>(
    broker: &TestBroker,
    api_key: ApiKey,
    version: i16,
    request: &Req,
) -> Resp {
    Client::new()
        .send(broker, api_key, version, request)
        .await
        .unwrap_or_else(|| panic!("{api_key:?} v{version} is answered"))
}

/// A broker with topic `t` of `partitions` partitions led here.
async fn broker_with_topic(partitions: i32) -> TestBroker {
    let broker = TestBroker::open(&[]).await;
    broker.create_topic("t", partitions);
    broker
}

fn topic_id(broker: &TestBroker, topic: &str) -> Uuid {
    broker.image().topic(topic).expect("topic").topic_id
}

/// One uncompressed batch of `values`, as a producer without idempotence sends it.
fn batch(values: &[&[u8]]) -> Bytes {
    let now = crate::replica_manager::now_ms();
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch while offset - sequence holds; the
            // batch's base sequence is the first record's: -1, none.
            sequence: i as i32 - 1,
            timestamp: now,
            key: None,
            value: Some(Bytes::copy_from_slice(v)),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("batch encodes");
    let header = strata_log::RecordBatchHeader::parse(&buf).expect("a batch");
    assert_eq!(header.records_count as usize, values.len(), "one batch");
    buf.freeze()
}

/// The values of every record in a fetched record set.
fn values(records: Option<Bytes>) -> Vec<Bytes> {
    let mut records = records.unwrap_or_default();
    let mut out = Vec::new();
    while records.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut records).expect("fetched batch decodes");
        out.extend(set.records.into_iter().filter_map(|r| r.value));
    }
    out
}

/// A Produce of one batch per (partition, records), to `topic` by name (or by `id` from v13).
fn produce(
    version: i16,
    topic: &str,
    id: Uuid,
    acks: i16,
    partitions: Vec<(i32, Bytes)>,
) -> ProduceRequest {
    let data = TopicProduceData::default().with_partition_data(
        partitions
            .into_iter()
            .map(|(index, records)| {
                PartitionProduceData::default()
                    .with_index(index)
                    .with_records(Some(records))
            })
            .collect(),
    );
    let data = if version >= 13 {
        data.with_topic_id(id)
    } else {
        data.with_name(name(topic))
    };
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![data])
}

/// A consumer's Fetch of partitions (index, fetch offset, current leader epoch) of `topic`,
/// by name (or by `id` from v13), answered at once.
fn fetch(version: i16, topic: &str, id: Uuid, partitions: &[(i32, i64, i32)]) -> FetchRequest {
    let wanted = FetchTopic::default().with_partitions(
        partitions
            .iter()
            .map(|&(partition, offset, epoch)| {
                FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_current_leader_epoch(if version >= 9 { epoch } else { -1 })
                    .with_partition_max_bytes(1 << 20)
            })
            .collect(),
    );
    let wanted = if version >= 13 {
        wanted.with_topic_id(id)
    } else {
        wanted.with_topic(name(topic))
    };
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_topics(vec![wanted])
}

/// ListOffsets of partitions (index, timestamp, current leader epoch) of `topic`.
fn list_offsets(version: i16, topic: &str, partitions: &[(i32, i64, i32)]) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&(index, timestamp, epoch)| {
                        ListOffsetsPartition::default()
                            .with_partition_index(index)
                            .with_timestamp(timestamp)
                            .with_current_leader_epoch(if version >= 4 { epoch } else { -1 })
                    })
                    .collect(),
            )])
}

/// OffsetForLeaderEpoch (v3+, as a consumer) of partitions (index, current leader epoch)
/// asking for the end of epoch 0.
fn offset_for_epoch(topic: &str, partitions: &[(i32, i32)]) -> OffsetForLeaderEpochRequest {
    OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&(partition, current)| {
                        OffsetForLeaderPartition::default()
                            .with_partition(partition)
                            .with_current_leader_epoch(current)
                            .with_leader_epoch(0)
                    })
                    .collect(),
            )])
}

fn delete_records(topic: &str, partitions: &[i32]) -> DeleteRecordsRequest {
    DeleteRecordsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        DeleteRecordsPartition::default()
                            .with_partition_index(p)
                            .with_offset(0)
                    })
                    .collect(),
            )])
}

fn describe_producers(topic: &str, partitions: &[i32]) -> DescribeProducersRequest {
    DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
        .with_name(name(topic))
        .with_partition_indexes(partitions.to_vec())])
}

/// Every partition error code of each API that walks partitions, for `topic` and
/// `partitions`, in request order: Produce (v9), Fetch (v10: a consumer's fetch from v11 may be
/// served by a follower, KIP-392), ListOffsets (v7),
/// OffsetForLeaderEpoch (v4), DeleteRecords (v2), DescribeProducers (v0).
async fn partition_errors(
    broker: &TestBroker,
    topic: &str,
    partitions: &[i32],
) -> Vec<(&'static str, Vec<i16>)> {
    let produced: ProduceResponse = ask(
        broker,
        ApiKey::Produce,
        9,
        &produce(
            9,
            topic,
            Uuid::nil(),
            -1,
            partitions.iter().map(|&p| (p, batch(&[b"v"]))).collect(),
        ),
    )
    .await;
    let fetched: FetchResponse = ask(
        broker,
        ApiKey::Fetch,
        10,
        &fetch(
            10,
            topic,
            Uuid::nil(),
            &partitions.iter().map(|&p| (p, 0, -1)).collect::<Vec<_>>(),
        ),
    )
    .await;
    let listed: ListOffsetsResponse = ask(
        broker,
        ApiKey::ListOffsets,
        7,
        &list_offsets(
            7,
            topic,
            &partitions.iter().map(|&p| (p, -1, -1)).collect::<Vec<_>>(),
        ),
    )
    .await;
    let epochs: OffsetForLeaderEpochResponse = ask(
        broker,
        ApiKey::OffsetForLeaderEpoch,
        4,
        &offset_for_epoch(
            topic,
            &partitions.iter().map(|&p| (p, -1)).collect::<Vec<_>>(),
        ),
    )
    .await;
    let deleted: DeleteRecordsResponse = ask(
        broker,
        ApiKey::DeleteRecords,
        2,
        &delete_records(topic, partitions),
    )
    .await;
    let producers: DescribeProducersResponse = ask(
        broker,
        ApiKey::DescribeProducers,
        0,
        &describe_producers(topic, partitions),
    )
    .await;
    vec![
        (
            "Produce",
            produced.responses[0]
                .partition_responses
                .iter()
                .map(|p| p.error_code)
                .collect(),
        ),
        (
            "Fetch",
            fetched.responses[0]
                .partitions
                .iter()
                .map(|p| p.error_code)
                .collect(),
        ),
        (
            "ListOffsets",
            listed.topics[0]
                .partitions
                .iter()
                .map(|p| p.error_code)
                .collect(),
        ),
        (
            "OffsetForLeaderEpoch",
            epochs.topics[0]
                .partitions
                .iter()
                .map(|p| p.error_code)
                .collect(),
        ),
        (
            "DeleteRecords",
            deleted.topics[0]
                .partitions
                .iter()
                .map(|p| p.error_code)
                .collect(),
        ),
        (
            "DescribeProducers",
            producers.topics[0]
                .partitions
                .iter()
                .map(|p| p.error_code)
                .collect(),
        ),
    ]
}

fn assert_all(errors: &[(&'static str, Vec<i16>)], expected: &[i16]) {
    for (api, codes) in errors {
        assert_eq!(codes, expected, "{api}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_and_partitions_are_unknown_topic_or_partition() {
    let broker = broker_with_topic(1).await;
    let unknown = code(ResponseError::UnknownTopicOrPartition);
    assert_all(
        &partition_errors(&broker, "missing", &[0]).await,
        &[unknown],
    );
    // A partition the topic does not have, beside one it has (Produce appended to it).
    assert_all(
        &partition_errors(&broker, "t", &[7, -1]).await,
        &[unknown, unknown],
    );
    assert!(
        broker.image().topic("missing").is_none(),
        "nothing is auto-created by these APIs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_ids_are_unknown_topic_id_where_the_version_uses_ids() {
    let broker = broker_with_topic(1).await;
    let id = topic_id(&broker, "t");
    let stranger = Uuid::new_v4();
    // Produce v13 names topics by id only, and so does its answer.
    let produced: ProduceResponse = ask(
        &broker,
        ApiKey::Produce,
        13,
        &produce(13, "", stranger, -1, vec![(0, batch(&[b"a"]))]),
    )
    .await;
    assert_eq!(produced.responses[0].topic_id, stranger);
    assert_eq!(
        produced.responses[0].partition_responses[0].error_code,
        code(ResponseError::UnknownTopicId)
    );
    let produced: ProduceResponse = ask(
        &broker,
        ApiKey::Produce,
        13,
        &produce(
            13,
            "",
            id,
            -1,
            vec![(0, batch(&[b"a"])), (3, batch(&[b"b"]))],
        ),
    )
    .await;
    let answers = &produced.responses[0].partition_responses;
    assert_eq!(produced.responses[0].topic_id, id);
    assert_eq!((answers[0].error_code, answers[0].base_offset), (0, 0));
    assert_eq!(
        answers[1].error_code,
        code(ResponseError::UnknownTopicOrPartition),
        "a known id with a partition it lacks"
    );
    // Fetch v13+ likewise.
    for version in [13, 16] {
        let fetched: FetchResponse = ask(
            &broker,
            ApiKey::Fetch,
            version,
            &fetch(version, "", stranger, &[(0, 0, -1)]),
        )
        .await;
        assert_eq!(fetched.responses[0].topic_id, stranger);
        assert_eq!(
            fetched.responses[0].partitions[0].error_code,
            code(ResponseError::UnknownTopicId),
            "v{version}"
        );
        let fetched: FetchResponse = ask(
            &broker,
            ApiKey::Fetch,
            version,
            &fetch(version, "", id, &[(0, 0, -1), (5, 0, -1)]),
        )
        .await;
        let partitions = &fetched.responses[0].partitions;
        assert_eq!(partitions[0].error_code, 0);
        assert_eq!(
            values(partitions[0].records.clone()),
            vec![Bytes::from("a")]
        );
        assert_eq!(
            partitions[1].error_code,
            code(ResponseError::UnknownTopicOrPartition)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_led_elsewhere_are_not_leader_or_follower_with_the_leader() {
    // Partition 0: a follower here; partition 1: not hosted here at all.
    let broker = broker_with_topic(2).await;
    broker.register_other();
    broker.move_partition("t", 0, vec![OTHER, NODE], OTHER);
    broker.move_partition("t", 1, vec![OTHER], OTHER);
    assert!(
        broker.broker.replicas.partition("t", 0).is_some(),
        "a follower here"
    );
    let not_leader = code(ResponseError::NotLeaderOrFollower);
    assert_all(
        &partition_errors(&broker, "t", &[0, 1]).await,
        &[not_leader, not_leader],
    );
    // KIP-951: Produce v10+ and Fetch v12+ name the leader, and the newest versions say where
    // to reach it.
    let produced: ProduceResponse = ask(
        &broker,
        ApiKey::Produce,
        12,
        &produce(12, "t", Uuid::nil(), 1, vec![(0, batch(&[b"a"]))]),
    )
    .await;
    let answer = &produced.responses[0].partition_responses[0];
    assert_eq!(answer.error_code, not_leader);
    assert_eq!(
        (
            answer.current_leader.leader_id,
            answer.current_leader.leader_epoch
        ),
        (BrokerId(OTHER), 1)
    );
    let endpoints: Vec<_> = produced
        .node_endpoints
        .iter()
        .map(|e| (e.node_id, e.host.to_string(), e.port))
        .collect();
    assert_eq!(
        endpoints,
        vec![(BrokerId(OTHER), "localhost".to_string(), 9093)]
    );
    // A consumer's Fetch v11+ may read from a follower (KIP-392); v10 may not.
    let fetched: FetchResponse = ask(
        &broker,
        ApiKey::Fetch,
        10,
        &fetch(10, "t", Uuid::nil(), &[(0, 0, -1)]),
    )
    .await;
    assert_eq!(fetched.responses[0].partitions[0].error_code, not_leader);
    let fetched: FetchResponse = ask(
        &broker,
        ApiKey::Fetch,
        16,
        &fetch(16, "t", topic_id(&broker, "t"), &[(1, 0, -1)]),
    )
    .await;
    let answer = &fetched.responses[0].partitions[0];
    assert_eq!(answer.error_code, not_leader);
    assert_eq!(answer.current_leader.leader_id, BrokerId(OTHER));
    assert_eq!(fetched.node_endpoints.len(), 1);
}

/// The error codes of ListOffsets (v4+), OffsetForLeaderEpoch and Fetch (v9+) for partition 0
/// of `t` when the client names `epoch` as the current leader epoch.
async fn epoch_errors(broker: &TestBroker, epoch: i32) -> [i16; 3] {
    let listed: ListOffsetsResponse = ask(
        broker,
        ApiKey::ListOffsets,
        7,
        &list_offsets(7, "t", &[(0, -1, epoch)]),
    )
    .await;
    let epochs: OffsetForLeaderEpochResponse = ask(
        broker,
        ApiKey::OffsetForLeaderEpoch,
        4,
        &offset_for_epoch("t", &[(0, epoch)]),
    )
    .await;
    let fetched: FetchResponse = ask(
        broker,
        ApiKey::Fetch,
        12,
        &fetch(12, "t", Uuid::nil(), &[(0, 0, epoch)]),
    )
    .await;
    [
        listed.topics[0].partitions[0].error_code,
        epochs.topics[0].partitions[0].error_code,
        fetched.responses[0].partitions[0].error_code,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_checks_the_clients_leader_epoch() {
    let broker = broker_with_topic(1).await;
    // The leader moves to epoch 1, still here.
    broker.move_partition("t", 0, vec![NODE], NODE);
    let fenced = code(ResponseError::FencedLeaderEpoch);
    let unknown = code(ResponseError::UnknownLeaderEpoch);
    assert_eq!(
        epoch_errors(&broker, -1).await,
        [0; 3],
        "no epoch: no check"
    );
    assert_eq!(epoch_errors(&broker, 1).await, [0; 3], "the current epoch");
    assert_eq!(
        epoch_errors(&broker, 0).await,
        [fenced; 3],
        "an older epoch"
    );
    assert_eq!(
        epoch_errors(&broker, 2).await,
        [unknown; 3],
        "a newer epoch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_checks_the_clients_leader_epoch_before_its_role() {
    // Kafka's `Partition.getLocalLog`: a replica here answers a stale epoch FENCED_LEADER_EPOCH
    // and a newer one UNKNOWN_LEADER_EPOCH (the client retries here, where leadership may be
    // about to arrive); a client with the current epoch learns that this is not the leader
    // (ListOffsets, OffsetForLeaderEpoch) or is served by the follower (Fetch v12, KIP-392).
    let broker = broker_with_topic(1).await;
    broker.register_other();
    broker.move_partition("t", 0, vec![OTHER, NODE], OTHER);
    let fenced = code(ResponseError::FencedLeaderEpoch);
    let unknown = code(ResponseError::UnknownLeaderEpoch);
    let not_leader = code(ResponseError::NotLeaderOrFollower);
    assert_eq!(
        epoch_errors(&broker, 0).await,
        [fenced; 3],
        "an older epoch"
    );
    assert_eq!(
        epoch_errors(&broker, 2).await,
        [unknown; 3],
        "a newer epoch"
    );
    assert_eq!(
        epoch_errors(&broker, 1).await,
        [not_leader, not_leader, 0],
        "the current epoch"
    );
    assert_eq!(epoch_errors(&broker, -1).await, [not_leader, not_leader, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_appends_and_fetch_reads_what_was_appended() {
    let broker = broker_with_topic(2).await;
    let produced: ProduceResponse = ask(
        &broker,
        ApiKey::Produce,
        9,
        &produce(
            9,
            "t",
            Uuid::nil(),
            -1,
            vec![(0, batch(&[b"a", b"b", b"c"])), (1, batch(&[b"x"]))],
        ),
    )
    .await;
    let offsets: Vec<_> = produced.responses[0]
        .partition_responses
        .iter()
        .map(|p| (p.index, p.error_code, p.base_offset, p.log_start_offset))
        .collect();
    assert_eq!(offsets, vec![(0, 0, 0, 0), (1, 0, 0, 0)]);
    let produced: ProduceResponse = ask(
        &broker,
        ApiKey::Produce,
        3,
        &produce(3, "t", Uuid::nil(), 1, vec![(0, batch(&[b"d"]))]),
    )
    .await;
    assert_eq!(produced.responses[0].partition_responses[0].base_offset, 3);
    // acks=0: appended, and no response at all.
    let silent: Option<ProduceResponse> = Client::new()
        .send(
            &broker,
            ApiKey::Produce,
            9,
            &produce(9, "t", Uuid::nil(), 0, vec![(0, batch(&[b"e"]))]),
        )
        .await;
    assert!(silent.is_none(), "acks=0 is not answered");
    for version in [4, 11, 12] {
        let fetched: FetchResponse = ask(
            &broker,
            ApiKey::Fetch,
            version,
            &fetch(version, "t", Uuid::nil(), &[(0, 0, -1), (1, 0, -1)]),
        )
        .await;
        let partitions = &fetched.responses[0].partitions;
        assert_eq!(partitions[0].error_code, 0, "v{version}");
        assert_eq!(partitions[0].high_watermark, 5, "v{version}");
        assert_eq!(
            values(partitions[0].records.clone()),
            ["a", "b", "c", "d", "e"].map(Bytes::from),
            "v{version}"
        );
        assert_eq!(values(partitions[1].records.clone()), [Bytes::from("x")]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_refusals_are_answered_with_kafkas_codes() {
    let broker = TestBroker::open(&[]).await;
    let created: CreateTopicsResponse = ask(
        &broker,
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(name("small"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![CreatableTopicConfig::default()
                .with_name(s("max.message.bytes"))
                .with_value(Some(s("200")))])]),
    )
    .await;
    assert_eq!(created.topics[0].error_code, 0);
    let one =
        |acks: i16, records: Bytes| produce(9, "small", Uuid::nil(), acks, vec![(0, records)]);
    let error_of = |r: ProduceResponse| r.responses[0].partition_responses[0].error_code;
    for acks in [2, -2, 5] {
        let r: ProduceResponse = ask(&broker, ApiKey::Produce, 9, &one(acks, batch(&[b"a"]))).await;
        assert_eq!(
            error_of(r),
            code(ResponseError::InvalidRequiredAcks),
            "acks={acks}"
        );
    }
    // A batch whose bytes no longer match its CRC.
    let mut corrupt = BytesMut::from(&batch(&[b"intact"])[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let r: ProduceResponse = ask(&broker, ApiKey::Produce, 9, &one(1, corrupt.freeze())).await;
    assert_eq!(error_of(r), code(ResponseError::CorruptMessage));
    // A batch over the topic's max.message.bytes.
    let r: ProduceResponse = ask(&broker, ApiKey::Produce, 9, &one(1, batch(&[&[7u8; 300]]))).await;
    assert_eq!(error_of(r), code(ResponseError::MessageTooLarge));
    let log_end = broker
        .broker
        .replicas
        .partition("small", 0)
        .expect("hosted")
        .log()
        .log_end_offset();
    assert_eq!(log_end, 0, "nothing refused reached the log");
    let r: ProduceResponse = ask(&broker, ApiKey::Produce, 9, &one(1, batch(&[b"fits"]))).await;
    assert_eq!(error_of(r), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_validates_as_kafka_does() {
    let broker = broker_with_topic(1).await;
    let topic = |n: &str, partitions: i32, replication: i16| {
        CreatableTopic::default()
            .with_name(name(n))
            .with_num_partitions(partitions)
            .with_replication_factor(replication)
    };
    let long = "x".repeat(250);
    let request = CreateTopicsRequest::default().with_topics(vec![
        topic("", 1, 1),
        topic(".", 1, 1),
        topic("..", 1, 1),
        topic("has space", 1, 1),
        topic(&long, 1, 1),
        topic("zero-partitions", 0, 1),
        topic("negative-partitions", -2, 1),
        topic("zero-replicas", 1, 0),
        topic("three-replicas", 1, 3),
        topic("t", 1, 1),
        topic("twice", 1, 1),
        topic("twice", 2, 1),
        topic("ok", 3, -1),
    ]);
    let created: CreateTopicsResponse = ask(&broker, ApiKey::CreateTopics, 7, &request).await;
    let answers: std::collections::HashMap<String, (i16, i32, i16)> = created
        .topics
        .iter()
        .map(|t| {
            (
                t.name.to_string(),
                (t.error_code, t.num_partitions, t.replication_factor),
            )
        })
        .collect();
    assert_eq!(answers.len(), 12, "one answer per name: {answers:?}");
    let error = |n: &str| answers[n].0;
    for bad in ["", ".", "..", "has space", long.as_str()] {
        assert_eq!(
            error(bad),
            code(ResponseError::InvalidTopicException),
            "{bad:?}"
        );
    }
    assert_eq!(
        error("zero-partitions"),
        code(ResponseError::InvalidPartitions)
    );
    assert_eq!(
        error("negative-partitions"),
        code(ResponseError::InvalidPartitions)
    );
    assert_eq!(
        error("zero-replicas"),
        code(ResponseError::InvalidReplicationFactor)
    );
    assert_eq!(
        error("three-replicas"),
        code(ResponseError::InvalidReplicationFactor),
        "more replicas than brokers"
    );
    assert_eq!(error("t"), code(ResponseError::TopicAlreadyExists));
    assert_eq!(error("twice"), code(ResponseError::InvalidRequest));
    assert_eq!(
        answers["zero-replicas"].1, -1,
        "a refused topic has no partitions"
    );
    assert_eq!(answers["ok"], (0, 3, 1), "defaults fill -1");
    let image = broker.image();
    let mut exists: Vec<_> = answers
        .keys()
        .filter(|n| image.topic(n).is_some())
        .cloned()
        .collect();
    exists.sort();
    assert_eq!(exists, ["ok", "t"], "only the valid topic was created");
    assert!(
        broker.broker.replicas.partition("ok", 2).is_some(),
        "its logs are open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_validate_only_creates_nothing() {
    let broker = TestBroker::open(&[]).await;
    let request = CreateTopicsRequest::default()
        .with_validate_only(true)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name("dry"))
                .with_num_partitions(2)
                .with_replication_factor(1),
            CreatableTopic::default()
                .with_name(name("bad/name"))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
    let created: CreateTopicsResponse = ask(&broker, ApiKey::CreateTopics, 5, &request).await;
    let answers: Vec<_> = created
        .topics
        .iter()
        .map(|t| (t.name.to_string(), t.error_code, t.num_partitions))
        .collect();
    assert_eq!(
        answers,
        [
            ("dry".to_string(), 0, 2),
            (
                "bad/name".to_string(),
                code(ResponseError::InvalidTopicException),
                -1
            )
        ]
    );
    assert!(
        created.topics[0]
            .configs
            .as_ref()
            .is_some_and(|c| !c.is_empty()),
        "v5 answers the configs"
    );
    assert!(
        broker.image().topic("dry").is_none(),
        "validate_only commits nothing"
    );
    assert!(broker.broker.replicas.partition("dry", 0).is_none());
    assert!(
        !broker.dir.path().join("logs").join("dry-0").exists(),
        "and opens no log"
    );
    // The same request for real creates it.
    let created: CreateTopicsResponse = ask(
        &broker,
        ApiKey::CreateTopics,
        5,
        &request.with_validate_only(false),
    )
    .await;
    assert_eq!(created.topics[0].error_code, 0);
    assert!(broker.image().topic("dry").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_version_decides_the_shape_of_list_offsets() {
    let broker = broker_with_topic(1).await;
    broker.move_partition("t", 0, vec![NODE], NODE);
    let _: ProduceResponse = ask(
        &broker,
        ApiKey::Produce,
        9,
        &produce(9, "t", Uuid::nil(), -1, vec![(0, batch(&[b"a", b"b"]))]),
    )
    .await;
    // v1..v3 have no leader epoch field: a handler that set one could not be encoded.
    for version in 1..=10 {
        let listed: ListOffsetsResponse = ask(
            &broker,
            ApiKey::ListOffsets,
            version,
            &list_offsets(version, "t", &[(0, -1, -1), (0, -2, -1)]),
        )
        .await;
        let answers: Vec<_> = listed.topics[0]
            .partitions
            .iter()
            .map(|p| (p.error_code, p.offset, p.leader_epoch))
            .collect();
        let epoch = if version >= 4 { 1 } else { -1 };
        assert_eq!(answers, [(0, 2, epoch), (0, 0, epoch)], "v{version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_id_and_peer_of_the_context_reach_the_group_members() {
    let broker = TestBroker::open(&[]).await;
    let mut client = Client::at("198.51.100.9:51000".parse().expect("addr"), "app-1");
    let join = |member: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s(member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"meta"))])
    };
    // v4+: a first join without a member id is given one to join with (KIP-394).
    let first: JoinGroupResponse = client
        .send(&broker, ApiKey::JoinGroup, 5, &join(""))
        .await
        .expect("answered");
    assert_eq!(first.error_code, code(ResponseError::MemberIdRequired));
    assert!(!first.member_id.is_empty());
    let joined: JoinGroupResponse = client
        .send(&broker, ApiKey::JoinGroup, 5, &join(&first.member_id))
        .await
        .expect("answered");
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.member_id, first.member_id);
    let described: DescribeGroupsResponse = ask(
        &broker,
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
    )
    .await;
    let members: Vec<_> = described.groups[0]
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.client_id.to_string(),
                m.client_host.to_string(),
            )
        })
        .collect();
    assert_eq!(
        members,
        [(
            first.member_id.to_string(),
            "app-1".to_string(),
            "/198.51.100.9".to_string(),
        )]
    );
    // Until the leader syncs, Kafka describes members without their metadata.
    assert_eq!(
        described.groups[0].group_state.as_str(),
        "CompletingRebalance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_names_the_client_software_on_the_session() {
    let broker = TestBroker::open(&[]).await;
    let mut client = Client::new();
    let request = ApiVersionsRequest::default()
        .with_client_software_name(s("strata-test"))
        .with_client_software_version(s("1.0"));
    let answer: ApiVersionsResponse = client
        .send(&broker, ApiKey::ApiVersions, 3, &request)
        .await
        .expect("answered");
    assert_eq!(answer.error_code, 0);
    let produce = answer
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Produce as i16)
        .expect("Produce is served");
    assert_eq!((produce.min_version, produce.max_version), (3, 13));
    let software = client.session.client_software.clone().expect("noted");
    assert_eq!(
        (software.name.as_str(), software.version.as_str()),
        ("strata-test", "1.0")
    );
    assert!(client
        .session
        .admit(ApiKey::Produce, std::time::Instant::now())
        .is_ok());
    // v3 checks the names as Kafka does: an invalid one is INVALID_REQUEST and is not kept.
    let mut other = Client::new();
    let answer: ApiVersionsResponse = other
        .send(
            &broker,
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default()
                .with_client_software_name(s("bad name"))
                .with_client_software_version(s("1")),
        )
        .await
        .expect("answered");
    assert_eq!(answer.error_code, code(ResponseError::InvalidRequest));
    assert!(other.session.client_software.is_none());
}

/// An AlterClientQuotas request setting (or, with `None`, removing) one quota of one entity.
fn quota_alteration(
    kind: &str,
    name: Option<&str>,
    key: &str,
    value: Option<f64>,
) -> kafka_protocol::messages::AlterClientQuotasRequest {
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
    kafka_protocol::messages::AlterClientQuotasRequest::default().with_entries(vec![
        EntryData::default()
            .with_entity(vec![EntityData::default()
                .with_entity_type(s(kind))
                .with_entity_name(name.map(s))])
            .with_ops(vec![OpData::default()
                .with_key(s(key))
                .with_value(value.unwrap_or_default())
                .with_remove(value.is_none())]),
    ])
}

/// AlterClientQuotas and DescribeClientQuotas through the codec at both versions: quotas are
/// set, validated only, refused with Kafka's codes and messages, described by filter, removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_quotas_are_altered_and_described_with_kafkas_codes() {
    use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
    use kafka_protocol::messages::{
        AlterClientQuotasResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse,
    };

    let broker = TestBroker::open(&[]).await;
    let outcome = |r: &AlterClientQuotasResponse| -> Vec<(i16, Option<String>)> {
        r.entries
            .iter()
            .map(|e| {
                (
                    e.error_code,
                    e.error_message.as_ref().map(|m| m.to_string()),
                )
            })
            .collect()
    };
    for version in [0, 1] {
        let alice = quota_alteration("user", Some("alice"), "producer_byte_rate", Some(1024.0));
        let checked: AlterClientQuotasResponse = ask(
            &broker,
            ApiKey::AlterClientQuotas,
            version,
            &alice.clone().with_validate_only(true),
        )
        .await;
        assert_eq!(outcome(&checked), vec![(0, None)]);
        assert!(
            broker.image().all_client_quotas().next().is_none(),
            "validate only"
        );
        let set: AlterClientQuotasResponse =
            ask(&broker, ApiKey::AlterClientQuotas, version, &alice).await;
        assert_eq!(outcome(&set), vec![(0, None)]);
        let default_user = quota_alteration("user", None, "consumer_byte_rate", Some(2048.0));
        let _: AlterClientQuotasResponse =
            ask(&broker, ApiKey::AlterClientQuotas, version, &default_user).await;
        let bad: AlterClientQuotasResponse = ask(
            &broker,
            ApiKey::AlterClientQuotas,
            version,
            &quota_alteration("user", Some("bob"), "producer_byte_rate", Some(-1.0)),
        )
        .await;
        assert_eq!(
            outcome(&bad),
            vec![(
                code(ResponseError::InvalidRequest),
                Some("Quota producer_byte_rate must be greater than 0".into())
            )]
        );

        let describe = |components: Vec<ComponentData>, strict| {
            DescribeClientQuotasRequest::default()
                .with_components(components)
                .with_strict(strict)
        };
        let user = |match_type: i8, name: Option<&str>| {
            ComponentData::default()
                .with_entity_type(s("user"))
                .with_match_type(match_type)
                .with_match(name.map(s))
        };
        let found: DescribeClientQuotasResponse = ask(
            &broker,
            ApiKey::DescribeClientQuotas,
            version,
            &describe(vec![user(2, None)], false),
        )
        .await;
        assert_eq!(found.error_code, 0);
        /// An entity's (only) name and its quotas.
        type Described = (Option<String>, Vec<(String, f64)>);
        let entries: Vec<Described> = found
            .entries
            .expect("entries")
            .iter()
            .map(|e| {
                (
                    e.entity[0].entity_name.as_ref().map(|n| n.to_string()),
                    e.values
                        .iter()
                        .map(|v| (v.key.to_string(), v.value))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                (None, vec![("consumer_byte_rate".into(), 2048.0)]),
                (
                    Some("alice".into()),
                    vec![("producer_byte_rate".into(), 1024.0)]
                ),
            ]
        );
        let exact: DescribeClientQuotasResponse = ask(
            &broker,
            ApiKey::DescribeClientQuotas,
            version,
            &describe(vec![user(0, Some("alice"))], true),
        )
        .await;
        assert_eq!(exact.entries.map(|e| e.len()), Some(1));
        let refused: DescribeClientQuotasResponse = ask(
            &broker,
            ApiKey::DescribeClientQuotas,
            version,
            &describe(vec![user(0, None)], false),
        )
        .await;
        assert_eq!(
            (refused.error_code, refused.entries.is_none()),
            (code(ResponseError::InvalidRequest), true)
        );
        let unknown_type: DescribeClientQuotasResponse = ask(
            &broker,
            ApiKey::DescribeClientQuotas,
            version,
            &describe(
                vec![ComponentData::default()
                    .with_entity_type(s("group"))
                    .with_match_type(2)
                    .with_match(None)],
                false,
            ),
        )
        .await;
        assert_eq!(
            unknown_type.error_code,
            code(ResponseError::UnsupportedVersion)
        );

        for removal in [
            quota_alteration("user", Some("alice"), "producer_byte_rate", None),
            quota_alteration("user", None, "consumer_byte_rate", None),
        ] {
            let removed: AlterClientQuotasResponse =
                ask(&broker, ApiKey::AlterClientQuotas, version, &removal).await;
            assert_eq!(outcome(&removed), vec![(0, None)]);
        }
        assert!(broker.image().all_client_quotas().next().is_none());
    }
}

/// AlterUserScramCredentials and DescribeUserScramCredentials v0 through the codec: the
/// stored credential holds keys derived from the salted password, describe shows only
/// mechanism and iterations, and refusals carry Kafka's codes and messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_credentials_are_altered_and_described_with_kafkas_codes() {
    use kafka_protocol::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };
    use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
    use kafka_protocol::messages::{
        AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
        DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
    };
    use strata_meta::scram::ScramMechanism;

    let broker = TestBroker::open(&[]).await;
    let m = ScramMechanism::ScramSha256;
    let salted = m.salted_password(b"alice-secret", b"salt", 4096);
    let upsert = |user: &str, iterations: i32| {
        ScramCredentialUpsertion::default()
            .with_name(s(user))
            .with_mechanism(1)
            .with_iterations(iterations)
            .with_salt(Bytes::from_static(b"salt"))
            .with_salted_password(Bytes::from(salted.clone()))
    };
    let alter = AlterUserScramCredentialsRequest::default()
        .with_upsertions(vec![upsert("alice", 4096), upsert("bob", 100)])
        .with_deletions(vec![ScramCredentialDeletion::default()
            .with_name(s("nobody"))
            .with_mechanism(1)]);
    let resp: AlterUserScramCredentialsResponse =
        ask(&broker, ApiKey::AlterUserScramCredentials, 0, &alter).await;
    let outcome: Vec<(String, i16, Option<String>)> = resp
        .results
        .iter()
        .map(|r| {
            (
                r.user.to_string(),
                r.error_code,
                r.error_message.as_ref().map(|m| m.to_string()),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        vec![
            ("alice".into(), 0, None),
            (
                "bob".into(),
                code(ResponseError::UnacceptableCredential),
                Some("Too few iterations".into())
            ),
            (
                "nobody".into(),
                code(ResponseError::ResourceNotFound),
                Some("Attempt to delete a user credential that does not exist".into())
            ),
        ]
    );
    let stored = broker
        .image()
        .scram_credential("alice", m)
        .cloned()
        .expect("stored");
    assert_eq!(stored.stored_key, m.stored_key(&m.client_key(&salted)));

    let describe = DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
        UserName::default().with_name(s("alice")),
        UserName::default().with_name(s("carol")),
        UserName::default().with_name(s("carol")),
        UserName::default().with_name(s("dave")),
    ]));
    let resp: DescribeUserScramCredentialsResponse =
        ask(&broker, ApiKey::DescribeUserScramCredentials, 0, &describe).await;
    assert_eq!(resp.error_code, 0);
    type Described = (String, i16, Vec<(i8, i32)>);
    let results: Vec<Described> = resp
        .results
        .iter()
        .map(|r| {
            (
                r.user.to_string(),
                r.error_code,
                r.credential_infos
                    .iter()
                    .map(|c| (c.mechanism, c.iterations))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        results,
        vec![
            ("alice".into(), 0, vec![(1, 4096)]),
            (
                "carol".into(),
                code(ResponseError::DuplicateResource),
                vec![]
            ),
            ("dave".into(), code(ResponseError::ResourceNotFound), vec![]),
        ]
    );
    let all: DescribeUserScramCredentialsResponse = ask(
        &broker,
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default().with_users(None),
    )
    .await;
    assert_eq!(
        all.results
            .iter()
            .map(|r| r.user.to_string())
            .collect::<Vec<_>>(),
        vec!["alice".to_string()]
    );
}

/// CreateAcls / DescribeAcls / DeleteAcls and the authorizer (issue 16, section 4).
mod acls {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
        DescribeAclsRequest, DescribeAclsResponse, MetadataRequest, MetadataResponse,
    };
    use strata_meta::acl::{
        AclBinding, AclOperation, AclPermissionType, PatternType, ResourceType,
    };
    use strata_meta::config::STANDARD_AUTHORIZER;
    use strata_meta::MetadataRecord;

    use super::*;

    const TOPIC: i8 = 2;
    const LITERAL: i8 = 3;
    const PREFIXED: i8 = 4;
    const ANY: i8 = 1;
    const READ: i8 = 3;
    const WRITE: i8 = 4;
    const ALLOW: i8 = 3;
    const DENY: i8 = 2;

    fn creation(name: &str, pattern: i8, principal: &str, op: i8, permission: i8) -> AclCreation {
        AclCreation::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s(name))
            .with_resource_pattern_type(pattern)
            .with_principal(s(principal))
            .with_host(s("*"))
            .with_operation(op)
            .with_permission_type(permission)
    }

    /// The filter of every ACL (the generated defaults are empty strings, not nulls).
    fn describe_all() -> DescribeAclsRequest {
        DescribeAclsRequest::default()
            .with_resource_name_filter(None)
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_resource_type_filter(ANY)
            .with_pattern_type_filter(ANY)
            .with_operation(ANY)
            .with_permission_type(ANY)
    }

    /// An ACL on a topic written straight to the metadata, as an administrator's CreateAcls
    /// would.
    fn grant(
        broker: &TestBroker,
        name: &str,
        principal: &str,
        op: AclOperation,
        permission: AclPermissionType,
    ) {
        grant_on(broker, ResourceType::Topic, name, principal, op, permission)
    }

    fn grant_on(
        broker: &TestBroker,
        resource_type: ResourceType,
        name: &str,
        principal: &str,
        op: AclOperation,
        permission: AclPermissionType,
    ) {
        broker
            .broker
            .meta
            .commit(|_| {
                (
                    vec![MetadataRecord::AccessControlEntry {
                        id: Uuid::new_v4(),
                        acl: AclBinding {
                            resource_type,
                            resource_name: name.into(),
                            pattern_type: PatternType::Literal,
                            principal: principal.into(),
                            host: "*".into(),
                            operation: op,
                            permission,
                        },
                    }],
                    (),
                )
            })
            .expect("commit");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acl_apis_are_security_disabled_without_an_authorizer() {
        let broker = TestBroker::open(&[]).await;
        let request = CreateAclsRequest::default()
            .with_creations(vec![creation("t", LITERAL, "User:a", READ, ALLOW)]);
        let created: CreateAclsResponse = ask(&broker, ApiKey::CreateAcls, 3, &request).await;
        assert_eq!(
            created.results[0].error_code,
            code(ResponseError::SecurityDisabled)
        );
        let described: DescribeAclsResponse =
            ask(&broker, ApiKey::DescribeAcls, 1, &describe_all()).await;
        assert_eq!(described.error_code, code(ResponseError::SecurityDisabled));
        let deleted: DeleteAclsResponse = ask(
            &broker,
            ApiKey::DeleteAcls,
            2,
            &DeleteAclsRequest::default().with_filters(vec![DeleteAclsFilter::default()
                .with_resource_name_filter(None)
                .with_principal_filter(None)
                .with_host_filter(None)
                .with_resource_type_filter(ANY)
                .with_pattern_type_filter(ANY)
                .with_operation(ANY)
                .with_permission_type(ANY)]),
        )
        .await;
        assert_eq!(
            deleted.filter_results[0].error_code,
            code(ResponseError::SecurityDisabled)
        );
        assert!(broker.image().acls().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acls_are_created_described_and_deleted_by_filter() {
        // The client is User:ANONYMOUS (PLAINTEXT); as a super user it may alter the cluster.
        let broker = TestBroker::open(&[
            ("authorizer.class.name", STANDARD_AUTHORIZER),
            ("super.users", "User:ANONYMOUS"),
        ])
        .await;
        for version in [2, 3] {
            let request = CreateAclsRequest::default().with_creations(vec![
                creation("t", LITERAL, "User:alice", READ, ALLOW),
                creation("t", PREFIXED, "User:bob", WRITE, DENY),
                creation("", LITERAL, "User:alice", READ, ALLOW),
                creation("u", LITERAL, "alice", READ, ALLOW),
                creation("u", 2, "User:alice", READ, ALLOW),
            ]);
            let created: CreateAclsResponse =
                ask(&broker, ApiKey::CreateAcls, version, &request).await;
            let codes: Vec<i16> = created.results.iter().map(|r| r.error_code).collect();
            let invalid = code(ResponseError::InvalidRequest);
            assert_eq!(codes, [0, 0, invalid, invalid, invalid], "v{version}");
        }
        assert_eq!(
            broker.image().acls().len(),
            2,
            "a repeated creation is stored once"
        );
        for version in 1..=3 {
            let described: DescribeAclsResponse =
                ask(&broker, ApiKey::DescribeAcls, version, &describe_all()).await;
            assert_eq!(described.error_code, 0);
            let resources: Vec<(String, i8, usize)> = described
                .resources
                .iter()
                .map(|r| (r.resource_name.to_string(), r.pattern_type, r.acls.len()))
                .collect();
            assert_eq!(
                resources,
                [
                    ("t".to_string(), LITERAL, 1),
                    ("t".to_string(), PREFIXED, 1)
                ]
            );
        }
        // MATCH: the ACLs that apply to topic `tx`: the prefixed one only.
        let matching = describe_all()
            .with_resource_type_filter(TOPIC)
            .with_resource_name_filter(Some(s("tx")))
            .with_pattern_type_filter(2);
        let described: DescribeAclsResponse =
            ask(&broker, ApiKey::DescribeAcls, 3, &matching).await;
        assert_eq!(described.resources.len(), 1);
        assert_eq!(
            described.resources[0].acls[0].principal.as_str(),
            "User:bob"
        );
        let unknown = describe_all().with_operation(0);
        let described: DescribeAclsResponse = ask(&broker, ApiKey::DescribeAcls, 3, &unknown).await;
        assert_eq!(described.error_code, code(ResponseError::InvalidRequest));

        let by_principal = DeleteAclsFilter::default()
            .with_resource_name_filter(None)
            .with_host_filter(None)
            .with_resource_type_filter(ANY)
            .with_pattern_type_filter(ANY)
            .with_principal_filter(Some(s("User:alice")))
            .with_operation(ANY)
            .with_permission_type(ANY);
        let deleted: DeleteAclsResponse = ask(
            &broker,
            ApiKey::DeleteAcls,
            3,
            &DeleteAclsRequest::default().with_filters(vec![by_principal.clone(), by_principal]),
        )
        .await;
        for result in &deleted.filter_results {
            assert_eq!(result.error_code, 0);
            assert_eq!(result.matching_acls.len(), 1);
            assert_eq!(result.matching_acls[0].resource_name.as_str(), "t");
            assert_eq!(result.matching_acls[0].operation, READ);
        }
        let image = broker.image();
        let left: Vec<&str> = image
            .acls()
            .iter()
            .map(|(_, a)| a.principal.as_str())
            .collect();
        assert_eq!(left, ["User:bob"]);
    }

    fn produce_code(response: &ProduceResponse) -> i16 {
        response.responses[0].partition_responses[0].error_code
    }

    async fn metadata(broker: &TestBroker, topics: Option<&[&str]>) -> Vec<(String, i16)> {
        let request = MetadataRequest::default().with_topics(topics.map(|names| {
            names
                .iter()
                .map(|n| MetadataRequestTopic::default().with_name(Some(name(n))))
                .collect()
        }));
        let response: MetadataResponse = ask(broker, ApiKey::Metadata, 12, &request).await;
        response
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                    t.error_code,
                )
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_authorizer_checks_topics_and_the_cluster_for_the_principal() {
        let broker = TestBroker::open(&[
            ("authorizer.class.name", STANDARD_AUTHORIZER),
            ("auto.create.topics.enable", "true"),
        ])
        .await;
        broker.create_topic("t", 1);
        let denied_topic = code(ResponseError::TopicAuthorizationFailed);
        let denied_cluster = code(ResponseError::ClusterAuthorizationFailed);
        // No ACLs, no super user, allow.everyone.if.no.acl.found false: nothing is allowed.
        let request = CreateAclsRequest::default().with_creations(vec![creation(
            "t",
            LITERAL,
            "User:ANONYMOUS",
            READ,
            ALLOW,
        )]);
        let created: CreateAclsResponse = ask(&broker, ApiKey::CreateAcls, 3, &request).await;
        assert_eq!(created.results[0].error_code, denied_cluster);
        let described: DescribeAclsResponse =
            ask(&broker, ApiKey::DescribeAcls, 3, &describe_all()).await;
        assert_eq!(described.error_code, denied_cluster);
        let send = |version| produce(version, "t", Uuid::nil(), -1, vec![(0, batch(&[b"a"]))]);
        let produced: ProduceResponse = ask(&broker, ApiKey::Produce, 9, &send(9)).await;
        assert_eq!(produce_code(&produced), denied_topic);
        let read = fetch(12, "t", Uuid::nil(), &[(0, 0, -1)]);
        let fetched: FetchResponse = ask(&broker, ApiKey::Fetch, 12, &read).await;
        assert_eq!(fetched.responses[0].partitions[0].error_code, denied_topic);
        assert_eq!(metadata(&broker, None).await, []);
        assert_eq!(
            metadata(&broker, Some(&["t", "missing"])).await,
            [
                ("t".to_string(), denied_topic),
                ("missing".to_string(), denied_topic)
            ]
        );
        assert!(
            broker.image().topic("missing").is_none(),
            "no CREATE, no auto-creation"
        );

        // WRITE for User:ANONYMOUS: produce is allowed and implies DESCRIBE; READ is not.
        grant(
            &broker,
            "t",
            "User:ANONYMOUS",
            AclOperation::Write,
            AclPermissionType::Allow,
        );
        let produced: ProduceResponse = ask(&broker, ApiKey::Produce, 9, &send(9)).await;
        assert_eq!(produce_code(&produced), 0);
        let fetched: FetchResponse = ask(&broker, ApiKey::Fetch, 12, &read).await;
        assert_eq!(fetched.responses[0].partitions[0].error_code, denied_topic);
        assert_eq!(metadata(&broker, None).await, [("t".to_string(), 0)]);

        // READ for everyone, then a DENY of READ for User:ANONYMOUS: the DENY wins.
        grant(
            &broker,
            "t",
            "User:*",
            AclOperation::Read,
            AclPermissionType::Allow,
        );
        let fetched: FetchResponse = ask(&broker, ApiKey::Fetch, 12, &read).await;
        assert_eq!(fetched.responses[0].partitions[0].error_code, 0);
        assert_eq!(
            values(fetched.responses[0].partitions[0].records.clone()),
            [Bytes::from("a")]
        );
        grant(
            &broker,
            "t",
            "User:ANONYMOUS",
            AclOperation::Read,
            AclPermissionType::Deny,
        );
        let fetched: FetchResponse = ask(&broker, ApiKey::Fetch, 12, &read).await;
        assert_eq!(fetched.responses[0].partitions[0].error_code, denied_topic);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn topic_administration_needs_create_alter_and_delete() {
        use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
        use kafka_protocol::messages::{
            CreatePartitionsRequest, CreatePartitionsResponse, DeleteTopicsRequest,
            DeleteTopicsResponse,
        };
        let broker = TestBroker::open(&[("authorizer.class.name", STANDARD_AUTHORIZER)]).await;
        let denied = code(ResponseError::TopicAuthorizationFailed);
        let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(name("x"))
            .with_num_partitions(1)
            .with_replication_factor(1)]);
        let grow = CreatePartitionsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name("x"))
                .with_count(2)
                .with_assignments(None)]);
        let delete = DeleteTopicsRequest::default().with_topic_names(vec![name("x")]);
        let created: CreateTopicsResponse = ask(&broker, ApiKey::CreateTopics, 7, &create).await;
        assert_eq!(created.topics[0].error_code, denied);
        assert!(broker.image().topic("x").is_none());
        grant(
            &broker,
            "x",
            "User:ANONYMOUS",
            AclOperation::Create,
            AclPermissionType::Allow,
        );
        let created: CreateTopicsResponse = ask(&broker, ApiKey::CreateTopics, 7, &create).await;
        assert_eq!(created.topics[0].error_code, 0);

        let grown: CreatePartitionsResponse =
            ask(&broker, ApiKey::CreatePartitions, 3, &grow).await;
        assert_eq!(grown.results[0].error_code, denied);
        grant(
            &broker,
            "x",
            "User:ANONYMOUS",
            AclOperation::Alter,
            AclPermissionType::Allow,
        );
        let grown: CreatePartitionsResponse =
            ask(&broker, ApiKey::CreatePartitions, 3, &grow).await;
        assert_eq!(grown.results[0].error_code, 0);
        assert_eq!(
            broker.image().topic("x").map(|t| t.partitions.len()),
            Some(2)
        );

        let deleted: DeleteTopicsResponse = ask(&broker, ApiKey::DeleteTopics, 5, &delete).await;
        assert_eq!(deleted.responses[0].error_code, denied);
        assert!(broker.image().topic("x").is_some());
        grant(
            &broker,
            "x",
            "User:ANONYMOUS",
            AclOperation::Delete,
            AclPermissionType::Allow,
        );
        let deleted: DeleteTopicsResponse = ask(&broker, ApiKey::DeleteTopics, 5, &delete).await;
        assert_eq!(deleted.responses[0].error_code, 0);
        assert!(broker.image().topic("x").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_membership_needs_read_on_the_group() {
        use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
        let broker = TestBroker::open(&[("authorizer.class.name", STANDARD_AUTHORIZER)]).await;
        let denied = code(ResponseError::GroupAuthorizationFailed);
        let join = JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::new())]);
        let heartbeat = HeartbeatRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(1)
            .with_member_id(s("m"));
        let joined: JoinGroupResponse = ask(&broker, ApiKey::JoinGroup, 9, &join).await;
        assert_eq!(joined.error_code, denied);
        let beat: HeartbeatResponse = ask(&broker, ApiKey::Heartbeat, 4, &heartbeat).await;
        assert_eq!(beat.error_code, denied);
        // READ on a topic of the same name is not READ on the group.
        grant(
            &broker,
            "g",
            "User:ANONYMOUS",
            AclOperation::Read,
            AclPermissionType::Allow,
        );
        let joined: JoinGroupResponse = ask(&broker, ApiKey::JoinGroup, 9, &join).await;
        assert_eq!(joined.error_code, denied);
        grant_on(
            &broker,
            ResourceType::Group,
            "g",
            "User:ANONYMOUS",
            AclOperation::Read,
            AclPermissionType::Allow,
        );
        let joined: JoinGroupResponse = ask(&broker, ApiKey::JoinGroup, 9, &join).await;
        assert_eq!(joined.error_code, code(ResponseError::MemberIdRequired));
        let beat: HeartbeatResponse = ask(&broker, ApiKey::Heartbeat, 4, &heartbeat).await;
        assert_ne!(beat.error_code, denied);
    }

    /// KIP-430: Metadata, DescribeCluster and DescribeTopicPartitions answer what the
    /// principal may do, implied operations included; and every supported one without an
    /// authorizer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn authorized_operations_are_the_principals() {
        use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
        use kafka_protocol::messages::{
            DescribeClusterRequest, DescribeClusterResponse, DescribeTopicPartitionsRequest,
            DescribeTopicPartitionsResponse,
        };
        let bit = |op: AclOperation| 1i32 << op.code();
        let metadata = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(s("t"))))
            ]))
            .with_include_topic_authorized_operations(true)
            .with_include_cluster_authorized_operations(true);
        let open = TestBroker::open(&[]).await;
        open.create_topic("t", 1);
        let r: MetadataResponse = ask(&open, ApiKey::Metadata, 10, &metadata).await;
        // READ WRITE CREATE DELETE ALTER DESCRIBE DESCRIBE_CONFIGS ALTER_CONFIGS (3-8, 10, 11).
        assert_eq!(r.topics[0].topic_authorized_operations, 3576);
        // CREATE ALTER DESCRIBE CLUSTER_ACTION DESCRIBE_CONFIGS ALTER_CONFIGS IDEMPOTENT_WRITE.
        assert_eq!(r.cluster_authorized_operations, 8096);

        let broker = TestBroker::open(&[("authorizer.class.name", STANDARD_AUTHORIZER)]).await;
        broker.create_topic("t", 1);
        grant(
            &broker,
            "t",
            "User:ANONYMOUS",
            AclOperation::Read,
            AclPermissionType::Allow,
        );
        let r: MetadataResponse = ask(&broker, ApiKey::Metadata, 10, &metadata).await;
        assert_eq!(
            r.topics[0].topic_authorized_operations,
            bit(AclOperation::Read) | bit(AclOperation::Describe),
            "READ implies DESCRIBE"
        );
        assert_eq!(
            r.cluster_authorized_operations, 0,
            "may not describe the cluster"
        );
        let r: MetadataResponse = ask(
            &broker,
            ApiKey::Metadata,
            12,
            &metadata
                .clone()
                .with_include_cluster_authorized_operations(false),
        )
        .await;
        assert_eq!(
            r.cluster_authorized_operations,
            i32::MIN,
            "not asked (nor askable in v11+)"
        );
        grant_on(
            &broker,
            ResourceType::Cluster,
            "kafka-cluster",
            "User:ANONYMOUS",
            AclOperation::Describe,
            AclPermissionType::Allow,
        );
        let r: DescribeClusterResponse = ask(
            &broker,
            ApiKey::DescribeCluster,
            1,
            &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
        )
        .await;
        assert_eq!(r.cluster_authorized_operations, bit(AclOperation::Describe));
        let r: DescribeTopicPartitionsResponse = ask(
            &broker,
            ApiKey::DescribeTopicPartitions,
            0,
            &DescribeTopicPartitionsRequest::default()
                .with_topics(vec![TopicRequest::default().with_name(TopicName(s("t")))])
                .with_response_partition_limit(10),
        )
        .await;
        assert_eq!(
            r.topics[0].topic_authorized_operations,
            bit(AclOperation::Read) | bit(AclOperation::Describe)
        );
    }

    /// Deny by default: with the authorizer on and no ACL, every API Kafka authorizes refuses
    /// `User:ANONYMOUS` with Kafka's error, and changes nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_api_refuses_a_principal_without_acls() {
        use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
        use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
        use kafka_protocol::messages::offset_commit_request::{
            OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        };
        use kafka_protocol::messages::offset_delete_request::{
            OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
        };
        use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
        use kafka_protocol::messages::*;
        let broker = TestBroker::open(&[("authorizer.class.name", STANDARD_AUTHORIZER)]).await;
        broker.create_topic("t", 1);
        let group = || GroupId(s("g"));
        let txn = || TransactionalId(s("tx"));
        let cluster = code(ResponseError::ClusterAuthorizationFailed);
        let group_denied = code(ResponseError::GroupAuthorizationFailed);
        let topic_denied = code(ResponseError::TopicAuthorizationFailed);
        let txn_denied = code(ResponseError::TransactionalIdAuthorizationFailed);

        let r: FindCoordinatorResponse = ask(
            &broker,
            ApiKey::FindCoordinator,
            3,
            &FindCoordinatorRequest::default().with_key(s("g")),
        )
        .await;
        assert_eq!(r.error_code, group_denied);
        let r: FindCoordinatorResponse = ask(
            &broker,
            ApiKey::FindCoordinator,
            3,
            &FindCoordinatorRequest::default()
                .with_key(s("tx"))
                .with_key_type(1),
        )
        .await;
        assert_eq!(r.error_code, txn_denied);

        let commit = OffsetCommitRequest::default()
            .with_group_id(group())
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default().with_committed_offset(1)
                ])]);
        let r: OffsetCommitResponse = ask(&broker, ApiKey::OffsetCommit, 8, &commit).await;
        assert_eq!(r.topics[0].partitions[0].error_code, group_denied);

        let fetch = OffsetFetchRequest::default()
            .with_group_id(group())
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partition_indexes(vec![0])]));
        let r: OffsetFetchResponse = ask(&broker, ApiKey::OffsetFetch, 7, &fetch).await;
        assert_eq!(r.error_code, group_denied);
        let r: OffsetFetchResponse = ask(&broker, ApiKey::OffsetFetch, 1, &fetch).await;
        assert_eq!(r.topics[0].partitions[0].error_code, group_denied);

        let r: DescribeGroupsResponse = ask(
            &broker,
            ApiKey::DescribeGroups,
            5,
            &DescribeGroupsRequest::default().with_groups(vec![group()]),
        )
        .await;
        assert_eq!(r.groups[0].error_code, group_denied);
        let r: DeleteGroupsResponse = ask(
            &broker,
            ApiKey::DeleteGroups,
            2,
            &DeleteGroupsRequest::default().with_groups_names(vec![group()]),
        )
        .await;
        assert_eq!(r.results[0].error_code, group_denied);
        let r: OffsetDeleteResponse = ask(
            &broker,
            ApiKey::OffsetDelete,
            0,
            &OffsetDeleteRequest::default()
                .with_group_id(group())
                .with_topics(vec![OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![OffsetDeleteRequestPartition::default()])]),
        )
        .await;
        assert_eq!(r.error_code, group_denied);

        let init = |id: Option<TransactionalId>| {
            InitProducerIdRequest::default()
                .with_transactional_id(id)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        };
        let r: InitProducerIdResponse =
            ask(&broker, ApiKey::InitProducerId, 4, &init(Some(txn()))).await;
        assert_eq!(r.error_code, txn_denied);
        let r: InitProducerIdResponse = ask(&broker, ApiKey::InitProducerId, 4, &init(None)).await;
        assert_eq!(
            r.error_code, cluster,
            "idempotence needs IDEMPOTENT_WRITE or a WRITE"
        );
        let r: AddPartitionsToTxnResponse = ask(
            &broker,
            ApiKey::AddPartitionsToTxn,
            3,
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(txn())
                .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![0])]),
        )
        .await;
        let result = &r.results_by_topic_v3_and_below[0].results_by_partition[0];
        assert_eq!(result.partition_error_code, txn_denied);
        let r: AddPartitionsToTxnResponse = ask(
            &broker,
            ApiKey::AddPartitionsToTxn,
            5,
            &AddPartitionsToTxnRequest::default(),
        )
        .await;
        assert_eq!(
            r.error_code, cluster,
            "the brokers' form needs CLUSTER_ACTION"
        );
        let r: AddOffsetsToTxnResponse = ask(
            &broker,
            ApiKey::AddOffsetsToTxn,
            3,
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(txn())
                .with_group_id(group()),
        )
        .await;
        assert_eq!(r.error_code, txn_denied);
        let r: EndTxnResponse = ask(
            &broker,
            ApiKey::EndTxn,
            3,
            &EndTxnRequest::default().with_transactional_id(txn()),
        )
        .await;
        assert_eq!(r.error_code, txn_denied);
        let r: DescribeTransactionsResponse = ask(
            &broker,
            ApiKey::DescribeTransactions,
            0,
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![txn()]),
        )
        .await;
        assert_eq!(r.transaction_states[0].error_code, txn_denied);

        let r: DescribeConfigsResponse = ask(
            &broker,
            ApiKey::DescribeConfigs,
            4,
            &DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t")),
                DescribeConfigsResource::default().with_resource_type(4),
            ]),
        )
        .await;
        assert_eq!(r.results[0].error_code, topic_denied);
        assert_eq!(r.results[1].error_code, cluster);
        let r: DescribeLogDirsResponse = ask(
            &broker,
            ApiKey::DescribeLogDirs,
            4,
            &DescribeLogDirsRequest::default(),
        )
        .await;
        assert_eq!((r.error_code, r.results.len()), (cluster, 0));
        let r: ListPartitionReassignmentsResponse = ask(
            &broker,
            ApiKey::ListPartitionReassignments,
            0,
            &ListPartitionReassignmentsRequest::default(),
        )
        .await;
        assert_eq!(r.error_code, cluster);
        let r: DescribeUserScramCredentialsResponse = ask(
            &broker,
            ApiKey::DescribeUserScramCredentials,
            0,
            &DescribeUserScramCredentialsRequest::default(),
        )
        .await;
        assert_eq!(r.error_code, cluster);
        let r: kafka_protocol::messages::DescribeClientQuotasResponse = ask(
            &broker,
            ApiKey::DescribeClientQuotas,
            1,
            &kafka_protocol::messages::DescribeClientQuotasRequest::default(),
        )
        .await;
        assert_eq!((r.error_code, r.entries), (cluster, None));
        let r: kafka_protocol::messages::AlterClientQuotasResponse = ask(
            &broker,
            ApiKey::AlterClientQuotas,
            1,
            &quota_alteration("user", Some("alice"), "producer_byte_rate", Some(1024.0)),
        )
        .await;
        assert_eq!(r.entries[0].error_code, cluster);
        assert!(broker.image().all_client_quotas().next().is_none());
        let r: UpdateFeaturesResponse = ask(
            &broker,
            ApiKey::UpdateFeatures,
            1,
            &UpdateFeaturesRequest::default(),
        )
        .await;
        assert_eq!(r.error_code, cluster);
        let r: DescribeQuorumResponse = ask(
            &broker,
            ApiKey::DescribeQuorum,
            1,
            &DescribeQuorumRequest::default(),
        )
        .await;
        assert_eq!(r.error_code, cluster);
        let r: DescribeTopicPartitionsResponse = ask(
            &broker,
            ApiKey::DescribeTopicPartitions,
            0,
            &DescribeTopicPartitionsRequest::default(),
        )
        .await;
        assert!(
            r.topics.is_empty(),
            "listing all hides what may not be described"
        );

        // Listing hides what the principal may not DESCRIBE, until it may.
        let r: ListGroupsResponse = ask(
            &broker,
            ApiKey::ListGroups,
            4,
            &ListGroupsRequest::default(),
        )
        .await;
        assert_eq!(r.error_code, 0);
        grant_on(
            &broker,
            ResourceType::Cluster,
            "kafka-cluster",
            "User:ANONYMOUS",
            AclOperation::IdempotentWrite,
            AclPermissionType::Allow,
        );
        let r: InitProducerIdResponse = ask(&broker, ApiKey::InitProducerId, 4, &init(None)).await;
        assert_eq!(r.error_code, 0, "IDEMPOTENT_WRITE on the cluster");
    }
}

/// Byte-rate quotas with Kafka's numbers (11 samples of 1 s): a producer over its rate gets
/// `throttle_time_ms` and its records are kept; a consumer over its rate gets an empty answer
/// whose bytes do not count; a fetch is capped at the quota over ten samples; clients without a
/// quota are not held back.
#[tokio::test(flavor = "multi_thread")]
async fn byte_rate_quotas_throttle_producers_and_empty_throttled_fetches() {
    use kafka_protocol::messages::AlterClientQuotasResponse;

    let broker = broker_with_topic(1).await;
    let id = topic_id(&broker, "t");
    for (client, key) in [
        ("writer", "producer_byte_rate"),
        ("reader", "consumer_byte_rate"),
    ] {
        let set: AlterClientQuotasResponse = ask(
            &broker,
            ApiKey::AlterClientQuotas,
            1,
            &quota_alteration("client-id", Some(client), key, Some(1000.0)),
        )
        .await;
        assert_eq!(set.entries[0].error_code, 0);
    }
    let big = vec![7u8; 6000];
    let mut writer = Client::at(PEER.parse().expect("addr"), "writer");
    let mut throttles = Vec::new();
    for _ in 0..2 {
        let produced: ProduceResponse = writer
            .send(
                &broker,
                ApiKey::Produce,
                9,
                &produce(9, "t", id, 1, vec![(0, batch(&[&big]))]),
            )
            .await
            .expect("acks=1 is answered");
        assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
        throttles.push(produced.throttle_time_ms);
    }
    // ~6.1 KB is 610 B/s over the 10 s minimum window; ~12.2 KB is 1,220 B/s: 22% over the
    // quota, 2.2 s of the window.
    assert_eq!(throttles[0], 0);
    assert!((2000..2600).contains(&throttles[1]), "{throttles:?}");
    let other: ProduceResponse = ask(
        &broker,
        ApiKey::Produce,
        9,
        &produce(9, "t", id, 1, vec![(0, batch(&[&big]))]),
    )
    .await;
    assert_eq!(other.throttle_time_ms, 0, "a client without a quota");

    let mut reader = Client::at(PEER.parse().expect("addr"), "reader");
    let mut read = async |offset: i64| -> FetchResponse {
        let request = fetch(12, "t", id, &[(0, offset, -1)]);
        reader
            .send(&broker, ApiKey::Fetch, 12, &request)
            .await
            .expect("answered")
    };
    // The quota allows 10,000 bytes per answer: one 6 KB batch of the three.
    let first = read(0).await;
    assert_eq!(first.throttle_time_ms, 0);
    assert_eq!(
        values(first.responses[0].partitions[0].records.clone()).len(),
        1
    );
    let second = read(1).await;
    assert!(
        (2000..2600).contains(&second.throttle_time_ms),
        "{second:?}"
    );
    assert!(
        second.responses.is_empty(),
        "a throttled fetch answers nothing"
    );
    // The throttled answer's bytes were taken back: a fetch at the log end is within the rate.
    let third = read(3).await;
    assert_eq!(third.throttle_time_ms, 0, "{third:?}");
}

/// KIP-599 with Kafka's numbers: a `controller_mutation_rate` of 1 partition a second fills a
/// bucket of 11 (11 samples of 1 s). Strict versions (CreateTopics v6+, DeleteTopics v5+,
/// CreatePartitions v3+) may overdraw it once and are then refused with
/// THROTTLING_QUOTA_EXCEEDED and the time until the overdraft refills; older versions are
/// served and throttled for that time. Clients without the quota are not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_mutations_are_throttled_as_kip_599_says() {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::{
        AlterClientQuotasResponse, CreatePartitionsRequest, CreatePartitionsResponse,
        DeleteTopicsRequest, DeleteTopicsResponse,
    };

    let broker = TestBroker::open(&[]).await;
    let set: AlterClientQuotasResponse = ask(
        &broker,
        ApiKey::AlterClientQuotas,
        1,
        &quota_alteration(
            "client-id",
            Some("admin"),
            "controller_mutation_rate",
            Some(1.0),
        ),
    )
    .await;
    assert_eq!(set.entries[0].error_code, 0);
    let mut admin = Client::at(PEER.parse().expect("addr"), "admin");
    let topic = |name: &str, partitions: i32| {
        CreatableTopic::default()
            .with_name(self::name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
    };
    let create = |topics: Vec<CreatableTopic>| CreateTopicsRequest::default().with_topics(topics);
    // 10 then 5 of the 11 tokens: the second overdraws the bucket by 4, which is allowed.
    let first: CreateTopicsResponse = admin
        .send(
            &broker,
            ApiKey::CreateTopics,
            7,
            &create(vec![topic("m1", 10), topic("m2", 5)]),
        )
        .await
        .expect("answered");
    let outcome = |r: &CreateTopicsResponse| -> Vec<(String, i16)> {
        r.topics
            .iter()
            .map(|t| (t.name.to_string(), t.error_code))
            .collect()
    };
    assert_eq!(
        outcome(&first),
        vec![("m1".into(), 0), ("m2".into(), 0)],
        "{first:?}"
    );
    assert_eq!(first.throttle_time_ms, 0);
    // Now refused, with the ~4 s until the overdraft refills.
    let refused: CreateTopicsResponse = admin
        .send(
            &broker,
            ApiKey::CreateTopics,
            7,
            &create(vec![topic("m3", 1)]),
        )
        .await
        .expect("answered");
    let exceeded = code(ResponseError::ThrottlingQuotaExceeded);
    assert_eq!(outcome(&refused), vec![("m3".into(), exceeded)]);
    assert!(
        (3000..=4000).contains(&refused.throttle_time_ms),
        "{refused:?}"
    );
    assert!(broker.image().topic("m3").is_none());
    let deleted: DeleteTopicsResponse = admin
        .send(
            &broker,
            ApiKey::DeleteTopics,
            6,
            &DeleteTopicsRequest::default()
                .with_topics(vec![DeleteTopicState::default().with_name(Some(name("m1")))]),
        )
        .await
        .expect("answered");
    assert_eq!(deleted.responses[0].error_code, exceeded);
    assert!(broker.image().topic("m1").is_some());
    let grown: CreatePartitionsResponse = admin
        .send(
            &broker,
            ApiKey::CreatePartitions,
            3,
            &CreatePartitionsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(name("m2"))
                    .with_count(6)]),
        )
        .await
        .expect("answered");
    assert_eq!(grown.results[0].error_code, exceeded);
    // Before KIP-599's versions the change is made, and throttled.
    let permissive: CreateTopicsResponse = admin
        .send(
            &broker,
            ApiKey::CreateTopics,
            5,
            &create(vec![topic("m4", 2)]),
        )
        .await
        .expect("answered");
    assert_eq!(outcome(&permissive), vec![("m4".into(), 0)]);
    assert!(permissive.throttle_time_ms >= 5000, "{permissive:?}");
    // Another client is not counted.
    let other: CreateTopicsResponse = ask(
        &broker,
        ApiKey::CreateTopics,
        7,
        &create(vec![topic("m5", 50)]),
    )
    .await;
    assert_eq!(outcome(&other), vec![("m5".into(), 0)]);
    assert_eq!(other.throttle_time_ms, 0);
}

/// KIP-124: a client with a `request_percentage` quota is charged the CPU time of its
/// requests and throttled (at most one sample window) when over it, in whatever API it sent;
/// ApiVersions is exempt, and other clients are not charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_quotas_throttle_any_api_but_the_exempt_ones() {
    use kafka_protocol::messages::{AlterClientQuotasResponse, MetadataRequest, MetadataResponse};

    let broker = broker_with_topic(1).await;
    let set: AlterClientQuotasResponse = ask(
        &broker,
        ApiKey::AlterClientQuotas,
        1,
        &quota_alteration("client-id", Some("busy"), "request_percentage", Some(1e-9)),
    )
    .await;
    assert_eq!(set.entries[0].error_code, 0);
    let mut busy = Client::at(PEER.parse().expect("addr"), "busy");
    let metadata: MetadataResponse = busy
        .send(&broker, ApiKey::Metadata, 12, &MetadataRequest::default())
        .await
        .expect("answered");
    assert_eq!(
        metadata.throttle_time_ms, 1000,
        "any CPU time is over the quota; the throttle is bounded by the sample window"
    );
    let versions: ApiVersionsResponse = busy
        .send(
            &broker,
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default(),
        )
        .await
        .expect("answered");
    assert_eq!(versions.throttle_time_ms, 0, "exempt");
    let other: MetadataResponse =
        ask(&broker, ApiKey::Metadata, 12, &MetadataRequest::default()).await;
    assert_eq!(other.throttle_time_ms, 0);
    let mut metrics = String::new();
    broker.broker.quotas.render_metrics(&mut metrics);
    assert!(
        metrics.contains("strata_quota_throttled_responses_total{quota=\"request\",tenant=\"\",user=\"\",client_id=\"busy\",ip=\"\"} 1"),
        "{metrics}"
    );
}
