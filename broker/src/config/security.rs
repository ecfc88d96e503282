//! `[auth]`, `[tls]` and `[limits]`: who may connect to MQTT, over what, and how fast.
//! Turned into the MQTT front's settings by `Config::settings`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::mqtt::acl::{Role, Who};
use crate::mqtt::auth::{AuthMode, AuthOptions, ObserverUser};
use crate::mqtt::limits::Limits;
use crate::mqtt::secret::{Secret, SecretHash, MIN_FLEET_KEY_LEN};
use crate::mqtt::TlsOptions;

use super::validate::Checker;

/// Environment variable that supplies `auth.fleet_key` (preferred over the file).
pub const FLEET_KEY_ENV: &str = "FLEET_KEY";

/// `auth.mode`
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthModeSection {
    /// Anyone may connect (logs a loud warning).
    #[default]
    None,
    /// Vehicle password = hex HMAC-SHA256(fleet_key, vehicle id).
    Hmac,
    /// Vehicle password checked against `credentials_file`.
    File,
}

/// `[auth]`
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// `"none"`, `"hmac"` or `"file"`.
    pub mode: AuthModeSection,
    /// The fleet key for `"hmac"` (env `FLEET_KEY` takes precedence, see
    /// `Config::apply_env`), at least 32 bytes.
    pub fleet_key: Option<String>,
    /// `VEHICLE_ID:$pbkdf2-sha256$...` lines for `"file"`.
    pub credentials_file: Option<PathBuf>,
    /// Backend and ops users (`[[auth.users]]`).
    pub users: Vec<UserSection>,
}

impl std::fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSection")
            .field("mode", &self.mode)
            .field("fleet_key", &self.fleet_key.as_ref().map(|_| "<redacted>"))
            .field("credentials_file", &self.credentials_file)
            .field("users", &self.users)
            .finish()
    }
}

/// `[[auth.users]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSection {
    /// MQTT username; the client id must be the name or `NAME:anything`.
    pub name: String,
    /// `$pbkdf2-sha256$...` (mint with `fleet-broker credentials --observer NAME`).
    pub password_hash: String,
    /// `observer` (reads the fleet topics and every service state), or a name that
    /// `[[acl]]` entries give more to (`who = "NAME"`).
    #[serde(default = "observer")]
    pub role: String,
}

fn observer() -> String {
    "observer".to_owned()
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// TLS listen address.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA that signs vehicle client certificates.
    pub client_ca: Option<PathBuf>,
    /// Every TLS client must present a certificate signed by `client_ca`.
    pub require_client_cert: bool,
    /// Keep serving plain TCP on `mqtt.listen` too.
    pub plain_tcp: bool,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            listen: SocketAddr::from(([0, 0, 0, 0], 8883)),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            client_ca: None,
            require_client_cert: false,
            plain_tcp: true,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Publishes per second one client may send on average.
    pub publish_rate: f64,
    /// Publishes one client may send at once.
    pub publish_burst: u32,
    /// Drops in a row (without a pause that refills the bucket) before a client is
    /// disconnected; 0 never disconnects.
    pub disconnect_after: u32,
    /// CONNECTs per second the broker accepts on average.
    pub connect_rate: f64,
    /// CONNECTs accepted at once.
    pub connect_burst: u32,
    /// Time a new connection has to finish TLS and send CONNECT.
    pub handshake_timeout: super::HumanDuration,
    /// Publishes per second one `[[auth.users]]` user (a backend) may send on average.
    pub user_publish_rate: f64,
    /// Publishes one user may send at once.
    pub user_publish_burst: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let l = Limits::default();
        LimitsSection {
            publish_rate: l.publish_rate,
            publish_burst: l.publish_burst,
            disconnect_after: l.disconnect_after,
            connect_rate: l.connect_rate,
            connect_burst: l.connect_burst,
            handshake_timeout: super::HumanDuration::from_secs(10),
            user_publish_rate: l.user_publish_rate,
            user_publish_burst: l.user_publish_burst,
        }
    }
}

impl TlsSection {
    /// The MQTT front's TLS settings.
    pub fn options(&self) -> TlsOptions {
        TlsOptions {
            listen: self.listen,
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: self.client_ca.clone(),
            require_client_cert: self.require_client_cert,
            plain_tcp: self.plain_tcp,
        }
    }
}

