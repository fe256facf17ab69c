//! Cluster logging, the node's half: ships every container's CRI log lines and the agent's own
//! logs to the control plane's log store (`control/src/logs`).
//!
//! - `cri`: CRI records to lines with positions (partial `P` records joined)
//! - `tail`: following one log file through rotation, by inode, with logical positions
//! - `offsets`: the read points and pod labels saved in `<root>/logship/state.json`
//! - `agentlog`: the `tracing` layer that queues the agent's own lines
//! - `push`: the push request and its transport over the node's client
//! - `ship`: the loop (discover, read, push, commit, retire)
//!
//! Deleted pods: the pod teardown (`pod::sandbox::remove`) calls `retire` before it removes the
//! pod's folder. `retire` moves `pods/<uid>/logs` to `logship/retired/<uid>/logs` (a rename: the
//! same inodes, so the tailers' read points stay valid) with the pod's identity and labels in
//! `meta.json`; the shipper drains the files and deletes the folder once they are shipped.

pub mod agentlog;
pub mod cri;
pub mod offsets;
pub mod push;
pub mod ship;
pub mod tail;

use crate::state::Layout;
use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The container name the agent's own lines are stored under.
pub const AGENT_CONTAINER: &str = "keel-agent";

/// `<root>/logship`.
pub fn dir(layout: &Layout) -> PathBuf {
    layout.root.join("logship")
}

/// `<root>/logship/retired`: logs of deleted pods still to be shipped.
pub fn retired_dir(layout: &Layout) -> PathBuf {
    dir(layout).join("retired")
}

pub fn state_path(layout: &Layout) -> PathBuf {
    dir(layout).join("state.json")
}

/// Who a retired folder's logs belong to (`meta.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetiredPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl RetiredPod {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("meta.json")
    }

    pub fn load(dir: &Path) -> Option<RetiredPod> {
        serde_json::from_slice(&std::fs::read(Self::path(dir)).ok()?).ok()
    }
}

/// The teardown hook: keeps a pod's log files for the shipper before its folder goes.
/// Never fails the teardown: a problem is logged and the logs go with the folder.
pub fn retire(layout: &Layout, pod: &Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let logs = layout.pod_dir(&uid).join("logs");
    if !logs.is_dir() {
        return;
    }
    let target = retired_dir(layout).join(&uid);
    let meta = RetiredPod {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: uid.clone(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
    };
    let data = serde_json::to_vec(&meta).unwrap_or_default();
    let moved = std::fs::create_dir_all(&target)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            crate::state::write_atomic(&RetiredPod::path(&target), &data, 0o600)
                .map_err(|e| e.to_string())
        })
        .and_then(|()| std::fs::rename(&logs, target.join("logs")).map_err(|e| e.to_string()));
    if let Err(e) = moved {
        tracing::warn!(pod = %uid, error = %e, "keeping the pod's logs for shipping failed; its last lines may not reach the log store");
        let _ = std::fs::remove_dir_all(&target);
    }
}

/// Starts the shipper for this node; it stops when `stop` turns true.
pub fn start(
    layout: &Layout,
    node_name: &str,
    client: kube::Client,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let shipper = ship::Shipper::new(layout.clone(), node_name.to_string(), client);
    tokio::spawn(shipper.run(stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retire_moves_the_logs_with_the_pods_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path());
        let log = layout.pod_dir("u1").join("logs/web/0.log");
        std::fs::create_dir_all(log.parent().expect("parent")).expect("mkdir");
        std::fs::write(&log, "x\n").expect("write");
        let mut pod = Pod::default();
        pod.metadata.uid = Some("u1".into());
        pod.metadata.name = Some("web-1".into());
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into())]));
        retire(&layout, &pod);
        let kept = retired_dir(&layout).join("u1");
        assert!(kept.join("logs/web/0.log").is_file());
        assert!(!log.exists());
        let meta = RetiredPod::load(&kept).expect("meta");
        assert_eq!(meta.labels["app"], "web");
        assert_eq!(meta.namespace, "ns");
        // A pod without logs leaves nothing behind.
        let mut other = pod.clone();
        other.metadata.uid = Some("u2".into());
        retire(&layout, &other);
        assert!(!retired_dir(&layout).join("u2").exists());
    }
}
