//! `run`: watches Nodes (kube-runtime's `watcher`: list, watch, relist with back-off) into a
//! local map and keeps the owned routes equal to `desired(self, nodes)`. Routes are first
//! applied after the initial list is complete (a partial picture would prune good routes),
//! then after every change, and re-applied with the masquerade table every [`RESYNC`] so that
//! someone flushing them by hand is repaired. Routes stay in place when the loop stops (pods
//! keep their connectivity across agent restarts); `cleanup` removes them.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch as signal;

use super::{Error, Route, apply, desired, masquerade, parse_cluster_cidrs};

/// How often routes and the masquerade table are re-applied without a Node change.
pub const RESYNC: Duration = Duration::from_secs(60);

/// Runs until `shutdown` is true or its sender is dropped. Fails only on a bad
/// `cluster_cidr`; kernel and API errors are logged and retried.
pub async fn run(
    client: Client,
    node_name: String,
    cluster_cidr: String,
    mut shutdown: signal::Receiver<bool>,
) -> Result<(), Error> {
    let cidrs = parse_cluster_cidrs(&cluster_cidr)?;
    if let Err(e) = masquerade(&cidrs).await {
        tracing::warn!(error = %e, "masquerade setup failed; retrying at the next resync");
    }
    let api: Api<Node> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut listing: BTreeMap<String, Node> = BTreeMap::new();
    let mut synced = false;
    let mut applied: Option<Vec<Route>> = None;
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let mut force = false;
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return Ok(());
                }
                continue;
            }
            _ = resync.tick() => {
                force = true;
                if let Err(e) = masquerade(&cidrs).await {
                    tracing::warn!(error = %e, "masquerade refresh failed");
                }
            }
            ev = stream.next() => match ev {
                None => return Ok(()),
                Some(Ok(Event::Apply(n))) => {
                    nodes.insert(n.metadata.name.clone().unwrap_or_default(), n);
                }
                Some(Ok(Event::Delete(n))) => {
                    nodes.remove(n.metadata.name.as_deref().unwrap_or_default());
                }
                Some(Ok(Event::Init)) => listing.clear(),
                Some(Ok(Event::InitApply(n))) => {
                    listing.insert(n.metadata.name.clone().unwrap_or_default(), n);
                }
                Some(Ok(Event::InitDone)) => {
                    nodes = std::mem::take(&mut listing);
                    synced = true;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "node watch failed; retrying");
                    continue;
                }
            },
        }
        if !synced {
            continue;
        }
        let want = desired(&node_name, nodes.values());
        if !force && applied.as_ref() == Some(&want) {
            continue;
        }
        match apply(&want).await {
            Ok(()) => applied = Some(want),
            Err(e) => {
                tracing::warn!(error = %e, "pod routes not all applied; retrying at the next change or resync");
                applied = None;
            }
        }
    }
}
