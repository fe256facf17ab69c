//! The file payloads of configMap, secret, downwardAPI and projected volumes (kubelet's
//! volume plugins' `MakePayload`): keys or `items`, `defaultMode` 0644 unless set, per-item
//! `mode`, `optional` for missing objects and keys.

use super::atomic::FileEntry;
use crate::downward::{self, NodeInfo};
use crate::error::{ConfigError, Result};
use crate::refs::Refs;
use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod};
use std::collections::BTreeMap;

/// kubelet's default file mode for projected files (0644).
pub const DEFAULT_MODE: i32 = 0o644;

fn mode(m: Option<i32>, default: Option<i32>) -> u32 {
    m.or(default).unwrap_or(DEFAULT_MODE) as u32 & 0o777
}

/// Files from one key/value object (ConfigMap data + binaryData, or Secret data).
fn from_map(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
    kind: &'static str,
    what: &'static str,
) -> Result<Vec<FileEntry>> {
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        return Ok(data
            .iter()
            .map(|(k, v)| FileEntry {
                path: k.clone(),
                data: v.clone(),
                mode: mode(None, default_mode),
            })
            .collect());
    };
    let mut out = Vec::new();
    for it in items {
        match data.get(&it.key) {
            Some(v) => out.push(FileEntry {
                path: it.path.clone(),
                data: v.clone(),
                mode: mode(it.mode, default_mode),
            }),
            None if optional => {}
            None => {
                return Err(ConfigError::MissingVolumeKey {
                    kind,
                    what,
                    key: it.key.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// configMap volume or projection source.
pub fn config_map(
    refs: &Refs,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Vec<FileEntry>> {
    let cm = match refs.config_map(name) {
        Ok(cm) => cm,
        Err(_) if optional => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        data.insert(k.clone(), v.0.clone());
    }
    from_map(&data, items, default_mode, optional, "configmap", "config")
}

/// secret volume or projection source.
pub fn secret(
    refs: &Refs,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Vec<FileEntry>> {
    let s = match refs.secret(name) {
        Ok(s) => s,
        Err(_) if optional => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut data: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        data.insert(k.clone(), v.as_bytes().to_vec());
    }
    from_map(&data, items, default_mode, optional, "secret", "secret")
}

/// downwardAPI volume or projection source.
pub fn downward_api(
    pod: &Pod,
    items: Option<&Vec<DownwardAPIVolumeFile>>,
    default_mode: Option<i32>,
    node: &NodeInfo,
) -> Result<Vec<FileEntry>> {
    let mut out = Vec::new();
    for it in items.into_iter().flatten() {
        let value = if let Some(f) = &it.field_ref {
            downward::field_ref(pod, &f.field_path, &[], node, true)?
        } else if let Some(r) = &it.resource_field_ref {
            let name = r.container_name.as_deref().unwrap_or("");
            let c = crate::qos::all_containers(pod)
                .find(|c| c.name == name)
                .ok_or_else(|| ConfigError::ContainerNotFound { name: name.into() })?;
            downward::resource_field_ref(c, r, node)?
        } else {
            continue;
        };
        out.push(FileEntry {
            path: it.path.clone(),
            data: value.into_bytes(),
            mode: mode(it.mode, default_mode),
        });
    }
    Ok(out)
}
