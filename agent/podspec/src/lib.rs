//! keel-podspec: Pod spec -> OCI runtime spec, volumes, env, /etc files, QoS and pod cgroups.
//!
//! A library for the agent's pod executor (`agent/src/pod/`). Everything a kubelet derives
//! from a Pod before it asks the runtime for a container, as plain functions: no tokio except
//! [`refs::fetch`], no fork, no namespace entered (STYLE.md, the fork rule). Kernel state is
//! reached through paths (cgroup layout, pod folder), so pure logic is table-tested and the
//! root test (`tests/bundle.rs`) runs a built bundle with the real `keel-shim`.
//!
//! The order the executor calls it in, per pod and container:
//! ```text
//! qos::class(&pod) -> QosClass                                  status.qosClass
//! cgroup::pod_path(node, qos, uid) -> String                    /keel/<node>/[burstable|besteffort/]pod<uid>
//! cgroup::ensure_pod_cgroup(&path, &pod)                        (or ensure_pod_cgroup_in(&Layout, .., pids_limit))
//! refs::fetch(&client, &pod).await -> Refs                      ConfigMaps + Secrets the pod names
//! refs::pull_secrets(&refs, &pod) -> Vec<RegistryAuth>          for the image pull
//! etc::write(&pod, pod_dir, &DnsSettings, &pod_ips, node_hostname) -> EtcFiles
//! volumes::prepare(&pod, pod_dir, &refs, &NodeInfo) -> Volumes  FailedMount errors
//! env::resolve(&pod, &container, &refs, &NodeInfo, &pod_ips) -> Vec<(String, String)>
//! spec::termination_log(pod_dir, name, id) -> PathBuf
//! spec::build(&SpecInput{..}) -> oci_spec::runtime::Spec
//! spec::write_config(bundle, &spec) -> <bundle>/config.json
//! ... keel-shim create/start/delete ...
//! volumes::cleanup(pod_dir); cgroup::remove_pod_cgroup(&path)   on pod removal
//! ```
//! Every error is a [`ConfigError`]: `Display` is kubelet's message, `reason()` its reason
//! (CreateContainerConfigError, CreateContainerError, FailedMount, FailedCreatePodContainer,
//! FailedCreatePodSandBox).
//!
//! - [`qos`]: QoS class, `oom_score_adj`.
//! - [`quantity`]: resource quantities and container requests/limits.
//! - [`cgroup`]: pod cgroups under the QoS tree, v1 and v2.
//! - [`refs`]: fetching ConfigMaps/Secrets; image pull credentials.
//! - [`downward`]: fieldRef / resourceFieldRef values.
//! - [`env`](mod@env): `$(VAR)` expansion and the container environment.
//! - [`volumes`]: emptyDir, hostPath, configMap, secret, downwardAPI, projected.
//! - [`etc`]: /etc/hosts, /etc/resolv.conf, /etc/hostname.
//! - [`spec`]: the OCI runtime spec, with [`spec::security`] for the securityContext.

pub mod cgroup;
pub mod downward;
pub mod env;
pub mod error;
pub mod etc;
pub mod qos;
pub mod quantity;
pub mod refs;
pub mod spec;
pub mod volumes;

pub use error::{ConfigError, Result};
