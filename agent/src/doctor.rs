//! `keel-agent doctor`: checks this host for what the agent needs and prints each problem with
//! the exact fix. Reads files under a host root (a seam for tests); the only program it runs
//! is `iptables --version`, synchronously, before any async runtime exists.

use crate::node::host::{self, HostRoot};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub level: Level,
    pub detail: String,
    pub fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        level: Level::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn bad(
    name: &'static str,
    level: Level,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        name,
        level,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn read(root: &HostRoot, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.0.join(rel))
        .ok()
        .map(|s| s.trim().to_string())
}

const GRUB: &str = "(in GRUB_CMDLINE_LINUX of /etc/default/grub, then `update-grub` and reboot; on a Raspberry Pi append to /boot/firmware/cmdline.txt)";

pub fn cgroups(root: &HostRoot) -> Vec<Check> {
    let needed = ["cpu", "memory", "pids"];
    if let Some(ctrl) = read(root, "sys/fs/cgroup/cgroup.controllers") {
        let have: Vec<&str> = ctrl.split_whitespace().collect();
        let missing: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|c| !have.contains(c))
            .collect();
        return vec![if missing.is_empty() {
            ok(
                "cgroups",
                format!("cgroup v2 (unified) with {}", have.join(" ")),
            )
        } else {
            bad(
                "cgroups",
                Level::Fail,
                format!("cgroup v2 lacks the {} controller(s)", missing.join(", ")),
                format!(
                    "add `cgroup_enable=memory cgroup_memory=1` to the kernel command line {GRUB}"
                ),
            )
        }];
    }
    // cgroup v1 or hybrid: /proc/cgroups lists `name hierarchy num_cgroups enabled`.
    let table = read(root, "proc/cgroups").unwrap_or_default();
    let enabled = |c: &str| {
        table.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 4 && f[0] == c && f[3] == "1"
        })
    };
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|c| !enabled(c) || !root.0.join("sys/fs/cgroup").join(c).exists())
        .collect();
    let mut out = vec![if missing.is_empty() {
        ok(
            "cgroups",
            "cgroup v1 controllers cpu, memory and pids are mounted",
        )
    } else {
        bad(
            "cgroups",
            Level::Fail,
            format!(
                "the {} cgroup controller(s) are not available",
                missing.join(", ")
            ),
            format!(
                "add `cgroup_enable=memory cgroup_memory=1 systemd.unified_cgroup_hierarchy=1` to the kernel command line {GRUB}"
            ),
        )
    }];
    if root.0.join("sys/fs/cgroup/unified").exists() {
        out.push(bad("cgroup layout", Level::Warn, "hybrid layout: v1 controllers plus a cgroup2 mount at /sys/fs/cgroup/unified; Keel uses the v1 controllers",
            format!("for the unified cgroup v2 layout add `systemd.unified_cgroup_hierarchy=1` to the kernel command line {GRUB}")));
    }
    out
}

pub fn overlay(root: &HostRoot) -> Check {
    let fs = read(root, "proc/filesystems").unwrap_or_default();
    if fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        ok("overlayfs", "the overlay filesystem is available")
    } else {
        bad(
            "overlayfs",
            Level::Fail,
            "the overlay filesystem is not loaded",
            "modprobe overlay && echo overlay >> /etc/modules-load.d/keel.conf",
        )
    }
}

pub fn bridge_netfilter(root: &HostRoot) -> Check {
    match read(root, "proc/sys/net/bridge/bridge-nf-call-iptables").as_deref() {
        None => bad(
            "br_netfilter",
            Level::Fail,
            "the br_netfilter module is not loaded, so bridged pod traffic bypasses iptables (Service rules)",
            "modprobe br_netfilter && echo br_netfilter >> /etc/modules-load.d/keel.conf",
        ),
        Some("1") => ok("br_netfilter", "net.bridge.bridge-nf-call-iptables = 1"),
        Some(v) => bad(
            "br_netfilter",
            Level::Fail,
            format!("net.bridge.bridge-nf-call-iptables = {v}"),
            "sysctl -w net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 && printf 'net.bridge.bridge-nf-call-iptables = 1\\nnet.bridge.bridge-nf-call-ip6tables = 1\\n' > /etc/sysctl.d/99-keel.conf",
        ),
    }
}

pub fn ip_forward(root: &HostRoot) -> Check {
    match read(root, "proc/sys/net/ipv4/ip_forward").as_deref() {
        Some("1") => ok("ip_forward", "net.ipv4.ip_forward = 1"),
        v => bad(
            "ip_forward",
            Level::Fail,
            format!("net.ipv4.ip_forward = {}", v.unwrap_or("unknown")),
            "sysctl -w net.ipv4.ip_forward=1 && echo 'net.ipv4.ip_forward = 1' >> /etc/sysctl.d/99-keel.conf",
        ),
    }
}

/// `iptables --version` prints `iptables v1.8.9 (nf_tables)` or `(legacy)`.
pub fn iptables_from(version: Option<&str>) -> Check {
    match version {
        None => bad(
            "iptables",
            Level::Fail,
            "iptables is not installed",
            "apt-get install -y iptables",
        ),
        Some(v) if v.contains("nf_tables") => {
            ok("iptables", format!("{}: the nf_tables backend", v.trim()))
        }
        Some(v) => bad(
            "iptables",
            Level::Warn,
            format!("{} uses the legacy backend", v.trim()),
            "update-alternatives --set iptables /usr/sbin/iptables-nft && update-alternatives --set ip6tables /usr/sbin/ip6tables-nft",
        ),
    }
}

fn iptables() -> Check {
    let out = std::process::Command::new("iptables")
        .arg("--version")
        .output()
        .ok();
    let text = out
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    iptables_from(text.as_deref())
}

