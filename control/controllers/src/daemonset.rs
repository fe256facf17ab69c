//! The DaemonSet controller: one pod per eligible node (nodeSelector, required node affinity,
//! taints the pod template tolerates plus the tolerations the real controller adds), pinned with
//! a `matchFields metadata.name` node affinity and placed by the scheduler; pods on nodes that
//! no longer qualify are deleted; RollingUpdate replaces pods whose `controller-revision-hash`
//! label is stale, at most `maxUnavailable` at a time; status counts what `kubectl rollout
//! status daemonset` reads.

use crate::deployment::rollout;
use crate::events::Recorder;
use crate::informer::{self, Informer};
use crate::queue::{self, Queue};
use crate::replicaset::{
    controller_ref, create_pods, delete_pods, is_active, is_available, owned_pods,
    pod_from_template, ready_since,
};
use crate::scheduler::cache::{NodeInfo, PodInfo};
use crate::scheduler::filter;
use crate::{Result, api_err};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Toleration,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const HASH_LABEL: &str = "controller-revision-hash";

/// The tolerations the DaemonSet controller adds to every pod (pkg/controller/daemon/util).
fn default_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// The pod the DaemonSet runs on `node` (before the API names it).
pub fn pod_for_node(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut pod = pod_from_template(&template, &name, &ns, controller_ref(ds));
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for t in default_tolerations() {
        if !tolerations.contains(&t) {
            tolerations.push(t);
        }
    }
    let term = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
    pod
}

/// Should the DaemonSet's pod run on this node (selector, affinity, taints)?
pub fn should_run(ds: &DaemonSet, node: &Node) -> bool {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let probe = Pod {
        metadata: Default::default(),
        spec: template.spec.clone().map(|mut s| {
            s.tolerations
                .get_or_insert_with(Vec::new)
                .extend(default_tolerations());
            s
        }),
        status: None,
    };
    let pod = PodInfo::from_pod(&probe);
    let mut info = NodeInfo::new(node.metadata.name.as_deref().unwrap_or_default());
    info.set_node(node);
    filter::taint_toleration(&pod, &info).is_none() && filter::node_affinity(&pod, &info).is_none()
}

/// The node a DaemonSet pod is for (bound node, or the one its affinity names).
fn pod_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

pub struct Controller {
    pub client: Client,
    pub pods: Arc<Informer<Pod>>,
    pub nodes: Arc<Informer<Node>>,
    pub daemonsets: Arc<Informer<DaemonSet>>,
    pub recorder: Recorder,
}

