//! Downward API values: `fieldRef` (pod fields) and `resourceFieldRef` (container resources),
//! shared by env vars and downwardAPI/projected volumes (kubelet's
//! `podFieldSelectorRuntimeValue`, `fieldpath.ExtractFieldPathAsString` and
//! `resource.ExtractContainerResourceValue`).

use crate::error::{ConfigError, Result};
use crate::quantity::{self, Side};
use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// What the node knows that the pod object may not carry yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's IPs (`status.hostIP`, `status.hostIPs`).
    pub host_ips: Vec<String>,
    /// Allocatable CPU in millicores: the value of an unset `limits.cpu`.
    pub cpu_milli: i64,
    /// Allocatable memory in bytes: the value of an unset `limits.memory`.
    pub memory_bytes: i64,
}

/// The value of `fieldPath` for `pod`. `pod_ips` are the sandbox's IPs (the status may not
/// have them yet); `in_volume` allows whole `metadata.labels`/`metadata.annotations`.
pub fn field_ref(
    pod: &Pod,
    path: &str,
    pod_ips: &[String],
    node: &NodeInfo,
    in_volume: bool,
) -> Result<String> {
    let m = &pod.metadata;
    let empty = BTreeMap::new();
    let labels = m.labels.as_ref().unwrap_or(&empty);
    let annotations = m.annotations.as_ref().unwrap_or(&empty);
    if let Some((map, key)) = subscript(path) {
        let src = match map {
            "metadata.labels" => labels,
            "metadata.annotations" => annotations,
            _ => return Err(unsupported(path)),
        };
        return Ok(src.get(key).cloned().unwrap_or_default());
    }
    let spec = pod.spec.as_ref();
    let status_ips = || -> Vec<String> {
        let st = pod.status.as_ref();
        let mut v: Vec<String> = st
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|i| i.ip.clone()).collect())
            .unwrap_or_default();
        if v.is_empty()
            && let Some(ip) = st.and_then(|s| s.pod_ip.clone())
        {
            v.push(ip);
        }
        v
    };
    let ips = if pod_ips.is_empty() {
        status_ips()
    } else {
        pod_ips.to_vec()
    };
    let host_ips = if node.host_ips.is_empty() {
        pod.status
            .as_ref()
            .and_then(|s| s.host_ip.clone())
            .into_iter()
            .collect()
    } else {
        node.host_ips.clone()
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" if in_volume => format_map(labels),
        "metadata.annotations" if in_volume => format_map(annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" if !in_volume => ips.first().cloned().unwrap_or_default(),
        "status.podIPs" if !in_volume => ips.join(","),
        "status.hostIP" if !in_volume => host_ips.first().cloned().unwrap_or_default(),
        "status.hostIPs" if !in_volume => host_ips.join(","),
        _ => return Err(unsupported(path)),
    })
}

fn unsupported(path: &str) -> ConfigError {
    ConfigError::FieldPath { path: path.into() }
}

/// `metadata.labels['key']` -> (`metadata.labels`, `key`).
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (map, rest) = path.split_once("['")?;
    Some((map, rest.strip_suffix("']")?))
}

/// `key="value"` lines, sorted by key, no trailing newline (fieldpath.FormatMap; the value
/// is quoted and escaped like Go's `%q`).
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of `resourceFieldRef` for container `c`: rounded up in units of `divisor`;
/// unset cpu/memory limits read as the node's allocatable amount.
pub fn resource_field_ref(
    c: &Container,
    r: &ResourceFieldSelector,
    node: &NodeInfo,
) -> Result<String> {
    let field = format!("resourceFieldRef {} of container {:?}", r.resource, c.name);
    let one = Quantity("1".into());
    let divisor = r.divisor.as_ref().unwrap_or(&one);
    let (side, res) = match r.resource.split_once('.') {
        Some(("limits", res)) => (Side::Limits, res),
        Some(("requests", res)) => (Side::Requests, res),
        _ => {
            return Err(ConfigError::ResourceField {
                resource: r.resource.clone(),
            });
        }
    };
    let known =
        matches!(res, "cpu" | "memory" | "ephemeral-storage") || res.starts_with("hugepages-");
    if !known {
        return Err(ConfigError::ResourceField {
            resource: r.resource.clone(),
        });
    }
    let zero_divisor = || ConfigError::invalid(field.clone(), "divisor must be greater than zero");
    if res == "cpu" {
        let d = quantity::milli(divisor, &field)?;
        if d <= 0 {
            return Err(zero_divisor());
        }
        let v = match (quantity::cpu_milli(c, side)?, side) {
            (Some(v), _) => v,
            (None, Side::Limits) => node.cpu_milli,
            (None, Side::Requests) => 0,
        };
        return Ok(ceil(v, d).to_string());
    }
    let d = quantity::value(divisor, &field)?;
    if d <= 0 {
        return Err(zero_divisor());
    }
    let v = match (quantity::bytes(c, side, res)?, side, res) {
        (Some(v), _, _) => v,
        (None, Side::Limits, "memory") => node.memory_bytes,
        (None, _, _) => 0,
    };
    Ok(ceil(v, d).to_string())
}

