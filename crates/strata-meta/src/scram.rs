//! SCRAM credentials (RFC 5802, RFC 7677): the mechanisms, the key derivations and the stored
//! form of a credential, as Kafka's `ScramMechanism`, `ScramFormatter` and `ScramCredential`.
//!
//! A credential is what the server keeps of a password: the salt, the iteration count, the
//! stored key `H(HMAC(SaltedPassword, "Client Key"))` and the server key
//! `HMAC(SaltedPassword, "Server Key")`. Neither the password nor the salted password is kept,
//! so a leaked credential does not let anyone log in (it lets them impersonate the server).
//!
//! The primitives are aws-lc-rs's (already in the binary as rustls's and the object store's
//! crypto provider), so no hash, HMAC or PBKDF2 is written here.

use std::fmt;
use std::num::NonZeroU32;

use aws_lc_rs::{digest, hmac, pbkdf2};
use serde::{Deserialize, Serialize};

/// Kafka's bounds on a credential's iteration count: RFC 7677's minimum of 4096 (Kafka's
/// `ScramMechanism.minIterations`), and `ScramControlManager.MAX_ITERATIONS`.
pub const MIN_ITERATIONS: i32 = 4096;
pub const MAX_ITERATIONS: i32 = 16384;

/// A SCRAM mechanism. The discriminants are Kafka's type codes on the wire (0 is UNKNOWN,
/// which has no variant: an unknown code is `None` from [`ScramMechanism::from_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256 = 1,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512 = 2,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::ScramSha256, ScramMechanism::ScramSha512];

    /// The mechanism of a Kafka type code (AlterUserScramCredentials, the records).
    pub fn from_type(code: i8) -> Option<Self> {
        match code {
            1 => Some(Self::ScramSha256),
            2 => Some(Self::ScramSha512),
            _ => None,
        }
    }

    pub fn type_code(self) -> i8 {
        self as i8
    }

    /// The SASL mechanism name (`sasl.enabled.mechanisms`, SaslHandshake).
    pub fn mechanism_name(self) -> &'static str {
        match self {
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_mechanism_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.mechanism_name() == name)
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Self::ScramSha256 => &digest::SHA256,
            Self::ScramSha512 => &digest::SHA512,
        }
    }

    /// Output length of the mechanism's hash, and so of every key.
    pub fn key_len(self) -> usize {
        self.digest().output_len()
    }

    /// `H(data)`.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }

    /// `HMAC(key, data)`.
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            Self::ScramSha256 => hmac::HMAC_SHA256,
            Self::ScramSha512 => hmac::HMAC_SHA512,
        };
        hmac::sign(&hmac::Key::new(algorithm, key), data)
            .as_ref()
            .to_vec()
    }

    /// `Hi(password, salt, i)` of RFC 5802: PBKDF2 with the mechanism's HMAC, one block.
    /// `iterations` below 1 is taken as 1 (callers check the bounds first).
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: i32) -> Vec<u8> {
        let algorithm = match self {
            Self::ScramSha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Self::ScramSha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        };
        let rounds = u32::try_from(iterations)
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MIN);
        let mut out = vec![0; self.key_len()];
        pbkdf2::derive(algorithm, rounds, salt, password, &mut out);
        out
    }

    /// `ClientKey = HMAC(SaltedPassword, "Client Key")`.
    pub fn client_key(self, salted_password: &[u8]) -> Vec<u8> {
        self.hmac(salted_password, b"Client Key")
    }

    /// `StoredKey = H(ClientKey)`.
    pub fn stored_key(self, client_key: &[u8]) -> Vec<u8> {
        self.hash(client_key)
    }

    /// `ServerKey = HMAC(SaltedPassword, "Server Key")`.
    pub fn server_key(self, salted_password: &[u8]) -> Vec<u8> {
        self.hmac(salted_password, b"Server Key")
    }
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mechanism_name())
    }
}

/// What the server keeps of one user's password for one mechanism (Kafka's
/// `ScramCredentialData`). Its `Debug` hides everything but the iteration count, so it can
/// be logged with the image.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl ScramCredential {
    /// The credential of a salted password, as AlterUserScramCredentials carries it (the
    /// client salts and hashes; the password never reaches the broker).
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salt: Vec<u8>,
        salted_password: &[u8],
        iterations: i32,
    ) -> Self {
        ScramCredential {
            salt,
            stored_key: mechanism.stored_key(&mechanism.client_key(salted_password)),
            server_key: mechanism.server_key(salted_password),
            iterations,
        }
    }

    /// The credential of a password (`--add-scram`, as `kafka-storage format` does).
    pub fn from_password(
        mechanism: ScramMechanism,
        password: &[u8],
        salt: Vec<u8>,
        iterations: i32,
    ) -> Self {
        let salted = mechanism.salted_password(password, &salt, iterations);
        Self::from_salted_password(mechanism, salt, &salted, iterations)
    }
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("salt", &"[hidden]")
            .field("stored_key", &"[hidden]")
            .field("server_key", &"[hidden]")
            .field("iterations", &self.iterations)
            .finish()
    }
}

