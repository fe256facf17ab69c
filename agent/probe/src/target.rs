//! What a probe or a lifecycle handler acts on: the pod's address, the container's ports and
//! a caller-supplied way to run a command inside the container ([`Exec`]).

use k8s_openapi::api::core::v1::ContainerPort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Output of one command run inside a container (keel-shim's supervisor `exec` reply).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code; 128+n when killed by signal n.
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The timeout fired and the command was killed.
    pub timed_out: bool,
}

/// The command could not be run at all (supervisor unreachable, container gone, ...). kubelet
/// calls this a probe error: the attempt is thrown away rather than counted as a failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExecError(pub String);

/// The boxed future an [`Exec`] returns (object safe, `Send` for tokio tasks).
pub type ExecFuture<'a> = Pin<Box<dyn Future<Output = Result<ExecOutput, ExecError>> + Send + 'a>>;

/// Runs a command inside a container. The agent implements it with the supervisor's `exec` op;
/// unit tests use fakes.
pub trait Exec: Send + Sync {
    /// Runs `command` (argv) in `container`; `timeout` is `None` for lifecycle hooks (kubelet
    /// passes no timeout to them), the probe's timeoutSeconds for exec probes.
    fn exec<'a>(
        &'a self,
        container: &'a str,
        command: &'a [String],
        timeout: Option<Duration>,
    ) -> ExecFuture<'a>;
}

/// One container instance to probe.
#[derive(Clone)]
pub struct Target {
    /// The pod as kubelet prints it in hook messages: `<name>_<namespace>(<uid>)`
    /// (see [`pod_label`]).
    pub pod: String,
    /// The container's name in the pod spec.
    pub container: String,
    /// The pod's IP (the node's IP for host-network pods); used when an action names no host.
    pub pod_ip: Option<IpAddr>,
    /// The container's ports, to resolve ports given by name.
    pub ports: Vec<ContainerPort>,
    /// How to run commands inside the container.
    pub exec: Arc<dyn Exec>,
    /// When the container started running (initialDelaySeconds counts from here).
    pub started_at: SystemTime,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("pod", &self.pod)
            .field("container", &self.container)
            .field("pod_ip", &self.pod_ip)
            .field("ports", &self.ports.len())
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

/// kubelet's `format.Pod`: `<name>_<namespace>(<uid>)`.
pub fn pod_label(name: &str, namespace: &str, uid: &str) -> String {
    format!("{name}_{namespace}({uid})")
}

/// Why an action's address could not be worked out (kubelet reports these as probe errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// A named port that the container does not declare (`pkg/probe/util.go`).
    #[error("port {0:?} not found")]
    PortNotFound(String),
    #[error("invalid port number: {0}")]
    InvalidPort(i64),
    /// No host in the action and no pod IP known yet.
    #[error("failed to find networking container: the pod has no IP yet")]
    NoPodIp,
}

impl Target {
    /// Resolves a port given by number or by the name of one of the container's ports.
    pub fn resolve_port(&self, port: &IntOrString) -> Result<u16, AddressError> {
        let number = match port {
            IntOrString::Int(n) => i64::from(*n),
            IntOrString::String(name) => {
                let found = self
                    .ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .ok_or_else(|| AddressError::PortNotFound(name.clone()))?;
                i64::from(found.container_port)
            }
        };
        u16::try_from(number)
            .ok()
            .filter(|n| *n > 0)
            .ok_or(AddressError::InvalidPort(number))
    }

    /// The action's host, or the pod IP when it names none.
    pub fn host(&self, host: Option<&str>) -> Result<String, AddressError> {
        match host.filter(|h| !h.is_empty()) {
            Some(h) => Ok(h.to_string()),
            None => self
                .pod_ip
                .map(|ip| ip.to_string())
                .ok_or(AddressError::NoPodIp),
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A scripted [`Exec`] for unit tests.
    use super::*;
    use std::sync::Mutex;

    /// One recorded call: container, argv, timeout.
    pub type Call = (String, Vec<String>, Option<Duration>);

    /// Answers every call with the next scripted reply (the last one repeats) and records argv.
    pub struct FakeExec {
        pub replies: Mutex<Vec<Result<ExecOutput, ExecError>>>,
        pub calls: Mutex<Vec<Call>>,
    }

    impl FakeExec {
        pub fn new(replies: Vec<Result<ExecOutput, ExecError>>) -> Arc<FakeExec> {
            Arc::new(FakeExec {
                replies: Mutex::new(replies),
                calls: Mutex::new(Vec::new()),
            })
        }

        pub fn exit(code: i32, stdout: &str, stderr: &str) -> Result<ExecOutput, ExecError> {
            Ok(ExecOutput {
                exit_code: code,
                stdout: stdout.into(),
                stderr: stderr.into(),
                timed_out: false,
            })
        }
    }

    impl Exec for FakeExec {
        fn exec<'a>(
            &'a self,
            container: &'a str,
            command: &'a [String],
            timeout: Option<Duration>,
        ) -> ExecFuture<'a> {
            Box::pin(async move {
                self.calls
                    .lock()
                    .map_err(|_| ExecError("poisoned".into()))?
                    .push((container.to_string(), command.to_vec(), timeout));
                let mut replies = self
                    .replies
                    .lock()
                    .map_err(|_| ExecError("poisoned".into()))?;
                if replies.len() > 1 {
                    replies.remove(0)
                } else {
                    replies
                        .first()
                        .cloned()
                        .unwrap_or_else(|| Err(ExecError("no reply scripted".into())))
                }
            })
        }
    }

    pub fn target(exec: Arc<dyn Exec>) -> Target {
        Target {
            pod: pod_label("web", "default", "u1"),
            container: "web".into(),
            pod_ip: Some(IpAddr::from([127, 0, 0, 1])),
            ports: vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..ContainerPort::default()
            }],
            exec,
            started_at: SystemTime::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_resolve_by_number_and_name() {
        let t = fake::target(fake::FakeExec::new(vec![]));
        assert_eq!(t.resolve_port(&IntOrString::Int(80)), Ok(80));
        assert_eq!(
            t.resolve_port(&IntOrString::String("http".into())),
            Ok(8080)
        );
        assert_eq!(
            t.resolve_port(&IntOrString::String("metrics".into()))
                .map_err(|e| e.to_string()),
            Err("port \"metrics\" not found".to_string())
        );
        assert_eq!(
            t.resolve_port(&IntOrString::Int(70000)),
            Err(AddressError::InvalidPort(70000))
        );
        assert_eq!(
            t.resolve_port(&IntOrString::Int(0)),
            Err(AddressError::InvalidPort(0))
        );
    }

    #[test]
    fn host_defaults_to_the_pod_ip() {
        let mut t = fake::target(fake::FakeExec::new(vec![]));
        assert_eq!(t.host(None).as_deref(), Ok("127.0.0.1"));
        assert_eq!(t.host(Some("")).as_deref(), Ok("127.0.0.1"));
        assert_eq!(t.host(Some("example.test")).as_deref(), Ok("example.test"));
        t.pod_ip = None;
        assert_eq!(t.host(None), Err(AddressError::NoPodIp));
    }
}
