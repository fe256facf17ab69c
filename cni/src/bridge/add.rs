//! ADD: IPAM first (nothing to undo if it fails), then the bridge, the veth pair created in one
//! netlink request with its peer already named and placed in the pod namespace, addresses and
//! routes in the pod, the gateway address on the bridge, forwarding, masquerade. Any failure
//! undoes what this ADD did, in reverse, before the error is returned.

use nix::errno::Errno;

use super::{BridgeConf, host_veth_name, ipam, kernel, mac_for, mac_string, masq};
use crate::netlink::link::{IFF_PROMISC, IFF_UP};
use crate::netlink::{Socket, VethSpec};
use crate::netns::NetNs;
use crate::skel::Request;
use crate::spec::error::{ALREADY_EXISTS, INVALID_ENV, KERNEL_FAILURE};
use crate::spec::{CniError, CniResult, Interface, IpConfig, IpNet, Route, from_u128, to_u128};
use crate::trace;

/// What this ADD created, for rollback.
#[derive(Default)]
struct Undo {
    ipam: bool,
    bridge: Option<u32>,
    veth: Option<u32>,
    masq: bool,
}

impl Undo {
    fn run(&self, req: &Request, host: &mut Socket) {
        // Best effort: the original error is what the caller reports.
        if self.masq {
            let _ = masq::teardown(&req.conf.name, &req.env.container_id, &[]);
        }
        if let Some(i) = self.veth {
            let _ = host.del_link(i);
        }
        // A bridge this ADD created goes too, unless a concurrent ADD already put a port on it.
        if let Some(i) = self.bridge
            && host
                .links()
                .is_ok_and(|ls| !ls.iter().any(|l| l.master == Some(i)))
        {
            let _ = host.del_link(i);
        }
        if self.ipam {
            let _ = ipam::del(req);
        }
    }
}

pub fn add(req: &Request, c: &BridgeConf) -> Result<CniResult, CniError> {
    let env = &req.env;
    requested_mac(req)?; // validate input before touching anything
    let ns = NetNs::open(&env.netns)
        .map_err(|e| CniError::new(INVALID_ENV, format!("CNI_NETNS: {e}")))?;
    let mut pod = ns
        .socket()
        .map_err(|e| CniError::new(INVALID_ENV, format!("CNI_NETNS: {e}")))?;
    let mut host = Socket::open().map_err(kernel)?;
    if pod.link_by_name(&env.ifname).map_err(kernel)?.is_some() {
        return Err(CniError::new(
            ALREADY_EXISTS,
            format!(
                "container veth name provided ({}) already exists",
                env.ifname
            ),
        )
        .with_details("DEL the previous attachment first, or use another CNI_IFNAME"));
    }
    let mut undo = Undo::default();
    let r = build(req, c, &ns, &mut pod, &mut host, &mut undo);
    if r.is_err() {
        undo.run(req, &mut host);
    }
    r
}

