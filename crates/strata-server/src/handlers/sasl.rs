//! SaslHandshake and SaslAuthenticate where no SASL exchange is due: on a PLAINTEXT or SSL
//! listener, and on a SASL listener after authentication that is not a re-authentication.
//! Kafka's `KafkaApis` answers both with ILLEGAL_SASL_STATE; the exchanges themselves are the
//! connection's authenticator's and never reach a handler.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslAuthenticateResponse, SaslHandshakeResponse};

use super::{code, str_bytes};

pub fn handle_handshake() -> SaslHandshakeResponse {
    SaslHandshakeResponse::default().with_error_code(code(ResponseError::IllegalSaslState))
}

pub fn handle_authenticate() -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(code(ResponseError::IllegalSaslState))
        .with_error_message(Some(str_bytes(
            "SaslAuthenticate request received after successful authentication",
        )))
}
