//! The one runner behind which every loop runs: it starts the shared informers, the event sink,
//! the scheduler and each controller, and stops them all when `shutdown` completes (dropping
//! the tasks), so that a later leader election only has to gate this one function.

use crate::events::{Recorder, Sink};
use crate::informer::Informer;
use crate::{
    Config, daemonset, deployment, endpoints, gc, namespace, nodeipam, replicaset, scheduler,
    tokencleaner,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use kube::{Api, Client};
use std::future::Future;
use std::sync::Arc;
use tokio::task::JoinSet;

/// The shared caches.
pub struct Informers {
    pub pods: Arc<Informer<Pod>>,
    pub nodes: Arc<Informer<Node>>,
    pub replicasets: Arc<Informer<ReplicaSet>>,
    pub deployments: Arc<Informer<Deployment>>,
    pub daemonsets: Arc<Informer<DaemonSet>>,
    pub namespaces: Arc<Informer<Namespace>>,
}

impl Informers {
    pub fn new(client: &Client) -> Informers {
        Informers {
            pods: Informer::new(Api::all(client.clone())),
            nodes: Informer::new(Api::all(client.clone())),
            replicasets: Informer::new(Api::all(client.clone())),
            deployments: Informer::new(Api::all(client.clone())),
            daemonsets: Informer::new(Api::all(client.clone())),
            namespaces: Informer::new(Api::all(client.clone())),
        }
    }
}

/// Starts every loop and runs them until `shutdown` completes.
pub async fn run(client: Client, config: Config, shutdown: impl Future<Output = ()>) {
    let inf = Informers::new(&client);
    let sink = Sink::new();
    let mut tasks = JoinSet::new();

    tasks.spawn(scheduler::run(
        client.clone(),
        Arc::clone(&inf.pods),
        Arc::clone(&inf.nodes),
        Recorder::new(&sink, scheduler::SCHEDULER_NAME),
    ));
    let rs = Arc::new(replicaset::Controller {
        client: client.clone(),
        pods: Arc::clone(&inf.pods),
        rss: Arc::clone(&inf.replicasets),
        recorder: Recorder::new(&sink, "replicaset-controller"),
    });
    tasks.spawn(rs.run(4));
    let dc = Arc::new(deployment::Controller {
        client: client.clone(),
        pods: Arc::clone(&inf.pods),
        rss: Arc::clone(&inf.replicasets),
        deployments: Arc::clone(&inf.deployments),
        recorder: Recorder::new(&sink, "deployment-controller"),
    });
    tasks.spawn(dc.run(4));
    let ds = Arc::new(daemonset::Controller {
        client: client.clone(),
        pods: Arc::clone(&inf.pods),
        nodes: Arc::clone(&inf.nodes),
        daemonsets: Arc::clone(&inf.daemonsets),
        recorder: Recorder::new(&sink, "daemonset-controller"),
    });
    tasks.spawn(ds.run(2));
    tasks.spawn(endpoints::Controller::new(client.clone(), &inf.pods, &inf.nodes).run(2));
    let gc = Arc::new(gc::Collector::new(client.clone(), &inf));
    tasks.spawn(gc.run(2));
    tasks.spawn(namespace::run(client.clone(), Arc::clone(&inf.namespaces)));
    match nodeipam::Allocator::new(&config.cluster_cidr, config.node_cidr_mask) {
        Ok(alloc) => {
            tasks.spawn(nodeipam::run(client.clone(), Arc::clone(&inf.nodes), alloc));
        }
        Err(e) => tracing::error!(error = %e, "node IPAM is off"),
    }
    let secrets: Arc<Informer<Secret>> =
        Informer::new(Api::namespaced(client.clone(), "kube-system"));
    tasks.spawn(tokencleaner::run(client.clone(), secrets));

    // The watches start last, after every loop has subscribed.
    tasks.spawn(Arc::clone(&inf.pods).run());
    tasks.spawn(Arc::clone(&inf.nodes).run());
    tasks.spawn(Arc::clone(&inf.replicasets).run());
    tasks.spawn(Arc::clone(&inf.deployments).run());
    tasks.spawn(Arc::clone(&inf.daemonsets).run());
    tasks.spawn(Arc::clone(&inf.namespaces).run());
    tasks.spawn(sink.run(client.clone()));

    tracing::debug!("controllers started");
    shutdown.await;
    tasks.shutdown().await;
}
