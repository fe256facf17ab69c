//! API server benchmark (issue 2): 10,000 pod creates over HTTPS from 8 concurrent clients
//! against `keel-control serve` (pods/s, p50/p99, server peak RSS), the same number of
//! same-size puts into a local etcd through its HTTP gateway in the same run, and LIST of all
//! pods as JSON and as a Table.
//!
//! cargo build --release -p keel-control && cargo run --release -p keel-tests --example api_bench
//! (needs Debian's etcd-server for the baseline: apt-get install etcd-server)

use base64::Engine;
use keel_tests::control::ControlPlane;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOTAL: usize = 10_000;
const CLIENTS: usize = 8;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, wall: Duration, mut lat: Vec<Duration>) -> f64 {
    lat.sort();
    let rate = lat.len() as f64 / wall.as_secs_f64();
    println!(
        "{name:<28} {:>8.0} ops/s   p50 {:>7.2} ms   p99 {:>7.2} ms   total {:>6.2} s",
        rate,
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        wall.as_secs_f64()
    );
    wall.as_secs_f64()
}

/// Runs `f(i)` for i in 0..TOTAL over CLIENTS threads; returns wall time and latencies.
fn run_parallel(f: impl Fn(usize) + Sync) -> (Duration, Vec<Duration>) {
    let start = Instant::now();
    let lat = std::sync::Mutex::new(Vec::with_capacity(TOTAL));
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let (f, lat) = (&f, &lat);
            s.spawn(move || {
                let mut mine = Vec::with_capacity(TOTAL / CLIENTS);
                for i in (c..TOTAL).step_by(CLIENTS) {
                    let t = Instant::now();
                    f(i);
                    mine.push(t.elapsed());
                }
                lat.lock().expect("lock").extend(mine);
            });
        }
    });
    (start.elapsed(), lat.into_inner().expect("lock"))
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pod(i: usize) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("bench-{i:05}"), "labels": {"app": "bench", "shard": (i % 16).to_string()}},
           "spec": {"containers": [{"name": "web", "image": "nginx:1.14", "ports": [{"containerPort": 80}], "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}})
}

fn main() {
    // The API server and store alone, as etcd is measured alone: no scheduler writing back.
    let cp = ControlPlane::start_with(|_| {}, &["--no-controllers"]);
    let pid = cp.pid().expect("server pid");
    println!("keel-control serve pid {pid}, {TOTAL} creates from {CLIENTS} clients over HTTPS");
    let (wall, lat) = run_parallel(|i| {
        let (code, body) = cp.call("POST", "/api/v1/namespaces/default/pods", Some(&pod(i)));
        assert_eq!(code, 201, "{body}");
    });
    let keel_secs = report("keel: create pod (HTTPS)", wall, lat);
    let sample = cp.ok("GET", "/api/v1/namespaces/default/pods/bench-00000", None);
    let stored_size = serde_json::to_vec(&sample).map(|v| v.len()).unwrap_or(1024);
    for (name, accept) in [
        ("JSON", "application/json"),
        (
            "Table",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        ),
    ] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let resp = cp
                .http()
                .get(cp.url("/api/v1/namespaces/default/pods"))
                .header("Accept", accept)
                .send()
                .expect("list");
            let bytes = resp.bytes().expect("body");
            times.push(t.elapsed());
            assert!(bytes.len() > TOTAL * 100);
        }
        times.sort();
        println!(
            "keel: LIST {TOTAL} pods as {name:<5}  median {:>7.1} ms",
            times[2].as_secs_f64() * 1e3
        );
    }
    println!(
        "keel-control peak RSS (VmHWM) with {TOTAL} pods stored: {:.1} MiB",
        vm_hwm_kib(pid) as f64 / 1024.0
    );

    // Baseline: etcd on loopback, same number of puts of the same size, same concurrency.
    let dir = tempfile::tempdir().expect("tempdir");
    let port = 23790 + (std::process::id() % 100) as u16;
    let mut etcd = match Command::new("etcd")
        .args(["--data-dir", &dir.path().join("etcd").display().to_string()])
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{port}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{port}"),
        ])
        .args([
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{}", port + 1000),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{}", port + 1000),
        ])
        .args([
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{}", port + 1000),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("etcd is needed for the baseline ({e}): apt-get install etcd-server"),
    };
    let http = reqwest::blocking::Client::new();
    let put_url = format!("http://127.0.0.1:{port}/v3/kv/put");
    keel_tests::poll("etcd to answer", Duration::from_secs(20), || {
        http.post(&put_url)
            .body(r#"{"key":"cHJvYmU=","value":"eA=="}"#)
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
    let value = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; stored_size]);
    let (wall, lat) = run_parallel(|i| {
        let key = base64::engine::general_purpose::STANDARD
            .encode(format!("/registry/pods/default/bench-{i:05}"));
        let resp = http
            .post(&put_url)
            .body(format!(r#"{{"key":"{key}","value":"{value}"}}"#))
            .send()
            .expect("etcd put");
        assert!(resp.status().is_success());
    });
    let etcd_secs = report("etcd 3.4: put (HTTP gateway)", wall, lat);
    println!(
        "etcd peak RSS (VmHWM): {:.1} MiB",
        vm_hwm_kib(etcd.id()) as f64 / 1024.0
    );
    let _ = etcd.kill();
    let _ = etcd.wait();
    println!(
        "value size {stored_size} bytes; keel time / etcd time = {:.2}x",
        keel_secs / etcd_secs
    );
}
