//! One housekeeping pass: reads every pod record under `pods/`, then each live container's and
//! pod's cgroup, each pod's network counters (`/proc/<pid>/net/dev` of one of its processes,
//! which shows that process's network namespace without entering it), disk usage of writable
//! layers, logs and volumes (walked on a slower interval, cached in between), and the node's
//! procfs figures. CPU rates come from the previous pass.

use super::cgroup::{self, Hierarchy};
use super::disk;
use super::procfs;
use super::reader::Reader;
use super::sample::{CgroupSample, ContainerSample, Cpu, FsUsage, NodeSample, PodSample, Sample};
use crate::pod::record::PodRecord;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
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
    prev_cpu: HashMap<String, (u64, Instant)>,
    fs_cache: HashMap<PathBuf, FsUsage>,
    /// Figures of the last detailed pass, by cgroup path (see `Hierarchy::read`).
    detailed: HashMap<String, CgroupSample>,
    /// Every how many passes the detailed figures are read (1: every pass).
    detail_every: u64,
    passes: u64,
    reader: Reader,
    /// Parsed records by pod folder, with the (inode, mtime, size) they were read at: the
    /// executor replaces record.json by rename, so a changed file has a new identity.
    records: HashMap<PathBuf, (FileId, PodRecord)>,
    /// Volume folders of each pod, listed on du passes.
    volume_dirs: HashMap<String, Vec<(String, PathBuf)>>,
    /// The process whose `/proc/<pid>/net/dev` shows each pod's network, by pod uid.
    net_pids: HashMap<String, u32>,
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
            prev_cpu: HashMap::new(),
            fs_cache: HashMap::new(),
            detailed: HashMap::new(),
            detail_every: DETAIL_EVERY,
            passes: 0,
            reader: {
                let mut r = Reader::new();
                r.keep_for(DETAIL_EVERY);
                r
            },
            records: HashMap::new(),
            volume_dirs: HashMap::new(),
            net_pids: HashMap::new(),
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
        let mut cpu_now = HashMap::with_capacity(self.prev_cpu.len());
        let mut fs_now = HashMap::with_capacity(self.fs_cache.len());
        // Detailed passes rebuild the carried-over figures (dropping removed cgroups); fast
        // passes only add cgroups seen for the first time.
        let mut detailed = if detail {
            HashMap::with_capacity(self.detailed.len())
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
            let maps = (&mut cpu_now, &mut fs_now, &mut detailed);
            if let Some(pod) = self.pod(record, &pass, maps) {
                pods.push(pod);
            }
        }
        let node = self.node(now, &mut cpu_now);
        self.prev_cpu = cpu_now;
        self.fs_cache = fs_now;
        self.detailed = detailed;
        self.records = all;
        self.reader.end_pass();
        Sample {
            time: Utc::now(),
            node,
            pods,
        }
    }

    fn rate(
        &self,
        key: &str,
        cpu: &mut Cpu,
        now: Instant,
        out: &mut HashMap<String, (u64, Instant)>,
    ) {
        if let Some((ns, at)) = self.prev_cpu.get(key) {
            let dt = now.duration_since(*at).as_nanos();
            if dt > 0 && cpu.usage_ns >= *ns {
                cpu.usage_nano_cores =
                    Some(((cpu.usage_ns - ns) as u128 * 1_000_000_000 / dt) as u64);
            }
        }
        out.insert(key.to_string(), (cpu.usage_ns, now));
    }

    fn fs(&self, path: &Path, walk: bool, out: &mut HashMap<PathBuf, FsUsage>) -> Option<FsUsage> {
        let usage = if walk {
            disk::du(path)
        } else {
            self.fs_cache.get(path).cloned()
        }?;
        out.insert(path.to_path_buf(), usage.clone());
        Some(usage)
    }

    /// Reads one cgroup: every pass the cheap figures, the rest carried over between detailed
    /// passes; the CPU rate against the previous pass.
    fn cgroup(&mut self, cgroup: &str, pass: &Pass, maps: &mut Maps<'_>) -> Option<CgroupSample> {
        // A cgroup seen for the first time gets its detailed figures at once.
        let detail = pass.detail || !maps.2.contains_key(cgroup);
        let mut s = self.hierarchy.read(cgroup, &mut self.reader, detail);
        // A cgroup that is gone reads as empty (no separate existence check: one syscall less).
        if s.memory.is_none() && s.cpu.is_none() {
            return None;
        }
        if detail {
            maps.2.insert(cgroup.to_string(), s.clone());
        } else if let Some(last) = maps.2.get(cgroup) {
            cgroup::fill(&mut s, last);
        }
        if let Some(cpu) = s.cpu.as_mut() {
            self.rate(cgroup, cpu, pass.now, maps.0);
        }
        Some(s)
    }

    fn pod(&mut self, record: &PodRecord, pass: &Pass, mut maps: Maps<'_>) -> Option<PodSample> {
        if record.cgroup.is_empty() {
            return None;
        }
        let stats = self.cgroup(&record.cgroup, pass, &mut maps)?;
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
            let Some(cs) = self.cgroup(&c.cgroup, pass, &mut maps) else {
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
                rootfs: self.fs(&upper, pass.walk_fs, maps.1),
                logs: logs.and_then(|l| self.fs(&l, pass.walk_fs, maps.1)),
            });
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
        for (name, dir) in self
            .volume_dirs
            .get(&record.uid)
            .cloned()
            .unwrap_or_default()
        {
            if let Some(u) = self.fs(&dir, pass.walk_fs, maps.1) {
                volumes.push((name, u));
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
        let mut next = HashMap::with_capacity(self.records.len());
        for e in entries.flatten() {
            let dir = e.path();
            let Ok(m) = std::fs::metadata(PodRecord::path(&dir)) else {
                continue;
            };
            let id = (m.ino(), m.mtime(), m.mtime_nsec(), m.size());
            let record = match self.records.remove(&dir) {
                Some((old, r)) if old == id => r,
                _ => match PodRecord::load(&dir) {
                    Some(r) => r,
                    None => continue,
                },
            };
            next.insert(dir, (id, record));
        }
        self.records = next;
        let live: std::collections::HashSet<&str> =
            self.records.values().map(|(_, r)| r.uid.as_str()).collect();
        self.volume_dirs
            .retain(|uid, _| live.contains(uid.as_str()));
        self.net_pids.retain(|uid, _| live.contains(uid.as_str()));
    }

    fn node(&mut self, now: Instant, cpu_now: &mut HashMap<String, (u64, Instant)>) -> NodeSample {
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
            self.rate("/", &mut cpu, now, cpu_now);
            node.cpu = cpu;
        }
        node.fs = disk::statvfs(&self.sources.root_dir);
        node.image_fs = disk::statvfs(&self.sources.images_dir).or_else(|| node.fs.clone());
        node
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

/// The maps a pass fills for the next one: CPU counters, disk usage, detailed figures.
type Maps<'a> = (
    &'a mut HashMap<String, (u64, Instant)>,
    &'a mut HashMap<PathBuf, FsUsage>,
    &'a mut HashMap<String, CgroupSample>,
);

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