/// One `--add-scram` argument, in `kafka-storage format`'s syntax:
/// `SCRAM-SHA-256=[name=alice,password=alice-secret]`, with optional `iterations=` (default
/// 4096) and `salt=` (base64; default random), or `saltedpassword=` (base64, with `salt=`)
/// instead of `password=`. Values may be in double quotes. Its `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramBootstrap {
    pub mechanism: ScramMechanism,
    pub name: String,
    salt: Option<Vec<u8>>,
    pub iterations: i32,
    secret: BootstrapSecret,
}

#[derive(Clone, PartialEq, Eq)]
enum BootstrapSecret {
    Password(String),
    SaltedPassword(Vec<u8>),
}

/// Why an `--add-scram` argument was refused; never quotes a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--add-scram: {0}")]
pub struct ScramBootstrapError(String);

impl ScramBootstrap {
    pub fn parse(input: &str) -> Result<Self, ScramBootstrapError> {
        let err = |m: String| ScramBootstrapError(m);
        let input = input.trim();
        let (mechanism, config) = input
            .split_once('=')
            .ok_or_else(|| err("failed to find the equals sign after the mechanism".into()))?;
        let mechanism = ScramMechanism::from_mechanism_name(mechanism)
            .ok_or_else(|| err(format!("the mechanism {mechanism} is not supported")))?;
        let config = config
            .strip_prefix('[')
            .and_then(|c| c.strip_suffix(']'))
            .ok_or_else(|| err("expected the configuration in [ ]".into()))?;
        let mut parts = std::collections::BTreeMap::new();
        for part in config.split(',') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| err(format!("no equals sign in component {:?}", key_only(part))))?;
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            parts.insert(key.trim().to_string(), value.to_string());
        }
        let decode = |what: &str, v: String| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .map_err(|_| err(format!("failed to decode the given {what}")))
        };
        let name = parts
            .remove("name")
            .ok_or_else(|| err("you must supply 'name'".into()))?;
        let salt = parts
            .remove("salt")
            .map(|v| decode("salt", v))
            .transpose()?;
        let iterations = match parts.remove("iterations") {
            None => MIN_ITERATIONS,
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| err(format!("failed to parse the iteration count {v:?}")))?,
        };
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(err(format!(
                "'iterations' must be between {MIN_ITERATIONS} and {MAX_ITERATIONS} for {mechanism}"
            )));
        }
        let secret = match (parts.remove("password"), parts.remove("saltedpassword")) {
            (Some(p), _) => BootstrapSecret::Password(p),
            (None, Some(_)) if salt.is_none() => {
                return Err(err("you must supply 'salt' with 'saltedpassword'".into()))
            }
            (None, Some(sp)) => BootstrapSecret::SaltedPassword(decode("saltedpassword", sp)?),
            (None, None) => {
                return Err(err(
                    "you must supply one of 'password' or 'saltedpassword'".into()
                ))
            }
        };
        if !parts.is_empty() {
            let unknown: Vec<&str> = parts.keys().map(String::as_str).collect();
            return Err(err(format!(
                "unknown SCRAM configurations: {}",
                unknown.join(", ")
            )));
        }
        Ok(ScramBootstrap {
            mechanism,
            name,
            salt,
            iterations,
            secret,
        })
    }

    /// The credential to store, with a fresh random salt unless one was given.
    pub fn credential(&self) -> ScramCredential {
        let salt = self.salt.clone().unwrap_or_else(|| random_bytes(32));
        match &self.secret {
            BootstrapSecret::Password(p) => {
                ScramCredential::from_password(self.mechanism, p.as_bytes(), salt, self.iterations)
            }
            BootstrapSecret::SaltedPassword(sp) => {
                ScramCredential::from_salted_password(self.mechanism, salt, sp, self.iterations)
            }
        }
    }
}

/// The key of a `key=value` component without its value, for error messages (a component
/// without `=` may be a password cut at a comma).
fn key_only(part: &str) -> String {
    if part.len() > 16 {
        "[hidden]".into()
    } else {
        part.to_string()
    }
}

