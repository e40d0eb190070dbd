//! Request and response envelopes: the request header, the header versions, and dispatch of the
//! body to the `kafka-protocol` codec.
//!
//! Decoding checks, in Kafka's order, that the API key is known and served and that the version
//! is in the served range, before the body is touched. The errors say which case it was, because
//! the connection reacts differently: an ApiVersions request of a too-new version is answered
//! (KIP-511), everything else that cannot be decoded closes the connection, as Kafka does.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
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

/// Encodes a response frame, length prefix included.
///
/// `api_key` and `api_version` are the request's; they choose the response header version.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    body: &ResponseKind,
) -> anyhow::Result<Bytes> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // length, patched below
    header.encode(&mut buf, api_key.response_header_version(api_version))?;
    body.encode(&mut buf, api_version)?;
    let size = i32::try_from(buf.len() - 4)?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
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
    fn response_frame_has_length_prefix_and_correlation_id() {
        let body = ResponseKind::ApiVersions(Default::default());
        let frame = encode_response(7, ApiKey::ApiVersions, 3, &body).unwrap();
        let size = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(size, frame.len() - 4);
        assert_eq!(&frame[4..8], &7i32.to_be_bytes());
    }
}
