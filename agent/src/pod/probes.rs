//! Probes and lifecycle handlers for running containers: keel-probe runs them, exec goes
//! through the container's supervisor, and results come back to the pod's worker as messages
//! (readiness and startup state; liveness or startup failure means a restart).

use super::Ctx;
use super::worker::{Msg, ProbeKind, pod_label};
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use keel_probe::{Exec, ExecError, ExecFuture, ExecOutput, ProbeResult, Target, Update};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// keel-probe's exec seam, through the supervisor's `exec` op.
struct ShimExec {
    ctx: Arc<Ctx>,
    id: String,
}

impl Exec for ShimExec {
    fn exec<'a>(
        &'a self,
        _container: &'a str,
        command: &'a [String],
        timeout: Option<Duration>,
    ) -> ExecFuture<'a> {
        Box::pin(async move {
            let out = self
                .ctx
                .shim
                .exec(
                    &self.id,
                    command.to_vec(),
                    timeout.unwrap_or(Duration::ZERO),
                )
                .await
                .map_err(|e| ExecError(e.to_string()))?;
            Ok(ExecOutput {
                exit_code: out.exit_code,
                stdout: out.stdout,
                stderr: out.stderr,
                timed_out: out.timed_out,
            })
        })
    }
}

fn target(
    ctx: &Arc<Ctx>,
    pod: &Pod,
    spec: &Container,
    id: &str,
    ip: Option<&str>,
    started_ms: i64,
) -> Target {
    Target {
        pod: pod_label(pod),
        container: spec.name.clone(),
        pod_ip: ip.and_then(|i| i.parse().ok()),
        ports: spec.ports.clone().unwrap_or_default(),
        exec: Arc::new(ShimExec {
            ctx: ctx.clone(),
            id: id.to_string(),
        }),
        started_at: SystemTime::UNIX_EPOCH + Duration::from_millis(started_ms.max(0) as u64),
    }
}

/// Starts the container's probes; the returned handle stops them when aborted.
pub fn spawn(
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    spec: &Container,
    id: String,
    started_ms: i64,
    ip: Option<String>,
    tx: mpsc::Sender<Msg>,
) -> Option<tokio::task::AbortHandle> {
    if spec.liveness_probe.is_none()
        && spec.readiness_probe.is_none()
        && spec.startup_probe.is_none()
    {
        return None;
    }
    let t = target(&ctx, &pod, spec, &id, ip.as_deref(), started_ms);
    let (etx, mut erx) = mpsc::channel(16);
    let probes = keel_probe::ContainerProbes::spawn(spec, t, etx);
    let task = tokio::spawn(async move {
        let _probes = probes;
        while let Some(ev) = erx.recv().await {
            let kind = match ev.kind {
                keel_probe::ProbeKind::Liveness => ProbeKind::Liveness,
                keel_probe::ProbeKind::Readiness => ProbeKind::Readiness,
                keel_probe::ProbeKind::Startup => ProbeKind::Startup,
            };
            match &ev.update {
                Update::Attempt { reason, message } => {
                    ctx.events.warning(&pod, reason, message.clone())
                }
                Update::Changed(r) => {
                    let msg = Msg::Probe {
                        id: id.clone(),
                        kind,
                        ok: *r == ProbeResult::Success,
                        restart: ev.restart_message(),
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Some(task.abort_handle())
}

/// Runs a preStop or postStart handler; a failure becomes the kubelet event and `false`.
pub async fn run_handler(
    ctx: &Arc<Ctx>,
    pod: &Pod,
    spec: &Container,
    id: &str,
    ip: Option<&str>,
    handler: &LifecycleHandler,
    reason: &str,
) -> bool {
    let t = target(ctx, pod, spec, id, ip, super::now_ms());
    match keel_probe::run_handler(handler, &t).await {
        Ok(()) => true,
        Err(e) => {
            ctx.events.warning(pod, reason, e.message);
            false
        }
    }
}
