//! The agent's HTTPS endpoint (kubelet's port 10250): `/healthz`, `/containerLogs/...`, and the
//! stats paths. Only the control plane's client certificate may call it.
//!
//! - `cert`: the serving certificate through the certificates API (signer
//!   `kubernetes.io/kubelet-serving`), saved in `<root>/pki/serving.{crt,key}` and renewed
//! - `tls`: rustls configuration, client certificate check, who may call
//! - `routes`: request dispatch and plain-text errors
//! - `containerlogs`: pod/container lookup in the pod records, file reading and `follow`
//! - `crilog`: the CRI log format and kubelet's log options (pure)

pub mod cert;
pub mod containerlogs;
pub mod crilog;
pub mod routes;
pub mod tls;

use crate::state::Layout;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Everything the endpoint needs from `keel-agent run`.
#[derive(Clone)]
pub struct ServerContext {
    pub layout: Layout,
    /// The node's own client (its `system:node:<name>` identity), for the serving CSR.
    pub client: kube::Client,
    pub node_name: String,
    /// The node's addresses (the Node's InternalIP and any others it reports): the serving
    /// certificate's IP SANs.
    pub node_ips: Vec<IpAddr>,
    /// Listening port on all addresses (kubelet's 10250; the Node's
    /// `status.daemonEndpoints.kubeletEndpoint.Port`).
    pub port: u16,
    /// The stats collector behind `/stats/summary` and `/metrics...` (404 without one).
    pub stats: Option<crate::stats::Stats>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listening on port {port}: {source}; is another kubelet or keel-agent running?")]
    Bind { port: u16, source: std::io::Error },
    #[error("TLS material {path}: {detail}")]
    Tls { path: PathBuf, detail: String },
}

/// Completes once `shutdown` says stop (true, or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
const CSR_TIMEOUT: Duration = Duration::from_secs(120);
const NODE_WAIT: Duration = Duration::from_secs(30);
/// Longest single sleep of the renewal loop (it re-reads the clock after each).
const RENEW_CHECK: u64 = 6 * 3600;

