//! A Kafka-protocol connection from this broker to another (follower fetches, transaction
//! markers, transactional write checks): one request at a time, bounded frames; and the pool
//! of such connections that markers and checks share ([`BrokerPool`]).
//!
//! Every such connection goes to the other broker's inter-broker listener and speaks its
//! security protocol ([`BrokerConnector`]): TLS with the listener's trust store (and this
//! broker's certificate, for mutual TLS), then SASL PLAIN or SCRAM with
//! `sasl.mechanism.inter.broker.protocol` and the listener's `sasl.jaas.config`, as Kafka's
//! brokers log in to each other.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use strata_durable::LockExt;
use strata_meta::config::props;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{ListenerConfig, ServerConfig};
use crate::sasl::client::{ClientMechanism, SaslClient, SaslLogin};
use crate::session::SecurityProtocol;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The TLS handshake and the SASL login after the connect, together.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A response frame larger than this is refused (fetches ask for far less).
const MAX_FRAME_BYTES: usize = 128 * 1024 * 1024;

/// A byte stream to another broker: TCP, or TLS over it.
trait BrokerStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> BrokerStream for T {}

/// How this broker reaches the others: the inter-broker listener's security protocol, built
/// once at start-up so that a bad setting stops start-up instead of every connection. The TLS
/// key and trust stores follow their files ([`crate::tls::Reloading`]), so a renewed
/// certificate is presented on the next connection.
#[derive(Clone, Default)]
pub struct BrokerConnector {
    tls: Option<Arc<crate::tls::Reloading<tokio_rustls::TlsConnector>>>,
    sasl: Option<SaslLogin>,
}

/// Why the inter-broker client cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsConfigError),
    #[error("inter-broker listener {listener}: {message}")]
    Sasl { listener: String, message: String },
}

impl BrokerConnector {
    /// Plain TCP, as to a PLAINTEXT inter-broker listener.
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// The client side of `config`'s inter-broker listener.
    pub fn for_inter_broker_listener(config: &ServerConfig) -> Result<Self, ConnectorError> {
        let listener = config.inter_broker_listener.as_str();
        let inter = config.listeners.iter().find(|l| l.name == listener);
        let protocol = inter.map_or(SecurityProtocol::Plaintext, |l| l.security_protocol);
        let tls = match protocol {
            SecurityProtocol::Ssl | SecurityProtocol::SaslSsl => Some(Arc::new(
                crate::tls::Reloading::new(config, listener, |config, listener| {
                    Ok(tokio_rustls::TlsConnector::from(Arc::new(
                        crate::tls::client_config(config, listener)?,
                    )))
                })?,
            )),
            SecurityProtocol::Plaintext | SecurityProtocol::SaslPlaintext => None,
        };
        let sasl = match inter {
            Some(inter) if inter.security_protocol.is_sasl() => {
                Some(inter_broker_login(config, inter)?)
            }
            _ => None,
        };
        Ok(BrokerConnector { tls, sasl })
    }
}

/// `sasl.mechanism.inter.broker.protocol` with the username and password of the listener's
/// JAAS configuration for it: `listener.name.<listener>.<mechanism>.sasl.jaas.config`, else
/// the listener's or the broker's `sasl.jaas.config`.
fn inter_broker_login(
    config: &ServerConfig,
    inter: &ListenerConfig,
) -> Result<SaslLogin, ConnectorError> {
    let listener = inter.name.as_str();
    let error = |message: String| ConnectorError::Sasl {
        listener: listener.to_string(),
        message,
    };
    let name = config.broker_value(props::SASL_MECHANISM_INTER_BROKER_PROTOCOL);
    let mechanism = ClientMechanism::from_name(name.trim()).ok_or_else(|| {
        error(format!(
            "sasl.mechanism.inter.broker.protocol is {name}: brokers log in to each other with \
             PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
        ))
    })?;
    let served =
        crate::sasl::listener_mechanisms(config, inter).map_err(|e| error(e.to_string()))?;
    if !served.iter().any(|m| m.name() == mechanism.name()) {
        return Err(error(format!(
            "sasl.mechanism.inter.broker.protocol {} is not among the listener's \
             sasl.enabled.mechanisms: the other brokers could not log in with it",
            mechanism.name()
        )));
    }
    // The most specific login wins: the listener's for this mechanism, the listener's, then the
    // broker's. (`listener_value` cannot be used: it folds every mechanism's prefixed login into
    // one key, so it could hand another mechanism's login to this one.)
    let prefix = format!("listener.name.{}.", listener.to_ascii_lowercase());
    let per_mechanism = format!(
        "{prefix}{}.sasl.jaas.config",
        mechanism.name().to_ascii_lowercase()
    );
    let per_listener = format!("{prefix}sasl.jaas.config");
    let exact = |wanted: &str| {
        config
            .props
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.to_string())
    };
    let jaas = exact(&per_mechanism)
        .or_else(|| exact(&per_listener))
        .unwrap_or_else(|| config.broker_value(props::SASL_JAAS_CONFIG));
    if jaas.trim().is_empty() {
        return Err(error(format!(
            "a SASL inter-broker listener needs this broker's login: set {per_mechanism} \
             (or sasl.jaas.config) with username and password"
        )));
    }
    SaslLogin::from_jaas(mechanism, &jaas).map_err(|m| error(format!("{per_mechanism}: {m}")))
}

