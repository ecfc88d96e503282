//! `fleet-broker`: parse the command line, set up logging, run until SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
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

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = match &config {
        Some(path) => Config::load(path)?,
        None => {
            tracing::info!("no --config given: running with the embedded defaults");
            Config::default()
        }
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let broker = Broker::start(&config, Clock::system())
            .await
            .with_context(|| format!("cannot start the MQTT listener on {}", config.mqtt.listen))?;
        shutdown_signal().await?;
        tracing::info!("shutdown requested: draining");
        broker.shutdown().await;
        Ok(())
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
