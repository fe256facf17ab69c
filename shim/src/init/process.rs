//! The last steps before `execve`: rlimits, user and groups, capabilities, no_new_privs,
//! seccomp, PATH lookup (runtime-spec `config.md#process`; capabilities(7), seccomp(2)).
//! Shared by the container's init and by `exec`.

use crate::error::{Error, Result};
use caps::{CapSet, CapsHashSet};
use oci_spec::runtime::{LinuxCapabilities, PosixRlimitType, Process};
use seccompiler::BpfProgram;
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// The five capability sets (runtime-spec `process.capabilities`).
#[derive(Debug, Clone, Default)]
pub struct CapSets {
    /// Bounding set.
    pub bounding: CapsHashSet,
    /// Effective set.
    pub effective: CapsHashSet,
    /// Permitted set.
    pub permitted: CapsHashSet,
    /// Inheritable set.
    pub inheritable: CapsHashSet,
    /// Ambient set.
    pub ambient: CapsHashSet,
}

/// Everything needed to turn the calling process into the container's process.
#[derive(Debug, Clone)]
pub struct ProcessPlan {
    /// argv.
    pub args: Vec<String>,
    /// envp.
    pub env: Vec<String>,
    /// Working directory (inside the container).
    pub cwd: PathBuf,
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// umask.
    pub umask: u32,
    /// Capability sets.
    pub caps: CapSets,
    /// `noNewPrivileges`.
    pub no_new_privs: bool,
    /// `(resource, soft, hard)`.
    pub rlimits: Vec<(nix::sys::resource::Resource, u64, u64)>,
    /// `oomScoreAdj`.
    pub oom_score_adj: Option<i32>,
    /// Compiled seccomp filters.
    pub seccomp: Vec<BpfProgram>,
}

fn cap_set(
    file: &Path,
    field: &str,
    set: Option<&oci_spec::runtime::Capabilities>,
    host: &CapsHashSet,
) -> Result<CapsHashSet> {
    let mut out = CapsHashSet::new();
    for c in set.into_iter().flatten() {
        let name = serde_json::to_value(c)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let cap: caps::Capability = name
            .parse()
            .map_err(|_| Error::config(file, field, format!("unknown capability {name}")))?;
        if !host.contains(&cap) {
            return Err(Error::config(
                file,
                field,
                format!(
                    "{name} is not in this host's capability bounding set, so no process started here can hold it; remove it from the config"
                ),
            ));
        }
        out.insert(cap);
    }
    Ok(out)
}

fn rlimit_resource(t: PosixRlimitType) -> nix::sys::resource::Resource {
    use nix::sys::resource::Resource as R;
    match t {
        PosixRlimitType::RlimitCpu => R::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => R::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => R::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => R::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => R::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => R::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => R::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => R::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => R::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => R::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => R::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => R::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => R::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => R::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => R::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => R::RLIMIT_RTTIME,
    }
}

impl ProcessPlan {
    /// Build from a config `process`; `file` names the JSON for error messages.
    pub fn from_spec(file: &Path, p: &Process, seccomp: Vec<BpfProgram>) -> Result<ProcessPlan> {
        let host = caps::read(None, CapSet::Bounding).map_err(|e| Error::Io {
            op: "read bounding set",
            path: "self".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let c: Option<&LinuxCapabilities> = p.capabilities().as_ref();
        let caps = match c {
            None => CapSets::default(),
            Some(c) => CapSets {
                bounding: cap_set(
                    file,
                    "process.capabilities.bounding",
                    c.bounding().as_ref(),
                    &host,
                )?,
                effective: cap_set(
                    file,
                    "process.capabilities.effective",
                    c.effective().as_ref(),
                    &host,
                )?,
                permitted: cap_set(
                    file,
                    "process.capabilities.permitted",
                    c.permitted().as_ref(),
                    &host,
                )?,
                inheritable: cap_set(
                    file,
                    "process.capabilities.inheritable",
                    c.inheritable().as_ref(),
                    &host,
                )?,
                ambient: cap_set(
                    file,
                    "process.capabilities.ambient",
                    c.ambient().as_ref(),
                    &host,
                )?,
            },
        };
        let rlimits = p
            .rlimits()
            .iter()
            .flatten()
            .map(|r| (rlimit_resource(r.typ()), r.soft(), r.hard()))
            .collect();
        Ok(ProcessPlan {
            args: p.args().clone().unwrap_or_default(),
            env: p.env().clone().unwrap_or_default(),
            cwd: p.cwd().clone(),
            uid: p.user().uid(),
            gid: p.user().gid(),
            additional_gids: p.user().additional_gids().clone().unwrap_or_default(),
            umask: p.user().umask().unwrap_or(0o022),
            caps,
            no_new_privs: p.no_new_privileges().unwrap_or(false),
            rlimits,
            oom_score_adj: p.oom_score_adj(),
            seccomp,
        })
    }
}

/// Apply rlimits and oom_score_adj (while still privileged).
pub fn apply_limits(plan: &ProcessPlan) -> Result<()> {
    for (res, soft, hard) in &plan.rlimits {
        nix::sys::resource::setrlimit(*res, *soft, *hard)
            .map_err(|e| Error::nix("setrlimit", format!("{res:?}"), e))?;
    }
    if let Some(adj) = plan.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| Error::io("write", "/proc/self/oom_score_adj", e))?;
    }
    Ok(())
}

