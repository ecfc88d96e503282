//! `fleet-broker`: parse the command line, set up logging, run until SIGINT/SIGTERM.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleet_broker::cli::{self, CliError};
use fleet_broker::clock::Clock;
use fleet_broker::config::{Config, ConfigError};
use fleet_broker::Broker;

/// The fleet health broker: an MQTT broker that keeps shared e-scooters and e-bikes in or
/// out of service and measures the fleet's reliability as an SLO.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file (without one, the embedded defaults apply).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
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
    /// Vehicles through the ops API: list, show, service-in, service-out.
    Vehicles(cli::VehiclesArgs),
    /// The SLOs through the ops API: SLI, error budget, burn rates, alerts.
    Slo(cli::SloArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Credentials { id, observer }) => {
            credentials(cli.config.as_deref(), &id, observer)
        }
        Some(Command::Vehicles(args)) => ops_cli(cli.config.as_deref(), |url, token| async move {
            cli::run_vehicles(&args, &url, token, &mut std::io::stdout().lock()).await
        }),
        Some(Command::Slo(args)) => ops_cli(cli.config.as_deref(), |url, token| async move {
            cli::run_slo(&args, &url, token, &mut std::io::stdout().lock()).await
        }),
        None => match serve(cli.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fleet-broker: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn check_config(file: &Path) -> ExitCode {
    match Config::load(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
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

fn credentials(config: Option<&Path>, id: &str, observer: bool) -> ExitCode {
    let minted = match config.map(Config::load).transpose() {
        Ok(config) => {
            fleet_broker::mqtt::credentials::mint(&config.unwrap_or_default(), id, observer)
                .map_err(anyhow::Error::from)
        }
        Err(e) => Err(e.into()),
    };
    match minted {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fleet-broker credentials: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an ops API command: the API's address and token default to the config file's.
fn ops_cli<F, Fut>(config: Option<&Path>, run: F) -> ExitCode
where
    F: FnOnce(String, Option<String>) -> Fut,
    Fut: Future<Output = Result<(), CliError>>,
{
    let config = match config.map(Config::load).transpose() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("fleet-broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = cli::default_url(config.as_ref().map(|c| c.http.listen));
    let token = config.and_then(|c| c.http.token);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleet-broker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(url, token)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet-broker: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let mut config = match &config {
        Some(path) => Config::load(path)?,
        None => {
            tracing::info!("no --config given: running with the embedded defaults");
            Config::default()
        }
    };
    api_token_from_env(&mut config)?;
    slack_from_env(&mut config)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let broker = Broker::start(&config, Clock::system())
            .await
            .context("cannot start the broker")?;
        shutdown_signal().await?;
        tracing::info!("shutdown requested: draining");
        broker.shutdown().await;
        Ok(())
    })
}

/// `FLEET_API_TOKEN` gives the ops API its token when the config file has none (so the
/// secret need not be written in the file).
fn api_token_from_env(config: &mut Config) -> anyhow::Result<()> {
    let Some(token) = std::env::var("FLEET_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    else {
        return Ok(());
    };
    if config.http.token.is_some() {
        tracing::info!("FLEET_API_TOKEN is set but [http] token in the config file is used");
        return Ok(());
    }
    config.http.token = Some(token);
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("FLEET_API_TOKEN is not usable as [http] token:\n{e}"))
}

/// `SLACK_WEBHOOK_URL` / `SLACK_BOT_TOKEN` give Slack its secret when the config file has
/// neither (so it need not be written in the file).
fn slack_from_env(config: &mut Config) -> anyhow::Result<()> {
    use fleet_broker::slack::{BOT_TOKEN_ENV, WEBHOOK_ENV};
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if config.slack.webhook_url.is_some() || config.slack.bot_token.is_some() {
        if var(WEBHOOK_ENV).is_some() || var(BOT_TOKEN_ENV).is_some() {
            tracing::info!(
                "{WEBHOOK_ENV} or {BOT_TOKEN_ENV} is set but [slack] in the config file is used"
            );
        }
        return Ok(());
    }
    if let Some(token) = var(BOT_TOKEN_ENV) {
        config.slack.bot_token = Some(token);
    } else if let Some(url) = var(WEBHOOK_ENV) {
        config.slack.webhook_url = Some(url);
    } else {
        return Ok(());
    }
    config.validate().map_err(|e| {
        anyhow::anyhow!("{WEBHOOK_ENV} / {BOT_TOKEN_ENV} is not usable for [slack]:\n{e}")
    })
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
