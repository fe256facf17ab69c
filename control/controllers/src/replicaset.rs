//! The ReplicaSet controller: keeps `spec.replicas` active pods matching each ReplicaSet (pods
//! it controls through an ownerReference with `controller: true`), creating them from the
//! template with `generateName: <rs>-` and deleting the least valuable first (unscheduled,
//! pending, not ready, ready for less time, restarted more, newest: pkg/controller ActivePods),
//! then writes status (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas after
//! `minReadySeconds`, observedGeneration). Instead of client-go's "expectations", a sync that
//! wrote pods waits until the cache has observed its writes before it returns, so the next sync
//! of the same key never counts stale state.

use crate::events::{NORMAL, Recorder, WARNING};
use crate::informer::{self, Change, Informer};
use crate::queue::{self, Queue};
use crate::{Error, Result, api_err, selector};
use futures_util::{StreamExt, stream};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource};
use std::sync::Arc;
use std::time::Duration;

/// Pods created or deleted concurrently by one sync.
const BURST: usize = 64;
/// How long a sync waits for the cache to show its own writes.
const OBSERVE: Duration = Duration::from_secs(15);

/// Is the pod counted by its controller (not finished, not being deleted)?
pub fn is_active(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && p.metadata.deletion_timestamp.is_none()
}

/// When the pod became Ready, if it is Ready.
pub fn ready_since(p: &Pod) -> Option<Timestamp> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        c.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

/// Ready for at least `min_ready` seconds at `now`.
pub fn is_available(p: &Pod, min_ready: i32, now: Timestamp) -> bool {
    match ready_since(p) {
        None => false,
        Some(_) if min_ready <= 0 => true,
        Some(t) => t.as_second() + i64::from(min_ready) <= now.as_second(),
    }
}

/// The ownerReference a controller puts on what it creates.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod from a template, named `<prefix>-xxxxx` by the API server.
pub fn pod_from_template(
    t: &PodTemplateSpec,
    prefix: &str,
    ns: &str,
    owner: OwnerReference,
) -> Pod {
    let tm = t.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            namespace: Some(ns.to_string()),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: t.spec.clone(),
        status: None,
    }
}

/// The order pods are deleted in when scaling down: a key that sorts the first to go first.
pub fn deletion_rank(
    p: &Pod,
) -> (
    u8,
    u8,
    u8,
    std::cmp::Reverse<i64>,
    std::cmp::Reverse<i32>,
    std::cmp::Reverse<i64>,
) {
    let assigned = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let ready = ready_since(p);
    let restarts: i32 = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0);
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (
        u8::from(assigned),
        phase,
        u8::from(ready.is_some()),
        std::cmp::Reverse(ready.map(|t| t.as_second()).unwrap_or(0)),
        std::cmp::Reverse(restarts),
        std::cmp::Reverse(created),
    )
}

/// Chooses `n` pods to delete.
pub fn pods_to_delete(mut pods: Vec<Arc<Pod>>, n: usize) -> Vec<Arc<Pod>> {
    pods.sort_by_key(|p| deletion_rank(p));
    pods.truncate(n);
    pods
}

/// The active pods a controller (by uid) owns in `ns`.
pub fn owned_pods(pods: &Store<Pod>, ns: &str, uid: &str) -> Vec<Arc<Pod>> {
    pods.state()
        .into_iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(ns)
                && informer::controller_uid(p.as_ref()) == Some(uid)
        })
        .collect()
}

