//! Usage samples from cgroup files (v1 and v2), the figures cAdvisor reports.

use crate::proto::Stats;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Value of `key` in a `key value` file (cpu.stat, memory.stat, memory.events, ...).
pub fn keyed(file: &Path, key: &str) -> u64 {
    super::read(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(key))
                .then(|| it.next().and_then(|v| v.parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

fn num(file: &Path) -> Option<u64> {
    super::read(file).and_then(|s| s.trim().parse().ok())
}

/// `max` or a number.
fn limit(file: &Path) -> Option<u64> {
    num(file)
}

/// Sample a v2 folder.
pub fn v2(dir: &Path) -> Stats {
    let cpu = dir.join("cpu.stat");
    let usage = num(&dir.join("memory.current")).unwrap_or(0);
    let inactive = keyed(&dir.join("memory.stat"), "inactive_file");
    let (mut rd, mut wr) = (0, 0);
    for line in super::read(&dir.join("io.stat"))
        .unwrap_or_default()
        .lines()
    {
        for kv in line.split_whitespace().skip(1) {
            if let Some(v) = kv.strip_prefix("rbytes=") {
                rd += v.parse::<u64>().unwrap_or(0);
            } else if let Some(v) = kv.strip_prefix("wbytes=") {
                wr += v.parse::<u64>().unwrap_or(0);
            }
        }
    }
    Stats {
        cgroup_version: 2,
        cpu_usage_ns: keyed(&cpu, "usage_usec") * 1000,
        cpu_user_ns: keyed(&cpu, "user_usec") * 1000,
        cpu_system_ns: keyed(&cpu, "system_usec") * 1000,
        cpu_periods: keyed(&cpu, "nr_periods"),
        cpu_throttled_periods: keyed(&cpu, "nr_throttled"),
        cpu_throttled_ns: keyed(&cpu, "throttled_usec") * 1000,
        memory_usage_bytes: usage,
        memory_working_set_bytes: usage.saturating_sub(inactive),
        memory_limit_bytes: limit(&dir.join("memory.max")),
        oom_kills: keyed(&dir.join("memory.events"), "oom_kill"),
        pids_current: num(&dir.join("pids.current")).unwrap_or(0),
        pids_limit: limit(&dir.join("pids.max")),
        io_read_bytes: rd,
        io_write_bytes: wr,
    }
}

/// Sample the v1 folders.
pub fn v1(dirs: &BTreeMap<String, PathBuf>) -> Stats {
    let d = |c: &str, f: &str| dirs.get(c).map(|d| d.join(f)).unwrap_or_default();
    let usage = num(&d("memory", "memory.usage_in_bytes")).unwrap_or(0);
    let inactive = keyed(&d("memory", "memory.stat"), "total_inactive_file");
    // v1 reports "no limit" as a huge page-aligned number.
    let mem_limit = num(&d("memory", "memory.limit_in_bytes")).filter(|v| *v < (1 << 62));
    // cpuacct.stat is in USER_HZ ticks (100 per second on Linux).
    let ticks = |k: &str| keyed(&d("cpuacct", "cpuacct.stat"), k) * 10_000_000;
    let (mut rd, mut wr) = (0, 0);
    for line in super::read(&d("blkio", "blkio.throttle.io_service_bytes"))
        .unwrap_or_default()
        .lines()
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 3 {
            match f[1] {
                "Read" => rd += f[2].parse::<u64>().unwrap_or(0),
                "Write" => wr += f[2].parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    Stats {
        cgroup_version: 1,
        cpu_usage_ns: num(&d("cpuacct", "cpuacct.usage")).unwrap_or(0),
        cpu_user_ns: ticks("user"),
        cpu_system_ns: ticks("system"),
        cpu_periods: keyed(&d("cpu", "cpu.stat"), "nr_periods"),
        cpu_throttled_periods: keyed(&d("cpu", "cpu.stat"), "nr_throttled"),
        cpu_throttled_ns: keyed(&d("cpu", "cpu.stat"), "throttled_time"),
        memory_usage_bytes: usage,
        memory_working_set_bytes: usage.saturating_sub(inactive),
        memory_limit_bytes: mem_limit,
        oom_kills: keyed(&d("memory", "memory.oom_control"), "oom_kill"),
        pids_current: num(&d("pids", "pids.current")).unwrap_or(0),
        pids_limit: limit(&d("pids", "pids.max")),
        io_read_bytes: rd,
        io_write_bytes: wr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_sample_from_files() {
        let t = tempfile::tempdir().expect("tempdir");
        let w = |f: &str, s: &str| std::fs::write(t.path().join(f), s).expect("write");
        w(
            "cpu.stat",
            "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_periods 3\nnr_throttled 2\nthrottled_usec 5\n",
        );
        w("memory.current", "1000\n");
        w("memory.stat", "anon 1\ninactive_file 300\n");
        w("memory.max", "max\n");
        w("memory.events", "low 0\noom 1\noom_kill 1\n");
        w("pids.current", "4\n");
        w("pids.max", "10\n");
        w(
            "io.stat",
            "8:0 rbytes=10 wbytes=20 rios=1\n8:16 rbytes=1 wbytes=2\n",
        );
        let s = v2(t.path());
        assert_eq!(s.cpu_usage_ns, 10_000);
        assert_eq!(s.cpu_throttled_periods, 2);
        assert_eq!(s.memory_working_set_bytes, 700);
        assert_eq!(s.memory_limit_bytes, None);
        assert_eq!(s.oom_kills, 1);
        assert_eq!(s.pids_limit, Some(10));
        assert_eq!((s.io_read_bytes, s.io_write_bytes), (11, 22));
    }
}
