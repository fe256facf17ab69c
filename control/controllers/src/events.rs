//! The event recorder: controllers say what they did (`SuccessfulCreate`, `Scheduled`, ...) and a
//! background sink writes core/v1 Events. Like client-go's recorder, a repeat of the same
//! (object, type, reason, message, source) within the cache patches the existing Event's `count`
//! and `lastTimestamp` instead of creating another, and a full queue drops events rather than
//! slowing the loop that records them.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use std::collections::HashMap;
use tokio::sync::mpsc;

const QUEUE: usize = 4096;
const CACHE: usize = 4096;

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

struct Pending {
    regarding: ObjectReference,
    type_: &'static str,
    reason: &'static str,
    message: String,
    component: &'static str,
}

/// Records events for one component (`default-scheduler`, `replicaset-controller`, ...).
#[derive(Clone)]
pub struct Recorder {
    component: &'static str,
    tx: mpsc::Sender<Pending>,
}

/// The reference an Event keeps to the object it is about.
pub fn reference<K: Resource<DynamicType = ()>>(o: &K) -> ObjectReference {
    let m = o.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

impl Recorder {
    /// A recorder for `component` writing through `sink`.
    pub fn new(sink: &Sink, component: &'static str) -> Recorder {
        Recorder {
            component,
            tx: sink.tx.clone(),
        }
    }

    /// Records an event about `o` (never blocks; dropped when the sink is backed up).
    pub fn record<K: Resource<DynamicType = ()>>(
        &self,
        o: &K,
        type_: &'static str,
        reason: &'static str,
        message: impl Into<String>,
    ) {
        self.record_ref(reference(o), type_, reason, message);
    }

    pub fn record_ref(
        &self,
        regarding: ObjectReference,
        type_: &'static str,
        reason: &'static str,
        message: impl Into<String>,
    ) {
        let _ = self.tx.try_send(Pending {
            regarding,
            type_,
            reason,
            message: message.into(),
            component: self.component,
        });
    }
}

/// The writer behind every [`Recorder`].
pub struct Sink {
    tx: mpsc::Sender<Pending>,
    rx: Option<mpsc::Receiver<Pending>>,
}

impl Default for Sink {
    fn default() -> Self {
        Self::new()
    }
}

type DedupKey = (String, &'static str, &'static str, String, &'static str);

impl Sink {
    pub fn new() -> Sink {
        let (tx, rx) = mpsc::channel(QUEUE);
        Sink { tx, rx: Some(rx) }
    }

    /// Writes events until every recorder is gone. Runs at most once.
    pub async fn run(mut self, client: Client) {
        let Some(mut rx) = self.rx.take() else { return };
        drop(self.tx);
        // (involved uid/name, type, reason, message, component) -> (namespace, event name, count)
        let mut seen: HashMap<DedupKey, (String, String, i32)> = HashMap::new();
        while let Some(p) = rx.recv().await {
            let ns = p
                .regarding
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".to_string());
            let api: Api<Event> = Api::namespaced(client.clone(), &ns);
            let who = p
                .regarding
                .uid
                .clone()
                .or_else(|| p.regarding.name.clone())
                .unwrap_or_default();
            let key: DedupKey = (who, p.type_, p.reason, p.message.clone(), p.component);
            let now = Timestamp::now();
            if let Some((ens, name, count)) = seen.get_mut(&key) {
                *count += 1;
                let patch = serde_json::json!({
                    "count": *count,
                    "lastTimestamp": Time(now),
                });
                let api: Api<Event> = Api::namespaced(client.clone(), ens);
                match api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => continue,
                    Err(e) if crate::is_not_found(&e) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "updating an event failed");
                        continue;
                    }
                }
            }
            let obj_name = p.regarding.name.clone().unwrap_or_default();
            let name = format!("{obj_name}.{:x}", now.as_nanosecond());
            let ev = Event {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    ..Default::default()
                },
                involved_object: p.regarding,
                reason: Some(p.reason.to_string()),
                message: Some(p.message),
                type_: Some(p.type_.to_string()),
                count: Some(1),
                first_timestamp: Some(Time(now)),
                last_timestamp: Some(Time(now)),
                event_time: None::<MicroTime>,
                source: Some(EventSource {
                    component: Some(p.component.to_string()),
                    host: None,
                }),
                reporting_component: Some(p.component.to_string()),
                reporting_instance: Some(p.component.to_string()),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &ev).await {
                Ok(_) => {
                    if seen.len() >= CACHE {
                        seen.clear();
                    }
                    seen.insert(key, (ns, name, 1));
                }
                Err(e) => tracing::debug!(error = %e, "writing an event failed"),
            }
        }
    }
}
