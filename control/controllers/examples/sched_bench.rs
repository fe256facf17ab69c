//! Scheduler and controller benchmark against the real `keel-control` binary:
//! 1. 100 Ready nodes and 10,000 pending pods are written with the controllers off
//!    (`serve --no-controllers`), then `serve` restarts with them on; we time until every pod
//!    is bound (pods bound per second; clusterloader2's threshold for kube-scheduler is 100/s);
//! 2. a Deployment scaled from 0 to 1,000 replicas: time until every pod is bound and the
//!    ReplicaSet status says 1,000, and until all are Ready (the benchmark plays the kubelets);
//! 3. the control plane's RSS with 100 nodes and 10,000 (then 11,000) pods.
//!
//! Run: `cargo build --release -p keel-control && cargo run --release -p keel-controllers --example sched_bench`

use futures_util::{StreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODES: usize = 100;
const PODS: usize = 10_000;
const REPLICAS: i32 = 1_000;

fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/examples/<bench> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("cannot locate the target dir"))?;
    let b = dir.join(name);
    anyhow::ensure!(
        b.exists(),
        "{} is missing: run `cargo build --release -p keel-control` first",
        b.display()
    );
    Ok(b)
}

fn serve(data: &Path, controllers: bool, log: &Path) -> anyhow::Result<Child> {
    let mut c = Command::new(bin("keel-control")?);
    c.args(["serve", "--data-dir"]).arg(data);
    if !controllers {
        c.arg("--no-controllers");
    }
    Ok(c.stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

async fn client(data: &Path, port: u16) -> anyhow::Result<Client> {
    let mut kc = kube::config::Kubeconfig::read_from(data.join("admin.kubeconfig"))?;
    for c in &mut kc.clusters {
        if let Some(cl) = c.cluster.as_mut() {
            cl.server = Some(format!("https://127.0.0.1:{port}"));
        }
    }
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = Client::try_from(cfg)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.apiserver_version().await.is_ok() {
            return Ok(client);
        }
        anyhow::ensure!(Instant::now() < deadline, "keel-control did not answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn node(i: usize) -> anyhow::Result<Node> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i:03}"), "labels": {"kubernetes.io/hostname": format!("node-{i:03}")}},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "250"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "250"},
        }
    }))?)
}

fn pod(i: usize) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("bench-{i:05}"), "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "hub.test.com/pause",
            "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}}}]}
    }))?)
}

async fn unbound(pods: &Api<Pod>, selector: &str) -> anyhow::Result<usize> {
    let lp = ListParams::default()
        .fields("spec.nodeName=")
        .labels(selector);
    Ok(pods.list(&lp).await?.items.len())
}