fn build(
    req: &Request,
    c: &BridgeConf,
    ns: &NetNs,
    pod: &mut Socket,
    host: &mut Socket,
    undo: &mut Undo,
) -> Result<CniResult, CniError> {
    let env = &req.env;
    trace::mark("start");
    let ipam_res = ipam::add(req)?;
    undo.ipam = ipam_res.is_some();
    let mut ips: Vec<IpConfig> = ipam_res.as_ref().map(|r| r.ips.clone()).unwrap_or_default();
    let mut routes: Vec<Route> = ipam_res
        .as_ref()
        .map(|r| r.routes.clone())
        .unwrap_or_default();

    trace::mark("ipam");
    // The bridge.
    let (br_index, br_mac) = ensure_bridge(c, host, undo)?;

    trace::mark("bridge");
    // The veth pair, peer born in the pod namespace under its final name.
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    let host_mac = mac_for(&[&env.container_id, &env.ifname, "host"]);
    let pod_mac =
        requested_mac(req)?.unwrap_or_else(|| mac_for(&[&env.container_id, &env.ifname, "pod"]));
    let spec = VethSpec {
        host_name: &host_name,
        host_mac,
        peer_name: &env.ifname,
        peer_mac: pod_mac,
        peer_netns: ns.fd(),
        mtu: c.mtu,
        master: br_index,
    };
    let echoed = match host.add_veth(&spec) {
        Err(e) if e.errno() == Some(Errno::EEXIST) => {
            // A leftover host end of this very (containerID, ifname): replace it.
            if let Some(old) = host.link_by_name(&host_name).map_err(kernel)? {
                host.del_link(old.index).map_err(kernel)?;
            }
            host.add_veth(&spec).map_err(kernel)?
        }
        r => r.map_err(kernel)?,
    };
    // Kernels without NLM_F_ECHO for RTM_NEWLINK (before 6.3) need a lookup.
    let veth = match echoed {
        Some(l) => l,
        None => host
            .link_by_name(&host_name)
            .map_err(kernel)?
            .ok_or_else(|| {
                CniError::new(
                    KERNEL_FAILURE,
                    format!("veth {host_name} vanished after creation"),
                )
            })?,
    };
    undo.veth = Some(veth.index);
    trace::mark("veth");
    if c.hairpin_mode {
        host.set_hairpin(veth.index, true).map_err(kernel)?;
    }
    if let Some(vid) = c.vlan {
        host.set_port_vlan(veth.index, vid).map_err(kernel)?;
    }

    // Gateways: IPAM's, else the first address of the pod subnet (reference behaviour).
    for ip in &mut ips {
        ip.interface = Some(2);
        if c.is_gateway && ip.gateway.is_none() {
            let net = ip.address.truncated();
            ip.gateway = Some(from_u128(net.addr, to_u128(net.addr) + 1));
        }
    }
    if c.is_default_gateway {
        for ip in &ips {
            let zero = IpNet {
                addr: from_u128(ip.address.addr, 0),
                prefix: 0,
            };
            let has_default = routes.iter().any(|r| r.dst == zero && r.gw.is_some());
            if !has_default && let Some(gw) = ip.gateway {
                routes.push(Route::to(zero, Some(gw)));
            }
        }
    }

    trace::mark("port");
    // Pod side: addresses, then routes (via the family's gateway when a route has none).
    let pod_link = pod
        .link_by_name(&env.ifname)
        .map_err(kernel)?
        .ok_or_else(|| {
            CniError::new(
                KERNEL_FAILURE,
                format!("{} vanished from CNI_NETNS after creation", env.ifname),
            )
        })?;
    if ips.iter().any(|i| i.address.is_ipv4()) {
        pod.set_arp_notify(pod_link.index).map_err(kernel)?;
    }
    pod.set_flags(pod_link.index, IFF_UP, IFF_UP)
        .map_err(kernel)?;
    for ip in &ips {
        pod.add_addr(pod_link.index, ip.address).map_err(kernel)?;
    }
    for r in &routes {
        let gw = ips
            .iter()
            .find(|i| i.address.is_ipv4() == r.dst.is_ipv4())
            .and_then(|i| i.gateway);
        match pod.add_route(pod_link.index, r, gw) {
            Err(e) if e.errno() == Some(Errno::EEXIST) => {}
            res => res.map_err(kernel)?,
        }
    }

    trace::mark("pod");
    // Host side: gateway addresses on the bridge, forwarding, masquerade.
    if c.is_gateway {
        for ip in &ips {
            if let Some(gw) = ip.gateway {
                ensure_addr(
                    host,
                    br_index,
                    IpNet {
                        addr: gw,
                        prefix: ip.address.prefix,
                    },
                    c.force_address,
                    &c.bridge,
                )?;
            }
        }
        for v4 in [true, false] {
            if ips.iter().any(|i| i.address.is_ipv4() == v4) {
                enable_forwarding(v4)?;
            }
        }
    }
    trace::mark("gateway");
    if c.ip_masq && !ips.is_empty() {
        undo.masq = true;
        let addrs: Vec<IpNet> = ips.iter().map(|i| i.address).collect();
        masq::setup(&req.conf.name, &env.container_id, &addrs)?;
    }

    trace::mark("masq");
    let mtu = c.mtu;
    let dns = match ipam_res.as_ref().map(|r| r.dns.clone()) {
        Some(d) if !d.is_empty() => d,
        _ => req.conf.dns.clone().unwrap_or_default(),
    };
    Ok(CniResult {
        cni_version: req.conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: c.bridge.clone(),
                mac: Some(mac_string(&br_mac)),
                mtu,
                ..Interface::default()
            },
            Interface {
                name: host_name.clone(),
                mac: Some(mac_string(&host_mac)),
                mtu,
                ..Interface::default()
            },
            Interface {
                name: env.ifname.clone(),
                mac: Some(mac_string(&pod_mac)),
                mtu,
                sandbox: Some(env.netns.clone()),
                ..Interface::default()
            },
        ],
        ips,
        routes,
        dns,
    })
}

