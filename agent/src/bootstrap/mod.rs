//! `keel-agent join`: token discovery, TLS bootstrap and saving the node's credentials. Every
//! failure becomes one `JoinError` line that names the cause and what to do next.

pub mod csr;
pub mod discovery;

use crate::client::{self, Failure, classify};
use crate::state::{self, AgentConfig, Credentials, Layout};
use discovery::DiscoveryError;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use std::time::Duration;

const NEW_TOKEN: &str =
    "create a new one on the control plane with `keel-control token create --print-join-command`";
const FIX_CLOCK: &str =
    "set this machine's clock (`timedatectl set-ntp true`, or `chronyc makestep`) and join again";

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "--token {0:?} is not a bootstrap token: expected [a-z0-9]{{6}}.[a-z0-9]{{16}}, as printed by `keel-control init`"
    )]
    TokenFormat(String),
    #[error(transparent)]
    Pin(DiscoveryError),
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error(
        "cannot reach the API server at {server} ({detail}); check the address and port, that `keel-control serve` runs there and that no firewall blocks it"
    )]
    Unreachable { server: String, detail: String },
    #[error(
        "{server} answered but is not a Kubernetes API server ({detail}); check the address and port (keel-control listens on 6443 unless --listen says otherwise)"
    )]
    NotKubernetes { server: String, detail: String },
    #[error(
        "CA hash mismatch: the cluster at {server} has CA public key hash {actual}, but --discovery-token-ca-cert-hash is {expected}; copy the hash printed by `keel-control init` (or `keel-control token create --print-join-command`) and check that this is the right server"
    )]
    CaHash {
        server: String,
        expected: String,
        actual: String,
    },
    #[error("bootstrap token {id} is unknown or expired ({detail}); {NEW_TOKEN}")]
    Token { id: String, detail: String },
    #[error("clock skew: {detail}; {FIX_CLOCK}")]
    Clock { detail: String },
    /// The approver's message says why (a live machine holds the name, or an admin denied it).
    #[error("the control plane denied the certificate for node {node}: {message}")]
    NodeTaken { node: String, message: String },
    #[error("the control plane refused this node's certificate request: {0}")]
    Csr(csr::CsrError),
    #[error(
        "cluster-info from {server} is unusable: {detail}; is this a Keel or kubeadm control plane?"
    )]
    ClusterInfo { server: String, detail: String },
    #[error(
        "{root} already holds a joined node ({node} at {server}); start it with `keel-agent run --root-dir {root}`, or remove {root} to join again"
    )]
    AlreadyJoined {
        root: String,
        node: String,
        server: String,
    },
    #[error(transparent)]
    State(#[from] state::StateError),
}

pub type Result<T> = std::result::Result<T, JoinError>;

pub struct JoinOptions {
    pub server: String,
    pub token: String,
    pub ca_hashes: Vec<String>,
    pub layout: Layout,
    pub config: AgentConfig,
}

fn is_token(s: &str) -> bool {
    let ok = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    s.split_once('.')
        .is_some_and(|(id, secret)| ok(id, 6) && ok(secret, 16))
}

/// Maps a transport failure during join to its message.
fn transport(server: &str, id: &str, f: Failure) -> JoinError {
    match f {
        Failure::Unreachable(detail) => JoinError::Unreachable {
            server: server.into(),
            detail,
        },
        Failure::NotKubernetes(detail) | Failure::Other(detail) => JoinError::NotKubernetes {
            server: server.into(),
            detail,
        },
        Failure::CertificateTime(detail) => JoinError::Clock {
            detail: format!(
                "the API server's certificate is not valid at this machine's time ({detail})"
            ),
        },
        Failure::Tls(detail) => JoinError::NotKubernetes {
            server: server.into(),
            detail,
        },
        Failure::Api {
            code: 401, message, ..
        } => JoinError::Token {
            id: id.into(),
            detail: format!("the API server answered 401 Unauthorized: {message}"),
        },
        Failure::Api {
            code,
            reason,
            message,
        } => JoinError::NotKubernetes {
            server: server.into(),
            detail: format!("{code} {reason}: {message}"),
        },
    }
}

