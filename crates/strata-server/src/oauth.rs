//! OAUTHBEARER tokens (KIP-255, KIP-768): validation of a signed JWT against the keys of a
//! JWKS, as Kafka's `OAuthBearerValidatorCallbackHandler` with its default validator does.
//!
//! A token is accepted when its signature (RS256 or ES256) verifies with the JWKS key its
//! header names (`kid`; the only key when it names none), it has not expired (`exp`, required),
//! is already valid (`nbf`), was not issued in the future (`iat`) — each with
//! `sasl.oauthbearer.clock.skew.seconds` of slack — comes from `sasl.oauthbearer.expected.issuer`
//! and is meant for one of `sasl.oauthbearer.expected.audience` when those are set, and names
//! its subject in `sasl.oauthbearer.sub.claim.name`, which becomes the principal's name.
//!
//! Keys come from `sasl.oauthbearer.jwks.endpoint.url`, `file://` or `https://`, read at
//! start-up and again every `sasl.oauthbearer.jwks.endpoint.refresh.ms` (the listener's upkeep
//! does it), so that rotated keys are picked up. A refresh that fails keeps the keys held.
//! Nothing from a token is logged but the reason it was refused.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{
    RsaPublicKeyComponents, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde_json::Value;
use strata_durable::RwLockExt;
use strata_meta::config::props;

use crate::config::ServerConfig;

/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// A verification key of the JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    /// RS256: modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// ES256: the uncompressed P-256 point (`04 || x || y`).
    P256 { point: Vec<u8> },
}

/// The keys of a JWKS by `kid` (`""` for a key without one).
type KeySet = HashMap<String, Key>;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidToken {
    /// The principal's name (the subject claim).
    pub subject: String,
    /// When the token expires (`exp`), in milliseconds since the epoch.
    pub expires_at_ms: i64,
}

/// The validation settings and keys of one listener.
#[derive(Debug)]
pub struct TokenValidator {
    jwks_url: String,
    keys: RwLock<KeySet>,
    issuer: Option<String>,
    audiences: Vec<String>,
    subject_claim: String,
    skew: Duration,
    /// How often the keys are read again.
    pub refresh_every: Duration,
}

impl TokenValidator {
    /// The validator of listener `listener` with its keys read; the error names the setting.
    pub async fn load(config: &ServerConfig, listener: &str) -> Result<TokenValidator, String> {
        let value = |key| config.listener_value(listener, key);
        let jwks_url: String = value(props::SASL_OAUTHBEARER_JWKS_ENDPOINT_URL);
        let jwks_url = jwks_url.trim().to_string();
        if jwks_url.is_empty() {
            return Err(
                "OAUTHBEARER needs sasl.oauthbearer.jwks.endpoint.url (file:// or https://)".into(),
            );
        }
        let issuer: String = value(props::SASL_OAUTHBEARER_EXPECTED_ISSUER);
        let audiences: String = value(props::SASL_OAUTHBEARER_EXPECTED_AUDIENCE);
        let skew: i64 = config.listener_value(listener, props::SASL_OAUTHBEARER_CLOCK_SKEW_SECONDS);
        let refresh: i64 =
            config.listener_value(listener, props::SASL_OAUTHBEARER_JWKS_ENDPOINT_REFRESH_MS);
        let keys = fetch(&jwks_url).await?;
        Ok(TokenValidator {
            jwks_url,
            keys: RwLock::new(keys),
            issuer: Some(issuer.trim().to_string()).filter(|i| !i.is_empty()),
            audiences: audiences
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect(),
            subject_claim: value(props::SASL_OAUTHBEARER_SUB_CLAIM_NAME)
                .trim()
                .to_string(),
            skew: Duration::from_secs(skew.max(0) as u64),
            refresh_every: Duration::from_millis(refresh.max(1000) as u64),
        })
    }

    /// Reads the keys again; on failure the keys held stay.
    pub async fn refresh(&self) -> Result<(), String> {
        let keys = fetch(&self.jwks_url).await?;
        *self.keys.write_locked() = keys;
        Ok(())
    }

