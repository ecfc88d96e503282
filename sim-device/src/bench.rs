//! The benchmark driver inside the simulator: connects a fleet to one broker and runs the
//! phases (sustained heartbeats at stepped rates, detection latency, reconnect storm),
//! printing one JSON object per event on stdout. `scripts/bench.py` starts the brokers,
//! samples their CPU and memory at these events, restarts the broker when asked, and
//! prints the table.
//!
//! Measurements (all on the simulator's monotonic clock):
//! - *delivered rate* = heartbeats sent in a step / (step + drain), where the drain ends
//!   when every vehicle's barrier probe (sent after its last heartbeat) is answered. A
//!   connection is FIFO into the broker and its engine, so an answered barrier probe
//!   proves every earlier heartbeat of that vehicle was processed.
//! - *probe RTT* = heartbeat that reports a state other than the desired one -> the
//!   broker's corrective command arriving at the vehicle: uplink, rules, downlink.
//! - *detection* = `service_out` arrival - (vehicle's last heartbeat send + timeout). The
//!   broker's deadline starts at its receive time, later than the send, so this errs high.
//!
//! With [`BenchJourneys`], every rate step is run again right after itself with a backend
//! sending unlock requests at a fixed rate (`unlock_step_start`/`unlock_step_end`, the same
//! fields plus `unlocks`, `backend` (its figures over every request of the step, warm-up
//! included, each ended before they are taken) and `unlock_latency`), so one run compares
//! the heartbeat path with and without them.

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::backend::{Backend, BackendOptions};
use crate::fleet::{Fleet, FleetOptions, PROBE_TIMEOUT};
use crate::journey::JourneyOptions;
use crate::stats::{get, CpuMeter, Percentiles};

/// Unlock requests during repeated rate steps.
#[derive(Debug, Clone)]
pub struct BenchJourneys {
    /// The backend. Its `rate` is not used (it sends only during the repeated steps); with
    /// no `vehicles` it sends to the whole fleet.
    pub backend: BackendOptions,
    /// Requests per second during a repeated step.
    pub rate: f64,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The fleet (its `heartbeat` is the period while connecting and between phases).
    pub fleet: FleetOptions,
    /// Heartbeat QoS levels to step through.
    pub qos: Vec<u8>,
    /// Offered heartbeat rates (messages/s), stepped up until the knee.
    pub rates: Vec<u32>,
    /// Measured time per rate step.
    pub step: Duration,
    /// Share of heartbeats sent as probes during steps.
    pub probe_fraction: f64,
    /// The broker's heartbeat timeout (steps whose period comes near it are skipped).
    pub timeout: Duration,
    /// Detection phase: this share of the fleet goes silent (0 = skip the phase).
    pub detect_fraction: f64,
    /// Heartbeat period during detection and the storm (background load).
    pub background_period: Duration,
    /// Run the reconnect storm (the driver must restart the broker on `storm_ready`).
    pub storm: bool,
    /// Bound on each wait (connect, drain, storm).
    pub wait_limit: Duration,
    /// A step above this probe p99 ends the stepping for that QoS (the knee).
    pub knee_p99: Duration,
    /// Repeat every step with unlock requests (the fleet answers them on the backend's
    /// topics unless `fleet.journeys` says otherwise).
    pub journeys: Option<BenchJourneys>,
}

