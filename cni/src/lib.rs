//! keel-cni: the CNI 1.1 plugins `keel-bridge`, `keel-host-local` and `keel-loopback`, and
//! the spec types (`spec`) the agent reuses to drive any CNI plugin.
//!
//! - `spec`: configuration, results, errors, env parameters, versions (SPEC.md).
//! - `skel`: one invocation: env + stdin in, result or error JSON out, exit code.
//! - `delegate`: exec another plugin found on `CNI_PATH` (IPAM).
//! - `netlink`: a synchronous rtnetlink client; `netns`: entering network namespaces.
//! - `hostlocal`, `bridge`, `loopback`: the plugins.

pub mod bridge;
pub mod delegate;
pub mod hostlocal;
pub mod loopback;
pub mod netlink;
pub mod netns;
pub mod skel;
pub mod spec;
pub mod trace;