impl LimitsSection {
    /// The MQTT front's rate limits.
    pub fn options(&self) -> Limits {
        Limits {
            publish_rate: self.publish_rate,
            publish_burst: self.publish_burst,
            disconnect_after: self.disconnect_after,
            connect_rate: self.connect_rate,
            connect_burst: self.connect_burst,
            user_publish_rate: self.user_publish_rate,
            user_publish_burst: self.user_publish_burst,
        }
    }
}

/// `[auth]` checked and turned into the MQTT front's authentication settings (`None` when
/// a problem was recorded); `roles` numbers the users' roles.
pub(super) fn auth(
    auth: &AuthSection,
    roles: &super::topics::Roles,
    named: &[Who],
    k: &mut Checker,
) -> Option<AuthOptions> {
    let mode = match auth.mode {
        AuthModeSection::None => Some(AuthMode::None),
        AuthModeSection::Hmac => match &auth.fleet_key {
            None => {
                k.check(
                    false,
                    "auth.fleet_key",
                    "auth.mode = \"hmac\" needs a fleet key: set auth.fleet_key or env FLEET_KEY",
                );
                None
            }
            Some(key) if key.len() < MIN_FLEET_KEY_LEN => {
                k.check(
                    false,
                    "auth.fleet_key",
                    format!(
                        "is {} bytes: use at least {MIN_FLEET_KEY_LEN} random bytes, e.g. `openssl rand -hex 32`",
                        key.len()
                    ),
                );
                None
            }
            Some(key) => Some(AuthMode::Hmac {
                fleet_key: Secret::new(key.clone().into_bytes()),
            }),
        },
        AuthModeSection::File => match &auth.credentials_file {
            Some(file) => Some(AuthMode::File {
                credentials_file: file.clone(),
            }),
            None => {
                k.check(
                    false,
                    "auth.credentials_file",
                    "auth.mode = \"file\" needs a credentials file (lines from `fleet-broker credentials`)",
                );
                None
            }
        },
    };
    let mut users = Vec::with_capacity(auth.users.len());
    let mut names = std::collections::BTreeSet::new();
    for (i, user) in auth.users.iter().enumerate() {
        let key = format!("auth.users[{i}]");
        k.check(
            !user.name.is_empty() && !user.name.contains([':', '/', '+', '#']),
            format!("{key}.name"),
            format!(
                "{:?} is not a user name: non-empty, without : / + #",
                user.name
            ),
        );
        k.check(
            names.insert(user.name.as_str()),
            format!("{key}.name"),
            format!("{:?} is listed twice", user.name),
        );
        super::topics::check_role(&user.role, format!("{key}.role"), k);
        let role = roles.role(&user.role);
        if let Some(Role::User(id)) = role {
            k.check(
                named.contains(&Who::Role(id)),
                format!("{key}.role"),
                format!(
                    "{:?} is named by no [[acl]] entry's `who`: use \"observer\", or add entries for it",
                    user.role
                ),
            );
        }
        match (SecretHash::parse(&user.password_hash), role) {
            (Ok(password), Some(role)) => users.push(ObserverUser {
                name: user.name.clone(),
                password,
                role,
            }),
            (Err(e), _) => k.check(false, format!("{key}.password_hash"), e.to_string()),
            (Ok(_), None) => {}
        }
    }
    let users = (users.len() == auth.users.len()).then_some(users)?;
    Some(AuthOptions { mode: mode?, users })
}

