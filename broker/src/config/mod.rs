//! The broker's configuration: TOML with embedded defaults, human durations, and
//! validation that lists every problem with its key path.

mod attach;
mod duration;
mod env;
mod ha;
mod journeys;
mod security;
mod settings;
mod slack;
mod topics;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use attach::{AttachSection, MqttMode, OneOrMore, ProtocolValue, UPSTREAM_PASSWORD_ENV};
pub use duration::HumanDuration;
pub use env::{API_TOKEN_ENV, ENV_VARS};
pub use ha::{HaSection, HaSettings};
pub use journeys::{JourneySection, RecoverySection, SuccessSection};
pub use security::{
    AuthModeSection, AuthSection, LimitsSection, TlsSection, UserSection, FLEET_KEY_ENV,
};
pub use settings::Settings;
pub use slack::{SlackSection, BOT_TOKEN_ENV, WEBHOOK_ENV};
pub use topics::{AccessSection, AclSection, Roles};
pub use validate::{ConfigErrors, Problem};

/// The whole configuration file. Every section is optional; an empty file is valid.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The MQTT listener.
    pub mqtt: MqttSection,
    /// The ops HTTP API.
    pub http: HttpSection,
    /// The database.
    pub store: StoreSection,
    /// Heartbeat-loss detection.
    pub heartbeat: HeartbeatSection,
    /// Hardware-fault thresholds.
    pub faults: FaultsSection,
    /// The mass-loss guard.
    pub mass_loss: MassLossSection,
    /// Flap detection.
    pub flap: FlapSection,
    /// Command reconciliation.
    pub commands: CommandsSection,
    /// Fleet limits.
    pub fleet: FleetSection,
    /// The CMC SLO.
    pub slo: SloSection,
    /// Slack notifications.
    pub slack: SlackSection,
    /// The MDS 2.0 views of the ops API.
    pub mds: MdsSection,
    /// Who may connect to MQTT.
    pub auth: AuthSection,
    /// A TLS listener beside (or instead of) plain TCP; absent: no TLS.
    pub tls: Option<TlsSection>,
    /// MQTT publish and connect rates, handshake timeout.
    pub limits: LimitsSection,
    /// The topic layout (contract v1 by default).
    pub topics: crate::contract::LayoutSection,
    /// Entries that open the fleet's own topics (`[[acl]]`).
    pub acl: Vec<AclSection>,
    /// Active/standby engines on the PostgreSQL store.
    pub ha: HaSection,
    /// Rider journeys measured on the fleet's own traffic (`[[journeys]]`).
    pub journeys: Vec<JourneySection>,
    /// Keys whose value came from the environment, with the variable (for messages).
    #[serde(skip)]
    from_env: Vec<(&'static str, &'static str)>,
}

/// `[mqtt]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// `"embedded"` (the broker is the MQTT server) or `"attach"` (a client of the
    /// fleet's own broker, `[mqtt.attach]`).
    pub mode: MqttMode,
    /// The upstream broker in attach mode.
    pub attach: AttachSection,
    /// Listen address.
    pub listen: SocketAddr,
    /// Largest accepted payload on vehicle topics, in bytes.
    pub max_payload: usize,
    /// Most simultaneous MQTT connections.
    pub max_connections: usize,
    /// The longest keep-alive a client may ask (MQTT 5 clients are told when theirs is
    /// cut).
    pub max_keepalive: HumanDuration,
    /// Messages queued for one slow or offline client before the oldest is dropped. A
    /// backend subscribing to `vehicles/+/service` receives one retained message per
    /// vehicle at once, so keep this above the fleet size.
    pub max_queued_messages: usize,
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            mode: MqttMode::Embedded,
            attach: AttachSection::default(),
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            max_payload: 16 * 1024,
            max_connections: 100_000,
            max_keepalive: HumanDuration::from_secs(u64::from(u16::MAX)),
            max_queued_messages: 100_000,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Listen address.
    pub listen: SocketAddr,
    /// Bearer token for POST endpoints (or env `FLEET_API_TOKEN` when unset here).
    pub token: Option<String>,
    /// Serve the SLO page at `/` and the vehicle pages at `/vehicles` (read-only, no
    /// token needed).
    pub page: bool,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            page: true,
        }
    }
}

/// `[store]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Database file (its directory is created on first run).
    pub path: PathBuf,
    /// A PostgreSQL database instead of the file: `postgres://user:password@host:port/db`
    /// (or env `FLEET_STORE_URL` when unset here). `path` is then unused.
    pub url: Option<String>,
    /// `"full"`: fsync at every commit (an announced transition survives a power loss);
    /// `"normal"`: survives the broker being killed, not a power loss.
    pub synchronous: crate::store::Synchronous,
    /// How often last-seen times, models and error counters are written (heartbeats are
    /// never written one by one).
    pub checkpoint_interval: HumanDuration,
    /// Command log entries older than this are deleted (the transition log is kept).
    pub command_log_retention: HumanDuration,
}