/// The bridge's index and MAC, creating it (up, fixed MAC, `accept_ra=0`) when missing.
fn ensure_bridge(
    c: &BridgeConf,
    host: &mut Socket,
    undo: &mut Undo,
) -> Result<(u32, Vec<u8>), CniError> {
    let mut link = host.link_by_name(&c.bridge).map_err(kernel)?;
    if link.is_none() {
        let mac = mac_for(&["bridge", &c.bridge]);
        match host.add_bridge(&c.bridge, mac, c.mtu, c.vlan.is_some()) {
            Ok(()) => {
                link = host.link_by_name(&c.bridge).map_err(kernel)?;
                undo.bridge = link.as_ref().map(|l| l.index);
                // Router advertisements must not configure the bridge (reference behaviour).
                let _ = std::fs::write(
                    format!("/proc/sys/net/ipv6/conf/{}/accept_ra", c.bridge),
                    "0",
                );
            }
            Err(e) if e.errno() == Some(Errno::EEXIST) => {
                link = host.link_by_name(&c.bridge).map_err(kernel)?
            }
            Err(e) if c.vlan.is_some() && e.errno() == Some(Errno::EOPNOTSUPP) => {
                return Err(kernel(e).with_details(
                    "\"vlan\" needs bridge VLAN filtering, which this kernel lacks \
                     (CONFIG_BRIDGE_VLAN_FILTERING); remove \"vlan\" or use another kernel",
                ));
            }
            Err(e) => return Err(kernel(e)),
        }
    }
    let l = link.ok_or_else(|| {
        CniError::new(
            KERNEL_FAILURE,
            format!("bridge {} vanished after creation", c.bridge),
        )
    })?;
    if l.kind != "bridge" {
        return Err(CniError::new(
            crate::spec::error::INVALID_NETWORK_CONFIG,
            format!(
                "{} already exists but is not a bridge (kind {:?})",
                c.bridge, l.kind
            ),
        )
        .with_details("choose another \"bridge\" name"));
    }
    let mut want = IFF_UP;
    if c.promisc_mode {
        want |= IFF_PROMISC;
    }
    if l.flags & want != want {
        host.set_flags(l.index, want, want).map_err(kernel)?;
    }
    Ok((l.index, l.mac))
}

/// Puts `net` on the bridge unless it is there; a different address of the same family that
/// overlaps is an error, or is replaced with `forceAddress`.
fn ensure_addr(
    host: &mut Socket,
    index: u32,
    net: IpNet,
    force: bool,
    bridge: &str,
) -> Result<(), CniError> {
    let fam = if net.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    } as u8;
    for a in host.addrs(index, Some(fam)).map_err(kernel)? {
        if a.is_link_local() {
            continue;
        }
        if a.net == net {
            return Ok(());
        }
        if a.net.overlaps(&net) {
            if !force {
                return Err(CniError::new(
                    crate::spec::error::INVALID_NETWORK_CONFIG,
                    format!(
                        "{bridge} already has an IP address different from {net}: {}",
                        a.net
                    ),
                )
                .with_details("set forceAddress to replace it, or fix the gateway"));
            }
            host.del_addr(index, a.net).map_err(kernel)?;
        }
    }
    match host.add_addr(index, net) {
        Err(e) if e.errno() == Some(Errno::EEXIST) => Ok(()),
        r => r.map_err(kernel),
    }
}

/// `net.ipv4.ip_forward` / `net.ipv6.conf.all.forwarding` = 1 in the host namespace.
fn enable_forwarding(v4: bool) -> Result<(), CniError> {
    let path = if v4 {
        "/proc/sys/net/ipv4/ip_forward"
    } else {
        "/proc/sys/net/ipv6/conf/all/forwarding"
    };
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, "1")
        .map_err(|e| CniError::new(KERNEL_FAILURE, format!("write 1 to {path}: {e}")))
}

/// The pod MAC asked for by the runtime: capability `mac` (`runtimeConfig.mac`) or
/// `CNI_ARGS` `MAC=` (CONVENTIONS.md).
fn requested_mac(req: &Request) -> Result<Option<[u8; 6]>, CniError> {
    let from_rc = req
        .conf
        .runtime_config
        .as_ref()
        .and_then(|r| r.get("mac"))
        .and_then(|m| m.as_str());
    let Some(text) = from_rc.or_else(|| req.env.arg("MAC")) else {
        return Ok(None);
    };
    let bad = || {
        CniError::new(
            crate::spec::error::INVALID_NETWORK_CONFIG,
            format!("invalid MAC address {text:?}"),
        )
        .with_details("write it as six hex pairs, e.g. 0a:58:0a:f4:00:05")
    };
    let parts: Vec<u8> = text
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let mac: [u8; 6] = parts.try_into().map_err(|_| bad())?;
    if mac[0] & 1 == 1 {
        return Err(bad().with_details("a multicast address cannot be an interface MAC"));
    }
    Ok(Some(mac))
}
