//! Who is calling and what they may do. Authentication: a client certificate signed by the
//! cluster CA (user = CN, groups = O), or a bootstrap token (`Bearer <id>.<secret>`, user
//! `system:bootstrap:<id>`, group `system:bootstrappers`) valid until its expiration.
//! Authorization: `system:masters` may do everything, bootstrappers may create and read CSRs,
//! anonymous callers only the public health/version paths and the `cluster-info` ConfigMap.

use super::ApiServer;
use super::error::{ApiError, ApiResult};
use super::resources::Resource;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }

    fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }
}

/// The user named by a verified client certificate (DER).
pub fn user_from_cert(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(User { name, groups })
}

fn b64(v: Option<&Value>) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v?.as_str()?)
        .ok()?;
    String::from_utf8(raw).ok()
}

/// Checks a bearer token against the bootstrap-token Secrets in kube-system.
pub async fn user_from_token(api: &ApiServer, token: &str) -> ApiResult<User> {
    let Some((id, secret)) = token.split_once('.') else {
        return Err(ApiError::Unauthorized);
    };
    let valid_shape = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if !valid_shape(id, 6) || !valid_shape(secret, 16) {
        return Err(ApiError::Unauthorized);
    }
    let key = format!("/registry/core/secrets/kube-system/bootstrap-token-{id}");
    let kv = api
        .store
        .get(&key)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::Unauthorized)?;
    let obj: Value = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
    let data = obj.get("data");
    let field = |k: &str| b64(data.and_then(|d| d.get(k)));
    if obj.get("type").and_then(Value::as_str) != Some("bootstrap.kubernetes.io/token")
        || field("token-secret").as_deref() != Some(secret)
        || field("usage-bootstrap-authentication").as_deref() != Some("true")
    {
        return Err(ApiError::Unauthorized);
    }
    if let Some(exp) = field("expiration") {
        let exp = chrono::DateTime::parse_from_rfc3339(&exp).map_err(|_| ApiError::Unauthorized)?;
        if exp < chrono::Utc::now() {
            return Err(ApiError::Unauthorized);
        }
    }
    let mut groups = vec![
        "system:bootstrappers".to_string(),
        "system:authenticated".to_string(),
    ];
    if let Some(extra) = field("auth-extra-groups") {
        groups.extend(
            extra
                .split(',')
                .map(|g| g.trim().to_string())
                .filter(|g| g.starts_with("system:bootstrappers:")),
        );
    }
    Ok(User {
        name: format!("system:bootstrap:{id}"),
        groups,
    })
}

/// What a request wants to do, for authorization.
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub resource: Option<&'a Resource>,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    /// The `spec.nodeName=` term of the request's field selector, if any.
    pub node_selector: Option<&'a str>,
}

impl User {
    /// The node name of a node identity (`system:node:<name>` in group `system:nodes`).
    pub fn node_name(&self) -> Option<&str> {
        self.name
            .strip_prefix("system:node:")
            .filter(|n| !n.is_empty() && self.in_group("system:nodes"))
    }
}

