//! `keel-host-local`: IPAM from local ranges, state in files (cni.dev host-local docs). The
//! bridge plugin calls [`add`]/[`del`]/[`check`] in-process when `ipam.type` is
//! `keel-host-local`, which is exactly what exec'ing this binary would do, minus one exec.

mod range;
mod store;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::skel::{Plugin, Request};
use crate::spec::error::{
    ADDRESS_EXHAUSTED, ALREADY_EXISTS, CHECK_FAILED, INVALID_NETWORK_CONFIG, IO_FAILURE,
};
use crate::spec::{CniError, CniResult, Dns, Env, IpConfig, IpNet, NetConf, Route};

pub use range::{Range, RangeConf};

/// The reference's default state directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, Default, Deserialize)]
struct IpamConf {
    #[serde(default)]
    ranges: Vec<Vec<RangeConf>>,
    /// Deprecated single-range form.
    #[serde(default)]
    subnet: Option<IpNet>,
    #[serde(rename = "rangeStart", default)]
    range_start: Option<IpAddr>,
    #[serde(rename = "rangeEnd", default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(rename = "dataDir", default)]
    data_dir: Option<PathBuf>,
    #[serde(rename = "resolvConf", default)]
    resolv_conf: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct Conf {
    ipam: Option<IpamConf>,
}

/// The validated view of one network's IPAM settings.
struct Network {
    dir: PathBuf,
    sets: Vec<Vec<Range>>,
    routes: Vec<Route>,
    resolv_conf: Option<PathBuf>,
}

fn load(conf: &NetConf) -> Result<Network, CniError> {
    let c: Conf = conf.plugin_conf()?;
    let ipam = c
        .ipam
        .ok_or_else(|| CniError::new(INVALID_NETWORK_CONFIG, "missing \"ipam\" object"))?;
    let name = conf.name.as_str();
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(CniError::new(
            INVALID_NETWORK_CONFIG,
            format!("invalid network name {name:?}"),
        )
        .with_details("\"name\" is used as a directory name: non-empty, no '/'"));
    }
    let mut sets = ipam.ranges;
    if let Some(subnet) = ipam.subnet {
        let legacy = RangeConf {
            subnet,
            range_start: ipam.range_start,
            range_end: ipam.range_end,
            gateway: ipam.gateway,
        };
        sets.insert(0, vec![legacy]);
    }
    let sets = range::canonical_sets(&sets)?;
    let dir = ipam
        .data_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
        .join(name);
    Ok(Network {
        dir,
        sets,
        routes: ipam.routes,
        resolv_conf: ipam.resolv_conf,
    })
}

fn store_err(e: store::Error) -> CniError {
    CniError::new(IO_FAILURE, format!("host-local: {e}")).with_details(
        std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default(),
    )
}

/// Addresses asked for by the runtime: `runtimeConfig.ips`, `args.cni.ips`, `CNI_ARGS IP=`.
fn requested_ips(env: &Env, conf: &NetConf) -> Result<Vec<IpAddr>, CniError> {
    let mut raw: Vec<String> = Vec::new();
    let strings = |v: Option<&serde_json::Value>| -> Vec<String> {
        v.and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    raw.extend(strings(
        conf.runtime_config.as_ref().and_then(|r| r.get("ips")),
    ));
    raw.extend(strings(
        conf.args
            .as_ref()
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("ips")),
    ));
    if let Some(ips) = env.arg("IP") {
        raw.extend(ips.split(',').map(str::to_string));
    }
    raw.iter()
        .map(|s| {
            let s = s.trim();
            s.split('/')
                .next()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| {
                    CniError::new(
                        INVALID_NETWORK_CONFIG,
                        format!("requested IP {s:?} is not an IP address"),
                    )
                })
        })
        .collect()
}

