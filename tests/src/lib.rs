//! keel-tests: the cluster test harness. Tests drive the real binaries (`keel-control`,
//! `keel-agent`, `keel-shim`) and the real `kubectl` builds from the google-cloud-sdk bin
//! folder; nodes are network namespaces (`lab`), images come from Debian's docker-registry
//! running in the lab (`registry`, `images`), and `cluster` puts them together as the
//! reference walkthrough's three machines. Everything a test starts is stopped and removed by
//! Drop guards (`teardown`).

pub mod cluster;
pub mod control;
pub mod images;
pub mod kubectl;
pub mod lab;
pub mod registry;
pub mod teardown;

use std::path::PathBuf;

/// A binary of this workspace, from the target dir the tests were built in.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("tests run from target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// `d` times `$KEEL_TIMEOUT_SCALE` (default 1): the cgroup v2 VM runs without KVM, several
/// times slower than the host, and sets it.
pub fn scaled(d: std::time::Duration) -> std::time::Duration {
    let scale = std::env::var("KEEL_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(1);
    d * scale
}

/// Polls `f` until it returns Some or `timeout` (scaled) passes; panics with `what` on timeout.
pub fn poll<T>(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let timeout = scaled(timeout);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
