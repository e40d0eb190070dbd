//! Request and response envelopes: the request header, the header versions, and dispatch of the
//! body to the `kafka-protocol` codec.
//!
//! Decoding checks, in Kafka's order, that the API key is known and served and that the version
//! is in the served range, before the body is touched. The errors say which case it was, because
//! the connection reacts differently: an ApiVersions request of a too-new version is answered
//! (KIP-511), everything else that cannot be decoded closes the connection, as Kafka does.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::versions::supported_range;

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub body: RequestKind,
}

impl Request {
    pub fn api_version(&self) -> i16 {
        self.header.request_api_version
    }
    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// Why a request frame could not be turned into a [`Request`].
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request frame of {size_bytes} bytes is shorter than a request header")]
    Truncated { size_bytes: usize },
    #[error("unknown API key {api_key}")]
    UnknownApiKey { api_key: i16 },
    #[error("API {api_key:?} is not served by this broker")]
    UnsupportedApi {
        api_key: ApiKey,
        correlation_id: i32,
    },
    #[error("{api_key:?} version {api_version} is not supported")]
    UnsupportedVersion {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
    },
    #[error("malformed {api_key:?} v{api_version} request: {reason}")]
    Malformed {
        api_key: ApiKey,
        api_version: i16,
        reason: String,
    },
}

/// Bytes before the variable part of any request header: api key, api version, correlation id.
const FIXED_HEADER_BYTES: usize = 8;

/// Decodes one request frame (the bytes after the length prefix).
pub fn decode_request(mut frame: Bytes) -> Result<Request, RequestError> {
    let Some(fixed) = frame.get(..FIXED_HEADER_BYTES) else {
        return Err(RequestError::Truncated {
            size_bytes: frame.len(),
        });
    };
    let raw_api_key = i16::from_be_bytes([fixed[0], fixed[1]]);
    let api_version = i16::from_be_bytes([fixed[2], fixed[3]]);
    let correlation_id = i32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let api_key = ApiKey::try_from(raw_api_key).map_err(|()| RequestError::UnknownApiKey {
        api_key: raw_api_key,
    })?;
    let Some(range) = supported_range(api_key) else {
        return Err(RequestError::UnsupportedApi {
            api_key,
            correlation_id,
        });
    };
    if api_version < range.min_version || api_version > range.max_version {
        return Err(RequestError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
        });
    }
    let malformed = |e: anyhow::Error| RequestError::Malformed {
        api_key,
        api_version,
        reason: format!("{e:#}"),
    };
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(api_version))
        .map_err(malformed)?;
    let body = RequestKind::decode(api_key, &mut frame, api_version).map_err(malformed)?;
    // Kafka does not check that the body used up the frame, and some clients send bytes past
    // it (librdkafka's Metadata v13 carries three): accept them as Kafka does.
    Ok(Request {
        header,
        api_key,
        body,
    })
}

/// Encodes a response frame, length prefix included, as chunks to be written back to back
/// (with one vectored write).
///
/// `api_key` and `api_version` are the request's; they choose the response header version.
///
/// The record sets of a Fetch response are not copied: their chunks are the `Bytes` read from
/// the log, and only the fields around them are encoded into new buffers. A fetch response is
/// almost all record bytes, so this saves one copy of every fetched byte and the regrowth of
/// a response buffer that would otherwise be sized by doubling.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    body: &ResponseKind,
) -> anyhow::Result<Vec<Bytes>> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(api_version);
    if let ResponseKind::Fetch(fetch) = body {
        let records: Vec<Bytes> = fetch
            .responses
            .iter()
            .flat_map(|topic| &topic.partitions)
            .filter_map(|partition| partition.records.clone())
            .filter(|records| records.len() >= MIN_BY_REFERENCE_BYTES)
            .collect();
        let size_bytes = header.compute_size(header_version)? + fetch.compute_size(api_version)?;
        let mut buf = ChunkedBuf::new(&records);
        buf.put_i32(i32::try_from(size_bytes)?);
        header.encode(&mut buf, header_version)?;
        fetch.encode(&mut buf, api_version)?;
        let chunks = buf.finish();
        let encoded_bytes: usize = chunks.iter().map(Bytes::len).sum();
        anyhow::ensure!(
            encoded_bytes == 4 + size_bytes,
            "fetch response encoded to {encoded_bytes} bytes, computed {}",
            4 + size_bytes
        );
        return Ok(chunks);
    }
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // length, patched below
    header.encode(&mut buf, header_version)?;
    body.encode(&mut buf, api_version)?;
    let size = i32::try_from(buf.len() - 4)?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(vec![buf.freeze()])
}

