//! The [`Proxier`]: holds the Services and EndpointSlices it was given and the ruleset it
//! last applied, and turns updates into full or incremental syncs. It decides nothing
//! about timing: the agent calls `sync` after a burst of updates (kube-proxy's
//! `minSyncPeriod`) and `sync_full` periodically (its `syncPeriod`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::apply::{Result, Runner};
use crate::model::{self, Endpoint, NodeInfo, Warning};
use crate::render;
use crate::ruleset::{self, UdpKey};

/// What a sync did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncKind {
    Full,
    Incremental,
    /// Nothing changed; nft was not run.
    Unchanged,
}

#[derive(Clone, Debug)]
pub struct SyncReport {
    pub kind: SyncKind,
    /// Size of the nft script that was applied.
    pub script_bytes: usize,
    /// Per-service problems (conflicting NodePorts, bad addresses, ...); already logged.
    pub warnings: Vec<Warning>,
    /// conntrack deletions that failed (logged; they do not fail the sync).
    pub conntrack_errors: usize,
    /// Why the incremental transaction failed when this sync fell back to a full one.
    pub fallback_reason: Option<String>,
}

pub struct Proxier<R: Runner> {
    node: NodeInfo,
    runner: R,
    services: BTreeMap<String, Service>,
    /// Service key -> slice name -> slice.
    slices: BTreeMap<String, BTreeMap<String, EndpointSlice>>,
    /// Slice key (`ns/name`) -> the service key it was filed under.
    slice_owner: BTreeMap<String, String>,
    /// Service key -> its share of the ruleset; "" is the static share.
    contribs: HashMap<String, ruleset::Generated>,
    merged: Merged,
    dirty: BTreeSet<String>,
    /// Set until a full sync succeeds (initially, and after a failed transaction).
    needs_full: bool,
}

fn key(ns: Option<&str>, name: Option<&str>) -> String {
    format!("{}/{}", ns.unwrap_or("default"), name.unwrap_or(""))
}

impl<R: Runner> Proxier<R> {
    pub fn new(node: NodeInfo, runner: R) -> Self {
        Proxier {
            node,
            runner,
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slice_owner: BTreeMap::new(),
            contribs: HashMap::new(),
            merged: Merged::default(),
            dirty: BTreeSet::new(),
            needs_full: true,
        }
    }

    pub fn runner_mut(&mut self) -> &mut R {
        &mut self.runner
    }

    pub fn upsert_service(&mut self, svc: Service) {
        let k = key(
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        );
        self.dirty.insert(k.clone());
        self.services.insert(k, svc);
    }

    pub fn delete_service(&mut self, ns: &str, name: &str) {
        let k = key(Some(ns), Some(name));
        self.services.remove(&k);
        self.dirty.insert(k);
    }

    pub fn upsert_slice(&mut self, slice: EndpointSlice) {
        let md = &slice.metadata;
        let skey = key(md.namespace.as_deref(), md.name.as_deref());
        let svc = md
            .labels
            .as_ref()
            .and_then(|l| l.get(model::SERVICE_NAME_LABEL))
            .cloned();
        self.forget_slice(&skey);
        let Some(svc) = svc else { return };
        let owner = key(md.namespace.as_deref(), Some(&svc));
        let name = md.name.clone().unwrap_or_default();
        self.slices
            .entry(owner.clone())
            .or_default()
            .insert(name, slice);
        self.slice_owner.insert(skey, owner.clone());
        self.dirty.insert(owner);
    }

    pub fn delete_slice(&mut self, ns: &str, name: &str) {
        self.forget_slice(&key(Some(ns), Some(name)));
    }

    fn forget_slice(&mut self, skey: &str) {
        if let Some(owner) = self.slice_owner.remove(skey) {
            let name = skey.split_once('/').map(|(_, n)| n).unwrap_or(skey);
            if let Some(m) = self.slices.get_mut(&owner) {
                m.remove(name);
                if m.is_empty() {
                    self.slices.remove(&owner);
                }
            }
            self.dirty.insert(owner);
        }
    }

