//! `kill`: signal init (via a pidfd, so a recycled pid is never hit) or, with `--all`,
//! every process in the container's cgroup.

use super::refuse;
use crate::error::{Error, Result};
use crate::proto::Status;
use crate::state::{self, Container};
use crate::sys;
use std::path::Path;

/// Parse `9`, `KILL`, `SIGKILL`, `sigkill`.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|sig| sig as i32)
            .map_err(|_| Error::Usage(format!("unknown signal {s:?}")));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as i32)
        .map_err(|_| {
            Error::Usage(format!(
                "unknown signal {s:?}; use a name like TERM or a number"
            ))
        })
}

/// The `kill` command.
pub fn kill(root: &Path, id: &str, signal: i32, all: bool) -> Result<()> {
    let c = Container::load(root, id)?;
    let status = c.status();
    if status == Status::Stopped {
        return Err(refuse(id, status, "kill"));
    }
    if all {
        c.cgroup().kill_all(signal);
        return Ok(());
    }
    let pidfd =
        sys::pidfd_open(c.saved.pid).map_err(|e| Error::io("pidfd_open", c.saved.pid, e))?;
    // The pidfd pins the process; re-check it is still our init before signalling.
    if !state::alive(c.saved.pid, c.saved.pid_start) {
        return Err(refuse(id, Status::Stopped, "kill"));
    }
    sys::pidfd_send_signal(&pidfd, signal).map_err(|e| Error::io("kill", c.saved.pid, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(parse_signal("9").expect("9"), 9);
        assert_eq!(parse_signal("KILL").expect("KILL"), 9);
        assert_eq!(parse_signal("sigterm").expect("sigterm"), 15);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
