//! Namespace lifecycle (pkg/controller/namespace): when a namespace is being deleted (phase
//! Terminating, `deletionTimestamp` set by the API server), delete everything in it, kind by
//! kind, workloads first, and once nothing is left remove the `kubernetes` finalizer through
//! `PUT /api/v1/namespaces/<ns>/finalize`, after which the API server deletes the namespace.

use crate::informer::{self, Informer};
use crate::queue::{self, Queue};
use crate::{Result, api_err};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;

/// Everything namespaced the API serves, in deletion order (owners before what they own).
fn resources() -> Vec<ApiResource> {
    vec![
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<DaemonSet>(&()),
        ApiResource::erase::<ReplicaSet>(&()),
        ApiResource::erase::<Pod>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<Endpoints>(&()),
        ApiResource::erase::<EndpointSlice>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Secret>(&()),
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<Lease>(&()),
        ApiResource::erase::<Event>(&()),
    ]
}

/// Subscribes at once; the returned future runs the controller.
pub fn run(
    client: Client,
    namespaces: Arc<Informer<Namespace>>,
) -> impl std::future::Future<Output = ()> + Send {
    let queue = Queue::new();
    let mut rx = namespaces.subscribe();
    let q = Arc::clone(&queue);
    async move {
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                if c.object().metadata.deletion_timestamp.is_some() {
                    q.add(informer::key_of(c.object().as_ref()));
                }
            }
        });
        namespaces.synced().await;
        queue::run_workers("namespace", queue, 2, move |key| {
            let client = client.clone();
            let namespaces = Arc::clone(&namespaces);
            async move { sync(client, &namespaces, &key).await }
        })
        .await;
    }
}

async fn sync(
    client: Client,
    namespaces: &Informer<Namespace>,
    name: &str,
) -> Result<Option<Duration>> {
    let Some(ns) = informer::get(namespaces.store(), name) else {
        return Ok(None);
    };
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(None);
    }
    let mut left = 0;
    for ar in resources() {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), name, &ar);
        let list = api.list(&ListParams::default()).await.map_err(api_err(
            "list for namespace deletion",
            format!("{} in {name}", ar.plural),
        ))?;
        for o in list.items {
            left += 1;
            if o.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let oname = o.metadata.name.clone().unwrap_or_default();
            match api.delete(&oname, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if crate::is_not_found(&e) => {}
                Err(e) => {
                    return Err(api_err(
                        "delete for namespace deletion",
                        format!("{} {name}/{oname}", ar.plural),
                    )(e));
                }
            }
        }
    }
    if left > 0 {
        return Ok(Some(Duration::from_secs(1)));
    }
    let spec_finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.as_ref());
    if spec_finalizers.is_some_and(|f| f.iter().any(|f| f == "kubernetes")) {
        let mut body = (*ns).clone();
        if let Some(spec) = body.spec.as_mut() {
            spec.finalizers = Some(
                spec.finalizers
                    .take()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|f| f != "kubernetes")
                    .collect(),
            );
        }
        let api: Api<Namespace> = Api::all(client);
        match api
            .replace_subresource::<Namespace>("finalize", name, &PostParams::default(), &body)
            .await
        {
            Ok(_) => {}
            Err(e) if crate::is_not_found(&e) => {}
            Err(e) => return Err(api_err("finalize namespace", name)(e)),
        }
    }
    Ok(None)
}
