//! `run`: create + start, then (foreground) wait for the exit through the supervisor,
//! forwarding signals to init, and delete. The exit can never be missed: the supervisor
//! records it in `exit.json` before it answers `wait` or leaves, and this side falls back
//! to that file whenever the socket is gone.

use super::create::{CreateOptions, create};
use super::{delete, start};
use crate::error::{Error, Result};
use crate::proto::{self, ExitStatus, Op, Reply, Request};
use crate::state::Container;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// The `run` command. Returns the exit code (the container's, or 0 when detached).
pub fn run(root: &Path, o: &CreateOptions, detach: bool) -> Result<i32> {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(*s);
    }
    if !detach {
        // Blocked before create: the supervisor and init are forked after this and init
        // resets its mask, so nothing is lost and nothing leaks.
        mask.thread_block()
            .map_err(|e| Error::nix("block signals", "run", e))?;
    }
    let c = create(root, o)?;
    if let Err(e) = start::start(root, &o.id) {
        let _ = delete::delete(root, &o.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let exit = wait(&c, &mask)?;
    let _ = delete::delete(root, &o.id, true);
    // The supervisor was forked by this process: reap it.
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(c.saved.supervisor_pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
    Ok(exit.code)
}

fn wait(c: &Container, mask: &SigSet) -> Result<ExitStatus> {
    let sigfd = SignalFd::new(mask).map_err(|e| Error::nix("signalfd", "run", e))?;
    let conn = UnixStream::connect(c.socket()).ok();
    if let Some(mut s) = conn.as_ref() {
        let mut req = serde_json::to_vec(&Request::new(Op::Wait)).unwrap_or_default();
        req.push(b'\n');
        let _ = s.write_all(&req);
    }
    loop {
        if let Some(exit) = c.exit() {
            return Ok(exit);
        }
        let Some(sock) = conn.as_ref() else {
            return poll_exit_file(c);
        };
        let mut fds = [
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sock.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let sig_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let sock_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
        if sig_ready && let Ok(Some(info)) = sigfd.read_signal() {
            let _ = super::kill::kill(
                c.dir.parent().unwrap_or(&c.dir),
                &c.saved.id,
                info.ssi_signo as i32,
                false,
            );
        }
        if sock_ready {
            let mut line = String::new();
            let _ = BufReader::new(sock).read_line(&mut line);
            if let Ok(resp) = serde_json::from_str::<proto::Response>(&line)
                && let Reply::Exited { exit } = resp.result
            {
                return Ok(exit);
            }
            return poll_exit_file(c);
        }
    }
}

/// The supervisor is gone: its exit record is written before it leaves, so it is there
/// unless the supervisor itself was killed.
fn poll_exit_file(c: &Container) -> Result<ExitStatus> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if let Some(e) = c.exit() {
            return Ok(e);
        }
        if !c.supervisor_alive() && !c.init_alive() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    c.exit().ok_or_else(|| Error::Supervisor {
        id: c.saved.id.clone(),
        reason: "exited without recording the container's exit status".into(),
    })
}
