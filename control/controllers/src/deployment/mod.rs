//! The Deployment controller: owns ReplicaSets named `<deployment>-<pod-template-hash>`, one per
//! distinct pod template, and moves pods from the old ones to the new one with the RollingUpdate
//! (maxSurge / maxUnavailable) or Recreate strategy. It keeps `deployment.kubernetes.io/revision`
//! on ReplicaSets and on the Deployment (so `kubectl rollout history|undo` work), honours
//! `paused`, deletes old ReplicaSets beyond `revisionHistoryLimit`, and writes status and
//! conditions ([`status`]) that `kubectl rollout status` reads.

pub mod rollout;
pub mod status;

use crate::events::{NORMAL, Recorder};
use crate::informer::{self, Informer};
use crate::queue::{self, Queue};
use crate::replicaset::{controller_ref, is_active, observe, owned_pods};
use crate::{Error, Result, api_err};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rollout::Counts;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The template without the pod-template-hash label, for comparing a ReplicaSet's with the
/// Deployment's (EqualIgnoreHash).
fn strip_hash(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = t.clone();
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(HASH_LABEL);
        if l.is_empty()
            && let Some(m) = t.metadata.as_mut()
        {
            m.labels = None;
        }
    }
    serde_json::to_value(t).unwrap_or_default()
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_counts(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

fn rs_name(rs: &ReplicaSet) -> String {
    rs.metadata.name.clone().unwrap_or_default()
}

/// Annotations a ReplicaSet copies from its Deployment (everything but kubectl's last-applied
/// configuration and the controller's own).
fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != LAST_APPLIED && k != REVISION && k != DESIRED && k != MAX_REPLICAS)
        .collect()
}

pub struct Controller {
    pub client: Client,
    pub pods: Arc<Informer<Pod>>,
    pub rss: Arc<Informer<ReplicaSet>>,
    pub deployments: Arc<Informer<Deployment>>,
    pub recorder: Recorder,
}

struct Plan {
    surge: i32,
    unavailable: i32,
    replicas: i32,
}

