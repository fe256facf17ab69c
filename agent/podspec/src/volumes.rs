//! A pod's volumes on the node, under `<pod_dir>/volumes/<name>/`: emptyDir (a folder, or a
//! tmpfs for `medium: Memory`), hostPath (checked per its `type`, used in place), and the
//! projected kinds (configMap, secret, downwardAPI, projected) written atomically
//! ([`atomic`]); secrets live on a tmpfs like kubelet's when running as root; `fsGroup`
//! owns every volume but hostPath ([`ownership`]).
//! `serviceAccountToken` and `clusterTrustBundle` projections are skipped with a warning
//! (no token issuer yet). Errors carry kubelet's FailedMount wording.

pub mod atomic;
pub mod ownership;
pub mod projection;

use crate::downward::NodeInfo;
use crate::error::{ConfigError, Result};
use crate::refs::Refs;
use k8s_openapi::api::core::v1::{HostPathVolumeSource, Pod, Volume as PodVolume};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Which kind of volume a [`Volume`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    EmptyDir,
    HostPath,
    ConfigMap,
    Secret,
    DownwardApi,
    Projected,
}

impl Kind {
    /// configMap, secret, downwardAPI and projected volumes are always mounted read-only.
    pub fn forces_read_only(self) -> bool {
        !matches!(self, Kind::EmptyDir | Kind::HostPath)
    }
}

/// One prepared volume: what to bind-mount for a `volumeMounts` entry naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub kind: Kind,
    /// Host path to bind (the hostPath itself, or the folder under `<pod_dir>/volumes`).
    pub path: PathBuf,
}

/// Every volume of a pod by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volumes {
    pub by_name: BTreeMap<String, Volume>,
}

impl Volumes {
    pub fn get(&self, name: &str) -> Option<&Volume> {
        self.by_name.get(name)
    }
}

/// The folder holding the pod's volumes.
pub fn volumes_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("volumes")
}

/// Set up every volume of `pod` (idempotent: existing emptyDir contents and tmpfs mounts
/// are kept, projected files are rewritten).
pub fn prepare(pod: &Pod, pod_dir: &Path, refs: &Refs, node: &NodeInfo) -> Result<Volumes> {
    let mut out = Volumes::default();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let vol = prepare_one(pod, pod_dir, refs, node, v).map_err(|e| e.in_volume(&v.name))?;
        out.by_name.insert(v.name.clone(), vol);
    }
    Ok(out)
}

fn prepare_one(
    pod: &Pod,
    pod_dir: &Path,
    refs: &Refs,
    node: &NodeInfo,
    v: &PodVolume,
) -> Result<Volume> {
    if v.name.is_empty() || v.name.contains('/') || v.name.starts_with('.') {
        return Err(ConfigError::invalid(
            "spec.volumes[].name",
            format!("{:?} is not a valid volume name", v.name),
        ));
    }
    let dir = volumes_dir(pod_dir).join(&v.name);
    let done = |kind| {
        Ok(Volume {
            kind,
            path: dir.clone(),
        })
    };
    if let Some(h) = &v.host_path {
        return Ok(Volume {
            kind: Kind::HostPath,
            path: host_path(h)?,
        });
    }
    if let Some(e) = &v.empty_dir {
        std::fs::create_dir_all(&dir).map_err(|e| ConfigError::io("create folder", &dir, e))?;
        match e.medium.as_deref().unwrap_or("") {
            "" => {}
            "Memory" => {
                let size = e
                    .size_limit
                    .as_ref()
                    .map(|q| {
                        crate::quantity::value(
                            q,
                            &format!("volume {:?} emptyDir.sizeLimit", v.name),
                        )
                    })
                    .transpose()?;
                mount_tmpfs(&dir, size)?;
            }
            m => {
                return Err(ConfigError::Unsupported {
                    kind: format!("emptyDir medium {m}"),
                });
            }
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| ConfigError::io("chmod", &dir, e))?;
        if let Some(gid) = fs_group(pod)? {
            ownership::apply(&dir, gid, false)?;
        }
        return done(Kind::EmptyDir);
    }
    let (kind, files) = if let Some(c) = &v.config_map {
        let f = projection::config_map(
            refs,
            &c.name,
            c.items.as_ref(),
            c.default_mode,
            c.optional == Some(true),
        )?;
        (Kind::ConfigMap, f)
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.as_deref().unwrap_or("");
        let f = projection::secret(
            refs,
            name,
            s.items.as_ref(),
            s.default_mode,
            s.optional == Some(true),
        )?;
        (Kind::Secret, f)
    } else if let Some(d) = &v.downward_api {
        (
            Kind::DownwardApi,
            projection::downward_api(pod, d.items.as_ref(), d.default_mode, node)?,
        )
    } else if let Some(p) = &v.projected {
        let mut files = Vec::new();
        for s in p.sources.iter().flatten() {
            if let Some(c) = &s.config_map {
                files.extend(projection::config_map(
                    refs,
                    &c.name,
                    c.items.as_ref(),
                    p.default_mode,
                    c.optional == Some(true),
                )?);
            } else if let Some(c) = &s.secret {
                files.extend(projection::secret(
                    refs,
                    &c.name,
                    c.items.as_ref(),
                    p.default_mode,
                    c.optional == Some(true),
                )?);
            } else if let Some(d) = &s.downward_api {
                files.extend(projection::downward_api(
                    pod,
                    d.items.as_ref(),
                    p.default_mode,
                    node,
                )?);
            } else if s.service_account_token.is_some() || s.cluster_trust_bundle.is_some() {
                tracing::warn!(volume = %v.name, "projected serviceAccountToken/clusterTrustBundle sources are not implemented; skipped");
            }
        }
        (Kind::Projected, files)
    } else {
        return Err(ConfigError::Unsupported {
            kind: format!("volume type {}", kind_name(v)),
        });
    };
    std::fs::create_dir_all(&dir).map_err(|e| ConfigError::io("create folder", &dir, e))?;
    if kind == Kind::Secret && nix::unistd::geteuid().is_root() {
        // Secrets never touch the node's disk (kubelet mounts secret volumes on tmpfs).
        mount_tmpfs(&dir, None)?;
    }
    atomic::write(&dir, &files)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| ConfigError::io("chmod", &dir, e))?;
    if let Some(gid) = fs_group(pod)? {
        ownership::apply(&dir, gid, true)?;
    }
    done(kind)
}

