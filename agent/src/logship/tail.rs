//! Following one container instance's CRI log file through the supervisor's rotation
//! (`<n>.log` renamed to `<n>.log.1`, `.1` to `.2`, ..., then a new `<n>.log`; see
//! `shim/src/supervisor/log.rs`). The file is tracked by inode: when the path names another
//! inode, the old file is found among the rotated names and read to its end before the next
//! newer one. Positions are logical: `base` (the bytes of earlier files) plus the offset in the
//! current file, so they keep increasing across rotations.

use super::cri::{Joiner, ShipLine};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How many rotated files the supervisor may keep (`--log-max-files` is 5 by default).
const MAX_ROTATED: u32 = 9;

/// Where a source was read up to; what the shipper persists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offset {
    /// The file being read (0: not opened yet).
    pub inode: u64,
    /// Bytes of that file consumed.
    pub offset: u64,
    /// Logical position of that file's first byte.
    pub base: u64,
}

impl Offset {
    pub fn logical(&self) -> u64 {
        self.base + self.offset
    }
}

/// What one `read` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadResult {
    pub bytes: u64,
    /// Everything written so far has been read.
    pub caught_up: bool,
    /// Neither the file nor a rotated copy of it exists.
    pub missing: bool,
}

#[derive(Debug)]
pub struct Tailer {
    /// The current `<n>.log` (its folder may move when a pod is retired).
    pub path: PathBuf,
    at: Offset,
    joiner: Joiner,
    /// Times the tracked file vanished before it was read to its end (lines lost).
    pub lost: u64,
    buf: Vec<u8>,
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

impl Tailer {
    pub fn new(path: PathBuf, at: Offset) -> Tailer {
        Tailer {
            path,
            at,
            joiner: Joiner::default(),
            lost: 0,
            buf: Vec::new(),
        }
    }

    /// The read point to persist: never past the first record of a line still open.
    pub fn resume(&self) -> Offset {
        let r = self.joiner.resume_at(self.at.logical());
        if r >= self.at.base {
            Offset {
                offset: r - self.at.base,
                ..self.at
            }
        } else {
            // The open line began in an earlier (rotated) file: resume at this file's start.
            Offset {
                offset: 0,
                ..self.at
            }
        }
    }

    pub fn bad_records(&self) -> u64 {
        self.joiner.bad_records
    }

    /// Reads at most about `budget` bytes of new records, appending the lines they complete.
    pub fn read(&mut self, budget: usize, out: &mut Vec<ShipLine>) -> std::io::Result<ReadResult> {
        let mut result = ReadResult::default();
        // Bounded: each turn follows one rotation or one race with it.
        for _ in 0..1000 {
            let left = budget.saturating_sub(result.bytes as usize);
            if left == 0 {
                return Ok(result);
            }
            let current = inode(&self.path);
            if self.at.inode == 0 {
                match current {
                    Some(i) => self.at.inode = i,
                    None => {
                        result.missing = true;
                        result.caught_up = true;
                        return Ok(result);
                    }
                }
            }
            if current == Some(self.at.inode) {
                let path = self.path.clone();
                // None: rotated between the stat and the open; look again.
                if let Some((n, eof)) = self.read_file(&path, left, out)? {
                    result.bytes += n;
                    result.caught_up = eof;
                    return Ok(result);
                }
                continue;
            }
            // The path names another file, or none: ours was rotated (or deleted).
            let found = (1..=MAX_ROTATED)
                .map(|k| (k, rotated(&self.path, k)))
                .find(|(_, p)| inode(p) == Some(self.at.inode));
            match found {
                Some((k, old)) => {
                    let Some((n, eof)) = self.read_file(&old, left, out)? else {
                        continue;
                    };
                    result.bytes += n;
                    if !eof {
                        return Ok(result);
                    }
                    // Finished: continue with the next newer file from its start.
                    let next = match self.successor(k) {
                        Some(i) => i,
                        None => {
                            // Ours was rotated away meanwhile: which file came next is unknown.
                            self.lost += 1;
                            current.unwrap_or(0)
                        }
                    };
                    self.at = Offset {
                        inode: next,
                        offset: 0,
                        base: self.at.logical(),
                    };
                    if self.at.inode == 0 {
                        result.caught_up = true;
                        return Ok(result);
                    }
                }
                None => match current {
                    None => {
                        result.missing = true;
                        result.caught_up = true;
                        return Ok(result);
                    }
                    Some(i) => {
                        // Rotated away faster than we read: skip to the current file.
                        self.lost += 1;
                        self.at = Offset {
                            inode: i,
                            offset: 0,
                            base: self.at.logical(),
                        };
                    }
                },
            }
        }
        Ok(result)
    }

    /// Where our inode is now: 0 for the live path, k for `.k`.
    fn position(&self) -> Option<u32> {
        (0..=MAX_ROTATED).find(|k| {
            let p = if *k == 0 {
                self.path.clone()
            } else {
                rotated(&self.path, *k)
            };
            inode(&p) == Some(self.at.inode)
        })
    }

