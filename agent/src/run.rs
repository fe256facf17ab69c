//! `keel-agent run`: starts the node from the state `join` saved (kubeconfig, config.json),
//! registers the Node, runs the lease and status loops, and rotates the client certificate
//! at a random point between 70% and 90% of its lifetime, as kubelet's certificate manager does,
//! by requesting a new one as the node itself. Stops on SIGTERM or SIGINT.

use crate::bootstrap::{self, csr};
use crate::client;
use crate::node::{self, NodeContext, host::HostRoot};
use crate::pod;
use crate::state::{self, AgentConfig, Layout};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
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
    #[error("the image store: {0}")]
    Images(String),
    #[error("installing the signal handler: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Eviction(#[from] pod::evict::EvictError),
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

/// Flags of `keel-agent run` (and `join`) that override the saved config.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Moves the first certificate renewal to that long after start (a test and operations
    /// knob: renew now without waiting for 70% of a year).
    pub renew_after: Option<Duration>,
    pub registry_config: Option<PathBuf>,
    pub cluster_cidr: Option<String>,
    pub cluster_dns: Option<IpAddr>,
    pub cluster_domain: Option<String>,
    pub shim: Option<PathBuf>,
    pub shim_root: PathBuf,
    /// The HTTPS endpoint's port (kubelet's 10250).
    pub port: u16,
    /// `--eviction-hard` for this run (else the one `join` saved, else kubelet's defaults).
    pub eviction_hard: Option<String>,
    /// `--eviction-monitoring-interval` (Go duration; default 10s).
    pub eviction_monitoring_interval: Option<String>,
    /// `--eviction-pressure-transition-period` (Go duration; default 5m).
    pub eviction_pressure_transition_period: Option<String>,
}

impl RunOptions {
    /// The eviction manager's settings from these flags and the saved config.
    pub fn eviction(
        &self,
        config: &AgentConfig,
    ) -> Result<pod::evict::EvictionConfig, pod::evict::EvictError> {
        pod::evict::EvictionConfig::from_flags(
            self.eviction_hard
                .as_deref()
                .or(config.eviction_hard.as_deref()),
            self.eviction_monitoring_interval.as_deref(),
            self.eviction_pressure_transition_period.as_deref(),
        )
    }
}

/// A binary next to this executable, else the bare name (found in PATH).
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs until a signal arrives.
pub async fn run(layout: &Layout, opts: RunOptions) -> Result<(), RunError> {
    let mut renew_after = opts.renew_after;
    let mut config = AgentConfig::load(layout)?;
    let changed = apply_overrides(&mut config, &opts);
    if changed {
        config.save(layout)?;
    }
    let host = HostRoot::real();
    let choice = node::host::choose_ip(config.node_ip, &config.server, &host)
        .await
        .ok_or_else(|| RunError::NoAddress {
            server: config.server.clone(),
        })?;
    tracing::info!(ip = %choice.ip, reason = %choice.reason, "chose the node's InternalIP");
    // The pod bridge's gateway and the cluster DNS address are this agent's own doing.
    let cluster: Option<keel_podnet::IpNet> = config.cluster.cluster_cidr.parse().ok();
    let others: Vec<String> = choice
        .others
        .iter()
        .filter(|i| !cluster.is_some_and(|c| c.contains(**i)) && **i != config.cluster.cluster_dns)
        .map(|i| i.to_string())
        .collect();
    if !others.is_empty() {
        tracing::warn!(chosen = %choice.ip, others = %others.join(", "), "this machine has several addresses; pass --node-ip to pick another one");
    }
    let eviction = opts.eviction(&config)?;
    let (pressure_tx, pressure_rx) =
        tokio::sync::watch::channel(pod::evict::NodePressure::default());
    let mut pressure_tx = Some(pressure_tx);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut loops_started = false;
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
            port: opts.port,
            thresholds: eviction.thresholds.clone(),
            pressure: pressure_rx.clone(),
        };
        if !loops_started && let Some(pressure) = pressure_tx.take() {
            loops_started = true;
            start_loops(
                layout,
                &config,
                &opts,
                client.clone(),
                choice.ip,
                stop_rx.clone(),
                (eviction.clone(), pressure),
            )?;
        }
        let wait = Duration::from_secs((due - now).max(0) as u64);
        tokio::select! {
            r = &mut shutdown => {
                tracing::info!("signal received; stopping (containers keep running)");
                let _ = stop_tx.send(true);
                return r;
            }
            () = serve(ctx) => {}
            () = tokio::time::sleep(wait) => {
                rotate(layout, &config, &client).await;
            }
        }
    }
}

