//! Masquerade for pod traffic leaving the cluster: one nftables table per family,
//! `ip keel-nat` (and `ip6 keel-nat` for an IPv6 cluster CIDR), replaced atomically with
//! `nft -f` (add table, delete table, define it, all in one transaction). keel-proxy owns table
//! `ip keel`; the two never touch each other's tables. Like kube-proxy's KUBE-POSTROUTING
//! `--random-fully`, source ports are fully randomised. Also turns on forwarding.

use keel_cni::spec::IpNet;

use super::{Error, run_program};

/// Name of the tables (family `ip` and `ip6`).
pub const NAT_TABLE: &str = "keel-nat";

/// The nft script for `cidrs`: pod sources inside a cluster CIDR going to a destination
/// outside all of them (and not multicast) are masqueraded. Families without a CIDR get
/// their table removed.
pub fn render_masquerade(cidrs: &[IpNet]) -> String {
    let mut s = String::new();
    for (fam, v4) in [("ip", true), ("ip6", false)] {
        s += &format!("table {fam} {NAT_TABLE}\ndelete table {fam} {NAT_TABLE}\n");
        let mine: Vec<String> = cidrs
            .iter()
            .filter(|c| c.is_ipv4() == v4)
            .map(|c| c.truncated().to_string())
            .collect();
        if mine.is_empty() {
            continue;
        }
        let set = format!("{{ {} }}", mine.join(", "));
        let multicast = if v4 { "224.0.0.0/4" } else { "ff00::/8" };
        s += &format!(
            "table {fam} {NAT_TABLE} {{\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\t{fam} saddr {set} {fam} daddr != {set} {fam} daddr != {multicast} masquerade fully-random\n\
             \t}}\n\
             }}\n"
        );
    }
    s
}

/// Applies the masquerade tables and enables forwarding for the families in `cidrs`.
pub async fn masquerade(cidrs: &[IpNet]) -> Result<(), Error> {
    for (path, v4) in [
        ("/proc/sys/net/ipv4/ip_forward", true),
        ("/proc/sys/net/ipv6/conf/all/forwarding", false),
    ] {
        if cidrs.iter().any(|c| c.is_ipv4() == v4) {
            tokio::fs::write(path, b"1")
                .await
                .map_err(|source| Error::Forwarding { path, source })?;
        }
    }
    run_program(
        "nft",
        "nftables",
        &["-f", "-"],
        Some(&render_masquerade(cidrs)),
    )
    .await
    .map(drop)
}

/// Removes both tables (absent tables are fine).
pub async fn remove() -> Result<(), Error> {
    run_program(
        "nft",
        "nftables",
        &["-f", "-"],
        Some(&render_masquerade(&[])),
    )
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script() {
        let v4: IpNet = "10.244.0.0/16".parse().expect("cidr");
        let s = render_masquerade(&[v4]);
        assert!(
            s.starts_with("table ip keel-nat\ndelete table ip keel-nat\ntable ip keel-nat {"),
            "{s}"
        );
        assert!(s.contains("ip saddr { 10.244.0.0/16 } ip daddr != { 10.244.0.0/16 } ip daddr != 224.0.0.0/4 masquerade fully-random"), "{s}");
        assert!(
            s.ends_with("table ip6 keel-nat\ndelete table ip6 keel-nat\n"),
            "{s}"
        );
        let none = render_masquerade(&[]);
        assert!(!none.contains('{'), "{none}");
    }
}
