//! CSR approver and signer for node certificates.
//!
//! Client certificates (signer `kubernetes.io/kube-apiserver-client-kubelet`): a bootstrap
//! request for `system:node:<name>`/`system:nodes` is approved unless a live node already holds
//! that name; a node renewing its own certificate is approved.
//!
//! Serving certificates (signer `kubernetes.io/kubelet-serving`, what an agent presents on its
//! port 10250): kubeadm leaves these for an operator (`kubectl certificate approve`), k3s
//! signs them without looking. Keel approves automatically only what it can check: the
//! requester is `system:node:<name>` asking for its own name (CN `system:node:<name>`, O
//! `system:nodes`), the usages are server auth with at most digital signature and key
//! encipherment, and every SAN is an IP or DNS name the registered Node reports in
//! `status.addresses` (its node name counts as a DNS name). A node asking for anything else is
//! denied with the offending item named; a request from anyone else is left for an operator.
//! Approved serving requests (also those an operator approved) are signed for server auth only
//! if their subject and SANs have that shape (Kubernetes' kubelet-serving signer rules).
//!
//! Approved requests are signed with the cluster CA.

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
use std::net::IpAddr;
use std::sync::Arc;
use x509_parser::prelude::FromDer;

pub const KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

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

/// The subject alternative names of a request, by kind.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RequestedNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// Any other kind (e-mail, URI, ...), as text.
    pub other: Vec<String>,
}

/// The SANs of a PEM PKCS#10 request (empty when it asks for none).
pub fn requested_names(pem: &str) -> Option<RequestedNames> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let der = pem_der(pem)?;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&der).ok()?;
    let mut out = RequestedNames::default();
    for ext in req.requested_extensions().into_iter().flatten() {
        let ParsedExtension::SubjectAlternativeName(san) = ext else {
            continue;
        };
        for name in &san.general_names {
            match name {
                GeneralName::DNSName(d) => out.dns.push(d.to_string()),
                GeneralName::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
                    Ok(v4) => out.ips.push(IpAddr::from(v4)),
                    Err(_) => match <[u8; 16]>::try_from(*b) {
                        Ok(v6) => out.ips.push(IpAddr::from(v6)),
                        Err(_) => out.other.push(name.to_string()),
                    },
                },
                other => out.other.push(other.to_string()),
            }
        }
    }
    Some(out)
}

/// What a registered Node answers to: the IPs and DNS names of its `status.addresses`, plus
/// its name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NodeAddresses {
    pub ips: Vec<IpAddr>,
    pub names: Vec<String>,
}

impl NodeAddresses {
    pub fn of(node: &Node) -> NodeAddresses {
        let mut out = NodeAddresses {
            ips: Vec::new(),
            names: node.metadata.name.clone().into_iter().collect(),
        };
        let addrs = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        for a in addrs.into_iter().flatten() {
            match a.address.parse::<IpAddr>() {
                Ok(ip) => out.ips.push(ip),
                Err(_) => out.names.push(a.address.to_lowercase()),
            }
        }
        out
    }
}

const SERVING_USAGES: [&str; 3] = ["digital signature", "key encipherment", "server auth"];

/// The shape Kubernetes' kubelet-serving signer requires: CN `system:node:<name>`, O exactly
/// `system:nodes`, at least one SAN and only DNS names and IPs. Returns the node name.
pub fn serving_shape<'a>(
    cn: &'a str,
    orgs: &[String],
    names: &RequestedNames,
) -> Result<&'a str, String> {
    let node = cn
        .strip_prefix("system:node:")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("the subject CN {cn:?} is not system:node:<name>"))?;
    if orgs != ["system:nodes"] {
        return Err(format!(
            "the subject organization must be exactly system:nodes, not {orgs:?}"
        ));
    }
    if let Some(o) = names.other.first() {
        return Err(format!(
            "subject alternative name {o} is not a DNS name or IP"
        ));
    }
    if names.dns.is_empty() && names.ips.is_empty() {
        return Err("the request names no DNS name or IP".into());
    }
    Ok(node)
}

