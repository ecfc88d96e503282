//! The rules core at 1,000,000 vehicles: heartbeat handling, a deadline sweep where 1 %
//! expire, an idle tick, and memory per vehicle (a counting global allocator). Each figure
//! is printed beside a baseline measured in the same run (a bare `HashMap` update for the
//! heartbeat, a full scan of every deadline for the sweep).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput};
use fleet_rules::{Fleet, Heartbeat, RulesConfig, ServiceState, UnixMs};

/// Counts live heap bytes so the fleet's footprint can be measured, not guessed.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is
// updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const N: usize = 1_000_000;
const MIN: u64 = 60_000;
const T0: UnixMs = 28_333_340 * MIN;
const TIMEOUT: u64 = 5 * MIN;
/// Every 100th vehicle is a "scooter" with the 5-minute timeout; the rest are "parked"
/// with a timeout of years, so a sweep finds exactly 1 % due.
const SWEPT_EVERY: usize = 100;

fn ids() -> Vec<String> {
    (0..N).map(|i| format!("scooter-{i:07}")).collect()
}

fn config() -> RulesConfig {
    let mut c = RulesConfig::default();
    c.heartbeat
        .models
        .insert("parked".into(), Duration::from_secs(10 * 365 * 24 * 3600));
    c
}

fn model(i: usize) -> &'static str {
    if i.is_multiple_of(SWEPT_EVERY) {
        "scooter"
    } else {
        "parked"
    }
}

/// A heartbeat naming the model and the state applied, as a real scooter sends.
fn reporting(model: &str, battery: Option<u8>) -> Heartbeat<'_> {
    Heartbeat {
        model: Some(model),
        reported: Some(ServiceState::InService),
        battery,
    }
}

/// The fleet, every vehicle registered at `T0` with its model.
fn fleet(ids: &[String]) -> Fleet {
    let mut f = Fleet::new(config(), T0);
    for (i, id) in ids.iter().enumerate() {
        let _ = f.heartbeat(id, reporting(model(i), None), T0);
        if i.is_multiple_of(4096) {
            f.drain_effects();
        }
    }
    f.drain_effects();
    f
}

fn memory(ids: &[String]) -> Fleet {
    let before = LIVE.load(Ordering::Relaxed);
    let f = fleet(ids);
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "memory: {N} vehicles use {:.1} MB = {} bytes/vehicle (ids of {} bytes; id index, \
         slab, deadline heap, SLI ring of 43,201 buckets included)",
        bytes as f64 / 1e6,
        bytes / N,
        ids[0].len()
    );
    f
}

/// What a vehicle adds once it went silent (its flap history): 100,000 vehicles go silent
/// (the mass-loss guard off), measured once their effects are drained.
fn silent_memory() {
    const SILENT: usize = 100_000;
    let mut c = config();
    c.mass_loss.min_vehicles = usize::MAX;
    let mut f = Fleet::new(c, T0);
    for i in 0..SILENT {
        let _ = f.seen(&format!("silent-{i:06}"), T0);
    }
    f.drain_effects();
    f.tick(T0);
    let before = LIVE.load(Ordering::Relaxed);
    f.tick(T0 + 10 * TIMEOUT);
    f.drain_effects();
    // The next call frees the drained effect buffer.
    f.tick(T0 + 10 * TIMEOUT);
    let grown = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    println!(
        "memory: a vehicle that went silent once keeps {} more bytes (boxed flap history)",
        grown / SILENT
    );
}