pub fn user_namespaces(root: &HostRoot) -> Check {
    match read(root, "proc/sys/user/max_user_namespaces").and_then(|v| v.parse::<u64>().ok()) {
        Some(0) => bad(
            "user namespaces",
            Level::Warn,
            "user.max_user_namespaces = 0 (pods with hostUsers: false cannot run)",
            "sysctl -w user.max_user_namespaces=15000 && echo 'user.max_user_namespaces = 15000' >> /etc/sysctl.d/99-keel.conf",
        ),
        Some(n) => ok("user namespaces", format!("user.max_user_namespaces = {n}")),
        None => bad(
            "user namespaces",
            Level::Warn,
            "the kernel has no user namespaces",
            "use a kernel built with CONFIG_USER_NS=y",
        ),
    }
}

pub fn swap(root: &HostRoot) -> Check {
    let swaps = read(root, "proc/swaps").unwrap_or_default();
    let active: Vec<&str> = swaps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if active.is_empty() {
        ok("swap", "no swap is active")
    } else {
        bad(
            "swap",
            Level::Fail,
            format!(
                "swap is on ({}): memory limits and eviction become unreliable",
                active.join(", ")
            ),
            "swapoff -a && sed -i '/\\sswap\\s/s/^/#/' /etc/fstab",
        )
    }
}

pub fn disk(root_dir: &Path) -> Check {
    match host::filesystem(root_dir) {
        None => bad(
            "free disk",
            Level::Warn,
            format!("cannot stat the filesystem of {}", root_dir.display()),
            format!("mkdir -p {}", root_dir.display()),
        ),
        Some((total, avail, _, _)) => {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            let detail = format!(
                "{:.1} GiB of {:.1} GiB free under {}",
                gib(avail),
                gib(total),
                root_dir.display()
            );
            if avail < 2 << 30 || avail * 100 < total * crate::node::status::EVICTION_NODEFS_PERCENT
            {
                bad(
                    "free disk",
                    Level::Fail,
                    format!("{detail}: below 2 GiB or 10%, the node reports DiskPressure"),
                    format!(
                        "free space on that filesystem (`du -xsh {}/* | sort -h`), or pass --root-dir on a larger one",
                        root_dir.display()
                    ),
                )
            } else {
                ok("free disk", detail)
            }
        }
    }
}

pub fn clock(root: &HostRoot) -> Check {
    // systemd-timesyncd touches this file once the clock is synchronised; chrony and ntpd
    // leave the kernel's adjtimex status, which is readable only by a syscall.
    if root.0.join("run/systemd/timesync/synchronized").exists() {
        ok("clock", "synchronised by systemd-timesyncd")
    } else if root.0.join("run/chrony").exists() || root.0.join("run/chronyd.pid").exists() {
        ok("clock", "chronyd is running")
    } else {
        bad(
            "clock",
            Level::Warn,
            "no time synchronisation was found; certificates fail when clocks drift apart",
            "timedatectl set-ntp true (or apt-get install -y chrony)",
        )
    }
}

pub fn all(root: &HostRoot, root_dir: &Path) -> Vec<Check> {
    let mut v = cgroups(root);
    v.extend([
        overlay(root),
        bridge_netfilter(root),
        ip_forward(root),
        iptables(),
        user_namespaces(root),
        swap(root),
        disk(root_dir),
        clock(root),
    ]);
    v
}

/// The report; returns true when nothing failed.
pub fn report(checks: &[Check], out: &mut impl std::io::Write) -> bool {
    for c in checks {
        let tag = match c.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        let _ = writeln!(out, "{tag} {}: {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "     fix: {fix}");
        }
    }
    let failed = checks.iter().filter(|c| c.level == Level::Fail).count();
    let warned = checks.iter().filter(|c| c.level == Level::Warn).count();
    let _ = writeln!(out, "{failed} problem(s), {warned} warning(s)");
    failed == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(files: &[(&str, &str)]) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rel, body) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, body).expect("write");
        }
        let r = HostRoot(dir.path().to_path_buf());
        (dir, r)
    }

    #[test]
    fn missing_memory_cgroup_names_the_kernel_command_line() {
        let (_d, r) = fake(&[("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io pids")]);
        let c = &cgroups(&r)[0];
        assert_eq!(c.level, Level::Fail);
        assert!(
            c.fix
                .as_deref()
                .unwrap_or_default()
                .contains("cgroup_enable=memory")
        );
        let (_d, r) = fake(&[(
            "sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory pids",
        )]);
        assert_eq!(cgroups(&r)[0].level, Level::Ok);
    }

    #[test]
    fn sysctls_and_modules() {
        let (_d, r) = fake(&[
            ("proc/sys/net/ipv4/ip_forward", "0\n"),
            ("proc/filesystems", "nodev\ttmpfs\nnodev\toverlay\n"),
            ("proc/swaps", "Filename Type\n/swapfile file 1 0 -2\n"),
        ]);
        assert_eq!(ip_forward(&r).level, Level::Fail);
        assert!(
            bridge_netfilter(&r)
                .fix
                .as_deref()
                .unwrap_or_default()
                .contains("modprobe br_netfilter")
        );
        assert_eq!(overlay(&r).level, Level::Ok);
        assert!(swap(&r).detail.contains("/swapfile"));
        assert_eq!(
            iptables_from(Some("iptables v1.8.9 (legacy)")).level,
            Level::Warn
        );
        assert_eq!(
            iptables_from(Some("iptables v1.8.9 (nf_tables)")).level,
            Level::Ok
        );
        let mut out = Vec::new();
        assert!(!report(&[ip_forward(&r)], &mut out));
        assert!(String::from_utf8_lossy(&out).contains("fix: sysctl -w net.ipv4.ip_forward=1"));
    }
}
