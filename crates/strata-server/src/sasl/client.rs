//! The client side of PLAIN and SCRAM, for this broker's own connections to other brokers on
//! a SASL inter-broker listener (Kafka's `sasl.mechanism.inter.broker.protocol` with the
//! username and password of the listener's `sasl.jaas.config`), sans-IO like the servers.
//!
//! Invariants: the password is never logged nor put in an error ([`SaslLogin`]'s `Debug`
//! hides it); the server's SCRAM signature is checked in constant time before the exchange
//! counts as done; a server asking for more PBKDF2 iterations than
//! [`MAX_ITERATIONS`] (Kafka's bound on a credential) is refused, so a peer cannot make this node hash for minutes.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use strata_meta::scram::{
    constant_time_eq, random_bytes, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS,
};

/// A mechanism and the credentials to log in with.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslLogin {
    pub mechanism: ClientMechanism,
    pub username: String,
    password: String,
}

impl std::fmt::Debug for SaslLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslLogin")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"[hidden]")
            .finish()
    }
}

/// The mechanisms this broker can log in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMechanism {
    Plain,
    Scram(ScramMechanism),
}

impl ClientMechanism {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "PLAIN" => Some(Self::Plain),
            _ => ScramMechanism::from_mechanism_name(name).map(Self::Scram),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Scram(m) => m.mechanism_name(),
        }
    }
}

impl SaslLogin {
    pub fn new(mechanism: ClientMechanism, username: String, password: String) -> Self {
        SaslLogin {
            mechanism,
            username,
            password,
        }
    }

    /// The login of a JAAS configuration as Kafka's files give it,
    /// `org.apache.kafka.common.security.scram.ScramLoginModule required username="admin"
    /// password="admin-secret";`: the `username` and `password` options of its one entry.
    /// The error names what is missing, never a value.
    pub fn from_jaas(mechanism: ClientMechanism, jaas: &str) -> Result<Self, String> {
        let options = jaas_options(jaas)?;
        let option = |name: &str| {
            options
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("the JAAS configuration has no {name} option"))
        };
        Ok(SaslLogin::new(
            mechanism,
            option("username")?,
            option("password")?,
        ))
    }
}

/// The options of a one-entry JAAS configuration: `<login module> <flag> (key=value)* ;`,
/// values bare or double-quoted with `\` escapes.
fn jaas_options(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut chars = text.trim().chars().peekable();
    let mut words = Vec::new();
    let mut options = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None => return Err("the JAAS configuration does not end with ';'".into()),
            Some(';') => {
                chars.next();
                break;
            }
            Some(_) => {}
        }
        let mut word = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=' && *c != ';') {
            word.push(c);
        }
        if chars.next_if_eq(&'=').is_none() {
            if word.is_empty() {
                return Err("the JAAS configuration is malformed".into());
            }
            words.push(word);
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("the JAAS option {word} has no closing quote")),
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != ';') {
                value.push(c);
            }
        }
        options.push((word, value));
    }
    if words.len() != 2 || chars.any(|c| !c.is_whitespace()) {
        return Err(
            "the JAAS configuration must be one entry: <login module> <flag> options... ;".into(),
        );
    }
    Ok(options)
}

/// Why a login failed on this side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SASL {mechanism} login: {reason}")]
pub struct SaslClientError {
    mechanism: &'static str,
    reason: String,
}

/// One login exchange: [`SaslClient::initial`] gives the first token; each server answer goes
/// to [`SaslClient::step`], which gives the next token or `None` once the login is complete.
pub struct SaslClient {
    login: SaslLogin,
    state: ClientState,
}

enum ClientState {
    Initial,
    /// SCRAM client-first sent.
    ScramFirstSent {
        client_first_bare: String,
        client_nonce: String,
    },
    /// SCRAM client-final sent; the server must prove it knows the credential.
    ScramFinalSent {
        server_signature: Vec<u8>,
    },
    Done,
}

impl SaslClient {
    pub fn new(login: SaslLogin) -> Self {
        SaslClient {
            login,
            state: ClientState::Initial,
        }
    }

    fn error(&self, reason: impl Into<String>) -> SaslClientError {
        SaslClientError {
            mechanism: self.login.mechanism.name(),
            reason: reason.into(),
        }
    }

