//! Container cgroups on cgroup v2 and on v1 (including hybrid hosts such as this project's CI
//! machine, where the v1 controllers do the work and the unified mount is ignored, as youki
//! and runc do; crun refuses such hosts).
//!
//! The kernel is reached only through files under a cgroup root, so the write logic is tested
//! against temp dirs. Paths: an absolute `linux.cgroupsPath` is taken below the root of each
//! hierarchy; a relative one below the cgroup this process is in (runc's rule); none means
//! `/keel-shim/<id>` (absolute, so that nothing lands below the caller's own cgroup).

mod stats;
mod v1;
mod v2;

use crate::error::{Error, Result};
use crate::proto::Stats;
use oci_spec::runtime::LinuxResources;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// v1 controllers keel-shim manages.
pub const V1_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "devices", "blkio",
];

/// How the host's cgroups are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// v1 (or hybrid): controller name -> mount point of its hierarchy.
    V1(BTreeMap<String, PathBuf>),
    /// Unified hierarchy mounted at this path.
    V2(PathBuf),
}

impl Layout {
    /// Detect the layout under `/sys/fs/cgroup`.
    pub fn detect() -> Layout {
        let root = Path::new("/sys/fs/cgroup");
        let is_v2 = nix::sys::statfs::statfs(root)
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false);
        if is_v2 {
            return Layout::V2(root.to_path_buf());
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Layout::V1(parse_v1_mounts(&mountinfo))
    }

    /// 1 or 2.
    pub fn version(&self) -> u8 {
        match self {
            Layout::V1(_) => 1,
            Layout::V2(_) => 2,
        }
    }
}

/// Controller -> mount point, from `/proc/self/mountinfo` lines of type `cgroup`.
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
        let Some(mountpoint) = left.split_whitespace().nth(4) else {
            continue;
        };
        for opt in opts.split(',') {
            if V1_CONTROLLERS.contains(&opt) {
                out.entry(opt.to_string())
                    .or_insert_with(|| PathBuf::from(mountpoint));
            }
        }
    }
    out
}

/// Own cgroup path per hierarchy from `/proc/self/cgroup` (`""` key = v2).
fn own_cgroups() -> BTreeMap<String, PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next(), parts.next());
        if let (Some(ctrls), Some(path)) = (ctrls, path) {
            for c in ctrls.split(',') {
                out.insert(c.to_string(), PathBuf::from(path));
            }
        }
    }
    out
}

/// One container's cgroup in every hierarchy that matters.
#[derive(Debug, Clone)]
pub struct Cgroup {
    /// The host layout.
    pub layout: Layout,
    /// Folder per controller (v1) or the single folder (v2, key `""`).
    pub dirs: BTreeMap<String, PathBuf>,
}

/// Resolve `cgroupsPath` to folders (nothing is created).
pub fn resolve(layout: &Layout, cgroups_path: Option<&Path>, id: &str) -> Result<Cgroup> {
    let default = PathBuf::from(format!("/keel-shim/{id}"));
    let path = cgroups_path.unwrap_or(&default);
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(Error::Usage(format!(
            "linux.cgroupsPath {} must not contain '..'",
            path.display()
        )));
    }
    let own = own_cgroups();
    let below = |hier: &Path, key: &str| -> PathBuf {
        if path.is_absolute() {
            hier.join(path.strip_prefix("/").unwrap_or(path))
        } else {
            let base = own.get(key).cloned().unwrap_or_else(|| PathBuf::from("/"));
            hier.join(base.strip_prefix("/").unwrap_or(&base))
                .join(path)
        }
    };
    let mut dirs = BTreeMap::new();
    match layout {
        Layout::V2(root) => {
            dirs.insert(String::new(), below(root, ""));
        }
        Layout::V1(mounts) => {
            for (ctrl, mnt) in mounts {
                dirs.insert(ctrl.clone(), below(mnt, ctrl));
            }
        }
    }
    if dirs.is_empty() {
        return Err(Error::Usage(
            "no cgroup hierarchy found under /sys/fs/cgroup; mount cgroup2 or the v1 controllers"
                .into(),
        ));
    }
    Ok(Cgroup {
        layout: layout.clone(),
        dirs,
    })
}

pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| Error::Cgroup {
        op: format!("write {value:?}"),
        path: path.to_path_buf(),
        source: e,
    })
}

