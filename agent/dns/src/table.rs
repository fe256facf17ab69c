//! The in-memory record table: Services and EndpointSlices in, DNS answers out, following
//! the Kubernetes DNS specification (kubernetes/dns `docs/specification.md`, schema 1.0.1)
//! as CoreDNS's `kubernetes` plugin implements it. Pure: no sockets, no hickory types, so
//! it is unit tested on its own; `server` turns its answers into messages.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label that ties an EndpointSlice to its Service (discovery.k8s.io/v1).
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The record types the table answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    A,
    Aaaa,
    Srv,
    /// Any other type: the name may exist, but there is no data of that type.
    Other,
}

/// One answer record; names are absolute, without the trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rec {
    A(String, Ipv4Addr),
    Aaaa(String, Ipv6Addr),
    Srv {
        name: String,
        port: u16,
        target: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Records for the answer section, plus A/AAAA for the additional section (SRV).
    Records(Vec<Rec>, Vec<Rec>),
    /// The name exists but has no records of this type: NOERROR, empty, SOA in authority.
    NoData,
    /// The name does not exist in the cluster zone: NXDOMAIN with the zone's SOA.
    NxDomain,
    /// The name is outside the cluster zone: forward it.
    NotOurs,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Port {
    name: String,
    protocol: String,
    port: u16,
}

#[derive(Clone, Debug, Default)]
struct SvcEntry {
    cluster_ips: Vec<IpAddr>,
    headless: bool,
    ports: Vec<Port>,
}

#[derive(Clone, Debug)]
struct EpEntry {
    ips: Vec<IpAddr>,
    hostname: Option<String>,
}

#[derive(Clone, Debug)]
struct SliceEntry {
    service: String,
    /// Ready endpoints only: the DNS spec publishes ready addresses (the endpoints
    /// controller already includes not-ready ones when `publishNotReadyAddresses` is set).
    endpoints: Vec<EpEntry>,
    ports: Vec<Port>,
}

/// Services and EndpointSlices of the whole cluster, indexed for lookups.
#[derive(Debug)]
pub struct RecordTable {
    zone: String,
    /// (namespace, service) -> entry.
    services: HashMap<(String, String), SvcEntry>,
    /// (namespace, slice name) -> entry.
    slices: HashMap<(String, String), SliceEntry>,
    /// (namespace, service) -> slice names, for headless lookups.
    by_service: HashMap<(String, String), BTreeMap<String, ()>>,
    /// namespace -> number of services in it (a namespace name exists while it has one).
    namespaces: HashMap<String, usize>,
}

fn meta_key(ns: Option<&str>, name: Option<&str>) -> (String, String) {
    (
        ns.unwrap_or("default").to_string(),
        name.unwrap_or("").to_string(),
    )
}

fn dashed(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

impl RecordTable {
    /// A table for the cluster domain `zone` (e.g. `cluster.local`).
    pub fn new(zone: &str) -> Self {
        RecordTable {
            zone: zone.trim_end_matches('.').to_ascii_lowercase(),
            services: HashMap::new(),
            slices: HashMap::new(),
            by_service: HashMap::new(),
            namespaces: HashMap::new(),
        }
    }

    pub fn zone(&self) -> &str {
        &self.zone
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// (namespace, name) of every service, for pruning after a relist.
    pub fn service_keys(&self) -> Vec<(String, String)> {
        self.services.keys().cloned().collect()
    }

    /// (namespace, name) of every EndpointSlice.
    pub fn slice_keys(&self) -> Vec<(String, String)> {
        self.slices.keys().cloned().collect()
    }

    pub fn apply_service(&mut self, svc: &Service) {
        let key = meta_key(
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        );
        let spec = svc.spec.clone().unwrap_or_default();
        let mut cluster_ips = Vec::new();
        let mut headless = false;
        for ip in spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
        {
            if ip == "None" {
                headless = true;
            } else if let Ok(ip) = ip.parse::<IpAddr>()
                && !cluster_ips.contains(&ip)
            {
                cluster_ips.push(ip);
            }
        }
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(Port {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    port: u16::try_from(p.port).ok()?,
                })
            })
            .collect();
        if !self.services.contains_key(&key) {
            *self.namespaces.entry(key.0.clone()).or_default() += 1;
        }
        self.services.insert(
            key,
            SvcEntry {
                cluster_ips,
                headless,
                ports,
            },
        );
    }

    pub fn remove_service(&mut self, ns: &str, name: &str) {
        if self
            .services
            .remove(&(ns.to_string(), name.to_string()))
            .is_some()
            && let Some(n) = self.namespaces.get_mut(ns)
        {
            *n -= 1;
            if *n == 0 {
                self.namespaces.remove(ns);
            }
        }
    }

    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let key = meta_key(
            slice.metadata.namespace.as_deref(),
            slice.metadata.name.as_deref(),
        );
        self.remove_slice(&key.0, &key.1);
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned()
        else {
            return;
        };
        let endpoints = slice
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .map(|e| EpEntry {
                ips: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                hostname: e.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
            })
            .collect();
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(Port {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    port: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        self.by_service
            .entry((key.0.clone(), service.clone()))
            .or_default()
            .insert(key.1.clone(), ());
        self.slices.insert(
            key,
            SliceEntry {
                service,
                endpoints,
                ports,
            },
        );
    }

    pub fn remove_slice(&mut self, ns: &str, name: &str) {
        let key = (ns.to_string(), name.to_string());
        if let Some(old) = self.slices.remove(&key) {
            let sk = (ns.to_string(), old.service);
            if let Some(m) = self.by_service.get_mut(&sk) {
                m.remove(name);
                if m.is_empty() {
                    self.by_service.remove(&sk);
                }
            }
        }
    }

    fn slices_of<'a>(&'a self, ns: &str, svc: &str) -> impl Iterator<Item = &'a SliceEntry> + 'a {
        let names = self.by_service.get(&(ns.to_string(), svc.to_string()));
        let ns = ns.to_string();
        names
            .into_iter()
            .flat_map(|m| m.keys())
            .filter_map(move |n| self.slices.get(&(ns.clone(), n.clone())))
    }

    /// Answers a query for `name` (any case, with or without the trailing dot).
    pub fn lookup(&self, name: &str, qtype: QType) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let rest = if name == self.zone {
            ""
        } else if let Some(r) = name
            .strip_suffix(&self.zone)
            .and_then(|r| r.strip_suffix('.'))
        {
            r
        } else {
            return Answer::NotOurs;
        };
        let labels: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('.').collect()
        };
        // Labels are read right to left: [.., ns, "svc"] or [.., ns, "pod"].
        match labels.as_slice() {
            [] | ["svc"] | ["pod"] => Answer::NoData,
            [ns, "svc"] | [ns, "pod"] => {
                if self.namespaces.contains_key(*ns) {
                    Answer::NoData
                } else {
                    Answer::NxDomain
                }
            }
            [svc, ns, "svc"] => self.service(&name, ns, svc, qtype),
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.srv(&name, ns, svc, &port[1..], &proto[1..], qtype)
            }
            [host, svc, ns, "svc"] => self.endpoint(&name, ns, svc, host, qtype),
            [ip, _ns, "pod"] => pod(&name, ip, qtype),
            _ => Answer::NxDomain,
        }
    }

    fn service(&self, name: &str, ns: &str, svc: &str, qtype: QType) -> Answer {
        let Some(entry) = self.services.get(&(ns.to_string(), svc.to_string())) else {
            return Answer::NxDomain;
        };
        let ips: Vec<IpAddr> = if entry.headless {
            let ips: Vec<IpAddr> = self
                .slices_of(ns, svc)
                .flat_map(|s| s.endpoints.iter().flat_map(|e| e.ips.iter().copied()))
                .collect();
            if ips.is_empty() {
                // Headless without ready endpoints does not exist (spec and CoreDNS).
                return Answer::NxDomain;
            }
            ips
        } else {
            entry.cluster_ips.clone()
        };
        address_answer(name, &ips, qtype)
    }

    fn endpoint(&self, name: &str, ns: &str, svc: &str, host: &str, qtype: QType) -> Answer {
        if !self
            .services
            .contains_key(&(ns.to_string(), svc.to_string()))
        {
            return Answer::NxDomain;
        }
        let ips: Vec<IpAddr> = self
            .slices_of(ns, svc)
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| match &e.hostname {
                Some(h) => h == host,
                None => e.ips.iter().any(|ip| dashed(ip) == host),
            })
            .flat_map(|e| e.ips.iter().copied())
            .collect();
        if ips.is_empty() {
            return Answer::NxDomain;
        }
        address_answer(name, &ips, qtype)
    }

    fn srv(
        &self,
        name: &str,
        ns: &str,
        svc: &str,
        port: &str,
        proto: &str,
        qtype: QType,
    ) -> Answer {
        let Some(entry) = self.services.get(&(ns.to_string(), svc.to_string())) else {
            return Answer::NxDomain;
        };
        let matches = |p: &Port| {
            !p.name.is_empty() && p.name == port && p.protocol.eq_ignore_ascii_case(proto)
        };
        let svc_name = format!("{svc}.{ns}.svc.{}", self.zone);
        let mut answers = Vec::new();
        let mut extra = Vec::new();
        if entry.headless {
            // One SRV per ready endpoint, pointing at its own name (spec 2.4.2).
            for s in self.slices_of(ns, svc) {
                let Some(p) = s.ports.iter().find(|p| matches(p)) else {
                    continue;
                };
                for e in &s.endpoints {
                    let Some(first) = e.ips.first() else { continue };
                    let host = e.hostname.clone().unwrap_or_else(|| dashed(first));
                    let target = format!("{host}.{svc_name}");
                    answers.push(Rec::Srv {
                        name: name.to_string(),
                        port: p.port,
                        target: target.clone(),
                    });
                    for ip in &e.ips {
                        extra.push(address_rec(&target, ip));
                    }
                }
            }
        } else if let Some(p) = entry.ports.iter().find(|p| matches(p)) {
            answers.push(Rec::Srv {
                name: name.to_string(),
                port: p.port,
                target: svc_name.clone(),
            });
            for ip in &entry.cluster_ips {
                extra.push(address_rec(&svc_name, ip));
            }
        }
        if answers.is_empty() {
            return Answer::NxDomain;
        }
        if qtype != QType::Srv {
            return Answer::NoData;
        }
        Answer::Records(answers, extra)
    }
}

