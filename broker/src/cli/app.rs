//! `fleet-broker`'s command line: with no subcommand it runs the broker (see `main.rs`);
//! the subcommands validate a config, mint credentials, or talk to a running broker's ops
//! API. Each returns the process's exit status and prints its own errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use super::{credentials, OpsCommand};
use crate::config::{Config, ConfigError};

/// The fleet health broker: an MQTT broker that keeps shared e-scooters and e-bikes in or
/// out of service and measures the fleet's reliability as an SLO.
#[derive(Debug, Parser)]
#[command(name = "fleet-broker", version, about)]
pub struct CommandLine {
    /// TOML configuration file (without one, the embedded defaults apply).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do instead of running the broker.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a configuration file and print every problem.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// Print MQTT credentials for a vehicle under the configured auth.mode (or, with
    /// --observer, a new backend user's password and its [[auth.users]] entry).
    Credentials {
        /// The vehicle id (or, with --observer, the user name).
        id: String,
        /// Mint an observer user instead of a vehicle.
        #[arg(long)]
        observer: bool,
    },
    /// Print the upstream broker's configuration that enforces the contract in attach
    /// mode (each vehicle's username is its id; it may publish its own uplinks only).
    Acl {
        /// The upstream broker.
        #[arg(long = "for", value_enum, value_name = "UPSTREAM")]
        target: super::upstream_acl::Upstream,
        /// A user that reads the service state and the fleet topics (repeatable).
        #[arg(long, value_name = "USER", default_value = "observer")]
        observer: Vec<String>,
    },
    /// Print the active/standby cluster from its PostgreSQL database ([store] url or
    /// FLEET_STORE_URL): who leads, the epoch, and every engine with its role. Exit 1
    /// when no engine leads.
    Status,
    /// Vehicles and SLOs through the ops API.
    #[command(flatten)]
    Ops(OpsCommand),
}

/// The configuration to run with: `path` (with the environment's secrets), or the
/// embedded defaults (with the same).
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => Config::load(path),
        None => {
            tracing::info!("no --config given: running with the embedded defaults");
            Config::from_env()
        }
    }
}

/// Runs a subcommand to completion.
pub fn execute(command: Command, config: Option<&Path>) -> ExitCode {
    match command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Credentials { id, observer } => print_credentials(config, &id, observer),
        Command::Acl { target, observer } => print_upstream_acl(config, target, observer),
        Command::Status => print_status(config),
        Command::Ops(ops) => ops_command(config, &ops),
    }
}

/// A runtime for one command (a message on failure).
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("fleet-broker: cannot start the async runtime: {e}");
            None
        }
    }
}

fn print_status(config: Option<&Path>) -> ExitCode {
    let url = match load_config(config) {
        Ok(c) => c.store.url,
        Err(e) => {
            eprintln!("fleet-broker status: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(url) = url else {
        eprintln!("fleet-broker status: the cluster lives in PostgreSQL: set [store] url in --config FILE, or FLEET_STORE_URL");
        return ExitCode::FAILURE;
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(super::status::status(&url)) {
        Ok((text, leads)) => {
            print!("{text}");
            if leads {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("fleet-broker status: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_upstream_acl(
    config: Option<&Path>,
    target: super::upstream_acl::Upstream,
    observers: Vec<String>,
) -> ExitCode {
    let settings = match load_config(config).map(|c| c.settings()) {
        Ok(Ok(settings)) => settings,
        Ok(Err(errors)) => {
            eprint!("fleet-broker acl: {} problem(s):\n{errors}", errors.len());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("fleet-broker acl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let broker = settings
        .attach
        .as_ref()
        .and_then(|a| a.credentials.as_ref().map(|(user, _)| user.clone()))
        .unwrap_or_else(|| "fleet-broker".to_owned());
    let who = super::upstream_acl::Principals { broker, observers };
    print!(
        "{}",
        super::upstream_acl::render(target, &settings.engine.topics, &who)
    );
    ExitCode::SUCCESS
}

fn check_config(file: &Path) -> ExitCode {
    match Config::load(file).map(|c| c.settings()) {
        Ok(Ok(settings)) => {
            println!("{}: ok", file.display());
            println!();
            print!("{}", acl_table(&settings));
            ExitCode::SUCCESS
        }
        // `load` checked it: unreachable, but say what is wrong rather than panic.
        Ok(Err(errors)) => {
            eprint!("{}: {} problem(s):\n{errors}", file.display(), errors.len());
            ExitCode::FAILURE
        }
        // The list of problems ends with a newline of its own.
        Err(e @ ConfigError::Invalid { .. }) => {
            eprint!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The effective topic rules as a table: built-in ones, then the `[[acl]]` entries.
fn acl_table(settings: &crate::config::Settings) -> String {
    let rows = settings.mqtt.acl.table(|id| settings.roles.name(id));
    let header = ["who", "access", "topic", "rule"].map(str::to_owned);
    let widths: Vec<usize> = (0..3)
        .map(|i| {
            rows.iter()
                .chain(std::iter::once(&header))
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::from(
        "Topic rules (built in first, then [[acl]] entries; %c = client id, %u = username):\n",
    );
    for r in std::iter::once(&header).chain(rows.iter()) {
        out.push_str(&format!(
            "  {:w0$}  {:w1$}  {:w2$}  {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        ));
    }
    out
}

fn print_credentials(config: Option<&Path>, id: &str, observer: bool) -> ExitCode {
    let minted = match load_config(config) {
        Ok(config) => credentials::mint(&config, id, observer).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match minted {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fleet-broker credentials: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An ops API command: the API's address and token default to the config file's.
fn ops_command(config: Option<&Path>, command: &OpsCommand) -> ExitCode {
    let config = match config.map(Config::load).transpose() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("fleet-broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = super::default_url(config.as_ref().map(|c| c.http.listen));
    let token = config.and_then(|c| c.http.token);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let mut out = std::io::stdout().lock();
    match runtime.block_on(super::run(command, &url, token, &mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet-broker: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
