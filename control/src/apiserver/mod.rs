//! The Kubernetes REST API over HTTPS: authentication (client certificates, bootstrap tokens),
//! authorization, discovery and OpenAPI, CRUD + watch + patch on the registry's resources, tables.

pub mod auth;
pub mod discovery;
pub mod error;
pub mod handlers;
pub mod metrics;
pub mod metrics_apiserver;
pub mod nodeproxy;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod selectors;
pub mod server;
pub mod subresources;
pub mod table;
pub mod validate;
pub mod watch;

use crate::store::Backend;
use std::net::IpAddr;
use std::sync::Arc;

/// Settings the API server needs at run time.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The address clients are told to use (discovery, the `kubernetes` Service endpoints).
    pub advertise_address: IpAddr,
    pub port: u16,
    pub service_cidr: ipnet::Ipv4Net,
    pub cluster_cidr: ipnet::Ipv4Net,
    /// DefaultTolerationSeconds for not-ready/unreachable taints.
    pub default_toleration_seconds: i64,
    /// PEM of the cluster CA, published in `cluster-info`.
    pub ca_pem: String,
}

/// Shared state of every request handler.
pub struct ApiServer {
    pub store: Arc<dyn Backend>,
    pub settings: Settings,
    /// Serialises ClusterIP / NodePort allocation.
    pub alloc_lock: tokio::sync::Mutex<()>,
    /// HTTPS client for calling agents (logs), with the API server's client certificate.
    pub agent_client: Option<reqwest::Client>,
    /// Node summaries behind `metrics.k8s.io`.
    pub metrics_cache: metrics::SummaryCache,
    /// Request figures for `/metrics`.
    pub telemetry: metrics_apiserver::ApiMetrics,
}

impl ApiServer {
    pub fn new(store: Arc<dyn Backend>, settings: Settings) -> Arc<ApiServer> {
        Self::with_agent_client(store, settings, None)
    }

    pub fn with_agent_client(
        store: Arc<dyn Backend>,
        settings: Settings,
        agent_client: Option<reqwest::Client>,
    ) -> Arc<ApiServer> {
        Arc::new(ApiServer {
            store,
            settings,
            alloc_lock: tokio::sync::Mutex::new(()),
            agent_client,
            metrics_cache: Default::default(),
            telemetry: Default::default(),
        })
    }
}
