//! Node IPAM (pkg/controller/nodeipam, range allocator): gives each Node a `spec.podCIDR` (and
//! `podCIDRs`) carved from the cluster CIDR, never the same one to two nodes, and takes it back
//! when the Node is deleted. The allocation lives in the Node objects themselves: on start the
//! allocator marks every podCIDR the cached Nodes already carry as used.

use crate::informer::{self, Change, Informer};
use crate::queue::{self, Queue};
use crate::{Error, Result, api_err};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Hands out the subnets of a cluster CIDR.
#[derive(Debug)]
pub struct Allocator {
    base: u32,
    prefix: u8,
    mask: u8,
    used: BTreeSet<u32>,
    by_node: HashMap<String, u32>,
}

impl Allocator {
    /// `cidr` like `10.244.0.0/16`, subnets of `/mask`.
    pub fn new(cidr: &str, mask: u8) -> Result<Allocator> {
        let invalid = |reason: &str| Error::Invalid {
            object: format!("cluster CIDR {cidr:?}"),
            reason: reason.to_string(),
        };
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| invalid("write it as address/prefix, like 10.244.0.0/16"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| invalid("only IPv4 cluster CIDRs are supported"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| invalid("the prefix length must be a number"))?;
        if prefix > 32 || mask > 32 || mask < prefix {
            return Err(invalid(&format!(
                "the node mask /{mask} must be between the prefix /{prefix} and /32"
            )));
        }
        let net_mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Allocator {
            base: u32::from(addr) & net_mask,
            prefix,
            mask,
            used: BTreeSet::new(),
            by_node: HashMap::new(),
        })
    }

    fn count(&self) -> u64 {
        1u64 << (self.mask - self.prefix)
    }

    fn render(&self, idx: u32) -> String {
        let step = if self.mask == 32 {
            1
        } else {
            1u64 << (32 - self.mask)
        };
        let addr = Ipv4Addr::from((u64::from(self.base) + u64::from(idx) * step) as u32);
        format!("{addr}/{}", self.mask)
    }

    fn index(&self, cidr: &str) -> Option<u32> {
        let (addr, m) = cidr.split_once('/')?;
        if m.parse::<u8>().ok()? != self.mask {
            return None;
        }
        let a = u32::from(addr.parse::<Ipv4Addr>().ok()?);
        let step = if self.mask == 32 {
            1
        } else {
            1u64 << (32 - self.mask)
        };
        let off = u64::from(a.checked_sub(self.base)?);
        (off % step == 0 && off / step < self.count()).then(|| (off / step) as u32)
    }

    /// Records that `node` holds `cidr` (from the Node object). False if it is outside the range.
    pub fn occupy(&mut self, node: &str, cidr: &str) -> bool {
        let Some(i) = self.index(cidr) else {
            return false;
        };
        self.used.insert(i);
        self.by_node.insert(node.to_string(), i);
        true
    }

    /// The subnet for `node`: the one it already has, or the lowest free one.
    pub fn allocate(&mut self, node: &str) -> Option<String> {
        if let Some(i) = self.by_node.get(node) {
            return Some(self.render(*i));
        }
        let mut next = 0u64;
        for u in &self.used {
            if u64::from(*u) != next {
                break;
            }
            next += 1;
        }
        if next >= self.count() {
            return None;
        }
        let i = next as u32;
        self.used.insert(i);
        self.by_node.insert(node.to_string(), i);
        Some(self.render(i))
    }

    /// Frees the subnet of a deleted node.
    pub fn release(&mut self, node: &str) {
        if let Some(i) = self.by_node.remove(node) {
            self.used.remove(&i);
        }
    }
}

/// Subscribes at once; the returned future runs the allocator loop.
pub fn run(
    client: Client,
    nodes: Arc<Informer<Node>>,
    alloc: Allocator,
) -> impl std::future::Future<Output = ()> + Send {
    let queue = Queue::new();
    let mut rx = nodes.subscribe();
    let alloc = Arc::new(Mutex::new(alloc));
    async move {
        nodes.synced().await;
        {
            let mut a = alloc.lock().unwrap_or_else(|p| p.into_inner());
            for n in nodes.store().state() {
                if let Some(c) = n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) {
                    a.occupy(n.metadata.name.as_deref().unwrap_or_default(), c);
                }
            }
        }
        let q = Arc::clone(&queue);
        let a2 = Arc::clone(&alloc);
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                match c {
                    Change::Applied(n) => q.add(informer::key_of(n.as_ref())),
                    Change::Deleted(n) => a2
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .release(n.metadata.name.as_deref().unwrap_or_default()),
                }
            }
        });
        // One worker: allocation decisions are serial.
        queue::run_workers("nodeipam", queue, 1, move |name| {
            let client = client.clone();
            let nodes = Arc::clone(&nodes);
            let alloc = Arc::clone(&alloc);
            async move { sync(client, &nodes, &alloc, &name).await }
        })
        .await;
    }
}

async fn sync(
    client: Client,
    nodes: &Informer<Node>,
    alloc: &Mutex<Allocator>,
    name: &str,
) -> Result<Option<Duration>> {
    let Some(node) = informer::get(nodes.store(), name) else {
        return Ok(None);
    };
    if node.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    if let Some(c) = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .filter(|c| !c.is_empty())
    {
        alloc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .occupy(name, c);
        return Ok(None);
    }
    let cidr = alloc
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .allocate(name)
        .ok_or_else(|| Error::Invalid {
            object: format!("node {name}"),
            reason: "the cluster CIDR has no free podCIDR left".into(),
        })?;
    let patch = serde_json::json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    let api: Api<Node> = Api::all(client);
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(node = name, pod_cidr = %cidr, "allocated podCIDR");
            Ok(None)
        }
        Err(e) if crate::is_not_found(&e) => {
            alloc
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .release(name);
            Ok(None)
        }
        Err(e) => Err(api_err("set podCIDR of node", name)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_free_never_twice() {
        let mut a = Allocator::new("10.244.0.0/16", 24).expect("valid");
        assert!(a.occupy("old", "10.244.1.0/24"));
        assert_eq!(a.allocate("n1").as_deref(), Some("10.244.0.0/24"));
        assert_eq!(a.allocate("n2").as_deref(), Some("10.244.2.0/24"));
        // Asking again for the same node gives the same subnet.
        assert_eq!(a.allocate("n1").as_deref(), Some("10.244.0.0/24"));
        a.release("old");
        assert_eq!(a.allocate("n3").as_deref(), Some("10.244.1.0/24"));
        assert!(!a.occupy("x", "10.245.0.0/24"), "outside the range");
        assert!(!a.occupy("x", "10.244.0.0/25"), "wrong size");
    }

    #[test]
    fn exhaustion_and_bad_config() {
        let mut a = Allocator::new("10.0.0.0/23", 24).expect("valid");
        assert_eq!(a.allocate("a").as_deref(), Some("10.0.0.0/24"));
        assert_eq!(a.allocate("b").as_deref(), Some("10.0.1.0/24"));
        assert_eq!(a.allocate("c"), None);
        for bad in ["10.0.0.0", "fd00::/64", "10.0.0.0/x", "10.0.0.0/25"] {
            assert!(Allocator::new(bad, 24).is_err(), "{bad}");
        }
    }
}
