//! One housekeeping pass: reads every pod record under `pods/`, then each live container's and
//! pod's cgroup, each pod's network counters (`/proc/<pid>/net/dev` of one of its processes,
//! which shows that process's network namespace without entering it), disk usage of writable
//! layers, logs and volumes (walked on a slower interval, cached in between), and the node's
//! procfs figures. CPU rates come from the previous pass.

use super::cgroup::{self, Hierarchy};
use super::disk;
use super::procfs;
use super::sample::{ContainerSample, Cpu, FsUsage, NodeSample, PodSample, Sample};
use crate::pod::record::PodRecord;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    buf: String,
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
            buf: String::with_capacity(8192),
        }
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
        let mut cpu_now = HashMap::with_capacity(self.prev_cpu.len());
        let mut fs_now = HashMap::with_capacity(self.fs_cache.len());
        let mut records = PodRecord::load_all(&self.sources.pods_dir);
        records.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut pods = Vec::with_capacity(records.len());
        for record in &records {
            if let Some(pod) = self.pod(record, now, walk_fs, &mut cpu_now, &mut fs_now) {
                pods.push(pod);
            }
        }
        let node = self.node(now, &mut cpu_now);
        self.prev_cpu = cpu_now;
        self.fs_cache = fs_now;
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

    fn pod(
        &mut self,
        record: &PodRecord,
        now: Instant,
        walk_fs: bool,
        cpu_now: &mut HashMap<String, (u64, Instant)>,
        fs_now: &mut HashMap<PathBuf, FsUsage>,
    ) -> Option<PodSample> {
        if record.cgroup.is_empty() || !self.hierarchy.exists(&record.cgroup) {
            return None;
        }
        let mut buf = std::mem::take(&mut self.buf);
        let mut stats = self.hierarchy.read(&record.cgroup, &mut buf);
        if let Some(cpu) = stats.cpu.as_mut() {
            self.rate(&record.cgroup, cpu, now, cpu_now);
        }
        let mut names: Vec<&str> = record.containers.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let mut containers = Vec::with_capacity(names.len());
        let mut pid = None;
        for name in names {
            let Some(c) = record.container(name, false) else {
                continue;
            };
            if c.cgroup.is_empty() || !self.hierarchy.exists(&c.cgroup) {
                continue;
            }
            let mut cs = self.hierarchy.read(&c.cgroup, &mut buf);
            if let Some(cpu) = cs.cpu.as_mut() {
                self.rate(&c.cgroup, cpu, now, cpu_now);
            }
            if pid.is_none() && !record.host_network {
                pid = self.hierarchy.first_pid(&c.cgroup, &mut buf);
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
                rootfs: self.fs(&upper, walk_fs, fs_now),
                logs: logs.and_then(|l| self.fs(&l, walk_fs, fs_now)),
            });
        }
        let network = pid.and_then(|pid| {
            let path = self.sources.proc_root.join(pid.to_string()).join("net/dev");
            cgroup::read_into(&path, &mut buf)?;
            Some(procfs::net_dev(&buf, false))
        });
        self.buf = buf;
        let mut volumes = Vec::new();
        let vol_dir = self.sources.pods_dir.join(&record.uid).join("volumes");
        if let Ok(entries) = std::fs::read_dir(&vol_dir) {
            for e in entries.flatten() {
                if let Some(u) = self.fs(&e.path(), walk_fs, fs_now) {
                    volumes.push((e.file_name().to_string_lossy().into_owned(), u));
                }
            }
        }
        volumes.sort_by(|a, b| a.0.cmp(&b.0));
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

    fn node(&mut self, now: Instant, cpu_now: &mut HashMap<String, (u64, Instant)>) -> NodeSample {
        let mut buf = std::mem::take(&mut self.buf);
        let proc = self.sources.proc_root.clone();
        let mut node = NodeSample {
            name: self.node_name.clone(),
            ..Default::default()
        };
        if cgroup::read_into(&proc.join("stat"), &mut buf).is_some() {
            if let Some(mut cpu) = procfs::proc_stat_cpu(&buf) {
                self.rate("/", &mut cpu, now, cpu_now);
                node.cpu = cpu;
            }
            node.cores = procfs::proc_stat_cores(&buf);
            node.start_time =
                cgroup::keyed(&buf, "btime").and_then(|t| DateTime::from_timestamp(t as i64, 0));
        }
        if cgroup::read_into(&proc.join("meminfo"), &mut buf).is_some() {
            node.memory = procfs::meminfo(&buf).unwrap_or_default();
        }
        if cgroup::read_into(&proc.join("vmstat"), &mut buf).is_some() {
            let (minor, major) = procfs::vmstat_faults(&buf);
            node.memory.page_faults = minor;
            node.memory.major_page_faults = major;
        }
        if cgroup::read_into(&proc.join("self/net/dev"), &mut buf).is_some() {
            node.network = procfs::net_dev(&buf, false);
        }
        if cgroup::read_into(&proc.join("loadavg"), &mut buf).is_some()
            && let Some((load, tasks)) = procfs::loadavg(&buf)
        {
            node.load = load;
            node.cur_proc = tasks;
        }
        node.max_pid = cgroup::read_u64(&proc.join("sys/kernel/pid_max"), &mut buf);
        self.buf = buf;
        node.fs = disk::statvfs(&self.sources.root_dir);
        node.image_fs = disk::statvfs(&self.sources.images_dir).or_else(|| node.fs.clone());
        node
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