impl fmt::Debug for ScramBootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramBootstrap")
            .field("mechanism", &self.mechanism)
            .field("name", &self.name)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Whether `a` and `b` are equal, in time independent of their contents (not of their
/// lengths): the comparison of proofs and keys, so a timing cannot guess them byte by byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Random bytes from the system's generator (salts, nonces).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    // aws-lc's generator fails only if the operating system's entropy source does; nothing
    // secret may be made without it.
    aws_lc_rs::rand::fill(&mut out).expect("the system random generator failed");
    out
}

/// Bytes in records and snapshots as standard base64 strings rather than JSON arrays.
mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==,
    /// 4096 iterations. The proof and signature of the exchange follow from these keys.
    #[test]
    fn keys_match_rfc_7677() {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        let m = ScramMechanism::ScramSha256;
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = m.salted_password(b"pencil", &salt, 4096);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let client_key = m.client_key(&salted);
        let signature = m.hmac(&m.stored_key(&client_key), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(
            STANDARD.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_signature = m.hmac(&m.server_key(&salted), auth_message.as_bytes());
        assert_eq!(
            STANDARD.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn add_scram_arguments_parse_as_kafka_storage_format_does() {
        let b = ScramBootstrap::parse("SCRAM-SHA-256=[name=admin,password=admin-secret]").unwrap();
        assert_eq!(
            (b.mechanism, b.name.as_str(), b.iterations),
            (ScramMechanism::ScramSha256, "admin", 4096)
        );
        let c = b.credential();
        let m = ScramMechanism::ScramSha256;
        let salted = m.salted_password(b"admin-secret", &c.salt, 4096);
        assert_eq!(c.stored_key, m.stored_key(&m.client_key(&salted)));
        assert!(!format!("{b:?}").contains("admin-secret"));

        let b = ScramBootstrap::parse(
            r#"SCRAM-SHA-512=[name="bob",salt="c2FsdA==",iterations=8192,password="p=w"]"#,
        )
        .unwrap();
        let c = b.credential();
        assert_eq!((c.salt.as_slice(), c.iterations), (&b"salt"[..], 8192));
        let m = ScramMechanism::ScramSha512;
        assert_eq!(
            c.server_key,
            m.server_key(&m.salted_password(b"p=w", b"salt", 8192))
        );

        let salted = m.salted_password(b"pw", b"salt", 4096);
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&salted);
        let b = ScramBootstrap::parse(&format!(
            "SCRAM-SHA-512=[name=c,salt=c2FsdA==,saltedpassword={b64}]"
        ))
        .unwrap();
        assert_eq!(b.credential().server_key, m.server_key(&salted));

        for bad in [
            "SCRAM-SHA-1=[name=a,password=b]",
            "SCRAM-SHA-256[name=a,password=b]",
            "SCRAM-SHA-256=name=a,password=b",
            "SCRAM-SHA-256=[password=b]",
            "SCRAM-SHA-256=[name=a]",
            "SCRAM-SHA-256=[name=a,saltedpassword=AAAA]",
            "SCRAM-SHA-256=[name=a,password=b,iterations=100]",
            "SCRAM-SHA-256=[name=a,password=b,iterations=20000]",
            "SCRAM-SHA-256=[name=a,password=b,colour=red]",
            "SCRAM-SHA-256=[name=a,password=b,salt=!!]",
        ] {
            let e = ScramBootstrap::parse(bad).expect_err(bad);
            assert!(!e.to_string().contains("=b"), "{e}");
        }
    }

    #[test]
    fn mechanisms_have_kafka_codes_and_names() {
        for m in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::from_type(m.type_code()), Some(m));
            assert_eq!(
                ScramMechanism::from_mechanism_name(m.mechanism_name()),
                Some(m)
            );
        }
        assert_eq!(ScramMechanism::ScramSha256.type_code(), 1);
        assert_eq!(ScramMechanism::ScramSha512.type_code(), 2);
        assert_eq!(ScramMechanism::from_type(0), None);
        assert_eq!(ScramMechanism::from_mechanism_name("PLAIN"), None);
        assert_eq!(ScramMechanism::ScramSha512.key_len(), 64);
    }

    #[test]
    fn a_credential_round_trips_as_json_and_hides_its_keys() {
        let c = ScramCredential::from_password(
            ScramMechanism::ScramSha512,
            b"secret",
            b"salt".to_vec(),
            4096,
        );
        assert_eq!(c.stored_key.len(), 64);
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"salt\":\"c2FsdA==\""), "{json}");
        assert_eq!(serde_json::from_str::<ScramCredential>(&json).unwrap(), c);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("c2FsdA") && shown.contains("4096"),
            "{shown}"
        );
    }
}
