//! Pod cgroups under a QoS tree, the same absolute path in every v1 controller and in v2:
//!
//! ```text
//! /keel/<node>/pod<uid>              Guaranteed (directly below the node root, as kubelet's
//!                                    /kubepods/pod<uid>)
//! /keel/<node>/burstable/pod<uid>    Burstable
//! /keel/<node>/besteffort/pod<uid>   BestEffort (the besteffort cgroup gets cpu.shares 2)
//! /keel/<node>/.../pod<uid>/<container id>   created and limited by keel-shim from the
//!                                    container's linux.cgroupsPath and linux.resources
//! ```
//!
//! Pod-level limits follow kubelet's `ResourceConfigForPod`: cpu shares from the summed
//! requests, and cpu quota / memory limit only when every container declares that limit.
//! Layout: v2 when `/sys/fs/cgroup/cgroup.controllers` exists, otherwise the v1 controllers
//! listed in `/proc/self/mountinfo` (hybrid hosts count as v1, as in keel-shim).

use crate::error::{ConfigError, Result};
use crate::qos::{self, QosClass};
use crate::quantity::{self, Side};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// v1 controllers keel-shim puts containers in (its `cgroups::V1_CONTROLLERS`): the pod
/// cgroup must exist in each, so that removing it removes everything.
pub const V1_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "devices", "blkio",
];
const V2_CONTROLLERS: &[&str] = &["cpuset", "cpu", "io", "memory", "pids", "hugetlb"];
/// CFS period kubelet uses (100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;

/// How the host's cgroups are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// controller -> mount point of its v1 hierarchy.
    V1(BTreeMap<String, PathBuf>),
    /// The unified hierarchy's mount point.
    V2(PathBuf),
}

impl Layout {
    /// Detect the layout of this host.
    pub fn detect() -> Layout {
        let root = Path::new("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            return Layout::V2(root.to_path_buf());
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Layout::V1(parse_v1_mounts(&mountinfo))
    }

    /// Folders of the absolute cgroup `path`, one per distinct hierarchy.
    pub fn dirs(&self, path: &str) -> Vec<(String, PathBuf)> {
        let rel = path.trim_start_matches('/');
        match self {
            Layout::V2(root) => vec![(String::new(), root.join(rel))],
            Layout::V1(m) => {
                let mut seen = Vec::<PathBuf>::new();
                let mut out = Vec::new();
                for (ctrl, mnt) in m {
                    let d = mnt.join(rel);
                    if !seen.contains(&d) {
                        seen.push(d.clone());
                        out.push((ctrl.clone(), d));
                    }
                }
                out
            }
        }
    }
}

/// controller -> mount point from `/proc/self/mountinfo` lines of type `cgroup`.
pub fn parse_v1_mounts(mountinfo: &str) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        if r.next() != Some("cgroup") {
            continue;
        }
        let opts = r.nth(1).unwrap_or_default();
        let Some(mnt) = left.split_whitespace().nth(4) else {
            continue;
        };
        for o in opts.split(',') {
            if V1_CONTROLLERS.contains(&o) {
                out.entry(o.to_string())
                    .or_insert_with(|| PathBuf::from(mnt));
            }
        }
    }
    out
}

/// The node's cgroup root, `/keel/<node>`.
pub fn node_path(node: &str) -> String {
    format!("/keel/{node}")
}

/// The pod's cgroup path: `/keel/<node>/[burstable|besteffort/]pod<uid>`.
pub fn pod_path(node: &str, qos: QosClass, uid: &str) -> String {
    match qos {
        QosClass::Guaranteed => format!("/keel/{node}/pod{uid}"),
        QosClass::Burstable => format!("/keel/{node}/burstable/pod{uid}"),
        QosClass::BestEffort => format!("/keel/{node}/besteffort/pod{uid}"),
    }
}

/// A container's cgroup path (its `linux.cgroupsPath`).
pub fn container_path(pod_path: &str, container_id: &str) -> String {
    format!("{}/{container_id}", pod_path.trim_end_matches('/'))
}

/// Pod-level limits (kubelet's `ResourceConfigForPod`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodResources {
    pub cpu_shares: u64,
    /// CFS quota in µs per [`CPU_PERIOD_US`]; `None` = unlimited.
    pub cpu_quota: Option<i64>,
    pub memory_limit: Option<i64>,
    pub pids_limit: Option<i64>,
}

/// kubelet's `MilliCPUToShares`.
pub fn milli_to_shares(milli: i64) -> u64 {
    if milli <= 0 {
        return 2;
    }
    (milli as u64 * 1024 / 1000).clamp(2, 262_144)
}

