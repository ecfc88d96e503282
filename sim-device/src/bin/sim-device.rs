//! `sim-device`: N simulated vehicles heartbeating against a broker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sim_device::{Vehicle, VehicleOptions};

/// A simulated fleet: each vehicle is a real MQTT connection speaking the contract v1.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Broker address, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// Number of vehicles.
    #[arg(long, default_value_t = 100)]
    vehicles: usize,
    /// Vehicle id prefix.
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Heartbeat period, e.g. "30s".
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let broker: SocketAddr = tokio::net::lookup_host(&cli.broker)
        .await
        .with_context(|| format!("cannot resolve broker address {:?}", cli.broker))?
        .next()
        .with_context(|| format!("broker address {:?} resolves to nothing", cli.broker))?;
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(cli.vehicles);
    for i in 0..cli.vehicles {
        let id = format!("{}-{i:06}", cli.prefix);
        let vehicle = Vehicle::connect(broker, &id, VehicleOptions::default()).await?;
        let sent = sent.clone();
        let period = cli.heartbeat;
        // Spread the fleet's heartbeats over the period.
        let offset = period.mul_f64(i as f64 / cli.vehicles.max(1) as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                if vehicle.heartbeat().await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tracing::info!(vehicles = cli.vehicles, "fleet connected");
    let run = async {
        let mut report = tokio::time::interval(Duration::from_secs(10));
        loop {
            report.tick().await;
            tracing::info!(heartbeats_sent = sent.load(Ordering::Relaxed), "progress");
        }
    };
    match cli.duration {
        Some(d) => {
            let _ = tokio::time::timeout(d, run).await;
        }
        None => tokio::select! { _ = run => {}, _ = tokio::signal::ctrl_c() => {} },
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}
