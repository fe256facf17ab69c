//! cAdvisor-style stats: housekeeping collection from cgroups and procfs, `/stats/summary`, Prometheus metrics, node pressure.
//!
//! - `sample`: the figures of one pass (node, pods, containers)
//! - `cgroup`: cgroup v1/v2 file reading; `procfs`: /proc parsers; `disk`: du walk and statvfs
//! - `collect`: one housekeeping pass over the pod records
//! - `summary`: kubelet's `/stats/summary` JSON; `prometheus`: `/metrics/cadvisor` and
//!   `/metrics/resource` text
//! - `registry`: the agent's own figures for `/metrics` (pod start latency, sync and image
//!   pull durations), bumped by the rest of the agent
//! - `pressure`: MemoryPressure/DiskPressure/PIDPressure and which pods to evict
//! - `http`: the endpoint dispatcher the HTTPS server calls
//!
//! Usage from `keel-agent run`:
//! ```ignore
//! let stats = stats::Stats::new(stats::StatsConfig::new(&layout, &node_name));
//! tokio::spawn(stats.clone().run(shutdown_rx));
//! // the HTTPS server: stats::http::handle(&stats, path, query).await
//! // the executor: stats.registry().pod_start.observe(seconds)
//! ```

pub mod cgroup;
pub mod collect;
pub mod disk;
pub mod http;
pub mod pressure;
pub mod procfs;
pub mod prometheus;
pub mod reader;
pub mod registry;
pub mod sample;
pub mod summary;

use crate::state::Layout;
use collect::{Collector, Sources};
use registry::Registry;
use sample::Sample;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Kubelet's default `--housekeeping-interval`.
pub const DEFAULT_HOUSEKEEPING: Duration = Duration::from_secs(10);
/// How often disk usage is walked (cAdvisor's fs usage also runs less often than cgroups).
pub const DEFAULT_FS_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct StatsConfig {
    pub node_name: String,
    pub sources: Sources,
    pub housekeeping: Duration,
    pub fs_interval: Duration,
}

impl StatsConfig {
    /// Defaults for an agent root dir: `/sys/fs/cgroup`, `/proc`, 10 s and 60 s.
    pub fn new(layout: &Layout, node_name: &str) -> StatsConfig {
        StatsConfig {
            node_name: node_name.to_string(),
            sources: Sources::for_root(&layout.root),
            housekeeping: DEFAULT_HOUSEKEEPING,
            fs_interval: DEFAULT_FS_INTERVAL,
        }
    }
}

/// A cheap-to-clone handle: the latest sample, the collector and the agent's own metrics.
#[derive(Clone)]
pub struct Stats {
    inner: Arc<Inner>,
}

struct Inner {
    config: StatsConfig,
    latest: RwLock<Option<Arc<Sample>>>,
    collector: Mutex<Collector>,
    registry: Registry,
}

impl Stats {
    pub fn new(config: StatsConfig) -> Stats {
        let collector = Collector::new(
            config.sources.clone(),
            &config.node_name,
            config.fs_interval,
        );
        Stats {
            inner: Arc::new(Inner {
                config,
                latest: RwLock::new(None),
                collector: Mutex::new(collector),
                registry: Registry::default(),
            }),
        }
    }

    pub fn config(&self) -> &StatsConfig {
        &self.inner.config
    }

    /// The agent's own figures (`/metrics`); other modules observe into it.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The newest complete sample, if a pass has run.
    pub fn latest(&self) -> Option<Arc<Sample>> {
        self.inner.latest.read().ok().and_then(|l| l.clone())
    }

    /// Runs one pass now (blocking file reads; call from a blocking thread in async code) and
    /// publishes it.
    pub fn housekeep(&self) -> Arc<Sample> {
        let sample = {
            let mut c = match self.inner.collector.lock() {
                Ok(c) => c,
                Err(poisoned) => poisoned.into_inner(),
            };
            Arc::new(c.collect())
        };
        if let Ok(mut l) = self.inner.latest.write() {
            *l = Some(sample.clone());
        }
        sample
    }

    /// The latest sample, or a fresh pass when none has run yet.
    pub async fn latest_or_collect(&self) -> Arc<Sample> {
        if let Some(s) = self.latest() {
            return s;
        }
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.housekeep()).await {
            Ok(s) => s,
            Err(_) => Arc::new(Sample::default()),
        }
    }

    /// Housekeeping loop: one pass per interval until `shutdown` turns true or its sender is
    /// dropped.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.inner.config.housekeeping);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let me = self.clone();
                    let started = std::time::Instant::now();
                    if tokio::task::spawn_blocking(move || me.housekeep()).await.is_err() {
                        tracing::warn!("stats housekeeping pass panicked");
                    }
                    self.inner
                        .registry
                        .housekeeping
                        .observe(started.elapsed().as_secs_f64());
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

/// Convenience for `keel-agent run`: default config, run until shutdown; returns the handle
/// through `ready` so the HTTPS server can share it.
pub fn start(
    layout: &Layout,
    node_name: &str,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Stats {
    let stats = Stats::new(StatsConfig::new(layout, node_name));
    tokio::spawn(stats.clone().run(shutdown));
    stats
}
