//! The per-container state directory `<root>/<id>/`:
//! `state.json` (this module), `exit.json` (written once by the supervisor, see `proto`),
//! `supervisor.sock`.
//!
//! Status is always derived from the processes, never taken from the last command: an
//! `exit.json` or a dead/zombie/reused init pid means `stopped`; a frozen cgroup `paused`.

use crate::cgroups::{Cgroup, Layout};
use crate::error::{Error, Result};
use crate::proto::{self, ExitStatus, Status};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What `state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// `created` until started, then `running` (refined by [`Container::status`]).
    pub status: Status,
    /// Host pid of init.
    pub pid: i32,
    /// Start time of init (field 22 of /proc/<pid>/stat) to detect pid reuse.
    pub pid_start: u64,
    /// Host pid of the supervisor.
    pub supervisor_pid: i32,
    /// Start time of the supervisor.
    pub supervisor_start: u64,
    /// The cgroup folders.
    pub cgroup_dirs: BTreeMap<String, PathBuf>,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Config annotations.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The CRI log file, when the supervisor captures output.
    #[serde(default)]
    pub log_path: Option<PathBuf>,
}

/// OCI state as printed by `state` (runtime-spec `runtime.md#state`, plus runc's extras).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    /// Spec version.
    pub oci_version: String,
    /// Id.
    pub id: String,
    /// Status.
    pub status: Status,
    /// Init pid (0 when stopped).
    pub pid: i32,
    /// Bundle path.
    pub bundle: String,
    /// Annotations.
    pub annotations: HashMap<String, String>,
    /// Creation time (runc field).
    pub created: String,
    /// Owner (runc field; empty = root).
    pub owner: String,
}

/// Handle on one container's state directory.
#[derive(Debug, Clone)]
pub struct Container {
    /// The folder.
    pub dir: PathBuf,
    /// Parsed `state.json`.
    pub saved: Saved,
}

/// Start time of `pid` in clock ticks, or None if it does not exist.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Process state letter (R, S, Z, ...) of `pid`.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// True when `pid` is alive (not a zombie) and still the process started at `start`.
pub fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && start_time(pid) == Some(start) && proc_state(pid) != Some('Z')
}

/// Check a container id: non-empty, no `/`, no leading dot (runc: `^[\w+-\.]+$`).
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "invalid container id {id:?}: use letters, digits, '_', '+', '-', '.'"
        )))
    }
}

/// Write `data` to `path` atomically (temp file + rename): readers see old or new, never
/// half. Used for `state.json`, which lives on a tmpfs in production (`/run`) and is
/// re-derivable from the processes, so it is not fsynced (runc does not either).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Write `data` to `path` atomically and durably (temp file, fsync, rename, fsync dir):
/// for `exit.json`, the one record that must survive a crash of the node agent.
pub fn write_durable(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Container {
    /// Load `<root>/<id>`.
    pub fn load(root: &Path, id: &str) -> Result<Container> {
        check_id(id)?;
        let dir = root.join(id);
        let path = dir.join("state.json");
        let data = std::fs::read(&path).map_err(|_| Error::NotFound {
            id: id.to_string(),
            dir: dir.clone(),
        })?;
        let saved: Saved = serde_json::from_slice(&data).map_err(|e| Error::Io {
            op: "parse",
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        Ok(Container { dir, saved })
    }

    /// Persist `state.json`.
    pub fn save(&self) -> Result<()> {
        let data = serde_json::to_vec(&self.saved).map_err(std::io::Error::other);
        let path = self.dir.join("state.json");
        data.and_then(|d| write_atomic(&path, &d))
            .map_err(|e| Error::io("write", path.display(), e))
    }

    /// The recorded exit, if any.
    pub fn exit(&self) -> Option<ExitStatus> {
        proto::read_exit_file(&self.dir)
    }

    /// The cgroup handle.
    pub fn cgroup(&self) -> Cgroup {
        let layout = if self.saved.cgroup_dirs.contains_key("") {
            Layout::V2(PathBuf::from("/sys/fs/cgroup"))
        } else {
            Layout::V1(
                self.saved
                    .cgroup_dirs
                    .keys()
                    .map(|k| (k.clone(), PathBuf::new()))
                    .collect(),
            )
        };
        Cgroup {
            layout,
            dirs: self.saved.cgroup_dirs.clone(),
        }
    }

    /// Whether init is alive.
    pub fn init_alive(&self) -> bool {
        alive(self.saved.pid, self.saved.pid_start)
    }

    /// Whether the supervisor is alive.
    pub fn supervisor_alive(&self) -> bool {
        alive(self.saved.supervisor_pid, self.saved.supervisor_start)
    }

    /// The current status, derived from the processes.
    pub fn status(&self) -> Status {
        // /proc first: while init is exiting, the supervisor renames and fsyncs exit.json in
        // this folder, and a lookup there can wait behind that journal commit for 100+ ms
        // on a busy disk. A dead or zombie init already means stopped.
        if !self.init_alive() || self.dir.join(proto::EXIT_FILE_NAME).exists() {
            return Status::Stopped;
        }
        if self.saved.status == Status::Running && self.cgroup().is_frozen() {
            return Status::Paused;
        }
        match self.saved.status {
            Status::Creating | Status::Created => Status::Created,
            s => s,
        }
    }

    /// The supervisor socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.join(proto::SOCKET_NAME)
    }

    /// OCI state for `state` / `list`.
    pub fn oci_state(&self) -> OciState {
        let status = self.status();
        OciState {
            oci_version: "1.2.0".into(),
            id: self.saved.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                self.saved.pid
            },
            bundle: self.saved.bundle.display().to_string(),
            annotations: self.saved.annotations.clone(),
            created: self.saved.created.clone(),
            owner: String::new(),
        }
    }
}

/// Ids of every container under `root`.
pub fn list(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("state.json").exists())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(check_id("abc-1.2_x+y").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id() as i32;
        let st = start_time(me).expect("own stat");
        assert!(alive(me, st));
        assert!(!alive(me, st + 1));
    }
}
