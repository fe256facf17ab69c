//! One housekeeping sample: what the collector measured for the node, each pod and each
//! container at one instant. Every figure is optional: a file the kernel does not offer (a v1
//! controller that is not mounted, `memory.peak` before 5.19) leaves the value out, as the
//! kubelet's summary API does with its pointer fields.

use chrono::{DateTime, Utc};

/// CPU figures of one cgroup (or the node). Times in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cpu {
    pub usage_ns: u64,
    pub user_ns: Option<u64>,
    pub system_ns: Option<u64>,
    /// Rate over the previous sample, in nanocores (1e9 = one CPU busy).
    pub usage_nano_cores: Option<u64>,
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    pub throttled_ns: Option<u64>,
}

/// Memory figures of one cgroup. Bytes, except the counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    pub usage: u64,
    /// usage - inactive_file, floored at 0 (what the kubelet evicts and `kubectl top` shows).
    pub working_set: u64,
    pub rss: Option<u64>,
    pub cache: Option<u64>,
    pub mapped_file: Option<u64>,
    pub swap: Option<u64>,
    pub max_usage: Option<u64>,
    /// None when the cgroup has no limit.
    pub limit: Option<u64>,
    pub failcnt: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    /// OOM kills inside this cgroup (`oom_kill` of memory.events / memory.oom_control).
    pub oom_kills: Option<u64>,
}

/// Everything read from one cgroup in one pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupSample {
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    pub processes: Option<u64>,
}

/// Counters of one network interface (`/proc/<pid>/net/dev`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Disk usage of a folder tree (du-style) or of a filesystem (statvfs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FsUsage {
    pub used_bytes: u64,
    pub inodes_used: u64,
    /// Only for whole filesystems.
    pub capacity_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
    pub inodes: Option<u64>,
    pub inodes_free: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSample {
    pub name: String,
    /// 64 hex characters.
    pub id: String,
    pub image: String,
    /// Absolute cgroup path.
    pub cgroup: String,
    pub start_time: Option<DateTime<Utc>>,
    pub stats: CgroupSample,
    /// Writable layer (the overlay upper dir in the image store).
    pub rootfs: Option<FsUsage>,
    /// This container's CRI log folder.
    pub logs: Option<FsUsage>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodSample {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub cgroup: String,
    pub start_time: Option<DateTime<Utc>>,
    pub stats: CgroupSample,
    /// None for host-network pods and pods with no live process to read them from.
    pub network: Option<Vec<Interface>>,
    /// emptyDir and other volume folders under `pods/<uid>/volumes`.
    pub volumes: Vec<(String, FsUsage)>,
    pub containers: Vec<ContainerSample>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeMemory {
    pub total: u64,
    /// total - working_set (the kubelet's memory.available signal).
    pub available: u64,
    pub usage: u64,
    pub working_set: u64,
    pub rss: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSample {
    pub name: String,
    pub start_time: Option<DateTime<Utc>>,
    pub cores: u64,
    pub cpu: Cpu,
    pub memory: NodeMemory,
    pub network: Vec<Interface>,
    /// The filesystem holding the agent's root dir (nodefs).
    pub fs: Option<FsUsage>,
    /// The filesystem holding the image store (imagefs).
    pub image_fs: Option<FsUsage>,
    pub load: [f64; 3],
    /// `/proc/sys/kernel/pid_max`.
    pub max_pid: Option<u64>,
    /// Tasks on the node (fourth field of `/proc/loadavg`).
    pub cur_proc: Option<u64>,
}

/// One complete housekeeping pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub time: DateTime<Utc>,
    pub node: NodeSample,
    pub pods: Vec<PodSample>,
}
