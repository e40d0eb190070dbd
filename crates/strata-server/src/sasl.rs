//! SASL servers for SCRAM-SHA-256/512 (RFC 5802, RFC 7677), PLAIN (RFC 4616) and OAUTHBEARER
//! (RFC 7628, KIP-255), sans-IO: Kafka's `ScramSaslServer` and `PlainSaslServer` over the SCRAM
//! credentials of the metadata image, so one user list serves both, and its
//! `OAuthBearerSaslServer` over a [`TokenValidator`] (signed JWTs, [`crate::oauth`]).
//!
//! The connection feeds each client token (a SaslAuthenticate `auth_bytes`) to
//! [`SaslServer::step`] and sends back what it returns; [`Step::Done`] carries the
//! authenticated user (Kafka's `User:<name>` principal). Any error ends the exchange: the
//! caller answers SASL_AUTHENTICATION_FAILED with [`SaslError::kafka_message`] and closes the
//! connection (after `connection.failed.authentication.delay.ms`). Wiring to listeners
//! (SaslHandshake, SaslAuthenticate, `sasl.enabled.mechanisms`) lives with the listeners.
//!
//! Invariants: a token longer than [`MAX_SASL_TOKEN_BYTES`] is refused before it is parsed;
//! proofs and keys are compared in constant time; nothing secret is logged or put in an
//! error. An unknown user is refused with the same message as a wrong password, so the
//! answer does not tell which user names exist.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use strata_meta::config::props;
use strata_meta::scram::{constant_time_eq, random_bytes, ScramCredential, ScramMechanism};
use strata_meta::MetadataImage;

use std::sync::Arc;

use crate::config::{ListenerConfig, ListenerError, ServerConfig};

pub mod client;
use crate::oauth::TokenValidator;
use crate::session::SecurityProtocol;

/// Largest client token accepted. SCRAM and PLAIN tokens are a user name, a nonce and a proof
/// or password: a few hundred bytes. Kafka bounds the frame (`sasl.server.max.receive.size`);
/// this bounds what these parsers ever look at.
pub const MAX_SASL_TOKEN_BYTES: usize = 8 * 1024;

/// Largest OAUTHBEARER client message: a JWT with its claims, which identity providers make a
/// few kilobytes long.
pub const MAX_OAUTHBEARER_TOKEN_BYTES: usize = 64 * 1024;

/// Where credentials come from: the metadata image in the broker, a map in tests.
pub trait CredentialLookup {
    fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential>;
}

impl CredentialLookup for MetadataImage {
    fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        MetadataImage::scram_credential(self, user, mechanism).cloned()
    }
}

impl<T: CredentialLookup> CredentialLookup for std::sync::Arc<T> {
    fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        T::scram_credential(self, user, mechanism)
    }
}

/// Whether `password` is `user`'s, checked against the user's SCRAM credential (SHA-512's if
/// the user has one, else SHA-256's) by deriving the stored key with its salt and iterations,
/// compared in constant time. The one password check of SASL/PLAIN and the admin API's HTTP
/// Basic authentication. Costs a key derivation (milliseconds): callers on async threads run
/// it on a blocking one.
pub fn password_matches(credentials: &impl CredentialLookup, user: &str, password: &str) -> bool {
    let credential = [ScramMechanism::ScramSha512, ScramMechanism::ScramSha256]
        .into_iter()
        .find_map(|m| credentials.scram_credential(user, m).map(|c| (m, c)));
    match &credential {
        Some((m, c)) => {
            let salted = m.salted_password(password.as_bytes(), &c.salt, c.iterations);
            constant_time_eq(&m.stored_key(&m.client_key(&salted)), &c.stored_key)
        }
        None => {
            // As much work as a real check, so timing does not tell that the user is unknown.
            let m = ScramMechanism::ScramSha512;
            let _ = m.salted_password(password.as_bytes(), b"no such user", 4096);
            false
        }
    }
}

/// A SASL mechanism this module serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(ScramMechanism),
    OAuthBearer,
}

