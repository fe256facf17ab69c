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
}

pub fn authorize(user: &User, a: &Attributes<'_>) -> ApiResult<()> {
    if user.in_group("system:masters") {
        return Ok(());
    }
    let plural = a.resource.map(|r| r.plural).unwrap_or_default();
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
    Err(forbidden(user, a))
}

pub fn forbidden(user: &User, a: &Attributes<'_>) -> ApiError {
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
    ApiError::Forbidden {
        message: format!(
            "{what} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
            user.name, a.verb, r.group
        ),
        kind: r.plural.to_string(),
        name: a.name.unwrap_or_default().to_string(),
    }
}
