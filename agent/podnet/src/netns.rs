//! Persistent network namespaces, one file per pod (`<netns_dir>/<uid>`), as `ip netns add`
//! and containerd make them: a dedicated OS thread `unshare(CLONE_NEWNET)`s (which moves only
//! that thread), brings `lo` up in its new namespace over netlink, and bind-mounts
//! `/proc/thread-self/ns/net` onto the file; the mount keeps the namespace alive after the
//! thread ends. The thread is never reused, so no tokio worker ever changes namespace.
//!
//! The folder is made a shared mount (containerd's `netns_linux.go` and iproute2 do the same)
//! so that unmounting a pod's file also reaches copies of the mount in containers' mount
//! namespaces that were created while it existed.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::statfs::{NSFS_MAGIC, statfs};

use crate::NetError;

/// Makes `dir` exist and be a shared mount point.
pub fn prepare_dir(dir: &Path) -> Result<(), NetError> {
    std::fs::create_dir_all(dir).map_err(|e| NetError::netns(dir, "create folder", e))?;
    let shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself, then make that shared.
        Err(Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| NetError::netns(dir, "bind-mount the folder onto itself", e))?;
            shared().map_err(|e| NetError::netns(dir, "make the folder a shared mount", e))
        }
        Err(e) => Err(NetError::netns(dir, "make the folder a shared mount", e)),
    }
}

/// True when `path` is a mounted network namespace (nsfs).
pub fn is_live(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Creates the namespace file `path` with `lo` up. Runs on its own OS thread; the async
/// caller waits on a channel, never blocking a runtime worker.
pub async fn create(path: PathBuf) -> Result<(), NetError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let p = path.clone();
    std::thread::Builder::new()
        .name("keel-netns".into())
        .spawn(move || {
            let _ = tx.send(create_on_this_thread(&p));
        })
        .map_err(|e| NetError::netns(&path, "start the namespace thread", e))?;
    rx.await.unwrap_or_else(|_| {
        Err(NetError::netns(
            &path,
            "create (the namespace thread ended without an answer)",
            std::io::Error::other("thread panicked"),
        ))
    })
}

/// Must run on a thread that is discarded afterwards: it leaves the thread in the new netns.
fn create_on_this_thread(path: &Path) -> Result<(), NetError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| NetError::netns(path, "create the file", e))?;
    let result = (|| {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetError::netns(path, "unshare(CLONE_NEWNET)", e))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| NetError::netns(path, "bind-mount /proc/thread-self/ns/net", e))?;
        loopback_up().map_err(|e| NetError::netns(path, "bring lo up", std::io::Error::other(e)))
    })();
    if result.is_err() {
        let _ = remove(path);
    }
    result
}

/// `ip link set lo up` in the calling thread's namespace.
fn loopback_up() -> Result<(), keel_cni::netlink::Error> {
    use keel_cni::netlink::{Socket, link::IFF_UP};
    let mut s = Socket::open()?;
    if let Some(lo) = s.link_by_name("lo")? {
        s.set_flags(lo.index, IFF_UP, IFF_UP)?;
    }
    Ok(())
}

/// Unmounts and removes a namespace file; nothing there is success.
pub fn remove(path: &Path) -> Result<(), NetError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(NetError::netns(path, "unmount", e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::netns(path, "remove the file", e)),
    }
}

/// Unmounts and removes every namespace file in `dir`, then unmounts `dir` itself (the
/// shared self-bind of `prepare_dir`) and removes it if empty: `keel-agent cleanup`, after
/// the pods were torn down.
pub fn release_dir(dir: &Path) -> Result<(), NetError> {
    let mut first = None;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            if let Err(err) = remove(&e.path()) {
                first.get_or_insert(err);
            }
        }
    }
    while umount2(dir, MntFlags::MNT_DETACH).is_ok() {}
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            first.get_or_insert(NetError::netns(dir, "remove the folder", e));
        }
    }
    first.map_or(Ok(()), Err)
}
