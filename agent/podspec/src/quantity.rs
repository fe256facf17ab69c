//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`) and the container resource lookups
//! built on them (k8s.io/apimachinery/pkg/api/resource: values round up, like `Value()` and
//! `MilliValue()`).

use crate::error::{ConfigError, Result};
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

const NANO: i128 = 1_000_000_000;

/// The quantity in nano-units (exact for every suffix), or `None` if it does not parse.
pub fn parse_nano(s: &str) -> Option<i128> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return None;
    }
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.len() + frac.len() > 30 {
        return None;
    }
    let digits: i128 = format!("{int}{frac}").parse().ok()?;
    // value = digits * 10^-frac.len() * multiplier, kept in nano-units.
    let (mul_num, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        e if e.starts_with(['e', 'E']) => (1, e[1..].parse().ok()?),
        _ => return None,
    };
    let exp = exp10 + 9 - frac.len() as i32;
    if !(-40..=30).contains(&exp) {
        return None;
    }
    let mut v = digits.checked_mul(mul_num)?;
    if exp >= 0 {
        v = v.checked_mul(10i128.checked_pow(exp as u32)?)?;
    } else {
        let d = 10i128.checked_pow((-exp) as u32)?;
        v = (v + d - 1) / d; // round up, like the API's Value()
    }
    Some(if neg { -v } else { v })
}

fn ceil_div(a: i128, b: i128) -> i128 {
    if a >= 0 { (a + b - 1) / b } else { a / b }
}

/// `Value()`: whole units, rounded up.
pub fn value(q: &Quantity, field: &str) -> Result<i64> {
    let n = parse_nano(&q.0).ok_or_else(|| bad(q, field))?;
    i64::try_from(ceil_div(n, NANO)).map_err(|_| bad(q, field))
}

/// `MilliValue()`: thousandths, rounded up.
pub fn milli(q: &Quantity, field: &str) -> Result<i64> {
    let n = parse_nano(&q.0).ok_or_else(|| bad(q, field))?;
    i64::try_from(ceil_div(n, 1_000_000)).map_err(|_| bad(q, field))
}

fn bad(q: &Quantity, field: &str) -> ConfigError {
    ConfigError::Quantity {
        field: field.to_string(),
        value: q.0.clone(),
    }
}

/// Which side of `resources` to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Requests,
    Limits,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Requests => "requests",
            Side::Limits => "limits",
        }
    }
}

/// The raw quantity of `resource` on one side of the container's resources. A limit without
/// a request counts as the request (the API server's defaulting).
pub fn get<'a>(c: &'a Container, side: Side, resource: &str) -> Option<&'a Quantity> {
    lookup(c, side, resource).map(|(_, q)| q)
}

/// Like [`get`], also saying which side the value came from (for error messages).
fn lookup<'a>(c: &'a Container, side: Side, resource: &str) -> Option<(Side, &'a Quantity)> {
    let r = c.resources.as_ref()?;
    let from = |m: &'a Option<std::collections::BTreeMap<String, Quantity>>| {
        m.as_ref().and_then(|m| m.get(resource))
    };
    let limit = || from(&r.limits).map(|q| (Side::Limits, q));
    match side {
        Side::Limits => limit(),
        Side::Requests => from(&r.requests)
            .map(|q| (Side::Requests, q))
            .or_else(limit),
    }
}

/// CPU in millicores (`None` when unset).
pub fn cpu_milli(c: &Container, side: Side) -> Result<Option<i64>> {
    lookup(c, side, "cpu")
        .map(|(s, q)| milli(q, &field(c, s, "cpu")))
        .transpose()
}

/// Memory (or any other whole-unit resource) in bytes (`None` when unset).
pub fn bytes(c: &Container, side: Side, resource: &str) -> Result<Option<i64>> {
    lookup(c, side, resource)
        .map(|(s, q)| value(q, &field(c, s, resource)))
        .transpose()
}

fn field(c: &Container, side: Side, resource: &str) -> String {
    format!(
        "container {:?} resources.{}.{resource}",
        c.name,
        side.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_and_round_up() {
        let cases: &[(&str, Option<i64>, Option<i64>)] = &[
            ("1", Some(1), Some(1000)),
            ("500m", Some(1), Some(500)),
            ("0.5", Some(1), Some(500)),
            ("1.5Gi", Some(1610612736), Some(1610612736000)),
            ("128Mi", Some(134217728), Some(134217728000)),
            ("1k", Some(1000), Some(1_000_000)),
            ("2e3", Some(2000), Some(2_000_000)),
            ("1E", Some(1_000_000_000_000_000_000), None),
            ("100n", Some(1), Some(1)),
            ("0", Some(0), Some(0)),
            ("abc", None, None),
            ("1Xi", None, None),
            ("", None, None),
            ("1.2.3", None, None),
        ];
        for (s, v, m) in cases {
            let q = Quantity(s.to_string());
            assert_eq!(value(&q, "f").ok(), *v, "value({s})");
            assert_eq!(milli(&q, "f").ok(), *m, "milli({s})");
        }
        let e = value(&Quantity("zz".into()), "resources.limits.memory").expect_err("bad");
        assert!(e.to_string().contains("resources.limits.memory"), "{e}");
    }
}
