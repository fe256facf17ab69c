//! Table-driven tests of the filters, scores and the FitError message.

use super::cache::{AntiTerm, NodeInfo, PodInfo, Resources};
use super::filter::{Reason, filter, fit_error};
use super::score::{least_allocated, select_host, spread};
use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

const GI: i64 = 1024 * 1024 * 1024;

fn node(name: &str) -> NodeInfo {
    let mut n = NodeInfo::new(name);
    n.exists = true;
    n.ready = true;
    n.allocatable = Resources {
        milli_cpu: 2000,
        memory: 4 * GI,
        ephemeral_storage: 10 * GI,
        pods: 110,
    };
    n
}

fn pod(key: &str) -> PodInfo {
    PodInfo {
        key: key.into(),
        namespace: key.split('/').next().unwrap_or("default").into(),
        requests: Resources {
            pods: 1,
            ..Default::default()
        },
        nonzero: (100, 200 * 1024 * 1024),
        ..Default::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: Some(value.into()).filter(|v: &String| !v.is_empty()),
        effect: effect.into(),
        time_added: None,
    }
}

fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
    let opt = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    Toleration {
        key: opt(key),
        operator: opt(op),
        value: opt(value),
        effect: opt(effect),
        toleration_seconds: None,
    }
}

fn expr(key: &str, op: &str, values: &[&str]) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: Some(vec![NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        }]),
        match_fields: None,
    }
}

