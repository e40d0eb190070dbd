//! DescribeClientQuotas (48) and AlterClientQuotas (49), KIP-546.
//!
//! Quotas are metadata records: Alter goes through the controller
//! ([`strata_meta::controller::ClientQuotaControl`]), which Kafka's brokers forward it to and
//! any Strata node commits through its metadata source; Describe answers from the image. As
//! Kafka, describing needs DESCRIBE_CONFIGS on the cluster and altering ALTER_CONFIGS (else
//! CLUSTER_AUTHORIZATION_FAILED, and nothing changes). Enforcing them is the quota manager's.

use std::sync::Arc;

use kafka_protocol::messages::{
    alter_client_quotas_response, describe_client_quotas_response, AlterClientQuotasRequest,
    AlterClientQuotasResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;
use strata_meta::client_quota::QuotaEntity;
use strata_meta::controller::{ControllerError, NameMatch, QuotaAlteration};

use super::{code, controller_error, meta_error_code, str_bytes};
use crate::broker::Broker;
use crate::session::{Operation, RequestContext};

/// DescribeClientQuotas' match types.
const MATCH_TYPE_EXACT: i8 = 0;
const MATCH_TYPE_DEFAULT: i8 = 1;
const MATCH_TYPE_SPECIFIED: i8 = 2;

pub fn handle_describe(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let refused = |error: i16, message: String| {
        DescribeClientQuotasResponse::default()
            .with_error_code(error)
            .with_error_message(Some(str_bytes(message)))
            .with_entries(None)
    };
    if let Err(e) = ctx.authorize_cluster(Operation::DescribeConfigs) {
        return refused(code(e), e.to_string());
    }
    let image = broker.image();
    let found = request
        .components
        .iter()
        .map(|c| {
            let name_match = match (c.match_type, &c._match) {
                (MATCH_TYPE_EXACT, Some(name)) => NameMatch::Exact(name.to_string()),
                (MATCH_TYPE_EXACT, None) => {
                    return Err(ControllerError::InvalidRequest(
                        "Request specified MATCH_TYPE_EXACT, but set match string to null".into(),
                    ))
                }
                (MATCH_TYPE_DEFAULT, None) => NameMatch::Default,
                (MATCH_TYPE_SPECIFIED, None) => NameMatch::Any,
                (MATCH_TYPE_DEFAULT | MATCH_TYPE_SPECIFIED, Some(_)) => {
                    return Err(ControllerError::InvalidRequest(format!(
                        "Request specified match type {}, but also specified a match string",
                        c.match_type
                    )))
                }
                (other, _) => {
                    return Err(ControllerError::UnsupportedVersion(format!(
                        "Unhandled match type {other}"
                    )))
                }
            };
            Ok((c.entity_type.to_string(), name_match))
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|filter| {
            broker
                .meta
                .controller()
                .describe_client_quotas(&image, &filter, request.strict)
        });
    let found = match found {
        Ok(found) => found,
        Err(e) => return refused(controller_error(&e).0, e.to_string()),
    };
    let entries = found
        .into_iter()
        .map(|(entity, quotas)| {
            describe_client_quotas_response::EntryData::default()
                .with_entity(
                    entity
                        .0
                        .iter()
                        .map(|(kind, name)| {
                            describe_client_quotas_response::EntityData::default()
                                .with_entity_type(str_bytes(kind))
                                .with_entity_name(name.as_deref().map(str_bytes))
                        })
                        .collect(),
                )
                .with_values(
                    quotas
                        .iter()
                        .map(|(key, value)| {
                            describe_client_quotas_response::ValueData::default()
                                .with_key(str_bytes(key))
                                .with_value(*value)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default()
        .with_error_message(None)
        .with_entries(Some(entries))
}

pub async fn handle_alter(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let alterations: Vec<QuotaAlteration> = request
        .entries
        .iter()
        .map(|entry| QuotaAlteration {
            // A type named twice keeps its last name, as Kafka's request reads it into a map.
            entity: QuotaEntity(
                entry
                    .entity
                    .iter()
                    .map(|e| {
                        (
                            e.entity_type.to_string(),
                            e.entity_name.as_ref().map(StrBytes::to_string),
                        )
                    })
                    .collect(),
            ),
            ops: entry
                .ops
                .iter()
                .map(|op| (op.key.to_string(), (!op.remove).then_some(op.value)))
                .collect(),
        })
        .collect();
    let refused = ctx
        .authorize_cluster(Operation::AlterConfigs)
        .map_err(|e| (code(e), e.to_string()));
    let validate_only = request.validate_only;
    let committed = refused.and_then(|()| {
        tokio::task::block_in_place(|| {
            broker.commit(|image| {
                let (results, records) = broker
                    .meta
                    .controller()
                    .alter_client_quotas(image, &alterations);
                (if validate_only { Vec::new() } else { records }, results)
            })
        })
        .map_err(|e| (meta_error_code(&e), e.to_string()))
    });
    let entry = |entity: &QuotaEntity, error: i16, message: Option<StrBytes>| {
        alter_client_quotas_response::EntryData::default()
            .with_entity(
                entity
                    .0
                    .iter()
                    .map(|(kind, name)| {
                        alter_client_quotas_response::EntityData::default()
                            .with_entity_type(str_bytes(kind))
                            .with_entity_name(name.as_deref().map(str_bytes))
                    })
                    .collect(),
            )
            .with_error_code(error)
            .with_error_message(message)
    };
    let entries = match committed {
        Ok(results) => results
            .iter()
            .map(|(entity, outcome)| match outcome {
                Ok(()) => {
                    if !validate_only {
                        tracing::info!(%entity, "client quotas altered");
                    }
                    entry(entity, 0, None)
                }
                Err(e) => {
                    let (error, message) = controller_error(e);
                    entry(entity, error, message)
                }
            })
            .collect(),
        // Nothing was written: every entity gets the refusal or the commit's error.
        Err((error, message)) => alterations
            .iter()
            .map(|a| entry(&a.entity, error, Some(str_bytes(message.clone()))))
            .collect(),
    };
    AlterClientQuotasResponse::default().with_entries(entries)
}
