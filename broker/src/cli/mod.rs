//! The command line: the subcommands ([`app`]), and `fleet-broker vehicles ...` and
//! `fleet-broker slo`, the ops HTTP API from a terminal,
//! for a technician in the field or an on-call engineer. Tables for people, `--json` for
//! scripts (the API's JSON as is).
//!
//! Exit status: 0 done; 1 refused or failed (the message says why); 3 a service-in cleared
//! what a person can clear but the vehicle stays out (it is silent).

mod app;
pub mod client;
pub mod credentials;
pub mod render;
pub mod status;
pub mod upstream_acl;

use std::io::Write;
use std::net::SocketAddr;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

pub use app::{execute, load_config, Command, CommandLine};
pub use client::{ApiClient, ApiResponse, ClientError};

/// How the ops API is reached (shared by every subcommand).
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Ops API base URL [default: from --config's [http] listen, else http://127.0.0.1:8080].
    #[arg(long, env = "FLEET_API_URL", value_name = "URL", global = true)]
    pub url: Option<String>,
    /// API token for service-in and service-out [default: from --config's [http] token].
    #[arg(
        long,
        env = "FLEET_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        global = true
    )]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A state to filter by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Rentable.
    #[value(name = "in_service", alias = "in-service")]
    InService,
    /// Not rentable.
    #[value(name = "out_of_service", alias = "out-of-service")]
    OutOfService,
}

/// A reason to filter by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReasonArg {
    /// No heartbeat for the timeout.
    #[value(name = "heartbeat_lost", alias = "heartbeat-lost")]
    HeartbeatLost,
    /// A hardware fault over its threshold.
    #[value(name = "hardware_fault", alias = "hardware-fault")]
    HardwareFault,
    /// Taken out by a person.
    Maintenance,
}

/// `fleet-broker vehicles`
#[derive(Debug, Clone, Args)]
pub struct VehiclesArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: VehiclesCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum VehiclesCommand {
    /// List vehicles, in registration order (filter by state, reason, model).
    List {
        /// Only vehicles in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Only vehicles with this reason.
        #[arg(long, value_enum)]
        reason: Option<ReasonArg>,
        /// Only vehicles of this model.
        #[arg(long)]
        model: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
        /// Every matching vehicle, page after page.
        #[arg(long)]
        all: bool,
        /// Continue a listing from the cursor printed after it.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One vehicle: state, reasons with since-times, last seen, error counters, history.
    Show {
        /// Vehicle id.
        id: String,
    },
    /// Put a vehicle back in service after the field check: clears hardware faults and
    /// maintenance (a silent vehicle stays out until it talks).
    ServiceIn {
        /// Vehicle id.
        id: String,
        /// Who did the check (goes to the audit log).
        #[arg(long)]
        operator: String,
        /// What was checked or repaired (goes to the audit log).
        #[arg(long)]
        note: String,
    },
    /// Take a vehicle out of service for maintenance.
    ServiceOut {
        /// Vehicle id.
        id: String,
        /// Who takes it out.
        #[arg(long)]
        operator: String,
        /// Why.
        #[arg(long)]
        note: String,
    },
}

/// `fleet-broker slo`
#[derive(Debug, Clone, Args)]
pub struct SloArgs {
    #[command(flatten)]
    api: ApiArgs,
}

/// The ops subcommands on their own, for tests and tools that embed the CLI
/// (`fleet-broker`'s own command line has the same subcommands).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "fleet-broker")]
pub struct OpsCommandLine {
    /// The subcommand.
    #[command(subcommand)]
    pub command: OpsCommand,
}

/// `vehicles ...` or `slo`.
#[derive(Debug, Clone, Subcommand)]
pub enum OpsCommand {
    /// Vehicles through the ops API.
    Vehicles(VehiclesArgs),
    /// The SLOs through the ops API.
    Slo(SloArgs),
}

/// Runs one ops subcommand, writing to `out`.
pub async fn run(
    command: &OpsCommand,
    default_url: &str,
    default_token: Option<String>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        OpsCommand::Vehicles(args) => run_vehicles(args, default_url, default_token, out).await,
        OpsCommand::Slo(args) => run_slo(args, default_url, default_token, out).await,
    }
}

/// Why a command did not succeed; its `Display` is for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No HTTP answer.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The API said no.
    #[error("{message} (HTTP {status})")]
    Refused {
        /// Status code.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// A service-in left the vehicle out of service.
    #[error("{0}")]
    StillOut(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::StillOut(_) => 3,
            _ => 1,
        }
    }
}

