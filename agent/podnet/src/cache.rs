//! The attachment record of one pod, `<state_dir>/attachments/<uid>.json`: the network
//! configuration list the ADD used and its final result. CNI asks the runtime to keep both
//! (SPEC.md: DEL and CHECK get the final ADD result as `prevResult`; libcni caches the same
//! pair under /var/lib/cni/results). It is written only after a complete ADD, atomically, so
//! its presence means "attached"; `setup` after an agent restart returns it without a new ADD.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::NetError;

pub const DIR: &str = "attachments";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `CNI_CONTAINERID` (the uid) and `CNI_IFNAME`.
    pub container_id: String,
    pub ifname: String,
    pub netns: PathBuf,
    /// The `.conflist` file it came from (for humans) and its content at ADD time.
    pub conflist_path: PathBuf,
    pub conflist: Value,
    /// The final ADD result.
    pub result: Value,
}

pub fn path(state_dir: &Path, uid: &str) -> PathBuf {
    state_dir.join(DIR).join(format!("{uid}.json"))
}

/// The marker of a setup in progress, `<uid>.pending`: written (and synced) before the
/// namespace is created, removed once the record exists or everything was undone. After a
/// crash it tells `attached` about a namespace this agent made even though no record exists,
/// without counting namespace files of other agents that share the folder.
pub fn pending_path(state_dir: &Path, uid: &str) -> PathBuf {
    state_dir.join(DIR).join(format!("{uid}.pending"))
}

pub fn mark_pending(state_dir: &Path, uid: &str, netns: &Path) -> Result<(), NetError> {
    let dir = state_dir.join(DIR);
    std::fs::create_dir_all(&dir).map_err(|e| NetError::state("create folder", &dir, e))?;
    write_atomic(
        &pending_path(state_dir, uid),
        netns.to_string_lossy().as_bytes(),
    )
}

pub fn clear_pending(state_dir: &Path, uid: &str) -> Result<(), NetError> {
    let p = pending_path(state_dir, uid);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::state("remove setup marker", &p, e)),
    }
}

/// Reads a record; `Ok(None)` when there is none. An unreadable record is an error naming
/// the file (it is not silently dropped: its IP would leak).
pub fn load(state_dir: &Path, uid: &str) -> Result<Option<Attachment>, NetError> {
    let p = path(state_dir, uid);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NetError::state("read attachment record", &p, e)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        NetError::state(
            "decode attachment record (remove it after cleaning the pod's network by hand)",
            &p,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })
}

pub fn store(state_dir: &Path, a: &Attachment) -> Result<(), NetError> {
    let p = path(state_dir, &a.uid);
    let dir = state_dir.join(DIR);
    std::fs::create_dir_all(&dir).map_err(|e| NetError::state("create folder", &dir, e))?;
    let bytes = serde_json::to_vec_pretty(a).unwrap_or_default();
    write_atomic(&p, &bytes)
}

pub fn remove(state_dir: &Path, uid: &str) -> Result<(), NetError> {
    let p = path(state_dir, uid);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::state("remove attachment record", &p, e)),
    }
}

/// Uids that have a record or a setup marker.
pub fn uids(state_dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(state_dir.join(DIR)) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| {
                    n.strip_suffix(".json")
                        .or_else(|| n.strip_suffix(".pending"))
                })
                .map(str::to_string)
        })
        .collect()
}

/// Write to `<path>.tmp`, fsync, rename over `path`, fsync the folder: a crash leaves the old
/// or the new content, never a torn file.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), NetError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        NetError::state("write", path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_remove() {
        let d = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(d.path(), "u1").expect("none"), None);
        let a = Attachment {
            uid: "u1".into(),
            namespace: "default".into(),
            name: "web".into(),
            container_id: "u1".into(),
            ifname: "eth0".into(),
            netns: "/run/keel/netns/u1".into(),
            conflist_path: "/etc/cni/net.d/10-keel.conflist".into(),
            conflist: serde_json::json!({"name": "keel"}),
            result: serde_json::json!({"cniVersion": "1.0.0"}),
        };
        store(d.path(), &a).expect("store");
        assert_eq!(load(d.path(), "u1").expect("load"), Some(a));
        assert_eq!(uids(d.path()), vec!["u1".to_string()]);
        remove(d.path(), "u1").expect("remove");
        remove(d.path(), "u1").expect("remove again");
        assert!(uids(d.path()).is_empty());
        mark_pending(d.path(), "u2", Path::new("/run/keel/netns/u2")).expect("mark");
        assert_eq!(uids(d.path()), vec!["u2".to_string()]);
        clear_pending(d.path(), "u2").expect("clear");
        clear_pending(d.path(), "u2").expect("clear again");
        assert!(uids(d.path()).is_empty());
        std::fs::write(path(d.path(), "bad"), b"{").expect("write");
        let e = load(d.path(), "bad").expect_err("torn");
        assert!(e.to_string().contains("bad.json"), "{e}");
    }
}