impl Controller {
    /// Subscribes at once; the returned future runs the controller.
    pub fn run(self: Arc<Self>, workers: usize) -> impl std::future::Future<Output = ()> + Send {
        let queue = Queue::new();
        let mut ds_rx = self.daemonsets.subscribe();
        let mut pod_rx = self.pods.subscribe();
        let mut node_rx = self.nodes.subscribe();
        let q = Arc::clone(&queue);
        let dss = self.daemonsets.store().clone();
        async move {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        Some(c) = ds_rx.recv() => q.add(informer::key_of(c.object().as_ref())),
                        Some(c) = pod_rx.recv() => {
                            let p = c.object();
                            if let Some(o) = p.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true) && r.kind == "DaemonSet") {
                                q.add(format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or_default(), o.name));
                            }
                        }
                        Some(_) = node_rx.recv() => {
                            for ds in dss.state() {
                                q.add(informer::key_of(ds.as_ref()));
                            }
                        }
                        else => break,
                    }
                }
            });
            self.pods.synced().await;
            self.nodes.synced().await;
            self.daemonsets.synced().await;
            let me = Arc::clone(&self);
            queue::run_workers("daemonset", queue, workers, move |key| {
                let me = Arc::clone(&me);
                async move { me.sync(&key).await }
            })
            .await;
        }
    }

    async fn sync(&self, key: &str) -> Result<Option<Duration>> {
        let Some(ds) = informer::get(self.daemonsets.store(), key) else {
            return Ok(None);
        };
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let spec = ds.spec.clone().unwrap_or_default();
        let hash = rollout::template_hash(
            &serde_json::to_string(&spec.template).unwrap_or_default(),
            ds.status.as_ref().and_then(|s| s.collision_count),
        );
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let now = Timestamp::now();
        let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in owned_pods(self.pods.store(), &ns, &uid)
            .into_iter()
            .filter(|p| is_active(p))
        {
            if let Some(n) = pod_node(&p) {
                by_node.entry(n).or_default().push(p);
            }
        }
        let nodes = self.nodes.store().state();
        let mut create = Vec::new();
        let mut delete: Vec<Arc<Pod>> = Vec::new();
        let mut desired = 0;
        let mut unavailable = 0;
        let mut old_available = Vec::new();
        for node in &nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let pods = by_node.remove(&name).unwrap_or_default();
            if !should_run(&ds, node) {
                delete.extend(pods);
                continue;
            }
            desired += 1;
            let mut pods = pods;
            pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            if pods.len() > 1 {
                delete.extend(pods.split_off(1));
            }
            match pods.first() {
                None => {
                    create.push(pod_for_node(&ds, &name, &hash));
                    unavailable += 1;
                }
                Some(p) => {
                    let current =
                        p.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) == Some(&hash);
                    let avail = is_available(p, min_ready, now);
                    if !avail {
                        unavailable += 1;
                    }
                    if !current {
                        if avail {
                            old_available.push(Arc::clone(p));
                        } else {
                            // A stale pod that is not available costs nothing to replace.
                            delete.push(Arc::clone(p));
                        }
                    }
                }
            }
        }
        // Pods on nodes that no longer exist.
        delete.extend(by_node.into_values().flatten());
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        if strategy.type_.as_deref() != Some("OnDelete") {
            let ru = strategy.rolling_update.unwrap_or_default();
            let max_unavailable = rollout::scaled(ru.max_unavailable.as_ref(), "1", desired, true)
                .unwrap_or(1)
                .max(1);
            let budget = (max_unavailable - unavailable).max(0) as usize;
            delete.extend(old_available.into_iter().take(budget));
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let me = crate::events::reference(ds.as_ref());
        if !delete.is_empty() {
            delete_pods(&api, &self.recorder, &me, &delete).await?;
        }
        if !create.is_empty() {
            let names = create_pods(&api, &self.recorder, &me, create).await?;
            let store = self.pods.store();
            crate::replicaset::observe(&format!("pods created by daemonset {key}"), || {
                names
                    .iter()
                    .all(|n| informer::get(store, &format!("{ns}/{n}")).is_some())
            })
            .await?;
        }
        self.update_status(&ds, &hash, min_ready).await
    }

    async fn update_status(
        &self,
        ds: &DaemonSet,
        hash: &str,
        min_ready: i32,
    ) -> Result<Option<Duration>> {
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let now = Timestamp::now();
        let mut by_node: BTreeMap<String, Arc<Pod>> = BTreeMap::new();
        for p in owned_pods(self.pods.store(), &ns, &uid)
            .into_iter()
            .filter(|p| is_active(p))
        {
            if let Some(n) = pod_node(&p) {
                by_node.insert(n, p);
            }
        }
        let mut st = DaemonSetStatus {
            observed_generation: ds.metadata.generation,
            collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
            ..Default::default()
        };
        let (mut updated, mut ready, mut available) = (0, 0, 0);
        let mut recheck = None;
        for node in self.nodes.store().state() {
            let name = node.metadata.name.clone().unwrap_or_default();
            let pod = by_node.get(&name);
            if should_run(ds, &node) {
                st.desired_number_scheduled += 1;
                if let Some(p) = pod {
                    st.current_number_scheduled += 1;
                    if p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(HASH_LABEL))
                        .map(String::as_str)
                        == Some(hash)
                    {
                        updated += 1;
                    }
                    if let Some(since) = ready_since(p) {
                        ready += 1;
                        if is_available(p, min_ready, now) {
                            available += 1;
                        } else {
                            recheck =
                                Some(since.as_second() + i64::from(min_ready) - now.as_second());
                        }
                    }
                }
            } else if pod.is_some() {
                st.number_misscheduled += 1;
            }
        }
        st.number_ready = ready;
        st.number_available = Some(available);
        st.updated_number_scheduled = Some(updated);
        st.number_unavailable = Some((st.desired_number_scheduled - available).max(0));
        if ds.status.as_ref() != Some(&st) {
            let name = ds.metadata.name.clone().unwrap_or_default();
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &ns);
            let patch = serde_json::json!({"status": st});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_err(
                    "update status of daemonset",
                    format!("{ns}/{name}"),
                ))?;
        }
        Ok(recheck.map(|s| Duration::from_secs(s.max(0) as u64 + 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetSpec;
    use k8s_openapi::api::core::v1::{
        NodeCondition, NodeSpec, NodeStatus, PodSpec, PodTemplateSpec, Taint,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>, unschedulable: bool) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                unschedulable: Some(unschedulable),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn ds(selector: &[(&str, &str)], tolerations: Vec<Toleration>) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        node_selector: Some(
                            selector
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect(),
                        ),
                        tolerations: Some(tolerations),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn eligibility() {
        let cp = Taint {
            key: "node-role.kubernetes.io/control-plane".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tol_cp = Toleration {
            key: Some(cp.key.clone()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        };
        let cases = [
            (
                "plain",
                ds(&[], vec![]),
                node("w1", &[], vec![], false),
                true,
            ),
            (
                "cordoned nodes still run daemons",
                ds(&[], vec![]),
                node("w1", &[], vec![], true),
                true,
            ),
            (
                "control-plane taint",
                ds(&[], vec![]),
                node("cp", &[], vec![cp.clone()], false),
                false,
            ),
            (
                "control-plane tolerated",
                ds(&[], vec![tol_cp]),
                node("cp", &[], vec![cp.clone()], false),
                true,
            ),
            (
                "selector miss",
                ds(&[("disk", "ssd")], vec![]),
                node("w1", &[], vec![], false),
                false,
            ),
            (
                "selector hit",
                ds(&[("disk", "ssd")], vec![]),
                node("w1", &[("disk", "ssd")], vec![], false),
                true,
            ),
        ];
        for (name, d, n, want) in cases {
            assert_eq!(should_run(&d, &n), want, "{name}");
        }
    }

    #[test]
    fn pods_are_pinned_to_their_node() {
        let p = pod_for_node(&ds(&[], vec![]), "w7", "abc");
        assert_eq!(pod_node(&p).as_deref(), Some("w7"));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
        assert_eq!(
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(HASH_LABEL))
                .map(String::as_str),
            Some("abc")
        );
        let tol = p
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .map(|t| t.len());
        assert_eq!(tol, Some(6));
    }
}
