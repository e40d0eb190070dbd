//! The connection's request path over an in-memory byte stream (no socket): framing and its
//! size limit, the decode errors that close a connection, the too-new ApiVersions that is
//! answered, and the session the connection fills in (client software, KIP-511).

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use std::sync::Arc;

use super::{serve_requests, Authenticator, Closed, SaslListener};
use crate::session::{SecurityProtocol, Session};
use crate::test_fixture::TestBroker;

/// Longest a connection may take to answer or close before the test fails.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How a connection ended, and the session it leaves.
type Ended = (Result<(), &'static str>, Session);

/// A connection served on its own task; the stop sender keeps the broker "running".
struct Connection {
    client: DuplexStream,
    served: JoinHandle<Ended>,
    _stop: watch::Sender<bool>,
}

fn connect(broker: &TestBroker) -> Connection {
    let session = Session::plaintext("203.0.113.5:4242".parse().expect("addr"));
    serve(broker, session, None)
}

/// A connection to a SASL_PLAINTEXT listener with `listener`'s settings.
fn connect_sasl(broker: &TestBroker, listener: SaslListener) -> Connection {
    let protocol = SecurityProtocol::SaslPlaintext;
    let session = Session::on_listener(
        "203.0.113.5:4242".parse().expect("addr"),
        protocol.name().into(),
        protocol,
    );
    serve(
        broker,
        session,
        Some(Authenticator::new(Arc::new(listener))),
    )
}

fn serve(broker: &TestBroker, mut session: Session, auth: Option<Authenticator>) -> Connection {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (stop, stop_rx) = watch::channel(false);
    let broker = broker.broker.clone();
    let served = tokio::spawn(async move {
        let ended = serve_requests(&broker, server, &mut session, auth, stop_rx)
            .await
            .map_err(|closed| match closed {
                Closed::BadInput(_) => "bad input",
                Closed::Io(_) => "io",
                Closed::Unencodable(_) => "unencodable",
                Closed::Authentication(_) => "authentication",
            });
        (ended, session)
    });
    Connection {
        client,
        served,
        _stop: stop,
    }
}

/// A request frame, length prefix included.
fn frame(api_key: ApiKey, version: i16, encode_as: i16, body: &impl Encodable) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(11)
        .with_client_id(Some(StrBytes::from_static_str("conn-test")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api_key.request_header_version(encode_as))
        .expect("header encodes");
    body.encode(&mut buf, encode_as).expect("body encodes");
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

impl Connection {
    async fn send(&mut self, bytes: &[u8]) {
        self.client.write_all(bytes).await.expect("write");
    }

    /// The next response frame (without its length prefix).
    async fn response(&mut self) -> Bytes {
        let read = async {
            let size = self.client.read_i32().await.expect("a response") as usize;
            let mut body = vec![0; size];
            self.client
                .read_exact(&mut body)
                .await
                .expect("the whole response");
            Bytes::from(body)
        };
        tokio::time::timeout(LIMIT, read)
            .await
            .expect("answered in time")
    }

    /// Closes the client's side and waits for the connection to end.
    async fn end(self) -> Ended {
        drop(self.client);
        tokio::time::timeout(LIMIT, self.served)
            .await
            .expect("the connection ends")
            .expect("the connection task")
    }

    /// Waits for the connection to end on its own (the client's side still open), and checks
    /// that the client reads the end of the stream without a response.
    async fn closed_by_broker(mut self) -> Ended {
        let ended = tokio::time::timeout(LIMIT, &mut self.served)
            .await
            .expect("the broker closes the connection")
            .expect("the connection task");
        let mut rest = Vec::new();
        self.client.read_to_end(&mut rest).await.expect("read");
        assert!(rest.is_empty(), "no response before the close");
        ended
    }
}

fn api_versions(version: i16, mut frame: Bytes) -> (i32, ApiVersionsResponse) {
    // ApiVersions responses always use header v0 (KIP-511).
    let header = ResponseHeader::decode(&mut frame, 0).expect("header");
    let body = ApiVersionsResponse::decode(&mut frame, version).expect("body");
    assert!(!frame.has_remaining());
    (header.correlation_id, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_new_api_versions_is_answered_in_v0_and_the_session_notes_the_client() {
    let broker = TestBroker::open(&[]).await;
    let mut conn = connect(&broker);
    // A version from the future: its body is not read, the answer is v0 (KIP-511).
    conn.send(&frame(
        ApiKey::ApiVersions,
        99,
        3,
        &ApiVersionsRequest::default(),
    ))
    .await;
    let (correlation_id, answer) = api_versions(0, conn.response().await);
    assert_eq!(correlation_id, 11);
    assert_eq!(answer.error_code, ResponseError::UnsupportedVersion.code());
    let range = answer
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
        .expect("ApiVersions' range");
    assert_eq!((range.min_version, range.max_version), (0, 4));
    // The client retries with a version served here, naming itself.
    let named = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("conn-test"))
        .with_client_software_version(StrBytes::from_static_str("2.0"));
    conn.send(&frame(ApiKey::ApiVersions, 3, 3, &named)).await;
    let (_, answer) = api_versions(3, conn.response().await);
    assert_eq!(answer.error_code, 0);
    let (ended, session) = conn.end().await;
    assert_eq!(ended, Ok(()));
    let software = session.client_software.expect("noted by the connection");
    assert_eq!(
        (software.name.as_str(), software.version.as_str()),
        ("conn-test", "2.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_limit_closes_the_connection_before_its_body_arrives() {
    let broker = TestBroker::open(&[("socket.request.max.bytes", "1024")]).await;
    let mut conn = connect(&broker);
    // Only the length prefix: the broker must not wait for (or buffer) the body.
    conn.send(&2048i32.to_be_bytes()).await;
    let (ended, _) = conn.closed_by_broker().await;
    assert_eq!(ended, Err("bad input"));
    // A frame within the limit is served.
    let mut conn = connect(&broker);
    conn.send(&frame(
        ApiKey::ApiVersions,
        3,
        3,
        &ApiVersionsRequest::default(),
    ))
    .await;
    let _ = conn.response().await;
    assert_eq!(conn.end().await.0, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_requests_close_the_connection_without_an_answer() {
    let broker = TestBroker::open(&[]).await;
    let unknown_key = {
        let mut f = frame(ApiKey::ApiVersions, 3, 3, &ApiVersionsRequest::default());
        f[4] = 0x7f; // the API key's high byte
        f
    };
    let produce_too_old = {
        // Kafka 4 serves Produce from v3 (KIP-896).
        let mut f = frame(
            ApiKey::Produce,
            3,
            3,
            &kafka_protocol::messages::ProduceRequest::default(),
        );
        f[7] = 2; // the version's low byte
        f
    };
    let truncated = {
        let mut f = frame(ApiKey::ApiVersions, 3, 3, &ApiVersionsRequest::default());
        f.truncate(f.len() - 3);
        let size = (f.len() - 4) as i32;
        f[..4].copy_from_slice(&size.to_be_bytes());
        f
    };
    for (what, bytes) in [
        ("unknown API key", unknown_key),
        ("Produce v2", produce_too_old),
        ("truncated body", truncated),
    ] {
        let mut conn = connect(&broker);
        conn.send(&bytes).await;
        let (ended, _) = conn.closed_by_broker().await;
        assert_eq!(ended, Err("bad input"), "{what}");
    }
}

// ----- SASL listeners ---------------------------------------------------------------------

use kafka_protocol::messages::{
    MetadataRequest, MetadataResponse, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use std::time::Duration;

use crate::sasl::SaslMechanism;

fn sasl_listener(reauth_after: Option<Duration>) -> SaslListener {
    SaslListener {
        mechanisms: vec![
            SaslMechanism::Scram(strata_meta::scram::ScramMechanism::ScramSha256),
            SaslMechanism::Plain,
        ],
        tokens: None,
        max_receive_bytes: 4096,
        reauth_after,
        failure_delay: Duration::from_millis(30),
    }
}

/// A broker with the user `alice` (password `alice-secret`).
async fn broker_with_alice() -> TestBroker {
    let broker = TestBroker::open(&[]).await;
    let alice = strata_meta::scram::ScramBootstrap::parse(
        "SCRAM-SHA-256=[name=alice,password=alice-secret]",
    )
    .expect("valid");
    let b = broker.broker.clone();
    tokio::task::spawn_blocking(move || b.bootstrap_scram_credentials(&[alice]))
        .await
        .expect("joined")
        .expect("created");
    broker
}

fn body<T: kafka_protocol::protocol::Decodable>(api_key: ApiKey, version: i16, mut f: Bytes) -> T {
    ResponseHeader::decode(&mut f, api_key.response_header_version(version)).expect("header");
    let body = T::decode(&mut f, version).expect("body");
    assert!(!f.has_remaining(), "no bytes left over");
    body
}

impl Connection {
    async fn handshake(&mut self, version: i16, mechanism: &'static str) -> SaslHandshakeResponse {
        let request =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        self.send(&frame(ApiKey::SaslHandshake, version, version, &request))
            .await;
        body(ApiKey::SaslHandshake, version, self.response().await)
    }

    async fn authenticate(&mut self, version: i16, token: &[u8]) -> SaslAuthenticateResponse {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(token.to_vec().into());
        self.send(&frame(ApiKey::SaslAuthenticate, version, version, &request))
            .await;
        body(ApiKey::SaslAuthenticate, version, self.response().await)
    }

    /// Sends a Metadata request (v12).
    async fn send_metadata(&mut self) {
        let request = MetadataRequest::default();
        self.send(&frame(ApiKey::Metadata, 12, 12, &request)).await;
    }

    /// A Metadata request, answered (the session may send it).
    async fn metadata(&mut self) -> MetadataResponse {
        self.send_metadata().await;
        body(ApiKey::Metadata, 12, self.response().await)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_authenticates_and_then_serves_requests() {
    let broker = broker_with_alice().await;
    let mut conn = connect_sasl(&broker, sasl_listener(None));
    // ApiVersions is answered before authentication, as Kafka answers it.
    conn.send(&frame(
        ApiKey::ApiVersions,
        2,
        2,
        &ApiVersionsRequest::default(),
    ))
    .await;
    assert_eq!(api_versions(2, conn.response().await).1.error_code, 0);
    let handshake = conn.handshake(1, "PLAIN").await;
    assert_eq!(handshake.error_code, 0);
    let listed: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
    assert_eq!(listed, ["SCRAM-SHA-256", "PLAIN"]);
    let answer = conn.authenticate(2, b"\0alice\0alice-secret").await;
    assert_eq!(answer.error_code, 0, "{:?}", answer.error_message);
    assert_eq!(
        answer.session_lifetime_ms, 0,
        "no connections.max.reauth.ms"
    );
    conn.metadata().await;
    // After authentication SaslAuthenticate is a stray: ILLEGAL_SASL_STATE, as in Kafka.
    let stray = conn.authenticate(2, b"\0alice\0alice-secret").await;
    assert_eq!(stray.error_code, ResponseError::IllegalSaslState.code());
    let (ended, session) = conn.end().await;
    assert_eq!(ended, Ok(()));
    assert_eq!(session.principal.to_string(), "User:alice");
    assert_eq!(broker.broker.metrics.successful_authentications.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_failures_are_answered_after_the_delay_and_closed() {
    let broker = broker_with_alice().await;
    // A wrong password: SASL_AUTHENTICATION_FAILED after the delay, then the close.
    let mut conn = connect_sasl(&broker, sasl_listener(None));
    assert_eq!(conn.handshake(1, "PLAIN").await.error_code, 0);
    let started = std::time::Instant::now();
    let answer = conn.authenticate(1, b"\0alice\0wrong").await;
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert_eq!(
        answer.error_code,
        ResponseError::SaslAuthenticationFailed.code()
    );
    let message = answer.error_message.expect("a message");
    assert!(message.contains("invalid credentials"), "{message}");
    assert!(!message.contains("wrong"), "the password is not echoed");
    assert_eq!(conn.closed_by_broker().await.0, Err("authentication"));

    // An unknown mechanism: UNSUPPORTED_SASL_MECHANISM with the enabled ones, then the close.
    let mut conn = connect_sasl(&broker, sasl_listener(None));
    let answer = conn.handshake(1, "GSSAPI").await;
    assert_eq!(
        answer.error_code,
        ResponseError::UnsupportedSaslMechanism.code()
    );
    assert_eq!(answer.mechanisms.len(), 2);
    assert_eq!(conn.closed_by_broker().await.0, Err("authentication"));
    assert_eq!(broker.broker.metrics.failed_authentications.get(), 2);

    // Any other request before authentication is closed unanswered.
    let mut conn = connect_sasl(&broker, sasl_listener(None));
    conn.send_metadata().await;
    let (ended, session) = conn.closed_by_broker().await;
    assert_eq!(ended, Err("bad input"));
    assert_eq!(session.principal.to_string(), "User:ANONYMOUS");

    // So is a frame over sasl.server.max.receive.size, before its body arrives.
    let mut conn = connect_sasl(&broker, sasl_listener(None));
    conn.send(&8192i32.to_be_bytes()).await;
    assert_eq!(conn.closed_by_broker().await.0, Err("bad input"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v0_handshake_is_followed_by_bare_tokens() {
    let broker = broker_with_alice().await;
    let mut conn = connect_sasl(&broker, sasl_listener(None));
    assert_eq!(conn.handshake(0, "PLAIN").await.error_code, 0);
    let token = b"\0alice\0alice-secret";
    let mut bare = (token.len() as i32).to_be_bytes().to_vec();
    bare.extend_from_slice(token);
    conn.send(&bare).await;
    assert!(
        conn.response().await.is_empty(),
        "PLAIN's empty final token"
    );
    conn.metadata().await;
    assert_eq!(conn.end().await.1.principal.to_string(), "User:alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_closed_unless_it_reauthenticates() {
    let broker = broker_with_alice().await;
    let lifetime = Duration::from_millis(300);
    let mut conn = connect_sasl(&broker, sasl_listener(Some(lifetime)));
    assert_eq!(conn.handshake(1, "PLAIN").await.error_code, 0);
    let answer = conn.authenticate(1, b"\0alice\0alice-secret").await;
    assert_eq!(answer.session_lifetime_ms, 300);
    tokio::time::sleep(lifetime).await;
    // Re-authentication (KIP-368) in place renews the session.
    assert_eq!(conn.handshake(1, "PLAIN").await.error_code, 0);
    let again = conn.authenticate(1, b"\0alice\0alice-secret").await;
    assert_eq!(again.error_code, 0);
    conn.metadata().await;
    assert_eq!(broker.broker.metrics.successful_reauthentications.get(), 1);
    tokio::time::sleep(lifetime).await;
    // Past the renewed lifetime anything but a new handshake closes the connection.
    conn.send_metadata().await;
    assert_eq!(conn.closed_by_broker().await.0, Err("authentication"));
}
