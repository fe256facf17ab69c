//! Leaving nothing behind after a lab: the processes still running in its network namespaces
//! (agents, supervisors, registries) and in the pod namespaces an agent bind-mounted under the
//! lab's folder or under `/run/keel/<node>` (containers), the mounts there (pod netns files,
//! rootfs overlays, volumes), and the agents' cgroup subtrees (`keel/<node>` in every v1
//! hierarchy and in a v2 mount), pod by pod, so labs whose nodes share names can run at once. Supervisors outlive their agent on purpose, so a test cannot rely on the agent to
//! stop them. Everything here is best effort and idempotent: it runs from Drop guards.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// (device, inode) of a namespace file: what two handles on one namespace share.
fn ns_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// One line of /proc/self/mountinfo: the mount point (unescaped) and the filesystem type.
fn mounts() -> Vec<(PathBuf, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let point = fields.get(4)?;
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(dash + 1)?;
            Some((PathBuf::from(unescape(point)), fstype.to_string()))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, proc(5)).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(Ok(digits)) = b.get(i + 1..i + 4).map(std::str::from_utf8)
            && let Ok(v) = u8::from_str_radix(digits, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut v: Vec<(PathBuf, String)> = mounts()
        .into_iter()
        .filter(|(p, _)| p.starts_with(dir))
        .collect();
    v.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    v
}

/// Pids whose network namespace is one of `namespaces`.
fn pids_in(namespaces: &HashSet<(u64, u64)>) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            ns_id(&Path::new("/proc").join(pid.to_string()).join("ns/net"))
                .is_some_and(|id| namespaces.contains(&id))
        })
        .collect()
}

fn kill(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .stderr(std::process::Stdio::null())
        .status();
}

/// Kills every process in the named namespaces `netns` and in the nsfs files mounted under
/// `dir`, waiting (up to 10 s) until they are gone.
pub fn kill_processes(netns: &[PathBuf], dir: &Path) {
    let mut ids: HashSet<(u64, u64)> = netns.iter().filter_map(|p| ns_id(p)).collect();
    for (point, fstype) in mounts_under(dir) {
        if fstype == "nsfs"
            && let Some(id) = ns_id(&point)
        {
            ids.insert(id);
        }
    }
    if ids.is_empty() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = pids_in(&ids);
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        kill(&pids);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Unmounts everything mounted at or below `dir`, deepest first (lazily, so a busy mount
/// cannot block the rest).
pub fn unmount_under(dir: &Path) {
    for _ in 0..3 {
        let left = mounts_under(dir);
        if left.is_empty() {
            return;
        }
        for (point, _) in left {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&point)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Where an agent keeps per-node runtime files outside its root dir: the pod network namespace
/// files, `/run/keel/<node>/netns/<uid>` (agent/src/pod/podspec_glue.rs).
pub const AGENT_RUN_DIR: &str = "/run/keel";

/// The pod uids an agent rooted at `root` keeps state for (`<root>/pods/<uid>`).
fn pod_uids(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("pods"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The shim state folders (`stateDir` of every container in `<root>/pods/<uid>/record.json`)
/// of the pods an agent rooted at `root` still kept: the agent's `keel-shim delete` never ran
/// for containers alive when the lab went down, and their folders sit in the shared shim root.
fn shim_state_dirs(root: &Path, uids: &[String]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for uid in uids {
        let path = root.join("pods").join(uid).join("record.json");
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        let Ok(record) = serde_json::from_slice::<serde_json::Value>(&data) else {
            continue;
        };
        for c in record["containers"].as_array().into_iter().flatten() {
            let (Some(dir), Some(id)) = (c["stateDir"].as_str(), c["id"].as_str()) else {
                continue;
            };
            let dir = PathBuf::from(dir);
            // Only a container's own folder: absolute and named by its id.
            if !id.is_empty() && dir.is_absolute() && dir.file_name().is_some_and(|n| n == id) {
                dirs.push(dir);
            }
        }
    }
    dirs
}

/// Removes what node `node`'s agent (rooted at `root`) left outside the lab folder, pod by pod
/// (the uids under `<root>/pods`), so a lab with a node of the same name running at the same
/// time keeps its own pods: the processes in each pod's cgroups (`keel/<node>/.../pod<uid>`,
/// every hierarchy) and network namespace (`/run/keel/<node>/netns/<uid>`), that namespace's
/// mount, and the cgroups; then the node's cgroup folders and `/run/keel/<node>` if empty.
pub fn remove_node_pods(node: &str, root: &Path) {
    let uids = pod_uids(root);
    let shim_dirs = shim_state_dirs(root, &uids);
    let run = Path::new(AGENT_RUN_DIR).join(node);
    let netns: Vec<PathBuf> = uids.iter().map(|u| run.join("netns").join(u)).collect();
    kill_processes(&netns, Path::new("/nonexistent"));
    for f in &netns {
        if mounts_under(f).iter().any(|(p, _)| p == f) {
            let _ = Command::new("umount").arg("-l").arg(f).status();
        }
        let _ = std::fs::remove_file(f);
    }
    let pod_dirs: Vec<String> = uids.iter().map(|u| format!("pod{u}")).collect();
    for top in node_cgroups(node) {
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        let ours: Vec<&PathBuf> = dirs
            .iter()
            .filter(|d| {
                d.components()
                    .any(|c| pod_dirs.iter().any(|p| c.as_os_str() == p.as_str()))
            })
            .collect();
        let procs: Vec<u32> = ours
            .iter()
            .flat_map(|d| {
                std::fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        kill(&procs);
        let deadline = Instant::now() + Duration::from_secs(10);
        for d in ours {
            while std::fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // QoS folders and the node's own: gone only when no other lab's pods are in them.
        for d in &dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
    // The containers are dead now (their cgroups are gone): so are their supervisors.
    for d in &shim_dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    let ns_dir = run.join("netns");
    if std::fs::read_dir(&ns_dir).is_ok_and(|mut d| d.next().is_none()) {
        if mounts_under(&ns_dir).iter().any(|(p, _)| *p == ns_dir) {
            let _ = Command::new("umount").arg("-l").arg(&ns_dir).status();
        }
        let _ = std::fs::remove_dir(&ns_dir);
        let _ = std::fs::remove_dir(&run);
    }
}

/// The `keel/<node>` cgroup folders of every hierarchy mounted under /sys/fs/cgroup.
fn node_cgroups(node: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut v = vec![root.join("keel").join(node)];
    if let Ok(dir) = std::fs::read_dir(root) {
        v.extend(dir.flatten().map(|e| e.path().join("keel").join(node)));
    }
    v.into_iter().filter(|p| p.is_dir()).collect()
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unescape;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape(r"/tmp/plain"), "/tmp/plain");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }
}
