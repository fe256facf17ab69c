//! A container's environment the way kubelet builds it (`makeEnvironmentVariables`):
//! `envFrom` sources first (with `prefix`), then `env` in order, each value `$(VAR)`-expanded
//! against what is defined so far (`$$` escapes), `valueFrom` resolved from the downward API,
//! ConfigMaps and Secrets (honouring `optional`). Service env vars are not generated.

use crate::downward::{self, NodeInfo};
use crate::error::{ConfigError, Result};
use crate::refs::Refs;
use k8s_openapi::api::core::v1::{Container, Pod};

/// kubelet's `$(VAR)` expansion (third_party/forked/golang/expansion): `$(NAME)` is replaced
/// when `lookup` knows NAME and kept verbatim otherwise; `$$` is a literal `$`; any other `$`
/// and an unterminated `$(` are kept as written.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < b.len() {
        if b[cursor] == b'$' && cursor + 1 < b.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest[1..].find(')') {
                    Some(i) => {
                        let name = &rest[1..1 + i];
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        i + 2
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // Keep `$` and let the next character be copied as ordinary text.
                    out.push('$');
                    0
                }
            };
            cursor += advance + 1;
            checkpoint = cursor;
            continue;
        }
        cursor += 1;
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

/// Ordered environment: a later definition of a name replaces the value in place.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Env(Vec<(String, String)>);

impl Env {
    fn set(&mut self, k: &str, v: String) {
        match self.0.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v,
            None => self.0.push((k.to_string(), v)),
        }
    }
    fn get(&self, k: &str) -> Option<String> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }
}

/// Whether kubelet accepts `name` as an env var name from `envFrom` (printable ASCII, no `=`).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && name.bytes().all(|c| (0x20..0x7f).contains(&c))
}