impl SaslMechanism {
    /// The mechanism of a SaslHandshake name; `None` for one not served here.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "PLAIN" => Some(Self::Plain),
            "OAUTHBEARER" => Some(Self::OAuthBearer),
            _ => ScramMechanism::from_mechanism_name(name).map(Self::Scram),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Scram(m) => m.mechanism_name(),
            Self::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// What a step gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this to the client and wait for its next token.
    Challenge(Vec<u8>),
    /// Authenticated: send `response` (empty for PLAIN and OAUTHBEARER, the server-final
    /// message for SCRAM) and take `user` as the session's principal name (`User:<user>`).
    /// `expires_at_ms`: when the credential expires (an OAUTHBEARER token's `exp`).
    Done {
        response: Vec<u8>,
        user: String,
        expires_at_ms: Option<i64>,
    },
}

/// Why an exchange failed. Every variant is SASL_AUTHENTICATION_FAILED (58) to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// Unknown user or wrong password or proof: one error, so the answer does not tell which.
    #[error("Authentication failed during authentication due to invalid credentials with SASL mechanism {0}")]
    InvalidCredentials(&'static str),
    /// A token that does not follow the mechanism's grammar; the reason is safe to show.
    #[error("Authentication failed: {0}")]
    Malformed(String),
    /// A token after the exchange ended (completed or failed).
    #[error("Authentication failed: SASL exchange already complete")]
    IllegalState,
}

impl SaslError {
    /// The message Kafka puts in SaslAuthenticate's `error_message`.
    pub fn kafka_message(&self) -> String {
        self.to_string()
    }

    /// RFC 5802's `server-error` value (`e=...`) for this failure.
    pub fn scram_error(&self) -> &'static str {
        match self {
            SaslError::InvalidCredentials(_) => "invalid-proof",
            SaslError::Malformed(_) => "invalid-encoding",
            SaslError::IllegalState => "other-error",
        }
    }
}

/// The mechanisms SASL listener `listener` serves: its `sasl.enabled.mechanisms` (prefixed or
/// plain), each one served here. PLAIN sends the password itself, so on a SASL_PLAINTEXT
/// listener it also needs `sasl.plain.allow.plaintext=true`.
pub fn listener_mechanisms(
    config: &ServerConfig,
    listener: &ListenerConfig,
) -> Result<Vec<SaslMechanism>, ListenerError> {
    let name = &listener.name;
    let enabled = config.listener_value(name, props::SASL_ENABLED_MECHANISMS);
    let mut mechanisms = Vec::new();
    for item in enabled.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let mechanism = SaslMechanism::from_name(item).ok_or_else(|| {
            ListenerError(format!(
                "listener {name}: SASL mechanism {item} is not supported (sasl.enabled.mechanisms \
                 may name PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER)"
            ))
        })?;
        if mechanism == SaslMechanism::Plain
            && listener.security_protocol == SecurityProtocol::SaslPlaintext
            && !config.listener_value(name, props::SASL_PLAIN_ALLOW_PLAINTEXT)
        {
            return Err(ListenerError(format!(
                "listener {name}: PLAIN on SASL_PLAINTEXT sends passwords in the clear; use \
                 SASL_SSL, or set sasl.plain.allow.plaintext=true"
            )));
        }
        if !mechanisms.contains(&mechanism) {
            mechanisms.push(mechanism);
        }
    }
    if mechanisms.is_empty() {
        return Err(ListenerError(format!(
            "listener {name}: sasl.enabled.mechanisms is empty"
        )));
    }
    Ok(mechanisms)
}

fn malformed(why: impl Into<String>) -> SaslError {
    SaslError::Malformed(why.into())
}

/// One SASL exchange on one connection.
pub struct SaslServer<C> {
    mechanism: SaslMechanism,
    credentials: C,
    /// OAUTHBEARER's token validation; `None` refuses every token.
    tokens: Option<Arc<TokenValidator>>,
    state: State,
}

enum State {
    /// Waiting for the first client token.
    Start,
    /// SCRAM: server-first sent; waiting for client-final.
    ScramFirstSent {
        user: String,
        credential: ScramCredential,
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    /// Completed or failed: any further token is an error.
    Finished,
}

impl<C: CredentialLookup> SaslServer<C> {
    pub fn new(mechanism: SaslMechanism, credentials: C) -> Self {
        SaslServer {
            mechanism,
            credentials,
            tokens: None,
            state: State::Start,
        }
    }

    /// The server with OAUTHBEARER tokens checked by `tokens`.
    pub fn with_tokens(mut self, tokens: Option<Arc<TokenValidator>>) -> Self {
        self.tokens = tokens;
        self
    }

