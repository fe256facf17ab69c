//! The serving certificate of the agent's endpoint, obtained like kubelet's
//! (`serverTLSBootstrap`): a fresh ECDSA P-256 key, a request for CN `system:node:<name>`, O
//! `system:nodes`, SANs = the node's IPs and its name, sent as the node to signer
//! `kubernetes.io/kubelet-serving` with usages digital signature, key encipherment, server auth.
//! keel-control's approver signs it when every SAN is an address of that Node (see
//! `control/src/nodes/csr.rs`). Kept in `<root>/pki/serving.{crt,key}`; renewed at 70-90% of
//! its lifetime, or at once when the node's addresses are no longer all in it.

use crate::bootstrap::csr::{self, CsrError};
use crate::state::{self, Layout};
use kube::api::Api;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const SIGNER: &str = "kubernetes.io/kubelet-serving";
pub const USAGES: [&str; 3] = ["digital signature", "key encipherment", "server auth"];

pub fn cert_path(layout: &Layout) -> PathBuf {
    layout.pki().join("serving.crt")
}

pub fn key_path(layout: &Layout) -> PathBuf {
    layout.pki().join("serving.key")
}

/// What the certificate must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sans {
    pub ips: Vec<IpAddr>,
    pub dns: Vec<String>,
}

impl Sans {
    /// The node's IPs, and its name when it is a DNS name (the Node's `Hostname` address).
    pub fn for_node(node: &str, ips: &[IpAddr]) -> Sans {
        let dns = if node.parse::<IpAddr>().is_err() && rcgen::Ia5String::try_from(node).is_ok() {
            vec![node.to_string()]
        } else {
            Vec::new()
        };
        Sans {
            ips: ips.to_vec(),
            dns,
        }
    }
}

/// The key and the PEM request.
pub fn request(node: &str, sans: &Sans) -> Result<(rcgen::KeyPair, String), CsrError> {
    let gen_err = |e: rcgen::Error| CsrError::Generate(e.to_string());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut params = rcgen::CertificateParams::new(sans.dns.clone()).map_err(gen_err)?;
    params
        .subject_alt_names
        .extend(sans.ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    dn.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params.distinguished_name = dn;
    let pem = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(gen_err)?;
    Ok((key, pem))
}

/// The IP and DNS SANs of the first certificate in `pem`.
pub fn sans_of(pem: &str) -> Option<Sans> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes()).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let mut out = Sans {
        ips: Vec::new(),
        dns: Vec::new(),
    };
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => out.dns.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => out
                        .ips
                        .push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                    16 => out
                        .ips
                        .push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Some(out)
}

/// When to renew a usable certificate (Unix seconds; already past when it is near expiry), or
/// why it cannot be served at all.
pub fn check(cert_pem: &str, want: &Sans, now: i64, jitter: f64) -> Result<i64, &'static str> {
    let (nb, na) = csr::validity(cert_pem).ok_or("it does not parse")?;
    if now >= na {
        return Err("it has expired");
    }
    let have = sans_of(cert_pem).ok_or("it does not parse")?;
    let covered = want.ips.iter().all(|ip| have.ips.contains(ip))
        && want.dns.iter().all(|d| have.dns.contains(d));
    if !covered {
        return Err("the node's addresses changed");
    }
    Ok(crate::run::renew_at(nb, na, jitter))
}

/// The saved certificate and key, if both are there.
pub fn load(layout: &Layout) -> Option<(String, String)> {
    let cert = std::fs::read_to_string(cert_path(layout)).ok()?;
    let key = std::fs::read_to_string(key_path(layout)).ok()?;
    Some((cert, key))
}

/// Waits up to `timeout` for the Node `node` to exist (it may still be registering).
pub async fn wait_for_node(client: &kube::Client, node: &str, timeout: Duration) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = nodes.get_opt(node).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::warn!(%node, "the Node is not registered yet; asking for a serving certificate anyway");
}

