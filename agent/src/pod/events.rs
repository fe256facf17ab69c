//! Events about pods, as kubelet records them (source component `kubelet`, host = this node):
//! Pulling, Pulled, Created, Started, Killing, BackOff, Failed, Unhealthy, FailedMount, ...
//! Fire and forget: an event that cannot be written is logged, never retried. The same
//! (pod, reason, message) within a minute is written once.

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPEAT_WINDOW: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    node: String,
    recent: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Recorder {
    pub fn new(client: kube::Client, node: String) -> Recorder {
        Recorder {
            client,
            node,
            recent: Arc::default(),
        }
    }

    pub fn normal(&self, pod: &Pod, reason: &str, message: String) {
        self.emit(pod, "Normal", reason, message);
    }

    pub fn warning(&self, pod: &Pod, reason: &str, message: String) {
        self.emit(pod, "Warning", reason, message);
    }

    fn emit(&self, pod: &Pod, kind: &str, reason: &str, message: String) {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let key = format!("{uid}/{reason}/{message}");
        {
            let Ok(mut recent) = self.recent.lock() else {
                return;
            };
            let now = Instant::now();
            recent.retain(|_, t| now.duration_since(*t) < REPEAT_WINDOW);
            if recent.contains_key(&key) {
                return;
            }
            recent.insert(key, now);
        }
        let now = chrono::Utc::now();
        let stamp = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": format!("{name}.{:x}", now.timestamp_nanos_opt().unwrap_or(0)),
                "namespace": ns,
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": name,
                "namespace": ns,
                "uid": uid,
                "resourceVersion": pod.metadata.resource_version,
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": self.node},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        });
        let client = self.client.clone();
        tokio::spawn(async move {
            let api: kube::Api<k8s_openapi::api::core::v1::Event> =
                kube::Api::namespaced(client, &ns);
            let result = match serde_json::from_value(event) {
                Ok(ev) => api.create(&Default::default(), &ev).await.map(|_| ()),
                Err(e) => {
                    tracing::warn!(error = %e, "building an event");
                    Ok(())
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "writing an event failed");
            }
        });
    }
}
