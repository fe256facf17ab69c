//! The node's pod network: waits for the Node's `spec.podCIDR` (node IPAM assigns it after
//! registration), then opens the pod network on it for the sandboxes, and keeps the routes to
//! the other nodes' podCIDRs current.

use super::Ctx;
use k8s_openapi::api::core::v1::Node;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(ctx: Arc<Ctx>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let api: kube::Api<Node> = kube::Api::all(ctx.client.clone());
    let cidr = loop {
        match api.get(&ctx.node_name).await {
            Ok(node) => {
                if let Some(c) = node.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
                    break c;
                }
            }
            Err(e) => tracing::debug!(error = %e, "reading this node for its podCIDR"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    };
    match super::podspec_glue::open_network(&ctx, &cidr) {
        Ok(net) => {
            tracing::info!(pod_cidr = %cidr, "pod network ready");
            let _ = ctx.net.set(Arc::new(net));
        }
        Err(e) => {
            tracing::error!(pod_cidr = %cidr, error = %e, "cannot open the pod network; pods stay in ContainerCreating");
            return;
        }
    }
    super::podspec_glue::run_routes(ctx, stop).await;
}
