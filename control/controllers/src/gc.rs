//! The garbage collector for ownerReferences (pkg/controller/garbagecollector), over the kinds
//! the controllers cache (Pods, ReplicaSets, Deployments, DaemonSets, Nodes):
//! - background: a dependent whose every owner is gone (checked with a live GET by uid, never
//!   from the cache alone) is deleted;
//! - foreground: an owner with `deletionTimestamp` and the `foregroundDeletion` finalizer has its
//!   dependents deleted (with foreground propagation, so the cascade nests), and loses the
//!   finalizer once none is left, which lets the API server delete it;
//! - orphan: an owner with the `orphan` finalizer has its ownerReference removed from every
//!   dependent, then loses the finalizer.

use crate::informer::{self, Informer};
use crate::queue::{self, Queue};
use crate::runner::Informers;
use crate::{Result, api_err};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// The kinds the collector knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pod,
    ReplicaSet,
    Deployment,
    DaemonSet,
    Node,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "Pod" => Kind::Pod,
            "ReplicaSet" => Kind::ReplicaSet,
            "Deployment" => Kind::Deployment,
            "DaemonSet" => Kind::DaemonSet,
            "Node" => Kind::Node,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Deployment => "Deployment",
            Kind::DaemonSet => "DaemonSet",
            Kind::Node => "Node",
        }
    }
    fn resource(self) -> ApiResource {
        match self {
            Kind::Pod => ApiResource::erase::<Pod>(&()),
            Kind::ReplicaSet => ApiResource::erase::<ReplicaSet>(&()),
            Kind::Deployment => ApiResource::erase::<Deployment>(&()),
            Kind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
            Kind::Node => ApiResource::erase::<Node>(&()),
        }
    }
}

/// What a queued key asks for: `owner|Kind|key` (foreground/orphan work on an owner being
/// deleted) or `dependent|Kind|key` (is this object's owner gone?).
fn key(what: &str, kind: Kind, obj_key: &str) -> String {
    format!("{what}|{}|{obj_key}", kind.name())
}

pub struct Collector {
    client: Client,
    pods: Arc<Informer<Pod>>,
    rss: Arc<Informer<ReplicaSet>>,
    deployments: Arc<Informer<Deployment>>,
    daemonsets: Arc<Informer<DaemonSet>>,
    nodes: Arc<Informer<Node>>,
}

fn finalizing(m: &ObjectMeta) -> bool {
    m.deletion_timestamp.is_some()
        && m.finalizers
            .iter()
            .flatten()
            .any(|f| f == FOREGROUND || f == ORPHAN)
}

impl Collector {
    pub fn new(client: Client, inf: &Informers) -> Collector {
        Collector {
            client,
            pods: Arc::clone(&inf.pods),
            rss: Arc::clone(&inf.replicasets),
            deployments: Arc::clone(&inf.deployments),
            daemonsets: Arc::clone(&inf.daemonsets),
            nodes: Arc::clone(&inf.nodes),
        }
    }

    fn meta(&self, kind: Kind, k: &str) -> Option<ObjectMeta> {
        match kind {
            Kind::Pod => informer::get(self.pods.store(), k).map(|o| o.metadata.clone()),
            Kind::ReplicaSet => informer::get(self.rss.store(), k).map(|o| o.metadata.clone()),
            Kind::Deployment => {
                informer::get(self.deployments.store(), k).map(|o| o.metadata.clone())
            }
            Kind::DaemonSet => {
                informer::get(self.daemonsets.store(), k).map(|o| o.metadata.clone())
            }
            Kind::Node => informer::get(self.nodes.store(), k).map(|o| o.metadata.clone()),
        }
    }

    /// Dependents of `uid` among the cached kinds (namespaced dependents live in the owner's
    /// namespace; a cluster-scoped owner may own objects anywhere).
    fn dependents(&self, uid: &str) -> Vec<(Kind, ObjectMeta)> {
        let owned = |m: &ObjectMeta| m.owner_references.iter().flatten().any(|r| r.uid == uid);
        let mut out = Vec::new();
        for p in self.pods.store().state() {
            if owned(&p.metadata) {
                out.push((Kind::Pod, p.metadata.clone()));
            }
        }
        for r in self.rss.store().state() {
            if owned(&r.metadata) {
                out.push((Kind::ReplicaSet, r.metadata.clone()));
            }
        }
        out
    }

