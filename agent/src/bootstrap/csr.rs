//! The node's client certificate through the certificates API: a fresh ECDSA P-256 key, a
//! PKCS#10 request for CN `system:node:<name>` / O `system:nodes`, a CertificateSigningRequest
//! for signer `kubernetes.io/kube-apiserver-client-kubelet`, then waiting for the approver and
//! signer (kubelet-tls-bootstrapping.md). Used for the first certificate (with the bootstrap
//! token) and for every rotation (with the node's current certificate).

use crate::client::{Failure, classify};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::{Duration, Instant};

pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("generating the node key or request: {0}")]
    Generate(String),
    #[error("creating CertificateSigningRequest {name}")]
    Create { name: String, failure: Failure },
    #[error("reading CertificateSigningRequest {name}")]
    Get { name: String, failure: Failure },
    #[error("CertificateSigningRequest {name} was denied: {message}")]
    Denied { name: String, message: String },
    #[error("CertificateSigningRequest {name} failed: {message}")]
    Failed { name: String, message: String },
    #[error(
        "CertificateSigningRequest {name} was not signed within {secs}s; check `kubectl get csr {name}` and that keel-control's CSR approver and signer run"
    )]
    Timeout { name: String, secs: u64 },
    #[error("the signed certificate of {name} is unusable: {detail}")]
    BadCertificate { name: String, detail: String },
}

/// A key and the certificate signed for it.
pub struct Issued {
    pub key_pem: String,
    pub cert_pem: String,
    pub csr_name: String,
}

/// Generates a key and the PEM request for `node`.
pub fn request(node: &str) -> Result<(rcgen::KeyPair, String), CsrError> {
    let gen_err = |e: rcgen::Error| CsrError::Generate(e.to_string());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
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

fn csr_name(node: &str) -> String {
    let suffix: u32 = rand::random();
    format!("node-csr-{node}-{suffix:08x}")
}

/// Creates the CertificateSigningRequest `name` for `request_pem` with `signer` and `usages`,
/// then waits up to `timeout` for its certificate (PEM text). A Denied or Failed condition
/// ends the wait with that condition's message. `what` names the request in the log line.
pub async fn submit_and_wait(
    client: &kube::Client,
    name: &str,
    request_pem: String,
    signer: &str,
    usages: &[&str],
    timeout: Duration,
    what: &str,
) -> Result<String, CsrError> {
    let name = name.to_string();
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request_pem.into_bytes()),
            signer_name: signer.into(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    api.create(&PostParams::default(), &csr)
        .await
        .map_err(|e| CsrError::Create {
            name: name.clone(),
            failure: classify(&e),
        })?;
    tracing::info!(csr = %name, "{what} sent, waiting for approval");
    let deadline = Instant::now() + timeout;
    loop {
        let got = api.get(&name).await.map_err(|e| CsrError::Get {
            name: name.clone(),
            failure: classify(&e),
        })?;
        let status = got.status.unwrap_or_default();
        for c in status.conditions.unwrap_or_default() {
            if c.status != "True" {
                continue;
            }
            let message = c.message.or(c.reason).unwrap_or_default();
            match c.type_.as_str() {
                "Denied" => return Err(CsrError::Denied { name, message }),
                "Failed" => return Err(CsrError::Failed { name, message }),
                _ => {}
            }
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            return String::from_utf8(cert.0).map_err(|_| CsrError::BadCertificate {
                name,
                detail: "not PEM text".into(),
            });
        }
        if Instant::now() > deadline {
            return Err(CsrError::Timeout {
                name,
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Creates the client CSR with `client` and waits up to `timeout` for its certificate.
pub async fn obtain(
    client: &kube::Client,
    node: &str,
    timeout: Duration,
) -> Result<Issued, CsrError> {
    let (key, request_pem) = request(node)?;
    let name = csr_name(node);
    let usages = ["digital signature", "key encipherment", "client auth"];
    let cert_pem = submit_and_wait(
        client,
        &name,
        request_pem,
        SIGNER,
        &usages,
        timeout,
        "certificate signing request",
    )
    .await?;
    check_matches(&cert_pem, &key, node).map_err(|detail| CsrError::BadCertificate {
        name: name.clone(),
        detail,
    })?;
    Ok(Issued {
        key_pem: key.serialize_pem(),
        cert_pem,
        csr_name: name,
    })
}

/// The certificate must carry our public key and our node identity.
fn check_matches(cert_pem: &str, key: &rcgen::KeyPair, node: &str) -> Result<(), String> {
    let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()
        .and_then(|c| c.ok())
        .ok_or("no certificate in the PEM")?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| format!("does not parse: {e}"))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err("it is not for the key this node generated".into());
    }
    let want = format!("system:node:{node}");
    let cn_ok = cert
        .subject()
        .iter_common_name()
        .any(|cn| cn.as_str().ok() == Some(want.as_str()));
    if !cn_ok {
        return Err(format!("its subject is not CN={want}"));
    }
    Ok(())
}

/// (notBefore, notAfter) of the first certificate in `pem`, as Unix seconds.
pub fn validity(pem: &str) -> Option<(i64, i64)> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes()).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_node_identity() {
        let (key, pem) = request("w1").expect("request");
        let der = rustls_pemfile::csr(&mut pem.as_bytes())
            .expect("pem")
            .expect("a csr");
        use x509_parser::prelude::FromDer;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
                .expect("parse");
        let dn = csr.certification_request_info.subject.to_string();
        assert!(dn.contains("system:node:w1"), "{dn}");
        assert!(dn.contains("system:nodes"), "{dn}");
        assert!(key.serialize_pem().contains("PRIVATE KEY"));
    }

    #[test]
    fn checks_key_and_subject_of_the_certificate() {
        let (key, _) = request("w1").expect("request");
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("p")
            .self_signed(&ca_key)
            .expect("ca");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("p");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:w1");
        let cert = p.signed_by(&key, &ca, &ca_key).expect("cert");
        assert!(check_matches(&cert.pem(), &key, "w1").is_ok());
        assert!(check_matches(&cert.pem(), &key, "w2").is_err());
        let (other, _) = request("w1").expect("request");
        assert!(check_matches(&cert.pem(), &other, "w1").is_err());
        let (nb, na) = validity(&cert.pem()).expect("validity");
        assert!(nb < na);
    }
}
