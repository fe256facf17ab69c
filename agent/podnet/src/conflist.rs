//! Which network configuration list the agent uses: the first `*.conflist` of `conf_dir` in
//! lexical order (libcni's `ConfFiles` + sort), or, when there is none, `10-keel.conflist`
//! written from the node's podCIDR: keel-bridge with the gateway on the bridge and a default
//! route in the pod, keel-host-local over the podCIDR. A list an operator put there (e.g. the
//! reference `bridge` + `host-local`) is used as is; only our own file is ever rewritten.

use std::path::{Path, PathBuf};

use keel_cni::spec::{IpNet, NetConfList};
use serde_json::{Value, json};

use crate::NetError;

/// The file written when `conf_dir` holds no `.conflist`.
pub const DEFAULT_CONFLIST: &str = "10-keel.conflist";
/// `name` of the default network (also its IPAM folder under `<state_dir>/networks`).
pub const DEFAULT_NETWORK_NAME: &str = "keel";
/// Bridge of the default network.
pub const DEFAULT_BRIDGE: &str = "keel0";
/// 1.0.0, not 1.1.0: the reference plugins Debian ships (1.1.1) stop at 1.0.0, and an operator
/// may point the default list's types at them.
const DEFAULT_CNI_VERSION: &str = "1.0.0";

/// The list in use: where it came from, its parsed form and its JSON (cached per pod, so DEL
/// uses the configuration the ADD used even if the file changed since).
#[derive(Clone, Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub list: NetConfList,
    pub json: Value,
}

/// The default list for a node whose podCIDRs are `pod_cidrs` (one IPAM range set each, so a
/// dual-stack node gives every pod one address per family).
pub fn render_default(
    pod_cidrs: &[IpNet],
    bridge: &str,
    mtu: Option<u32>,
    ipam_dir: &Path,
) -> Value {
    let mut br = json!({
        "type": "keel-bridge",
        "bridge": bridge,
        "isGateway": true,
        "isDefaultGateway": true,
        // kube-proxy semantics: a pod reaching itself through a Service VIP.
        "hairpinMode": true,
        "ipam": {
            "type": "keel-host-local",
            "ranges": pod_cidrs
                .iter()
                .map(|c| json!([{"subnet": c.truncated().to_string()}]))
                .collect::<Vec<_>>(),
            "dataDir": ipam_dir.to_string_lossy(),
        },
    });
    if let (Some(m), Some(o)) = (mtu, br.as_object_mut()) {
        o.insert("mtu".into(), Value::from(m));
    }
    json!({
        "cniVersion": DEFAULT_CNI_VERSION,
        "name": DEFAULT_NETWORK_NAME,
        "plugins": [br],
    })
}

/// `*.conflist` files of `dir`, sorted.
fn conflists(dir: &Path) -> Result<Vec<PathBuf>, NetError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetError::state("read CNI configuration folder", dir, e)),
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conflist") && p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

/// Parses one list file.
pub fn load(path: &Path) -> Result<Loaded, NetError> {
    let bytes = std::fs::read(path).map_err(|e| NetError::ConfList {
        path: path.to_path_buf(),
        reason: format!("cannot read it: {e}"),
    })?;
    from_bytes(path, &bytes)
}

/// Parses list JSON that came from `path` (a file, or a pod's cache).
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Loaded, NetError> {
    let bad = |reason: String| NetError::ConfList {
        path: path.to_path_buf(),
        reason,
    };
    let list = NetConfList::parse(bytes).map_err(|e| bad(e.to_string()))?;
    if list.cni_version.is_empty() {
        return Err(bad("has no \"cniVersion\"".into()));
    }
    for p in &list.plugins {
        let t = p.get("type").and_then(Value::as_str).unwrap_or_default();
        if t.contains('/') || t == "." || t == ".." {
            return Err(bad(format!(
                "plugin type {t:?} must be a file name found in the plugin folders"
            )));
        }
    }
    let json = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    Ok(Loaded {
        path: path.to_path_buf(),
        list,
        json,
    })
}

