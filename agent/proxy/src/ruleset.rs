//! Pure rule generation: service ports in, the desired contents of Keel's nftables table out.
//!
//! Layout (the reasoning is in docs/architecture/proxy.md): everything lives in one private
//! table `ip keel`. Per-service state is almost entirely *map elements*, not rules or
//! chains: one verdict-map lookup dispatches a packet by (daddr, protocol, port) to a chain
//! shared by all services with the same endpoint count n (`lb-<n>`), which DNATs with
//! `numgen random mod n` as the last component of a lookup key in the `backends` map. So a
//! changed service is a handful of element updates, a 10,000-service table holds a few dozen
//! chains, and the first packet costs one hash lookup instead of a linear walk. Only
//! services with ClientIP affinity get chains of their own (`aff-<hash>`), because the
//! chosen endpoint must be remembered per client.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::model::{Endpoint, NodeInfo, ServicePort, Warning};

/// The masquerade mark bit (kube-proxy's default `--masquerade-bit 14`).
pub const MASQ_MARK: u32 = 0x4000;

/// Sets and maps whose elements the generator fills. The declarations are in
/// `render::STATIC`.
pub const SETS: [&str; 10] = [
    "service-ips",
    "service-nodeports",
    "backends",
    "nodeport-backends",
    "local-endpoints",
    "node-ips",
    "no-endpoints",
    "no-local-endpoints",
    "no-endpoint-nodeports",
    "no-local-endpoint-nodeports",
];

/// The chain that marks pod -> service -> endpoint-on-this-node traffic for masquerade.
pub const LOCAL_MASQ: &str = "local-masq";

/// Endpoint counts whose shared chains exist even when no service uses them, so that a
/// service whose endpoint count changes stays an incremental (elements-only) sync.
pub const PRECREATED: usize = 16;

/// The desired state of everything in the table that depends on services.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Non-base chains and their rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Per-endpoint ClientIP affinity sets and their timeout in seconds.
    pub affinity_sets: BTreeMap<String, u32>,
    /// Elements per set or map: key -> value ("" for plain sets).
    pub elements: BTreeMap<&'static str, BTreeMap<String, String>>,
}

/// The generator's output: the ruleset plus per-service problems to log.
pub struct Generated {
    pub ruleset: Ruleset,
    pub warnings: Vec<Warning>,
    /// (protocol-port key, endpoints) for every UDP destination, for conntrack clean-up.
    pub udp: BTreeMap<UdpKey, BTreeSet<Endpoint>>,
}

/// A UDP service destination: `Ip(addr, port)` or `NodePort(port)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum UdpKey {
    Ip(std::net::Ipv4Addr, u16),
    NodePort(u16),
}

struct Builder<'a> {
    node: &'a NodeInfo,
    rs: Ruleset,
    owner: std::collections::HashMap<(&'static str, String), String>,
    warnings: Vec<Warning>,
    udp: BTreeMap<UdpKey, BTreeSet<Endpoint>>,
}

/// Generates the ruleset for all service ports. Ports are processed in the given order;
/// when two claim the same address and port (or NodePort) the first keeps it and the
/// other gets a warning.
pub fn generate<'p>(
    ports: impl IntoIterator<Item = &'p ServicePort>,
    node: &NodeInfo,
) -> Generated {
    let mut b = Builder::new(node);
    b.static_part();
    for sp in ports {
        b.service_port(sp);
    }
    b.finish()
}

/// What does not depend on services: node addresses and the pre-created shared chains.
pub fn generate_static(node: &NodeInfo) -> Generated {
    let mut b = Builder::new(node);
    b.static_part();
    b.finish()
}

/// One service's share of the ruleset, without the static part. Conflicts with other
/// services are resolved when shares are merged (the proxier keeps the smallest key).
pub fn generate_service(ports: &[ServicePort], node: &NodeInfo) -> Generated {
    let mut b = Builder::new(node);
    for sp in ports {
        b.service_port(sp);
    }
    b.finish()
}

