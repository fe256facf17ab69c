//! keel-probe: liveness, readiness and startup probes and postStart/preStop lifecycle handlers,
//! with kubelet's semantics (`pkg/kubelet/prober`, `pkg/probe`, `pkg/kubelet/lifecycle`).
//!
//! - [`threshold`]: the pure per-probe state machine (defaults, initial delay, startup gating,
//!   success/failure thresholds).
//! - [`action`]: one probe attempt; [`exec`](mod@exec), [`http`], [`tcp`] (and [`tls`]) do the work.
//! - [`prober`]: the periodic tokio runner and the events it sends to the agent.
//! - [`handler`]: lifecycle hooks.
//! - [`target`]: what is probed, and the [`Exec`] seam the agent implements with keel-shim.
#![forbid(unsafe_code)]

pub mod action;
mod exec;
pub mod handler;
mod http;
pub mod prober;
pub mod target;
mod tcp;
pub mod threshold;
mod tls;

pub use action::{Outcome, REASON_PROBE_WARNING, REASON_UNHEALTHY, run_once};
pub use handler::{FAILED_POST_START_HOOK, FAILED_PRE_STOP_HOOK, HookError, run_handler};
pub use http::{LIFECYCLE_USER_AGENT, PROBE_USER_AGENT};
pub use prober::{ContainerProbes, ProbeEvent, Prober, Update};
pub use target::{AddressError, Exec, ExecError, ExecFuture, ExecOutput, Target, pod_label};
pub use threshold::{Gate, ProbeKind, ProbeResult, ProbeState, Settings, initial_result};
