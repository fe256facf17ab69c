//! Pod status in the API's shape, as kubelet's status manager writes it: phase, conditions,
//! IPs, QoS class, and one containerStatus per container (state, lastState, restartCount,
//! ready, started, image, imageID, containerID `keel://<id>`). Pure: the worker hands in a
//! snapshot and gets the JSON it patches into `pods/<name>/status`.

use super::lifecycle::{self, Container, Desired, Memory, Observed, Phase, State};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// One finished container instance, for `lastState` and `state.terminated`.
#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub id: String,
    pub code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub started_at: i64,
    pub finished_at: i64,
}

/// What the worker knows about one container name beyond the lifecycle's view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerView {
    pub image: String,
    pub image_id: String,
    /// Current instance id (running or last exited).
    pub id: Option<String>,
    /// The instance before the current one, once it has exited.
    pub last: Option<Terminated>,
    /// Readiness from the probe (true when there is no readiness probe).
    pub ready: bool,
    /// Startup probe passed (true when there is none).
    pub started: bool,
}

pub struct Snapshot<'a> {
    pub state: &'a State,
    pub want: &'a Desired,
    pub seen: &'a Observed,
    pub mem: &'a Memory,
    pub views: &'a BTreeMap<String, ContainerView>,
    pub pod_ips: &'a [String],
    pub host_ip: &'a str,
    pub qos: &'a str,
    /// RFC 3339 time the agent first saw the pod.
    pub start_time: &'a str,
    /// Existing conditions (to keep lastTransitionTime stable).
    pub previous: &'a Value,
    /// `<name>_<namespace>(<uid>)`, as kubelet names pods in messages.
    pub pod_label: &'a str,
    /// The node evicted (or refused) the pod: phase Failed, reason `Evicted`.
    pub evicted: Option<Evicted<'a>>,
}

/// How a pod was evicted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evicted<'a> {
    /// `status.message`.
    pub message: &'a str,
    /// The eviction manager killed it (not admission): the DisruptionTarget condition's
    /// message.
    pub disruption: Option<&'a str>,
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Exit reason as kubelet reports it.
pub fn exit_reason(code: i32, oom: bool) -> &'static str {
    if oom {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

fn terminated_json(t: &Terminated) -> Value {
    let mut v = json!({
        "exitCode": t.code,
        "reason": t.reason,
        "startedAt": rfc3339(t.started_at),
        "finishedAt": rfc3339(t.finished_at),
        "containerID": format!("keel://{}", t.id),
    });
    if let Some(s) = t.signal {
        v["signal"] = json!(s);
    }
    v
}

fn phase_str(p: &Phase) -> &'static str {
    match p {
        Phase::Pending => "Pending",
        Phase::Running => "Running",
        Phase::Succeeded => "Succeeded",
        Phase::Failed => "Failed",
    }
}

