//! `pause` / `resume`: the freezer (v1 `freezer.state`, v2 `cgroup.freeze`).

use super::refuse;
use crate::error::Result;
use crate::proto::Status;
use crate::state::Container;
use std::path::Path;

/// The `pause` command.
pub fn pause(root: &Path, id: &str) -> Result<()> {
    let c = Container::load(root, id)?;
    let s = c.status();
    if s != Status::Running {
        return Err(refuse(id, s, "pause (it must be running)"));
    }
    c.cgroup().freeze(true)
}

/// The `resume` command.
pub fn resume(root: &Path, id: &str) -> Result<()> {
    let c = Container::load(root, id)?;
    let s = c.status();
    if s != Status::Paused {
        return Err(refuse(id, s, "resume (it is not paused)"));
    }
    c.cgroup().freeze(false)
}
