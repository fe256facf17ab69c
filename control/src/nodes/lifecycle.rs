//! The node lifecycle controller: a node whose Lease has not been renewed within the grace
//! period gets every condition set to Unknown and the `node.kubernetes.io/unreachable` taints
//! (NoSchedule and NoExecute); a node reporting Ready=False gets the `not-ready` taints; both
//! are removed when the node is Ready again. Pods on a node with a NoExecute taint they do not
//! tolerate are deleted, at once or after their `tolerationSeconds` (taint-based eviction).

use super::NodeSettings;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use std::collections::HashMap;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// The taint keys a node should carry, from its heartbeat and Ready condition.
pub fn wanted_taint(lease_fresh: bool, ready: Option<&str>) -> Option<&'static str> {
    match (lease_fresh, ready) {
        (false, _) => Some(UNREACHABLE),
        (true, Some("True")) => None,
        (true, Some("False")) => Some(NOT_READY),
        (true, _) => Some(UNREACHABLE),
    }
}

/// When a pod on a node with `taint` (added `secs_since_added` ago) must go: `Some(0)` now,
/// `Some(n)` in n seconds, `None` never.
pub fn eviction_delay(
    tolerations: &[Toleration],
    taint: &Taint,
    secs_since_added: i64,
) -> Option<i64> {
    let tolerates = |t: &&Toleration| {
        let key_ok = match t.operator.as_deref() {
            Some("Exists") => t
                .key
                .as_deref()
                .is_none_or(|k| k.is_empty() || k == taint.key),
            _ => {
                t.key.as_deref() == Some(taint.key.as_str())
                    && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
            }
        };
        key_ok
            && t.effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == taint.effect)
    };
    match tolerations.iter().find(tolerates) {
        None => Some(0),
        Some(t) => t.toleration_seconds.map(|s| (s - secs_since_added).max(0)),
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn sync_once(client: &kube::Client, settings: &NodeSettings) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renewals: HashMap<String, i64> = leases
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|l| Some((l.metadata.name?, l.spec?.renew_time?.0.as_second())))
        .collect();
    let now_s = chrono::Utc::now().timestamp();
    for node in nodes.list(&ListParams::default()).await?.items {
        let name = node.metadata.name.clone().unwrap_or_default();
        let created = node
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(now_s);
        let last = renewals.get(&name).copied().unwrap_or(created);
        let fresh = now_s - last < settings.monitor_grace.as_secs() as i64;
        let conditions = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let ready = conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.clone());
        if !fresh && ready.as_deref() != Some("Unknown") {
            let unknown: Vec<_> = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]
                .iter()
                .map(|t| json!({"type": t, "status": "Unknown", "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.", "lastTransitionTime": now(),
                    "lastHeartbeatTime": chrono::DateTime::from_timestamp(last, 0).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))}))
                .collect();
            nodes
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Strategic(json!({"status": {"conditions": unknown}})),
                )
                .await?;
            tracing::warn!(node = %name, "node stopped renewing its lease; marking it Unknown");
        }
        let ready_now = if fresh {
            ready.as_deref()
        } else {
            Some("Unknown")
        };
        let want = wanted_taint(fresh, ready_now);
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let mut kept: Vec<Taint> = taints
            .iter()
            .filter(|t| t.key != UNREACHABLE && t.key != NOT_READY)
            .cloned()
            .collect();
        if let Some(key) = want {
            for effect in ["NoSchedule", "NoExecute"] {
                let existing = taints
                    .iter()
                    .find(|t| t.key == key && t.effect == effect)
                    .cloned();
                kept.push(existing.unwrap_or_else(|| Taint {
                    key: key.into(),
                    effect: effect.into(),
                    time_added: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::now(),
                    )),
                    value: None,
                }));
            }
        }
        if kept != taints {
            nodes
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"taints": kept}})),
                )
                .await?;
        }
        evict(client, &name, &kept, now_s).await?;
    }
    Ok(())
}

async fn evict(
    client: &kube::Client,
    node: &str,
    taints: &[Taint],
    now_s: i64,
) -> anyhow::Result<()> {
    let no_exec: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
    if no_exec.is_empty() {
        return Ok(());
    }
    let pods: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    for pod in pods.list(&lp).await?.items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        let due = no_exec.iter().any(|t| {
            let since = t
                .time_added
                .as_ref()
                .map(|ta| now_s - ta.0.as_second())
                .unwrap_or(0);
            eviction_delay(&tolerations, t, since) == Some(0)
        });
        if due {
            let (ns, name) = (
                pod.metadata.namespace.clone().unwrap_or_default(),
                pod.metadata.name.clone().unwrap_or_default(),
            );
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(pod = %format!("{ns}/{name}"), %node, "evicting pod from an unreachable or not-ready node")
                }
                Err(e) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "eviction failed")
                }
            }
        }
    }
    Ok(())
}

pub async fn run(client: kube::Client, settings: NodeSettings) {
    let mut tick = tokio::time::interval(settings.monitor_period);
    loop {
        tick.tick().await;
        if let Err(e) = sync_once(&client, &settings).await {
            tracing::debug!(error = %e, "node lifecycle pass failed; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            time_added: None,
            value: None,
        }
    }

    fn tol(key: Option<&str>, op: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: key.map(str::to_string),
            operator: Some(op.into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            value: None,
        }
    }

    #[test]
    fn taints_follow_heartbeats() {
        assert_eq!(wanted_taint(false, Some("True")), Some(UNREACHABLE));
        assert_eq!(wanted_taint(true, Some("True")), None);
        assert_eq!(wanted_taint(true, Some("False")), Some(NOT_READY));
        assert_eq!(wanted_taint(true, None), Some(UNREACHABLE));
    }

    #[test]
    fn eviction_waits_for_toleration_seconds() {
        let t = taint(UNREACHABLE);
        assert_eq!(eviction_delay(&[], &t, 0), Some(0));
        assert_eq!(
            eviction_delay(&[tol(Some(UNREACHABLE), "Exists", Some(300))], &t, 100),
            Some(200)
        );
        assert_eq!(
            eviction_delay(&[tol(Some(UNREACHABLE), "Exists", Some(300))], &t, 400),
            Some(0)
        );
        assert_eq!(
            eviction_delay(&[tol(Some(UNREACHABLE), "Exists", None)], &t, 400),
            None
        );
        assert_eq!(
            eviction_delay(&[tol(None, "Exists", None)], &t, 0),
            None,
            "an empty key with Exists tolerates everything"
        );
        assert_eq!(
            eviction_delay(&[tol(Some(NOT_READY), "Exists", None)], &t, 0),
            Some(0)
        );
    }
}
