//! The eviction manager (kubelet's pkg/kubelet/eviction): every monitoring interval it checks
//! the latest stats sample against the hard thresholds (`--eviction-hard`, kubelet's defaults
//! otherwise) with `stats::pressure::decide`, publishes the node's pressure conditions (held
//! for `--eviction-pressure-transition-period` after the last time they were observed) for the
//! Node status loop, and, while a threshold is crossed, evicts at most one pod per pass: the
//! first in kubelet's order among the pods this node runs. The pod's worker kills it with grace
//! period 0 (a hard threshold), marks it Failed with reason `Evicted` and records the event;
//! the object stays, so its owner (a ReplicaSet) replaces it. The manager waits (up to 30 s)
//! for that pod's cleanup and judges the next pass on a sample taken after it, so one pressure
//! episode does not cost a second pod for memory the first one is still giving back.
//! See <https://kubernetes.io/docs/concepts/scheduling-eviction/node-pressure-eviction/>.

use super::Ctx;
use super::worker::Msg;
use crate::stats::pressure::{self, PodFacts, PressureError, Signal, Threshold};
use crate::stats::sample::Sample;
use k8s_openapi::api::core::v1::Pod;
use keel_podspec::quantity::{self, Side};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How long the manager waits for an evicted pod's cleanup before its next pass (kubelet's
/// podCleanupTimeout).
pub const POD_CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
/// kubelet's `evictionMonitoringPeriod`.
pub const DEFAULT_MONITORING: Duration = Duration::from_secs(10);
/// kubelet's default `--eviction-pressure-transition-period`.
pub const DEFAULT_TRANSITION: Duration = Duration::from_secs(300);
/// kubelet's `scheduling.SystemCriticalPriority`: pods at or above it are never evicted.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;
/// The annotation of a mirror pod (a static pod's API copy), never evicted by kubelet.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvictError {
    #[error("--eviction-hard: {0}")]
    Thresholds(#[from] PressureError),
    #[error("--{flag}: {value:?} is not a duration such as 10s, 500ms, 5m or 1m30s")]
    Duration { flag: &'static str, value: String },
}

/// The eviction manager's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionConfig {
    pub thresholds: Vec<Threshold>,
    /// How often thresholds are checked (and at most one pod evicted).
    pub monitoring: Duration,
    /// How long a pressure condition stays True after it was last observed.
    pub transition: Duration,
}

impl Default for EvictionConfig {
    fn default() -> Self {
        EvictionConfig {
            thresholds: pressure::default_thresholds(),
            monitoring: DEFAULT_MONITORING,
            transition: DEFAULT_TRANSITION,
        }
    }
}

impl EvictionConfig {
    /// From the flags: `hard` replaces kubelet's defaults entirely when given (as kubelet's
    /// `--eviction-hard` did before defaults merging); the durations in Go syntax.
    pub fn from_flags(
        hard: Option<&str>,
        monitoring: Option<&str>,
        transition: Option<&str>,
    ) -> Result<EvictionConfig, EvictError> {
        let mut c = EvictionConfig::default();
        if let Some(h) = hard {
            c.thresholds = pressure::parse_thresholds(h)?;
        }
        if let Some(m) = monitoring {
            c.monitoring = duration("eviction-monitoring-interval", m)?;
            if c.monitoring.is_zero() {
                return Err(EvictError::Duration {
                    flag: "eviction-monitoring-interval",
                    value: m.into(),
                });
            }
        }
        if let Some(t) = transition {
            c.transition = duration("eviction-pressure-transition-period", t)?;
        }
        Ok(c)
    }
}

/// A Go duration (`300ms`, `10s`, `5m`, `1h`, `1m30s`).
pub fn duration(flag: &'static str, s: &str) -> Result<Duration, EvictError> {
    let bad = || EvictError::Duration {
        flag,
        value: s.to_string(),
    };
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = [("ms", 2), ("s", 1), ("m", 1), ("h", 1)]
            .into_iter()
            .find(|(u, _)| rest.starts_with(u))
            .ok_or_else(bad)?;
        rest = &rest[len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            _ => Duration::from_secs(n.saturating_mul(3600)),
        };
        total = total.saturating_add(d);
    }
    Ok(total)
}

/// What the Node status reports: the pressure conditions that are True and their taints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodePressure {
    /// MemoryPressure, DiskPressure, PIDPressure: those True now.
    pub conditions: Vec<&'static str>,
    /// The NoSchedule taints for those conditions.
    pub taints: Vec<&'static str>,
}

