//! The store: an MVCC key-value log in the spirit of kine (one row per revision, watch from a
//! revision, compaction with a retained window) behind the `Backend` trait. SQLite is the
//! embedded backend; an etcd backend must pass the same `conformance` suite.

pub mod conformance;
pub mod sqlite;

use async_trait::async_trait;
use tokio::sync::mpsc;

/// One stored value and the revisions that describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision at which the key was (last) created.
    pub create_rev: i64,
    /// Revision of this version; becomes the object's `resourceVersion`.
    pub mod_rev: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change, as watchers see it. For a delete, `kv.value` is the last value and `kv.mod_rev`
/// the revision of the deletion. `prev` is the version this one replaced, when still known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}

/// A page of a range read, all taken at one revision.
#[derive(Debug, Clone)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    pub revision: i64,
    /// True when `limit` cut the page short.
    pub more: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key} not found")]
    NotFound { key: String },
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: i64,
        actual: i64,
    },
    #[error("revision {requested} has been compacted (oldest kept is {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("store {op} failed on {path}")]
    Sqlite {
        op: &'static str,
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store {op} failed: {detail}")]
    Io { op: &'static str, detail: String },
    #[error("the store is shut down")]
    Closed,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A live watch: events in revision order. The sender side closes when the watcher falls too
/// far behind (like kine's dropped slow subscribers): the client then lists and watches again.
pub type WatchReceiver = mpsc::Receiver<Event>;

/// What the API server needs from a store. Keys are `/registry/<resource>/<ns>/<name>`-style
/// paths; values are opaque bytes (JSON objects for the API server).
#[async_trait]
pub trait Backend: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Keys starting with `prefix`, in key order, after `start_after` when given; `limit` 0
    /// means no limit.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult>;
    /// Creates `key`; `AlreadyExists` when it is live.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue>;
    /// Replaces `key` if its current `mod_rev` is `expected`; `Conflict` otherwise.
    async fn update(&self, key: &str, expected: i64, value: Vec<u8>) -> Result<KeyValue>;
    /// Deletes `key` (if its current `mod_rev` is `expected`, when given). Returns the deleted
    /// value with the deletion's revision as `mod_rev`.
    async fn delete(&self, key: &str, expected: Option<i64>) -> Result<KeyValue>;
    /// Events for keys under `prefix` with revisions greater than `after`.
    async fn watch(&self, prefix: &str, after: i64) -> Result<WatchReceiver>;
    /// Drops history older than the newest `keep` revisions; returns the compacted revision.
    async fn compact(&self, keep: i64) -> Result<i64>;
    /// The newest revision.
    async fn revision(&self) -> Result<i64>;
}
