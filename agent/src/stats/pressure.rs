//! Node pressure: eviction signals from a sample, hard thresholds in kubelet's
//! `--eviction-hard` syntax (defaults: memory.available<100Mi, nodefs.available<10%,
//! nodefs.inodesFree<5%, imagefs.available<15%), the node conditions and taints they imply,
//! and the order in which pods are evicted (kubelet's eviction manager: pods using more than
//! their request first, then lower priority, then larger usage; BestEffort pods request
//! nothing, so any usage puts them first). Pure functions: the agent's sync loop sets the
//! conditions and taints and evicts the first pod of `Decision::evict` with reason `Evicted`.
//! See <https://kubernetes.io/docs/concepts/scheduling-eviction/node-pressure-eviction/>.

use super::sample::Sample;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PressureError {
    #[error(
        "eviction threshold {0:?} is not `<signal><<quantity or percent>`, e.g. memory.available<100Mi"
    )]
    Syntax(String),
    #[error(
        "unknown eviction signal {0:?}: use memory.available, nodefs.available, nodefs.inodesFree, imagefs.available or pid.available"
    )]
    Signal(String),
    #[error(
        "eviction threshold quantity {0:?} is not a byte quantity (100Mi) or a percentage (10%)"
    )]
    Quantity(String),
}

/// An eviction signal (kubelet's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    MemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    PidAvailable,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::PidAvailable => "pid.available",
        }
    }

    /// The node condition this signal drives.
    pub fn condition(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "MemoryPressure",
            Signal::PidAvailable => "PIDPressure",
            _ => "DiskPressure",
        }
    }

    /// The NoSchedule taint kubelet's node lifecycle puts on a node with that condition.
    pub fn taint(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "node.kubernetes.io/memory-pressure",
            Signal::PidAvailable => "node.kubernetes.io/pid-pressure",
            _ => "node.kubernetes.io/disk-pressure",
        }
    }

    /// The resource named in the eviction message.
    fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::PidAvailable => "pids",
            Signal::NodeFsInodesFree => "inodes",
            _ => "ephemeral-storage",
        }
    }

    fn parse(s: &str) -> Result<Signal, PressureError> {
        Ok(match s {
            "memory.available" => Signal::MemoryAvailable,
            "nodefs.available" => Signal::NodeFsAvailable,
            "nodefs.inodesFree" => Signal::NodeFsInodesFree,
            "imagefs.available" => Signal::ImageFsAvailable,
            "pid.available" => Signal::PidAvailable,
            other => return Err(PressureError::Signal(other.to_string())),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quantity {
    Absolute(u64),
    /// A fraction of capacity, 0.0 - 1.0.
    Fraction(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub quantity: Quantity,
}

/// Parses kubelet's `--eviction-hard` list (`memory.available<100Mi,nodefs.available<10%`).
pub fn parse_thresholds(s: &str) -> Result<Vec<Threshold>, PressureError> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (sig, q) = p
                .split_once('<')
                .ok_or_else(|| PressureError::Syntax(p.to_string()))?;
            let signal = Signal::parse(sig.trim())?;
            let q = q.trim();
            let quantity = match q.strip_suffix('%') {
                Some(pct) => Quantity::Fraction(
                    pct.parse::<f64>()
                        .ok()
                        .filter(|v| (0.0..=100.0).contains(v))
                        .ok_or_else(|| PressureError::Quantity(q.to_string()))?
                        / 100.0,
                ),
                None => Quantity::Absolute(
                    bytes(q).ok_or_else(|| PressureError::Quantity(q.to_string()))?,
                ),
            };
            Ok(Threshold { signal, quantity })
        })
        .collect()
}

/// A Kubernetes byte quantity (`100Mi`, `1G`, `500000`).
fn bytes(q: &str) -> Option<u64> {
    let units: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().ok()?.checked_mul(*mult);
        }
    }
    q.parse().ok()
}

/// kubelet's default hard thresholds on Linux.
pub fn default_thresholds() -> Vec<Threshold> {
    parse_thresholds(
        "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%",
    )
    .unwrap_or_default()
}

/// (available, capacity) of a signal in the sample; None when the sample lacks it.
pub fn observe(signal: Signal, s: &Sample) -> Option<(u64, u64)> {
    let n = &s.node;
    match signal {
        Signal::MemoryAvailable => {
            (n.memory.total > 0).then_some((n.memory.available, n.memory.total))
        }
        Signal::NodeFsAvailable => {
            let f = n.fs.as_ref()?;
            Some((f.available_bytes?, f.capacity_bytes?))
        }
        Signal::NodeFsInodesFree => {
            let f = n.fs.as_ref()?;
            Some((f.inodes_free?, f.inodes?))
        }
        Signal::ImageFsAvailable => {
            let f = n.image_fs.as_ref()?;
            Some((f.available_bytes?, f.capacity_bytes?))
        }
        Signal::PidAvailable => {
            let max = n.max_pid?;
            Some((max.saturating_sub(n.cur_proc?), max))
        }
    }
}

