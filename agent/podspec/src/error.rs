//! The crate's one error type: every variant's Display is the message kubelet would put in the
//! container status or event, and [`ConfigError::reason`] is the matching kubelet reason.

use std::path::PathBuf;

/// Result alias for the crate.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// kubelet reason strings (pkg/kubelet/events, pkg/kubelet/container).
pub mod reason {
    pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
    pub const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
    pub const FAILED_MOUNT: &str = "FailedMount";
    pub const FAILED_CREATE_POD_CONTAINER: &str = "FailedCreatePodContainer";
    pub const FAILED_CREATE_POD_SANDBOX: &str = "FailedCreatePodSandBox";
}

/// Why a pod's configuration could not be turned into something runnable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A ConfigMap named by the pod does not exist (kubelet's configmap manager wording).
    #[error("configmap {name:?} not found")]
    ConfigMapNotFound { name: String },
    /// A Secret named by the pod does not exist.
    #[error("secret {name:?} not found")]
    SecretNotFound { name: String },
    /// `configMapKeyRef`/`secretKeyRef` names a key the object does not have.
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        key: String,
        kind: &'static str,
        namespace: String,
        name: String,
    },
    /// A configMap/secret volume item names a key the object does not have.
    #[error("{kind} references non-existent {what} key: {key}")]
    MissingVolumeKey {
        kind: &'static str,
        what: &'static str,
        key: String,
    },
    /// Reading a ConfigMap or Secret from the API failed for another reason than 404.
    #[error("failed to get {kind} {namespace}/{name}: {message}")]
    Fetch {
        kind: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
    /// A downward API `fieldRef.fieldPath` kubelet does not support (here, or at all).
    #[error("unsupported fieldPath: {path}")]
    FieldPath { path: String },
    /// A downward API `resourceFieldRef.resource` kubelet does not support.
    #[error("unsupported container resource : {resource}")]
    ResourceField { resource: String },
    /// A `resourceFieldRef` in a volume names a container the pod does not have.
    #[error("container {name:?} named by resourceFieldRef not found in the pod")]
    ContainerNotFound { name: String },
    /// A resource quantity that does not parse.
    #[error("{field}: quantity {value:?} is not a valid Kubernetes quantity")]
    Quantity { field: String, value: String },
    /// A securityContext (or other container field) that cannot be honoured.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// kubelet's runAsNonRoot verification failed.
    #[error("{0}")]
    NonRoot(String),
    /// A `volumeMounts[].name` with no matching volume.
    #[error("cannot find volume {volume:?} to mount into container {container:?}")]
    UnknownVolume { volume: String, container: String },
    /// A `subPath` that is absolute, climbs out with `..` or resolves outside its volume.
    #[error(
        "failed to prepare subPath for volumeMount {volume:?} of container {container:?}: {message}"
    )]
    SubPath {
        volume: String,
        container: String,
        message: String,
    },
    /// A volume could not be set up; `source` says why (kubelet's FailedMount event).
    #[error("MountVolume.SetUp failed for volume {volume:?} : {source}")]
    Mount {
        volume: String,
        #[source]
        source: Box<ConfigError>,
    },
    /// A hostPath type check (`spec.volumes[].hostPath.type`).
    #[error("hostPath type check failed: {path} is not a {what}")]
    HostPathType { path: PathBuf, what: &'static str },
    /// A volume type or setting this agent does not implement.
    #[error("{kind} is not supported by keel-agent")]
    Unsupported { kind: String },
    /// A file operation on the node.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A pod cgroup operation.
    #[error("unable to ensure pod container exists: {op} {path}: {message}")]
    Cgroup {
        op: &'static str,
        path: PathBuf,
        message: String,
    },
    /// Processes are still inside a cgroup being removed.
    #[error("cgroup {path} still has processes {pids:?}; stop the pod's containers first")]
    CgroupBusy { path: PathBuf, pids: Vec<i32> },
    /// The image configuration could not be combined with the container (no command, unknown user).
    #[error("failed to generate container spec: {0}")]
    Image(#[from] keel_image::spec::SpecError),
    /// Writing /etc/hosts, /etc/resolv.conf or /etc/hostname for the pod.
    #[error("failed to write pod {file} file {path}: {source}")]
    Etc {
        file: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// The kubelet reason to report with this error (container `waiting.reason` or event reason).
    pub fn reason(&self) -> &'static str {
        use ConfigError::*;
        match self {
            Mount { .. } => reason::FAILED_MOUNT,
            Cgroup { .. } | CgroupBusy { .. } => reason::FAILED_CREATE_POD_CONTAINER,
            Etc { .. } => reason::FAILED_CREATE_POD_SANDBOX,
            Image(_) | Io { .. } => reason::CREATE_CONTAINER_ERROR,
            ConfigMapNotFound { .. }
            | SecretNotFound { .. }
            | MissingKey { .. }
            | MissingVolumeKey { .. }
            | Fetch { .. }
            | FieldPath { .. }
            | ResourceField { .. }
            | ContainerNotFound { .. }
            | Quantity { .. }
            | Invalid { .. }
            | NonRoot(_)
            | UnknownVolume { .. }
            | SubPath { .. }
            | HostPathType { .. }
            | Unsupported { .. } => reason::CREATE_CONTAINER_CONFIG_ERROR,
        }
    }

    /// Wrap as kubelet's FailedMount error for `volume` (idempotent).
    pub fn in_volume(self, volume: &str) -> ConfigError {
        match self {
            e @ ConfigError::Mount { .. } => e,
            e => ConfigError::Mount {
                volume: volume.to_string(),
                source: Box::new(e),
            },
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ConfigError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_reasons_read_like_kubelet() {
        let cases: Vec<(ConfigError, &str, &str)> = vec![
            (
                ConfigError::ConfigMapNotFound {
                    name: "app-config".into(),
                },
                r#"configmap "app-config" not found"#,
                "CreateContainerConfigError",
            ),
            (
                ConfigError::MissingKey {
                    key: "KEY".into(),
                    kind: "ConfigMap",
                    namespace: "default".into(),
                    name: "app-config".into(),
                },
                "couldn't find key KEY in ConfigMap default/app-config",
                "CreateContainerConfigError",
            ),
            (
                ConfigError::ConfigMapNotFound {
                    name: "missing".into(),
                }
                .in_volume("cfg")
                .in_volume("cfg"),
                r#"MountVolume.SetUp failed for volume "cfg" : configmap "missing" not found"#,
                "FailedMount",
            ),
        ];
        for (e, msg, reason) in cases {
            assert_eq!(e.to_string(), msg);
            assert_eq!(e.reason(), reason);
        }
    }
}
