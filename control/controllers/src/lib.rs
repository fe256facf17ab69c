//! keel-controllers: the scheduler and the controllers, as clients of the API (kube-runtime
//! shaped loops). `keel-control serve` runs them in-process behind one runner ([`run`]), so that
//! later only the elected leader runs them.
//!
//! Table of contents:
//! - [`informer`]: shared watch + reflector caches that fan every change out to the loops;
//! - [`queue`]: the de-duplicating work queue with one sync in flight per key and backoff;
//! - [`events`]: the event recorder (deduplicated with a count, like client-go's);
//! - [`quantity`]: resource quantities (`100m`, `1Gi`);
//! - [`scheduler`]: filters, scores, the scheduling queue and binding;
//! - [`replicaset`], [`deployment`], [`daemonset`]: the workload controllers;
//! - [`endpoints`], [`endpoints_desired`]: Endpoints and EndpointSlices of Services;
//! - [`gc`]: the ownerReference garbage collector; [`namespace`]: namespace deletion;
//! - [`nodeipam`]: podCIDR allocation; [`tokencleaner`]: expired bootstrap tokens;
//! - [`runner`]: starts every loop and stops them on shutdown.
#![forbid(unsafe_code)]

pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod endpoints_desired;
pub mod events;
pub mod gc;
pub mod informer;
pub mod namespace;
pub mod nodeipam;
pub mod quantity;
pub mod queue;
pub mod replicaset;
pub mod runner;
pub mod scheduler;
pub mod selector;
pub mod tokencleaner;

use std::future::Future;

/// What the loops need to know about the cluster.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster CIDR node podCIDRs are carved from.
    pub cluster_cidr: String,
    /// The prefix length of each node's podCIDR.
    pub node_cidr_mask: u8,
}

/// The errors of a sync: an API call that failed, or an object the loops cannot act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {object}: {source}")]
    Api {
        op: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("{object}: {reason}")]
    Invalid { object: String, reason: String },
    #[error("waiting for the cache to observe {0}")]
    CacheLag(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps a kube error with the operation and the object it was about.
pub(crate) fn api_err(
    op: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(kube::Error) -> Error {
    let object = object.into();
    move |source| Error::Api { op, object, source }
}

/// True when the API answered 404 (the object is already gone).
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// True when the API answered 409 (already exists, or a conflict on update).
pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Runs every loop until `shutdown` completes.
pub async fn run(client: kube::Client, config: Config, shutdown: impl Future<Output = ()>) {
    runner::run(client, config, shutdown).await
}
