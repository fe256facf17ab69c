//! Links: look up, create bridges and veth pairs, set flags, bridge port options, delete
//! (rtnetlink(7) RTM_*LINK; veth peer layout from `include/uapi/linux/veth.h`).

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

use super::message::{Attrs, Msg, read_str, read_u32};
use super::{NLM_F_CREATE, NLM_F_EXCL, Result, Socket, change_flags};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
const IFLA_LINKINFO: u16 = 18;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_BR_VLAN_FILTERING: u16 = 7;
const IFLA_BRPORT_MODE: u16 = 4;
const IFLA_BRIDGE_VLAN_INFO: u16 = 2;
const IFLA_INET_CONF: u16 = 1;
const IPV4_DEVCONF_ARP_NOTIFY: u16 = 22;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
const AF_BRIDGE: u8 = 7;
const AF_INET: u16 = 2;
pub const IFF_UP: u32 = 0x1;
pub const IFF_PROMISC: u32 = 0x100;
const BRIDGE_VLAN_INFO_PVID: u16 = 0x2;
const BRIDGE_VLAN_INFO_UNTAGGED: u16 = 0x4;

/// What we read back about a link.
#[derive(Clone, Debug, Default)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub flags: u32,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub master: Option<u32>,
    /// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
    pub link: Option<u32>,
    pub kind: String,
}

