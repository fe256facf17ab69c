//! `delete`: remove a stopped (or, with `--force`, any) container: kill what is left, wait
//! for init and the supervisor with pidfds (no fixed sleeps, unlike runc's 100 ms poll),
//! remove the cgroup and the state folder.

use super::refuse;
use crate::error::{Error, Result};
use crate::proto::Status;
use crate::state::{self, Container};
use crate::sys;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// Wait until `pid` (started at `start`) has exited; false on timeout.
pub fn wait_gone(pid: i32, start: u64, timeout: Duration) -> bool {
    if pid <= 0 {
        return true;
    }
    let Ok(fd) = sys::pidfd_open(pid) else {
        return true;
    };
    if !state::alive(pid, start) {
        return true;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return !state::alive(pid, start);
        }
        let ms =
            PollTimeout::try_from(left.as_millis().min(10_000) as i32).unwrap_or(PollTimeout::ZERO);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return true,
            _ => {
                // pidfds of non-children become readable at exit; zombies count as gone.
                if !state::alive(pid, start) {
                    return true;
                }
            }
        }
    }
}

/// The `delete` command.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<()> {
    let c = match Container::load(root, id) {
        Ok(c) => c,
        // runc: `delete --force` of a container that does not exist succeeds.
        Err(Error::NotFound { .. }) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    let status = c.status();
    if matches!(status, Status::Running | Status::Paused) && !force {
        return Err(refuse(id, status, "delete (stop it first, or use --force)"));
    }
    let cg = c.cgroup();
    if status != Status::Stopped {
        cg.kill_all(libc::SIGKILL);
        if let Ok(fd) = sys::pidfd_open(c.saved.pid)
            && state::alive(c.saved.pid, c.saved.pid_start)
        {
            let _ = sys::pidfd_send_signal(&fd, libc::SIGKILL);
        }
        if status == Status::Paused {
            let _ = cg.freeze(false);
        }
        if !wait_gone(c.saved.pid, c.saved.pid_start, Duration::from_secs(10)) {
            return Err(Error::Supervisor {
                id: id.into(),
                reason: format!("init {} did not die within 10 s of SIGKILL", c.saved.pid),
            });
        }
    }
    // The supervisor records the exit and leaves right after init dies.
    if !wait_gone(
        c.saved.supervisor_pid,
        c.saved.supervisor_start,
        Duration::from_secs(5),
    ) && let Ok(fd) = sys::pidfd_open(c.saved.supervisor_pid)
        && state::alive(c.saved.supervisor_pid, c.saved.supervisor_start)
    {
        let _ = sys::pidfd_send_signal(&fd, libc::SIGKILL);
        wait_gone(
            c.saved.supervisor_pid,
            c.saved.supervisor_start,
            Duration::from_secs(2),
        );
    }
    // Processes that escaped the pid namespace kill (no pid ns): kill the rest.
    if !cg.procs().is_empty() {
        cg.kill_all(libc::SIGKILL);
    }
    cg.remove()?;
    std::fs::remove_dir_all(&c.dir).map_err(|e| Error::io("remove", c.dir.display(), e))
}