    /// Recomputes the shares of changed services and merges them into `merged`, recording
    /// what changed. The static share (node addresses, shared chains) has the owner "",
    /// which sorts first.
    fn update(&mut self) -> Delta {
        let mut delta = Delta::default();
        if !self.contribs.contains_key("") {
            let g = ruleset::generate_static(&self.node);
            self.merged.add("", &g, &mut delta);
            self.contribs.insert(String::new(), g);
        }
        for k in std::mem::take(&mut self.dirty) {
            let new = self.services.get(&k).map(|svc| {
                let slices: Vec<&EndpointSlice> = self
                    .slices
                    .get(&k)
                    .map(|m| m.values().collect())
                    .unwrap_or_default();
                let mut w = Vec::new();
                let ports = model::service_ports(svc, &slices, &self.node, &mut w);
                let mut g = ruleset::generate_service(&ports, &self.node);
                w.append(&mut g.warnings);
                g.warnings = w;
                g
            });
            let old = self.contribs.remove(&k);
            if let Some(old) = &old {
                self.merged.remove(&k, old, &mut delta);
            }
            if let Some(new) = &new {
                self.merged.add(&k, new, &mut delta);
                delta.warnings.extend(new.warnings.iter().cloned());
            }
            let empty = BTreeMap::new();
            let old_udp = old.as_ref().map(|g| &g.udp).unwrap_or(&empty);
            let new_udp = new.as_ref().map(|g| &g.udp).unwrap_or(&empty);
            udp_stale(old_udp, new_udp, &mut delta.conntrack);
            if let Some(new) = new {
                self.contribs.insert(k, new);
            }
        }
        delta.warnings.extend(self.merged.conflicts(&delta.touched));
        delta
    }

    /// Replaces the whole table.
    pub fn sync_full(&mut self) -> Result<SyncReport> {
        let delta = self.update();
        self.full(delta)
    }

    fn full(&mut self, delta: Delta) -> Result<SyncReport> {
        let script = self.merged.render_full();
        self.needs_full = true;
        self.runner.nft(&script)?;
        self.needs_full = false;
        Ok(self.finish(delta, SyncKind::Full, script.len()))
    }

    /// Applies only what changed since the last sync. The first sync, a sync after a
    /// failure, and a change that adds or rewrites rules (see `render::diff`) are full.
    pub fn sync(&mut self) -> Result<SyncReport> {
        let delta = self.update();
        if self.needs_full || delta.rules_changed {
            return self.full(delta);
        }
        let script = self.merged.incremental(&delta);
        if script.is_empty() {
            return Ok(self.finish(delta, SyncKind::Unchanged, 0));
        }
        match self.runner.nft(&script) {
            Ok(()) => Ok(self.finish(delta, SyncKind::Incremental, script.len())),
            Err(e) => {
                tracing::warn!(error = %e, "incremental proxy sync failed; doing a full sync");
                let mut r = self.full(delta)?;
                r.fallback_reason = Some(e.to_string());
                Ok(r)
            }
        }
    }

    fn finish(&mut self, delta: Delta, kind: SyncKind, bytes: usize) -> SyncReport {
        for w in &delta.warnings {
            tracing::warn!(service = %w.service, "{}", w.message);
        }
        let mut conntrack_errors = 0;
        for c in &delta.conntrack {
            if let Err(e) = self.runner.conntrack_delete(c) {
                tracing::warn!(error = %e, args = ?c, "stale UDP conntrack entries not removed");
                conntrack_errors += 1;
            }
        }
        SyncReport {
            kind,
            script_bytes: bytes,
            warnings: delta.warnings,
            conntrack_errors,
            fallback_reason: None,
        }
    }
}

