//! The Node's `status` as the agent reports it: capacity and allocatable (capacity minus the
//! reserved amounts and the hard eviction thresholds), and the conditions Ready,
//! MemoryPressure, DiskPressure and PIDPressure computed from measurements with kubelet's
//! default thresholds (memory.available<100Mi, nodefs.available<10%, nodefs.inodesFree<5%;
//! kubernetes/website node-pressure-eviction.md). Pure: measurements in, JSON out.

use crate::state::Reserved;
use serde_json::{Value, json};

pub const EVICTION_MEMORY_BYTES: u64 = 100 * 1024 * 1024;
pub const EVICTION_NODEFS_PERCENT: u64 = 10;
pub const EVICTION_INODES_PERCENT: u64 = 5;
/// PID pressure when fewer than this share of process IDs is left.
pub const EVICTION_PIDS_PERCENT: u64 = 10;
pub const MAX_PODS: u64 = 110;

/// One reading of the machine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurements {
    pub cpus: u64,
    pub memory_total: u64,
    pub memory_available: u64,
    pub fs_total: u64,
    pub fs_available: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
    pub pids_used: u64,
    pub pids_max: u64,
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

/// (capacity, allocatable) as Kubernetes quantities.
pub fn resources(m: &Measurements, r: &Reserved) -> (Value, Value) {
    let capacity = json!({
        "cpu": cpu(m.cpus * 1000),
        "memory": ki(m.memory_total),
        "ephemeral-storage": ki(m.fs_total),
        "pods": MAX_PODS.to_string(),
    });
    let fs_eviction = m.fs_total * EVICTION_NODEFS_PERCENT / 100;
    let allocatable = json!({
        "cpu": cpu((m.cpus * 1000).saturating_sub(r.cpu_millis)),
        "memory": ki(m.memory_total.saturating_sub(r.memory_bytes + EVICTION_MEMORY_BYTES)),
        "ephemeral-storage": ki(m.fs_total.saturating_sub(r.ephemeral_storage_bytes + fs_eviction)),
        "pods": MAX_PODS.to_string(),
    });
    (capacity, allocatable)
}

/// One condition: (type, status, reason, message).
pub type Condition = (&'static str, &'static str, &'static str, String);

pub fn conditions(m: &Measurements) -> Vec<Condition> {
    let mem = if m.memory_available < EVICTION_MEMORY_BYTES {
        (
            "True",
            "KubeletHasInsufficientMemory",
            format!(
                "available memory {} is below the eviction threshold {}",
                ki(m.memory_available),
                ki(EVICTION_MEMORY_BYTES)
            ),
        )
    } else {
        (
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available".into(),
        )
    };
    let disk_low = m.fs_total > 0 && m.fs_available * 100 < m.fs_total * EVICTION_NODEFS_PERCENT;
    let inodes_low =
        m.inodes_total > 0 && m.inodes_free * 100 < m.inodes_total * EVICTION_INODES_PERCENT;
    let disk = if disk_low || inodes_low {
        (
            "True",
            "KubeletHasDiskPressure",
            format!(
                "the root dir's filesystem has {} of {} free and {} of {} inodes free (thresholds {EVICTION_NODEFS_PERCENT}% and {EVICTION_INODES_PERCENT}%)",
                ki(m.fs_available),
                ki(m.fs_total),
                m.inodes_free,
                m.inodes_total
            ),
        )
    } else {
        (
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure".into(),
        )
    };
    let pids_low = m.pids_max > 0
        && (m.pids_max.saturating_sub(m.pids_used)) * 100 < m.pids_max * EVICTION_PIDS_PERCENT;
    let pid = if pids_low {
        (
            "True",
            "KubeletHasInsufficientPID",
            format!("{} of {} process IDs in use", m.pids_used, m.pids_max),
        )
    } else {
        (
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available".into(),
        )
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
        ("MemoryPressure", mem.0, mem.1, mem.2),
        ("DiskPressure", disk.0, disk.1, disk.2),
        ("PIDPressure", pid.0, pid.1, pid.2),
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

    fn healthy() -> Measurements {
        Measurements {
            cpus: 2,
            memory_total: 4 << 30,
            memory_available: 2 << 30,
            fs_total: 100 << 30,
            fs_available: 50 << 30,
            inodes_total: 1000,
            inodes_free: 500,
            pids_used: 300,
            pids_max: 32768,
            not_ready: None,
        }
    }

    fn status_of(m: &Measurements, t: &str) -> &'static str {
        conditions(m)
            .into_iter()
            .find(|c| c.0 == t)
            .map(|c| c.1)
            .expect("condition")
    }

    #[test]
    fn thresholds() {
        let ok = healthy();
        for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(status_of(&ok, t), "False", "{t}");
        }
        assert_eq!(status_of(&ok, "Ready"), "True");
        type Change = Box<dyn Fn(&mut Measurements)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "MemoryPressure",
                Box::new(|m| m.memory_available = 99 << 20),
            ),
            ("DiskPressure", Box::new(|m| m.fs_available = 9 << 30)),
            ("DiskPressure", Box::new(|m| m.inodes_free = 49)),
            ("PIDPressure", Box::new(|m| m.pids_used = 32000)),
        ];
        for (t, f) in cases {
            let mut m = healthy();
            f(&mut m);
            assert_eq!(status_of(&m, t), "True", "{t}");
        }
        let mut m = healthy();
        m.not_ready = Some("root dir not writable".into());
        assert_eq!(status_of(&m, "Ready"), "False");
    }

    #[test]
    fn allocatable_subtracts_reserved_and_eviction() {
        let r = parse_reserved("cpu=500m,memory=1Gi,ephemeral-storage=1Gi").expect("parse");
        let (cap, alloc) = resources(&healthy(), &r);
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
        assert!(parse_reserved("gpu=1").is_err());
        assert!(parse_reserved("memory=lots").is_err());
    }

    #[test]
    fn transition_time_is_kept_while_status_holds() {
        let conds = conditions(&healthy());
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
