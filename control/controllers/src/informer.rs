//! Shared informers: one watch per resource type (kube-runtime's `watcher` + `reflector`), a
//! local cache every loop reads, and a fan-out of every change (including deletions, which
//! kube-runtime's shared streams drop) to the loops that subscribed before the watch started.

use futures_util::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// A change a loop hears about.
#[derive(Debug, Clone)]
pub enum Change<K> {
    /// Created or updated (also sent for every object after each (re)list).
    Applied(Arc<K>),
    /// Deleted; carries the last state the cache saw.
    Deleted(Arc<K>),
}

impl<K> Change<K> {
    pub fn object(&self) -> &Arc<K> {
        match self {
            Change::Applied(o) | Change::Deleted(o) => o,
        }
    }
}

/// A watch of one resource type, its cache, and its subscribers.
pub struct Informer<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    api: Api<K>,
    store: Store<K>,
    writer: Mutex<Option<reflector::store::Writer<K>>>,
    subscribers: Mutex<Vec<UnboundedSender<Change<K>>>>,
    /// True once the first list is in the cache. (Not `Store::wait_until_ready`: with several
    /// concurrent waiters on one store, some were never woken.)
    ready: tokio::sync::watch::Sender<bool>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    pub fn new(api: Api<K>) -> Arc<Self> {
        let (store, writer) = reflector::store();
        Arc::new(Informer {
            api,
            store,
            writer: Mutex::new(Some(writer)),
            subscribers: Mutex::new(Vec::new()),
            ready: tokio::sync::watch::Sender::new(false),
        })
    }

    /// The cache (empty until the first list completes: see [`Informer::synced`]).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Waits until the first list has filled the cache.
    pub async fn synced(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// A stream of every change from now on.
    pub fn subscribe(&self) -> UnboundedReceiver<Change<K>> {
        let (tx, rx) = unbounded_channel();
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        rx
    }

    fn send(&self, change: Change<K>) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|s| s.send(change.clone()).is_ok());
    }

    /// Drives the watch until the task is dropped. Runs at most once.
    pub async fn run(self: Arc<Self>) {
        let Some(mut writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let mut stream = watcher(self.api.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        // Objects known before a relist, to report the ones that vanished during a gap.
        let mut before: HashMap<ObjectRef<K>, Arc<K>> = HashMap::new();
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::debug!(error = %e, kind = %K::kind(&()), "watch error; retrying");
                    continue;
                }
            };
            match &ev {
                watcher::Event::Init => {
                    before = self
                        .store
                        .state()
                        .into_iter()
                        .map(|o| (ObjectRef::from_obj(o.as_ref()), o))
                        .collect();
                    writer.apply_watcher_event(&ev);
                }
                watcher::Event::InitApply(_) => writer.apply_watcher_event(&ev),
                watcher::Event::InitDone => {
                    writer.apply_watcher_event(&ev);
                    tracing::trace!(kind = %K::kind(&()), objects = self.store.len(), "cache synced");
                    self.ready.send_replace(true);
                    for o in self.store.state() {
                        before.remove(&ObjectRef::from_obj(o.as_ref()));
                        self.send(Change::Applied(o));
                    }
                    for (_, gone) in before.drain() {
                        self.send(Change::Deleted(gone));
                    }
                }
                watcher::Event::Apply(o) => {
                    writer.apply_watcher_event(&ev);
                    tracing::trace!(kind = %K::kind(&()), name = ?o.meta().name, "applied");
                    self.send(Change::Applied(Arc::new(o.clone())));
                }
                watcher::Event::Delete(o) => {
                    writer.apply_watcher_event(&ev);
                    self.send(Change::Deleted(Arc::new(o.clone())));
                }
            }
        }
    }
}

/// The queue key of an object: `namespace/name`, or `name` when cluster-scoped.
pub fn key_of<K: Resource>(o: &K) -> String {
    meta_key(o.meta())
}

/// The queue key of an object's metadata.
pub fn meta_key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    let name = m.name.as_deref().unwrap_or_default();
    match m.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// Splits a queue key back into (namespace, name).
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

/// Looks a key up in a cache.
pub fn get<K>(store: &Store<K>, key: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (ns, name) = split_key(key);
    let mut r = ObjectRef::new(name);
    if let Some(ns) = ns {
        r = r.within(ns);
    }
    store.get(&r)
}

/// The uid of the controlling owner of `o`, if any.
pub fn controller_uid<K: Resource>(o: &K) -> Option<&str> {
    o.meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}