pub async fn authorize(api: &ApiServer, user: &User, a: &Attributes<'_>) -> ApiResult<()> {
    if user.in_group("system:masters") {
        return Ok(());
    }
    let plural = a.resource.map(|r| r.plural).unwrap_or_default();
    if let Some(node) = user.node_name() {
        return match node_rule(api, node, plural, a).await? {
            None => Ok(()),
            Some(why) => Err(forbidden(user, a, Some(&why))),
        };
    }
    let allowed = match (plural, a.verb) {
        ("certificatesigningrequests", "create" | "get" | "list" | "watch") => {
            user.in_group("system:bootstrappers")
        }
        ("configmaps", "get") => {
            a.namespace == Some("kube-public") && a.name == Some("cluster-info")
        }
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    Err(forbidden(user, a, None))
}

fn read(verb: &str) -> bool {
    matches!(verb, "get" | "list" | "watch")
}

/// The Node authorizer: what `system:node:<node>` may do. Returns None when allowed, else
/// the reason for the denial.
async fn node_rule(
    api: &ApiServer,
    node: &str,
    plural: &str,
    a: &Attributes<'_>,
) -> ApiResult<Option<String>> {
    let own = a.name == Some(node);
    let ok = match (plural, a.subresource, a.verb) {
        ("nodes", None | Some("status"), v) if read(v) => true,
        ("nodes", None, "create") => true, // the name is checked by node_restriction
        ("nodes", None | Some("status"), "update" | "patch") => own,
        ("leases", None, v) if a.namespace == Some("kube-node-lease") => v == "create" || own,
        ("services" | "endpoints" | "endpointslices" | "namespaces", None, v) => read(v),
        ("events", None, "create" | "update" | "patch") => true,
        ("certificatesigningrequests", None, "create" | "get" | "list" | "watch") => true,
        ("pods", None, "list" | "watch") => a.node_selector == Some(node),
        ("pods", None | Some("status"), "get" | "update" | "patch" | "delete") => {
            let (Some(ns), Some(name)) = (a.namespace, a.name) else {
                return Ok(Some(
                    "no relationship found between node and this object".into(),
                ));
            };
            bound_to(api, ns, name).await?.as_deref() == Some(node)
        }
        ("configmaps" | "secrets", None, "get") => {
            let (Some(ns), Some(name)) = (a.namespace, a.name) else {
                return Ok(Some(
                    "no relationship found between node and this object".into(),
                ));
            };
            referenced_by_node_pod(api, node, plural, ns, name).await?
        }
        _ => false,
    };
    Ok((!ok).then(|| match (plural, a.verb) {
        ("pods", "list" | "watch") => format!(
            "node '{node}' may only list and watch pods with fieldSelector spec.nodeName={node}"
        ),
        _ => format!("no relationship found between node '{node}' and this object"),
    }))
}

async fn stored(api: &ApiServer, key: &str) -> ApiResult<Option<Value>> {
    match api.store.get(key).await.map_err(ApiError::internal)? {
        Some(kv) => Ok(serde_json::from_slice(&kv.value).ok()),
        None => Ok(None),
    }
}

async fn bound_to(api: &ApiServer, ns: &str, name: &str) -> ApiResult<Option<String>> {
    let pod = stored(api, &format!("/registry/core/pods/{ns}/{name}")).await?;
    Ok(pod.and_then(|p| {
        p.pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .map(str::to_string)
    }))
}

/// Whether a pod bound to `node` names this ConfigMap/Secret (volumes, env, envFrom,
/// imagePullSecrets), as the Node authorizer's graph does.
async fn referenced_by_node_pod(
    api: &ApiServer,
    node: &str,
    plural: &str,
    ns: &str,
    name: &str,
) -> ApiResult<bool> {
    let pods = api
        .store
        .list(&format!("/registry/core/pods/{ns}/"), None, 0)
        .await
        .map_err(ApiError::internal)?;
    let (vol_key, ref_key, env_key) = if plural == "secrets" {
        ("secret", "secretName", "secretKeyRef")
    } else {
        ("configMap", "name", "configMapKeyRef")
    };
    let names = |v: Option<&Value>| v.and_then(Value::as_str) == Some(name);
    for kv in pods.items {
        let Ok(pod) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
            continue;
        }
        let spec = &pod["spec"];
        let vols = spec["volumes"].as_array().into_iter().flatten();
        let in_volumes = vols
            .clone()
            .any(|v| names(v.get(vol_key).and_then(|s| s.get(ref_key))))
            || vols
                .flat_map(|v| {
                    v.pointer("/projected/sources")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                })
                .any(|src| names(src.get(vol_key).and_then(|s| s.get("name"))));
        let containers = ["containers", "initContainers"]
            .into_iter()
            .flat_map(|l| spec[l].as_array().into_iter().flatten());
        let in_env = containers.clone().any(|c| {
            c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| names(e.pointer(&format!("/valueFrom/{env_key}/name"))))
                || c["envFrom"].as_array().into_iter().flatten().any(|e| {
                    names(
                        e.get(if plural == "secrets" {
                            "secretRef"
                        } else {
                            "configMapRef"
                        })
                        .and_then(|r| r.get("name")),
                    )
                })
        });
        let pull = plural == "secrets"
            && spec["imagePullSecrets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| names(s.get("name")));
        if in_volumes || in_env || pull {
            return Ok(true);
        }
    }
    Ok(false)
}

/// NodeRestriction admission: a node may create only its own Node and Lease.
pub fn node_restriction(user: &User, r: &Resource, obj: &Value) -> ApiResult<()> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if matches!(r.kind, "Node" | "Lease") && name != node {
        return Err(ApiError::Forbidden {
            message: format!(
                "{} \"{name}\" is forbidden: node \"{node}\" is not allowed to modify {} {name}",
                r.plural,
                r.kind.to_lowercase()
            ),
            kind: r.plural.into(),
            name: name.into(),
        });
    }
    Ok(())
}

pub fn forbidden(user: &User, a: &Attributes<'_>, why: Option<&str>) -> ApiError {
    let Some(r) = a.resource else {
        return ApiError::Forbidden {
            message: format!(
                "forbidden: User \"{}\" cannot {} this path",
                user.name, a.verb
            ),
            kind: String::new(),
            name: String::new(),
        };
    };
    let resource = match a.subresource {
        Some(s) => format!("{}/{s}", r.plural),
        None => r.plural.to_string(),
    };
    let scope = match a.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let what = match a.name {
        Some(n) => format!("{} \"{n}\"", super::error::qualified(r.plural, r.group)),
        None => super::error::qualified(r.plural, r.group),
    };
    let why = why.map(|w| format!(": {w}")).unwrap_or_default();
    ApiError::Forbidden {
        message: format!(
            "{what} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}{why}",
            user.name, a.verb, r.group
        ),
        kind: r.plural.to_string(),
        name: a.name.unwrap_or_default().to_string(),
    }
}
