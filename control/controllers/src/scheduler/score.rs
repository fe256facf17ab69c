//! Scores and host selection: NodeResourcesFit's LeastAllocated strategy on cpu and memory
//! (with the 100m / 200Mi defaults for pods that request nothing, so best-effort pods spread
//! too) plus spreading of pods with the same controlling owner across nodes (weight 2, like
//! the default PodTopologySpread constraint on kubernetes.io/hostname). Ties go to the first
//! node in name order, so placement is reproducible.

use super::cache::{NodeInfo, PodInfo};
use super::filter::{self, Reason};

pub const MAX_SCORE: i64 = 100;
const SPREAD_WEIGHT: i64 = 2;

fn least_allocated_one(requested: i64, allocatable: i64) -> i64 {
    if allocatable <= 0 || requested > allocatable {
        return 0;
    }
    (allocatable - requested) * MAX_SCORE / allocatable
}

/// LeastAllocated: the mean over cpu and memory of the free share after placing the pod.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let cpu = least_allocated_one(
        node.nonzero_requested.0 + pod.nonzero.0,
        node.allocatable.milli_cpu,
    );
    let mem = least_allocated_one(
        node.nonzero_requested.1 + pod.nonzero.1,
        node.allocatable.memory,
    );
    (cpu + mem) / 2
}

/// Spreading: a node with fewer pods of the owner scores higher (100 for the fewest).
pub fn spread(counts: &[usize]) -> Vec<i64> {
    let max = counts.iter().copied().max().unwrap_or(0) as i64;
    let min = counts.iter().copied().min().unwrap_or(0) as i64;
    counts
        .iter()
        .map(|&c| {
            if max == min {
                MAX_SCORE
            } else {
                (max - c as i64) * MAX_SCORE / (max - min)
            }
        })
        .collect()
}

/// Filters every node, scores the feasible ones and returns the best, or the FitError message.
pub fn select_host<'a>(
    pod: &PodInfo,
    nodes: impl Iterator<Item = &'a NodeInfo>,
) -> Result<String, String> {
    let mut feasible: Vec<&NodeInfo> = Vec::new();
    let mut rejected: Vec<Vec<Reason>> = Vec::new();
    let mut total = 0;
    for n in nodes.filter(|n| n.exists) {
        total += 1;
        let reasons = filter::filter(pod, n);
        if reasons.is_empty() {
            feasible.push(n);
        } else {
            rejected.push(reasons);
        }
    }
    if feasible.is_empty() {
        return Err(filter::fit_error(total, &rejected));
    }
    let counts: Vec<usize> = feasible
        .iter()
        .map(|n| {
            pod.owner_uid
                .as_ref()
                .and_then(|o| n.owner_counts.get(o).copied())
                .unwrap_or(0)
        })
        .collect();
    let spread = spread(&counts);
    let mut best: Option<(i64, &NodeInfo)> = None;
    for (n, s) in feasible.iter().zip(spread) {
        let score = least_allocated(pod, n) + SPREAD_WEIGHT * s;
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, n));
        }
    }
    Ok(best.map(|(_, n)| n.name.clone()).unwrap_or_default())
}
