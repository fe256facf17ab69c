//! Proxy sync benchmark (docs/benchmarks/proxy.md): N services with 2-3 endpoints each, the
//! same shape as `/work/shared/bench/proxy_rules_baseline.py` (every 10th service has a
//! NodePort, every 20th ClientIP affinity, the last one's single endpoint is a listener).
//! Times a full sync, an incremental sync of one changed service, and TCP connect() to the
//! last service. Runs everything inside a network namespace `kprx-bench-<pid>` that it
//! deletes at the end.
//!
//! `cargo run --release -p keel-proxy --example bench -- [--sizes 100,1000,10000] [--reps 5]
//! [--local]` (`--local`: every endpoint's nodeName is this node, so the proxy also fills its
//! local-endpoints set; by default no endpoint is local).

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{
    ClientIPConfig, Service, ServicePort, ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keel_proxy::{Cidr, CommandRunner, NodeInfo, Proxier, Runner};

const PROBE_EP: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 254);

fn ip(base: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + n)
}

fn service(i: usize, nodeport: Option<i32>, affinity: bool) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(format!("ns{}", i % 50)),
            name: Some(format!("svc{i}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(
                if nodeport.is_some() {
                    "NodePort"
                } else {
                    "ClusterIP"
                }
                .into(),
            ),
            cluster_ip: Some(ip(Ipv4Addr::new(10, 96, 0, 0), 1 + i as u32).to_string()),
            ports: Some(vec![ServicePort {
                name: Some("p80".into()),
                port: 80,
                protocol: Some("TCP".into()),
                node_port: nodeport,
                ..Default::default()
            }]),
            session_affinity: affinity.then(|| "ClientIP".into()),
            session_affinity_config: affinity.then_some(SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(10800),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn slice(i: usize, eps: &[Ipv4Addr], local: bool) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(format!("ns{}", i % 50)),
            name: Some(format!("svc{i}-abcde")),
            labels: Some([("kubernetes.io/service-name".to_string(), format!("svc{i}"))].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: eps
            .iter()
            .map(|a| Endpoint {
                addresses: vec![a.to_string()],
                node_name: local.then(|| "bench".to_string()),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("p80".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn connect_us(dst: Ipv4Addr, port: u16, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let s = TcpStream::connect_timeout(
            &SocketAddrV4::new(dst, port).into(),
            Duration::from_secs(2),
        )
        .with_context(|| format!("connect {dst}:{port}"))?;
        t.push(start.elapsed().as_secs_f64() * 1e6);
        drop(s);
    }
    t.sort_by(f64::total_cmp);
    Ok((t[n / 2], t[n * 9 / 10]))
}

fn inner(sizes: &[usize], reps: usize, local: bool) -> anyhow::Result<()> {
    // Never change the host's namespace: --inner only runs inside the netns made below.
    let out = Command::new("ip")
        .args(["netns", "identify", &std::process::id().to_string()])
        .output()?;
    if !String::from_utf8_lossy(&out.stdout).starts_with("kprx-bench-") {
        bail!("--inner runs only inside a kprx-bench-* network namespace; run without --inner");
    }
    let sh = |args: &[&str]| -> anyhow::Result<()> {
        let st = Command::new(args[0]).args(&args[1..]).status()?;
        if !st.success() {
            bail!("{args:?} failed");
        }
        Ok(())
    };
    sh(&["ip", "link", "set", "lo", "up"])?;
    sh(&["ip", "addr", "add", &format!("{PROBE_EP}/32"), "dev", "lo"])?;
    sh(&["ip", "route", "add", "10.96.0.0/12", "dev", "lo"])?;
    let listener = TcpListener::bind(SocketAddrV4::new(PROBE_EP, 8080))?;
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            drop(c)
        }
    });
    let (d50, d90) = connect_us(PROBE_EP, 8080, 300)?;
    println!("| direct to the endpoint (no rules) | | | | | {d50:.0}/{d90:.0} |");
    for &n in sizes {
        let node = NodeInfo {
            name: "bench".into(),
            addresses: vec![Ipv4Addr::new(192, 168, 0, 1)],
            cluster_cidr: Some(
                "10.244.0.0/16"
                    .parse::<Cidr>()
                    .map_err(anyhow::Error::msg)?,
            ),
        };
        let mut p = Proxier::new(node, Timed::default());
        let mut next_ep = 1u32;
        let mut all_eps = Vec::new();
        for i in 0..n {
            let probe = i == n - 1;
            let eps: Vec<Ipv4Addr> = if probe {
                vec![PROBE_EP]
            } else {
                let k = 2 + (i % 2) as u32;
                let v = (0..k)
                    .map(|j| ip(Ipv4Addr::new(10, 244, 0, 0), next_ep + j))
                    .collect();
                next_ep += k;
                v
            };
            let np = (i % 10 == 5 && !probe).then(|| 30000 + ((i / 10) % 2768) as i32);
            p.upsert_service(service(i, np, i % 20 == 7 && !probe));
            p.upsert_slice(slice(i, &eps, local));
            all_eps.push(eps);
        }
        let start = Instant::now();
        let r = p.sync_full()?;
        let full = start.elapsed().as_secs_f64();
        let full_nft = p.runner_mut().last_nft;
        let start = Instant::now();
        p.sync_full()?;
        let resync = start.elapsed().as_secs_f64();
        let probe_ip = ip(Ipv4Addr::new(10, 96, 0, 0), n as u32);
        let (c50, c90) = connect_us(probe_ip, 80, 300)?;
        let mut inc = Vec::new();
        let mut inc_nft = Vec::new();
        let mut inc_bytes = 0;
        for rep in 0..reps {
            let i = (rep * 7919 + 13) % (n - 1).max(1);
            all_eps[i][0] = ip(Ipv4Addr::new(10, 250, 0, 0), rep as u32 + 1);
            p.upsert_slice(slice(i, &all_eps[i], local));
            let start = Instant::now();
            let r = p.sync()?;
            inc.push(start.elapsed().as_secs_f64());
            inc_nft.push(p.runner_mut().last_nft);
            inc_bytes = r.script_bytes;
        }
        println!(
            "| keel nft maps{} | {n} | {:.2} | {full:.3} (nft {full_nft:.3}) | {resync:.3} | {:.1} ({inc_bytes} B; nft {:.1}) | {c50:.0}/{c90:.0} |",
            if local { ", all endpoints local" } else { "" },
            r.script_bytes as f64 / 1e6,
            median(inc) * 1e3,
            median(inc_nft) * 1e3
        );
        if std::env::var_os("KEEL_PROXY_DUMP").is_none() {
            keel_proxy::cleanup(&mut CommandRunner::default())?;
        }
    }
    Ok(())
}

/// CommandRunner that also records how long the last nft run took.
#[derive(Default)]
struct Timed {
    inner: CommandRunner,
    last_nft: f64,
}

impl Runner for Timed {
    fn nft(&mut self, script: &str) -> Result<(), keel_proxy::Error> {
        let start = Instant::now();
        let r = self.inner.nft(script);
        self.last_nft = start.elapsed().as_secs_f64();
        r
    }
    fn conntrack_delete(&mut self, args: &[String]) -> Result<(), keel_proxy::Error> {
        self.inner.conntrack_delete(args)
    }
}

struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str, default: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or(default.into())
    };
    let sizes: Vec<usize> = get("--sizes", "100,1000,10000")
        .split(',')
        .map(|s| s.parse().context("--sizes: comma-separated counts"))
        .collect::<anyhow::Result<_>>()?;
    let reps: usize = get("--reps", "5").parse().context("--reps: a number")?;
    if args.iter().any(|a| a == "--inner") {
        return inner(&sizes, reps, args.iter().any(|a| a == "--local"));
    }
    let ns = Netns(format!("kprx-bench-{}", std::process::id()));
    if !Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()?
        .success()
    {
        bail!("ip netns add {} failed (needs root and iproute2)", ns.0);
    }
    println!(
        "| mode | services | script MB | full s | resync s | incremental ms (bytes) | connect us p50/p90 |"
    );
    println!("|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe()?;
    let st = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(exe)
        .args([
            if args.iter().any(|a| a == "--local") {
                "--local"
            } else {
                "--inner"
            },
            "--inner",
            "--sizes",
            &get("--sizes", "100,1000,10000"),
            "--reps",
            &reps.to_string(),
        ])
        .status()?;
    if !st.success() {
        bail!("benchmark run failed");
    }
    Ok(())
}
