//! Routes: list, add (rtnetlink(7) RTM_*ROUTE, `struct rtmsg`).

use std::net::IpAddr;

use super::addr::{family, ip_bytes, parse_ip};
use super::message::{Attrs, Msg, read_u32};
use super::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, Result, Socket, change_flags};
use crate::spec::{IpNet, Route};

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_METRICS: u16 = 8;
const RTA_TABLE: u16 = 15;
const RTAX_MTU: u16 = 2;
const RTAX_ADVMSS: u16 = 8;
const RT_TABLE_MAIN: u32 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;

/// A route as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: u32,
}

impl Socket {
    /// Routes of one family in every table.
    pub fn routes(&mut self, v4: bool) -> Result<Vec<RouteEntry>> {
        let fam = if v4 {
            libc::AF_INET as u8
        } else {
            libc::AF_INET6 as u8
        };
        let mut h = [0u8; 12];
        h[0] = fam;
        let replies = self.dump(
            Msg::new(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP).raw(&h),
            "list routes",
        )?;
        let zero = if v4 {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u8; 16])
        };
        let mut out = Vec::new();
        for r in replies {
            let Some(h) = r.get(..12) else { continue };
            let mut e = RouteEntry {
                dst: IpNet {
                    addr: zero,
                    prefix: h[1],
                },
                gw: None,
                oif: None,
                table: u32::from(h[4]),
            };
            for (ty, d) in Attrs(&r[12..]) {
                match ty {
                    RTA_DST => {
                        if let Some(ip) = parse_ip(d) {
                            e.dst.addr = ip;
                        }
                    }
                    RTA_GATEWAY => e.gw = parse_ip(d),
                    RTA_OIF => e.oif = read_u32(d),
                    RTA_TABLE => e.table = read_u32(d).unwrap_or(e.table),
                    _ => {}
                }
            }
            out.push(e);
        }
        Ok(out)
    }

    /// Adds `route` out of link `index` (via its gateway, else `default_gw` when the route
    /// has none and one is given, else on-link).
    pub fn add_route(
        &mut self,
        index: u32,
        route: &Route,
        default_gw: Option<IpAddr>,
    ) -> Result<()> {
        let dst = route.dst.truncated();
        let gw = route
            .gw
            .or(default_gw)
            .filter(|g| g.is_ipv4() == dst.is_ipv4());
        let table = route.table.unwrap_or(RT_TABLE_MAIN);
        let mut h = [0u8; 12];
        h[0] = family(dst.addr);
        h[1] = dst.prefix;
        h[4] = if table < 256 { table as u8 } else { 252 };
        h[5] = RTPROT_BOOT;
        h[6] = route.scope.unwrap_or(if gw.is_some() {
            RT_SCOPE_UNIVERSE
        } else {
            RT_SCOPE_LINK
        });
        h[7] = RTN_UNICAST;
        let mut m = Msg::new(RTM_NEWROUTE, change_flags(NLM_F_CREATE | NLM_F_EXCL))
            .raw(&h)
            .attr(RTA_DST, &ip_bytes(dst.addr))
            .u32(RTA_OIF, index)
            .u32(RTA_TABLE, table);
        if let Some(gw) = gw {
            m = m.attr(RTA_GATEWAY, &ip_bytes(gw));
        }
        if let Some(p) = route.priority {
            m = m.u32(RTA_PRIORITY, p);
        }
        if route.mtu.is_some() || route.advmss.is_some() {
            m = m.begin(RTA_METRICS);
            if let Some(mtu) = route.mtu {
                m = m.u32(RTAX_MTU, mtu);
            }
            if let Some(a) = route.advmss {
                m = m.u32(RTAX_ADVMSS, a);
            }
            m = m.end();
        }
        self.request(m, &format!("add route {dst} on link #{index}"))
            .map(drop)
    }
}