/// Never shows the URL's password.
impl std::fmt::Debug for StoreSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSection")
            .field("path", &self.path)
            .field(
                "url",
                &self.url.as_deref().map(crate::store::lease::describe),
            )
            .field("synchronous", &self.synchronous)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("command_log_retention", &self.command_log_retention)
            .finish()
    }
}

impl StoreSection {
    /// Where the store lives: the PostgreSQL database when `url` is set, else the file.
    pub fn location(&self) -> crate::store::Location {
        match &self.url {
            Some(url) => crate::store::Location::Postgres(url.clone()),
            None => crate::store::Location::File(self.path.clone()),
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            path: PathBuf::from("data/fleet.db"),
            url: None,
            synchronous: crate::store::Synchronous::Full,
            checkpoint_interval: HumanDuration::from_secs(30),
            command_log_retention: HumanDuration::from_secs(30 * 24 * 3600),
        }
    }
}

/// `[heartbeat]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatSection {
    /// Silence longer than this takes a vehicle out.
    pub timeout: HumanDuration,
    /// Consecutive heartbeats needed to bring it back.
    pub recover_after: u32,
    /// Grace after a restart (default: each vehicle's own timeout).
    pub restart_grace: Option<HumanDuration>,
    /// Per-model settings, keyed by the heartbeat's `model`.
    pub models: BTreeMap<String, ModelSection>,
}

impl Default for HeartbeatSection {
    fn default() -> Self {
        HeartbeatSection {
            timeout: HumanDuration::from_secs(300),
            recover_after: 1,
            restart_grace: None,
            models: BTreeMap::new(),
        }
    }
}

/// `[heartbeat.models.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// This model's timeout.
    pub timeout: HumanDuration,
}

/// `[faults]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FaultsSection {
    /// The rule for codes without their own.
    pub default: FaultRuleSection,
    /// Per-code rules.
    pub codes: BTreeMap<String, FaultRuleSection>,
}

/// `[faults.default]` and `[faults.codes.CODE]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultRuleSection {
    /// Reports needed within `window`.
    pub threshold: u32,
    /// The sliding window.
    pub window: HumanDuration,
    /// Counted, never takes a vehicle out.
    pub informational: bool,
}

impl Default for FaultRuleSection {
    fn default() -> Self {
        FaultRuleSection {
            threshold: 3,
            window: HumanDuration::from_secs(600),
            informational: false,
        }
    }
}

/// `[mass_loss]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MassLossSection {
    /// Fraction of the fleet going silent within `window` that makes an incident.
    pub fraction: f64,
    /// ... and at least this many vehicles.
    pub min_vehicles: usize,
    /// The window.
    pub window: HumanDuration,
    /// `"hold"` or `"service_out"`.
    pub action: MassLossActionSection,
}

impl Default for MassLossSection {
    fn default() -> Self {
        MassLossSection {
            fraction: 0.2,
            min_vehicles: 50,
            window: HumanDuration::from_secs(120),
            action: MassLossActionSection::Hold,
        }
    }
}

/// `mass_loss.action`
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MassLossActionSection {
    /// Hold heartbeat service-outs during the incident.
    Hold,
    /// Proceed with them.
    ServiceOut,
}

/// `[flap]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlapSection {
    /// Timeouts within `window` that make a vehicle flapping.
    pub threshold: u32,
    /// The window.
    pub window: HumanDuration,
}

impl Default for FlapSection {
    fn default() -> Self {
        FlapSection {
            threshold: 3,
            window: HumanDuration::from_secs(3600),
        }
    }
}

/// `[commands]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsSection {
    /// Least time between two sends of a command to one vehicle when it reports a state
    /// other than the desired one.
    pub resend_interval: HumanDuration,
}

impl Default for CommandsSection {
    fn default() -> Self {
        CommandsSection {
            resend_interval: HumanDuration::from_secs(30),
        }
    }
}

/// `[fleet]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSection {
    /// Registration stops at this many vehicles.
    pub max_vehicles: usize,
}

impl Default for FleetSection {
    fn default() -> Self {
        FleetSection {
            max_vehicles: 1_000_000,
        }
    }
}

