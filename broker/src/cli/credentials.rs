//! `fleet-broker credentials`: mint what a vehicle (or an observer user) needs to
//! connect, for the configured `auth.mode`. The output holds a secret: it goes to stdout
//! for the operator, never to the log.

use crate::config::{AuthModeSection, Config};
use crate::contract::is_vehicle_id;
use crate::mqtt::secret::{mint_secret, vehicle_password, Secret};

/// Why no credentials could be minted.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The id is not a vehicle id.
    #[error("{0:?} is not a vehicle id: use 1 to 64 of A-Z a-z 0-9 _ -")]
    NotAVehicleId(String),
    /// The user name is not allowed.
    #[error("{0:?} is not a user name: non-empty, without : / + #")]
    BadUserName(String),
    /// Vehicles need no credentials with `auth.mode = "none"`.
    #[error("auth.mode is \"none\": vehicles connect without credentials; set [auth] mode = \"hmac\" or \"file\" in the config given with --config")]
    AuthOff,
    /// `auth.mode = "hmac"` without a key.
    #[error("auth.mode is \"hmac\" but no fleet key is set: set auth.fleet_key or env FLEET_KEY")]
    NoFleetKey,
    /// The system's random source failed.
    #[error("cannot read random bytes: {0}")]
    Random(String),
}

/// The text to print for vehicle `id` (or observer user `id` when `observer`).
pub fn mint(config: &Config, id: &str, observer: bool) -> Result<String, CredentialsError> {
    if observer {
        if id.is_empty() || id.contains([':', '/', '+', '#']) {
            return Err(CredentialsError::BadUserName(id.to_owned()));
        }
        let (secret, hash) = mint_secret().map_err(|e| CredentialsError::Random(e.to_string()))?;
        return Ok(format!(
            "# Give the user (MQTT username, password; client id \"{id}\" or \"{id}:anything\"):\n\
             username: {id}\npassword: {secret}\n\
             # Add to the broker's config:\n\
             [[auth.users]]\nname = \"{id}\"\npassword_hash = \"{hash}\"\nrole = \"observer\"\n"
        ));
    }
    if !is_vehicle_id(id) {
        return Err(CredentialsError::NotAVehicleId(id.to_owned()));
    }
    match config.auth.mode {
        AuthModeSection::None => Err(CredentialsError::AuthOff),
        AuthModeSection::Hmac => {
            let key = config
                .auth
                .fleet_key
                .as_ref()
                .map(|k| Secret::new(k.clone().into_bytes()))
                .ok_or(CredentialsError::NoFleetKey)?;
            Ok(format!(
                "# Provision on the vehicle (MQTT client id and username = the vehicle id):\n\
                 username: {id}\npassword: {}\n",
                vehicle_password(&key, id)
            ))
        }
        AuthModeSection::File => {
            let (secret, hash) =
                mint_secret().map_err(|e| CredentialsError::Random(e.to_string()))?;
            Ok(format!(
                "# Provision on the vehicle (MQTT client id and username = the vehicle id):\n\
                 username: {id}\npassword: {secret}\n\
                 # Append to the credentials file (auth.credentials_file), then restart:\n\
                 {id}:{hash}\n"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::auth::parse_credentials;
    use crate::mqtt::secret::{verify_vehicle_password, SecretHash};

    fn config(toml: &str) -> Config {
        Config::parse(toml).expect("parses")
    }

    fn value<'a>(text: &'a str, key: &str) -> &'a str {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .expect("key present")
            .trim()
    }

    #[test]
    fn hmac_credentials_are_the_vehicles_hmac_password() {
        let c =
            config("[auth]\nmode = \"hmac\"\nfleet_key = \"0123456789abcdef0123456789abcdef\"\n");
        let text = mint(&c, "SC-1", false).expect("minted");
        let key = Secret::new(c.auth.fleet_key.clone().expect("key").into_bytes());
        assert!(verify_vehicle_password(
            &key,
            "SC-1",
            value(&text, "password:").as_bytes()
        ));
    }

    #[test]
    fn file_credentials_print_a_secret_and_a_line_that_verifies_it() {
        let c = config("[auth]\nmode = \"file\"\ncredentials_file = \"x\"\n");
        let text = mint(&c, "SC-1", false).expect("minted");
        let line = text.lines().last().expect("line");
        let entries = parse_credentials(line).expect("a valid line");
        assert!(entries["SC-1"].verify(value(&text, "password:").as_bytes()));
    }

    #[test]
    fn observer_credentials_print_a_users_entry_that_verifies_the_password() {
        let text = mint(&Config::default(), "ops", true).expect("minted");
        let hash = value(&text, "password_hash =").trim_matches('"');
        let hash = SecretHash::parse(hash).expect("hash");
        assert!(hash.verify(value(&text, "password:").as_bytes()));
        let toml = &text[text.find("[[auth.users]]").expect("entry")..];
        let c = config(&format!(
            "[auth]\nmode = \"hmac\"\nfleet_key = \"0123456789abcdef0123456789abcdef\"\n{toml}"
        ));
        c.validate().expect("the printed entry is a valid config");
    }

    #[test]
    fn bad_ids_and_auth_off_are_refused_with_what_to_do() {
        let c = config("[auth]\nmode = \"file\"\ncredentials_file = \"x\"\n");
        assert!(matches!(
            mint(&c, "a/b", false),
            Err(CredentialsError::NotAVehicleId(_))
        ));
        assert!(matches!(
            mint(&c, "a:b", true),
            Err(CredentialsError::BadUserName(_))
        ));
        assert!(matches!(
            mint(&Config::default(), "v1", false),
            Err(CredentialsError::AuthOff)
        ));
    }
}
