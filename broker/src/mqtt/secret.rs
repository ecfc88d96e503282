//! Password formats for MQTT authentication: the fleet-key HMAC a factory computes for
//! each vehicle, and the salted PBKDF2 hashes stored in the credentials file and config.
//!
//! Every comparison of a secret runs in constant time (`hmac::Mac::verify_slice`,
//! `subtle::ConstantTimeEq`).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Shortest fleet key accepted, in bytes (256 bits).
pub const MIN_FLEET_KEY_LEN: usize = 32;

/// PBKDF2 rounds for minted secrets. The secrets are 256 random bits, so the hash does
/// not have to slow down guessing (there is nothing to guess); it only keeps the file
/// from being a list of passwords. 1,000 rounds keep a reconnect storm of 20k vehicles
/// at a few seconds of CPU.
pub const MINTED_ROUNDS: u32 = 1_000;

/// Most PBKDF2 rounds a stored hash may ask for: bounds the CPU one CONNECT can cost.
pub const MAX_ROUNDS: u32 = 100_000;

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// The password of vehicle `vehicle_id` under `fleet_key`: lowercase hex of
/// HMAC-SHA256(fleet_key, vehicle_id), 64 characters.
pub fn vehicle_password(fleet_key: &Secret, vehicle_id: &str) -> String {
    let mut mac = keyed(fleet_key);
    mac.update(vehicle_id.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Whether `password` is `vehicle_password(fleet_key, vehicle_id)` (hex in either case).
/// Constant time in the password's content.
pub fn verify_vehicle_password(fleet_key: &Secret, vehicle_id: &str, password: &[u8]) -> bool {
    let Some(tag) = unhex(password) else {
        return false;
    };
    let mut mac = keyed(fleet_key);
    mac.update(vehicle_id.as_bytes());
    mac.verify_slice(&tag).is_ok()
}

fn keyed(key: &Secret) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    match HmacSha256::new_from_slice(key.expose()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
    }
}

/// A salted PBKDF2-HMAC-SHA256 hash in PHC string form:
/// `$pbkdf2-sha256$i=ROUNDS$SALT$HASH` (salt and hash in unpadded base64url).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash {
    rounds: u32,
    salt: Vec<u8>,
    hash: [u8; 32],
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash(pbkdf2-sha256, {} rounds)", self.rounds)
    }
}

/// Why a stored hash could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashFormatError {
    /// Not `$pbkdf2-sha256$i=N$SALT$HASH`.
    #[error("not a `$pbkdf2-sha256$i=ROUNDS$SALT$HASH` string (mint one with `fleet-broker credentials`)")]
    Shape,
    /// The round count is out of range.
    #[error("{0} rounds is out of range: use 1 to {MAX_ROUNDS}")]
    Rounds(u64),
    /// Salt or hash is not unpadded base64url of the right length.
    #[error("the salt (8 bytes or more) or the 32-byte hash is not unpadded base64url")]
    Encoding,
}

impl SecretHash {
    /// Hashes `secret` with `salt` and `rounds`.
    pub fn compute(secret: &[u8], salt: &[u8], rounds: u32) -> SecretHash {
        let mut hash = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(secret, salt, rounds.max(1), &mut hash);
        SecretHash {
            rounds: rounds.max(1),
            salt: salt.to_vec(),
            hash,
        }
    }

    /// Reads the PHC string form.
    pub fn parse(text: &str) -> Result<SecretHash, HashFormatError> {
        let mut parts = text.trim().split('$');
        let (Some(""), Some("pbkdf2-sha256"), Some(rounds), Some(salt), Some(hash), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(HashFormatError::Shape);
        };
        let rounds: u64 = rounds
            .strip_prefix("i=")
            .and_then(|n| n.parse().ok())
            .ok_or(HashFormatError::Shape)?;
        let rounds = u32::try_from(rounds)
            .ok()
            .filter(|r| (1..=MAX_ROUNDS).contains(r))
            .ok_or(HashFormatError::Rounds(rounds))?;
        let salt = URL_SAFE_NO_PAD
            .decode(salt)
            .ok()
            .filter(|s| s.len() >= 8)
            .ok_or(HashFormatError::Encoding)?;
        let hash: [u8; 32] = URL_SAFE_NO_PAD
            .decode(hash)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or(HashFormatError::Encoding)?;
        Ok(SecretHash { rounds, salt, hash })
    }

