//! TLS for the agent's endpoint: the serving certificate (swappable, so a renewed one takes
//! effect without a restart), client certificates verified against the cluster CA
//! (`<root>/pki/ca.crt`), and who may call: only the control plane's kubelet-client identity.
//! A connection without a client certificate is accepted so it can get an HTTP 401 instead of
//! a bare handshake failure, as kubelet answers.

use super::ServerError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// The subject CN of the certificate kube-apiserver presents to kubelets (keel-control's
/// `apiserver-kubelet-client.crt`, kubeadm's `apiserver-kubelet-client`).
pub const APISERVER_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// Who called, from the verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No client certificate: 401.
    Anonymous,
    /// A certificate of the cluster CA for this subject CN.
    Cert(String),
}

impl Caller {
    /// None when allowed, else the status code and the message.
    pub fn refuse(&self) -> Option<(u16, String)> {
        match self {
            Caller::Anonymous => Some((401, "Unauthorized".into())),
            Caller::Cert(cn) if cn == APISERVER_CLIENT_CN => None,
            Caller::Cert(cn) => Some((
                403,
                format!(
                    "Forbidden (user={cn}): only the API server ({APISERVER_CLIENT_CN}) may call this node's agent"
                ),
            )),
        }
    }

    /// From the first certificate of the verified chain, if any.
    pub fn from_peer(certs: Option<&[CertificateDer<'_>]>) -> Caller {
        let Some(first) = certs.and_then(|c| c.first()) else {
            return Caller::Anonymous;
        };
        let cn = x509_parser::parse_x509_certificate(first.as_ref())
            .ok()
            .and_then(|(_, c)| {
                c.subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok().map(str::to_string))
            })
            .unwrap_or_default();
        Caller::Cert(cn)
    }
}

/// The serving certificate in use; `set` swaps it for new connections.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServingCert {
    pub fn new(cert_pem: &str, key_pem: &str, path: &Path) -> Result<ServingCert, ServerError> {
        Ok(ServingCert {
            current: RwLock::new(certified_key(cert_pem, key_pem, path)?),
        })
    }

    pub fn set(&self, cert_pem: &str, key_pem: &str, path: &Path) -> Result<(), ServerError> {
        let key = certified_key(cert_pem, key_pem, path)?;
        if let Ok(mut cur) = self.current.write() {
            *cur = key;
        }
        Ok(())
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|k| k.clone())
    }
}

fn tls_err(path: &Path, detail: impl ToString) -> ServerError {
    ServerError::Tls {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

fn certified_key(
    cert_pem: &str,
    key_pem: &str,
    path: &Path,
) -> Result<Arc<CertifiedKey>, ServerError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(path, e))?;
    if certs.is_empty() {
        return Err(tls_err(path, "no certificate in the PEM"));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| tls_err(path, e))?
        .ok_or_else(|| tls_err(path, "no private key in the PEM"))?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| tls_err(path, e))?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

/// The server configuration: `serving` for our side, client certificates chained to the CA in
/// `ca_path` (optional at the TLS layer, required by `Caller::refuse`).
pub fn server_config(
    serving: Arc<ServingCert>,
    ca_path: &Path,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let data = std::fs::read(ca_path).map_err(|e| tls_err(ca_path, e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut data.as_slice()) {
        roots
            .add(ca.map_err(|e| tls_err(ca_path, e))?)
            .map_err(|e| tls_err(ca_path, e))?;
    }
    if roots.is_empty() {
        return Err(tls_err(ca_path, "no CA certificate in the PEM"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| tls_err(ca_path, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(ca_path, e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_apiserver_identity_is_allowed() {
        assert_eq!(Caller::Anonymous.refuse().map(|r| r.0), Some(401));
        assert_eq!(Caller::Cert(APISERVER_CLIENT_CN.into()).refuse(), None);
        let (code, msg) = Caller::Cert("system:node:w1".into())
            .refuse()
            .expect("refused");
        assert_eq!(code, 403);
        assert!(msg.contains("system:node:w1"), "{msg}");
    }

    #[test]
    fn caller_from_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, APISERVER_CLIENT_CN);
        let cert = p.self_signed(&key).expect("cert");
        let der = CertificateDer::from(cert.der().to_vec());
        assert_eq!(
            Caller::from_peer(Some(&[der])),
            Caller::Cert(APISERVER_CLIENT_CN.into())
        );
        assert_eq!(Caller::from_peer(None), Caller::Anonymous);
    }

    #[test]
    fn bad_pem_names_the_file() {
        let err = ServingCert::new("nope", "nope", Path::new("/x/serving.crt"))
            .expect_err("no certificate");
        assert!(err.to_string().contains("/x/serving.crt"), "{err}");
    }
}
