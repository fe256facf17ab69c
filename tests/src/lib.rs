//! keel-tests: the cluster test harness. Tests drive the real binaries (`keel-control`, later
//! `keel-agent`) and the real `kubectl` builds from the google-cloud-sdk bin folder; nodes will
//! be network namespaces. Everything a test starts is stopped and removed by Drop guards.

pub mod control;
pub mod kubectl;
pub mod lab;

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

/// Polls `f` until it returns Some or `timeout` passes; panics with `what` on timeout.
pub fn poll<T>(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> T {
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
