//! The credentials file and stored password hashes: arbitrary text never panics.
#![no_main]

use fleet_broker::mqtt::auth::parse_credentials;
use fleet_broker::mqtt::secret::SecretHash;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_credentials(&text);
    if let Ok(hash) = SecretHash::parse(&text) {
        // Bounded rounds: a hostile file cannot make a CONNECT cost more than MAX_ROUNDS.
        let _ = hash.verify(b"x");
        assert_eq!(SecretHash::parse(&hash.to_string()), Ok(hash));
    }
});