/// What the scheduler-facing side of the agent needs about a pod, beyond the sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodFacts {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// Sum of the containers' memory requests (0 for BestEffort).
    pub memory_request: u64,
    /// Sum of the containers' ephemeral-storage requests.
    pub storage_request: u64,
}

/// A threshold that is crossed now.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossed {
    pub signal: Signal,
    pub available: u64,
    pub threshold: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Every crossed threshold, in the order of `thresholds`.
    pub crossed: Vec<Crossed>,
    /// Conditions to report True (MemoryPressure, DiskPressure, PIDPressure); the others False.
    pub conditions: Vec<&'static str>,
    /// NoSchedule taints the node should carry.
    pub taints: Vec<&'static str>,
    /// Pods in eviction order for the first crossed signal (kubelet evicts one per pass).
    pub evict: Vec<PodFacts>,
    /// The pod status message for an evicted pod (reason `Evicted`).
    pub message: String,
}

/// Checks `thresholds` against the sample and ranks `pods` for eviction.
pub fn decide(s: &Sample, thresholds: &[Threshold], pods: &[PodFacts]) -> Decision {
    let mut d = Decision::default();
    for t in thresholds {
        let Some((available, capacity)) = observe(t.signal, s) else {
            continue;
        };
        let threshold = match t.quantity {
            Quantity::Absolute(b) => b,
            Quantity::Fraction(f) => (capacity as f64 * f) as u64,
        };
        if available < threshold {
            d.crossed.push(Crossed {
                signal: t.signal,
                available,
                threshold,
            });
            if !d.conditions.contains(&t.signal.condition()) {
                d.conditions.push(t.signal.condition());
                d.taints.push(t.signal.taint());
            }
        }
    }
    let Some(first) = d.crossed.first().cloned() else {
        return d;
    };
    d.evict = rank(first.signal, s, pods);
    let q = |n: u64| match first.signal {
        Signal::PidAvailable | Signal::NodeFsInodesFree => n.to_string(),
        _ => binary_si(n),
    };
    d.message = format!(
        "The node was low on resource: {}. Threshold quantity: {}, available: {}. ",
        first.signal.resource(),
        q(first.threshold),
        q(first.available)
    );
    d
}

