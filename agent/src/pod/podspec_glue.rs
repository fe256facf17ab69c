//! The seam between the executor and the keel-podspec / keel-podnet libraries: cgroups,
//! network, /etc files and volumes for one pod.

use super::Ctx;
use k8s_openapi::api::core::v1::Pod;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Handle on the node's pod network.
pub type Net = keel_podnet::Network;

pub fn ensure_cgroup(_ctx: &Arc<Ctx>, _pod: &Pod, _path: &str) -> Result<(), String> {
    Ok(())
}

pub fn remove_cgroup(_path: &str) -> Result<(), String> {
    Ok(())
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

pub fn write_etc(ctx: &Arc<Ctx>, pod: &Pod, dir: &Path, ips: &[String]) -> Result<(), String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let ip = ips.first().cloned().unwrap_or_default();
    let hosts = format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{name}\n"
    );
    let d = &ctx.cluster_domain;
    let dns: Vec<IpAddr> = vec![ctx.cluster_dns];
    let resolv = format!(
        "search {ns}.svc.{d} svc.{d} {d}\n{}options ndots:5\n",
        dns.iter()
            .map(|i| format!("nameserver {i}\n"))
            .collect::<String>()
    );
    let w = |f: &str, s: &str| {
        std::fs::write(dir.join("etc").join(f), s).map_err(|e| format!("writing {f}: {e}"))
    };
    w("hosts", &hosts)?;
    w("resolv.conf", &resolv)?;
    w("hostname", &format!("{name}\n"))
}

pub async fn prepare_volumes(_ctx: &Arc<Ctx>, _pod: &Pod, _dir: &Path) -> Result<(), String> {
    Ok(())
}

pub fn cleanup_volumes(_dir: &Path) {}

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
