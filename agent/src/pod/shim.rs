//! The agent's side of the runtime contract (DESIGN.md "agent -> shim"): the runc-style
//! `keel-shim` CLI for create/start/delete, and the supervisor protocol
//! (`keel_shim::proto`, one JSON line each way) spoken over tokio's unix sockets so a
//! pending `wait` costs a task, not a thread.

use keel_shim::proto::{self, ExecRequest, ExitStatus, Op, Reply, Request, Response};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("running {bin}: {source}; install keel-shim next to keel-agent or pass --shim")]
    Spawn { bin: String, source: std::io::Error },
    /// The runtime refused; `message` is its last stderr line (what kubelet shows for
    /// RunContainerError / StartError).
    #[error("{message}")]
    Failed { message: String },
    #[error("supervisor of {id}: {message}")]
    Protocol { id: String, message: String },
}

/// How to reach the runtime: its binary and its state root.
#[derive(Debug, Clone)]
pub struct Shim {
    pub bin: PathBuf,
    pub root: PathBuf,
}

/// What `create` needs.
pub struct Create<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub log: &'a Path,
}

fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    // `keel-shim: error: ...` -> the message alone.
    line.trim()
        .trim_start_matches("keel-shim: ")
        .trim_start_matches("error: ")
        .to_string()
}

impl Shim {
    /// The state folder of container `id` (`supervisor.sock`, `exit.json`).
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    async fn cli(&self, args: &[&str]) -> Result<(), ShimError> {
        let out = tokio::process::Command::new(&self.bin)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|source| ShimError::Spawn {
                bin: self.bin.display().to_string(),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ShimError::Failed {
                message: last_line(&out.stderr),
            })
        }
    }

    pub async fn create(&self, c: &Create<'_>) -> Result<(), ShimError> {
        let bundle = c.bundle.display().to_string();
        let log = c.log.display().to_string();
        self.cli(&["create", "--bundle", &bundle, "--cri-log", &log, c.id])
            .await
    }

    pub async fn start(&self, id: &str) -> Result<(), ShimError> {
        self.cli(&["start", id]).await
    }

    /// Removes the container (killing what is left); idempotent.
    pub async fn delete(&self, id: &str) -> Result<(), ShimError> {
        if !self.state_dir(id).exists() {
            return Ok(());
        }
        self.cli(&["delete", "--force", id]).await
    }

    async fn call(&self, id: &str, op: Op, timeout: Option<Duration>) -> Result<Reply, ShimError> {
        let socket = self.state_dir(id).join(proto::SOCKET_NAME);
        let perr = |message: String| ShimError::Protocol {
            id: id.to_string(),
            message,
        };
        let exchange = async {
            let mut stream = UnixStream::connect(&socket)
                .await
                .map_err(|e| perr(format!("connect {}: {e}", socket.display())))?;
            let mut line = serde_json::to_vec(&Request::new(op)).unwrap_or_default();
            line.push(b'\n');
            stream
                .write_all(&line)
                .await
                .map_err(|e| perr(e.to_string()))?;
            let mut reader = BufReader::new(stream);
            let mut answer = String::new();
            reader
                .read_line(&mut answer)
                .await
                .map_err(|e| perr(e.to_string()))?;
            if answer.is_empty() {
                return Err(perr("closed without answering".into()));
            }
            let resp: Response =
                serde_json::from_str(&answer).map_err(|e| perr(format!("bad response: {e}")))?;
            Ok(resp.result)
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| perr(format!("no answer within {t:?}")))?,
            None => exchange.await,
        }
    }

    /// Blocks until the container's init exits. Falls back to `exit.json` when the supervisor
    /// has already gone (it records the exit durably before leaving).
    pub async fn wait(&self, id: &str) -> Result<ExitStatus, ShimError> {
        let dir = self.state_dir(id);
        match self.call(id, Op::Wait, None).await {
            Ok(Reply::Exited { exit }) => Ok(exit),
            Ok(Reply::Error { message }) => Err(ShimError::Protocol {
                id: id.into(),
                message,
            }),
            Ok(other) => Err(ShimError::Protocol {
                id: id.into(),
                message: format!("unexpected answer to wait: {other:?}"),
            }),
            Err(e) => proto::read_exit_file(&dir).ok_or(e),
        }
    }

    /// Whether the container's process is still running (supervisor reachable, no exit yet).
    pub async fn running(&self, id: &str) -> bool {
        if proto::read_exit_file(&self.state_dir(id)).is_some() {
            return false;
        }
        matches!(
            self.call(id, Op::State, Some(Duration::from_secs(2))).await,
            Ok(Reply::State { state }) if state.status == proto::Status::Running
        )
    }

    pub async fn exit_status(&self, id: &str) -> Option<ExitStatus> {
        proto::read_exit_file(&self.state_dir(id))
    }

    pub async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), ShimError> {
        match self
            .call(id, Op::Kill { signal, all }, Some(Duration::from_secs(5)))
            .await?
        {
            Reply::Ok => Ok(()),
            Reply::Error { message } => Err(ShimError::Protocol {
                id: id.into(),
                message,
            }),
            other => Err(ShimError::Protocol {
                id: id.into(),
                message: format!("unexpected answer to kill: {other:?}"),
            }),
        }
    }

    /// Runs `args` inside the container (probes, exec hooks); `timeout` zero = none.
    pub async fn exec(
        &self,
        id: &str,
        args: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecResult, ShimError> {
        let req = ExecRequest {
            args,
            timeout_ms: timeout.as_millis() as u64,
            ..Default::default()
        };
        let grace = (!timeout.is_zero()).then(|| timeout + Duration::from_secs(5));
        match self.call(id, Op::Exec(req), grace).await? {
            Reply::ExecResult {
                exit_code,
                stdout,
                stderr,
                timed_out,
            } => Ok(ExecResult {
                exit_code,
                stdout,
                stderr,
                timed_out,
            }),
            Reply::Error { message } => Err(ShimError::Protocol {
                id: id.into(),
                message,
            }),
            other => Err(ShimError::Protocol {
                id: id.into(),
                message: format!("unexpected answer to exec: {other:?}"),
            }),
        }
    }
}

/// What an exec inside a container produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// Parses an RFC 3339 time from the shim into Unix milliseconds.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_errors_keep_their_last_line() {
        assert_eq!(
            last_line(b"warn\nkeel-shim: error: exec: \"nope\": not found in PATH\n\n"),
            "exec: \"nope\": not found in PATH"
        );
        assert_eq!(last_line(b""), "");
    }

    #[test]
    fn shim_times_parse() {
        assert_eq!(
            rfc3339_ms("1970-01-01T00:00:01.500000000Z"),
            Some(1500),
            "nanosecond RFC 3339"
        );
    }
}
