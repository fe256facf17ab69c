//! keel-control: the control plane (API server, store, PKI; scheduler and controllers later).
#![forbid(unsafe_code)]