    /// Validates `token` at `now`; the error is the reason, safe to show the client.
    pub fn validate(&self, token: &str, now: SystemTime) -> Result<ValidToken, String> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the token is not a signed JWT (header.payload.signature)".into());
        };
        let json = |part: &str, what: &str| -> Result<Value, String> {
            let bytes = B64URL
                .decode(part)
                .map_err(|_| format!("the token's {what} is not base64url"))?;
            serde_json::from_slice(&bytes).map_err(|_| format!("the token's {what} is not JSON"))
        };
        let header = json(header, "header")?;
        let claims = json(payload, "payload")?;
        let signature = B64URL
            .decode(signature)
            .map_err(|_| "the token's signature is not base64url".to_string())?;
        let kid = header.get("kid").and_then(Value::as_str).unwrap_or("");
        let key = self.key(kid).ok_or_else(|| {
            format!("no key {kid:?} in the JWKS of sasl.oauthbearer.jwks.endpoint.url")
        })?;
        let signed = &token.as_bytes()[..token.rfind('.').unwrap_or(0)];
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        let verified = match (alg, &key) {
            ("RS256", Key::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, signed, &signature)
                .is_ok(),
            ("ES256", Key::P256 { point }) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed, &signature)
                    .is_ok()
            }
            _ => {
                return Err(format!(
                    "algorithm {alg:?} does not fit the key (RS256, ES256)"
                ))
            }
        };
        if !verified {
            return Err("the token's signature does not verify".into());
        }
        let now_s = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let skew = self.skew.as_secs_f64();
        let time = |name: &str| claims.get(name).and_then(Value::as_f64);
        let exp = time("exp").ok_or("the token has no exp claim")?;
        if exp + skew < now_s {
            return Err("the token has expired".into());
        }
        if time("nbf").is_some_and(|nbf| nbf - skew > now_s) {
            return Err("the token is not valid yet (nbf)".into());
        }
        if time("iat").is_some_and(|iat| iat - skew > now_s) {
            return Err("the token was issued in the future (iat)".into());
        }
        if let Some(issuer) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
                return Err("the token's issuer is not sasl.oauthbearer.expected.issuer".into());
            }
        }
        if !self.audiences.is_empty() {
            let aud = match claims.get("aud") {
                Some(Value::String(a)) => vec![a.as_str()],
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !aud.iter().any(|a| self.audiences.iter().any(|e| e == a)) {
                return Err("the token is not meant for sasl.oauthbearer.expected.audience".into());
            }
        }
        let subject = claims
            .get(&self.subject_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| format!("the token has no {} claim", self.subject_claim))?;
        Ok(ValidToken {
            subject: subject.to_string(),
            expires_at_ms: (exp * 1000.0) as i64,
        })
    }

    /// The key `kid` names (the only key, for a token that names none).
    fn key(&self, kid: &str) -> Option<Key> {
        let keys = self.keys.read_locked();
        if kid.is_empty() && keys.len() == 1 {
            return keys.values().next().cloned();
        }
        keys.get(kid).cloned()
    }
}

/// Reads and parses the JWKS at `url`.
async fn fetch(url: &str) -> Result<KeySet, String> {
    let failed =
        |e: &dyn std::fmt::Display| format!("sasl.oauthbearer.jwks.endpoint.url {url}: {e}");
    let too_large = || failed(&"larger than 1 MiB");
    // Read at most one byte past the bound, so a huge document is never held in memory.
    let body = if let Some(path) = url.strip_prefix("file://") {
        use tokio::io::AsyncReadExt;
        let file = tokio::fs::File::open(path).await.map_err(|e| failed(&e))?;
        let mut body = Vec::new();
        file.take(MAX_JWKS_BYTES as u64 + 1)
            .read_to_end(&mut body)
            .await
            .map_err(|e| failed(&e))?;
        body
    } else if url.starts_with("https://") || url.starts_with("http://") {
        let mut response = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| failed(&e))?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(&e))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        body
    } else {
        return Err(failed(&"only file:// and https:// are supported"));
    };
    if body.len() > MAX_JWKS_BYTES {
        return Err(too_large());
    }
    parse_jwks(&body).map_err(|e| failed(&e))
}

