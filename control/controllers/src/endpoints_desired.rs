//! What the endpoints controller wants to exist for one Service, computed from the Service, the
//! pods in its namespace and the nodes' zones: the core/v1 `Endpoints` subsets and the
//! discovery.k8s.io/v1 `EndpointSlice` contents. Pure; the controller compares and writes.
//!
//! Semantics follow kube-controller-manager (`pkg/controller/endpoint`,
//! `staging/src/k8s.io/endpointslice/utils.go`, `pkg/api/v1/pod/util.go FindPort`):
//! * a pod takes part when it has an IP and is not finished (`ShouldPodBeInEndpoints`:
//!   restartPolicy Never excludes Failed and Succeeded, OnFailure excludes Succeeded);
//!   Endpoints also leave out terminating pods unless `publishNotReadyAddresses`, slices keep
//!   them with `terminating: true`;
//! * `ready` = pod Ready (or `publishNotReadyAddresses`), never true while terminating unless
//!   `publishNotReadyAddresses`; `serving` = pod Ready; Endpoints put not-ready pods in
//!   `notReadyAddresses`;
//! * a named `targetPort` is looked up per pod among its containers' ports (name and
//!   protocol); a pod without it gets no such port (pods then group by their resolved ports);
//! * `hostname` is set when the pod's `spec.hostname` is set and `spec.subdomain` is the
//!   service name; headless services without ports still get addresses;
//! * slices hold at most 100 endpoints (`--max-endpoints-per-slice` default).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Label tying a slice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`] (kube-controller-manager's).
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Set (empty value) on the Endpoints and slices of headless services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Node label holding the zone copied into each slice endpoint.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Endpoints per slice (kube-controller-manager's `--max-endpoints-per-slice` default).
pub const MAX_PER_SLICE: usize = 100;

/// Does this controller keep Endpoints/EndpointSlices for `svc`? Only services with a
/// non-empty selector, and never ExternalName ones (their records are user-managed).
pub fn is_managed(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() != Some("ExternalName")
        && spec.selector.as_ref().is_some_and(|s| !s.is_empty())
}

/// Does `svc`'s selector select `pod` (same namespace, every selector label equal)?
pub fn selects(svc: &Service, pod: &Pod) -> bool {
    if svc.metadata.namespace != pod.metadata.namespace || !is_managed(svc) {
        return false;
    }
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Is the pod's Ready condition True?
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `ShouldPodBeInEndpoints`: an IP, not finished, not terminating unless `include_terminating`.
fn takes_part(pod: &Pod, include_terminating: bool) -> bool {
    let st = pod.status.as_ref();
    let has_ip = st
        .and_then(|s| s.pod_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty());
    if !has_ip || (!include_terminating && pod.metadata.deletion_timestamp.is_some()) {
        return false;
    }
    let phase = st.and_then(|s| s.phase.as_deref());
    match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
        Some("Never") => !matches!(phase, Some("Failed" | "Succeeded")),
        Some("OnFailure") => phase != Some("Succeeded"),
        _ => true,
    }
}

/// The pod's IPs (`status.podIPs`, else `status.podIP`), parsed.
fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(st) = &pod.status else { return vec![] };
    let mut out: Vec<IpAddr> = st
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if out.is_empty()
        && let Some(ip) = st.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
    {
        out.push(ip);
    }
    out
}

/// `FindPort`: the container port a service port's `targetPort` means on this pod.
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    match &sp.target_port {
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let proto = sp.protocol.as_deref().unwrap_or("TCP");
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == proto
                })
                .map(|p| p.container_port)
        }
        Some(IntOrString::Int(n)) if *n > 0 => Some(*n),
        _ => Some(sp.port),
    }
}

fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
}

