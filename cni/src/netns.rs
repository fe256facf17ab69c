//! Network namespaces: open one by path (checking it really is a network namespace), and run
//! code inside it on the current thread (setns(2)), returning to the original namespace after.
//! Only the plugins use this; the async agent never enters a namespace (STYLE.md rule 4).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, PROC_SUPER_MAGIC, fstatfs};

use crate::netlink;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("open network namespace {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a network namespace (expected a file under /run/netns or /proc/<pid>/ns/net)"
    )]
    NotNetns { path: String },
    #[error("enter network namespace {path}")]
    Enter {
        path: String,
        #[source]
        source: Errno,
    },
    #[error("open a netlink socket in {path}")]
    Netlink {
        path: String,
        #[source]
        source: netlink::Error,
    },
}

impl Error {
    /// True when the path does not exist (a DEL after the namespace was removed).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// An open network namespace.
pub struct NetNs {
    file: File,
    path: String,
}

impl NetNs {
    /// Opens `path` and checks that it is an nsfs file (or a /proc ns link on old kernels).
    pub fn open(path: &str) -> Result<NetNs> {
        let file = File::open(path).map_err(|source| Error::Open {
            path: path.to_string(),
            source,
        })?;
        let ok = fstatfs(&file).map(|s| {
            let t = s.filesystem_type();
            t == NSFS_MAGIC || t == PROC_SUPER_MAGIC
        });
        if !matches!(ok, Ok(true)) {
            return Err(Error::NotNetns {
                path: path.to_string(),
            });
        }
        // nsfs also holds other namespace types: setns with CLONE_NEWNET rejects those, which
        // `socket_inside` reports; checking here costs one more syscall on every ADD.
        Ok(NetNs {
            file,
            path: path.to_string(),
        })
    }

    /// The calling thread's current network namespace.
    pub fn current() -> Result<NetNs> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Runs `f` with the calling thread inside this namespace, then switches back.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let home = NetNs::current()?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| match source {
            Errno::EINVAL => Error::NotNetns {
                path: self.path.clone(),
            },
            source => Error::Enter {
                path: self.path.clone(),
                source,
            },
        })?;
        let out = f();
        setns(home.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| Error::Enter {
            path: home.path.clone(),
            source,
        })?;
        Ok(out)
    }

    /// A netlink socket bound to this namespace (opened inside it; usable from anywhere).
    pub fn socket(&self) -> Result<netlink::Socket> {
        self.run(netlink::Socket::open)?
            .map_err(|source| Error::Netlink {
                path: self.path.clone(),
                source,
            })
    }
}
