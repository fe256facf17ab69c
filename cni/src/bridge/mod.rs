//! `keel-bridge`: pods on a Linux bridge through veth pairs, as the reference `bridge` plugin
//! (cni.dev plugins/main/bridge) with the same options. Sub-modules follow the commands:
//! `add`, `del`, `check`; `ipam` delegates addressing; `masq` programs the per-network
//! masquerade chain in one `iptables-restore` batch.

mod add;
mod check;
mod del;

pub use del::{DELETE_LINK_ARG, delete_link_main};
mod ipam;
mod masq;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::netlink;
use crate::skel::{Plugin, Request};
use crate::spec::error::{INVALID_NETWORK_CONFIG, KERNEL_FAILURE};
use crate::spec::{CniError, CniResult};

/// The options of the reference bridge plugin that we implement.
#[derive(Clone, Debug, Deserialize)]
pub struct BridgeConf {
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(rename = "isGateway", default)]
    pub is_gateway: bool,
    #[serde(rename = "isDefaultGateway", default)]
    pub is_default_gateway: bool,
    #[serde(rename = "forceAddress", default)]
    pub force_address: bool,
    #[serde(rename = "ipMasq", default)]
    pub ip_masq: bool,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(rename = "hairpinMode", default)]
    pub hairpin_mode: bool,
    #[serde(rename = "promiscMode", default)]
    pub promisc_mode: bool,
    #[serde(default)]
    pub vlan: Option<u16>,
}

fn default_bridge() -> String {
    "cni0".to_string()
}

impl BridgeConf {
    /// Decodes and checks the options (the reference's `loadNetConf` rules).
    pub fn load(req: &Request) -> Result<BridgeConf, CniError> {
        let mut c: BridgeConf = req.conf.plugin_conf()?;
        let bad = |m: String| Err(CniError::new(INVALID_NETWORK_CONFIG, m));
        if c.is_default_gateway {
            c.is_gateway = true;
        }
        if c.hairpin_mode && c.promisc_mode {
            return bad(
                "cannot set hairpinMode and promiscMode at the same time; choose one".into(),
            );
        }
        if c.bridge.is_empty() || c.bridge.len() > 15 || c.bridge.contains(['/', ':', ' ']) {
            return bad(format!(
                "invalid bridge name {:?}: 1 to 15 characters, no '/', ':' or spaces",
                c.bridge
            ));
        }
        if let Some(v) = c.vlan
            && v > 4094
        {
            return bad(format!("invalid vlan {v}: use 0 to 4094"));
        }
        if c.vlan == Some(0) {
            c.vlan = None;
        }
        if c.mtu.is_some_and(|m| !(68..=65535).contains(&m)) {
            return bad("invalid mtu: use 68 to 65535".into());
        }
        Ok(c)
    }
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// The host end's name: a function of (containerID, ifname), so DEL finds it without the
/// pod namespace and a retried ADD cannot leak a second pair.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    format!("veth{}", &hex::encode(digest(&[container_id, ifname]))[..8])
}

/// A stable, locally administered unicast MAC derived from `parts`.
pub fn mac_for(parts: &[&str]) -> [u8; 6] {
    let d = digest(parts);
    [(d[0] & 0xfe) | 0x02, d[1], d[2], d[3], d[4], d[5]]
}

pub fn mac_string(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The per-attachment nat chain: `CNI-` + 24 hex of sha256(network, containerID).
pub fn chain_name(network: &str, container_id: &str) -> String {
    format!(
        "CNI-{}",
        &hex::encode(digest(&[network, container_id]))[..24]
    )
}

pub(crate) fn kernel(e: netlink::Error) -> CniError {
    CniError::new(KERNEL_FAILURE, e.to_string())
}

/// The `keel-bridge` binary.
pub struct Bridge;

impl Plugin for Bridge {
    fn about(&self) -> &'static str {
        concat!(
            "keel-bridge ",
            env!("CARGO_PKG_VERSION"),
            ": CNI bridge plugin (spec 0.3.0-1.1.0)"
        )
    }
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        add::add(req, &BridgeConf::load(req)?)
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        del::del(req, &BridgeConf::load(req)?)
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        check::check(req, &BridgeConf::load(req)?)
    }
    fn status(&self, req: &Request) -> Result<(), CniError> {
        BridgeConf::load(req)?;
        ipam::status(req)
    }
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let c = BridgeConf::load(req)?;
        let ipam = ipam::gc(req);
        let fw = if c.ip_masq {
            masq::gc(&req.conf.name, &req.conf.gc_attachments())
        } else {
            Ok(())
        };
        ipam.and(fw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_names() {
        let n = host_veth_name("abc", "eth0");
        assert_eq!(n.len(), 12);
        assert_eq!(n, host_veth_name("abc", "eth0"));
        assert_ne!(n, host_veth_name("abc", "eth1"));
        assert!(chain_name("net", "abc").len() <= 28);
        assert_eq!(mac_for(&["x"])[0] & 0x03, 0x02);
    }
}
