//! The CNI error object (`{"cniVersion","code","msg","details"}`) and the spec's error codes
//! (SPEC.md "Error"; 50/51 from the STATUS section of 1.1).

use serde::{Deserialize, Serialize};

/// Incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Unsupported field in the network configuration.
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Container unknown or does not exist (no cleanup needed).
pub const UNKNOWN_CONTAINER: u32 = 3;
/// Invalid necessary environment variables.
pub const INVALID_ENV: u32 = 4;
/// I/O failure.
pub const IO_FAILURE: u32 = 5;
/// Failed to decode content.
pub const DECODE_FAILURE: u32 = 6;
/// Invalid network config.
pub const INVALID_NETWORK_CONFIG: u32 = 7;
/// Try again later.
pub const TRY_AGAIN_LATER: u32 = 11;
/// STATUS: the plugin is not available.
pub const NOT_AVAILABLE: u32 = 50;
/// STATUS: not available, existing containers may have limited connectivity.
pub const NOT_AVAILABLE_LIMITED: u32 = 51;
/// Plugin specific (100+): an IPAM range set has no free address left.
pub const ADDRESS_EXHAUSTED: u32 = 100;
/// Plugin specific: the (container, ifname) pair already holds an address or interface.
pub const ALREADY_EXISTS: u32 = 101;
/// Plugin specific: a kernel (netlink, sysctl) operation failed.
pub const KERNEL_FAILURE: u32 = 102;
/// Plugin specific: firewall (iptables) programming failed.
pub const FIREWALL_FAILURE: u32 = 103;
/// Plugin specific: CHECK found a resource missing or different.
pub const CHECK_FAILED: u32 = 104;
/// Plugin specific: a delegated plugin could not be run or failed without an error object.
pub const DELEGATE_FAILURE: u32 = 105;

/// An error as a plugin reports it on stdout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg} (code {code}{})", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            cni_version: String::new(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The JSON text printed on stdout, stamped with the request's `cniVersion`.
    pub fn to_json(&self, cni_version: &str) -> String {
        let mut e = self.clone();
        if e.cni_version.is_empty() {
            e.cni_version = cni_version.to_string();
        }
        serde_json::to_string(&e)
            .unwrap_or_else(|_| format!("{{\"code\":{},\"msg\":\"error\"}}", e.code))
    }
}
