//! The filter plugins, in the order of the default scheduler profile (NodeUnschedulable,
//! TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit, InterPodAffinity), each a pure
//! function of a pod and a node, and the FitError message built from their reasons
//! (k8s.io/kubernetes/pkg/scheduler/framework: `0/3 nodes are available: 1 Insufficient cpu, ...`).

use super::cache::{NodeInfo, PodInfo};
use crate::selector;
use k8s_openapi::api::core::v1::{Taint, Toleration};
use std::collections::BTreeMap;
use std::fmt;

pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";

/// Why a node cannot take a pod (the Display form is the scheduler's wording).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Unschedulable,
    UntoleratedTaint { key: String, value: String },
    NodeAffinity,
    NodePorts,
    Insufficient(&'static str),
    TooManyPods,
    AntiAffinity,
    ExistingAntiAffinity,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unschedulable => write!(f, "node(s) were unschedulable"),
            Reason::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Reason::NodeAffinity => write!(f, "node(s) didn't match Pod's node affinity/selector"),
            Reason::NodePorts => {
                write!(
                    f,
                    "node(s) didn't have free ports for the requested pod ports"
                )
            }
            Reason::Insufficient(r) => write!(f, "Insufficient {r}"),
            Reason::TooManyPods => write!(f, "Too many pods"),
            Reason::AntiAffinity => write!(f, "node(s) didn't match pod anti-affinity rules"),
            Reason::ExistingAntiAffinity => {
                write!(
                    f,
                    "node(s) didn't satisfy existing pods anti-affinity rules"
                )
            }
        }
    }
}

/// Does `t` tolerate `taint` (core/v1 Toleration.ToleratesTaint)?
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty())
        && e != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        "Equal" | "" => {
            key == taint.key
                && t.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// The first NoSchedule/NoExecute taint no toleration covers.
pub fn untolerated<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints.iter().find(|taint| {
        (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
            && !tolerations.iter().any(|t| tolerates(t, taint))
    })
}

fn node_unschedulable(pod: &PodInfo, node: &NodeInfo) -> Option<Reason> {
    let taint = Taint {
        key: TAINT_UNSCHEDULABLE.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    (node.unschedulable && !pod.tolerations.iter().any(|t| tolerates(t, &taint)))
        .then_some(Reason::Unschedulable)
}

pub(crate) fn taint_toleration(pod: &PodInfo, node: &NodeInfo) -> Option<Reason> {
    let mut taints = node.taints.clone();
    // The node lifecycle controller taints a node that is not Ready; do the same for nodes
    // whose taint has not been written yet.
    if !node.ready && !taints.iter().any(|t| t.key == TAINT_NOT_READY) {
        taints.push(Taint {
            key: TAINT_NOT_READY.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
    }
    untolerated(&taints, &pod.tolerations).map(|t| Reason::UntoleratedTaint {
        key: t.key.clone(),
        value: t.value.clone().unwrap_or_default(),
    })
}

pub(crate) fn node_affinity(pod: &PodInfo, node: &NodeInfo) -> Option<Reason> {
    let selector_ok = pod
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    let terms_ok = pod.required_terms.as_ref().is_none_or(|terms| {
        terms
            .iter()
            .any(|t| selector::term_matches(t, &node.labels, &node.name))
    });
    (!(selector_ok && terms_ok)).then_some(Reason::NodeAffinity)
}

fn ports_conflict(a: &(String, String, i32), b: &(String, String, i32)) -> bool {
    let wild = |ip: &str| ip == "0.0.0.0" || ip.is_empty() || ip == "::";
    a.0 == b.0 && a.2 == b.2 && (a.1 == b.1 || wild(&a.1) || wild(&b.1))
}

fn node_ports(pod: &PodInfo, node: &NodeInfo) -> Option<Reason> {
    let conflict = pod.host_ports.iter().any(|want| {
        node.pods
            .values()
            .flat_map(|p| p.host_ports.iter())
            .any(|used| ports_conflict(want, used))
    });
    conflict.then_some(Reason::NodePorts)
}

fn resources_fit(pod: &PodInfo, node: &NodeInfo) -> Vec<Reason> {
    let (a, u, r) = (&node.allocatable, &node.requested, &pod.requests);
    let mut out = Vec::new();
    if u.pods + 1 > a.pods {
        out.push(Reason::TooManyPods);
    }
    if r.milli_cpu > 0 && r.milli_cpu > a.milli_cpu - u.milli_cpu {
        out.push(Reason::Insufficient("cpu"));
    }
    if r.memory > 0 && r.memory > a.memory - u.memory {
        out.push(Reason::Insufficient("memory"));
    }
    if r.ephemeral_storage > 0 && r.ephemeral_storage > a.ephemeral_storage - u.ephemeral_storage {
        out.push(Reason::Insufficient("ephemeral-storage"));
    }
    out
}

fn inter_pod_anti_affinity(pod: &PodInfo, node: &NodeInfo) -> Option<Reason> {
    // The incoming pod's terms against pods on this node (topology kubernetes.io/hostname).
    let own = pod.anti_affinity.iter().any(|term| {
        node.pods.values().any(|other| {
            other.key != pod.key
                && term.namespaces.contains(&other.namespace)
                && selector::matches(&term.selector, &other.labels)
        })
    });
    if own {
        return Some(Reason::AntiAffinity);
    }
    // Existing pods' terms against the incoming pod.
    let existing = node.pods.values().any(|other| {
        other.anti_affinity.iter().any(|term| {
            term.namespaces.contains(&pod.namespace)
                && selector::matches(&term.selector, &pod.labels)
        })
    });
    existing.then_some(Reason::ExistingAntiAffinity)
}

/// Runs the filters in order and returns the reasons of the first that rejects the node
/// (empty when the node fits).
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Vec<Reason> {
    if let Some(r) = node_unschedulable(pod, node) {
        return vec![r];
    }
    if let Some(r) = taint_toleration(pod, node) {
        return vec![r];
    }
    if let Some(r) = node_affinity(pod, node) {
        return vec![r];
    }
    if let Some(r) = node_ports(pod, node) {
        return vec![r];
    }
    let fit = resources_fit(pod, node);
    if !fit.is_empty() {
        return fit;
    }
    inter_pod_anti_affinity(pod, node).into_iter().collect()
}

/// The FitError message: `0/<n> nodes are available: <count> <reason>, ... .`, reasons as
/// "count reason" strings sorted like the scheduler sorts them.
pub fn fit_error(nodes: usize, rejected: &[Vec<Reason>]) -> String {
    if nodes == 0 {
        return "no nodes available to schedule pods".to_string();
    }
    let mut hist: BTreeMap<String, usize> = BTreeMap::new();
    for reasons in rejected {
        for r in reasons {
            *hist.entry(r.to_string()).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = hist.into_iter().map(|(r, c)| format!("{c} {r}")).collect();
    parts.sort();
    format!("0/{nodes} nodes are available: {}.", parts.join(", "))
}