/// One container's status; `(json, ready, running)`.
fn container_status(
    s: &Snapshot<'_>,
    name: &str,
    init: bool,
    waiting_for_init: bool,
) -> (Value, bool) {
    let view = s.views.get(name).cloned().unwrap_or_default();
    let restarts = s.mem.restarts.get(name).copied().unwrap_or(0);
    let c = s
        .seen
        .containers
        .get(name)
        .cloned()
        .unwrap_or(Container::Absent);
    let in_backoff = s
        .mem
        .backoff
        .get(name)
        .is_some_and(|(until, _)| *until > s.seen.now);
    let mut ready = false;
    let mut started = false;
    // A container that never ran in a pod that is over (refused or evicted before it started):
    // kubelet reports it terminated with ContainerStatusUnknown.
    let never_ran = matches!(
        c,
        Container::Absent | Container::Pulling | Container::Failed { .. }
    );
    let state = match &c {
        _ if never_ran && s.evicted.is_some() && matches!(s.state, State::Finished(_)) => {
            json!({"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                "message": "The container could not be located when the pod was terminated"}})
        }
        Container::Absent | Container::Pulling => {
            let reason = if waiting_for_init {
                "PodInitializing"
            } else {
                "ContainerCreating"
            };
            json!({"waiting": {"reason": reason}})
        }
        Container::Failed {
            reason, message, ..
        } => {
            let reason = if reason == "ErrImagePull" && in_backoff {
                "ImagePullBackOff"
            } else {
                reason.as_str()
            };
            let message = if reason == "ImagePullBackOff" {
                format!("Back-off pulling image {:?}", view.image)
            } else {
                message.clone()
            };
            json!({"waiting": {"reason": reason, "message": message}})
        }
        Container::Running { started_at } => {
            ready = view.ready && view.started;
            started = view.started;
            json!({"running": {"startedAt": rfc3339(*started_at)}})
        }
        Container::Exited {
            code,
            oom,
            started_at,
            finished_at,
        } => {
            let t = Terminated {
                id: view.id.clone().unwrap_or_default(),
                code: *code,
                signal: None,
                reason: exit_reason(*code, *oom).into(),
                started_at: *started_at,
                finished_at: *finished_at,
            };
            if in_backoff {
                let delay = s.mem.backoff.get(name).map(|(_, d)| d / 1000).unwrap_or(10);
                let pod = s.pod_label;
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!(
                    "back-off {}restarting failed container={name} pod={pod}",
                    human_secs(delay)
                )}})
            } else {
                json!({"terminated": terminated_json(&t)})
            }
        }
    };
    let mut last = view.last.as_ref().map(terminated_json);
    // While waiting to restart, the exit just seen is the last state (kubelet shows it there).
    if let (
        Some(_),
        Container::Exited {
            code,
            oom,
            started_at,
            finished_at,
        },
    ) = (state.get("waiting"), &c)
    {
        last = Some(terminated_json(&Terminated {
            id: view.id.clone().unwrap_or_default(),
            code: *code,
            signal: None,
            reason: exit_reason(*code, *oom).into(),
            started_at: *started_at,
            finished_at: *finished_at,
        }));
    }
    let mut v = json!({
        "name": name,
        "state": state,
        "lastState": last.map(|t| json!({"terminated": t})).unwrap_or_else(|| json!({})),
        "ready": ready,
        "restartCount": restarts,
        "image": view.image,
        "imageID": view.image_id,
    });
    if !init {
        v["started"] = json!(started);
    } else {
        v["started"] = json!(matches!(c, Container::Running { .. }));
    }
    if let Some(id) = &view.id {
        v["containerID"] = json!(format!("keel://{id}"));
    }
    (v, ready)
}

fn human_secs(s: i64) -> String {
    if s >= 60 && s % 60 == 0 {
        format!("{}m0s ", s / 60)
    } else if s >= 60 {
        format!("{}m{}s ", s / 60, s % 60)
    } else {
        format!("{s}s ")
    }
}

fn condition(previous: &Value, kind: &str, ok: bool, reason: Option<&str>, now: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == kind && c["status"] == status)
                .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
        })
        .unwrap_or_else(|| now.to_string());
    let mut c =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason.filter(|_| !ok) {
        c["reason"] = json!(r);
    }
    c
}

