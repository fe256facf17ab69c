//! The proxy's view of its inputs: node facts, and each Service port with the endpoints
//! kube-proxy would use for it, converted from `Service` and `EndpointSlice` objects.
//!
//! Endpoint semantics follow kube-proxy (`pkg/proxy/topology.go`, `CategorizeEndpoints`):
//! ready endpoints are used; when a service has none, serving-and-terminating endpoints are
//! used instead so that connections drain during a rolling update. A `ready` condition that
//! is unset counts as ready, an unset `serving` counts as `ready`, an unset `terminating` as
//! false (discovery.k8s.io/v1 `EndpointConditions`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label that ties an EndpointSlice to its Service (discovery.k8s.io/v1).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// kube-proxy's default ClientIP affinity timeout (`DefaultClientIPServiceAffinitySeconds`).
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

/// An IPv4 prefix such as `10.244.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("cidr {s:?}: expected <ipv4>/<prefix>"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("cidr {s:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("cidr {s:?}: prefix must be 0..=32"))?;
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What the proxy needs to know about the node it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// `metadata.name` of the Node; endpoints with this `nodeName` are local.
    pub name: String,
    /// Addresses on which NodePorts answer.
    pub addresses: Vec<Ipv4Addr>,
    /// The pod network; traffic to a ClusterIP from outside it is masqueraded. `None`
    /// disables that masquerade (kube-proxy without a local-traffic detector).
    pub cluster_cidr: Option<Cidr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
    fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// One backend address of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// One port of one Service, with everything the rule generator needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// `ns/name:portname` (kube-proxy's `ServicePortName`), used in logs and chain hashes.
    pub id: String,
    pub protocol: Protocol,
    pub port: u16,
    pub cluster_ips: Vec<Ipv4Addr>,
    /// `spec.externalIPs` and `status.loadBalancer.ingress[].ip`.
    pub external_ips: Vec<Ipv4Addr>,
    pub node_port: Option<u16>,
    /// ClientIP session affinity timeout in seconds.
    pub affinity: Option<u32>,
    pub external_local: bool,
    pub internal_local: bool,
    /// Endpoints used for cluster-wide traffic.
    pub cluster_endpoints: Vec<Endpoint>,
    /// Endpoints on this node (for the `Local` policies).
    pub local_endpoints: Vec<Endpoint>,
}

/// A per-service problem that does not stop the other services' rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub service: String,
    pub message: String,
}

/// Converts one Service and its EndpointSlices into service ports. Headless and
/// ExternalName services have no proxy rules and give an empty list.
pub fn service_ports(
    svc: &Service,
    slices: &[&EndpointSlice],
    node: &NodeInfo,
    warnings: &mut Vec<Warning>,
) -> Vec<ServicePort> {
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or("");
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let mut cluster_ips: Vec<Ipv4Addr> = Vec::new();
    let listed = spec.cluster_ips.clone().unwrap_or_default();
    for ip in listed.iter().chain(spec.cluster_ip.iter()) {
        if ip == "None" || ip.is_empty() {
            continue;
        }
        match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) if !cluster_ips.contains(&v4) => cluster_ips.push(v4),
            Ok(_) => {}
            Err(_) => warnings.push(Warning {
                service: format!("{ns}/{name}"),
                message: format!("spec.clusterIP {ip:?} is not an IP address; ignored"),
            }),
        }
    }
    if cluster_ips.is_empty() {
        return Vec::new(); // headless: DNS hands out endpoint IPs, nothing to proxy
    }
    let mut external_ips: Vec<Ipv4Addr> = Vec::new();
    let lb_ips = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| ing.iter().filter_map(|i| i.ip.clone()).collect::<Vec<_>>())
        .unwrap_or_default();
    for ip in spec.external_ips.iter().flatten().chain(lb_ips.iter()) {
        match ip.parse::<Ipv4Addr>() {
            Ok(v4) if !external_ips.contains(&v4) => external_ips.push(v4),
            Ok(_) => {}
            Err(_) => warnings.push(Warning {
                service: format!("{ns}/{name}"),
                message: format!("external IP {ip:?} is not an IPv4 address; ignored"),
            }),
        }
    }
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });
    let externally_reachable = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"))
        || !external_ips.is_empty();
    let external_local =
        externally_reachable && spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");

    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let pname = p.name.clone().unwrap_or_default();
        let id = format!("{ns}/{name}:{pname}");
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
            warnings.push(Warning {
                service: id,
                message: format!(
                    "protocol {:?} is not TCP, UDP or SCTP; port ignored",
                    p.protocol
                ),
            });
            continue;
        };
        let Some(port) = u16::try_from(p.port).ok().filter(|v| *v != 0) else {
            warnings.push(Warning {
                service: id,
                message: format!("port {} out of range; ignored", p.port),
            });
            continue;
        };
        let node_port = p
            .node_port
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0);
        let (cluster_endpoints, local_endpoints) =
            endpoints_for(slices, &pname, protocol, &node.name);
        out.push(ServicePort {
            id,
            protocol,
            port,
            cluster_ips: cluster_ips.clone(),
            external_ips: external_ips.clone(),
            node_port,
            affinity,
            external_local,
            internal_local,
            cluster_endpoints,
            local_endpoints,
        });
    }
    out
}

#[derive(Default)]
struct Categorized {
    ready: Vec<Endpoint>,
    terminating: Vec<Endpoint>,
}

/// Picks the endpoints of one service port from its slices: (cluster-wide, node-local).
fn endpoints_for(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
    node: &str,
) -> (Vec<Endpoint>, Vec<Endpoint>) {
    let mut all = Categorized::default();
    let mut local = Categorized::default();
    // Deduplicated by address: the same endpoint may appear in two slices during a move.
    let mut seen: BTreeMap<Endpoint, ()> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        }) else {
            continue;
        };
        let Some(port) = port
            .port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let Some(ip) = ep
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let e = Endpoint { ip, port };
            if seen.insert(e, ()).is_some() {
                continue;
            }
            let c = ep.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let is_local = ep.node_name.as_deref() == Some(node);
            for (bucket, yes) in [(&mut all, true), (&mut local, is_local)] {
                if !yes {
                    continue;
                }
                if ready {
                    bucket.ready.push(e);
                } else if serving && terminating {
                    bucket.terminating.push(e);
                }
            }
        }
    }
    let pick = |c: Categorized| {
        let mut v = if c.ready.is_empty() {
            c.terminating
        } else {
            c.ready
        };
        v.sort();
        v
    };
    (pick(all), pick(local))
}