    fn api(&self, kind: Kind, ns: Option<&str>) -> Api<DynamicObject> {
        let ar = kind.resource();
        match ns {
            Some(ns) if !ns.is_empty() => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// Subscribes at once; the returned future runs the collector.
    pub fn run(self: Arc<Self>, workers: usize) -> impl std::future::Future<Output = ()> + Send {
        let queue = Queue::new();
        let mut pods = self.pods.subscribe();
        let mut rss = self.rss.subscribe();
        let mut ds = self.deployments.subscribe();
        let mut dss = self.daemonsets.subscribe();
        let mut nodes = self.nodes.subscribe();
        let q = Arc::clone(&queue);
        async move {
            let me = Arc::clone(&self);
            tokio::spawn(async move {
                loop {
                    let (kind, meta, deleted) = tokio::select! {
                        Some(c) = pods.recv() => (Kind::Pod, c.object().metadata.clone(), matches!(c, informer::Change::Deleted(_))),
                        Some(c) = rss.recv() => (Kind::ReplicaSet, c.object().metadata.clone(), matches!(c, informer::Change::Deleted(_))),
                        Some(c) = ds.recv() => (Kind::Deployment, c.object().metadata.clone(), matches!(c, informer::Change::Deleted(_))),
                        Some(c) = dss.recv() => (Kind::DaemonSet, c.object().metadata.clone(), matches!(c, informer::Change::Deleted(_))),
                        Some(c) = nodes.recv() => (Kind::Node, c.object().metadata.clone(), matches!(c, informer::Change::Deleted(_))),
                        else => break,
                    };
                    let ns = meta.namespace.clone().unwrap_or_default();
                    let obj_key = if ns.is_empty() {
                        meta.name.clone().unwrap_or_default()
                    } else {
                        format!("{ns}/{}", meta.name.as_deref().unwrap_or_default())
                    };
                    if deleted {
                        // Its dependents may now be orphans; an owner waiting in foreground
                        // deletion may now be free.
                        for (dk, dm) in me.dependents(meta.uid.as_deref().unwrap_or_default()) {
                            q.add(key("dependent", dk, &informer::meta_key(&dm)));
                        }
                        for r in meta.owner_references.iter().flatten() {
                            if let Some(ok) = Kind::parse(&r.kind) {
                                let okey = if ok == Kind::Node || ns.is_empty() {
                                    r.name.clone()
                                } else {
                                    format!("{ns}/{}", r.name)
                                };
                                q.add(key("owner", ok, &okey));
                            }
                        }
                        continue;
                    }
                    if finalizing(&meta) {
                        q.add(key("owner", kind, &obj_key));
                    }
                    if meta
                        .owner_references
                        .as_ref()
                        .is_some_and(|o| !o.is_empty())
                        && meta.deletion_timestamp.is_none()
                    {
                        q.add(key("dependent", kind, &obj_key));
                    }
                }
            });
            self.pods.synced().await;
            self.rss.synced().await;
            self.deployments.synced().await;
            self.daemonsets.synced().await;
            self.nodes.synced().await;
            let me = Arc::clone(&self);
            queue::run_workers("garbage-collector", queue, workers, move |k| {
                let me = Arc::clone(&me);
                async move { me.sync(&k).await }
            })
            .await;
        }
    }

    async fn sync(&self, k: &str) -> Result<Option<Duration>> {
        let mut parts = k.splitn(3, '|');
        let (Some(what), Some(kind), Some(obj_key)) = (
            parts.next(),
            parts.next().and_then(Kind::parse),
            parts.next(),
        ) else {
            return Ok(None);
        };
        match what {
            "owner" => self.sync_owner(kind, obj_key).await,
            _ => self.sync_dependent(kind, obj_key).await,
        }
    }

    /// Is the owner `kind/name` with `uid` still there? Asks the API server.
    async fn owner_exists(
        &self,
        kind: Kind,
        ns: Option<&str>,
        name: &str,
        uid: &str,
    ) -> Result<bool> {
        let ns = if kind == Kind::Node { None } else { ns };
        let cache_key = match ns {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        };
        if self
            .meta(kind, &cache_key)
            .is_some_and(|m| m.uid.as_deref() == Some(uid))
        {
            return Ok(true);
        }
        match self.api(kind, ns).get_opt(name).await {
            Ok(Some(o)) => Ok(o.metadata.uid.as_deref() == Some(uid)),
            Ok(None) => Ok(false),
            Err(e) => Err(api_err("look up owner", format!("{} {name}", kind.name()))(
                e,
            )),
        }
    }

    async fn sync_dependent(&self, kind: Kind, obj_key: &str) -> Result<Option<Duration>> {
        let Some(meta) = self.meta(kind, obj_key) else {
            return Ok(None);
        };
        if meta.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let refs = meta.owner_references.clone().unwrap_or_default();
        if refs.is_empty() {
            return Ok(None);
        }
        let (ns, name) = informer::split_key(obj_key);
        for r in &refs {
            let Some(ok) = Kind::parse(&r.kind) else {
                // An owner of a kind this collector does not know: leave the object alone.
                return Ok(None);
            };
            if self.owner_exists(ok, ns, &r.name, &r.uid).await? {
                return Ok(None);
            }
        }
        // Every owner is gone: delete, in the foreground if an owner asked for that.
        let foreground =
            refs.iter().any(|r| r.block_owner_deletion == Some(true)) && kind != Kind::Pod;
        let dp = DeleteParams {
            propagation_policy: Some(if foreground {
                PropagationPolicy::Foreground
            } else {
                PropagationPolicy::Background
            }),
            ..Default::default()
        };
        match self.api(kind, ns).delete(name, &dp).await {
            Ok(_) => tracing::debug!(
                kind = kind.name(),
                object = obj_key,
                "deleted an orphaned dependent"
            ),
            Err(e) if crate::is_not_found(&e) => {}
            Err(e) => {
                return Err(api_err(
                    "delete dependent",
                    format!("{} {obj_key}", kind.name()),
                )(e));
            }
        }
        Ok(None)
    }

    async fn sync_owner(&self, kind: Kind, obj_key: &str) -> Result<Option<Duration>> {
        let Some(meta) = self.meta(kind, obj_key) else {
            return Ok(None);
        };
        if !finalizing(&meta) {
            return Ok(None);
        }
        let uid = meta.uid.clone().unwrap_or_default();
        let finalizers = meta.finalizers.clone().unwrap_or_default();
        let deps = self.dependents(&uid);
        let (ns, name) = informer::split_key(obj_key);
        if finalizers.iter().any(|f| f == ORPHAN) {
            for (dk, dm) in &deps {
                let refs: Vec<_> = dm
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| r.uid != uid)
                    .cloned()
                    .collect();
                let patch = serde_json::json!({"metadata": {"ownerReferences": refs}});
                let dname = dm.name.clone().unwrap_or_default();
                match self
                    .api(*dk, dm.namespace.as_deref())
                    .patch(&dname, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if crate::is_not_found(&e) => {}
                    Err(e) => {
                        return Err(api_err(
                            "orphan dependent",
                            format!("{} {dname}", dk.name()),
                        )(e));
                    }
                }
            }
            return self
                .remove_finalizer(kind, ns, name, &finalizers, ORPHAN)
                .await;
        }
        // Foreground: delete what is left, then wait until it is gone.
        let mut waiting = 0;
        for (dk, dm) in &deps {
            waiting += 1;
            if dm.deletion_timestamp.is_some() {
                continue;
            }
            let dname = dm.name.clone().unwrap_or_default();
            let dp = DeleteParams {
                propagation_policy: Some(if *dk == Kind::Pod {
                    PropagationPolicy::Background
                } else {
                    PropagationPolicy::Foreground
                }),
                ..Default::default()
            };
            match self
                .api(*dk, dm.namespace.as_deref())
                .delete(&dname, &dp)
                .await
            {
                Ok(_) => {}
                Err(e) if crate::is_not_found(&e) => {}
                Err(e) => {
                    return Err(api_err(
                        "delete dependent",
                        format!("{} {dname}", dk.name()),
                    )(e));
                }
            }
        }
        if waiting > 0 {
            return Ok(Some(Duration::from_secs(1)));
        }
        self.remove_finalizer(kind, ns, name, &finalizers, FOREGROUND)
            .await
    }

    async fn remove_finalizer(
        &self,
        kind: Kind,
        ns: Option<&str>,
        name: &str,
        finalizers: &[String],
        which: &str,
    ) -> Result<Option<Duration>> {
        let rest: Vec<&String> = finalizers.iter().filter(|f| *f != which).collect();
        let patch = serde_json::json!({"metadata": {"finalizers": rest}});
        match self
            .api(kind, ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if crate::is_not_found(&e) => Ok(None),
            Err(e) => Err(api_err(
                "remove finalizer from",
                format!("{} {name}", kind.name()),
            )(e)),
        }
    }
}
