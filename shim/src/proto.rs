//! The supervisor protocol: versioned request/response types and a std-only client.
//!
//! Every container has one supervisor process that listens on
//! `<root>/<id>/supervisor.sock` (a unix stream socket). A client connects, writes ONE request
//! as a single line of JSON, and reads ONE response line back; then the connection closes.
//! `wait` keeps the connection open until the container's init exits.
//!
//! ```text
//! -> {"version":1,"op":"state"}
//! <- {"version":1,"result":"state","state":{...}}
//! -> {"version":1,"op":"kill","signal":15,"all":false}
//! <- {"version":1,"result":"ok"}
//! -> {"version":1,"op":"wait"}
//! <- {"version":1,"result":"exited","exit":{"code":137,"signal":9,"oom_killed":false,...}}
//! ```
//!
//! Version rule: the supervisor answers a request whose `version` it does not know with
//! `{"result":"error","message":"unsupported protocol version ..."}`; new fields are optional
//! (`#[serde(default)]`), so version 1 clients keep working against newer supervisors.
//!
//! The supervisor exits once its container has exited and every pending `wait` has been
//! answered. The exit is recorded durably first in `<root>/<id>/exit.json` (an [`ExitStatus`]),
//! so a client that finds the socket gone reads that file instead ([`read_exit_file`]).
//!
//! This module has no syscall code and no dependencies beyond serde: the agent can use it with
//! `keel-shim = { path = "...", default-features = false }`.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;

/// File name of the supervisor socket inside a container's state directory.
pub const SOCKET_NAME: &str = "supervisor.sock";
/// File name of the durable exit record inside a container's state directory.
pub const EXIT_FILE_NAME: &str = "exit.json";

/// One request to a supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version of the client ([`VERSION`]).
    pub version: u32,
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
}

impl Request {
    /// A request at this crate's protocol version.
    pub fn new(op: Op) -> Self {
        Request {
            version: VERSION,
            op,
        }
    }
}

/// The operations a supervisor understands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Current container state.
    State,
    /// Run the container's process (only valid while `created`); used by `keel-shim start`.
    Start,
    /// Block until the init process exits; answered with [`Response::Exited`].
    Wait,
    /// Send `signal` to init, or to every process of the container when `all`.
    Kill {
        /// Signal number.
        signal: i32,
        /// Signal every process in the container's cgroup.
        #[serde(default)]
        all: bool,
    },
    /// Run a command inside the running container and return its output (probes, `kubectl exec`
    /// without a terminal). Output is capped at 1 MiB per stream.
    Exec(ExecRequest),
    /// Resource usage from the container's cgroup.
    Stats,
    /// Close and reopen the CRI log file (after an external rotation).
    ReopenLog,
}

/// Arguments of [`Op::Exec`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    /// argv; `args[0]` is looked up in the container's `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// Extra `KEY=value` entries appended to the container process's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; defaults to the container process's cwd.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Kill the command after this many milliseconds (0 = no timeout).
    #[serde(default)]
    pub timeout_ms: u64,
}

/// One response from a supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version of the supervisor.
    pub version: u32,
    /// The result.
    #[serde(flatten)]
    pub result: Reply,
}

/// The possible results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    /// Success without data.
    Ok,
    /// Answer to [`Op::State`].
    State {
        /// The state.
        state: ContainerState,
    },
    /// Answer to [`Op::Wait`].
    Exited {
        /// How init ended.
        exit: ExitStatus,
    },
    /// Answer to [`Op::Exec`].
    ExecResult {
        /// Exit code (128+n when killed by signal n).
        exit_code: i32,
        /// Captured standard output (lossy UTF-8).
        stdout: String,
        /// Captured standard error (lossy UTF-8).
        stderr: String,
        /// The timeout fired and the command was killed.
        #[serde(default)]
        timed_out: bool,
    },
    /// Answer to [`Op::Stats`].
    Stats {
        /// The sample.
        stats: Stats,
    },
    /// The request failed; `message` says why and what to do.
    Error {
        /// Human-readable reason.
        message: String,
    },
}

/// Lifecycle status, as in the OCI runtime spec plus `paused` (runc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// Created, user process not started.
    Created,
    /// User process running.
    Running,
    /// Frozen through the freezer cgroup.
    Paused,
    /// Init has exited.
    Stopped,
}

/// What the supervisor knows about its container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    /// Container id.
    pub id: String,
    /// Status.
    pub status: Status,
    /// Host pid of init (0 once reaped).
    pub pid: i32,
    /// Host pid of the supervisor.
    pub supervisor_pid: i32,
    /// Bundle directory.
    pub bundle: String,
    /// The exit, once stopped.
    #[serde(default)]
    pub exit: Option<ExitStatus>,
}