pub struct BrokerConnection {
    stream: Box<dyn BrokerStream>,
    correlation_id: i32,
    client_id: &'static str,
}

impl BrokerConnection {
    /// Connects to the broker at `address` ("host:port") and logs in as `connector` says.
    pub async fn connect(
        connector: &BrokerConnector,
        address: &str,
        client_id: &'static str,
    ) -> anyhow::Result<Self> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        tcp.set_nodelay(true)?;
        let login = async {
            let stream: Box<dyn BrokerStream> = match &connector.tls {
                Some(tls) => {
                    let host = address
                        .rsplit_once(':')
                        .map_or(address, |(host, _)| host)
                        .trim_matches(['[', ']']);
                    let name = rustls::pki_types::ServerName::try_from(host.to_string())
                        .map_err(|e| anyhow::anyhow!("{host} is not a TLS server name: {e}"))?;
                    Box::new(tls.current().connect(name, tcp).await?)
                }
                None => Box::new(tcp),
            };
            let mut connection = BrokerConnection {
                stream,
                correlation_id: 0,
                client_id,
            };
            if let Some(login) = &connector.sasl {
                connection.authenticate(login.clone()).await?;
            }
            anyhow::Ok(connection)
        };
        tokio::time::timeout(LOGIN_TIMEOUT, login)
            .await
            .map_err(|_| anyhow::anyhow!("TLS handshake and SASL login with {address} timed out"))?
    }

    /// SaslHandshake v1, then SaslAuthenticate v2 until the mechanism is done (KIP-152).
    async fn authenticate(&mut self, login: SaslLogin) -> anyhow::Result<()> {
        let mechanism = login.mechanism.name();
        let handshake: SaslHandshakeResponse = self
            .send(
                ApiKey::SaslHandshake,
                1,
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str(mechanism)),
            )
            .await?;
        anyhow::ensure!(
            handshake.error_code == 0,
            "SASL handshake for {mechanism} refused with error {}; the broker offers {:?}",
            handshake.error_code,
            handshake.mechanisms
        );
        let mut client = SaslClient::new(login);
        let mut token = client.initial();
        loop {
            let answer: SaslAuthenticateResponse = self
                .send(
                    ApiKey::SaslAuthenticate,
                    2,
                    &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
                )
                .await?;
            anyhow::ensure!(
                answer.error_code == 0,
                "SASL {mechanism} login refused with error {}: {}",
                answer.error_code,
                answer.error_message.as_deref().unwrap_or("")
            );
            match client.step(&answer.auth_bytes)? {
                Some(next) => token = next,
                None => return Ok(()),
            }
        }
    }

    /// Sends `request` as `api_key` at `version` and reads its response. After an error the
    /// connection is in an unknown state: drop it.
    pub async fn send<Req, Resp>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> anyhow::Result<Resp>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)));
        let mut body = BytesMut::new();
        header.encode(&mut body, Req::header_version(version))?;
        request.encode(&mut body, version)?;
        let mut frame = BytesMut::with_capacity(4 + body.len());
        frame.put_u32(body.len() as u32);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).await?;
        self.stream.flush().await?;
        let size = self.stream.read_u32().await? as usize;
        anyhow::ensure!(size <= MAX_FRAME_BYTES, "response frame of {size} bytes");
        let mut buf = vec![0u8; size];
        self.stream.read_exact(&mut buf).await?;
        let mut buf = Bytes::from(buf);
        let header = ResponseHeader::decode(&mut buf, Resp::header_version(version))?;
        anyhow::ensure!(
            header.correlation_id == self.correlation_id,
            "response to request {} while waiting for {}",
            header.correlation_id,
            self.correlation_id
        );
        Resp::decode(&mut buf, version)
    }
}

