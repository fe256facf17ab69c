//! The request configuration a runtime writes on a plugin's stdin (SPEC.md "Section 1" and the
//! "plugin configuration objects" of section 3): the well-known keys every plugin shares.
//! Plugin-specific keys are read by each plugin from [`NetConf::raw`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{CniError, DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_NETWORK_CONFIG};
use super::result::CniResult;
use super::types::Dns;
use super::version;

/// `{containerID, ifname}` in `cni.dev/valid-attachments` (GC, 1.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The `ipam` object: only `type` is common, the rest belongs to the IPAM plugin.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IpamRef {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
}

/// The keys of a plugin configuration that the spec itself defines.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(
        rename = "runtimeConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub runtime_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(
        rename = "prevResult",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prev_result: Option<Value>,
    /// GC: the attachments the runtime still knows about.
    #[serde(
        rename = "cni.dev/valid-attachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// GC, the key the spec-v1.1.0 tag used; libcni sends both.
    #[serde(
        rename = "cni.dev/attachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub attachments: Option<Vec<Attachment>>,
    /// The whole object as received, so unknown keys survive delegation.
    #[serde(skip)]
    pub raw: Value,
}

impl NetConf {
    /// Decodes stdin. Malformed JSON is code 6; a missing or unsupported version is code 1.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                DECODE_FAILURE,
                "the network configuration on stdin is not valid JSON",
            )
            .with_details(e.to_string())
        })?;
        if !raw.is_object() {
            return Err(CniError::new(
                DECODE_FAILURE,
                "the network configuration on stdin must be a JSON object",
            ));
        }
        let mut conf: NetConf = serde_json::from_value(raw.clone()).map_err(|e| {
            CniError::new(
                DECODE_FAILURE,
                "the network configuration has a field of the wrong type",
            )
            .with_details(e.to_string())
        })?;
        conf.raw = raw;
        if !version::is_supported(&conf.cni_version) {
            return Err(
                CniError::new(INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(
                    format!(
                        "config is {:?}, plugin supports {:?}; set cniVersion to one of them",
                        conf.cni_version,
                        version::SUPPORTED_VERSIONS
                    ),
                ),
            );
        }
        Ok(conf)
    }

    /// Decodes the plugin-specific view of the same object.
    pub fn plugin_conf<T: serde::de::DeserializeOwned>(&self) -> Result<T, CniError> {
        serde_json::from_value(self.raw.clone()).map_err(|e| {
            CniError::new(
                INVALID_NETWORK_CONFIG,
                format!("network {:?}: invalid configuration", self.name),
            )
            .with_details(e.to_string())
        })
    }

    /// The `prevResult`, decoded from any supported result version.
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        match &self.prev_result {
            None | Some(Value::Null) => Ok(None),
            Some(v) if v.as_object().is_some_and(|o| o.is_empty()) => Ok(None),
            Some(v) => CniResult::from_value(v.clone()).map(Some),
        }
    }

    /// GC's attachment list: `cni.dev/valid-attachments`, else `cni.dev/attachments`.
    pub fn gc_attachments(&self) -> Vec<Attachment> {
        self.valid_attachments
            .clone()
            .or_else(|| self.attachments.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_codes() {
        assert_eq!(NetConf::parse(b"{nope").err().map(|e| e.code), Some(6));
        assert_eq!(NetConf::parse(b"[]").err().map(|e| e.code), Some(6));
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"9.9.9"}"#)
                .err()
                .map(|e| e.code),
            Some(1)
        );
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"t","x":{"y":1},
            "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        )
        .expect("valid");
        assert_eq!(c.raw["x"]["y"], 1);
        assert_eq!(c.gc_attachments().len(), 1);
    }
}
