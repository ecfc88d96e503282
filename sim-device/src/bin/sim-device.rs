//! `sim-device`: a simulated fleet against a broker (the default), the benchmark phases
//! (`bench`), or the rules-engine stand-in for the Mosquitto baseline (`standin`).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use sim_device::backend::{Backend, BackendOptions, BackendStats};
use sim_device::bench::{self, BenchJourneys, BenchOptions};
use sim_device::fleet::{Fleet, FleetOptions};
use sim_device::journey::{self, JourneyOptions, JourneyTopics};
use sim_device::scenario::{self, Scenario};
use sim_device::stats::{get, CpuMeter, FleetStats, Percentiles, MAX_SAMPLES};
use tokio::time::Instant;

/// A simulated fleet: each vehicle is a real MQTT connection speaking the contract v1.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the fleet with optional failure injection (the default without a subcommand).
    Run(RunArgs),
    /// Benchmark phases against one broker; one JSON object per event on stdout
    /// (driven by scripts/bench.py).
    Bench(BenchArgs),
    /// The rules-engine stand-in beside a plain broker (Mosquitto baseline).
    Standin(StandinArgs),
}

#[derive(Args, Clone)]
struct FleetArgs {
    /// Broker address(es), host:port, comma-separated; vehicles are spread over them.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// Number of vehicles.
    #[arg(long, default_value_t = 100)]
    vehicles: usize,
    /// Vehicle id prefix: ids are `{prefix}-{index:06}`.
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Index of this process's first vehicle (to split a fleet over processes).
    #[arg(long, default_value_t = 0)]
    id_offset: usize,
    /// Mean heartbeat period, e.g. "30s".
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// Heartbeat period jitter: each period is drawn from heartbeat * (1 ± jitter).
    #[arg(long, default_value_t = 0.1)]
    jitter: f64,
    /// Connection ramp, new connections per second ("2000/s" or "2000").
    #[arg(long, default_value = "2000/s", value_parser = parse_ramp)]
    ramp: u32,
    /// Heartbeat QoS (0 or 1).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// MQTT keep-alive.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    keep_alive: Duration,
    /// The broker's config file (or any TOML file with a `[topics]` table): the vehicles
    /// use its topic layout [default: contract v1].
    #[arg(long, value_name = "FILE")]
    topics: Option<PathBuf>,
}

/// The `[topics]` table of `file`, checked.
fn read_topics(file: &std::path::Path) -> anyhow::Result<fleet_contract::Topics> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read --topics {}", file.display()))?;
    // The rest of a broker config is not the simulator's business: only [topics] is read.
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("--topics {}", file.display()))?;
    let layout: fleet_contract::LayoutSection = match table.get("topics") {
        None => fleet_contract::LayoutSection::default(),
        Some(t) => t
            .clone()
            .try_into()
            .with_context(|| format!("--topics {}: [topics]", file.display()))?,
    };
    layout.topics().map_err(|problems| {
        let list: Vec<String> = problems
            .iter()
            .map(|p| format!("  {}: {}", p.key, p.message))
            .collect();
        anyhow::anyhow!("--topics {}:\n{}", file.display(), list.join("\n"))
    })
}

/// Rider journeys: a simulated backend sending lock requests that the vehicles answer.
#[derive(Args, Clone)]
struct JourneyArgs {
    /// Unlock requests per second from one simulated backend to vehicles picked at random,
    /// which answer them ("1000/s" or "1000"; 0 = off: vehicles do not subscribe to
    /// requests). `run` starts sending once the fleet is connected; `bench` repeats every
    /// rate step with them.
    #[arg(long, default_value = "0", value_name = "PER_SEC", value_parser = parse_rate)]
    unlocks: f64,
    /// Request topic template (backend -> vehicle); `{id}` is the vehicle id level.
    #[arg(long, default_value = journey::DEFAULT_REQUEST, value_name = "TEMPLATE")]
    unlock_request: String,
    /// Answer topic template (vehicle -> backend); `{id}` is the vehicle id level.
    #[arg(long, default_value = journey::DEFAULT_RESPONSE, value_name = "TEMPLATE")]
    unlock_response: String,
    /// A request with no answer after this long counts as timed out.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    unlock_timeout: Duration,
    /// Time a vehicle takes to answer a request.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    unlock_delay: Duration,
    /// The backend's MQTT client id.
    #[arg(long, default_value = "sim-backend")]
    backend_client_id: String,
    /// The backend's MQTT username (with --backend-password).
    #[arg(long, env = "SIM_BACKEND_USERNAME")]
    backend_username: Option<String>,
    /// The backend's MQTT password (with --backend-username).
    #[arg(long, env = "SIM_BACKEND_PASSWORD", hide_env_values = true)]
    backend_password: Option<String>,
}

