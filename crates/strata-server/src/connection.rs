//! Client connections: accept, read frames, dispatch, write responses.
//!
//! Each connection is one task; thousands of idle connections cost a task and a small buffer
//! each, not a thread. Requests of a connection are handled one at a time, in order, as Kafka
//! does (it mutes a channel while a request is in flight): a producer pipelining idempotent
//! batches relies on them being appended in the order sent. Reading is bounded by the frame
//! size limit, which is checked from the length prefix before the body is buffered.
//!
//! Each connection has a [`Session`] (who is asking, on which listener); each request is
//! handled with a [`RequestContext`] after [`Session::admit`], the one gate between decoding
//! and the handler. The connection is generic over its byte stream so that TLS can wrap TCP.
//!
//! Bad input never takes the broker down: an unknown API key, a malformed body, an oversized
//! frame or an unsupported version of an API other than ApiVersions closes that connection
//! with a log line, as Kafka does.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use strata_protocol::frame::LENGTH_PREFIX_BYTES;
use strata_protocol::{decode_request, encode_response, FrameDecoder, RequestError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::handlers;
use crate::session::{Authentication, Refusal, RequestContext, SecurityProtocol, Session};

/// Kafka's `connections.max.idle.ms` default: idle connections are closed after this long.
const CONNECTION_MAX_IDLE: Duration = Duration::from_secs(600);
/// Most connections held open before closing for their address's connection creation rate;
/// beyond, they are closed at once, so a flood cannot hold descriptors.
const MAX_HELD_CONNECTIONS: usize = 1024;
/// Read buffer size for a connection with no partial frame.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Largest single growth of a connection's read buffer.
const MAX_READ_STEP_BYTES: usize = 1024 * 1024;

/// Longest a TLS handshake may take; a client that does not finish it (a plaintext client on
/// an SSL port sends no ClientHello at all) is closed, without holding others up, since each
/// connection shakes hands in its own task.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

mod sasl_authenticator;

pub use sasl_authenticator::SaslListener;
use sasl_authenticator::{Answer, Authenticator, Reply};

/// A bound Kafka listener, with its TLS acceptor on an SSL or SASL_SSL listener and its SASL
/// settings on a SASL one.
pub struct BoundListener {
    pub config: crate::config::ListenerConfig,
    pub socket: tokio::net::TcpListener,
    pub tls: Option<Arc<crate::tls::TlsListener>>,
    pub sasl: Option<SaslListener>,
}

/// What every connection of one listener shares.
struct ListenerRuntime {
    name: Arc<str>,
    protocol: SecurityProtocol,
    tls: Option<Arc<crate::tls::TlsListener>>,
    sasl: Option<Arc<SaslListener>>,
}

pub async fn accept_loop(
    broker: Arc<Broker>,
    bound: BoundListener,
    mut stop: watch::Receiver<bool>,
) {
    let listener = bound.socket;
    let runtime = Arc::new(ListenerRuntime {
        name: bound.config.name.as_str().into(),
        protocol: bound.config.security_protocol,
        tls: bound.tls,
        sasl: bound.sasl.map(Arc::new),
    });
    let max_connections: i64 = broker
        .config
        .broker_value(strata_meta::config::props::MAX_CONNECTIONS);
    let mut connections = JoinSet::new();
    // Connections over their address's connection_creation_rate, closed after their throttle
    // time (at most a quota sample window), as Kafka delays closing them.
    let mut held = JoinSet::new();
    let conn_stop = stop.clone();
    let upkeep = tokio::spawn(refresh_oauth_keys(runtime.clone(), stop.clone()));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if broker.metrics.connections_open.load(Ordering::Relaxed) >= max_connections {
                        tracing::warn!(%peer, max_connections, "refusing connection: max.connections reached");
                        continue;
                    }
                    let hold = broker.quotas.record_connection(&broker.image(), peer.ip(), Instant::now());
                    if !hold.is_zero() {
                        broker.metrics.connections_throttled.add(1);
                        tracing::debug!(%peer, ?hold, "connection_creation_rate exceeded: closing the connection after its throttle time");
                        if held.len() < MAX_HELD_CONNECTIONS {
                            held.spawn(async move {
                                tokio::time::sleep(hold).await;
                                drop(stream);
                            });
                        }
                        continue;
                    }
                    broker.metrics.connections_accepted.add(1);
                    connections.spawn(serve(
                        broker.clone(),
                        stream,
                        peer,
                        runtime.clone(),
                        conn_stop.clone(),
                    ));
                }
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Some(_) = held.join_next(), if !held.is_empty() => {}
            _ = crate::task::stopped(&mut stop) => break,
        }
    }
    drop(listener);
    let _ = upkeep.await;
    while connections.join_next().await.is_some() {}
}

