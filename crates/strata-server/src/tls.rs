//! TLS on SSL listeners (Kafka's `SslFactory` / `SslChannelBuilder`), with rustls.
//!
//! Key and certificates come from PEM only, as Kafka's KIP-651 allows them:
//! `ssl.keystore.type=PEM` with `ssl.keystore.location` (private key and certificate chain in
//! one file) or `ssl.keystore.key` + `ssl.keystore.certificate.chain` (the PEM text itself);
//! `ssl.truststore.type=PEM` with `ssl.truststore.location` or `ssl.truststore.certificates`
//! for the CAs that client certificates are checked against; `ssl.client.auth`
//! (none/requested/required) and `ssl.enabled.protocols` (TLSv1.2, TLSv1.3). Each may be set
//! per listener as `listener.name.<name>.ssl.*`, which wins on that listener. A setting that
//! cannot be served stops start-up with a message naming it; key material never appears in a
//! message or a log line.
//!
//! With a client certificate the session's principal is `User:<name>`, the name being the
//! subject DN in RFC 2253 form, as Kafka's `DefaultKafkaPrincipalBuilder` gives it from
//! `X500Principal.getName()` (e.g. `User:CN=client,OU=eng,O=Example`), mapped by
//! `ssl.principal.mapping.rules` (KIP-371, [`principal_mapping`]); without one it stays
//! `User:ANONYMOUS`.
//!
//! A changed key or trust store file is picked up without a restart, on every TLS server and
//! client here ([`Reloading`]): a new connection after the change gets a configuration built
//! from the new files; connections already open keep theirs. A file that does not build a valid
//! configuration is reported and the old one kept.

mod principal_mapping;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use strata_durable::LockExt;
use x509_cert::der::Decode;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use strata_meta::config::props;

use crate::config::ServerConfig;
use crate::session::KafkaPrincipal;

/// Why an SSL listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("listener {listener}: {message}")]
    Invalid { listener: String, message: String },
    #[error("listener {listener}: cannot read {key} file {path}: {source}")]
    Read {
        listener: String,
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

pub use principal_mapping::PrincipalMapper;

/// The TLS of one SSL or SASL_SSL listener: its acceptor, renewed when the store files change,
/// and its principal mapping.
pub struct TlsListener {
    acceptor: Reloading<tokio_rustls::TlsAcceptor>,
    mapper: PrincipalMapper,
}

impl TlsListener {
    /// Builds the TLS of listener `listener` from its (prefixed or plain) settings.
    pub fn new(config: &ServerConfig, listener: &str) -> Result<TlsListener, TlsConfigError> {
        Ok(TlsListener {
            acceptor: Reloading::new(config, listener, |config, listener| {
                Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server_config(
                    config, listener,
                )?)))
            })?,
            mapper: principal_mapper(config, listener)?,
        })
    }

    /// The acceptor for a new connection, from the store files as they are now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.current()
    }

    /// The principal of a session whose client presented `peer_certificates`: `User:ANONYMOUS`
    /// without one, else `User:<mapped subject DN>`; why not, when the subject cannot be read
    /// or no mapping rule applies.
    pub fn principal(
        &self,
        peer_certificates: Option<&[CertificateDer<'_>]>,
    ) -> Result<KafkaPrincipal, String> {
        principal_of(&self.mapper, peer_certificates)
    }
}

/// How often a [`Reloading`] configuration in use looks at its files.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A TLS configuration built from a listener's store files and built again when one of them
/// changes (modification time or size): the Kafka listeners' acceptors, the admin HTTP and
/// controller listeners' servers, the inter-broker client. The files are looked at when the
/// configuration is used for a new connection, at most once per [`RELOAD_CHECK_INTERVAL`];
/// connections already open keep the configuration they started with. A change that does not
/// build is logged and the old configuration kept; it is tried again when the files change
/// again.
pub struct Reloading<T> {
    listener: String,
    build: Box<dyn Fn() -> Result<T, TlsConfigError> + Send + Sync>,
    state: Mutex<ReloadState<T>>,
}