/// Reserves one address per range set for `(CNI_CONTAINERID, CNI_IFNAME)`.
pub fn add(env: &Env, conf: &NetConf) -> Result<CniResult, CniError> {
    let net = load(conf)?;
    let requested = requested_ips(env, conf)?;
    let (id, ifname) = (env.container_id.as_str(), env.ifname.as_str());
    let store = store::Store::lock(&net.dir).map_err(store_err)?;
    let held = store.reservations().map_err(store_err)?;
    let mut got: Vec<IpAddr> = Vec::new();
    let result = (|| {
        let mut ips = Vec::new();
        for (i, set) in net.sets.iter().enumerate() {
            if let Some((ip, _)) = held
                .iter()
                .find(|(ip, h)| h.is(id, ifname) && set.iter().any(|r| r.contains(**ip)))
            {
                return Err(CniError::new(
                    ALREADY_EXISTS,
                    format!("{ip} has been allocated to {id}, duplicate allocation is not allowed"),
                )
                .with_details("run DEL for this container and interface first"));
            }
            let want = requested
                .iter()
                .find(|ip| set.iter().any(|r| r.subnet.contains(**ip)));
            let (ri, ip) = match want {
                Some(&ip) => {
                    let ri = set.iter().position(|r| r.contains(ip)).ok_or_else(|| {
                        CniError::new(
                            INVALID_NETWORK_CONFIG,
                            format!("requested IP {ip} is outside range set {i}"),
                        )
                    })?;
                    if !store.reserve(ip, id, ifname, i).map_err(store_err)? {
                        return Err(CniError::new(
                            ALREADY_EXISTS,
                            format!("requested IP address {ip} is not available"),
                        ));
                    }
                    (ri, ip)
                }
                None => {
                    let mut found = None;
                    for (ri, ip) in range::candidates(set, store.last_reserved(i)) {
                        if held.contains_key(&ip) {
                            continue;
                        }
                        if store.reserve(ip, id, ifname, i).map_err(store_err)? {
                            found = Some((ri, ip));
                            break;
                        }
                    }
                    found.ok_or_else(|| {
                        let span: Vec<String> = set
                            .iter()
                            .map(|r| format!("{}-{}", r.start, r.end))
                            .collect();
                        CniError::new(
                            ADDRESS_EXHAUSTED,
                            format!("no IP addresses available in range set: {}", span.join(",")),
                        )
                        .with_details("release addresses (DEL, GC) or add a range to ipam.ranges")
                    })?
                }
            };
            got.push(ip);
            let r = &set[ri];
            let address = IpNet {
                addr: ip,
                prefix: r.subnet.prefix,
            };
            ips.push(IpConfig {
                address,
                gateway: r.gateway,
                interface: None,
            });
        }
        Ok(ips)
    })();
    let ips = match result {
        Ok(ips) => ips,
        Err(e) => {
            for ip in got {
                let _ = store.release(ip);
            }
            return Err(e);
        }
    };
    drop(store);
    let dns = match &net.resolv_conf {
        Some(p) => parse_resolv_conf(p)?,
        None => Dns::default(),
    };
    Ok(CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![],
        ips,
        routes: net.routes,
        dns,
    })
}

/// Releases every address held by `(CNI_CONTAINERID, CNI_IFNAME)`; nothing held is fine.
pub fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let net = load(conf)?;
    if !net.dir.exists() {
        return Ok(());
    }
    let store = store::Store::lock(&net.dir).map_err(store_err)?;
    for (ip, h) in store.reservations().map_err(store_err)? {
        if h.is(&env.container_id, &env.ifname) {
            store.release(ip).map_err(store_err)?;
        }
    }
    Ok(())
}

/// Errors unless `(CNI_CONTAINERID, CNI_IFNAME)` holds an address in every range set.
pub fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let net = load(conf)?;
    let missing = || {
        CniError::new(
            CHECK_FAILED,
            format!(
                "host-local: Failed to find address added by container {}",
                env.container_id
            ),
        )
    };
    if !net.dir.exists() {
        return Err(missing());
    }
    let store = store::Store::lock(&net.dir).map_err(store_err)?;
    let held = store.reservations().map_err(store_err)?;
    for set in &net.sets {
        if !held.iter().any(|(ip, h)| {
            h.is(&env.container_id, &env.ifname) && set.iter().any(|r| r.contains(*ip))
        }) {
            return Err(missing());
        }
    }
    Ok(())
}

/// GC (1.1): releases addresses whose attachment is not in `cni.dev/valid-attachments`.
pub fn gc(conf: &NetConf) -> Result<(), CniError> {
    let net = load(conf)?;
    if !net.dir.exists() {
        return Ok(());
    }
    let valid: HashSet<(String, String)> = conf
        .gc_attachments()
        .into_iter()
        .map(|a| (a.container_id, a.ifname))
        .collect();
    let store = store::Store::lock(&net.dir).map_err(store_err)?;
    let mut first_err = None;
    for (ip, h) in store.reservations().map_err(store_err)? {
        let keep = match &h.ifname {
            Some(i) => valid.contains(&(h.container_id.clone(), i.clone())),
            None => valid.iter().any(|(c, _)| *c == h.container_id),
        };
        if !keep && let Err(e) = store.release(ip) {
            first_err.get_or_insert(store_err(e));
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// The `nameserver`, `domain`, `search`, `options` lines of a resolv.conf file.
fn parse_resolv_conf(path: &std::path::Path) -> Result<Dns, CniError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CniError::new(
            IO_FAILURE,
            format!("read ipam.resolvConf {}", path.display()),
        )
        .with_details(e.to_string())
    })?;
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => dns.nameservers.extend(f.next().map(str::to_string)),
            Some("domain") => dns.domain = f.next().map(str::to_string),
            Some("search") => dns.search = f.map(str::to_string).collect(),
            Some("options") => dns.options.extend(f.map(str::to_string)),
            _ => {}
        }
    }
    Ok(dns)
}