/// The ports of `svc` resolved on `pod`, as slice ports (ports it cannot resolve left out).
fn resolved_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let mut out = Vec::new();
    for sp in service_ports(svc) {
        match find_port(pod, sp) {
            Some(port) => out.push(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            }),
            None => tracing::debug!(
                pod = ?pod.metadata.name,
                port = ?sp.target_port,
                "pod has no container port for the service's targetPort"
            ),
        }
    }
    out.sort_by(|a, b| (&a.name, a.port, &a.protocol).cmp(&(&b.name, b.port, &b.protocol)));
    out
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

fn hostname(svc: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let h = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()).then(|| h.to_string())
}

fn node_name(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// The labels of the Endpoints and slices: the service's own, plus the headless marker.
pub fn labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone().unwrap_or_default();
    l.remove(SERVICE_NAME_LABEL);
    l.remove(MANAGED_BY_LABEL);
    if is_headless(svc) {
        l.insert(HEADLESS_LABEL.into(), String::new());
    }
    l
}

fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// (name, port, protocol) of each port of a subset: subsets are grouped by it.
type PortKey = Vec<(String, i32, String)>;
/// Ready and not-ready addresses of one subset, keyed by IP for sorting.
type AddressGroup = (
    BTreeMap<String, EndpointAddress>,
    BTreeMap<String, EndpointAddress>,
);
/// One slice group: its ports and endpoints keyed by address.
type SliceGroup = (Vec<EndpointPort>, BTreeMap<String, Endpoint>);

/// The `subsets` of the service's Endpoints, repacked (one subset per distinct port set,
/// addresses sorted by IP), as the endpoints controller writes them.
pub fn endpoints_subsets(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let tolerate = publish_not_ready(svc);
    let headless_no_ports = is_headless(svc) && service_ports(svc).is_empty();
    let mut groups: BTreeMap<PortKey, (Vec<CorePort>, AddressGroup)> = BTreeMap::new();
    for pod in pods {
        if !takes_part(pod, tolerate) {
            continue;
        }
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            continue;
        };
        let ports: Vec<CorePort> = resolved_ports(svc, pod)
            .into_iter()
            .map(|p| CorePort {
                name: p.name.filter(|n| !n.is_empty()),
                port: p.port.unwrap_or_default(),
                protocol: p.protocol,
                app_protocol: p.app_protocol,
            })
            .collect();
        if ports.is_empty() && !headless_no_ports {
            continue;
        }
        let addr = EndpointAddress {
            ip: ip.clone(),
            hostname: hostname(svc, pod),
            node_name: node_name(pod),
            target_ref: Some(pod_ref(pod)),
        };
        let key = ports
            .iter()
            .map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    p.port,
                    p.protocol.clone().unwrap_or_default(),
                )
            })
            .collect();
        let g = groups
            .entry(key)
            .or_insert_with(|| (ports, Default::default()));
        if tolerate || pod_ready(pod) {
            g.1.0.insert(ip, addr);
        } else {
            g.1.1.insert(ip, addr);
        }
    }
    groups
        .into_values()
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: (!ready.is_empty()).then(|| ready.into_values().collect()),
            not_ready_addresses: (!not_ready.is_empty()).then(|| not_ready.into_values().collect()),
            ports: (!ports.is_empty()).then_some(ports),
        })
        .collect()
}

/// The content of one slice the controller wants.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceContent {
    /// `IPv4` or `IPv6`.
    pub address_type: String,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}

/// The address families the service asks for (`spec.ipFamilies`, default IPv4).
fn address_types(svc: &Service) -> Vec<String> {
    let fams: Vec<String> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.clone())
        .unwrap_or_default();
    if fams.is_empty() {
        return vec!["IPv4".into()];
    }
    fams
}

