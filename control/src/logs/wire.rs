//! The JSON bodies of `POST /apis/logs.keel.dev/v1/push` (agent to control plane) and of the
//! query answer. The agent (`agent/src/logship/push.rs`) writes the same shape; the two meet at
//! this documented JSON only, not at a shared crate (see docs/architecture/logging.md).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One push: lines of several sources of one node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRequest {
    /// The pushing node; must be the caller's own node name.
    pub node: String,
    #[serde(default)]
    pub streams: Vec<PushStream>,
}

/// Lines of one source (a container instance's CRI log, or the agent itself).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushStream {
    /// Unique per node: `<pod uid>/<container>/<restart>` or `agent`.
    pub source: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub pod: String,
    #[serde(default)]
    pub pod_uid: String,
    pub container: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `[position, time in Unix ns, stream (0 stdout, 1 stderr), text]`. The position is the
    /// source's logical byte position of the record that ended the line, increasing within a
    /// source; the store drops lines at or below a position it already has (a resend after an
    /// agent crash). `null` for sources without positions (the agent's own logs).
    pub lines: Vec<(Option<u64>, i64, u8, String)>,
}

/// The answer to a push.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushResponse {
    pub accepted: u64,
    /// Lines the store already had (sent again after a crash).
    pub duplicates: u64,
}

/// One stored line as the query returns it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// RFC 3339 with nanoseconds.
    pub time: String,
    pub node: String,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub line: String,
}

/// The query answer: `kind: LogLineList`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLineList {
    pub kind: String,
    pub api_version: String,
    pub items: Vec<LogLine>,
    /// Pass back as `continue=` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#continue: Option<String>,
}
