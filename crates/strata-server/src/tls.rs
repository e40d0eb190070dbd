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
//! A changed key or trust store file is picked up without a restart: [`TlsListener`] checks the
//! files' modification times and sizes when asked (the accept loop asks every few seconds) and
//! swaps in a new acceptor built from them; connections already open keep theirs. A file that
//! does not build a valid configuration is reported and the listener keeps the old one.

mod principal_mapping;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use strata_durable::{LockExt, RwLockExt};
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
    listener: String,
    acceptor: RwLock<tokio_rustls::TlsAcceptor>,
    mapper: PrincipalMapper,
    /// The store files the acceptor was built from, with what they looked like then.
    watched: Mutex<Vec<(PathBuf, Option<FileStamp>)>>,
}

/// What tells a changed file: modification time and size.
type FileStamp = (SystemTime, u64);

fn stamp(path: &std::path::Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl TlsListener {
    /// Builds the TLS of listener `listener` from its (prefixed or plain) settings.
    pub fn new(config: &ServerConfig, listener: &str) -> Result<TlsListener, TlsConfigError> {
        let rules = config.listener_value(listener, props::SSL_PRINCIPAL_MAPPING_RULES);
        let mapper = PrincipalMapper::parse(&rules).map_err(|message| TlsConfigError::Invalid {
            listener: listener.to_string(),
            message: format!("ssl.principal.mapping.rules: {message}"),
        })?;
        let watched = Self::watched_files(config, listener);
        let acceptor = Self::build(config, listener)?;
        Ok(TlsListener {
            listener: listener.to_string(),
            acceptor: RwLock::new(acceptor),
            mapper,
            watched: Mutex::new(watched),
        })
    }

    fn build(
        config: &ServerConfig,
        listener: &str,
    ) -> Result<tokio_rustls::TlsAcceptor, TlsConfigError> {
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server_config(
            config, listener,
        )?)))
    }

    fn watched_files(config: &ServerConfig, listener: &str) -> Vec<(PathBuf, Option<FileStamp>)> {
        [props::SSL_KEYSTORE_LOCATION, props::SSL_TRUSTSTORE_LOCATION]
            .into_iter()
            .map(|key| config.listener_value(listener, key))
            .filter(|path| !path.trim().is_empty())
            .map(|path| {
                let path = PathBuf::from(path.trim());
                let stamp = stamp(&path);
                (path, stamp)
            })
            .collect()
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.read_locked().clone()
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

    /// Rebuilds the acceptor when a store file changed since it was built; `Ok(true)` when it
    /// did. On error the old acceptor stays, and the change is tried again at the next call
    /// only if the files change again.
    pub fn reload_if_changed(&self, config: &ServerConfig) -> Result<bool, TlsConfigError> {
        let mut watched = self.watched.locked();
        let changed = watched.iter().any(|(path, seen)| stamp(path) != *seen);
        if !changed {
            return Ok(false);
        }
        *watched = Self::watched_files(config, &self.listener);
        let acceptor = Self::build(config, &self.listener)?;
        *self.acceptor.write_locked() = acceptor;
        Ok(true)
    }
}

