//! The scheduler's view of the cluster: for each node its labels, taints, allocatable resources
//! and the pods bound (or assumed bound) to it, with running sums, so that a scheduling cycle
//! never walks the pod list. Pods are summarised once into [`PodInfo`].

use crate::quantity;
use crate::selector::Labels;
use k8s_openapi::api::core::v1::{Node, NodeSelectorTerm, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::{BTreeMap, HashMap};

/// Requests for scoring when a container states none (k8s scheduler util: 100m cpu, 200Mi).
const DEFAULT_MILLI_CPU: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// Summed resources, in millicores, bytes and counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
}

impl Resources {
    fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
    }
    fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
    }
    fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
    }
    /// From a `resources.requests` / `allocatable` map.
    pub fn from_map(
        m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) -> Resources {
        let mut r = Resources::default();
        for (k, q) in m.into_iter().flatten() {
            match k.as_str() {
                "cpu" => r.milli_cpu = quantity::milli(&q.0).unwrap_or(0),
                "memory" => r.memory = quantity::value(&q.0).unwrap_or(0),
                "ephemeral-storage" => r.ephemeral_storage = quantity::value(&q.0).unwrap_or(0),
                "pods" => r.pods = quantity::value(&q.0).unwrap_or(0),
                _ => {}
            }
        }
        r
    }
}

/// A host port a pod asks for: (protocol, hostIP, port).
pub type HostPort = (String, String, i32);

/// A required anti-affinity term on `kubernetes.io/hostname`.
#[derive(Debug, Clone, Default)]
pub struct AntiTerm {
    pub selector: LabelSelector,
    pub namespaces: Vec<String>,
}

/// What scheduling needs to know about a pod.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub key: String,
    pub namespace: String,
    pub labels: Labels,
    pub requests: Resources,
    /// cpu/memory with the scoring defaults for containers that request nothing.
    pub nonzero: (i64, i64),
    pub host_ports: Vec<HostPort>,
    pub owner_uid: Option<String>,
    pub anti_affinity: Vec<AntiTerm>,
    pub node_selector: Labels,
    pub required_terms: Option<Vec<NodeSelectorTerm>>,
    pub tolerations: Vec<Toleration>,
}

pub const HOSTNAME: &str = "kubernetes.io/hostname";

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let m = &pod.metadata;
        let ns = m.namespace.clone().unwrap_or_default();
        let mut info = PodInfo {
            key: format!("{ns}/{}", m.name.as_deref().unwrap_or_default()),
            namespace: ns.clone(),
            labels: m.labels.clone().unwrap_or_default(),
            owner_uid: crate::informer::controller_uid(pod).map(str::to_string),
            ..Default::default()
        };
        let Some(spec) = &pod.spec else { return info };
        let mut sum = Resources::default();
        let (mut nz_cpu, mut nz_mem) = (0, 0);
        for c in &spec.containers {
            let r = Resources::from_map(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
            nz_cpu += if r.milli_cpu == 0 {
                DEFAULT_MILLI_CPU
            } else {
                r.milli_cpu
            };
            nz_mem += if r.memory == 0 {
                DEFAULT_MEMORY
            } else {
                r.memory
            };
            sum.add(&r);
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|hp| *hp > 0) {
                    info.host_ports.push((
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                        hp,
                    ));
                }
            }
        }
        // Init containers run one at a time before the others: the pod needs the larger of
        // the sum of its containers and its largest init container.
        for c in spec.init_containers.iter().flatten() {
            let r = Resources::from_map(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
            sum.max(&r);
        }
        let overhead = Resources::from_map(spec.overhead.as_ref());
        sum.add(&overhead);
        sum.pods = 1;
        info.requests = sum;
        info.nonzero = (nz_cpu, nz_mem);
        info.node_selector = spec.node_selector.clone().unwrap_or_default();
        info.tolerations = spec.tolerations.clone().unwrap_or_default();
        if let Some(aff) = &spec.affinity {
            info.required_terms = aff
                .node_affinity
                .as_ref()
                .and_then(|na| {
                    na.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(|ns| ns.node_selector_terms.clone());
            for t in aff
                .pod_anti_affinity
                .as_ref()
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .into_iter()
                .flatten()
            {
                if t.topology_key != HOSTNAME {
                    continue;
                }
                let namespaces = match &t.namespaces {
                    Some(n) if !n.is_empty() => n.clone(),
                    _ => vec![ns.clone()],
                };
                info.anti_affinity.push(AntiTerm {
                    selector: t.label_selector.clone().unwrap_or_default(),
                    namespaces,
                });
            }
        }
        info
    }
}

/// A node and what is bound to it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub ready: bool,
    /// False while only pods name the node (its Node object is not in the cache).
    pub exists: bool,
    pub allocatable: Resources,
    pub requested: Resources,
    pub nonzero_requested: (i64, i64),
    pub pods: HashMap<String, PodInfo>,
    /// Pods per controlling owner uid, for spreading.
    pub owner_counts: HashMap<String, usize>,
}

