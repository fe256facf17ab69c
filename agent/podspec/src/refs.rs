//! The ConfigMaps and Secrets a pod names (env `valueFrom`, `envFrom`, volumes, projected
//! sources, `imagePullSecrets`), fetched once per sync, and the registry credentials decoded
//! from its pull secrets (`kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg`).

use crate::error::{ConfigError, Result};
use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use std::collections::{BTreeMap, BTreeSet};

/// What [`fetch`] found. A name that is absent here did not exist (404); whether that is an
/// error depends on the referrer's `optional`, which env and volumes decide.
#[derive(Debug, Clone, Default)]
pub struct Refs {
    pub namespace: String,
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
}

impl Refs {
    /// The ConfigMap, or kubelet's not-found error.
    pub fn config_map(&self, name: &str) -> Result<&ConfigMap> {
        self.config_maps
            .get(name)
            .ok_or_else(|| ConfigError::ConfigMapNotFound { name: name.into() })
    }

    /// The Secret, or kubelet's not-found error.
    pub fn secret(&self, name: &str) -> Result<&Secret> {
        self.secrets
            .get(name)
            .ok_or_else(|| ConfigError::SecretNotFound { name: name.into() })
    }
}

/// ConfigMap and Secret names a pod refers to (deduplicated, sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

/// Every ConfigMap and Secret name in the pod spec.
pub fn names(pod: &Pod) -> Names {
    let mut n = Names::default();
    let Some(spec) = &pod.spec else { return n };
    let mut cm = |s: &str| {
        n.config_maps.insert(s.to_string());
    };
    let mut secrets = BTreeSet::new();
    for c in crate::qos::all_containers(pod) {
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value_from {
                if let Some(r) = &v.config_map_key_ref {
                    cm(&r.name);
                }
                if let Some(r) = &v.secret_key_ref {
                    secrets.insert(r.name.clone());
                }
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                cm(&r.name);
            }
            if let Some(r) = &f.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            cm(&c.name);
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.as_ref()) {
            secrets.insert(s.clone());
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &p.config_map {
                cm(&c.name);
            }
            if let Some(s) = &p.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        secrets.insert(s.name.clone());
    }
    n.config_maps.remove("");
    secrets.remove("");
    n.secrets = secrets;
    n
}

/// Fetch every ConfigMap and Secret the pod names from its namespace. Objects that do not
/// exist are left out; any other API error fails the fetch.
pub async fn fetch(client: &kube::Client, pod: &Pod) -> Result<Refs> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let wanted = names(pod);
    let mut refs = Refs {
        namespace: ns.clone(),
        ..Refs::default()
    };
    let cms: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), &ns);
    for name in &wanted.config_maps {
        let got = cms
            .get_opt(name)
            .await
            .map_err(|e| fetch_err("ConfigMap", &ns, name, e))?;
        if let Some(o) = got {
            refs.config_maps.insert(name.clone(), o);
        }
    }
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), &ns);
    for name in &wanted.secrets {
        let got = secrets
            .get_opt(name)
            .await
            .map_err(|e| fetch_err("Secret", &ns, name, e))?;
        if let Some(o) = got {
            refs.secrets.insert(name.clone(), o);
        }
    }
    Ok(refs)
}

fn fetch_err(kind: &'static str, ns: &str, name: &str, e: kube::Error) -> ConfigError {
    ConfigError::Fetch {
        kind,
        namespace: ns.into(),
        name: name.into(),
        message: e.to_string(),
    }
}

/// One registry credential from a pull secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// Registry `host[:port]` as written in the secret, without scheme or path
    /// (`https://index.docker.io/v1/` becomes `index.docker.io`).
    pub registry: String,
    pub username: String,
    pub password: String,
}

/// Credentials from the pod's `imagePullSecrets`, in order. Missing secrets and entries that
/// do not decode are skipped (kubelet only warns and pulls anonymously).
pub fn pull_secrets(refs: &Refs, pod: &Pod) -> Vec<RegistryAuth> {
    let mut out = Vec::new();
    let names = pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten());
    for r in names {
        let Some(data) = refs.secrets.get(&r.name).and_then(|s| s.data.as_ref()) else {
            tracing::warn!(secret = %r.name, "image pull secret not found; pulling without it");
            continue;
        };
        let entries = if let Some(b) = data.get(".dockerconfigjson") {
            serde_json::from_slice::<serde_json::Value>(&b.0)
                .ok()
                .and_then(|v| v.get("auths").cloned())
        } else if let Some(b) = data.get(".dockercfg") {
            serde_json::from_slice::<serde_json::Value>(&b.0).ok()
        } else {
            None
        };
        let Some(serde_json::Value::Object(map)) = entries else {
            continue;
        };
        for (registry, entry) in map {
            if let Some(a) = decode_entry(&registry, &entry) {
                out.push(a);
            }
        }
    }
    out
}

fn decode_entry(registry: &str, entry: &serde_json::Value) -> Option<RegistryAuth> {
    let s = |k: &str| {
        entry
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let (mut username, mut password) = (s("username"), s("password"));
    let auth = s("auth");
    if !auth.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        (username, password) = (u.to_string(), p.to_string());
    }
    if username.is_empty() && password.is_empty() {
        return None;
    }
    let host = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host).to_string();
    Some(RegistryAuth {
        registry: host,
        username,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {
                "imagePullSecrets": [{"name": "regcred"}, {"name": "oldcred"}, {"name": "gone"}],
                "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "init-cm"}}]}],
                "containers": [{"name": "c",
                    "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm1", "key": "k"}}},
                            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}}],
                    "envFrom": [{"secretRef": {"name": "s2"}}]}],
                "volumes": [
                    {"name": "v1", "configMap": {"name": "cm2"}},
                    {"name": "v2", "secret": {"secretName": "s3"}},
                    {"name": "v3", "projected": {"sources": [
                        {"configMap": {"name": "cm1"}}, {"secret": {"name": "s4"}},
                        {"serviceAccountToken": {"path": "token"}}]}}]
            }
        }))
        .expect("pod")
    }

    #[test]
    fn every_reference_is_collected() {
        let n = names(&pod());
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(n.config_maps, v(&["cm1", "cm2", "init-cm"]));
        assert_eq!(
            n.secrets,
            v(&["gone", "oldcred", "regcred", "s1", "s2", "s3", "s4"])
        );
    }

    fn secret(key: &str, json: &str) -> Secret {
        Secret {
            data: Some([(key.to_string(), ByteString(json.as_bytes().to_vec()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn pull_secrets_decode_both_formats() {
        let mut refs = Refs::default();
        refs.secrets.insert(
            "regcred".into(),
            secret(
                ".dockerconfigjson",
                // auth = base64("alice:s3cr:et")
                r#"{"auths":{"https://index.docker.io/v1/":{"auth":"YWxpY2U6czNjcjpldA=="},
                    "hub.test.com:5000":{"username":"bob","password":"pw"}}}"#,
            ),
        );
        refs.secrets.insert(
            "oldcred".into(),
            secret(
                ".dockercfg",
                r#"{"quay.io":{"auth":"Y2Fyb2w6eA=="},"bad":{"auth":"!!"}}"#,
            ),
        );
        let got = pull_secrets(&refs, &pod());
        let want = [
            ("index.docker.io", "alice", "s3cr:et"),
            ("hub.test.com:5000", "bob", "pw"),
            ("quay.io", "carol", "x"),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, (r, u, p)) in got.iter().zip(want) {
            assert_eq!(
                (
                    g.registry.as_str(),
                    g.username.as_str(),
                    g.password.as_str()
                ),
                (r, u, p)
            );
        }
    }
}
