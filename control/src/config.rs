//! The control plane's settings, saved in the data dir by `init` (`config.json`) and read by
//! `serve`, so one directory describes one cluster.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    pub advertise_address: IpAddr,
    pub listen: String,
    pub port: u16,
    pub cluster_cidr: ipnet::Ipv4Net,
    pub service_cidr: ipnet::Ipv4Net,
    /// History kept by compaction (revisions).
    #[serde(default = "default_keep")]
    pub compact_keep: i64,
    /// Seconds between compactions.
    #[serde(default = "default_compact_interval")]
    pub compact_interval_seconds: u64,
    #[serde(default = "default_toleration")]
    pub default_toleration_seconds: i64,
    /// A node without a lease renewal for this long becomes Unknown (kube's default 40 s).
    #[serde(default = "default_grace")]
    pub node_monitor_grace_period_seconds: u64,
    #[serde(default = "default_monitor_period")]
    pub node_monitor_period_seconds: u64,
}

fn default_keep() -> i64 {
    10_000
}

fn default_compact_interval() -> u64 {
    300
}

fn default_grace() -> u64 {
    40
}

fn default_monitor_period() -> u64 {
    5
}

fn default_toleration() -> i64 {
    300
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid Keel control plane config: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl ClusterConfig {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("config.json")
    }

    pub fn load(dir: &Path) -> Result<ClusterConfig, ConfigError> {
        let path = Self::path(dir);
        let data = std::fs::read(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&data).map_err(|source| ConfigError::Parse { path, source })
    }
}
