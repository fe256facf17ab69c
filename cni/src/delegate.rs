//! Delegation (SPEC.md "Delegated plugins"): find another plugin on `CNI_PATH` and exec it with
//! the same environment, `CNI_COMMAND` set to the command wanted, and the same config on stdin.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

use crate::spec::error::{DELEGATE_FAILURE, INVALID_NETWORK_CONFIG};
use crate::spec::{CniError, CniResult, Command, Env};

/// The executable `name` in the first `CNI_PATH` directory holding it.
pub fn find(name: &str, env: &Env) -> Result<PathBuf, CniError> {
    if name.is_empty() || name.contains('/') {
        return Err(CniError::new(
            INVALID_NETWORK_CONFIG,
            format!("invalid plugin type {name:?}"),
        )
        .with_details("a plugin type is a file name looked up in CNI_PATH"));
    }
    env.path
        .iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                INVALID_NETWORK_CONFIG,
                format!("failed to find plugin {name:?} in CNI_PATH"),
            )
            .with_details(format!(
                "searched {:?}; install the plugin there or fix the type",
                env.path
            ))
        })
}

/// Runs `name` for `command`. ADD returns its result; a failure returns the delegate's own
/// error object when it printed one.
pub fn exec(
    name: &str,
    command: Command,
    env: &Env,
    stdin: &[u8],
) -> Result<Option<CniResult>, CniError> {
    let bin = find(name, env)?;
    let fail = |msg: String| CniError::new(DELEGATE_FAILURE, msg);
    let mut child = Process::new(&bin)
        .env("CNI_COMMAND", command.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("run {}: {e}", bin.display())))?;
    if let Some(mut si) = child.stdin.take() {
        si.write_all(stdin)
            .map_err(|e| fail(format!("write config to {}: {e}", bin.display())))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("wait for {}: {e}", bin.display())))?;
    if !out.status.success() {
        if let Ok(e) = serde_json::from_slice::<CniError>(&out.stdout) {
            return Err(e);
        }
        return Err(fail(format!(
            "{} {} failed ({})",
            name,
            command.as_str(),
            out.status
        ))
        .with_details(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    if command != Command::Add {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        fail(format!(
            "{name} ADD printed something that is not JSON: {e}"
        ))
    })?;
    CniResult::from_value(v).map(Some)
}

/// Whether plugin `name` lists `version` in its VERSION reply (used before forwarding the
/// 1.1-only STATUS and GC, which plugins of older spec versions reject as unknown commands).
pub fn supports(name: &str, env: &Env, version: &str) -> Result<bool, CniError> {
    let bin = find(name, env)?;
    let out = Process::new(&bin)
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| {
            CniError::new(
                DELEGATE_FAILURE,
                format!("run {} VERSION: {e}", bin.display()),
            )
        })?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(v["supportedVersions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|s| s.as_str() == Some(version))))
}
