//! Keeps the [`RecordTable`](crate::table::RecordTable) current from kube watches of
//! Services and EndpointSlices in all namespaces (kube-runtime's `watcher`, which lists,
//! watches, and relists on expiry with back-off). After a relist, objects that were not
//! listed again are removed.

use std::collections::HashSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch as signal;

use crate::server::SharedTable;

fn key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

fn write(table: &SharedTable) -> std::sync::RwLockWriteGuard<'_, crate::table::RecordTable> {
    match table.write() {
        Ok(t) => t,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Watches Services until the stream ends (it does not: errors are retried with back-off).
/// `synced` is set to true after the first complete list.
async fn services(client: Client, table: SharedTable, synced: signal::Sender<bool>) {
    let api: Api<Service> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Apply(s)) => write(&table).apply_service(&s),
            Ok(Event::Delete(s)) => {
                let (ns, n) = key(&s.metadata);
                write(&table).remove_service(&ns, &n);
            }
            Ok(Event::Init) => seen.clear(),
            Ok(Event::InitApply(s)) => {
                seen.insert(key(&s.metadata));
                write(&table).apply_service(&s);
            }
            Ok(Event::InitDone) => {
                let mut t = write(&table);
                for (ns, n) in t.service_keys() {
                    if !seen.contains(&(ns.clone(), n.clone())) {
                        t.remove_service(&ns, &n);
                    }
                }
                drop(t);
                let _ = synced.send(true);
            }
            Err(e) => tracing::warn!(error = %e, "service watch failed; retrying"),
        }
    }
}

async fn slices(client: Client, table: SharedTable, synced: signal::Sender<bool>) {
    let api: Api<EndpointSlice> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Apply(s)) => write(&table).apply_slice(&s),
            Ok(Event::Delete(s)) => {
                let (ns, n) = key(&s.metadata);
                write(&table).remove_slice(&ns, &n);
            }
            Ok(Event::Init) => seen.clear(),
            Ok(Event::InitApply(s)) => {
                seen.insert(key(&s.metadata));
                write(&table).apply_slice(&s);
            }
            Ok(Event::InitDone) => {
                let mut t = write(&table);
                for (ns, n) in t.slice_keys() {
                    if !seen.contains(&(ns.clone(), n.clone())) {
                        t.remove_slice(&ns, &n);
                    }
                }
                drop(t);
                let _ = synced.send(true);
            }
            Err(e) => tracing::warn!(error = %e, "endpointslice watch failed; retrying"),
        }
    }
}

/// Handle of a running watch: `wait_synced` resolves once both kinds were listed.
pub struct Watch {
    services: signal::Receiver<bool>,
    slices: signal::Receiver<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watch {
    pub async fn wait_synced(&mut self) {
        let _ = self.services.wait_for(|v| *v).await;
        let _ = self.slices.wait_for(|v| *v).await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts watching Services and EndpointSlices into `table` (on the current runtime).
pub fn start(client: Client, table: SharedTable) -> Watch {
    let (s_tx, s_rx) = signal::channel(false);
    let (e_tx, e_rx) = signal::channel(false);
    let tasks = vec![
        tokio::spawn(services(client.clone(), table.clone(), s_tx)),
        tokio::spawn(slices(client, table, e_tx)),
    ];
    Watch {
        services: s_rx,
        slices: e_rx,
        tasks,
    }
}
