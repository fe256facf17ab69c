//! Pods on this node: `lifecycle` is the pure state machine; `record` is what the executor
//! keeps on disk per pod (read by the HTTPS server and the stats collector).

pub mod lifecycle;
pub mod record;