/// Marks every bound, not yet Running pod of `selector` Running and Ready.
async fn kubelets(pods: Api<Pod>, selector: String, stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await else {
            continue;
        };
        let todo: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running"))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        stream::iter(todo)
            .for_each_concurrent(32, |name| {
                let pods = pods.clone();
                let now = now.clone();
                async move {
                    let patch = json!({"status": {"phase": "Running", "podIP": "10.244.0.9",
                        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now},
                                       {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}]}});
                    let _ = pods
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                }
            })
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The scheduling decisions alone, in-process: filter + score + assume for PODS pods over
/// NODES nodes (no API calls), to separate the algorithm from the API server's write path.
fn decisions_per_second() -> f64 {
    use keel_controllers::scheduler::cache::{NodeInfo, PodInfo, Resources};
    use keel_controllers::scheduler::score::select_host;
    let mut nodes: Vec<NodeInfo> = (0..NODES)
        .map(|i| {
            let mut n = NodeInfo::new(&format!("node-{i:03}"));
            n.exists = true;
            n.ready = true;
            n.allocatable = Resources {
                milli_cpu: 32_000,
                memory: 128 << 30,
                ephemeral_storage: 0,
                pods: 250,
            };
            n
        })
        .collect();
    let t = Instant::now();
    for i in 0..PODS {
        let p = PodInfo {
            key: format!("default/bench-{i:05}"),
            namespace: "default".into(),
            requests: Resources {
                milli_cpu: 10,
                memory: 10 << 20,
                ephemeral_storage: 0,
                pods: 1,
            },
            nonzero: (10, 10 << 20),
            owner_uid: Some(format!("rs-{}", i % 10)),
            ..Default::default()
        };
        let Ok(host) = select_host(&p, nodes.iter()) else {
            break;
        };
        if let Some(n) = nodes.iter_mut().find(|n| n.name == host) {
            n.add_pod(p);
        }
    }
    PODS as f64 / t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let decisions = decisions_per_second();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("control");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let out = Command::new(bin("keel-control")?)
        .args(["init", "--data-dir"])
        .arg(&data)
        .args([
            "--advertise-address",
            "127.0.0.1",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "keel-control init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = dir.path().join("serve.log");

    // Phase 0: nodes and pending pods, with the scheduler off.
    let api_only = serve(&data, false, &log)?;
    let c = client(&data, port).await?;
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    for i in 0..NODES {
        nodes.create(&PostParams::default(), &node(i)?).await?;
    }
    let t = Instant::now();
    let objs: Vec<Pod> = (0..PODS).map(pod).collect::<anyhow::Result<_>>()?;
    let created: Vec<_> = stream::iter(objs)
        .map(|p| {
            let pods = pods.clone();
            async move { pods.create(&PostParams::default(), &p).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let failed = created.iter().filter(|r| r.is_err()).count();
    anyhow::ensure!(failed == 0, "{failed} pod creations failed");
    let create_rate = PODS as f64 / t.elapsed().as_secs_f64();
    stop(api_only);

    // Phase 1: the scheduler starts with 10,000 pending pods.
    let t0 = Instant::now();
    let cp = serve(&data, true, &log)?;
    let pid = cp.id();
    let c = client(&data, port).await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let mut t_first = None;
    let t_all;
    loop {
        let left = unbound(&pods, "app=bench").await?;
        if left < PODS && t_first.is_none() {
            t_first = Some(t0.elapsed());
        }
        if left == 0 {
            t_all = t0.elapsed();
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(600),
            "{left} pods still unbound after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = t_first.unwrap_or(t_all);
    let rate_window = PODS as f64 / (t_all - first).as_secs_f64().max(1e-3);
    let rate_total = PODS as f64 / t_all.as_secs_f64();
    let rss_10k = rss_mib(pid);

    // Phase 2: a Deployment from 0 to 1,000 replicas.
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "scale"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "scale"}},
            "template": {"metadata": {"labels": {"app": "scale"}},
                "spec": {"containers": [{"name": "c", "image": "hub.test.com/pause"}]}}}
    }))?;
    deploys.create(&PostParams::default(), &d).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sim = tokio::spawn(kubelets(pods.clone(), "app=scale".into(), stop_rx));
    let rss_api: Api<ReplicaSet> = Api::namespaced(c.clone(), "default");
    let t1 = Instant::now();
    deploys
        .patch(
            "scale",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": REPLICAS}})),
        )
        .await?;
    let (mut t_bound, t_ready);
    t_bound = None;
    loop {
        let rs = rss_api
            .list(&ListParams::default().labels("app=scale"))
            .await?;
        let st = rs
            .items
            .first()
            .and_then(|r| r.status.clone())
            .unwrap_or_default();
        if t_bound.is_none() && st.replicas == REPLICAS && unbound(&pods, "app=scale").await? == 0 {
            t_bound = Some(t1.elapsed());
        }
        if st.ready_replicas == Some(REPLICAS) && t_bound.is_some() {
            t_ready = t1.elapsed();
            break;
        }
        anyhow::ensure!(
            t1.elapsed() < Duration::from_secs(600),
            "deployment not scaled after 10 minutes: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);
    let _ = sim.await;
    let rss_11k = rss_mib(pid);
    stop(cp);

    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("| measure | value |");
    println!("|---|---|");
    println!("| machine | {cpus} CPUs (shared) |");
    println!(
        "| pod creation through the API (64 concurrent clients, phase 0) | {create_rate:.0} pods/s |"
    );
    println!(
        "| scheduler: {PODS} pending pods on {NODES} nodes, all bound after | {:.2} s from `serve` start |",
        t_all.as_secs_f64()
    );
    println!(
        "| scheduler: first bind after start | {:.2} s |",
        first.as_secs_f64()
    );
    println!(
        "| scheduler: pods bound/s, first to last bind | {rate_window:.0} pods/s ({:.1}x clusterloader2's 100 pods/s) |",
        rate_window / 100.0
    );
    println!("| scheduler: pods bound/s, including start-up | {rate_total:.0} pods/s |");
    println!(
        "| scheduler decisions alone (filter+score+assume, in-process, no API) | {decisions:.0} pods/s |"
    );
    println!(
        "| deployment 0 -> {REPLICAS}: all bound and RS status.replicas = {REPLICAS} | {:.2} s |",
        t_bound.unwrap_or_default().as_secs_f64()
    );
    println!(
        "| deployment 0 -> {REPLICAS}: RS readyReplicas = {REPLICAS} (simulated kubelets) | {:.2} s |",
        t_ready.as_secs_f64()
    );
    println!("| control plane RSS, {NODES} nodes + {PODS} pods | {rss_10k:.0} MiB |");
    println!(
        "| control plane RSS, {NODES} nodes + {} pods | {rss_11k:.0} MiB |",
        PODS + REPLICAS as usize
    );
    Ok(())
}
