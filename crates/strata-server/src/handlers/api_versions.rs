//! ApiVersions: the served API ranges, from the one table in `strata-protocol`.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use strata_protocol::supported_versions;

/// The response body with every served range and no error.
pub fn response() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        supported_versions()
            .iter()
            .map(|v| {
                ApiVersion::default()
                    .with_api_key(v.api_key as i16)
                    .with_min_version(v.min_version)
                    .with_max_version(v.max_version)
            })
            .collect(),
    )
}

pub fn handle(request: &ApiVersionsRequest, version: i16) -> ApiVersionsResponse {
    if version >= 3
        && !(valid_client_field(&request.client_software_name)
            && valid_client_field(&request.client_software_version))
    {
        // Kafka (KIP-511) refuses names that are empty or use characters outside [a-zA-Z0-9.-].
        return response().with_error_code(super::code(
            kafka_protocol::error::ResponseError::InvalidRequest,
        ));
    }
    response()
}

fn valid_client_field(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}