/// Saved config changed by flags given to `run`; true when something changed.
fn apply_overrides(config: &mut AgentConfig, opts: &RunOptions) -> bool {
    let before = config.clone();
    if let Some(p) = &opts.registry_config {
        config.registry_config = Some(p.clone());
    }
    if let Some(c) = &opts.cluster_cidr {
        config.cluster.cluster_cidr = c.clone();
    }
    if let Some(d) = opts.cluster_dns {
        config.cluster.cluster_dns = d;
    }
    if let Some(d) = &opts.cluster_domain {
        config.cluster.cluster_domain = d.clone();
    }
    *config != before
}

/// The node's long-running loops that need the API: pods, services, the HTTPS endpoint.
fn start_loops(
    layout: &Layout,
    config: &AgentConfig,
    opts: &RunOptions,
    client: kube::Client,
    node_ip: IpAddr,
    stop: tokio::sync::watch::Receiver<bool>,
    (eviction, pressure): (
        pod::evict::EvictionConfig,
        tokio::sync::watch::Sender<pod::evict::NodePressure>,
    ),
) -> Result<(), RunError> {
    let stats = crate::stats::start(layout, &config.node_name, stop.clone());
    let images = pod::images::Images::open(&layout.images(), config.registry_config.as_deref())
        .map_err(|e| RunError::Images(e.to_string()))?;
    let ctx = Arc::new(pod::Ctx {
        client: client.clone(),
        layout: layout.clone(),
        node_name: config.node_name.clone(),
        node_ip,
        shim: pod::shim::Shim {
            bin: opts
                .shim
                .clone()
                .unwrap_or_else(|| sibling_binary("keel-shim")),
            root: opts.shim_root.clone(),
        },
        images,
        events: pod::events::Recorder::new(client.clone(), config.node_name.clone()),
        cluster_cidr: config.cluster.cluster_cidr.clone(),
        dns: keel_podspec::etc::DnsSettings {
            cluster_dns: vec![config.cluster.cluster_dns],
            cluster_domain: config.cluster.cluster_domain.clone(),
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            host_hosts: PathBuf::from("/etc/hosts"),
        },
        node_info: pod::node_info(node_ip),
        host_name: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        stats: stats.clone(),
        net: Default::default(),
        live: Default::default(),
        pressure: pressure.subscribe(),
    });
    crate::logship::start(layout, &config.node_name, client.clone(), stop.clone());
    tokio::spawn(pod::sync::run(ctx.clone(), stop.clone()));
    tokio::spawn(pod::evict::run(
        ctx.clone(),
        eviction,
        pressure,
        stop.clone(),
    ));
    tokio::spawn(pod::network::run(ctx, stop.clone()));
    let server = crate::server::ServerContext {
        layout: layout.clone(),
        client: client.clone(),
        node_name: config.node_name.clone(),
        node_ips: vec![node_ip],
        port: opts.port,
        stats: Some(stats),
    };
    let server_stop = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::server::run(server, server_stop).await {
            tracing::error!(error = %e, "the HTTPS endpoint stopped; kubectl logs will not reach this node");
        }
    });
    let services = crate::services::ServicesConfig {
        node_name: config.node_name.clone(),
        node_ips: vec![node_ip],
        cluster_cidr: config.cluster.cluster_cidr.clone(),
        cluster_dns: config.cluster.cluster_dns,
        cluster_domain: config.cluster.cluster_domain.clone(),
        resolv_conf: PathBuf::from("/etc/resolv.conf"),
    };
    tokio::spawn(async move {
        if let Err(e) = crate::services::run(client, services, stop).await {
            tracing::error!(error = %e, "the service proxy and DNS stopped");
        }
    });
    Ok(())
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
