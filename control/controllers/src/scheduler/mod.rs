//! The scheduler: binds every pod without `spec.nodeName` (and `schedulerName` default-scheduler)
//! to a node through `pods/binding`. One task owns the [`cache::Cache`] and the scheduling
//! queue; it decides synchronously, counts the pod on its node at once ("assumes" it, like
//! kube-scheduler) and hands the binding to a bounded pool of tasks, so decisions never wait on
//! the API. Pods that fit nowhere get `PodScheduled=False/Unschedulable` with the FitError
//! message and a `FailedScheduling` event, and wait until a node or a bound pod changes (or a
//! minute passes) before they are tried again.

pub mod cache;
pub mod filter;
pub mod score;
#[cfg(test)]
mod tests;

use crate::events::{NORMAL, Recorder, WARNING};
use crate::informer::{self, Change, Informer};
use cache::{Cache, PodInfo};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Bindings in flight at once.
const BINDERS: usize = 256;
/// How long an unschedulable pod waits for a cluster change before it is retried anyway.
const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(60);

/// Is this pod one the scheduler must place?
pub fn wants_scheduling(p: &Pod) -> bool {
    let Some(spec) = &p.spec else { return false };
    let bound = spec.node_name.as_deref().is_some_and(|n| !n.is_empty());
    let ours = spec
        .scheduler_name
        .as_deref()
        .is_none_or(|s| s.is_empty() || s == SCHEDULER_NAME);
    !bound && ours && p.metadata.deletion_timestamp.is_none() && !terminal(p)
}

