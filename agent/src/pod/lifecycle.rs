//! The pod lifecycle, as one pure step function (STYLE.md item 10): from the pod the API wants
//! (`Desired`) and what the runtime and network report (`Observed`), decide the next state and
//! the actions the executor must run. No I/O here; the executor (runtime, network, images)
//! runs the actions and calls `step` again when anything changes or a requeue time comes.
//!
//! Semantics follow kubelet: init containers run one at a time, in order, each to success;
//! then all app containers start; `restartPolicy` Always/OnFailure/Never decides restarts,
//! with CrashLoopBackOff delays of 10 s doubling to 5 min, reset after 10 min of running
//! (pkg/kubelet/kubelet.go backoff constants); deletion stops every container within the grace
//! period, then tears the sandbox down. Eviction (node pressure) stops every container within
//! the eviction's grace period and tears the sandbox down too, but the pod then stays
//! `Finished(Failed)`: the API object remains (reason `Evicted`) until someone deletes it.

use std::collections::BTreeMap;

/// Milliseconds on a monotonic clock the executor supplies.
pub type Millis = i64;

pub const BACKOFF_INITIAL: Millis = 10_000;
pub const BACKOFF_MAX: Millis = 300_000;
/// A container that ran this long without failing gets its back-off reset.
pub const BACKOFF_RESET: Millis = 600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// What the API asks for, reduced to what the lifecycle needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub init_containers: Vec<String>,
    pub containers: Vec<String>,
    pub restart_policy: RestartPolicy,
    /// Set once the pod is being deleted: the grace period in milliseconds.
    pub deletion_grace: Option<Millis>,
    /// Set once the node evicted the pod: the grace period in milliseconds (0 for a hard
    /// threshold).
    pub evicted: Option<Millis>,
}

/// The latest instance of one container, as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Container {
    /// Never created (or removed).
    Absent,
    /// Its image is being pulled.
    Pulling,
    /// Pull or create failed; `reason` is the kubelet reason (ErrImagePull,
    /// CreateContainerConfigError, ...).
    Failed {
        reason: String,
        message: String,
        at: Millis,
    },
    Running {
        started_at: Millis,
    },
    Exited {
        code: i32,
        oom: bool,
        started_at: Millis,
        finished_at: Millis,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    Absent,
    /// Network namespace and CNI ADD done.
    Ready,
    Failed {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub now: Millis,
    pub sandbox: Sandbox,
    pub containers: BTreeMap<String, Container>,
}

impl Observed {
    fn get(&self, name: &str) -> &Container {
        self.containers.get(name).unwrap_or(&Container::Absent)
    }
}

/// Per-container memory the lifecycle keeps between steps (kubelet keeps it in its back-off
/// table and the runtime's container history).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    pub restarts: BTreeMap<String, u32>,
    /// When the next start of a container is allowed, and the delay that led there.
    pub backoff: BTreeMap<String, (Millis, Millis)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Creating the sandbox.
    Setup,
    /// Running init container `n` (index into `Desired::init_containers`).
    Init(usize),
    /// App containers started (and restarted per policy).
    Running,
    /// Stopping everything by `deadline`, then removing the sandbox.
    Terminating { deadline: Millis },
    /// All containers finished for good (restartPolicy let them stay down).
    Finished(Phase),
    /// Sandbox gone after deletion: the API object may be removed.
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreateSandbox,
    /// Pull the image (per imagePullPolicy) and create + start the container.
    StartContainer(String),
    /// SIGTERM (or the image's STOPSIGNAL), SIGKILL when `deadline` passes.
    StopContainer {
        name: String,
        deadline: Millis,
    },
    RemoveSandbox,
    /// Call `step` again at this time even if nothing else changes.
    RequeueAt(Millis),
}

fn backoff_ready(mem: &Memory, name: &str, now: Millis) -> Result<(), Millis> {
    match mem.backoff.get(name) {
        Some((until, _)) if *until > now => Err(*until),
        _ => Ok(()),
    }
}

/// Records a restart of `name` that ended at `finished_at` after running since `started_at`.
fn note_restart(mem: &mut Memory, name: &str, started_at: Millis, finished_at: Millis) {
    *mem.restarts.entry(name.to_string()).or_default() += 1;
    let delay = match mem.backoff.get(name) {
        Some((_, d)) if finished_at - started_at < BACKOFF_RESET => (d * 2).min(BACKOFF_MAX),
        _ => BACKOFF_INITIAL,
    };
    mem.backoff
        .insert(name.to_string(), (finished_at + delay, delay));
}

