//! `IpNet`: an address with a prefix length, the `"10.0.0.5/24"` strings of CNI results.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IP address plus prefix length. The address keeps its host bits (`10.0.0.5/24` is an
/// interface address, not only a network), as in the spec's `ips[].address`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Builds an `IpNet`, `None` when the prefix is longer than the address family allows.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        (prefix <= max_prefix(addr)).then_some(IpNet { addr, prefix })
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        from_u128(self.addr, to_u128(self.addr) & self.mask())
    }

    /// The last address of the network (all host bits set).
    pub fn last(&self) -> IpAddr {
        from_u128(
            self.addr,
            to_u128(self.addr) | !self.mask() & family_mask(self.addr),
        )
    }

    /// The same network with host bits cleared.
    pub fn truncated(&self) -> IpNet {
        IpNet {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && to_u128(ip) & self.mask() == to_u128(self.network())
    }

    /// True when the two networks share at least one address.
    pub fn overlaps(&self, other: &IpNet) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    fn mask(&self) -> u128 {
        let host_bits = u32::from(max_prefix(self.addr) - self.prefix);
        let ones = family_mask(self.addr);
        if host_bits >= 128 {
            0
        } else {
            (ones >> host_bits << host_bits) & ones
        }
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn family_mask(ip: IpAddr) -> u128 {
    if ip.is_ipv4() {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    }
}

/// The address as an integer (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The integer back as an address of the same family as `like`.
pub fn from_u128(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// The next address, wrapping within the family.
pub fn next_ip(ip: IpAddr) -> IpAddr {
    from_u128(ip, to_u128(ip).wrapping_add(1) & family_mask(ip))
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a string is not an `addr/prefix`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an address with a prefix length such as 10.1.0.0/16 or fd00::/64")]
pub struct ParseIpNetError(pub String);

impl FromStr for IpNet {
    type Err = ParseIpNetError;
    fn from_str(s: &str) -> Result<IpNet, ParseIpNetError> {
        let bad = || ParseIpNetError(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        IpNet::new(addr, prefix).ok_or_else(bad)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test net")
    }

    #[test]
    fn network_and_last() {
        let n = net("10.99.3.7/16");
        assert_eq!(n.network().to_string(), "10.99.0.0");
        assert_eq!(n.last().to_string(), "10.99.255.255");
        let n6 = net("fd00::5/64");
        assert_eq!(n6.network().to_string(), "fd00::");
        assert_eq!(n6.last().to_string(), "fd00::ffff:ffff:ffff:ffff");
        assert_eq!(net("0.0.0.0/0").last().to_string(), "255.255.255.255");
    }

    #[test]
    fn contains_and_overlaps() {
        assert!(net("10.0.0.0/8").contains("10.1.2.3".parse().expect("ip")));
        assert!(!net("10.0.0.0/8").contains("11.0.0.1".parse().expect("ip")));
        assert!(!net("10.0.0.0/8").contains("::1".parse().expect("ip")));
        assert!(net("10.0.0.0/8").overlaps(&net("10.5.0.0/16")));
        assert!(!net("10.0.0.0/16").overlaps(&net("10.1.0.0/16")));
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!("10.0.0.0".parse::<IpNet>().is_err());
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("x/3".parse::<IpNet>().is_err());
        assert_eq!(
            next_ip("10.0.0.255".parse().expect("ip")).to_string(),
            "10.0.1.0"
        );
    }
}