/// kubelet's `MilliCPUToQuota` (minimum 1 ms); `None` for no limit.
pub fn milli_to_quota(milli: i64, period: u64) -> Option<i64> {
    if milli <= 0 {
        return None;
    }
    Some((milli * period as i64 / 1000).max(1000))
}

/// `cpu.shares` (2..262144) to `cpu.weight` (1..10000), the conversion runc and keel-shim use.
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// Sum over app containers, at least the largest init container; `None` if any container
/// lacks the value (only when `all` is required).
fn pod_total(
    pod: &Pod,
    all: bool,
    get: impl Fn(&Container) -> Result<Option<i64>>,
) -> Result<Option<i64>> {
    let spec = pod.spec.as_ref();
    let mut sum = 0i64;
    for c in spec.iter().flat_map(|s| s.containers.iter()) {
        match get(c)? {
            Some(v) => sum = sum.saturating_add(v),
            None if all => return Ok(None),
            None => {}
        }
    }
    for c in spec.iter().flat_map(|s| s.init_containers.iter().flatten()) {
        match get(c)? {
            Some(v) => sum = sum.max(v),
            None if all => return Ok(None),
            None => {}
        }
    }
    Ok(Some(sum))
}

/// The pod cgroup's limits; `pids_limit` is the node's `podPidsLimit`.
pub fn pod_resources(pod: &Pod, pids_limit: Option<i64>) -> Result<PodResources> {
    let class = qos::class(pod);
    let cpu_req = pod_total(pod, false, |c| quantity::cpu_milli(c, Side::Requests))?.unwrap_or(0);
    let cpu_lim = pod_total(pod, true, |c| quantity::cpu_milli(c, Side::Limits))?;
    let mem_lim = pod_total(pod, true, |c| quantity::bytes(c, Side::Limits, "memory"))?;
    if class == QosClass::BestEffort {
        return Ok(PodResources {
            cpu_shares: 2,
            cpu_quota: None,
            memory_limit: None,
            pids_limit,
        });
    }
    Ok(PodResources {
        cpu_shares: milli_to_shares(cpu_req),
        cpu_quota: cpu_lim.and_then(|m| milli_to_quota(m, CPU_PERIOD_US)),
        memory_limit: mem_lim.filter(|m| *m > 0),
        pids_limit,
    })
}

fn cg_err(op: &'static str, path: &Path, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Cgroup {
        op,
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| ConfigError::Cgroup {
        op: "write",
        path: path.to_path_buf(),
        message: format!("{value:?}: {e}"),
    })
}

/// Create `dir` (and missing parents below `root`); on v1 cpuset folders inherit `cpus`/`mems`
/// from their parent (a new one starts empty and refuses tasks); on v2 every ancestor
/// delegates the available controllers.
fn create(layout: &Layout, ctrl: &str, root: &Path, dir: &Path) -> Result<()> {
    let rel = dir
        .strip_prefix(root)
        .map_err(|e| cg_err("create", dir, e))?;
    let mut cur = root.to_path_buf();
    for comp in rel.components() {
        if let Layout::V2(_) = layout {
            enable_controllers(&cur);
        }
        let parent = cur.clone();
        cur.push(comp);
        if cur.exists() {
            continue;
        }
        match std::fs::create_dir(&cur) {
            Ok(()) => {}
            // Another pod starting at the same moment created it first (their QoS or node
            // folder): fine; the cpuset files below are filled only while empty.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(cg_err("create", &cur, e)),
        }
        if ctrl == "cpuset" {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let own = std::fs::read_to_string(cur.join(f)).unwrap_or_default();
                if own.trim().is_empty() {
                    let up = std::fs::read_to_string(parent.join(f)).unwrap_or_default();
                    write(&cur.join(f), up.trim())?;
                }
            }
        }
    }
    if let Layout::V2(_) = layout {
        enable_controllers(&cur);
    }
    Ok(())
}

fn enable_controllers(dir: &Path) {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in V2_CONTROLLERS {
        let on = enabled.split_whitespace().any(|e| e == *c);
        if !on && available.split_whitespace().any(|a| a == *c) {
            // Best effort: a controller that cannot be delegated here is simply not limited.
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
        }
    }
}

fn roots(layout: &Layout) -> Vec<(String, PathBuf)> {
    match layout {
        Layout::V2(r) => vec![(String::new(), r.clone())],
        Layout::V1(m) => {
            let mut out: Vec<(String, PathBuf)> = Vec::new();
            for (c, p) in m {
                if !out.iter().any(|(_, q)| q == p) {
                    out.push((c.clone(), p.clone()));
                }
            }
            out
        }
    }
}

