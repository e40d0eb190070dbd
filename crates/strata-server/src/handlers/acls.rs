//! CreateAcls (30), DescribeAcls (29) and DeleteAcls (31), as Kafka's `AclApis`: without an
//! authorizer every answer is SECURITY_DISABLED; with one, creating and deleting need ALTER
//! on the cluster and describing DESCRIBE (else CLUSTER_AUTHORIZATION_FAILED), changes are
//! controller records ([`strata_meta::Controller::create_acls`] / `delete_acls`) committed
//! like any other, and DescribeAcls reads the image's ACLs.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use strata_meta::acl::{
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, PatternType, ResourceType,
};

use super::{code, controller_error, meta_error_code, str_bytes};
use crate::broker::Broker;
use crate::session::{Operation, RequestContext};

const NO_AUTHORIZER: &str = "No Authorizer is configured.";

/// Why a whole request is refused before its items are looked at: no authorizer, or the
/// principal may not do `operation` on the cluster.
fn refusal(ctx: &RequestContext<'_>, operation: Operation) -> Option<(i16, Option<StrBytes>)> {
    if !ctx.has_authorizer() {
        return Some((
            code(ResponseError::SecurityDisabled),
            Some(str_bytes(NO_AUTHORIZER)),
        ));
    }
    ctx.authorize_cluster(operation)
        .err()
        .map(|e| (code(e), None))
}

pub async fn handle_create(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: CreateAclsRequest,
) -> CreateAclsResponse {
    let all_failed = |(error_code, message): (i16, Option<StrBytes>)| {
        request
            .creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(error_code)
                    .with_error_message(message.clone())
            })
            .collect()
    };
    if let Some(refused) = refusal(ctx, Operation::Alter) {
        return CreateAclsResponse::default().with_results(all_failed(refused));
    }
    let bindings: Vec<AclBinding> = request
        .creations
        .iter()
        .map(|c| AclBinding {
            resource_type: ResourceType::from_code(c.resource_type),
            resource_name: c.resource_name.to_string(),
            pattern_type: PatternType::from_code(c.resource_pattern_type),
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: AclOperation::from_code(c.operation),
            permission: AclPermissionType::from_code(c.permission_type),
        })
        .collect();
    let outcome = tokio::task::block_in_place(|| {
        broker.commit(|image| {
            let (results, records) = broker.meta.controller().create_acls(image, &bindings);
            (records, results)
        })
    });
    let results = match outcome {
        Ok(results) => results
            .into_iter()
            .zip(&bindings)
            .map(|(result, binding)| match result {
                Ok(()) => {
                    tracing::info!(acl = ?binding, principal = %ctx.session.principal, "ACL created");
                    AclCreationResult::default()
                }
                Err(e) => {
                    let (error_code, message) = controller_error(&e);
                    AclCreationResult::default()
                        .with_error_code(error_code)
                        .with_error_message(message)
                }
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "metadata commit failed creating ACLs");
            all_failed((meta_error_code(&e), Some(str_bytes(e.to_string()))))
        }
    };
    CreateAclsResponse::default().with_results(results)
}

fn filter(
    resource_type: i8,
    resource_name: Option<&StrBytes>,
    pattern_type: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> AclBindingFilter {
    AclBindingFilter {
        resource_type: ResourceType::from_code(resource_type),
        resource_name: resource_name.map(|s| s.to_string()),
        pattern_type: PatternType::from_code(pattern_type),
        principal: principal.map(|s| s.to_string()),
        host: host.map(|s| s.to_string()),
        operation: AclOperation::from_code(operation),
        permission: AclPermissionType::from_code(permission),
    }
}

pub fn handle_describe(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: &DescribeAclsRequest,
) -> DescribeAclsResponse {
    if let Some((error_code, message)) = refusal(ctx, Operation::Describe) {
        return DescribeAclsResponse::default()
            .with_error_code(error_code)
            .with_error_message(message);
    }
    let filter = filter(
        request.resource_type_filter,
        request.resource_name_filter.as_ref(),
        request.pattern_type_filter,
        request.principal_filter.as_ref(),
        request.host_filter.as_ref(),
        request.operation,
        request.permission_type,
    );
    if filter.is_unknown() {
        return DescribeAclsResponse::default()
            .with_error_code(code(ResponseError::InvalidRequest))
            .with_error_message(Some(str_bytes(
                "DescribeAclsRequest contains UNKNOWN elements",
            )));
    }
    // Kafka's `DescribeAclsResponse.aclsResources`: one entry per resource pattern.
    let image = broker.image();
    let mut resources: BTreeMap<(ResourceType, PatternType, &str), Vec<&AclBinding>> =
        BTreeMap::new();
    for (_, acl) in image.acls().iter().filter(|(_, acl)| filter.matches(acl)) {
        resources
            .entry((acl.resource_type, acl.pattern_type, &acl.resource_name))
            .or_default()
            .push(acl);
    }
    DescribeAclsResponse::default().with_resources(
        resources
            .into_iter()
            .map(|((resource_type, pattern_type, name), acls)| {
                DescribeAclsResource::default()
                    .with_resource_type(resource_type.code())
                    .with_resource_name(str_bytes(name))
                    .with_pattern_type(pattern_type.code())
                    .with_acls(
                        acls.into_iter()
                            .map(|acl| {
                                AclDescription::default()
                                    .with_principal(str_bytes(acl.principal.clone()))
                                    .with_host(str_bytes(acl.host.clone()))
                                    .with_operation(acl.operation.code())
                                    .with_permission_type(acl.permission.code())
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

pub async fn handle_delete(
    broker: &Arc<Broker>,
    ctx: &RequestContext<'_>,
    request: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let all_failed = |(error_code, message): (i16, Option<StrBytes>)| {
        request
            .filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(error_code)
                    .with_error_message(message.clone())
            })
            .collect()
    };
    if let Some(refused) = refusal(ctx, Operation::Alter) {
        return DeleteAclsResponse::default().with_filter_results(all_failed(refused));
    }
    let filters: Vec<AclBindingFilter> = request
        .filters
        .iter()
        .map(|f| {
            filter(
                f.resource_type_filter,
                f.resource_name_filter.as_ref(),
                f.pattern_type_filter,
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let outcome = tokio::task::block_in_place(|| {
        broker.commit(|image| {
            let (results, records) = broker.meta.controller().delete_acls(image, &filters);
            (records, results)
        })
    });
    let results = match outcome {
        Ok(results) => results
            .into_iter()
            .map(|result| match result {
                Ok(deleted) => {
                    for acl in &deleted {
                        tracing::info!(?acl, principal = %ctx.session.principal, "ACL deleted");
                    }
                    DeleteAclsFilterResult::default()
                        .with_matching_acls(deleted.into_iter().map(matching_acl).collect())
                }
                Err(e) => {
                    let (error_code, message) = controller_error(&e);
                    DeleteAclsFilterResult::default()
                        .with_error_code(error_code)
                        .with_error_message(message)
                }
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "metadata commit failed deleting ACLs");
            all_failed((meta_error_code(&e), Some(str_bytes(e.to_string()))))
        }
    };
    DeleteAclsResponse::default().with_filter_results(results)
}

fn matching_acl(acl: AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(acl.resource_type.code())
        .with_resource_name(str_bytes(acl.resource_name))
        .with_pattern_type(acl.pattern_type.code())
        .with_principal(str_bytes(acl.principal))
        .with_host(str_bytes(acl.host))
        .with_operation(acl.operation.code())
        .with_permission_type(acl.permission.code())
}
