//! Cluster logging on the control plane: the log store (its own SQLite file, never the API
//! store), the push endpoint the agents ship to, the query endpoint, retention by age and size,
//! and the `keel-control logs` command.
//!
//! - `wire`: the JSON bodies of push and query (the agent writes the same shape)
//! - `store`: the SQLite log store, exactly-once push by per-source cursors, retention
//! - `query`: query parameters, validated into a `Query` (400 names the parameter)
//! - `http`: the `/apis/logs.keel.dev/v1/{push,query}` routes and who may call them
//! - `cli`: `keel-control logs`

pub mod cli;
pub mod http;
pub mod query;
pub mod store;
pub mod wire;

use std::path::PathBuf;
use std::time::Duration;

/// API group of the log endpoints.
pub const GROUP: &str = "logs.keel.dev";
pub const VERSION: &str = "v1";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log store {op} on {path}: {source}")]
    Sqlite {
        op: &'static str,
        path: String,
        source: rusqlite::Error,
    },
    #[error("the log store lock is poisoned (a request panicked); restart keel-control")]
    Poisoned,
}

pub type Result<T> = std::result::Result<T, LogError>;

/// How long and how much the store keeps, and where.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Lines older than this (by their own time) are deleted.
    pub max_age: Duration,
    /// The store's used pages are kept under this many bytes by deleting the oldest lines.
    pub max_bytes: u64,
    /// How often the age and size checks run (size is also checked after large pushes).
    pub interval: Duration,
}

impl Default for Retention {
    /// 7 days, 1 GiB, checked every 30 s.
    fn default() -> Retention {
        Retention {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
            interval: Duration::from_secs(30),
        }
    }
}

/// Where the store lives and what it keeps (`keel-control serve --log-*` flags).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Default: `<data dir>/logs.db`.
    pub path: Option<PathBuf>,
    pub retention: Retention,
}

/// Opens the log store of a data dir.
pub fn open(
    data_dir: &std::path::Path,
    settings: &Settings,
) -> Result<std::sync::Arc<store::LogStore>> {
    let path = settings
        .path
        .clone()
        .unwrap_or_else(|| default_path(data_dir));
    let store = store::LogStore::open(&path, settings.retention.clone())?;
    tracing::info!(
        path = %path.display(),
        max_age_seconds = settings.retention.max_age.as_secs(),
        max_bytes = settings.retention.max_bytes,
        "log store open"
    );
    Ok(std::sync::Arc::new(store))
}

/// The log store's file in a data dir.
pub fn default_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("logs.db")
}

/// `10s`, `5m`, `2h`, `7d` (or a bare number of seconds) as a duration.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        "ms" => return Some(Duration::from_millis(n)),
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// `512Mi`, `1Gi`, `100M`, `2048` (bytes) as a byte count.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("ten"), None);
        assert_eq!(parse_duration("5y"), None);
        assert_eq!(parse_size("1Gi"), Some(1 << 30));
        assert_eq!(parse_size("100M"), Some(100_000_000));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("1Ti"), None);
    }
}
