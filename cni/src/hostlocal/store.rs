//! host-local's on-disk store, byte-compatible with the reference plugin
//! (`plugins:plugins/ipam/host-local/backend/disk`): `<dataDir>/<network>/` holds one file per
//! reserved address named by the address and containing `containerID\r\nifname`,
//! `last_reserved_ip.<rangeSetIndex>`, and `lock`, flock'ed around every change. Both plugins
//! can therefore share one directory.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Store failures, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

const LAST_RESERVED: &str = "last_reserved_ip.";
const LOCK: &str = "lock";

/// Who holds an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub container_id: String,
    /// `None` for files written by old versions (ID only).
    pub ifname: Option<String>,
}

impl Holder {
    pub fn is(&self, id: &str, ifname: &str) -> bool {
        self.container_id == id && self.ifname.as_deref().is_none_or(|i| i == ifname)
    }
}

/// The network's directory with its lock held; dropping it unlocks.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// Creates `dir` if needed and takes the exclusive lock.
    pub fn lock(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        let lock_path = dir.join(LOCK);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, source)| Error::Lock {
            path: lock_path,
            source,
        })?;
        Ok(Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// Every reservation in the directory.
    pub fn reservations(&self) -> Result<HashMap<IpAddr, Holder>> {
        let mut out = HashMap::new();
        for entry in fs::read_dir(&self.dir).map_err(io("list", &self.dir))? {
            let entry = entry.map_err(io("list", &self.dir))?;
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<IpAddr>().ok()) else {
                continue;
            };
            let path = entry.path();
            match fs::read_to_string(&path) {
                Ok(text) => {
                    out.insert(ip, parse_holder(&text));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io("read", &path)(e)),
            }
        }
        Ok(out)
    }

    /// Reserves `ip` for `(id, ifname)`; `Ok(false)` when someone holds it already.
    pub fn reserve(&self, ip: IpAddr, id: &str, ifname: &str, set: usize) -> Result<bool> {
        let path = self.dir.join(ip.to_string());
        let mut f = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io("create", &path)(e)),
        };
        if let Err(e) = f.write_all(format!("{id}\r\n{ifname}").as_bytes()) {
            let _ = fs::remove_file(&path);
            return Err(io("write", &path)(e));
        }
        let last = self.dir.join(format!("{LAST_RESERVED}{set}"));
        write_in_place(&last, ip.to_string().as_bytes()).map_err(io("write", &last))?;
        Ok(true)
    }

    /// The `last_reserved_ip.<set>` value, if any.
    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_RESERVED}{set}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Removes the reservation of `ip`; a missing file is fine.
    pub fn release(&self, ip: IpAddr) -> Result<()> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io("remove", &path)(e)),
            _ => Ok(()),
        }
    }
}

/// Replaces a small file's content without truncating it to zero first: an `O_TRUNC` frees
/// the file's block, and on a filesystem mounted with `discard` (this machine's root) that
/// frees it with a synchronous discard request, milliseconds on every ADD. Writing over the old
/// bytes and then cutting the length keeps the block. Readers hold the same lock.
fn write_in_place(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.write_all(data)?;
    f.set_len(data.len() as u64)
}

fn parse_holder(text: &str) -> Holder {
    let mut lines = text.split("\r\n").map(str::trim);
    let container_id = lines.next().unwrap_or_default().to_string();
    let ifname = lines.next().filter(|s| !s.is_empty()).map(str::to_string);
    Holder {
        container_id,
        ifname,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_layout() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("net1");
        let s = Store::lock(&dir).expect("lock");
        let ip: IpAddr = "10.0.0.2".parse().expect("ip");
        assert!(s.reserve(ip, "c1", "eth0", 0).expect("reserve"));
        assert!(!s.reserve(ip, "c2", "eth0", 0).expect("taken"));
        assert_eq!(
            fs::read_to_string(dir.join("10.0.0.2")).expect("file"),
            "c1\r\neth0"
        );
        assert_eq!(
            fs::read_to_string(dir.join("last_reserved_ip.0")).expect("last"),
            "10.0.0.2"
        );
        assert!(dir.join("lock").exists());
        fs::write(dir.join("10.0.0.9"), "old-id").expect("legacy file");
        let r = s.reservations().expect("list");
        assert!(r[&ip].is("c1", "eth0") && !r[&ip].is("c1", "eth1"));
        assert!(r[&"10.0.0.9".parse::<IpAddr>().expect("ip")].is("old-id", "anything"));
        s.release(ip).expect("release");
        s.release(ip).expect("release twice");
        assert_eq!(s.last_reserved(0), Some(ip));
        // A shorter address replaces a longer one exactly.
        assert!(
            s.reserve("10.0.0.100".parse().expect("ip"), "c3", "eth0", 0)
                .expect("reserve")
        );
        assert!(
            s.reserve("10.0.0.3".parse().expect("ip"), "c4", "eth0", 0)
                .expect("reserve")
        );
        assert_eq!(
            fs::read_to_string(dir.join("last_reserved_ip.0")).expect("last"),
            "10.0.0.3"
        );
    }
}
