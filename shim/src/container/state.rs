//! Read-only verbs: `state`, `list`, `ps`, `events --stats`.

use crate::error::{Error, Result};
use crate::proto::Status;
use crate::state::{self as st, Container, OciState};
use std::path::Path;

/// The `state` command: OCI state JSON.
pub fn state(root: &Path, id: &str) -> Result<OciState> {
    Ok(Container::load(root, id)?.oci_state())
}

/// The `list` command.
pub fn list(root: &Path) -> Vec<OciState> {
    st::list(root)
        .iter()
        .filter_map(|id| Container::load(root, id).ok())
        .map(|c| c.oci_state())
        .collect()
}

/// Format `list` as runc's table.
pub fn list_table(states: &[OciState]) -> String {
    let mut out = String::from("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER\n");
    for s in states {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\troot\n",
            s.id,
            s.pid,
            format!("{:?}", s.status).to_lowercase(),
            s.bundle,
            s.created
        ));
    }
    out
}

/// The `ps` command: pids in the container's cgroup.
pub fn ps(root: &Path, id: &str) -> Result<Vec<i32>> {
    let c = Container::load(root, id)?;
    if c.status() == Status::Stopped && !c.cgroup().dirs.values().any(|d| d.exists()) {
        return Ok(Vec::new());
    }
    Ok(c.cgroup().procs())
}

/// `ps` table: PID and command line.
pub fn ps_table(pids: &[i32]) -> String {
    let mut out = String::from("PID\tCMD\n");
    for p in pids {
        let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        out.push_str(&format!("{p}\t{cmd}\n"));
    }
    out
}

/// The `events --stats` command: one sample as runc's event envelope.
pub fn events_stats(root: &Path, id: &str) -> Result<serde_json::Value> {
    let c = Container::load(root, id)?;
    let stats = c.cgroup().stats();
    let data = serde_json::to_value(stats).map_err(|e| Error::Io {
        op: "encode",
        path: "stats".into(),
        source: std::io::Error::other(e),
    })?;
    Ok(serde_json::json!({"type": "stats", "id": id, "data": data}))
}
