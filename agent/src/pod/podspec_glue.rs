//! The seam between the executor and the keel-podspec / keel-podnet libraries: cgroups,
//! network, /etc files and volumes for one pod.

use super::Ctx;
use k8s_openapi::api::core::v1::Pod;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Handle on the node's pod network.
pub struct Net;

pub fn ensure_cgroup(_ctx: &Arc<Ctx>, _pod: &Pod, _path: &str) -> Result<(), String> {
    Ok(())
}

pub fn remove_cgroup(_path: &str) -> Result<(), String> {
    Ok(())
}

pub async fn network_setup(_net: &Net, _pod: &Pod) -> Result<(PathBuf, Vec<String>), String> {
    Err("pod networking is not wired yet".into())
}

pub async fn network_teardown(_net: &Net, _uid: &str) -> Result<(), String> {
    Ok(())
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

pub fn open_network(_ctx: &Arc<Ctx>, _pod_cidr: &str) -> Result<Net, String> {
    Ok(Net)
}

pub async fn run_routes(_ctx: Arc<Ctx>, _stop: tokio::sync::watch::Receiver<bool>) {}
