//! Pods on this node (the kubelet's pod workers):
//! - `lifecycle`: the pure state machine (`step`)
//! - `sync`: the watch on pods bound here, one `worker` per pod, adoption after a restart
//! - `worker`: runs one pod: lifecycle actions, status patches
//! - `sandbox`, `container`, `bundle`, `images`, `shim`, `probes`: the executor's parts
//! - `status`, `events`: what the API sees
//! - `evict`: the eviction manager (node pressure conditions, evicting pods one per pass)
//! - `record`: what the executor keeps on disk per pod

pub mod bundle;
pub mod container;
pub mod events;
pub mod evict;
pub mod images;
pub mod lifecycle;
pub mod network;
pub mod podspec_glue;
pub mod probes;
pub mod record;
pub mod sandbox;
pub mod shim;
pub mod status;
pub mod sync;
pub mod worker;

use k8s_openapi::api::core::v1::Pod;
use std::net::IpAddr;
use std::sync::Arc;

/// Everything a pod worker needs, shared by all of them.
pub struct Ctx {
    pub client: kube::Client,
    pub layout: crate::state::Layout,
    pub node_name: String,
    pub node_ip: IpAddr,
    pub shim: shim::Shim,
    pub images: images::Images,
    pub events: events::Recorder,
    pub cluster_cidr: String,
    /// Cluster DNS settings for pods' resolv.conf.
    pub dns: keel_podspec::etc::DnsSettings,
    pub node_info: keel_podspec::downward::NodeInfo,
    /// This machine's host name (hostNetwork pods' hostname).
    pub host_name: String,
    /// The agent's own figures on `/metrics` (pod start latency, pulls, starts, restarts).
    pub stats: crate::stats::Stats,
    /// The node's pod network, made once the Node has a podCIDR.
    pub net: tokio::sync::OnceCell<Arc<podspec_glue::Net>>,
    /// Pods running here that the eviction manager may evict (their workers keep it current).
    pub live: evict::Live,
    /// The node's pressure conditions (admission refuses pods under pressure).
    pub pressure: tokio::sync::watch::Receiver<evict::NodePressure>,
}

impl Ctx {
    /// Absolute cgroup path of a pod: `/keel/<node>/[burstable|besteffort/]pod<uid>`.
    pub fn pod_cgroup(&self, pod: &Pod) -> String {
        keel_podspec::cgroup::pod_path(
            &self.node_name,
            keel_podspec::qos::class(pod),
            pod.metadata.uid.as_deref().unwrap_or_default(),
        )
    }

    pub async fn network(&self) -> Result<Arc<podspec_glue::Net>, String> {
        self.net
            .get()
            .cloned()
            .ok_or_else(|| "the node has no podCIDR yet".to_string())
    }
}

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The pod's QoS class name (`status.qosClass`).
pub fn qos_class(pod: &Pod) -> &'static str {
    keel_podspec::qos::class(pod).as_str()
}

/// What the downward API and resource defaults need to know about this node.
pub fn node_info(node_ip: IpAddr) -> keel_podspec::downward::NodeInfo {
    let memory_kib: i64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as i64;
    keel_podspec::downward::NodeInfo {
        host_ips: vec![node_ip.to_string()],
        cpu_milli: cpus * 1000,
        memory_bytes: memory_kib * 1024,
    }
}

/// Removes this node's empty cgroup tree (`/keel/<node>` and its QoS folders) in every
/// hierarchy; returns the folders that still hold pods.
pub fn remove_node_cgroups(node: &str) -> Vec<String> {
    let layout = keel_podspec::cgroup::Layout::detect();
    let mut kept = Vec::new();
    for (_, dir) in layout.dirs(&format!("/keel/{node}")) {
        for sub in ["burstable", "besteffort", ""] {
            let d = if sub.is_empty() {
                dir.clone()
            } else {
                dir.join(sub)
            };
            if let Err(e) = std::fs::remove_dir(&d)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                kept.push(d.display().to_string());
            }
        }
    }
    kept
}