/// Obtains a serving certificate, retrying with back-off until one is signed; None on shutdown.
/// Each attempt uses the node's current credentials (`<root>/pki/kubeconfig`, which the client
/// certificate rotation rewrites), falling back to `ctx.client`.
async fn obtain_retrying(
    ctx: &ServerContext,
    sans: &cert::Sans,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(String, String)> {
    let mut backoff = RETRY_MIN;
    loop {
        let client = match crate::client::from_kubeconfig(&ctx.layout.kubeconfig()).await {
            Ok(c) => c,
            Err(_) => ctx.client.clone(),
        };
        // The approver checks the names against the Node's addresses: give a node that is
        // still registering a moment before asking.
        let registered = cert::wait_for_node(&client, &ctx.node_name, NODE_WAIT);
        tokio::select! {
            () = registered => {}
            () = stopped(shutdown) => return None,
        }
        let attempt = cert::obtain(&ctx.layout, &client, &ctx.node_name, sans, CSR_TIMEOUT);
        let result = tokio::select! {
            r = attempt => r,
            () = stopped(shutdown) => return None,
        };
        match result {
            Ok(issued) => return Some(issued),
            Err(e) => {
                let detail = match &e {
                    crate::bootstrap::csr::CsrError::Create { failure, .. }
                    | crate::bootstrap::csr::CsrError::Get { failure, .. } => {
                        format!("{e}: {failure:?}")
                    }
                    _ => e.to_string(),
                };
                tracing::warn!(error = %detail, retry_in = ?backoff, "no serving certificate yet");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stopped(shutdown) => return None,
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

fn renewal_time(cert_pem: &str, sans: &cert::Sans) -> Result<i64, &'static str> {
    cert::check(
        cert_pem,
        sans,
        chrono::Utc::now().timestamp(),
        rand::random::<f64>(),
    )
}

/// The certificate to start with: the saved one when it still covers the node, else a new one.
async fn first_certificate(
    ctx: &ServerContext,
    sans: &cert::Sans,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(String, String, i64)> {
    if let Some((c, k)) = cert::load(&ctx.layout) {
        match renewal_time(&c, sans) {
            Ok(due) => return Some((c, k, due)),
            Err(why) => tracing::info!(reason = why, "requesting a new serving certificate"),
        }
    } else {
        tracing::info!("no serving certificate yet; requesting one");
    }
    let (c, k) = obtain_retrying(ctx, sans, shutdown).await?;
    let due = renewal_time(&c, sans).unwrap_or(i64::MAX);
    Some((c, k, due))
}

/// Renews the certificate when due and swaps it into `serving`; returns on shutdown.
async fn renew_loop(
    ctx: &ServerContext,
    sans: &cert::Sans,
    serving: Arc<tls::ServingCert>,
    mut due: i64,
    mut shutdown: watch::Receiver<bool>,
) {
    let path = cert::cert_path(&ctx.layout);
    loop {
        let wait = due - chrono::Utc::now().timestamp();
        if wait > 0 {
            let nap = Duration::from_secs((wait as u64).min(RENEW_CHECK));
            tokio::select! {
                () = tokio::time::sleep(nap) => {}
                () = stopped(&mut shutdown) => return,
            }
            continue;
        }
        let Some((c, k)) = obtain_retrying(ctx, sans, &mut shutdown).await else {
            return;
        };
        match serving.set(&c, &k, &path) {
            Ok(()) => tracing::info!("serving certificate renewed"),
            Err(e) => tracing::error!(error = %e, "the renewed serving certificate is unusable"),
        }
        due = renewal_time(&c, sans).unwrap_or(i64::MAX);
    }
}

/// Serves until `shutdown` says stop. Obtains the serving certificate first (as the node,
/// waiting for the control plane's approver), then listens on `ctx.port`.
pub async fn run(
    ctx: ServerContext,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let sans = cert::Sans::for_node(&ctx.node_name, &ctx.node_ips);
    let Some((cert_pem, key_pem, due)) = first_certificate(&ctx, &sans, &mut shutdown).await else {
        return Ok(());
    };
    let serving = Arc::new(tls::ServingCert::new(
        &cert_pem,
        &key_pem,
        &cert::cert_path(&ctx.layout),
    )?);
    let config = tls::server_config(serving.clone(), &ctx.layout.ca())?;
    let any: IpAddr = if ctx.node_ips.iter().any(IpAddr::is_ipv6) {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let listener = TcpListener::bind(SocketAddr::new(any, ctx.port))
        .await
        .map_err(|source| ServerError::Bind {
            port: ctx.port,
            source,
        })?;
    tracing::info!(port = ctx.port, "agent HTTPS endpoint listening");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let renew = renew_loop(&ctx, &sans, serving, due, shutdown.clone());
    tokio::pin!(renew);
    loop {
        let (tcp, peer) = tokio::select! {
            () = stopped(&mut shutdown) => break,
            () = &mut renew => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let layout = ctx.layout.clone();
        let stats = ctx.stats.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
            let tls = match handshake.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let caller = tls::Caller::from_peer(tls.get_ref().1.peer_certificates());
            if let Some((code, _)) = caller.refuse() {
                tracing::debug!(%peer, ?caller, code, "refusing the caller");
            }
            let service = service_fn(move |req| {
                let (layout, stats, caller) = (layout.clone(), stats.clone(), caller.clone());
                async move {
                    let resp = routes::handle(&layout, stats.as_ref(), &caller, req).await;
                    Ok::<_, Infallible>(resp)
                }
            });
            // A client that never finishes its request headers does not hold a task forever.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                () = stopped(&mut conn_shutdown) => {}
            }
        });
    }
    tracing::info!("agent HTTPS endpoint stopped");
    Ok(())
}
