//! Who may connect, and as what ("Identity and access" in DESIGN.md).
//!
//! A vehicle connects with username = client id = its vehicle id, proven by a password
//! (the fleet-key HMAC of its id, or a credentials-file entry) or by a verified TLS client
//! certificate whose common name is its id. Backend and ops clients connect as configured
//! observer users. `Authenticator::authenticate` decides at CONNECT; `role_of` tells the
//! ACL afterwards, from the session's username, which rules apply.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use super::acl::Role;
use super::secret::{verify_vehicle_password, Secret, SecretHash};
use crate::contract::is_vehicle_id;

/// How vehicles prove who they are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Anyone may connect (the out-of-the-box default; logs a loud warning).
    #[default]
    None,
    /// Password = hex HMAC-SHA256(fleet_key, vehicle id).
    Hmac {
        /// The fleet key (at least 32 bytes).
        fleet_key: Secret,
    },
    /// Password checked against a hashed entry of a credentials file.
    File {
        /// `VEHICLE_ID:$pbkdf2-sha256$...` lines.
        credentials_file: PathBuf,
    },
}

/// A backend or ops user: it reads what observers read, and what `[[acl]]` entries for
/// its role allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserverUser {
    /// The MQTT username. Its client id must be the name or start with `NAME:`.
    pub name: String,
    /// The password's hash.
    pub password: SecretHash,
    /// `Role::Observer`, or `Role::User` for a named role of `[[acl]]` entries.
    pub role: Role,
}

/// Authentication settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthOptions {
    /// How vehicles authenticate.
    pub mode: AuthMode,
    /// Observer users (ignored with `AuthMode::None`).
    pub users: Vec<ObserverUser>,
}

/// What a CONNECT claims.
#[derive(Debug, Clone, Copy)]
pub struct ConnectClaim<'a> {
    /// MQTT client id.
    pub client_id: &'a str,
    /// MQTT username.
    pub username: Option<&'a str>,
    /// MQTT password.
    pub password: Option<&'a [u8]>,
    /// Common name of the client certificate rustls verified against `tls.client_ca`.
    pub cert_common_name: Option<&'a str>,
}

/// Why a CONNECT was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthRefused {
    /// No username (and no client certificate).
    NoUsername,
    /// The username is not the client id.
    UsernameNotClientId,
    /// The client id is not a vehicle id (and the username is no observer user).
    NotAVehicleId,
    /// No password given.
    NoPassword,
    /// Wrong password, or a vehicle the credentials file does not list.
    BadPassword,
    /// The client certificate's common name is not the client id.
    CertMismatch,
    /// An observer user's client id is neither its name nor `NAME:...`.
    ObserverClientId,
}

impl AuthRefused {
    /// Every reason, in a fixed order (for counters and metrics labels).
    pub const ALL: [AuthRefused; 7] = [
        AuthRefused::NoUsername,
        AuthRefused::UsernameNotClientId,
        AuthRefused::NotAVehicleId,
        AuthRefused::NoPassword,
        AuthRefused::BadPassword,
        AuthRefused::CertMismatch,
        AuthRefused::ObserverClientId,
    ];

    /// A short snake_case name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthRefused::NoUsername => "no_username",
            AuthRefused::UsernameNotClientId => "username_not_client_id",
            AuthRefused::NotAVehicleId => "not_a_vehicle_id",
            AuthRefused::NoPassword => "no_password",
            AuthRefused::BadPassword => "bad_password",
            AuthRefused::CertMismatch => "cert_mismatch",
            AuthRefused::ObserverClientId => "observer_client_id",
        }
    }

    /// Whether the CONNACK should say "bad username or password" (else "not authorized").
    pub fn is_bad_credentials(self) -> bool {
        matches!(
            self,
            AuthRefused::NoUsername | AuthRefused::NoPassword | AuthRefused::BadPassword
        )
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for AuthRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthLoadError {
    /// The credentials file could not be read.
    #[error("cannot read credentials file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Lines of the credentials file are wrong.
    #[error("credentials file {path}: {}", problems.join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// `line N: what is wrong`, for every bad line.
        problems: Vec<String>,
    },
}

enum Vehicles {
    Anyone,
    Hmac(Secret),
    Listed(HashMap<String, SecretHash>),
}

