//! Pods on this node: `lifecycle` is the pure state machine; the sync loop and the executor
//! (sandbox, images, containers through keel-shim) come with the pods issue.

pub mod lifecycle;