/// Sends the request as the node and waits up to `timeout` for the signed certificate.
/// Returns (cert PEM, key PEM), already saved under `<root>/pki`.
pub async fn obtain(
    layout: &Layout,
    client: &kube::Client,
    node: &str,
    sans: &Sans,
    timeout: Duration,
) -> Result<(String, String), CsrError> {
    let (key, request_pem) = request(node, sans)?;
    let suffix: u32 = rand::random();
    let name = format!("node-serving-{node}-{suffix:08x}");
    let cert_pem = csr::submit_and_wait(
        client,
        &name,
        request_pem,
        SIGNER,
        &USAGES,
        timeout,
        "serving certificate request",
    )
    .await?;
    let bad = |detail: String| CsrError::BadCertificate {
        name: name.clone(),
        detail,
    };
    let have = sans_of(&cert_pem).ok_or_else(|| bad("it does not parse".into()))?;
    let spki_ok = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()
        .and_then(|c| c.ok())
        .and_then(|der| {
            x509_parser::parse_x509_certificate(&der)
                .ok()
                .map(|(_, c)| c.public_key().subject_public_key.data.to_vec())
        })
        .is_some_and(|pk| pk == key.public_key_raw());
    if !spki_ok {
        return Err(bad("it is not for the key this node generated".into()));
    }
    if !sans.ips.iter().all(|ip| have.ips.contains(ip)) {
        return Err(bad("it lacks some of the node's IP addresses".into()));
    }
    let key_pem = key.serialize_pem();
    let saved = state::write_atomic(&key_path(layout), key_pem.as_bytes(), 0o600)
        .and_then(|()| state::write_atomic(&cert_path(layout), cert_pem.as_bytes(), 0o644));
    saved.map_err(|e| bad(format!("saving it: {e}")))?;
    tracing::info!(csr = %name, "serving certificate issued");
    Ok((cert_pem, key_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(sans: &Sans, days: i64) -> String {
        let (key, _) = request("w1", sans).expect("request");
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("p")
            .self_signed(&ca_key)
            .expect("ca");
        let mut p = rcgen::CertificateParams::new(sans.dns.clone()).expect("p");
        p.subject_alt_names
            .extend(sans.ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
        let now = rcgen::date_time_ymd(2026, 1, 1);
        p.not_before = now;
        p.not_after = now + std::time::Duration::from_secs(days as u64 * 86400);
        p.signed_by(&key, &ca, &ca_key).expect("cert").pem()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn sans_are_the_node_ips_and_name() {
        let s = Sans::for_node("w1", &[ip("10.0.0.1"), ip("fd00::1")]);
        assert_eq!(s.dns, vec!["w1".to_string()]);
        let pem = signed(&s, 10);
        assert_eq!(sans_of(&pem).expect("sans"), s);
        assert!(Sans::for_node("10.0.0.1", &[]).dns.is_empty());
    }

    #[test]
    fn renewal_rules() {
        let s = Sans::for_node("w1", &[ip("10.0.0.1")]);
        let pem = signed(&s, 100);
        let (nb, na) = csr::validity(&pem).expect("validity");
        let day = 86400;
        assert_eq!(check(&pem, &s, nb + day, 0.0), Ok(nb + 70 * day));
        assert_eq!(check(&pem, &s, nb + 71 * day, 0.0), Ok(nb + 70 * day));
        assert_eq!(check(&pem, &s, nb + day, 1.0), Ok(nb + 90 * day));
        assert_eq!(check(&pem, &s, na, 0.0), Err("it has expired"));
        let moved = Sans::for_node("w1", &[ip("10.0.0.2")]);
        assert_eq!(
            check(&pem, &moved, nb + day, 0.0),
            Err("the node's addresses changed")
        );
        assert_eq!(check("junk", &s, nb, 0.0), Err("it does not parse"));
    }

    #[test]
    fn request_carries_identity_and_sans() {
        let s = Sans::for_node("w1", &[ip("10.0.0.1")]);
        let (_, pem) = request("w1", &s).expect("request");
        let der = rustls_pemfile::csr(&mut pem.as_bytes())
            .expect("pem")
            .expect("a csr");
        use x509_parser::prelude::FromDer;
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
                .expect("parse");
        let dn = req.certification_request_info.subject.to_string();
        assert!(
            dn.contains("CN=system:node:w1") && dn.contains("O=system:nodes"),
            "{dn}"
        );
        let mut names = Vec::new();
        for ext in req.requested_extensions().into_iter().flatten() {
            if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
                names.extend(san.general_names.iter().map(|n| n.to_string()));
            }
        }
        assert_eq!(names, vec!["DNSName(w1)", "IPAddress(0a:00:00:01)"]);
    }
}
