//! CRI log records (`<RFC3339Nano> <stdout|stderr> <F|P> <text>`, parsed by
//! `server::crilog::parse`) turned into shippable lines with positions. Pure: bytes in, lines
//! out.
//!
//! A line's position is the logical byte position of the record that completed it (the `F`
//! record, or the last `P` record when the line is cut at `MAX_LINE`). Positions increase in
//! the order lines complete, which is the order they are shipped, so the store can drop a
//! resend by comparing with the highest position it has. The safe resume offset is the start
//! of the oldest line still waiting for its `F` record, else the end of the last record read.

use crate::server::crilog::{self, Stream};

/// A joined line longer than this is shipped in pieces of this size (the push body is 3 MiB
/// at most, and JSON escaping can grow text up to six times).
pub const MAX_LINE: usize = 256 * 1024;

/// One line ready to ship.
#[derive(Debug, Clone, PartialEq)]
pub struct ShipLine {
    /// Logical position of the record that completed the line.
    pub pos: u64,
    /// Unix ns of the line's first record.
    pub time_ns: i64,
    /// 0 stdout, 1 stderr.
    pub stream: u8,
    /// Without the trailing newline.
    pub text: String,
}

#[derive(Debug, Clone)]
struct Pending {
    start: u64,
    time_ns: i64,
    content: Vec<u8>,
}

/// Joins `P` records with the records that follow on the same stream.
#[derive(Debug, Default, Clone)]
pub struct Joiner {
    pending: [Option<Pending>; 2],
    /// Records that did not parse (skipped).
    pub bad_records: u64,
}

impl Joiner {
    /// Where a restarted reader must begin so no line is lost: the start of the oldest
    /// pending line, else `end`.
    pub fn resume_at(&self, end: u64) -> u64 {
        self.pending
            .iter()
            .flatten()
            .map(|p| p.start)
            .fold(end, u64::min)
    }

    /// Feeds the record starting at logical position `pos` (without its newline).
    pub fn push(&mut self, pos: u64, record: &[u8], out: &mut Vec<ShipLine>) {
        let r = match crilog::parse(record) {
            Ok(r) => r,
            Err(_) => {
                self.bad_records += 1;
                return;
            }
        };
        let idx = match r.stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        };
        let slot = &mut self.pending[idx];
        let mut p = slot.take().unwrap_or(Pending {
            start: pos,
            time_ns: r.time.timestamp_nanos_opt().unwrap_or_default(),
            content: Vec::new(),
        });
        p.content.extend_from_slice(&r.content);
        if r.partial && p.content.len() < MAX_LINE {
            *slot = Some(p);
            return;
        }
        out.push(ShipLine {
            pos,
            time_ns: p.time_ns,
            stream: idx as u8,
            text: String::from_utf8_lossy(&p.content).into_owned(),
        });
    }

    /// Feeds every complete record of `buf`, which starts at logical position `base`; returns
    /// how many bytes were consumed (up to and including the last newline).
    pub fn feed(&mut self, base: u64, buf: &[u8], out: &mut Vec<ShipLine>) -> usize {
        let mut at = 0usize;
        while let Some(nl) = buf[at..].iter().position(|b| *b == b'\n') {
            let record = &buf[at..at + nl];
            if !record.is_empty() {
                self.push(base + at as u64, record, out);
            }
            at += nl + 1;
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ts: &str, stream: &str, tag: &str, text: &str) -> String {
        format!("2026-11-27T10:00:{ts}.000000001Z {stream} {tag} {text}\n")
    }

    #[test]
    fn full_lines_carry_their_record_position() {
        let data = rec("00", "stdout", "F", "one") + &rec("01", "stderr", "F", "two");
        let mut j = Joiner::default();
        let mut out = Vec::new();
        let used = j.feed(1000, data.as_bytes(), &mut out);
        assert_eq!(used, data.len());
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].pos, out[0].stream, out[0].text.as_str()),
            (1000, 0, "one")
        );
        let second = 1000 + rec("00", "stdout", "F", "one").len() as u64;
        assert_eq!(
            (out[1].pos, out[1].stream, out[1].text.as_str()),
            (second, 1, "two")
        );
        assert_eq!(j.resume_at(5000), 5000);
    }

    #[test]
    fn partial_records_join_per_stream() {
        let a = rec("00", "stdout", "P", "hel");
        let b = rec("01", "stderr", "F", "between");
        let c = rec("02", "stdout", "F", "lo");
        let mut j = Joiner::default();
        let mut out = Vec::new();
        j.feed(0, (a.clone() + &b).as_bytes(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text, "between");
        // The stdout line is still open: a restart must read again from its first record.
        let end = (a.len() + b.len()) as u64;
        assert_eq!(j.resume_at(end), 0);
        j.feed(end, c.as_bytes(), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].text, "hello");
        assert_eq!(out[1].pos, end, "the position of the closing record");
        assert_eq!(out[1].time_ns, out[1].time_ns.max(0));
        assert!(out[1].pos > out[0].pos);
        assert_eq!(j.resume_at(end + c.len() as u64), end + c.len() as u64);
    }

    #[test]
    fn an_unfinished_record_is_left_for_later() {
        let whole = rec("00", "stdout", "F", "done");
        let data = whole.clone() + "2026-11-27T10:00:01Z stdout F not yet";
        let mut j = Joiner::default();
        let mut out = Vec::new();
        assert_eq!(j.feed(0, data.as_bytes(), &mut out), whole.len());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn bad_records_are_skipped_and_counted() {
        let data = "garbage\n".to_string() + &rec("00", "stdout", "F", "ok");
        let mut j = Joiner::default();
        let mut out = Vec::new();
        j.feed(0, data.as_bytes(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(j.bad_records, 1);
    }

    #[test]
    fn endless_partial_lines_are_cut() {
        let chunk = "x".repeat(16 * 1024);
        let mut j = Joiner::default();
        let mut out = Vec::new();
        let mut pos = 0u64;
        for _ in 0..20 {
            let r = rec("00", "stdout", "P", &chunk);
            j.feed(pos, r.as_bytes(), &mut out);
            pos += r.len() as u64;
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text.len(), MAX_LINE);
    }
}