    /// The first token: PLAIN's `\0user\0password`, or SCRAM's client-first message.
    pub fn initial(&mut self) -> Vec<u8> {
        match self.login.mechanism {
            ClientMechanism::Plain => {
                self.state = ClientState::Done;
                format!("\0{}\0{}", self.login.username, self.login.password).into_bytes()
            }
            ClientMechanism::Scram(_) => {
                let client_nonce = B64.encode(random_bytes(24));
                let client_first_bare =
                    format!("n={},r={client_nonce}", saslname(&self.login.username));
                let token = format!("n,,{client_first_bare}").into_bytes();
                self.state = ClientState::ScramFirstSent {
                    client_first_bare,
                    client_nonce,
                };
                token
            }
        }
    }

    /// Takes the server's answer to the last token; `Ok(Some(token))` to send next,
    /// `Ok(None)` when the login is complete.
    pub fn step(&mut self, server: &[u8]) -> Result<Option<Vec<u8>>, SaslClientError> {
        let state = std::mem::replace(&mut self.state, ClientState::Done);
        let ClientMechanism::Scram(mechanism) = self.login.mechanism else {
            return Ok(None);
        };
        let text = std::str::from_utf8(server).map_err(|_| self.error("answer is not UTF-8"))?;
        match state {
            ClientState::ScramFirstSent {
                client_first_bare,
                client_nonce,
            } => {
                let mut nonce = None;
                let mut salt = None;
                let mut iterations = None;
                for attribute in text.split(',') {
                    match attribute.split_at_checked(2) {
                        Some(("r=", v)) => nonce = Some(v),
                        Some(("s=", v)) => salt = B64.decode(v).ok(),
                        Some(("i=", v)) => iterations = v.parse::<i32>().ok(),
                        Some(("e=", v)) => return Err(self.error(format!("server error {v}"))),
                        _ => {}
                    }
                }
                let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
                    return Err(self.error("malformed server-first message"));
                };
                if !nonce.starts_with(&client_nonce) || nonce.len() == client_nonce.len() {
                    return Err(self.error("the server's nonce does not extend ours"));
                }
                if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
                    return Err(self.error(format!(
                        "the server asks for {iterations} iterations (allowed \
                         {MIN_ITERATIONS} to {MAX_ITERATIONS})"
                    )));
                }
                let without_proof = format!("c=biws,r={nonce}");
                let auth_message = format!("{client_first_bare},{text},{without_proof}");
                let salted =
                    mechanism.salted_password(self.login.password.as_bytes(), &salt, iterations);
                let client_key = mechanism.client_key(&salted);
                let client_signature =
                    mechanism.hmac(&mechanism.stored_key(&client_key), auth_message.as_bytes());
                let proof: Vec<u8> = client_key
                    .iter()
                    .zip(&client_signature)
                    .map(|(k, s)| k ^ s)
                    .collect();
                self.state = ClientState::ScramFinalSent {
                    server_signature: mechanism
                        .hmac(&mechanism.server_key(&salted), auth_message.as_bytes()),
                };
                Ok(Some(
                    format!("{without_proof},p={}", B64.encode(proof)).into_bytes(),
                ))
            }
            ClientState::ScramFinalSent { server_signature } => {
                if let Some(error) = text.strip_prefix("e=") {
                    return Err(self.error(format!("server error {error}")));
                }
                let verifier = text
                    .strip_prefix("v=")
                    .and_then(|v| B64.decode(v.split(',').next().unwrap_or(v)).ok())
                    .ok_or_else(|| self.error("malformed server-final message"))?;
                if !constant_time_eq(&verifier, &server_signature) {
                    return Err(self.error("the server's signature is wrong"));
                }
                Ok(None)
            }
            ClientState::Initial | ClientState::Done => {
                Err(self.error("answer after the exchange ended"))
            }
        }
    }
}

