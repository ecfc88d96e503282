//! `fleet-broker`: parse the command line, set up logging, run until SIGINT/SIGTERM (or
//! run a subcommand, see `fleet_broker::cli`).

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use fleet_broker::{cli, clock::Clock};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = cli::CommandLine::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The log goes to stderr: a subcommand's stdout is its output (a config, JSON).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Some(command) = args.command {
        return cli::execute(command, args.config.as_deref());
    }
    match serve(args.config.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Option<&Path>) -> anyhow::Result<()> {
    let config = cli::load_config(config)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let stop = shutdown_signal()?;
        fleet_broker::run(&config, Clock::system(), stop)
            .await
            .context("cannot start the broker")
    })
}

/// Resolves at the first SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
