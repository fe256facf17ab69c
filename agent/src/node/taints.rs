//! The node's pressure taints: `node.kubernetes.io/{memory,disk,pid}-pressure` with effect
//! NoSchedule while the matching condition is True (what the node lifecycle controller's
//! TaintNodesByCondition does in Kubernetes; here the agent keeps them beside its
//! conditions). Every other taint (control-plane, not-ready, unreachable, an admin's) is
//! kept as it is. Pure: the current list in, the wanted list out.

use serde_json::{Value, json};

/// The taint keys this module owns (with effect NoSchedule).
pub const PRESSURE_TAINTS: [&str; 3] = [
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/pid-pressure",
];

fn owned(t: &Value) -> Option<&str> {
    let key = t["key"].as_str()?;
    (t["effect"] == "NoSchedule" && PRESSURE_TAINTS.contains(&key)).then_some(key)
}

/// `existing` with exactly the pressure taints of `wanted` (keys from `PRESSURE_TAINTS`):
/// unwanted ones dropped, missing ones appended, the rest untouched and in order.
pub fn with_pressure(existing: &[Value], wanted: &[&str]) -> Vec<Value> {
    let mut out: Vec<Value> = existing
        .iter()
        .filter(|t| owned(t).is_none_or(|k| wanted.contains(&k)))
        .cloned()
        .collect();
    for key in wanted {
        if !out.iter().any(|t| owned(t) == Some(*key)) {
            out.push(json!({"key": key, "effect": "NoSchedule"}));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_and_removes_only_pressure_taints() {
        let cp = json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"});
        let unreachable = json!({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"});
        let admin = json!({"key": "node.kubernetes.io/disk-pressure", "effect": "NoExecute"});
        let existing = vec![cp.clone(), unreachable.clone(), admin.clone()];

        let t = with_pressure(&existing, &["node.kubernetes.io/memory-pressure"]);
        assert_eq!(
            t,
            vec![
                cp.clone(),
                unreachable.clone(),
                admin.clone(),
                json!({"key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule"})
            ]
        );
        // Idempotent: nothing to change on the next pass.
        assert_eq!(
            with_pressure(&t, &["node.kubernetes.io/memory-pressure"]),
            t
        );
        // Pressure over: the taint goes, the others (also the admin's NoExecute one) stay.
        assert_eq!(with_pressure(&t, &[]), existing);
        assert_eq!(with_pressure(&[], &[]), Vec::<Value>::new());
        let two = with_pressure(
            &[],
            &[
                "node.kubernetes.io/disk-pressure",
                "node.kubernetes.io/pid-pressure",
            ],
        );
        assert_eq!(two.len(), 2);
        assert_eq!(two[1]["key"], "node.kubernetes.io/pid-pressure");
    }
}
