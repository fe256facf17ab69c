//! Interface addresses: list, add, delete (rtnetlink(7) RTM_*ADDR, `struct ifaddrmsg`).

use std::net::IpAddr;

use nix::errno::Errno;

use super::message::{Attrs, Msg};
use super::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, Result, Socket, change_flags};
use crate::spec::IpNet;

const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
/// Skip duplicate address detection: the address is usable at once (`IFA_F_NODAD`).
const IFA_F_NODAD: u32 = 0x02;
const RT_SCOPE_LINK: u8 = 253;

/// An address on a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub net: IpNet,
    pub scope: u8,
}

impl Addr {
    pub fn is_link_local(&self) -> bool {
        self.scope == RT_SCOPE_LINK
    }
}

pub(super) fn family(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    }
}

pub(super) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

pub(super) fn parse_ip(d: &[u8]) -> Option<IpAddr> {
    match d.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(d).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(d).ok()?)),
        _ => None,
    }
}

fn ifaddrmsg(family: u8, prefix: u8, scope: u8, index: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0] = family;
    h[1] = prefix;
    h[3] = scope;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h
}

impl Socket {
    /// Addresses of one family (`None`: all) on link `index` (`0`: every link).
    pub fn addrs(&mut self, index: u32, fam: Option<u8>) -> Result<Vec<Addr>> {
        let msg = Msg::new(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP).raw(&ifaddrmsg(
            fam.unwrap_or(0),
            0,
            0,
            0,
        ));
        let replies = self.dump(msg, "list addresses")?;
        let mut out = Vec::new();
        for r in replies {
            let Some(h) = r.get(..8) else { continue };
            let idx = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
            if index != 0 && idx != index {
                continue;
            }
            let (mut local, mut address) = (None, None);
            for (ty, d) in Attrs(&r[8..]) {
                match ty {
                    IFA_LOCAL => local = parse_ip(d),
                    IFA_ADDRESS => address = parse_ip(d),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address)
                && let Some(net) = IpNet::new(ip, h[1])
            {
                out.push(Addr {
                    index: idx,
                    net,
                    scope: h[3],
                });
            }
        }
        Ok(out)
    }

    /// Adds `net` to link `index`; IPv6 addresses skip DAD. `EEXIST` is returned as an error.
    pub fn add_addr(&mut self, index: u32, net: IpNet) -> Result<()> {
        let fam = family(net.addr);
        let bytes = ip_bytes(net.addr);
        let mut m = Msg::new(RTM_NEWADDR, change_flags(NLM_F_CREATE | NLM_F_EXCL))
            .raw(&ifaddrmsg(fam, net.prefix, 0, index))
            .attr(IFA_LOCAL, &bytes)
            .attr(IFA_ADDRESS, &bytes);
        if !net.is_ipv4() {
            m = m.u32(IFA_FLAGS, IFA_F_NODAD);
        }
        self.request(m, &format!("add address {net} to link #{index}"))
            .map(drop)
    }

    /// Removes `net` from link `index`; `Ok(false)` when it was not there.
    pub fn del_addr(&mut self, index: u32, net: IpNet) -> Result<bool> {
        let bytes = ip_bytes(net.addr);
        let m = Msg::new(RTM_DELADDR, change_flags(0))
            .raw(&ifaddrmsg(family(net.addr), net.prefix, 0, index))
            .attr(IFA_LOCAL, &bytes);
        match self.request(m, &format!("delete address {net} from link #{index}")) {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.errno(), Some(Errno::EADDRNOTAVAIL | Errno::ENODEV)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
