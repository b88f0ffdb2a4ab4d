//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>), pure functions only.
//!
//! A secret is `whsec_<base64>`; the HMAC key is the decoded part. The signature of one message
//! is `base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}"))`, sent as `v1,<sig>`.
//! With several secrets (rotation) the `webhook-signature` header carries one `v1,<sig>` per
//! secret, separated by spaces, so receivers holding either the old or the new secret verify.

use std::fmt;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix every Standard Webhooks secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why a secret was rejected. Messages never contain the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    /// The value does not start with `whsec_`.
    #[error("secret does not start with `whsec_` (expected a Standard Webhooks secret `whsec_<base64>`)")]
    MissingPrefix,
    /// The part after `whsec_` is not valid standard base64.
    #[error("secret is not valid base64 after `whsec_`")]
    InvalidBase64,
    /// The decoded key is empty.
    #[error("secret decodes to an empty key")]
    Empty,
    /// The decoded key is shorter than the specification's minimum.
    #[error("secret decodes to {0} bytes; Standard Webhooks requires at least 24 (generate one with 24 to 64 random bytes)")]
    TooShort(usize),
}

/// The shortest key the Standard Webhooks specification allows, in decoded bytes.
pub const MIN_KEY_BYTES: usize = 24;

/// One HMAC key. `Debug` prints `***`: the key must never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// Parse a `whsec_<base64>` secret (surrounding whitespace is ignored).
    pub fn parse(secret: &str) -> Result<Self, SecretFormatError> {
        let encoded = secret
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretFormatError::MissingPrefix)?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| SecretFormatError::InvalidBase64)?;
        if key.is_empty() {
            return Err(SecretFormatError::Empty);
        }
        if key.len() < MIN_KEY_BYTES {
            return Err(SecretFormatError::TooShort(key.len()));
        }
        Ok(Self(key))
    }

    /// The bare signature (`base64(HMAC-SHA256)`, without the `v1,` prefix) of one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC accepts keys of any length, so this cannot fail; the fallback keeps clippy quiet
        // without an unwrap.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// All keys of one endpoint; signs with each of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    keys: Vec<SigningKey>,
}

impl Signer {
    /// A signer over already-parsed keys.
    pub fn new(keys: Vec<SigningKey>) -> Self {
        Self { keys }
    }

    /// Parse every secret; the error names the (0-based) position of the first bad one.
    pub fn from_secrets<S: AsRef<str>>(secrets: &[S]) -> Result<Self, (usize, SecretFormatError)> {
        secrets
            .iter()
            .enumerate()
            .map(|(i, s)| SigningKey::parse(s.as_ref()).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    /// How many keys sign each message.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key at all (the header would then be empty).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `webhook-signature` header value: `v1,<sig>` per key, space-separated.
    pub fn signature_header(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        self.keys
            .iter()
            .map(|k| format!("v1,{}", k.sign(msg_id, timestamp, body)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from the Standard Webhooks specification.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn matches_the_specification_example() {
        let signer = Signer::from_secrets(&[SPEC_SECRET]).unwrap();
        assert_eq!(
            signer.signature_header(SPEC_ID, SPEC_TS, SPEC_BODY),
            SPEC_SIG
        );
    }

    #[test]
    fn several_keys_give_space_separated_signatures() {
        let other = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=";
        let signer = Signer::from_secrets(&[SPEC_SECRET, other]).unwrap();
        let header = signer.signature_header(SPEC_ID, SPEC_TS, SPEC_BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], SPEC_SIG);
        assert!(parts[1].starts_with("v1,"));
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn malformed_secrets_are_rejected_without_echoing_them() {
        for (bad, want) in [
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                SecretFormatError::MissingPrefix,
            ),
            ("whsec_not*base64!!", SecretFormatError::InvalidBase64),
            ("whsec_", SecretFormatError::Empty),
            // base64("only-23-bytes-of-secret"): one byte short of the specification's minimum.
            (
                "whsec_b25seS0yMy1ieXRlcy1vZi1zZWNyZXQ=",
                SecretFormatError::TooShort(23),
            ),
        ] {
            let err = SigningKey::parse(bad).unwrap_err();
            assert_eq!(err, want);
            let msg = err.to_string();
            assert!(!msg.contains(bad.trim_start_matches("whsec_")) || bad == "whsec_");
        }
        let (pos, _) = Signer::from_secrets(&[SPEC_SECRET, "oops"]).unwrap_err();
        assert_eq!(pos, 1);
        // Exactly 24 bytes (the specification's own example key) is accepted.
        assert!(SigningKey::parse(SPEC_SECRET).is_ok());
    }

    #[test]
    fn keys_are_redacted_in_debug() {
        let signer = Signer::from_secrets(&[SPEC_SECRET]).unwrap();
        let dbg = format!("{signer:?}");
        assert!(dbg.contains("***"));
        assert!(!dbg.contains("MfKQ"));
        assert!(!dbg.contains("49")); // first decoded byte 0x31 = 49 would show in a Vec<u8> Debug
    }
}
