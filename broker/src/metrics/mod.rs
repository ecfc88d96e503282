//! The broker's metric primitives: the Prometheus text format ([`TextWriter`]), a
//! histogram of atomics, and counter helpers. Each component owns its counters and writes
//! its own families; the ops API puts one exposition together per scrape. A leaf module.
//!
//! Why hand-written rather than a client crate: almost every figure already exists as an
//! atomic in its component, or as state the engine owns and reports per scrape (vehicles
//! by state, SLI, burn rates). A client registry would mirror each into a second set of
//! objects; writing the text format directly from those values is ~200 lines with tests,
//! and the names, units and labels stay next to the values they describe.

mod histogram;
mod text;

use std::sync::atomic::{AtomicU64, Ordering};

pub use histogram::{Histogram, HistogramSnapshot};
pub use text::{Kind, TextWriter};

/// Adds one.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