    pub fn mechanism(&self) -> SaslMechanism {
        self.mechanism
    }

    /// Consumes one client token. After an error or [`Step::Done`] the exchange is over.
    pub fn step(&mut self, token: &[u8]) -> Result<Step, SaslError> {
        let state = std::mem::replace(&mut self.state, State::Finished);
        let max = match self.mechanism {
            SaslMechanism::OAuthBearer => MAX_OAUTHBEARER_TOKEN_BYTES,
            _ => MAX_SASL_TOKEN_BYTES,
        };
        if token.len() > max {
            return Err(malformed(format!(
                "SASL token of {} bytes exceeds {max}",
                token.len()
            )));
        }
        match (self.mechanism, state) {
            (_, State::Finished) => Err(SaslError::IllegalState),
            (SaslMechanism::OAuthBearer, State::Start) => self.oauthbearer(token),
            (SaslMechanism::OAuthBearer, State::ScramFirstSent { .. }) => {
                Err(SaslError::IllegalState)
            }
            (SaslMechanism::Plain, State::Start) => self.plain(token),
            (SaslMechanism::Scram(m), State::Start) => self.scram_client_first(m, token),
            (SaslMechanism::Scram(m), first @ State::ScramFirstSent { .. }) => {
                scram_client_final(m, first, token)
            }
            (SaslMechanism::Plain, State::ScramFirstSent { .. }) => Err(SaslError::IllegalState),
        }
    }

    /// RFC 7628's client response, `n,[a=<authzid>],^Aauth=Bearer <token>^A[key=value^A]*^A`:
    /// the token is validated and its subject is the user. An authorization id must name the
    /// subject; other keys (KIP-342 extensions) are ignored.
    fn oauthbearer(&mut self, message: &[u8]) -> Result<Step, SaslError> {
        let text = std::str::from_utf8(message)
            .map_err(|_| malformed("Invalid OAUTHBEARER client response: not UTF-8"))?;
        let invalid = || malformed("Invalid OAUTHBEARER client response");
        let (gs2, rest) = text.split_once('\u{1}').ok_or_else(invalid)?;
        let authzid = match gs2.strip_prefix("n,").and_then(|g| g.strip_suffix(',')) {
            Some("") => None,
            Some(a) => Some(a.strip_prefix("a=").ok_or_else(invalid)?),
            None => return Err(invalid()),
        };
        let mut auth = None;
        for pair in rest.split('\u{1}').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(invalid)?;
            if key == "auth" {
                auth = Some(value);
            }
        }
        let token = auth
            .and_then(|a| {
                a.strip_prefix("Bearer ")
                    .or_else(|| a.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| malformed("Invalid OAUTHBEARER client response: no bearer token"))?;
        let tokens = self
            .tokens
            .as_ref()
            .ok_or(SaslError::InvalidCredentials("OAUTHBEARER"))?;
        let valid = tokens
            .validate(token, std::time::SystemTime::now())
            .map_err(|why| malformed(format!("invalid_token: {why}")))?;
        if authzid.is_some_and(|a| a != valid.subject) {
            return Err(malformed(
                "Client requested an authorization id that is different from the token's subject",
            ));
        }
        Ok(Step::Done {
            response: Vec::new(),
            user: valid.subject,
            expires_at_ms: Some(valid.expires_at_ms),
        })
    }

    /// RFC 4616: `[authzid] NUL authcid NUL passwd`, the password checked by
    /// [`password_matches`].
    fn plain(&mut self, token: &[u8]) -> Result<Step, SaslError> {
        let text = std::str::from_utf8(token)
            .map_err(|_| malformed("Invalid SASL/PLAIN response: not UTF-8"))?;
        let parts: Vec<&str> = text.split('\0').collect();
        let [authzid, user, password] = parts.as_slice() else {
            return Err(malformed(format!(
                "Invalid SASL/PLAIN response: expected 3 tokens, got {}",
                parts.len()
            )));
        };
        if user.is_empty() {
            return Err(malformed("username not specified"));
        }
        if password.is_empty() {
            return Err(malformed("password not specified"));
        }
        if !authzid.is_empty() && authzid != user {
            return Err(malformed(
                "Client requested an authorization id that is different from username",
            ));
        }
        if !password_matches(&self.credentials, user, password) {
            return Err(SaslError::InvalidCredentials("PLAIN"));
        }
        Ok(Step::Done {
            response: Vec::new(),
            user: user.to_string(),
            expires_at_ms: None,
        })
    }

    /// client-first: `gs2-header client-first-bare`, answered with server-first.
    fn scram_client_first(
        &mut self,
        mechanism: ScramMechanism,
        token: &[u8],
    ) -> Result<Step, SaslError> {
        let text = std::str::from_utf8(token)
            .map_err(|_| malformed("Invalid SASL/SCRAM message: not UTF-8"))?;
        // gs2-header = gs2-cbind-flag "," [authzid] ","
        let (cbind, rest) = text
            .split_once(',')
            .ok_or_else(|| malformed("Invalid SASL/SCRAM client-first message"))?;
        match cbind {
            "n" | "y" => {}
            _ if cbind.starts_with("p=") => {
                return Err(malformed("Channel binding is not supported"));
            }
            _ => return Err(malformed("Invalid SASL/SCRAM client-first message")),
        }
        let (raw_authzid, client_first_bare) = rest
            .split_once(',')
            .ok_or_else(|| malformed("Invalid SASL/SCRAM client-first message"))?;
        let authzid = match raw_authzid {
            "" => None,
            a => Some(decode_saslname(a.strip_prefix("a=").ok_or_else(|| {
                malformed("Invalid SASL/SCRAM client-first message")
            })?)?),
        };
        let gs2_header = format!("{cbind},{raw_authzid},");
        let mut attrs = client_first_bare.split(',');
        let user = attrs
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .ok_or_else(|| malformed("Invalid SASL/SCRAM client-first message: no user name"))?;
        let user = decode_saslname(user)?;
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b)))
            .ok_or_else(|| malformed("Invalid SASL/SCRAM client-first message: no nonce"))?;
        if attrs.next().is_some() {
            // Kafka's only extension is `tokenauth` (delegation tokens), which Strata lacks.
            return Err(malformed("Unsupported SASL/SCRAM extensions"));
        }
        if authzid.as_ref().is_some_and(|a| *a != user) {
            return Err(malformed(
                "Client requested an authorization id that is different from username",
            ));
        }
        let credential = self
            .credentials
            .scram_credential(&user, mechanism)
            .ok_or(SaslError::InvalidCredentials(mechanism.mechanism_name()))?;
        let nonce = format!("{client_nonce}{}", server_nonce());
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        self.state = State::ScramFirstSent {
            user,
            credential,
            gs2_header,
            client_first_bare: client_first_bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(Step::Challenge(server_first.into_bytes()))
    }
}

