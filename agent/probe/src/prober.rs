//! The probe runner: one tokio task per probe of a running container instance, probing every
//! periodSeconds, feeding the threshold machine and reporting to the agent through an mpsc
//! channel. A task stops when its [`Prober`] is dropped, when the channel closes, or when the
//! machine says it is done (startup after success, liveness/startup after failure: the agent
//! restarts the container and spawns new probers for the new instance).
//!
//! Timing: the first attempt runs as soon as initialDelaySeconds have passed since the
//! container started (and, for liveness and readiness, as soon as the startup probe has
//! succeeded: kubelet triggers readiness right away then too); later attempts run every
//! periodSeconds. kubelet's random start jitter after its own restart is not reproduced.

use crate::action::{Outcome, run_once};
use crate::target::Target;
use crate::threshold::{Gate, ProbeKind, ProbeResult, ProbeState, Settings};
use k8s_openapi::api::core::v1::{Container, Probe};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What a probe reports to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    /// The container's name in the pod spec.
    pub container: String,
    pub kind: ProbeKind,
    pub update: Update,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// One attempt that kubelet records as a Warning event on the pod: `reason` is
    /// `Unhealthy` (failed or errored) or `ProbeWarning`; `message` is kubelet's text
    /// ("Liveness probe failed: HTTP probe failed with statuscode: 500").
    Attempt {
        reason: &'static str,
        message: String,
    },
    /// The result changed after its threshold: readiness → the container's `ready`; startup
    /// Success → `started`; liveness or startup Failure → restart the container
    /// (see [`ProbeEvent::restart_message`]).
    Changed(ProbeResult),
}

impl ProbeEvent {
    /// For a liveness or startup Failure, kubelet's Killing event text:
    /// "Container web failed liveness probe, will be restarted".
    pub fn restart_message(&self) -> Option<String> {
        match (self.kind, &self.update) {
            (ProbeKind::Liveness | ProbeKind::Startup, Update::Changed(ProbeResult::Failure)) => {
                Some(format!(
                    "Container {} failed {} probe, will be restarted",
                    self.container,
                    self.kind.lowercase()
                ))
            }
            _ => None,
        }
    }
}

/// A running probe; dropping it stops the probe.
#[derive(Debug)]
pub struct Prober {
    kind: ProbeKind,
    task: JoinHandle<()>,
}

impl Prober {
    /// Starts one probe. Liveness and readiness probe at once (no startup gating: use
    /// [`Prober::spawn_gated`] or [`ContainerProbes`] for that); a startup probe runs until it
    /// succeeds or fails.
    pub fn spawn(
        kind: ProbeKind,
        probe: Probe,
        target: Target,
        events: mpsc::Sender<ProbeEvent>,
    ) -> Prober {
        Self::start(kind, probe, target, Gating::None, events)
    }

    /// Starts a liveness or readiness probe that waits until `started` is true (the startup
    /// probe succeeded); it stops if the sender is dropped before that.
    pub fn spawn_gated(
        kind: ProbeKind,
        probe: Probe,
        target: Target,
        started: watch::Receiver<bool>,
        events: mpsc::Sender<ProbeEvent>,
    ) -> Prober {
        Self::start(kind, probe, target, Gating::WaitFor(started), events)
    }

    fn start(
        kind: ProbeKind,
        probe: Probe,
        target: Target,
        gating: Gating,
        events: mpsc::Sender<ProbeEvent>,
    ) -> Prober {
        let settings = Settings::from_probe(kind, &probe);
        let worker = Worker {
            kind,
            probe,
            settings,
            target,
            gating,
            events,
        };
        Prober {
            kind,
            task: tokio::spawn(worker.run()),
        }
    }

    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// The probe has stopped on its own (done, or the channel closed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// All probes of one container instance, with the startup probe gating the other two.
#[derive(Debug, Default)]
pub struct ContainerProbes {
    probers: Vec<Prober>,
}

impl ContainerProbes {
    /// Spawns a prober for each probe the container declares. Without a startup probe the
    /// container counts as started at once; without a readiness probe it is ready at once
    /// (kubelet's defaults), and no event says so.
    pub fn spawn(
        container: &Container,
        target: Target,
        events: mpsc::Sender<ProbeEvent>,
    ) -> ContainerProbes {
        let mut probers = Vec::new();
        let mut started = None;
        if let Some(probe) = &container.startup_probe {
            let (tx, rx) = watch::channel(false);
            started = Some(rx);
            probers.push(Prober::start(
                ProbeKind::Startup,
                probe.clone(),
                target.clone(),
                Gating::Publish(tx),
                events.clone(),
            ));
        }
        for (kind, probe) in [
            (ProbeKind::Liveness, &container.liveness_probe),
            (ProbeKind::Readiness, &container.readiness_probe),
        ] {
            let Some(probe) = probe else { continue };
            let gating = match &started {
                Some(rx) => Gating::WaitFor(rx.clone()),
                None => Gating::None,
            };
            probers.push(Prober::start(
                kind,
                probe.clone(),
                target.clone(),
                gating,
                events.clone(),
            ));
        }
        ContainerProbes { probers }
    }

