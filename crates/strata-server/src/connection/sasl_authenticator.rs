//! The SASL exchange of one connection on a SASL listener: Kafka's `SaslServerAuthenticator`.
//!
//! States (in [`Session::authentication`]): `AwaitingHandshake` admits ApiVersions and
//! SaslHandshake; a handshake naming an enabled mechanism moves to `Authenticating`, where only
//! the exchange's tokens may come: SaslAuthenticate requests after a v1 handshake (KIP-152), or
//! bare length-prefixed tokens after a v0 one; the mechanism's last step sets the principal and
//! `Complete`. With `connections.max.reauth.ms` the session expires and the client
//! re-authenticates in place (KIP-368) with a new handshake, keeping its mechanism and principal.
//!
//! Any failure ends the connection, as Kafka ends it: an unknown mechanism is answered
//! UNSUPPORTED_SASL_MECHANISM with the enabled list, bad credentials SASL_AUTHENTICATION_FAILED,
//! both after `connection.failed.authentication.delay.ms` (KIP-306), so that guessing passwords
//! is slow; a request out of turn is closed without an answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ResponseKind, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use strata_meta::MetadataImage;

use crate::broker::Broker;
use crate::oauth::TokenValidator;
use crate::sasl::{SaslMechanism, SaslServer, Step};
use crate::session::{Authentication, KafkaPrincipal, Session};

/// A SASL listener's settings, shared by its connections.
#[derive(Debug, Clone)]
pub struct SaslListener {
    /// `sasl.enabled.mechanisms`, in the order SaslHandshake lists them.
    pub mechanisms: Vec<SaslMechanism>,
    /// OAUTHBEARER's token validation, when it is enabled.
    pub tokens: Option<Arc<TokenValidator>>,
    /// `sasl.server.max.receive.size`: the largest frame before authentication completes.
    pub max_receive_bytes: usize,
    /// `connections.max.reauth.ms`; `None` (0): sessions do not expire.
    pub reauth_after: Option<Duration>,
    /// `connection.failed.authentication.delay.ms`.
    pub failure_delay: Duration,
}

/// What the connection sends for a request or token the authenticator took.
pub(super) enum Reply {
    /// A Kafka response to the request (boxed: `ResponseKind` is large, a token small).
    Response(Box<ResponseKind>),
    /// A bare length-prefixed token (after a v0 handshake).
    Token(Vec<u8>),
    /// Nothing: a request out of turn is closed unanswered, as Kafka closes it.
    Nothing,
}

/// The authenticator's answer. On failure the reply goes out after the listener's
/// failure delay and the connection closes, with `failure` as the logged reason.
pub(super) struct Answer {
    pub reply: Reply,
    pub failure: Option<String>,
}

impl Answer {
    fn ok(reply: Reply) -> Self {
        Answer {
            reply,
            failure: None,
        }
    }

    fn failed(reply: Reply, reason: impl Into<String>) -> Self {
        Answer {
            reply,
            failure: Some(reason.into()),
        }
    }
}

/// One connection's exchange. The connection counts failures (every [`Answer`] with a
/// `failure`); successes are counted here.
pub(super) struct Authenticator {
    listener: Arc<SaslListener>,
    exchange: Option<SaslServer<Arc<MetadataImage>>>,
    /// The handshake was v0: tokens come as bare frames, not SaslAuthenticate requests.
    raw_tokens: bool,
    /// The mechanism and principal of the last completed authentication, which a
    /// re-authentication must keep (Kafka refuses a change of either).
    authenticated: Option<(SaslMechanism, KafkaPrincipal)>,
}

impl Authenticator {
    pub fn new(listener: Arc<SaslListener>) -> Self {
        Authenticator {
            listener,
            exchange: None,
            raw_tokens: false,
            authenticated: None,
        }
    }

    /// The largest frame the connection may read now: `sasl.server.max.receive.size` until
    /// the session is authenticated (an unauthenticated client must not make the broker
    /// buffer `socket.request.max.bytes`), `max` after.
    pub fn frame_limit(&self, session: &Session, max: usize) -> usize {
        match session.authentication {
            Authentication::Complete => max,
            _ => max.min(self.listener.max_receive_bytes),
        }
    }

    /// Whether the next frame is a bare token rather than a Kafka request.
    pub fn expects_raw_token(&self, session: &Session) -> bool {
        self.raw_tokens && session.authentication == Authentication::Authenticating
    }

    /// Whether a request of `api_key` at `version` is the authenticator's: every SaslHandshake
    /// but a v0 one after authentication (re-authentication needs v1, KIP-368), and
    /// SaslAuthenticate while an exchange is on. The rest go to the handlers, which answer a
    /// stray SaslHandshake or SaslAuthenticate ILLEGAL_SASL_STATE as Kafka's `KafkaApis` does.
    pub fn takes(&self, session: &Session, api_key: ApiKey, version: i16) -> bool {
        match api_key {
            ApiKey::SaslHandshake => {
                session.authentication != Authentication::Complete || version >= 1
            }
            ApiKey::SaslAuthenticate => session.authentication == Authentication::Authenticating,
            _ => false,
        }
    }

