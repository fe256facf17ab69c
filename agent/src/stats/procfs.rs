//! Parsers for the procfs files the collector reads (proc(5)): `net/dev` of a process (its
//! network namespace), and the node-wide `stat`, `meminfo`, `vmstat`, `loadavg` and
//! `sys/kernel/pid_max`.

use super::sample::{Cpu, Interface, NodeMemory};

/// USER_HZ (times(2)): `/proc/stat` counts in 1/100 s on every Linux ABI.
const NS_PER_TICK: u64 = 10_000_000;

/// Interfaces cAdvisor leaves out of pod and node network figures: loopback and the host sides
/// of container links.
fn ignored(name: &str) -> bool {
    name == "lo"
        || ["veth", "docker", "nerdctl", "cni", "flannel", "keel"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// `/proc/<pid>/net/dev`: two header lines, then `name: rx(8 fields) tx(8 fields)`. Lines
/// with fewer than 16 counters are skipped, as cAdvisor does.
pub fn net_dev(text: &str, keep_all: bool) -> Vec<Interface> {
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if !keep_all && ignored(name) {
            continue;
        }
        let f: Vec<u64> = rest
            .split_ascii_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() < 16 {
            continue;
        }
        out.push(Interface {
            name: name.to_string(),
            rx_bytes: f[0],
            rx_packets: f[1],
            rx_errors: f[2],
            rx_dropped: f[3],
            tx_bytes: f[8],
            tx_packets: f[9],
            tx_errors: f[10],
            tx_dropped: f[11],
        });
    }
    out
}

/// The aggregate `cpu` line of `/proc/stat`: busy time (everything but idle and iowait), user
/// (user + nice) and system (system + irq + softirq), in nanoseconds. Guest time is already
/// inside user (proc(5)).
pub fn proc_stat_cpu(text: &str) -> Option<Cpu> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if f.len() < 7 {
        return None;
    }
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    let user = get(0) + get(1);
    let system = get(2) + get(5) + get(6);
    let busy = user + system + get(7);
    Some(Cpu {
        usage_ns: busy * NS_PER_TICK,
        user_ns: Some(user * NS_PER_TICK),
        system_ns: Some(system * NS_PER_TICK),
        ..Default::default()
    })
}

/// Number of `cpuN` lines in `/proc/stat`.
pub fn proc_stat_cores(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64
}

/// `/proc/meminfo` (kB) in bytes: usage = total - free; working set = usage - Inactive(file);
/// available = total - working set, the kubelet's `memory.available` signal.
pub fn meminfo(text: &str) -> Option<NodeMemory> {
    let kb = |key: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_ascii_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let total = kb("MemTotal")? * 1024;
    let free = kb("MemFree")? * 1024;
    let inactive_file = kb("Inactive(file)").unwrap_or(0) * 1024;
    let usage = total.saturating_sub(free);
    let working_set = usage.saturating_sub(inactive_file);
    Some(NodeMemory {
        total,
        available: total.saturating_sub(working_set),
        usage,
        working_set,
        rss: kb("AnonPages").map(|v| v * 1024),
        page_faults: None,
        major_page_faults: None,
    })
}

/// `pgfault` and `pgmajfault` of `/proc/vmstat`.
pub fn vmstat_faults(text: &str) -> (Option<u64>, Option<u64>) {
    let get = |k: &str| {
        text.lines().find_map(|l| {
            let (key, v) = l.split_once(' ')?;
            if key == k {
                v.trim().parse().ok()
            } else {
                None
            }
        })
    };
    (get("pgfault"), get("pgmajfault"))
}

/// `/proc/loadavg`: the three load averages and the number of tasks (`running/total`).
pub fn loadavg(text: &str) -> Option<([f64; 3], Option<u64>)> {
    let f: Vec<&str> = text.split_ascii_whitespace().collect();
    let l = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let tasks = f
        .get(3)
        .and_then(|v| v.split_once('/'))
        .and_then(|(_, t)| t.parse().ok());
    Some(([l(0)?, l(1)?, l(2)?], tasks))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 2345678    1234    1    2    0     0          0         3   876543     567    4    5    0     0       0          0
veth12ab:   10      1    0    0    0     0          0         0       20        2    0    0    0     0       0          0
 short: 1 2 3
";

    #[test]
    fn net_dev_fields_and_filtering() {
        let ifs = net_dev(NET_DEV, false);
        assert_eq!(ifs.len(), 1);
        let e = &ifs[0];
        assert_eq!(e.name, "eth0");
        assert_eq!(
            (e.rx_bytes, e.rx_packets, e.rx_errors, e.rx_dropped),
            (2345678, 1234, 1, 2)
        );
        assert_eq!(
            (e.tx_bytes, e.tx_packets, e.tx_errors, e.tx_dropped),
            (876543, 567, 4, 5)
        );
        assert_eq!(net_dev(NET_DEV, true).len(), 3);
    }

    #[test]
    fn proc_stat_busy_time() {
        let text = "cpu  100 20 30 1000 50 5 5 10 0 0\ncpu0 50 10 15 500 25 2 3 5 0 0\ncpu1 1 1 1 1 1 1 1 1 0 0\nintr 1\n";
        let c = proc_stat_cpu(text).expect("cpu line");
        assert_eq!(c.usage_ns, (100 + 20 + 30 + 5 + 5 + 10) * NS_PER_TICK);
        assert_eq!(c.user_ns, Some(120 * NS_PER_TICK));
        assert_eq!(proc_stat_cores(text), 2);
        assert!(proc_stat_cpu("intr 1\n").is_none());
    }

    #[test]
    fn meminfo_working_set_and_available() {
        let text = "MemTotal:        4000 kB\nMemFree:         1000 kB\nMemAvailable:    2500 kB\nInactive(file):   500 kB\nAnonPages:        700 kB\n";
        let m = meminfo(text).expect("meminfo");
        assert_eq!(m.total, 4000 * 1024);
        assert_eq!(m.usage, 3000 * 1024);
        assert_eq!(m.working_set, 2500 * 1024);
        assert_eq!(m.available, 1500 * 1024);
        assert_eq!(m.rss, Some(700 * 1024));
        assert!(meminfo("MemFree: 1 kB\n").is_none());
    }

    #[test]
    fn loadavg_and_vmstat() {
        let (l, tasks) = loadavg("0.50 0.25 1.00 2/345 6789\n").expect("loadavg");
        assert_eq!(l, [0.5, 0.25, 1.0]);
        assert_eq!(tasks, Some(345));
        assert!(loadavg("x").is_none());
        assert_eq!(
            vmstat_faults("pgfault 10\npgmajfault 2\n"),
            (Some(10), Some(2))
        );
    }
}