/// The full `status` object.
pub fn build(s: &Snapshot<'_>) -> Value {
    let now = rfc3339(s.seen.now);
    let init_done = !matches!(s.state, State::Setup | State::Init(_));
    let init: Vec<Value> = s
        .want
        .init_containers
        .iter()
        .map(|n| container_status(s, n, true, false).0)
        .collect();
    let mut all_ready = !s.want.containers.is_empty();
    let app: Vec<Value> = s
        .want
        .containers
        .iter()
        .map(|n| {
            let (v, ready) = container_status(s, n, false, !init_done);
            all_ready &= ready;
            v
        })
        .collect();
    let mut phase = lifecycle::phase(s.state, s.want, s.seen);
    if matches!(s.state, State::Terminating { .. } | State::Removed) {
        phase = Phase::Running;
    }
    // kubelet's eviction manager sets the phase as it starts killing (killPodNow's status
    // function), not once the containers are gone.
    if s.evicted.is_some() {
        phase = Phase::Failed;
    }
    let finished = matches!(phase, Phase::Succeeded | Phase::Failed);
    let mut conditions = vec![
        condition(
            s.previous,
            "PodReadyToStartContainers",
            !s.pod_ips.is_empty(),
            None,
            &now,
        ),
        condition(
            s.previous,
            "Initialized",
            init_done,
            Some("ContainersNotInitialized"),
            &now,
        ),
        condition(
            s.previous,
            "Ready",
            all_ready && !finished,
            Some(if finished {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            }),
            &now,
        ),
        condition(
            s.previous,
            "ContainersReady",
            all_ready && !finished,
            Some(if finished {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            }),
            &now,
        ),
        condition(s.previous, "PodScheduled", true, None, &now),
    ];
    if let Some(message) = s.evicted.and_then(|e| e.disruption) {
        // kubelet adds DisruptionTarget (reason TerminationByKubelet) to pods it evicts.
        let mut c = condition(s.previous, "DisruptionTarget", true, None, &now);
        c["reason"] = json!("TerminationByKubelet");
        c["message"] = json!(message);
        conditions.push(c);
    }
    let mut v = json!({
        "phase": phase_str(&phase),
        "conditions": conditions,
        "hostIP": s.host_ip,
        "hostIPs": [{"ip": s.host_ip}],
        "startTime": s.start_time,
        "qosClass": s.qos,
        "containerStatuses": app,
    });
    if !init.is_empty() {
        v["initContainerStatuses"] = json!(init);
    }
    if let Some(e) = s.evicted {
        v["reason"] = json!("Evicted");
        v["message"] = json!(e.message);
    }
    if let Some(first) = s.pod_ips.first() {
        v["podIP"] = json!(first);
        v["podIPs"] = json!(
            s.pod_ips
                .iter()
                .map(|ip| json!({"ip": ip}))
                .collect::<Vec<_>>()
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::lifecycle::{RestartPolicy, Sandbox};

    fn snapshot_status(state: State, c: Container, mem: Memory, ready: bool) -> Value {
        snapshot_evicted(state, c, mem, ready, None)
    }

    fn snapshot_evicted(
        state: State,
        c: Container,
        mem: Memory,
        ready: bool,
        evicted: Option<Evicted<'_>>,
    ) -> Value {
        let want = Desired {
            init_containers: vec![],
            containers: vec!["web".into()],
            restart_policy: RestartPolicy::Always,
            deletion_grace: None,
            evicted: None,
        };
        let seen = Observed {
            now: 100_000,
            sandbox: Sandbox::Ready,
            containers: [("web".to_string(), c)].into_iter().collect(),
        };
        let views = [(
            "web".to_string(),
            ContainerView {
                image: "nginx:1.14".into(),
                id: Some("ab".repeat(32)),
                ready,
                started: true,
                ..Default::default()
            },
        )]
        .into_iter()
        .collect();
        build(&Snapshot {
            state: &state,
            want: &want,
            seen: &seen,
            mem: &mem,
            views: &views,
            pod_ips: &["10.44.0.2".to_string()],
            host_ip: "192.168.56.11",
            qos: "BestEffort",
            start_time: "2026-01-01T00:00:00Z",
            previous: &Value::Null,
            pod_label: "web_default(u1)",
            evicted,
        })
    }

    #[test]
    fn running_and_ready() {
        let s = snapshot_status(
            State::Running,
            Container::Running { started_at: 90_000 },
            Memory::default(),
            true,
        );
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.44.0.2");
        let c = &s["containerStatuses"][0];
        assert_eq!(c["ready"], true);
        assert!(c["state"]["running"]["startedAt"].is_string());
        assert_eq!(c["containerID"], format!("keel://{}", "ab".repeat(32)));
        let ready = s["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .cloned();
        assert_eq!(ready.map(|c| c["status"].clone()), Some(json!("True")));
    }

    #[test]
    fn crash_loop_shows_back_off_and_last_exit() {
        let mut mem = Memory::default();
        mem.restarts.insert("web".into(), 2);
        mem.backoff.insert("web".into(), (120_000, 20_000));
        let s = snapshot_status(
            State::Running,
            Container::Exited {
                code: 1,
                oom: false,
                started_at: 95_000,
                finished_at: 99_000,
            },
            mem,
            true,
        );
        let c = &s["containerStatuses"][0];
        assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(c["lastState"]["terminated"]["reason"], "Error");
        assert_eq!(c["restartCount"], 2);
        assert_eq!(c["ready"], false);
    }

    #[test]
    fn oom_and_pull_back_off_reasons() {
        let s = snapshot_status(
            State::Finished(Phase::Failed),
            Container::Exited {
                code: 137,
                oom: true,
                started_at: 1,
                finished_at: 2,
            },
            Memory::default(),
            false,
        );
        assert_eq!(
            s["containerStatuses"][0]["state"]["terminated"]["reason"],
            "OOMKilled"
        );
        assert_eq!(s["phase"], "Failed");
        let mut mem = Memory::default();
        mem.backoff.insert("web".into(), (200_000, 10_000));
        let s = snapshot_status(
            State::Running,
            Container::Failed {
                reason: "ErrImagePull".into(),
                message: "x".into(),
                at: 90_000,
            },
            mem,
            false,
        );
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ImagePullBackOff"
        );
    }

    #[test]
    fn evicted_pod_is_failed_at_once_with_reason_and_message() {
        let msg = "The node was low on resource: memory. ";
        let evicted = Some(Evicted {
            message: msg,
            disruption: Some(msg),
        });
        // Still being killed: already Failed, as kubelet's status function sets it.
        let s = snapshot_evicted(
            State::Terminating { deadline: 100_000 },
            Container::Running { started_at: 90_000 },
            Memory::default(),
            true,
            evicted,
        );
        assert_eq!(s["phase"], "Failed");
        assert_eq!(s["reason"], "Evicted");
        assert_eq!(s["message"], msg);
        let cond = |t: &str| {
            s["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == t))
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(cond("Ready")["status"], "False");
        assert_eq!(cond("DisruptionTarget")["status"], "True");
        assert_eq!(cond("DisruptionTarget")["reason"], "TerminationByKubelet");
        let s = snapshot_evicted(
            State::Finished(Phase::Failed),
            Container::Exited {
                code: 137,
                oom: false,
                started_at: 1,
                finished_at: 2,
            },
            Memory::default(),
            false,
            evicted,
        );
        assert_eq!(
            s["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            137
        );
        // Refused at admission: never started, no DisruptionTarget.
        let refused = "Pod was rejected: The node had condition: [MemoryPressure]. ";
        let s = snapshot_evicted(
            State::Finished(Phase::Failed),
            Container::Absent,
            Memory::default(),
            false,
            Some(Evicted {
                message: refused,
                disruption: None,
            }),
        );
        assert_eq!(s["phase"], "Failed");
        assert_eq!(s["reason"], "Evicted");
        assert_eq!(s["message"], refused);
        assert_eq!(
            s["containerStatuses"][0]["state"]["terminated"]["reason"],
            "ContainerStatusUnknown"
        );
        assert!(
            s["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().all(|c| c["type"] != "DisruptionTarget"))
        );
        let plain = snapshot_status(
            State::Running,
            Container::Running { started_at: 90_000 },
            Memory::default(),
            true,
        );
        assert!(plain.get("reason").is_none());
    }
}
