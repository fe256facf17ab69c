//! Label and field selectors as list and watch take them (`labelSelector=app=web,tier!=db`,
//! `fieldSelector=spec.nodeName=n1`), parsed once per request and matched against JSON objects.

use super::error::{ApiError, ApiResult};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set_values(rest: &str, whole: &str) -> ApiResult<Vec<String>> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to parse requirement: found '{whole}', expected: '('"
            ))
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    pub fn parse(s: &str) -> ApiResult<LabelSelector> {
        let mut reqs = Vec::new();
        for term in split_top(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let bad = || {
                ApiError::bad_request(format!(
                    "unable to parse requirement: invalid label selector term \"{term}\""
                ))
            };
            let req = if let Some(key) = term.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_string())
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = term.split_once("==") {
                Requirement::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = term.split_once('=') {
                Requirement::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some(pos) = term.find(" notin ") {
                Requirement::NotIn(
                    term[..pos].trim().to_string(),
                    set_values(&term[pos + 7..], term)?,
                )
            } else if let Some(pos) = term.find(" in ") {
                Requirement::In(
                    term[..pos].trim().to_string(),
                    set_values(&term[pos + 4..], term)?,
                )
            } else if term
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Requirement::Exists(term.to_string())
            } else {
                return Err(bad());
            };
            let key = match &req {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _)
                | Requirement::Exists(k)
                | Requirement::NotExists(k) => k,
            };
            if key.is_empty() {
                return Err(bad());
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// From a `metav1.LabelSelector` object (`matchLabels` + `matchExpressions`).
    pub fn from_object(sel: &Value) -> LabelSelector {
        let mut reqs = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                reqs.push(Requirement::Equals(
                    k.clone(),
                    v.as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        for e in sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            reqs.push(match e.get("operator").and_then(Value::as_str) {
                Some("In") => Requirement::In(key, values),
                Some("NotIn") => Requirement::NotIn(key, values),
                Some("Exists") => Requirement::Exists(key),
                _ => Requirement::NotExists(key),
            });
        }
        LabelSelector(reqs)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches_labels(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.matches_labels(obj.pointer("/metadata/labels").and_then(Value::as_object))
    }

    /// `k=v,k2=v2` (the form tables and Scale use).
    pub fn to_string_form(sel: &Value) -> String {
        let mut parts = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
            }
        }
        for e in sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            parts.push(match e.get("operator").and_then(Value::as_str) {
                Some("In") => format!("{key} in ({})", values.join(",")),
                Some("NotIn") => format!("{key} notin ({})", values.join(",")),
                Some("Exists") => key.to_string(),
                _ => format!("!{key}"),
            });
        }
        parts.join(",")
    }
}

/// A field selector: `=`/`==`/`!=` terms over the fields each kind supports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

/// The fields a kind may be selected on, and where they live in the object.
fn field_path(kind: &str, field: &str) -> Option<&'static str> {
    Some(match (kind, field) {
        (_, "metadata.name") => "/metadata/name",
        (_, "metadata.namespace") => "/metadata/namespace",
        ("Pod", "spec.nodeName") => "/spec/nodeName",
        ("Pod", "spec.restartPolicy") => "/spec/restartPolicy",
        ("Pod", "spec.schedulerName") => "/spec/schedulerName",
        ("Pod", "spec.serviceAccountName") => "/spec/serviceAccountName",
        ("Pod", "status.phase") => "/status/phase",
        ("Pod", "status.podIP") => "/status/podIP",
        ("Pod", "status.nominatedNodeName") => "/status/nominatedNodeName",
        ("Event", "involvedObject.kind") => "/involvedObject/kind",
        ("Event", "involvedObject.namespace") => "/involvedObject/namespace",
        ("Event", "involvedObject.name") => "/involvedObject/name",
        ("Event", "involvedObject.uid") => "/involvedObject/uid",
        ("Event", "involvedObject.apiVersion") => "/involvedObject/apiVersion",
        ("Event", "involvedObject.resourceVersion") => "/involvedObject/resourceVersion",
        ("Event", "involvedObject.fieldPath") => "/involvedObject/fieldPath",
        ("Event", "reason") => "/reason",
        ("Event", "type") => "/type",
        ("Event", "source") => "/source/component",
        ("Secret", "type") => "/type",
        ("Namespace", "status.phase") => "/status/phase",
        ("Node", "spec.unschedulable") => "/spec/unschedulable",
        ("CertificateSigningRequest", "spec.signerName") => "/spec/signerName",
        _ => return None,
    })
}

impl FieldSelector {
    pub fn parse(s: &str, kind: &str) -> ApiResult<FieldSelector> {
        let mut terms = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector term \"{term}\": expected field=value"
                )));
            };
            let field = field.trim();
            if field_path(kind, field).is_none() {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field} (for {kind})"
                )));
            }
            terms.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, kind: &str, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let got = field_path(kind, field).and_then(|p| obj.pointer(p));
            let got = match got {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (got == *want) == *eq
        })
    }

    /// The value of an equality term on `field`, if the selector has one (used to narrow
    /// namespaced lists and to recognise single-name watches).
    pub fn equals(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, eq, _)| f == field && *eq)
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_forms() {
        let pod = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web,db)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier in (front, back)", true),
            ("app=web,missing", false),
            ("", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).expect(sel).matches(&pod),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("a b c").is_err());
        assert!(LabelSelector::parse("app in web").is_err());
    }

    #[test]
    fn field_selector_forms() {
        let pod = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let sel = FieldSelector::parse(
            "metadata.name=web,spec.nodeName!=n2,status.phase==Running",
            "Pod",
        )
        .expect("parse");
        assert!(sel.matches("Pod", &pod));
        assert_eq!(sel.equals("metadata.name"), Some("web"));
        assert!(
            !FieldSelector::parse("spec.nodeName=", "Pod")
                .expect("parse")
                .matches("Pod", &pod)
        );
        assert!(FieldSelector::parse("spec.bogus=x", "Pod").is_err());
        assert!(FieldSelector::parse("type=kubernetes.io/tls", "Secret").is_ok());
    }
}