fn heartbeats(c: &mut Criterion, f: &RefCell<Fleet>, ids: &[String], now: &mut UnixMs) {
    let mut g = c.benchmark_group("heartbeat");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("bare, existing vehicle", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            *now += 1;
            let _ = f
                .borrow_mut()
                .heartbeat(black_box(&ids[i]), Heartbeat::default(), *now);
        })
    });
    g.bench_function("with model and reported state", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            *now += 1;
            let _ = f
                .borrow_mut()
                .heartbeat(black_box(&ids[i]), reporting(model(i), None), *now);
        })
    });
    g.bench_function("with model, reported state and battery", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            *now += 1;
            let _ =
                f.borrow_mut()
                    .heartbeat(black_box(&ids[i]), reporting(model(i), Some(80)), *now);
        })
    });
    let mut baseline: HashMap<String, UnixMs> = ids.iter().map(|id| (id.clone(), T0)).collect();
    g.bench_function("baseline: HashMap<String, u64> update", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            *now += 1;
            if let Some(seen) = baseline.get_mut(black_box(ids[i].as_str())) {
                *seen = *now;
            }
        })
    });
    g.finish();
}

fn ticks(c: &mut Criterion, f: &RefCell<Fleet>, ids: &[String], now: &mut UnixMs) {
    let mut g = c.benchmark_group("tick");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    // Let every heap entry made stale by the heartbeat bench be re-checked once.
    *now += TIMEOUT;
    f.borrow_mut().tick(*now);
    f.borrow_mut().drain_effects();
    let idle_at = *now;
    g.bench_function("nothing due", |b| {
        b.iter(|| f.borrow_mut().tick(black_box(idle_at)))
    });

    let swept: Vec<&String> = ids.iter().step_by(SWEPT_EVERY).collect();
    let start = RefCell::new(*now);
    g.throughput(Throughput::Elements(swept.len() as u64));
    g.bench_function("sweep where 1% (10,000) expire", |b| {
        b.iter_batched(
            || {
                // Untimed: the swept vehicles talk once (clearing heartbeat_lost)...
                let mut at = start.borrow_mut();
                *at += TIMEOUT + MIN;
                let mut f = f.borrow_mut();
                for id in &swept {
                    let _ = f.heartbeat(id, Heartbeat::default(), *at);
                }
                f.drain_effects();
                *at + TIMEOUT
            },
            // ...and go silent: timed is the tick that takes all of them out.
            |due| f.borrow_mut().tick(due),
            BatchSize::PerIteration,
        )
    });
    // The steady state of the lazy heap: 1 % of the entries come due, but those vehicles
    // talked since, so each is pushed again at its real deadline.
    let due = RefCell::new(*start.borrow() + 2 * TIMEOUT + MIN);
    {
        let mut f = f.borrow_mut();
        let at = *due.borrow() - TIMEOUT;
        for id in &swept {
            let _ = f.heartbeat(id, Heartbeat::default(), at);
        }
        f.drain_effects();
    }
    g.bench_function("sweep where 1% come due but talked since", |b| {
        b.iter_batched(
            || {
                let mut due = due.borrow_mut();
                let mut f = f.borrow_mut();
                for id in &swept {
                    let _ = f.heartbeat(id, Heartbeat::default(), *due - 1);
                }
                let this = *due;
                *due += TIMEOUT - 1;
                this
            },
            |at| f.borrow_mut().tick(at),
            BatchSize::PerIteration,
        )
    });
    let deadlines: Vec<(UnixMs, u64)> = (0..N as u64).map(|i| (T0 + i, TIMEOUT)).collect();
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("baseline: scan 1,000,000 deadlines", |b| {
        b.iter(|| {
            black_box(&deadlines)
                .iter()
                .filter(|(seen, timeout)| seen + timeout <= T0 + TIMEOUT + 10_000)
                .count()
        })
    });
    g.finish();
    drop(deadlines);
}

fn sli(c: &mut Criterion, f: &RefCell<Fleet>, now: UnixMs) {
    let mut g = c.benchmark_group("sli");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("report over 30 days of buckets", |b| {
        b.iter(|| black_box(f.borrow_mut().sli(now)))
    });
    g.finish();
}

fn main() {
    let ids = ids();
    silent_memory();
    let f = RefCell::new(memory(&ids));
    let mut c = Criterion::default().configure_from_args();
    let mut now = T0;
    heartbeats(&mut c, &f, &ids, &mut now);
    ticks(&mut c, &f, &ids, &mut now);
    sli(&mut c, &f, now);
    c.final_summary();
}
