//! Runs one probe attempt: dispatches a `Probe`'s handler (exec, httpGet, tcpSocket, grpc) and
//! says what kubelet's prober would make of it.

use crate::target::Target;
use crate::threshold::ProbeKind;
use k8s_openapi::api::core::v1::Probe;
use std::time::Duration;

/// The outcome of one attempt (kubelet's `probe.Result` plus its output or error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed; the output (body, command output) is not shown anywhere.
    Success(String),
    /// Passed with a warning (a redirect that was not followed); counts as Success.
    Warning(String),
    /// Failed; the message goes into the Unhealthy event.
    Failure(String),
    /// The probe could not run (unknown port name, exec transport failure): kubelet throws the
    /// attempt away instead of counting it.
    Error(String),
}

impl Outcome {
    /// Success or Failure for the threshold machine; `None` for an error (not counted).
    pub fn counts_as_success(&self) -> Option<bool> {
        match self {
            Outcome::Success(_) | Outcome::Warning(_) => Some(true),
            Outcome::Failure(_) => Some(false),
            Outcome::Error(_) => None,
        }
    }

    /// The event kubelet records for this attempt, if any: `(reason, message)`.
    pub fn event(&self, kind: ProbeKind) -> Option<(&'static str, String)> {
        match self {
            Outcome::Success(_) => None,
            Outcome::Warning(out) => {
                Some((REASON_PROBE_WARNING, format!("{kind} probe warning: {out}")))
            }
            Outcome::Failure(out) => {
                Some((REASON_UNHEALTHY, format!("{kind} probe failed: {out}")))
            }
            Outcome::Error(err) => Some((
                REASON_UNHEALTHY,
                format!("{kind} probe errored and resulted in unknown state: {err}"),
            )),
        }
    }
}

/// Event reason for failed and errored attempts (kubelet's `events.ContainerUnhealthy`).
pub const REASON_UNHEALTHY: &str = "Unhealthy";
/// Event reason for attempts that passed with a warning (`events.ContainerProbeWarning`).
pub const REASON_PROBE_WARNING: &str = "ProbeWarning";

/// gRPC probes need an HTTP/2 + protobuf client; Keel does not carry one.
pub const GRPC_UNSUPPORTED: &str = "grpc probes are not supported by keel";

/// Runs the probe's handler once, bounded by `timeout` (timeoutSeconds).
pub async fn run_once(probe: &Probe, target: &Target, timeout: Duration) -> Outcome {
    if let Some(exec) = &probe.exec {
        crate::exec::probe(exec, target, timeout).await
    } else if let Some(http) = &probe.http_get {
        crate::http::probe(http, target, timeout).await
    } else if let Some(tcp) = &probe.tcp_socket {
        crate::tcp::probe(tcp, target, timeout).await
    } else if probe.grpc.is_some() {
        Outcome::Failure(GRPC_UNSUPPORTED.into())
    } else {
        Outcome::Error(format!(
            "missing probe handler for {}:{}",
            target.pod, target.container
        ))
    }
}
