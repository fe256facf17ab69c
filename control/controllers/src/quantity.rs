//! Resource quantities as the API writes them (`100m`, `1.5`, `128Mi`, `1G`, `1e3`), parsed to
//! the integer units the scheduler adds up: millicores for cpu, bytes (or counts) for the rest.
//! Suffixes follow k8s.io/apimachinery/pkg/api/resource (binary Ki..Ei, decimal n u m k M G T P E).

/// Parses a quantity to its value in base units (cores, bytes, counts) as f64.
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let value: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0f64.powi(2),
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(value * mult)
}

/// Millicores of a cpu quantity (rounded up, like `MilliValue`).
pub fn milli(q: &str) -> Option<i64> {
    parse(q).map(|v| (v * 1000.0 - 1e-6).ceil() as i64)
}

/// The integer value of a quantity (rounded up, like `Value`).
pub fn value(q: &str) -> Option<i64> {
    parse(q).map(|v| (v - 1e-9).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_api_forms() {
        let cases: &[(&str, Option<i64>, Option<i64>)] = &[
            ("100m", Some(100), Some(1)),
            ("1", Some(1000), Some(1)),
            ("1.5", Some(1500), Some(2)),
            ("2", Some(2000), Some(2)),
            ("128Mi", Some(134_217_728_000), Some(134_217_728)),
            ("1Gi", Some(1_073_741_824_000), Some(1_073_741_824)),
            ("1G", Some(1_000_000_000_000), Some(1_000_000_000)),
            ("1e3", Some(1_000_000), Some(1000)),
            ("250u", Some(1), Some(1)),
            ("", None, None),
            ("abc", None, None),
            ("1Xi", None, None),
        ];
        for (q, m, v) in cases {
            assert_eq!(milli(q), *m, "milli({q})");
            assert_eq!(value(q), *v, "value({q})");
        }
    }
}