/// Waits until `done` holds for the cache, or fails with CacheLag.
pub async fn observe(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + OBSERVE;
    while !done() {
        if tokio::time::Instant::now() > deadline {
            return Err(Error::CacheLag(what.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Creates `count` pods from `template` concurrently; returns their names (stops at the first
/// error, recording FailedCreate).
pub async fn create_pods(
    api: &Api<Pod>,
    recorder: &Recorder,
    owner_event: &k8s_openapi::api::core::v1::ObjectReference,
    pods: Vec<Pod>,
) -> Result<Vec<String>> {
    let results: Vec<_> = stream::iter(pods)
        .map(|p| async move { api.create(&PostParams::default(), &p).await })
        .buffer_unordered(BURST)
        .collect()
        .await;
    let mut names = Vec::new();
    let mut first_err = None;
    for r in results {
        match r {
            Ok(p) => {
                let name = p.metadata.name.unwrap_or_default();
                recorder.record_ref(
                    owner_event.clone(),
                    NORMAL,
                    "SuccessfulCreate",
                    format!("Created pod: {name}"),
                );
                names.push(name);
            }
            Err(e) => {
                recorder.record_ref(
                    owner_event.clone(),
                    WARNING,
                    "FailedCreate",
                    format!("Error creating: {e}"),
                );
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(api_err(
            "create pod for",
            owner_event.name.clone().unwrap_or_default(),
        )(e)),
        None => Ok(names),
    }
}

/// Deletes pods concurrently, recording SuccessfulDelete.
pub async fn delete_pods(
    api: &Api<Pod>,
    recorder: &Recorder,
    owner_event: &k8s_openapi::api::core::v1::ObjectReference,
    pods: &[Arc<Pod>],
) -> Result<()> {
    let names: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    let results: Vec<_> = stream::iter(names)
        .map(|name| async move { (api.delete(&name, &DeleteParams::default()).await, name) })
        .buffer_unordered(BURST)
        .collect()
        .await;
    for (r, name) in results {
        match r {
            Ok(_) => recorder.record_ref(
                owner_event.clone(),
                NORMAL,
                "SuccessfulDelete",
                format!("Deleted pod: {name}"),
            ),
            Err(e) if crate::is_not_found(&e) => {}
            Err(e) => return Err(api_err("delete pod", name)(e)),
        }
    }
    Ok(())
}

pub struct Controller {
    pub client: Client,
    pub pods: Arc<Informer<Pod>>,
    pub rss: Arc<Informer<ReplicaSet>>,
    pub recorder: Recorder,
}

impl Controller {
    /// Subscribes at once; the returned future runs the controller.
    pub fn run(self: Arc<Self>, workers: usize) -> impl std::future::Future<Output = ()> + Send {
        let queue = Queue::new();
        let mut rs_rx = self.rss.subscribe();
        let mut pod_rx = self.pods.subscribe();
        let q = Arc::clone(&queue);
        async move {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        Some(c) = rs_rx.recv() => q.add(informer::key_of(c.object().as_ref())),
                        Some(c) = pod_rx.recv() => {
                            let p = match &c { Change::Applied(p) | Change::Deleted(p) => p };
                            if let Some(owner) = p.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true) && r.kind == "ReplicaSet") {
                                q.add(format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or_default(), owner.name));
                            }
                        }
                        else => break,
                    }
                }
            });
            self.pods.synced().await;
            self.rss.synced().await;
            let me = Arc::clone(&self);
            queue::run_workers("replicaset", queue, workers, move |key| {
                let me = Arc::clone(&me);
                async move { me.sync(&key).await }
            })
            .await;
        }
    }

    async fn sync(&self, key: &str) -> Result<Option<Duration>> {
        let Some(rs) = informer::get(self.rss.store(), key) else {
            return Ok(None);
        };
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let spec = rs.spec.clone().unwrap_or_default();
        let want = spec.replicas.unwrap_or(1).max(0) as usize;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let me = crate::events::reference(rs.as_ref());
        let active: Vec<Arc<Pod>> = owned_pods(self.pods.store(), &ns, &uid)
            .into_iter()
            .filter(|p| is_active(p))
            .collect();
        if rs.metadata.deletion_timestamp.is_none() {
            if active.len() < want {
                let template = spec.template.clone().unwrap_or_default();
                let owner = controller_ref(rs.as_ref());
                let name = rs.metadata.name.clone().unwrap_or_default();
                let new: Vec<Pod> = (0..want - active.len())
                    .map(|_| pod_from_template(&template, &name, &ns, owner.clone()))
                    .collect();
                let created = create_pods(&api, &self.recorder, &me, new).await?;
                let store = self.pods.store();
                observe(&format!("pods created by {key}"), || {
                    created
                        .iter()
                        .all(|n| informer::get(store, &format!("{ns}/{n}")).is_some())
                })
                .await?;
            } else if active.len() > want {
                let victims = pods_to_delete(active.clone(), active.len() - want);
                delete_pods(&api, &self.recorder, &me, &victims).await?;
                let store = self.pods.store();
                observe(&format!("pods deleted by {key}"), || {
                    victims.iter().all(|v| {
                        informer::get(store, &informer::key_of(v.as_ref()))
                            .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
                    })
                })
                .await?;
            }
        }
        self.update_status(&rs, &spec).await
    }

    async fn update_status(
        &self,
        rs: &ReplicaSet,
        spec: &k8s_openapi::api::apps::v1::ReplicaSetSpec,
    ) -> Result<Option<Duration>> {
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let now = Timestamp::now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let active: Vec<Arc<Pod>> = owned_pods(self.pods.store(), &ns, &uid)
            .into_iter()
            .filter(|p| is_active(p))
            .collect();
        let mut status = ReplicaSetStatus {
            replicas: active.len() as i32,
            observed_generation: rs.metadata.generation,
            conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
            ..Default::default()
        };
        let mut fully = 0;
        let mut ready = 0;
        let mut available = 0;
        let mut next_check: Option<i64> = None;
        for p in &active {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            if template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
            {
                fully += 1;
            }
            if let Some(since) = ready_since(p) {
                ready += 1;
                if is_available(p, min_ready, now) {
                    available += 1;
                } else {
                    let wait = since.as_second() + i64::from(min_ready) - now.as_second();
                    next_check = Some(next_check.map_or(wait, |w| w.min(wait)));
                }
            }
        }
        status.fully_labeled_replicas = Some(fully);
        status.ready_replicas = Some(ready);
        status.available_replicas = Some(available);
        let current = rs.status.clone().unwrap_or_default();
        let normalise = |s: &ReplicaSetStatus| {
            (
                s.replicas,
                s.fully_labeled_replicas.unwrap_or(0),
                s.ready_replicas.unwrap_or(0),
                s.available_replicas.unwrap_or(0),
                s.observed_generation,
            )
        };
        if normalise(&current) != normalise(&status) {
            let name = rs.metadata.name.clone().unwrap_or_default();
            let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
            let patch = serde_json::json!({ "status": status });
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_err(
                    "update status of replicaset",
                    format!("{ns}/{name}"),
                ))?;
        }
        Ok(next_check.map(|s| Duration::from_secs(s.max(0) as u64 + 1)))
    }
}

