//! The per-probe threshold state machine, pure: Kubernetes defaults for a `Probe`, when a
//! worker may probe (initial delay, startup gating) and how consecutive results turn into a
//! result change (successThreshold / failureThreshold).
//!
//! Semantics follow kubelet's prober worker (`pkg/kubelet/prober/worker.go`, `doProbe`):
//! a readiness result starts as Failure, liveness as Success, startup as Unknown; a run of
//! identical attempts must reach its threshold before the result is set; a liveness or startup
//! Failure puts the worker on hold (the container will be restarted, probing resumes only for
//! a new container); the startup probe stops once the container has started; liveness and
//! readiness do not probe until it has.

use k8s_openapi::api::core::v1::Probe;
use std::time::Duration;

/// Which of the container's three probes this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    /// Capitalised, as kubelet prints it at the start of event messages ("Liveness probe failed").
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }

    /// Lowercase, as in "Container web failed liveness probe, will be restarted".
    pub fn lowercase(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
            ProbeKind::Startup => "startup",
        }
    }
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A probe's result as the pod status sees it (kubelet's `results.Result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// Not probed yet (the startup probe's initial value).
    Unknown,
    Success,
    Failure,
}

/// Timing and thresholds of one probe with the API defaults applied
/// (core/v1 `Probe`: initialDelaySeconds 0, periodSeconds 10, timeoutSeconds 1,
/// successThreshold 1, failureThreshold 3; the minimum of each of the last four is 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Settings {
    /// Applies the defaults; out-of-range values (which API validation rejects) are raised to
    /// the minimum instead of failing, and liveness/startup use successThreshold 1, the only
    /// value validation accepts for them.
    pub fn from_probe(kind: ProbeKind, probe: &Probe) -> Settings {
        let at_least_one = |v: Option<i32>, default: u32| match v {
            None => default,
            Some(v) => u32::try_from(v).unwrap_or(1).max(1),
        };
        let success_threshold = match kind {
            ProbeKind::Readiness => at_least_one(probe.success_threshold, 1),
            ProbeKind::Liveness | ProbeKind::Startup => 1,
        };
        Settings {
            initial_delay: Duration::from_secs(
                u64::try_from(probe.initial_delay_seconds.unwrap_or(0)).unwrap_or(0),
            ),
            period: Duration::from_secs(at_least_one(probe.period_seconds, 10).into()),
            timeout: Duration::from_secs(at_least_one(probe.timeout_seconds, 1).into()),
            success_threshold,
            failure_threshold: at_least_one(probe.failure_threshold, 3),
        }
    }
}

/// What a worker should do at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Run the probe now.
    Probe,
    /// Not yet: the initial delay has not passed, or the container has not started (liveness,
    /// readiness behind a startup probe).
    Wait,
    /// Never again for this container: startup probe after the container started, or any
    /// liveness/startup probe after its Failure (kubelet's "on hold" until a new container).
    Done,
}

/// One probe's state for one container instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    kind: ProbeKind,
    success_threshold: u32,
    failure_threshold: u32,
    result: ProbeResult,
    /// The last attempt's result and how many identical attempts in a row ended with it.
    last: Option<bool>,
    run: u32,
    on_hold: bool,
}

impl ProbeState {
    pub fn new(kind: ProbeKind, settings: &Settings) -> ProbeState {
        ProbeState {
            kind,
            success_threshold: settings.success_threshold,
            failure_threshold: settings.failure_threshold,
            result: initial_result(kind),
            last: None,
            run: 0,
            on_hold: false,
        }
    }

    /// The current result (what the pod status shows).
    pub fn result(&self) -> ProbeResult {
        self.result
    }

    /// Decides whether to probe, given whether the container has started (its startup probe
    /// succeeded, or it has none) and how long it has been running.
    pub fn gate(&self, started: bool, running_for: Duration, initial_delay: Duration) -> Gate {
        if self.on_hold {
            return Gate::Done;
        }
        match (self.kind, started) {
            (ProbeKind::Startup, true) => return Gate::Done,
            (ProbeKind::Liveness | ProbeKind::Readiness, false) => return Gate::Wait,
            _ => {}
        }
        if running_for < initial_delay {
            return Gate::Wait;
        }
        Gate::Probe
    }

    /// Records one attempt (`true` = success; kubelet counts a Warning as success and throws an
    /// errored attempt away, so callers pass neither). Returns the new result when it changed.
    pub fn observe(&mut self, success: bool) -> Option<ProbeResult> {
        if self.on_hold {
            return None;
        }
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        let threshold = if success {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.run < threshold {
            return None;
        }
        let next = if success {
            ProbeResult::Success
        } else {
            ProbeResult::Failure
        };
        if !success && matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup) {
            // The container will be restarted; probing stops until a new container exists.
            self.on_hold = true;
            self.run = 0;
        }
        if next == self.result {
            return None;
        }
        self.result = next;
        Some(next)
    }
}

/// kubelet's `initialValue`: what the result is before the first threshold is reached.
pub fn initial_result(kind: ProbeKind) -> ProbeResult {
    match kind {
        ProbeKind::Readiness => ProbeResult::Failure,
        ProbeKind::Liveness => ProbeResult::Success,
        ProbeKind::Startup => ProbeResult::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProbeKind::*;
    use ProbeResult::{Failure as F, Success as S, Unknown as U};

    fn settings(success: u32, failure: u32) -> Settings {
        Settings {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn defaults_follow_the_api() {
        let s = Settings::from_probe(Readiness, &Probe::default());
        assert_eq!(
            s,
            Settings {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        let probe = Probe {
            initial_delay_seconds: Some(5),
            period_seconds: Some(0),
            timeout_seconds: Some(-3),
            success_threshold: Some(4),
            failure_threshold: Some(7),
            ..Probe::default()
        };
        let r = Settings::from_probe(Readiness, &probe);
        assert_eq!(r.initial_delay, Duration::from_secs(5));
        assert_eq!(r.period, Duration::from_secs(1));
        assert_eq!(r.timeout, Duration::from_secs(1));
        assert_eq!((r.success_threshold, r.failure_threshold), (4, 7));
        // Liveness and startup: successThreshold must be 1.
        assert_eq!(Settings::from_probe(Liveness, &probe).success_threshold, 1);
        assert_eq!(Settings::from_probe(Startup, &probe).success_threshold, 1);
    }

    #[test]
    fn initial_values_are_kubelets() {
        for (kind, want) in [(Readiness, F), (Liveness, S), (Startup, U)] {
            assert_eq!(
                ProbeState::new(kind, &settings(1, 3)).result(),
                want,
                "{kind}"
            );
        }
    }

    /// Each case: kind, thresholds, attempts, and the change each attempt reports.
    #[test]
    fn thresholds_table() {
        type Case = (
            &'static str,
            ProbeKind,
            (u32, u32),
            &'static [(bool, Option<ProbeResult>)],
        );
        let cases: &[Case] = &[
            (
                "readiness becomes ready on the first success",
                Readiness,
                (1, 3),
                &[(true, Some(S)), (true, None)],
            ),
            (
                "readiness failures below the threshold keep it ready",
                Readiness,
                (1, 3),
                &[
                    (true, Some(S)),
                    (false, None),
                    (false, None),
                    (true, None),
                    (false, None),
                ],
            ),
            (
                "readiness turns unready after failureThreshold failures in a row",
                Readiness,
                (1, 3),
                &[
                    (true, Some(S)),
                    (false, None),
                    (false, None),
                    (false, Some(F)),
                    (false, None),
                ],
            ),
            (
                "readiness needs successThreshold successes to come back",
                Readiness,
                (2, 1),
                &[
                    (true, None),
                    (true, Some(S)),
                    (false, Some(F)),
                    (true, None),
                    (true, Some(S)),
                ],
            ),
            (
                "initial readiness failures report nothing (already Failure)",
                Readiness,
                (1, 1),
                &[(false, None), (false, None), (true, Some(S))],
            ),
            (
                "liveness successes report nothing (initially Success)",
                Liveness,
                (1, 3),
                &[(true, None), (true, None)],
            ),
            (
                "liveness fails after failureThreshold and then holds",
                Liveness,
                (1, 2),
                &[
                    (false, None),
                    (true, None),
                    (false, None),
                    (false, Some(F)),
                    (true, None),
                ],
            ),
            (
                "startup succeeds once",
                Startup,
                (1, 3),
                &[(false, None), (true, Some(S))],
            ),
            (
                "startup fails after failureThreshold",
                Startup,
                (1, 3),
                &[
                    (false, None),
                    (false, None),
                    (false, Some(F)),
                    (false, None),
                ],
            ),
        ];
        for (name, kind, (success, failure), attempts) in cases {
            let mut state = ProbeState::new(*kind, &settings(*success, *failure));
            for (i, (attempt, want)) in attempts.iter().enumerate() {
                assert_eq!(state.observe(*attempt), *want, "{name}: attempt {i}");
            }
        }
    }

    #[test]
    fn gate_table() {
        let delay = Duration::from_secs(5);
        let early = Duration::from_secs(4);
        let late = Duration::from_secs(5);
        // kind, started, running for, gate
        let cases = [
            (Liveness, true, early, Gate::Wait),
            (Liveness, true, late, Gate::Probe),
            (Liveness, false, late, Gate::Wait),
            (Readiness, false, late, Gate::Wait),
            (Readiness, true, late, Gate::Probe),
            (Startup, false, early, Gate::Wait),
            (Startup, false, late, Gate::Probe),
            (Startup, true, late, Gate::Done),
        ];
        for (kind, started, running_for, want) in cases {
            let state = ProbeState::new(kind, &settings(1, 3));
            assert_eq!(
                state.gate(started, running_for, delay),
                want,
                "{kind} started={started} after {running_for:?}"
            );
        }
    }

    #[test]
    fn liveness_and_startup_hold_after_failure() {
        for kind in [Liveness, Startup] {
            let mut state = ProbeState::new(kind, &settings(1, 1));
            assert_eq!(state.observe(false), Some(F));
            assert_eq!(
                state.gate(false, Duration::from_secs(60), Duration::ZERO),
                Gate::Done
            );
        }
        // Readiness keeps probing after a failure.
        let mut state = ProbeState::new(Readiness, &settings(1, 1));
        state.observe(true);
        assert_eq!(state.observe(false), Some(F));
        assert_eq!(
            state.gate(true, Duration::ZERO, Duration::ZERO),
            Gate::Probe
        );
    }
}