struct ReloadState<T> {
    current: T,
    /// The store files `current` was built from, with what they looked like then.
    watched: Vec<(PathBuf, Option<FileStamp>)>,
    checked: Instant,
}

impl<T: Clone> Reloading<T> {
    /// Builds the configuration of `listener` with `build`, which is called again with the
    /// same settings whenever the listener's store files change.
    pub fn new(
        config: &ServerConfig,
        listener: &str,
        build: impl Fn(&ServerConfig, &str) -> Result<T, TlsConfigError> + Send + Sync + 'static,
    ) -> Result<Reloading<T>, TlsConfigError> {
        let watched = watched_files(config, listener);
        let current = build(config, listener)?;
        let (config, name) = (config.clone(), listener.to_string());
        Ok(Reloading {
            listener: listener.to_string(),
            build: Box::new(move || build(&config, &name)),
            state: Mutex::new(ReloadState {
                current,
                watched,
                checked: Instant::now(),
            }),
        })
    }

    /// The configuration for a new connection, built again first if a store file changed.
    pub fn current(&self) -> T {
        let mut state = self.state.locked();
        if state.checked.elapsed() >= RELOAD_CHECK_INTERVAL {
            state.checked = Instant::now();
            if state
                .watched
                .iter()
                .any(|(path, seen)| stamp(path) != *seen)
            {
                state.watched = watched_files_of(&state.watched);
                match (self.build)() {
                    Ok(rebuilt) => {
                        state.current = rebuilt;
                        tracing::info!(listener = %self.listener, "TLS key or trust store changed: new connections use the new one");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS key or trust store changed but cannot be used; keeping the old one")
                    }
                }
            }
        }
        state.current.clone()
    }
}

/// What tells a changed file: modification time and size.
type FileStamp = (SystemTime, u64);

fn stamp(path: &std::path::Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The key and trust store files of `listener`, stamped now.
fn watched_files(config: &ServerConfig, listener: &str) -> Vec<(PathBuf, Option<FileStamp>)> {
    let paths = [props::SSL_KEYSTORE_LOCATION, props::SSL_TRUSTSTORE_LOCATION]
        .into_iter()
        .map(|key| config.listener_value(listener, key))
        .filter(|path| !path.trim().is_empty())
        .map(|path| (PathBuf::from(path.trim()), None))
        .collect::<Vec<_>>();
    watched_files_of(&paths)
}

/// The same files, stamped now.
fn watched_files_of(files: &[(PathBuf, Option<FileStamp>)]) -> Vec<(PathBuf, Option<FileStamp>)> {
    files
        .iter()
        .map(|(path, _)| (path.clone(), stamp(path)))
        .collect()
}

/// The rustls configuration of SSL listener `listener`, with its `ssl.client.auth`.
pub fn server_config(
    config: &ServerConfig,
    listener: &str,
) -> Result<rustls::ServerConfig, TlsConfigError> {
    let stores = ListenerStores { config, listener };
    let client_auth = match stores
        .value(props::SSL_CLIENT_AUTH)
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "requested" => ClientAuth::Requested,
        "required" => ClientAuth::Required,
        _ => ClientAuth::None,
    };
    server_config_with(config, listener, client_auth)
}