/// Reads a listener's OAUTHBEARER keys again every `sasl.oauthbearer.jwks.endpoint.refresh.ms`
/// until the broker stops. (TLS store files are looked at when connections come, see
/// [`crate::tls::Reloading`].)
async fn refresh_oauth_keys(runtime: Arc<ListenerRuntime>, mut stop: watch::Receiver<bool>) {
    let Some(tokens) = runtime.sasl.as_ref().and_then(|s| s.tokens.clone()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tokens.refresh_every) => {}
            _ = crate::task::stopped(&mut stop) => return,
        }
        if let Err(e) = tokens.refresh().await {
            tracing::warn!(listener = %runtime.name, error = %e, "cannot read the OAUTHBEARER keys again; keeping those held");
        }
    }
}

async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerRuntime>,
    stop: watch::Receiver<bool>,
) {
    broker
        .metrics
        .connections_open
        .fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let mut session = Session::on_listener(peer, listener.name.clone(), listener.protocol);
    let authenticator = listener.sasl.clone().map(Authenticator::new);
    let ended = match &listener.tls {
        None => serve_requests(&broker, stream, &mut session, authenticator, stop).await,
        Some(tls_listener) => {
            let acceptor = tls_listener.acceptor();
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Err(_) => Err(Closed::BadInput("TLS handshake timed out".into())),
                Ok(Err(e)) => Err(Closed::BadInput(format!("TLS handshake failed: {e}"))),
                Ok(Ok(tls)) => match tls_listener.principal(tls.get_ref().1.peer_certificates()) {
                    Ok(principal) => {
                        session.principal = principal;
                        serve_requests(&broker, tls, &mut session, authenticator, stop).await
                    }
                    Err(reason) => Err(Closed::Authentication(reason)),
                },
            }
        }
    };
    let software = session
        .client_software
        .as_ref()
        .map(|s| format!("{} {}", s.name, s.version));
    let software = software.as_deref().unwrap_or("unknown");
    match ended {
        Ok(()) => {
            tracing::debug!(%peer, software, listener = %session.listener, principal = %session.principal, "connection closed")
        }
        Err(Closed::Io(reason)) => tracing::debug!(%peer, software, %reason, "connection lost"),
        Err(Closed::Authentication(reason)) => {
            tracing::info!(%peer, software, listener = %session.listener, %reason, "closing connection: authentication")
        }
        Err(Closed::BadInput(reason)) => {
            broker.metrics.connections_closed_bad_input.add(1);
            tracing::warn!(%peer, software, %reason, "closing connection");
        }
        Err(Closed::Unencodable(reason)) => {
            broker.metrics.responses_unencodable.add(1);
            tracing::error!(%peer, software, %reason, "closing connection: broker bug, a response that its version cannot carry");
        }
    }
    broker
        .metrics
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
}

/// Why a connection ended early.
enum Closed {
    /// The peer sent something we refuse: logged as a warning and counted.
    BadInput(String),
    /// The socket failed (reset, broken pipe): the peer went away.
    Io(String),
    /// A SASL authentication failed, or a session expired without re-authenticating.
    Authentication(String),
    /// A handler built a response that the version asked for cannot carry (a field the version
    /// lacks set, a required one missing): a bug in the broker, not the client's doing. The
    /// connection closes, as Kafka's does when a response fails to serialize, since the client
    /// waits for an answer that cannot come.
    Unencodable(String),
}

