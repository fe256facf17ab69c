//! The OCI `config.json` for one container of a pod: keel-image's spec from the image config
//! (`keel_image::spec::build`: Entrypoint/Cmd rules, image env, user lookup, STOPSIGNAL
//! annotation), completed with what kubelet and containerd's CRI plugin add: env, command and
//! args `$(VAR)`-expanded, workingDir, hostname, namespaces (the pod's netns file, or the
//! host's for hostNetwork), default mounts, volume mounts (readOnly, subPath), the pod's
//! /etc files, /dev/termination-log, `cgroupsPath` `<pod cgroup>/<container id>`, resources,
//! oomScoreAdj by QoS and the security context ([`security`]).

pub mod security;

use crate::env::expand;
use crate::error::{ConfigError, Result};
use crate::etc::EtcFiles;
use crate::qos;
use crate::quantity::{self, Side};
use crate::volumes::Volumes;
use k8s_openapi::api::core::v1::{Container, Pod};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Spec;
use serde_json::{Value, json};
use std::path::{Component, Path, PathBuf};

/// Everything [`build`] needs for one container.
#[derive(Debug, Clone, Copy)]
pub struct SpecInput<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub image: &'a ImageConfiguration,
    /// The container's prepared root (keel-image's overlay mount point).
    pub rootfs: &'a Path,
    /// From [`crate::env::resolve`].
    pub env: &'a [(String, String)],
    /// From [`crate::volumes::prepare`].
    pub volumes: &'a Volumes,
    /// From [`crate::etc::write`].
    pub etc: &'a EtcFiles,
    /// The pod's network namespace file. Ignored for hostNetwork pods; `None` otherwise
    /// gives the container a new namespace with only loopback.
    pub netns: Option<&'a Path>,
    /// Pod-shared IPC / UTS namespaces to join; `None` = a new one per container.
    pub ipc_ns: Option<&'a Path>,
    pub uts_ns: Option<&'a Path>,
    /// Absolute pod cgroup path ([`crate::cgroup::pod_path`]).
    pub pod_cgroup: &'a str,
    pub container_id: &'a str,
    /// From [`termination_log`]; `None` = no /dev/termination-log mount.
    pub termination_log: Option<&'a Path>,
    /// Node memory in bytes (Burstable oom_score_adj).
    pub memory_capacity: u64,
    /// Per-container pids limit (`None` = none; the pod cgroup carries the pod's).
    pub pids_limit: Option<i64>,
}

/// Annotations carrying the pod and container identity (containerd's CRI keys).
pub const POD_NAME_ANNOTATION: &str = "io.kubernetes.cri.sandbox-name";
pub const POD_NAMESPACE_ANNOTATION: &str = "io.kubernetes.cri.sandbox-namespace";
pub const POD_UID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-uid";
pub const CONTAINER_NAME_ANNOTATION: &str = "io.kubernetes.cri.container-name";

/// Create the (empty, world-writable) termination message file of a container instance:
/// `<pod_dir>/containers/<name>/<id>`, as kubelet does.
pub fn termination_log(pod_dir: &Path, container: &str, id: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = pod_dir.join("containers").join(container);
    std::fs::create_dir_all(&dir).map_err(|e| ConfigError::io("create folder", &dir, e))?;
    let p = dir.join(id);
    std::fs::File::create(&p).map_err(|e| ConfigError::io("create file", &p, e))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| ConfigError::io("chmod", &p, e))?;
    Ok(p)
}

/// Write `spec` as `<bundle>/config.json` (atomically; the folder is created).
pub fn write_config(bundle: &Path, spec: &Spec) -> Result<PathBuf> {
    std::fs::create_dir_all(bundle).map_err(|e| ConfigError::io("create folder", bundle, e))?;
    let path = bundle.join("config.json");
    let data = serde_json::to_vec_pretty(spec)
        .map_err(|e| ConfigError::invalid("OCI spec", e.to_string()))?;
    crate::etc::write_atomic(&path, &data, 0o600)
        .map_err(|e| ConfigError::io("write", &path, e))?;
    Ok(path)
}

fn image_user(image: &ImageConfiguration) -> String {
    image
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default()
}

