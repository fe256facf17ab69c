//! Disk usage: a du-style walk of a folder tree (allocated blocks and inodes, hard links counted
//! once, other filesystems not entered) and statvfs(3) of a whole filesystem.

use super::sample::FsUsage;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Allocated bytes (st_blocks * 512, as du(1)) and inodes under `root`; None if `root` is
/// missing. Unreadable entries below it are skipped: they change while we walk.
pub fn du(root: &Path) -> Option<FsUsage> {
    let meta = std::fs::symlink_metadata(root).ok()?;
    let dev = meta.dev();
    let mut usage = FsUsage::default();
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    add(&meta, &mut usage, &mut seen);
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            add(&m, &mut usage, &mut seen);
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Some(usage)
}

fn add(m: &std::fs::Metadata, usage: &mut FsUsage, seen: &mut HashSet<u64>) {
    if m.nlink() > 1 && !m.is_dir() && !seen.insert(m.ino()) {
        return;
    }
    usage.used_bytes += m.blocks() * 512;
    usage.inodes_used += 1;
}

/// Capacity, available space and inodes of the filesystem holding `path`.
pub fn statvfs(path: &Path) -> Option<FsUsage> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = s.fragment_size();
    let capacity = s.blocks() * frag;
    let available = s.blocks_available() * frag;
    let free = s.blocks_free() * frag;
    Some(FsUsage {
        used_bytes: capacity.saturating_sub(free),
        inodes_used: s.files().saturating_sub(s.files_free()),
        capacity_bytes: Some(capacity),
        available_bytes: Some(available),
        inodes: Some(s.files()),
        inodes_free: Some(s.files_free()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn du_counts_blocks_and_inodes_and_hard_links_once() {
        let t = tempfile::tempdir().expect("tempdir");
        let sub = t.path().join("a/b");
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join("f"), vec![7u8; 1 << 20]).expect("write");
        std::fs::hard_link(sub.join("f"), t.path().join("g")).expect("link");
        let u = du(t.path()).expect("du");
        // root, a, b, f (g is the same inode)
        assert_eq!(u.inodes_used, 4);
        assert!(u.used_bytes >= 1 << 20, "{u:?}");
        assert!(u.used_bytes < 3 << 20, "hard link counted twice: {u:?}");
        assert!(du(&t.path().join("missing")).is_none());
    }

    #[test]
    fn statvfs_of_a_temp_dir() {
        let t = tempfile::tempdir().expect("tempdir");
        let s = statvfs(t.path()).expect("statvfs");
        assert!(s.capacity_bytes.unwrap_or(0) > 0);
        assert!(s.available_bytes <= s.capacity_bytes);
    }
}
