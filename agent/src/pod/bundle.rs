//! A container's OCI bundle config, in keel-podspec's order: ConfigMaps and Secrets the pod
//! names, volumes, /etc files, the environment, then the runtime spec (image defaults, pod
//! spec, securityContext, resources) with the pod's network namespace, cgroup and the
//! container id. Every step is idempotent, so each start of a container runs them all.

use super::Ctx;
use super::container::StartError;
use super::images::RegistryAuth;
use k8s_openapi::api::core::v1::{Container, Pod};
use keel_podspec::ConfigError;
use keel_podspec::refs::Refs;
use std::path::Path;
use std::sync::Arc;

fn config_err(e: ConfigError) -> StartError {
    StartError {
        reason: e.reason().to_string(),
        message: e.to_string(),
    }
}

pub async fn fetch_refs(ctx: &Arc<Ctx>, pod: &Pod) -> Result<Refs, StartError> {
    keel_podspec::refs::fetch(&ctx.client, pod)
        .await
        .map_err(config_err)
}

pub fn pull_auths(refs: &Refs, pod: &Pod) -> Vec<RegistryAuth> {
    keel_podspec::refs::pull_secrets(refs, pod)
        .into_iter()
        .map(|a| RegistryAuth {
            registry: a.registry,
            username: a.username,
            password: a.password,
        })
        .collect()
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
    /// The pod's record (netns file, pod cgroup), as the sandbox left it.
    pub record: &'a super::record::PodRecord,
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

/// The pod's /etc files and volumes (also run by the sandbox, so FailedMount shows early).
pub fn prepare_pod(
    ctx: &Arc<Ctx>,
    pod: &Pod,
    pod_dir: &Path,
    refs: &Refs,
    ips: &[String],
) -> Result<(keel_podspec::etc::EtcFiles, keel_podspec::volumes::Volumes), ConfigError> {
    let etc = keel_podspec::etc::write(pod, pod_dir, &ctx.dns, ips, &ctx.host_name)?;
    let volumes = keel_podspec::volumes::prepare(pod, pod_dir, refs, &ctx.node_info)?;
    Ok((etc, volumes))
}

/// The lowest oom_score_adj a container may get from this agent: `None` when the agent holds
/// CAP_SYS_RESOURCE (any value is allowed), else the agent's own value.
fn oom_score_adj_floor() -> Option<i64> {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())?;
    if eff & (1 << CAP_SYS_RESOURCE) != 0 {
        return None;
    }
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// (config.json, container cgroup path, stop signal).
pub fn build(i: &Input<'_>) -> Result<(serde_json::Value, String, i32), StartError> {
    let uid = i.pod.metadata.uid.as_deref().unwrap_or_default();
    let pod_dir = i.ctx.layout.pod_dir(uid);
    let record = i.record;
    let (etc, volumes) = prepare_pod(i.ctx, i.pod, &pod_dir, i.refs, i.ips).map_err(config_err)?;
    let env = keel_podspec::env::resolve(i.pod, i.container, i.refs, &i.ctx.node_info, i.ips)
        .map_err(config_err)?;
    let termination_log = keel_podspec::spec::termination_log(&pod_dir, &i.container.name, i.id)
        .map_err(config_err)?;
    let spec = keel_podspec::spec::build(&keel_podspec::spec::SpecInput {
        pod: i.pod,
        container: i.container,
        image: i.image,
        rootfs: i.rootfs,
        env: &env,
        volumes: &volumes,
        etc: &etc,
        netns: record.netns.as_deref(),
        ipc_ns: None,
        uts_ns: None,
        pod_cgroup: &record.cgroup,
        container_id: i.id,
        termination_log: Some(&termination_log),
        memory_capacity: i.ctx.node_info.memory_bytes.max(0) as u64,
        pids_limit: None,
    })
    .map_err(config_err)?;
    let mut v = serde_json::to_value(&spec).map_err(|e| StartError {
        reason: "CreateContainerError".into(),
        message: e.to_string(),
    })?;
    if let Some(adj) = v.pointer_mut("/process/oomScoreAdj")
        && let Some(floor) = oom_score_adj_floor()
        && adj.as_i64().is_some_and(|a| a < floor)
    {
        // Lowering oom_score_adj below our own needs CAP_SYS_RESOURCE, which some hosts (this
        // project's CI machine among them) keep out of the bounding set: keep ours instead of
        // failing the container.
        *adj = serde_json::json!(floor);
    }
    let cgroup = keel_podspec::cgroup::container_path(&record.cgroup, i.id);
    let stop = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(keel_image::spec::STOP_SIGNAL_ANNOTATION))
        .and_then(|s| signal_number(s))
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
