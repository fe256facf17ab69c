//! `keel-agent run`: starts the node from the state `join` saved (kubeconfig, config.json),
//! registers the Node, runs the lease and status loops, and rotates the client certificate
//! at a random point between 70% and 90% of its lifetime, as kubelet's certificate manager does,
//! by requesting a new one as the node itself. Stops on SIGTERM or SIGINT.

use crate::bootstrap::{self, csr};
use crate::client;
use crate::node::{self, NodeContext, host::HostRoot};
use crate::state::{self, AgentConfig, Layout};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error(
        "the node certificate {path} expired at {at}; join this node again with a new token (`keel-control token create --print-join-command`)"
    )]
    Expired { path: String, at: String },
    #[error("cannot choose this node's InternalIP: no route to {server}; pass --node-ip")]
    NoAddress { server: String },
    #[error("installing the signal handler: {0}")]
    Signal(std::io::Error),
}

/// When to renew a certificate valid from `nb` to `na` (Unix seconds), `jitter` in [0, 1).
pub fn renew_at(nb: i64, na: i64, jitter: f64) -> i64 {
    let permille = 700 + (200.0 * jitter.clamp(0.0, 1.0)).round() as i64;
    nb + (na - nb).max(0) * permille / 1000
}

fn fmt_time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339())
        .unwrap_or_default()
}

async fn shutdown_signal() -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Runs until a signal arrives. `renew_after` moves the first certificate renewal to that long
/// after start (a test and operations knob: renew now without waiting for 70% of a year).
pub async fn run(layout: &Layout, mut renew_after: Option<Duration>) -> Result<(), RunError> {
    let config = AgentConfig::load(layout)?;
    let host = HostRoot::real();
    let choice = node::host::choose_ip(config.node_ip, &config.server, &host)
        .await
        .ok_or_else(|| RunError::NoAddress {
            server: config.server.clone(),
        })?;
    tracing::info!(ip = %choice.ip, reason = %choice.reason, "chose the node's InternalIP");
    if !choice.others.is_empty() {
        let others: Vec<String> = choice.others.iter().map(|i| i.to_string()).collect();
        tracing::warn!(chosen = %choice.ip, others = %others.join(", "), "this machine has several addresses; pass --node-ip to pick another one");
    }
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let cert_pem = state::read(&layout.cert())?;
        let (nb, na) = csr::validity(&cert_pem).unwrap_or((0, i64::MAX));
        let now = chrono::Utc::now().timestamp();
        if now > na {
            return Err(RunError::Expired {
                path: layout.cert().display().to_string(),
                at: fmt_time(na),
            });
        }
        let due = match renew_after.take() {
            Some(d) => now + d.as_secs() as i64,
            None => renew_at(nb, na, rand::random::<f64>()),
        };
        tracing::info!(expires = %fmt_time(na), renew_at = %fmt_time(due), "node client certificate loaded");
        let client = client::from_kubeconfig(&layout.kubeconfig()).await?;
        let kubelet_version = match client.apiserver_version().await {
            Ok(v) => v.git_version,
            Err(_) => node::FALLBACK_KUBELET_VERSION.to_string(),
        };
        let ctx = NodeContext {
            client: client.clone(),
            config: config.clone(),
            host: host.clone(),
            root_dir: layout.root.clone(),
            internal_ip: choice.ip,
            kubelet_version,
        };
        let wait = Duration::from_secs((due - now).max(0) as u64);
        tokio::select! {
            r = &mut shutdown => {
                tracing::info!("signal received; stopping");
                return r;
            }
            () = serve(ctx) => {}
            () = tokio::time::sleep(wait) => {
                rotate(layout, &config, &client).await;
            }
        }
    }
}

/// Registers (retrying) and runs the heartbeat loops until the Node object disappears.
async fn serve(ctx: NodeContext) {
    let mut backoff = Duration::from_millis(500);
    let uid = loop {
        match ctx.register().await {
            Ok(uid) => break uid,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "node registration failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    };
    tokio::select! {
        () = ctx.lease_loop(uid) => {}
        () = ctx.status_loop() => {}
    }
}

/// Requests a new certificate as the node; on failure keeps the old one and retries in a minute.
async fn rotate(layout: &Layout, config: &AgentConfig, client: &kube::Client) {
    match csr::obtain(client, &config.node_name, Duration::from_secs(120)).await {
        Ok(issued) => {
            let ca = match state::read(&layout.ca()) {
                Ok(ca) => ca,
                Err(e) => {
                    tracing::error!(error = %e, "certificate rotation: CA missing");
                    return;
                }
            };
            let saved = state::write_atomic(&layout.key(), issued.key_pem.as_bytes(), 0o600)
                .and_then(|()| {
                    state::write_atomic(&layout.cert(), issued.cert_pem.as_bytes(), 0o644)
                });
            match saved
                .map_err(bootstrap::JoinError::from)
                .and_then(|()| bootstrap::write_kubeconfig(layout, config, &ca, &issued))
            {
                Ok(()) => tracing::info!(csr = %issued.csr_name, "node client certificate rotated"),
                Err(e) => tracing::error!(error = %e, "saving the rotated certificate failed"),
            }
        }
        Err(e) => {
            let detail = match &e {
                csr::CsrError::Create { failure, .. } => format!("{e}: {failure:?}"),
                _ => e.to_string(),
            };
            tracing::warn!(error = %detail, "certificate rotation failed; retrying in 60s");
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_70_and_90_percent() {
        assert_eq!(renew_at(0, 1000, 0.0), 700);
        assert_eq!(renew_at(0, 1000, 1.0), 900);
        assert_eq!(renew_at(100, 1100, 0.5), 900);
    }
}