/// Record sets smaller than this are copied into the response buffer: below a few pages a copy
/// costs less than an extra chunk in the vectored write.
const MIN_BY_REFERENCE_BYTES: usize = 4096;

/// An encoding buffer that keeps given `Bytes` by reference instead of copying them.
///
/// `kafka-protocol` encodes a `Bytes` field with `put_slice(&bytes[..])`, so a slice whose
/// pointer and length are those of one of `by_reference` *is* that `Bytes`: it closes the
/// current chunk and becomes a chunk of its own. Everything else is copied into the current
/// chunk, as a `BytesMut` would.
///
/// Offsets seen by the codec (`ByteBufMut::offset`) count all chunks; `seek` and `range`
/// (used to back-patch length gaps) work only within the current chunk. The Fetch response
/// codec uses no gaps; a codec that did would hit the assertion in `range`, never write a wrong
/// frame.
struct ChunkedBuf<'a> {
    by_reference: &'a [Bytes],
    done: Vec<Bytes>,
    current: BytesMut,
    /// Bytes in `done`.
    done_bytes: usize,
}

/// Initial capacity of each copied chunk: the fields between two record sets are small.
const CHUNK_CAPACITY_BYTES: usize = 256;

impl<'a> ChunkedBuf<'a> {
    fn new(by_reference: &'a [Bytes]) -> Self {
        Self {
            by_reference,
            done: Vec::with_capacity(2 * by_reference.len() + 1),
            current: BytesMut::with_capacity(CHUNK_CAPACITY_BYTES),
            done_bytes: 0,
        }
    }

    fn finish(mut self) -> Vec<Bytes> {
        if !self.current.is_empty() {
            self.done.push(self.current.freeze());
        }
        self.done
    }
}

// SAFETY: every method delegates to the `BytesMut` of the current chunk, which upholds the
// `BufMut` contract; `put_slice` only adds whole chunks besides.
unsafe impl BufMut for ChunkedBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's guarantee is passed on unchanged.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        let shared = (src.len() >= MIN_BY_REFERENCE_BYTES)
            .then(|| {
                self.by_reference
                    .iter()
                    .find(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len())
            })
            .flatten();
        match shared {
            Some(bytes) => {
                if !self.current.is_empty() {
                    let chunk = self.current.split().freeze();
                    self.done_bytes += chunk.len();
                    self.done.push(chunk);
                }
                self.done_bytes += bytes.len();
                self.done.push(bytes.clone());
            }
            None => self.current.put_slice(src),
        }
    }
}