/// Checks `[tls]` and `[limits]`.
pub(super) fn tls_and_limits(tls: Option<&TlsSection>, limits: &LimitsSection, k: &mut Checker) {
    if let Some(tls) = tls {
        k.check(
            !tls.cert.as_os_str().is_empty(),
            "tls.cert",
            "a PEM certificate chain file is needed for the TLS listener",
        );
        k.check(
            !tls.key.as_os_str().is_empty(),
            "tls.key",
            "a PEM private key file is needed for the TLS listener",
        );
        if tls.require_client_cert {
            k.check(
                tls.client_ca.is_some(),
                "tls.client_ca",
                "require_client_cert = true needs the CA that signs vehicle certificates",
            );
        } else {
            k.check(
                tls.client_ca.is_none(),
                "tls.client_ca",
                "client certificates are verified only with require_client_cert = true (rmqtt 0.24 cannot make them optional)",
            );
        }
    }

    let rate = |r: f64| r.is_finite() && r > 0.0;
    k.check(
        rate(limits.publish_rate),
        "limits.publish_rate",
        format!(
            "{} is not a rate: use messages per second above 0, e.g. 10",
            limits.publish_rate
        ),
    );
    k.check(
        limits.publish_burst >= 1,
        "limits.publish_burst",
        "must be at least 1",
    );
    k.check(
        rate(limits.user_publish_rate),
        "limits.user_publish_rate",
        format!(
            "{} is not a rate: use messages per second above 0, e.g. 2000",
            limits.user_publish_rate
        ),
    );
    k.check(
        limits.user_publish_burst >= 1,
        "limits.user_publish_burst",
        "must be at least 1",
    );
    k.check(
        rate(limits.connect_rate),
        "limits.connect_rate",
        format!(
            "{} is not a rate: use CONNECTs per second above 0, e.g. 1000",
            limits.connect_rate
        ),
    );
    k.check(
        limits.connect_burst >= 1,
        "limits.connect_burst",
        "must be at least 1",
    );
    k.positive(limits.handshake_timeout.0, "limits.handshake_timeout");
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn problems(toml: &str) -> Vec<String> {
        let config = Config::parse(toml).expect("test toml parses");
        match config.validate() {
            Ok(()) => Vec::new(),
            Err(e) => e.0.into_iter().map(|p| p.key).collect(),
        }
    }

    const HASH: &str =
        "$pbkdf2-sha256$i=10$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn auth_is_off_tls_absent_and_limits_generous_by_default() {
        let c = Config::parse("").expect("parses");
        assert_eq!(c.auth.mode, super::AuthModeSection::None);
        assert!(c.tls.is_none());
        assert_eq!(c.limits.options(), crate::mqtt::limits::Limits::default());
    }

    #[test]
    fn a_full_security_config_is_valid() {
        let text = format!(
            r#"
[auth]
mode = "hmac"
fleet_key = "0123456789abcdef0123456789abcdef"
[[auth.users]]
name = "ops"
password_hash = "{HASH}"
role = "observer"
[tls]
listen = "0.0.0.0:8883"
cert = "server.pem"
key = "server.key"
client_ca = "vehicles-ca.pem"
require_client_cert = true
plain_tcp = false
[limits]
publish_rate = 2.5
publish_burst = 10
disconnect_after = 0
connect_rate = 500
connect_burst = 5000
handshake_timeout = "5s"
"#
        );
        assert_eq!(problems(&text), Vec::<String>::new());
        let c = Config::parse(&text).expect("parses");
        let auth = c.settings().expect("valid").mqtt.auth;
        assert_eq!(auth.users.len(), 1);
        let debug = format!("{:?}", c.auth);
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
    }

    #[test]
    fn every_security_problem_is_listed_with_its_key_path() {
        let keys = problems(
            r#"
[auth]
mode = "hmac"
fleet_key = "short"
[[auth.users]]
name = "a:b"
password_hash = "plain"
role = "observer"
[tls]
require_client_cert = true
[limits]
publish_rate = 0
connect_burst = 0
handshake_timeout = "0s"
"#,
        );
        assert_eq!(
            keys,
            vec![
                "auth.fleet_key",
                "auth.users[0].name",
                "auth.users[0].password_hash",
                "tls.cert",
                "tls.key",
                "tls.client_ca",
                "limits.publish_rate",
                "limits.connect_burst",
                "limits.handshake_timeout",
            ]
        );
    }

    #[test]
    fn file_mode_needs_a_credentials_file_and_unknown_keys_or_roles_are_refused() {
        assert_eq!(
            problems("[auth]\nmode = \"file\"\n"),
            vec!["auth.credentials_file"]
        );
        let err = Config::parse("[auth]\nmod = \"hmac\"\n")
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("mod"), "{err}");
        // A role no [[acl]] entry names is a typo until proven otherwise.
        let text =
            format!("[[auth.users]]\nname = \"x\"\npassword_hash = \"{HASH}\"\nrole = \"admin\"\n");
        assert_eq!(problems(&text), vec!["auth.users[0].role"]);
        let err = Config::parse(&text)
            .expect("parses")
            .validate()
            .expect_err("unknown role")
            .to_string();
        assert!(err.contains("admin"), "{err}");
        let named = format!("{text}[[acl]]\ntopic = \"a/b\"\naccess = \"read\"\nwho = \"admin\"\n");
        assert_eq!(problems(&named), Vec::<String>::new());
    }
}
