//! The ADD result and its encodings for each result version: 0.3.x/0.4.0 carry
//! `ips[].version`, 1.0.0 dropped it, 1.1.0 added interface `mtu/socketPath/pciID` and route
//! `mtu/advmss/priority/table/scope` (SPEC.md section 5; `cni:pkg/types/*`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{CniError, DECODE_FAILURE};
use super::types::{Dns, Interface, IpConfig, Route};
use super::version;

/// A plugin's success result, version-neutral.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// Decodes a result of any supported version (`ips[].version` is ignored).
    pub fn from_value(v: Value) -> Result<CniResult, CniError> {
        serde_json::from_value(v).map_err(|e| {
            CniError::new(
                DECODE_FAILURE,
                "prevResult (or a delegated plugin's result) is not a CNI result",
            )
            .with_details(e.to_string())
        })
    }

    /// Encodes for `cni_version`: the fields that version defines and nothing else.
    pub fn to_value(&self, cni_version: &str) -> Value {
        let mut r = self.clone();
        r.cni_version = cni_version.to_string();
        let v11 = version::at_least(cni_version, "1.1.0");
        if !v11 {
            for i in &mut r.interfaces {
                (i.mtu, i.socket_path, i.pci_id) = (None, None, None);
            }
            for rt in &mut r.routes {
                (rt.mtu, rt.advmss, rt.priority, rt.table, rt.scope) =
                    (None, None, None, None, None);
            }
        }
        let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
        if !version::at_least(cni_version, "1.0.0")
            && let Some(ips) = v.get_mut("ips").and_then(Value::as_array_mut)
        {
            for (ip, cfg) in ips.iter_mut().zip(&r.ips) {
                let fam = if cfg.address.is_ipv4() { "4" } else { "6" };
                if let Some(o) = ip.as_object_mut() {
                    o.insert("version".into(), Value::from(fam));
                }
            }
        }
        v
    }

    pub fn to_json(&self, cni_version: &str) -> String {
        self.to_value(cni_version).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult::from_value(serde_json::json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "mtu": 1500, "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0},
                    {"address": "fd00::2/64", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1", "priority": 5}],
            "dns": {"nameservers": ["10.0.0.10"]}
        }))
        .expect("sample")
    }

    #[test]
    fn encodes_per_version() {
        let r = sample();
        let v031 = r.to_value("0.3.1");
        assert_eq!(v031["ips"][0]["version"], "4");
        assert_eq!(v031["ips"][1]["version"], "6");
        assert!(v031["interfaces"][0].get("mtu").is_none());
        assert!(v031["routes"][0].get("priority").is_none());
        let v100 = r.to_value("1.0.0");
        assert!(v100["ips"][0].get("version").is_none());
        let v110 = r.to_value("1.1.0");
        assert_eq!(v110["routes"][0]["priority"], 5);
        assert_eq!(v110["interfaces"][0]["mtu"], 1500);
        assert_eq!(
            CniResult::from_value(v031).expect("old result decodes").ips,
            r.ips
        );
    }
}
