//! `Network`: a pod's sandbox network from start to end. `setup` = namespace file + CNI ADD of
//! the whole chain + attachment record; `teardown` = CNI DEL in reverse order with the record's
//! configuration and result + namespace file gone + record gone. Both are idempotent and safe
//! to repeat after a crash at any step (see the table in docs/architecture/podnet.md).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use keel_cni::spec::{CniResult, NetConfList};
use serde_json::{Map, Value};

use crate::cache::{self, Attachment};
use crate::conflist::{self, Loaded};
use crate::exec::{self, Invocation};
use crate::{NetError, NetworkConfig, PodNetwork, PodRef, netns};

/// `CNI_IFNAME` of every pod.
pub const IFNAME: &str = "eth0";

/// The agent's pod networking; share it behind an `Arc`.
#[derive(Debug)]
pub struct Network {
    cfg: NetworkConfig,
    conf: Loaded,
    /// One lock per uid: `setup` and `teardown` of the same pod never overlap (the spec
    /// forbids parallel operations on one container); different pods run in parallel.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Network {
    /// Checks the configuration, prepares the folders and picks (or writes) the conflist.
    pub fn new(cfg: NetworkConfig) -> Result<Network, NetError> {
        if cfg.bin_dirs.is_empty() {
            return Err(NetError::Setting {
                field: "bin_dirs",
                reason: "no plugin folder given (pass the agent's own folder and /opt/cni/bin)"
                    .into(),
            });
        }
        for (field, p) in [
            ("conf_dir", &cfg.conf_dir),
            ("state_dir", &cfg.state_dir),
            ("netns_dir", &cfg.netns_dir),
        ] {
            if !p.is_absolute() {
                return Err(NetError::Setting {
                    field,
                    reason: format!("{} must be an absolute path", p.display()),
                });
            }
        }
        std::fs::create_dir_all(&cfg.state_dir)
            .map_err(|e| NetError::state("create folder", &cfg.state_dir, e))?;
        netns::prepare_dir(&cfg.netns_dir)?;
        let conf = conflist::select(
            &cfg.conf_dir,
            cfg.pod_cidr.as_deref(),
            &cfg.bridge,
            cfg.mtu,
            &cfg.state_dir.join("networks"),
        )?;
        tracing::info!(conflist = %conf.path.display(), network = %conf.list.name, "pod network configured");
        Ok(Network {
            cfg,
            conf,
            locks: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self, uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Drop entries nobody holds any more, so the map does not grow with every pod.
        m.retain(|_, l| Arc::strong_count(l) > 1);
        m.entry(uid.to_string()).or_default().clone()
    }

    /// The `.conflist` in use.
    pub fn conflist_path(&self) -> &Path {
        &self.conf.path
    }

    /// Where the pod's namespace file is (or would be).
    pub fn netns_path(&self, uid: &str) -> PathBuf {
        self.cfg.netns_dir.join(uid)
    }

    /// Creates the pod's namespace and attaches it, or returns the existing attachment.
    pub async fn setup(&self, pod: &PodRef) -> Result<PodNetwork, NetError> {
        check_uid(&pod.uid)?;
        let lock = self.lock(&pod.uid);
        let _held = lock.lock().await;
        self.setup_locked(pod).await
    }

    async fn setup_locked(&self, pod: &PodRef) -> Result<PodNetwork, NetError> {
        let ns_path = self.netns_path(&pod.uid);
        if let Some(a) = cache::load(&self.cfg.state_dir, &pod.uid)? {
            if netns::is_live(&a.netns) {
                return pod_network(&a);
            }
            // The record outlived its namespace (a reboot emptied the tmpfs): release what
            // the record holds, then attach again.
            tracing::info!(uid = %pod.uid, "namespace of a cached attachment is gone; attaching again");
            self.teardown_locked(&pod.uid).await?;
        } else if ns_path.exists() || cache::pending_path(&self.cfg.state_dir, &pod.uid).exists() {
            // No record, but a namespace or a setup marker: an earlier setup stopped before
            // writing the record (the ADD may have half run), or failed and could not undo
            // itself. DEL releases whatever it did.
            tracing::info!(uid = %pod.uid, "namespace without attachment record; cleaning it first");
            self.teardown_locked(&pod.uid).await?;
        }
        cache::mark_pending(&self.cfg.state_dir, &pod.uid, &ns_path)?;
        if let Err(e) = netns::create(ns_path.clone()).await {
            let _ = cache::clear_pending(&self.cfg.state_dir, &pod.uid);
            return Err(e);
        }
        let args = exec::k8s_args(&pod.namespace, &pod.name, &pod.uid, &pod.uid);
        let ns_arg = ns_path.to_string_lossy().into_owned();
        let inv = Invocation {
            container_id: &pod.uid,
            netns: &ns_arg,
            ifname: IFNAME,
            args: &args,
            bin_dirs: &self.cfg.bin_dirs,
        };
        let result = match add_chain(&self.conf.list, &inv).await {
            Ok(r) => r,
            Err(e) => {
                // SPEC.md: "a delete must still be executed even if the add fails". If the
                // undo fails too, the marker stays: `attached` lists the pod and a later
                // `teardown` retries the DEL.
                let del = del_chain(&self.conf.list, None, &inv).await;
                if netns::remove(&ns_path).is_ok() && del.is_ok() {
                    let _ = cache::clear_pending(&self.cfg.state_dir, &pod.uid);
                }
                return Err(e);
            }
        };
        let a = Attachment {
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            container_id: pod.uid.clone(),
            ifname: IFNAME.to_string(),
            netns: ns_path.clone(),
            conflist_path: self.conf.path.clone(),
            conflist: self.conf.json.clone(),
            result: result.to_value(&self.conf.list.cni_version),
        };
        if let Err(e) = cache::store(&self.cfg.state_dir, &a) {
            let del = del_chain(&self.conf.list, Some(&result), &inv).await;
            if netns::remove(&ns_path).is_ok() && del.is_ok() {
                let _ = cache::clear_pending(&self.cfg.state_dir, &pod.uid);
            }
            return Err(e);
        }
        cache::clear_pending(&self.cfg.state_dir, &pod.uid)?;
        pod_network(&a)
    }

    /// Detaches the pod and removes its namespace; nothing left is success. On a DEL error the
    /// record stays (so a retry still knows the configuration and result) and the error is
    /// returned.
    pub async fn teardown(&self, uid: &str) -> Result<(), NetError> {
        check_uid(uid)?;
        let lock = self.lock(uid);
        let _held = lock.lock().await;
        self.teardown_locked(uid).await
    }

    async fn teardown_locked(&self, uid: &str) -> Result<(), NetError> {
        let ns_path = self.netns_path(uid);
        let record = cache::load(&self.cfg.state_dir, uid)?;
        let (list, prev, ns_file) = match &record {
            Some(a) => {
                let l = conflist::from_bytes(&a.conflist_path, a.conflist.to_string().as_bytes())?;
                let prev = CniResult::from_value(a.result.clone()).ok();
                (l.list, prev, a.netns.clone())
            }
            // A setup that never wrote its record: DEL with the current list.
            None if ns_path.exists() || cache::pending_path(&self.cfg.state_dir, uid).exists() => {
                (self.conf.list.clone(), None, ns_path.clone())
            }
            None => return Ok(()),
        };
        // CNI_NETNS empty when the namespace is gone: the spec allows it for DEL, and the
        // plugins then release IPAM and host-side state only.
        let ns_arg = if netns::is_live(&ns_file) {
            ns_file.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let (namespace, name) = record
            .as_ref()
            .map(|a| (a.namespace.as_str(), a.name.as_str()))
            .unwrap_or_default();
        let args = exec::k8s_args(namespace, name, uid, uid);
        let inv = Invocation {
            container_id: uid,
            netns: &ns_arg,
            ifname: IFNAME,
            args: &args,
            bin_dirs: &self.cfg.bin_dirs,
        };
        del_chain(&list, prev.as_ref(), &inv).await?;
        netns::remove(&ns_file)?;
        if ns_file != ns_path {
            netns::remove(&ns_path)?;
        }
        cache::remove(&self.cfg.state_dir, uid)?;
        cache::clear_pending(&self.cfg.state_dir, uid)
    }

    /// Uids this agent attached or was attaching (a record, or the marker of a setup that
    /// did not finish): after a restart the executor tears down those whose pods no longer
    /// exist. Namespace files alone are not counted: the folder may be shared with other
    /// agents (lab nodes share the host's mount namespace), and their pods are not ours.
    pub fn attached(&self) -> Vec<String> {
        let set: BTreeSet<String> = cache::uids(&self.cfg.state_dir).into_iter().collect();
        set.into_iter().filter(|u| check_uid(u).is_ok()).collect()
    }
}

/// ADD in list order, each plugin getting the previous result (SPEC.md "Chaining").
async fn add_chain(list: &NetConfList, inv: &Invocation<'_>) -> Result<CniResult, NetError> {
    let mut prev: Option<CniResult> = None;
    for i in 0..list.plugins.len() {
        let req = request(list, i, prev.as_ref())?;
        let out = exec::run("ADD", &req, inv).await?;
        let plugin = req["type"].as_str().unwrap_or_default().to_string();
        prev = Some(
            CniResult::from_value(out).map_err(|error| NetError::Plugin {
                plugin,
                command: "ADD",
                error,
            })?,
        );
    }
    prev.ok_or_else(|| NetError::ConfList {
        path: PathBuf::from(&list.name),
        reason: "has no plugins".into(),
    })
}

/// DEL in reverse order, every plugin getting the final ADD result; every plugin runs even
/// if one failed, the first error is returned.
async fn del_chain(
    list: &NetConfList,
    result: Option<&CniResult>,
    inv: &Invocation<'_>,
) -> Result<(), NetError> {
    let mut first = None;
    for i in (0..list.plugins.len()).rev() {
        let r = match request(list, i, result) {
            Ok(req) => exec::run("DEL", &req, inv).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, container = inv.container_id, "CNI DEL failed");
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

fn request(list: &NetConfList, i: usize, prev: Option<&CniResult>) -> Result<Value, NetError> {
    list.request(i, &list.cni_version, &Map::new(), prev)
        .map_err(|e| NetError::ConfList {
            path: PathBuf::from(&list.name),
            reason: e.to_string(),
        })
}

fn pod_network(a: &Attachment) -> Result<PodNetwork, NetError> {
    let result = CniResult::from_value(a.result.clone()).map_err(|e| {
        NetError::state(
            "decode the cached result in",
            &a.netns,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        )
    })?;
    // Addresses on the pod's interface (ips[].interface points at an entry with a sandbox);
    // results without interface indexes (IPAM-only chains) count all.
    let on_pod = |i: Option<usize>| {
        i.is_none_or(|i| {
            result
                .interfaces
                .get(i)
                .is_none_or(|itf| itf.sandbox.is_some())
        })
    };
    let ips: Vec<IpAddr> = result
        .ips
        .iter()
        .filter(|c| on_pod(c.interface))
        .map(|c| c.address.addr)
        .collect();
    let gateway = result.ips.iter().find_map(|c| c.gateway);
    let mac = result
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_some() && i.name == a.ifname)
        .and_then(|i| i.mac.clone());
    Ok(PodNetwork {
        netns: a.netns.clone(),
        ips,
        interface: a.ifname.clone(),
        gateway,
        mac,
        result,
    })
}

/// A uid becomes `CNI_CONTAINERID` (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`) and a file name.
fn check_uid(uid: &str) -> Result<(), NetError> {
    let bad = |reason| {
        Err(NetError::InvalidUid {
            uid: uid.to_string(),
            reason,
        })
    };
    if uid.is_empty() || uid.len() > 128 {
        return bad("must have 1 to 128 characters");
    }
    if !uid.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("must start with a letter or digit");
    }
    if !uid
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return bad("may hold only letters, digits, '_', '.' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids() {
        assert!(check_uid("0b8c6a1e-3f0e-4b8e-9a55-1c2d3e4f5a6b").is_ok());
        assert!(check_uid("").is_err());
        assert!(check_uid("../x").is_err());
        assert!(check_uid(".hidden").is_err());
        assert!(check_uid("a/b").is_err());
    }
}
