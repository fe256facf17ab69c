//! Phase timings on stderr when `KEEL_CNI_TRACE=1`: where an invocation spends its time,
//! for benchmarking without strace's overhead.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Option<Instant>> = OnceLock::new();

fn start() -> Option<Instant> {
    *START.get_or_init(|| std::env::var_os("KEEL_CNI_TRACE").map(|_| Instant::now()))
}

/// Prints microseconds since the first mark, when tracing is on.
pub fn mark(phase: &str) {
    if let Some(t0) = start() {
        eprintln!("keel-cni trace {:>8}us {phase}", t0.elapsed().as_micros());
    }
}