/// Serves requests until the peer closes, the broker stops, bad input, a failed
/// authentication or a socket error. `authenticator` is the SASL exchange of a SASL listener.
async fn serve_requests<S: AsyncRead + AsyncWrite + Unpin>(
    broker: &Arc<Broker>,
    mut stream: S,
    session: &mut Session,
    mut authenticator: Option<Authenticator>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Closed> {
    let bad = Closed::BadInput;
    let max_frame_bytes: i64 = broker
        .config
        .broker_value(strata_meta::config::props::SOCKET_REQUEST_MAX_BYTES);
    let max_frame_bytes = max_frame_bytes.max(0) as usize;
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut tenant_connection = None;
    loop {
        let limit = authenticator
            .as_ref()
            .map_or(max_frame_bytes, |a| a.frame_limit(session, max_frame_bytes));
        let Some(frame) = read_frame(&mut stream, &mut buf, limit, session, &mut stop).await?
        else {
            return Ok(());
        };
        let arrived = Instant::now();
        let frame_bytes = LENGTH_PREFIX_BYTES + frame.len();
        if let Some(auth) = authenticator
            .as_mut()
            .filter(|a| a.expects_raw_token(session))
        {
            // After a v0 SaslHandshake the tokens come bare, without a request header.
            let answer = auth.authenticate(broker, session, 0, &frame, arrived);
            send_sasl_answer(broker, &mut stream, auth, answer, None).await?;
            count_tenant_connection(broker, session, &mut tenant_connection)?;
            continue;
        }
        let response = match decode_request(frame) {
            Ok(request) => {
                let api_key = request.api_key;
                let version = request.api_version();
                let correlation_id = request.correlation_id();
                broker.metrics.request(api_key);
                if let Some(auth) = authenticator
                    .as_mut()
                    .filter(|a| a.takes(session, api_key, version))
                {
                    let answer = match &request.body {
                        RequestKind::SaslHandshake(r) => {
                            auth.handshake(session, version, r, broker.image())
                        }
                        RequestKind::SaslAuthenticate(r) => {
                            auth.authenticate(broker, session, version, &r.auth_bytes, arrived)
                        }
                        other => unreachable!(
                            "the authenticator takes only SASL requests, not {other:?}"
                        ),
                    };
                    let header = (correlation_id, api_key, version);
                    send_sasl_answer(broker, &mut stream, auth, answer, Some(header)).await?;
                    count_tenant_connection(broker, session, &mut tenant_connection)?;
                    continue;
                }
                let mut ctx = admit(
                    broker,
                    session,
                    api_key,
                    request.header,
                    &request.body,
                    arrived,
                    frame_bytes,
                )
                .map_err(|refusal| match refusal {
                    Refusal::SessionExpired { .. } => Closed::Authentication(refusal.to_string()),
                    _ => bad(refusal.to_string()),
                })?;
                let response = match handlers::handle(broker, &mut ctx, request.body).await {
                    Some(body) => Some(encode(correlation_id, api_key, version, &body)?),
                    None => None,
                };
                let response_bytes = response
                    .as_ref()
                    .map(|chunks: &Vec<Bytes>| chunks.iter().map(Bytes::len).sum());
                broker
                    .metrics
                    .request_bytes(api_key, frame_bytes, response_bytes);
                if let Some(tenant) = &ctx.tenant {
                    let out = response_bytes.unwrap_or(0);
                    broker
                        .tenants
                        .record_request(&tenant.tenant_id, frame_bytes, out);
                }
                let throttle = ctx.throttle_time();
                if throttle.is_zero() {
                    response
                } else if client_side_throttling(api_key, version) {
                    // KIP-219: the answer goes at once with its throttle_time_ms, then the
                    // connection is muted for that long: nothing more is read from it, so a
                    // client that ignores the throttle time is held back all the same.
                    if let Some(chunks) = response {
                        send(&mut stream, &chunks).await?;
                    }
                    hold(throttle, &mut stop).await;
                    None
                } else {
                    // Clients older than KIP-219 do not throttle themselves: the answer is
                    // delayed instead, as Kafka delays it for them.
                    hold(throttle, &mut stop).await;
                    response
                }
            }
            Err(RequestError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                api_version,
                correlation_id,
            }) => {
                // KIP-511: answer a too-new ApiVersions with a v0 response carrying
                // UNSUPPORTED_VERSION and our ranges, so the client can retry with one we serve.
                tracing::debug!(peer = %session.peer, api_version, "ApiVersions version too new; answering with v0");
                let body =
                    ResponseKind::ApiVersions(handlers::api_versions::response().with_error_code(
                        kafka_protocol::error::ResponseError::UnsupportedVersion.code(),
                    ));
                Some(
                    encode_response(correlation_id, ApiKey::ApiVersions, 0, &body)
                        .map_err(|e| bad(e.to_string()))?,
                )
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        if let Some(chunks) = response {
            send(&mut stream, &chunks).await?;
        }
    }
}

/// Whether a client that sends `api_key` at `version` waits out the throttle time of its
/// answer itself (KIP-219, Kafka's `shouldClientThrottle`); older clients get the answer late.
fn client_side_throttling(api_key: ApiKey, version: i16) -> bool {
    match api_key {
        ApiKey::Produce => version >= 6,
        ApiKey::Fetch => version >= 8,
        ApiKey::CreateTopics => version >= 3,
        ApiKey::DeleteTopics => version >= 2,
        ApiKey::CreatePartitions => version >= 1,
        _ => true,
    }
}

/// Holds the connection for `throttle`, or until the broker stops.
async fn hold(throttle: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(throttle) => {}
        _ = crate::task::stopped(stop) => {}
    }
}

/// Reads the next whole frame (at most `limit` bytes) into `buf` and takes it out; `None`
/// when the peer closed or the broker stopped between requests.
async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    limit: usize,
    session: &Session,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Bytes>, Closed> {
    let bad = |e: strata_protocol::frame::FrameError| Closed::BadInput(e.to_string());
    let frames = FrameDecoder::new(limit);
    loop {
        if let Some(frame) = frames.decode(buf).map_err(bad)? {
            return Ok(Some(frame));
        }
        let wanted = frames.bytes_wanted(buf).map_err(bad)?;
        // Grow towards the announced frame size a bounded step at a time, so a client that
        // announces a large frame and trickles it in does not pin the whole size up front.
        buf.reserve(wanted.clamp(READ_CHUNK_BYTES, MAX_READ_STEP_BYTES));
        let read = tokio::select! {
            read = tokio::time::timeout(CONNECTION_MAX_IDLE, stream.read_buf(buf)) => read,
            // Stop between requests only: a partly received request is still served.
            _ = crate::task::stopped(stop), if buf.is_empty() => return Ok(None),
        };
        match read {
            Err(_) => {
                tracing::debug!(peer = %session.peer, "closing idle connection");
                return Ok(None);
            }
            Ok(Ok(0)) if buf.is_empty() => return Ok(None),
            Ok(Ok(0)) => {
                return Err(Closed::Io(format!(
                    "peer closed mid-request with {} bytes buffered",
                    buf.len()
                )))
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Closed::Io(format!("read failed: {e}"))),
        }
    }
}

/// Encodes a handler's response for the request's version. A failure is a broker bug: a
/// response the version cannot carry.
fn encode(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &ResponseKind,
) -> Result<Vec<Bytes>, Closed> {
    encode_response(correlation_id, api_key, version, body).map_err(|e| {
        Closed::Unencodable(format!(
            "cannot encode {api_key:?} v{version} response: {e:#}"
        ))
    })
}

/// Writes one response frame and flushes it: a TLS stream holds encrypted records until
/// flushed; TCP's flush does nothing.
async fn send<S: AsyncWrite + Unpin>(stream: &mut S, chunks: &[Bytes]) -> Result<(), Closed> {
    let failed = |e: std::io::Error| Closed::Io(format!("write failed: {e}"));
    write_chunks(stream, chunks).await.map_err(failed)?;
    stream.flush().await.map_err(failed)
}

/// Sends what the authenticator answered: a response to the request `header` (correlation
/// id, API, version) or a bare token. A failure is answered after the listener's delay, and
/// then the connection closes.
async fn send_sasl_answer<S: AsyncWrite + Unpin>(
    broker: &Broker,
    stream: &mut S,
    authenticator: &Authenticator,
    answer: Answer,
    header: Option<(i32, ApiKey, i16)>,
) -> Result<(), Closed> {
    if answer.failure.is_some() {
        broker.metrics.failed_authentications.add(1);
        tokio::time::sleep(authenticator.failure_delay()).await;
    }
    let chunks = match (answer.reply, header) {
        (Reply::Response(body), Some((correlation_id, api_key, version))) => {
            Some(encode(correlation_id, api_key, version, &body)?)
        }
        (Reply::Token(token), _) => {
            let mut frame = BytesMut::with_capacity(LENGTH_PREFIX_BYTES + token.len());
            frame.extend_from_slice(&(token.len() as i32).to_be_bytes());
            frame.extend_from_slice(&token);
            Some(vec![frame.freeze()])
        }
        (Reply::Response(_), None) | (Reply::Nothing, _) => None,
    };
    if let Some(chunks) = chunks {
        send(stream, &chunks).await?;
    }
    match answer.failure {
        Some(reason) => Err(Closed::Authentication(reason)),
        None => Ok(()),
    }
}

/// Counts the connection against its tenant's `connections` limit once its SASL session is
/// authenticated as one of the tenant's users; a connection over the limit is closed, as Kafka
/// closes one over `max.connections`, and the client tries again later. Counted once, however
/// often the session re-authenticates.
fn count_tenant_connection(
    broker: &Broker,
    session: &Session,
    slot: &mut Option<crate::tenant_metrics::TenantConnection>,
) -> Result<(), Closed> {
    if slot.is_some() || session.authentication != Authentication::Complete {
        return Ok(());
    }
    let image = broker.image();
    let Some(scope) = handlers::tenant_scope(&image, &session.principal) else {
        return Ok(());
    };
    let limit = image
        .tenant(&scope.tenant_id)
        .and_then(|t| t.limits.connections);
    match broker.tenants.connect(&scope.tenant_id, limit) {
        Ok(connection) => {
            *slot = Some(connection);
            Ok(())
        }
        Err(held) => Err(Closed::Authentication(format!(
            "tenant {} already holds {held} connections, its limit",
            scope.tenant_id
        ))),
    }
}

/// The seam between decoding a request and handling it: records what ApiVersions tells
/// about the client, asks the session whether it may send this API now (authentication), and
/// builds the context the handler gets, with the authorizer its handler asks per resource.
pub(crate) fn admit<'s>(
    broker: &Broker,
    session: &'s mut Session,
    api_key: ApiKey,
    header: RequestHeader,
    body: &RequestKind,
    arrived: Instant,
    frame_bytes: usize,
) -> Result<RequestContext<'s>, Refusal> {
    if let RequestKind::ApiVersions(r) = body {
        session.note_api_versions(r, header.request_api_version);
    }
    session.admit(api_key, arrived)?;
    Ok(RequestContext::new(header, session, arrived)
        .with_authorizer(broker.request_authorizer())
        .with_frame_bytes(frame_bytes))
}

/// Most chunks passed to one vectored write; Linux takes up to `IOV_MAX` (1024).
const MAX_WRITE_CHUNKS: usize = 64;

/// Writes a response frame given as chunks (see `encode_response`): a Fetch response is
/// its encoded fields interleaved with record sets read from the log, sent with vectored writes
/// so the record bytes are not gathered into one buffer first.
async fn write_chunks<S: AsyncWrite + Unpin>(
    stream: &mut S,
    chunks: &[Bytes],
) -> std::io::Result<()> {
    if let [single] = chunks {
        return stream.write_all(single).await;
    }
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut unsent = &mut slices[..];
    // Drops leading empty chunks, so `unsent` is empty exactly when all is sent.
    IoSlice::advance_slices(&mut unsent, 0);
    while !unsent.is_empty() {
        let take = unsent.len().min(MAX_WRITE_CHUNKS);
        match stream.write_vectored(&unsent[..take]).await? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => IoSlice::advance_slices(&mut unsent, n),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