/// Bytes as a Kubernetes quantity in binary SI (`100Mi`, `19511580Ki`, `1500`), as kubelet's
/// eviction messages print them.
pub fn binary_si(bytes: u64) -> String {
    for (suffix, shift) in [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ] {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Pods in kubelet's eviction order for `signal`.
pub fn rank(signal: Signal, s: &Sample, pods: &[PodFacts]) -> Vec<PodFacts> {
    let usage = |p: &PodFacts| -> (u64, u64) {
        let Some(ps) = s.pods.iter().find(|x| x.uid == p.uid) else {
            return (0, 0);
        };
        match signal {
            Signal::MemoryAvailable => (
                ps.stats.memory.as_ref().map_or(0, |m| m.working_set),
                p.memory_request,
            ),
            Signal::PidAvailable => (ps.stats.processes.unwrap_or(0), 0),
            _ => {
                let c: u64 = ps
                    .containers
                    .iter()
                    .flat_map(|c| [&c.rootfs, &c.logs])
                    .flatten()
                    .map(|u| u.used_bytes)
                    .sum();
                let v: u64 = ps.volumes.iter().map(|(_, u)| u.used_bytes).sum();
                (c + v, p.storage_request)
            }
        }
    };
    let pid = signal == Signal::PidAvailable;
    let mut ranked: Vec<(bool, i32, i128, &PodFacts)> = pods
        .iter()
        .map(|p| {
            let (used, request) = usage(p);
            (
                !pid && used > request,
                p.priority,
                used as i128 - request as i128,
                p,
            )
        })
        .collect();
    // Exceeds its request (true first), priority (low first), usage above the request (high
    // first), as kubelet's rankMemoryPressure and rankDiskPressureFunc; PID pressure has no
    // requests, so only priority and process count apply (rankPIDPressure).
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)));
    ranked.into_iter().map(|r| r.3.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::sample::{FsUsage, Memory, NodeMemory, NodeSample, PodSample};

    fn pod(uid: &str, ws: u64) -> PodSample {
        PodSample {
            uid: uid.into(),
            stats: crate::stats::sample::CgroupSample {
                memory: Some(Memory {
                    working_set: ws,
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn facts(uid: &str, priority: i32, request: u64) -> PodFacts {
        PodFacts {
            uid: uid.into(),
            priority,
            memory_request: request,
            ..Default::default()
        }
    }

    fn sample(available_mi: u64) -> Sample {
        Sample {
            node: NodeSample {
                memory: NodeMemory {
                    total: 4096 << 20,
                    available: available_mi << 20,
                    ..Default::default()
                },
                fs: Some(FsUsage {
                    capacity_bytes: Some(1000),
                    available_bytes: Some(500),
                    inodes: Some(100),
                    inodes_free: Some(50),
                    ..Default::default()
                }),
                max_pid: Some(1000),
                cur_proc: Some(990),
                ..Default::default()
            },
            pods: vec![
                pod("guaranteed", 300 << 20),
                pod("burstable-over", 200 << 20),
                pod("burstable-under", 50 << 20),
                pod("besteffort-small", 10 << 20),
                pod("besteffort-big", 90 << 20),
            ],
            ..Default::default()
        }
    }

    fn pods() -> Vec<PodFacts> {
        vec![
            facts("guaranteed", 0, 300 << 20),
            facts("burstable-over", 0, 100 << 20),
            facts("burstable-under", 0, 100 << 20),
            facts("besteffort-small", 0, 0),
            facts("besteffort-big", 0, 0),
        ]
    }

    #[test]
    fn parses_kubelet_syntax() {
        let t = parse_thresholds("memory.available<100Mi, nodefs.available<10%").expect("parse");
        assert_eq!(t[0].quantity, Quantity::Absolute(100 << 20));
        assert_eq!(t[1].quantity, Quantity::Fraction(0.1));
        assert_eq!(default_thresholds().len(), 4);
        for (bad, want) in [
            (
                "memory.available>1",
                PressureError::Syntax("memory.available>1".into()),
            ),
            (
                "cpu.available<1",
                PressureError::Signal("cpu.available".into()),
            ),
            (
                "memory.available<lots",
                PressureError::Quantity("lots".into()),
            ),
            (
                "nodefs.available<120%",
                PressureError::Quantity("120%".into()),
            ),
        ] {
            assert_eq!(parse_thresholds(bad), Err(want), "{bad}");
        }
    }

    #[test]
    fn memory_pressure_ranks_over_request_then_usage() {
        let d = decide(&sample(50), &default_thresholds(), &pods());
        assert_eq!(d.conditions, ["MemoryPressure"]);
        assert_eq!(d.taints, ["node.kubernetes.io/memory-pressure"]);
        let order: Vec<&str> = d.evict.iter().map(|p| p.uid.as_str()).collect();
        // Over their requests, largest first (the BestEffort pods are over a zero request);
        // then the pods within their requests, largest first.
        assert_eq!(
            order,
            [
                "burstable-over",
                "besteffort-big",
                "besteffort-small",
                "guaranteed",
                "burstable-under"
            ]
        );
        assert_eq!(
            d.message,
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. "
        );
        assert_eq!(binary_si(19_979_857_920), "19511580Ki");
        assert_eq!(binary_si(1500), "1500");
        assert_eq!(binary_si(0), "0");
        assert_eq!(binary_si(3 << 30), "3Gi");
    }

    #[test]
    fn priority_comes_before_usage() {
        let mut p = pods();
        p[1].priority = 1000; // burstable-over is important
        let d = decide(&sample(50), &default_thresholds(), &p);
        assert_eq!(d.evict[0].uid, "besteffort-big");
        assert_eq!(d.evict[2].uid, "burstable-over");
    }

    #[test]
    fn no_pressure_no_evictions() {
        let d = decide(&sample(2048), &default_thresholds(), &pods());
        assert_eq!(d, Decision::default());
    }

    #[test]
    fn disk_and_pid_signals() {
        let t = parse_thresholds("nodefs.available<60%,pid.available<2%").expect("parse");
        let d = decide(&sample(2048), &t, &pods());
        assert_eq!(d.conditions, ["DiskPressure", "PIDPressure"]);
        assert_eq!(d.crossed[0].available, 500);
        assert_eq!(d.crossed[1].available, 10);
        assert_eq!(
            observe(Signal::NodeFsInodesFree, &sample(1)),
            Some((50, 100))
        );
    }
}
