//! keel-dns: the cluster DNS server (CoreDNS's role) as a library the node agent links.
//!
//! - [`table`]: the pure in-memory record table (Services + EndpointSlices -> answers).
//! - [`server`]: UDP/TCP serving with hickory-proto messages, forwarding other names.
//! - [`watch`]: keeps the table current from a kube watch of Services and EndpointSlices.

pub mod server;
pub mod table;
pub mod watch;

pub use server::{Config, SharedTable, parse_resolv_conf, read_resolv_conf, run_tcp, run_udp};
pub use table::{Answer, QType, RecordTable};

/// A new shared table for the cluster domain `zone`.
pub fn shared_table(zone: &str) -> SharedTable {
    std::sync::Arc::new(std::sync::RwLock::new(RecordTable::new(zone)))
}