/// The server's part of the SCRAM nonce: 32 letters and digits (about 190 random bits),
/// alphanumeric as Kafka's `ScramFormatter.secureRandomString` makes it.
fn server_nonce() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    random_bytes(32)
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// client-final: `c=<gs2 header>,r=<nonce>,p=<proof>`; the proof is checked against the
/// stored key and answered with the server signature.
fn scram_client_final(
    mechanism: ScramMechanism,
    state: State,
    token: &[u8],
) -> Result<Step, SaslError> {
    let State::ScramFirstSent {
        user,
        credential,
        gs2_header,
        client_first_bare,
        server_first,
        nonce,
    } = state
    else {
        return Err(SaslError::IllegalState);
    };
    let text = std::str::from_utf8(token)
        .map_err(|_| malformed("Invalid SASL/SCRAM message: not UTF-8"))?;
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or_else(|| malformed("Invalid SASL/SCRAM client-final message: no proof"))?;
    let mut attrs = without_proof.split(',');
    let channel_binding = attrs
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or_else(|| malformed("Invalid SASL/SCRAM client-final message"))?;
    if B64.decode(channel_binding).ok().as_deref() != Some(gs2_header.as_bytes()) {
        return Err(malformed(
            "Invalid SASL/SCRAM client-final message: channel binding",
        ));
    }
    let final_nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or_else(|| malformed("Invalid SASL/SCRAM client-final message"))?;
    // Kafka's `ScramSaslServer` checks only that the nonce ends with the combined one:
    // librdkafka before 2.1 (Debian's kcat among them) sends the client's part twice.
    if !final_nonce.ends_with(nonce.as_str()) {
        return Err(malformed("Invalid SASL/SCRAM client-final message: nonce"));
    }
    if attrs.next().is_some() {
        return Err(malformed("Unsupported SASL/SCRAM extensions"));
    }
    let proof = B64
        .decode(proof)
        .map_err(|_| malformed("Invalid SASL/SCRAM client-final message: proof"))?;
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let client_signature = mechanism.hmac(&credential.stored_key, auth_message.as_bytes());
    if proof.len() != client_signature.len() {
        return Err(SaslError::InvalidCredentials(mechanism.mechanism_name()));
    }
    let client_key: Vec<u8> = proof
        .iter()
        .zip(&client_signature)
        .map(|(p, s)| p ^ s)
        .collect();
    if !constant_time_eq(&mechanism.stored_key(&client_key), &credential.stored_key) {
        return Err(SaslError::InvalidCredentials(mechanism.mechanism_name()));
    }
    let server_signature = mechanism.hmac(&credential.server_key, auth_message.as_bytes());
    Ok(Step::Done {
        response: format!("v={}", B64.encode(server_signature)).into_bytes(),
        user,
        expires_at_ms: None,
    })
}

