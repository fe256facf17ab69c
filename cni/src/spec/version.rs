//! CNI version strings: the versions our plugins speak and the comparisons the spec needs.

/// Versions accepted in `cniVersion` and announced by VERSION.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version we speak; used when the input names none.
pub const CURRENT: &str = "1.1.0";

/// `major.minor.patch` as numbers, `None` when the string is not a version.
pub fn parse(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let t = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(t)
}

/// True when `v` is a version and at least `min`.
pub fn at_least(v: &str, min: &str) -> bool {
    matches!((parse(v), parse(min)), (Some(a), Some(b)) if a >= b)
}

pub fn is_supported(v: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&v)
}

/// Version negotiation (SPEC.md section 3): the highest version both the configuration
/// (`cniVersion` plus 1.1's `cniVersions`) and the plugin (its VERSION reply) support.
pub fn negotiate(config: &[&str], plugin: &[&str]) -> Option<String> {
    config
        .iter()
        .filter(|v| plugin.contains(v))
        .filter_map(|v| parse(v).map(|p| (p, *v)))
        .max()
        .map(|(_, v)| v.to_string())
}

/// The body of a VERSION reply.
pub fn version_reply(input_version: &str) -> serde_json::Value {
    let v = if input_version.is_empty() {
        CURRENT
    } else {
        input_version
    };
    serde_json::json!({ "cniVersion": v, "supportedVersions": SUPPORTED_VERSIONS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare() {
        assert!(at_least("1.1.0", "1.0.0"));
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(!at_least("x", "0.4.0"));
        assert_eq!(parse("1.2"), None);
        assert!(is_supported("0.3.1") && !is_supported("0.2.0") && !is_supported("2.0.0"));
        assert_eq!(
            negotiate(&["1.0.0", "1.1.0"], SUPPORTED_VERSIONS).as_deref(),
            Some("1.1.0")
        );
        assert_eq!(
            negotiate(&["1.1.0", "0.4.0"], &["0.4.0", "1.0.0"]).as_deref(),
            Some("0.4.0")
        );
        assert_eq!(negotiate(&["2.0.0"], SUPPORTED_VERSIONS), None);
    }
}
