//! IPAM for the bridge: `ipam.type` names a plugin on `CNI_PATH` that is exec'd with the same
//! env and config (SPEC.md "Delegated plugins"). When it names `keel-host-local`, the same
//! code runs in-process instead, saving one exec per ADD and DEL.

use crate::delegate;
use crate::hostlocal;
use crate::skel::Request;
use crate::spec::error::INVALID_NETWORK_CONFIG;
use crate::spec::{CniError, CniResult, Command};

const IN_PROCESS: &str = "keel-host-local";

fn ipam_type(req: &Request) -> Option<&str> {
    req.conf.ipam.as_ref().map(|i| i.plugin_type.as_str())
}

/// IPAM ADD; `None` when the network has no `ipam` (layer 2 only).
pub fn add(req: &Request) -> Result<Option<CniResult>, CniError> {
    match ipam_type(req) {
        None => Ok(None),
        Some("") => Err(CniError::new(
            INVALID_NETWORK_CONFIG,
            "ipam.type is empty; name an IPAM plugin",
        )),
        Some(IN_PROCESS) => hostlocal::add(&req.env, &req.conf).map(Some),
        Some(t) => match delegate::exec(t, Command::Add, &req.env, &req.stdin)? {
            Some(r) => Ok(Some(r)),
            None => Err(CniError::new(
                INVALID_NETWORK_CONFIG,
                format!("IPAM plugin {t} returned no result"),
            )),
        },
    }
}

fn run(req: &Request, cmd: Command) -> Result<(), CniError> {
    match ipam_type(req) {
        None | Some("") => Ok(()),
        Some(IN_PROCESS) => match cmd {
            Command::Del => hostlocal::del(&req.env, &req.conf),
            Command::Check => hostlocal::check(&req.env, &req.conf),
            Command::Gc => hostlocal::gc(&req.conf),
            _ => Ok(()),
        },
        // GC is 1.1: a delegate of an older spec would reject it as an unknown command.
        Some(t) if cmd == Command::Gc && !delegate::supports(t, &req.env, "1.1.0")? => Ok(()),
        Some(t) => delegate::exec(t, cmd, &req.env, &req.stdin).map(drop),
    }
}

pub fn del(req: &Request) -> Result<(), CniError> {
    run(req, Command::Del)
}

pub fn check(req: &Request) -> Result<(), CniError> {
    run(req, Command::Check)
}

pub fn gc(req: &Request) -> Result<(), CniError> {
    run(req, Command::Gc)
}

/// STATUS is forwarded to the IPAM plugin; ours is ready when its config loads, an exec'd
/// one answers for itself.
pub fn status(req: &Request) -> Result<(), CniError> {
    match ipam_type(req) {
        None | Some("") | Some(IN_PROCESS) => Ok(()),
        Some(t) if !delegate::supports(t, &req.env, "1.1.0")? => Ok(()),
        Some(t) => delegate::exec(t, Command::Status, &req.env, &req.stdin).map(drop),
    }
}
