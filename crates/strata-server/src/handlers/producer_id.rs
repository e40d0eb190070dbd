//! InitProducerId for idempotent producers. Transactional ids need the transaction
//! coordinator, which does not exist yet: such requests get COORDINATOR_NOT_AVAILABLE.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::code;
use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    request: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    let base = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        // No transaction coordinator yet: Kafka answers this when the coordinator for the
        // transactional id cannot be found, and clients report it instead of misbehaving.
        return base.with_error_code(code(ResponseError::CoordinatorNotAvailable));
    }
    if request.producer_id.0 >= 0 {
        // KIP-360: an idempotent producer asking to bump its epoch after an error. Handing out
        // a fresh id is always safe (its sequences start over) and needs no per-id state here.
        tracing::debug!(
            producer_id = request.producer_id.0,
            "producer asked to bump its epoch; issuing a new id"
        );
    }
    match tokio::task::block_in_place(|| broker.next_producer_id()) {
        Ok(id) => base.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "cannot allocate producer id");
            base.with_error_code(code(ResponseError::KafkaStorageError))
        }
    }
}
