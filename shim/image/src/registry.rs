//! Registry configuration in k3s's `registries.yaml` shape: mirrors (endpoint lists, rewrites) and
//! per-host auth and TLS. Source: k3s-io/k3s docs/install/private_registry.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::reference::ImageRef;

/// Why the registry configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read registry config {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse registry config {path}: {message}; see k3s registries.yaml (mirrors, configs)")]
    Parse { path: PathBuf, message: String },
    #[error(
        "mirror {host}: endpoint {endpoint:?} is not a URL like https://mirror.example.com:5000"
    )]
    Endpoint { host: String, endpoint: String },
    #[error("mirror {host}: rewrite pattern {pattern:?} is not a valid regex: {message}")]
    Rewrite {
        host: String,
        pattern: String,
        message: String,
    },
    #[error("configs.{host}.auth.auth is not base64 of USER:PASSWORD")]
    AuthField { host: String },
    #[error("configs.{host}.tls.{field}: read {path}")]
    TlsFile {
        host: String,
        field: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "configs.{host}.tls: client certificates (cert_file/key_file) are not supported by keel yet; use auth instead"
    )]
    ClientCert { host: String },
}

/// The whole `registries.yaml` document.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    #[serde(default)]
    pub configs: BTreeMap<String, HostConfig>,
}

/// `mirrors.<registry>`: where to fetch that registry's images from, in order.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Regex -> replacement applied to the repository path (k3s `rewrite`).
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

/// `configs.<host>`: credentials and TLS for one registry or mirror host.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `configs.<host>.auth`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub username: Option<String>,
    pub password: Option<String>,
    /// base64 of `username:password`, as in a Docker config.json.
    pub auth: Option<String>,
    /// Sent as a bearer token.
    pub identity_token: Option<String>,
}

/// `configs.<host>.tls`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Credentials resolved for one endpoint.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Anonymous,
    Basic { username: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => write!(f, "Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Bearer(_) => write!(f, "Bearer(***)"),
        }
    }
}

/// One place to fetch an image from: a mirror endpoint or the registry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` as used in URLs.
    pub host: String,
    /// Plain HTTP (only when the config says `http://`).
    pub plain_http: bool,
    /// The repository path on this endpoint, after any rewrite.
    pub repository: String,
    pub credentials: Credentials,
    /// PEM CA bundle to trust in addition to the system roots.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure_skip_verify: bool,
}

impl RegistriesConfig {
    /// Reads and validates a `registries.yaml`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text` (named `path` in errors) and validates every mirror entry.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: RegistriesConfig = if text.trim().is_empty() {
            RegistriesConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
        };
        for (host, mirror) in &config.mirrors {
            for endpoint in &mirror.endpoint {
                parse_endpoint(host, endpoint)?;
            }
            for pattern in mirror.rewrite.keys() {
                regex::Regex::new(pattern).map_err(|e| ConfigError::Rewrite {
                    host: host.clone(),
                    pattern: pattern.clone(),
                    message: e.to_string(),
                })?;
            }
        }
        Ok(config)
    }

    /// The endpoints to try for `image`, in order: each mirror endpoint, then the registry itself
    /// (k3s and containerd always fall back to the default endpoint last). A `*` mirror applies to
    /// every registry without its own entry.
    pub fn endpoints(&self, image: &ImageRef) -> Result<Vec<Endpoint>, ConfigError> {
        let registry = image.registry();
        let mirror = self.mirrors.get(registry).or_else(|| self.mirrors.get("*"));
        let mut out = Vec::new();
        let mut seen_default = false;
        if let Some(mirror) = mirror {
            let repository = rewrite(registry, mirror, image.repository())?;
            for raw in &mirror.endpoint {
                let (host, plain_http) = parse_endpoint(registry, raw)?;
                if host == default_host(registry) {
                    seen_default = true;
                }
                out.push(self.endpoint(&host, plain_http, &repository)?);
            }
        }
        if !seen_default {
            out.push(self.endpoint(&default_host(registry), false, image.repository())?);
        }
        Ok(out)
    }

    fn endpoint(
        &self,
        host: &str,
        plain_http: bool,
        repository: &str,
    ) -> Result<Endpoint, ConfigError> {
        // configs are keyed by the endpoint host; docker.io's config also covers the Hub hosts.
        let config = self.configs.get(host).or_else(|| {
            (host == "registry-1.docker.io")
                .then(|| self.configs.get("docker.io"))
                .flatten()
        });
        let mut endpoint = Endpoint {
            host: host.to_string(),
            plain_http,
            repository: repository.to_string(),
            credentials: Credentials::Anonymous,
            ca_pem: None,
            insecure_skip_verify: false,
        };
        let Some(config) = config else {
            return Ok(endpoint);
        };
        if let Some(auth) = &config.auth {
            endpoint.credentials = credentials(host, auth)?;
        }
        if let Some(tls) = &config.tls {
            if tls.cert_file.is_some() || tls.key_file.is_some() {
                return Err(ConfigError::ClientCert {
                    host: host.to_string(),
                });
            }
            if let Some(ca) = &tls.ca_file {
                endpoint.ca_pem =
                    Some(std::fs::read(ca).map_err(|source| ConfigError::TlsFile {
                        host: host.to_string(),
                        field: "ca_file",
                        path: ca.clone(),
                        source,
                    })?);
            }
            endpoint.insecure_skip_verify = tls.insecure_skip_verify;
        }
        Ok(endpoint)
    }
}