fn caps_err(what: &'static str, e: caps::errors::CapsError) -> Error {
    Error::Io {
        op: what,
        path: "capabilities".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Resolve `args[0]` like execvp, using the container's `PATH` (or the usual default).
pub fn lookup(args0: &str, env: &[String]) -> Result<PathBuf> {
    if args0.contains('/') {
        return Ok(PathBuf::from(args0));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(args0);
        if nix::unistd::access(&cand, nix::unistd::AccessFlags::X_OK).is_ok() && cand.is_file() {
            return Ok(cand);
        }
    }
    Err(Error::Init(format!(
        "executable {args0:?} not found in PATH {path}"
    )))
}

fn cstrings(v: &[String], what: &str) -> Result<Vec<CString>> {
    v.iter()
        .map(|s| {
            CString::new(s.as_bytes())
                .map_err(|_| Error::Usage(format!("{what} entry {s:?} contains a NUL byte")))
        })
        .collect()
}

/// Drop privileges and exec. Only returns on error.
pub fn finish_and_exec(plan: &ProcessPlan) -> Result<()> {
    use nix::unistd::{Gid, Uid};
    let path = lookup(&plan.args[0], &plan.env)?;
    let argv = cstrings(&plan.args, "process.args")?;
    let envp = cstrings(&plan.env, "process.env")?;
    let cpath = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Usage("process.args[0] contains a NUL byte".into()))?;
    nix::unistd::chdir(&plan.cwd)
        .map_err(|e| Error::nix("chdir to process.cwd", plan.cwd.display(), e))?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(plan.umask));
    if !plan.no_new_privs && !plan.seccomp.is_empty() {
        // Without no_new_privs the filter must go in while CAP_SYS_ADMIN is still held.
        crate::seccomp::install(&plan.seccomp)?;
    }
    for cap in caps::all() {
        if !plan.caps.bounding.contains(&cap) {
            match caps::drop(None, CapSet::Bounding, cap) {
                Ok(()) => {}
                // Capabilities the running kernel does not know.
                Err(_) if !caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) => {}
                Err(e) => return Err(caps_err("drop bounding capability", e)),
            }
        }
    }
    nix::sys::prctl::set_keepcaps(true).map_err(|e| Error::nix("prctl", "PR_SET_KEEPCAPS", e))?;
    let groups: Vec<Gid> = plan
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups)
        .map_err(|e| Error::nix("setgroups", "process.user.additionalGids", e))?;
    nix::unistd::setresgid(
        Gid::from_raw(plan.gid),
        Gid::from_raw(plan.gid),
        Gid::from_raw(plan.gid),
    )
    .map_err(|e| Error::nix("setgid", plan.gid, e))?;
    nix::unistd::setresuid(
        Uid::from_raw(plan.uid),
        Uid::from_raw(plan.uid),
        Uid::from_raw(plan.uid),
    )
    .map_err(|e| Error::nix("setuid", plan.uid, e))?;
    nix::sys::prctl::set_keepcaps(false).map_err(|e| Error::nix("prctl", "PR_SET_KEEPCAPS", e))?;
    // Shrink effective and inheritable first: capset(2) refuses a permitted set that no
    // longer covers the current effective set.
    caps::set(None, CapSet::Effective, &plan.caps.effective)
        .map_err(|e| caps_err("set effective capabilities", e))?;
    caps::set(None, CapSet::Inheritable, &plan.caps.inheritable)
        .map_err(|e| caps_err("set inheritable capabilities", e))?;
    caps::set(None, CapSet::Permitted, &plan.caps.permitted)
        .map_err(|e| caps_err("set permitted capabilities", e))?;
    // An ambient capability must also be permitted and inheritable (capabilities(7)); like
    // runc, ambient entries that are not are skipped rather than failing the container.
    for cap in &plan.caps.ambient {
        if plan.caps.permitted.contains(cap) && plan.caps.inheritable.contains(cap) {
            caps::raise(None, CapSet::Ambient, *cap)
                .map_err(|e| caps_err("raise ambient capability", e))?;
        }
    }
    if plan.no_new_privs {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| Error::nix("prctl", "PR_SET_NO_NEW_PRIVS", e))?;
        crate::seccomp::install(&plan.seccomp)?;
    }
    let e = nix::unistd::execve(&cpath, &argv, &envp).unwrap_err();
    Err(Error::nix("exec", path.display(), e))
}