/// Rates of requests per second: "1000/s" or "1000", 0 or more.
fn parse_rate(s: &str) -> Result<f64, String> {
    let n = s.strip_suffix("/s").unwrap_or(s);
    match n.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?}: expected requests per second, 0 or more, e.g. \"1000/s\""
        )),
    }
}

/// The vehicles' and the backend's journey settings; `None` with `--unlocks 0`.
fn journeys(
    a: &JourneyArgs,
    fleet: &FleetOptions,
) -> anyhow::Result<Option<(JourneyOptions, BackendOptions)>> {
    if a.unlocks == 0.0 {
        return Ok(None);
    }
    let topics = JourneyTopics::new(&a.unlock_request, &a.unlock_response)
        .context("--unlock-request/--unlock-response")?;
    if a.unlock_timeout.is_zero() {
        bail!("--unlock-timeout must be above zero");
    }
    let credentials = match (&a.backend_username, &a.backend_password) {
        (Some(user), Some(password)) => Some((user.clone(), password.clone())),
        (None, None) => None,
        _ => bail!("--backend-username and --backend-password go together: give both or neither"),
    };
    let vehicle = JourneyOptions {
        topics: topics.clone(),
        answer_delay: a.unlock_delay,
        ..JourneyOptions::answering()
    };
    let backend = BackendOptions {
        broker: fleet.brokers[0],
        client_id: a.backend_client_id.clone(),
        credentials,
        topics,
        rate: a.unlocks,
        timeout: a.unlock_timeout,
        ..BackendOptions::default()
    };
    Ok(Some((vehicle, backend)))
}

#[derive(Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    #[command(flatten)]
    journeys: JourneyArgs,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Failure injection scenario (TOML, `[[inject]]` tables; see README).
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Injections as inline TOML tables: one, or several separated by commas (optionally
    /// in brackets), e.g. '{action = "silent", at = "1m", for = "2m", fraction = 0.05}' or
    /// '[{action = "silent", at = "1m"}, {action = "faults", code = "MOTOR"}]'. Repeatable;
    /// adds to the --scenario file's.
    #[arg(long, value_name = "TABLES")]
    inject: Vec<String>,
    /// Share of heartbeats sent as probes (measures heartbeat -> command round trips).
    #[arg(long, default_value_t = 0.0)]
    probe_fraction: f64,
    /// Summary line interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    summary_every: Duration,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    #[command(flatten)]
    journeys: JourneyArgs,
    /// Heartbeat QoS levels to step through.
    #[arg(long, value_delimiter = ',', default_value = "0,1")]
    qos_levels: Vec<u8>,
    /// Offered heartbeat rates in messages/s, stepped up until the knee.
    #[arg(long, value_delimiter = ',', default_value = "10000,20000,40000,80000")]
    rates: Vec<u32>,
    /// Measured time per rate step.
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    step: Duration,
    /// Share of heartbeats sent as probes during steps.
    #[arg(long, default_value_t = 0.01)]
    probe_fraction: f64,
    /// The broker's heartbeat timeout (as configured for the bench).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Detection phase: share of the fleet that goes silent (0 skips the phase).
    #[arg(long, default_value_t = 0.0)]
    detect: f64,
    /// Heartbeat period while connecting, during detection and the storm.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    background: Duration,
    /// Run the reconnect-storm phase (the driver restarts the broker on `storm_ready`).
    #[arg(long)]
    storm: bool,
    /// Bound on every wait.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    wait_limit: Duration,
    /// Probe p99 above which stepping stops (the knee).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    knee_p99: Duration,
}

#[derive(Args)]
struct StandinArgs {
    /// Broker address, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// QoS of the heartbeat subscription (0 or 1).
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Counts line interval.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    report_every: Duration,
}

fn parse_ramp(s: &str) -> Result<u32, String> {
    let n = s.strip_suffix("/s").unwrap_or(s);
    match n.trim().parse::<u32>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(format!(
            "{s:?}: expected connections per second, e.g. \"2000/s\""
        )),
    }
}

async fn resolve(list: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let addr = tokio::net::lookup_host(part)
            .await
            .with_context(|| format!("cannot resolve broker address {part:?}"))?
            .next()
            .with_context(|| format!("broker address {part:?} resolves to nothing"))?;
        out.push(addr);
    }
    if out.is_empty() {
        bail!("no broker address given (--broker host:port)");
    }
    Ok(out)
}

