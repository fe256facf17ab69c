//! The [`Proxier`]: holds the Services and EndpointSlices it was given and the ruleset it
//! last applied, and turns updates into full or incremental syncs. It decides nothing
//! about timing: the agent calls `sync` after a burst of updates (kube-proxy's
//! `minSyncPeriod`) and `sync_full` periodically (its `syncPeriod`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::apply::{Result, Runner};
use crate::model::{self, Endpoint, NodeInfo, ServicePort, Warning};
use crate::render;
use crate::ruleset::{self, Ruleset, UdpKey};

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
    /// Service key -> converted ports, recomputed for `dirty` services only.
    ports: BTreeMap<String, Vec<ServicePort>>,
    port_warnings: BTreeMap<String, Vec<Warning>>,
    dirty: BTreeSet<String>,
    applied: Option<Ruleset>,
    applied_udp: BTreeMap<UdpKey, BTreeSet<Endpoint>>,
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
            ports: BTreeMap::new(),
            port_warnings: BTreeMap::new(),
            dirty: BTreeSet::new(),
            applied: None,
            applied_udp: BTreeMap::new(),
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

    /// The ruleset for the current inputs (recomputing only changed services).
    fn generate(&mut self) -> ruleset::Generated {
        for k in std::mem::take(&mut self.dirty) {
            match self.services.get(&k) {
                Some(svc) => {
                    let slices: Vec<&EndpointSlice> = self
                        .slices
                        .get(&k)
                        .map(|m| m.values().collect())
                        .unwrap_or_default();
                    let mut w = Vec::new();
                    let ports = model::service_ports(svc, &slices, &self.node, &mut w);
                    self.ports.insert(k.clone(), ports);
                    self.port_warnings.insert(k, w);
                }
                None => {
                    self.ports.remove(&k);
                    self.port_warnings.remove(&k);
                }
            }
        }
        let all: Vec<ServicePort> = self.ports.values().flatten().cloned().collect();
        let mut g = ruleset::generate(&all, &self.node);
        let mut w: Vec<Warning> = self.port_warnings.values().flatten().cloned().collect();
        w.append(&mut g.warnings);
        g.warnings = w;
        g
    }

    /// Replaces the whole table.
    pub fn sync_full(&mut self) -> Result<SyncReport> {
        let g = self.generate();
        let script = render::full(&g.ruleset);
        self.runner.nft(&script)?;
        Ok(self.finish(g, SyncKind::Full, script.len()))
    }

    /// Applies only what changed since the last sync; the first sync, and any sync whose
    /// incremental transaction fails, is a full one.
    pub fn sync(&mut self) -> Result<SyncReport> {
        let Some(old) = self.applied.take() else {
            return self.sync_full();
        };
        let g = self.generate();
        let Some(script) = render::diff(&old, &g.ruleset) else {
            let full = render::full(&g.ruleset);
            self.runner.nft(&full)?;
            return Ok(self.finish(g, SyncKind::Full, full.len()));
        };
        if script.is_empty() {
            self.applied = Some(old);
            return Ok(self.finish(g, SyncKind::Unchanged, 0));
        }
        match self.runner.nft(&script) {
            Ok(()) => Ok(self.finish(g, SyncKind::Incremental, script.len())),
            Err(e) => {
                tracing::warn!(error = %e, "incremental proxy sync failed; doing a full sync");
                let full = render::full(&g.ruleset);
                self.runner.nft(&full)?;
                let mut r = self.finish(g, SyncKind::Full, full.len());
                r.fallback_reason = Some(e.to_string());
                Ok(r)
            }
        }
    }

    fn finish(&mut self, g: ruleset::Generated, kind: SyncKind, bytes: usize) -> SyncReport {
        for w in &g.warnings {
            tracing::warn!(service = %w.service, "{}", w.message);
        }
        let conntrack_errors = self.clear_udp(&g.udp);
        self.applied_udp = g.udp;
        self.applied = Some(g.ruleset);
        SyncReport {
            kind,
            script_bytes: bytes,
            warnings: g.warnings,
            conntrack_errors,
            fallback_reason: None,
        }
    }

    /// Deletes UDP conntrack entries that point at endpoints that went away, and entries
    /// of destinations that had no endpoints before (kube-proxy's `CleanStaleEntries`):
    /// UDP has no connection close, so such entries would blackhole a client for as long
    /// as it keeps sending.
    fn clear_udp(&mut self, new: &BTreeMap<UdpKey, BTreeSet<Endpoint>>) -> usize {
        let mut cmds: Vec<Vec<String>> = Vec::new();
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
        for (k, old_eps) in &self.applied_udp {
            let new_eps = new.get(k).unwrap_or(&empty);
            for gone in old_eps.difference(new_eps) {
                let mut c = dest(k);
                c.extend(["--reply-src".to_string(), gone.ip.to_string()]);
                cmds.push(c);
            }
        }
        for (k, new_eps) in new {
            let had = self.applied_udp.get(k).is_some_and(|e| !e.is_empty());
            if !had && !new_eps.is_empty() && self.applied.is_some() {
                cmds.push(dest(k));
            }
        }
        let mut errors = 0;
        for c in cmds {
            if let Err(e) = self.runner.conntrack_delete(&c) {
                tracing::warn!(error = %e, args = ?c, "stale UDP conntrack entries not removed");
                errors += 1;
            }
        }
        errors
    }
}

/// Removes every Keel proxy rule (`keel-agent cleanup`): the whole `ip keel` table.
pub fn cleanup(runner: &mut impl Runner) -> Result<()> {
    runner.nft(&format!(
        "add table {t}\ndelete table {t}\n",
        t = render::TABLE
    ))
}
