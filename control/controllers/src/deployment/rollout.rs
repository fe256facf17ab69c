//! The pure arithmetic of a rollout (pkg/controller/deployment/util and rolling.go): resolving
//! maxSurge/maxUnavailable, how far the new ReplicaSet may grow, how far old ones may shrink,
//! and the pod-template-hash.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// An int or a percentage of `total` (rounded up or down), like intstr.GetScaledValueFromIntOrPercent.
pub fn scaled(
    v: Option<&IntOrString>,
    default: &str,
    total: i32,
    round_up: bool,
) -> Result<i32, String> {
    let s = match v {
        Some(IntOrString::Int(i)) => return Ok(*i),
        Some(IntOrString::String(s)) => s.as_str(),
        None => default,
    };
    let Some(pct) = s.strip_suffix('%') else {
        return s.parse::<i32>().map_err(|_| {
            format!("invalid value {s:?}: use an integer or a percentage like \"25%\"")
        });
    };
    let p: i64 = pct
        .parse()
        .map_err(|_| format!("invalid percentage {s:?}"))?;
    let prod = p * i64::from(total);
    Ok(if round_up {
        (prod + 99) / 100
    } else {
        prod / 100
    } as i32)
}

/// (maxSurge, maxUnavailable) for `replicas` (ResolveFenceposts: both zero means one unavailable).
pub fn fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    replicas: i32,
) -> Result<(i32, i32), String> {
    let s = scaled(surge, "25%", replicas, true)?;
    let u = scaled(unavailable, "25%", replicas, false)?;
    if s == 0 && u == 0 {
        return Ok((0, 1));
    }
    Ok((s, u))
}

/// The size the new ReplicaSet may grow to (NewRSNewReplicas for RollingUpdate).
pub fn new_rs_replicas(replicas: i32, max_surge: i32, all_spec_sum: i32, new_spec: i32) -> i32 {
    let max_total = replicas + max_surge;
    if all_spec_sum >= max_total {
        return new_spec;
    }
    let up = (max_total - all_spec_sum).min(replicas - new_spec).max(0);
    new_spec + up
}

/// The spec replicas and available pods of one ReplicaSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub spec: i32,
    pub available: i32,
}

/// Shrinks old ReplicaSets (oldest first, in `olds` order) as far as availability allows
/// (reconcileOldReplicaSets: first unhealthy replicas, then available ones down to
/// `replicas - maxUnavailable`). Returns true if any changed.
pub fn scale_down_olds(
    olds: &mut [Counts],
    new: Counts,
    replicas: i32,
    max_unavailable: i32,
) -> bool {
    let old_sum: i32 = olds.iter().map(|c| c.spec).sum();
    if old_sum == 0 {
        return false;
    }
    let all = old_sum + new.spec;
    let min_available = replicas - max_unavailable;
    let new_unavailable = new.spec - new.available;
    let max_scaled_down = all - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return false;
    }
    let mut changed = false;
    // Unhealthy replicas first: they cost no availability.
    let mut cleaned = 0;
    for rs in olds.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        if rs.spec == 0 || rs.spec == rs.available {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(rs.spec - rs.available);
        rs.spec -= down;
        cleaned += down;
        changed |= down > 0;
    }
    let available: i32 = olds.iter().map(|c| c.available).sum::<i32>() + new.available;
    if available <= min_available {
        return changed;
    }
    let budget = available - min_available;
    let mut done = 0;
    for rs in olds.iter_mut() {
        if done >= budget {
            break;
        }
        if rs.spec == 0 {
            continue;
        }
        let down = rs.spec.min(budget - done);
        rs.spec -= down;
        done += down;
        changed |= down > 0;
    }
    changed
}

