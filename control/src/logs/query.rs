//! The query endpoint's parameters, validated into a `Query`. Every bad value is one error that
//! names the parameter and says what it accepts.

use crate::apiserver::selectors::LabelSelector;
use chrono::{DateTime, Utc};

/// Most lines one page returns.
pub const MAX_LIMIT: usize = 50_000;
pub const DEFAULT_LIMIT: usize = 1_000;

/// The parameters, with their meaning.
pub const PARAMS: &[&str] = &[
    "namespace",
    "selector",
    "pod",
    "container",
    "node",
    "agent",
    "since",
    "until",
    "limit",
    "continue",
];

/// What to return: lines of streams matching every given field, with `since <= time < until`,
/// oldest first.
#[derive(Debug, Default)]
pub struct Query {
    pub namespace: Option<String>,
    pub selector: Option<LabelSelector>,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub node: Option<String>,
    /// Only the agents' own logs (`true`) or only containers' (`false`).
    pub agent: Option<bool>,
    /// Unix ns, inclusive.
    pub since: Option<i64>,
    /// Unix ns, exclusive.
    pub until: Option<i64>,
    pub limit: usize,
    /// Resume after this (time, id).
    pub after: Option<(i64, i64)>,
}

fn bad(param: &str, value: &str, accepts: &str) -> String {
    format!("invalid query parameter \"{param}\": {value:?} {accepts}")
}

/// An RFC 3339 time, or a duration (`10m`, `2h`) meaning that long before `now`.
fn time_param(param: &str, value: &str, now: DateTime<Utc>) -> Result<i64, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return t
            .with_timezone(&Utc)
            .timestamp_nanos_opt()
            .ok_or_else(|| bad(param, value, "is out of range"));
    }
    if let Some(d) = super::parse_duration(value)
        && let Ok(d) = chrono::Duration::from_std(d)
        && let Some(t) = now.checked_sub_signed(d)
        && let Some(ns) = t.timestamp_nanos_opt()
    {
        return Ok(ns);
    }
    Err(bad(
        param,
        value,
        "is neither an RFC 3339 time (2026-11-27T10:00:00Z) nor a duration before now (30s, 10m, 2h, 7d)",
    ))
}

/// Validates the query string's pairs.
pub fn parse(pairs: &[(String, String)], now: DateTime<Utc>) -> Result<Query, String> {
    let mut q = Query {
        limit: DEFAULT_LIMIT,
        ..Query::default()
    };
    for (k, v) in pairs {
        let text = || (!v.is_empty()).then(|| v.clone());
        match k.as_str() {
            "namespace" => q.namespace = text(),
            "pod" => q.pod = text(),
            "container" => q.container = text(),
            "node" => q.node = text(),
            "selector" | "labelSelector" => {
                let sel = LabelSelector::parse(v)
                    .map_err(|e| bad(k, v, &format!("is not a label selector: {e}")))?;
                q.selector = (!sel.is_empty()).then_some(sel);
            }
            "agent" => {
                q.agent = Some(match v.as_str() {
                    "true" | "" => true,
                    "false" => false,
                    _ => return Err(bad(k, v, "must be true or false")),
                })
            }
            "since" => q.since = Some(time_param(k, v, now)?),
            "until" => q.until = Some(time_param(k, v, now)?),
            "limit" => {
                q.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        bad(
                            k,
                            v,
                            &format!("must be a whole number from 1 to {MAX_LIMIT}"),
                        )
                    })?;
            }
            "continue" => {
                q.after = Some(
                    v.split_once('.')
                        .and_then(|(t, i)| Some((t.parse().ok()?, i.parse().ok()?)))
                        .ok_or_else(|| {
                            bad(k, v, "is not a token from an earlier answer's \"continue\"")
                        })?,
                )
            }
            _ => {
                return Err(format!(
                    "unknown query parameter \"{k}\"; the log query accepts {}",
                    PARAMS.join(", ")
                ));
            }
        }
    }
    if let (Some(s), Some(u)) = (q.since, q.until)
        && u <= s
    {
        return Err("invalid query parameter \"until\": it must be later than \"since\"".into());
    }
    if q.agent == Some(true) && (q.namespace.is_some() || q.pod.is_some()) {
        return Err(
            "invalid query parameter \"agent\": agent logs have no namespace or pod; drop \"namespace\" and \"pod\""
                .into(),
        );
    }
    Ok(q)
}

/// The `continue` token for a line at (time, id).
pub fn token(time: i64, id: i64) -> String {
    format!("{time}.{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Result<Query, String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&v, DateTime::from_timestamp(1_000_000, 0).expect("time"))
    }

    #[test]
    fn good_parameters() {
        let q = p(&[
            ("namespace", "a"),
            ("selector", "app=web,tier!=db"),
            ("since", "10m"),
            ("until", "2026-11-27T10:00:00Z"),
            ("limit", "5"),
            ("continue", "12.34"),
        ])
        .expect("valid");
        assert_eq!(q.namespace.as_deref(), Some("a"));
        assert!(q.selector.is_some());
        assert_eq!(q.since, Some((1_000_000 - 600) * 1_000_000_000));
        assert_eq!(q.limit, 5);
        assert_eq!(q.after, Some((12, 34)));
        assert_eq!(p(&[]).expect("empty").limit, DEFAULT_LIMIT);
    }

    #[test]
    fn bad_parameters_name_themselves() {
        for (pairs, name) in [
            (&[("since", "yesterday")][..], "\"since\""),
            (&[("until", "x")], "\"until\""),
            (&[("limit", "0")], "\"limit\""),
            (&[("limit", "many")], "\"limit\""),
            (&[("selector", "a in (")], "\"selector\""),
            (&[("continue", "abc")], "\"continue\""),
            (&[("agent", "maybe")], "\"agent\""),
            (&[("podname", "x")], "\"podname\""),
            (
                &[
                    ("since", "2026-11-27T10:00:00Z"),
                    ("until", "2026-11-27T09:00:00Z"),
                ],
                "\"until\"",
            ),
        ] {
            let e = p(pairs).expect_err("must fail");
            assert!(e.contains(name), "{e} should name {name}");
        }
    }
}
