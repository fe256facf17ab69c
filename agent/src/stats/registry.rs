//! The agent's own figures for `/metrics`: a fixed set of histograms and counters with kubelet's
//! names, which the executor, sync loop and image puller bump through `Stats::registry()`.
//! Each metric has at most one label; its values are kept in a small mutex-guarded map (these
//! are bumped a few times per pod, not per packet).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// kubelet's buckets for pod start duration (pkg/kubelet/metrics: PodStartDuration).
const POD_START_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];
/// Prometheus client defaults (DefBuckets), used by kubelet's operation durations.
const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const PULL_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 180.0, 300.0,
];
const HOUSEKEEPING_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

#[derive(Debug, Clone, Default)]
struct HistState {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A histogram with an optional label (`label` empty: unlabelled).
pub struct Histogram {
    pub name: &'static str,
    pub help: &'static str,
    pub label: &'static str,
    buckets: &'static [f64],
    state: Mutex<BTreeMap<String, HistState>>,
}

impl Histogram {
    const fn new(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        buckets: &'static [f64],
    ) -> Histogram {
        Histogram {
            name,
            help,
            label,
            buckets,
            state: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, seconds: f64) {
        self.observe_with("", seconds);
    }

    /// Observes under label value `value` (e.g. `operation_type="create"`).
    pub fn observe_with(&self, value: &str, seconds: f64) {
        let Ok(mut s) = self.state.lock() else { return };
        let h = s.entry(value.to_string()).or_insert_with(|| HistState {
            counts: vec![0; self.buckets.len()],
            ..Default::default()
        });
        for (i, b) in self.buckets.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// Observations so far under `value`.
    pub fn count(&self, value: &str) -> u64 {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.get(value).map(|h| h.count))
            .unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        let Ok(s) = self.state.lock() else { return };
        for (value, h) in s.iter() {
            let lbl = if self.label.is_empty() {
                String::new()
            } else {
                format!("{}=\"{}\",", self.label, escape(value))
            };
            for (i, b) in self.buckets.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{}_bucket{{{lbl}le=\"{b}\"}} {}",
                    self.name, h.counts[i]
                );
            }
            let _ = writeln!(out, "{}_bucket{{{lbl}le=\"+Inf\"}} {}", self.name, h.count);
            let lbl = lbl.trim_end_matches(',');
            let braces = if lbl.is_empty() {
                String::new()
            } else {
                format!("{{{lbl}}}")
            };
            let _ = writeln!(out, "{}_sum{braces} {}", self.name, h.sum);
            let _ = writeln!(out, "{}_count{braces} {}", self.name, h.count);
        }
    }
}

/// A counter with an optional label.
pub struct Counter {
    pub name: &'static str,
    pub help: &'static str,
    pub label: &'static str,
    state: Mutex<BTreeMap<String, u64>>,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str, label: &'static str) -> Counter {
        Counter {
            name,
            help,
            label,
            state: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn inc(&self) {
        self.inc_with("");
    }

    pub fn inc_with(&self, value: &str) {
        if let Ok(mut s) = self.state.lock() {
            *s.entry(value.to_string()).or_default() += 1;
        }
    }

    pub fn get(&self, value: &str) -> u64 {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.get(value).copied())
            .unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} counter", self.name);
        let Ok(s) = self.state.lock() else { return };
        for (value, n) in s.iter() {
            if self.label.is_empty() {
                let _ = writeln!(out, "{} {n}", self.name);
            } else {
                let _ = writeln!(
                    out,
                    "{}{{{}=\"{}\"}} {n}",
                    self.name,
                    self.label,
                    escape(value)
                );
            }
        }
    }
}

/// Label value escaping of the Prometheus text format (backslash, quote, newline).
pub fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Everything `/metrics` shows besides the gauges computed from the latest sample.
pub struct Registry {
    /// Seconds from the pod's creation to all its containers running (observe once per pod).
    pub pod_start: Histogram,
    /// One sync of one pod; label `operation_type`: create, update, sync, kill.
    pub pod_worker: Histogram,
    /// One image pull; no label.
    pub image_pull: Histogram,
    /// One stats housekeeping pass (observed by `Stats::run`).
    pub housekeeping: Histogram,
    /// Containers started; label `container_type`: container, init_container.
    pub started_containers: Counter,
    /// Container restarts after an exit (restartPolicy).
    pub container_restarts: Counter,
    /// Pods evicted; label `eviction_signal` (memory.available, nodefs.available, pid.available).
    pub evictions: Counter,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            pod_start: Histogram::new(
                "kubelet_pod_start_duration_seconds",
                "Duration in seconds from a pod's creation to all its containers running",
                "",
                POD_START_BUCKETS,
            ),
            pod_worker: Histogram::new(
                "kubelet_pod_worker_duration_seconds",
                "Duration in seconds to sync a single pod, by operation type",
                "operation_type",
                DEFAULT_BUCKETS,
            ),
            image_pull: Histogram::new(
                "kubelet_image_pull_duration_seconds",
                "Duration in seconds to pull an image",
                "",
                PULL_BUCKETS,
            ),
            housekeeping: Histogram::new(
                "keel_stats_housekeeping_duration_seconds",
                "Duration in seconds of one stats housekeeping pass",
                "",
                HOUSEKEEPING_BUCKETS,
            ),
            started_containers: Counter::new(
                "kubelet_started_containers_total",
                "Cumulative number of containers started",
                "container_type",
            ),
            container_restarts: Counter::new(
                "keel_container_restarts_total",
                "Cumulative number of container restarts",
                "",
            ),
            evictions: Counter::new(
                "kubelet_evictions",
                "Cumulative number of pod evictions by eviction signal",
                "eviction_signal",
            ),
        }
    }
}

impl Registry {
    /// The Prometheus text of every metric in the registry.
    pub fn render(&self, out: &mut String) {
        self.pod_start.render(out);
        self.pod_worker.render(out);
        self.image_pull.render(out);
        self.housekeeping.render(out);
        self.started_containers.render(out);
        self.container_restarts.render(out);
        self.evictions.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let r = Registry::default();
        r.pod_start.observe(0.7);
        r.pod_start.observe(5.0);
        r.pod_worker.observe_with("create", 0.02);
        let mut out = String::new();
        r.render(&mut out);
        assert!(out.contains("kubelet_pod_start_duration_seconds_bucket{le=\"0.5\"} 0\n"));
        assert!(out.contains("kubelet_pod_start_duration_seconds_bucket{le=\"1\"} 1\n"));
        assert!(out.contains("kubelet_pod_start_duration_seconds_bucket{le=\"5\"} 2\n"));
        assert!(out.contains("kubelet_pod_start_duration_seconds_count 2\n"));
        assert!(out.contains(
            "kubelet_pod_worker_duration_seconds_bucket{operation_type=\"create\",le=\"0.025\"} 1\n"
        ));
        assert!(
            out.contains(
                "kubelet_pod_worker_duration_seconds_count{operation_type=\"create\"} 1\n"
            )
        );
        assert_eq!(r.pod_start.count(""), 2);
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
