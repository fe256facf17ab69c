//! The endpoints controller: keeps a core/v1 `Endpoints` object and the discovery.k8s.io/v1
//! `EndpointSlices` of every Service with a selector current with the pods it selects (the
//! roles of kube-controller-manager's endpoint and endpointslice controllers), and removes
//! them when the Service goes. What the objects should contain is computed in
//! [`crate::endpoints_desired`]; this file watches, compares and writes.
//!
//! Slices are found by their labels (`kubernetes.io/service-name` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`); slices written by
//! others (the API server's `kubernetes` slice, user slices of selectorless services) are never
//! touched. Like the ReplicaSet controller, a sync that created or deleted slices waits until
//! its cache has observed that, so the next sync of the same Service never creates twins.

use crate::endpoints_desired::{self as desired, SliceContent};
use crate::informer::{self, Change, Informer};
use crate::queue::{self, Queue};
use crate::replicaset::{controller_ref, observe};
use crate::{Result, api_err, is_not_found};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Controller {
    client: Client,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    services: Arc<Informer<Service>>,
    endpoints: Arc<Informer<Endpoints>>,
    slices: Arc<Informer<EndpointSlice>>,
    /// Pod key -> the service keys that selected it last time (to requeue them when its
    /// labels change and it leaves a service).
    pod_services: Mutex<HashMap<String, Vec<String>>>,
}

/// The service key a slice belongs to, if this controller manages it.
fn managed_slice_owner(s: &EndpointSlice) -> Option<String> {
    let l = s.metadata.labels.as_ref()?;
    if l.get(desired::MANAGED_BY_LABEL).map(String::as_str) != Some(desired::CONTROLLER_NAME) {
        return None;
    }
    let svc = l.get(desired::SERVICE_NAME_LABEL)?;
    Some(format!(
        "{}/{svc}",
        s.metadata.namespace.as_deref().unwrap_or_default()
    ))
}

impl Controller {
    /// A controller sharing the runner's pod and node caches; it watches Services, Endpoints and
    /// EndpointSlices itself.
    pub fn new(
        client: Client,
        pods: &Arc<Informer<Pod>>,
        nodes: &Arc<Informer<Node>>,
    ) -> Arc<Self> {
        Arc::new(Controller {
            pods: Arc::clone(pods),
            nodes: Arc::clone(nodes),
            services: Informer::new(Api::all(client.clone())),
            endpoints: Informer::new(Api::all(client.clone())),
            slices: Informer::new(Api::all(client.clone())),
            client,
            pod_services: Mutex::new(HashMap::new()),
        })
    }

    /// The services in the pod's namespace that select it now, recorded for next time; returns
    /// those and the ones that selected it before.
    fn services_of_pod(&self, pod: &Pod, deleted: bool) -> Vec<String> {
        let pkey = informer::key_of(pod);
        let now: Vec<String> = if deleted {
            Vec::new()
        } else {
            self.services
                .store()
                .state()
                .iter()
                .filter(|s| desired::selects(s, pod))
                .map(|s| informer::key_of(s.as_ref()))
                .collect()
        };
        let mut map = self.pod_services.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: HashSet<String> = now.iter().cloned().collect();
        if let Some(before) = map.remove(&pkey) {
            all.extend(before);
        }
        if !now.is_empty() {
            map.insert(pkey, now);
        }
        all.into_iter().collect()
    }

