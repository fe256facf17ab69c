//! keel-podnet: pod sandboxes' networking for the agent: one persistent network namespace per
//! pod, CNI ADD/DEL through any CNI 1.x plugin chain, the cache that makes both idempotent across
//! agent restarts, and the node-level host-gw routes and masquerade that connect nodes' pods.
//!
//! # API (what the pod executor calls)
//! ```text
//! Network::new(NetworkConfig) -> Result<Network, NetError>          // picks or writes the conflist
//! Network::setup(&self, &PodRef) -> Result<PodNetwork, NetError>    // async; netns + lo + CNI ADD
//! Network::teardown(&self, uid: &str) -> Result<(), NetError>       // async; CNI DEL + netns gone
//! Network::attached(&self) -> Vec<String>                           // uids with a record or marker
//! Network::netns_path(&self, uid) -> PathBuf
//! release_netns_dir(dir) -> Result<(), NetError>                   // keel-agent cleanup
//! routes::desired(self_name, nodes) -> Vec<routes::Route>           // pure
//! routes::apply(&[Route]) -> Result<(), routes::Error>              // async; owned routes only
//! routes::masquerade(&[IpNet]) -> Result<(), routes::Error>         // async; nft table ip keel-nat
//! routes::run(client, node_name, cluster_cidr, shutdown) -> Result<(), routes::Error>
//! routes::cleanup() -> Result<(), routes::Error>                     // async; keel-agent cleanup
//! ```
//! A pod event for a failed `setup` reads like kubelet's:
//! `format!("failed to set up sandbox network: {err}")`, e.g. `failed to set up sandbox network:
//! plugin keel-bridge: no free address left in range set 0 (CNI code 100 on ADD)`.
//! `setup` and `teardown` of one uid are serialised inside a `Network` (a lock per uid; two
//! processes sharing one state folder are not guarded); different pods run in parallel (the
//! plugins lock their shared state).
//!
//! # Modules
//! - `network`: `Network` (setup, teardown, attached) on top of the modules below.
//! - `conflist`: which `.conflist` is used; the default one written from the node's podCIDR.
//! - `exec`: the runtime side of the CNI protocol: env, stdin, result or error object.
//! - `netns`: persistent namespace files (unshare on a dedicated thread + bind mount).
//! - `cache`: the per-pod attachment record (config, final ADD result), written atomically.
//! - `routes`: host-gw routes to other nodes' podCIDRs and the cluster masquerade rule.

#![forbid(unsafe_code)]

mod cache;
mod conflist;
mod error;
mod exec;
mod netns;
mod network;
pub mod routes;

pub use conflist::{DEFAULT_BRIDGE, DEFAULT_CONFLIST, DEFAULT_NETWORK_NAME};
pub use error::NetError;
pub use keel_cni::spec::{CniError, CniResult, IpNet};
pub use network::{IFNAME, Network};

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Unmounts and removes every namespace file in `dir`, then unmounts and removes `dir`
/// (for `keel-agent cleanup`, after every pod was torn down: files still there belong to
/// pods whose CNI DEL never ran, so tear those down first with `Network::teardown`).
pub fn release_netns_dir(dir: &Path) -> Result<(), NetError> {
    netns::release_dir(dir)
}

/// Where network namespace files go unless configured: a tmpfs, so a reboot forgets them
/// together with the namespaces they pinned.
pub const DEFAULT_NETNS_DIR: &str = "/run/keel/netns";

/// Everything `Network::new` needs.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Folder of `*.conflist` files (the first in lexical order is used, as libcni does).
    pub conf_dir: PathBuf,
    /// Folders searched for plugin binaries, in order; also passed as `CNI_PATH`.
    pub bin_dirs: Vec<PathBuf>,
    /// Agent-owned state: `attachments/<uid>.json` and the default conflist's IPAM `networks/`.
    pub state_dir: PathBuf,
    /// Network namespace files, `<netns_dir>/<uid>` (default [`DEFAULT_NETNS_DIR`]).
    pub netns_dir: PathBuf,
    /// The node's `spec.podCIDR` (or `spec.podCIDRs` joined with ','); needed only when the
    /// default conflist must be written.
    pub pod_cidr: Option<String>,
    /// The cluster's pod CIDR (all nodes' podCIDRs lie inside it). Not used by `Network`
    /// (kept for the caller's convenience); `routes::run` takes it for the masquerade rule.
    pub cluster_cidr: Option<String>,
    /// Bridge of the default conflist (default [`DEFAULT_BRIDGE`]).
    pub bridge: String,
    /// MTU of the bridge and veths in the default conflist (`None`: the kernel's default).
    pub mtu: Option<u32>,
}

impl NetworkConfig {
    /// A configuration with the defaults for everything but the three folders.
    pub fn new(conf_dir: PathBuf, bin_dirs: Vec<PathBuf>, state_dir: PathBuf) -> NetworkConfig {
        NetworkConfig {
            conf_dir,
            bin_dirs,
            state_dir,
            netns_dir: PathBuf::from(DEFAULT_NETNS_DIR),
            pod_cidr: None,
            cluster_cidr: None,
            bridge: DEFAULT_BRIDGE.to_string(),
            mtu: None,
        }
    }
}

/// The pod a sandbox belongs to (`CNI_ARGS` K8S_POD_*; the uid names everything on disk).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

/// A pod's network attachment, as `setup` returns it (also after an agent restart).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodNetwork {
    /// The namespace file to give containers (`/run/keel/netns/<uid>`).
    pub netns: PathBuf,
    /// The pod IPs (`status.podIPs`), in the order the plugins returned them.
    pub ips: Vec<IpAddr>,
    /// The interface inside the pod (`eth0`).
    pub interface: String,
    /// The first gateway the result names (the bridge address with keel-bridge).
    pub gateway: Option<IpAddr>,
    /// MAC of the pod interface, when the result says.
    pub mac: Option<String>,
    /// The final ADD result, as cached.
    pub result: CniResult,
}