impl Controller {
    /// Subscribes at once; the returned future runs the controller.
    pub fn run(self: Arc<Self>, workers: usize) -> impl std::future::Future<Output = ()> + Send {
        let queue = Queue::new();
        let mut d_rx = self.deployments.subscribe();
        let mut rs_rx = self.rss.subscribe();
        let mut pod_rx = self.pods.subscribe();
        let q = Arc::clone(&queue);
        let rss = self.rss.store().clone();
        async move {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        Some(c) = d_rx.recv() => q.add(informer::key_of(c.object().as_ref())),
                        Some(c) = rs_rx.recv() => {
                            let rs = c.object();
                            if let Some(o) = rs.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true) && r.kind == "Deployment") {
                                q.add(format!("{}/{}", rs.metadata.namespace.as_deref().unwrap_or_default(), o.name));
                            }
                        }
                        // Recreate waits for old pods to go: a deleted pod may unblock it.
                        Some(c) = pod_rx.recv() => {
                            if let informer::Change::Deleted(p) = c {
                                let ns = p.metadata.namespace.clone().unwrap_or_default();
                                let rs = p.metadata.owner_references.iter().flatten()
                                    .find(|r| r.controller == Some(true) && r.kind == "ReplicaSet")
                                    .and_then(|r| informer::get(&rss, &format!("{ns}/{}", r.name)));
                                if let Some(o) = rs.as_ref().and_then(|rs| rs.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true) && r.kind == "Deployment").cloned()) {
                                    q.add(format!("{ns}/{}", o.name));
                                }
                            }
                        }
                        else => break,
                    }
                }
            });
            self.pods.synced().await;
            self.rss.synced().await;
            self.deployments.synced().await;
            let me = Arc::clone(&self);
            queue::run_workers("deployment", queue, workers, move |key| {
                let me = Arc::clone(&me);
                async move { me.sync(&key).await }
            })
            .await;
        }
    }

    fn owned_rss(&self, d: &Deployment) -> Vec<Arc<ReplicaSet>> {
        let ns = d.metadata.namespace.as_deref();
        let uid = d.metadata.uid.as_deref();
        let mut v: Vec<Arc<ReplicaSet>> = self
            .rss
            .store()
            .state()
            .into_iter()
            .filter(|rs| {
                rs.metadata.namespace.as_deref() == ns
                    && informer::controller_uid(rs.as_ref()) == uid
            })
            .collect();
        v.sort_by_key(|rs| {
            (
                rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
                rs_name(rs),
            )
        });
        v
    }

    async fn sync(&self, key: &str) -> Result<Option<Duration>> {
        let Some(d) = informer::get(self.deployments.store(), key) else {
            return Ok(None);
        };
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = d.spec.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let strategy = spec.strategy.clone().unwrap_or_default();
        let recreate = strategy.type_.as_deref() == Some("Recreate");
        let ru = strategy.rolling_update.clone().unwrap_or_default();
        let (surge, unavailable) = if recreate {
            (0, replicas)
        } else {
            rollout::fenceposts(ru.max_surge.as_ref(), ru.max_unavailable.as_ref(), replicas)
                .map_err(|reason| Error::Invalid {
                    object: format!("deployment {key} spec.strategy.rollingUpdate"),
                    reason,
                })?
        };
        let plan = Plan {
            surge,
            unavailable,
            replicas,
        };
        let rss = self.owned_rss(&d);
        let template = spec.template.clone();
        let want = strip_hash(&template);
        let new_rs = rss
            .iter()
            .find(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .map(strip_hash)
                    .as_ref()
                    == Some(&want)
            })
            .cloned();
        let olds: Vec<Arc<ReplicaSet>> = rss
            .iter()
            .filter(|rs| Some(rs_name(rs)) != new_rs.as_ref().map(|n| rs_name(n)))
            .cloned()
            .collect();
        let paused = spec.paused.unwrap_or(false);

        if paused {
            if let Some(target) = new_rs
                .clone()
                .or_else(|| olds.iter().rev().find(|r| spec_replicas(r) > 0).cloned())
            {
                let active_sum: i32 = rss.iter().map(|r| spec_replicas(r)).sum();
                let want_target = (spec_replicas(&target) + replicas - active_sum).max(0);
                if want_target != spec_replicas(&target) {
                    self.scale(&d, &target, want_target, &plan).await?;
                }
            }
            return self
                .write_status(&d, &plan, new_rs.as_deref(), &olds, None)
                .await;
        }

        let mut event = None;
        let new_rs = match new_rs {
            Some(rs) => {
                let max_old = olds.iter().map(|r| revision(r)).max().unwrap_or(0);
                if revision(&rs) <= max_old {
                    // An old template came back (rollout undo): it becomes the newest revision.
                    let rs = self.set_revision(&rs, max_old + 1).await?;
                    event = Some((
                        "FoundNewReplicaSet",
                        format!("Found new replica set \"{}\"", rs_name(&rs)),
                    ));
                    rs
                } else {
                    rs
                }
            }
            None => {
                let all_sum: i32 = olds.iter().map(|r| spec_replicas(r)).sum();
                let initial = if recreate {
                    0
                } else {
                    rollout::new_rs_replicas(replicas, surge, all_sum, 0)
                };
                let max_old = olds.iter().map(|r| revision(r)).max().unwrap_or(0);
                let rs = self
                    .create_rs(&d, &template, initial, max_old + 1, &plan)
                    .await?;
                event = Some((
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{}\"", rs_name(&rs)),
                ));
                rs
            }
        };
        self.annotate_deployment(&d, revision(&new_rs)).await?;

        if recreate {
            let mut scaled = false;
            for old in olds.iter().filter(|r| spec_replicas(r) > 0) {
                self.scale(&d, old, 0, &plan).await?;
                scaled = true;
            }
            let old_pods_left = olds.iter().any(|rs| {
                let ns = rs.metadata.namespace.clone().unwrap_or_default();
                !owned_pods(
                    self.pods.store(),
                    &ns,
                    rs.metadata.uid.as_deref().unwrap_or_default(),
                )
                .is_empty()
            });
            if !scaled && !old_pods_left && spec_replicas(&new_rs) != replicas {
                self.scale(&d, &new_rs, replicas, &plan).await?;
            }
        } else {
            let all_sum: i32 = rss
                .iter()
                .filter(|r| rs_name(r) != rs_name(&new_rs))
                .map(|r| spec_replicas(r))
                .sum::<i32>()
                + spec_replicas(&new_rs);
            let cur = spec_replicas(&new_rs);
            let target = if cur > replicas {
                replicas
            } else {
                rollout::new_rs_replicas(replicas, surge, all_sum, cur)
            };
            if target != cur {
                self.scale(&d, &new_rs, target, &plan).await?;
            } else {
                let mut counts: Vec<Counts> = olds
                    .iter()
                    .map(|r| Counts {
                        spec: spec_replicas(r),
                        available: status_counts(r).2,
                    })
                    .collect();
                let before = counts.clone();
                let new_counts = Counts {
                    spec: cur,
                    available: status_counts(&new_rs).2,
                };
                if rollout::scale_down_olds(&mut counts, new_counts, replicas, unavailable) {
                    for ((old, b), a) in olds.iter().zip(before).zip(counts) {
                        if a.spec != b.spec {
                            self.scale(&d, old, a.spec, &plan).await?;
                        }
                    }
                }
            }
        }
        let done = self
            .write_status(&d, &plan, Some(&new_rs), &olds, event)
            .await?;
        self.cleanup(&d, &new_rs, &olds).await?;
        Ok(done)
    }

    async fn create_rs(
        &self,
        d: &Deployment,
        template: &PodTemplateSpec,
        replicas: i32,
        rev: i64,
        plan: &Plan,
    ) -> Result<Arc<ReplicaSet>> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let dname = d.metadata.name.clone().unwrap_or_default();
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = rollout::template_hash(
            &serde_json::to_string(template).unwrap_or_default(),
            collision,
        );
        let name = format!("{dname}-{hash}");
        let mut t = template.clone();
        let tm = t.metadata.get_or_insert_with(Default::default);
        tm.labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let labels = tm.labels.clone();
        let spec = d.spec.clone().unwrap_or_default();
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut annotations = copied_annotations(d);
        annotations.insert(REVISION.into(), rev.to_string());
        annotations.insert(DESIRED.into(), plan.replicas.to_string());
        annotations.insert(
            MAX_REPLICAS.into(),
            (plan.replicas + plan.surge).to_string(),
        );
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels,
                annotations: Some(annotations),
                owner_references: Some(vec![controller_ref(d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(t),
            }),
            status: None,
        };
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        let created = match api.create(&PostParams::default(), &rs).await {
            Ok(rs) => rs,
            Err(e) if crate::is_conflict(&e) => {
                // A ReplicaSet of that name with another template: bump collisionCount so the
                // next sync hashes to a new name.
                let dapi: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
                let patch =
                    serde_json::json!({"status": {"collisionCount": collision.unwrap_or(0) + 1}});
                dapi.patch_status(&dname, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(api_err(
                        "update collisionCount of deployment",
                        format!("{ns}/{dname}"),
                    ))?;
                return Err(Error::CacheLag(format!(
                    "replicaset {ns}/{name} (hash collision)"
                )));
            }
            Err(e) => return Err(api_err("create replicaset", format!("{ns}/{name}"))(e)),
        };
        if replicas > 0 {
            self.recorder.record(
                d,
                NORMAL,
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {replicas}"),
            );
        }
        let store = self.rss.store();
        let key = format!("{ns}/{name}");
        observe(&key, || informer::get(store, &key).is_some()).await?;
        Ok(Arc::new(created))
    }

    async fn scale(&self, d: &Deployment, rs: &ReplicaSet, to: i32, plan: &Plan) -> Result<()> {
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs_name(rs);
        let from = spec_replicas(rs);
        let patch = serde_json::json!({
            "metadata": {"annotations": {DESIRED: plan.replicas.to_string(), MAX_REPLICAS: (plan.replicas + plan.surge).to_string()}},
            "spec": {"replicas": to},
        });
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        let updated = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_err("scale replicaset", format!("{ns}/{name}")))?;
        let dir = if to > from { "up" } else { "down" };
        self.recorder.record(
            d,
            NORMAL,
            "ScalingReplicaSet",
            format!("Scaled {dir} replica set {name} from {from} to {to}"),
        );
        let rv = updated.metadata.resource_version.clone();
        let store = self.rss.store();
        let key = format!("{ns}/{name}");
        let rv_num = |r: Option<&String>| r.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let want_rv = rv_num(rv.as_ref());
        observe(&key, || {
            informer::get(store, &key).is_none_or(|r| {
                spec_replicas(&r) == to || rv_num(r.metadata.resource_version.as_ref()) >= want_rv
            })
        })
        .await
    }

    async fn set_revision(&self, rs: &ReplicaSet, rev: i64) -> Result<Arc<ReplicaSet>> {
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs_name(rs);
        let patch = serde_json::json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        let updated = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_err(
                "set revision of replicaset",
                format!("{ns}/{name}"),
            ))?;
        Ok(Arc::new(updated))
    }

    async fn annotate_deployment(&self, d: &Deployment, rev: i64) -> Result<()> {
        let have = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .cloned();
        if have.as_deref() == Some(rev.to_string().as_str()) {
            return Ok(());
        }
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_err(
                "set revision of deployment",
                format!("{ns}/{name}"),
            ))?;
        Ok(())
    }

    /// Writes status if it changed; returns when to look again (progress deadline, minReadySeconds).
    async fn write_status(
        &self,
        d: &Deployment,
        plan: &Plan,
        new_rs: Option<&ReplicaSet>,
        olds: &[Arc<ReplicaSet>],
        event: Option<(&'static str, String)>,
    ) -> Result<Option<Duration>> {
        let spec = d.spec.clone().unwrap_or_default();
        // Read the ReplicaSets again: this sync may have scaled them.
        let fresh = |rs: &ReplicaSet| {
            informer::get(self.rss.store(), &informer::key_of(rs))
                .map(|r| (*r).clone())
                .unwrap_or_else(|| rs.clone())
        };
        let inputs = status::Inputs {
            generation: d.metadata.generation,
            replicas: plan.replicas,
            max_unavailable: plan.unavailable,
            new_rs: new_rs.map(|rs| {
                let rs = fresh(rs);
                let (r, ready, avail) = status_counts(&rs);
                (rs_name(&rs), r, ready, avail)
            }),
            old_rs: olds.iter().map(|rs| status_counts(&fresh(rs))).collect(),
            collision_count: d.status.as_ref().and_then(|s| s.collision_count),
            paused: spec.paused.unwrap_or(false),
            progress_deadline_seconds: Some(spec.progress_deadline_seconds.unwrap_or(600)),
            event,
        };
        let prev = d.status.clone().unwrap_or_default();
        let (st, recheck) = status::compute(&prev, &inputs, Timestamp::now());
        if !status::same(&prev, &st) {
            let ns = d.metadata.namespace.clone().unwrap_or_default();
            let name = d.metadata.name.clone().unwrap_or_default();
            let api: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
            let patch = serde_json::json!({"status": st});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_err(
                    "update status of deployment",
                    format!("{ns}/{name}"),
                ))?;
        }
        Ok(recheck.map(|s| Duration::from_secs(s.max(1) as u64)))
    }

    /// Deletes the oldest fully scaled-down ReplicaSets beyond revisionHistoryLimit.
    async fn cleanup(
        &self,
        d: &Deployment,
        new_rs: &ReplicaSet,
        olds: &[Arc<ReplicaSet>],
    ) -> Result<()> {
        let limit = d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let mut idle: Vec<&Arc<ReplicaSet>> = olds
            .iter()
            .filter(|rs| rs_name(rs) != rs_name(new_rs))
            .filter(|rs| {
                spec_replicas(rs) == 0
                    && status_counts(rs).0 == 0
                    && rs.metadata.deletion_timestamp.is_none()
            })
            .filter(|rs| {
                let ns = rs.metadata.namespace.clone().unwrap_or_default();
                !owned_pods(
                    self.pods.store(),
                    &ns,
                    rs.metadata.uid.as_deref().unwrap_or_default(),
                )
                .iter()
                .any(|p| is_active(p))
            })
            .collect();
        if idle.len() <= limit {
            return Ok(());
        }
        idle.sort_by_key(|rs| revision(rs));
        let extra = idle.len() - limit;
        for rs in idle.into_iter().take(extra) {
            let ns = rs.metadata.namespace.clone().unwrap_or_default();
            let name = rs_name(rs);
            let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if crate::is_not_found(&e) => {}
                Err(e) => return Err(api_err("delete old replicaset", format!("{ns}/{name}"))(e)),
            }
        }
        Ok(())
    }
}
