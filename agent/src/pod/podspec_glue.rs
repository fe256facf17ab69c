//! The seam between the executor and the keel-podspec / keel-podnet libraries: cgroups,
//! network, /etc files and volumes for one pod.

use super::Ctx;
use k8s_openapi::api::core::v1::Pod;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Handle on the node's pod network.
pub type Net = keel_podnet::Network;

pub fn ensure_cgroup(_ctx: &Arc<Ctx>, pod: &Pod, path: &str) -> Result<(), String> {
    keel_podspec::cgroup::ensure_pod_cgroup(path, pod).map_err(|e| e.to_string())
}

pub fn remove_cgroup(path: &str) -> Result<(), String> {
    keel_podspec::cgroup::remove_pod_cgroup(path).map_err(|e| e.to_string())
}

pub async fn network_setup(net: &Net, pod: &Pod) -> Result<(PathBuf, Vec<String>), String> {
    let r = keel_podnet::PodRef {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
    };
    let n = net.setup(&r).await.map_err(|e| e.to_string())?;
    Ok((n.netns, n.ips.iter().map(|i| i.to_string()).collect()))
}

pub async fn network_teardown(net: &Net, uid: &str) -> Result<(), String> {
    net.teardown(uid).await.map_err(|e| e.to_string())
}

/// /etc files and volumes at sandbox time, so a missing ConfigMap shows as FailedMount early.
pub async fn prepare_pod(
    ctx: &Arc<Ctx>,
    pod: &Pod,
    dir: &Path,
    ips: &[String],
) -> Result<(), String> {
    let refs = keel_podspec::refs::fetch(&ctx.client, pod)
        .await
        .map_err(|e| e.to_string())?;
    super::bundle::prepare_pod(ctx, pod, dir, &refs, ips)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub fn cleanup_volumes(dir: &Path) {
    if let Err(e) = keel_podspec::volumes::cleanup(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "removing volumes");
    }
}

/// Plugin folders: next to keel-agent first (where keel-bridge is installed), then the CNI
/// convention.
fn cni_bin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        dirs.push(d);
    }
    dirs.push(PathBuf::from("/opt/cni/bin"));
    dirs
}

pub fn open_network(ctx: &Arc<Ctx>, pod_cidr: &str) -> Result<Net, String> {
    let cni = ctx.layout.cni();
    let mut cfg = keel_podnet::NetworkConfig::new(cni.join("net.d"), cni_bin_dirs(), cni.clone());
    cfg.pod_cidr = Some(pod_cidr.to_string());
    // One folder per node: several agents may share a host (the namespace lab).
    cfg.netns_dir = PathBuf::from("/run/keel")
        .join(&ctx.node_name)
        .join("netns");
    cfg.cluster_cidr = Some(ctx.cluster_cidr.clone());
    keel_podnet::Network::new(cfg).map_err(|e| e.to_string())
}

pub async fn run_routes(ctx: Arc<Ctx>, stop: tokio::sync::watch::Receiver<bool>) {
    if let Err(e) = keel_podnet::routes::run(
        ctx.client.clone(),
        ctx.node_name.clone(),
        ctx.cluster_cidr.clone(),
        stop,
    )
    .await
    {
        tracing::error!(error = %e, "node routes and masquerade stopped");
    }
}