/// RFC 5802 `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is invalid.
fn decode_saslname(name: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(malformed("Invalid SASL/SCRAM user name encoding")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(malformed(
            "Invalid SASL/SCRAM client-first message: no user name",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct Users(HashMap<(String, ScramMechanism), ScramCredential>);

    impl Users {
        fn with(mut self, user: &str, m: ScramMechanism, password: &str, salt: &[u8]) -> Self {
            let c = ScramCredential::from_password(m, password.as_bytes(), salt.to_vec(), 4096);
            self.0.insert((user.to_string(), m), c);
            self
        }
    }

    impl CredentialLookup for Users {
        fn scram_credential(&self, user: &str, m: ScramMechanism) -> Option<ScramCredential> {
            self.0.get(&(user.to_string(), m)).cloned()
        }
    }

    /// The client side of SCRAM, written from RFC 5802, for round trips.
    fn client_final(
        m: ScramMechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        let attrs: HashMap<&str, &str> = server_first
            .split(',')
            .map(|a| a.split_at(2))
            .map(|(k, v)| (&k[..1], v))
            .collect();
        let salt = B64.decode(attrs["s"]).unwrap();
        let iterations: i32 = attrs["i"].parse().unwrap();
        let without_proof = format!("c=biws,r={}", attrs["r"]);
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let salted = m.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = m.client_key(&salted);
        let signature = m.hmac(&m.stored_key(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_signature = m.hmac(&m.server_key(&salted), auth.as_bytes());
        (
            format!("{without_proof},p={}", B64.encode(proof)),
            server_signature,
        )
    }

    fn scram_login(
        users: Users,
        m: ScramMechanism,
        user: &str,
        password: &str,
    ) -> Result<Step, SaslError> {
        let mut server = SaslServer::new(SaslMechanism::Scram(m), users);
        let bare = format!("n={user},r=fyko+d2lbbFgONRv9qkxdawL");
        let Step::Challenge(first) = server.step(format!("n,,{bare}").as_bytes())? else {
            panic!("SCRAM answers client-first with a challenge");
        };
        let first = String::from_utf8(first).unwrap();
        assert!(first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"), "{first}");
        let (final_message, expected_signature) = client_final(m, password, &bare, &first);
        let step = server.step(final_message.as_bytes())?;
        if let Step::Done { response, .. } = &step {
            assert_eq!(
                response,
                &format!("v={}", B64.encode(expected_signature)).into_bytes()
            );
        }
        assert_eq!(server.step(b"again"), Err(SaslError::IllegalState));
        Ok(step)
    }

    /// RFC 7677 section 3, the server's side of the example exchange: its nonce is random
    /// here, so the proof is the RFC's only with the RFC's nonce, checked through the
    /// final step with the RFC's server-first injected.
    #[test]
    fn rfc_7677_example_exchange_verifies() {
        let m = ScramMechanism::ScramSha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = ScramCredential::from_password(m, b"pencil", salt, 4096);
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let state = State::ScramFirstSent {
            user: "user".into(),
            credential,
            gs2_header: "n,,".into(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_first: server_first.into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
        };
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
            p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            scram_client_final(m, state, client_final.as_bytes()),
            Ok(Step::Done {
                response: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
                user: "user".into(),
                expires_at_ms: None,
            })
        );
    }

    #[test]
    fn scram_round_trips_for_both_mechanisms() {
        for m in ScramMechanism::ALL {
            let users = Users::default().with("alice", m, "alice-secret", b"salt");
            let ok = scram_login(users, m, "alice", "alice-secret");
            assert!(
                matches!(ok, Ok(Step::Done { ref user, .. }) if user == "alice"),
                "{ok:?}"
            );
        }
    }

    #[test]
    fn scram_refuses_wrong_passwords_unknown_users_and_other_mechanisms_alike() {
        let m = ScramMechanism::ScramSha256;
        let users = || Users::default().with("alice", m, "alice-secret", b"salt");
        let wrong = scram_login(users(), m, "alice", "guess");
        assert_eq!(wrong, Err(SaslError::InvalidCredentials("SCRAM-SHA-256")));
        let unknown = scram_login(users(), m, "mallory", "x");
        assert_eq!(unknown, Err(SaslError::InvalidCredentials("SCRAM-SHA-256")));
        // A SHA-256 credential does not log in over SHA-512.
        let other = scram_login(
            users(),
            ScramMechanism::ScramSha512,
            "alice",
            "alice-secret",
        );
        assert_eq!(other, Err(SaslError::InvalidCredentials("SCRAM-SHA-512")));
        assert_eq!(wrong.unwrap_err().scram_error(), "invalid-proof");
    }

    #[test]
    fn scram_refuses_malformed_messages() {
        let m = ScramMechanism::ScramSha256;
        let users = || Users::default().with("a,b=c", m, "pw", b"salt");
        for first in [
            &b""[..],
            b"n,,",
            b"x,,n=a,r=abc",
            b"p=tls-unique,,n=a,r=abc",
            b"n,,r=abc",
            b"n,,n=a",
            b"n,,n=a,r=",
            b"n,,n=a=2X,r=abc",
            b"n,,n=,r=abc",
            b"n,a=other,n=a=2Cb=3Dc,r=abc",
            b"n,,n=a=2Cb=3Dc,r=abc,ext=1",
            b"\xff\xfe",
        ] {
            let mut server = SaslServer::new(SaslMechanism::Scram(m), users());
            let e = server
                .step(first)
                .expect_err(&String::from_utf8_lossy(first));
            assert!(matches!(e, SaslError::Malformed(_)), "{e:?}");
            assert_eq!(server.step(b"n,,n=a,r=abc"), Err(SaslError::IllegalState));
        }
        let mut big = SaslServer::new(SaslMechanism::Scram(m), users());
        assert!(matches!(
            big.step(&vec![b'a'; MAX_SASL_TOKEN_BYTES + 1]),
            Err(SaslError::Malformed(_))
        ));

        // The escaped user name decodes, and client-final is checked piece by piece.
        let bare = "n=a=2Cb=3Dc,r=abc";
        for (label, tamper) in [
            (
                "nonce",
                Box::new(|f: String| f.replace("r=abc", "r=abd")) as Box<dyn Fn(String) -> String>,
            ),
            (
                "binding",
                Box::new(|f: String| f.replace("c=biws", "c=eSws")),
            ),
            (
                "no proof",
                Box::new(|f: String| f.split(",p=").next().unwrap().to_string()),
            ),
            ("proof", Box::new(|f: String| format!("{f}AA"))),
        ] {
            let mut server = SaslServer::new(SaslMechanism::Scram(m), users());
            let Ok(Step::Challenge(first)) = server.step(format!("n,,{bare}").as_bytes()) else {
                panic!("a,b=c exists");
            };
            let (fin, _) = client_final(m, "pw", bare, &String::from_utf8(first).unwrap());
            assert!(server.step(tamper(fin).as_bytes()).is_err(), "{label}");
        }
        let mut server = SaslServer::new(SaslMechanism::Scram(m), users());
        let Ok(Step::Challenge(first)) = server.step(format!("n,a=a=2Cb=3Dc,{bare}").as_bytes())
        else {
            panic!("an authzid equal to the user is accepted");
        };
        let (fin, _) = client_final(m, "pw", bare, &String::from_utf8(first).unwrap());
        // The gs2 header had an authzid, so c= must carry it: "biws" ("n,,") is refused.
        assert!(matches!(
            server.step(fin.as_bytes()),
            Err(SaslError::Malformed(_))
        ));
    }

    #[test]
    fn plain_checks_the_password_against_the_scram_credential() {
        let users = || {
            Users::default()
                .with("alice", ScramMechanism::ScramSha256, "alice-secret", b"s1")
                .with("bob", ScramMechanism::ScramSha512, "bob-secret", b"s2")
        };
        let login = |token: &[u8]| SaslServer::new(SaslMechanism::Plain, users()).step(token);
        assert_eq!(
            login(b"\0alice\0alice-secret"),
            Ok(Step::Done {
                response: vec![],
                user: "alice".into(),
                expires_at_ms: None,
            })
        );
        assert!(
            matches!(login(b"bob\0bob\0bob-secret"), Ok(Step::Done { user, .. }) if user == "bob")
        );
        for (token, invalid_credentials) in [
            (&b"\0alice\0wrong"[..], true),
            (b"\0mallory\0alice-secret", true),
            (b"\0alice\0", false),
            (b"\0\0alice-secret", false),
            (b"bob\0alice\0alice-secret", false),
            (b"alice\0alice-secret", false),
            (b"\0alice\0a\0b", false),
            (b"\0alice\0\xff", false),
        ] {
            let e = login(token).expect_err(&String::from_utf8_lossy(token));
            assert_eq!(
                matches!(e, SaslError::InvalidCredentials("PLAIN")),
                invalid_credentials,
                "{e:?}"
            );
            assert!(!e.kafka_message().contains("secret"), "{e}");
        }
        let mut server = SaslServer::new(SaslMechanism::Plain, users());
        assert!(server.step(b"\0alice\0alice-secret").is_ok());
        assert_eq!(
            server.step(b"\0alice\0alice-secret"),
            Err(SaslError::IllegalState)
        );
    }

    #[test]
    fn mechanism_names_are_kafkas() {
        for name in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            assert_eq!(SaslMechanism::from_name(name).map(|m| m.name()), Some(name));
        }
        assert_eq!(SaslMechanism::from_name("GSSAPI"), None);
    }

    #[test]
    fn listener_mechanisms_are_checked_at_start_up() {
        let listener = |protocol: SecurityProtocol| ListenerConfig {
            name: "CLIENTS".into(),
            security_protocol: protocol,
            bind: "127.0.0.1:0".parse().unwrap(),
            advertised_host: "localhost".into(),
            advertised_port: 9093,
        };
        let dir = std::path::Path::new("/nonexistent");
        let mechanisms = |pairs: &[(&str, &str)], protocol| {
            let config = crate::test_fixture::config(dir, pairs);
            listener_mechanisms(&config, &listener(protocol)).map_err(|e| e.to_string())
        };
        let err = mechanisms(&[], SecurityProtocol::SaslSsl).unwrap_err();
        assert!(err.contains("GSSAPI is not supported"), "{err}");
        let scram = [("sasl.enabled.mechanisms", "SCRAM-SHA-512, PLAIN")];
        assert_eq!(
            mechanisms(&scram, SecurityProtocol::SaslSsl),
            Ok(vec![
                SaslMechanism::Scram(ScramMechanism::ScramSha512),
                SaslMechanism::Plain
            ])
        );
        let err = mechanisms(&scram, SecurityProtocol::SaslPlaintext).unwrap_err();
        assert!(err.contains("sasl.plain.allow.plaintext"), "{err}");
        // The listener's own setting wins over the plain one.
        let prefixed = [
            ("sasl.enabled.mechanisms", "PLAIN"),
            (
                "listener.name.clients.sasl.enabled.mechanisms",
                "SCRAM-SHA-256",
            ),
        ];
        assert_eq!(
            mechanisms(&prefixed, SecurityProtocol::SaslPlaintext),
            Ok(vec![SaslMechanism::Scram(ScramMechanism::ScramSha256)])
        );
        let allowed = [
            ("sasl.enabled.mechanisms", "PLAIN"),
            ("listener.name.clients.sasl.plain.allow.plaintext", "true"),
        ];
        assert_eq!(
            mechanisms(&allowed, SecurityProtocol::SaslPlaintext),
            Ok(vec![SaslMechanism::Plain])
        );
    }
}