pub(crate) fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl Cgroup {
    /// Create the folders and apply `resources`. On error the caller calls [`Cgroup::remove`].
    pub fn create(&self, resources: Option<&LinuxResources>) -> Result<()> {
        match &self.layout {
            Layout::V2(root) => {
                let dir = &self.dirs[""];
                v2::create(root, dir)?;
                if let Some(r) = resources {
                    v2::apply(dir, r)?;
                }
            }
            Layout::V1(_) => {
                for (ctrl, dir) in &self.dirs {
                    v1::create(ctrl, dir)?;
                }
                if let Some(r) = resources {
                    v1::apply(&self.dirs, r)?;
                }
            }
        }
        Ok(())
    }

    /// Move `pid` into the cgroup (every hierarchy).
    pub fn add(&self, pid: i32) -> Result<()> {
        for dir in self.dirs.values() {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Pids in the cgroup.
    pub fn procs(&self) -> Vec<i32> {
        let dir = self.main_dir();
        read(&dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The folder used for process listing and v2 files.
    fn main_dir(&self) -> PathBuf {
        self.dirs
            .get("")
            .or_else(|| self.dirs.get("pids"))
            .or_else(|| self.dirs.get("freezer"))
            .or_else(|| self.dirs.values().next())
            .cloned()
            .unwrap_or_default()
    }

    /// Freeze (`true`) or thaw, waiting until the kernel reports the new state.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        match &self.layout {
            Layout::V2(_) => {
                let dir = &self.dirs[""];
                write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
                let want = if frozen { "frozen 1" } else { "frozen 0" };
                while Instant::now() < deadline {
                    if read(&dir.join("cgroup.events")).is_some_and(|e| e.contains(want)) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Layout::V1(_) => {
                let Some(dir) = self.dirs.get("freezer") else {
                    return Err(Error::Usage("no v1 freezer hierarchy mounted".into()));
                };
                let want = if frozen { "FROZEN" } else { "THAWED" };
                while Instant::now() < deadline {
                    write(&dir.join("freezer.state"), want)?;
                    if read(&dir.join("freezer.state")).is_some_and(|s| s.trim() == want) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        Err(Error::Cgroup {
            op: "freeze/thaw did not settle within 5 s".into(),
            path: self.main_dir(),
            source: std::io::Error::from(std::io::ErrorKind::TimedOut),
        })
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        match &self.layout {
            Layout::V2(_) => {
                read(&self.dirs[""].join("cgroup.freeze")).is_some_and(|s| s.trim() == "1")
            }
            Layout::V1(_) => self
                .dirs
                .get("freezer")
                .and_then(|d| read(&d.join("freezer.state")))
                .is_some_and(|s| s.trim() == "FROZEN"),
        }
    }

    /// Send `signal` to every process in the cgroup (`cgroup.kill` for SIGKILL on v2).
    pub fn kill_all(&self, signal: i32) {
        if signal == libc::SIGKILL
            && let Layout::V2(_) = self.layout
            && write(&self.dirs[""].join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        for pid in self.procs() {
            if let Ok(sig) = nix::sys::signal::Signal::try_from(signal) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
            }
        }
    }

    /// Remove the folders, waiting (bounded) for exiting tasks to leave.
    pub fn remove(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in self.dirs.values() {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => {
                        return Err(Error::Cgroup {
                            op: "remove".into(),
                            path: dir.clone(),
                            source: e,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Resource usage sample.
    pub fn stats(&self) -> Stats {
        match &self.layout {
            Layout::V2(_) => stats::v2(&self.dirs[""]),
            Layout::V1(_) => stats::v1(&self.dirs),
        }
    }

    /// OOM kills counted in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        match &self.layout {
            Layout::V2(_) => stats::keyed(&self.dirs[""].join("memory.events"), "oom_kill"),
            Layout::V1(_) => self
                .dirs
                .get("memory")
                .map(|d| stats::keyed(&d.join("memory.oom_control"), "oom_kill"))
                .unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hybrid_mountinfo() {
        let mi = "35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n\
                  36 25 0:31 / /sys/fs/cgroup/memory rw,nosuid shared:11 - cgroup cgroup rw,memory\n\
                  37 25 0:32 / /sys/fs/cgroup/cpu,cpuacct rw shared:12 - cgroup cgroup rw,cpu,cpuacct\n\
                  38 25 0:33 / /sys/fs/cgroup/systemd rw shared:13 - cgroup cgroup rw,xattr,name=systemd\n";
        let m = parse_v1_mounts(mi);
        assert_eq!(m["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m["cpu"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn absolute_paths_ignore_own_cgroup() {
        let mut mounts = BTreeMap::new();
        mounts.insert("memory".to_string(), PathBuf::from("/sys/fs/cgroup/memory"));
        let cg = resolve(&Layout::V1(mounts), Some(Path::new("/a/b")), "x").expect("resolve");
        assert_eq!(
            cg.dirs["memory"],
            PathBuf::from("/sys/fs/cgroup/memory/a/b")
        );
        let e = resolve(
            &Layout::V2("/sys/fs/cgroup".into()),
            Some(Path::new("/a/../b")),
            "x",
        );
        assert!(e.is_err());
    }
}