/// The host the registry itself answers on (`docker.io` is served by `registry-1.docker.io`).
fn default_host(registry: &str) -> String {
    if registry == "docker.io" {
        "registry-1.docker.io".to_string()
    } else {
        registry.to_string()
    }
}

fn credentials(host: &str, auth: &AuthConfig) -> Result<Credentials, ConfigError> {
    use base64::Engine as _;
    if let (Some(u), Some(p)) = (&auth.username, &auth.password) {
        return Ok(Credentials::Basic {
            username: u.clone(),
            password: p.clone(),
        });
    }
    if let Some(encoded) = &auth.auth {
        let bad = || ConfigError::AuthField {
            host: host.to_string(),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (u, p) = text.split_once(':').ok_or_else(bad)?;
        return Ok(Credentials::Basic {
            username: u.to_string(),
            password: p.to_string(),
        });
    }
    if let Some(token) = &auth.identity_token {
        return Ok(Credentials::Bearer(token.clone()));
    }
    Ok(Credentials::Anonymous)
}

/// Splits `http://host:port[/v2]` into the host and whether it is plain HTTP.
fn parse_endpoint(registry: &str, raw: &str) -> Result<(String, bool), ConfigError> {
    let bad = || ConfigError::Endpoint {
        host: registry.to_string(),
        endpoint: raw.to_string(),
    };
    let (plain_http, rest) = if let Some(rest) = raw.strip_prefix("http://") {
        (true, rest)
    } else if let Some(rest) = raw.strip_prefix("https://") {
        (false, rest)
    } else if raw.contains("://") {
        return Err(bad());
    } else {
        (false, raw)
    };
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p),
        None => (rest, ""),
    };
    // The distribution API lives at /v2 on the host; other path prefixes are not supported by
    // the client (it builds `<scheme>://<host>/v2/...`), so say so instead of silently ignoring.
    let path = path.trim_end_matches('/');
    if host.is_empty() || !(path.is_empty() || path == "v2") || host.contains(['@', '?', '#']) {
        return Err(bad());
    }
    Ok((host.to_string(), plain_http))
}

fn rewrite(registry: &str, mirror: &Mirror, repository: &str) -> Result<String, ConfigError> {
    for (pattern, replacement) in &mirror.rewrite {
        let re = regex::Regex::new(pattern).map_err(|e| ConfigError::Rewrite {
            host: registry.to_string(),
            pattern: pattern.clone(),
            message: e.to_string(),
        })?;
        if re.is_match(repository) {
            return Ok(re.replace(repository, replacement.as_str()).into_owned());
        }
    }
    Ok(repository.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> RegistriesConfig {
        RegistriesConfig::parse(text, Path::new("registries.yaml")).expect("parse")
    }

    #[test]
    fn mirror_then_default() {
        let c = cfg(r#"
mirrors:
  docker.io:
    endpoint: ["http://127.0.0.1:5000", "https://mirror.example.com/v2"]
    rewrite:
      "^library/(.*)": "hub/$1"
configs:
  "mirror.example.com":
    auth: {username: u, password: p}
    tls: {insecure_skip_verify: true}
"#);
        let image = ImageRef::parse("nginx:1.14").expect("ref");
        let eps = c.endpoints(&image).expect("endpoints");
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0].host, "127.0.0.1:5000");
        assert!(eps[0].plain_http);
        assert_eq!(eps[0].repository, "hub/nginx");
        assert_eq!(eps[0].credentials, Credentials::Anonymous);
        assert_eq!(eps[1].host, "mirror.example.com");
        assert!(!eps[1].plain_http && eps[1].insecure_skip_verify);
        assert!(matches!(eps[1].credentials, Credentials::Basic { .. }));
        assert_eq!(eps[2].host, "registry-1.docker.io");
        assert_eq!(eps[2].repository, "library/nginx");
    }

    #[test]
    fn auth_field_is_decoded() {
        let c = cfg("configs:\n  reg.local:\n    auth: {auth: dXNlcjpwYXNz}\n");
        let eps = c
            .endpoints(&ImageRef::parse("reg.local/x").expect("ref"))
            .expect("endpoints");
        assert_eq!(
            eps[0].credentials,
            Credentials::Basic {
                username: "user".into(),
                password: "pass".into()
            }
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let p = Path::new("r.yaml");
        let e = RegistriesConfig::parse("mirrors:\n  x:\n    endpoint: ['ftp://a']\n", p);
        assert!(e.expect_err("refused").to_string().contains("ftp://a"));
        let e = RegistriesConfig::parse("mirrors:\n  x:\n    endpoints: ['a']\n", p);
        assert!(e.expect_err("refused").to_string().contains("r.yaml"));
        let e = RegistriesConfig::parse("mirrors:\n  x:\n    endpoint: ['https://a/b/c']\n", p);
        assert!(e.is_err());
        let c = cfg("configs:\n  r.local:\n    auth: {auth: '!!'}\n");
        let e = c.endpoints(&ImageRef::parse("r.local/x").expect("ref"));
        assert!(
            e.expect_err("refused")
                .to_string()
                .contains("configs.r.local.auth.auth")
        );
    }
}
