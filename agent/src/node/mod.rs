//! The Node object and its heartbeats: register (create, or adopt an existing object of the
//! same name), renew the Lease in `kube-node-lease` every 10 s (retrying from 200 ms up to 7 s
//! on failure), and post `status` when it changes or every 5 minutes otherwise
//! (kubernetes/website node-status.md "Heartbeats"). The pressure conditions and their
//! NoSchedule taints follow the eviction manager (`pod::evict`); a change is posted at once.

pub mod host;
pub mod status;
pub mod taints;

use crate::client::{Failure, classify};
use crate::pod::evict::NodePressure;
use crate::state::AgentConfig;
use crate::stats::pressure::Threshold;
use host::HostRoot;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_DURATION_SECONDS: i32 = 40;
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
pub const STATUS_CHECK: Duration = Duration::from_secs(10);
pub const STATUS_REPORT: Duration = Duration::from_secs(300);
pub const CONTROL_PLANE_ROLE: &str = "node-role.kubernetes.io/control-plane";
/// The version reported when the API server does not say its own.
pub const FALLBACK_KUBELET_VERSION: &str = "v1.33.0-keel.1";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("registering node {node}: {failure:?}")]
    Register { node: String, failure: Failure },
}

/// Everything the node loops need.
#[derive(Clone)]
pub struct NodeContext {
    pub client: kube::Client,
    pub config: AgentConfig,
    pub host: HostRoot,
    pub root_dir: PathBuf,
    pub internal_ip: std::net::IpAddr,
    pub kubelet_version: String,
    /// Port of the agent's HTTPS endpoint (`daemonEndpoints.kubeletEndpoint.Port`).
    pub port: u16,
    /// The hard eviction thresholds (allocatable keeps them back).
    pub thresholds: Vec<Threshold>,
    /// The eviction manager's view: which pressure conditions are True.
    pub pressure: tokio::sync::watch::Receiver<NodePressure>,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn now_micro() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl NodeContext {
    fn labels(&self) -> serde_json::Map<String, Value> {
        let arch = host::go_arch(std::env::consts::ARCH);
        let mut l = serde_json::Map::new();
        l.insert(
            "kubernetes.io/hostname".into(),
            json!(self.config.node_name),
        );
        l.insert("kubernetes.io/os".into(), json!("linux"));
        l.insert("kubernetes.io/arch".into(), json!(arch));
        l.insert("beta.kubernetes.io/os".into(), json!("linux"));
        l.insert("beta.kubernetes.io/arch".into(), json!(arch));
        for (k, v) in &self.config.labels {
            l.insert(k.clone(), json!(v));
        }
        if self.config.control_plane {
            l.insert(CONTROL_PLANE_ROLE.into(), json!(""));
        }
        l
    }

    fn measure(&self) -> status::Measurements {
        let fs = host::filesystem(&self.root_dir).unwrap_or_default();
        let probe = self.root_dir.join(".ready-probe");
        let not_ready = match std::fs::write(&probe, b"ok") {
            Ok(()) => None,
            Err(e) => Some(format!(
                "the root dir {} is not writable: {e}",
                self.root_dir.display()
            )),
        };
        status::Measurements {
            cpus: host::cpus(),
            memory_total: self.host.meminfo("MemTotal").unwrap_or_default(),
            fs_total: fs.0,
            not_ready,
        }
    }

    /// The full status to report, given the server's current conditions.
    pub fn status(&self, previous_conditions: &Value) -> Value {
        let m = self.measure();
        let (capacity, allocatable) =
            status::resources(&m, &self.config.reserved, &self.thresholds);
        let info = self.host.node_info();
        let pressure = self.pressure.borrow().clone();
        json!({
            "conditions": status::conditions_json(&status::conditions(&m, &pressure), previous_conditions, &now_rfc3339()),
            "addresses": [
                {"type": "InternalIP", "address": self.internal_ip.to_string()},
                {"type": "Hostname", "address": self.config.node_name},
            ],
            "capacity": capacity,
            "allocatable": allocatable,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": info.machine_id,
                "systemUUID": info.system_uuid,
                "bootID": info.boot_id,
                "kernelVersion": info.kernel_version,
                "osImage": info.os_image,
                "containerRuntimeVersion": format!("keel://{}", env!("CARGO_PKG_VERSION")),
                "kubeletVersion": self.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": info.operating_system,
                "architecture": info.architecture,
            },
        })
    }

    fn taints(&self, existing: &[Value]) -> Vec<Value> {
        let mut t: Vec<Value> = existing
            .iter()
            .filter(|t| t["key"] != CONTROL_PLANE_ROLE)
            .cloned()
            .collect();
        if self.config.control_plane {
            t.push(json!({"key": CONTROL_PLANE_ROLE, "effect": "NoSchedule"}));
        }
        taints::with_pressure(&t, &self.pressure.borrow().taints)
    }