/// Create the QoS tree and the pod cgroup `path` and write the pod's limits.
pub fn ensure_pod_cgroup_in(
    layout: &Layout,
    path: &str,
    pod: &Pod,
    pids_limit: Option<i64>,
) -> Result<()> {
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(ConfigError::invalid(
            "pod cgroup path",
            format!("{path:?} must be absolute without '..'"),
        ));
    }
    let r = pod_resources(pod, pids_limit)?;
    let hierarchies = roots(layout);
    if hierarchies.is_empty() {
        return Err(cg_err(
            "find",
            Path::new("/sys/fs/cgroup"),
            "no cgroup hierarchy is mounted",
        ));
    }
    let besteffort = path
        .rsplit_once('/')
        .map(|(parent, _)| parent)
        .filter(|p| p.ends_with("/besteffort"));
    for (ctrl, root) in &hierarchies {
        let dir = root.join(path.trim_start_matches('/'));
        create(layout, ctrl, root, &dir)?;
        let cpu = ctrl.split(',').any(|c| c == "cpu") || ctrl.is_empty();
        if let Some(be) = besteffort.filter(|_| cpu) {
            let be = root.join(be.trim_start_matches('/'));
            match layout {
                Layout::V1(_) => write(&be.join("cpu.shares"), "2")?,
                Layout::V2(_) if be.join("cpu.weight").exists() => {
                    write(&be.join("cpu.weight"), "1")?
                }
                Layout::V2(_) => {}
            }
        }
    }
    apply(layout, path, &r)
}

/// Write `r` into the pod cgroup (files of controllers that are absent are skipped).
fn apply(layout: &Layout, path: &str, r: &PodResources) -> Result<()> {
    let rel = path.trim_start_matches('/');
    match layout {
        Layout::V2(root) => {
            // Only controllers the hierarchy offers (and that were delegated on the way down).
            let available =
                std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| available.split_whitespace().any(|a| a == c);
            let d = root.join(rel);
            if has("cpu") {
                write(
                    &d.join("cpu.weight"),
                    &shares_to_weight(r.cpu_shares).to_string(),
                )?;
                let quota = r.cpu_quota.map_or("max".to_string(), |q| q.to_string());
                write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            }
            if has("memory") {
                write(
                    &d.join("memory.max"),
                    &r.memory_limit.map_or("max".into(), |m| m.to_string()),
                )?;
            }
            if has("pids") {
                write(
                    &d.join("pids.max"),
                    &r.pids_limit.map_or("max".into(), |m| m.to_string()),
                )?;
            }
        }
        Layout::V1(m) => {
            if let Some(cpu) = m.get("cpu").map(|p| p.join(rel)) {
                write(&cpu.join("cpu.shares"), &r.cpu_shares.to_string())?;
                write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(
                    &cpu.join("cpu.cfs_quota_us"),
                    &r.cpu_quota.unwrap_or(-1).to_string(),
                )?;
            }
            if let Some(mem) = m.get("memory").map(|p| p.join(rel)) {
                write(
                    &mem.join("memory.limit_in_bytes"),
                    &r.memory_limit.unwrap_or(-1).to_string(),
                )?;
            }
            if let Some(pids) = m.get("pids").map(|p| p.join(rel)) {
                write(
                    &pids.join("pids.max"),
                    &r.pids_limit.map_or("max".into(), |v| v.to_string()),
                )?;
            }
        }
    }
    Ok(())
}

/// Remove the cgroup `path` and everything below it (children first) in every hierarchy.
/// Missing folders are fine; a cgroup that still holds processes is an error naming them.
pub fn remove_pod_cgroup_in(layout: &Layout, path: &str) -> Result<()> {
    if !path.starts_with('/')
        || path.trim_matches('/').is_empty()
        || path.split('/').any(|c| c == "..")
    {
        return Err(ConfigError::invalid(
            "pod cgroup path",
            format!("{path:?} must be absolute without '..'"),
        ));
    }
    for (_, dir) in layout.dirs(path) {
        remove_tree(&dir)?;
    }
    Ok(())
}

fn remove_tree(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(cg_err("read", dir, e)),
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path())?;
        }
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    let pids: Vec<i32> = procs
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if !pids.is_empty() {
        return Err(ConfigError::CgroupBusy {
            path: dir.to_path_buf(),
            pids,
        });
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(cg_err("remove", dir, e)),
    }
}

/// [`ensure_pod_cgroup_in`] on this host's layout, without a pids limit.
pub fn ensure_pod_cgroup(path: &str, pod: &Pod) -> Result<()> {
    ensure_pod_cgroup_in(&Layout::detect(), path, pod, None)
}

/// [`remove_pod_cgroup_in`] on this host's layout.
pub fn remove_pod_cgroup(path: &str) -> Result<()> {
    remove_pod_cgroup_in(&Layout::detect(), path)
}

#[cfg(test)]
mod tests;
