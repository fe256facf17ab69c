//! DNS throughput benchmark (docs/benchmarks/dns.md): fills the record table with N
//! services, serves it on 127.0.0.1 with the real UDP server, and drives it with
//! `dnsperf` (Debian `dnsperf`) for service-name A queries.
//!
//! `cargo run --release -p keel-dns --example bench -- [--services 10000] [--seconds 10] [--clients 4]`

use std::process::Command;

use anyhow::{Context, bail};
use serde_json::json;

fn arg(name: &str, default: &str) -> String {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1))
        .cloned()
        .unwrap_or(default.into())
}

fn main() -> anyhow::Result<()> {
    let n: u32 = arg("--services", "10000").parse().context("--services")?;
    let seconds = arg("--seconds", "10");
    let clients = arg("--clients", "4");
    let table = keel_dns::shared_table("cluster.local");
    {
        let mut t = table
            .write()
            .map_err(|_| anyhow::anyhow!("table lock poisoned"))?;
        for i in 0..n {
            let svc = serde_json::from_value(json!({
                "metadata": {"namespace": format!("ns{}", i % 50), "name": format!("svc{i}")},
                "spec": {"clusterIP": std::net::Ipv4Addr::from(0x0a60_0001 + i).to_string(),
                         "ports": [{"name": "http", "port": 80}]}}))?;
            t.apply_service(&svc);
        }
    }
    let dir = tempfile::tempdir()?;
    let qfile = dir.path().join("queries.txt");
    let mut q = String::new();
    for i in (0..n).step_by((n as usize / 1000).max(1)) {
        q.push_str(&format!("svc{i}.ns{}.svc.cluster.local A\n", i % 50));
    }
    std::fs::write(&qfile, q)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let port = rt.block_on(async {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let port = udp.local_addr()?.port();
        tokio::spawn(keel_dns::run_udp(
            udp,
            table,
            keel_dns::Config::default(),
            std::future::pending(),
        ));
        anyhow::Ok(port)
    })?;
    let out = Command::new("dnsperf")
        .args(["-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .arg(&qfile)
        .args(["-l", &seconds, "-c", &clients, "-Q", "1000000"])
        .output()
        .context("run dnsperf (apt-get install -y dnsperf)")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!("dnsperf failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
