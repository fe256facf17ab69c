//! Errors of the API server, each turned exactly once into a Kubernetes `Status` body with the
//! HTTP code and reason the real kube-apiserver uses (kubectl prints `Error from server
//! (<reason>): <message>`).

use crate::store::StoreError;
use serde_json::{Value, json};

/// One field problem of an invalid object (`details.causes[]`).
#[derive(Debug, Clone)]
pub struct Cause {
    pub field: String,
    pub reason: &'static str,
    pub message: String,
}

impl Cause {
    pub fn required(field: impl Into<String>) -> Cause {
        Cause {
            field: field.into(),
            reason: "FieldValueRequired",
            message: "Required value".into(),
        }
    }
    pub fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        why: impl Into<String>,
    ) -> Cause {
        let why = why.into();
        Cause {
            field: field.into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: \"{value}\": {why}"),
        }
    }
    pub fn unsupported(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        allowed: &[&str],
    ) -> Cause {
        let allowed = allowed
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        Cause {
            field: field.into(),
            reason: "FieldValueNotSupported",
            message: format!("Unsupported value: \"{value}\": supported values: {allowed}"),
        }
    }
    pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Cause {
        Cause {
            field: field.into(),
            reason: "FieldValueDuplicate",
            message: format!("Duplicate value: \"{value}\""),
        }
    }
    pub fn forbidden(field: impl Into<String>, why: impl Into<String>) -> Cause {
        Cause {
            field: field.into(),
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {}", why.into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { message: String },
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{message}")]
    Forbidden {
        message: String,
        kind: String,
        name: String,
    },
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        resource: String,
        name: String,
        group: String,
    },
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        resource: String,
        name: String,
        group: String,
    },
    #[error("{message}")]
    Conflict {
        resource: String,
        name: String,
        group: String,
        message: String,
    },
    #[error("{kind} \"{name}\" is invalid: {summary}", summary = summarize(causes))]
    Invalid {
        kind: String,
        name: String,
        group: String,
        causes: Vec<Cause>,
    },
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error(
        "the body of the request was in an unknown format - accepted media types include: {accepted}"
    )]
    UnsupportedMediaType { accepted: String },
    #[error("Request entity too large: limit is 3145728")]
    TooLarge,
    #[error("{message}")]
    Gone { message: String },
    #[error("{message}")]
    Internal { message: String },
}

fn summarize(causes: &[Cause]) -> String {
    let parts: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("[{}]", parts.join(", "))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
        }
    }

    pub fn internal(message: impl std::fmt::Display) -> ApiError {
        ApiError::Internal {
            message: message.to_string(),
        }
    }

    pub fn code(&self) -> u16 {
        match self {
            ApiError::BadRequest { .. } => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden { .. } => 403,
            ApiError::NotFound { .. } | ApiError::NoRoute => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Gone { .. } => 410,
            ApiError::TooLarge => 413,
            ApiError::UnsupportedMediaType { .. } => 415,
            ApiError::Invalid { .. } => 422,
            ApiError::Internal { .. } => 500,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Gone { .. } => "Expired",
            ApiError::TooLarge => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::Internal { .. } => "InternalError",
        }
    }

    /// The `Status` object kubectl reads.
    pub fn status(&self) -> Value {
        let details = match self {
            ApiError::NotFound {
                resource,
                name,
                group,
            }
            | ApiError::AlreadyExists {
                resource,
                name,
                group,
            }
            | ApiError::Conflict {
                resource,
                name,
                group,
                ..
            } => {
                let mut d = json!({"name": name, "kind": resource});
                if !group.is_empty() {
                    d["group"] = json!(group);
                }
                Some(d)
            }
            ApiError::Forbidden { kind, name, .. } => Some(json!({"name": name, "kind": kind})),
            ApiError::Invalid {
                kind,
                name,
                group,
                causes,
            } => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                let mut d = json!({"name": name, "kind": kind, "causes": causes});
                if !group.is_empty() {
                    d["group"] = json!(group);
                }
                Some(d)
            }
            _ => None,
        };
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        if let Some(d) = details {
            status["details"] = d;
        }
        status
    }

    /// Maps a store error about `resource`/`name` to the API's answer.
    pub fn from_store(e: StoreError, resource: &str, group: &str, name: &str) -> ApiError {
        let (resource, group, name) = (resource.to_string(), group.to_string(), name.to_string());
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound {
                resource: qualified(&resource, &group),
                name,
                group,
            },
            StoreError::AlreadyExists { .. } => ApiError::AlreadyExists {
                resource: qualified(&resource, &group),
                name,
                group,
            },
            StoreError::Conflict { .. } => ApiError::Conflict {
                message: format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    qualified(&resource, &group)
                ),
                resource,
                name,
                group,
            },
            StoreError::Compacted {
                requested,
                compacted,
            } => ApiError::Gone {
                message: format!("too old resource version: {requested} ({compacted})"),
            },
            other => ApiError::internal(other),
        }
    }
}

/// `deployments.apps` style names used in messages for non-core groups.
pub fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}
