//! DEL, best effort and idempotent (SPEC.md "DEL"): remove the veth pair (by its deterministic
//! host-side name, else by `CNI_IFNAME` inside the pod namespace when that still exists),
//! release the IPAM reservation, remove the masquerade chain by name. Everything already gone
//! counts as done; the first real failure is reported after every step has been tried.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use super::{BridgeConf, host_veth_name, ipam, kernel, masq};
use crate::netlink::{Link, Socket};
use crate::netns::NetNs;
use crate::skel::Request;
use crate::spec::{CniError, IpNet};

pub fn del(req: &Request, c: &BridgeConf) -> Result<(), CniError> {
    crate::trace::mark("del start");
    let env = &req.env;
    let mut first: Option<CniError> = None;
    let mut note = |r: Result<(), CniError>| {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    };
    // The link deletion runs in a helper while IPAM and the firewall are cleaned here.
    let pending = match remove_link(req) {
        Ok(p) => p,
        Err(e) => {
            note(Err(e));
            None
        }
    };
    note(ipam::del(req));
    if c.ip_masq {
        let known: Vec<IpNet> = match req.conf.prev_result() {
            Ok(Some(prev)) => prev.ips.iter().map(|i| i.address).collect(),
            _ => Vec::new(),
        };
        note(masq::teardown(&req.conf.name, &env.container_id, &known));
    }
    if let Some(p) = pending {
        note(p.wait());
    }
    crate::trace::mark("del done");
    first.map_or(Ok(()), Err)
}

fn remove_link(req: &Request) -> Result<Option<Pending>, CniError> {
    let env = &req.env;
    let mut host = Socket::open().map_err(kernel)?;
    if let Some(l) = host
        .link_by_name(&host_veth_name(&env.container_id, &env.ifname))
        .map_err(kernel)?
        && l.kind == "veth"
    {
        return Ok(Some(Pending::start(host, l)));
    }
    // Not our naming (another plugin's ADD) or already gone: look inside the pod namespace.
    if env.netns.is_empty() {
        return Ok(None);
    }
    let ns = match NetNs::open(&env.netns) {
        Ok(ns) => ns,
        // The namespace is gone, and the pair with it; a path that is not a namespace cannot
        // hold our interface either.
        Err(_) => return Ok(None),
    };
    let mut pod = ns
        .socket()
        .map_err(|e| CniError::new(crate::spec::error::KERNEL_FAILURE, e.to_string()))?;
    if let Some(l) = pod.link_by_name(&env.ifname).map_err(kernel)?
        && l.kind == "veth"
    {
        pod.del_link(l.index).map_err(kernel)?;
    }
    Ok(None)
}

/// argv[1] of the helper process that deletes a link on DEL's behalf.
pub const DELETE_LINK_ARG: &str = "--internal-delete-link";

/// How long DEL waits for the helper to take the link out of the namespace before deleting
/// it itself.
const HELPER_DEADLINE: Duration = Duration::from_secs(2);

/// A veth pair being deleted by a helper process.
///
/// RTM_DELLINK returns only after `netdev_run_todo()` has waited for an RCU barrier and for
/// every reference to drop (net/core/dev.c), about 12 ms here, although the link leaves the
/// namespace (name and index free, pair unusable) at the start of that. So a helper process
/// (this binary, `DELETE_LINK_ARG`) sends the request and DEL waits only until the link is
/// gone from the namespace; the helper finishes the kernel's bookkeeping alone. If the helper
/// cannot start or does not get there in time, DEL deletes the link itself.
struct Pending {
    host: Socket,
    link: Link,
    spawned: bool,
}

impl Pending {
    fn start(host: Socket, link: Link) -> Pending {
        let spawned = std::env::current_exe()
            .and_then(|exe| {
                Command::new(exe)
                    .arg(DELETE_LINK_ARG)
                    .arg(link.index.to_string())
                    .arg(&link.name)
                    .env_remove("CNI_COMMAND")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
            })
            .is_ok();
        crate::trace::mark("helper spawned");
        Pending {
            host,
            link,
            spawned,
        }
    }

    fn wait(mut self) -> Result<(), CniError> {
        let (index, name) = (self.link.index, self.link.name.clone());
        if self.spawned {
            let deadline = Instant::now() + HELPER_DEADLINE;
            while Instant::now() < deadline {
                match self.host.link_by_index(index).map_err(kernel)? {
                    Some(l) if l.name == name => std::thread::sleep(Duration::from_micros(100)),
                    _ => {
                        crate::trace::mark("link gone");
                        return Ok(());
                    }
                }
            }
        }
        // No helper (or a slow one): delete here; the link being gone already is fine.
        match self.host.link_by_index(index).map_err(kernel)? {
            Some(l) if l.name == name => self.host.del_link(index).map(drop).map_err(kernel),
            _ => Ok(()),
        }
    }
}

/// The helper's `main`: delete link `index` if it is still called `name`.
pub fn delete_link_main(args: &[String]) -> ExitCode {
    let (Some(index), Some(name)) = (
        args.first().and_then(|i| i.parse::<u32>().ok()),
        args.get(1),
    ) else {
        eprintln!("usage: {DELETE_LINK_ARG} <ifindex> <ifname>");
        return ExitCode::FAILURE;
    };
    let Ok(mut sock) = Socket::open() else {
        return ExitCode::FAILURE;
    };
    match sock.link_by_index(index) {
        Ok(Some(l)) if &l.name == name => match sock.del_link(index) {
            Ok(_) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        },
        _ => ExitCode::SUCCESS,
    }
}
