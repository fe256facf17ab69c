//! Building `kube` clients for the three trust levels of a node's life (discovery without TLS
//! trust, the pinned CA with a bootstrap token, the node's own certificate) and naming what went
//! wrong when a request fails, so every caller can print one actionable line.

use http::{HeaderValue, header::AUTHORIZATION};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{server} is not a valid API server address: {detail}")]
    Address { server: String, detail: String },
    #[error("building a client for {server}: {detail}")]
    Build { server: String, detail: String },
    #[error("reading the kubeconfig {path}: {detail}; join the node again")]
    Kubeconfig { path: String, detail: String },
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// How a request to the API server failed, for the user-facing message.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// TCP connection refused, timed out or no route.
    Unreachable(String),
    /// The peer does not speak TLS or HTTP like an API server.
    NotKubernetes(String),
    /// The certificate presented or sent is outside its validity window.
    CertificateTime(String),
    /// TLS verification failed for another reason.
    Tls(String),
    /// The API answered with a Status.
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    Other(String),
}

/// Every message in an error's source chain, joined (kube wraps hyper wraps rustls wraps io).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = s.source();
    }
    parts.join(": ")
}

pub fn classify(e: &kube::Error) -> Failure {
    if let kube::Error::Api(s) = e {
        return Failure::Api {
            code: s.code,
            reason: s.reason.clone(),
            message: s.message.clone(),
        };
    }
    let text = chain(e);
    let lower = text.to_lowercase();
    if lower.contains("expired") || lower.contains("notvalidyet") || lower.contains("not valid yet")
    {
        Failure::CertificateTime(text)
    } else if lower.contains("connection refused")
        || lower.contains("timed out")
        || lower.contains("timeout")
        || lower.contains("no route to host")
        || lower.contains("network is unreachable")
        || lower.contains("deadline has elapsed")
    {
        Failure::Unreachable(text)
    } else if lower.contains("invalidcontenttype")
        || lower.contains("corrupt message")
        || lower.contains("invalid http")
        || lower.contains("received corrupt")
        || lower.contains("peer is incompatible")
        || matches!(e, kube::Error::SerdeError(_))
    {
        Failure::NotKubernetes(text)
    } else if lower.contains("certificate") || lower.contains("tls") {
        Failure::Tls(text)
    } else {
        Failure::Other(text)
    }
}

/// `SERVER:PORT` (or a full `https://` URL) as the API server URL.
pub fn server_url(server: &str) -> Result<String> {
    let url = if server.starts_with("https://") {
        server.trim_end_matches('/').to_string()
    } else if server.contains("://") {
        return Err(ClientError::Address {
            server: server.into(),
            detail: "only https:// is supported".into(),
        });
    } else {
        format!("https://{server}")
    };
    url.parse::<http::Uri>()
        .map_err(|e| ClientError::Address {
            server: server.into(),
            detail: e.to_string(),
        })
        .and_then(|u| match u.port_u16() {
            Some(_) => Ok(url.clone()),
            None => Err(ClientError::Address {
                server: server.into(),
                detail: "expected HOST:PORT, e.g. 192.168.56.10:6443".into(),
            }),
        })
}

fn base_config(server: &str) -> Result<kube::Config> {
    let uri = server
        .parse::<http::Uri>()
        .map_err(|e| ClientError::Address {
            server: server.into(),
            detail: e.to_string(),
        })?;
    let mut cfg = kube::Config::new(uri);
    cfg.connect_timeout = Some(Duration::from_secs(10));
    cfg.read_timeout = Some(Duration::from_secs(30));
    cfg.write_timeout = Some(Duration::from_secs(30));
    cfg.reset_reader_on_write = true;
    cfg.default_namespace = "default".into();
    Ok(cfg)
}

fn build(server: &str, cfg: kube::Config) -> Result<kube::Client> {
    kube::Client::try_from(cfg).map_err(|e| ClientError::Build {
        server: server.into(),
        detail: chain(&e),
    })
}

/// Anonymous, trusting any certificate: only for reading `cluster-info`, whose content is then
/// checked by its JWS signature and the CA pin before anything is trusted.
pub fn insecure(server: &str) -> Result<kube::Client> {
    let mut cfg = base_config(server)?;
    cfg.accept_invalid_certs = true;
    build(server, cfg)
}

/// Trusting only `ca_der`, authenticating with a bearer `token` (the bootstrap token).
pub fn with_token(server: &str, ca_der: Vec<Vec<u8>>, token: &str) -> Result<kube::Client> {
    let mut cfg = base_config(server)?;
    cfg.root_cert = Some(ca_der);
    let value =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| ClientError::Build {
            server: server.into(),
            detail: format!("the token is not a valid header value: {e}"),
        })?;
    cfg.headers.push((AUTHORIZATION, value));
    build(server, cfg)
}

/// The node's own client from its saved kubeconfig.
pub async fn from_kubeconfig(path: &std::path::Path) -> Result<kube::Client> {
    let err = |detail: String| ClientError::Kubeconfig {
        path: path.display().to_string(),
        detail,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(chain(&e)))?;
    let mut cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| err(chain(&e)))?;
    cfg.connect_timeout = Some(Duration::from_secs(10));
    cfg.read_timeout = Some(Duration::from_secs(30));
    cfg.reset_reader_on_write = true;
    let server = cfg.cluster_url.to_string();
    build(&server, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_forms() {
        assert_eq!(
            server_url("192.168.56.10:6443").expect("ok"),
            "https://192.168.56.10:6443"
        );
        assert_eq!(
            server_url("https://cp:6443/").expect("ok"),
            "https://cp:6443"
        );
        assert!(server_url("192.168.56.10").is_err());
        assert!(server_url("http://x:1").is_err());
    }
}
