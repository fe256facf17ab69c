//! Facts about this machine for the Node object: `nodeInfo` (os-release, kernel, machine and
//! boot IDs), capacity (CPU, memory, root-dir filesystem) and the node's InternalIP, read from a
//! host root (`/` in production, a temp dir in tests) so the parsers are unit tested.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where the host's files are (a seam for tests).
#[derive(Debug, Clone)]
pub struct HostRoot(pub PathBuf);

impl HostRoot {
    pub fn real() -> HostRoot {
        HostRoot(PathBuf::from("/"))
    }
    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.0.join(rel))
            .ok()
            .map(|s| s.trim().to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeInfo {
    pub os_image: String,
    pub kernel_version: String,
    pub machine_id: String,
    pub boot_id: String,
    pub system_uuid: String,
    pub architecture: String,
    pub operating_system: String,
}

/// `PRETTY_NAME` from os-release(5), unquoted.
pub fn pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.trim().strip_prefix("PRETTY_NAME=")?;
        Some(v.trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

/// Go's GOARCH names, which Kubernetes uses (`kubernetes.io/arch`).
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => other,
    }
}

impl HostRoot {
    pub fn node_info(&self) -> NodeInfo {
        let os_image = self
            .read("etc/os-release")
            .or_else(|| self.read("usr/lib/os-release"))
            .and_then(|t| pretty_name(&t))
            .unwrap_or_else(|| "Linux".into());
        let machine_id = self.read("etc/machine-id").unwrap_or_default();
        NodeInfo {
            os_image,
            kernel_version: self.read("proc/sys/kernel/osrelease").unwrap_or_default(),
            boot_id: self
                .read("proc/sys/kernel/random/boot_id")
                .unwrap_or_default(),
            // product_uuid is root-only and absent in some VMs; kubelet then reports empty.
            system_uuid: self
                .read("sys/class/dmi/id/product_uuid")
                .map(|s| s.to_lowercase())
                .unwrap_or_else(|| machine_id.clone()),
            machine_id,
            architecture: go_arch(std::env::consts::ARCH).to_string(),
            operating_system: "linux".into(),
        }
    }

    /// A field of /proc/meminfo in bytes.
    pub fn meminfo(&self, field: &str) -> Option<u64> {
        parse_meminfo(&self.read("proc/meminfo")?, field)
    }

    /// (threads in use, the lower of pid_max and threads-max).
    pub fn pids(&self) -> Option<(u64, u64)> {
        let loadavg = self.read("proc/loadavg")?;
        let used = loadavg
            .split_whitespace()
            .nth(3)?
            .split('/')
            .nth(1)?
            .parse()
            .ok()?;
        let pid_max: u64 = self.read("proc/sys/kernel/pid_max")?.parse().ok()?;
        let threads_max: u64 = self
            .read("proc/sys/kernel/threads-max")
            .and_then(|s| s.parse().ok())
            .unwrap_or(pid_max);
        Some((used, pid_max.min(threads_max)))
    }

    /// Local IPv4 addresses of this network namespace (from /proc/net/fib_trie).
    pub fn local_ipv4(&self) -> Vec<IpAddr> {
        self.read("proc/net/fib_trie")
            .map(|t| parse_fib_trie(&t))
            .unwrap_or_default()
    }
}

pub fn parse_meminfo(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let mut it = rest.split_whitespace();
        let n: u64 = it.next()?.parse().ok()?;
        Some(match it.next() {
            Some("kB") => n * 1024,
            _ => n,
        })
    })
}

/// Addresses marked `/32 host LOCAL` in fib_trie, without loopback, in order, deduplicated.
pub fn parse_fib_trie(text: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut last: Option<IpAddr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("|-- ") {
            last = addr.parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(ip) = last
            && !ip.is_loopback()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// Total, available bytes and total, free inodes of the filesystem holding `path`.
pub fn filesystem(path: &Path) -> Option<(u64, u64, u64, u64)> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        p = p.parent()?.to_path_buf();
    }
    let s = nix::sys::statvfs::statvfs(&p).ok()?;
    let frsize = s.fragment_size() as u64;
    Some((
        s.blocks() as u64 * frsize,
        s.blocks_available() as u64 * frsize,
        s.files() as u64,
        s.files_available() as u64,
    ))
}

