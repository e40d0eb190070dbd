//! The server side of the controller listener: Raft RPCs, forwarded proposals, learner joins,
//! the leader's quorum description and status under `/raft/`, merged with the server's own routes.
//!
//! Bodies of the `/raft/` routes are bounded by [`MAX_BODY_BYTES`] (axum refuses larger ones
//! with 413 before buffering them); the extra routes keep axum's default limit unless they set
//! their own. Any request carrying `LEADER_ONLY_HEADER` is answered 421 with a
//! `LeaderHint` unless this node is the leader. Every request, on every route, first passes
//! `authenticate_peer`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use crate::network::{paths, LEADER_ONLY_HEADER, MAX_BODY_BYTES};
use crate::quorum::{DescribeRequest, JoinRequest, JoinResponse, LeaderFailure};
use crate::tls::PeerIdentity;
use crate::types::{NodeId, ProposalData, TypeConfig};
use crate::Quorum;

/// Largest snapshot a follower accepts: bounds the buffer the chunks are assembled in.
/// Images are a few hundred bytes per partition, so this is millions of partitions.
pub const MAX_SNAPSHOT_BYTES: u64 = 1024 * 1024 * 1024;

/// `certificates_required`: the listener is mutual TLS, and a request on a connection without
/// a verified client certificate is refused.
pub(crate) fn router(
    quorum: Arc<Quorum>,
    extra_routes: Router,
    certificates_required: bool,
) -> Router {
    let raft_routes = Router::new()
        .route(paths::APPEND_ENTRIES, post(append_entries))
        .route(paths::VOTE, post(vote))
        .route(paths::INSTALL_SNAPSHOT, post(install_snapshot))
        .route(paths::PROPOSE, post(propose))
        .route(paths::JOIN, post(join))
        .route(paths::STATUS, get(status))
        .route(paths::DESCRIBE, post(describe))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(quorum.clone());
    raft_routes
        .merge(extra_routes)
        .layer(middleware::from_fn_with_state(quorum, leader_only))
        .layer(middleware::from_fn_with_state(
            certificates_required,
            authenticate_peer,
        ))
}

/// The one point where the controller listener authenticates its peer (a controller or a
/// broker), before any route, the server's own included: the outermost layer. On a
/// plaintext listener, where Kafka authenticates nobody, every peer passes; on a mutual-TLS
/// one a request whose connection carries no verified client certificate is answered 401
/// (the handshake already refuses such peers: this holds should that ever change).
async fn authenticate_peer(
    State(certificates_required): State<bool>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request.extensions().get::<ConnectInfo<PeerIdentity>>();
    if certificates_required && peer.is_none_or(|peer| peer.0.certificate.is_none()) {
        let addr = peer.map(|peer| peer.0.addr);
        tracing::warn!(
            ?addr,
            "controller listener: request without a client certificate refused"
        );
        return (
            StatusCode::UNAUTHORIZED,
            "the controller listener requires a client certificate",
        )
            .into_response();
    }
    next.run(request).await
}

async fn leader_only(State(quorum): State<Arc<Quorum>>, request: Request, next: Next) -> Response {
    if request.headers().contains_key(LEADER_ONLY_HEADER) && !quorum.is_leader() {
        return not_leader(&quorum);
    }
    next.run(request).await
}

fn not_leader(quorum: &Quorum) -> Response {
    let mut response = json(&quorum.leader_hint());
    *response.status_mut() = StatusCode::MISDIRECTED_REQUEST;
    response
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode reply: {e}"),
        )
            .into_response(),
    }
}

/// Decodes a JSON request body; the error is the message of a 400.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("undecodable request: {e}"))
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

fn leader_failure(quorum: &Quorum, failure: LeaderFailure) -> Response {
    match failure {
        LeaderFailure::NotLeader => not_leader(quorum),
        LeaderFailure::Retry(message) => (StatusCode::SERVICE_UNAVAILABLE, message).into_response(),
        LeaderFailure::Reject(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// The deadline of work done for a forwarded request: a bit under the sender's timeout, so
/// the answer arrives before the sender gives up.
fn forwarded_deadline(quorum: &Quorum) -> Instant {
    Instant::now() + quorum.timing().request_timeout * 3 / 4
}

async fn append_entries(State(quorum): State<Arc<Quorum>>, body: Bytes) -> Response {
    match decode::<AppendEntriesRequest<TypeConfig>>(&body) {
        Ok(rpc) => json(&quorum.raft().append_entries(rpc).await),
        Err(message) => bad_request(message),
    }
}

async fn vote(State(quorum): State<Arc<Quorum>>, body: Bytes) -> Response {
    match decode::<VoteRequest<NodeId>>(&body) {
        Ok(rpc) => json(&quorum.raft().vote(rpc).await),
        Err(message) => bad_request(message),
    }
}

async fn install_snapshot(State(quorum): State<Arc<Quorum>>, body: Bytes) -> Response {
    let rpc = match decode::<InstallSnapshotRequest<TypeConfig>>(&body) {
        Ok(rpc) => rpc,
        Err(message) => return bad_request(message),
    };
    let end = rpc.offset.saturating_add(rpc.data.len() as u64);
    if end > MAX_SNAPSHOT_BYTES {
        let message = format!("snapshot larger than {MAX_SNAPSHOT_BYTES} bytes");
        return (StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
    }
    json(&quorum.raft().install_snapshot(rpc).await)
}

async fn propose(State(quorum): State<Arc<Quorum>>, body: Bytes) -> Response {
    let data = match decode::<ProposalData>(&body) {
        Ok(data) => data,
        Err(message) => return bad_request(message),
    };
    if !quorum.is_leader() {
        return not_leader(&quorum);
    }
    match quorum
        .propose_as_leader(data, forwarded_deadline(&quorum))
        .await
    {
        Ok(proposal) => json(&proposal),
        Err(failure) => leader_failure(&quorum, failure),
    }
}

async fn join(State(quorum): State<Arc<Quorum>>, body: Bytes) -> Response {
    let request = match decode::<JoinRequest>(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    if !quorum.is_leader() {
        return not_leader(&quorum);
    }
    match quorum
        .admit_learner(request, forwarded_deadline(&quorum))
        .await
    {
        Ok(()) => json(&JoinResponse {}),
        Err(failure) => leader_failure(&quorum, failure),
    }
}

async fn status(State(quorum): State<Arc<Quorum>>) -> Response {
    json(&quorum.status())
}

/// The leader's [`crate::QuorumDescription`] for a node asked DescribeQuorum.
async fn describe(State(quorum): State<Arc<Quorum>>, body: Bytes) -> Response {
    if let Err(message) = decode::<DescribeRequest>(&body) {
        return bad_request(message);
    }
    match quorum.describe_as_leader() {
        Some(description) if quorum.is_leader() => json(&description),
        _ => not_leader(&quorum),
    }
}
