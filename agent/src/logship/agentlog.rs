//! The agent's own logs, shipped like a container's: a `tracing` layer formats each event
//! (info and above) into a line and appends it to a bounded in-memory queue that the shipper
//! drains. The layer never blocks on the network and never logs: when the queue is full (the
//! control plane is down for long) new lines are dropped and counted, and the shipper reports
//! the count in its next line.
//!
//! The queue is process-wide (one `OnceLock`), like the tracing dispatcher it extends: the
//! layer is installed in `main.rs` before the agent's loops exist.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Lines kept while the control plane cannot take them.
pub const CAPACITY: usize = 20_000;

/// One formatted event.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentLine {
    pub time_ns: i64,
    /// Warnings and errors go to the "stderr" stream.
    pub error: bool,
    pub text: String,
}

#[derive(Debug, Default)]
pub struct Queue {
    lines: Mutex<VecDeque<AgentLine>>,
    dropped: AtomicU64,
}

impl Queue {
    /// Appends a line, or counts it as dropped when full.
    pub fn offer(&self, line: AgentLine) {
        match self.lines.lock() {
            Ok(mut q) if q.len() < CAPACITY => q.push_back(line),
            _ => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes up to `max` lines, oldest first.
    pub fn take(&self, max: usize) -> Vec<AgentLine> {
        match self.lines.lock() {
            Ok(mut q) => {
                let n = q.len().min(max);
                q.drain(..n).collect()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Lines waiting.
    pub fn len(&self) -> usize {
        self.lines.lock().map(|q| q.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lines dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

static QUEUE: OnceLock<Queue> = OnceLock::new();

/// The process's queue (created on first use).
pub fn queue() -> &'static Queue {
    QUEUE.get_or_init(Queue::default)
}

/// The layer to add to the agent's subscriber.
pub fn layer() -> ShipLayer {
    ShipLayer { queue: queue() }
}

pub struct ShipLayer {
    queue: &'static Queue,
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

/// `LEVEL target: message key=value ...`, as the stderr formatter prints it.
pub fn format(level: &Level, target: &str, message: &str, rest: &str) -> String {
    format!("{level:>5} {target}: {message}{rest}")
}

impl<S: Subscriber> Layer<S> for ShipLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // Debug and trace (more verbose than INFO) stay local.
        if *meta.level() > Level::INFO {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        self.queue.offer(AgentLine {
            time_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            error: *meta.level() <= Level::WARN,
            text: format(meta.level(), meta.target(), &f.message, &f.rest),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_become_lines_and_overflow_is_counted() {
        let q: &'static Queue = Box::leak(Box::default());
        let subscriber = tracing_subscriber::registry().with(ShipLayer { queue: q });
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(pod = "web", "started");
            tracing::debug!("not shipped");
            tracing::warn!("careful");
        });
        let lines = q.take(10);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].text.ends_with(": started pod=\"web\""),
            "{}",
            lines[0].text
        );
        assert!(!lines[0].error && lines[1].error);
        for i in 0..CAPACITY + 5 {
            q.offer(AgentLine {
                time_ns: i as i64,
                error: false,
                text: String::new(),
            });
        }
        assert_eq!(q.take_dropped(), 5);
        assert_eq!(q.take(usize::MAX).len(), CAPACITY);
        assert!(q.is_empty());
    }
}
