//! CRI container log files: `<RFC3339Nano> <stdout|stderr> <F|P> <content>` (the kubelet's
//! format, containerd `internal/cri/io/logger.go`), with size-based rotation
//! (`<path>.1`, `<path>.2`, ... like the kubelet's `containerLogMaxSize`/`MaxFiles`).
//!
//! A complete line is tagged `F`; a line longer than [`MAX_LINE`] is cut into `P` parts and
//! its last part `F`; output still unterminated when the stream closes is written as `P`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Longest content written in one record (containerd's default 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// fd 1.
    Stdout,
    /// fd 2.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// An open CRI log.
#[derive(Debug)]
pub struct CriLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
    pending: [Vec<u8>; 2],
}

fn open(path: &Path) -> std::io::Result<(File, u64)> {
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let size = f.metadata()?.len();
    Ok((f, size))
}

impl CriLog {
    /// Open (append) `path`; rotate when a write would pass `max_size` bytes (0 = never),
    /// keeping at most `max_files` files including the current one.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> std::io::Result<CriLog> {
        let (file, size) = open(path)?;
        Ok(CriLog {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Close and reopen the file (after someone else rotated it).
    pub fn reopen(&mut self) -> std::io::Result<()> {
        let (file, size) = open(&self.path)?;
        self.file = file;
        self.size = size;
        Ok(())
    }

    /// Feed bytes read from `stream`.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let idx = stream as usize;
        let mut buf = std::mem::take(&mut self.pending[idx]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
            let line = &buf[start..start + nl];
            self.emit_line(stream, line);
            start += nl + 1;
        }
        let mut rest = buf.split_off(start);
        while rest.len() >= MAX_LINE {
            let tail = rest.split_off(MAX_LINE);
            self.record(stream, 'P', &rest);
            rest = tail;
        }
        self.pending[idx] = rest;
    }

    /// Write what is left of an unterminated line as a partial record (stream closed).
    pub fn finish(&mut self, stream: Stream) {
        let rest = std::mem::take(&mut self.pending[stream as usize]);
        if !rest.is_empty() {
            self.record(stream, 'P', &rest);
        }
    }

    /// Flush to disk.
    pub fn sync(&mut self) {
        let _ = self.file.flush();
        let _ = self.file.sync_data();
    }

    fn emit_line(&mut self, stream: Stream, line: &[u8]) {
        let mut chunks = line.chunks(MAX_LINE).peekable();
        if chunks.peek().is_none() {
            self.record(stream, 'F', b"");
        }
        while let Some(c) = chunks.next() {
            let tag = if chunks.peek().is_some() { 'P' } else { 'F' };
            self.record(stream, tag, c);
        }
    }

    fn record(&mut self, stream: Stream, tag: char, content: &[u8]) {
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut rec = Vec::with_capacity(content.len() + 48);
        rec.extend_from_slice(ts.as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.name().as_bytes());
        rec.push(b' ');
        rec.push(tag as u8);
        rec.push(b' ');
        rec.extend_from_slice(content);
        rec.push(b'\n');
        if self.max_size > 0 && self.size > 0 && self.size + rec.len() as u64 > self.max_size {
            self.rotate();
        }
        if self.file.write_all(&rec).is_ok() {
            self.size += rec.len() as u64;
        }
    }

    fn rotate(&mut self) {
        let name = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        if self.max_files > 1 {
            for i in (1..self.max_files - 1).rev() {
                let _ = std::fs::rename(name(i), name(i + 1));
            }
            let _ = std::fs::rename(&self.path, name(1));
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
        if let Ok((f, size)) = open(&self.path) {
            self.file = f;
            self.size = size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(path: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .expect("read log")
            .lines()
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let ts = it.next().expect("ts");
                assert!(ts.ends_with('Z') && ts.len() == 30, "{ts}");
                (
                    it.next().expect("stream").to_string(),
                    it.next().expect("tag").to_string(),
                    it.next().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn lines_partials_and_streams() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("c.log");
        let mut log = CriLog::open(&p, 0, 1).expect("open");
        log.write(Stream::Stdout, b"line one\nhal");
        log.write(Stream::Stderr, b"err\n");
        log.write(Stream::Stdout, b"f\nno-newline");
        log.finish(Stream::Stdout);
        let r = records(&p);
        let want = [
            ("stdout", "F", "line one"),
            ("stderr", "F", "err"),
            ("stdout", "F", "half"),
            ("stdout", "P", "no-newline"),
        ];
        assert_eq!(r.len(), want.len());
        for (got, w) in r.iter().zip(want) {
            assert_eq!((got.0.as_str(), got.1.as_str(), got.2.as_str()), w);
        }
    }

    #[test]
    fn long_lines_are_split() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("c.log");
        let mut log = CriLog::open(&p, 0, 1).expect("open");
        let mut line = vec![b'x'; MAX_LINE + 10];
        line.push(b'\n');
        log.write(Stream::Stdout, &line);
        let r = records(&p);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].1.as_str(), r[0].2.len()), ("P", MAX_LINE));
        assert_eq!((r[1].1.as_str(), r[1].2.len()), ("F", 10));
    }

    #[test]
    fn rotation_keeps_max_files() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("c.log");
        let mut log = CriLog::open(&p, 200, 3).expect("open");
        for i in 0..40 {
            log.write(Stream::Stdout, format!("message number {i}\n").as_bytes());
        }
        assert!(p.exists());
        assert!(t.path().join("c.log.1").exists());
        assert!(t.path().join("c.log.2").exists());
        assert!(!t.path().join("c.log.3").exists());
        assert!(std::fs::metadata(&p).expect("meta").len() <= 200);
        let last = records(&p);
        assert_eq!(last.last().expect("record").2, "message number 39");
    }
}