/// The rustls configuration of SSL listener `listener` with `client_auth` whatever the
/// settings say: the controller listener always requires a client certificate.
pub fn server_config_with(
    config: &ServerConfig,
    listener: &str,
    client_auth: ClientAuth,
) -> Result<rustls::ServerConfig, TlsConfigError> {
    let stores = ListenerStores { config, listener };
    let (key, chain) = stores.key_store()?.ok_or_else(|| {
        stores.invalid(
            "an SSL listener needs ssl.keystore.location, or ssl.keystore.key with \
             ssl.keystore.certificate.chain"
                .into(),
        )
    })?;
    let (provider, versions) = stores.provider_and_versions()?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| stores.invalid(format!("ssl.enabled.protocols: {e}")))?;
    let builder = if client_auth == ClientAuth::None {
        builder.with_no_client_auth()
    } else {
        let roots = stores.trust_store()?.ok_or_else(|| {
            stores.invalid(format!(
                "ssl.client.auth={} needs a trust store: ssl.truststore.location or \
                 ssl.truststore.certificates",
                if client_auth == ClientAuth::Required {
                    "required"
                } else {
                    "requested"
                }
            ))
        })?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if client_auth == ClientAuth::Requested {
            verifier.allow_unauthenticated()
        } else {
            verifier
        };
        let verifier = verifier
            .build()
            .map_err(|e| stores.invalid(format!("the trust store cannot verify clients: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|e| stores.invalid(format!("the key does not fit the certificate chain: {e}")))
}

/// The rustls configuration with which this node connects to listener `listener` of another
/// node (the inter-broker or the controller listener), from that listener's settings as
/// Kafka's brokers take their client side from them: the trust store checks the peer's
/// certificate (and, with `ssl.endpoint.identification.algorithm=https`, that it names the host
/// dialled); the key store, when there is one, is this node's client certificate.
pub fn client_config(
    config: &ServerConfig,
    listener: &str,
) -> Result<rustls::ClientConfig, TlsConfigError> {
    let stores = ListenerStores { config, listener };
    let roots = stores.trust_store()?.ok_or_else(|| {
        stores.invalid(
            "connecting to other nodes over TLS needs a trust store holding their CA: \
             ssl.truststore.location or ssl.truststore.certificates"
                .into(),
        )
    })?;
    let (provider, versions) = stores.provider_and_versions()?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| stores.invalid(format!("the trust store cannot verify servers: {e}")))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| stores.invalid(format!("ssl.enabled.protocols: {e}")))?;
    let builder = if stores
        .value(props::SSL_ENDPOINT_IDENTIFICATION_ALGORITHM)
        .trim()
        .is_empty()
    {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnlyVerifier(verifier)))
    } else {
        builder.with_webpki_verifier(verifier)
    };
    match stores.key_store()? {
        Some((key, chain)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            stores.invalid(format!("the key does not fit the certificate chain: {e}"))
        }),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The mutual TLS of the controller listener when `listener.security.protocol.map` makes it
/// SSL ([`crate::config::controller_listener`]): its `listener.name.<name>.ssl.*` key and trust
/// stores serve both sides, and client certificates are required whatever `ssl.client.auth`
/// says, so that a node without a certificate the trust store verifies takes no part.
pub fn controller_tls(
    config: &ServerConfig,
) -> Result<Option<strata_quorum::QuorumTls>, HttpTlsError> {
    let (name, protocol) = crate::config::controller_listener(&config.props)?;
    if protocol == crate::session::SecurityProtocol::Plaintext {
        return Ok(None);
    }
    let mut client = client_config(config, &name)?;
    if !client.client_auth_cert_resolver.has_certs() {
        return Err(TlsConfigError::Invalid {
            listener: name,
            message: "the controller listener is mutual TLS: every node needs its own \
                      certificate in ssl.keystore.location (or ssl.keystore.key)"
                .into(),
        }
        .into());
    }
    // The Raft client's configuration is built once (its HTTP client keeps it), so it follows a
    // renewed key store through its certificate resolver, which asks a reloading configuration.
    client.client_auth_cert_resolver = Arc::new(ReloadingClientCert(Reloading::new(
        config,
        &name,
        |config, listener| Ok(client_config(config, listener)?.client_auth_cert_resolver),
    )?));
    Ok(Some(strata_quorum::QuorumTls {
        server: reloading_server(config, &name, |config, listener| {
            server_config_with(config, listener, ClientAuth::Required)
        })?,
        client: Arc::new(client),
    }))
}

/// A server configuration that follows its store files, for a
/// [`strata_quorum::TlsPeerListener`].
fn reloading_server(
    config: &ServerConfig,
    listener: &str,
    build: impl Fn(&ServerConfig, &str) -> Result<rustls::ServerConfig, TlsConfigError>
        + Send
        + Sync
        + 'static,
) -> Result<strata_quorum::ServerTls, TlsConfigError> {
    let reloading = Reloading::new(config, listener, move |config, listener| {
        Ok(Arc::new(build(config, listener)?))
    })?;
    Ok(Arc::new(move || reloading.current()))
}

