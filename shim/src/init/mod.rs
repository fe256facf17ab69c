//! The container's init process: what runs between `clone` and `execve`.
//!
//! Sequence (the supervisor drives it through two pipes):
//! 1. wait for "go" (the supervisor has written uid/gid maps and put us in the cgroup);
//! 2. join namespaces given by path, unshare the cgroup namespace (after joining the cgroup,
//!    so that its root is the container's cgroup), rlimits, rootfs + pivot_root, hostname,
//!    sysctls, console;
//! 3. report "ready" on the status pipe: `create` is done, no user code has run;
//! 4. wait for "start", drop privileges, install seccomp, exec. The status pipe is
//!    close-on-exec, so the supervisor sees EOF exactly when the exec succeeded, or an
//!    `E<message>` line when anything failed.

pub mod process;
pub mod rootfs;

use crate::error::{Error, Result};
use crate::sys;
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxDevice, Mount};
pub use process::ProcessPlan;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// Everything the init process needs, computed by `create` before anything is forked.
#[derive(Debug, Clone)]
pub struct InitPlan {
    /// Absolute rootfs.
    pub rootfs: PathBuf,
    /// Absolute bundle (relative bind sources are resolved against it).
    pub bundle: PathBuf,
    /// `mounts`.
    pub mounts: Vec<Mount>,
    /// `linux.rootfsPropagation`.
    pub rootfs_propagation: Option<String>,
    /// `root.readonly`.
    pub readonly_rootfs: bool,
    /// `linux.devices`.
    pub devices: Vec<LinuxDevice>,
    /// `linux.maskedPaths`.
    pub masked_paths: Vec<String>,
    /// `linux.readonlyPaths`.
    pub readonly_paths: Vec<String>,
    /// `hostname` (set only with a new UTS namespace).
    pub hostname: Option<String>,
    /// `domainname`.
    pub domainname: Option<String>,
    /// `linux.sysctl`.
    pub sysctl: Vec<(String, String)>,
    /// Host is cgroup v2.
    pub cgroup_v2: bool,
    /// The container's cgroup folders (controller, host path) for the `cgroup` mount on v1.
    pub cgroup_dirs: Vec<(String, PathBuf)>,
    /// Namespaces created by `clone` (all new ones except cgroup).
    pub clone_flags: CloneFlags,
    /// Unshare a cgroup namespace after joining the cgroup.
    pub new_cgroup_ns: bool,
    /// A new mount namespace is created (rootfs setup needs one).
    pub new_mount_ns: bool,
    /// Namespaces to join by path (not pid: the supervisor joins that before cloning).
    pub join: Vec<(CloneFlags, PathBuf)>,
    /// The user process.
    pub process: ProcessPlan,
    /// `process.terminal`.
    pub terminal: bool,
}

/// The descriptors the init process uses.
pub struct InitChannels {
    /// Read end: one byte "go", later one byte "start".
    pub control: OwnedFd,
    /// Write end, close-on-exec: `R\n` when ready, `E<msg>\n` on failure.
    pub status: OwnedFd,
    /// stdin, stdout, stderr for the container (None = keep the inherited ones).
    pub stdio: Option<[RawFd; 3]>,
    /// Connected console socket when `terminal` is true.
    pub console: Option<std::os::unix::net::UnixStream>,
}

/// Body of the cloned child. Never returns.
pub fn run(plan: &InitPlan, ch: InitChannels) -> ! {
    let status_fd = ch.status.as_raw_fd();
    if let Err(e) = steps(plan, &ch) {
        let msg = format!("E{}\n", e.to_string().replace('\n', " "));
        let mut f = std::fs::File::from(ch.status);
        let _ = f.write_all(msg.as_bytes());
        sys::exit_now(1);
    }
    let _ = status_fd;
    sys::exit_now(0)
}

fn read_byte(fd: &OwnedFd) -> bool {
    let mut b = [0u8; 1];
    let mut f = match fd.try_clone() {
        Ok(f) => std::fs::File::from(f),
        Err(_) => return false,
    };
    matches!(f.read(&mut b), Ok(1))
}

