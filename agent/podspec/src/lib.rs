//! keel-podspec: Pod spec -> OCI runtime spec, volumes, env, /etc files, QoS and pod cgroups.

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
