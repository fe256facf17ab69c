//! Pod startup benchmark (issue 8, deliverable 9): creates N pods (image already on the node)
//! and reports the latency from each pod's create request to the moment a watch sees it
//! Running and Ready (kubelet's pod startup SLI: creation to running, observed by watch), then
//! the time for a Deployment of N replicas to have every replica Running.
//!
//! ```text
//! pod_bench --kubeconfig admin.kubeconfig --image nginx:1.14 --pods 100 [--node NAME] [--hold SECS]
//! ```
//! Prints one JSON object; `scripts/bench-pods.sh` runs it against a one-node lab.

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn running(p: &Pod) -> bool {
    let st = p.status.as_ref();
    st.and_then(|s| s.phase.as_deref()) == Some("Running")
        && st
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let kubeconfig = arg("--kubeconfig", "/var/lib/keel/control/admin.kubeconfig");
    let image = arg("--image", "nginx:1.14");
    let n: usize = arg("--pods", "100").parse()?;
    let node = arg("--node", "");
    let ns = arg("--namespace", "default");
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(cfg)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // Watch first, so no transition is missed.
    let lp = watcher::Config::default().labels("keel-bench=pods");
    let mut stream = watcher::watcher(pods.clone(), lp).boxed();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    tokio::spawn(async move {
        while let Some(Ok(ev)) = stream.next().await {
            if let Event::Apply(p) | Event::InitApply(p) = ev
                && running(&p)
            {
                let _ = tx.send((p.metadata.name.clone().unwrap_or_default(), Instant::now()));
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut created: HashMap<String, Instant> = HashMap::new();
    let t0 = Instant::now();
    for i in 0..n {
        let name = format!("bench-{i}");
        let mut spec = json!({"containers": [{"name": "web", "image": image, "imagePullPolicy": "IfNotPresent"}]});
        if !node.is_empty() {
            spec["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"keel-bench": "pods"}},
            "spec": spec,
        }))?;
        created.insert(name.clone(), Instant::now());
        pods.create(&PostParams::default(), &pod).await?;
    }
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while latencies.len() < n && Instant::now() < deadline {
        let Ok(Some((name, at))) = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await
        else {
            break;
        };
        if let Some(c) = created.remove(&name) {
            latencies.push(at.duration_since(c).as_secs_f64() * 1000.0);
        }
    }
    let all_running = t0.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let summary = json!({
        "pods": n,
        "running": latencies.len(),
        "p50_ms": percentile(&latencies, 0.5),
        "p90_ms": percentile(&latencies, 0.9),
        "p99_ms": percentile(&latencies, 0.99),
        "max_ms": latencies.last().copied().unwrap_or(f64::NAN),
        "all_running_s": all_running,
    });
    println!("{summary}");
    // `--hold SECS`: keep the pods running that long (the script samples memory meanwhile).
    let hold: u64 = arg("--hold", "0").parse()?;
    tokio::time::sleep(Duration::from_secs(hold)).await;
    // Delete them (grace 0 skips nothing on the node: the agent still stops and removes them).
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete_collection(&dp, &ListParams::default().labels("keel-bench=pods"))
        .await?;
    let wait_gone = Instant::now();
    while !pods
        .list(&ListParams::default().labels("keel-bench=pods"))
        .await?
        .items
        .is_empty()
    {
        if wait_gone.elapsed() > Duration::from_secs(300) {
            anyhow::bail!("bench pods were not removed within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A Deployment of N replicas.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let mut tmpl =
        json!({"containers": [{"name": "web", "image": image, "imagePullPolicy": "IfNotPresent"}]});
    if !node.is_empty() {
        tmpl["nodeSelector"] = json!({"kubernetes.io/hostname": node});
    }
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bench-deploy"},
        "spec": {"replicas": n, "selector": {"matchLabels": {"app": "bench-deploy"}},
                 "template": {"metadata": {"labels": {"app": "bench-deploy"}}, "spec": tmpl}},
    }))?;
    let t1 = Instant::now();
    deploys.create(&PostParams::default(), &d).await?;
    let lp = ListParams::default().labels("app=bench-deploy");
    let mut deploy_s = f64::NAN;
    while t1.elapsed() < Duration::from_secs(600) {
        let list = pods.list(&lp).await?;
        if list.items.iter().filter(|p| running(p)).count() >= n {
            deploy_s = t1.elapsed().as_secs_f64();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{}",
        json!({"deployment_replicas": n, "all_running_s": deploy_s})
    );
    deploys
        .delete("bench-deploy", &DeleteParams::foreground())
        .await?;
    Ok(())
}
