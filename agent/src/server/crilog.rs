//! Reading CRI log records (`<RFC3339Nano> <stdout|stderr> <F|P> <content>`, the format the
//! shim's supervisor writes, containerd `internal/cri/io/logger.go`) back into the lines a user
//! wrote, and kubelet's log options on them: `sinceSeconds`/`sinceTime`, `timestamps`,
//! `tailLines`, `limitBytes` (`pkg/kubelet/kuberuntime/logs/logs.go`). Pure: no files here.
//!
//! Partial (`P`) records are joined with the records that follow on the same stream up to the
//! closing `F`, so a 40 KiB line cut into three records comes back as one line; the joined line
//! carries the time of its first record. Unlike kubelet (which counts records), `tailLines`
//! counts these joined lines.

use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::VecDeque;

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One record of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub time: DateTime<Utc>,
    pub stream: Stream,
    /// `P`: the line continues in the next record of this stream.
    pub partial: bool,
    pub content: Vec<u8>,
}

/// Why a record did not parse (the reader skips it and logs the reason once).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the record has no {0} field")]
    Missing(&'static str),
    #[error("the record time {0:?} is not RFC 3339")]
    Time(String),
    #[error("the record stream {0:?} is neither stdout nor stderr")]
    Stream(String),
}

fn split_field<'a>(rest: &'a [u8], what: &'static str) -> Result<(&'a [u8], &'a [u8]), ParseError> {
    match rest.iter().position(|b| *b == b' ') {
        Some(i) => Ok((&rest[..i], &rest[i + 1..])),
        None if !rest.is_empty() => Ok((rest, &[])),
        None => Err(ParseError::Missing(what)),
    }
}

/// Parses one record, without its trailing newline.
pub fn parse(line: &[u8]) -> Result<Record, ParseError> {
    let (ts, rest) = split_field(line, "time")?;
    let ts = String::from_utf8_lossy(ts);
    let time = DateTime::parse_from_rfc3339(&ts)
        .map_err(|_| ParseError::Time(ts.to_string()))?
        .with_timezone(&Utc);
    let (stream, rest) = split_field(rest, "stream")?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => return Err(ParseError::Stream(String::from_utf8_lossy(other).into())),
    };
    // Tags are `:`-separated (CRI `LogTag`); only `P` (partial) changes the meaning.
    let (tags, content) = split_field(rest, "tag")?;
    let partial = tags.split(|b| *b == b':').any(|t| t == b"P");
    Ok(Record {
        time,
        stream,
        partial,
        content: content.to_vec(),
    })
}

/// A line as the container wrote it: the joined records, ending in `\n` unless the stream
/// closed in the middle of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub time: DateTime<Utc>,
    pub stream: Stream,
    pub content: Vec<u8>,
}

/// Joins partial records into lines, one pending line per stream.
#[derive(Debug, Default)]
pub struct Joiner {
    pending: [Option<Line>; 2],
}

impl Joiner {
    /// Feeds one record; returns the line it completes, if any.
    pub fn push(&mut self, r: Record) -> Option<Line> {
        let slot = &mut self.pending[r.stream as usize];
        let mut line = slot.take().unwrap_or(Line {
            time: r.time,
            stream: r.stream,
            content: Vec::new(),
        });
        line.content.extend_from_slice(&r.content);
        if r.partial {
            *slot = Some(line);
            None
        } else {
            line.content.push(b'\n');
            Some(line)
        }
    }

    /// The unterminated lines left when the output ended (written as they are, without a
    /// newline, as kubelet does), oldest first.
    pub fn finish(&mut self) -> Vec<Line> {
        let mut left: Vec<Line> = self.pending.iter_mut().filter_map(Option::take).collect();
        left.sort_by_key(|l| l.time);
        left
    }
}

/// kubelet's per-request options once validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub follow: bool,
    pub previous: bool,
    pub since: Option<DateTime<Utc>>,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
}

/// The bytes a line turns into, or None when `since` filters it out.
pub fn render(line: &Line, opts: &Options) -> Option<Vec<u8>> {
    if opts.since.is_some_and(|s| line.time < s) {
        return None;
    }
    if !opts.timestamps {
        return Some(line.content.clone());
    }
    let ts = line.time.to_rfc3339_opts(SecondsFormat::Nanos, true);
    let mut out = Vec::with_capacity(ts.len() + 1 + line.content.len());
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&line.content);
    Some(out)
}

/// Keeps the last `n` lines fed to it (`tailLines`; None keeps everything).
#[derive(Debug)]
pub struct Tail {
    limit: Option<usize>,
    lines: VecDeque<Line>,
}

impl Tail {
    pub fn new(limit: Option<u64>) -> Tail {
        Tail {
            limit: limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            lines: VecDeque::new(),
        }
    }

    pub fn push(&mut self, line: Line) {
        if self.limit == Some(0) {
            return;
        }
        self.lines.push_back(line);
        if let Some(n) = self.limit
            && self.lines.len() > n
        {
            self.lines.pop_front();
        }
    }

    pub fn into_lines(self) -> VecDeque<Line> {
        self.lines
    }
}

/// `limitBytes`: cuts the output after that many bytes, possibly mid-line, like kubelet's
/// `LimitWriter`.
#[derive(Debug, Clone)]
pub struct Limit {
    left: Option<u64>,
}

impl Limit {
    pub fn new(limit: Option<u64>) -> Limit {
        Limit { left: limit }
    }

    /// The part of `data` still allowed.
    pub fn take(&mut self, mut data: Vec<u8>) -> Vec<u8> {
        if let Some(left) = self.left.as_mut() {
            let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
            data.truncate(n);
            *left -= n as u64;
        }
        data
    }