/// Where to reach the API when `--url` is not given: the config's listen address (an
/// unspecified address means this host).
pub fn default_url(listen: Option<SocketAddr>) -> String {
    match listen {
        None => "http://127.0.0.1:8080".to_owned(),
        Some(addr) => {
            let ip = match addr.ip() {
                ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
                ip if ip.is_unspecified() => "[::1]".to_owned(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            };
            format!("http://{ip}:{}", addr.port())
        }
    }
}

fn client(
    api: &ApiArgs,
    default_url: &str,
    default_token: Option<String>,
) -> Result<ApiClient, CliError> {
    let url = api.url.clone().unwrap_or_else(|| default_url.to_owned());
    Ok(ApiClient::new(&url, api.token.clone().or(default_token))?)
}

fn refused(r: &ApiResponse) -> CliError {
    let json = r.json();
    let message = json["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| r.text());
    CliError::Refused {
        status: r.status,
        message,
    }
}

fn print_json(out: &mut dyn Write, v: &Value) -> Result<(), CliError> {
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    )?;
    Ok(())
}

/// Percent-encodes a query value (ids and models are plain, but be safe).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `vehicles ...`, writing to `out`.
pub async fn run_vehicles(
    args: &VehiclesArgs,
    default_url: &str,
    default_token: Option<String>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let api = client(&args.api, default_url, default_token)?;
    match &args.command {
        VehiclesCommand::List {
            state,
            reason,
            model,
            limit,
            all,
            cursor,
        } => {
            let mut query = vec![format!("limit={limit}")];
            if let Some(s) = state {
                query.push(format!(
                    "state={}",
                    match s {
                        StateArg::InService => "in_service",
                        StateArg::OutOfService => "out_of_service",
                    }
                ));
            }
            if let Some(r) = reason {
                query.push(format!(
                    "reason={}",
                    match r {
                        ReasonArg::HeartbeatLost => "heartbeat_lost",
                        ReasonArg::HardwareFault => "hardware_fault",
                        ReasonArg::Maintenance => "maintenance",
                    }
                ));
            }
            if let Some(m) = model {
                query.push(format!("model={}", encode(m)));
            }
            list(&api, &query, cursor.clone(), *all, args.api.json, out).await
        }
        VehiclesCommand::Show { id } => {
            let r = api.get(&format!("/api/v1/vehicles/{}", encode(id))).await?;
            if !r.is_success() {
                return Err(refused(&r));
            }
            let v = r.json();
            if args.api.json {
                return print_json(out, &v);
            }
            render::vehicle(out, &v)?;
            Ok(())
        }
        VehiclesCommand::ServiceIn { id, operator, note } => {
            let r = api
                .post_json(
                    &format!("/api/v1/vehicles/{}/service-in", encode(id)),
                    &json!({ "operator": operator, "note": note }),
                )
                .await?;
            let body = r.json();
            if r.status == 409 && body["error"] == "still_out_of_service" {
                if args.api.json {
                    print_json(out, &body)?;
                }
                let message = body["message"]
                    .as_str()
                    .unwrap_or("the vehicle stays out of service");
                return Err(CliError::StillOut(message.to_owned()));
            }
            if !r.is_success() {
                return Err(refused(&r));
            }
            if args.api.json {
                return print_json(out, &body);
            }
            let cleared: Vec<String> = body["cleared"]
                .as_array()
                .map(|c| c.iter().map(render::reason).collect())
                .unwrap_or_default();
            writeln!(
                out,
                "{id} is back in service. Cleared: {}.",
                if cleared.is_empty() {
                    "nothing (it was in service)".to_owned()
                } else {
                    cleared.join(", ")
                }
            )?;
            Ok(())
        }
        VehiclesCommand::ServiceOut { id, operator, note } => {
            let r = api
                .post_json(
                    &format!("/api/v1/vehicles/{}/service-out", encode(id)),
                    &json!({ "operator": operator, "note": note }),
                )
                .await?;
            if !r.is_success() {
                return Err(refused(&r));
            }
            let body = r.json();
            if args.api.json {
                return print_json(out, &body);
            }
            let reasons: Vec<String> = body["reasons"]
                .as_array()
                .map(|c| c.iter().map(render::reason).collect())
                .unwrap_or_default();
            writeln!(
                out,
                "{id} is out of service ({}). Put it back with: fleet-broker vehicles service-in {id} --operator NAME --note TEXT",
                reasons.join(", ")
            )?;
            Ok(())
        }
    }
}

async fn list(
    api: &ApiClient,
    query: &[String],
    mut cursor: Option<String>,
    all: bool,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut vehicles: Vec<Value> = Vec::new();
    let mut now = 0;
    loop {
        let mut q = query.to_vec();
        if let Some(c) = &cursor {
            q.push(format!("cursor={}", encode(c)));
        }
        let r = api
            .get(&format!("/api/v1/vehicles?{}", q.join("&")))
            .await?;
        if !r.is_success() {
            return Err(refused(&r));
        }
        let page = r.json();
        now = page["at"].as_u64().unwrap_or(now);
        vehicles.extend(page["vehicles"].as_array().cloned().unwrap_or_default());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if !all || cursor.is_none() {
            break;
        }
    }
    if as_json {
        return print_json(
            out,
            &json!({ "vehicles": vehicles, "next_cursor": cursor, "at": now }),
        );
    }
    render::vehicles(out, &vehicles, now)?;
    let noun = if vehicles.len() == 1 {
        "vehicle"
    } else {
        "vehicles"
    };
    match cursor {
        Some(c) => writeln!(
            out,
            "{} {noun} shown; more with --all or --cursor {c}",
            vehicles.len()
        )?,
        None => writeln!(out, "{} {noun}", vehicles.len())?,
    }
    Ok(())
}

/// Runs `slo`, writing to `out`.
pub async fn run_slo(
    args: &SloArgs,
    default_url: &str,
    default_token: Option<String>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let api = client(&args.api, default_url, default_token)?;
    let r = api.get("/api/v1/slo").await?;
    if !r.is_success() {
        return Err(refused(&r));
    }
    let report = r.json();
    if args.api.json {
        return print_json(out, &report);
    }
    render::slo(out, &report)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_url_comes_from_the_listen_address() {
        assert_eq!(default_url(None), "http://127.0.0.1:8080");
        let any: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        assert_eq!(default_url(Some(any)), "http://127.0.0.1:9000");
        let v6: SocketAddr = "[::1]:8081".parse().unwrap();
        assert_eq!(default_url(Some(v6)), "http://[::1]:8081");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("e-bike x/1"), "e-bike%20x%2F1");
    }
}