/// Discovery, TLS bootstrap and saving credentials; returns the saved config.
pub async fn join(opts: JoinOptions) -> Result<AgentConfig> {
    if !is_token(&opts.token) {
        return Err(JoinError::TokenFormat(opts.token.clone()));
    }
    let pins = opts
        .ca_hashes
        .iter()
        .map(|h| discovery::parse_pin(h))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(JoinError::Pin)?;
    if let Ok(existing) = AgentConfig::load(&opts.layout)
        && opts.layout.kubeconfig().exists()
    {
        return Err(JoinError::AlreadyJoined {
            root: opts.layout.root.display().to_string(),
            node: existing.node_name,
            server: existing.server,
        });
    }
    let server = client::server_url(&opts.server)?;
    let id = opts.token.split('.').next().unwrap_or_default().to_string();

    // 1. Discovery: untrusted read, then the JWS and the pin decide.
    let insecure = client::insecure(&server)?;
    let cm = Api::<ConfigMap>::namespaced(insecure, "kube-public")
        .get("cluster-info")
        .await
        .map_err(|e| transport(&server, &id, classify(&e)))?;
    let data = cm.data.unwrap_or_default();
    let kubeconfig = data
        .get("kubeconfig")
        .ok_or_else(|| JoinError::ClusterInfo {
            server: server.clone(),
            detail: "it has no kubeconfig key".into(),
        })?;
    let jws = data
        .get(&format!("jws-kubeconfig-{id}"))
        .ok_or_else(|| JoinError::Token {
            id: id.clone(),
            detail: "cluster-info carries no signature for it".into(),
        })?;
    discovery::verify_jws(jws, kubeconfig.as_bytes(), &opts.token).map_err(|e| match e {
        DiscoveryError::BadSignature { .. } => JoinError::Token {
            id: id.clone(),
            detail: "its secret does not match the cluster's signature".into(),
        },
        other => JoinError::ClusterInfo {
            server: server.clone(),
            detail: other.to_string(),
        },
    })?;
    let cluster = discovery::trust(kubeconfig, &pins).map_err(|e| match e {
        DiscoveryError::CaHash { expected, actual } => JoinError::CaHash {
            server: server.clone(),
            expected: expected.join(" or "),
            actual,
        },
        DiscoveryError::Clock { .. } => JoinError::Clock {
            detail: e.to_string(),
        },
        other => JoinError::ClusterInfo {
            server: server.clone(),
            detail: other.to_string(),
        },
    })?;
    if cluster.server != server {
        tracing::info!(published = %cluster.server, using = %server, "cluster-info publishes another server address; using the one given on the command line");
    }
    tracing::info!(%server, "cluster CA verified by the token signature and the CA hash");

    // 2. TLS bootstrap with the token, now that the CA is pinned.
    let node = opts.config.node_name.clone();
    let boot = client::with_token(&server, cluster.ca_der.clone(), &opts.token)?;
    let issued = csr::obtain(&boot, &node, Duration::from_secs(120))
        .await
        .map_err(|e| csr_error(&server, &id, &node, e))?;
    check_issued_time(&issued.cert_pem)?;

    // 3. Save: nothing is written before this point, so a failed join leaves nothing behind.
    let layout = &opts.layout;
    state::write_atomic(&layout.ca(), cluster.ca_pem.as_bytes(), 0o644)?;
    state::write_atomic(&layout.key(), issued.key_pem.as_bytes(), 0o600)?;
    state::write_atomic(&layout.cert(), issued.cert_pem.as_bytes(), 0o644)?;
    let mut config = opts.config.clone();
    config.server = server.clone();
    write_kubeconfig(layout, &config, &cluster.ca_pem, &issued)?;
    config.save(layout)?;
    tracing::info!(csr = %issued.csr_name, node = %node, root = %layout.root.display(), "node credentials saved");
    Ok(config)
}

pub fn write_kubeconfig(
    layout: &Layout,
    config: &AgentConfig,
    ca_pem: &str,
    issued: &csr::Issued,
) -> Result<()> {
    let kc = state::kubeconfig(
        &config.server,
        ca_pem,
        &format!("system:node:{}", config.node_name),
        Credentials::Certificate {
            cert_pem: &issued.cert_pem,
            key_pem: &issued.key_pem,
        },
    );
    state::write_atomic(&layout.kubeconfig(), kc.as_bytes(), 0o600)?;
    Ok(())
}

fn csr_error(server: &str, id: &str, node: &str, e: csr::CsrError) -> JoinError {
    match e {
        csr::CsrError::Create { failure, .. } | csr::CsrError::Get { failure, .. } => {
            transport(server, id, failure)
        }
        csr::CsrError::Denied { message, .. } => JoinError::NodeTaken {
            node: node.into(),
            message: if message.is_empty() {
                format!(
                    "no reason given; if another machine uses this name, choose another --node-name or `kubectl delete node {node}` first"
                )
            } else {
                message
            },
        },
        other => JoinError::Csr(other),
    }
}

/// A certificate that starts in this machine's future means the clocks disagree (5 min slack).
fn check_issued_time(cert_pem: &str) -> Result<()> {
    let now = chrono::Utc::now().timestamp();
    if let Some((nb, na)) = csr::validity(cert_pem)
        && (now + 300 < nb || now > na)
    {
        let fmt = |t: i64| {
            chrono::DateTime::from_timestamp(t, 0)
                .map(|d| d.to_rfc3339())
                .unwrap_or_default()
        };
        return Err(JoinError::Clock {
            detail: format!(
                "the signed node certificate is valid from {} to {}, but this machine's clock says {}",
                fmt(nb),
                fmt(na),
                fmt(now)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        assert!(is_token("abcdef.0123456789abcdef"));
        assert!(!is_token("ABCDEF.0123456789abcdef"));
        assert!(!is_token("abcdef0123456789abcdef"));
        assert!(!is_token("abc.0123456789abcdef"));
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = transport(
            "https://x:6443",
            "abcdef",
            Failure::Api {
                code: 401,
                reason: "Unauthorized".into(),
                message: "bad".into(),
            },
        );
        assert!(
            e.to_string()
                .contains("keel-control token create --print-join-command")
        );
        let e = JoinError::CaHash {
            server: "s".into(),
            expected: "sha256:aa".into(),
            actual: "sha256:bb".into(),
        };
        let m = e.to_string();
        assert!(m.contains("sha256:aa") && m.contains("sha256:bb"), "{m}");
    }
}
