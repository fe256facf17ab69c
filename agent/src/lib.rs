//! keel-agent: the node agent (the kubelet equivalent).
//!
//! - `bootstrap`: `keel-agent join` (token discovery, TLS bootstrap, saved credentials)
//! - `client`: kube clients for each trust level and failure classification
//! - `state`: the root dir layout, atomic writes, saved config
//! - `node`: host facts, Node registration, status and lease heartbeats
//! - `run`: `keel-agent run` (loops plus client certificate rotation)
//! - `doctor`: `keel-agent doctor` host checks
//! - `pod`: the pod lifecycle state machine (the executor comes with the pods issue)
#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod client;
pub mod doctor;
pub mod node;
pub mod pod;
pub mod run;
pub mod server;
pub mod services;
pub mod stats;
pub mod state;