    /// Brings the pressure taints in line with the eviction manager; a merge patch with the
    /// read resourceVersion, so a concurrent change of the taints (the node lifecycle
    /// controller, `kubectl taint`) wins and the next pass retries.
    async fn sync_taints(&self, api: &Api<Node>, current: &Node) -> Result<bool, kube::Error> {
        let existing: Vec<Value> = current
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .and_then(|t| serde_json::to_value(t).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        let wanted = self.pressure.borrow().taints.clone();
        let next = taints::with_pressure(&existing, &wanted);
        if next == existing {
            return Ok(false);
        }
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "spec": {"taints": next},
        });
        api.patch(
            &self.config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        tracing::info!(node = %self.config.node_name, taints = ?wanted, "node pressure taints updated");
        Ok(true)
    }

    /// Creates the Node, or adopts the existing one (labels and role taint), then posts status.
    /// Returns the Node's uid (the Lease's owner).
    pub async fn register(&self) -> Result<String, NodeError> {
        let name = &self.config.node_name;
        let err = |e: kube::Error| NodeError::Register {
            node: name.clone(),
            failure: classify(&e),
        };
        let api: Api<Node> = Api::all(self.client.clone());
        let body = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": self.labels()},
            "spec": {"taints": self.taints(&[])},
            "status": self.status(&Value::Null),
        });
        let node: Node = serde_json::from_value(body).map_err(|e| NodeError::Register {
            node: name.clone(),
            failure: Failure::Other(e.to_string()),
        })?;
        let created = match api.create(&PostParams::default(), &node).await {
            Ok(n) => {
                tracing::info!(node = %name, "node registered");
                n
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let current = api.get(name).await.map_err(err)?;
                let v = serde_json::to_value(&current).unwrap_or_default();
                let existing = v["spec"]["taints"].as_array().cloned().unwrap_or_default();
                let patch = json!({"metadata": {"labels": self.labels()}, "spec": {"taints": self.taints(&existing)}});
                tracing::info!(node = %name, "node object exists; adopting it");
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(err)?
            }
            Err(e) => return Err(err(e)),
        };
        self.post_status(&api, &created).await.map_err(err)?;
        Ok(created.metadata.uid.unwrap_or_default())
    }

    async fn post_status(&self, api: &Api<Node>, current: &Node) -> Result<bool, kube::Error> {
        let prev = serde_json::to_value(&current.status).unwrap_or_default();
        let next = self.status(&prev["conditions"]);
        let patch = json!({"status": next});
        api.patch_status(
            &self.config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(status::fingerprint(&prev) != status::fingerprint(&next))
    }

    /// Posts status whenever it differs from the server's copy (which the node lifecycle
    /// controller may have changed to Unknown), and every 5 minutes regardless. Returns when
    /// the Node object is gone, so the caller registers it again.
    pub async fn status_loop(&self) {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut last_post = Instant::now();
        let mut pressure = self.pressure.clone();
        let mut pressure_open = true;
        loop {
            tokio::select! {
                () = tokio::time::sleep(STATUS_CHECK) => {}
                changed = pressure.changed(), if pressure_open => {
                    pressure_open = changed.is_ok();
                }
            }
            let current = match api.get(&self.config.node_name).await {
                Ok(n) => n,
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    tracing::warn!(node = %self.config.node_name, "the node object was deleted; registering again");
                    return;
                }
                Err(e) => {
                    tracing::warn!(node = %self.config.node_name, error = ?classify(&e), "reading the node object failed");
                    continue;
                }
            };
            if let Err(e) = self.sync_taints(&api, &current).await {
                tracing::warn!(error = ?classify(&e), "updating the node's pressure taints failed; retrying");
            }
            let prev = serde_json::to_value(&current.status).unwrap_or_default();
            let next = self.status(&prev["conditions"]);
            let changed = status::fingerprint(&prev) != status::fingerprint(&next);
            if changed || last_post.elapsed() >= STATUS_REPORT {
                match self.post_status(&api, &current).await {
                    Ok(_) => {
                        last_post = Instant::now();
                        if changed {
                            tracing::info!(node = %self.config.node_name, "node status changed; posted");
                        }
                    }
                    Err(e) => tracing::warn!(error = ?classify(&e), "posting node status failed"),
                }
            }
        }
    }

    /// Renews the node's Lease every 10 s, creating it (owned by the Node) when missing.
    pub async fn lease_loop(&self, node_uid: String) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let name = self.config.node_name.clone();
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.renew(&api, &name, &node_uid).await {
                Ok(()) => {
                    backoff = Duration::from_millis(200);
                    tokio::time::sleep(LEASE_RENEW).await;
                }
                Err(e) => {
                    tracing::warn!(lease = %name, error = ?classify(&e), retry_in = ?backoff, "renewing the node lease failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(7));
                }
            }
        }
    }

    async fn renew(&self, api: &Api<Lease>, name: &str, uid: &str) -> Result<(), kube::Error> {
        let spec = json!({"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now_micro()});
        match api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": spec})),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let lease: Lease = serde_json::from_value(json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]},
                    "spec": spec,
                }))
                .map_err(kube::Error::SerdeError)?;
                api.create(&PostParams::default(), &lease).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }
}