    /// SaslHandshake: picks the mechanism and starts an exchange over the credentials of
    /// `image`.
    pub fn handshake(
        &mut self,
        session: &mut Session,
        version: i16,
        request: &SaslHandshakeRequest,
        image: Arc<MetadataImage>,
    ) -> Answer {
        let enabled: Vec<StrBytes> = self
            .listener
            .mechanisms
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect();
        let response = |error: Option<ResponseError>| {
            Reply::Response(Box::new(ResponseKind::SaslHandshake(
                SaslHandshakeResponse::default()
                    .with_error_code(error.map_or(0, |e| e.code()))
                    .with_mechanisms(enabled.clone()),
            )))
        };
        if session.authentication == Authentication::Authenticating {
            return Answer::failed(Reply::Nothing, "SaslHandshake during SASL authentication");
        }
        let requested = request.mechanism.as_str();
        let mechanism =
            SaslMechanism::from_name(requested).filter(|m| self.listener.mechanisms.contains(m));
        let Some(mechanism) = mechanism else {
            return Answer::failed(
                response(Some(ResponseError::UnsupportedSaslMechanism)),
                format!("unsupported SASL mechanism {requested:?}"),
            );
        };
        if let Some((previous, _)) = &self.authenticated {
            if *previous != mechanism {
                return Answer::failed(
                    response(Some(ResponseError::UnsupportedSaslMechanism)),
                    format!(
                        "re-authentication must keep the mechanism {}, not {}",
                        previous.name(),
                        mechanism.name()
                    ),
                );
            }
        }
        self.exchange =
            Some(SaslServer::new(mechanism, image).with_tokens(self.listener.tokens.clone()));
        self.raw_tokens = version == 0;
        session.authentication = Authentication::Authenticating;
        Answer::ok(response(None))
    }

    /// One client token (a SaslAuthenticate's `auth_bytes` of `version`, or a bare token
    /// after a v0 handshake), stepped through the exchange at `now`.
    pub fn authenticate(
        &mut self,
        broker: &Broker,
        session: &mut Session,
        version: i16,
        token: &[u8],
        now: Instant,
    ) -> Answer {
        let raw = self.raw_tokens;
        let reply = |result: Result<&[u8], String>, lifetime_ms: i64| {
            if raw {
                return match result {
                    Ok(bytes) => Reply::Token(bytes.to_vec()),
                    Err(_) => Reply::Nothing,
                };
            }
            let response = match result {
                Ok(bytes) => SaslAuthenticateResponse::default()
                    .with_auth_bytes(bytes.to_vec().into())
                    .with_session_lifetime_ms(if version >= 1 { lifetime_ms } else { 0 }),
                Err(message) => SaslAuthenticateResponse::default()
                    .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
            };
            Reply::Response(Box::new(ResponseKind::SaslAuthenticate(response)))
        };
        let Some(exchange) = self.exchange.as_mut() else {
            return Answer::failed(Reply::Nothing, "SASL token before SaslHandshake");
        };
        let mechanism = exchange.mechanism();
        let failed = |message: String| {
            Answer::failed(
                reply(Err(message.clone()), 0),
                format!("{} authentication failed: {message}", mechanism.name()),
            )
        };
        match exchange.step(token) {
            Ok(Step::Challenge(challenge)) => Answer::ok(reply(Ok(&challenge), 0)),
            Err(e) => {
                self.exchange = None;
                failed(e.kafka_message())
            }
            Ok(Step::Done {
                response,
                user,
                expires_at_ms,
            }) => {
                self.exchange = None;
                let principal = KafkaPrincipal {
                    principal_type: KafkaPrincipal::USER_TYPE.to_string(),
                    name: user,
                };
                let reauthentication = self.authenticated.is_some();
                if let Some((_, previous)) = &self.authenticated {
                    if *previous != principal {
                        return failed(format!(
                            "Cannot change principals during re-authentication from \
                             {previous}: {principal}"
                        ));
                    }
                }
                // KIP-368: with re-authentication on, a session lasts until the credential
                // expires (an OAUTHBEARER token's exp) or connections.max.reauth.ms passes.
                let lifetime = self.listener.reauth_after.map(|reauth| {
                    let credential = expires_at_ms.map(|exp| {
                        let left = exp - crate::task::now_ms();
                        Duration::from_millis(left.max(0) as u64)
                    });
                    credential.map_or(reauth, |c| c.min(reauth))
                });
                session.principal = principal.clone();
                session.authentication = Authentication::Complete;
                session.expires = lifetime.map(|d| now + d);
                self.authenticated = Some((mechanism, principal));
                if reauthentication {
                    broker.metrics.successful_reauthentications.add(1);
                } else {
                    broker.metrics.successful_authentications.add(1);
                }
                let lifetime_ms = lifetime.map_or(0, |d| d.as_millis() as i64);
                Answer::ok(reply(Ok(&response), lifetime_ms))
            }
        }
    }

    /// The listener's delay before a failure is answered and the connection closed.
    pub fn failure_delay(&self) -> Duration {
        self.listener.failure_delay
    }
}
