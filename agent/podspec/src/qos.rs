//! A pod's QoS class and its containers' `oom_score_adj`, by kubelet's rules
//! (pkg/apis/core/v1/helper/qos `GetPodQOS`; pkg/kubelet/qos `GetContainerOOMScoreAdjust`).

use crate::error::Result;
use crate::quantity::{self, Side};
use k8s_openapi::api::core::v1::{Container, Pod};

/// Kubernetes QoS classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The value of `status.qosClass`.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// `oom_score_adj` of Guaranteed containers.
pub const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
/// `oom_score_adj` of BestEffort containers.
pub const BEST_EFFORT_OOM_SCORE_ADJ: i32 = 1000;

/// Every container of the pod (init containers first).
pub fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    })
}

/// The pod's QoS class. Only cpu and memory count. A quantity that does not parse counts as
/// set (the pod is rejected later with a clear error when its limits are applied).
pub fn class(pod: &Pod) -> QosClass {
    let mut any = false;
    let mut guaranteed = true;
    for c in all_containers(pod) {
        for res in ["cpu", "memory"] {
            let nonzero = |side| {
                quantity::get(c, side, res)
                    .is_some_and(|q| quantity::parse_nano(&q.0).is_none_or(|n| n != 0))
            };
            let (req, lim) = (nonzero(Side::Requests), nonzero(Side::Limits));
            any |= req || lim;
            if !lim {
                guaranteed = false;
                continue;
            }
            let r = quantity::get(c, Side::Requests, res).and_then(|q| quantity::parse_nano(&q.0));
            let l = quantity::get(c, Side::Limits, res).and_then(|q| quantity::parse_nano(&q.0));
            if r != l {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => QosClass::BestEffort,
        (true, true) => QosClass::Guaranteed,
        (true, false) => QosClass::Burstable,
    }
}

/// `oom_score_adj` for `container` of a pod of class `qos` on a node with `memory_capacity`
/// bytes of memory.
pub fn oom_score_adj(qos: QosClass, container: &Container, memory_capacity: u64) -> Result<i32> {
    Ok(match qos {
        QosClass::Guaranteed => GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {
            let request = quantity::bytes(container, Side::Requests, "memory")?.unwrap_or(0);
            let cap = i128::from(memory_capacity.max(1));
            let adj = 1000 - (1000 * i128::from(request.max(0))) / cap;
            // A guaranteed pod using all its memory scores ~10: burstable ones stay above it,
            // and below best-effort ones.
            if adj < i128::from(1000 + GUARANTEED_OOM_SCORE_ADJ) {
                1000 + GUARANTEED_OOM_SCORE_ADJ
            } else if adj == i128::from(BEST_EFFORT_OOM_SCORE_ADJ) {
                BEST_EFFORT_OOM_SCORE_ADJ - 1
            } else {
                adj as i32
            }
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    fn map(kv: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
        (!kv.is_empty()).then(|| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect()
        })
    }

    /// A container with the given requests and limits.
    pub fn container(name: &str, req: &[(&str, &str)], lim: &[(&str, &str)]) -> Container {
        Container {
            name: name.into(),
            resources: Some(ResourceRequirements {
                requests: map(req),
                limits: map(lim),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn pod_with(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": containers, "initContainers": init},
        }))
        .expect("pod")
    }

    #[test]
    fn qos_classes() {
        let g = &[("cpu", "1"), ("memory", "1Gi")];
        let cases: Vec<(Vec<Container>, Vec<Container>, QosClass)> = vec![
            (vec![container("a", &[], &[])], vec![], QosClass::BestEffort),
            (vec![container("a", &[], g)], vec![], QosClass::Guaranteed),
            (vec![container("a", g, g)], vec![], QosClass::Guaranteed),
            (
                vec![container("a", &[("cpu", "1000m"), ("memory", "1024Mi")], g)],
                vec![],
                QosClass::Guaranteed,
            ),
            (
                vec![container("a", &[("cpu", "500m")], g)],
                vec![],
                QosClass::Burstable,
            ),
            (
                vec![container("a", &[], &[("cpu", "1")])],
                vec![],
                QosClass::Burstable,
            ),
            (
                vec![container("a", &[("memory", "1Mi")], &[])],
                vec![],
                QosClass::Burstable,
            ),
            (
                vec![container("a", &[], g)],
                vec![container("i", &[], &[])],
                QosClass::Burstable,
            ),
            (
                vec![container("a", &[], &[("ephemeral-storage", "1Gi")])],
                vec![],
                QosClass::BestEffort,
            ),
            (
                vec![container("a", &[("cpu", "0")], &[])],
                vec![],
                QosClass::BestEffort,
            ),
        ];
        for (i, (c, init, want)) in cases.into_iter().enumerate() {
            assert_eq!(class(&pod_with(c, init)), want, "case {i}");
        }
    }

    #[test]
    fn oom_scores() {
        let gib = 1u64 << 30;
        let cases = [
            (QosClass::Guaranteed, container("a", &[], &[]), -997),
            (QosClass::BestEffort, container("a", &[], &[]), 1000),
            (
                QosClass::Burstable,
                container("a", &[("memory", "512Mi")], &[]),
                500,
            ),
            (QosClass::Burstable, container("a", &[], &[]), 999),
            (
                QosClass::Burstable,
                container("a", &[("memory", "4Gi")], &[]),
                3,
            ),
        ];
        for (q, c, want) in cases {
            assert_eq!(oom_score_adj(q, &c, gib).expect("adj"), want, "{q:?}");
        }
    }
}
