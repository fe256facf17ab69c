//! kubelet's AtomicWriter layout for configMap, secret, downwardAPI and projected volumes:
//! the files go into a fresh `..<timestamp>` folder, the `..data` symlink is switched to it
//! with one rename, and each visible top-level name is a symlink through `..data`. A reader
//! therefore sees the old set or the new set of files, never a mix.

use crate::error::{ConfigError, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

/// One file of a projected payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative path inside the volume (validated by [`check_path`]).
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

const DATA: &str = "..data";

/// kubelet's payload path rules: relative, no `..` element, not starting with `..`.
pub fn check_path(p: &str) -> std::result::Result<(), String> {
    if p.is_empty() {
        return Err("path must not be empty".into());
    }
    if Path::new(p).is_absolute() {
        return Err(format!("path {p:?} must be relative"));
    }
    if p.starts_with("..") {
        return Err(format!("path {p:?} must not start with '..'"));
    }
    if Path::new(p).components().any(|c| c == Component::ParentDir) {
        return Err(format!("path {p:?} must not contain '..'"));
    }
    Ok(())
}

fn io(op: &'static str, p: &Path) -> impl FnOnce(std::io::Error) -> ConfigError {
    let p = p.to_path_buf();
    move |e| ConfigError::io(op, p, e)
}

/// Replace the contents of `dir` with `files`.
pub fn write(dir: &Path, files: &[FileEntry]) -> Result<()> {
    for f in files {
        check_path(&f.path).map_err(|m| ConfigError::invalid("volume item path", m))?;
    }
    std::fs::create_dir_all(dir).map_err(io("create folder", dir))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let ts_name = format!("..{stamp}");
    let ts = dir.join(&ts_name);
    std::fs::create_dir(&ts).map_err(io("create folder", &ts))?;
    std::fs::set_permissions(&ts, std::fs::Permissions::from_mode(0o755))
        .map_err(io("chmod", &ts))?;
    for f in files {
        let p = ts.join(&f.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io("create folder", parent))?;
        }
        std::fs::write(&p, &f.data).map_err(io("write", &p))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode & 0o7777))
            .map_err(io("chmod", &p))?;
    }
    let old = std::fs::read_link(dir.join(DATA)).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts_name, &tmp).map_err(io("symlink", &tmp))?;
    std::fs::rename(&tmp, dir.join(DATA)).map_err(io("rename", &tmp))?;
    let mut top: Vec<String> = files
        .iter()
        .filter_map(|f| Path::new(&f.path).components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    top.sort();
    top.dedup();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("{DATA}/{name}"), &link)
                .map_err(io("symlink", &link))?;
        }
    }
    // Drop names that left the payload and the previous timestamped folder.
    for e in std::fs::read_dir(dir)
        .map_err(io("read folder", dir))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale_link = !name.starts_with("..") && !top.contains(&name);
        let is_link = e.file_type().is_ok_and(|t| t.is_symlink());
        if stale_link && is_link {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != ts_name.as_str()) {
        let old = dir.join(old);
        if old.starts_with(dir) && old != dir.join(DATA) {
            let _ = std::fs::remove_dir_all(old);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(p: &str, d: &str, mode: u32) -> FileEntry {
        FileEntry {
            path: p.into(),
            data: d.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn paths_are_checked() {
        for (p, ok) in [
            ("a", true),
            ("a/b.txt", true),
            ("", false),
            ("/etc/x", false),
            ("..x", false),
            ("a/../../b", false),
        ] {
            assert_eq!(check_path(p).is_ok(), ok, "{p}");
        }
    }

    #[test]
    fn rewrite_switches_the_whole_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            &[entry("a", "1", 0o644), entry("sub/b", "2", 0o400)],
        )
        .expect("write");
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).ok();
        assert_eq!(read("a").as_deref(), Some("1"));
        assert_eq!(read("sub/b").as_deref(), Some("2"));
        let mode = std::fs::metadata(dir.path().join("sub/b"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        write(dir.path(), &[entry("a", "3", 0o644)]).expect("rewrite");
        assert_eq!(read("a").as_deref(), Some("3"));
        assert_eq!(read("sub/b"), None);
        assert!(std::fs::symlink_metadata(dir.path().join("sub")).is_err());
        let folders = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .count();
        assert_eq!(folders, 1, "the previous timestamped folder is gone");
        assert!(write(dir.path(), &[entry("../x", "", 0o644)]).is_err());
    }
}