fn terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn bound_node(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

enum Outcome {
    Bound,
    Failed(String),
}

struct Loop {
    client: Client,
    pods: Arc<Informer<Pod>>,
    recorder: Recorder,
    cache: Cache,
    active: VecDeque<String>,
    queued: HashSet<String>,
    unschedulable: HashSet<String>,
    binders: Arc<Semaphore>,
    results: mpsc::UnboundedSender<(String, Outcome)>,
    retry: mpsc::UnboundedSender<String>,
}

/// Subscribes at once; the returned future runs the scheduler until it is dropped.
pub fn run(
    client: Client,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    recorder: Recorder,
) -> impl std::future::Future<Output = ()> + Send {
    let pod_rx = pods.subscribe();
    let node_rx = nodes.subscribe();
    schedule_loop(client, pods, nodes, recorder, pod_rx, node_rx)
}

async fn schedule_loop(
    client: Client,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    recorder: Recorder,
    mut pod_rx: mpsc::UnboundedReceiver<Change<Pod>>,
    mut node_rx: mpsc::UnboundedReceiver<Change<Node>>,
) {
    pods.synced().await;
    nodes.synced().await;
    let (results_tx, mut results_rx) = mpsc::unbounded_channel();
    let (retry_tx, mut retry_rx) = mpsc::unbounded_channel();
    let mut s = Loop {
        client,
        pods,
        recorder,
        cache: Cache::default(),
        active: VecDeque::new(),
        queued: HashSet::new(),
        unschedulable: HashSet::new(),
        binders: Arc::new(Semaphore::new(BINDERS)),
        results: results_tx,
        retry: retry_tx,
    };
    let mut flush = tokio::time::interval(UNSCHEDULABLE_FLUSH);
    loop {
        // Take in everything that has happened before deciding anything.
        while let Ok(c) = node_rx.try_recv() {
            s.on_node(c);
        }
        while let Ok(c) = pod_rx.try_recv() {
            s.on_pod(c);
        }
        while let Ok((key, o)) = results_rx.try_recv() {
            s.on_result(key, o);
        }
        while let Ok(key) = retry_rx.try_recv() {
            s.enqueue(key);
        }
        if let Some(key) = s.active.pop_front() {
            s.queued.remove(&key);
            s.schedule_one(&key);
            // Let the binders and watches run between decisions.
            if s.active.len().is_multiple_of(64) {
                tokio::task::yield_now().await;
            }
            continue;
        }
        tokio::select! {
            Some(c) = pod_rx.recv() => s.on_pod(c),
            Some(c) = node_rx.recv() => s.on_node(c),
            Some((k, o)) = results_rx.recv() => s.on_result(k, o),
            Some(k) = retry_rx.recv() => s.enqueue(k),
            _ = flush.tick() => s.flush_unschedulable(),
        }
    }
}

impl Loop {
    fn enqueue(&mut self, key: String) {
        self.unschedulable.remove(&key);
        if self.queued.insert(key.clone()) {
            self.active.push_back(key);
        }
    }

    /// Moves every unschedulable pod back to the active queue (the cluster changed).
    fn flush_unschedulable(&mut self) {
        let keys: Vec<String> = self.unschedulable.drain().collect();
        for k in keys {
            self.enqueue(k);
        }
    }

    fn on_node(&mut self, c: Change<Node>) {
        match c {
            Change::Applied(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                let before = self.cache.nodes.get(&name).map(|i| {
                    (
                        i.exists,
                        i.labels.clone(),
                        i.taints.clone(),
                        i.unschedulable,
                        i.ready,
                        i.allocatable,
                    )
                });
                self.cache.upsert_node(&n);
                let after = self.cache.nodes.get(&name).map(|i| {
                    (
                        i.exists,
                        i.labels.clone(),
                        i.taints.clone(),
                        i.unschedulable,
                        i.ready,
                        i.allocatable,
                    )
                });
                if before != after {
                    self.flush_unschedulable();
                }
            }
            Change::Deleted(n) => {
                self.cache
                    .remove_node(n.metadata.name.as_deref().unwrap_or_default());
            }
        }
    }

    fn on_pod(&mut self, c: Change<Pod>) {
        let key = informer::key_of(c.object().as_ref());
        match c {
            Change::Applied(p) => {
                if let Some(node) = bound_node(&p) {
                    let was_counted = self.cache.node_of(&key).is_some();
                    if terminal(&p) {
                        self.cache.forget(&key);
                        if was_counted {
                            self.flush_unschedulable();
                        }
                    } else {
                        self.cache.assume(node, PodInfo::from_pod(&p));
                    }
                    self.unschedulable.remove(&key);
                } else if wants_scheduling(&p)
                    && self.cache.node_of(&key).is_none()
                    && !self.unschedulable.contains(&key)
                {
                    self.enqueue(key);
                }
            }
            Change::Deleted(p) => {
                self.unschedulable.remove(&key);
                if self.cache.node_of(&key).is_some() {
                    self.cache.forget(&key);
                    if bound_node(&p).is_some() {
                        self.flush_unschedulable();
                    }
                }
            }
        }
    }

    fn on_result(&mut self, key: String, o: Outcome) {
        if let Outcome::Failed(e) = o {
            tracing::info!(pod = %key, error = %e, "binding failed; retrying");
            self.cache.forget(&key);
            let retry = self.retry.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = retry.send(key);
            });
        }
    }

    fn schedule_one(&mut self, key: &str) {
        let Some(pod) = informer::get(self.pods.store(), key) else {
            return;
        };
        if !wants_scheduling(&pod) || self.cache.node_of(key).is_some() {
            return;
        }
        let info = PodInfo::from_pod(&pod);
        match score::select_host(&info, self.cache.nodes.values()) {
            Ok(node) => {
                self.cache.assume(&node, info);
                self.bind(pod, node);
            }
            Err(message) => {
                self.unschedulable.insert(key.to_string());
                self.recorder
                    .record(pod.as_ref(), WARNING, "FailedScheduling", message.clone());
                let already = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| {
                        c.type_ == "PodScheduled"
                            && c.status == "False"
                            && c.message.as_deref() == Some(message.as_str())
                    });
                if !already {
                    let client = self.client.clone();
                    tokio::spawn(async move {
                        if let Err(e) = mark_unschedulable(client, &pod, &message).await {
                            tracing::debug!(error = %e, "writing PodScheduled=False failed");
                        }
                    });
                }
            }
        }
    }

    fn bind(&self, pod: Arc<Pod>, node: String) {
        let client = self.client.clone();
        let sem = Arc::clone(&self.binders);
        let results = self.results.clone();
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            let Ok(_permit) = sem.acquire_owned().await else {
                return;
            };
            let key = informer::key_of(pod.as_ref());
            let (ns, name) = informer::split_key(&key);
            let api: Api<Pod> = Api::namespaced(client, ns.unwrap_or("default"));
            let body = serde_json::json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": ns},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            });
            let r: Result<serde_json::Value, _> = api
                .create_subresource("binding", name, &PostParams::default(), &body)
                .await;
            let outcome = match r {
                Ok(_) => {
                    recorder.record(
                        pod.as_ref(),
                        NORMAL,
                        "Scheduled",
                        format!("Successfully assigned {key} to {node}"),
                    );
                    Outcome::Bound
                }
                // Already bound (by us, before a restart, or by someone else): the watch
                // will tell where; gone: nothing to do.
                Err(e) if crate::is_conflict(&e) || crate::is_not_found(&e) => Outcome::Bound,
                Err(e) => Outcome::Failed(e.to_string()),
            };
            let _ = results.send((key, outcome));
        });
    }
}

async fn mark_unschedulable(client: Client, pod: &Pod, message: &str) -> crate::Result<()> {
    let key = informer::key_of(pod);
    let (ns, name) = informer::split_key(&key);
    let api: Api<Pod> = Api::namespaced(client, ns.unwrap_or("default"));
    let patch = serde_json::json!({
        "status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastProbeTime": null,
            "lastTransitionTime": Time(k8s_openapi::jiff::Timestamp::now()),
        }]}
    });
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map_err(crate::api_err("update status of pod", key.clone()))?;
    Ok(())
}