/// `[slo]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SloSection {
    /// Target fraction of fleet-time in service.
    pub target: f64,
    /// Rolling window.
    pub window: HumanDuration,
    /// Count vehicles out only for maintenance as bad (default: excluded).
    pub maintenance_counts_as_bad: bool,
    /// Count the time the broker itself was down (found at restart) as bad fleet-time
    /// (default: yes, no vehicle could reach it); either way it is reported as downtime.
    pub downtime_counts_as_bad: bool,
    /// How often `fleet/sli` is published (also on every change of the in-service count).
    pub publish_interval: HumanDuration,
    /// The second CMC SLO: share of commands acknowledged ok within `command_ack_within`
    /// (commands to silent vehicles are not counted).
    pub command_ack_target: f64,
    /// An ack later than this is bad for the command-ack SLI.
    pub command_ack_within: HumanDuration,
}

impl Default for SloSection {
    fn default() -> Self {
        SloSection {
            target: 0.995,
            window: HumanDuration::from_secs(30 * 24 * 3600),
            maintenance_counts_as_bad: false,
            downtime_counts_as_bad: true,
            publish_interval: HumanDuration::from_secs(10),
            command_ack_target: 0.99,
            command_ack_within: HumanDuration::from_secs(30),
        }
    }
}

/// `[mds]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MdsSection {
    /// The operator's MDS `provider_id` (a UUID from the MDS provider list); without one
    /// the MDS views use the nil UUID.
    pub provider_id: Option<String>,
}

/// The text is not TOML of the configuration's shape; the message names the key and line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(toml::de::Error);

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key and line.
        source: ParseError,
    },
    /// The environment's values (no config file) are out of range.
    #[error("the embedded defaults with the environment's secrets have {} problem(s):\n{errors}", errors.len())]
    Environment {
        /// Every problem.
        errors: ConfigErrors,
    },
    /// The values are out of range or inconsistent.
    #[error("config file {path} has {} problem(s):\n{errors}", errors.len())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem.
        errors: ConfigErrors,
    },
}

impl Config {
    /// Reads and parses a file, takes the secrets from the environment
    /// ([`Config::apply_env`]) and checks the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.apply_env();
        config.validate().map_err(|errors| ConfigError::Invalid {
            path: path.to_owned(),
            errors,
        })?;
        Ok(config)
    }

    /// The embedded defaults with the secrets from the environment, checked.
    pub fn from_env() -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.apply_env();
        config
            .validate()
            .map_err(|errors| ConfigError::Environment { errors })?;
        Ok(config)
    }

    /// Parses TOML text (no validation, no environment).
    pub fn parse(text: &str) -> Result<Config, ParseError> {
        toml::from_str(text).map_err(ParseError)
    }

    /// Every problem at once, each with its key path (the same check as
    /// [`Config::settings`]).
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        self.settings().map(drop)
    }

    /// The rules engine's settings.
    pub fn rules(&self) -> fleet_rules::RulesConfig {
        use fleet_rules::{FaultRule, MassLossAction};
        let rule = |r: &FaultRuleSection| {
            if r.informational {
                FaultRule::Informational
            } else {
                FaultRule::Threshold {
                    threshold: r.threshold,
                    window: r.window.0,
                }
            }
        };
        fleet_rules::RulesConfig {
            heartbeat: fleet_rules::HeartbeatConfig {
                timeout: self.heartbeat.timeout.0,
                models: self
                    .heartbeat
                    .models
                    .iter()
                    .map(|(name, m)| (name.clone(), m.timeout.0))
                    .collect(),
                recover_after: self.heartbeat.recover_after,
                restart_grace: self.heartbeat.restart_grace.map(|d| d.0),
            },
            faults: fleet_rules::FaultConfig {
                default: rule(&self.faults.default),
                codes: self
                    .faults
                    .codes
                    .iter()
                    .map(|(code, r)| (code.clone(), rule(r)))
                    .collect(),
            },
            mass_loss: fleet_rules::MassLossConfig {
                fraction: self.mass_loss.fraction,
                min_vehicles: self.mass_loss.min_vehicles,
                window: self.mass_loss.window.0,
                action: match self.mass_loss.action {
                    MassLossActionSection::Hold => MassLossAction::Hold,
                    MassLossActionSection::ServiceOut => MassLossAction::ServiceOut,
                },
            },
            flap: fleet_rules::FlapConfig {
                threshold: self.flap.threshold,
                window: self.flap.window.0,
            },
            slo: fleet_rules::SloConfig {
                target: self.slo.target,
                window: self.slo.window.0,
                maintenance_counts_as_bad: self.slo.maintenance_counts_as_bad,
            },
            command_resend_interval: self.commands.resend_interval.0,
            max_vehicles: self.fleet.max_vehicles,
            journeys: journeys::rules(&self.journeys, self.slo.window.0),
        }
    }
}