    /// Subscribes at once; the returned future runs the controller (and its own watches).
    pub fn run(self: Arc<Self>, workers: usize) -> impl std::future::Future<Output = ()> + Send {
        let queue = Queue::new();
        let mut svc_rx = self.services.subscribe();
        let mut ep_rx = self.endpoints.subscribe();
        let mut slice_rx = self.slices.subscribe();
        let mut pod_rx = self.pods.subscribe();
        let q = Arc::clone(&queue);
        let me = Arc::clone(&self);
        async move {
            let watches = [
                tokio::spawn(Arc::clone(&self.services).run()),
                tokio::spawn(Arc::clone(&self.endpoints).run()),
                tokio::spawn(Arc::clone(&self.slices).run()),
            ];
            let events = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        Some(c) = svc_rx.recv() => q.add(informer::key_of(c.object().as_ref())),
                        Some(c) = ep_rx.recv() => {
                            // Only Endpoints of a known Service: an Endpoints object without
                            // one may be someone's manual record.
                            let k = informer::key_of(c.object().as_ref());
                            if informer::get(me.services.store(), &k).is_some() {
                                q.add(k);
                            }
                        }
                        Some(c) = slice_rx.recv() => {
                            if let Some(k) = managed_slice_owner(c.object()) {
                                q.add(k);
                            }
                        }
                        Some(c) = pod_rx.recv() => {
                            let deleted = matches!(c, Change::Deleted(_));
                            for k in me.services_of_pod(c.object(), deleted) {
                                q.add(k);
                            }
                        }
                        else => break,
                    }
                }
            });
            self.pods.synced().await;
            self.nodes.synced().await;
            self.services.synced().await;
            self.endpoints.synced().await;
            self.slices.synced().await;
            let me = Arc::clone(&self);
            queue::run_workers("endpoints", queue, workers, move |key| {
                let me = Arc::clone(&me);
                async move { me.sync(&key).await }
            })
            .await;
            events.abort();
            for w in watches {
                w.abort();
            }
        }
    }

    async fn sync(&self, key: &str) -> Result<Option<Duration>> {
        let (ns, name) = informer::split_key(key);
        let ns = ns.unwrap_or_default().to_string();
        let svc = informer::get(self.services.store(), key);
        let Some(svc) = svc.filter(|s| s.metadata.deletion_timestamp.is_none()) else {
            return self.remove(&ns, name).await;
        };
        if !desired::is_managed(&svc) {
            // Selectorless services keep whatever Endpoints/slices their owner writes; slices
            // this controller wrote while the service had a selector go.
            self.reconcile_slices(&svc, &ns, Vec::new()).await?;
            return Ok(None);
        }
        let pods: Vec<Arc<Pod>> = self
            .pods
            .store()
            .state()
            .into_iter()
            .filter(|p| desired::selects(&svc, p))
            .collect();
        let refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        self.write_endpoints(&svc, &ns, name, &refs).await?;
        let nodes = self.nodes.store();
        let zone = |n: &str| {
            informer::get(nodes, n).and_then(|node| {
                node.metadata
                    .labels
                    .as_ref()?
                    .get(desired::ZONE_LABEL)
                    .cloned()
            })
        };
        let want = desired::slices(&svc, &refs, &zone);
        self.reconcile_slices(&svc, &ns, want).await?;
        Ok(None)
    }

    /// The service is gone: delete its Endpoints and the slices this controller wrote.
    async fn remove(&self, ns: &str, name: &str) -> Result<Option<Duration>> {
        let key = format!("{ns}/{name}");
        if informer::get(self.endpoints.store(), &key).is_some() {
            let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(api_err("delete endpoints", key.clone())(e)),
            }
        }
        let stale: Vec<Arc<EndpointSlice>> = self.managed_slices(&key);
        self.delete_slices(ns, &stale).await?;
        Ok(None)
    }

    fn managed_slices(&self, svc_key: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices
            .store()
            .state()
            .into_iter()
            .filter(|s| managed_slice_owner(s).as_deref() == Some(svc_key))
            .collect()
    }

    async fn write_endpoints(
        &self,
        svc: &Service,
        ns: &str,
        name: &str,
        pods: &[&Pod],
    ) -> Result<()> {
        let subsets = desired::endpoints_subsets(svc, pods);
        let labels = desired::labels(svc);
        let key = format!("{ns}/{name}");
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let current = informer::get(self.endpoints.store(), &key);
        let want_subsets = (!subsets.is_empty()).then_some(subsets);
        let want_labels = (!labels.is_empty()).then_some(labels);
        match current {
            Some(cur) => {
                let cur_subsets = cur.subsets.clone().filter(|s| !s.is_empty());
                let cur_labels = cur.metadata.labels.clone().filter(|l| !l.is_empty());
                if cur_subsets == want_subsets && cur_labels == want_labels {
                    return Ok(());
                }
                let mut ep = (*cur).clone();
                ep.subsets = want_subsets;
                ep.metadata.labels = want_labels;
                api.replace(name, &PostParams::default(), &ep)
                    .await
                    .map_err(api_err("update endpoints", key))?;
            }
            None => {
                let ep = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        namespace: Some(ns.to_string()),
                        labels: want_labels,
                        ..Default::default()
                    },
                    subsets: want_subsets,
                };
                match api.create(&PostParams::default(), &ep).await {
                    Ok(_) => {}
                    // Someone else's (or a cache that lags): the next event syncs again.
                    Err(e) if crate::is_conflict(&e) => {
                        return Err(crate::Error::CacheLag(format!("endpoints {key}")));
                    }
                    Err(e) => return Err(api_err("create endpoints", key)(e)),
                }
            }
        }
        Ok(())
    }

    fn slice_object(&self, svc: &Service, ns: &str, c: &SliceContent) -> EndpointSlice {
        let svc_name = svc.metadata.name.clone().unwrap_or_default();
        let mut labels = desired::labels(svc);
        labels.insert(desired::SERVICE_NAME_LABEL.into(), svc_name.clone());
        labels.insert(
            desired::MANAGED_BY_LABEL.into(),
            desired::CONTROLLER_NAME.into(),
        );
        EndpointSlice {
            metadata: ObjectMeta {
                generate_name: Some(format!("{svc_name}-")),
                namespace: Some(ns.to_string()),
                labels: Some(labels),
                owner_references: Some(vec![controller_ref(svc)]),
                ..Default::default()
            },
            address_type: c.address_type.clone(),
            endpoints: c.endpoints.clone(),
            ports: Some(c.ports.clone()),
        }
    }

    /// Makes the managed slices of `svc` equal `want`: identical slices stay, others are
    /// rewritten in place (same address type), created, or deleted.
    async fn reconcile_slices(
        &self,
        svc: &Service,
        ns: &str,
        want: Vec<SliceContent>,
    ) -> Result<()> {
        let svc_key = informer::key_of(svc);
        let mut existing: Vec<Arc<EndpointSlice>> = self.managed_slices(&svc_key);
        existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let desired_objs: Vec<EndpointSlice> =
            want.iter().map(|c| self.slice_object(svc, ns, c)).collect();
        let same = |cur: &EndpointSlice, d: &EndpointSlice| {
            cur.address_type == d.address_type
                && cur.endpoints == d.endpoints
                && cur.ports.clone().unwrap_or_default() == d.ports.clone().unwrap_or_default()
                && cur.metadata.labels == d.metadata.labels
                && cur.metadata.owner_references == d.metadata.owner_references
        };
        let mut used = vec![false; existing.len()];
        let mut todo: Vec<&EndpointSlice> = Vec::new();
        for d in &desired_objs {
            match (0..existing.len()).find(|&i| !used[i] && same(&existing[i], d)) {
                Some(i) => used[i] = true,
                None => todo.push(d),
            }
        }
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let mut created = Vec::new();
        for d in todo {
            let reuse = (0..existing.len())
                .find(|&i| !used[i] && existing[i].address_type == d.address_type);
            match reuse {
                Some(i) => {
                    used[i] = true;
                    let mut s = (*existing[i]).clone();
                    s.endpoints = d.endpoints.clone();
                    s.ports = d.ports.clone();
                    s.metadata.labels = d.metadata.labels.clone();
                    s.metadata.owner_references = d.metadata.owner_references.clone();
                    let name = s.metadata.name.clone().unwrap_or_default();
                    api.replace(&name, &PostParams::default(), &s)
                        .await
                        .map_err(api_err("update endpointslice", format!("{ns}/{name}")))?;
                }
                None => {
                    let s = api
                        .create(&PostParams::default(), d)
                        .await
                        .map_err(api_err("create endpointslice for", svc_key.clone()))?;
                    created.push(s.metadata.name.unwrap_or_default());
                }
            }
        }
        let stale: Vec<Arc<EndpointSlice>> = existing
            .into_iter()
            .zip(used)
            .filter_map(|(s, u)| (!u).then_some(s))
            .collect();
        self.delete_slices(ns, &stale).await?;
        if !created.is_empty() {
            let store = self.slices.store();
            observe(&format!("endpointslices created for {svc_key}"), || {
                created
                    .iter()
                    .all(|n| informer::get(store, &format!("{ns}/{n}")).is_some())
            })
            .await?;
        }
        Ok(())
    }

    async fn delete_slices(&self, ns: &str, stale: &[Arc<EndpointSlice>]) -> Result<()> {
        if stale.is_empty() {
            return Ok(());
        }
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let mut names = Vec::new();
        for s in stale {
            let name = s.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => names.push(name),
                Err(e) if is_not_found(&e) => names.push(name),
                Err(e) => return Err(api_err("delete endpointslice", format!("{ns}/{name}"))(e)),
            }
        }
        let store = self.slices.store();
        observe("endpointslices deleted", || {
            names
                .iter()
                .all(|n| informer::get(store, &format!("{ns}/{n}")).is_none())
        })
        .await
    }
}