/// The soft open-files limit, from /proc (None where unknown).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

async fn fleet_options(a: &FleetArgs) -> anyhow::Result<FleetOptions> {
    if !(0.0..1.0).contains(&a.jitter) {
        bail!("--jitter {}: use a value from 0 to below 1", a.jitter);
    }
    if a.heartbeat.is_zero() {
        bail!("--heartbeat must be above zero");
    }
    if let Some(limit) = open_files_limit() {
        if a.vehicles + 64 > limit {
            bail!(
                "{} vehicles need about {} open files but this process may open {limit}: \
                 raise it (`ulimit -n`) or split the fleet over processes with --vehicles and --id-offset",
                a.vehicles,
                a.vehicles + 64
            );
        }
    }
    Ok(FleetOptions {
        brokers: resolve(&a.broker).await?,
        vehicles: a.vehicles,
        id_offset: a.id_offset,
        prefix: a.prefix.clone(),
        heartbeat: a.heartbeat,
        jitter: a.jitter,
        ramp_per_sec: a.ramp,
        qos1: a.qos == 1,
        keep_alive: a.keep_alive,
        probe_fraction: 0.0,
        schedulers: 4,
        topics: match &a.topics {
            Some(file) => read_topics(file)?,
            None => fleet_contract::Topics::default(),
        },
        journeys: None,
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            None => run(cli.run).await,
            Some(Command::Run(args)) => run(args).await,
            Some(Command::Bench(args)) => bench_cmd(args).await,
            Some(Command::Standin(args)) => {
                let broker = resolve(&args.broker).await?[0];
                sim_device::standin::run(broker, args.qos >= 1, args.report_every).await
            }
        }
    })
}

async fn bench_cmd(a: BenchArgs) -> anyhow::Result<()> {
    let mut fleet = fleet_options(&a.fleet).await?;
    let journeys = journeys(&a.journeys, &fleet)?.map(|(vehicle, backend)| {
        fleet.journeys = Some(vehicle);
        BenchJourneys {
            rate: backend.rate,
            backend,
        }
    });
    bench::run(&BenchOptions {
        fleet,
        qos: a.qos_levels,
        rates: a.rates,
        step: a.step,
        probe_fraction: a.probe_fraction,
        timeout: a.timeout,
        detect_fraction: a.detect,
        background_period: a.background,
        storm: a.storm,
        wait_limit: a.wait_limit,
        knee_p99: a.knee_p99,
        journeys,
    })
    .await
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    let mut scenario = match &a.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read scenario {}", path.display()))?;
            Scenario::parse(&text).with_context(|| format!("scenario {}", path.display()))?
        }
        None => Scenario::default(),
    };
    for tables in &a.inject {
        scenario.inject.extend(
            Scenario::parse_inline(tables).with_context(|| format!("--inject '{tables}'"))?,
        );
    }
    let mut opts = fleet_options(&a.fleet).await?;
    opts.probe_fraction = a.probe_fraction;
    let journeys = journeys(&a.journeys, &opts)?;
    if journeys.is_none() && scenario.needs_journeys() {
        bail!("the scenario injects failing_unlocks or silent_unlocks: turn journeys on with --unlocks");
    }
    let n = opts.vehicles;
    let cpu = CpuMeter::start();
    let start = Instant::now();
    let (vehicle_journeys, backend_opts) = journeys.unzip();
    opts.journeys = vehicle_journeys;
    let fleet = Arc::new(Fleet::start(&opts));
    // Requests start once the fleet is connected (below); no vehicles, no backend.
    let unlock_rate = backend_opts.as_ref().map_or(0.0, |b| b.rate);
    let backend = match backend_opts {
        Some(b) if n > 0 => Some(
            Backend::start(BackendOptions {
                rate: 0.0,
                vehicles: fleet.ids(),
                ..b
            })
            .context("unlock backend")?,
        ),
        _ => None,
    };
    let injections = scenario::run(fleet.clone(), &scenario, start);
    let mut latencies = Latencies::default();
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(a.summary_every.max(Duration::from_millis(100)));
    let mut last = (Instant::now(), 0u64);
    let mut ramped = false;
    let work = async {
        loop {
            tick.tick().await;
            let s = fleet.stats();
            let ready = fleet.ready();
            let line = if !ramped && ready < n {
                let secs = start.elapsed().as_secs_f64().max(0.001);
                format!(
                    "connecting {ready}/{n} ({:.0}/s)  errors {}",
                    ready as f64 / secs,
                    get(&s.errors)
                )
            } else {
                if !ramped {
                    ramped = true;
                    tracing::info!(
                        vehicles = n,
                        secs = start.elapsed().as_secs_f64(),
                        "fleet connected"
                    );
                    if let Some(b) = &backend {
                        // parse_rate checked it: a refusal cannot happen, but is logged.
                        if let Err(e) = b.set_rate(unlock_rate) {
                            tracing::error!(error = %e, "--unlocks: requests not started");
                        }
                    }
                }
                let hb = get(&s.heartbeats);
                let rate = (hb - last.1) as f64 / last.0.elapsed().as_secs_f64().max(0.001);
                last = (Instant::now(), hb);
                let journeys = backend
                    .as_ref()
                    .map(|b| journey_summary(s, b.stats(), latencies.window(b.stats())));
                summary(s, ready, n, rate, cpu.cores()) + &journeys.unwrap_or_default()
            };
            let mut err = std::io::stderr().lock();
            let _ = if tty {
                write!(err, "\r\x1b[K{line}")
            } else {
                writeln!(err, "{line}")
            };
            let _ = err.flush();
        }
    };
    match a.duration {
        Some(d) => {
            let _ = tokio::time::timeout(d, work).await;
        }
        None => tokio::select! {
            _ = work => {}
            r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
        },
    }
    if tty {
        eprintln!();
    }
    for t in injections {
        t.abort();
    }
    let s = fleet.stats();
    let rate = get(&s.heartbeats) as f64 / start.elapsed().as_secs_f64().max(0.001);
    let journeys = backend.as_ref().map(|b| {
        latencies.window(b.stats());
        journey_summary(s, b.stats(), latencies.total())
    });
    eprintln!(
        "final: {}{}",
        summary(s, fleet.ready(), n, rate, cpu.cores()),
        journeys.unwrap_or_default()
    );
    if let Some(b) = backend {
        b.shutdown().await;
    }
    if let Ok(fleet) = Arc::try_unwrap(fleet) {
        fleet.shutdown().await;
    }
    Ok(())
}

