//! Reads one cgroup's CPU, memory and process figures from the cgroup filesystem, v2 (unified)
//! or v1 (one hierarchy per controller), without spawning anything. The file-to-figure mapping
//! follows cAdvisor's libcontainer handler and the kernel's cgroup-v1/cgroup-v2 documentation
//! (see `shared/reference/network.md` section 4).

use super::reader::Reader;
use super::sample::{CgroupSample, Cpu, Memory};
use std::path::{Path, PathBuf};

/// v1 `cpuacct.stat` counts USER_HZ ticks; USER_HZ is 100 on every Linux ABI (times(2)).
const NS_PER_TICK: u64 = 10_000_000;
/// v1 reports "no limit" as the largest page-aligned i64; anything this large is no limit.
const UNLIMITED: u64 = 1 << 62;

/// Which cgroup layout the node has, and where it is mounted.
#[derive(Debug, Clone, PartialEq)]
pub enum Hierarchy {
    /// One tree with every controller (`cgroup.controllers` at the root).
    V2 { root: PathBuf },
    /// `<root>/<controller>/...` per controller (this host: hybrid, v1 controllers).
    V1 { root: PathBuf },
}

impl Hierarchy {
    /// Looks at `root` (normally `/sys/fs/cgroup`): a v2 mount has `cgroup.controllers`.
    pub fn detect(root: &Path) -> Hierarchy {
        if root.join("cgroup.controllers").is_file() {
            Hierarchy::V2 {
                root: root.to_path_buf(),
            }
        } else {
            Hierarchy::V1 {
                root: root.to_path_buf(),
            }
        }
    }

    /// The folder of `cgroup` (absolute, e.g. `/keel/n1/burstable/pod<uid>`) in `controller`
    /// (ignored for v2).
    pub fn dir(&self, controller: &str, cgroup: &str) -> PathBuf {
        let rel = cgroup.trim_start_matches('/');
        match self {
            Hierarchy::V2 { root } => root.join(rel),
            Hierarchy::V1 { root } => root.join(controller).join(rel),
        }
    }

    /// True when the cgroup exists (in the memory controller for v1).
    pub fn exists(&self, cgroup: &str) -> bool {
        self.dir("memory", cgroup).is_dir()
    }

    /// One process of the cgroup itself (not its children), for reading its network namespace.
    pub fn first_pid(&self, cgroup: &str, r: &mut Reader) -> Option<u32> {
        let path = self.dir("memory", cgroup).join("cgroup.procs");
        r.text(&path)?.lines().find_map(|l| l.trim().parse().ok())
    }

    /// What this module knows about `cgroup`; absent files leave figures out. The figures
    /// `kubectl top`, the summary's rate and eviction need (CPU usage, memory usage and
    /// memory.stat) are read on every pass; with `detail` false the others (limits, peaks,
    /// fail counts, OOM kills, throttling, user/system split, pids) are skipped, and the
    /// collector carries them over from its last detailed pass (`fill`).
    pub fn read(&self, cgroup: &str, r: &mut Reader, detail: bool) -> CgroupSample {
        self.read_partial(cgroup, r, detail, true)
    }

    /// As `read`, but without `memory.stat` when `memory_stat` is false (the costliest file to
    /// generate): then `working_set` equals `usage` and the stat figures are None, for the
    /// caller to complete (a pod's from its containers).
    pub fn read_partial(
        &self,
        cgroup: &str,
        r: &mut Reader,
        detail: bool,
        memory_stat: bool,
    ) -> CgroupSample {
        match self {
            Hierarchy::V2 { .. } => self.read_v2(cgroup, r, detail, memory_stat),
            Hierarchy::V1 { .. } => self.read_v1(cgroup, r, detail, memory_stat),
        }
    }

