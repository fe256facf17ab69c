//! securityContext -> OCI: the pod and container contexts merged as kubelet does
//! (`determineEffectiveSecurityContext`), the user and groups, kubelet's runAsNonRoot check,
//! capabilities over containerd's default set, no_new_privs, sysctls, masked paths and the
//! RuntimeDefault seccomp profile.
//!
//! The RuntimeDefault profile here is a deny list: every syscall is allowed except those
//! containerd's (and Docker's) default profile refuses, with the same capability-gated
//! exceptions (e.g. `mount` is allowed only with CAP_SYS_ADMIN). containerd's real profile is
//! an allow list of ~350 syscalls; the deny list is the documented simplification.

use crate::error::{ConfigError, Result};
use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SecurityContext};
use serde_json::{Value, json};

/// containerd's default capability set for unprivileged containers.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability by number (linux/capability.h).
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The effective security settings of one container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effective {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: bool,
    pub supplemental_groups: Vec<i64>,
    pub privileged: bool,
    pub read_only_root: bool,
    pub no_new_privs: bool,
    pub add: Vec<String>,
    pub drop: Vec<String>,
    /// `RuntimeDefault` (also when unset), `Unconfined` or `Localhost`.
    pub seccomp: String,
}

/// Merge the pod's and the container's contexts (container fields win).
pub fn effective(pod: &Pod, c: &Container) -> Effective {
    let none_p = PodSecurityContext::default();
    let none_c = SecurityContext::default();
    let p = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .unwrap_or(&none_p);
    let s = c.security_context.as_ref().unwrap_or(&none_c);
    let privileged = s.privileged == Some(true);
    let mut groups: Vec<i64> = p.supplemental_groups.clone().unwrap_or_default();
    groups.extend(p.fs_group);
    let caps = s.capabilities.as_ref();
    Effective {
        run_as_user: s.run_as_user.or(p.run_as_user),
        run_as_group: s.run_as_group.or(p.run_as_group),
        run_as_non_root: s.run_as_non_root.or(p.run_as_non_root) == Some(true),
        supplemental_groups: groups,
        privileged,
        read_only_root: s.read_only_root_filesystem == Some(true),
        no_new_privs: !privileged && s.allow_privilege_escalation == Some(false),
        add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        seccomp: s
            .seccomp_profile
            .as_ref()
            .or(p.seccomp_profile.as_ref())
            .map(|p| p.type_.clone())
            .unwrap_or_else(|| "RuntimeDefault".into()),
    }
}

fn check_id(v: Option<i64>, field: &str) -> Result<Option<u32>> {
    v.map(|id| {
        u32::try_from(id)
            .ok()
            .filter(|id| *id <= i32::MAX as u32)
            .ok_or_else(|| {
                ConfigError::invalid(field, format!("{id} is not a valid id (0..2147483647)"))
            })
    })
    .transpose()
}

/// The `user[:group]` to ask keel-image for, or `None` for the image's user.
pub fn user_override(e: &Effective, image_user: &str) -> Result<Option<String>> {
    let uid = check_id(e.run_as_user, "securityContext.runAsUser")?;
    let gid = check_id(e.run_as_group, "securityContext.runAsGroup")?;
    for (i, g) in e.supplemental_groups.iter().enumerate() {
        check_id(
            Some(*g),
            &format!("securityContext.supplementalGroups[{i}]"),
        )?;
    }
    Ok(match (uid, gid) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(g)) => {
            let user = image_user.split(':').next().unwrap_or("");
            Some(format!("{}:{g}", if user.is_empty() { "0" } else { user }))
        }
        (None, None) => None,
    })
}

/// kubelet's `verifyRunAsNonRoot` against the image's user (`""` = root).
pub fn verify_non_root(e: &Effective, image_user: &str, pod: &Pod, c: &Container) -> Result<()> {
    if !e.run_as_non_root {
        return Ok(());
    }
    let m = &pod.metadata;
    let who = format!(
        "(pod: \"{}_{}({})\", container: {})",
        m.name.as_deref().unwrap_or(""),
        m.namespace.as_deref().unwrap_or("default"),
        m.uid.as_deref().unwrap_or(""),
        c.name
    );
    if let Some(u) = e.run_as_user {
        if u == 0 {
            return Err(ConfigError::NonRoot(format!(
                "container's runAsUser breaks non-root policy {who}"
            )));
        }
        return Ok(());
    }
    let user = image_user.split(':').next().unwrap_or("");
    match user.parse::<u32>() {
        _ if user.is_empty() => Err(ConfigError::NonRoot(format!(
            "container has runAsNonRoot and image will run as root {who}"
        ))),
        Ok(0) => Err(ConfigError::NonRoot(format!(
            "container has runAsNonRoot and image will run as root {who}"
        ))),
        Ok(_) => Ok(()),
        Err(_) => Err(ConfigError::NonRoot(format!(
            "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root {who}"
        ))),
    }
}

/// This process's capability bounding set, by name (from `/proc/self/status`).
pub fn host_bounding() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bits = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1u64 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

fn cap_name(raw: &str, field: &str) -> Result<String> {
    let up = raw.trim().to_ascii_uppercase();
    let name = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if ALL_CAPS.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(ConfigError::invalid(
            field,
            format!("{raw:?} is not a Linux capability"),
        ))
    }
}