/// The RS256 and ES256 verification keys of a JWKS document (others are skipped).
fn parse_jwks(body: &[u8]) -> Result<KeySet, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    let field =
        |k: &Value, name: &str| -> Option<Vec<u8>> { B64URL.decode(k.get(name)?.as_str()?).ok() };
    let mut keys = KeySet::new();
    for k in entries {
        if k.get("use")
            .and_then(Value::as_str)
            .is_some_and(|u| u != "sig")
        {
            continue;
        }
        let kid = k
            .get("kid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let key = match k.get("kty").and_then(Value::as_str) {
            Some("RSA") => match (field(k, "n"), field(k, "e")) {
                (Some(n), Some(e)) => Key::Rsa { n, e },
                _ => continue,
            },
            Some("EC") if k.get("crv").and_then(Value::as_str) == Some("P-256") => {
                match (field(k, "x"), field(k, "y")) {
                    (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                        let mut point = vec![4];
                        point.extend_from_slice(&x);
                        point.extend_from_slice(&y);
                        Key::P256 { point }
                    }
                    _ => continue,
                }
            }
            _ => continue,
        };
        keys.insert(kid, key);
    }
    if keys.is_empty() {
        return Err("no RS256 or ES256 signing key".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    fn validator(keys: KeySet) -> TokenValidator {
        TokenValidator {
            jwks_url: String::new(),
            keys: RwLock::new(keys),
            issuer: Some("https://issuer.example".into()),
            audiences: vec!["kafka".into()],
            subject_claim: "sub".into(),
            skew: Duration::from_secs(30),
            refresh_every: Duration::from_secs(3600),
        }
    }

    /// An ES256 key pair and its JWKS entry.
    fn es256() -> (EcdsaKeyPair, KeySet) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let jwks = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","use":"sig","x":"{}","y":"{}"}},{{"kty":"oct","k":"c2VjcmV0"}}]}}"#,
            B64URL.encode(&point[1..33]),
            B64URL.encode(&point[33..])
        );
        (pair, parse_jwks(jwks.as_bytes()).unwrap())
    }

    fn sign(pair: &EcdsaKeyPair, header: &str, claims: &str) -> String {
        let signed = format!("{}.{}", B64URL.encode(header), B64URL.encode(claims));
        let sig = pair.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
        format!("{signed}.{}", B64URL.encode(sig.as_ref()))
    }

    #[test]
    fn es256_tokens_are_checked_as_kafkas_default_validator_checks_them() {
        let (pair, keys) = es256();
        assert_eq!(keys.len(), 1, "the symmetric key is skipped");
        let v = validator(keys);
        let now = SystemTime::now();
        let t = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let header = r#"{"alg":"ES256","kid":"k1"}"#;
        let claims = |extra: &str| {
            format!(
                r#"{{"sub":"alice","iss":"https://issuer.example","aud":["kafka","x"],"exp":{},"iat":{t}{extra}}}"#,
                t + 60
            )
        };
        let ok = v.validate(&sign(&pair, header, &claims("")), now).unwrap();
        assert_eq!(ok.subject, "alice");
        assert_eq!(ok.expires_at_ms, (t as i64 + 60) * 1000);
        // Tampering, expiry, issuer, audience, key and algorithm each refuse it.
        let mut forged = sign(&pair, header, &claims(""));
        forged.replace_range(forged.len() - 4.., "AAAA");
        assert!(v.validate(&forged, now).is_err());
        let late = now + Duration::from_secs(120);
        assert!(v
            .validate(&sign(&pair, header, &claims("")), late)
            .unwrap_err()
            .contains("expired"));
        let other_issuer = claims("").replace("issuer.example", "evil.example");
        assert!(v
            .validate(&sign(&pair, header, &other_issuer), now)
            .unwrap_err()
            .contains("issuer"));
        let other_audience = claims("").replace(r#"["kafka","x"]"#, r#""other""#);
        assert!(v
            .validate(&sign(&pair, header, &other_audience), now)
            .unwrap_err()
            .contains("audience"));
        let unknown_kid = r#"{"alg":"ES256","kid":"k2"}"#;
        assert!(v
            .validate(&sign(&pair, unknown_kid, &claims("")), now)
            .unwrap_err()
            .contains("k2"));
        let none = r#"{"alg":"none","kid":"k1"}"#;
        assert!(v.validate(&sign(&pair, none, &claims("")), now).is_err());
        let future = claims(&format!(r#","nbf":{}"#, t + 600));
        assert!(v
            .validate(&sign(&pair, header, &future), now)
            .unwrap_err()
            .contains("nbf"));
        assert!(v.validate("not.a.jwt.at.all", now).is_err());
        assert!(v.validate("", now).is_err());
    }

    #[tokio::test]
    async fn an_oversized_jwks_is_refused_without_being_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let huge = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(MAX_JWKS_BYTES));
        std::fs::write(&path, huge).unwrap();
        let url = format!("file://{}", path.display());
        assert!(fetch(&url).await.unwrap_err().contains("larger than 1 MiB"));
        // A small one is read and parsed.
        std::fs::write(&path, r#"{"keys":[]}"#).unwrap();
        assert!(fetch(&url).await.unwrap_err().contains("no RS256 or ES256"));
    }
}
