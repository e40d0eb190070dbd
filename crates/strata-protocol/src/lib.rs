//! Kafka wire framing and request/response envelopes.
//!
//! This crate knows bytes and Kafka messages, nothing of storage or sockets. Message bodies are
//! encoded and decoded by the `kafka-protocol` crate; this crate adds what sits around them:
//! the length-prefixed frame ([`frame`]), the request header and the choice of header version
//! ([`envelope`]), and the table of API versions Strata serves ([`versions`]).

pub mod envelope;
pub mod frame;
pub mod versions;

pub use envelope::{decode_request, encode_response, Request, RequestError};
pub use frame::{FrameDecoder, FrameError};
pub use kafka_protocol;
pub use versions::{supported_versions, SupportedVersions};
