//! Label selectors (`matchLabels` + `matchExpressions`: In, NotIn, Exists, DoesNotExist) and node
//! selector requirements (the same plus Gt, Lt), as defined in
//! k8s.io/apimachinery/pkg/apis/meta/v1 LabelSelector and core/v1 NodeSelectorRequirement.

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

/// One requirement against a map of labels.
fn requirement(labels: &Labels, key: &str, op: &str, values: &[String]) -> bool {
    let v = labels.get(key);
    match op {
        "In" => v.is_some_and(|v| values.contains(v)),
        "NotIn" => !v.is_some_and(|v| values.contains(v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                v.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if op == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

/// Does `selector` select `labels`? An empty selector selects everything, like the API's.
pub fn matches(selector: &LabelSelector, labels: &Labels) -> bool {
    if let Some(ml) = &selector.match_labels
        && ml.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    selector.match_expressions.iter().flatten().all(|e| {
        requirement(
            labels,
            &e.key,
            &e.operator,
            e.values.as_deref().unwrap_or_default(),
        )
    })
}

/// Is `selector` empty (selects everything)?
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
}

fn node_requirement(
    labels: &Labels,
    node_name: &str,
    r: &NodeSelectorRequirement,
    field: bool,
) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    if field {
        // matchFields supports only metadata.name.
        if r.key != "metadata.name" {
            return false;
        }
        let mut fields = Labels::new();
        fields.insert(r.key.clone(), node_name.to_string());
        return requirement(&fields, &r.key, &r.operator, values);
    }
    requirement(labels, &r.key, &r.operator, values)
}

/// Does a node selector term (ANDed expressions and fields) match the node? An empty term
/// matches nothing, as in the API.
pub fn term_matches(term: &NodeSelectorTerm, labels: &Labels, node_name: &str) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| node_requirement(labels, node_name, r, false))
        && fields
            .iter()
            .all(|r| node_requirement(labels, node_name, r, true))
}

/// Renders a label map as a selector string (`app=web,tier=front`).
pub fn to_string(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn requirements() {
        let l = labels(&[("zone", "a"), ("gen", "5")]);
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&str, &str, Vec<String>, bool)] = &[
            ("zone", "In", v(&["a", "b"]), true),
            ("zone", "In", v(&["b"]), false),
            ("zone", "NotIn", v(&["b"]), true),
            ("zone", "NotIn", v(&["a"]), false),
            ("none", "NotIn", v(&["a"]), true),
            ("zone", "Exists", v(&[]), true),
            ("none", "Exists", v(&[]), false),
            ("none", "DoesNotExist", v(&[]), true),
            ("zone", "DoesNotExist", v(&[]), false),
            ("gen", "Gt", v(&["4"]), true),
            ("gen", "Gt", v(&["5"]), false),
            ("gen", "Lt", v(&["6"]), true),
            ("gen", "Lt", v(&["5"]), false),
            ("zone", "Gt", v(&["1"]), false),
            ("none", "Lt", v(&["1"]), false),
            ("zone", "Bogus", v(&["a"]), false),
        ];
        for (k, op, vals, want) in cases {
            assert_eq!(requirement(&l, k, op, vals), *want, "{k} {op} {vals:?}");
        }
    }

    #[test]
    fn label_selectors() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let sel = |ml: &[(&str, &str)], exprs: Vec<(&str, &str, Vec<&str>)>| LabelSelector {
            match_labels: Some(labels(ml)),
            match_expressions: Some(
                exprs
                    .into_iter()
                    .map(|(k, op, vs)| LabelSelectorRequirement {
                        key: k.into(),
                        operator: op.into(),
                        values: Some(vs.into_iter().map(String::from).collect()),
                    })
                    .collect(),
            ),
        };
        assert!(matches(&sel(&[("app", "web")], vec![]), &l));
        assert!(!matches(&sel(&[("app", "db")], vec![]), &l));
        assert!(matches(&sel(&[], vec![("tier", "In", vec!["front"])]), &l));
        assert!(!matches(
            &sel(&[("app", "web")], vec![("tier", "NotIn", vec!["front"])]),
            &l
        ));
        assert!(matches(&LabelSelector::default(), &l));
        assert!(is_empty(&LabelSelector::default()));
    }

    #[test]
    fn node_terms() {
        let l = labels(&[("disk", "ssd")]);
        let req = |k: &str, op: &str, vs: &[&str]| NodeSelectorRequirement {
            key: k.into(),
            operator: op.into(),
            values: Some(vs.iter().map(|s| s.to_string()).collect()),
        };
        let t = NodeSelectorTerm {
            match_expressions: Some(vec![req("disk", "In", &["ssd"])]),
            match_fields: None,
        };
        assert!(term_matches(&t, &l, "n1"));
        let f = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", "In", &["n2"])]),
        };
        assert!(!term_matches(&f, &l, "n1"));
        assert!(term_matches(&f, &l, "n2"));
        assert!(!term_matches(&NodeSelectorTerm::default(), &l, "n1"));
    }
}