    fn read_v2(
        &self,
        cgroup: &str,
        r: &mut Reader,
        detail: bool,
        memory_stat: bool,
    ) -> CgroupSample {
        let dir = self.dir("", cgroup);
        let cpu = r.text(&dir.join("cpu.stat")).map(cpu_stat_v2);
        let memory = r.u64(&dir.join("memory.current")).map(|usage| {
            let stat = MemoryStat::read(r, &dir, false, memory_stat);
            let mut m = Memory {
                usage,
                working_set: usage.saturating_sub(stat.inactive_file),
                rss: stat.rss,
                cache: stat.cache,
                mapped_file: stat.mapped_file,
                page_faults: stat.pgfault,
                major_page_faults: stat.pgmajfault,
                ..Default::default()
            };
            if detail {
                let events = r
                    .text(&dir.join("memory.events"))
                    .map(|t| (keyed(t, "max"), keyed(t, "oom_kill")))
                    .unwrap_or_default();
                m.failcnt = events.0;
                m.oom_kills = events.1;
                m.swap = r.u64(&dir.join("memory.swap.current"));
                m.max_usage = r.u64(&dir.join("memory.peak"));
                m.limit = r.u64(&dir.join("memory.max")).filter(|l| *l < UNLIMITED);
            }
            m
        });
        let processes = detail.then(|| r.u64(&dir.join("pids.current"))).flatten();
        CgroupSample {
            cpu,
            memory,
            processes,
        }
    }

    fn read_v1(
        &self,
        cgroup: &str,
        r: &mut Reader,
        detail: bool,
        memory_stat: bool,
    ) -> CgroupSample {
        let acct = self.dir("cpuacct", cgroup);
        let cpu = r.u64(&acct.join("cpuacct.usage")).map(|usage_ns| {
            let mut cpu = Cpu {
                usage_ns,
                ..Default::default()
            };
            if detail {
                if let Some(t) = r.text(&acct.join("cpuacct.stat")) {
                    cpu.user_ns = keyed(t, "user").map(|v| v * NS_PER_TICK);
                    cpu.system_ns = keyed(t, "system").map(|v| v * NS_PER_TICK);
                }
                if let Some(t) = r.text(&self.dir("cpu", cgroup).join("cpu.stat")) {
                    cpu.periods = keyed(t, "nr_periods");
                    cpu.throttled_periods = keyed(t, "nr_throttled");
                    cpu.throttled_ns = keyed(t, "throttled_time");
                }
            }
            cpu
        });
        let mem = self.dir("memory", cgroup);
        let memory = r.u64(&mem.join("memory.usage_in_bytes")).map(|usage| {
            let stat = MemoryStat::read(r, &mem, true, memory_stat);
            let mut m = Memory {
                usage,
                working_set: usage.saturating_sub(stat.inactive_file),
                rss: stat.rss,
                cache: stat.cache,
                mapped_file: stat.mapped_file,
                swap: stat.swap,
                page_faults: stat.pgfault,
                major_page_faults: stat.pgmajfault,
                ..Default::default()
            };
            if detail {
                m.max_usage = r.u64(&mem.join("memory.max_usage_in_bytes"));
                m.limit = r
                    .u64(&mem.join("memory.limit_in_bytes"))
                    .filter(|l| *l < UNLIMITED);
                m.failcnt = r.u64(&mem.join("memory.failcnt"));
                m.oom_kills = r
                    .text(&mem.join("memory.oom_control"))
                    .and_then(|t| keyed(t, "oom_kill"));
            }
            m
        });
        let processes = detail
            .then(|| r.u64(&self.dir("pids", cgroup).join("pids.current")))
            .flatten();
        CgroupSample {
            cpu,
            memory,
            processes,
        }
    }
}

/// Completes a sample read without `detail` with the figures of the last detailed one.
pub fn fill(s: &mut CgroupSample, last: &CgroupSample) {
    if let (Some(c), Some(l)) = (s.cpu.as_mut(), last.cpu.as_ref()) {
        c.user_ns = c.user_ns.or(l.user_ns);
        c.system_ns = c.system_ns.or(l.system_ns);
        c.periods = c.periods.or(l.periods);
        c.throttled_periods = c.throttled_periods.or(l.throttled_periods);
        c.throttled_ns = c.throttled_ns.or(l.throttled_ns);
    }
    if let (Some(m), Some(l)) = (s.memory.as_mut(), last.memory.as_ref()) {
        m.swap = m.swap.or(l.swap);
        m.max_usage = m.max_usage.or(l.max_usage);
        m.limit = m.limit.or(l.limit);
        m.failcnt = m.failcnt.or(l.failcnt);
        m.oom_kills = m.oom_kills.or(l.oom_kills);
    }
    s.processes = s.processes.or(last.processes);
}

