//! One housekeeping pass: reads every pod record under `pods/`, then each live container's and
//! pod's cgroup, each pod's network counters (`/proc/<pid>/net/dev` of one of its processes,
//! which shows that process's network namespace without entering it), disk usage of writable
//! layers, logs and volumes (walked on a slower interval, cached in between), and the node's
//! procfs figures. CPU rates come from the previous pass.

use super::cgroup::{self, Hierarchy};
use super::disk;
use super::procfs;
use super::reader::{FastMap, Reader};
use super::sample::{
    CgroupSample, ContainerSample, Cpu, FsUsage, Memory, NodeSample, PodSample, Sample,
};
use crate::pod::record::PodRecord;
use chrono::{DateTime, Utc};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Detailed figures every third pass: every 30 s at the default 10 s interval.
pub const DETAIL_EVERY: u64 = 3;

/// Where the collector reads from; tests point these at fixture trees.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The agent's root dir (its filesystem is nodefs).
    pub root_dir: PathBuf,
    /// `<root>/pods`: one folder with a `record.json` per pod.
    pub pods_dir: PathBuf,
    /// The image store: writable layers are `<images>/containers/<id>/upper`.
    pub images_dir: PathBuf,
    /// Normally `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
    /// Normally `/proc`.
    pub proc_root: PathBuf,
}

