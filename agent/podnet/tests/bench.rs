//! Benchmark (ignored by default; run as root with
//! `cargo test -p keel-podnet --release --test bench -- --ignored --nocapture`): sequential
//! `setup` (namespace + lo + CNI ADD + record), cached `setup` and `teardown` of N pods on one
//! lab node, once with keel-bridge/keel-host-local (the default conflist) and once with the
//! reference bridge/host-local from /usr/lib/cni through the same code, in the same run.

mod common;

use common::Lab;
use serde_json::{Value, json};

fn bench(n: &common::Node, count: usize) -> Value {
    let cfg = n.config.to_string_lossy().into_owned();
    let out = n.lab_ok(&["bench", &cfg, &count.to_string()]);
    serde_json::from_str(out.trim()).expect("bench JSON")
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn setup_teardown_latency() {
    let count: usize = std::env::var("KEEL_PODNET_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let lab = Lab::new("bench", 1);
    let n = &lab.nodes[0];
    let keel = bench(n, count);
    let refdir = n.dir.join("ref.d");
    std::fs::create_dir_all(&refdir).expect("ref.d");
    std::fs::write(
        refdir.join("10-ref.conflist"),
        json!({"cniVersion": "1.0.0", "name": "ref", "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
             "hairpinMode": true, "ipam": {"type": "host-local", "dataDir": n.dir.join("ref-ipam"),
             "ranges": [[{"subnet": "10.251.0.0/24"}]]}}
        ]})
        .to_string(),
    )
    .expect("conflist");
    n.write_config(json!({"confDir": refdir, "binDirs": [common::plugin_dir(), "/usr/lib/cni"]}));
    let reference = bench(n, count);
    println!("pods: {count} (sequential), times in ms");
    println!("| step | keel plugins p50 / p99 | reference plugins p50 / p99 | ratio p50 |");
    println!("|---|---|---|---|");
    for k in ["setup", "setupCached", "teardown"] {
        let (a, b) = (&keel[k], &reference[k]);
        let ratio = a["p50"].as_f64().unwrap_or(0.0) / b["p50"].as_f64().unwrap_or(1.0);
        println!(
            "| {k} | {} / {} | {} / {} | {ratio:.2} |",
            a["p50"], a["p99"], b["p50"], b["p99"]
        );
    }
}
