//! ApiVersions: the served API ranges, from the one table in `strata-protocol`, and from v3 on
//! the feature levels this broker supports and the cluster has finalized (KIP-584), which is
//! how clients learn them (the Java Admin's `describeFeatures` reads this answer).

use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use strata_meta::MetadataImage;
use strata_protocol::supported_versions;

use super::str_bytes;
use crate::session::{valid_client_field, RequestContext};

/// The first ApiVersions version whose clients read a supported feature with a minimum of 0
/// (KAFKA-17011): below it Kafka leaves such features out.
const ZERO_MINIMUM_VERSION: i16 = 4;

/// The response body with every served range and no error (no features: the form of an
/// error answer, which is encoded as v0).
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

pub fn handle(
    ctx: &RequestContext<'_>,
    request: &ApiVersionsRequest,
    image: &MetadataImage,
) -> ApiVersionsResponse {
    let version = ctx.version();
    if version >= 3
        && !(valid_client_field(&request.client_software_name)
            && valid_client_field(&request.client_software_version))
    {
        // Kafka (KIP-511) refuses names that are empty or use characters outside [a-zA-Z0-9.-].
        return response().with_error_code(super::code(
            kafka_protocol::error::ResponseError::InvalidRequest,
        ));
    }
    if version < 3 {
        return response();
    }
    with_features(response(), version, image)
}

/// Kafka's rules (`BrokerFeatures.defaultSupportedFeatures`, `ApiVersionsResponse`): a
/// feature supported only at level 0 is left out, one with a minimum of 0 too when the request
/// is older than v4; a feature at level 0 is not finalized; the epoch is the image's offset,
/// which grows with every metadata change.
fn with_features(
    response: ApiVersionsResponse,
    version: i16,
    image: &MetadataImage,
) -> ApiVersionsResponse {
    let supported = strata_meta::features::FEATURES
        .iter()
        .filter(|f| f.supported.max > 0)
        .filter(|f| version >= ZERO_MINIMUM_VERSION || f.supported.min > 0)
        .map(|f| {
            SupportedFeatureKey::default()
                .with_name(str_bytes(f.name))
                .with_min_version(f.supported.min)
                .with_max_version(f.supported.max)
        })
        .collect();
    let finalized = image
        .finalized_features()
        .iter()
        .map(|(name, level)| {
            FinalizedFeatureKey::default()
                .with_name(str_bytes(name.clone()))
                .with_min_version_level(*level)
                .with_max_version_level(*level)
        })
        .collect();
    response
        .with_supported_features(supported)
        .with_finalized_features(finalized)
        .with_finalized_features_epoch(image.offset as i64)
}