/// `cpu.stat` of cgroup v2 (microseconds) in nanoseconds.
pub fn cpu_stat_v2(text: &str) -> Cpu {
    let us = |k| keyed(text, k).map(|v| v * 1000);
    Cpu {
        usage_ns: us("usage_usec").unwrap_or(0),
        user_ns: us("user_usec"),
        system_ns: us("system_usec"),
        usage_nano_cores: None,
        periods: keyed(text, "nr_periods"),
        throttled_periods: keyed(text, "nr_throttled"),
        throttled_ns: us("throttled_usec"),
    }
}

/// The `memory.stat` keys the collector uses.
#[derive(Debug, Default, PartialEq)]
pub struct MemoryStat {
    pub inactive_file: u64,
    pub rss: Option<u64>,
    pub cache: Option<u64>,
    pub mapped_file: Option<u64>,
    pub swap: Option<u64>,
    pub pgfault: Option<u64>,
    pub pgmajfault: Option<u64>,
}

impl MemoryStat {
    /// `memory.stat` of the cgroup folder `dir`, parsed; empty when `read` is false or the
    /// file cannot be read.
    fn read(r: &mut Reader, dir: &Path, v1: bool, read: bool) -> MemoryStat {
        if !read {
            return MemoryStat::default();
        }
        r.text(&dir.join("memory.stat"))
            .map(|t| MemoryStat::parse(t, v1))
            .unwrap_or_default()
    }

    /// v1 (`v1 = true`) uses the hierarchical `total_*` keys; v2's keys are hierarchical already.
    pub fn parse(text: &str, v1: bool) -> MemoryStat {
        let mut s = MemoryStat::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(' ') else {
                continue;
            };
            let Ok(v) = v.trim().parse::<u64>() else {
                continue;
            };
            let key = if v1 {
                match k.strip_prefix("total_") {
                    Some(k) => k,
                    None => continue,
                }
            } else {
                k
            };
            match (key, v1) {
                ("inactive_file", _) => s.inactive_file = v,
                ("rss", true) | ("anon", false) => s.rss = Some(v),
                ("cache", true) | ("file", false) => s.cache = Some(v),
                ("mapped_file", true) | ("file_mapped", false) => s.mapped_file = Some(v),
                ("swap", true) => s.swap = Some(v),
                ("pgfault", _) => s.pgfault = Some(v),
                ("pgmajfault", _) => s.pgmajfault = Some(v),
                _ => {}
            }
        }
        s
    }
}