/// `aff-<16 hex>`: a stable per-(service port, traffic kind) name.
fn hashed(prefix: &str, id: &str) -> String {
    let d = Sha256::digest(id.as_bytes());
    let mut s = String::with_capacity(prefix.len() + 17);
    s.push_str(prefix);
    s.push('-');
    for b in &d[..8] {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn ep_value(e: &Endpoint) -> String {
    format!("{} . {}", e.ip, e.port)
}

impl<'a> Builder<'a> {
    fn new(node: &'a NodeInfo) -> Self {
        let mut b = Builder {
            node,
            rs: Ruleset::default(),
            owner: std::collections::HashMap::new(),
            warnings: Vec::new(),
            udp: BTreeMap::new(),
        };
        for s in SETS {
            b.rs.elements.insert(s, BTreeMap::new());
        }
        b
    }

    fn static_part(&mut self) {
        for ip in self.node.addresses.clone() {
            self.element("node-ips", ip.to_string(), String::new(), "");
        }
        // A pod reaching an endpoint on this node through a service: without br_netfilter
        // the endpoint's reply would cross the bridge straight back to the pod and skip
        // the reverse DNAT, so such traffic is masqueraded (the node answers for it). This
        // includes hairpin (a pod reaching itself: kube-proxy's per-endpoint
        // `-s <ep> -j KUBE-MARK-MASQ`), without a per-endpoint element. Without a cluster
        // CIDR the sources are approximated by the local endpoints themselves.
        let src = match self.node.cluster_cidr {
            Some(cidr) => cidr.to_string(),
            None => "@local-endpoints".to_string(),
        };
        let rules = vec![format!(
            "ct status dnat ip saddr {src} ip daddr @local-endpoints meta mark set meta mark | {MASQ_MARK:#x}"
        )];
        self.rs.chains.insert(LOCAL_MASQ.to_string(), rules);
        for n in 1..=PRECREATED {
            self.cluster_chain(n);
            self.ext_chain(n, false);
            self.ext_chain(n, true);
            self.nodeport_chain(n, false);
            self.nodeport_chain(n, true);
        }
    }

    fn finish(self) -> Generated {
        Generated {
            ruleset: self.rs,
            warnings: self.warnings,
            udp: self.udp,
        }
    }

    /// Adds one element, refusing a key some other service already owns.
    fn element(&mut self, set: &'static str, key: String, value: String, owner: &str) -> bool {
        match self.owner.get(&(set, key.clone())) {
            Some(first) if first != owner => {
                self.warnings.push(Warning {
                    service: owner.to_string(),
                    message: format!("{set} entry {key} is already used by {first}; ignored"),
                });
                false
            }
            Some(_) => false,
            None => {
                self.owner.insert((set, key.clone()), owner.to_string());
                if let Some(m) = self.rs.elements.get_mut(set) {
                    m.insert(key, value);
                }
                true
            }
        }
    }

    fn chain(&mut self, name: String, rules: Vec<String>) -> String {
        self.rs.chains.entry(name.clone()).or_insert(rules);
        name
    }

    fn masq_rule(&self) -> String {
        format!("meta mark set meta mark | {MASQ_MARK:#x}")
    }

    /// `lb-<n>`: DNAT by (daddr, proto, dport, random slot) in `backends`.
    fn lb_chain(&mut self, n: usize) -> String {
        let rule = format!(
            "dnat ip to ip daddr . meta l4proto . th dport . numgen random mod {n} map @backends"
        );
        self.chain(format!("lb-{n}"), vec![rule])
    }

    /// `cluster-<n>`: masquerade off-cluster clients, then `lb-<n>`.
    fn cluster_chain(&mut self, n: usize) -> String {
        let lb = self.lb_chain(n);
        let mut rules = Vec::new();
        if let Some(cidr) = self.node.cluster_cidr {
            rules.push(format!("ip saddr != {cidr} {}", self.masq_rule()));
        }
        rules.push(format!("goto {lb}"));
        self.chain(format!("cluster-{n}"), rules)
    }

    /// `ext-<n>` (Cluster policy: always masquerade) or `ext-local-<n>` (Local policy:
    /// keep the client address unless the client is this node itself).
    fn ext_chain(&mut self, n: usize, local: bool) -> String {
        let lb = self.lb_chain(n);
        if local {
            let r = format!("fib saddr type local {}", self.masq_rule());
            self.chain(format!("ext-local-{n}"), vec![r, format!("goto {lb}")])
        } else {
            let r = self.masq_rule();
            self.chain(format!("ext-{n}"), vec![r, format!("goto {lb}")])
        }
    }

    /// `np-<n>` / `np-local-<n>`: like `ext-*` but keyed by (proto, dport) only.
    fn nodeport_chain(&mut self, n: usize, local: bool) -> String {
        let dnat = format!(
            "dnat ip to meta l4proto . th dport . numgen random mod {n} map @nodeport-backends"
        );
        let masq = if local {
            format!("fib saddr type local {}", self.masq_rule())
        } else {
            self.masq_rule()
        };
        let name = if local {
            format!("np-local-{n}")
        } else {
            format!("np-{n}")
        };
        self.chain(name, vec![masq, dnat])
    }

    /// `aff-<h>`: per-endpoint "recently chosen by this client" sets, then a uniform pick
    /// that records the choice (kube-proxy's `-m recent --rcheck/--set` per endpoint).
    fn affinity_chain(
        &mut self,
        id: &str,
        proto: &str,
        eps: &[Endpoint],
        timeout: u32,
        masq: bool,
    ) -> String {
        let name = hashed("aff", id);
        if self.rs.chains.contains_key(&name) {
            return name;
        }
        let mut rules = Vec::new();
        if masq && let Some(cidr) = self.node.cluster_cidr {
            rules.push(format!("ip saddr != {cidr} {}", self.masq_rule()));
        }
        let sets: Vec<String> = (0..eps.len()).map(|i| format!("{name}-{i}")).collect();
        for (e, set) in eps.iter().zip(&sets) {
            rules.push(format!(
                "meta l4proto {proto} ip saddr @{set} update @{set} {{ ip saddr }} dnat ip to {}",
                ep_value_colon(e)
            ));
        }
        let n = eps.len();
        for (i, (e, set)) in eps.iter().zip(&sets).enumerate() {
            // Rule i matches with probability 1/(n-i) given the earlier ones did not:
            // uniform overall, the same arithmetic as kube-proxy's statistic rules.
            let pick = if i + 1 < n {
                format!("numgen random mod {} == 0 ", n - i)
            } else {
                String::new()
            };
            rules.push(format!(
                "meta l4proto {proto} {pick}update @{set} {{ ip saddr }} dnat ip to {}",
                ep_value_colon(e)
            ));
        }
        for set in sets {
            self.rs.affinity_sets.insert(set, timeout);
        }
        self.chain(name, rules)
    }

    fn local_endpoints(&mut self, eps: &[Endpoint]) {
        if let Some(m) = self.rs.elements.get_mut("local-endpoints") {
            for e in eps {
                m.insert(e.ip.to_string(), String::new());
            }
        }
    }

    fn udp(&mut self, sp: &ServicePort, key: UdpKey, eps: &[Endpoint]) {
        if sp.protocol == crate::model::Protocol::Udp {
            self.udp.entry(key).or_default().extend(eps.iter().copied());
        }
    }

    fn service_port(&mut self, sp: &ServicePort) {
        let proto = sp.protocol.nft();
        let id = sp.id.clone();
        self.local_endpoints(&sp.local_endpoints);
        // ClusterIPs.
        let eps = if sp.internal_local {
            &sp.local_endpoints
        } else {
            &sp.cluster_endpoints
        };
        for ip in &sp.cluster_ips {
            let key = format!("{ip} . {proto} . {}", sp.port);
            self.udp(sp, UdpKey::Ip(*ip, sp.port), eps);
            if eps.is_empty() {
                let set = if sp.internal_local && !sp.cluster_endpoints.is_empty() {
                    "no-local-endpoints"
                } else {
                    "no-endpoints"
                };
                self.element(set, key, String::new(), &id);
                continue;
            }
            let target = match sp.affinity {
                Some(t) => {
                    self.affinity_chain(&format!("{id}/{proto}/internal"), proto, eps, t, true)
                }
                None => self.cluster_chain(eps.len()),
            };
            if self.element("service-ips", key.clone(), format!("goto {target}"), &id)
                && sp.affinity.is_none()
            {
                for (i, e) in eps.iter().enumerate() {
                    self.element("backends", format!("{key} . {i}"), ep_value(e), &id);
                }
            }
        }
        // External IPs and NodePorts.
        let eps = if sp.external_local {
            &sp.local_endpoints
        } else {
            &sp.cluster_endpoints
        };
        let (reject, drop) = ("no-endpoints", "no-local-endpoints");
        for ip in &sp.external_ips {
            let key = format!("{ip} . {proto} . {}", sp.port);
            self.udp(sp, UdpKey::Ip(*ip, sp.port), eps);
            if eps.is_empty() {
                let set = if sp.external_local && !sp.cluster_endpoints.is_empty() {
                    drop
                } else {
                    reject
                };
                self.element(set, key, String::new(), &id);
                continue;
            }
            let target = match sp.affinity {
                Some(t) => self.affinity_ext(&id, proto, eps, t, sp.external_local),
                None => self.ext_chain(eps.len(), sp.external_local),
            };
            if self.element("service-ips", key.clone(), format!("goto {target}"), &id)
                && sp.affinity.is_none()
            {
                for (i, e) in eps.iter().enumerate() {
                    self.element("backends", format!("{key} . {i}"), ep_value(e), &id);
                }
            }
        }
        if let Some(np) = sp.node_port {
            let key = format!("{proto} . {np}");
            self.udp(sp, UdpKey::NodePort(np), eps);
            if eps.is_empty() {
                let set = if sp.external_local && !sp.cluster_endpoints.is_empty() {
                    "no-local-endpoint-nodeports"
                } else {
                    "no-endpoint-nodeports"
                };
                self.element(set, key, String::new(), &id);
                return;
            }
            let target = match sp.affinity {
                Some(t) => self.affinity_ext(&id, proto, eps, t, sp.external_local),
                None => self.nodeport_chain(eps.len(), sp.external_local),
            };
            if self.element(
                "service-nodeports",
                key.clone(),
                format!("goto {target}"),
                &id,
            ) && sp.affinity.is_none()
            {
                for (i, e) in eps.iter().enumerate() {
                    self.element(
                        "nodeport-backends",
                        format!("{key} . {i}"),
                        ep_value(e),
                        &id,
                    );
                }
            }
        }
    }

    /// External entry to an affinity service: masquerade as the policy says, then the
    /// affinity chain over the external endpoint set.
    fn affinity_ext(
        &mut self,
        id: &str,
        proto: &str,
        eps: &[Endpoint],
        t: u32,
        local: bool,
    ) -> String {
        let inner = self.affinity_chain(&format!("{id}/{proto}/external"), proto, eps, t, false);
        let masq = if local {
            format!("fib saddr type local {}", self.masq_rule())
        } else {
            self.masq_rule()
        };
        self.chain(
            hashed("affext", &format!("{id}/{proto}")),
            vec![masq, format!("goto {inner}")],
        )
    }
}

fn ep_value_colon(e: &Endpoint) -> String {
    format!("{}:{}", e.ip, e.port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cidr, Protocol};
    use std::net::Ipv4Addr;

    fn node() -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            addresses: vec![Ipv4Addr::new(192, 168, 0, 1)],
            cluster_cidr: Some("10.244.0.0/16".parse::<Cidr>().expect("cidr")),
        }
    }

    fn ep(last: u8) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::new(10, 244, 0, last),
            port: 8080,
        }
    }

    fn port(id: &str, ip: [u8; 4], eps: Vec<Endpoint>) -> ServicePort {
        ServicePort {
            id: id.into(),
            protocol: Protocol::Tcp,
            port: 80,
            cluster_ips: vec![Ipv4Addr::from(ip)],
            external_ips: vec![],
            node_port: None,
            affinity: None,
            external_local: false,
            internal_local: false,
            local_endpoints: vec![],
            cluster_endpoints: eps,
        }
    }

    #[test]
    fn cluster_ip_dispatches_to_the_shared_chain_and_fills_backends() {
        let g = generate(
            &[port(
                "default/web:http",
                [10, 96, 0, 10],
                vec![ep(2), ep(3)],
            )],
            &node(),
        );
        let rs = &g.ruleset;
        assert_eq!(
            rs.elements["service-ips"]["10.96.0.10 . tcp . 80"],
            "goto cluster-2"
        );
        assert_eq!(
            rs.elements["backends"]["10.96.0.10 . tcp . 80 . 1"],
            "10.244.0.3 . 8080"
        );
        assert_eq!(
            rs.chains["cluster-2"][0],
            "ip saddr != 10.244.0.0/16 meta mark set meta mark | 0x4000"
        );
        assert!(rs.chains["lb-2"][0].contains("numgen random mod 2 map @backends"));
    }

    #[test]
    fn local_endpoints_are_masqueraded_for_pods() {
        let mut p = port("default/web:http", [10, 96, 0, 10], vec![ep(2), ep(3)]);
        p.local_endpoints = vec![ep(3)];
        let g = generate(&[p], &node());
        let local: Vec<&String> = g.ruleset.elements["local-endpoints"].keys().collect();
        assert_eq!(local, ["10.244.0.3"]);
        assert_eq!(
            g.ruleset.chains[LOCAL_MASQ],
            [
                "ct status dnat ip saddr 10.244.0.0/16 ip daddr @local-endpoints meta mark set meta mark | 0x4000"
            ]
        );
    }

    #[test]
    fn no_endpoints_rejects_and_local_policy_drops() {
        let mut local = port("default/l:http", [10, 96, 0, 12], vec![ep(2)]);
        local.internal_local = true;
        let g = generate(
            &[port("default/e:http", [10, 96, 0, 11], vec![]), local],
            &node(),
        );
        assert!(g.ruleset.elements["no-endpoints"].contains_key("10.96.0.11 . tcp . 80"));
        assert!(g.ruleset.elements["no-local-endpoints"].contains_key("10.96.0.12 . tcp . 80"));
        assert!(!g.ruleset.elements["service-ips"].contains_key("10.96.0.12 . tcp . 80"));
    }

    #[test]
    fn conflicting_node_ports_keep_the_first_and_warn() {
        let mut a = port("default/a:http", [10, 96, 0, 1], vec![ep(2)]);
        let mut b = port("default/b:http", [10, 96, 0, 2], vec![ep(3)]);
        a.node_port = Some(30080);
        b.node_port = Some(30080);
        let g = generate(&[a, b], &node());
        assert_eq!(
            g.ruleset.elements["nodeport-backends"]["tcp . 30080 . 0"],
            "10.244.0.2 . 8080"
        );
        assert_eq!(g.warnings.len(), 1);
        assert_eq!(g.warnings[0].service, "default/b:http");
        // b's ClusterIP still works.
        assert!(g.ruleset.elements["service-ips"].contains_key("10.96.0.2 . tcp . 80"));
    }

    #[test]
    fn affinity_gets_its_own_chain_with_per_endpoint_sets() {
        let mut a = port("default/s:http", [10, 96, 0, 5], vec![ep(2), ep(3)]);
        a.affinity = Some(600);
        let g = generate(&[a], &node());
        let target = &g.ruleset.elements["service-ips"]["10.96.0.5 . tcp . 80"];
        let chain = target.strip_prefix("goto ").expect("goto");
        assert!(chain.starts_with("aff-"));
        assert_eq!(g.ruleset.affinity_sets.len(), 2);
        assert!(g.ruleset.affinity_sets.values().all(|t| *t == 600));
        assert!(
            g.ruleset.chains[chain]
                .iter()
                .any(|r| r.contains("numgen random mod 2 == 0"))
        );
    }

    #[test]
    fn endpoint_change_is_an_elements_only_diff() {
        let old = generate(
            &[port(
                "default/web:http",
                [10, 96, 0, 10],
                vec![ep(2), ep(3)],
            )],
            &node(),
        );
        let new = generate(
            &[port("default/web:http", [10, 96, 0, 10], vec![ep(3)])],
            &node(),
        );
        let d = crate::render::diff(&old.ruleset, &new.ruleset).expect("incremental");
        assert!(d.contains("delete element ip keel backends { 10.96.0.10 . tcp . 80 . 0, 10.96.0.10 . tcp . 80 . 1 }"), "{d}");
        assert!(
            d.contains(
                "add element ip keel service-ips { 10.96.0.10 . tcp . 80 : goto cluster-1 }"
            ),
            "{d}"
        );
        assert!(!d.contains("add rule"), "{d}");
        assert_eq!(
            crate::render::diff(&new.ruleset, &new.ruleset).as_deref(),
            Some("")
        );
    }
}
