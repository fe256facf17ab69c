//! The pod sync loop: watch the pods bound to this node (`fieldSelector spec.nodeName`, the
//! only list the Node authorizer allows), hand every change to that pod's worker, and after a
//! restart resume from the records on disk: pods still in the API are re-adopted (their
//! containers keep running), pods that vanished meanwhile are torn down.

use super::Ctx;
use super::record::PodRecord;
use super::worker::{Msg, Worker};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

struct Sync {
    ctx: Arc<Ctx>,
    records: HashMap<String, PodRecord>,
    workers: HashMap<String, mpsc::Sender<Msg>>,
}

impl Sync {
    async fn send(&mut self, uid: &str, pod: Arc<Pod>, mut msg: Msg) {
        if let Some(tx) = self.workers.get(uid) {
            match tx.send(msg).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => {
                    self.workers.remove(uid);
                    // The worker ended (pod removed); a pod still being deleted needs nothing.
                    if pod.metadata.deletion_timestamp.is_some() || matches!(back, Msg::Gone) {
                        return;
                    }
                    msg = back;
                }
            }
        }
        let record = self.records.remove(uid);
        if record.is_none() && (finished(&pod) || matches!(msg, Msg::Gone)) {
            return;
        }
        let gone = matches!(msg, Msg::Gone);
        let tx = Worker::spawn(self.ctx.clone(), pod.clone(), record, gone).await;
        let _ = tx.send(Msg::Pod(pod)).await;
        self.workers.insert(uid.to_string(), tx);
    }

    async fn apply(&mut self, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let pod = Arc::new(pod);
        self.send(&uid, pod.clone(), Msg::Pod(pod)).await;
    }

    async fn gone(&mut self, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.send(&uid, Arc::new(pod), Msg::Gone).await;
    }

    /// Pods on disk that the API no longer has: tear them down.
    async fn orphans(&mut self, listed: &HashSet<String>) {
        let orphans: Vec<PodRecord> = self
            .records
            .values()
            .filter(|r| !listed.contains(&r.uid))
            .cloned()
            .collect();
        for r in orphans {
            tracing::info!(pod = %format!("{}/{}", r.namespace, r.name), uid = %r.uid, "removing a pod deleted while the agent was down");
            let mut pod = Pod::default();
            pod.metadata.name = Some(r.name.clone());
            pod.metadata.namespace = Some(r.namespace.clone());
            pod.metadata.uid = Some(r.uid.clone());
            self.gone(pod).await;
        }
    }
}

/// Runs until `shutdown` turns true. Containers keep running when the agent stops.
pub async fn run(ctx: Arc<Ctx>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let records: HashMap<String, PodRecord> = PodRecord::load_all(&ctx.layout.pods())
        .into_iter()
        .map(|r| (r.uid.clone(), r))
        .collect();
    let api: kube::Api<Pod> = kube::Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut stream = watcher::watcher(api, config).boxed();
    let mut s = Sync {
        ctx,
        records,
        workers: HashMap::new(),
    };
    let started = std::time::SystemTime::now();
    let mut listed: HashSet<String> = HashSet::new();
    let mut first_list = true;
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = shutdown.changed() => None,
        };
        let Some(event) = event else { break };
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pod)) => {
                listed.insert(pod.metadata.uid.clone().unwrap_or_default());
                s.apply(pod).await;
            }
            Ok(Event::InitDone) => {
                if first_list {
                    s.orphans(&listed).await;
                    collect_rootfs_leaks(&s.ctx, started).await;
                    first_list = false;
                }
            }
            Ok(Event::Apply(pod)) => s.apply(pod).await,
            Ok(Event::Delete(pod)) => s.gone(pod).await,
            Err(e) => {
                tracing::warn!(error = %e, "watching pods; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// Container root filesystems no pod record names, left by a crash between mounting a rootfs
/// and recording the container; only those older than this agent's start (a rootfs mounted
/// since belongs to a start in progress).
async fn collect_rootfs_leaks(ctx: &Arc<Ctx>, started: std::time::SystemTime) {
    let known: HashSet<String> = PodRecord::load_all(&ctx.layout.pods())
        .into_iter()
        .flat_map(|r| r.containers.into_iter().map(|c| c.id))
        .collect();
    let Ok(entries) = std::fs::read_dir(ctx.layout.images().join("containers")) else {
        return;
    };
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().to_string();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < started);
        if known.contains(&id) || !old {
            continue;
        }
        tracing::info!(container = %id, "removing a container rootfs no pod owns");
        let store = ctx.images.store.clone();
        let _ = tokio::task::spawn_blocking(move || keel_image::rootfs::remove(&store, &id)).await;
    }
}