/// The slices the service should have, grouped by address type and resolved port set, at most
/// [`MAX_PER_SLICE`] endpoints each, everything sorted. `zone` maps a node name to its zone.
pub fn slices(
    svc: &Service,
    pods: &[&Pod],
    zone: &dyn Fn(&str) -> Option<String>,
) -> Vec<SliceContent> {
    let tolerate = publish_not_ready(svc);
    let mut groups: BTreeMap<(String, String), SliceGroup> = BTreeMap::new();
    let types: BTreeSet<String> = address_types(svc).into_iter().collect();
    for pod in pods {
        if !takes_part(pod, true) {
            continue;
        }
        let ports = resolved_ports(svc, pod);
        let ready = pod_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        for ip in pod_ips(pod) {
            let at = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            if !types.contains(at) {
                continue;
            }
            let node = node_name(pod);
            let ep = Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(tolerate || (ready && !terminating)),
                    serving: Some(ready),
                    terminating: Some(terminating),
                }),
                hostname: hostname(svc, pod),
                zone: node.as_deref().and_then(zone),
                node_name: node,
                target_ref: Some(pod_ref(pod)),
                ..Default::default()
            };
            let key = format!("{ports:?}");
            groups
                .entry((at.to_string(), key))
                .or_insert_with(|| (ports.clone(), BTreeMap::new()))
                .1
                .insert(ip.to_string(), ep);
        }
    }
    let mut out = Vec::new();
    for ((at, _), (ports, eps)) in groups {
        let eps: Vec<Endpoint> = eps.into_values().collect();
        for chunk in eps.chunks(MAX_PER_SLICE) {
            out.push(SliceContent {
                address_type: at.clone(),
                ports: ports.clone(),
                endpoints: chunk.to_vec(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"namespace": "default", "name": "web",
            "labels": {"app": "web"}}, "spec": spec}))
        .expect("service")
    }

    fn pod(name: &str, ip: &str, ready: bool, extra: serde_json::Value) -> Pod {
        let mut p = json!({
            "metadata": {"namespace": "default", "name": name, "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
        if let (Some(m), Some(e)) = (p.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                let merged = match (m.get(k), v) {
                    (Some(serde_json::Value::Object(a)), serde_json::Value::Object(b)) => {
                        let mut a = a.clone();
                        a.extend(b.clone());
                        serde_json::Value::Object(a)
                    }
                    _ => v.clone(),
                };
                m.insert(k.clone(), merged);
            }
        }
        serde_json::from_value(p).expect("pod")
    }

    fn ips(addrs: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        addrs.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_pods_and_named_ports() {
        let s = svc(json!({"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http"}]}));
        let a = pod("a", "10.244.1.3", true, json!({}));
        let b = pod("b", "10.244.1.2", false, json!({}));
        let mut other = pod("c", "10.244.1.4", true, json!({}));
        other.spec.as_mut().expect("spec").containers[0].ports = None; // no "http" port
        let no_ip = pod(
            "d",
            "",
            true,
            json!({"status": {"podIP": null, "podIPs": null}}),
        );
        let pods = [&a, &b, &other, &no_ip];
        let subsets = endpoints_subsets(&s, &pods);
        assert_eq!(subsets.len(), 1, "{subsets:?}");
        assert_eq!(ips(&subsets[0].addresses), ["10.244.1.3"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.244.1.2"]);
        let ports = subsets[0].ports.as_ref().expect("ports");
        assert_eq!(
            (ports[0].port, ports[0].name.as_deref()),
            (8080, Some("http"))
        );
        let a0 = &subsets[0].addresses.as_ref().expect("addresses")[0];
        assert_eq!(a0.node_name.as_deref(), Some("n1"));
        assert_eq!(
            a0.target_ref.as_ref().and_then(|r| r.uid.as_deref()),
            Some("uid-a")
        );

        let zone = |n: &str| (n == "n1").then(|| "z1".to_string());
        let sl = slices(&s, &pods, &zone);
        // The pod without the named port is in its own port group (no ports).
        assert_eq!(sl.len(), 2, "{sl:?}");
        let with_ports = sl.iter().find(|c| !c.ports.is_empty()).expect("group");
        assert_eq!(with_ports.ports[0].port, Some(8080));
        let addrs: Vec<&str> = with_ports
            .endpoints
            .iter()
            .map(|e| e.addresses[0].as_str())
            .collect();
        assert_eq!(addrs, ["10.244.1.2", "10.244.1.3"]);
        let c = with_ports.endpoints[0]
            .conditions
            .as_ref()
            .expect("conditions");
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(false), Some(false))
        );
        assert_eq!(with_ports.endpoints[1].zone.as_deref(), Some("z1"));
    }

    #[test]
    fn terminating_pods_and_publish_not_ready() {
        let term = pod(
            "t",
            "10.244.1.9",
            true,
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        let nr = pod("n", "10.244.1.8", false, json!({}));
        let cases = [
            (
                false,
                vec!["10.244.1.8"],
                (Some(false), Some(true), Some(true)),
            ),
            (
                true,
                vec!["10.244.1.8", "10.244.1.9"],
                (Some(true), Some(true), Some(true)),
            ),
        ];
        for (publish, ready_ips, term_conds) in cases {
            let s = svc(
                json!({"selector": {"app": "web"}, "publishNotReadyAddresses": publish,
                "ports": [{"port": 80}]}),
            );
            let subsets = endpoints_subsets(&s, &[&term, &nr]);
            let all: Vec<&str> = if publish {
                ips(&subsets[0].addresses)
            } else {
                ips(&subsets[0].not_ready_addresses)
            };
            assert_eq!(all, ready_ips, "publish={publish}");
            let sl = slices(&s, &[&term, &nr], &|_| None);
            let t = sl[0]
                .endpoints
                .iter()
                .find(|e| e.addresses[0] == "10.244.1.9")
                .expect("terminating kept");
            let c = t.conditions.as_ref().expect("conditions");
            assert_eq!(
                (c.ready, c.serving, c.terminating),
                term_conds,
                "publish={publish}"
            );
        }
    }

    #[test]
    fn headless_without_ports_hostnames_and_finished_pods() {
        let s = svc(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let h = pod(
            "h",
            "10.244.1.5",
            true,
            json!({"spec": {"hostname": "h0", "subdomain": "web",
            "containers": [{"name": "c"}]}}),
        );
        let done = pod(
            "x",
            "10.244.1.6",
            false,
            json!({"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c"}]}, "status": {"phase": "Succeeded"}}),
        );
        let subsets = endpoints_subsets(&s, &[&h, &done]);
        assert_eq!(subsets.len(), 1);
        assert!(subsets[0].ports.is_none());
        let a = &subsets[0].addresses.as_ref().expect("addresses")[0];
        assert_eq!(a.hostname.as_deref(), Some("h0"));
        assert_eq!(labels(&s).get(HEADLESS_LABEL).map(String::as_str), Some(""));
        let sl = slices(&s, &[&h, &done], &|_| None);
        assert_eq!(sl.len(), 1);
        assert_eq!(sl[0].endpoints.len(), 1);
        assert_eq!(sl[0].endpoints[0].hostname.as_deref(), Some("h0"));
    }

    #[test]
    fn selection_and_chunking() {
        let s =
            svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}));
        assert!(is_managed(&s));
        assert!(!is_managed(&svc(json!({"ports": [{"port": 80}]}))));
        assert!(!is_managed(&svc(
            json!({"type": "ExternalName", "selector": {"app": "web"}})
        )));
        let pods: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.244.{}.{}", i / 200, i % 200 + 2),
                    true,
                    json!({}),
                )
            })
            .collect();
        assert!(selects(&s, &pods[0]));
        let mut other = pods[0].clone();
        other.metadata.labels = Some(BTreeMap::from([("app".into(), "db".into())]));
        assert!(!selects(&s, &other));
        let refs: Vec<&Pod> = pods.iter().collect();
        let sl = slices(&s, &refs, &|_| None);
        let sizes: Vec<usize> = sl.iter().map(|c| c.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!(sl[0].ports[0].port, Some(8080));
    }
}
