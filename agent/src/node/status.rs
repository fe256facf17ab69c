//! The Node's `status` as the agent reports it: capacity and allocatable (capacity minus the
//! reserved amounts and the hard eviction thresholds, kubelet's hardEvictionReservation), and
//! the conditions Ready, MemoryPressure, DiskPressure and PIDPressure. The pressure conditions
//! come from the eviction manager (`pod::evict`), which checks the same thresholds it evicts
//! by, with kubelet's reasons and messages. Pure: measurements in, JSON out.

use crate::pod::evict::NodePressure;
use crate::state::Reserved;
use crate::stats::pressure::{Quantity, Signal, Threshold};
use serde_json::{Value, json};

pub const MAX_PODS: u64 = 110;
/// kubelet's default `nodefs.available` threshold (`keel-agent doctor` warns below it).
pub const EVICTION_NODEFS_PERCENT: u64 = 10;

/// One reading of the machine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurements {
    pub cpus: u64,
    pub memory_total: u64,
    pub fs_total: u64,
    /// Why the agent is not ready (root dir not writable, ...); None when it is.
    pub not_ready: Option<String>,
}

fn ki(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

fn cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Bytes a hard threshold on `signal` keeps back from `capacity` (0 when none is set).
pub fn eviction_reserve(thresholds: &[Threshold], signal: Signal, capacity: u64) -> u64 {
    thresholds
        .iter()
        .filter(|t| t.signal == signal)
        .map(|t| match t.quantity {
            Quantity::Absolute(b) => b,
            Quantity::Fraction(f) => (capacity as f64 * f) as u64,
        })
        .max()
        .unwrap_or(0)
}

/// (capacity, allocatable) as Kubernetes quantities.
pub fn resources(m: &Measurements, r: &Reserved, thresholds: &[Threshold]) -> (Value, Value) {
    let capacity = json!({
        "cpu": cpu(m.cpus * 1000),
        "memory": ki(m.memory_total),
        "ephemeral-storage": ki(m.fs_total),
        "pods": MAX_PODS.to_string(),
    });
    let mem_eviction = eviction_reserve(thresholds, Signal::MemoryAvailable, m.memory_total);
    let fs_eviction = eviction_reserve(thresholds, Signal::NodeFsAvailable, m.fs_total);
    let allocatable = json!({
        "cpu": cpu((m.cpus * 1000).saturating_sub(r.cpu_millis)),
        "memory": ki(m.memory_total.saturating_sub(r.memory_bytes + mem_eviction)),
        "ephemeral-storage": ki(m.fs_total.saturating_sub(r.ephemeral_storage_bytes + fs_eviction)),
        "pods": MAX_PODS.to_string(),
    });
    (capacity, allocatable)
}

/// One condition: (type, status, reason, message).
pub type Condition = (&'static str, &'static str, &'static str, String);

/// The four conditions, pressure ones as kubelet's setters word them.
pub fn conditions(m: &Measurements, pressure: &NodePressure) -> Vec<Condition> {
    let under = |c: &str| pressure.conditions.contains(&c);
    let pick = |c: &'static str, yes: (&'static str, &str), no: (&'static str, &str)| {
        let (status, (reason, message)) = if under(c) {
            ("True", yes)
        } else {
            ("False", no)
        };
        (c, status, reason, message.to_string())
    };
    let ready = match &m.not_ready {
        None => (
            "True",
            "KubeletReady",
            "keel-agent is posting ready status".to_string(),
        ),
        Some(why) => ("False", "KubeletNotReady", why.clone()),
    };
    vec![
        pick(
            "MemoryPressure",
            (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
        ),
        pick(
            "DiskPressure",
            ("KubeletHasDiskPressure", "kubelet has disk pressure"),
            ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ),
        pick(
            "PIDPressure",
            (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        ),
        ("Ready", ready.0, ready.1, ready.2),
    ]
}

/// Conditions as JSON, keeping `lastTransitionTime` from `previous` (the server's copy) when
/// the status did not change.
pub fn conditions_json(conds: &[Condition], previous: &Value, now: &str) -> Value {
    let prev = previous.as_array().cloned().unwrap_or_default();
    Value::Array(
        conds
            .iter()
            .map(|(t, s, reason, message)| {
                let transition = prev
                    .iter()
                    .find(|p| p["type"] == *t && p["status"] == *s)
                    .and_then(|p| p["lastTransitionTime"].as_str())
                    .unwrap_or(now)
                    .to_string();
                json!({"type": t, "status": s, "reason": reason, "message": message,
                       "lastHeartbeatTime": now, "lastTransitionTime": transition})
            })
            .collect(),
    )
}

/// The parts of a status that count as a change (not heartbeat times).
pub fn fingerprint(status: &Value) -> Value {
    let conds: Vec<Value> = status["conditions"]
        .as_array()
        .map(|a| {
            let mut v: Vec<Value> = a
                .iter()
                .map(|c| json!([c["type"], c["status"], c["reason"]]))
                .collect();
            v.sort_by_key(|c| c.to_string());
            v
        })
        .unwrap_or_default();
    json!({
        "conditions": conds,
        "addresses": status["addresses"],
        "capacity": status["capacity"],
        "allocatable": status["allocatable"],
        "nodeInfo": status["nodeInfo"],
    })
}

/// Parses `cpu=500m,memory=512Mi,ephemeral-storage=1Gi` (the `--reserved` flag).
pub fn parse_reserved(s: &str) -> Result<Reserved, String> {
    let mut r = Reserved::default();
    for item in s.split(',').filter(|i| !i.trim().is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not NAME=QUANTITY"))?;
        match k.trim() {
            "cpu" => {
                r.cpu_millis = match v.strip_suffix('m') {
                    Some(m) => m.parse().map_err(|_| format!("bad cpu quantity {v:?}"))?,
                    None => {
                        let cores: f64 =
                            v.parse().map_err(|_| format!("bad cpu quantity {v:?}"))?;
                        (cores * 1000.0) as u64
                    }
                }
            }
            "memory" => r.memory_bytes = bytes(v)?,
            "ephemeral-storage" => r.ephemeral_storage_bytes = bytes(v)?,
            other => {
                return Err(format!(
                    "unknown resource {other:?}: use cpu, memory or ephemeral-storage"
                ));
            }
        }
    }
    Ok(r)
}

fn bytes(v: &str) -> Result<u64, String> {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = v.strip_suffix(suffix) {
            return n
                .parse::<u64>()
                .map(|n| n * mult)
                .map_err(|_| format!("bad quantity {v:?}"));
        }
    }
    v.parse()
        .map_err(|_| format!("bad quantity {v:?}: use e.g. 512Mi or 1Gi"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::pressure::{default_thresholds, parse_thresholds};

    fn healthy() -> Measurements {
        Measurements {
            cpus: 2,
            memory_total: 4 << 30,
            fs_total: 100 << 30,
            not_ready: None,
        }
    }

    fn status_of(m: &Measurements, p: &NodePressure, t: &str) -> (&'static str, &'static str) {
        conditions(m, p)
            .into_iter()
            .find(|c| c.0 == t)
            .map(|c| (c.1, c.2))
            .expect("condition")
    }

    #[test]
    fn pressure_conditions_follow_the_eviction_manager() {
        let ok = healthy();
        let none = NodePressure::default();
        for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(status_of(&ok, &none, t).0, "False", "{t}");
        }
        assert_eq!(
            status_of(&ok, &none, "MemoryPressure").1,
            "KubeletHasSufficientMemory"
        );
        assert_eq!(status_of(&ok, &none, "Ready").0, "True");
        let mem = NodePressure {
            conditions: vec!["MemoryPressure", "PIDPressure"],
            taints: vec![],
        };
        assert_eq!(
            status_of(&ok, &mem, "MemoryPressure"),
            ("True", "KubeletHasInsufficientMemory")
        );
        assert_eq!(status_of(&ok, &mem, "DiskPressure").0, "False");
        assert_eq!(
            status_of(&ok, &mem, "PIDPressure"),
            ("True", "KubeletHasInsufficientPID")
        );
        let mut m = healthy();
        m.not_ready = Some("root dir not writable".into());
        assert_eq!(status_of(&m, &none, "Ready").0, "False");
    }

    #[test]
    fn allocatable_subtracts_reserved_and_eviction() {
        let r = parse_reserved("cpu=500m,memory=1Gi,ephemeral-storage=1Gi").expect("parse");
        let (cap, alloc) = resources(&healthy(), &r, &default_thresholds());
        assert_eq!(cap["cpu"], "2");
        assert_eq!(cap["pods"], "110");
        assert_eq!(alloc["cpu"], "1500m");
        assert_eq!(
            alloc["memory"],
            format!("{}Ki", ((4u64 << 30) - (1 << 30) - (100 << 20)) / 1024)
        );
        assert_eq!(
            alloc["ephemeral-storage"],
            format!("{}Ki", ((100u64 << 30) - (1 << 30) - (10 << 30)) / 1024)
        );
        // A configured threshold replaces the default one; a percentage is of capacity.
        let t = parse_thresholds("memory.available<25%").expect("parse");
        let (_, alloc) = resources(&healthy(), &Reserved::default(), &t);
        assert_eq!(alloc["memory"], format!("{}Ki", (3u64 << 30) / 1024));
        assert_eq!(
            alloc["ephemeral-storage"],
            format!("{}Ki", (100u64 << 30) / 1024)
        );
        assert!(parse_reserved("gpu=1").is_err());
        assert!(parse_reserved("memory=lots").is_err());
    }

    #[test]
    fn transition_time_is_kept_while_status_holds() {
        let conds = conditions(&healthy(), &NodePressure::default());
        let prev = json!([{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                          {"type": "MemoryPressure", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        let v = conditions_json(&conds, &prev, "2026-02-02T00:00:00Z");
        let get = |t: &str| {
            v.as_array()
                .expect("a")
                .iter()
                .find(|c| c["type"] == t)
                .expect("c")
                .clone()
        };
        assert_eq!(get("Ready")["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(
            get("MemoryPressure")["lastTransitionTime"],
            "2026-02-02T00:00:00Z"
        );
        let a = fingerprint(&json!({"conditions": v.clone()}));
        let b = fingerprint(
            &json!({"conditions": conditions_json(&conds, &prev, "2026-03-03T00:00:00Z")}),
        );
        assert_eq!(a, b, "heartbeat times are not a change");
    }
}
