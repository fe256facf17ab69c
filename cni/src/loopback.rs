//! `keel-loopback`: brings `lo` up in the pod namespace (the reference `loopback` plugin).
//! ADD reports `lo` with 127.0.0.1/8 and ::1/128; DEL sets it down and succeeds when the
//! namespace is already gone; CHECK errors when `lo` is not up.

use crate::netlink::{self, link::IFF_UP};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netns::NetNs;
use crate::skel::{Plugin, Request};
use crate::spec::error::{CHECK_FAILED, INVALID_ENV, KERNEL_FAILURE};
use crate::spec::{CniError, CniResult, Interface, IpConfig, IpNet};

fn open(req: &Request) -> Result<netlink::Socket, CniError> {
    let ns = NetNs::open(&req.env.netns)
        .map_err(|e| CniError::new(INVALID_ENV, format!("CNI_NETNS: {e}")))?;
    ns.socket()
        .map_err(|e| CniError::new(KERNEL_FAILURE, e.to_string()))
}

fn lo(sock: &mut netlink::Socket) -> Result<netlink::Link, CniError> {
    let kernel = |e: netlink::Error| CniError::new(KERNEL_FAILURE, e.to_string());
    sock.link_by_name("lo")
        .map_err(kernel)?
        .ok_or_else(|| CniError::new(KERNEL_FAILURE, "no lo in CNI_NETNS"))
}

/// The `keel-loopback` binary.
pub struct Loopback;

impl Plugin for Loopback {
    fn about(&self) -> &'static str {
        concat!(
            "keel-loopback ",
            env!("CARGO_PKG_VERSION"),
            ": CNI loopback (spec 0.3.0-1.1.0)"
        )
    }

    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let mut sock = open(req)?;
        let l = lo(&mut sock)?;
        sock.set_flags(l.index, IFF_UP, IFF_UP)
            .map_err(|e| CniError::new(KERNEL_FAILURE, e.to_string()))?;
        let iface = Interface {
            name: "lo".into(),
            mac: Some("00:00:00:00:00:00".into()),
            sandbox: Some(req.env.netns.clone()),
            ..Interface::default()
        };
        let ip = |addr: IpAddr, prefix| IpConfig {
            address: IpNet { addr, prefix },
            gateway: None,
            interface: Some(0),
        };
        Ok(CniResult {
            cni_version: req.conf.cni_version.clone(),
            interfaces: vec![iface],
            ips: vec![
                ip(Ipv4Addr::LOCALHOST.into(), 8),
                ip(Ipv6Addr::LOCALHOST.into(), 128),
            ],
            ..CniResult::default()
        })
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        if req.env.netns.is_empty() {
            return Ok(());
        }
        let mut sock = match NetNs::open(&req.env.netns) {
            Ok(ns) => ns
                .socket()
                .map_err(|e| CniError::new(KERNEL_FAILURE, e.to_string()))?,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(CniError::new(INVALID_ENV, format!("CNI_NETNS: {e}"))),
        };
        let l = lo(&mut sock)?;
        sock.set_flags(l.index, 0, IFF_UP)
            .map_err(|e| CniError::new(KERNEL_FAILURE, e.to_string()))
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let mut sock = open(req)?;
        if lo(&mut sock)?.flags & IFF_UP == 0 {
            return Err(CniError::new(CHECK_FAILED, "lo is down in CNI_NETNS"));
        }
        Ok(())
    }
}