#[test]
fn filters() {
    let cp_taint = taint("node-role.kubernetes.io/control-plane", "", "NoSchedule");
    type Case = (
        &'static str,
        Box<dyn Fn(&mut PodInfo, &mut NodeInfo)>,
        Vec<Reason>,
    );
    let cases: Vec<Case> = vec![
        ("plain fit", Box::new(|_, _| {}), vec![]),
        (
            "cordoned",
            Box::new(|_, n| n.unschedulable = true),
            vec![Reason::Unschedulable],
        ),
        (
            "cordoned but tolerated",
            Box::new(|p, n| {
                n.unschedulable = true;
                p.tolerations.push(toleration(
                    "node.kubernetes.io/unschedulable",
                    "Exists",
                    "",
                    "NoSchedule",
                ));
            }),
            vec![],
        ),
        (
            "not ready",
            Box::new(|_, n| n.ready = false),
            vec![Reason::UntoleratedTaint {
                key: "node.kubernetes.io/not-ready".into(),
                value: "".into(),
            }],
        ),
        (
            "control-plane taint",
            {
                let t = cp_taint.clone();
                Box::new(move |_, n| n.taints.push(t.clone()))
            },
            vec![Reason::UntoleratedTaint {
                key: "node-role.kubernetes.io/control-plane".into(),
                value: "".into(),
            }],
        ),
        (
            "control-plane taint tolerated by Exists",
            {
                let t = cp_taint.clone();
                Box::new(move |p, n| {
                    n.taints.push(t.clone());
                    p.tolerations.push(toleration(
                        "node-role.kubernetes.io/control-plane",
                        "Exists",
                        "",
                        "NoSchedule",
                    ));
                })
            },
            vec![],
        ),
        (
            "tolerate everything",
            Box::new(|p, n| {
                n.taints.push(taint("a", "b", "NoExecute"));
                p.tolerations.push(toleration("", "Exists", "", ""));
            }),
            vec![],
        ),
        (
            "Equal needs the value",
            Box::new(|p, n| {
                n.taints.push(taint("dedicated", "gpu", "NoSchedule"));
                p.tolerations
                    .push(toleration("dedicated", "Equal", "cpu", "NoSchedule"));
            }),
            vec![Reason::UntoleratedTaint {
                key: "dedicated".into(),
                value: "gpu".into(),
            }],
        ),
        (
            "wrong effect",
            Box::new(|p, n| {
                n.taints.push(taint("dedicated", "gpu", "NoExecute"));
                p.tolerations
                    .push(toleration("dedicated", "Equal", "gpu", "NoSchedule"));
            }),
            vec![Reason::UntoleratedTaint {
                key: "dedicated".into(),
                value: "gpu".into(),
            }],
        ),
        (
            "PreferNoSchedule is not a filter",
            Box::new(|_, n| n.taints.push(taint("x", "", "PreferNoSchedule"))),
            vec![],
        ),
        (
            "nodeSelector miss",
            Box::new(|p, _| p.node_selector = labels(&[("disk", "ssd")])),
            vec![Reason::NodeAffinity],
        ),
        (
            "nodeSelector hit",
            Box::new(|p, n| {
                p.node_selector = labels(&[("disk", "ssd")]);
                n.labels = labels(&[("disk", "ssd")]);
            }),
            vec![],
        ),
        (
            "affinity In",
            Box::new(|p, n| {
                p.required_terms = Some(vec![expr("zone", "In", &["a", "b"])]);
                n.labels = labels(&[("zone", "b")]);
            }),
            vec![],
        ),
        (
            "affinity NotIn",
            Box::new(|p, n| {
                p.required_terms = Some(vec![expr("zone", "NotIn", &["b"])]);
                n.labels = labels(&[("zone", "b")]);
            }),
            vec![Reason::NodeAffinity],
        ),
        (
            "affinity Exists",
            Box::new(|p, _| p.required_terms = Some(vec![expr("gpu", "Exists", &[])])),
            vec![Reason::NodeAffinity],
        ),
        (
            "affinity DoesNotExist",
            Box::new(|p, _| p.required_terms = Some(vec![expr("gpu", "DoesNotExist", &[])])),
            vec![],
        ),
        (
            "affinity Gt",
            Box::new(|p, n| {
                p.required_terms = Some(vec![expr("cores", "Gt", &["4"])]);
                n.labels = labels(&[("cores", "8")]);
            }),
            vec![],
        ),
        (
            "affinity Lt",
            Box::new(|p, n| {
                p.required_terms = Some(vec![expr("cores", "Lt", &["4"])]);
                n.labels = labels(&[("cores", "8")]);
            }),
            vec![Reason::NodeAffinity],
        ),
        (
            "terms are ORed",
            Box::new(|p, n| {
                p.required_terms =
                    Some(vec![expr("zone", "In", &["x"]), expr("zone", "In", &["a"])]);
                n.labels = labels(&[("zone", "a")]);
            }),
            vec![],
        ),
        (
            "host port taken",
            Box::new(|p, n| {
                p.host_ports.push(("TCP".into(), "0.0.0.0".into(), 80));
                let mut other = pod("default/other");
                other.host_ports.push(("TCP".into(), "10.0.0.1".into(), 80));
                n.add_pod(other);
            }),
            vec![Reason::NodePorts],
        ),
        (
            "same port other protocol",
            Box::new(|p, n| {
                p.host_ports.push(("UDP".into(), "0.0.0.0".into(), 80));
                let mut other = pod("default/other");
                other.host_ports.push(("TCP".into(), "0.0.0.0".into(), 80));
                n.add_pod(other);
            }),
            vec![],
        ),
        (
            "insufficient cpu",
            Box::new(|p, n| {
                p.requests.milli_cpu = 1500;
                let mut other = pod("default/other");
                other.requests.milli_cpu = 1000;
                n.add_pod(other);
            }),
            vec![Reason::Insufficient("cpu")],
        ),
        (
            "insufficient cpu and memory",
            Box::new(|p, _| {
                p.requests.milli_cpu = 3000;
                p.requests.memory = 5 * GI;
            }),
            vec![Reason::Insufficient("cpu"), Reason::Insufficient("memory")],
        ),
        (
            "insufficient ephemeral-storage",
            Box::new(|p, _| p.requests.ephemeral_storage = 11 * GI),
            vec![Reason::Insufficient("ephemeral-storage")],
        ),
        (
            "too many pods",
            Box::new(|_, n| n.allocatable.pods = 0),
            vec![Reason::TooManyPods],
        ),
        (
            "anti-affinity same labels",
            Box::new(|p, n| {
                p.labels = labels(&[("app", "web")]);
                p.anti_affinity.push(AntiTerm {
                    selector: LabelSelector {
                        match_labels: Some(labels(&[("app", "web")])),
                        match_expressions: None,
                    },
                    namespaces: vec!["default".into()],
                });
                let mut other = pod("default/web-1");
                other.labels = labels(&[("app", "web")]);
                n.add_pod(other);
            }),
            vec![Reason::AntiAffinity],
        ),
        (
            "anti-affinity other namespace",
            Box::new(|p, n| {
                p.anti_affinity.push(AntiTerm {
                    selector: LabelSelector {
                        match_labels: Some(labels(&[("app", "web")])),
                        match_expressions: None,
                    },
                    namespaces: vec!["default".into()],
                });
                let mut other = pod("prod/web-1");
                other.labels = labels(&[("app", "web")]);
                n.add_pod(other);
            }),
            vec![],
        ),
        (
            "existing pod's anti-affinity",
            Box::new(|p, n| {
                p.labels = labels(&[("app", "web")]);
                let mut other = pod("default/guard");
                other.anti_affinity.push(AntiTerm {
                    selector: LabelSelector {
                        match_labels: Some(labels(&[("app", "web")])),
                        match_expressions: None,
                    },
                    namespaces: vec!["default".into()],
                });
                n.add_pod(other);
            }),
            vec![Reason::ExistingAntiAffinity],
        ),
        (
            "first failing plugin wins",
            Box::new(|p, n| {
                n.unschedulable = true;
                p.requests.milli_cpu = 99_000;
            }),
            vec![Reason::Unschedulable],
        ),
    ];
    for (name, setup, want) in cases {
        let mut p = pod("default/web");
        let mut n = node("worker01");
        setup(&mut p, &mut n);
        assert_eq!(filter(&p, &n), want, "case {name}");
    }
}