fn wants_restart(policy: RestartPolicy, code: i32) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => code != 0,
        RestartPolicy::Never => false,
    }
}

/// The next state and actions. `mem` carries restart counts and back-off across steps.
pub fn step(
    state: &State,
    mem: &mut Memory,
    want: &Desired,
    seen: &Observed,
) -> (State, Vec<Action>) {
    let now = seen.now;
    if let Some(grace) = want.deletion_grace {
        return terminate(state, want, seen, now, grace);
    }
    if let Some(grace) = want.evicted {
        return match terminate(state, want, seen, now, grace) {
            // Stopped and torn down: the pod is over, its object stays.
            (State::Removed, _) => (State::Finished(Phase::Failed), vec![]),
            other => other,
        };
    }
    match state {
        State::Setup => match &seen.sandbox {
            Sandbox::Ready if want.init_containers.is_empty() => {
                step(&State::Running, mem, want, seen)
            }
            Sandbox::Ready => step(&State::Init(0), mem, want, seen),
            Sandbox::Absent => (State::Setup, vec![Action::CreateSandbox]),
            // CNI or namespace failure: retry with the same back-off as containers.
            Sandbox::Failed { .. } => match backoff_ready(mem, "", now) {
                Ok(()) => {
                    note_restart(mem, "", now, now);
                    (State::Setup, vec![Action::CreateSandbox])
                }
                Err(until) => (State::Setup, vec![Action::RequeueAt(until)]),
            },
        },
        State::Init(i) => {
            let Some(name) = want.init_containers.get(*i) else {
                return step(&State::Running, mem, want, seen);
            };
            match seen.get(name) {
                Container::Exited { code: 0, .. } => step(&State::Init(i + 1), mem, want, seen),
                Container::Exited {
                    started_at,
                    finished_at,
                    ..
                } => {
                    // An init container failure restarts it unless the policy is Never.
                    if want.restart_policy == RestartPolicy::Never {
                        return (State::Finished(Phase::Failed), vec![]);
                    }
                    restart_or_wait(mem, name, *started_at, *finished_at, now, State::Init(*i))
                }
                Container::Failed { at, .. } => retry_failed(mem, name, *at, now, State::Init(*i)),
                Container::Absent => (State::Init(*i), vec![Action::StartContainer(name.clone())]),
                Container::Pulling | Container::Running { .. } => (State::Init(*i), vec![]),
            }
        }
        State::Running => running(mem, want, seen, now),
        State::Finished(p) => (State::Finished(p.clone()), vec![]),
        State::Terminating { .. } | State::Removed => (state.clone(), vec![]),
    }
}

fn restart_or_wait(
    mem: &mut Memory,
    name: &str,
    started_at: Millis,
    finished_at: Millis,
    now: Millis,
    stay: State,
) -> (State, Vec<Action>) {
    // A new exit (not yet counted) starts or extends the back-off.
    let counted = mem
        .backoff
        .get(name)
        .is_some_and(|(until, delay)| until - delay == finished_at);
    if !counted {
        note_restart(mem, name, started_at, finished_at);
    }
    start_when_ready(mem, name, now, stay)
}

/// Start `name` now if its back-off has run out, else come back when it does.
fn start_when_ready(mem: &Memory, name: &str, now: Millis, stay: State) -> (State, Vec<Action>) {
    match backoff_ready(mem, name, now) {
        Ok(()) => (stay, vec![Action::StartContainer(name.to_string())]),
        Err(until) => (stay, vec![Action::RequeueAt(until)]),
    }
}

fn retry_failed(
    mem: &mut Memory,
    name: &str,
    at: Millis,
    now: Millis,
    stay: State,
) -> (State, Vec<Action>) {
    let counted = mem
        .backoff
        .get(name)
        .is_some_and(|(until, delay)| until - delay == at);
    if !counted {
        let delay = mem
            .backoff
            .get(name)
            .map(|(_, d)| (d * 2).min(BACKOFF_MAX))
            .unwrap_or(BACKOFF_INITIAL);
        mem.backoff.insert(name.to_string(), (at + delay, delay));
    }
    start_when_ready(mem, name, now, stay)
}