    /// Whether `secret` hashes to this. Constant time in the comparison.
    pub fn verify(&self, secret: &[u8]) -> bool {
        let mut computed = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(secret, &self.salt, self.rounds, &mut computed);
        computed.ct_eq(&self.hash).into()
    }
}

impl fmt::Display for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$pbkdf2-sha256$i={}${}${}",
            self.rounds,
            URL_SAFE_NO_PAD.encode(&self.salt),
            URL_SAFE_NO_PAD.encode(self.hash)
        )
    }
}

/// A new random secret (256 bits, unpadded base64url: 43 characters) and its hash.
pub fn mint_secret() -> Result<(String, SecretHash), getrandom::Error> {
    let mut secret = [0u8; 32];
    let mut salt = [0u8; 16];
    getrandom::fill(&mut secret)?;
    getrandom::fill(&mut salt)?;
    let secret = URL_SAFE_NO_PAD.encode(secret);
    let hash = SecretHash::compute(secret.as_bytes(), &salt, MINTED_ROUNDS);
    Ok((secret, hash))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Secret {
        Secret::new(b"0123456789abcdef0123456789abcdef".to_vec())
    }

    #[test]
    fn the_vehicle_password_is_the_hex_hmac_sha256_of_the_id_under_the_fleet_key() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let jefe = Secret::new(b"Jefe".to_vec());
        assert_eq!(
            vehicle_password(&jefe, "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_vehicle_password_verifies_for_its_own_id_only() {
        let pw = vehicle_password(&key(), "v1");
        assert!(verify_vehicle_password(&key(), "v1", pw.as_bytes()));
        assert!(verify_vehicle_password(
            &key(),
            "v1",
            pw.to_uppercase().as_bytes()
        ));
        assert!(!verify_vehicle_password(&key(), "v2", pw.as_bytes()));
        let other_key = Secret::new(b"another key of at least 32 bytes!".to_vec());
        assert!(!verify_vehicle_password(&other_key, "v1", pw.as_bytes()));
        assert!(!verify_vehicle_password(&key(), "v1", &pw.as_bytes()[..62]));
        assert!(!verify_vehicle_password(&key(), "v1", b""));
        assert!(!verify_vehicle_password(&key(), "v1", b"zz"));
        assert!(!verify_vehicle_password(&key(), "v1", b"abc"));
    }

    #[test]
    fn a_secret_hash_round_trips_through_its_string_form_and_verifies() {
        let hash = SecretHash::compute(b"s3cret", b"saltsalt", 10);
        let text = hash.to_string();
        assert!(text.starts_with("$pbkdf2-sha256$i=10$"), "{text}");
        let parsed = SecretHash::parse(&text).expect("parses");
        assert_eq!(parsed, hash);
        assert!(parsed.verify(b"s3cret"));
        assert!(!parsed.verify(b"s3cret "));
        assert!(!parsed.verify(b""));
    }

    #[test]
    fn malformed_hashes_are_refused_with_a_reason() {
        assert_eq!(SecretHash::parse("plain"), Err(HashFormatError::Shape));
        assert_eq!(
            SecretHash::parse("$argon2id$v=19$m=1$a$b"),
            Err(HashFormatError::Shape)
        );
        assert_eq!(
            SecretHash::parse("$pbkdf2-sha256$i=0$c2FsdHNhbHQ$aaaa"),
            Err(HashFormatError::Rounds(0))
        );
        assert_eq!(
            SecretHash::parse("$pbkdf2-sha256$i=100001$c2FsdHNhbHQ$aaaa"),
            Err(HashFormatError::Rounds(100_001))
        );
        assert_eq!(
            SecretHash::parse("$pbkdf2-sha256$i=10$c2FsdHNhbHQ$aaaa"),
            Err(HashFormatError::Encoding)
        );
    }

    #[test]
    fn minted_secrets_are_random_and_verify_against_their_hash() {
        let (a, hash_a) = mint_secret().expect("random");
        let (b, _) = mint_secret().expect("random");
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(hash_a.verify(a.as_bytes()));
        assert!(!hash_a.verify(b.as_bytes()));
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let shown = format!(
            "{:?} {:?}",
            key(),
            SecretHash::compute(b"x", b"saltsalt", 1)
        );
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