    /// The inode of the file one rotation newer than ours (last seen at `.k`). A rotation
    /// renames the oldest files first, so when ours is still at `.k` after we looked at `.k-1`,
    /// what we saw there was our successor; otherwise look again.
    fn successor(&self, mut k: u32) -> Option<u64> {
        for _ in 0..100 {
            let newer = if k > 1 {
                rotated(&self.path, k - 1)
            } else {
                self.path.clone()
            };
            let candidate = inode(&newer);
            if inode(&rotated(&self.path, k)) == Some(self.at.inode) {
                return candidate;
            }
            k = self.position().filter(|p| *p > 0)?;
        }
        None
    }

    /// Reads `path` (which held our inode when we looked) from our offset; returns (bytes
    /// consumed, at EOF), or None when the name holds another file now (a rotation ran between
    /// the look and the open: the caller looks again).
    fn read_file(
        &mut self,
        path: &Path,
        budget: usize,
        out: &mut Vec<ShipLine>,
    ) -> std::io::Result<Option<(u64, bool)>> {
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = f.metadata()?;
        if meta.ino() != self.at.inode {
            return Ok(None);
        }
        let size = meta.len();
        if size < self.at.offset {
            // Truncated in place: what was past the new end is gone.
            self.at.base = self.at.logical();
            self.at.offset = 0;
        }
        let want = (size - self.at.offset).min(budget as u64) as usize;
        if want == 0 {
            return Ok(Some((0, true)));
        }
        f.seek(SeekFrom::Start(self.at.offset))?;
        self.buf.clear();
        self.buf.resize(want, 0);
        let mut got = 0;
        while got < want {
            match f.read(&mut self.buf[got..])? {
                0 => break,
                n => got += n,
            }
        }
        let used = self.joiner.feed(self.at.logical(), &self.buf[..got], out) as u64;
        self.at.offset += used;
        // At EOF when everything up to the size seen is consumed; a record still being written
        // (no newline yet) counts as "caught up" too, it completes on a later read.
        let eof = self.at.offset + (got as u64 - used) >= size;
        Ok(Some((used, eof)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, from: usize, to: usize) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open");
        for i in from..to {
            writeln!(f, "2026-11-27T10:00:00.{i:09}Z stdout F line {i}").expect("write");
        }
    }

    fn numbers(out: &[ShipLine]) -> Vec<usize> {
        out.iter()
            .map(|l| l.text.trim_start_matches("line ").parse().expect("number"))
            .collect()
    }

    #[test]
    fn follows_rotation_without_loss_or_repeats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("0.log");
        append(&log, 0, 10);
        let mut t = Tailer::new(log.clone(), Offset::default());
        let mut out = Vec::new();
        let r = t.read(1 << 20, &mut out).expect("read");
        assert!(r.caught_up && !r.missing);
        append(&log, 10, 15);
        // Two rotations before the next read.
        std::fs::rename(&log, rotated(&log, 1)).expect("rotate");
        append(&log, 15, 20);
        std::fs::rename(rotated(&log, 1), rotated(&log, 2)).expect("rotate");
        std::fs::rename(&log, rotated(&log, 1)).expect("rotate");
        append(&log, 20, 25);
        while !t.read(100, &mut out).expect("read").caught_up {}
        assert_eq!(numbers(&out), (0..25).collect::<Vec<_>>());
        let pos: Vec<u64> = out.iter().map(|l| l.pos).collect();
        assert!(
            pos.windows(2).all(|w| w[0] < w[1]),
            "positions increase: {pos:?}"
        );
        assert_eq!(t.lost, 0);
    }

    #[test]
    fn resumes_from_a_saved_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("0.log");
        append(&log, 0, 10);
        let mut t = Tailer::new(log.clone(), Offset::default());
        let mut out = Vec::new();
        t.read(1 << 20, &mut out).expect("read");
        let saved = t.resume();
        append(&log, 10, 20);
        let mut again = Tailer::new(log.clone(), saved);
        let mut more = Vec::new();
        again.read(1 << 20, &mut more).expect("read");
        assert_eq!(numbers(&more), (10..20).collect::<Vec<_>>());
        assert!(more[0].pos > out[9].pos);
    }

    #[test]
    fn resume_point_stays_before_an_open_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("0.log");
        let first = "2026-11-27T10:00:00Z stdout F whole\n";
        std::fs::write(&log, format!("{first}2026-11-27T10:00:01Z stdout P half")).expect("write");
        let mut t = Tailer::new(log.clone(), Offset::default());
        let mut out = Vec::new();
        t.read(1 << 20, &mut out).expect("read");
        assert_eq!(out.len(), 1);
        // The partial record has no newline yet: not consumed.
        assert_eq!(t.resume().offset, first.len() as u64);
        append_raw(&log, "\n2026-11-27T10:00:02Z stderr F other\n");
        t.read(1 << 20, &mut out).expect("read");
        assert_eq!(out.len(), 2, "the P record is read, its line still open");
        assert_eq!(t.resume().offset, first.len() as u64);
        append_raw(&log, "2026-11-27T10:00:03Z stdout F done\n");
        t.read(1 << 20, &mut out).expect("read");
        assert_eq!(out[2].text, "halfdone");
        assert_eq!(
            t.resume().offset,
            std::fs::metadata(&log).expect("stat").len()
        );
    }

    fn append_raw(path: &Path, s: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open");
        f.write_all(s.as_bytes()).expect("write");
    }

    #[test]
    fn a_missing_file_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut t = Tailer::new(dir.path().join("none.log"), Offset::default());
        let r = t.read(100, &mut Vec::new()).expect("read");
        assert!(r.missing);
    }
}
