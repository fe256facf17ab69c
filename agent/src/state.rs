//! Node-local state under `--root-dir`: the layout (`pki/`, `config.json`), atomic writes with
//! explicit modes, the saved join settings that `keel-agent run` starts from, and the node's
//! kubeconfig.

use base64::Engine;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_ROOT: &str = "/var/lib/keel/agent";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "reading {path}: {source} (join this node first with `keel-agent join ... --root-dir <dir>`)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid keel-agent config: {source}; join the node again")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

pub type Result<T> = std::result::Result<T, StateError>;

/// Paths of everything this node keeps on disk.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }
    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }
    pub fn ca(&self) -> PathBuf {
        self.pki().join("ca.crt")
    }
    pub fn key(&self) -> PathBuf {
        self.pki().join("node.key")
    }
    pub fn cert(&self) -> PathBuf {
        self.pki().join("node.crt")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.pki().join("kubeconfig")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    /// `pods/`: one folder per pod uid (see `pod::record`).
    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods().join(uid)
    }
    /// The image store (`keel-shim image --image-root`).
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    /// CNI configuration and IPAM data.
    pub fn cni(&self) -> PathBuf {
        self.root.join("cni")
    }
}

/// Reserved resources subtracted from capacity for allocatable (kubelet's system-reserved plus
/// kube-reserved, in one list).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Reserved {
    /// Millicores.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
}

/// What `join` decided and `run` needs: saved as `config.json` under the root dir.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    /// `https://host:port` of the API server.
    pub server: String,
    pub node_name: String,
    /// `--node-ip`, if given; otherwise chosen at each start.
    #[serde(default)]
    pub node_ip: Option<IpAddr>,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    #[serde(default)]
    pub control_plane: bool,
    #[serde(default)]
    pub reserved: Reserved,
    /// k3s-style registries.yaml for image pulls (`--registry-config`).
    #[serde(default)]
    pub registry_config: Option<PathBuf>,
    #[serde(default)]
    pub cluster: ClusterSettings,
    /// `--eviction-hard` given to `join` (kubelet's defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_hard: Option<String>,
}

/// Cluster-wide settings the agent needs for pods (kubelet's clusterDNS, clusterDomain and
/// kube-proxy's clusterCIDR).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSettings {
    pub cluster_cidr: String,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            cluster_cidr: "10.244.0.0/16".into(),
            cluster_dns: IpAddr::from([10, 96, 0, 10]),
            cluster_domain: "cluster.local".into(),
        }
    }
}

impl AgentConfig {
    pub fn load(layout: &Layout) -> Result<AgentConfig> {
        let path = layout.config();
        let data = std::fs::read(&path).map_err(|source| StateError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&data).map_err(|source| StateError::Parse { path, source })
    }

    pub fn save(&self, layout: &Layout) -> Result<()> {
        let data = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_atomic(&layout.config(), &data, 0o600)
    }
}

/// Writes `data` to `path` through a temporary file in the same folder, fsynced and renamed,
/// so a crash leaves either the old or the new content (rename(2) is atomic within a filesystem).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

pub fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| StateError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The user part of a kubeconfig.
pub enum Credentials<'a> {
    Token(&'a str),
    Certificate { cert_pem: &'a str, key_pem: &'a str },
}

/// A kubeconfig for `server`, trusting `ca_pem`, with `creds`.
pub fn kubeconfig(server: &str, ca_pem: &str, user: &str, creds: Credentials<'_>) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user_fields = match creds {
        Credentials::Token(t) => format!("    token: {t}\n"),
        Credentials::Certificate { cert_pem, key_pem } => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(cert_pem),
            b64(key_pem)
        ),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: keel\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: \"{user}\"\n  user:\n{user_fields}contexts:\n- name: default\n  context:\n    cluster: keel\n    user: \"{user}\"\ncurrent-context: default\n",
        b64(ca_pem)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pki/node.key");
        write_atomic(&p, b"one", 0o600).expect("write");
        write_atomic(&p, b"two", 0o600).expect("rewrite");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("pki"))
            .expect("dir")
            .collect();
        assert_eq!(left.len(), 1, "no temporary files left behind");
    }

    #[test]
    fn config_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Layout::new(dir.path());
        let c = AgentConfig {
            server: "https://192.168.56.10:6443".into(),
            node_name: "w1".into(),
            node_ip: Some("192.168.56.11".parse().expect("ip")),
            labels: vec![("a".into(), "b".into())],
            control_plane: true,
            reserved: Reserved::default(),
            registry_config: Some("/etc/keel/registries.yaml".into()),
            cluster: ClusterSettings::default(),
            eviction_hard: Some("memory.available<1Gi".into()),
        };
        c.save(&l).expect("save");
        assert_eq!(AgentConfig::load(&l).expect("load"), c);
    }

    #[test]
    fn kubeconfig_parses_as_yaml() {
        let kc = kubeconfig(
            "https://1.2.3.4:6443",
            "CA",
            "system:node:w1",
            Credentials::Token("abcdef.0123456789abcdef"),
        );
        let v: serde_yaml::Value = serde_yaml::from_str(&kc).expect("yaml");
        assert_eq!(v["users"][0]["name"].as_str(), Some("system:node:w1"));
        assert_eq!(
            v["users"][0]["user"]["token"].as_str(),
            Some("abcdef.0123456789abcdef")
        );
    }
}