fn steps(plan: &InitPlan, ch: &InitChannels) -> Result<()> {
    let mut keep = vec![ch.control.as_raw_fd(), ch.status.as_raw_fd()];
    if let Some(c) = &ch.console {
        keep.push(c.as_raw_fd());
    }
    if let Some(stdio) = ch.stdio {
        for (i, fd) in stdio.iter().enumerate() {
            sys::dup2(*fd, i as RawFd).map_err(|e| Error::io("dup2", "stdio", e))?;
        }
    }
    sys::close_fds_from(3, &keep);
    nix::unistd::setsid().map_err(|e| Error::nix("setsid", "init", e))?;
    if !read_byte(&ch.control) {
        sys::exit_now(1);
    }
    let mut joins = plan.join.clone();
    joins.sort_by_key(|(f, _)| *f != CloneFlags::CLONE_NEWUSER);
    for (flag, path) in &joins {
        let f = std::fs::File::open(path)
            .map_err(|e| Error::io("open namespace", path.display(), e))?;
        nix::sched::setns(&f, *flag).map_err(|e| Error::nix("setns", path.display(), e))?;
    }
    if plan.clone_flags.contains(CloneFlags::CLONE_NEWUSER) {
        nix::unistd::setresgid(0.into(), 0.into(), 0.into())
            .map_err(|e| Error::nix("setgid", 0, e))?;
        nix::unistd::setresuid(0.into(), 0.into(), 0.into())
            .map_err(|e| Error::nix("setuid", 0, e))?;
    }
    if plan.new_cgroup_ns {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| Error::nix("unshare", "cgroup namespace", e))?;
    }
    process::apply_limits(&plan.process)?;
    if plan.new_mount_ns {
        rootfs::setup(plan)?;
    }
    if plan.clone_flags.contains(CloneFlags::CLONE_NEWUTS) {
        if let Some(h) = &plan.hostname {
            nix::unistd::sethostname(h).map_err(|e| Error::nix("sethostname", h, e))?;
        }
        if let Some(d) = &plan.domainname {
            std::fs::write("/proc/sys/kernel/domainname", d)
                .map_err(|e| Error::io("set domainname", d, e))?;
        }
    }
    for (k, v) in &plan.sysctl {
        let p = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
        std::fs::write(&p, v)
            .map_err(|e| Error::io("write sysctl", format!("linux.sysctl {k}"), e))?;
    }
    if let Some(sock) = &ch.console {
        console(sock)?;
    }
    let mut st = std::fs::File::from(
        ch.status
            .try_clone()
            .map_err(|e| Error::io("dup", "status pipe", e))?,
    );
    st.write_all(b"R\n")
        .map_err(|e| Error::io("report ready", "status pipe", e))?;
    drop(st);
    if !read_byte(&ch.control) {
        // The supervisor is gone or deleted us before start.
        sys::exit_now(0);
    }
    process::finish_and_exec(&plan.process)
}

/// Open a pty in the container's devpts, send the master over the console socket (runc's
/// protocol: one SCM_RIGHTS message), and make the slave our controlling terminal and stdio.
fn console(sock: &std::os::unix::net::UnixStream) -> Result<()> {
    use nix::fcntl::OFlag;
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY)
        .map_err(|e| Error::nix("open", "/dev/ptmx", e))?;
    nix::pty::grantpt(&master).map_err(|e| Error::nix("grantpt", "/dev/ptmx", e))?;
    nix::pty::unlockpt(&master).map_err(|e| Error::nix("unlockpt", "/dev/ptmx", e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| Error::nix("ptsname", "/dev/ptmx", e))?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&name)
        .map_err(|e| Error::io("open", &name, e))?;
    let fds = [master.as_raw_fd()];
    let iov = [std::io::IoSlice::new(name.as_bytes())];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| Error::nix("send pty master", "--console-socket", e))?;
    for i in 0..3 {
        sys::dup2(slave.as_raw_fd(), i).map_err(|e| Error::io("dup2", &name, e))?;
    }
    sys::set_controlling_terminal(0).map_err(|e| Error::io("TIOCSCTTY", &name, e))?;
    Ok(())
}