fn emit(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Runs every phase and returns when done. Progress goes to the log (stderr).
pub async fn run(opts: &BenchOptions) -> anyhow::Result<()> {
    let n = opts.fleet.vehicles;
    let cpu = CpuMeter::start();
    let started = Instant::now();
    let fleet_journeys = match (&opts.fleet.journeys, &opts.journeys) {
        (None, Some(j)) => Some(JourneyOptions {
            topics: j.backend.topics.clone(),
            ..JourneyOptions::answering()
        }),
        (set, _) => set.clone(),
    };
    let fleet = Fleet::start(&FleetOptions {
        probe_fraction: 0.0,
        heartbeat: opts.background_period,
        journeys: fleet_journeys,
        ..opts.fleet.clone()
    });
    let mut last_log = Instant::now();
    while fleet.ready() < n && started.elapsed() < opts.wait_limit {
        if last_log.elapsed() >= Duration::from_secs(2) {
            tracing::info!(connected = fleet.ready(), of = n, "connecting");
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_s = started.elapsed().as_secs_f64();
    let ready = fleet.ready();
    // Every vehicle's first heartbeats are processed (registration) once a barrier returns.
    let (tracked, _, tracked_s) = barrier(&fleet, opts.wait_limit).await;
    fleet.stats().probe_rtt.take();
    emit(json!({
        "event": "connected", "vehicles": n, "connected": ready, "tracked": tracked,
        "connect_s": round3(connect_s), "tracked_s": round3(connect_s + tracked_s),
        "sim_cpu": cpu.cores().map(round3), "unix_ms": crate::unix_ms(),
    }));
    if ready < n {
        tracing::warn!(
            connected = ready,
            of = n,
            "not every vehicle connected; measuring what did"
        );
    }
    let backend = match &opts.journeys {
        Some(j) => {
            let mut backend = j.backend.clone();
            backend.rate = 0.0;
            if backend.vehicles.is_empty() {
                backend.vehicles = fleet.ids();
            }
            let backend = Backend::start(backend)?;
            let wait = Instant::now();
            while !backend.is_ready() && wait.elapsed() < opts.wait_limit {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !backend.is_ready() {
                anyhow::bail!(
                    "the unlock backend did not connect and subscribe within {:?}",
                    opts.wait_limit
                );
            }
            Some((backend, j.rate))
        }
        None => None,
    };

    for &qos in &opts.qos {
        fleet.set_qos1(qos >= 1);
        for &rate in &opts.rates {
            let period = Duration::from_secs_f64(n as f64 / f64::from(rate.max(1)));
            if period > opts.timeout.mul_f64(0.5) || period < Duration::from_millis(1) {
                tracing::info!(
                    rate,
                    ?period,
                    "rate skipped: heartbeat period out of range for this fleet"
                );
                continue;
            }
            let r = step(&fleet, opts, qos, rate, period, None).await;
            let knee = r["knee"].as_bool().unwrap_or(false);
            emit(r);
            if let Some((backend, unlocks)) = &backend {
                let unlocks = Some((backend, *unlocks));
                emit(step(&fleet, opts, qos, rate, period, unlocks).await);
            }
            if knee {
                break;
            }
        }
    }
    fleet.set_heartbeat(opts.background_period);
    fleet.set_probe_fraction(0.0);

    if opts.detect_fraction > 0.0 {
        emit(detect(&fleet, opts).await);
    }
    if opts.storm {
        emit(storm(&fleet, opts).await);
    }
    emit(
        json!({"event": "done", "sim_cpu": cpu.cores().map(round3), "secs": round3(started.elapsed().as_secs_f64())}),
    );
    if let Some((backend, _)) = backend {
        backend.shutdown().await;
    }
    fleet.shutdown().await;
    Ok(())
}

/// Sends one probe from every connected vehicle (after earlier probes resolved) and waits
/// for the answers. Returns (answered, asked, seconds).
async fn barrier(fleet: &Fleet, limit: Duration) -> (usize, usize, f64) {
    settle_probes(fleet).await;
    let start = Instant::now();
    let mut pending: Vec<usize> = (0..fleet.len())
        .filter(|&i| {
            fleet
                .vehicle(i)
                .is_some_and(|v| v.is_ready() && !v.is_out_of_service())
        })
        .collect();
    let asked = pending.len();
    let mut unsent: Vec<usize> = pending.clone();
    let mut is_unsent = vec![false; fleet.len()];
    while start.elapsed() < limit {
        unsent.retain(|&i| {
            let failed = fleet.probe_now(i).is_none();
            is_unsent[i] = failed;
            failed
        });
        pending
            .retain(|&i| is_unsent[i] || fleet.vehicle(i).is_some_and(|v| v.probe_outstanding()));
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (asked - pending.len(), asked, start.elapsed().as_secs_f64())
}

/// Waits until no probe is outstanding (answered or given up), at most `PROBE_TIMEOUT`.
async fn settle_probes(fleet: &Fleet) {
    let settle = Instant::now();
    while (0..fleet.len()).any(|i| fleet.vehicle(i).is_some_and(|v| v.probe_outstanding()))
        && settle.elapsed() < PROBE_TIMEOUT
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One rate step; with `unlocks`, the backend sends that many requests per second during
/// it (from the warm-up on, so the measured window is steady).
async fn step(
    fleet: &Fleet,
    opts: &BenchOptions,
    qos: u8,
    rate: u32,
    period: Duration,
    unlocks: Option<(&Backend, f64)>,
) -> Value {
    let stats = fleet.stats();
    let name = if unlocks.is_some() {
        "unlock_step"
    } else {
        "step"
    };
    fleet.set_heartbeats_on(true);
    fleet.set_heartbeat(period);
    fleet.set_probe_fraction(opts.probe_fraction);
    // The backend's figures cover every request of the step, from the warm-up on (so
    // each one sent is also counted as it ends); the heartbeat figures, the window after.
    let backend0 = unlocks.map(|(b, per_sec)| {
        b.stats().take_latency();
        let f0 = b.stats().figures();
        // The CLI checked the rate; a refused one leaves the backend idle, and its figures
        // show it.
        let _ = b.set_rate(per_sec);
        f0
    });
    // One second (at least a period) to reach the rate before measuring.
    tokio::time::sleep(period.max(Duration::from_secs(1))).await;
    stats.probe_rtt.take();
    let (hb0, drop0, probes0, lost0) = (
        get(&stats.heartbeats),
        get(&stats.heartbeats_dropped),
        get(&stats.probes),
        get(&stats.probes_lost),
    );
    let cpu = CpuMeter::start();
    let t0 = Instant::now();
    emit(
        json!({"event": format!("{name}_start"), "qos": qos, "rate": rate, "unix_ms": crate::unix_ms()}),
    );
    tokio::time::sleep(opts.step).await;
    fleet.set_probe_fraction(0.0);
    fleet.set_heartbeats_on(false);
    if let Some((backend, _)) = unlocks {
        let _ = backend.set_rate(0.0);
    }
    let sent = get(&stats.heartbeats) - hb0;
    let dropped = get(&stats.heartbeats_dropped) - drop0;
    let send_s = t0.elapsed().as_secs_f64();
    let sim_cpu = cpu.cores();
    // The step's own probes first: the barrier's burst of probes is not steady state.
    settle_probes(fleet).await;
    let rtt = Percentiles::of_micros(stats.probe_rtt.take());
    let (answered, asked, _) = barrier(fleet, opts.wait_limit).await;
    let done_s = t0.elapsed().as_secs_f64();
    stats.probe_rtt.take();
    let probes = get(&stats.probes) - probes0;
    let lost = get(&stats.probes_lost) - lost0;
    let journeys = match (unlocks, backend0) {
        (Some((backend, per_sec)), Some(f0)) => {
            // Every request of the step ends (answered or timed out) before the figures.
            let limit = Instant::now() + opts.wait_limit;
            while backend.stats().figures().pending > 0 && Instant::now() < limit {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            json!({
                "unlocks": per_sec,
                "backend": backend.stats().figures().since(&f0),
                "unlock_latency": backend.stats().take_latency(),
            })
        }
        _ => json!({}),
    };
    let offered = f64::from(rate) * opts.step.as_secs_f64();
    let delivered_rate = sent as f64 / done_s;
    // Past the knee: the client could not hand over 95 % of the offered heartbeats (TCP
    // backpressure), a backlog remained at the end (drain beyond a second or 10 % of the
    // step), round trips went past `knee_p99`, or barrier probes went unanswered.
    let drain_s = done_s - send_s;
    let knee = (sent as f64) < 0.95 * offered
        || drain_s > (0.1 * opts.step.as_secs_f64()).max(1.0)
        || rtt.p99_ms > opts.knee_p99.as_secs_f64() * 1000.0
        || answered < asked;
    let mut end = json!({
        "event": format!("{name}_end"), "qos": qos, "rate": rate, "vehicles": fleet.len(),
        "period_s": round3(period.as_secs_f64()),
        "offered": offered.round(), "sent": sent, "dropped_at_client": dropped,
        "send_s": round3(send_s), "drain_s": round3(drain_s),
        "delivered_rate": delivered_rate.round(),
        "barrier_answered": answered, "barrier_asked": asked,
        "rtt": rtt, "probes": probes, "probes_lost": lost,
        "sim_cpu": sim_cpu.map(round3), "knee": knee, "unix_ms": crate::unix_ms(),
    });
    if let (Some(end), Value::Object(extra)) = (end.as_object_mut(), journeys) {
        end.extend(extra);
    }
    end
}

async fn detect(fleet: &Fleet, opts: &BenchOptions) -> Value {
    let stats = fleet.stats();
    fleet.set_heartbeats_on(true);
    fleet.set_heartbeat(opts.background_period);
    // Let every vehicle heartbeat at the background rate first.
    tokio::time::sleep(opts.background_period + Duration::from_secs(1)).await;
    let chosen: Vec<usize> = crate::scenario::select(fleet.len(), opts.detect_fraction, 99)
        .into_iter()
        .filter(|&i| {
            fleet
                .vehicle(i)
                .is_some_and(|v| v.is_ready() && !v.is_out_of_service())
        })
        .collect();
    let out0 = get(&stats.service_out);
    let t0 = fleet.now_us();
    let at_unix_ms = crate::unix_ms();
    for &i in &chosen {
        fleet.set_silent(i, true);
    }
    tracing::info!(
        vehicles = chosen.len(),
        at_unix_ms,
        "detection: vehicles go silent"
    );
    let timeout_us = opts.timeout.as_micros() as u64;
    let limit = Instant::now() + opts.timeout + opts.wait_limit;
    while Instant::now() < limit
        && !chosen
            .iter()
            .all(|&i| fleet.vehicle(i).is_some_and(|v| v.service_out_at() > t0))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut out_ms = Vec::new();
    for &i in &chosen {
        if let Some(v) = fleet.vehicle(i) {
            if v.service_out_at() > t0 {
                let deadline = v.last_heartbeat() + timeout_us;
                out_ms.push((v.service_out_at() as f64 - deadline as f64) / 1000.0);
            }
        }
    }
    let false_out = (get(&stats.service_out) - out0).saturating_sub(out_ms.len() as u64);
    // Resume: one heartbeat each now, then the schedule.
    let mut resumed = Vec::new();
    for &i in &chosen {
        fleet.set_silent(i, false);
        if let Some(at) = fleet.heartbeat_now(i) {
            resumed.push((i, at));
        }
    }
    let limit = Instant::now() + opts.wait_limit;
    while Instant::now() < limit
        && !resumed
            .iter()
            .all(|&(i, at)| fleet.vehicle(i).is_some_and(|v| v.service_in_at() >= at))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let in_ms: Vec<f64> = resumed
        .iter()
        .filter_map(|&(i, at)| {
            let v = fleet.vehicle(i)?;
            (v.service_in_at() >= at).then(|| (v.service_in_at() - at) as f64 / 1000.0)
        })
        .collect();
    json!({
        "event": "detect", "vehicles": fleet.len(), "silent": chosen.len(),
        "timeout_s": opts.timeout.as_secs_f64(), "background_rate": (fleet.len() as f64 / opts.background_period.as_secs_f64()).round(),
        "at_unix_ms": at_unix_ms,
        "service_out": Percentiles::of_millis(out_ms.clone()), "service_out_missing": chosen.len() - out_ms.len(),
        "service_in": Percentiles::of_millis(in_ms.clone()), "service_in_missing": resumed.len() - in_ms.len(),
        "false_service_out": false_out,
    })
}

async fn storm(fleet: &Fleet, opts: &BenchOptions) -> Value {
    let n = fleet.len();
    fleet.set_heartbeats_on(true);
    fleet.set_heartbeat(opts.background_period);
    fleet.set_probe_on_ready(true);
    let reconnects0 = get(&fleet.stats().reconnects);
    emit(json!({"event": "storm_ready", "unix_ms": crate::unix_ms()}));
    let wait_drop = Instant::now();
    while fleet.ready() >= n.max(1) && wait_drop.elapsed() < opts.wait_limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t_drop = fleet.now_us();
    if fleet.ready() >= n {
        return json!({"event": "storm", "error": "no connection dropped: was the broker restarted?"});
    }
    let limit = Instant::now() + opts.wait_limit;
    let (mut all_connected, mut all_tracked) = (None, None);
    let mut reprobe = Instant::now();
    while Instant::now() < limit && all_tracked.is_none() {
        let mut connected = 0;
        let mut tracked = 0;
        let now = fleet.now_us();
        let again = reprobe.elapsed() >= Duration::from_millis(500);
        for i in 0..n {
            if let Some(v) = fleet.vehicle(i) {
                if v.is_ready() && v.ready_at() > t_drop {
                    connected += 1;
                    if v.service_in_at() > v.ready_at() {
                        tracked += 1;
                    } else if again
                        && now.saturating_sub(v.ready_at()) > 500_000
                        && now.saturating_sub(v.probe_sent_at()) > 1_000_000
                    {
                        // Its probe on connect was not queued, or found nobody to answer
                        // it yet (a stand-in still reconnecting): ask again.
                        fleet.probe_now(i);
                    }
                }
            }
        }
        if again {
            reprobe = Instant::now();
        }
        if connected == n && all_connected.is_none() {
            all_connected = Some(now);
        }
        if tracked == n {
            all_tracked = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fleet.set_probe_on_ready(false);
    let first_up = (0..n)
        .filter_map(|i| fleet.vehicle(i).map(|v| v.ready_at()))
        .filter(|&t| t > t_drop)
        .min();
    let secs = |t: Option<u64>, from: Option<u64>| match (t, from) {
        (Some(t), Some(f)) => Some(round3((t.saturating_sub(f)) as f64 / 1e6)),
        _ => None,
    };
    let tracked_now = (0..n)
        .filter(|&i| {
            fleet
                .vehicle(i)
                .is_some_and(|v| v.ready_at() > t_drop && v.service_in_at() > v.ready_at())
        })
        .count();
    json!({
        "event": "storm", "vehicles": n,
        "all_connected_s": secs(all_connected, Some(t_drop)),
        "all_tracked_s": secs(all_tracked, Some(t_drop)),
        "all_connected_after_first_s": secs(all_connected, first_up),
        "all_tracked_after_first_s": secs(all_tracked, first_up),
        "first_reconnect_s": secs(first_up, Some(t_drop)),
        "tracked": tracked_now, "reconnects": get(&fleet.stats().reconnects) - reconnects0,
    })
}