fn address_rec(name: &str, ip: &IpAddr) -> Rec {
    match ip {
        IpAddr::V4(v4) => Rec::A(name.to_string(), *v4),
        IpAddr::V6(v6) => Rec::Aaaa(name.to_string(), *v6),
    }
}

fn address_answer(name: &str, ips: &[IpAddr], qtype: QType) -> Answer {
    let recs: Vec<Rec> = ips
        .iter()
        .filter(|ip| {
            matches!(
                (qtype, ip),
                (QType::A, IpAddr::V4(_)) | (QType::Aaaa, IpAddr::V6(_))
            )
        })
        .map(|ip| address_rec(name, ip))
        .collect();
    if recs.is_empty() {
        Answer::NoData
    } else {
        Answer::Records(recs, Vec::new())
    }
}

/// `<a-b-c-d>.<ns>.pod.<zone>`: CoreDNS `pods insecure` (kubeadm's default) echoes the IP.
fn pod(name: &str, label: &str, qtype: QType) -> Answer {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return address_answer(name, &[IpAddr::V4(v4)], qtype);
    }
    if let Ok(v6) = label.replace('-', ":").parse::<Ipv6Addr>() {
        return address_answer(name, &[IpAddr::V6(v6)], qtype);
    }
    Answer::NxDomain
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service json")
    }
    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("slice json")
    }

    fn table() -> RecordTable {
        let mut t = RecordTable::new("cluster.local");
        t.apply_service(&svc(
            json!({"metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00::20"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}}),
        ));
        t.apply_service(&svc(
            json!({"metadata": {"namespace": "default", "name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
        ));
        t.apply_slice(&slice(
            json!({"metadata": {"namespace": "default", "name": "db-1",
                "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "hostname": "db-0"},
                {"addresses": ["10.244.2.6"], "conditions": {"ready": true}},
                {"addresses": ["10.244.2.7"], "conditions": {"ready": false}}]}),
        ));
        t
    }

    fn a(name: &str, ip: &str) -> Rec {
        Rec::A(name.into(), ip.parse().expect("ip"))
    }

    #[test]
    fn cluster_ip_service_answers_its_address_per_family() {
        let t = table();
        let n = "web.default.svc.cluster.local";
        assert_eq!(
            t.lookup("WEB.default.svc.cluster.local.", QType::A),
            Answer::Records(vec![a(n, "10.96.0.20")], vec![])
        );
        assert_eq!(
            t.lookup(n, QType::Aaaa),
            Answer::Records(
                vec![Rec::Aaaa(n.into(), "fd00::20".parse().expect("ip"))],
                vec![]
            )
        );
        assert_eq!(t.lookup(n, QType::Other), Answer::NoData);
    }

    #[test]
    fn headless_service_answers_ready_endpoints_only() {
        let t = table();
        let n = "db.default.svc.cluster.local";
        assert_eq!(
            t.lookup(n, QType::A),
            Answer::Records(vec![a(n, "10.244.1.5"), a(n, "10.244.2.6")], vec![])
        );
        assert_eq!(
            t.lookup("db-0.db.default.svc.cluster.local", QType::A),
            Answer::Records(
                vec![a("db-0.db.default.svc.cluster.local", "10.244.1.5")],
                vec![]
            )
        );
        assert_eq!(
            t.lookup("10-244-2-6.db.default.svc.cluster.local", QType::A),
            Answer::Records(
                vec![a("10-244-2-6.db.default.svc.cluster.local", "10.244.2.6")],
                vec![]
            )
        );
        assert_eq!(
            t.lookup("10-244-2-7.db.default.svc.cluster.local", QType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn srv_for_named_ports_only() {
        let t = table();
        let Answer::Records(srv, extra) =
            t.lookup("_http._tcp.web.default.svc.cluster.local", QType::Srv)
        else {
            panic!("expected SRV records");
        };
        assert_eq!(
            srv,
            vec![Rec::Srv {
                name: "_http._tcp.web.default.svc.cluster.local".into(),
                port: 80,
                target: "web.default.svc.cluster.local".into()
            }]
        );
        assert_eq!(extra.len(), 2);
        assert_eq!(
            t.lookup("_http._udp.web.default.svc.cluster.local", QType::Srv),
            Answer::NxDomain
        );
        let Answer::Records(srv, extra) =
            t.lookup("_pg._tcp.db.default.svc.cluster.local", QType::Srv)
        else {
            panic!("expected SRV records");
        };
        assert_eq!(srv.len(), 2);
        assert!(extra.contains(&a("db-0.db.default.svc.cluster.local", "10.244.1.5")));
    }

    #[test]
    fn negative_answers_and_other_zones() {
        let mut t = table();
        assert_eq!(
            t.lookup("nope.default.svc.cluster.local", QType::A),
            Answer::NxDomain
        );
        assert_eq!(
            t.lookup("default.svc.cluster.local", QType::A),
            Answer::NoData
        );
        assert_eq!(
            t.lookup("other.svc.cluster.local", QType::A),
            Answer::NxDomain
        );
        assert_eq!(t.lookup("cluster.local", QType::A), Answer::NoData);
        assert_eq!(
            t.lookup("a.b.c.d.e.cluster.local", QType::A),
            Answer::NxDomain
        );
        assert_eq!(t.lookup("example.com", QType::A), Answer::NotOurs);
        assert_eq!(t.lookup("notcluster.local", QType::A), Answer::NotOurs);
        t.remove_slice("default", "db-1");
        assert_eq!(
            t.lookup("db.default.svc.cluster.local", QType::A),
            Answer::NxDomain
        );
        t.remove_service("default", "web");
        assert_eq!(
            t.lookup("web.default.svc.cluster.local", QType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn pod_names_echo_the_dashed_address() {
        let t = table();
        let n = "10-244-1-5.default.pod.cluster.local";
        assert_eq!(
            t.lookup(n, QType::A),
            Answer::Records(vec![a(n, "10.244.1.5")], vec![])
        );
        assert_eq!(
            t.lookup("1-2-3.default.pod.cluster.local", QType::A),
            Answer::NxDomain
        );
    }
}