    pub fn exhausted(&self) -> bool {
        self.left == Some(0)
    }
}

/// Parses, joins, tails and renders a whole log text at once (the non-follow path over the
/// files concatenated oldest first). Unparseable records are skipped.
pub fn render_all(text: &[u8], opts: &Options) -> Vec<u8> {
    let mut joiner = Joiner::default();
    let mut tail = Tail::new(opts.tail_lines);
    for raw in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if let Ok(r) = parse(raw)
            && let Some(line) = joiner.push(r)
        {
            tail.push(line);
        }
    }
    for line in joiner.finish() {
        tail.push(line);
    }
    let mut limit = Limit::new(opts.limit_bytes);
    let mut out = Vec::new();
    for line in tail.into_lines() {
        if limit.exhausted() {
            break;
        }
        if let Some(bytes) = render(&line, opts) {
            out.extend(limit.take(bytes));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-11-27T08:00:00.000000001Z stdout F one
2026-11-27T08:00:01.000000000Z stderr F two (err)
2026-11-27T08:00:02.000000000Z stdout P thr
2026-11-27T08:00:02.500000000Z stderr F interleaved
2026-11-27T08:00:03.000000000Z stdout P e
2026-11-27T08:00:04.000000000Z stdout F e!
2026-11-27T08:00:05.000000000Z stdout F 
2026-11-27T08:00:06.000000000Z stdout P unterminated
";

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn text(opts: &Options) -> String {
        String::from_utf8(render_all(LOG.as_bytes(), opts)).expect("utf8")
    }

    #[test]
    fn parses_records() {
        let r = parse(b"2026-11-27T08:00:00.123456789Z stderr P a b ").expect("parse");
        assert_eq!(r.stream, Stream::Stderr);
        assert!(r.partial);
        assert_eq!(r.content, b"a b ");
        assert_eq!(r.time.timestamp_subsec_nanos(), 123_456_789);
        let empty = parse(b"2026-11-27T08:00:00Z stdout F").expect("no content");
        assert!(empty.content.is_empty() && !empty.partial);
        assert!(
            parse(b"2026-11-27T08:00:00Z stdout F:P x")
                .expect("tags")
                .partial
        );
        assert_eq!(
            parse(b"yesterday stdout F x"),
            Err(ParseError::Time("yesterday".into()))
        );
        assert_eq!(
            parse(b"2026-11-27T08:00:00Z stdin F x"),
            Err(ParseError::Stream("stdin".into()))
        );
        assert_eq!(
            parse(b"2026-11-27T08:00:00Z"),
            Err(ParseError::Missing("stream"))
        );
        assert_eq!(parse(b""), Err(ParseError::Missing("time")));
    }

    #[test]
    fn joins_partials_per_stream_and_keeps_the_unterminated_tail() {
        assert_eq!(
            text(&Options::default()),
            "one\ntwo (err)\ninterleaved\nthree!\n\nunterminated"
        );
    }

    #[test]
    fn tail_counts_joined_lines() {
        let tail = |n| {
            text(&Options {
                tail_lines: Some(n),
                ..Default::default()
            })
        };
        assert_eq!(tail(2), "\nunterminated");
        assert_eq!(tail(3), "three!\n\nunterminated");
        assert_eq!(tail(0), "");
        assert_eq!(tail(100), text(&Options::default()));
    }

    #[test]
    fn since_uses_the_first_record_of_a_line() {
        let since = |s| {
            text(&Options {
                since: Some(at(s)),
                ..Default::default()
            })
        };
        // "three!" started at :02, so a since of :03 drops it although it ended at :04.
        assert_eq!(since("2026-11-27T08:00:03Z"), "\nunterminated");
        assert_eq!(
            since("2026-11-27T08:00:02Z"),
            "interleaved\nthree!\n\nunterminated"
        );
        // Inclusive, to the nanosecond.
        assert!(since("2026-11-27T08:00:00.000000001Z").starts_with("one\n"));
        assert!(since("2026-11-27T08:00:00.000000002Z").starts_with("two"));
    }

    #[test]
    fn tail_applies_before_since() {
        let out = text(&Options {
            tail_lines: Some(4),
            since: Some(at("2026-11-27T08:00:05Z")),
            ..Default::default()
        });
        assert_eq!(out, "\nunterminated");
    }

    #[test]
    fn timestamps_prefix_rfc3339_nano() {
        let out = text(&Options {
            timestamps: true,
            tail_lines: Some(3),
            ..Default::default()
        });
        assert_eq!(
            out,
            "2026-11-27T08:00:02.000000000Z three!\n2026-11-27T08:00:05.000000000Z \n2026-11-27T08:00:06.000000000Z unterminated"
        );
    }

    #[test]
    fn limit_bytes_cuts_mid_line() {
        let out = text(&Options {
            limit_bytes: Some(6),
            ..Default::default()
        });
        assert_eq!(out, "one\ntw");
        let mut l = Limit::new(Some(3));
        assert_eq!(l.take(b"ab".to_vec()), b"ab");
        assert_eq!(l.take(b"cd".to_vec()), b"c");
        assert!(l.exhausted());
        assert_eq!(l.take(b"ef".to_vec()), b"");
        assert_eq!(Limit::new(None).take(b"x".to_vec()), b"x");
    }

    #[test]
    fn skips_records_that_do_not_parse() {
        let log = b"garbage\n2026-11-27T08:00:00Z stdout F ok\n";
        assert_eq!(render_all(log, &Options::default()), b"ok\n");
    }
}