fn running(mem: &mut Memory, want: &Desired, seen: &Observed, now: Millis) -> (State, Vec<Action>) {
    let mut actions = Vec::new();
    let mut finished = Vec::new();
    for name in &want.containers {
        match seen.get(name) {
            Container::Absent => actions.push(Action::StartContainer(name.clone())),
            Container::Pulling => {}
            Container::Running { started_at } => {
                // Long enough without trouble: forget the back-off.
                if now - started_at >= BACKOFF_RESET {
                    mem.backoff.remove(name);
                }
            }
            Container::Failed { at, .. } => {
                actions.extend(retry_failed(mem, name, *at, now, State::Running).1)
            }
            Container::Exited {
                code,
                started_at,
                finished_at,
                ..
            } => {
                if wants_restart(want.restart_policy, *code) {
                    actions.extend(
                        restart_or_wait(mem, name, *started_at, *finished_at, now, State::Running)
                            .1,
                    );
                } else {
                    finished.push(*code);
                }
            }
        }
    }
    if finished.len() == want.containers.len() && !want.containers.is_empty() {
        let phase = if finished.iter().all(|c| *c == 0) {
            Phase::Succeeded
        } else {
            Phase::Failed
        };
        return (State::Finished(phase), vec![]);
    }
    // Several requeues collapse to the earliest.
    let earliest = actions
        .iter()
        .filter_map(|a| {
            if let Action::RequeueAt(t) = a {
                Some(*t)
            } else {
                None
            }
        })
        .min();
    actions.retain(|a| !matches!(a, Action::RequeueAt(_)));
    if let Some(t) = earliest {
        actions.push(Action::RequeueAt(t));
    }
    (State::Running, actions)
}

fn terminate(
    state: &State,
    want: &Desired,
    seen: &Observed,
    now: Millis,
    grace: Millis,
) -> (State, Vec<Action>) {
    let deadline = match state {
        State::Terminating { deadline } => *deadline,
        State::Removed => return (State::Removed, vec![]),
        _ => now + grace,
    };
    let live: Vec<&String> = want
        .init_containers
        .iter()
        .chain(&want.containers)
        .filter(|n| matches!(seen.get(n), Container::Running { .. } | Container::Pulling))
        .collect();
    if !live.is_empty() {
        let mut actions: Vec<Action> = live
            .into_iter()
            .map(|n| Action::StopContainer {
                name: n.clone(),
                deadline,
            })
            .collect();
        actions.push(Action::RequeueAt(deadline));
        return (State::Terminating { deadline }, actions);
    }
    match seen.sandbox {
        Sandbox::Absent => (State::Removed, vec![]),
        _ => (State::Terminating { deadline }, vec![Action::RemoveSandbox]),
    }
}

