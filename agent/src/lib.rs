//! keel-agent: the node agent (the kubelet equivalent).
//!
//! - `bootstrap`: `keel-agent join` (token discovery, TLS bootstrap, saved credentials)
//! - `client`: kube clients for each trust level and failure classification
//! - `state`: the root dir layout, atomic writes, saved config
//! - `node`: host facts, Node registration, status and lease heartbeats
//! - `run`: `keel-agent run` (loops plus client certificate rotation)
//! - `doctor`: `keel-agent doctor` host checks
//! - `pod`: the pod workers (lifecycle state machine, sandbox, containers, status, events)
//! - `services`: the service proxy and node-local cluster DNS
//! - `server`: the HTTPS endpoint on 10250 (logs, stats) for the control plane
//! - `stats`: cgroup and procfs housekeeping, `/stats/summary`, Prometheus metrics
//! - `logship`: ships container logs and the agent's own logs to the control plane's log store
#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod client;
pub mod doctor;
pub mod logship;
pub mod node;
pub mod pod;
pub mod run;
pub mod server;
pub mod services;
pub mod state;
pub mod stats;