/// Idle connections kept per destination broker. A transaction's checks and markers are
/// requests of a few hundred bytes, one at a time per connection; up to this many go on in
/// parallel to one broker without a new TCP connection.
pub const MAX_IDLE_PER_BROKER: usize = 4;

/// Connections to other brokers for the transaction coordinator's WriteTxnMarkers and the
/// partition leaders' AddPartitionsToTxn checks (KIP-890), reused across calls instead of one
/// TCP connection (and its accept, task and buffers on the other side) per call.
///
/// Each destination ("host:port") keeps at most [`MAX_IDLE_PER_BROKER`] idle connections; a
/// call takes one (or connects), sends one request, and gives it back only if the exchange
/// completed, so a connection in an unknown state (an error, or a call dropped by its
/// timeout) is never reused. The destinations are the cluster's brokers, so the pool holds
/// at most `MAX_IDLE_PER_BROKER` × brokers connections. Only for idempotent requests: a
/// request that failed on a pooled connection (the other broker may have closed it while
/// idle) is sent again once on a new one.
pub struct BrokerPool {
    client_id: &'static str,
    connector: BrokerConnector,
    idle: std::sync::Mutex<std::collections::HashMap<String, Vec<BrokerConnection>>>,
}

impl BrokerPool {
    pub fn new(client_id: &'static str, connector: BrokerConnector) -> Self {
        BrokerPool {
            client_id,
            connector,
            idle: Default::default(),
        }
    }

    /// Sends `request` to the broker at `address` and reads its response, on a pooled
    /// connection if there is one. Counts new connections and reuses in `metrics`.
    pub async fn send<Req, Resp>(
        &self,
        metrics: &crate::metrics::Metrics,
        address: &str,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> anyhow::Result<Resp>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        if let Some(mut conn) = self.take(address) {
            match conn.send(api_key, version, request).await {
                Ok(response) => {
                    metrics.broker_client_reuses.add(1);
                    self.give_back(address, conn);
                    return Ok(response);
                }
                Err(e) => {
                    tracing::debug!(%address, error = %e, "pooled broker connection failed; reconnecting");
                }
            }
        }
        let mut conn = BrokerConnection::connect(&self.connector, address, self.client_id).await?;
        metrics.broker_client_connects.add(1);
        let response = conn.send(api_key, version, request).await?;
        self.give_back(address, conn);
        Ok(response)
    }

    fn take(&self, address: &str) -> Option<BrokerConnection> {
        self.idle.locked().get_mut(address).and_then(Vec::pop)
    }

    fn give_back(&self, address: &str, conn: BrokerConnection) {
        let mut idle = self.idle.locked();
        let pooled = idle.entry(address.to_string()).or_default();
        if pooled.len() < MAX_IDLE_PER_BROKER {
            pooled.push(conn);
        }
        debug_assert!(pooled.len() <= MAX_IDLE_PER_BROKER);
    }

