//! The pod sandbox: the pod's folder, cgroup, network namespace with CNI, /etc files and
//! volumes, created before the first container and removed after the last one stopped.
//! Every step is idempotent, so a sandbox half made before an agent crash is finished or
//! removed on the next attempt.

use super::Ctx;
use super::record::PodRecord;
use k8s_openapi::api::core::v1::Pod;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("failed to set up sandbox network: {0}")]
    Network(String),
    #[error("{0}")]
    Mount(String),
    #[error("failed to create the pod cgroup: {0}")]
    Cgroup(String),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl SandboxError {
    /// The event reason kubelet uses for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            SandboxError::Mount(_) => "FailedMount",
            _ => "FailedCreatePodSandBox",
        }
    }
}

/// Applies `edit` to the pod's record and writes it to disk atomically.
pub fn save_record(
    ctx: &Arc<Ctx>,
    record: &Arc<Mutex<PodRecord>>,
    edit: impl FnOnce(&mut PodRecord),
) {
    let Ok(mut r) = record.lock() else { return };
    edit(&mut r);
    let dir = ctx.layout.pod_dir(&r.uid);
    let data = serde_json::to_vec_pretty(&*r).unwrap_or_default();
    if let Err(e) = crate::state::write_atomic(&PodRecord::path(&dir), &data, 0o600) {
        tracing::error!(error = %e, "saving the pod record");
    }
}

/// Creates (or completes) the sandbox; returns the pod IPs.
pub async fn create(
    ctx: &Arc<Ctx>,
    pod: &Pod,
    record: &Arc<Mutex<PodRecord>>,
) -> Result<Vec<String>, SandboxError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = ctx.layout.pod_dir(&uid);
    let io = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |source| SandboxError::Io { path, source }
    };
    std::fs::create_dir_all(dir.join("etc")).map_err(io(&dir))?;
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let cgroup = ctx.pod_cgroup(pod);
    save_record(ctx, record, |r| {
        r.cgroup = cgroup.clone();
        r.host_network = host_network;
    });
    super::podspec_glue::ensure_cgroup(ctx, pod, &cgroup).map_err(SandboxError::Cgroup)?;
    let ips = if host_network {
        vec![ctx.node_ip.to_string()]
    } else {
        let net = ctx.network().await.map_err(SandboxError::Network)?;
        let (netns, ips) = super::podspec_glue::network_setup(&net, pod)
            .await
            .map_err(SandboxError::Network)?;
        save_record(ctx, record, |r| r.netns = Some(netns.clone()));
        ips
    };
    save_record(ctx, record, |r| r.ips = ips.clone());
    super::podspec_glue::prepare_pod(ctx, pod, &dir, &ips)
        .await
        .map_err(SandboxError::Mount)?;
    Ok(ips)
}

/// Removes every container instance, the volumes, the cgroup, the network and the folder.
pub async fn remove(ctx: &Arc<Ctx>, pod: &Pod, record: &Arc<Mutex<PodRecord>>) {
    let rec = record.lock().map(|r| r.clone()).unwrap_or_default();
    // The log shipper keeps the logs until their last lines are in the log store.
    crate::logship::retire(&ctx.layout, pod);
    for c in &rec.containers {
        super::container::remove_instance(ctx, c).await;
    }
    let uid = pod.metadata.uid.clone().unwrap_or(rec.uid.clone());
    let dir = ctx.layout.pod_dir(&uid);
    super::podspec_glue::cleanup_volumes(&dir);
    if !rec.cgroup.is_empty()
        && let Err(e) = super::podspec_glue::remove_cgroup(&rec.cgroup)
    {
        tracing::warn!(pod = %uid, error = %e, "removing the pod cgroup");
    }
    if !rec.host_network
        && let Ok(net) = ctx.network().await
        && let Err(e) = super::podspec_glue::network_teardown(&net, &uid).await
    {
        tracing::warn!(pod = %uid, error = %e, "tearing down the pod network");
    }
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(pod = %uid, error = %e, "removing the pod folder");
    }
}
