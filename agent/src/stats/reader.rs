//! Reads cgroup and proc files with as few system calls as possible: a file opened once stays
//! open and is read again with pread(2) at offset 0 on later passes, which makes the kernel
//! regenerate a seq_file's contents (fs/seq_file.c restarts when the position differs from the
//! last read). One syscall per figure instead of open, fstat, lseek, read, read, close: on a
//! VM, syscalls are most of a housekeeping pass. Descriptors not used in a pass are closed at
//! its end, so removed cgroups and exited processes do not pin anything.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

const CHUNK: usize = 16 * 1024;

/// FNV-1a over the path's bytes: the kept descriptors are looked up hundreds of times a
/// pass, and hashing a `Path` (component by component, through SipHash) showed in profiles.
#[derive(Default)]
pub struct Fnv(u64);

/// A map hashed with `Fnv`, for keys built and looked up on every pass.
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

pub struct Reader {
    /// Kept descriptors by path bytes, with the pass that last read them.
    open: FastMap<Box<[u8]>, (File, u64)>,
    pass: u64,
    /// A descriptor unused for this many passes is closed.
    keep: u64,
    max_open: usize,
    buf: Vec<u8>,
}

impl Default for Reader {
    fn default() -> Reader {
        Reader::new()
    }
}

impl Reader {
    /// Keeps at most half of the soft RLIMIT_NOFILE (after raising it to the hard limit, as the
    /// Go runtime does for the kubelet) open; files beyond that are opened on each read.
    pub fn new() -> Reader {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, hard)) if hard > soft => {
                let want = hard.min(1 << 20);
                if setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_ok() {
                    want
                } else {
                    soft
                }
            }
            Ok((soft, _)) => soft,
            Err(_) => 1024,
        };
        Reader {
            open: HashMap::default(),
            pass: 0,
            keep: 1,
            max_open: (soft / 2) as usize,
            buf: Vec::new(),
        }
    }

    /// Keeps descriptors open across `passes` passes without a read (files read only on
    /// detailed passes).
    pub fn keep_for(&mut self, passes: u64) {
        self.keep = passes.max(1);
    }

    /// Starts a pass: descriptors not read for `keep` passes are closed at `end_pass`.
    pub fn begin_pass(&mut self) {
        self.pass += 1;
    }

    pub fn end_pass(&mut self) {
        let (pass, keep) = (self.pass, self.keep);
        self.open.retain(|_, (_, used)| pass - *used < keep);
    }

    /// Descriptors kept open now.
    pub fn open_files(&self) -> usize {
        self.open.len()
    }

    /// The whole contents of `path`, or None if it cannot be read (missing cgroup, exited
    /// process). An empty read from a kept descriptor reopens the file once: a process whose
    /// pid was reused, or a cgroup created again under the same name.
    pub fn text(&mut self, path: &Path) -> Option<&str> {
        let pass = self.pass;
        let key = path.as_os_str().as_bytes();
        let mut len = None;
        if let Some((f, used)) = self.open.get_mut(key) {
            *used = pass;
            len = pread_all(f, &mut self.buf).filter(|n| *n > 0);
            if len.is_none() {
                self.open.remove(key);
            }
        }
        if len.is_none() {
            let f = File::open(path).ok()?;
            len = Some(pread_all(&f, &mut self.buf)?);
            if self.open.len() < self.max_open {
                self.open.insert(key.into(), (f, pass));
            }
        }
        std::str::from_utf8(&self.buf[..len?]).ok()
    }

    /// A file holding one number; "max" and anything unparsable give None.
    pub fn u64(&mut self, path: &Path) -> Option<u64> {
        self.text(path)?.trim().parse().ok()
    }
}

/// Reads from offset 0 to the end into `buf`; returns how many bytes are valid.
/// A seq_file read fills the buffer until its data ends, so a short read is the end. The
/// buffer's bytes are zeroed only when it grows, not on every read.
fn pread_all(f: &File, buf: &mut Vec<u8>) -> Option<usize> {
    let mut len = 0;
    loop {
        if buf.len() < len + CHUNK {
            buf.resize(len + CHUNK, 0);
        }
        match f.read_at(&mut buf[len..len + CHUNK], len as u64) {
            Ok(n) => {
                len += n;
                if n < CHUNK {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_kept_files_and_closes_unused_ones() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("f");
        std::fs::write(&p, "1\n").expect("write");
        let mut r = Reader::new();
        r.begin_pass();
        assert_eq!(r.u64(&p), Some(1));
        assert_eq!(r.open_files(), 1);
        r.end_pass();
        // Rewritten in place: the kept descriptor sees the new contents.
        std::fs::write(&p, "22\n").expect("write");
        r.begin_pass();
        assert_eq!(r.u64(&p), Some(22));
        r.end_pass();
        r.begin_pass();
        r.end_pass();
        assert_eq!(r.open_files(), 0);
        assert_eq!(r.u64(&t.path().join("missing")), None);
    }

    #[test]
    fn proc_files_regenerate_on_pread() {
        // /proc/self/stat changes between reads (utime grows); two reads through the kept
        // descriptor must both parse, and the descriptor must still be the same one.
        let mut r = Reader::new();
        r.begin_pass();
        let a = r.text(Path::new("/proc/self/stat")).map(str::to_string);
        let spin: u64 = (0..5_000_000u64).fold(0, |a, b| a.wrapping_add(b * b));
        std::hint::black_box(spin);
        let b = r.text(Path::new("/proc/self/stat")).map(str::to_string);
        assert!(a.is_some() && b.is_some());
        assert_eq!(r.open_files(), 1);
    }
}
