//! CSR approver and signer for node client certificates (signer
//! `kubernetes.io/kube-apiserver-client-kubelet`): a bootstrap request for
//! `system:node:<name>`/`system:nodes` is approved unless a live node already holds that name;
//! a node renewing its own certificate is approved; approved requests are signed with the CA.

use super::NodeSettings;
use crate::pki::Ca;
use base64::Engine;
use futures_util::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use std::sync::Arc;
use x509_parser::prelude::FromDer;

pub const KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// What to do with a pending request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Approve(&'static str),
    Deny(String),
    /// Not ours to decide (an admin may approve it with `kubectl certificate approve`).
    Leave,
}

/// The subject of a PEM PKCS#10 request: (CN, organisations).
pub fn subject(pem: &str) -> Option<(String, Vec<String>)> {
    let der = pem_der(pem)?;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&der).ok()?;
    let subj = &req.certification_request_info.subject;
    let cn = subj.iter_common_name().next()?.as_str().ok()?.to_string();
    let orgs = subj
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((cn, orgs))
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()
}

/// The approval rule, pure: `live_node` says whether a Ready node with a fresh lease already
/// holds the requested name.
pub fn decide(
    username: &str,
    groups: &[String],
    cn: &str,
    orgs: &[String],
    live_node: bool,
) -> Decision {
    let Some(node) = cn.strip_prefix("system:node:").filter(|n| !n.is_empty()) else {
        return Decision::Leave;
    };
    if orgs != ["system:nodes"] {
        return Decision::Leave;
    }
    if username == cn {
        return Decision::Approve("AutoApproved renewal of a node client certificate");
    }
    if groups.iter().any(|g| g == "system:bootstrappers") {
        if live_node {
            return Decision::Deny(format!(
                "node name \"{node}\" is already registered by another live machine; join with a different --node-name, or remove the old node first with `kubectl delete node {node}`"
            ));
        }
        return Decision::Approve("AutoApproved node client certificate for a bootstrap token");
    }
    Decision::Leave
}

async fn node_is_live(client: &kube::Client, name: &str, settings: &NodeSettings) -> bool {
    let nodes: Api<Node> = Api::all(client.clone());
    let Ok(Some(node)) = nodes.get_opt(name).await else {
        return false;
    };
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let fresh = match leases.get_opt(name).await {
        Ok(Some(l)) => l.spec.and_then(|s| s.renew_time).is_some_and(|t| {
            let age = chrono::Utc::now().signed_duration_since(
                chrono::DateTime::<chrono::Utc>::from_timestamp(t.0.as_second(), 0)
                    .unwrap_or_default(),
            );
            age.to_std().unwrap_or_default() < settings.monitor_grace
        }),
        _ => false,
    };
    ready && fresh
}

async fn handle(
    client: &kube::Client,
    ca: &Ca,
    settings: &NodeSettings,
    csr: CertificateSigningRequest,
) -> anyhow::Result<()> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let name = csr.metadata.name.clone().unwrap_or_default();
    let status = csr.status.clone().unwrap_or_default();
    if status.certificate.is_some() {
        return Ok(());
    }
    let conds = status.conditions.unwrap_or_default();
    if conds
        .iter()
        .any(|c| c.type_ == "Denied" || c.type_ == "Failed")
    {
        return Ok(());
    }
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    let approved = conds
        .iter()
        .any(|c| c.type_ == "Approved" && c.status == "True");
    if !approved {
        if csr.spec.signer_name != KUBELET_SIGNER {
            return Ok(());
        }
        let Some((cn, orgs)) = subject(&pem) else {
            return set_condition(
                &api,
                &name,
                "Failed",
                "InvalidRequest",
                "spec.request is not a PEM certificate request",
            )
            .await;
        };
        let username = csr.spec.username.clone().unwrap_or_default();
        let groups = csr.spec.groups.clone().unwrap_or_default();
        let live = match cn.strip_prefix("system:node:") {
            Some(node) if groups.iter().any(|g| g == "system:bootstrappers") => {
                node_is_live(client, node, settings).await
            }
            _ => false,
        };
        match decide(&username, &groups, &cn, &orgs, live) {
            Decision::Approve(msg) => {
                set_condition(&api, &name, "Approved", "AutoApproved", msg).await?;
                tracing::info!(csr = %name, %cn, "approved node client certificate request");
            }
            Decision::Deny(msg) => {
                tracing::warn!(csr = %name, %cn, reason = %msg, "denied node client certificate request");
                return set_condition(&api, &name, "Denied", "NodeNameInUse", &msg).await;
            }
            Decision::Leave => return Ok(()),
        }
    }
    if csr.spec.signer_name != KUBELET_SIGNER
        && csr.spec.signer_name != "kubernetes.io/kube-apiserver-client"
    {
        return Ok(());
    }
    let Some(der) = pem_der(&pem) else {
        return Ok(());
    };
    let days = csr
        .spec
        .expiration_seconds
        .map(|s| (i64::from(s) / 86400).max(1))
        .unwrap_or(settings.cert_days);
    let cert = ca.sign_csr_der(&der, days)?;
    let patch =
        json!({"status": {"certificate": base64::engine::general_purpose::STANDARD.encode(cert)}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(csr = %name, "signed node client certificate");
    Ok(())
}

async fn set_condition(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    ty: &str,
    reason: &str,
    message: &str,
) -> anyhow::Result<()> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({"status": {"conditions": [{"type": ty, "status": "True", "reason": reason, "message": message,
        "lastUpdateTime": now, "lastTransitionTime": now}]}});
    api.patch_subresource(
        "approval",
        name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

pub async fn run(client: kube::Client, ca: Arc<Ca>, settings: NodeSettings) {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = stream.next().await {
        let csrs = match event {
            Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => vec![c],
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "CSR watch interrupted; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        for csr in csrs {
            let name = csr.metadata.name.clone().unwrap_or_default();
            if let Err(e) = handle(&client, &ca, &settings, csr).await {
                tracing::warn!(csr = %name, error = %e, "could not process certificate signing request");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_rules() {
        let boot = vec![
            "system:bootstrappers".to_string(),
            "system:authenticated".to_string(),
        ];
        let nodes = vec!["system:nodes".to_string()];
        assert!(matches!(
            decide(
                "system:bootstrap:abcdef",
                &boot,
                "system:node:w1",
                &nodes,
                false
            ),
            Decision::Approve(_)
        ));
        assert!(
            matches!(decide("system:bootstrap:abcdef", &boot, "system:node:w1", &nodes, true), Decision::Deny(m) if m.contains("already registered"))
        );
        assert!(matches!(
            decide("system:node:w1", &nodes, "system:node:w1", &nodes, true),
            Decision::Approve(_)
        ));
        assert_eq!(
            decide("system:node:w2", &nodes, "system:node:w1", &nodes, false),
            Decision::Leave
        );
        assert_eq!(
            decide("system:bootstrap:abcdef", &boot, "admin", &nodes, false),
            Decision::Leave
        );
        assert_eq!(
            decide(
                "system:bootstrap:abcdef",
                &boot,
                "system:node:w1",
                &["system:masters".to_string()],
                false
            ),
            Decision::Leave
        );
    }
}