impl Sources {
    pub fn for_root(root: &Path) -> Sources {
        Sources {
            root_dir: root.to_path_buf(),
            pods_dir: root.join("pods"),
            images_dir: root.join("images"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// The collector's memory between passes: previous CPU counters and cached disk usage.
pub struct Collector {
    sources: Sources,
    node_name: String,
    hierarchy: Hierarchy,
    fs_every: Duration,
    last_fs: Option<Instant>,
    /// CPU counter, when it was read and in which pass, by cgroup ("/" for the node).
    prev_cpu: FastMap<String, (u64, Instant, u64)>,
    /// Disk usage by path bytes, replaced on the passes that walk.
    fs_cache: FastMap<Box<[u8]>, FsUsage>,
    /// Figures of the last detailed pass, by cgroup path (see `Hierarchy::read`).
    detailed: FastMap<String, CgroupSample>,
    /// Every how many passes the detailed figures are read (1: every pass).
    detail_every: u64,
    passes: u64,
    reader: Reader,
    /// Parsed records by pod folder, with the (inode, mtime, size) they were read at: the
    /// executor replaces record.json by rename, so a changed file has a new identity.
    records: FastMap<Box<[u8]>, (FileId, PodRecord)>,
    /// Volume folders of each pod, listed on du passes.
    volume_dirs: FastMap<String, Vec<(String, PathBuf)>>,
    /// The process whose `/proc/<pid>/net/dev` shows each pod's network, by pod uid.
    net_pids: FastMap<String, u32>,
    /// What each pod's `memory.stat` holds beyond the sum of its containers' (pages left by
    /// exited containers, reparented to the pod), measured on detailed passes, by pod uid.
    residue: FastMap<String, MemorySum>,
}

impl Collector {
    /// `fs_every`: how often the du-style walks run (they cost far more than cgroup reads).
    pub fn new(sources: Sources, node_name: &str, fs_every: Duration) -> Collector {
        Collector {
            hierarchy: Hierarchy::detect(&sources.cgroup_root),
            sources,
            node_name: node_name.to_string(),
            fs_every,
            last_fs: None,
            prev_cpu: FastMap::default(),
            fs_cache: FastMap::default(),
            detailed: FastMap::default(),
            detail_every: DETAIL_EVERY,
            passes: 0,
            reader: {
                let mut r = Reader::new();
                r.keep_for(DETAIL_EVERY);
                r
            },
            records: FastMap::default(),
            volume_dirs: FastMap::default(),
            net_pids: FastMap::default(),
            residue: FastMap::default(),
        }
    }

    /// Reads limits, peaks, fail counts, OOM kills, throttling and pids every `n` passes
    /// (default 3: every 30 s at the default interval) instead of every pass.
    pub fn set_detail_every(&mut self, n: u64) {
        self.detail_every = n.max(1);
        self.reader.keep_for(self.detail_every);
    }

    /// Files kept open between passes.
    pub fn open_files(&self) -> usize {
        self.reader.open_files()
    }

    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Runs one pass. Never fails: what cannot be read is left out of the sample.
    pub fn collect(&mut self) -> Sample {
        let now = Instant::now();
        let walk_fs = self
            .last_fs
            .is_none_or(|t| now.duration_since(t) >= self.fs_every);
        if walk_fs {
            self.last_fs = Some(now);
        }
        let detail = self.passes.is_multiple_of(self.detail_every);
        self.passes += 1;
        self.reader.begin_pass();
        // Disk usage is rebuilt only on passes that walk (dropping removed containers).
        let mut fs_now = FastMap::default();
        // Detailed passes rebuild the carried-over figures (dropping removed cgroups); fast
        // passes only add cgroups seen for the first time.
        let mut detailed = if detail {
            let mut m = FastMap::default();
            m.reserve(self.detailed.len());
            m
        } else {
            std::mem::take(&mut self.detailed)
        };
        self.load_records();
        let all = std::mem::take(&mut self.records);
        let mut records: Vec<&PodRecord> = all.values().map(|(_, r)| r).collect();
        records.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut pods = Vec::with_capacity(records.len());
        for record in records {
            let pass = Pass {
                now,
                walk_fs,
                detail,
            };
            let maps = (&mut fs_now, &mut detailed);
            if let Some(pod) = self.pod(record, &pass, maps) {
                pods.push(pod);
            }
        }
        let node = self.node(now);
        let pass = self.passes;
        self.prev_cpu.retain(|_, (_, _, seen)| *seen == pass);
        if walk_fs {
            self.fs_cache = fs_now;
        }
        self.detailed = detailed;
        self.records = all;
        self.reader.end_pass();
        Sample {
            time: Utc::now(),
            node,
            pods,
        }
    }

    /// The CPU rate against the previous pass; remembers this pass's counter.
    fn rate(&mut self, key: &str, cpu: &mut Cpu, now: Instant) {
        let pass = self.passes;
        match self.prev_cpu.get_mut(key) {
            Some((ns, at, seen)) => {
                let dt = now.duration_since(*at).as_nanos();
                if dt > 0 && cpu.usage_ns >= *ns {
                    cpu.usage_nano_cores =
                        Some(((cpu.usage_ns - *ns) as u128 * 1_000_000_000 / dt) as u64);
                }
                (*ns, *at, *seen) = (cpu.usage_ns, now, pass);
            }
            None => {
                self.prev_cpu
                    .insert(key.to_string(), (cpu.usage_ns, now, pass));
            }
        }
    }

    /// Disk usage under `path`: walked on walking passes (into `out`, the next cache), else
    /// the last walk's figure from `cache`; a path the last walk did not see (a container
    /// started since) is walked at once, so it does not wait a whole `fs_every` for a figure.
    fn fs(
        cache: &mut FastMap<Box<[u8]>, FsUsage>,
        path: &Path,
        walk: bool,
        out: &mut FastMap<Box<[u8]>, FsUsage>,
    ) -> Option<FsUsage> {
        let key = path.as_os_str().as_bytes();
        if !walk {
            if let Some(u) = cache.get(key) {
                return Some(u.clone());
            }
            let usage = disk::du(path)?;
            cache.insert(key.into(), usage.clone());
            return Some(usage);
        }
        let usage = disk::du(path)?;
        out.insert(key.into(), usage.clone());
        Some(usage)
    }

    /// Reads one cgroup: every pass the cheap figures, the rest carried over between detailed
    /// passes; the CPU rate against the previous pass.
    /// Without `memory_stat` (pods on fast passes), the memory.stat figures are left for
    /// the caller to fill.
    fn cgroup(
        &mut self,
        cgroup: &str,
        pass: &Pass,
        maps: &mut Maps<'_>,
        memory_stat: bool,
    ) -> Option<CgroupSample> {
        // A cgroup seen for the first time gets its detailed figures at once.
        let detail = pass.detail || !maps.1.contains_key(cgroup);
        let mut s =
            self.hierarchy
                .read_partial(cgroup, &mut self.reader, detail, memory_stat || detail);
        // A cgroup that is gone reads as empty (no separate existence check: one syscall less).
        if s.memory.is_none() && s.cpu.is_none() {
            return None;
        }
        if detail {
            maps.1.insert(cgroup.to_string(), s.clone());
        } else if let Some(last) = maps.1.get(cgroup) {
            cgroup::fill(&mut s, last);
        }
        if let Some(cpu) = s.cpu.as_mut() {
            self.rate(cgroup, cpu, pass.now);
        }
        Some(s)
    }

    fn pod(&mut self, record: &PodRecord, pass: &Pass, mut maps: Maps<'_>) -> Option<PodSample> {
        if record.cgroup.is_empty() {
            return None;
        }
        // The pod's memory.stat is generated by the kernel on every read and costs as much as
        // all other reads of the pod together; on fast passes its figures are the sum of the
        // containers' plus the residue measured on the last detailed pass.
        let pod_stat = pass.detail || !maps.1.contains_key(&record.cgroup);
        let mut stats = self.cgroup(&record.cgroup, pass, &mut maps, pod_stat)?;
        let mut names: Vec<&str> = record.containers.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let mut containers = Vec::with_capacity(names.len());
        let mut pid = None;
        for name in names {
            let Some(c) = record.container(name, false) else {
                continue;
            };
            if c.cgroup.is_empty() {
                continue;
            }
            let Some(cs) = self.cgroup(&c.cgroup, pass, &mut maps, true) else {
                continue;
            };
            if pid.is_none() && !record.host_network {
                pid = self
                    .net_pids
                    .get(&record.uid)
                    .copied()
                    .or_else(|| self.hierarchy.first_pid(&c.cgroup, &mut self.reader));
            }
            let upper = self
                .sources
                .images_dir
                .join("containers")
                .join(&c.id)
                .join("upper");
            let logs = c.log_path.parent().map(Path::to_path_buf);
            containers.push(ContainerSample {
                name: c.name.clone(),
                id: c.id.clone(),
                image: c.image.clone(),
                cgroup: c.cgroup.clone(),
                start_time: parse_time(&c.created_at),
                stats: cs,
                rootfs: Self::fs(&mut self.fs_cache, &upper, pass.walk_fs, maps.0),
                logs: logs.and_then(|l| Self::fs(&mut self.fs_cache, &l, pass.walk_fs, maps.0)),
            });
        }
        if let Some(m) = stats.memory.as_mut() {
            let sum = MemorySum::of(containers.iter().filter_map(|c| c.stats.memory.as_ref()));
            if pod_stat {
                self.residue
                    .insert(record.uid.clone(), MemorySum::of([&*m]).minus(&sum));
            } else {
                let residue = self.residue.get(&record.uid).cloned().unwrap_or_default();
                sum.plus(&residue).complete(m);
            }
        }
        let network = pid.and_then(|pid| {
            let path = self.sources.proc_root.join(pid.to_string()).join("net/dev");
            let ifs = procfs::net_dev(self.reader.text(&path)?, false);
            self.net_pids.insert(record.uid.clone(), pid);
            Some(ifs)
        });
        if network.is_none() {
            // Exited or never found: look for a live process again next pass.
            self.net_pids.remove(&record.uid);
        }
        if pass.walk_fs || !self.volume_dirs.contains_key(&record.uid) {
            let mut dirs = Vec::new();
            let vol_dir = self.sources.pods_dir.join(&record.uid).join("volumes");
            if let Ok(entries) = std::fs::read_dir(&vol_dir) {
                for e in entries.flatten() {
                    dirs.push((e.file_name().to_string_lossy().into_owned(), e.path()));
                }
            }
            dirs.sort();
            self.volume_dirs.insert(record.uid.clone(), dirs);
        }
        let mut volumes = Vec::new();
        for (name, dir) in self.volume_dirs.get(&record.uid).into_iter().flatten() {
            if let Some(u) = Self::fs(&mut self.fs_cache, dir, pass.walk_fs, maps.0) {
                volumes.push((name.clone(), u));
            }
        }
        let start_time = containers.iter().filter_map(|c| c.start_time).min();
        Some(PodSample {
            namespace: record.namespace.clone(),
            name: record.name.clone(),
            uid: record.uid.clone(),
            cgroup: record.cgroup.clone(),
            start_time,
            stats,
            network,
            volumes,
            containers,
        })
    }

    /// Every pod record, re-parsed only when its file changed (one stat per pod per pass).
    fn load_records(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(&self.sources.pods_dir) else {
            self.records.clear();
            return;
        };
        let mut next = FastMap::default();
        next.reserve(self.records.len());
        for e in entries.flatten() {
            let dir = e.path();
            let Ok(m) = std::fs::metadata(PodRecord::path(&dir)) else {
                continue;
            };
            let id = (m.ino(), m.mtime(), m.mtime_nsec(), m.size());
            let key: Box<[u8]> = dir.as_os_str().as_bytes().into();
            let record = match self.records.remove(&key) {
                Some((old, r)) if old == id => r,
                _ => match PodRecord::load(&dir) {
                    Some(r) => r,
                    None => continue,
                },
            };
            next.insert(key, (id, record));
        }
        self.records = next;
        let live: std::collections::HashSet<&str> =
            self.records.values().map(|(_, r)| r.uid.as_str()).collect();
        self.volume_dirs
            .retain(|uid, _| live.contains(uid.as_str()));
        self.net_pids.retain(|uid, _| live.contains(uid.as_str()));
        self.residue.retain(|uid, _| live.contains(uid.as_str()));
    }

    fn node(&mut self, now: Instant) -> NodeSample {
        let proc = self.sources.proc_root.clone();
        let r = &mut self.reader;
        let mut node = NodeSample {
            name: self.node_name.clone(),
            ..Default::default()
        };
        let mut cpu = None;
        if let Some(t) = r.text(&proc.join("stat")) {
            cpu = procfs::proc_stat_cpu(t);
            node.cores = procfs::proc_stat_cores(t);
            node.start_time =
                cgroup::keyed(t, "btime").and_then(|t| DateTime::from_timestamp(t as i64, 0));
        }
        if let Some(t) = r.text(&proc.join("meminfo")) {
            node.memory = procfs::meminfo(t).unwrap_or_default();
        }
        if let Some(t) = r.text(&proc.join("vmstat")) {
            let (minor, major) = procfs::vmstat_faults(t);
            node.memory.page_faults = minor;
            node.memory.major_page_faults = major;
        }
        if let Some(t) = r.text(&proc.join("self/net/dev")) {
            node.network = procfs::net_dev(t, false);
        }
        if let Some((load, tasks)) = r.text(&proc.join("loadavg")).and_then(procfs::loadavg) {
            node.load = load;
            node.cur_proc = tasks;
        }
        node.max_pid = r.u64(&proc.join("sys/kernel/pid_max"));
        if let Some(mut cpu) = cpu {
            self.rate("/", &mut cpu, now);
            node.cpu = cpu;
        }
        node.fs = disk::statvfs(&self.sources.root_dir);
        node.image_fs = disk::statvfs(&self.sources.images_dir).or_else(|| node.fs.clone());
        node
    }
}

/// The memory.stat figures of one or more cgroups, added up.
#[derive(Debug, Clone, Default, PartialEq)]
struct MemorySum {
    inactive_file: u64,
    rss: u64,
    cache: u64,
    mapped_file: u64,
    page_faults: u64,
    major_page_faults: u64,
}

impl MemorySum {
    fn of<'a>(ms: impl IntoIterator<Item = &'a Memory>) -> MemorySum {
        let mut s = MemorySum::default();
        for m in ms {
            s.inactive_file += m.usage.saturating_sub(m.working_set);
            s.rss += m.rss.unwrap_or(0);
            s.cache += m.cache.unwrap_or(0);
            s.mapped_file += m.mapped_file.unwrap_or(0);
            s.page_faults += m.page_faults.unwrap_or(0);
            s.major_page_faults += m.major_page_faults.unwrap_or(0);
        }
        s
    }

    fn minus(&self, o: &MemorySum) -> MemorySum {
        MemorySum {
            inactive_file: self.inactive_file.saturating_sub(o.inactive_file),
            rss: self.rss.saturating_sub(o.rss),
            cache: self.cache.saturating_sub(o.cache),
            mapped_file: self.mapped_file.saturating_sub(o.mapped_file),
            page_faults: self.page_faults.saturating_sub(o.page_faults),
            major_page_faults: self.major_page_faults.saturating_sub(o.major_page_faults),
        }
    }

    fn plus(&self, o: &MemorySum) -> MemorySum {
        MemorySum {
            inactive_file: self.inactive_file + o.inactive_file,
            rss: self.rss + o.rss,
            cache: self.cache + o.cache,
            mapped_file: self.mapped_file + o.mapped_file,
            page_faults: self.page_faults + o.page_faults,
            major_page_faults: self.major_page_faults + o.major_page_faults,
        }
    }

    /// Fills a memory sample read without memory.stat.
    fn complete(&self, m: &mut Memory) {
        m.working_set = m.usage.saturating_sub(self.inactive_file);
        m.rss = Some(self.rss);
        m.cache = Some(self.cache);
        m.mapped_file = Some(self.mapped_file);
        m.page_faults = Some(self.page_faults);
        m.major_page_faults = Some(self.major_page_faults);
    }
}

/// (inode, mtime seconds, mtime nanoseconds, size) of a record file.
type FileId = (u64, i64, i64, u64);

/// What one pass does.
struct Pass {
    now: Instant,
    walk_fs: bool,
    detail: bool,
}

/// The maps a pass fills for the next one: disk usage (on walking passes), detailed figures.
type Maps<'a> = (
    &'a mut FastMap<Box<[u8]>, FsUsage>,
    &'a mut FastMap<String, CgroupSample>,
);

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::record::ContainerRecord;

    /// A v1 fixture: memory and cpuacct files of one cgroup.
    fn write_cgroup(root: &Path, cg: &str, usage: u64, inactive: u64, rss: u64) {
        let mem = root.join("memory").join(cg.trim_start_matches('/'));
        let acct = root.join("cpuacct").join(cg.trim_start_matches('/'));
        std::fs::create_dir_all(&mem).expect("mkdir");
        std::fs::create_dir_all(&acct).expect("mkdir");
        std::fs::write(mem.join("memory.usage_in_bytes"), format!("{usage}\n")).expect("write");
        std::fs::write(
            mem.join("memory.stat"),
            format!(
                "total_cache {}\ntotal_rss {rss}\ntotal_inactive_file {inactive}\ntotal_pgfault 10\n",
                usage - rss
            ),
        )
        .expect("write");
        std::fs::write(acct.join("cpuacct.usage"), "1000\n").expect("write");
    }

    #[test]
    fn fast_passes_derive_the_pod_memory_stat_from_its_containers() {
        let t = tempfile::tempdir().expect("tempdir");
        let cg = t.path().join("cgroup");
        let pods = t.path().join("pods");
        let record = PodRecord {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            host_network: true,
            cgroup: "/keel/n1/pod1".into(),
            containers: ["a", "b"]
                .iter()
                .map(|n| ContainerRecord {
                    name: n.to_string(),
                    id: format!("id-{n}"),
                    cgroup: format!("/keel/n1/pod1/{n}"),
                    log_path: t.path().join("logs").join(n).join("0.log"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        std::fs::create_dir_all(pods.join("u1")).expect("mkdir");
        std::fs::write(
            PodRecord::path(&pods.join("u1")),
            serde_json::to_vec(&record).expect("json"),
        )
        .expect("write");
        // The pod holds 1000 inactive bytes more than its containers (an exited container's).
        write_cgroup(&cg, "/keel/n1/pod1/a", 10_000, 2_000, 6_000);
        write_cgroup(&cg, "/keel/n1/pod1/b", 20_000, 3_000, 15_000);
        write_cgroup(&cg, "/keel/n1/pod1", 31_000, 6_000, 21_000);
        let sources = Sources {
            root_dir: t.path().to_path_buf(),
            pods_dir: pods,
            images_dir: t.path().join("images"),
            cgroup_root: cg.clone(),
            proc_root: t.path().join("proc"),
        };
        let mut c = Collector::new(sources, "n1", Duration::from_secs(3600));
        let first = c.collect();
        assert_eq!(first.pods[0].containers[0].logs, None);
        // A log folder that appears after the walk is walked on the next pass, not a whole
        // `fs_every` later.
        std::fs::create_dir_all(t.path().join("logs/a")).expect("mkdir");
        std::fs::write(t.path().join("logs/a/0.log"), [b'x'; 8192]).expect("write");
        let m = first.pods[0].stats.memory.clone().expect("pod memory");
        assert_eq!((m.working_set, m.rss), (25_000, Some(21_000)));
        // Container b frees 5000 inactive bytes; the pod's memory.stat is not read on the fast
        // pass (left stale on purpose to prove it), so its figures come from the containers.
        write_cgroup(&cg, "/keel/n1/pod1/b", 15_000, 1_000, 12_000);
        std::fs::write(
            cg.join("memory/keel/n1/pod1/memory.usage_in_bytes"),
            "26000\n",
        )
        .expect("write");
        let second = c.collect();
        assert!(second.pods[0].containers[0].logs.is_some());
        let m = second.pods[0].stats.memory.clone().expect("pod memory");
        assert_eq!(m.usage, 26_000);
        // inactive = 2000 + 1000 (containers) + 1000 (residue)
        assert_eq!(m.working_set, 22_000);
        assert_eq!(m.rss, Some(18_000));
        // Every fixture cgroup counts 10 faults: the residue floors at 0, the sum is 20.
        assert_eq!(m.page_faults, Some(20));
        // Every DETAIL_EVERY passes the pod's own file is read again (its stale 6000 inactive).
        let mut m = None;
        for _ in 1..DETAIL_EVERY {
            m = c.collect().pods[0].stats.memory.clone();
        }
        assert_eq!(m.map(|m| m.working_set), Some(20_000));
    }
}
