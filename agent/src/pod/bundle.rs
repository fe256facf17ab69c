//! A container's OCI bundle config: the image's defaults (keel-image) overlaid with the pod
//! spec (keel-podspec: env, volumes, securityContext, resources) plus what only the executor
//! knows: the pod's network namespace, cgroup, /etc files and the container id.

use super::Ctx;
use super::container::StartError;
use super::images::RegistryAuth;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

pub struct Refs;

pub async fn fetch_refs(_ctx: &Arc<Ctx>, _pod: &Pod) -> Result<Refs, String> {
    Ok(Refs)
}

pub fn pull_auths(_refs: &Refs, _pod: &Pod) -> Vec<RegistryAuth> {
    Vec::new()
}

pub struct Input<'a> {
    pub ctx: &'a Arc<Ctx>,
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub image: &'a oci_spec::image::ImageConfiguration,
    pub rootfs: &'a Path,
    pub id: &'a str,
    pub ips: &'a [String],
    pub refs: &'a Refs,
}

/// Signal number from an image's STOPSIGNAL (`SIGQUIT`, `QUIT` or `3`).
pub fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Some(n);
    }
    let name = s.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    Some(match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "WINCH" => 28,
        _ => return None,
    })
}

fn err(reason: &str, message: impl Into<String>) -> StartError {
    StartError {
        reason: reason.into(),
        message: message.into(),
    }
}

/// (config.json, container cgroup path, stop signal).
pub fn build(i: &Input<'_>) -> Result<(Value, String, i32), StartError> {
    let c = i.container;
    let overrides = keel_image::spec::Overrides {
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        env: c
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect(),
        working_dir: c.working_dir.clone(),
        user: c
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .map(|u| u.to_string()),
        terminal: false,
    };
    let spec = keel_image::spec::build(i.image, i.rootfs, &overrides)
        .map_err(|e| err("CreateContainerConfigError", e.to_string()))?;
    let mut v = serde_json::to_value(&spec)
        .map_err(|e| err("CreateContainerConfigError", e.to_string()))?;
    let uid = i.pod.metadata.uid.as_deref().unwrap_or_default();
    let pod_dir = i.ctx.layout.pod_dir(uid);
    let record = super::record::PodRecord::load(&pod_dir).unwrap_or_default();
    let cgroup = format!("{}/{}", record.cgroup, i.id);
    let host_network = i
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if host_network {
        if let Some(o) = v.as_object_mut() {
            o.remove("hostname");
        }
    } else {
        v["hostname"] = json!(i.pod.metadata.name.clone().unwrap_or_default());
    }
    if let Some(nss) = v
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    {
        nss.retain(|n| n["type"] != "network" && n["type"] != "user" && n["type"] != "cgroup");
        if let Some(netns) = record.netns.as_ref().filter(|_| !host_network) {
            nss.push(json!({"type": "network", "path": netns}));
        }
        if host_network {
            nss.retain(|n| n["type"] != "uts");
        }
    }
    v["linux"]["cgroupsPath"] = json!(cgroup);
    if let Some(mounts) = v.get_mut("mounts").and_then(Value::as_array_mut) {
        for f in ["hosts", "resolv.conf", "hostname"] {
            let src = pod_dir.join("etc").join(f);
            if src.exists() {
                mounts.push(json!({"destination": format!("/etc/{f}"), "type": "bind", "source": src, "options": ["rbind", "rprivate", "rw"]}));
            }
        }
    }
    if let Some(mem) = c
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .and_then(|q| super::quantity_bytes(&q.0))
    {
        v["linux"]["resources"]["memory"] = json!({"limit": mem});
    }
    let stop = v
        .pointer(&format!(
            "/annotations/{}",
            keel_image::spec::STOP_SIGNAL_ANNOTATION.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .and_then(signal_number)
        .unwrap_or(15);
    Ok((v, cgroup, stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals() {
        assert_eq!(signal_number("SIGQUIT"), Some(3));
        assert_eq!(signal_number("TERM"), Some(15));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGNOPE"), None);
    }
}