    /// During termination kubelet keeps only readiness running.
    pub fn stop_liveness_and_startup(&mut self) {
        self.probers.retain(|p| p.kind == ProbeKind::Readiness);
    }

    /// The kinds still running.
    pub fn running(&self) -> Vec<ProbeKind> {
        self.probers
            .iter()
            .filter(|p| !p.is_finished())
            .map(|p| p.kind)
            .collect()
    }
}

/// How a worker relates to the container's startup probe.
enum Gating {
    /// No startup probe: the container has started.
    None,
    /// Liveness/readiness: wait for the startup probe's success.
    WaitFor(watch::Receiver<bool>),
    /// The startup probe itself: publish success.
    Publish(watch::Sender<bool>),
}

struct Worker {
    kind: ProbeKind,
    probe: Probe,
    settings: Settings,
    target: Target,
    gating: Gating,
    events: mpsc::Sender<ProbeEvent>,
}

impl Worker {
    async fn run(mut self) {
        let mut state = ProbeState::new(self.kind, &self.settings);
        let running_for = SystemTime::now()
            .duration_since(self.target.started_at)
            .unwrap_or(Duration::ZERO);
        let now = Instant::now();
        let origin = now.checked_sub(running_for).unwrap_or(now);
        loop {
            let started = match (&mut self.gating, self.kind) {
                // A startup probe's own success is what "started" means.
                (_, ProbeKind::Startup) => state.result() == ProbeResult::Success,
                (Gating::WaitFor(rx), _) => *rx.borrow_and_update(),
                (Gating::None | Gating::Publish(_), _) => true,
            };
            match state.gate(started, origin.elapsed(), self.settings.initial_delay) {
                Gate::Done => return,
                Gate::Wait => {
                    if origin.elapsed() < self.settings.initial_delay {
                        tokio::time::sleep_until(origin + self.settings.initial_delay).await;
                    } else if let Gating::WaitFor(rx) = &mut self.gating {
                        if rx.changed().await.is_err() && !*rx.borrow() {
                            // The startup probe ended without success: this instance is
                            // being restarted.
                            return;
                        }
                    } else {
                        return;
                    }
                    continue;
                }
                Gate::Probe => {}
            }
            let attempt_at = Instant::now();
            let outcome = run_once(&self.probe, &self.target, self.settings.timeout).await;
            if !self.report(&mut state, outcome).await {
                return;
            }
            let mut next = attempt_at + self.settings.period;
            // Like a Go ticker, attempts that would overlap a slow probe are skipped.
            while next <= Instant::now() {
                next += self.settings.period;
            }
            tokio::time::sleep_until(next).await;
        }
    }

    /// Sends the attempt's event and any result change; false once the agent stopped listening.
    async fn report(&mut self, state: &mut ProbeState, outcome: Outcome) -> bool {
        if let Some((reason, message)) = outcome.event(self.kind) {
            tracing::debug!(container = %self.target.container, %message, "probe attempt");
            if !self.send(Update::Attempt { reason, message }).await {
                return false;
            }
        }
        let Some(success) = outcome.counts_as_success() else {
            return true;
        };
        let Some(change) = state.observe(success) else {
            return true;
        };
        if !self.send(Update::Changed(change)).await {
            return false;
        }
        // Published after the event, so the agent hears "started" before any readiness news.
        if let (Gating::Publish(tx), ProbeResult::Success) = (&self.gating, change) {
            tx.send_replace(true);
        }
        true
    }

    async fn send(&self, update: Update) -> bool {
        let event = ProbeEvent {
            container: self.target.container.clone(),
            kind: self.kind,
            update,
        };
        self.events.send(event).await.is_ok()
    }
}