/// The approval rule for serving certificates, pure. `node` is the registered Node of the
/// requested name, if any.
pub fn decide_serving(
    username: &str,
    groups: &[String],
    cn: &str,
    orgs: &[String],
    usages: &[String],
    names: &RequestedNames,
    node: Option<&NodeAddresses>,
) -> Decision {
    let requester_is_node = username == cn && groups.iter().any(|g| g == "system:nodes");
    if !requester_is_node {
        return Decision::Leave;
    }
    let name = match serving_shape(cn, orgs, names) {
        Ok(n) => n,
        Err(why) => return Decision::Deny(why),
    };
    if !usages.iter().any(|u| u == "server auth") {
        return Decision::Deny("the usages must include \"server auth\"".into());
    }
    if let Some(u) = usages
        .iter()
        .find(|u| !SERVING_USAGES.contains(&u.as_str()))
    {
        return Decision::Deny(format!(
            "usage {u:?} is not allowed in a serving certificate (only digital signature, key encipherment, server auth)"
        ));
    }
    let Some(node) = node else {
        return Decision::Deny(format!(
            "node {name} is not registered; the agent registers the Node before asking for a serving certificate"
        ));
    };
    if let Some(ip) = names.ips.iter().find(|ip| !node.ips.contains(ip)) {
        return Decision::Deny(format!(
            "IP {ip} is not an address of node {name} (status.addresses)"
        ));
    }
    if let Some(d) = names
        .dns
        .iter()
        .find(|d| !node.names.contains(&d.to_lowercase()))
    {
        return Decision::Deny(format!(
            "DNS name {d} is neither the name nor an address of node {name}"
        ));
    }
    Decision::Approve(
        "AutoApproved serving certificate: every name is an address of the requesting node",
    )
}