/// The pod's `securityContext.fsGroup`, checked.
fn fs_group(pod: &Pod) -> Result<Option<u32>> {
    let g = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|c| c.fs_group);
    g.map(|g| {
        u32::try_from(g)
            .ok()
            .filter(|g| *g <= i32::MAX as u32)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "spec.securityContext.fsGroup",
                    format!("{g} is not a valid group id"),
                )
            })
    })
    .transpose()
}

/// The volume type's field name, for the unsupported-type error.
fn kind_name(v: &PodVolume) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| {
            j.as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        })
        .unwrap_or_else(|| "(none)".into())
}

/// hostPath with kubelet's type checks; `*OrCreate` types create what is missing.
pub fn host_path(h: &HostPathVolumeSource) -> Result<PathBuf> {
    let path = PathBuf::from(&h.path);
    if !path.is_absolute() {
        return Err(ConfigError::invalid(
            "hostPath.path",
            format!("{:?} must be an absolute path", h.path),
        ));
    }
    let meta = std::fs::metadata(&path).ok();
    let ty = h.type_.as_deref().unwrap_or("");
    let check = |ok: bool, what: &'static str| {
        if ok {
            Ok(())
        } else {
            Err(ConfigError::HostPathType {
                path: path.clone(),
                what,
            })
        }
    };
    match ty {
        "" => {}
        "DirectoryOrCreate" if meta.is_none() => {
            std::fs::create_dir_all(&path)
                .map_err(|e| ConfigError::io("create folder", &path, e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| ConfigError::io("chmod", &path, e))?;
        }
        "DirectoryOrCreate" | "Directory" => {
            check(meta.as_ref().is_some_and(|m| m.is_dir()), "directory")?
        }
        "FileOrCreate" if meta.is_none() => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| ConfigError::io("create folder", parent, e))?;
            }
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| ConfigError::io("create file", &path, e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| ConfigError::io("chmod", &path, e))?;
        }
        "FileOrCreate" | "File" => check(meta.as_ref().is_some_and(|m| m.is_file()), "file")?,
        "Socket" => check(
            meta.as_ref().is_some_and(|m| m.file_type().is_socket()),
            "socket file",
        )?,
        "CharDevice" => check(
            meta.as_ref()
                .is_some_and(|m| m.file_type().is_char_device()),
            "character device",
        )?,
        "BlockDevice" => check(
            meta.as_ref()
                .is_some_and(|m| m.file_type().is_block_device()),
            "block device",
        )?,
        other => {
            return Err(ConfigError::invalid(
                "hostPath.type",
                format!("{other:?} is not a hostPath type"),
            ));
        }
    }
    Ok(path)
}

fn is_mount_point(dir: &Path) -> bool {
    let (Ok(m), Some(parent)) = (std::fs::metadata(dir), dir.parent()) else {
        return false;
    };
    std::fs::metadata(parent).is_ok_and(|p| p.dev() != m.dev())
}

/// Mount a tmpfs on `dir` unless something is mounted there already.
fn mount_tmpfs(dir: &Path, size: Option<i64>) -> Result<()> {
    if is_mount_point(dir) {
        return Ok(());
    }
    let mut data = String::from("mode=0777");
    if let Some(s) = size.filter(|s| *s > 0) {
        data.push_str(&format!(",size={s}"));
    }
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| ConfigError::io("mount tmpfs on", dir, e.into()))
}

/// Mount points below `dir` from `/proc/self/mountinfo`, deepest first.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Unmount every tmpfs under `<pod_dir>/volumes` and remove the pod's volumes, /etc files and
/// termination logs. Idempotent. Never descends into another filesystem (a mount that did not
/// go away is an error, not something to empty).
pub fn cleanup(pod_dir: &Path) -> Result<()> {
    let vols = volumes_dir(pod_dir);
    for m in mounts_below(&vols) {
        match nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(ConfigError::io("unmount", &m, e.into())),
        }
    }
    for d in [vols, pod_dir.join("etc"), pod_dir.join("containers")] {
        remove_same_fs(&d)?;
    }
    Ok(())
}

fn remove_same_fs(dir: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ConfigError::io("inspect", dir, e)),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(dir).map_err(|e| ConfigError::io("remove", dir, e));
    }
    for e in std::fs::read_dir(dir)
        .map_err(|e| ConfigError::io("read folder", dir, e))?
        .flatten()
    {
        let p = e.path();
        let m = std::fs::symlink_metadata(&p).map_err(|e| ConfigError::io("inspect", &p, e))?;
        if m.is_dir() && m.dev() != meta.dev() {
            return Err(ConfigError::io(
                "remove",
                &p,
                std::io::Error::other("still a mount point after unmount"),
            ));
        }
        remove_same_fs(&p)?;
    }
    std::fs::remove_dir(dir).map_err(|e| ConfigError::io("remove", dir, e))
}

#[cfg(test)]
mod tests;