/// How the init process ended; also the content of `exit.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Shell-style exit code: the process's exit code, or 128+signal.
    pub code: i32,
    /// The signal that killed it, if any.
    #[serde(default)]
    pub signal: Option<i32>,
    /// The kernel OOM killer killed a process of this container.
    #[serde(default)]
    pub oom_killed: bool,
    /// When the exit was observed (RFC 3339, UTC, nanoseconds).
    pub finished_at: String,
    /// When the process was started (RFC 3339), if it was.
    #[serde(default)]
    pub started_at: Option<String>,
}

/// A resource usage sample (cAdvisor-style), from cgroup v1 or v2 files.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Stats {
    /// `v1` or `v2`.
    pub cgroup_version: u8,
    /// Total CPU time in nanoseconds.
    pub cpu_usage_ns: u64,
    /// User CPU time in nanoseconds, when known.
    pub cpu_user_ns: u64,
    /// System CPU time in nanoseconds, when known.
    pub cpu_system_ns: u64,
    /// CFS periods elapsed.
    pub cpu_periods: u64,
    /// CFS periods in which the group was throttled.
    pub cpu_throttled_periods: u64,
    /// Total time throttled, nanoseconds.
    pub cpu_throttled_ns: u64,
    /// Memory usage in bytes (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub memory_usage_bytes: u64,
    /// Usage minus inactive file cache (what the kubelet evicts on).
    pub memory_working_set_bytes: u64,
    /// Memory limit in bytes (`None` = unlimited).
    pub memory_limit_bytes: Option<u64>,
    /// Number of OOM kills in this cgroup.
    pub oom_kills: u64,
    /// Current number of tasks.
    pub pids_current: u64,
    /// Task limit (`None` = unlimited).
    pub pids_limit: Option<u64>,
    /// Bytes read from block devices.
    pub io_read_bytes: u64,
    /// Bytes written to block devices.
    pub io_write_bytes: u64,
}

/// Errors of the client side.
#[derive(Debug)]
pub enum ClientError {
    /// Could not connect (the supervisor has exited, or never started).
    Connect(PathBuf, std::io::Error),
    /// Reading or writing the socket failed.
    Io(std::io::Error),
    /// The supervisor sent something that is not a response.
    Decode(serde_json::Error),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(p, e) => write!(f, "connect to supervisor {}: {e}", p.display()),
            ClientError::Io(e) => write!(f, "supervisor socket: {e}"),
            ClientError::Decode(e) => write!(f, "decode supervisor response: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Send one request to the supervisor socket at `socket` and read its response.
/// `timeout` bounds each read and write (`None` = block, as `wait` needs).
pub fn call(
    socket: &Path,
    request: &Request,
    timeout: Option<Duration>,
) -> Result<Response, ClientError> {
    let stream =
        UnixStream::connect(socket).map_err(|e| ClientError::Connect(socket.to_path_buf(), e))?;
    stream.set_read_timeout(timeout).map_err(ClientError::Io)?;
    stream.set_write_timeout(timeout).map_err(ClientError::Io)?;
    let mut line = serde_json::to_vec(request).map_err(ClientError::Decode)?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(ClientError::Io)?;
    let mut reader = BufReader::new(&stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(ClientError::Io)?;
    if answer.is_empty() {
        return Err(ClientError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "supervisor closed the connection without answering",
        )));
    }
    serde_json::from_str(&answer).map_err(ClientError::Decode)
}

/// Read `exit.json` from a container state directory, if the container has exited.
pub fn read_exit_file(state_dir: &Path) -> Option<ExitStatus> {
    let data = std::fs::read(state_dir.join(EXIT_FILE_NAME)).ok()?;
    serde_json::from_slice(&data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format_is_flat_json() {
        let r = Request::new(Op::Kill {
            signal: 9,
            all: true,
        });
        let s = serde_json::to_string(&r).expect("serialize");
        assert_eq!(s, r#"{"version":1,"op":"kill","signal":9,"all":true}"#);
        let back: Request = serde_json::from_str(r#"{"version":1,"op":"kill","signal":9}"#)
            .expect("all is optional");
        assert_eq!(
            back.op,
            Op::Kill {
                signal: 9,
                all: false
            }
        );
    }

    #[test]
    fn response_round_trips() {
        let r = Response {
            version: VERSION,
            result: Reply::Exited {
                exit: ExitStatus {
                    code: 137,
                    signal: Some(9),
                    oom_killed: true,
                    finished_at: "2026-01-01T00:00:00.000000000Z".into(),
                    started_at: None,
                },
            },
        };
        let s = serde_json::to_string(&r).expect("serialize");
        assert!(s.contains(r#""result":"exited""#), "{s}");
        let back: Response = serde_json::from_str(&s).expect("parse");
        assert_eq!(back, r);
    }
}