/// FNV-1a 32-bit.
fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The alphabet of k8s.io/apimachinery/pkg/util/rand SafeEncodeString (no vowels, no 0/1/3).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pod-template-hash of a serialized template and collision count (ComputeHash).
pub fn template_hash(template_json: &str, collision_count: Option<i32>) -> String {
    let mut data = template_json.as_bytes().to_vec();
    if let Some(c) = collision_count {
        data.extend_from_slice(c.to_string().as_bytes());
    }
    fnv32a(&data)
        .to_string()
        .bytes()
        .map(|b| SAFE[usize::from(b) % SAFE.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> IntOrString {
        IntOrString::String(v.into())
    }

    type FencepostCase = (
        Option<IntOrString>,
        Option<IntOrString>,
        i32,
        Result<(i32, i32), ()>,
    );
    type ShrinkCase = (Vec<Counts>, Counts, i32, i32, Vec<i32>, bool);

    #[test]
    fn resolves_fenceposts() {
        let cases: Vec<FencepostCase> = vec![
            (None, None, 4, Ok((1, 1))),
            (None, None, 10, Ok((3, 2))),
            (None, None, 1, Ok((1, 0))),
            (
                Some(IntOrString::Int(0)),
                Some(IntOrString::Int(0)),
                3,
                Ok((0, 1)),
            ),
            (Some(s("50%")), Some(IntOrString::Int(0)), 5, Ok((3, 0))),
            (Some(IntOrString::Int(2)), Some(s("40%")), 5, Ok((2, 2))),
            (Some(s("x%")), None, 5, Err(())),
            (Some(s("abc")), None, 5, Err(())),
        ];
        for (surge, unavail, replicas, want) in cases {
            let got = fenceposts(surge.as_ref(), unavail.as_ref(), replicas).map_err(|_| ());
            assert_eq!(got, want, "{surge:?} {unavail:?} {replicas}");
        }
    }

    #[test]
    fn new_replica_set_growth() {
        // (replicas, surge, sum of all specs, new spec) -> new size
        let cases = [
            (3, 1, 3, 0, 1),
            (3, 1, 4, 1, 1),
            (3, 1, 3, 1, 2),
            (3, 0, 3, 0, 0),
            (3, 3, 3, 0, 3),
            (5, 2, 2, 2, 5),
            (5, 2, 9, 5, 5),
        ];
        for (replicas, surge, all, new, want) in cases {
            assert_eq!(
                new_rs_replicas(replicas, surge, all, new),
                want,
                "{replicas} {surge} {all} {new}"
            );
        }
    }

    #[test]
    fn old_replica_sets_shrink_within_availability() {
        let c = |spec, available| Counts { spec, available };
        // (olds, new, replicas, maxUnavailable) -> olds after, changed
        let cases: Vec<ShrinkCase> = vec![
            // 3 replicas, surge 1 / unavailable 0: new has 1 not yet available: nothing to do.
            (vec![c(3, 3)], c(1, 0), 3, 0, vec![3], false),
            // new pod became available: one old may go.
            (vec![c(3, 3)], c(1, 1), 3, 0, vec![2], true),
            // maxUnavailable 1 lets one go before the new one is ready.
            (vec![c(3, 3)], c(1, 0), 3, 1, vec![2], true),
            // unhealthy old replicas are removed first, without availability cost.
            (vec![c(3, 1)], c(1, 1), 3, 0, vec![2], true),
            // oldest first across several old sets.
            (vec![c(1, 1), c(2, 2)], c(3, 3), 3, 0, vec![0, 0], true),
            (vec![c(0, 0)], c(3, 3), 3, 0, vec![0], false),
        ];
        for (mut olds, new, replicas, unavail, want, changed) in cases {
            let before = olds.clone();
            let got = scale_down_olds(&mut olds, new, replicas, unavail);
            let specs: Vec<i32> = olds.iter().map(|o| o.spec).collect();
            assert_eq!(
                (specs, got),
                (want, changed),
                "{before:?} {new:?} {replicas} {unavail}"
            );
        }
    }

    #[test]
    fn hash_is_stable_and_safe() {
        let a = template_hash("{\"spec\":1}", None);
        assert_eq!(a, template_hash("{\"spec\":1}", None));
        assert_ne!(a, template_hash("{\"spec\":2}", None));
        assert_ne!(a, template_hash("{\"spec\":1}", Some(1)));
        assert!(a.bytes().all(|b| SAFE.contains(&b)) && !a.is_empty());
    }
}