/// The client certificate of the key store as it is now (see [`controller_tls`]).
struct ReloadingClientCert(Reloading<Arc<dyn rustls::client::ResolvesClientCert>>);

impl std::fmt::Debug for ReloadingClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadingClientCert")
    }
}

impl rustls::client::ResolvesClientCert for ReloadingClientCert {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.current().resolve(root_hint_subjects, sigschemes)
    }

    fn has_certs(&self) -> bool {
        self.0.current().has_certs()
    }
}

/// The TLS of the admin HTTP server when `listener.security.protocol.map` maps
/// [`crate::config::ADMIN_LISTENER`] to SSL: `listener.name.admin.ssl.*` as on a Kafka SSL
/// listener (`ssl.client.auth=required` makes every caller present a certificate), and the
/// principal mapping of its client certificates.
pub fn admin_tls(config: &ServerConfig) -> Result<Option<AdminTls>, HttpTlsError> {
    let name = crate::config::ADMIN_LISTENER;
    if crate::config::http_listener_protocol(&config.props, name)?
        == crate::session::SecurityProtocol::Plaintext
    {
        return Ok(None);
    }
    Ok(Some(AdminTls {
        server: reloading_server(config, name, server_config)?,
        mapper: principal_mapper(config, name)?,
    }))
}

/// Listener `listener`'s `ssl.principal.mapping.rules` (KIP-371).
fn principal_mapper(
    config: &ServerConfig,
    listener: &str,
) -> Result<PrincipalMapper, TlsConfigError> {
    let rules = config.listener_value(listener, props::SSL_PRINCIPAL_MAPPING_RULES);
    PrincipalMapper::parse(&rules).map_err(|message| TlsConfigError::Invalid {
        listener: listener.to_string(),
        message: format!("ssl.principal.mapping.rules: {message}"),
    })
}

/// See [`admin_tls`].
pub struct AdminTls {
    pub server: strata_quorum::ServerTls,
    mapper: PrincipalMapper,
}

impl AdminTls {
    /// The principal of a caller that presented `certificate` (see [`TlsListener::principal`]).
    pub fn principal(
        &self,
        certificate: Option<&CertificateDer<'_>>,
    ) -> Result<KafkaPrincipal, String> {
        principal_of(&self.mapper, certificate.map(std::slice::from_ref))
    }
}

/// Why the TLS of the controller listener or of the admin HTTP server cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum HttpTlsError {
    #[error(transparent)]
    Listener(#[from] crate::config::ListenerError),
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
}

/// `ssl.endpoint.identification.algorithm=` (empty): the peer's chain is checked against the
/// trust store, its names are not (Kafka's brokers skip the host name check the same way).
#[derive(Debug)]
struct ChainOnlyVerifier(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// One listener's `ssl.*` settings, read into what rustls takes.
struct ListenerStores<'a> {
    config: &'a ServerConfig,
    listener: &'a str,
}