/// Logical CPUs this process may use.
pub fn cpus() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
}

/// How the InternalIP was chosen, for the log line.
#[derive(Debug, Clone, PartialEq)]
pub struct IpChoice {
    pub ip: IpAddr,
    pub reason: String,
    /// Other candidate addresses when the choice was automatic.
    pub others: Vec<IpAddr>,
}

/// `--node-ip` if given, else the source address the kernel uses to reach the control plane
/// (a connected UDP socket sends nothing but resolves the route), never blindly the default
/// route: every Vagrant VM has 10.0.2.15 on its NAT interface.
pub async fn choose_ip(
    explicit: Option<IpAddr>,
    server: &str,
    host: &HostRoot,
) -> Option<IpChoice> {
    let locals = host.local_ipv4();
    if let Some(ip) = explicit {
        return Some(IpChoice {
            ip,
            reason: "--node-ip".into(),
            others: Vec::new(),
        });
    }
    let authority = server
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let target = tokio::net::lookup_host(&authority).await.ok()?.next()?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
    sock.connect(target).await.ok()?;
    let ip = sock.local_addr().ok()?.ip();
    let others = locals.into_iter().filter(|a| *a != ip).collect();
    Some(IpChoice {
        ip,
        reason: format!("the address of the interface that routes to the control plane {target}"),
        others,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB: &str = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 10.0.2.0/24 2 0 2\n        |-- 10.0.2.15\n           /32 host LOCAL\n     +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.1\n           /32 host LOCAL\n     |-- 192.168.56.11\n        /32 host LOCAL\n     |-- 192.168.56.255\n        /32 link BROADCAST\nLocal:\n     |-- 192.168.56.11\n        /32 host LOCAL\n";

    #[test]
    fn local_addresses_from_fib_trie() {
        let ips = parse_fib_trie(FIB);
        let want: Vec<IpAddr> = vec![
            "10.0.2.15".parse().expect("ip"),
            "192.168.56.11".parse().expect("ip"),
        ];
        assert_eq!(ips, want);
    }

    #[test]
    fn os_release_and_meminfo() {
        let os = "NAME=\"Ubuntu\"\nPRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nID=ubuntu\n";
        assert_eq!(pretty_name(os).as_deref(), Some("Ubuntu 22.04.4 LTS"));
        let mi = "MemTotal:        4030000 kB\nMemAvailable:    1000 kB\n";
        assert_eq!(parse_meminfo(mi, "MemTotal"), Some(4030000 * 1024));
        assert_eq!(parse_meminfo(mi, "MemAvailable"), Some(1000 * 1024));
        assert_eq!(parse_meminfo(mi, "Mem"), None);
    }

    #[test]
    fn node_info_from_a_fake_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let put = |rel: &str, s: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, s).expect("write");
        };
        put(
            "etc/os-release",
            "PRETTY_NAME='Debian GNU/Linux 12 (bookworm)'\n",
        );
        put("etc/machine-id", "abc\n");
        put("proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
        put("proc/sys/kernel/random/boot_id", "b-1\n");
        put("proc/loadavg", "0.1 0.2 0.3 2/345 999\n");
        put("proc/sys/kernel/pid_max", "4194304\n");
        put("proc/sys/kernel/threads-max", "1000\n");
        let h = HostRoot(dir.path().to_path_buf());
        let i = h.node_info();
        assert_eq!(i.os_image, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(i.kernel_version, "6.1.0-18-amd64");
        assert_eq!(i.system_uuid, "abc", "falls back to the machine id");
        assert_eq!(h.pids(), Some((345, 1000)));
    }

    #[tokio::test]
    async fn explicit_ip_wins() {
        let ip: IpAddr = "192.168.56.11".parse().expect("ip");
        let c = choose_ip(Some(ip), "https://127.0.0.1:6443", &HostRoot::real())
            .await
            .expect("choice");
        assert_eq!(c.ip, ip);
        let auto = choose_ip(None, "https://127.0.0.1:6443", &HostRoot::real())
            .await
            .expect("choice");
        assert!(auto.ip.is_loopback());
    }
}