/// Resolve `container`'s environment. `pod_ips` are the sandbox's IPs.
pub fn resolve(
    pod: &Pod,
    container: &Container,
    refs: &Refs,
    node: &NodeInfo,
    pod_ips: &[String],
) -> Result<Vec<(String, String)>> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut env = Env::default();
    for src in container.env_from.iter().flatten() {
        let prefix = src.prefix.clone().unwrap_or_default();
        let pairs: Vec<(String, String)> = if let Some(r) = &src.config_map_ref {
            match refs.config_map(&r.name) {
                Ok(cm) => cm
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                Err(_) if r.optional == Some(true) => continue,
                Err(e) => return Err(e),
            }
        } else if let Some(r) = &src.secret_ref {
            match refs.secret(&r.name) {
                Ok(s) => s
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                    .collect(),
                Err(_) if r.optional == Some(true) => continue,
                Err(e) => return Err(e),
            }
        } else {
            continue;
        };
        for (k, v) in pairs {
            let name = format!("{prefix}{k}");
            if valid_name(&name) {
                env.set(&name, v);
            } else {
                tracing::warn!(container = %container.name, key = %name, "skipping invalid environment variable name from envFrom");
            }
        }
    }
    for e in container.env.iter().flatten() {
        let value = match &e.value_from {
            None => expand(e.value.as_deref().unwrap_or(""), |n| env.get(n)),
            Some(_) if e.value.as_deref().is_some_and(|v| !v.is_empty()) => {
                expand(e.value.as_deref().unwrap_or(""), |n| env.get(n))
            }
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    downward::field_ref(pod, &f.field_path, pod_ips, node, false)?
                } else if let Some(r) = &from.resource_field_ref {
                    let c = match r.container_name.as_deref() {
                        Some(n) if !n.is_empty() && n != container.name => {
                            crate::qos::all_containers(pod)
                                .find(|c| c.name == n)
                                .ok_or_else(|| ConfigError::ContainerNotFound { name: n.into() })?
                        }
                        _ => container,
                    };
                    downward::resource_field_ref(c, r, node)?
                } else if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional == Some(true);
                    let cm = match refs.config_map(&r.name) {
                        Ok(cm) => cm,
                        Err(_) if optional => continue,
                        Err(e) => return Err(e),
                    };
                    match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(ConfigError::MissingKey {
                                key: r.key.clone(),
                                kind: "ConfigMap",
                                namespace: ns,
                                name: r.name.clone(),
                            });
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional == Some(true);
                    let s = match refs.secret(&r.name) {
                        Ok(s) => s,
                        Err(_) if optional => continue,
                        Err(e) => return Err(e),
                    };
                    match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(ConfigError::MissingKey {
                                key: r.key.clone(),
                                kind: "Secret",
                                namespace: ns,
                                name: r.name.clone(),
                            });
                        }
                    }
                } else {
                    String::new()
                }
            }
        };
        env.set(&e.name, value);
    }
    Ok(env.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    #[test]
    fn expansion_rules() {
        let vars = |n: &str| match n {
            "A" => Some("a".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let cases = [
            ("plain", "plain"),
            ("$(A)", "a"),
            ("x$(A)y$(A)", "xaya"),
            ("$(MISSING)", "$(MISSING)"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$a"),
            ("$$", "$"),
            ("$", "$"),
            ("a$", "a$"),
            ("$A", "$A"),
            ("$(A", "$(A"),
            ("$()", "$()"),
            ("$(EMPTY)x", "x"),
            ("€$(A)€", "€a€"),
            ("$(A)$(A", "a$(A"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, vars), want, "{input:?}");
        }
    }

    fn fixtures() -> (Pod, Refs) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c",
                "resources": {"limits": {"memory": "64Mi"}}}]}
        }))
        .expect("pod");
        let mut refs = Refs {
            namespace: "default".into(),
            ..Refs::default()
        };
        refs.config_maps.insert(
            "app-config".into(),
            ConfigMap {
                data: Some(
                    [
                        ("MODE".into(), "prod".into()),
                        ("bad=name".into(), "x".into()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
        );
        refs.secrets.insert(
            "creds".into(),
            Secret {
                data: Some([("PASSWORD".into(), ByteString(b"hunter2".to_vec()))].into()),
                ..Default::default()
            },
        );
        (pod, refs)
    }

    fn container(json: serde_json::Value) -> Container {
        serde_json::from_value(json).expect("container")
    }

    #[test]
    fn resolution_cases() {
        let (pod, refs) = fixtures();
        let node = NodeInfo::default();
        let ips = vec!["10.1.0.5".to_string()];
        type Want = std::result::Result<Vec<(&'static str, &'static str)>, &'static str>;
        let cases: Vec<(serde_json::Value, Want)> = vec![
            (
                serde_json::json!({"name": "c", "envFrom": [{"configMapRef": {"name": "app-config"}, "prefix": "CFG_"}],
                    "env": [{"name": "X", "value": "$(CFG_MODE)-$(Y)"}, {"name": "Y", "value": "y"},
                            {"name": "CFG_MODE", "value": "over"}]}),
                Ok(vec![("CFG_MODE", "over"), ("X", "prod-$(Y)"), ("Y", "y")]),
            ),
            (
                serde_json::json!({"name": "c", "resources": {"limits": {"memory": "64Mi"}}, "env": [
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "PASSWORD"}}},
                    {"name": "M", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "MODE"}}},
                    {"name": "URL", "value": "http://$(IP):80/$(POD)"}]}),
                Ok(vec![
                    ("POD", "web"),
                    ("IP", "10.1.0.5"),
                    ("APP", "web"),
                    ("MEM", "64"),
                    ("PW", "hunter2"),
                    ("M", "prod"),
                    ("URL", "http://10.1.0.5:80/web"),
                ]),
            ),
            (
                serde_json::json!({"name": "c", "envFrom": [{"secretRef": {"name": "nope", "optional": true}}],
                    "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "k", "optional": true}}},
                            {"name": "C", "value": "c"}]}),
                Ok(vec![("C", "c")]),
            ),
            (
                serde_json::json!({"name": "c", "envFrom": [{"configMapRef": {"name": "app-cfg"}}]}),
                Err(r#"configmap "app-cfg" not found"#),
            ),
            (
                serde_json::json!({"name": "c", "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "KEY"}}}]}),
                Err("couldn't find key KEY in ConfigMap default/app-config"),
            ),
            (
                serde_json::json!({"name": "c", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "KEY"}}}]}),
                Err("couldn't find key KEY in Secret default/creds"),
            ),
            (
                serde_json::json!({"name": "c", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "nosecret", "key": "KEY"}}}]}),
                Err(r#"secret "nosecret" not found"#),
            ),
        ];
        for (i, (c, want)) in cases.into_iter().enumerate() {
            let got = resolve(&pod, &container(c), &refs, &node, &ips);
            match (got, want) {
                (Ok(g), Ok(w)) => {
                    let w: Vec<(String, String)> = w
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    assert_eq!(g, w, "case {i}");
                }
                (Err(e), Err(w)) => {
                    assert_eq!(e.to_string(), w, "case {i}");
                    assert_eq!(e.reason(), "CreateContainerConfigError");
                }
                (g, w) => panic!("case {i}: got {g:?}, want {w:?}"),
            }
        }
    }
}
