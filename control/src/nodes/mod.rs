//! Node-facing control loops that run inside `keel-control` itself: the CSR approver and
//! signer (it needs the cluster CA's key, which never leaves the control plane's data dir) and
//! the node lifecycle controller (heartbeat grace, unreachable taints, taint-based eviction).
//! Both are clients of the API like every other controller.

pub mod csr;
pub mod lifecycle;

use crate::pki::Ca;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Ready becomes Unknown after this long without a lease renewal (kube's 40 s default).
    pub monitor_grace: Duration,
    /// How often the lifecycle controller looks.
    pub monitor_period: Duration,
    /// Validity of signed node client certificates.
    pub cert_days: i64,
}

pub async fn run(
    client: kube::Client,
    ca: Arc<Ca>,
    settings: NodeSettings,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::select! {
        _ = csr::run(client.clone(), ca, settings.clone()) => {}
        _ = lifecycle::run(client, settings) => {}
        _ = shutdown => {}
    }
}