/// The `keel-host-local` binary.
pub struct HostLocal;

impl Plugin for HostLocal {
    fn about(&self) -> &'static str {
        concat!(
            "keel-host-local ",
            env!("CARGO_PKG_VERSION"),
            ": CNI host-local IPAM (spec 0.3.0-1.1.0)"
        )
    }
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        add(&req.env, &req.conf)
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        del(&req.env, &req.conf)
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        check(&req.env, &req.conf)
    }
    fn status(&self, req: &Request) -> Result<(), CniError> {
        load(&req.conf).map(drop)
    }
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        gc(&req.conf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(id: &str, args: &str) -> Env {
        let vars = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
            ("CNI_ARGS", args),
        ];
        Env::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .expect("env")
    }

    fn conf(dir: &std::path::Path, ranges: serde_json::Value) -> NetConf {
        let c = json!({"cniVersion": "1.1.0", "name": "unit", "type": "keel-host-local",
            "ipam": {"type": "keel-host-local", "ranges": ranges, "dataDir": dir}});
        NetConf::parse(c.to_string().as_bytes()).expect("conf")
    }

    #[test]
    fn allocates_round_robin_refuses_duplicates_and_releases() {
        let tmp = tempfile::tempdir().expect("tmp");
        let c = conf(tmp.path(), json!([[{"subnet": "10.9.0.0/29"}]]));
        let a = add(&env("a", ""), &c).expect("a");
        let b = add(&env("b", ""), &c).expect("b");
        assert_eq!(
            (a.ips[0].address.to_string(), b.ips[0].address.to_string()),
            ("10.9.0.2/29".into(), "10.9.0.3/29".into())
        );
        assert_eq!(
            add(&env("a", ""), &c).expect_err("dup").code,
            ALREADY_EXISTS
        );
        del(&env("a", ""), &c).expect("del");
        // Round robin: the freed .2 is not reused before the range wraps.
        assert_eq!(
            add(&env("c", ""), &c).expect("c").ips[0]
                .address
                .to_string(),
            "10.9.0.4/29"
        );
        check(&env("b", ""), &c).expect("check b");
        assert_eq!(
            check(&env("a", ""), &c).expect_err("gone").code,
            CHECK_FAILED
        );
        del(&env("zzz", ""), &c).expect("del unknown");
    }

    #[test]
    fn second_set_exhausted_releases_the_first() {
        let tmp = tempfile::tempdir().expect("tmp");
        let c = conf(
            tmp.path(),
            json!([[{"subnet": "10.9.1.0/24"}], [{"subnet": "fd09::/126"}]]),
        );
        add(&env("a", ""), &c).expect("a");
        add(&env("b", ""), &c).expect("b");
        let e = add(&env("c", ""), &c).expect_err("v6 set is full");
        assert_eq!(e.code, ADDRESS_EXHAUSTED);
        let files = std::fs::read_dir(tmp.path().join("unit"))
            .expect("dir")
            .count();
        assert_eq!(
            files,
            4 + 2 + 1,
            "a and b (2 files each), 2 last_reserved, lock: c left nothing"
        );
    }

    #[test]
    fn requested_ip_and_gc() {
        let tmp = tempfile::tempdir().expect("tmp");
        let c = conf(
            tmp.path(),
            json!([[{"subnet": "10.9.2.0/24", "rangeStart": "10.9.2.10", "rangeEnd": "10.9.2.20"}]]),
        );
        let r = add(&env("a", "IgnoreUnknown=1;IP=10.9.2.15"), &c).expect("requested");
        assert_eq!(r.ips[0].address.to_string(), "10.9.2.15/24");
        assert_eq!(
            add(&env("b", "IP=10.9.2.15"), &c).expect_err("taken").code,
            ALREADY_EXISTS
        );
        assert_eq!(
            add(&env("b", "IP=10.9.2.50"), &c)
                .expect_err("outside")
                .code,
            INVALID_NETWORK_CONFIG
        );
        add(&env("b", ""), &c).expect("b");
        std::fs::write(tmp.path().join("unit").join("10.9.2.19"), "legacy-id").expect("legacy");
        let mut g = c.clone();
        g.valid_attachments = Some(vec![crate::spec::Attachment {
            container_id: "b".into(),
            ifname: "eth0".into(),
        }]);
        gc(&g).expect("gc");
        let left: Vec<String> = std::fs::read_dir(tmp.path().join("unit"))
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with("10."))
            .collect();
        assert_eq!(
            left,
            ["10.9.2.16"],
            "GC kept only b's reservation (after .15: round robin)"
        );
    }
}
