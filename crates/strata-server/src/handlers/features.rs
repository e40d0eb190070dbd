//! UpdateFeatures (KIP-584, KIP-1022): finalizes feature levels through the controller, all
//! or nothing. Kafka's brokers forward it to the active controller; here any node commits it
//! through the metadata source (in a cluster, the quorum), as every other metadata change.
//! The new levels show in the ApiVersions answers of every node once its image has them.

use std::sync::Arc;

use kafka_protocol::messages::update_features_response::UpdatableFeatureResult;
use kafka_protocol::messages::{UpdateFeaturesRequest, UpdateFeaturesResponse};
use strata_meta::features::{self, FeatureUpdate, UpgradeType};

use super::{meta_error_code, str_bytes};
use crate::broker::Broker;
use crate::session::{Operation, RequestContext};

pub fn handle_update(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &UpdateFeaturesRequest,
) -> UpdateFeaturesResponse {
    let version = ctx.version();
    let updates: Vec<FeatureUpdate> = request
        .feature_updates
        .iter()
        .map(|u| FeatureUpdate {
            name: u.feature.to_string(),
            level: u.max_version_level,
            // v0 has only `allow_downgrade`, which Kafka takes as a safe downgrade.
            upgrade_type: if version == 0 {
                if u.allow_downgrade {
                    UpgradeType::SafeDowngrade
                } else {
                    UpgradeType::Upgrade
                }
            } else {
                UpgradeType::from_code(u.upgrade_type)
            },
        })
        .collect();
    let validate_only = version >= 1 && request.validate_only;
    let local = features::supported();
    let node_id = broker.config.node_id;
    let commit = || {
        tokio::task::block_in_place(|| {
            broker.commit(|image| {
                match features::update_features(image, node_id, &local, &updates) {
                    Ok(_) if validate_only => (Vec::new(), Ok(())),
                    Ok(records) => (records, Ok(())),
                    Err(e) => (Vec::new(), Err(e)),
                }
            })
        })
    };
    // As Kafka: ALTER on the cluster, else nothing changes.
    let (error_code, error_message) = match ctx.authorize_cluster(Operation::Alter) {
        Err(e) => (e.code(), Some(e.to_string())),
        Ok(()) => match commit() {
            Ok(Ok(())) => {
                if !validate_only {
                    tracing::info!(updates = ?updates, "feature levels changed");
                }
                (0, None)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "UpdateFeatures refused");
                (e.kafka_error_code(), Some(e.to_string()))
            }
            Err(e) => (meta_error_code(&e), Some(e.to_string())),
        },
    };
    let mut response = UpdateFeaturesResponse::default()
        .with_error_code(error_code)
        .with_error_message(error_message.clone().map(str_bytes));
    if version <= 1 {
        // v0-1 also answer per feature; as Kafka 4 does, each carries the request's outcome.
        response = response.with_results(
            updates
                .iter()
                .map(|u| {
                    UpdatableFeatureResult::default()
                        .with_feature(str_bytes(u.name.clone()))
                        .with_error_code(error_code)
                        .with_error_message(error_message.clone().map(str_bytes))
                })
                .collect(),
        );
    }
    response
}
