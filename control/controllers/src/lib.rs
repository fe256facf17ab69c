//! keel-controllers: the scheduler and the controllers, as clients of the API (kube-runtime
//! shaped loops). `keel-control serve` runs them in-process behind one runner, so that later
//! only the elected leader runs them.
#![forbid(unsafe_code)]

use std::future::Future;

/// What the loops need to know about the cluster.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster CIDR node podCIDRs are carved from.
    pub cluster_cidr: String,
    /// The prefix length of each node's podCIDR.
    pub node_cidr_mask: u8,
}

/// Runs every loop until `shutdown` completes.
pub async fn run(client: kube::Client, config: Config, shutdown: impl Future<Output = ()>) {
    let _ = (client, config);
    shutdown.await;
}