/// Decides CONNECTs and tells the ACL each session's role.
pub struct Authenticator {
    vehicles: Vehicles,
    users: HashMap<String, (SecretHash, Role)>,
    accept_client_certs: bool,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.vehicles {
            Vehicles::Anyone => "none".to_owned(),
            Vehicles::Hmac(_) => "hmac".to_owned(),
            Vehicles::Listed(v) => format!("file ({} vehicles)", v.len()),
        };
        f.debug_struct("Authenticator")
            .field("mode", &mode)
            .field("users", &self.users.len())
            .field("accept_client_certs", &self.accept_client_certs)
            .finish()
    }
}

impl Authenticator {
    /// Builds the authenticator; reads the credentials file in `AuthMode::File`. With
    /// `accept_client_certs` (the TLS listener requires client certificates verified
    /// against `tls.client_ca`), a certificate whose common name is the client id
    /// authenticates a vehicle without a password.
    pub fn load(
        opts: &AuthOptions,
        accept_client_certs: bool,
    ) -> Result<Authenticator, AuthLoadError> {
        let vehicles = match &opts.mode {
            AuthMode::None => Vehicles::Anyone,
            AuthMode::Hmac { fleet_key } => Vehicles::Hmac(fleet_key.clone()),
            AuthMode::File { credentials_file } => {
                let text = std::fs::read_to_string(credentials_file).map_err(|source| {
                    AuthLoadError::Read {
                        path: credentials_file.clone(),
                        source,
                    }
                })?;
                Vehicles::Listed(parse_credentials(&text).map_err(|problems| {
                    AuthLoadError::Invalid {
                        path: credentials_file.clone(),
                        problems,
                    }
                })?)
            }
        };
        Ok(Authenticator {
            vehicles,
            users: opts
                .users
                .iter()
                .map(|u| (u.name.clone(), (u.password.clone(), u.role)))
                .collect(),
            accept_client_certs,
        })
    }

    /// Whether anyone may connect (`auth.mode = "none"`).
    pub fn is_open(&self) -> bool {
        matches!(self.vehicles, Vehicles::Anyone)
    }

    /// Decides a CONNECT. Costs one HMAC or one PBKDF2 hash at most.
    pub fn authenticate(&self, claim: &ConnectClaim<'_>) -> Result<Role, AuthRefused> {
        if self.is_open() {
            return Ok(Role::Anonymous);
        }
        if let Some((hash, role)) = claim.username.and_then(|u| self.users.get(u)) {
            let name = claim.username.unwrap_or_default();
            let password = claim.password.ok_or(AuthRefused::NoPassword)?;
            if !hash.verify(password) {
                return Err(AuthRefused::BadPassword);
            }
            // `NAME:...` can never be a vehicle id, so an observer cannot take over a
            // vehicle's session by choosing its client id.
            let own_id = claim.client_id == name
                || claim
                    .client_id
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(':'));
            return if own_id {
                Ok(*role)
            } else {
                Err(AuthRefused::ObserverClientId)
            };
        }
        if !is_vehicle_id(claim.client_id) {
            return Err(AuthRefused::NotAVehicleId);
        }
        if claim
            .username
            .is_some_and(|username| username != claim.client_id)
        {
            return Err(AuthRefused::UsernameNotClientId);
        }
        if self.accept_client_certs {
            if let Some(cn) = claim.cert_common_name {
                return if cn == claim.client_id {
                    Ok(Role::Vehicle)
                } else {
                    Err(AuthRefused::CertMismatch)
                };
            }
        }
        if claim.username.is_none() {
            return Err(AuthRefused::NoUsername);
        }
        let password = claim.password.ok_or(AuthRefused::NoPassword)?;
        let ok = match &self.vehicles {
            Vehicles::Anyone => true,
            Vehicles::Hmac(key) => verify_vehicle_password(key, claim.client_id, password),
            Vehicles::Listed(entries) => entries
                .get(claim.client_id)
                .is_some_and(|hash| hash.verify(password)),
        };
        if ok {
            Ok(Role::Vehicle)
        } else {
            Err(AuthRefused::BadPassword)
        }
    }

    /// The role of a session that `authenticate` admitted, from its username.
    pub fn role_of(&self, username: Option<&str>) -> Role {
        if self.is_open() {
            Role::Anonymous
        } else {
            username
                .and_then(|u| self.users.get(u))
                .map_or(Role::Vehicle, |(_, role)| *role)
        }
    }
}

