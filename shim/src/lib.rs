//! keel-shim: Keel's runc-compatible OCI runtime and per-container supervisor.
//!
//! Where to start:
//! * [`proto`] - the supervisor's socket protocol; the only module without the `runtime`
//!   feature, so the agent can depend on it without pulling in any syscall code.
//! * [`cli`] - the runc-compatible command line (`main.rs` only parses and maps errors).
//! * [`container`] - one file per lifecycle verb (create, start, kill, delete, exec, ...).
//! * [`supervisor`] - the process that outlives `create`: reaps, logs (CRI format), records
//!   exits, answers the socket.
//! * [`init`] - what the container's init does between clone and exec (rootfs, credentials).
//! * [`cgroups`], [`seccomp`], [`config`], [`state`] - the pieces those use.
//! * [`sys`] - every `unsafe` block of the crate.
//!
//! The shim is synchronous and single-threaded by design (it forks and enters namespaces).

pub mod proto;

#[cfg(feature = "runtime")]
pub mod cgroups;
#[cfg(feature = "runtime")]
pub mod cli;
#[cfg(feature = "runtime")]
pub mod config;
#[cfg(feature = "runtime")]
pub mod container;
#[cfg(feature = "runtime")]
pub mod error;
#[cfg(feature = "runtime")]
pub mod init;
#[cfg(feature = "runtime")]
pub mod seccomp;
#[cfg(feature = "runtime")]
pub mod state;
#[cfg(feature = "runtime")]
pub mod supervisor;
#[cfg(feature = "runtime")]
pub mod sys;
