//! Pods on this node (the kubelet's pod workers):
//! - `lifecycle`: the pure state machine (`step`)
//! - `sync`: the watch on pods bound here, one `worker` per pod, adoption after a restart
//! - `worker`: runs one pod: lifecycle actions, status patches
//! - `sandbox`, `container`, `bundle`, `images`, `shim`, `probes`: the executor's parts
//! - `status`, `events`: what the API sees
//! - `record`: what the executor keeps on disk per pod

pub mod bundle;
pub mod container;
pub mod events;
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
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
    pub cluster_cidr: String,
    /// The node's pod network, made once the Node has a podCIDR.
    pub net: tokio::sync::OnceCell<Arc<podspec_glue::Net>>,
}

impl Ctx {
    /// Absolute cgroup path of a pod: `/keel/<node>/<qos>/pod<uid>`.
    pub fn pod_cgroup(&self, pod: &Pod) -> String {
        let qos = qos_class(pod).to_ascii_lowercase();
        format!(
            "/keel/{}/{qos}/pod{}",
            self.node_name,
            pod.metadata.uid.as_deref().unwrap_or_default()
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

/// A Kubernetes quantity in bytes (`128Mi`, `1G`, `1e6`, `500000`).
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "m" => 1e-3,
        _ => return None,
    };
    Some((n * mult) as u64)
}

/// The pod's QoS class (Guaranteed, Burstable, BestEffort).
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let all: Vec<_> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        any |= !limits.is_empty() || !requests.is_empty();
        for res in ["cpu", "memory"] {
            match (limits.get(res), requests.get(res)) {
                (Some(l), Some(q)) if l == q => {}
                (Some(_), None) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("128Mi"), Some(128 << 20));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("500000"), Some(500_000));
        assert_eq!(quantity_bytes("12Qi"), None);
    }
}