/// The value of `key` in a flat keyed file (`key value` per line).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_STAT: &str = "cache 4096\nrss 8192\ninactive_file 100\ntotal_cache 1048576\ntotal_rss 2097152\ntotal_mapped_file 65536\ntotal_swap 0\ntotal_pgfault 1234\ntotal_pgmajfault 5\ntotal_inactive_file 524288\n";
    const V2_STAT: &str = "anon 3145728\nfile 1048576\nfile_mapped 4096\ninactive_file 262144\npgfault 99\npgmajfault 2\n";

    #[test]
    fn memory_stat_v1_uses_hierarchical_totals() {
        let s = MemoryStat::parse(V1_STAT, true);
        assert_eq!(s.inactive_file, 524288);
        assert_eq!(s.rss, Some(2097152));
        assert_eq!(s.cache, Some(1048576));
        assert_eq!(s.mapped_file, Some(65536));
        assert_eq!(s.pgfault, Some(1234));
    }

    #[test]
    fn memory_stat_v2_keys() {
        let s = MemoryStat::parse(V2_STAT, false);
        assert_eq!(s.inactive_file, 262144);
        assert_eq!(s.rss, Some(3145728));
        assert_eq!(s.cache, Some(1048576));
        assert_eq!(s.mapped_file, Some(4096));
        assert_eq!(s.swap, None);
        assert_eq!(s.pgmajfault, Some(2));
    }

    #[test]
    fn cpu_stat_v2_in_nanoseconds() {
        let c = cpu_stat_v2(
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 3\nthrottled_usec 7\n",
        );
        assert_eq!(c.usage_ns, 1_500_000);
        assert_eq!(c.user_ns, Some(1_000_000));
        assert_eq!(c.system_ns, Some(500_000));
        assert_eq!(c.throttled_periods, Some(3));
        assert_eq!(c.throttled_ns, Some(7000));
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join(name), text).expect("write");
    }

    #[test]
    fn reads_a_v2_tree_from_fixtures() {
        let t = tempfile::tempdir().expect("tempdir");
        write(t.path(), "cgroup.controllers", "cpu memory pids\n");
        let d = t.path().join("keel/n1/pod1");
        write(
            &d,
            "cpu.stat",
            "usage_usec 2000000\nuser_usec 1500000\nsystem_usec 500000\n",
        );
        write(&d, "memory.current", "4194304\n");
        write(&d, "memory.stat", V2_STAT);
        write(&d, "memory.max", "max\n");
        write(
            &d,
            "memory.events",
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        );
        write(&d, "pids.current", "3\n");
        let h = Hierarchy::detect(t.path());
        assert!(matches!(h, Hierarchy::V2 { .. }));
        let s = h.read("/keel/n1/pod1", &mut Reader::new(), true);
        let cpu = s.cpu.expect("cpu");
        assert_eq!(cpu.usage_ns, 2_000_000_000);
        let m = s.memory.expect("memory");
        assert_eq!(m.usage, 4194304);
        assert_eq!(m.working_set, 4194304 - 262144);
        assert_eq!(m.limit, None);
        assert_eq!(m.failcnt, Some(4));
        assert_eq!(m.oom_kills, Some(1));
        assert_eq!(m.max_usage, None);
        assert_eq!(s.processes, Some(3));
    }

    #[test]
    fn reads_a_v1_tree_from_fixtures() {
        let t = tempfile::tempdir().expect("tempdir");
        let cg = "/keel/n1/pod1";
        let h = Hierarchy::detect(t.path());
        assert!(matches!(h, Hierarchy::V1 { .. }));
        write(&h.dir("cpuacct", cg), "cpuacct.usage", "3000000000\n");
        write(
            &h.dir("cpuacct", cg),
            "cpuacct.stat",
            "user 200\nsystem 100\n",
        );
        write(
            &h.dir("cpu", cg),
            "cpu.stat",
            "nr_periods 5\nnr_throttled 2\nthrottled_time 900\n",
        );
        let m = h.dir("memory", cg);
        write(&m, "memory.usage_in_bytes", "4194304\n");
        write(&m, "memory.stat", V1_STAT);
        write(&m, "memory.limit_in_bytes", "9223372036854771712\n");
        write(&m, "memory.max_usage_in_bytes", "5000000\n");
        write(&m, "memory.failcnt", "0\n");
        write(
            &m,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        write(&m, "cgroup.procs", "42\n43\n");
        write(&h.dir("pids", cg), "pids.current", "2\n");
        let mut r = Reader::new();
        let s = h.read(cg, &mut r, true);
        let cpu = s.cpu.clone().expect("cpu");
        assert_eq!(cpu.usage_ns, 3_000_000_000);
        assert_eq!(cpu.user_ns, Some(2_000_000_000));
        assert_eq!(cpu.system_ns, Some(1_000_000_000));
        assert_eq!(cpu.throttled_ns, Some(900));
        let mem = s.memory.clone().expect("memory");
        assert_eq!(mem.working_set, 4194304 - 524288);
        assert_eq!(mem.limit, None);
        assert_eq!(mem.max_usage, Some(5000000));
        assert_eq!(mem.oom_kills, Some(2));
        assert_eq!(s.processes, Some(2));
        assert_eq!(h.first_pid(cg, &mut r), Some(42));
        let fast = h.read(cg, &mut r, false);
        assert_eq!(fast.processes, None);
        assert_eq!(fast.memory.as_ref().and_then(|m| m.max_usage), None);
        let mut filled = fast.clone();
        fill(&mut filled, &s);
        assert_eq!(filled, s);
        assert!(h.exists(cg));
        assert!(!h.exists("/keel/n1/gone"));
    }

    #[test]
    fn missing_cgroup_reads_as_empty() {
        let t = tempfile::tempdir().expect("tempdir");
        let s = Hierarchy::detect(t.path()).read("/nope", &mut Reader::new(), true);
        assert_eq!(s, CgroupSample::default());
    }
}
