//! `NetError`: everything `Network` can fail with. A plugin's CNI error object is kept whole
//! (code, msg, details), so the pod's FailedCreatePodSandBox event can say what the plugin said.

use std::path::PathBuf;

use keel_cni::spec::CniError;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A `NetworkConfig` field is unusable.
    #[error("network setting {field}: {reason}")]
    Setting { field: &'static str, reason: String },
    /// The `.conflist` in use cannot be read or is invalid.
    #[error("network configuration {path}: {reason}")]
    ConfList { path: PathBuf, reason: String },
    /// The pod uid cannot name a container id or a file.
    #[error("pod uid {uid:?} {reason}")]
    InvalidUid { uid: String, reason: &'static str },
    /// A plugin answered with a CNI error object (or failed without one, code 999).
    #[error("plugin {plugin}: {} (CNI code {} on {command})", detail(error), error.code)]
    Plugin {
        plugin: String,
        command: &'static str,
        error: CniError,
    },
    /// No folder in `bin_dirs` holds the plugin.
    #[error(
        "plugin {plugin}: not found in {searched} (build it with `cargo build -p keel-cni` or install it into /opt/cni/bin)"
    )]
    PluginNotFound { plugin: String, searched: String },
    /// The plugin could not be started or talked to.
    #[error("plugin {plugin}: run {}", path.display())]
    PluginRun {
        plugin: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The plugin did not finish in time (it was killed).
    #[error("plugin {plugin}: no answer to {command} within {seconds} s (killed)")]
    PluginTimeout {
        plugin: String,
        command: &'static str,
        seconds: u64,
    },
    /// Creating, checking or removing a network namespace file failed.
    #[error("network namespace {}: {op}", path.display())]
    Netns {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a file or folder of the agent's state.
    #[error("{op} {}", path.display())]
    State {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn detail(e: &CniError) -> String {
    if e.details.is_empty() {
        e.msg.clone()
    } else {
        format!("{}: {}", e.msg, e.details)
    }
}

impl NetError {
    /// The CNI error code when a plugin reported one.
    pub fn cni_code(&self) -> Option<u32> {
        match self {
            NetError::Plugin { error, .. } => Some(error.code),
            _ => None,
        }
    }

    pub(crate) fn netns(
        path: &std::path::Path,
        op: &'static str,
        source: impl Into<std::io::Error>,
    ) -> NetError {
        NetError::Netns {
            path: path.to_path_buf(),
            op,
            source: source.into(),
        }
    }

    pub(crate) fn state(
        op: &'static str,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> NetError {
        NetError::State {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