impl ByteBufMut for ChunkedBuf<'_> {
    fn offset(&self) -> usize {
        self.done_bytes + self.current.len()
    }

    fn seek(&mut self, offset: usize) {
        assert!(
            offset >= self.done_bytes,
            "cannot seek back into a finished chunk"
        );
        self.current.resize(offset - self.done_bytes, 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        assert!(r.start >= self.done_bytes, "cannot patch a finished chunk");
        &mut self.current[r.start - self.done_bytes..r.end - self.done_bytes]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiVersionsRequest, MetadataRequest, ProduceRequest, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;

    fn request_frame(api_key: ApiKey, api_version: i16, body: &impl Encodable) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(api_version)
            .with_correlation_id(42)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, api_key.request_header_version(api_version))
            .unwrap();
        body.encode(&mut buf, api_version).unwrap();
        buf.freeze()
    }

    #[test]
    fn decodes_every_served_version_of_metadata() {
        for version in 0..=13 {
            let frame = request_frame(ApiKey::Metadata, version, &MetadataRequest::default());
            let request = decode_request(frame).unwrap();
            assert_eq!(request.api_version(), version);
            assert_eq!(request.correlation_id(), 42);
            assert!(matches!(request.body, RequestKind::Metadata(_)));
        }
    }

    #[test]
    fn classifies_bad_requests() {
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 18])),
            Err(RequestError::Truncated { .. })
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0x7f, 0, 0, 0, 0, 0, 0, 1])),
            Err(RequestError::UnknownApiKey { api_key: 0x7f00 })
        ));
        let frame = request_frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        let mut too_new = BytesMut::from(&frame[..]);
        too_new[3] = 99;
        assert!(matches!(
            decode_request(too_new.freeze()),
            Err(RequestError::UnsupportedVersion {
                api_version: 99,
                correlation_id: 42,
                ..
            })
        ));
        let mut trailing = BytesMut::from(&frame[..]);
        trailing.put_u8(0);
        assert!(decode_request(trailing.freeze()).is_ok());
    }

    #[test]
    fn refuses_unserved_apis_old_versions_and_truncated_bodies() {
        // Known to the protocol, not served by a broker (a controller's Raft RPC).
        let frame = request_frame(ApiKey::Vote, 0, &ApiVersionsRequest::default());
        assert!(matches!(
            decode_request(frame),
            Err(RequestError::UnsupportedApi {
                api_key: ApiKey::Vote,
                correlation_id: 42
            })
        ));
        // Below the served floor (Kafka 4 removed Produce v0-2, KIP-896).
        let produce = ProduceRequest::default().with_acks(1).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_records(Some(Bytes::from_static(&[0; 64])))]),
        ]);
        // (The codec no longer encodes v2: a v3 frame that says v2.)
        let mut old = BytesMut::from(&request_frame(ApiKey::Produce, 3, &produce)[..]);
        old[3] = 2;
        assert!(matches!(
            decode_request(old.freeze()),
            Err(RequestError::UnsupportedVersion {
                api_key: ApiKey::Produce,
                api_version: 2,
                ..
            })
        ));
        // A served version whose body ends early, at every cut past the header.
        let whole = request_frame(ApiKey::Produce, 9, &produce);
        assert!(decode_request(whole.clone()).is_ok());
        let header_bytes = 8 + 2 + "test".len() + 1;
        for cut in header_bytes..whole.len() {
            assert!(
                matches!(
                    decode_request(whole.slice(..cut)),
                    Err(RequestError::Malformed {
                        api_key: ApiKey::Produce,
                        api_version: 9,
                        ..
                    })
                ),
                "cut at {cut} of {}",
                whole.len()
            );
        }
    }

    #[test]
    fn response_frame_has_length_prefix_and_correlation_id() {
        let body = ResponseKind::ApiVersions(Default::default());
        let frame = encode_response(7, ApiKey::ApiVersions, 3, &body)
            .unwrap()
            .concat();
        let size = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(size, frame.len() - 4);
        assert_eq!(&frame[4..8], &7i32.to_be_bytes());
    }

    #[test]
    fn fetch_response_chunks_equal_a_copying_encode_and_share_the_records() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::{FetchResponse, TopicName};
        let big = Bytes::from(vec![7u8; 3 * MIN_BY_REFERENCE_BYTES]);
        let small = Bytes::from(vec![9u8; 10]);
        let partitions = vec![
            PartitionData::default().with_records(Some(big.clone())),
            PartitionData::default()
                .with_partition_index(1)
                .with_records(Some(small)),
            PartitionData::default()
                .with_partition_index(2)
                .with_records(Some(big.slice(..MIN_BY_REFERENCE_BYTES))),
            PartitionData::default()
                .with_partition_index(3)
                .with_records(None),
        ];
        let fetch = FetchResponse::default()
            .with_responses(vec![FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(partitions)]);
        for version in [4, 11, 12, 16] {
            let body = ResponseKind::Fetch(fetch.clone());
            let chunks = encode_response(5, ApiKey::Fetch, version, &body).unwrap();
            let mut expected = BytesMut::new();
            expected.put_i32(0);
            ResponseHeader::default()
                .with_correlation_id(5)
                .encode(
                    &mut expected,
                    ApiKey::Fetch.response_header_version(version),
                )
                .unwrap();
            body.encode(&mut expected, version).unwrap();
            let size = (expected.len() - 4) as i32;
            expected[..4].copy_from_slice(&size.to_be_bytes());
            assert_eq!(chunks.concat(), expected.to_vec(), "v{version}");
            assert!(
                chunks
                    .iter()
                    .any(|c| c.as_ptr() == big.as_ptr() && c.len() == big.len()),
                "v{version}: the large record set is referenced, not copied"
            );
        }
    }
}
