//! What the agent keeps on disk for each pod it runs, in `<root>/pods/<uid>/record.json`:
//! the contract between the pod executor (writer) and the readers that must not depend on the
//! executor's memory: the HTTPS server (`containerLogs`, stats), the stats collector, and the
//! executor itself after a restart (re-adoption, leak cleanup).
//!
//! Layout under the agent root (`Layout` in `state.rs`):
//! ```text
//! pods/<uid>/record.json                     PodRecord (written atomically on every change)
//! pods/<uid>/logs/<container>/<restart>.log  CRI log of that container instance
//! pods/<uid>/volumes/<name>/                 emptyDir, configMap, secret, ... contents
//! pods/<uid>/etc/{hosts,resolv.conf,hostname}
//! pods/<uid>/bundles/<container id>/         OCI bundle (config.json, rootfs mount point)
//! ```
//! Supervisor sockets live under the shim root (`/run/keel-shim/<id>/supervisor.sock`), network
//! namespaces under `/run/keel/netns/<uid>` (tmpfs: bind mounts and sockets need it).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const RECORD_FILE: &str = "record.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Network namespace file, unless the pod uses the host network.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    #[serde(default)]
    pub host_network: bool,
    /// Pod IPs from CNI ADD (or the node's IP for host-network pods).
    #[serde(default)]
    pub ips: Vec<String>,
    /// Absolute cgroup path of the pod (e.g. `/keel/<node>/burstable/pod<uid>`), the same in
    /// every v1 controller and in the v2 hierarchy.
    #[serde(default)]
    pub cgroup: String,
    /// Every container instance still on disk (current and previous ones).
    #[serde(default)]
    pub containers: Vec<ContainerRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    /// The container's name in the pod spec.
    pub name: String,
    /// 64 hex characters; the shim's container id.
    pub id: String,
    #[serde(default)]
    pub init: bool,
    /// Which instance this is: 0 for the first start, then 1, 2, ...
    pub restart_count: u32,
    pub image: String,
    /// `sha256:...` of the image config, or the repo digest.
    #[serde(default)]
    pub image_id: String,
    /// Absolute CRI log path.
    pub log_path: PathBuf,
    /// Absolute cgroup path of the container (below the pod's).
    pub cgroup: String,
    /// The shim's state folder (`supervisor.sock`, `exit.json`).
    pub state_dir: PathBuf,
    /// RFC 3339 creation time.
    #[serde(default)]
    pub created_at: String,
    /// Signal that asks the container to stop (the image's STOPSIGNAL, else SIGTERM).
    #[serde(default = "sigterm")]
    pub stop_signal: i32,
}

fn sigterm() -> i32 {
    15
}

impl PodRecord {
    pub fn path(pod_dir: &Path) -> PathBuf {
        pod_dir.join(RECORD_FILE)
    }

    /// Reads `<pod_dir>/record.json`; `None` when it is missing or unreadable.
    pub fn load(pod_dir: &Path) -> Option<PodRecord> {
        let data = std::fs::read(Self::path(pod_dir)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Every record under `<root>/pods`.
    pub fn load_all(pods_dir: &Path) -> Vec<PodRecord> {
        let Ok(entries) = std::fs::read_dir(pods_dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| PodRecord::load(&e.path()))
            .collect()
    }

    /// The newest instance of container `name`, or the one before it with `previous`.
    pub fn container(&self, name: &str, previous: bool) -> Option<&ContainerRecord> {
        let mut all: Vec<&ContainerRecord> =
            self.containers.iter().filter(|c| c.name == name).collect();
        all.sort_by_key(|c| c.restart_count);
        let last = all.len().checked_sub(if previous { 2 } else { 1 })?;
        all.get(last).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_and_previous_instances() {
        let c = |n| ContainerRecord {
            name: "web".into(),
            restart_count: n,
            ..Default::default()
        };
        let r = PodRecord {
            containers: vec![c(1), c(0), c(2)],
            ..Default::default()
        };
        assert_eq!(r.container("web", false).map(|c| c.restart_count), Some(2));
        assert_eq!(r.container("web", true).map(|c| c.restart_count), Some(1));
        assert!(r.container("db", false).is_none());
    }
}
