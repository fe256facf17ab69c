//! keel-proxy: the service proxy (kube-proxy's role) as a library the node agent links.
//!
//! - [`model`]: Services + EndpointSlices + node facts -> service ports with the endpoints
//!   kube-proxy would pick (ready, or serving-and-terminating as a fallback; local subsets).
//! - [`ruleset`]: pure generation of the desired nftables state (chains, map elements).
//! - [`render`]: `nft -f` text for a full replacement or an incremental diff.
//! - [`apply`]: the [`apply::Runner`] seam and the real `nft`/`conntrack` runner.
//! - [`proxier`]: the stateful [`proxier::Proxier`] that takes updates and syncs.

pub mod apply;
pub mod model;
pub mod proxier;
pub mod render;
pub mod ruleset;

pub use apply::{CommandRunner, Error, Runner};
pub use model::{Cidr, NodeInfo};
pub use proxier::{Proxier, SyncKind, SyncReport, cleanup};