/// Reads `VEHICLE_ID:HASH` lines; `#` starts a comment line. Lists every bad line.
pub fn parse_credentials(text: &str) -> Result<HashMap<String, SecretHash>, Vec<String>> {
    let mut entries = HashMap::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = n + 1;
        let Some((id, hash)) = line.split_once(':') else {
            problems.push(format!("line {n}: expected VEHICLE_ID:$pbkdf2-sha256$..."));
            continue;
        };
        if !is_vehicle_id(id) {
            problems.push(format!(
                "line {n}: {id:?} is not a vehicle id (1 to 64 of A-Z a-z 0-9 _ -)"
            ));
            continue;
        }
        match SecretHash::parse(hash) {
            Ok(hash) => {
                if entries.insert(id.to_owned(), hash).is_some() {
                    problems.push(format!("line {n}: vehicle {id} is listed twice"));
                }
            }
            Err(e) => problems.push(format!("line {n}: vehicle {id}: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(entries)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::secret::vehicle_password;

    fn key() -> Secret {
        Secret::new(b"test fleet key, 32 bytes or more!".to_vec())
    }

    fn user(name: &str, password: &str) -> ObserverUser {
        ObserverUser {
            name: name.to_owned(),
            password: SecretHash::compute(password.as_bytes(), b"saltsalt", 10),
            role: Role::Observer,
        }
    }

    fn hmac_auth() -> Authenticator {
        Authenticator::load(
            &AuthOptions {
                mode: AuthMode::Hmac { fleet_key: key() },
                users: vec![user("ops", "ops-password")],
            },
            true,
        )
        .expect("loads")
    }

    fn claim<'a>(
        client_id: &'a str,
        username: Option<&'a str>,
        password: Option<&'a [u8]>,
    ) -> ConnectClaim<'a> {
        ConnectClaim {
            client_id,
            username,
            password,
            cert_common_name: None,
        }
    }

    #[test]
    fn with_auth_off_everyone_is_admitted_anonymously() {
        let auth = Authenticator::load(&AuthOptions::default(), false).expect("loads");
        assert_eq!(
            auth.authenticate(&claim("anything at all", None, None)),
            Ok(Role::Anonymous)
        );
        assert_eq!(auth.role_of(Some("ops")), Role::Anonymous);
    }

    #[test]
    fn a_vehicle_with_its_hmac_password_is_admitted_as_a_vehicle() {
        let auth = hmac_auth();
        let pw = vehicle_password(&key(), "v1");
        assert_eq!(
            auth.authenticate(&claim("v1", Some("v1"), Some(pw.as_bytes()))),
            Ok(Role::Vehicle)
        );
        assert_eq!(auth.role_of(Some("v1")), Role::Vehicle);
    }

    #[test]
    fn a_vehicle_cannot_connect_as_another_vehicle_with_its_own_password() {
        let auth = hmac_auth();
        let pw = vehicle_password(&key(), "v1");
        assert_eq!(
            auth.authenticate(&claim("v2", Some("v2"), Some(pw.as_bytes()))),
            Err(AuthRefused::BadPassword)
        );
        assert_eq!(
            auth.authenticate(&claim("v2", Some("v1"), Some(pw.as_bytes()))),
            Err(AuthRefused::UsernameNotClientId)
        );
        assert_eq!(
            auth.authenticate(&claim("v1", Some("v2"), Some(pw.as_bytes()))),
            Err(AuthRefused::UsernameNotClientId)
        );
    }

    #[test]
    fn missing_username_or_password_is_refused() {
        let auth = hmac_auth();
        assert_eq!(
            auth.authenticate(&claim("v1", None, None)),
            Err(AuthRefused::NoUsername)
        );
        assert_eq!(
            auth.authenticate(&claim("v1", Some("v1"), None)),
            Err(AuthRefused::NoPassword)
        );
        assert_eq!(
            auth.authenticate(&claim("v1", Some("v1"), Some(b""))),
            Err(AuthRefused::BadPassword)
        );
        assert_eq!(
            auth.authenticate(&claim("a b", Some("a b"), Some(b"x"))),
            Err(AuthRefused::NotAVehicleId)
        );
    }

    #[test]
    fn an_observer_user_is_admitted_with_its_password_and_an_id_of_its_own() {
        let auth = hmac_auth();
        for id in ["ops", "ops:dashboard-1"] {
            assert_eq!(
                auth.authenticate(&claim(id, Some("ops"), Some(b"ops-password"))),
                Ok(Role::Observer),
                "{id}"
            );
        }
        assert_eq!(auth.role_of(Some("ops")), Role::Observer);
        assert_eq!(
            auth.authenticate(&claim("ops", Some("ops"), Some(b"wrong"))),
            Err(AuthRefused::BadPassword)
        );
    }

    #[test]
    fn an_observer_user_cannot_take_a_vehicles_client_id() {
        let auth = hmac_auth();
        for id in ["v1", "ops-v1", "opsx", "x:ops"] {
            assert_eq!(
                auth.authenticate(&claim(id, Some("ops"), Some(b"ops-password"))),
                Err(AuthRefused::ObserverClientId),
                "{id}"
            );
        }
    }

    #[test]
    fn a_verified_client_certificate_naming_the_vehicle_replaces_the_password() {
        let auth = hmac_auth();
        let with_cert = |client_id, username, cn| ConnectClaim {
            client_id,
            username,
            password: None,
            cert_common_name: Some(cn),
        };
        assert_eq!(
            auth.authenticate(&with_cert("v1", None, "v1")),
            Ok(Role::Vehicle)
        );
        assert_eq!(
            auth.authenticate(&with_cert("v1", Some("v1"), "v1")),
            Ok(Role::Vehicle)
        );
        assert_eq!(
            auth.authenticate(&with_cert("v2", None, "v1")),
            Err(AuthRefused::CertMismatch)
        );
        assert_eq!(
            auth.authenticate(&with_cert("v2", Some("v2"), "v1")),
            Err(AuthRefused::CertMismatch)
        );
        // Without `accept_client_certs` a certificate proves nothing.
        let strict = Authenticator::load(
            &AuthOptions {
                mode: AuthMode::Hmac { fleet_key: key() },
                users: Vec::new(),
            },
            false,
        )
        .expect("loads");
        assert_eq!(
            strict.authenticate(&with_cert("v1", None, "v1")),
            Err(AuthRefused::NoUsername)
        );
    }

    #[test]
    fn the_credentials_file_admits_listed_vehicles_with_their_secret_only() {
        let v1 = SecretHash::compute(b"v1-secret", b"saltsalt", 10);
        let v2 = SecretHash::compute(b"v2-secret", b"saltsalt", 10);
        let text = format!("# fleet A\n\nv1:{v1}\n  v2:{v2}  \n");
        let entries = parse_credentials(&text).expect("parses");
        let auth = Authenticator {
            vehicles: Vehicles::Listed(entries),
            users: HashMap::new(),
            accept_client_certs: false,
        };
        assert_eq!(
            auth.authenticate(&claim("v1", Some("v1"), Some(b"v1-secret"))),
            Ok(Role::Vehicle)
        );
        assert_eq!(
            auth.authenticate(&claim("v2", Some("v2"), Some(b"v1-secret"))),
            Err(AuthRefused::BadPassword)
        );
        assert_eq!(
            auth.authenticate(&claim("v3", Some("v3"), Some(b"v1-secret"))),
            Err(AuthRefused::BadPassword),
            "an unlisted vehicle looks like a wrong password"
        );
    }

    #[test]
    fn every_bad_credentials_line_is_reported_with_its_number() {
        let good = SecretHash::compute(b"x", b"saltsalt", 1);
        let text = format!("v1:{good}\nno colon here\nbad id:{good}\nv2:plain\nv1:{good}\n");
        let problems = parse_credentials(&text).expect_err("bad lines");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("line 2:"), "{problems:?}");
        assert!(problems[1].starts_with("line 3:"), "{problems:?}");
        assert!(problems[2].starts_with("line 4:"), "{problems:?}");
        assert!(problems[3].contains("twice"), "{problems:?}");
    }
}
