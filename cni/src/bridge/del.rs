//! DEL, best effort and idempotent (SPEC.md "DEL"): remove the veth pair (by its deterministic
//! host-side name, else by `CNI_IFNAME` inside the pod namespace when that still exists),
//! release the IPAM reservation, remove the masquerade chain by name. Everything already gone
//! counts as done; the first real failure is reported after every step has been tried.

use super::{BridgeConf, host_veth_name, ipam, kernel, masq};
use crate::netlink::Socket;
use crate::netns::NetNs;
use crate::skel::Request;
use crate::spec::{CniError, IpNet};

pub fn del(req: &Request, c: &BridgeConf) -> Result<(), CniError> {
    let env = &req.env;
    let mut first: Option<CniError> = None;
    let mut note = |r: Result<(), CniError>| {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    };
    note(remove_link(req));
    note(ipam::del(req));
    if c.ip_masq {
        let known: Vec<IpNet> = match req.conf.prev_result() {
            Ok(Some(prev)) => prev.ips.iter().map(|i| i.address).collect(),
            _ => Vec::new(),
        };
        note(masq::teardown(&req.conf.name, &env.container_id, &known));
    }
    first.map_or(Ok(()), Err)
}

fn remove_link(req: &Request) -> Result<(), CniError> {
    let env = &req.env;
    let mut host = Socket::open().map_err(kernel)?;
    if host
        .del_link_by_name(&host_veth_name(&env.container_id, &env.ifname))
        .map_err(kernel)?
    {
        return Ok(());
    }
    // Not our naming (another plugin's ADD) or already gone: look inside the pod namespace.
    if env.netns.is_empty() {
        return Ok(());
    }
    let ns = match NetNs::open(&env.netns) {
        Ok(ns) => ns,
        // The namespace is gone, and the pair with it; a path that is not a namespace cannot
        // hold our interface either.
        Err(_) => return Ok(()),
    };
    let mut pod = ns
        .socket()
        .map_err(|e| CniError::new(crate::spec::error::KERNEL_FAILURE, e.to_string()))?;
    if let Some(l) = pod.link_by_name(&env.ifname).map_err(kernel)?
        && l.kind == "veth"
    {
        pod.del_link(l.index).map_err(kernel)?;
    }
    Ok(())
}