/// Is `selector` (a ReplicaSet's) selecting `labels`? Exposed for adoption checks.
pub fn selects(rs: &ReplicaSet, labels: &selector::Labels) -> bool {
    rs.spec
        .as_ref()
        .is_some_and(|s| !selector::is_empty(&s.selector) && selector::matches(&s.selector, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(
        name: &str,
        node: Option<&str>,
        phase: &str,
        ready_at: Option<i64>,
        created: i64,
    ) -> Arc<Pod> {
        let ts = |s: i64| Time(Timestamp::from_second(s).expect("timestamp"));
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(ts(created)),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(String::from),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(ts(t)),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn deletes_the_least_valuable_first() {
        let pods = vec![
            pod("ready-old", Some("n1"), "Running", Some(100), 10),
            pod("unscheduled", None, "Pending", None, 5),
            pod("ready-new", Some("n1"), "Running", Some(200), 20),
            pod("pending", Some("n1"), "Pending", None, 1),
            pod("running-not-ready", Some("n1"), "Running", None, 2),
        ];
        let cases: &[(usize, &[&str])] = &[
            (1, &["unscheduled"]),
            (2, &["unscheduled", "pending"]),
            (3, &["unscheduled", "pending", "running-not-ready"]),
            (
                4,
                &["unscheduled", "pending", "running-not-ready", "ready-new"],
            ),
        ];
        for (n, want) in cases {
            let got: Vec<String> = pods_to_delete(pods.clone(), *n)
                .iter()
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect();
            assert_eq!(got, *want, "delete {n}");
        }
        // Same state: the newest goes first.
        let twins = vec![
            pod("older", None, "Pending", None, 1),
            pod("newer", None, "Pending", None, 2),
        ];
        assert_eq!(
            pods_to_delete(twins, 1)[0].metadata.name.as_deref(),
            Some("newer")
        );
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let now = Timestamp::from_second(1000).expect("ts");
        let cases = [
            (Some(990), 0, true),
            (Some(990), 10, true),
            (Some(995), 10, false),
            (None, 0, false),
        ];
        for (ready_at, min_ready, want) in cases {
            let p = pod("p", Some("n"), "Running", ready_at, 1);
            assert_eq!(
                is_available(&p, min_ready, now),
                want,
                "{ready_at:?} {min_ready}"
            );
        }
    }
}