impl ListenerStores<'_> {
    fn value(&self, key: strata_meta::config::BrokerProperty<String>) -> String {
        self.config.listener_value(self.listener, key)
    }

    fn invalid(&self, message: String) -> TlsConfigError {
        TlsConfigError::Invalid {
            listener: self.listener.to_string(),
            message,
        }
    }

    fn read(
        &self,
        key: strata_meta::config::BrokerProperty<String>,
        path: &str,
    ) -> Result<Vec<u8>, TlsConfigError> {
        std::fs::read(path).map_err(|source| TlsConfigError::Read {
            listener: self.listener.to_string(),
            key: key.name(),
            path: path.to_string(),
            source,
        })
    }

    /// A store's type must be PEM where the store is read.
    fn pem_only(
        &self,
        key: strata_meta::config::BrokerProperty<String>,
    ) -> Result<(), TlsConfigError> {
        let kind = self.value(key);
        if kind.trim().eq_ignore_ascii_case("PEM") {
            Ok(())
        } else {
            Err(self.invalid(format!(
                "{} is {kind:?}: only PEM stores are supported (set {}=PEM)",
                key.name(),
                key.name()
            )))
        }
    }

    /// The private key and certificate chain, `None` when no key store is set.
    #[allow(clippy::type_complexity)]
    fn key_store(
        &self,
    ) -> Result<Option<(PrivateKeyDer<'static>, Vec<CertificateDer<'static>>)>, TlsConfigError>
    {
        let location = self.value(props::SSL_KEYSTORE_LOCATION);
        let inline_key = self.value(props::SSL_KEYSTORE_KEY);
        let inline_chain = self.value(props::SSL_KEYSTORE_CERTIFICATE_CHAIN);
        if location.trim().is_empty() && inline_key.trim().is_empty() {
            return Ok(None);
        }
        self.pem_only(props::SSL_KEYSTORE_TYPE)?;
        if !self.value(props::SSL_KEY_PASSWORD).is_empty() {
            return Err(self.invalid(
                "ssl.key.password is set: encrypted private keys are not supported; give the key \
                 unencrypted (PKCS#8, PKCS#1 or SEC1 PEM) in a file only the broker can read"
                    .into(),
            ));
        }
        let (key_pem, chain_pem) = match (location.trim().is_empty(), inline_key.trim().is_empty())
        {
            (false, true) => {
                let pem = self.read(props::SSL_KEYSTORE_LOCATION, location.trim())?;
                (pem.clone(), pem)
            }
            (true, false) => {
                if inline_chain.trim().is_empty() {
                    return Err(self
                        .invalid("ssl.keystore.key needs ssl.keystore.certificate.chain".into()));
                }
                (
                    inline_key.into_bytes(),
                    pem_newlines(&inline_chain).into_bytes(),
                )
            }
            (false, false) => {
                return Err(self.invalid(
                    "set either ssl.keystore.location or ssl.keystore.key, not both".into(),
                ))
            }
            (true, true) => return Ok(None),
        };
        let key = PrivateKeyDer::from_pem_slice(&pem_newlines_bytes(&key_pem)).map_err(|_| {
            self.invalid("the key store holds no unencrypted private key in PEM".into())
        })?;
        let chain = certificates(&chain_pem).map_err(|_| {
            self.invalid("the key store's certificate chain is not valid PEM".into())
        })?;
        if chain.is_empty() {
            return Err(self.invalid("the key store holds no certificate".into()));
        }
        Ok(Some((key, chain)))
    }

    /// The CAs of the trust store, `None` when none is set.
    fn trust_store(&self) -> Result<Option<rustls::RootCertStore>, TlsConfigError> {
        let location = self.value(props::SSL_TRUSTSTORE_LOCATION);
        let inline = self.value(props::SSL_TRUSTSTORE_CERTIFICATES);
        if location.trim().is_empty() && inline.trim().is_empty() {
            return Ok(None);
        }
        self.pem_only(props::SSL_TRUSTSTORE_TYPE)?;
        let pem = if inline.trim().is_empty() {
            self.read(props::SSL_TRUSTSTORE_LOCATION, location.trim())?
        } else if location.trim().is_empty() {
            pem_newlines(&inline).into_bytes()
        } else {
            return Err(self.invalid(
                "set either ssl.truststore.location or ssl.truststore.certificates, not both"
                    .into(),
            ));
        };
        let cas = certificates(&pem)
            .map_err(|_| self.invalid("the trust store is not valid PEM".into()))?;
        if cas.is_empty() {
            return Err(self.invalid("the trust store holds no certificate".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for ca in cas {
            roots.add(ca).map_err(|e| {
                self.invalid(format!("the trust store holds a bad certificate: {e}"))
            })?;
        }
        Ok(Some(roots))
    }

    /// The crypto provider limited to `ssl.cipher.suites`, and `ssl.enabled.protocols`.
    fn provider_and_versions(
        &self,
    ) -> Result<
        (
            Arc<rustls::crypto::CryptoProvider>,
            Vec<&'static rustls::SupportedProtocolVersion>,
        ),
        TlsConfigError,
    > {
        let mut versions = Vec::new();
        for name in self
            .value(props::SSL_ENABLED_PROTOCOLS)
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            match name {
                "TLSv1.2" => versions.push(&rustls::version::TLS12),
                "TLSv1.3" => versions.push(&rustls::version::TLS13),
                other => {
                    return Err(self.invalid(format!(
                        "ssl.enabled.protocols: {other} is not supported (TLSv1.2, TLSv1.3)"
                    )))
                }
            }
        }
        if versions.is_empty() {
            return Err(self.invalid("ssl.enabled.protocols is empty".into()));
        }
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        let wanted: Vec<String> = self
            .value(props::SSL_CIPHER_SUITES)
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if !wanted.is_empty() {
            let known: Vec<String> = provider.cipher_suites.iter().map(iana_name).collect();
            if let Some(unknown) = wanted.iter().find(|w| !known.contains(w)) {
                return Err(self.invalid(format!(
                    "ssl.cipher.suites: {unknown} is not supported (supported: {})",
                    known.join(", ")
                )));
            }
            provider
                .cipher_suites
                .retain(|suite| wanted.contains(&iana_name(suite)));
        }
        Ok((Arc::new(provider), versions))
    }
}

/// A cipher suite's IANA name, as Kafka's `ssl.cipher.suites` lists them
/// (`TLS_AES_128_GCM_SHA256`, `TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384`); rustls calls the TLS 1.3
/// ones `TLS13_...`.
fn iana_name(suite: &rustls::SupportedCipherSuite) -> String {
    let name = format!("{:?}", suite.suite());
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// Every certificate of a PEM text.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, rustls::pki_types::pem::Error> {
    CertificateDer::pem_slice_iter(&pem_newlines_bytes(pem)).collect()
}

/// Kafka lets `ssl.keystore.key` and friends be given on one line of a properties file, with
/// the line breaks of the PEM text as spaces (`-----BEGIN PRIVATE KEY----- MII... -----END
/// PRIVATE KEY-----`); puts the breaks back so the PEM parser reads it.
fn pem_newlines(text: &str) -> String {
    if text.contains('\n') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text.trim();
    while !rest.is_empty() {
        if let Some(start) = rest.find("-----") {
            let body = rest[..start].trim();
            for word in body.split_whitespace() {
                out.push_str(word);
                out.push('\n');
            }
            let after = &rest[start + 5..];
            let Some(end) = after.find("-----") else {
                out.push_str(rest);
                break;
            };
            out.push_str(&rest[start..start + 5 + end + 5]);
            out.push('\n');
            rest = after[end + 5..].trim_start();
        } else {
            for word in rest.split_whitespace() {
                out.push_str(word);
                out.push('\n');
            }
            break;
        }
    }
    out
}

fn pem_newlines_bytes(pem: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(pem) {
        Ok(text) => pem_newlines(text).into_bytes(),
        Err(_) => pem.to_vec(),
    }
}

/// [`TlsListener::principal`] with `mapper`'s rules.
fn principal_of(
    mapper: &PrincipalMapper,
    peer_certificates: Option<&[CertificateDer<'_>]>,
) -> Result<KafkaPrincipal, String> {
    let Some(leaf) = peer_certificates.and_then(|c| c.first()) else {
        return Ok(KafkaPrincipal::anonymous());
    };
    let dn = subject_dn(leaf)
        .ok_or_else(|| "the client certificate's subject cannot be read".to_string())?;
    Ok(KafkaPrincipal {
        principal_type: KafkaPrincipal::USER_TYPE.to_string(),
        name: mapper.name(&dn)?,
    })
}

/// The subject of a DER certificate in RFC 2253 form, as Java's `X500Principal.getName()`
/// gives it to Kafka: relative names last first, joined by `,` (several values of one by `+`),
/// known attribute types by keyword, others by dotted OID with the value's DER in hex. That is
/// RFC 4514's string form, which `x509-cert` writes. `None` for a certificate that does not parse.
pub fn subject_dn(certificate: &[u8]) -> Option<String> {
    let certificate = x509_cert::Certificate::from_der(certificate).ok()?;
    Some(certificate.tbs_certificate().subject().to_string())
}

#[cfg(test)]
mod tests;