impl NodeInfo {
    pub fn new(name: &str) -> NodeInfo {
        NodeInfo {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Refreshes the node's own fields (keeps its pods).
    pub fn set_node(&mut self, node: &Node) {
        self.exists = true;
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.as_ref();
        self.taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        let status = node.status.as_ref();
        self.ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        self.allocatable = Resources::from_map(status.and_then(|s| s.allocatable.as_ref()));
    }

    pub fn add_pod(&mut self, pod: PodInfo) {
        self.remove_pod(&pod.key.clone());
        self.requested.add(&pod.requests);
        self.nonzero_requested.0 += pod.nonzero.0;
        self.nonzero_requested.1 += pod.nonzero.1;
        if let Some(o) = &pod.owner_uid {
            *self.owner_counts.entry(o.clone()).or_default() += 1;
        }
        self.pods.insert(pod.key.clone(), pod);
    }

    pub fn remove_pod(&mut self, key: &str) -> Option<PodInfo> {
        let pod = self.pods.remove(key)?;
        self.requested.sub(&pod.requests);
        self.nonzero_requested.0 -= pod.nonzero.0;
        self.nonzero_requested.1 -= pod.nonzero.1;
        if let Some(o) = &pod.owner_uid
            && let Some(c) = self.owner_counts.get_mut(o)
        {
            *c -= 1;
            if *c == 0 {
                self.owner_counts.remove(o);
            }
        }
        Some(pod)
    }
}

/// Nodes by name plus where each pod is counted.
#[derive(Debug, Default)]
pub struct Cache {
    pub nodes: BTreeMap<String, NodeInfo>,
    pod_node: HashMap<String, String>,
}

impl Cache {
    pub fn upsert_node(&mut self, node: &Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        self.nodes
            .entry(name.clone())
            .or_insert_with(|| NodeInfo::new(&name))
            .set_node(node);
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(n) = self.nodes.remove(name) {
            for k in n.pods.keys() {
                self.pod_node.remove(k);
            }
        }
    }

    /// Counts `pod` on `node` (replacing wherever it was counted before).
    pub fn assume(&mut self, node: &str, pod: PodInfo) {
        self.forget(&pod.key);
        self.pod_node.insert(pod.key.clone(), node.to_string());
        self.nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeInfo::new(node))
            .add_pod(pod);
    }

    /// Stops counting the pod `key` anywhere.
    pub fn forget(&mut self, key: &str) {
        if let Some(node) = self.pod_node.remove(key)
            && let Some(n) = self.nodes.get_mut(&node)
        {
            n.remove_pod(key);
        }
    }

    /// The node a pod is counted on.
    pub fn node_of(&self, key: &str) -> Option<&str> {
        self.pod_node.get(key).map(String::as_str)
    }
}