/// The pod phase the API shows for a state (kubelet's getPhase, simplified to the lifecycle).
pub fn phase(state: &State, want: &Desired, seen: &Observed) -> Phase {
    match state {
        State::Finished(p) => p.clone(),
        State::Running
            if want
                .containers
                .iter()
                .any(|n| matches!(seen.get(n), Container::Running { .. })) =>
        {
            Phase::Running
        }
        State::Running => {
            let all_exited = want
                .containers
                .iter()
                .all(|n| matches!(seen.get(n), Container::Exited { .. }));
            if all_exited && !want.containers.is_empty() {
                Phase::Running
            } else {
                Phase::Pending
            }
        }
        _ => Phase::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(init: &[&str], app: &[&str], policy: RestartPolicy) -> Desired {
        Desired {
            init_containers: init.iter().map(|s| s.to_string()).collect(),
            containers: app.iter().map(|s| s.to_string()).collect(),
            restart_policy: policy,
            deletion_grace: None,
            evicted: None,
        }
    }

    fn seen(now: Millis, sandbox: Sandbox, cs: &[(&str, Container)]) -> Observed {
        Observed {
            now,
            sandbox,
            containers: cs.iter().map(|(n, c)| (n.to_string(), c.clone())).collect(),
        }
    }

    fn exited(code: i32, started_at: Millis, finished_at: Millis) -> Container {
        Container::Exited {
            code,
            oom: false,
            started_at,
            finished_at,
        }
    }

    /// (what, state, desired, observed, expected state, expected actions)
    type Case<'a> = (&'a str, State, &'a Desired, Observed, State, Vec<Action>);

    #[test]
    fn table_of_single_steps() {
        use Action::*;
        let web = desired(&[], &["web"], RestartPolicy::Always);
        let init = desired(&["setup"], &["web"], RestartPolicy::Always);
        let never = desired(&[], &["job"], RestartPolicy::Never);
        let on_failure = desired(&[], &["job"], RestartPolicy::OnFailure);
        let mut gone = web.clone();
        gone.deletion_grace = Some(30_000);
        let cases: Vec<Case> = vec![
            (
                "new pod creates its sandbox",
                State::Setup,
                &web,
                seen(0, Sandbox::Absent, &[]),
                State::Setup,
                vec![CreateSandbox],
            ),
            (
                "sandbox ready starts app containers",
                State::Setup,
                &web,
                seen(0, Sandbox::Ready, &[]),
                State::Running,
                vec![StartContainer("web".into())],
            ),
            (
                "init containers go first",
                State::Setup,
                &init,
                seen(0, Sandbox::Ready, &[]),
                State::Init(0),
                vec![StartContainer("setup".into())],
            ),
            (
                "running init container: wait",
                State::Init(0),
                &init,
                seen(
                    5,
                    Sandbox::Ready,
                    &[("setup", Container::Running { started_at: 1 })],
                ),
                State::Init(0),
                vec![],
            ),
            (
                "init success moves on",
                State::Init(0),
                &init,
                seen(5, Sandbox::Ready, &[("setup", exited(0, 1, 4))]),
                State::Running,
                vec![StartContainer("web".into())],
            ),
            (
                "pulling: wait",
                State::Running,
                &web,
                seen(5, Sandbox::Ready, &[("web", Container::Pulling)]),
                State::Running,
                vec![],
            ),
            (
                "Never: exit 0 succeeds",
                State::Running,
                &never,
                seen(9, Sandbox::Ready, &[("job", exited(0, 1, 8))]),
                State::Finished(Phase::Succeeded),
                vec![],
            ),
            (
                "Never: exit 1 fails",
                State::Running,
                &never,
                seen(9, Sandbox::Ready, &[("job", exited(1, 1, 8))]),
                State::Finished(Phase::Failed),
                vec![],
            ),
            (
                "OnFailure: exit 0 stays down",
                State::Running,
                &on_failure,
                seen(9, Sandbox::Ready, &[("job", exited(0, 1, 8))]),
                State::Finished(Phase::Succeeded),
                vec![],
            ),
            (
                "Always: exit waits for back-off",
                State::Running,
                &web,
                seen(9, Sandbox::Ready, &[("web", exited(0, 1, 8))]),
                State::Running,
                vec![RequeueAt(8 + BACKOFF_INITIAL)],
            ),
            (
                "deletion stops running containers",
                State::Running,
                &gone,
                seen(
                    100,
                    Sandbox::Ready,
                    &[("web", Container::Running { started_at: 1 })],
                ),
                State::Terminating { deadline: 30_100 },
                vec![
                    StopContainer {
                        name: "web".into(),
                        deadline: 30_100,
                    },
                    RequeueAt(30_100),
                ],
            ),
            (
                "stopped containers: remove the sandbox",
                State::Terminating { deadline: 50 },
                &gone,
                seen(60, Sandbox::Ready, &[("web", exited(143, 1, 55))]),
                State::Terminating { deadline: 50 },
                vec![RemoveSandbox],
            ),
            (
                "sandbox gone: removed",
                State::Terminating { deadline: 50 },
                &gone,
                seen(70, Sandbox::Absent, &[]),
                State::Removed,
                vec![],
            ),
        ];
        for (what, state, want, obs, next, actions) in cases {
            let mut mem = Memory::default();
            assert_eq!(
                step(&state, &mut mem, want, &obs),
                (next, actions),
                "{what}"
            );
        }
    }

    #[test]
    fn eviction_kills_tears_down_and_keeps_the_pod_failed() {
        let mut evicted = desired(&[], &["web"], RestartPolicy::Always);
        evicted.evicted = Some(0);
        let mut mem = Memory::default();
        let running = seen(
            100,
            Sandbox::Ready,
            &[("web", Container::Running { started_at: 1 })],
        );
        assert_eq!(
            step(&State::Running, &mut mem, &evicted, &running),
            (
                State::Terminating { deadline: 100 },
                vec![
                    Action::StopContainer {
                        name: "web".into(),
                        deadline: 100
                    },
                    Action::RequeueAt(100)
                ]
            ),
            "hard eviction: grace 0"
        );
        // Killed: no restart despite restartPolicy Always; the sandbox goes.
        let killed = seen(110, Sandbox::Ready, &[("web", exited(137, 1, 105))]);
        let (next, actions) = step(
            &State::Terminating { deadline: 100 },
            &mut mem,
            &evicted,
            &killed,
        );
        assert_eq!(actions, vec![Action::RemoveSandbox]);
        let torn = seen(120, Sandbox::Absent, &[("web", exited(137, 1, 105))]);
        let (next, actions) = step(&next, &mut mem, &evicted, &torn);
        assert_eq!(
            (next.clone(), actions),
            (State::Finished(Phase::Failed), vec![])
        );
        assert_eq!(phase(&next, &evicted, &torn), Phase::Failed);
        // It stays Failed (the object is kept) until the pod is deleted.
        assert_eq!(
            step(&next, &mut mem, &evicted, &torn),
            (State::Finished(Phase::Failed), vec![])
        );
        let mut deleted = evicted.clone();
        deleted.deletion_grace = Some(30_000);
        assert_eq!(
            step(&next, &mut mem, &deleted, &torn),
            (State::Removed, vec![])
        );
    }

    #[test]
    fn crash_loop_backoff_doubles_to_five_minutes_and_resets() {
        let want = desired(&[], &["web"], RestartPolicy::Always);
        let mut mem = Memory::default();
        let mut t: Millis = 0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            // The container runs 1 s and crashes; the next start waits for the back-off.
            let crashed = seen(
                t + 1_000,
                Sandbox::Ready,
                &[("web", exited(1, t, t + 1_000))],
            );
            let (_, actions) = step(&State::Running, &mut mem, &want, &crashed);
            let Some(Action::RequeueAt(until)) = actions.first().cloned() else {
                panic!("expected a requeue: {actions:?}")
            };
            delays.push(until - (t + 1_000));
            let (_, actions) = step(
                &State::Running,
                &mut mem,
                &want,
                &seen(until, Sandbox::Ready, &[("web", exited(1, t, t + 1_000))]),
            );
            assert_eq!(actions, vec![Action::StartContainer("web".into())]);
            t = until;
        }
        assert_eq!(
            delays,
            [
                10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000, 300_000
            ]
        );
        assert_eq!(mem.restarts.get("web"), Some(&8));
        // Ten minutes of running resets the back-off.
        let long = seen(
            t + BACKOFF_RESET,
            Sandbox::Ready,
            &[("web", Container::Running { started_at: t })],
        );
        step(&State::Running, &mut mem, &want, &long);
        let crashed = seen(
            t + BACKOFF_RESET + 5,
            Sandbox::Ready,
            &[("web", exited(1, t, t + BACKOFF_RESET + 5))],
        );
        let (_, actions) = step(&State::Running, &mut mem, &want, &crashed);
        assert_eq!(
            actions,
            vec![Action::RequeueAt(t + BACKOFF_RESET + 5 + BACKOFF_INITIAL)]
        );
    }

    #[test]
    fn failed_pulls_back_off_and_phase_follows() {
        let want = desired(&[], &["web"], RestartPolicy::Always);
        let mut mem = Memory::default();
        let failed = Container::Failed {
            reason: "ErrImagePull".into(),
            message: "not found".into(),
            at: 100,
        };
        let (_, actions) = step(
            &State::Running,
            &mut mem,
            &want,
            &seen(100, Sandbox::Ready, &[("web", failed.clone())]),
        );
        assert_eq!(actions, vec![Action::RequeueAt(100 + BACKOFF_INITIAL)]);
        let (_, actions) = step(
            &State::Running,
            &mut mem,
            &want,
            &seen(100 + BACKOFF_INITIAL, Sandbox::Ready, &[("web", failed)]),
        );
        assert_eq!(actions, vec![Action::StartContainer("web".into())]);
        let running = seen(
            5,
            Sandbox::Ready,
            &[("web", Container::Running { started_at: 1 })],
        );
        assert_eq!(phase(&State::Running, &want, &running), Phase::Running);
        assert_eq!(phase(&State::Setup, &want, &running), Phase::Pending);
    }
}