/// Build the runtime spec for `input.container`.
pub fn build(input: &SpecInput) -> Result<Spec> {
    let (pod, c) = (input.pod, input.container);
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network) == Some(true);
    let sec = security::effective(pod, c);
    let img_user = image_user(input.image);
    security::verify_non_root(&sec, &img_user, pod, c)?;

    let lookup = |n: &str| {
        input
            .env
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    let mut env = vec![("HOSTNAME".to_string(), input.etc.name.clone())];
    env.extend(input.env.iter().cloned());
    let overrides = keel_image::spec::Overrides {
        command: c
            .command
            .iter()
            .flatten()
            .map(|a| expand(a, lookup))
            .collect(),
        args: c.args.iter().flatten().map(|a| expand(a, lookup)).collect(),
        env,
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        user: security::user_override(&sec, &img_user)?,
        terminal: false,
    };
    if let Some(w) = &overrides.working_dir
        && !w.starts_with('/')
    {
        return Err(ConfigError::invalid(
            "workingDir",
            format!("{w:?} must be an absolute path"),
        ));
    }
    let base = keel_image::spec::build(input.image, input.rootfs, &overrides)?;
    let mut j =
        serde_json::to_value(&base).map_err(|e| ConfigError::invalid("OCI spec", e.to_string()))?;

    // Process: groups, capabilities, no_new_privs, oom_score_adj, seccomp (under linux).
    let bounding = security::host_bounding();
    let caps = security::capabilities(&sec, &bounding)?;
    let qos_class = qos::class(pod);
    let p = &mut j["process"];
    let mut gids: Vec<u32> =
        serde_json::from_value(p["user"]["additionalGids"].clone()).unwrap_or_default();
    gids.extend(
        sec.supplemental_groups
            .iter()
            .filter_map(|g| u32::try_from(*g).ok()),
    );
    gids.sort_unstable();
    gids.dedup();
    p["user"]["additionalGids"] = json!(gids);
    p["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    p["noNewPrivileges"] = json!(sec.no_new_privs);
    p["oomScoreAdj"] = json!(qos::oom_score_adj(qos_class, c, input.memory_capacity)?);
    if let Some(o) = p.as_object_mut() {
        o.remove("rlimits");
        o.remove("apparmorProfile");
    }

    if host_network {
        j.as_object_mut().map(|o| o.remove("hostname"));
    } else {
        j["hostname"] = json!(input.etc.name);
    }
    j["root"]["readonly"] = json!(sec.read_only_root);
    j["mounts"] = Value::Array(mounts(input, sec.privileged, sec.read_only_root)?);

    let ns = |t: &str, path: Option<&Path>| match path {
        Some(p) => json!({"type": t, "path": p}),
        None => json!({"type": t}),
    };
    let mut namespaces = vec![ns("mount", None)];
    if spec.and_then(|s| s.host_pid) != Some(true) {
        namespaces.push(ns("pid", None));
    }
    if spec.and_then(|s| s.host_ipc) != Some(true) {
        namespaces.push(ns("ipc", input.ipc_ns));
    }
    if !host_network {
        namespaces.push(ns("network", input.netns));
        namespaces.push(ns("uts", input.uts_ns));
    }
    namespaces.push(ns("cgroup", None));

    let (masked, readonly) = security::masked_and_readonly(sec.privileged);
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": crate::cgroup::container_path(input.pod_cgroup, input.container_id),
        "resources": resources(c, sec.privileged, input.pids_limit)?,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
        "sysctl": security::sysctls(pod)?,
    });
    if let Some(profile) = security::seccomp(&sec, &caps)? {
        linux["seccomp"] = profile;
    }
    j["linux"] = linux;

    let ann = &mut j["annotations"];
    if !ann.is_object() {
        *ann = json!({});
    }
    let m = &pod.metadata;
    for (k, v) in [
        (POD_NAME_ANNOTATION, m.name.clone().unwrap_or_default()),
        (
            POD_NAMESPACE_ANNOTATION,
            m.namespace.clone().unwrap_or_default(),
        ),
        (POD_UID_ANNOTATION, m.uid.clone().unwrap_or_default()),
        (CONTAINER_NAME_ANNOTATION, c.name.clone()),
    ] {
        ann[k] = json!(v);
    }
    serde_json::from_value(j).map_err(|e| ConfigError::invalid("OCI spec", e.to_string()))
}

/// `linux.resources` from the container's requests and limits (containerd's CRI mapping).
pub fn resources(c: &Container, privileged: bool, pids: Option<i64>) -> Result<Value> {
    let mut r = json!({"devices": [{"allow": privileged, "access": "rwm"}]});
    let req = quantity::cpu_milli(c, Side::Requests)?.unwrap_or(0);
    let mut cpu = json!({"shares": crate::cgroup::milli_to_shares(req)});
    if let Some(q) = quantity::cpu_milli(c, Side::Limits)?
        .and_then(|m| crate::cgroup::milli_to_quota(m, crate::cgroup::CPU_PERIOD_US))
    {
        cpu["quota"] = json!(q);
        cpu["period"] = json!(crate::cgroup::CPU_PERIOD_US);
    }
    r["cpu"] = cpu;
    if let Some(m) = quantity::bytes(c, Side::Limits, "memory")?.filter(|m| *m > 0) {
        r["memory"] = json!({"limit": m});
    }
    if let Some(p) = pids {
        r["pids"] = json!({"limit": p});
    }
    Ok(r)
}