fn ceil(v: i64, d: i64) -> i64 {
    (v + d - 1).div_euclid(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qos::tests::container;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "1234",
                "labels": {"app": "web", "tier": "front\"end"}, "annotations": {"a": "1"}},
            "spec": {"containers": [], "nodeName": "n1", "serviceAccountName": "sa"},
            "status": {"podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.9"}, {"ip": "fd00::9"}], "hostIP": "192.168.1.1"}
        }))
        .expect("pod")
    }

    #[test]
    fn field_paths() {
        let node = NodeInfo::default();
        let ips = vec!["10.1.0.5".to_string()];
        let cases: &[(&str, &[String], bool, Option<&str>)] = &[
            ("metadata.name", &[], false, Some("web")),
            ("metadata.namespace", &[], false, Some("prod")),
            ("metadata.uid", &[], false, Some("1234")),
            ("metadata.labels['app']", &[], false, Some("web")),
            ("metadata.labels['none']", &[], false, Some("")),
            ("metadata.annotations['a']", &[], false, Some("1")),
            ("spec.nodeName", &[], false, Some("n1")),
            ("spec.serviceAccountName", &[], false, Some("sa")),
            ("status.podIP", &[], false, Some("10.0.0.9")),
            ("status.podIPs", &[], false, Some("10.0.0.9,fd00::9")),
            ("status.podIP", &ips, false, Some("10.1.0.5")),
            ("status.hostIP", &[], false, Some("192.168.1.1")),
            ("status.hostIPs", &[], false, Some("192.168.1.1")),
            (
                "metadata.labels",
                &[],
                true,
                Some("app=\"web\"\ntier=\"front\\\"end\""),
            ),
            ("metadata.labels", &[], false, None),
            ("status.podIP", &[], true, None),
            ("spec.bogus", &[], false, None),
            ("metadata.spec['x']", &[], false, None),
        ];
        for (path, ips, vol, want) in cases {
            let got = field_ref(&pod(), path, ips, &node, *vol);
            assert_eq!(got.as_deref().ok(), *want, "{path} in_volume={vol}");
        }
        let e = field_ref(&pod(), "spec.bogus", &[], &node, false).expect_err("bad");
        assert_eq!(e.to_string(), "unsupported fieldPath: spec.bogus");
    }

    #[test]
    fn resource_fields() {
        let node = NodeInfo {
            host_ips: vec![],
            cpu_milli: 2000,
            memory_bytes: 1 << 30,
        };
        let c = container(
            "c",
            &[("cpu", "250m"), ("memory", "64Mi")],
            &[("cpu", "1500m")],
        );
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            ("limits.cpu", None, Some("2")),
            ("limits.cpu", Some("1m"), Some("1500")),
            ("requests.cpu", None, Some("1")),
            ("requests.cpu", Some("1m"), Some("250")),
            ("requests.memory", Some("1Mi"), Some("64")),
            ("limits.memory", None, Some("1073741824")),
            ("limits.memory", Some("1Gi"), Some("1")),
            ("requests.ephemeral-storage", None, Some("0")),
            ("limits.gpu", None, None),
            ("cpu", None, None),
            ("limits.cpu", Some("0"), None),
        ];
        for (res, div, want) in cases {
            let r = ResourceFieldSelector {
                resource: res.to_string(),
                divisor: div.map(|d| Quantity(d.into())),
                container_name: None,
            };
            assert_eq!(
                resource_field_ref(&c, &r, &node).ok().as_deref(),
                *want,
                "{res} / {div:?}"
            );
        }
    }
}
