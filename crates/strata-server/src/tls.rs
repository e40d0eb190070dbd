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
//! With a client certificate the session's principal is `User:<subject DN>` in RFC 2253 form,
//! as Kafka's `DefaultKafkaPrincipalBuilder` gives it from `X500Principal.getName()`
//! (e.g. `User:CN=client,OU=eng,O=Example`); without one it stays `User:ANONYMOUS`.

use std::sync::Arc;

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

/// Builds the TLS acceptor of SSL listener `listener` from its (prefixed or plain) settings.
pub fn acceptor(
    config: &ServerConfig,
    listener: &str,
) -> Result<tokio_rustls::TlsAcceptor, TlsConfigError> {
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server_config(
        config, listener,
    )?)))
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
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
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

/// The principal of a TLS session: `User:<subject DN>` of the client's certificate, else
/// `User:ANONYMOUS` (Kafka's `DefaultKafkaPrincipalBuilder` with the DEFAULT mapping rule).
/// `None` when the certificate's subject cannot be read.
pub fn principal(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<KafkaPrincipal> {
    let Some(leaf) = peer_certificates.and_then(|c| c.first()) else {
        return Some(KafkaPrincipal::anonymous());
    };
    Some(KafkaPrincipal {
        principal_type: KafkaPrincipal::USER_TYPE.to_string(),
        name: subject_dn(leaf)?,
    })
}

/// The subject of a DER certificate in RFC 2253 form, as Java's `X500Principal.getName()`:
/// relative names last first, joined by `,` (several values of one by `+`), known attribute
/// types by keyword, others by dotted OID with the value as `#` and its DER in hex.
pub fn subject_dn(certificate: &[u8]) -> Option<String> {
    let (tag, cert, _) = der(certificate)?;
    expect(tag, 0x30)?;
    let (tag, tbs, _) = der(cert)?;
    expect(tag, 0x30)?;
    let mut rest = tbs;
    let (tag, _, after) = der(rest)?;
    if tag == 0xa0 {
        rest = after; // [0] EXPLICIT version
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        rest = der(rest)?.2;
    }
    let (tag, mut name, _) = der(rest)?;
    expect(tag, 0x30)?;
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (tag, mut set, after) = der(name)?;
        expect(tag, 0x31)?;
        name = after;
        let mut values = Vec::new();
        while !set.is_empty() {
            let (tag, pair, after) = der(set)?;
            expect(tag, 0x30)?;
            set = after;
            let (tag, oid, value) = der(pair)?;
            expect(tag, 0x06)?;
            let (value_tag, content, _) = der(value)?;
            let value_der = &value[..value.len() - der(value)?.2.len()];
            let text = match (keyword(oid), string_value(value_tag, content)) {
                (Some(keyword), Some(text)) => format!("{keyword}={}", escape_dn_value(&text)),
                (known, _) => format!(
                    "{}=#{}",
                    known.map_or_else(|| dotted_oid(oid), str::to_string),
                    value_der
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                ),
            };
            values.push(text);
        }
        rdns.push(values.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

fn expect(tag: u8, wanted: u8) -> Option<()> {
    (tag == wanted).then_some(())
}

/// One DER element: its tag, its content, and the bytes after it. `None` on anything
/// malformed (long tags, indefinite or overlong lengths, a length past the end).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The keywords Java's RFC 2253 form uses.
fn keyword(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x09] => "STREET",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID",
        _ => return None,
    })
}

fn dotted_oid(oid: &[u8]) -> String {
    let mut parts: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for &b in oid {
        value = (value << 7) | (b & 0x7f) as u64;
        if b & 0x80 == 0 {
            if parts.is_empty() {
                let first = (value / 40).min(2);
                parts.push(first);
                parts.push(value - first * 40);
            } else {
                parts.push(value);
            }
            value = 0;
        }
    }
    parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// A directory string's text: UTF8String, PrintableString, IA5String, T61String (as Latin-1),
/// BMPString (UTF-16BE), UniversalString (UTF-32BE).
fn string_value(tag: u8, content: &[u8]) -> Option<String> {
    match tag {
        0x0c | 0x13 | 0x16 => String::from_utf8(content.to_vec()).ok(),
        0x14 => Some(content.iter().map(|&b| b as char).collect()),
        0x1e => {
            let units: Vec<u16> = content
                .chunks(2)
                .map(|c| Some(u16::from_be_bytes([c[0], *c.get(1)?])))
                .collect::<Option<_>>()?;
            String::from_utf16(&units).ok()
        }
        0x1c => content
            .chunks(4)
            .map(|c| {
                let bytes: [u8; 4] = c.try_into().ok()?;
                char::from_u32(u32::from_be_bytes(bytes))
            })
            .collect(),
        _ => None,
    }
}

/// RFC 2253 escaping: `,+"\<>;` anywhere, `#` or a space first, a space last.
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