fn bind(dest: &str, src: &Path, ro: bool) -> Value {
    json!({"destination": dest, "type": "bind", "source": src,
           "options": ["rbind", "rprivate", if ro { "ro" } else { "rw" }]})
}

/// Default mounts, then the container's, ordered by depth (containerd sorts so that a
/// parent folder is never mounted over a deeper mount).
fn mounts(input: &SpecInput, privileged: bool, ro_root: bool) -> Result<Vec<Value>> {
    let sys_opt = if privileged { "rw" } else { "ro" };
    let mut out = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", sys_opt]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", sys_opt]}),
    ];
    let c = input.container;
    let mut extra: Vec<(String, Value)> = Vec::new();
    for (i, vm) in c.volume_mounts.iter().flatten().enumerate() {
        let vol = input
            .volumes
            .get(&vm.name)
            .ok_or_else(|| ConfigError::UnknownVolume {
                volume: vm.name.clone(),
                container: c.name.clone(),
            })?;
        if !vm.mount_path.starts_with('/') {
            return Err(ConfigError::invalid(
                format!("volumeMounts[{i}].mountPath"),
                format!("{:?} must be an absolute path", vm.mount_path),
            ));
        }
        let sub = match (&vm.sub_path, &vm.sub_path_expr) {
            (Some(s), _) if !s.is_empty() => Some(s.clone()),
            (_, Some(e)) if !e.is_empty() => Some(expand(e, |n| {
                input
                    .env
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
            })),
            _ => None,
        };
        let src = match sub {
            Some(s) => sub_path(&vol.path, &s, vol.kind == crate::volumes::Kind::EmptyDir)
                .map_err(|message| ConfigError::SubPath {
                    volume: vm.name.clone(),
                    container: c.name.clone(),
                    message,
                })?,
            None => vol.path.clone(),
        };
        let ro = vm.read_only == Some(true) || vol.kind.forces_read_only();
        extra.push((vm.mount_path.clone(), bind(&vm.mount_path, &src, ro)));
    }
    let user_paths: Vec<String> = extra
        .iter()
        .map(|(p, _)| p.trim_end_matches('/').to_string())
        .collect();
    let taken = |d: &str| user_paths.iter().any(|p| p == d);
    let mut etc = Vec::new();
    for (dest, src) in [
        ("/etc/hosts", &input.etc.hosts),
        ("/etc/hostname", &input.etc.hostname),
        ("/etc/resolv.conf", &input.etc.resolv_conf),
    ] {
        if !taken(dest) {
            etc.push((dest.to_string(), bind(dest, src, ro_root)));
        }
    }
    extra.extend(etc);
    if let Some(log) = input.termination_log {
        let dest = c
            .termination_message_path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/dev/termination-log".into());
        if !taken(&dest) {
            extra.push((dest.clone(), bind(&dest, log, false)));
        }
    }
    if !taken("/dev/shm") {
        extra.push(("/dev/shm".into(), json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]})));
    }
    extra.sort_by_key(|(d, _)| Path::new(d).components().count());
    out.extend(extra.into_iter().map(|(_, v)| v));
    Ok(out)
}

/// The host source of a `subPath` inside volume folder `root`: relative, no `..`, and after
/// resolving symlinks still inside the volume. Missing subPaths of emptyDirs are created.
pub fn sub_path(root: &Path, sub: &str, create: bool) -> std::result::Result<PathBuf, String> {
    let rel = Path::new(sub);
    if rel.is_absolute() || rel.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "subPath {sub:?} must be a relative path without '..'"
        ));
    }
    let p = root.join(rel);
    if create && std::fs::symlink_metadata(&p).is_err() {
        std::fs::create_dir_all(&p).map_err(|e| format!("create {}: {e}", p.display()))?;
    }
    let real = std::fs::canonicalize(&p).map_err(|e| format!("subPath {sub:?}: {e}"))?;
    let real_root =
        std::fs::canonicalize(root).map_err(|e| format!("volume {}: {e}", root.display()))?;
    if !real.starts_with(&real_root) {
        return Err(format!(
            "subPath {sub:?} resolves to {}, outside the volume",
            real.display()
        ));
    }
    Ok(real)
}

#[cfg(test)]
mod tests;
