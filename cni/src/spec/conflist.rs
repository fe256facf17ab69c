//! The runtime side of SPEC.md section 1 and 3: a network configuration list (`.conflist`)
//! and the request configuration built from it for each plugin (cniVersion and name added,
//! `runtimeConfig` from the plugin's `capabilities` and the runtime's capability args,
//! `capabilities` removed, `prevResult` for chained ADD and for DEL/CHECK). The agent uses this
//! to drive any CNI plugin.

use serde_json::{Map, Value};

use super::error::{CniError, DECODE_FAILURE, INVALID_NETWORK_CONFIG};
use super::result::CniResult;
use super::version;

/// A parsed network configuration list.
#[derive(Clone, Debug)]
pub struct NetConfList {
    pub cni_version: String,
    /// 1.1: every version the list is valid for.
    pub cni_versions: Vec<String>,
    pub name: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    /// The plugin objects as written (unknown keys kept).
    pub plugins: Vec<Map<String, Value>>,
}

fn invalid(msg: String) -> CniError {
    CniError::new(INVALID_NETWORK_CONFIG, msg)
}

impl NetConfList {
    pub fn parse(bytes: &[u8]) -> Result<NetConfList, CniError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(DECODE_FAILURE, "network configuration list is not JSON")
                .with_details(e.to_string())
        })?;
        let o = v
            .as_object()
            .ok_or_else(|| invalid("network configuration list must be an object".into()))?;
        let s = |k: &str| {
            o.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let name = s("name");
        if name.is_empty() {
            return Err(invalid("network configuration list has no \"name\"".into()));
        }
        let plugins: Vec<Map<String, Value>> = o
            .get("plugins")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(format!("network {name}: \"plugins\" must be a list")))?
            .iter()
            .enumerate()
            .map(|(i, p)| match p.as_object() {
                Some(m)
                    if m.get("type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| !t.is_empty()) =>
                {
                    Ok(m.clone())
                }
                _ => Err(invalid(format!(
                    "network {name}: plugins[{i}] needs a \"type\""
                ))),
            })
            .collect::<Result<_, _>>()?;
        if plugins.is_empty() {
            return Err(invalid(format!("network {name}: \"plugins\" is empty")));
        }
        let cni_versions = o
            .get("cniVersions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let b = |k: &str| o.get(k).and_then(Value::as_bool).unwrap_or(false);
        Ok(NetConfList {
            cni_version: s("cniVersion"),
            cni_versions,
            name,
            disable_check: b("disableCheck"),
            disable_gc: b("disableGC"),
            plugins,
        })
    }

    /// The version to use with a plugin that supports `plugin_versions` (its VERSION reply):
    /// the highest one both sides know, `None` when there is none.
    pub fn negotiate(&self, plugin_versions: &[&str]) -> Option<String> {
        let mut mine: Vec<&str> = self.cni_versions.iter().map(String::as_str).collect();
        if !self.cni_version.is_empty() {
            mine.push(&self.cni_version);
        }
        version::negotiate(&mine, plugin_versions)
    }

    /// The stdin for plugin `index`. `capability_args` holds the runtime's values by
    /// capability name (e.g. `portMappings`, `mac`, `ips`); only those the plugin declares in
    /// `capabilities` are passed, under `runtimeConfig`.
    pub fn request(
        &self,
        index: usize,
        cni_version: &str,
        capability_args: &Map<String, Value>,
        prev_result: Option<&CniResult>,
    ) -> Result<Value, CniError> {
        let mut p = self
            .plugins
            .get(index)
            .cloned()
            .ok_or_else(|| invalid(format!("network {}: no plugin #{index}", self.name)))?;
        let caps = p.remove("capabilities");
        let mut rc = Map::new();
        if let Some(Value::Object(caps)) = caps {
            for (cap, on) in caps {
                if on.as_bool() == Some(true)
                    && let Some(v) = capability_args.get(&cap)
                {
                    rc.insert(cap, v.clone());
                }
            }
        }
        if !rc.is_empty() {
            p.insert("runtimeConfig".into(), Value::Object(rc));
        }
        p.insert("cniVersion".into(), Value::from(cni_version));
        p.insert("name".into(), Value::from(self.name.clone()));
        if let Some(prev) = prev_result {
            p.insert("prevResult".into(), prev.to_value(cni_version));
        }
        Ok(Value::Object(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_per_plugin() {
        let list = NetConfList::parse(
            json!({
                "cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": "pods",
                "plugins": [
                    {"type": "keel-bridge", "bridge": "cni0", "capabilities": {"mac": true, "ips": false}},
                    {"type": "portmap", "capabilities": {"portMappings": true}}
                ]
            })
            .to_string()
            .as_bytes(),
        )
        .expect("list");
        assert_eq!(
            list.negotiate(version::SUPPORTED_VERSIONS).as_deref(),
            Some("1.1.0")
        );
        assert_eq!(
            list.negotiate(&["0.4.0", "1.0.0"]).as_deref(),
            Some("1.0.0")
        );
        let mut args = Map::new();
        args.insert("mac".into(), json!("0a:00:00:00:00:01"));
        args.insert("ips".into(), json!(["10.0.0.9"]));
        let r = list.request(0, "1.1.0", &args, None).expect("request");
        assert_eq!(r["name"], "pods");
        assert_eq!(r["cniVersion"], "1.1.0");
        assert_eq!(r["bridge"], "cni0");
        assert_eq!(r["runtimeConfig"], json!({"mac": "0a:00:00:00:00:01"}));
        assert!(r.get("capabilities").is_none() && r.get("prevResult").is_none());
        let prev = CniResult {
            cni_version: "1.1.0".into(),
            ..CniResult::default()
        };
        let r1 = list
            .request(1, "1.1.0", &args, Some(&prev))
            .expect("second");
        assert!(r1.get("runtimeConfig").is_none());
        assert_eq!(r1["prevResult"]["cniVersion"], "1.1.0");
        assert_eq!(
            NetConfList::parse(br#"{"name":"x","plugins":[{}]}"#)
                .expect_err("no type")
                .code,
            7
        );
        assert_eq!(NetConfList::parse(b"{").expect_err("json").code, 6);
    }
}