fn summary(s: &FleetStats, ready: usize, n: usize, hb_rate: f64, cpu: Option<f64>) -> String {
    let probe = if get(&s.probes) > 0 {
        format!("  probes {} (lost {})", get(&s.probes), get(&s.probes_lost))
    } else {
        String::new()
    };
    format!(
        "connected {ready}/{n}  heartbeats/s {hb_rate:.0}  commands {} (out {}, in {})  acks {}  errors {}  reconnects {}  dropped {}{probe}  sim cpu {}",
        get(&s.commands),
        get(&s.service_out),
        get(&s.service_in),
        get(&s.acks),
        get(&s.errors),
        get(&s.reconnects),
        get(&s.heartbeats_dropped),
        cpu.map_or("?".to_owned(), |c| format!("{:.0}%", c * 100.0)),
    )
}

/// Answer latencies for the summary lines: each line's window, and the run so far (the
/// first [`MAX_SAMPLES`]).
#[derive(Default)]
struct Latencies {
    all: Vec<u32>,
}

impl Latencies {
    /// Percentiles since the last call, kept for [`Latencies::total`].
    fn window(&mut self, stats: &BackendStats) -> Percentiles {
        let window = stats.latency.take();
        let room = MAX_SAMPLES.saturating_sub(self.all.len());
        self.all.extend(window.iter().take(room));
        Percentiles::of_micros(window)
    }

    fn total(&self) -> Percentiles {
        Percentiles::of_micros(self.all.clone())
    }
}

fn journey_summary(fleet: &FleetStats, b: &BackendStats, latency: Percentiles) -> String {
    let f = b.figures();
    let latency = if latency.n > 0 {
        format!(" p50 {:.0} ms p99 {:.0} ms", latency.p50_ms, latency.p99_ms)
    } else {
        String::new()
    };
    let dropped = get(&fleet.unlock_answers_dropped);
    format!(
        "  unlocks sent {} ok {} failed {} timed out {} late {} unmatched {} pending {} refused {} dropped {}{latency}{}",
        f.sent,
        f.ok,
        f.failed,
        f.timed_out,
        f.late,
        f.unmatched,
        f.pending,
        f.refused,
        f.dropped,
        if dropped > 0 {
            format!(" (vehicles dropped {dropped} answers)")
        } else {
            String::new()
        },
    )
}
