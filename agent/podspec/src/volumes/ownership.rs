//! `fsGroup` ownership of a pod volume (kubelet's `SetVolumeOwnership`): every file and folder
//! gets group `fsGroup`, files gain group read (and write for writable volumes), folders the
//! setgid bit so new files inherit the group. Symlinks are re-owned but never followed.

use crate::error::{ConfigError, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;

/// Apply `gid` below and including `dir`.
pub fn apply(dir: &Path, gid: u32, read_only: bool) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| ConfigError::io("inspect", dir, e))?;
    std::os::unix::fs::lchown(dir, None, Some(gid))
        .map_err(|e| ConfigError::io("chown", dir, e))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mut mask = if read_only { RO_MASK } else { RW_MASK };
    if meta.is_dir() {
        mask |= 0o2000 | 0o110;
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode | mask != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | mask))
            .map_err(|e| ConfigError::io("chmod", dir, e))?;
    }
    if meta.is_dir() {
        for e in std::fs::read_dir(dir).map_err(|e| ConfigError::io("read folder", dir, e))? {
            let e = e.map_err(|e| ConfigError::io("read folder", dir, e))?;
            apply(&e.path(), gid, read_only)?;
        }
    }
    Ok(())
}