/// The capability set: containerd's defaults (all of `bounding` when privileged or for
/// `ALL`), then `add`, then `drop`.
pub fn capabilities(e: &Effective, bounding: &[String]) -> Result<Vec<String>> {
    let all = |s: &String| s.eq_ignore_ascii_case("ALL");
    let mut caps: Vec<String> = if e.privileged || e.add.iter().any(all) {
        bounding.to_vec()
    } else if e.drop.iter().any(all) {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .iter()
            .map(|s| s.to_string())
            .filter(|c| bounding.contains(c))
            .collect()
    };
    if e.privileged {
        return Ok(caps);
    }
    for (i, a) in e.add.iter().enumerate().filter(|(_, a)| !all(a)) {
        let field = format!("securityContext.capabilities.add[{i}]");
        let n = cap_name(a, &field)?;
        if !bounding.contains(&n) {
            return Err(ConfigError::invalid(
                field,
                format!(
                    "{n} is not in this node's capability bounding set, so no container here can hold it"
                ),
            ));
        }
        if !caps.contains(&n) {
            caps.push(n);
        }
    }
    for (i, d) in e.drop.iter().enumerate().filter(|(_, d)| !all(d)) {
        let n = cap_name(d, &format!("securityContext.capabilities.drop[{i}]"))?;
        caps.retain(|c| *c != n);
    }
    Ok(caps)
}

/// `linux.sysctl` from the pod's sysctls: only namespaced ones (kernel.shm*, kernel.msg*,
/// kernel.sem, fs.mqueue.*, net.* without hostNetwork), as the kernel would refuse the rest.
pub fn sysctls(pod: &Pod) -> Result<serde_json::Map<String, Value>> {
    let spec = pod.spec.as_ref();
    let host_net = spec.and_then(|s| s.host_network) == Some(true);
    let host_ipc = spec.and_then(|s| s.host_ipc) == Some(true);
    let mut out = serde_json::Map::new();
    let list = spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|p| p.sysctls.as_ref());
    for (i, s) in list.into_iter().flatten().enumerate() {
        let field = format!("spec.securityContext.sysctls[{i}]");
        let name = s.name.replace('/', ".");
        let ipc = name.starts_with("kernel.shm")
            || name.starts_with("kernel.msg")
            || name == "kernel.sem"
            || name.starts_with("fs.mqueue.");
        let net = name.starts_with("net.");
        if !(ipc || net) {
            return Err(ConfigError::invalid(
                field,
                format!(
                    "{:?} is not a namespaced sysctl; set it on the node instead",
                    s.name
                ),
            ));
        }
        if (net && host_net) || (ipc && host_ipc) {
            return Err(ConfigError::invalid(
                field,
                format!(
                    "{:?} would change the node's own namespace (hostNetwork/hostIPC pod)",
                    s.name
                ),
            ));
        }
        out.insert(name, Value::String(s.value.clone()));
    }
    Ok(out)
}

/// containerd's masked and read-only paths (none for privileged containers).
pub fn masked_and_readonly(privileged: bool) -> (Vec<&'static str>, Vec<&'static str>) {
    if privileged {
        return (Vec::new(), Vec::new());
    }
    (
        vec![
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap",
        ],
        vec![
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ],
    )
}

/// Syscalls the default profile refuses, and the capability that lifts the refusal.
const DENIED: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "add_key",
            "keyctl",
            "request_key",
            "kexec_file_load",
            "kexec_load",
            "nfsservctl",
            "create_module",
            "get_kernel_syms",
            "query_module",
            "uselib",
            "userfaultfd",
            "ustat",
            "sysfs",
            "_sysctl",
            "vm86",
            "vm86old",
        ],
    ),
    (
        "CAP_SYS_ADMIN",
        &[
            "mount",
            "umount",
            "umount2",
            "unshare",
            "setns",
            "pivot_root",
            "name_to_handle_at",
            "quotactl",
            "swapon",
            "swapoff",
            "fanotify_init",
            "lookup_dcookie",
            "bpf",
            "perf_event_open",
            "setdomainname",
            "sethostname",
            "fsopen",
            "fsmount",
            "fsconfig",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    (
        "CAP_SYS_MODULE",
        &["init_module", "finit_module", "delete_module"],
    ),
    (
        "CAP_SYS_PTRACE",
        &["ptrace", "process_vm_readv", "process_vm_writev", "kcmp"],
    ),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_adjtime"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_NICE",
        &["mbind", "set_mempolicy", "move_pages", "get_mempolicy"],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
];

/// The RuntimeDefault profile in OCI form for a container holding `caps`.
pub fn runtime_default_seccomp(caps: &[String]) -> Value {
    let mut names: Vec<&str> = Vec::new();
    for (cap, calls) in DENIED {
        if cap.is_empty() || !caps.iter().any(|c| c == cap) {
            names.extend_from_slice(calls);
        }
    }
    names.sort_unstable();
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": libc_eperm()}],
    })
}

fn libc_eperm() -> u32 {
    nix::errno::Errno::EPERM as u32
}

/// `linux.seccomp` for the container, or `None` for unconfined.
pub fn seccomp(e: &Effective, caps: &[String]) -> Result<Option<Value>> {
    if e.privileged {
        return Ok(None);
    }
    match e.seccomp.as_str() {
        "RuntimeDefault" => Ok(Some(runtime_default_seccomp(caps))),
        "Unconfined" => Ok(None),
        "Localhost" => Err(ConfigError::Unsupported {
            kind: "securityContext.seccompProfile.type Localhost".into(),
        }),
        other => Err(ConfigError::invalid(
            "securityContext.seccompProfile.type",
            format!("{other:?} is not RuntimeDefault, Unconfined or Localhost"),
        )),
    }
}