/// A key pair holding only a request's public key: `Ca::issue` needs one to build the
/// certificate; its private half stays on the node, so signing with it is refused.
struct RequestKey {
    raw: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::RemoteKeyPair for RequestKey {
    fn public_key(&self) -> &[u8] {
        &self.raw
    }
    fn sign(&self, _msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Err(rcgen::Error::RemoteKeyError)
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

/// Signs a serving request (its shape checked: `serving_shape`) for server auth, with the
/// subject `cn`/`orgs` and the request's SANs.
fn sign_serving(
    ca: &Ca,
    der: &[u8],
    cn: &str,
    orgs: &[String],
    days: i64,
) -> anyhow::Result<String> {
    use rcgen::PublicKeyData;
    let csr = rcgen::CertificateSigningRequestParams::from_der(&der.to_vec().into())
        .map_err(|e| anyhow::anyhow!("the request does not parse: {e}"))?;
    let alg = [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
        &rcgen::PKCS_RSA_SHA256,
    ]
    .into_iter()
    .find(|a| *a == csr.public_key.algorithm())
    .ok_or_else(|| anyhow::anyhow!("the request's key algorithm is not supported"))?;
    let key = rcgen::KeyPair::from_remote(Box::new(RequestKey {
        raw: csr.public_key.der_bytes().to_vec(),
        alg,
    }))?;
    let orgs: Vec<&str> = orgs.iter().map(String::as_str).collect();
    Ok(ca.issue(&key, cn, &orgs, &csr.params.subject_alt_names, true, days)?)
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
    let signer = csr.spec.signer_name.as_str();
    let ours = [
        KUBELET_SIGNER,
        SERVING_SIGNER,
        "kubernetes.io/kube-apiserver-client",
    ];
    if !ours.contains(&signer) {
        return Ok(());
    }
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
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
    let approved = conds
        .iter()
        .any(|c| c.type_ == "Approved" && c.status == "True");
    if !approved {
        let decision = match signer {
            KUBELET_SIGNER => client_decision(client, settings, &csr, &cn, &orgs).await,
            SERVING_SIGNER => serving_decision(client, &csr, &pem, &cn, &orgs).await?,
            _ => Decision::Leave,
        };
        match decision {
            Decision::Approve(msg) => {
                set_condition(&api, &name, "Approved", "AutoApproved", msg).await?;
                tracing::info!(csr = %name, %cn, %signer, "approved node certificate request");
            }
            Decision::Deny(msg) => {
                tracing::warn!(csr = %name, %cn, %signer, reason = %msg, "denied node certificate request");
                let reason = if signer == SERVING_SIGNER {
                    "NotNodeAddress"
                } else {
                    "NodeNameInUse"
                };
                return set_condition(&api, &name, "Denied", reason, &msg).await;
            }
            Decision::Leave => return Ok(()),
        }
    }
    let Some(der) = pem_der(&pem) else {
        return Ok(());
    };
    let days = csr
        .spec
        .expiration_seconds
        .map(|s| (i64::from(s) / 86400).max(1))
        .unwrap_or(settings.cert_days);
    let cert = if signer == SERVING_SIGNER {
        // Also for requests an operator approved: the signer's own rules still hold.
        let names = requested_names(&pem).unwrap_or_default();
        if let Err(why) = serving_shape(&cn, &orgs, &names) {
            return set_condition(&api, &name, "Failed", "SignerValidationFailure", &why).await;
        }
        sign_serving(ca, &der, &cn, &orgs, days)?
    } else {
        ca.sign_csr_der(&der, days)?
    };
    let patch =
        json!({"status": {"certificate": base64::engine::general_purpose::STANDARD.encode(cert)}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(csr = %name, %signer, "signed node certificate");
    Ok(())
}

async fn client_decision(
    client: &kube::Client,
    settings: &NodeSettings,
    csr: &CertificateSigningRequest,
    cn: &str,
    orgs: &[String],
) -> Decision {
    let username = csr.spec.username.clone().unwrap_or_default();
    let groups = csr.spec.groups.clone().unwrap_or_default();
    let live = match cn.strip_prefix("system:node:") {
        Some(node) if groups.iter().any(|g| g == "system:bootstrappers") => {
            node_is_live(client, node, settings).await
        }
        _ => false,
    };
    decide(&username, &groups, cn, orgs, live)
}

async fn serving_decision(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
    pem: &str,
    cn: &str,
    orgs: &[String],
) -> anyhow::Result<Decision> {
    let username = csr.spec.username.clone().unwrap_or_default();
    let groups = csr.spec.groups.clone().unwrap_or_default();
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let names = requested_names(pem).unwrap_or_default();
    let node = match cn.strip_prefix("system:node:").filter(|_| username == cn) {
        Some(n) => Api::<Node>::all(client.clone())
            .get_opt(n)
            .await?
            .map(|node| NodeAddresses::of(&node)),
        None => None,
    };
    Ok(decide_serving(
        &username,
        &groups,
        cn,
        orgs,
        &usages,
        &names,
        node.as_ref(),
    ))
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

    fn serving_csr(cn: &str, orgs: &[&str], sans: Vec<rcgen::SanType>) -> (rcgen::KeyPair, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        for o in orgs {
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.subject_alt_names = sans;
        let pem = p.serialize_request(&key).expect("csr").pem().expect("pem");
        (key, pem)
    }

    fn dns(s: &str) -> rcgen::SanType {
        rcgen::SanType::DnsName(s.to_string().try_into().expect("dns"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn requested_names_by_kind() {
        let (_, pem) = serving_csr(
            "system:node:w1",
            &["system:nodes"],
            vec![
                dns("w1"),
                rcgen::SanType::IpAddress(ip("10.0.0.1")),
                rcgen::SanType::IpAddress(ip("fd00::1")),
                rcgen::SanType::Rfc822Name("a@b.c".to_string().try_into().expect("mail")),
            ],
        );
        let n = requested_names(&pem).expect("names");
        assert_eq!(n.dns, vec!["w1".to_string()]);
        assert_eq!(n.ips, vec![ip("10.0.0.1"), ip("fd00::1")]);
        assert_eq!(n.other.len(), 1, "{:?}", n.other);
    }

    #[test]
    fn serving_approval_rules() {
        let nodes = vec!["system:nodes".to_string()];
        let usages: Vec<String> = SERVING_USAGES.iter().map(|u| u.to_string()).collect();
        let node = NodeAddresses {
            ips: vec![ip("10.0.0.1")],
            names: vec!["w1".into()],
        };
        let names = RequestedNames {
            dns: vec!["w1".into()],
            ips: vec![ip("10.0.0.1")],
            other: vec![],
        };
        let d =
            |user: &str, cn: &str, orgs: &[String], usages: &[String], n: &RequestedNames, node| {
                decide_serving(user, &nodes, cn, orgs, usages, n, node)
            };
        let w1 = "system:node:w1";
        assert!(matches!(
            d(w1, w1, &nodes, &usages, &names, Some(&node)),
            Decision::Approve(_)
        ));
        // Another node, or anyone else, asking for w1: an operator decides.
        assert_eq!(
            d("system:node:w2", w1, &nodes, &usages, &names, Some(&node)),
            Decision::Leave
        );
        assert_eq!(
            d("admin", w1, &nodes, &usages, &names, Some(&node)),
            Decision::Leave
        );
        let deny = |dec: Decision, want: &str| match dec {
            Decision::Deny(m) => assert!(m.contains(want), "{m}"),
            other => panic!("expected a denial with {want}, got {other:?}"),
        };
        let foreign_ip = RequestedNames {
            ips: vec![ip("10.0.0.9")],
            ..names.clone()
        };
        deny(
            d(w1, w1, &nodes, &usages, &foreign_ip, Some(&node)),
            "IP 10.0.0.9",
        );
        let foreign_dns = RequestedNames {
            dns: vec!["evil.example".into()],
            ..names.clone()
        };
        deny(
            d(w1, w1, &nodes, &usages, &foreign_dns, Some(&node)),
            "DNS name evil.example",
        );
        let mail = RequestedNames {
            other: vec!["RFC822Name(a@b.c)".into()],
            ..names.clone()
        };
        deny(
            d(w1, w1, &nodes, &usages, &mail, Some(&node)),
            "not a DNS name or IP",
        );
        deny(
            d(
                w1,
                w1,
                &nodes,
                &usages,
                &RequestedNames::default(),
                Some(&node),
            ),
            "no DNS name",
        );
        deny(d(w1, w1, &nodes, &usages, &names, None), "not registered");
        deny(
            d(w1, w1, &nodes, &["client auth".into()], &names, Some(&node)),
            "server auth",
        );
        let extra = vec!["server auth".to_string(), "client auth".to_string()];
        deny(
            d(w1, w1, &nodes, &extra, &names, Some(&node)),
            "\"client auth\" is not allowed",
        );
        deny(
            d(
                w1,
                w1,
                &["system:masters".into()],
                &usages,
                &names,
                Some(&node),
            ),
            "organization",
        );
    }

    #[test]
    fn serving_certificates_are_for_server_auth() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::create(dir.path()).expect("ca");
        let (key, pem) = serving_csr(
            "system:node:w1",
            &["system:nodes"],
            vec![dns("w1"), rcgen::SanType::IpAddress(ip("10.0.0.1"))],
        );
        let der = pem_der(&pem).expect("der");
        let orgs = vec!["system:nodes".to_string()];
        let cert_pem = sign_serving(&ca, &der, "system:node:w1", &orgs, 30).expect("signed");
        let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .expect("a cert")
            .expect("pem");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        let eku = cert
            .extended_key_usage()
            .expect("eku")
            .expect("present")
            .value;
        assert!(eku.server_auth && !eku.client_auth);
        let subject = cert.subject().to_string();
        assert!(
            subject.contains("CN=system:node:w1") && subject.contains("O=system:nodes"),
            "{subject}"
        );
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .expect("san")
            .expect("present")
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(sans.len(), 2, "{sans:?}");
        assert!(cert.issuer().to_string().contains("CN=kubernetes"));
    }
}