/// The rustls configuration of SSL listener `listener`.
pub fn server_config(
    config: &ServerConfig,
    listener: &str,
) -> Result<rustls::ServerConfig, TlsConfigError> {
    let invalid = |message: String| TlsConfigError::Invalid {
        listener: listener.to_string(),
        message,
    };
    let value = |key| config.listener_value(listener, key);
    let read = |key: strata_meta::config::BrokerProperty<String>, path: &str| {
        std::fs::read(path).map_err(|source| TlsConfigError::Read {
            listener: listener.to_string(),
            key: key.name(),
            path: path.to_string(),
            source,
        })
    };
    // The trust store's type matters only where one is read (client authentication).
    let pem_only = |key: strata_meta::config::BrokerProperty<String>| {
        let kind = value(key);
        if kind.trim().eq_ignore_ascii_case("PEM") {
            Ok(())
        } else {
            Err(invalid(format!(
                "{} is {kind:?}: only PEM stores are supported (set {}=PEM)",
                key.name(),
                key.name()
            )))
        }
    };
    pem_only(props::SSL_KEYSTORE_TYPE)?;
    if !value(props::SSL_KEY_PASSWORD).is_empty() {
        return Err(invalid(
            "ssl.key.password is set: encrypted private keys are not supported; give the key \
             unencrypted (PKCS#8, PKCS#1 or SEC1 PEM) in a file only the broker can read"
                .into(),
        ));
    }
    let location = value(props::SSL_KEYSTORE_LOCATION);
    let inline_key = value(props::SSL_KEYSTORE_KEY);
    let inline_chain = value(props::SSL_KEYSTORE_CERTIFICATE_CHAIN);
    let (key_pem, chain_pem) = match (location.trim().is_empty(), inline_key.trim().is_empty()) {
        (false, true) => {
            let pem = read(props::SSL_KEYSTORE_LOCATION, location.trim())?;
            (pem.clone(), pem)
        }
        (true, false) => {
            if inline_chain.trim().is_empty() {
                return Err(invalid(
                    "ssl.keystore.key needs ssl.keystore.certificate.chain".into(),
                ));
            }
            (
                inline_key.into_bytes(),
                pem_newlines(&inline_chain).into_bytes(),
            )
        }
        (false, false) => {
            return Err(invalid(
                "set either ssl.keystore.location or ssl.keystore.key, not both".into(),
            ))
        }
        (true, true) => {
            return Err(invalid(
                "an SSL listener needs ssl.keystore.location, or ssl.keystore.key with \
                 ssl.keystore.certificate.chain"
                    .into(),
            ))
        }
    };
    let key = PrivateKeyDer::from_pem_slice(&pem_newlines_bytes(&key_pem))
        .map_err(|_| invalid("the key store holds no unencrypted private key in PEM".into()))?;
    let chain = certificates(&chain_pem)
        .map_err(|_| invalid("the key store's certificate chain is not valid PEM".into()))?;
    if chain.is_empty() {
        return Err(invalid("the key store holds no certificate".into()));
    }
    let client_auth = match value(props::SSL_CLIENT_AUTH)
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "requested" => ClientAuth::Requested,
        "required" => ClientAuth::Required,
        _ => ClientAuth::None,
    };
    let mut versions = Vec::new();
    for name in value(props::SSL_ENABLED_PROTOCOLS)
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        match name {
            "TLSv1.2" => versions.push(&rustls::version::TLS12),
            "TLSv1.3" => versions.push(&rustls::version::TLS13),
            other => {
                return Err(invalid(format!(
                    "ssl.enabled.protocols: {other} is not supported (TLSv1.2, TLSv1.3)"
                )))
            }
        }
    }
    if versions.is_empty() {
        return Err(invalid("ssl.enabled.protocols is empty".into()));
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    let wanted: Vec<String> = value(props::SSL_CIPHER_SUITES)
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if !wanted.is_empty() {
        let known: Vec<String> = provider.cipher_suites.iter().map(iana_name).collect();
        if let Some(unknown) = wanted.iter().find(|w| !known.contains(w)) {
            return Err(invalid(format!(
                "ssl.cipher.suites: {unknown} is not supported (supported: {})",
                known.join(", ")
            )));
        }
        provider
            .cipher_suites
            .retain(|suite| wanted.contains(&iana_name(suite)));
    }
    let provider = Arc::new(provider);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| invalid(format!("ssl.enabled.protocols: {e}")))?;
    let builder = if client_auth == ClientAuth::None {
        builder.with_no_client_auth()
    } else {
        pem_only(props::SSL_TRUSTSTORE_TYPE)?;
        let location = value(props::SSL_TRUSTSTORE_LOCATION);
        let inline = value(props::SSL_TRUSTSTORE_CERTIFICATES);
        let pem =
            match (location.trim().is_empty(), inline.trim().is_empty()) {
                (false, true) => read(props::SSL_TRUSTSTORE_LOCATION, location.trim())?,
                (true, false) => pem_newlines(&inline).into_bytes(),
                (false, false) => return Err(invalid(
                    "set either ssl.truststore.location or ssl.truststore.certificates, not both"
                        .into(),
                )),
                (true, true) => {
                    return Err(invalid(format!(
                        "ssl.client.auth={} needs a trust store: ssl.truststore.location or \
                     ssl.truststore.certificates",
                        if client_auth == ClientAuth::Required {
                            "required"
                        } else {
                            "requested"
                        }
                    )))
                }
            };
        let mut roots = rustls::RootCertStore::empty();
        let cas =
            certificates(&pem).map_err(|_| invalid("the trust store is not valid PEM".into()))?;
        if cas.is_empty() {
            return Err(invalid("the trust store holds no certificate".into()));
        }
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| invalid(format!("the trust store holds a bad certificate: {e}")))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if client_auth == ClientAuth::Requested {
            verifier.allow_unauthenticated()
        } else {
            verifier
        };
        let verifier = verifier
            .build()
            .map_err(|e| invalid(format!("the trust store cannot verify clients: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|e| invalid(format!("the key does not fit the certificate chain: {e}")))
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
