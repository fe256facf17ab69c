//! The runtime side of one CNI plugin invocation (SPEC.md section 3 "Execution protocol"):
//! find the binary named by `type` in the plugin folders, exec it with the `CNI_*` parameters
//! added to the agent's own environment (as libcni does: plugins exec iptables etc. through
//! PATH), write the request configuration on stdin, and read a result or an error object from
//! stdout. The child is always waited for (also on timeout: killed, then reaped by tokio).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use keel_cni::spec::CniError;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::NetError;

/// Upper bound for one plugin run; the slowest legitimate step seen is a DEL waiting for the
/// kernel to free a veth (tens of ms) or iptables under load (seconds).
const TIMEOUT: Duration = Duration::from_secs(60);

/// The reference plugins use 999 for "everything else"; we use it when a plugin fails
/// without printing an error object.
const UNKNOWN_FAILURE: u32 = 999;

/// The per-invocation parameters (the `CNI_*` variables other than `CNI_COMMAND`).
pub struct Invocation<'a> {
    pub container_id: &'a str,
    /// Empty on DEL when the namespace is already gone (allowed by the spec).
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
    pub bin_dirs: &'a [PathBuf],
}

/// Finds `plugin` in the folders, in order.
pub fn find(plugin: &str, bin_dirs: &[PathBuf]) -> Result<PathBuf, NetError> {
    bin_dirs
        .iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| NetError::PluginNotFound {
            plugin: plugin.to_string(),
            searched: join_paths(bin_dirs),
        })
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs `command` (`ADD`, `DEL`, `CHECK`) of the plugin whose request configuration is
/// `config`. Returns stdout parsed as JSON (`Value::Null` when empty, as DEL prints nothing).
pub async fn run(
    command: &'static str,
    config: &Value,
    inv: &Invocation<'_>,
) -> Result<Value, NetError> {
    let plugin = config
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let path = find(&plugin, inv.bin_dirs)?;
    let run_err = |source| NetError::PluginRun {
        plugin: plugin.clone(),
        path: path.clone(),
        source,
    };
    let mut child = Command::new(&path)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", join_paths(inv.bin_dirs))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(run_err)?;
    let input = config.to_string();
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin may exit without reading everything (e.g. on bad env): a broken pipe here
        // is not the error to report; its exit status and error object are.
        let _ = stdin.write_all(input.as_bytes()).await;
    }
    let out = match tokio::time::timeout(TIMEOUT, child.wait_with_output()).await {
        Ok(r) => r.map_err(run_err)?,
        Err(_) => {
            return Err(NetError::PluginTimeout {
                plugin,
                command,
                seconds: TIMEOUT.as_secs(),
            });
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        tracing::debug!(plugin = %plugin, command, stderr = %stderr.trim(), "plugin log");
    }
    if !out.status.success() {
        let error = serde_json::from_slice::<CniError>(&out.stdout).unwrap_or_else(|_| {
            CniError::new(
                UNKNOWN_FAILURE,
                format!("exited with {} without a CNI error object", out.status),
            )
            .with_details(last_lines(&stderr))
        });
        return Err(NetError::Plugin {
            plugin,
            command,
            error,
        });
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| NetError::Plugin {
        plugin,
        command,
        error: CniError::new(
            keel_cni::spec::error::DECODE_FAILURE,
            "the plugin printed something that is not JSON",
        )
        .with_details(e.to_string()),
    })
}

fn last_lines(s: &str) -> String {
    let lines: Vec<&str> = s.trim().lines().collect();
    lines[lines.len().saturating_sub(3)..].join("; ")
}

/// `CNI_ARGS` as kubelet/containerd pass it (`cni:CONVENTIONS.md`).
pub fn k8s_args(namespace: &str, name: &str, container_id: &str, uid: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={uid}"
    )
}