#[test]
fn fit_error_message_matches_the_scheduler() {
    let cp = Reason::UntoleratedTaint {
        key: "node-role.kubernetes.io/control-plane".into(),
        value: "".into(),
    };
    let cases: Vec<(usize, Vec<Vec<Reason>>, &str)> = vec![
        (
            3,
            vec![
                vec![Reason::Insufficient("cpu")],
                vec![cp.clone()],
                vec![cp.clone()],
            ],
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }.",
        ),
        (
            2,
            vec![
                vec![Reason::Insufficient("cpu"), Reason::Insufficient("memory")],
                vec![Reason::Unschedulable],
            ],
            "0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 node(s) were unschedulable.",
        ),
        (
            1,
            vec![vec![Reason::NodeAffinity]],
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.",
        ),
        (0, vec![], "no nodes available to schedule pods"),
    ];
    for (n, rejected, want) in cases {
        assert_eq!(fit_error(n, &rejected), want);
    }
}

#[test]
fn scores() {
    let cases: &[(&[usize], &[i64])] = &[
        (&[0, 0, 0], &[100, 100, 100]),
        (&[1, 0], &[0, 100]),
        (&[2, 1, 0], &[0, 50, 100]),
        (&[3, 3, 1], &[0, 0, 100]),
    ];
    for (counts, want) in cases {
        assert_eq!(spread(counts), *want, "{counts:?}");
    }
    let p = pod("default/a");
    let empty = node("n1");
    let mut busy = node("n2");
    busy.nonzero_requested = (1000, 2 * GI);
    assert!(least_allocated(&p, &empty) > least_allocated(&p, &busy));
    let mut full = node("n3");
    full.nonzero_requested = (5000, 9 * GI);
    assert_eq!(least_allocated(&p, &full), 0);
}

#[test]
fn replicas_spread_over_nodes() {
    let mut nodes = [node("worker01"), node("worker02")];
    let mut placed = Vec::new();
    for i in 0..4 {
        let mut p = pod(&format!("default/web-{i}"));
        p.owner_uid = Some("rs-1".into());
        let host = select_host(&p, nodes.iter()).expect("fits");
        let n = nodes.iter_mut().find(|n| n.name == host).expect("node");
        n.add_pod(p);
        placed.push(host);
    }
    assert_eq!(placed, ["worker01", "worker02", "worker01", "worker02"]);
}

#[test]
fn unschedulable_message_from_select_host() {
    let mut cp = node("control");
    cp.taints.push(taint(
        "node-role.kubernetes.io/control-plane",
        "",
        "NoSchedule",
    ));
    let mut w = node("worker01");
    w.unschedulable = true;
    let mut ghost = node("ghost");
    ghost.exists = false;
    let nodes = [cp, w, ghost];
    let err = select_host(&pod("default/web"), nodes.iter()).expect_err("nothing fits");
    assert_eq!(
        err,
        "0/2 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 1 node(s) were unschedulable."
    );
}