/// One pod this node runs that may be evicted, and how to reach its worker.
struct LivePod {
    pod: Arc<Pod>,
    tx: mpsc::Sender<Msg>,
}

/// The pods running here, kept current by their workers (a pod leaves when it is deleted,
/// finished or evicted).
#[derive(Default)]
pub struct Live {
    pods: Mutex<BTreeMap<String, LivePod>>,
}

impl Live {
    pub fn set(&self, uid: &str, pod: Arc<Pod>, tx: mpsc::Sender<Msg>) {
        if let Ok(mut m) = self.pods.lock() {
            m.insert(uid.to_string(), LivePod { pod, tx });
        }
    }

    pub fn remove(&self, uid: &str) {
        if let Ok(mut m) = self.pods.lock() {
            m.remove(uid);
        }
    }

    fn snapshot(&self) -> Vec<(Arc<Pod>, mpsc::Sender<Msg>)> {
        self.pods
            .lock()
            .map(|m| m.values().map(|p| (p.pod.clone(), p.tx.clone())).collect())
            .unwrap_or_default()
    }
}

/// The eviction-relevant facts of a pod; None for pods kubelet never evicts (mirror pods and
/// critical pods, `IsCriticalPod`).
pub fn facts(pod: &Pod) -> Option<PodFacts> {
    let spec = pod.spec.as_ref()?;
    let priority = spec.priority.unwrap_or(0);
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION));
    if mirror || priority >= SYSTEM_CRITICAL_PRIORITY {
        return None;
    }
    let request = |resource: &str| -> u64 {
        spec.containers
            .iter()
            .filter_map(|c| quantity::bytes(c, Side::Requests, resource).ok().flatten())
            .map(|b| b.max(0) as u64)
            .sum()
    };
    Some(PodFacts {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        priority,
        memory_request: request("memory"),
        storage_request: request("ephemeral-storage"),
    })
}

/// kubelet's eviction admission: on a node under pressure a new pod is refused (reason
/// `Evicted`), except critical pods and, when MemoryPressure is the only condition, pods that
/// are not BestEffort or that tolerate the memory-pressure taint. Err is kubelet's message.
pub fn admit(pod: &Pod, conditions: &[&str]) -> Result<(), String> {
    if conditions.is_empty() || facts(pod).is_none() {
        return Ok(());
    }
    if conditions == ["MemoryPressure"] {
        let best_effort = keel_podspec::qos::class(pod) == keel_podspec::qos::QosClass::BestEffort;
        let tolerates = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .is_some_and(|ts| {
                ts.iter().any(|t| {
                    let key = t.key.as_deref().unwrap_or("");
                    let key_ok = match t.operator.as_deref() {
                        Some("Exists") => key.is_empty() || key == Signal::MemoryAvailable.taint(),
                        _ => {
                            key == Signal::MemoryAvailable.taint()
                                && t.value.as_deref().unwrap_or("").is_empty()
                        }
                    };
                    let effect = t.effect.as_deref().unwrap_or("");
                    key_ok && (effect.is_empty() || effect == "NoSchedule")
                })
            });
        if !best_effort || tolerates {
            return Ok(());
        }
    }
    // Go's %v of a slice: `[MemoryPressure DiskPressure]`.
    Err(format!(
        "The node had condition: [{}]. ",
        conditions.join(" ")
    ))
}

/// kubelet's per-container part of a memory eviction message: each container using more than
/// its request, e.g. `Container web was using 12Ki, request is 0, has larger consumption of
/// memory. `
pub fn container_message(pod: &Pod, sample: &Sample, signal: Signal) -> String {
    if signal != Signal::MemoryAvailable {
        return String::new();
    }
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let Some(ps) = sample.pods.iter().find(|p| p.uid == uid) else {
        return String::new();
    };
    let mut out = String::new();
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        let Some(used) = ps
            .containers
            .iter()
            .find(|x| x.name == c.name)
            .and_then(|x| x.stats.memory.as_ref())
            .map(|m| m.working_set)
        else {
            continue;
        };
        let request = quantity::get(c, Side::Requests, "memory");
        let request_bytes = quantity::bytes(c, Side::Requests, "memory")
            .ok()
            .flatten()
            .unwrap_or(0)
            .max(0) as u64;
        if used > request_bytes {
            out += &format!(
                "Container {} was using {}, request is {}, has larger consumption of memory. ",
                c.name,
                pressure::binary_si(used),
                request.map_or("0".to_string(), |q| q.0.clone())
            );
        }
    }
    out
}

