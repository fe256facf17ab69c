//! The runtime's error type: one enum for the library boundary, mapped to an exit code and a
//! single stderr line (plus `--log` JSON) in `main.rs`.

use std::path::PathBuf;

/// Result alias for the runtime.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in a runtime operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config (or a process.json) is invalid; `field` names the JSON path.
    #[error("{file}: {field}: {reason}")]
    Config {
        /// The file.
        file: PathBuf,
        /// JSON path of the offending field, e.g. `process.args`.
        field: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A command-line argument is invalid.
    #[error("{0}")]
    Usage(String),
    /// No container with this id under the state root.
    #[error("container {id} does not exist (no {dir})")]
    NotFound {
        /// The id.
        id: String,
        /// The state directory looked at.
        dir: PathBuf,
    },
    /// The id is already used.
    #[error("container {0} already exists; pick another id or `delete` it first")]
    Exists(String),
    /// The operation is not allowed in the container's current status.
    #[error("container {id} is {status}: cannot {op}")]
    Status {
        /// The id.
        id: String,
        /// Current status.
        status: String,
        /// The refused operation.
        op: String,
    },
    /// A filesystem or syscall operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path (or object) it was done to.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A cgroup operation failed.
    #[error("cgroup {path}: {op}: {source}")]
    Cgroup {
        /// What was being done.
        op: String,
        /// The cgroup file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The seccomp profile could not be compiled.
    #[error("linux.seccomp: {0}")]
    Seccomp(String),
    /// The container's init process reported a failure while being set up or started.
    #[error("container init: {0}")]
    Init(String),
    /// A failure already described by the supervisor or init (message passed through).
    #[error("{0}")]
    Reported(String),
    /// Talking to the supervisor failed.
    #[error("supervisor of {id}: {reason}")]
    Supervisor {
        /// The id.
        id: String,
        /// What went wrong.
        reason: String,
    },
}

impl Error {
    /// Shorthand for [`Error::Io`] from an `std::io::Error`.
    pub fn io(op: &'static str, path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.to_string(),
            source,
        }
    }

    /// Shorthand for [`Error::Io`] from a nix errno.
    pub fn nix(op: &'static str, path: impl std::fmt::Display, errno: nix::errno::Errno) -> Self {
        Error::Io {
            op,
            path: path.to_string(),
            source: std::io::Error::from(errno),
        }
    }

    /// Shorthand for a config error in `config.json`.
    pub fn config(file: &std::path::Path, field: &str, reason: impl Into<String>) -> Self {
        Error::Config {
            file: file.to_path_buf(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}