/// RFC 5802 `saslname`: `,` as `=2C` and `=` as `=3D`.
fn saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{SaslMechanism, SaslServer, Step};
    use strata_meta::scram::ScramCredential;

    struct OneUser(String, ScramMechanism, ScramCredential);

    impl crate::sasl::CredentialLookup for OneUser {
        fn scram_credential(&self, user: &str, m: ScramMechanism) -> Option<ScramCredential> {
            (user == self.0 && m == self.1).then(|| self.2.clone())
        }
    }

    /// Runs a login of `client` against this crate's server holding `password` for the user;
    /// the user name the server authenticated, or the side that refused.
    fn exchange(
        mechanism: ScramMechanism,
        login: SaslLogin,
        password: &str,
    ) -> Result<String, String> {
        let users = OneUser(
            "broker,1=a".into(),
            mechanism,
            ScramCredential::from_password(mechanism, password.as_bytes(), b"salt".to_vec(), 4096),
        );
        let mut server = SaslServer::new(login.mechanism.server(), users);
        let mut client = SaslClient::new(login);
        let mut token = client.initial();
        loop {
            match server.step(&token).map_err(|e| format!("server: {e}"))? {
                Step::Challenge(challenge) => {
                    token = client
                        .step(&challenge)
                        .map_err(|e| format!("client: {e}"))?
                        .ok_or("client: done before the server")?;
                }
                Step::Done { response, user, .. } => {
                    let next = client.step(&response).map_err(|e| format!("client: {e}"))?;
                    assert!(next.is_none(), "the client is done with the server");
                    return Ok(user);
                }
            }
        }
    }

    impl ClientMechanism {
        fn server(self) -> SaslMechanism {
            match self {
                ClientMechanism::Plain => SaslMechanism::Plain,
                ClientMechanism::Scram(m) => SaslMechanism::Scram(m),
            }
        }
    }

    #[test]
    fn logs_in_to_this_crates_servers_and_refuses_a_false_one() {
        for mechanism in ScramMechanism::ALL {
            for client in [ClientMechanism::Plain, ClientMechanism::Scram(mechanism)] {
                let login =
                    |password: &str| SaslLogin::new(client, "broker,1=a".into(), password.into());
                assert_eq!(
                    exchange(mechanism, login("secret"), "secret"),
                    Ok("broker,1=a".to_string()),
                    "{client:?}"
                );
                let wrong = exchange(mechanism, login("wrong"), "secret");
                assert!(wrong.is_err_and(|e| e.starts_with("server:")), "{client:?}");
            }
        }
        // A server that does not know the password cannot forge the final signature.
        let mechanism = ScramMechanism::ScramSha256;
        let mut client = SaslClient::new(SaslLogin::new(
            ClientMechanism::Scram(mechanism),
            "u".into(),
            "p".into(),
        ));
        let first = String::from_utf8(client.initial()).expect("UTF-8");
        let nonce = first.rsplit_once("r=").expect("nonce").1;
        let server_first = format!("r={nonce}xyz,s={},i=4096", B64.encode(b"salt"));
        client.step(server_first.as_bytes()).expect("client-final");
        let forged = format!("v={}", B64.encode([0u8; 32]));
        assert!(client.step(forged.as_bytes()).is_err());
    }

    #[test]
    fn a_server_cannot_ask_for_endless_hashing_or_keep_our_nonce() {
        let login = SaslLogin::new(
            ClientMechanism::Scram(ScramMechanism::ScramSha512),
            "u".into(),
            "p".into(),
        );
        for (extend, iterations) in [("xyz", 1_000_000), ("xyz", 1), ("", 4096)] {
            let mut client = SaslClient::new(login.clone());
            let first = String::from_utf8(client.initial()).expect("UTF-8");
            let nonce = first.rsplit_once("r=").expect("nonce").1;
            let server_first =
                format!("r={nonce}{extend},s={},i={iterations}", B64.encode(b"salt"));
            assert!(client.step(server_first.as_bytes()).is_err());
        }
    }

    #[test]
    fn jaas_logins_read_as_kafkas_files_write_them() {
        let scram = ClientMechanism::Scram(ScramMechanism::ScramSha256);
        let login = SaslLogin::from_jaas(
            scram,
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required
               username="admin" password="a \"quoted\" secret;";"#,
        )
        .expect("parses");
        assert_eq!(
            login,
            SaslLogin::new(scram, "admin".into(), "a \"quoted\" secret;".into())
        );
        assert!(!format!("{login:?}").contains("secret"));
        let plain = SaslLogin::from_jaas(
            ClientMechanism::Plain,
            "org.apache.kafka.common.security.plain.PlainLoginModule required username=admin \
             password=admin-secret user_admin=admin-secret;",
        )
        .expect("parses");
        assert_eq!(plain.username, "admin");
        for bad in [
            "",
            "Module required username=\"a\" password=\"b\"",
            "Module required username=\"a\";",
            "Module required username=\"a password=b;",
            "Module required password=b; Other required;",
        ] {
            let error = SaslLogin::from_jaas(scram, bad).expect_err(bad);
            assert!(!error.contains("b;"), "{error}");
        }
    }
}
