//! The CNI specification as types: configuration, results of every supported version, errors
//! with their codes, environment parameters and version negotiation. The agent reuses this
//! module to drive any CNI plugin; the plugins in this crate use it to answer.

mod config;
mod conflist;
mod env;
pub mod error;
mod ipnet;
mod result;
mod types;
pub mod version;

pub use config::{Attachment, IpamRef, NetConf};
pub use conflist::NetConfList;
pub use env::{Command, Env};
pub use error::CniError;
pub use ipnet::{IpNet, ParseIpNetError, from_u128, next_ip, to_u128};
pub use result::CniResult;
pub use types::{Dns, Interface, IpConfig, Route};