impl Link {
    pub fn mac_string(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// A veth pair to create: the host end here, the peer directly in another namespace.
pub struct VethSpec<'a> {
    pub host_name: &'a str,
    pub host_mac: [u8; 6],
    pub peer_name: &'a str,
    pub peer_mac: [u8; 6],
    pub peer_netns: BorrowedFd<'a>,
    pub mtu: Option<u32>,
    pub master: u32,
}

fn ifinfomsg(family: u8, index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = family;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

fn parse_link(reply: &[u8]) -> Option<Link> {
    let hdr = reply.get(..16)?;
    let mut l = Link {
        index: u32::from_ne_bytes(hdr[4..8].try_into().ok()?),
        flags: u32::from_ne_bytes(hdr[8..12].try_into().ok()?),
        ..Link::default()
    };
    for (ty, d) in Attrs(&reply[16..]) {
        match ty {
            IFLA_IFNAME => l.name = read_str(d),
            IFLA_ADDRESS => l.mac = d.to_vec(),
            IFLA_MTU => l.mtu = read_u32(d).unwrap_or(0),
            IFLA_MASTER => l.master = read_u32(d),
            IFLA_LINK => l.link = read_u32(d),
            IFLA_LINKINFO => {
                for (t, v) in Attrs(d) {
                    if t == IFLA_INFO_KIND {
                        l.kind = read_str(v);
                    }
                }
            }
            _ => {}
        }
    }
    Some(l)
}

impl Socket {
    /// The link called `name`, `None` when there is none.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let msg = Msg::new(RTM_GETLINK, change_flags(0))
            .raw(&ifinfomsg(0, 0, 0, 0))
            .u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
            .str(IFLA_IFNAME, name);
        match self.request(msg, &format!("look up link {name}")) {
            Ok(r) => Ok(r.first().and_then(|m| parse_link(m))),
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link in the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let msg = Msg::new(RTM_GETLINK, super::NLM_F_REQUEST | super::NLM_F_DUMP)
            .raw(&ifinfomsg(0, 0, 0, 0))
            .u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        Ok(self
            .dump(msg, "list links")?
            .iter()
            .filter_map(|m| parse_link(m))
            .collect())
    }

    /// The link with index `index`, `None` when there is none.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        let msg = Msg::new(RTM_GETLINK, change_flags(0))
            .raw(&ifinfomsg(0, index, 0, 0))
            .u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        match self.request(msg, &format!("look up link #{index}")) {
            Ok(r) => Ok(r.first().and_then(|m| parse_link(m))),
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a bridge (up, fixed MAC so it does not follow its ports, optional MTU and
    /// vlan filtering). `EEXIST` comes back as an error for the caller to handle.
    pub fn add_bridge(
        &mut self,
        name: &str,
        mac: [u8; 6],
        mtu: Option<u32>,
        vlan_filtering: bool,
    ) -> Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, change_flags(NLM_F_CREATE | NLM_F_EXCL))
            .raw(&ifinfomsg(0, 0, IFF_UP, IFF_UP))
            .str(IFLA_IFNAME, name)
            .attr(IFLA_ADDRESS, &mac);
        if let Some(mtu) = mtu {
            m = m.u32(IFLA_MTU, mtu);
        }
        m = m.begin(IFLA_LINKINFO).str(IFLA_INFO_KIND, "bridge");
        if vlan_filtering {
            m = m.begin(IFLA_INFO_DATA).u8(IFLA_BR_VLAN_FILTERING, 1).end();
        }
        m = m.end();
        self.request(m, &format!("create bridge {name}")).map(drop)
    }

    /// Creates a veth pair in one request: the host end up and enslaved to `master`, the peer
    /// named and placed in the pod namespace (down; the caller brings it up there). Returns the
    /// host end as the kernel echoes it (`NLM_F_ECHO`), when it does.
    ///
    /// Both ends get one tx and one rx queue explicitly: without `IFLA_NUM_*_QUEUES`,
    /// `veth_init_queues()` shrinks the per-CPU default to one queue after registration, and
    /// each shrink waits for an expedited RCU grace period (`netif_set_real_num_tx_queues`).
    /// Asking for the GETLINK-free echo likewise avoids `rtnl_getlink()`'s linkwatch sync,
    /// which waits for another one on a link whose carrier just changed.
    pub fn add_veth(&mut self, v: &VethSpec<'_>) -> Result<Option<Link>> {
        let mut m = Msg::new(
            RTM_NEWLINK,
            change_flags(NLM_F_CREATE | NLM_F_EXCL | super::NLM_F_ECHO),
        )
        .raw(&ifinfomsg(0, 0, IFF_UP, IFF_UP))
        .str(IFLA_IFNAME, v.host_name)
        .attr(IFLA_ADDRESS, &v.host_mac)
        .u32(IFLA_MASTER, v.master)
        .u32(IFLA_NUM_TX_QUEUES, 1)
        .u32(IFLA_NUM_RX_QUEUES, 1);
        if let Some(mtu) = v.mtu {
            m = m.u32(IFLA_MTU, mtu);
        }
        m = m
            .begin(IFLA_LINKINFO)
            .str(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin_plain(VETH_INFO_PEER)
            // Not up yet: veth_open() refuses (ENOTCONN) before the pair is linked.
            .raw(&ifinfomsg(0, 0, 0, 0))
            .str(IFLA_IFNAME, v.peer_name)
            .attr(IFLA_ADDRESS, &v.peer_mac)
            .u32(IFLA_NET_NS_FD, v.peer_netns.as_raw_fd() as u32)
            .u32(IFLA_NUM_TX_QUEUES, 1)
            .u32(IFLA_NUM_RX_QUEUES, 1);
        if let Some(mtu) = v.mtu {
            m = m.u32(IFLA_MTU, mtu);
        }
        m = m.end().end().end();
        let replies = self.request(m, &format!("create veth {} / {}", v.host_name, v.peer_name))?;
        Ok(replies
            .iter()
            .filter_map(|r| parse_link(r))
            .find(|l| l.name == v.host_name))
    }

    /// Sets or clears `flags` (within `change`) on a link.
    pub fn set_flags(&mut self, index: u32, flags: u32, change: u32) -> Result<()> {
        let m = Msg::new(RTM_NEWLINK, change_flags(0)).raw(&ifinfomsg(0, index, flags, change));
        self.request(m, &format!("set flags on link #{index}"))
            .map(drop)
    }

    /// `net.ipv4.conf.<link>.arp_notify = 1` through `IFLA_AF_SPEC`, no sysctl file needed.
    pub fn set_arp_notify(&mut self, index: u32) -> Result<()> {
        let m = Msg::new(RTM_SETLINK, change_flags(0))
            .raw(&ifinfomsg(0, index, 0, 0))
            .begin(IFLA_AF_SPEC)
            .begin(AF_INET)
            .begin(IFLA_INET_CONF)
            .u32(IPV4_DEVCONF_ARP_NOTIFY, 1)
            .end()
            .end()
            .end();
        self.request(m, &format!("set arp_notify on link #{index}"))
            .map(drop)
    }

    /// Bridge port hairpin mode (`IFLA_BRPORT_MODE`).
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> Result<()> {
        let m = Msg::new(RTM_SETLINK, change_flags(0))
            .raw(&ifinfomsg(AF_BRIDGE, index, 0, 0))
            .begin(IFLA_PROTINFO)
            .u8(IFLA_BRPORT_MODE, u8::from(on))
            .end();
        self.request(m, &format!("set hairpin on link #{index}"))
            .map(drop)
    }

    /// Makes `vid` the untagged PVID of a bridge port and removes the default VLAN 1.
    pub fn set_port_vlan(&mut self, index: u32, vid: u16) -> Result<()> {
        let info = |flags: u16, vid: u16| {
            let mut b = [0u8; 4];
            b[0..2].copy_from_slice(&flags.to_ne_bytes());
            b[2..4].copy_from_slice(&vid.to_ne_bytes());
            b
        };
        if vid != 1 {
            let del = Msg::new(RTM_DELLINK, change_flags(0))
                .raw(&ifinfomsg(AF_BRIDGE, index, 0, 0))
                .begin(IFLA_AF_SPEC)
                .attr(IFLA_BRIDGE_VLAN_INFO, &info(0, 1))
                .end();
            match self.request(del, &format!("remove vlan 1 from link #{index}")) {
                Ok(_) => {}
                Err(e) if e.errno() == Some(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        let add = Msg::new(RTM_SETLINK, change_flags(0))
            .raw(&ifinfomsg(AF_BRIDGE, index, 0, 0))
            .begin(IFLA_AF_SPEC)
            .attr(
                IFLA_BRIDGE_VLAN_INFO,
                &info(BRIDGE_VLAN_INFO_PVID | BRIDGE_VLAN_INFO_UNTAGGED, vid),
            )
            .end();
        self.request(add, &format!("set vlan {vid} on link #{index}"))
            .map(drop)
    }

    /// Deletes a link; `Ok(false)` when it was already gone.
    pub fn del_link(&mut self, index: u32) -> Result<bool> {
        let m = Msg::new(RTM_DELLINK, change_flags(0)).raw(&ifinfomsg(0, index, 0, 0));
        match self.request(m, &format!("delete link #{index}")) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes the link called `name`; `Ok(false)` when there was none.
    pub fn del_link_by_name(&mut self, name: &str) -> Result<bool> {
        let m = Msg::new(RTM_DELLINK, change_flags(0))
            .raw(&ifinfomsg(0, 0, 0, 0))
            .str(IFLA_IFNAME, name);
        match self.request(m, &format!("delete link {name}")) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