/// What one `update` changed.
#[derive(Default)]
struct Delta {
    /// (set, key) -> the value applied before this update (None: absent).
    touched: HashMap<(&'static str, String), Option<String>>,
    removed_chains: BTreeSet<String>,
    removed_sets: BTreeSet<String>,
    rules_changed: bool,
    warnings: Vec<Warning>,
    conntrack: Vec<Vec<String>>,
}

/// All services' shares merged: each element has candidates per owner, the smallest owner
/// wins; chains and affinity sets are reference-counted.
#[derive(Default)]
struct Merged {
    elements: HashMap<(&'static str, String), BTreeMap<String, String>>,
    chains: HashMap<String, (usize, Vec<String>)>,
    sets: HashMap<String, (usize, u32)>,
}

impl Merged {
    fn winner(&self, k: &(&'static str, String)) -> Option<String> {
        self.elements
            .get(k)
            .and_then(|m| m.values().next().cloned())
    }

    fn touch(&self, k: &(&'static str, String), delta: &mut Delta) {
        if !delta.touched.contains_key(k) {
            delta.touched.insert(k.clone(), self.winner(k));
        }
    }

    fn add(&mut self, owner: &str, g: &ruleset::Generated, delta: &mut Delta) {
        for (set, items) in &g.ruleset.elements {
            for (key, value) in items {
                let k = (*set, key.clone());
                self.touch(&k, delta);
                self.elements
                    .entry(k)
                    .or_default()
                    .insert(owner.to_string(), value.clone());
            }
        }
        for (name, rules) in &g.ruleset.chains {
            let e = self.chains.entry(name.clone()).or_insert((0, Vec::new()));
            if e.0 == 0 || &e.1 != rules {
                if !(delta.removed_chains.remove(name) && &e.1 == rules) {
                    delta.rules_changed = true;
                }
                e.1 = rules.clone();
            }
            e.0 += 1;
        }
        for (name, timeout) in &g.ruleset.affinity_sets {
            let e = self.sets.entry(name.clone()).or_insert((0, 0));
            if e.0 == 0 || e.1 != *timeout {
                if !(delta.removed_sets.remove(name) && e.1 == *timeout) {
                    delta.rules_changed = true;
                }
                e.1 = *timeout;
            }
            e.0 += 1;
        }
    }

    fn remove(&mut self, owner: &str, g: &ruleset::Generated, delta: &mut Delta) {
        for (set, items) in &g.ruleset.elements {
            for key in items.keys() {
                let k = (*set, key.clone());
                self.touch(&k, delta);
                if let Some(m) = self.elements.get_mut(&k) {
                    m.remove(owner);
                    if m.is_empty() {
                        self.elements.remove(&k);
                    }
                }
            }
        }
        for name in g.ruleset.chains.keys() {
            if let Some(e) = self.chains.get_mut(name) {
                e.0 -= 1;
                if e.0 == 0 {
                    delta.removed_chains.insert(name.clone());
                }
            }
        }
        for name in g.ruleset.affinity_sets.keys() {
            if let Some(e) = self.sets.get_mut(name) {
                e.0 -= 1;
                if e.0 == 0 {
                    delta.removed_sets.insert(name.clone());
                }
            }
        }
    }

    /// Warnings for touched keys that more than one service claims.
    fn conflicts(&self, touched: &HashMap<(&'static str, String), Option<String>>) -> Vec<Warning> {
        let mut out = Vec::new();
        for k in touched.keys() {
            if !matches!(k.0, "service-ips" | "service-nodeports") {
                continue;
            }
            if let Some(m) = self.elements.get(k)
                && m.len() > 1
            {
                let mut owners = m.keys();
                let first = owners.next().cloned().unwrap_or_default();
                for other in owners {
                    out.push(Warning {
                        service: other.clone(),
                        message: format!(
                            "{} entry {} is already used by {first}; ignored",
                            k.0, k.1
                        ),
                    });
                }
            }
        }
        out
    }

    /// The `nft -f` text replacing the whole table, rendered from borrowed parts (no
    /// intermediate `Ruleset` copy: at 10,000 services that copy cost ~100 ms).
    fn render_full(&mut self) -> String {
        self.chains.retain(|_, (n, _)| *n > 0);
        self.sets.retain(|_, (n, _)| *n > 0);
        let mut parts = render::Parts::default();
        for s in ruleset::SETS {
            parts.elements.insert(s, Vec::new());
        }
        for (k, m) in &self.elements {
            if let (Some(v), Some(items)) = (m.values().next(), parts.elements.get_mut(k.0)) {
                items.push((k.1.as_str(), v.as_str()));
            }
        }
        parts.chains = self
            .chains
            .iter()
            .map(|(n, (_, r))| (n.as_str(), r.as_slice()))
            .collect();
        parts.affinity_sets = self
            .sets
            .iter()
            .map(|(n, (_, t))| (n.as_str(), *t))
            .collect();
        render::full_parts(&parts)
    }

    #[cfg(test)]
    fn ruleset(&mut self) -> ruleset::Ruleset {
        self.chains.retain(|_, (n, _)| *n > 0);
        self.sets.retain(|_, (n, _)| *n > 0);
        let mut rs = ruleset::Ruleset::default();
        for s in ruleset::SETS {
            rs.elements.insert(s, BTreeMap::new());
        }
        for (k, m) in &self.elements {
            if let (Some(v), Some(items)) = (m.values().next(), rs.elements.get_mut(k.0)) {
                items.insert(k.1.clone(), v.clone());
            }
        }
        rs.chains = self
            .chains
            .iter()
            .map(|(n, (_, r))| (n.clone(), r.clone()))
            .collect();
        rs.affinity_sets = self
            .sets
            .iter()
            .map(|(n, (_, t))| (n.clone(), *t))
            .collect();
        rs
    }

    /// The nft commands for an elements-only change.
    fn incremental(&mut self, delta: &Delta) -> String {
        let mut del: BTreeMap<&'static str, BTreeMap<String, String>> = BTreeMap::new();
        let mut add: BTreeMap<&'static str, BTreeMap<String, String>> = BTreeMap::new();
        for (k, before) in &delta.touched {
            let after = self.winner(k);
            if before == &after {
                continue;
            }
            if before.is_some() {
                del.entry(k.0)
                    .or_default()
                    .insert(k.1.clone(), String::new());
            }
            if let Some(v) = after {
                add.entry(k.0).or_default().insert(k.1.clone(), v);
            }
        }
        let chains: Vec<String> = delta
            .removed_chains
            .iter()
            .filter(|c| self.chains.get(*c).is_some_and(|e| e.0 == 0))
            .cloned()
            .collect();
        let sets: Vec<String> = delta
            .removed_sets
            .iter()
            .filter(|c| self.sets.get(*c).is_some_and(|e| e.0 == 0))
            .cloned()
            .collect();
        for c in &chains {
            self.chains.remove(c);
        }
        for c in &sets {
            self.sets.remove(c);
        }
        render::elements_change(&del, &add, &chains, &sets)
    }
}

/// `conntrack -D` arguments for UDP entries that point at endpoints that went away, and
/// for destinations that had no endpoints before (kube-proxy's `CleanStaleEntries`): UDP has
/// no connection close, so such entries would blackhole a client as long as it keeps
/// sending.
fn udp_stale(
    old: &BTreeMap<UdpKey, BTreeSet<Endpoint>>,
    new: &BTreeMap<UdpKey, BTreeSet<Endpoint>>,
    out: &mut Vec<Vec<String>>,
) {
    let empty = BTreeSet::new();
    let dest = |k: &UdpKey| -> Vec<String> {
        match k {
            UdpKey::Ip(ip, port) => vec![
                "-p".into(),
                "udp".into(),
                "--orig-dst".into(),
                ip.to_string(),
                "--orig-port-dst".into(),
                port.to_string(),
            ],
            UdpKey::NodePort(port) => {
                vec![
                    "-p".into(),
                    "udp".into(),
                    "--orig-port-dst".into(),
                    port.to_string(),
                ]
            }
        }
    };
    for (k, old_eps) in old {
        let new_eps = new.get(k).unwrap_or(&empty);
        for gone in old_eps.difference(new_eps) {
            let mut c = dest(k);
            c.extend(["--reply-src".to_string(), gone.ip.to_string()]);
            out.push(c);
        }
    }
    for (k, new_eps) in new {
        let had = old.get(k).is_some_and(|e| !e.is_empty());
        if !had && !new_eps.is_empty() {
            out.push(dest(k));
        }
    }
}

/// Removes every Keel proxy rule (`keel-agent cleanup`): the whole `ip keel` table.
pub fn cleanup(runner: &mut impl Runner) -> Result<()> {
    runner.nft(&format!(
        "add table {t}\ndelete table {t}\n",
        t = render::TABLE
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Cidr;
    use serde_json::json;

    #[derive(Default)]
    struct Fake {
        scripts: Vec<String>,
        conntrack: Vec<Vec<String>>,
    }

    impl Runner for Fake {
        fn nft(&mut self, script: &str) -> Result<()> {
            self.scripts.push(script.to_string());
            Ok(())
        }
        fn conntrack_delete(&mut self, args: &[String]) -> Result<()> {
            self.conntrack.push(args.to_vec());
            Ok(())
        }
    }

    fn node() -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            addresses: vec!["192.168.0.1".parse().expect("ip")],
            cluster_cidr: Some("10.244.0.0/16".parse::<Cidr>().expect("cidr")),
        }
    }

    fn svc(name: &str, ip: &str, proto: &str) -> Service {
        serde_json::from_value(json!({"metadata": {"namespace": "default", "name": name},
            "spec": {"clusterIP": ip, "ports": [{"name": "p", "port": 53, "protocol": proto}]}}))
        .expect("service")
    }

    fn slice(name: &str, ips: &[&str], proto: &str) -> EndpointSlice {
        serde_json::from_value(
            json!({"metadata": {"namespace": "default", "name": format!("{name}-x"),
                "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "p", "port": 5353, "protocol": proto}],
            "endpoints": ips.iter().map(|i| json!({"addresses": [i]})).collect::<Vec<_>>()}),
        )
        .expect("slice")
    }

    /// The merged per-service shares always equal a from-scratch generation.
    fn assert_consistent(p: &mut Proxier<Fake>) {
        let mut w = Vec::new();
        let mut ports = Vec::new();
        for (k, s) in &p.services {
            let slices: Vec<&EndpointSlice> = p
                .slices
                .get(k)
                .map(|m| m.values().collect())
                .unwrap_or_default();
            ports.extend(model::service_ports(s, &slices, &p.node, &mut w));
        }
        let scratch = ruleset::generate(&ports, &p.node).ruleset;
        assert_eq!(p.merged.ruleset(), scratch);
        // The borrowed rendering says the same as rendering the scratch ruleset (element
        // order inside a set may differ).
        let tokens = |t: &str| {
            let mut v: Vec<String> = t
                .replace(" }", "")
                .replace("{ ", "{\n")
                .split(['\n', ','])
                .map(|x| x.trim().to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            tokens(&p.merged.render_full()),
            tokens(&render::full(&scratch))
        );
    }

    #[test]
    fn updates_are_incremental_and_match_a_full_generation() {
        let mut p = Proxier::new(node(), Fake::default());
        p.upsert_service(svc("dns", "10.96.0.10", "UDP"));
        p.upsert_slice(slice("dns", &["10.244.0.2", "10.244.0.3"], "UDP"));
        p.upsert_service(svc("web", "10.96.0.11", "TCP"));
        assert_eq!(p.sync().expect("sync").kind, SyncKind::Full);
        assert_consistent(&mut p);
        assert_eq!(p.sync().expect("sync").kind, SyncKind::Unchanged);

        // One UDP endpoint goes away: elements only, and its conntrack entries are cleared.
        p.upsert_slice(slice("dns", &["10.244.0.3"], "UDP"));
        let r = p.sync().expect("sync");
        assert_eq!(r.kind, SyncKind::Incremental);
        let last = p.runner.scripts.last().expect("script");
        assert!(!last.contains("add rule"), "{last}");
        assert!(
            p.runner
                .conntrack
                .iter()
                .any(|c| c.ends_with(&["--reply-src".into(), "10.244.0.2".into()]))
        );
        assert_consistent(&mut p);

        // A service gains its first endpoint: entries from its REJECT time are cleared.
        p.upsert_service(svc("web", "10.96.0.11", "UDP"));
        p.sync().expect("sync");
        p.upsert_slice(slice("web", &["10.244.0.9"], "UDP"));
        assert_eq!(p.sync().expect("sync").kind, SyncKind::Incremental);
        assert!(
            p.runner
                .conntrack
                .iter()
                .any(|c| c.contains(&"10.96.0.11".to_string()) && c.len() == 6)
        );
        assert_consistent(&mut p);

        // Deleting a service removes exactly its elements.
        p.delete_service("default", "dns");
        assert_eq!(p.sync().expect("sync").kind, SyncKind::Incremental);
        assert!(
            p.runner
                .scripts
                .last()
                .expect("script")
                .contains("delete element ip keel service-ips { 10.96.0.10 . udp . 53 }")
        );
        assert_consistent(&mut p);
    }

    #[test]
    fn conflicting_services_keep_the_first_key_and_warn() {
        let mut p = Proxier::new(node(), Fake::default());
        p.upsert_service(svc("b", "10.96.0.10", "TCP"));
        p.upsert_slice(slice("b", &["10.244.0.3"], "TCP"));
        p.upsert_service(svc("a", "10.96.0.10", "TCP"));
        p.upsert_slice(slice("a", &["10.244.0.2"], "TCP"));
        let r = p.sync().expect("sync");
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert_eq!(r.warnings[0].service, "default/b");
        let rs = p.merged.ruleset();
        assert_eq!(
            rs.elements["backends"]["10.96.0.10 . tcp . 53 . 0"],
            "10.244.0.2 . 5353"
        );
        p.delete_service("default", "a");
        p.sync().expect("sync");
        assert_eq!(
            p.merged.ruleset().elements["backends"]["10.96.0.10 . tcp . 53 . 0"],
            "10.244.0.3 . 5353"
        );
    }
}