/// Thresholds that apply on this node: the imagefs signal only when images sit on their own
/// filesystem (kubelet's HasDedicatedImageFs; otherwise nodefs covers the same disk, and a
/// second, stricter threshold on it would report DiskPressure at 85% use).
pub fn effective(thresholds: &[Threshold], dedicated_image_fs: bool) -> Vec<Threshold> {
    thresholds
        .iter()
        .filter(|t| dedicated_image_fs || t.signal != Signal::ImageFsAvailable)
        .cloned()
        .collect()
}

/// The conditions to report: those observed now, and those observed within `period` before
/// `now` (kubelet's nodeConditionsObservedSince); `last` remembers when each was last seen.
pub fn hold(
    observed: &[&'static str],
    last: &mut BTreeMap<&'static str, Instant>,
    now: Instant,
    period: Duration,
) -> NodePressure {
    for c in observed {
        last.insert(c, now);
    }
    last.retain(|_, t| now.duration_since(*t) < period || *t == now);
    let mut p = NodePressure::default();
    for (condition, taint) in [
        ("MemoryPressure", Signal::MemoryAvailable.taint()),
        ("DiskPressure", Signal::NodeFsAvailable.taint()),
        ("PIDPressure", Signal::PidAvailable.taint()),
    ] {
        if last.contains_key(condition) {
            p.conditions.push(condition);
            p.taints.push(taint);
        }
    }
    p
}

fn dedicated_image_fs(ctx: &Ctx) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    match (dev(&ctx.layout.root), dev(&ctx.layout.images())) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

/// Runs until `stop` turns true, publishing the node's pressure on `publish`.
pub async fn run(
    ctx: Arc<Ctx>,
    config: EvictionConfig,
    publish: watch::Sender<NodePressure>,
    mut stop: watch::Receiver<bool>,
) {
    let thresholds = effective(&config.thresholds, dedicated_image_fs(&ctx));
    let mut last_seen = BTreeMap::new();
    let mut crossed_before = false;
    // After an eviction, the next decision needs a sample taken after the pod was cleaned up
    // (the housekeeping one may still count the evicted pod's memory).
    let mut fresh_after: Option<chrono::DateTime<chrono::Utc>> = None;
    let mut tick = tokio::time::interval(config.monitoring);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
                continue;
            }
        }
        let mut sample = ctx.stats.latest_or_collect().await;
        if fresh_after.is_some_and(|t| sample.time <= t) {
            let stats = ctx.stats.clone();
            if let Ok(s) = tokio::task::spawn_blocking(move || stats.housekeep()).await {
                sample = s;
            }
        }
        fresh_after = None;
        let live = ctx.live.snapshot();
        let candidates: Vec<PodFacts> = live.iter().filter_map(|(p, _)| facts(p)).collect();
        let decision = pressure::decide(&sample, &thresholds, &candidates);
        let node = hold(
            &decision.conditions,
            &mut last_seen,
            Instant::now(),
            config.transition,
        );
        publish.send_if_modified(|p| {
            let changed = *p != node;
            if changed {
                tracing::info!(conditions = ?node.conditions, "node pressure changed");
                *p = node.clone();
            }
            changed
        });
        let Some(first) = decision.crossed.first() else {
            if crossed_before {
                tracing::info!("no eviction threshold is crossed any more");
            }
            crossed_before = false;
            continue;
        };
        if !crossed_before {
            tracing::warn!(
                signal = first.signal.name(),
                available = first.available,
                threshold = first.threshold,
                "eviction threshold crossed"
            );
        }
        crossed_before = true;
        let Some(victim) = decision.evict.first() else {
            tracing::warn!(
                signal = first.signal.name(),
                "eviction threshold crossed but no pod can be evicted"
            );
            continue;
        };
        let Some((pod, tx)) = live
            .iter()
            .find(|(p, _)| p.metadata.uid.as_deref() == Some(victim.uid.as_str()))
        else {
            continue;
        };
        tracing::warn!(pod = %format!("{}/{}", victim.namespace, victim.name), signal = first.signal.name(), available = first.available, threshold = first.threshold, "evicting pod");
        let (done, cleaned) = tokio::sync::oneshot::channel();
        let msg = Msg::Evict {
            message: decision.message.clone() + &container_message(pod, &sample, first.signal),
            grace_ms: 0,
            done,
        };
        if tx.send(msg).await.is_ok() {
            ctx.live.remove(&victim.uid);
            ctx.stats.registry().evictions.inc_with(first.signal.name());
            // kubelet's waitForPodsCleanup: one eviction at a time, judged on fresh figures.
            tokio::select! {
                r = tokio::time::timeout(POD_CLEANUP_TIMEOUT, cleaned) => {
                    if r.is_err() {
                        tracing::warn!(pod = %format!("{}/{}", victim.namespace, victim.name), "the evicted pod was not cleaned up within 30s");
                    }
                }
                _ = stop.changed() => return,
            }
            fresh_after = Some(chrono::Utc::now());
        } else {
            tracing::debug!(pod = %format!("{}/{}", victim.namespace, victim.name), "the pod's worker is gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(priority: Option<i32>, memory: Option<&str>, annotations: serde_json::Value) -> Pod {
        let mut resources = json!({});
        if let Some(m) = memory {
            resources = json!({"requests": {"memory": m}});
        }
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1", "annotations": annotations},
            "spec": {"priority": priority, "containers": [
                {"name": "a", "image": "x", "resources": resources},
                {"name": "b", "image": "x", "resources": resources},
            ]},
        }))
        .expect("pod")
    }

    #[test]
    fn facts_sum_requests_and_skip_critical_and_mirror_pods() {
        let f = facts(&pod(None, Some("64Mi"), json!({}))).expect("evictable");
        assert_eq!(f.memory_request, 128 << 20);
        assert_eq!(f.priority, 0);
        assert_eq!(
            facts(&pod(Some(5), None, json!({})))
                .expect("best effort")
                .memory_request,
            0
        );
        assert_eq!(
            facts(&pod(Some(SYSTEM_CRITICAL_PRIORITY), None, json!({}))),
            None
        );
        assert_eq!(
            facts(&pod(None, None, json!({MIRROR_ANNOTATION: "abc"}))),
            None
        );
    }

    #[test]
    fn victim_is_the_best_effort_pod_and_never_a_critical_one() {
        use crate::stats::sample::{CgroupSample, Memory, NodeMemory, NodeSample, PodSample};
        let named = |mut p: Pod, uid: &str| {
            p.metadata.uid = Some(uid.into());
            p
        };
        let running = [
            named(pod(None, Some("64Mi"), json!({})), "guaranteed"),
            named(pod(None, None, json!({})), "besteffort"),
            named(
                pod(Some(SYSTEM_CRITICAL_PRIORITY), None, json!({})),
                "critical",
            ),
        ];
        let usage = |uid: &str, ws: u64| PodSample {
            uid: uid.into(),
            stats: CgroupSample {
                memory: Some(Memory {
                    working_set: ws,
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let sample = Sample {
            node: NodeSample {
                memory: NodeMemory {
                    total: 1 << 30,
                    available: 50 << 20,
                    ..Default::default()
                },
                ..Default::default()
            },
            // The critical pod uses the most and the Guaranteed pod more than the BestEffort.
            pods: vec![
                usage("guaranteed", 60 << 20),
                usage("besteffort", 1 << 20),
                usage("critical", 500 << 20),
            ],
            ..Default::default()
        };
        let candidates: Vec<PodFacts> = running.iter().filter_map(facts).collect();
        let d = pressure::decide(&sample, &pressure::default_thresholds(), &candidates);
        let order: Vec<&str> = d.evict.iter().map(|p| p.uid.as_str()).collect();
        assert_eq!(order, ["besteffort", "guaranteed"]);
        assert_eq!(d.conditions, ["MemoryPressure"]);
    }

    #[test]
    fn admission_under_pressure() {
        let be = pod(None, None, json!({}));
        let burstable = pod(None, Some("64Mi"), json!({}));
        let mut tolerating = be.clone();
        if let Some(s) = tolerating.spec.as_mut() {
            s.tolerations = Some(vec![
                serde_json::from_value(json!({"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"}))
                    .expect("toleration"),
            ]);
        }
        let critical = pod(Some(SYSTEM_CRITICAL_PRIORITY), None, json!({}));
        assert_eq!(admit(&be, &[]), Ok(()));
        assert_eq!(
            admit(&be, &["MemoryPressure"]),
            Err("The node had condition: [MemoryPressure]. ".into())
        );
        assert_eq!(admit(&burstable, &["MemoryPressure"]), Ok(()));
        assert_eq!(admit(&tolerating, &["MemoryPressure"]), Ok(()));
        assert_eq!(
            admit(&critical, &["MemoryPressure", "DiskPressure"]),
            Ok(())
        );
        // Disk (or PID) pressure refuses every pod that is not critical.
        assert_eq!(
            admit(&burstable, &["MemoryPressure", "DiskPressure"]),
            Err("The node had condition: [MemoryPressure DiskPressure]. ".into())
        );
        assert!(admit(&tolerating, &["DiskPressure"]).is_err());
    }

    #[test]
    fn victim_message_names_containers_over_their_request() {
        use crate::stats::sample::{CgroupSample, ContainerSample, Memory, PodSample};
        let p = pod(None, Some("64Mi"), json!({}));
        let container = |name: &str, ws: u64| ContainerSample {
            name: name.into(),
            stats: CgroupSample {
                memory: Some(Memory {
                    working_set: ws,
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let sample = Sample {
            pods: vec![PodSample {
                uid: "u1".into(),
                containers: vec![container("a", 100 << 20), container("b", 1 << 20)],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            container_message(&p, &sample, Signal::MemoryAvailable),
            "Container a was using 100Mi, request is 64Mi, has larger consumption of memory. "
        );
        assert_eq!(container_message(&p, &sample, Signal::PidAvailable), "");
        let be = pod(None, None, json!({}));
        assert!(
            container_message(&be, &sample, Signal::MemoryAvailable)
                .contains("Container b was using 1Mi, request is 0,")
        );
    }

    #[test]
    fn flags_parse_with_one_clear_error() {
        let c = EvictionConfig::from_flags(Some("memory.available<1Gi"), Some("2s"), Some("1m30s"))
            .expect("flags");
        assert_eq!(c.thresholds.len(), 1);
        assert_eq!(c.monitoring, Duration::from_secs(2));
        assert_eq!(c.transition, Duration::from_secs(90));
        assert_eq!(
            EvictionConfig::from_flags(None, None, None).expect("defaults"),
            EvictionConfig::default()
        );
        let e = EvictionConfig::from_flags(Some("memory.available>1"), None, None)
            .expect_err("bad threshold");
        assert!(e.to_string().starts_with("--eviction-hard: "), "{e}");
        for bad in ["", "10", "5x", "s", "0s0"] {
            let e = EvictionConfig::from_flags(None, None, Some(bad)).expect_err(bad);
            assert!(
                e.to_string()
                    .starts_with("--eviction-pressure-transition-period: "),
                "{e}"
            );
        }
        assert!(EvictionConfig::from_flags(None, Some("0"), None).is_err());
        assert_eq!(
            duration("x", "300ms").expect("ms"),
            Duration::from_millis(300)
        );
        assert_eq!(duration("x", "0").expect("zero"), Duration::ZERO);
    }

    #[test]
    fn imagefs_threshold_only_on_a_dedicated_filesystem() {
        let d = pressure::default_thresholds();
        assert_eq!(effective(&d, true).len(), 4);
        let shared = effective(&d, false);
        assert_eq!(shared.len(), 3);
        assert!(shared.iter().all(|t| t.signal != Signal::ImageFsAvailable));
    }

    #[test]
    fn conditions_are_held_for_the_transition_period() {
        let mut last = BTreeMap::new();
        let t0 = Instant::now();
        let period = Duration::from_secs(30);
        let p = hold(&["DiskPressure", "MemoryPressure"], &mut last, t0, period);
        assert_eq!(p.conditions, ["MemoryPressure", "DiskPressure"]);
        assert_eq!(
            p.taints,
            [
                "node.kubernetes.io/memory-pressure",
                "node.kubernetes.io/disk-pressure"
            ]
        );
        let p = hold(&[], &mut last, t0 + Duration::from_secs(10), period);
        assert_eq!(p.conditions, ["MemoryPressure", "DiskPressure"], "held");
        let p = hold(
            &["PIDPressure"],
            &mut last,
            t0 + Duration::from_secs(31),
            period,
        );
        assert_eq!(p.conditions, ["PIDPressure"]);
        assert_eq!(p.taints, ["node.kubernetes.io/pid-pressure"]);
        // A zero period reports exactly what is observed.
        let mut last = BTreeMap::new();
        assert_eq!(
            hold(&["MemoryPressure"], &mut last, t0, Duration::ZERO).conditions,
            ["MemoryPressure"]
        );
        assert_eq!(
            hold(
                &[],
                &mut last,
                t0 + Duration::from_millis(1),
                Duration::ZERO
            ),
            NodePressure::default()
        );
    }
}
