//! Objects the API server keeps in place itself, as kube-apiserver does: the system namespaces
//! and the `kubernetes` Service (first service IP, port 443) with Endpoints and an EndpointSlice
//! at the advertised address, and the `kube-dns` Service at the cluster DNS address. Written
//! straight to the store, before the server listens.

use crate::apiserver::Settings;
use crate::apiserver::objects::now;
use crate::apiserver::subresources::first_service_ip;
use crate::store::{Backend, StoreError};
use serde_json::{Value, json};

async fn ensure(store: &dyn Backend, key: &str, obj: Value) -> Result<(), StoreError> {
    if store.get(key).await?.is_some() {
        return Ok(());
    }
    let mut obj = obj;
    obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    obj["metadata"]["creationTimestamp"] = json!(now());
    match store
        .create(key, serde_json::to_vec(&obj).unwrap_or_default())
        .await
    {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

pub async fn ensure_system_objects(store: &dyn Backend, s: &Settings) -> Result<(), StoreError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(
            store,
            &format!("/registry/core/namespaces/{ns}"),
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                   "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        )
        .await?;
    }
    let ip = first_service_ip(s.service_cidr).to_string();
    ensure(
        store,
        "/registry/core/services/default/kubernetes",
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "kubernetes", "namespace": "default",
                            "labels": {"component": "apiserver", "provider": "kubernetes"}},
               "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "sessionAffinity": "None",
                        "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster",
                        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": s.port}]},
               "status": {"loadBalancer": {}}}),
    )
    .await?;
    ensure(
        store,
        "/registry/core/endpoints/default/kubernetes",
        json!({"apiVersion": "v1", "kind": "Endpoints",
               "metadata": {"name": "kubernetes", "namespace": "default",
                            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
               "subsets": [{"addresses": [{"ip": s.advertise_address.to_string()}],
                            "ports": [{"name": "https", "port": s.port, "protocol": "TCP"}]}]}),
    )
    .await?;
    // Its EndpointSlice too (kube-apiserver's endpoints adapter writes both), so that
    // slice-watching proxies and DNS see the API server.
    let addr_type = if s.advertise_address.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    };
    ensure(
        store,
        "/registry/discovery.k8s.io/endpointslices/default/kubernetes",
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "kubernetes", "namespace": "default",
                            "labels": {"kubernetes.io/service-name": "kubernetes"}},
               "addressType": addr_type,
               "endpoints": [{"addresses": [s.advertise_address.to_string()],
                              "conditions": {"ready": true, "serving": true, "terminating": false}}],
               "ports": [{"name": "https", "port": s.port, "protocol": "TCP"}]}),
    )
    .await?;
    ensure_dns_service(store, s).await
}

/// The `kube-dns` Service kubeadm's DNS addon creates, at the 10th address of the service
/// CIDR (kubelet's default clusterDNS 10.96.0.10), so that the address is reserved and
/// `kube-dns.kube-system` resolves. It has no selector: every agent answers DNS on that
/// address itself (node-local, docs/architecture/dns.md) and its proxy leaves it alone.
/// Skipped when another Service already holds the address.
async fn ensure_dns_service(store: &dyn Backend, s: &Settings) -> Result<(), StoreError> {
    let net = s.service_cidr;
    let ip = std::net::Ipv4Addr::from(u32::from(net.network()).wrapping_add(10));
    if !net.contains(&ip) {
        return Ok(());
    }
    let ip = ip.to_string();
    let services = store.list("/registry/core/services/", None, 0).await?;
    let taken = services.items.iter().any(|kv| {
        serde_json::from_slice::<Value>(&kv.value)
            .ok()
            .and_then(|o| o.pointer("/spec/clusterIP").cloned())
            == Some(json!(ip))
    });
    if taken {
        return Ok(());
    }
    ensure(
        store,
        "/registry/core/services/kube-system/kube-dns",
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "kube-dns", "namespace": "kube-system",
                            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                                       "kubernetes.io/name": "CoreDNS"}},
               "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "sessionAffinity": "None",
                        "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster",
                        "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                                  {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]},
               "status": {"loadBalancer": {}}}),
    )
    .await
}
