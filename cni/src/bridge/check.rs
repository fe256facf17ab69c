//! CHECK (SPEC.md "CHECK"): with `prevResult`, verify that the bridge, the host veth on it,
//! the pod interface, its addresses and routes, and the masquerade chain are still there,
//! and forward CHECK to IPAM. The first missing thing is the error.

use super::{BridgeConf, ipam, kernel, masq};
use crate::netlink::Socket;
use crate::netns::NetNs;
use crate::skel::Request;
use crate::spec::error::{CHECK_FAILED, INVALID_ENV, INVALID_NETWORK_CONFIG};
use crate::spec::{CniError, IpNet, from_u128, to_u128};

fn missing(what: String) -> CniError {
    CniError::new(CHECK_FAILED, what)
        .with_details("the attachment is damaged; DEL and ADD it again")
}

pub fn check(req: &Request, c: &BridgeConf) -> Result<(), CniError> {
    let env = &req.env;
    let prev = req.conf.prev_result()?.ok_or_else(|| {
        CniError::new(INVALID_NETWORK_CONFIG, "CHECK needs prevResult")
            .with_details("pass the ADD result as prevResult")
    })?;
    ipam::check(req)?;
    let mut host = Socket::open().map_err(kernel)?;
    let br = host
        .link_by_name(&c.bridge)
        .map_err(kernel)?
        .ok_or_else(|| missing(format!("bridge {} is missing", c.bridge)))?;
    if br.kind != "bridge" {
        return Err(missing(format!("{} is not a bridge", c.bridge)));
    }
    let ns = NetNs::open(&env.netns)
        .map_err(|e| CniError::new(INVALID_ENV, format!("CNI_NETNS: {e}")))?;
    let mut pod = ns
        .socket()
        .map_err(|e| CniError::new(INVALID_ENV, format!("CNI_NETNS: {e}")))?;
    let link = pod
        .link_by_name(&env.ifname)
        .map_err(kernel)?
        .ok_or_else(|| {
            missing(format!(
                "interface {} is missing in {}",
                env.ifname, env.netns
            ))
        })?;
    let pod_idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && i.sandbox.is_some());
    if let Some(i) = pod_idx
        && let Some(mac) = &prev.interfaces[i].mac
        && !mac.eq_ignore_ascii_case(&link.mac_string())
    {
        return Err(missing(format!(
            "interface {} has MAC {}, prevResult says {mac}",
            env.ifname,
            link.mac_string()
        )));
    }
    // The host end: the bridge port whose peer is our pod interface.
    for iface in prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_none() && i.name != c.bridge)
    {
        let l = host
            .link_by_name(&iface.name)
            .map_err(kernel)?
            .ok_or_else(|| missing(format!("host veth {} is missing", iface.name)))?;
        if l.master != Some(br.index) {
            return Err(missing(format!(
                "host veth {} is not attached to bridge {}",
                iface.name, c.bridge
            )));
        }
    }
    let addrs = pod.addrs(link.index, None).map_err(kernel)?;
    for ip in prev
        .ips
        .iter()
        .filter(|i| i.interface.is_none() || i.interface == pod_idx)
    {
        if !addrs.iter().any(|a| a.net == ip.address) {
            return Err(missing(format!(
                "address {} is missing on {}",
                ip.address, env.ifname
            )));
        }
    }
    for r in &prev.routes {
        let routes = pod.routes(r.dst.is_ipv4()).map_err(kernel)?;
        let gw = r.gw.or_else(|| {
            prev.ips
                .iter()
                .find(|i| i.address.is_ipv4() == r.dst.is_ipv4())
                .and_then(|i| i.gateway)
        });
        let dst = r.dst.truncated();
        if !routes
            .iter()
            .any(|e| e.dst == dst && (gw.is_none() || e.gw == gw))
        {
            return Err(missing(format!(
                "route to {dst} is missing in {}",
                env.netns
            )));
        }
    }
    if c.is_gateway {
        let br_addrs = host.addrs(br.index, None).map_err(kernel)?;
        for ip in &prev.ips {
            let gw = ip
                .gateway
                .unwrap_or_else(|| from_u128(ip.address.addr, to_u128(ip.address.network()) + 1));
            let want = IpNet {
                addr: gw,
                prefix: ip.address.prefix,
            };
            if !br_addrs.iter().any(|a| a.net == want) {
                return Err(missing(format!(
                    "gateway address {want} is missing on bridge {}",
                    c.bridge
                )));
            }
        }
    }
    if c.ip_masq {
        for v4 in [true, false] {
            if prev.ips.iter().any(|i| i.address.is_ipv4() == v4)
                && !masq::present(&req.conf.name, &env.container_id, v4)?
            {
                return Err(missing(format!(
                    "masquerade chain {} is missing",
                    super::chain_name(&req.conf.name, &env.container_id)
                )));
            }
        }
    }
    Ok(())
}