    /// Idle connections to `address` (for tests and metrics).
    pub fn idle_to(&self, address: &str) -> usize {
        self.idle.locked().get(address).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::net::TcpListener;

    /// A broker that answers WriteTxnMarkers v1 with an empty response; it closes each
    /// connection after `answers_per_connection` answers. Returns its address and the count of
    /// connections it accepted.
    async fn fake_broker(answers_per_connection: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    for _ in 0..answers_per_connection {
                        let Ok(size) = stream.read_u32().await else {
                            return;
                        };
                        let mut frame = vec![0u8; size as usize];
                        if stream.read_exact(&mut frame).await.is_err() {
                            return;
                        }
                        let mut frame = Bytes::from(frame);
                        let header = RequestHeader::decode(
                            &mut frame,
                            WriteTxnMarkersRequest::header_version(1),
                        )
                        .expect("request header");
                        let mut body = BytesMut::new();
                        ResponseHeader::default()
                            .with_correlation_id(header.correlation_id)
                            .encode(&mut body, WriteTxnMarkersResponse::header_version(1))
                            .expect("response header");
                        WriteTxnMarkersResponse::default()
                            .encode(&mut body, 1)
                            .expect("response");
                        let mut out = BytesMut::new();
                        out.put_u32(body.len() as u32);
                        out.extend_from_slice(&body);
                        if stream.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (address, accepted)
    }

    async fn send(pool: &BrokerPool, metrics: &crate::metrics::Metrics, address: &str) {
        let _: WriteTxnMarkersResponse = pool
            .send(
                metrics,
                address,
                ApiKey::WriteTxnMarkers,
                1,
                &WriteTxnMarkersRequest::default(),
            )
            .await
            .expect("answered");
    }

    /// A node whose inter-broker listener INTERNAL is `protocol`, with `extra` settings.
    fn inter_broker(protocol: SecurityProtocol, extra: &[(&str, &str)]) -> ServerConfig {
        let mut config = crate::test_fixture::config(std::path::Path::new("/nonexistent"), extra);
        config.listeners[0].name = "INTERNAL".into();
        config.listeners[0].security_protocol = protocol;
        config.inter_broker_listener = "INTERNAL".into();
        config
    }

    #[test]
    fn the_inter_broker_login_is_checked_at_start_up() {
        let refused = |protocol, extra: &[(&str, &str)]| {
            BrokerConnector::for_inter_broker_listener(&inter_broker(protocol, extra))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let scram = [
            ("sasl.enabled.mechanisms", "SCRAM-SHA-256"),
            ("sasl.mechanism.inter.broker.protocol", "SCRAM-SHA-256"),
        ];
        let jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required \
                    username=\"broker\" password=\"top-secret\";";
        let with_jaas = [
            scram[0],
            scram[1],
            (
                "listener.name.internal.scram-sha-256.sasl.jaas.config",
                jaas,
            ),
        ];
        assert!(BrokerConnector::for_inter_broker_listener(&inter_broker(
            SecurityProtocol::SaslPlaintext,
            &with_jaas
        ))
        .is_ok());
        // Kafka's default mechanism, GSSAPI, cannot log in here.
        assert!(refused(SecurityProtocol::SaslPlaintext, &[]).contains("GSSAPI"));
        assert!(refused(SecurityProtocol::SaslPlaintext, &scram)
            .contains("listener.name.internal.scram-sha-256.sasl.jaas.config"));
        let not_enabled = [
            ("sasl.enabled.mechanisms", "SCRAM-SHA-512"),
            scram[1],
            with_jaas[2],
        ];
        assert!(refused(SecurityProtocol::SaslPlaintext, &not_enabled)
            .contains("not among the listener's sasl.enabled.mechanisms"));
        let no_password = [
            scram[0],
            scram[1],
            (
                "sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required username=b;",
            ),
        ];
        assert!(refused(SecurityProtocol::SaslPlaintext, &no_password).contains("password"));
        // TLS to other brokers needs the CA that signed their certificates.
        assert!(refused(SecurityProtocol::Ssl, &[]).contains("trust store"));
        let config = inter_broker(SecurityProtocol::SaslPlaintext, &with_jaas);
        let login = inter_broker_login(&config, &config.listeners[0]).expect("login");
        assert!(!format!("{login:?}").contains("top-secret"));
        // Another mechanism's login on the same listener is not this mechanism's.
        let plain_only = [
            scram[0],
            scram[1],
            (
                "listener.name.internal.plain.sasl.jaas.config",
                "org.apache.kafka.common.security.plain.PlainLoginModule required \
                 username=\"other\" password=\"other-secret\";",
            ),
        ];
        assert!(refused(SecurityProtocol::SaslPlaintext, &plain_only)
            .contains("listener.name.internal.scram-sha-256.sasl.jaas.config"));
    }

    #[tokio::test]
    async fn calls_reuse_a_connection_and_survive_one_the_peer_closed() {
        let metrics = crate::metrics::Metrics::default();
        let pool = BrokerPool::new("test", BrokerConnector::plaintext());
        let (address, accepted) = fake_broker(usize::MAX).await;
        for _ in 0..5 {
            send(&pool, &metrics, &address).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for sequential calls"
        );
        assert_eq!(pool.idle_to(&address), 1);
        assert_eq!(
            (
                metrics.broker_client_connects.get(),
                metrics.broker_client_reuses.get()
            ),
            (1, 4)
        );
        // Concurrent calls open more connections, of which the pool keeps a bounded number.
        let (pool, metrics) = (Arc::new(pool), Arc::new(metrics));
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..MAX_IDLE_PER_BROKER + 3 {
            let (pool, metrics, address) = (pool.clone(), metrics.clone(), address.clone());
            calls.spawn(async move { send(&pool, &metrics, &address).await });
        }
        while let Some(done) = calls.join_next().await {
            done.expect("call");
        }
        assert!(pool.idle_to(&address) <= MAX_IDLE_PER_BROKER);

        // A peer that closes its connections after each answer: the pooled one fails, and the
        // call goes through on a new one.
        let pool = BrokerPool::new("test", BrokerConnector::plaintext());
        let (address, accepted) = fake_broker(1).await;
        send(&pool, &metrics, &address).await;
        send(&pool, &metrics, &address).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