/// Picks the list to use, writing the default one first if the folder has none (or if only
/// our own file is there and the podCIDR, bridge or MTU changed).
pub fn select(
    conf_dir: &Path,
    pod_cidr: Option<&str>,
    bridge: &str,
    mtu: Option<u32>,
    ipam_dir: &Path,
) -> Result<Loaded, NetError> {
    let files = conflists(conf_dir)?;
    let ours = conf_dir.join(DEFAULT_CONFLIST);
    if let Some(first) = files.first()
        && *first != ours
    {
        return load(first);
    }
    let Some(cidr) = pod_cidr.filter(|c| !c.is_empty()) else {
        if !files.is_empty() {
            return load(&ours);
        }
        return Err(NetError::Setting {
            field: "pod_cidr",
            reason: format!(
                "{} holds no *.conflist and the node has no spec.podCIDR to write {DEFAULT_CONFLIST} from; \
                 allocate node CIDRs in the control plane or put a conflist there",
                conf_dir.display()
            ),
        });
    };
    let nets: Vec<IpNet> = cidr
        .split(',')
        .map(|c| {
            c.trim().parse().map_err(|_| NetError::Setting {
                field: "pod_cidr",
                reason: format!(
                    "{cidr:?} is not a CIDR like 10.244.1.0/24 (or a comma-separated IPv4,IPv6 pair)"
                ),
            })
        })
        .collect::<Result<_, _>>()?;
    if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ' ']) {
        return Err(NetError::Setting {
            field: "bridge",
            reason: format!("{bridge:?} is not an interface name (1 to 15 characters)"),
        });
    }
    let want = render_default(&nets, bridge, mtu, ipam_dir);
    let text = serde_json::to_string_pretty(&want).unwrap_or_default() + "\n";
    let current = std::fs::read(&ours).ok();
    if current.as_deref() != Some(text.as_bytes()) {
        std::fs::create_dir_all(conf_dir)
            .map_err(|e| NetError::state("create CNI configuration folder", conf_dir, e))?;
        crate::cache::write_atomic(&ours, text.as_bytes())?;
        tracing::info!(path = %ours.display(), pod_cidr = %cidr, "wrote the default CNI configuration");
    }
    from_bytes(&ours, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_default_once_and_prefers_operator_lists() {
        let d = tempfile::tempdir().expect("tempdir");
        let conf = d.path().join("net.d");
        let ipam = d.path().join("networks");
        let l = select(&conf, Some("10.244.1.0/24"), "keel0", Some(1400), &ipam).expect("default");
        assert_eq!(l.path, conf.join(DEFAULT_CONFLIST));
        assert_eq!(l.list.name, DEFAULT_NETWORK_NAME);
        let p = &l.json["plugins"][0];
        assert_eq!(p["type"], "keel-bridge");
        assert_eq!(p["isDefaultGateway"], true);
        assert_eq!(p["mtu"], 1400);
        assert_eq!(p["ipam"]["ranges"][0][0]["subnet"], "10.244.1.0/24");
        // Same inputs: nothing rewritten; no podCIDR: our file is still used.
        let l2 = select(&conf, None, "keel0", Some(1400), &ipam).expect("reuse");
        assert_eq!(l2.json, l.json);
        // A changed podCIDR rewrites our own file.
        let l3 = select(&conf, Some("10.244.7.0/24"), "keel0", None, &ipam).expect("rewrite");
        assert_eq!(
            l3.json["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.7.0/24"
        );
        // An operator's list sorting first wins and is never touched.
        let op = br#"{"cniVersion":"1.0.0","name":"op","plugins":[{"type":"bridge"}]}"#;
        std::fs::write(conf.join("05-op.conflist"), op).expect("write");
        let l4 = select(&conf, Some("10.244.1.0/24"), "keel0", None, &ipam).expect("operator");
        assert_eq!(l4.list.name, "op");
        // Dual stack: one range set per family.
        let d2 = tempfile::tempdir().expect("tempdir");
        let l5 = select(
            d2.path(),
            Some("10.244.1.0/24,fd00:1::/64"),
            "keel0",
            None,
            &ipam,
        )
        .expect("dual");
        let ranges = &l5.json["plugins"][0]["ipam"]["ranges"];
        assert_eq!(ranges[1][0]["subnet"], "fd00:1::/64", "{ranges}");
        assert_eq!(
            std::fs::read(conf.join("05-op.conflist")).expect("read"),
            op
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        let d = tempfile::tempdir().expect("tempdir");
        let e = select(d.path(), None, "keel0", None, d.path()).expect_err("no cidr");
        assert!(e.to_string().contains("pod_cidr"), "{e}");
        let e = select(d.path(), Some("10.0.0.0"), "keel0", None, d.path()).expect_err("bad");
        assert!(e.to_string().contains("not a CIDR"), "{e}");
        std::fs::write(d.path().join("a.conflist"), b"{").expect("write");
        let e = select(d.path(), None, "keel0", None, d.path()).expect_err("bad json");
        assert!(e.to_string().contains("a.conflist"), "{e}");
        let bad = br#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"../x"}]}"#;
        std::fs::write(d.path().join("a.conflist"), bad).expect("write");
        let e = select(d.path(), None, "keel0", None, d.path()).expect_err("path type");
        assert!(e.to_string().contains("file name"), "{e}");
    }
}
