//! host-local's address ranges: defaults and validation (the reference's `Range.Canonicalize`
//! and `RangeSet.Overlaps`), and the order in which a range set hands out addresses.

use std::net::IpAddr;

use serde::Deserialize;

use crate::spec::error::INVALID_NETWORK_CONFIG;
use crate::spec::{CniError, IpNet, from_u128, to_u128};

/// One range as configured.
#[derive(Clone, Debug, Deserialize)]
pub struct RangeConf {
    pub subnet: IpNet,
    #[serde(rename = "rangeStart", default)]
    pub range_start: Option<IpAddr>,
    #[serde(rename = "rangeEnd", default)]
    pub range_end: Option<IpAddr>,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

/// A range with every default filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

fn bad(set: usize, msg: String) -> CniError {
    CniError::new(INVALID_NETWORK_CONFIG, format!("ipam.ranges[{set}]: {msg}"))
}

impl Range {
    /// Fills the defaults: start = network+1, end = last usable (v4 skips the broadcast),
    /// gateway = network+1.
    pub fn canonical(c: &RangeConf, set: usize) -> Result<Range, CniError> {
        let subnet = c.subnet.truncated();
        let host_bits = if subnet.is_ipv4() { 32 } else { 128 } - u32::from(subnet.prefix);
        if host_bits < 2 {
            return Err(bad(
                set,
                format!("subnet {subnet} is too small to allocate from; use a /30 or larger"),
            ));
        }
        let net = to_u128(subnet.network());
        let last = to_u128(subnet.last());
        let first = net + 1;
        let last_usable = if subnet.is_ipv4() { last - 1 } else { last };
        let check = |ip: IpAddr, what: &str| {
            if subnet.contains(ip) {
                Ok(ip)
            } else {
                Err(bad(set, format!("{what} {ip} is not in subnet {subnet}")))
            }
        };
        let start = c
            .range_start
            .map(|ip| check(ip, "rangeStart"))
            .transpose()?
            .unwrap_or(from_u128(subnet.addr, first));
        let end = c
            .range_end
            .map(|ip| check(ip, "rangeEnd"))
            .transpose()?
            .unwrap_or(from_u128(subnet.addr, last_usable));
        if to_u128(start) > to_u128(end) {
            return Err(bad(
                set,
                format!("rangeStart {start} is after rangeEnd {end}"),
            ));
        }
        let gateway = match c.gateway {
            Some(g) => Some(check(g, "gateway")?),
            None => Some(from_u128(subnet.addr, first)),
        };
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4()
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    fn overlaps(&self, o: &Range) -> bool {
        self.start.is_ipv4() == o.start.is_ipv4()
            && to_u128(self.start) <= to_u128(o.end)
            && to_u128(o.start) <= to_u128(self.end)
    }
}

/// Validates the sets: each set non-empty and of one family; no two ranges anywhere overlap.
pub fn canonical_sets(sets: &[Vec<RangeConf>]) -> Result<Vec<Vec<Range>>, CniError> {
    if sets.is_empty() {
        return Err(
            CniError::new(INVALID_NETWORK_CONFIG, "ipam: no IP ranges specified")
                .with_details("set ipam.ranges, e.g. [[{\"subnet\": \"10.22.0.0/16\"}]]"),
        );
    }
    let mut out: Vec<Vec<Range>> = Vec::with_capacity(sets.len());
    for (i, set) in sets.iter().enumerate() {
        if set.is_empty() {
            return Err(bad(i, "empty range set".into()));
        }
        let ranges = set
            .iter()
            .map(|c| Range::canonical(c, i))
            .collect::<Result<Vec<_>, _>>()?;
        if ranges
            .iter()
            .any(|r| r.subnet.is_ipv4() != ranges[0].subnet.is_ipv4())
        {
            return Err(bad(
                i,
                "mixes IPv4 and IPv6 ranges; put each family in its own range set".into(),
            ));
        }
        out.push(ranges);
    }
    let all: Vec<(usize, &Range)> = out
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.iter().map(move |r| (i, r)))
        .collect();
    for (a, (ia, ra)) in all.iter().enumerate() {
        for (ib, rb) in &all[a + 1..] {
            if ra.overlaps(rb) {
                return Err(bad(
                    *ib,
                    format!(
                        "range {}-{} overlaps range {}-{} of range set {ia}; ranges must be disjoint",
                        rb.start, rb.end, ra.start, ra.end
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// Candidate addresses of a range set, starting after `last` (when it lies in the set) and
/// wrapping around once, skipping gateways: the reference's loose round robin.
pub fn candidates(
    set: &[Range],
    last: Option<IpAddr>,
) -> impl Iterator<Item = (usize, IpAddr)> + '_ {
    let (ri, from) = match last.and_then(|l| set.iter().position(|r| r.contains(l)).map(|i| (i, l)))
    {
        Some((i, l)) => (i, to_u128(l) + 1),
        None => (0, to_u128(set[0].start)),
    };
    // Walk: the rest of range ri from `from`, the other ranges in order, then range ri's head.
    let n = set.len();
    let mut segs: Vec<(usize, u128, u128)> = Vec::with_capacity(n + 1);
    let r = &set[ri];
    if from <= to_u128(r.end) {
        segs.push((ri, from.max(to_u128(r.start)), to_u128(r.end)));
    }
    for k in 1..n {
        let j = (ri + k) % n;
        segs.push((j, to_u128(set[j].start), to_u128(set[j].end)));
    }
    if from > to_u128(r.start) {
        segs.push((ri, to_u128(r.start), from.min(to_u128(r.end) + 1) - 1));
    }
    segs.into_iter()
        .flat_map(move |(j, a, b)| (a..=b).map(move |n| (j, from_u128(set[j].start, n))))
        .filter(move |(j, ip)| set[*j].gateway != Some(*ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(subnet: &str) -> RangeConf {
        RangeConf {
            subnet: subnet.parse().expect("net"),
            range_start: None,
            range_end: None,
            gateway: None,
        }
    }

    #[test]
    fn defaults() {
        let r = Range::canonical(&rc("10.1.2.0/24"), 0).expect("ok");
        assert_eq!(
            (r.start.to_string(), r.end.to_string()),
            ("10.1.2.1".into(), "10.1.2.254".into())
        );
        assert_eq!(r.gateway.map(|g| g.to_string()), Some("10.1.2.1".into()));
        let r6 = Range::canonical(&rc("fd00::/120"), 0).expect("ok");
        assert_eq!(r6.end.to_string(), "fd00::ff");
        assert!(Range::canonical(&rc("10.0.0.0/31"), 0).is_err());
    }

    #[test]
    fn overlap_is_config_error() {
        let e = canonical_sets(&[vec![rc("10.0.0.0/16")], vec![rc("10.0.5.0/24")]])
            .expect_err("overlap");
        assert_eq!(e.code, 7);
        assert!(
            canonical_sets(&[
                vec![rc("10.0.0.0/24"), rc("10.0.1.0/24")],
                vec![rc("fd00::/64")]
            ])
            .is_ok()
        );
        assert_eq!(
            canonical_sets(&[vec![rc("10.0.0.0/24"), rc("fd00::/64")]])
                .expect_err("mixed")
                .code,
            7
        );
    }

    #[test]
    fn round_robin_order() {
        let set = vec![Range::canonical(&rc("10.0.0.0/29"), 0).expect("ok")];
        let all: Vec<String> = candidates(&set, None)
            .map(|(_, ip)| ip.to_string())
            .collect();
        assert_eq!(
            all,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        let after: Vec<String> = candidates(&set, "10.0.0.4".parse().ok())
            .map(|(_, ip)| ip.to_string())
            .collect();
        assert_eq!(
            after,
            ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
        );
        let two = vec![
            Range::canonical(&rc("10.0.0.0/30"), 0).expect("ok"),
            Range::canonical(&rc("10.0.1.0/30"), 0).expect("ok"),
        ];
        let order: Vec<String> = candidates(&two, "10.0.0.2".parse().ok())
            .map(|(_, ip)| ip.to_string())
            .collect();
        assert_eq!(order, ["10.0.1.2", "10.0.0.2"]);
    }
}
