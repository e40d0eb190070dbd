//! DescribeUserScramCredentials (50) and AlterUserScramCredentials (51), KIP-554.
//!
//! Describe answers from the image, as Kafka's `ScramImage.describe` does: mechanism and
//! iterations only, never salt or keys. Alter goes through the controller
//! ([`strata_meta::controller::ScramControl`]); Kafka's brokers forward it to the active
//! controller, any Strata node commits it through its metadata source. The request carries
//! salted passwords: they are never logged (only user names and mechanisms are).
//!
//! As Kafka, describing needs DESCRIBE on the cluster and altering ALTER (else
//! CLUSTER_AUTHORIZATION_FAILED, and nothing changes).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use strata_meta::controller::{ScramDeletion, ScramUpsertion};

use super::{code, controller_error, meta_error_code, str_bytes};
use crate::broker::Broker;
use crate::session::{Operation, RequestContext};

/// Kafka's `ScramImage` messages; the user name follows them.
const DESCRIBE_DUPLICATE_USER: &str =
    "Cannot describe SCRAM credentials for the same user twice in a single request: ";
pub(crate) const DESCRIBE_USER_THAT_DOES_NOT_EXIST: &str =
    "Attempt to describe a user credential that does not exist: ";

pub fn handle_describe(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if let Err(e) = ctx.authorize_cluster(Operation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(code(e))
            .with_error_message(Some(str_bytes(e.to_string())));
    }
    let image = broker.image();
    // Null or empty: every user with a credential. Otherwise each named user once, with
    // whether it was named more than once.
    let mut users: BTreeMap<String, bool> = BTreeMap::new();
    match request.users.as_deref() {
        None | Some([]) => {
            for (name, _) in image.scram_users() {
                users.insert(name.clone(), false);
            }
        }
        Some(named) => {
            for user in named {
                users
                    .entry(user.name.to_string())
                    .and_modify(|dup| *dup = true)
                    .or_insert(false);
            }
        }
    }
    let results = users
        .into_iter()
        .map(|(user, duplicate)| {
            // The codec's default message is "", Kafka sends null for success.
            let result = DescribeUserScramCredentialsResult::default()
                .with_user(str_bytes(&user))
                .with_error_message(None);
            if duplicate {
                return result
                    .with_error_code(code(ResponseError::DuplicateResource))
                    .with_error_message(Some(str_bytes(format!(
                        "{DESCRIBE_DUPLICATE_USER}{user}"
                    ))));
            }
            let infos: Vec<CredentialInfo> = image
                .scram_users()
                .find(|(name, _)| **name == user)
                .map(|(_, by_mechanism)| {
                    by_mechanism
                        .iter()
                        .map(|(m, c)| {
                            CredentialInfo::default()
                                .with_mechanism(m.type_code())
                                .with_iterations(c.iterations)
                        })
                        .collect()
                })
                .unwrap_or_default();
            if infos.is_empty() {
                result
                    .with_error_code(code(ResponseError::ResourceNotFound))
                    .with_error_message(Some(str_bytes(format!(
                        "{DESCRIBE_USER_THAT_DOES_NOT_EXIST}{user}"
                    ))))
            } else {
                result.with_credential_infos(infos)
            }
        })
        .collect();
    DescribeUserScramCredentialsResponse::default()
        .with_error_message(None)
        .with_results(results)
}

pub async fn handle_alter(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let deletions: Vec<ScramDeletion> = request
        .deletions
        .iter()
        .map(|d| ScramDeletion {
            name: d.name.to_string(),
            mechanism: d.mechanism,
        })
        .collect();
    let upsertions: Vec<ScramUpsertion> = request
        .upsertions
        .into_iter()
        .map(|u| ScramUpsertion {
            name: u.name.to_string(),
            mechanism: u.mechanism,
            iterations: u.iterations,
            salt: u.salt.to_vec(),
            salted_password: u.salted_password.to_vec(),
        })
        .collect();
    let refused = ctx
        .authorize_cluster(Operation::Alter)
        .map_err(|e| (code(e), e.to_string()));
    let committed = refused.and_then(|()| {
        tokio::task::block_in_place(|| {
            broker.commit(|image| {
                let (results, records) = broker.meta.controller().alter_user_scram_credentials(
                    image,
                    &deletions,
                    &upsertions,
                );
                (records, results)
            })
        })
        .map_err(|e| (meta_error_code(&e), e.to_string()))
    });
    let results = match committed {
        Ok(results) => results
            .into_iter()
            .map(|(user, outcome)| {
                let result = AlterUserScramCredentialsResult::default()
                    .with_user(str_bytes(&user))
                    .with_error_message(None);
                match outcome {
                    Ok(()) => {
                        tracing::info!(user = %user, "SCRAM credential altered");
                        result
                    }
                    Err(e) => {
                        let (error, message) = controller_error(&e);
                        result.with_error_code(error).with_error_message(message)
                    }
                }
            })
            .collect(),
        Err((error, message)) => {
            // Nothing was written: every user named gets the refusal or the commit's error.
            let mut names: Vec<String> = deletions
                .iter()
                .map(|d| d.name.clone())
                .chain(upsertions.iter().map(|u| u.name.clone()))
                .collect();
            names.sort();
            names.dedup();
            names
                .into_iter()
                .map(|user| {
                    AlterUserScramCredentialsResult::default()
                        .with_user(str_bytes(user))
                        .with_error_code(error)
                        .with_error_message(Some(str_bytes(message.clone())))
                })
                .collect()
        }
    };
    AlterUserScramCredentialsResponse::default().with_results(results)
}
