//! Turns a [`Ruleset`] into `nft -f` input: a full replacement of the table, or the
//! difference between the last applied ruleset and a new one.
//!
//! A full sync is one transaction `add table; delete table; <everything>`, so the table is
//! replaced atomically (conntrack entries and their NAT bindings survive). An incremental
//! sync touches only chains whose rules changed and elements that were added, removed or
//! changed; it never lists the kernel's table, which is what makes kube-proxy's nftables
//! mode pay ~240 ms per change at 10,000 services (network.md 2.5).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::ruleset::{LOCAL_MASQ, MASQ_MARK, Ruleset};

/// The table every Keel proxy rule lives in.
pub const TABLE: &str = "ip keel";

/// Declarations and rules that do not depend on services.
fn static_part(out: &mut String) {
    let t = TABLE;
    let m = MASQ_MARK;
    let decl = [
        // Base chains. nat at dstnat/srcnat; the filter hooks run the no-endpoint checks.
        format!("add chain {t} nat-prerouting {{ type nat hook prerouting priority dstnat ; }}"),
        format!("add chain {t} nat-output {{ type nat hook output priority -100 ; }}"),
        format!("add chain {t} nat-postrouting {{ type nat hook postrouting priority srcnat ; }}"),
        format!("add chain {t} filter-input {{ type filter hook input priority -10 ; }}"),
        format!("add chain {t} filter-forward {{ type filter hook forward priority -10 ; }}"),
        format!("add chain {t} filter-output {{ type filter hook output priority -10 ; }}"),
        format!("add chain {t} services"),
        format!("add chain {t} masquerading"),
        format!("add chain {t} endpoints-check"),
        format!(
            "add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}"
        ),
        format!("add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; }}"),
        format!(
            "add map {t} backends {{ typeof ip daddr . meta l4proto . th dport . numgen random mod 2 : ip daddr . th dport ; }}"
        ),
        format!(
            "add map {t} nodeport-backends {{ typeof meta l4proto . th dport . numgen random mod 2 : ip daddr . th dport ; }}"
        ),
        format!("add set {t} local-endpoints {{ type ipv4_addr ; }}"),
        format!("add chain {t} {LOCAL_MASQ}"),
        format!("add set {t} node-ips {{ type ipv4_addr ; }}"),
        format!("add set {t} no-endpoints {{ type ipv4_addr . inet_proto . inet_service ; }}"),
        format!(
            "add set {t} no-local-endpoints {{ type ipv4_addr . inet_proto . inet_service ; }}"
        ),
        format!("add set {t} no-endpoint-nodeports {{ type inet_proto . inet_service ; }}"),
        format!("add set {t} no-local-endpoint-nodeports {{ type inet_proto . inet_service ; }}"),
        format!("add rule {t} nat-prerouting jump services"),
        format!("add rule {t} nat-output jump services"),
        format!("add rule {t} nat-postrouting jump masquerading"),
        format!("add rule {t} filter-input ct state new jump endpoints-check"),
        format!("add rule {t} filter-forward ct state new jump endpoints-check"),
        format!("add rule {t} filter-output ct state new jump endpoints-check"),
        format!("add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips"),
        format!(
            "add rule {t} services ip daddr @node-ips meta l4proto . th dport vmap @service-nodeports"
        ),
        // Pod -> service -> endpoint on this node, hairpin included (ruleset.rs).
        format!("add rule {t} masquerading jump {LOCAL_MASQ}"),
        format!("add rule {t} masquerading meta mark & {m:#x} == 0 return"),
        format!(
            "add rule {t} masquerading meta mark set meta mark & {:#x}",
            !m
        ),
        format!("add rule {t} masquerading masquerade fully-random"),
        format!(
            "add rule {t} endpoints-check ip daddr . meta l4proto . th dport @no-endpoints reject"
        ),
        format!(
            "add rule {t} endpoints-check ip daddr . meta l4proto . th dport @no-local-endpoints drop"
        ),
        format!(
            "add rule {t} endpoints-check ip daddr @node-ips meta l4proto . th dport @no-endpoint-nodeports reject"
        ),
        format!(
            "add rule {t} endpoints-check ip daddr @node-ips meta l4proto . th dport @no-local-endpoint-nodeports drop"
        ),
    ];
    for d in decl {
        out.push_str(&d);
        out.push('\n');
    }
}

fn affinity_set(out: &mut String, name: &str, timeout: u32) {
    let _ = writeln!(
        out,
        "add set {TABLE} {name} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ; }}"
    );
}

fn chain_rules(out: &mut String, name: &str, rules: &[String]) {
    for r in rules {
        let _ = writeln!(out, "add rule {TABLE} {name} {r}");
    }
}

fn elements<'a>(
    out: &mut String,
    verb: &str,
    set: &str,
    items: impl Iterator<Item = (&'a str, &'a str)>,
) {
    let mut first = true;
    for (k, v) in items {
        if first {
            let _ = write!(out, "{verb} element {TABLE} {set} {{ ");
            first = false;
        } else {
            out.push_str(", ");
        }
        out.push_str(k);
        if !v.is_empty() && verb == "add" {
            out.push_str(" : ");
            out.push_str(v);
        }
    }
    if !first {
        out.push_str(" }\n");
    }
}

/// Borrowed pieces of a whole table: what [`full_parts`] renders. The proxier builds it from
/// its merged view without copying 10,000 services' elements into a [`Ruleset`] first.
#[derive(Default)]
pub struct Parts<'a> {
    pub affinity_sets: Vec<(&'a str, u32)>,
    pub chains: Vec<(&'a str, &'a [String])>,
    /// Elements per set or map: (key, value) with "" for plain sets; any order.
    pub elements: BTreeMap<&'static str, Vec<(&'a str, &'a str)>>,
}

/// The whole table, replacing whatever is there.
pub fn full(rs: &Ruleset) -> String {
    let parts = Parts {
        affinity_sets: rs
            .affinity_sets
            .iter()
            .map(|(n, t)| (n.as_str(), *t))
            .collect(),
        chains: rs
            .chains
            .iter()
            .map(|(n, r)| (n.as_str(), r.as_slice()))
            .collect(),
        elements: rs
            .elements
            .iter()
            .map(|(set, items)| {
                let v = items
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                (*set, v)
            })
            .collect(),
    };
    full_parts(&parts)
}

/// The whole table from borrowed parts (see [`full`]).
pub fn full_parts(p: &Parts) -> String {
    let n: usize = p.elements.values().map(Vec::len).sum();
    let mut out = String::with_capacity(64 * 1024 + 48 * n);
    let _ = writeln!(
        out,
        "add table {TABLE}\ndelete table {TABLE}\nadd table {TABLE}"
    );
    for (name, timeout) in &p.affinity_sets {
        affinity_set(&mut out, name, *timeout);
    }
    static_part(&mut out);
    // Every chain is declared before any rule, so rules may jump in any order.
    for (name, _) in &p.chains {
        let _ = writeln!(out, "add chain {TABLE} {name}");
    }
    for (name, rules) in &p.chains {
        chain_rules(&mut out, name, rules);
    }
    for (set, items) in &p.elements {
        elements(&mut out, "add", set, items.iter().copied());
    }
    out
}

/// The commands that turn `old` into `new`; empty when nothing changed. `None` when the
/// change adds or rewrites rules: nft 1.0.6 cannot check a new rule against a `typeof` map
/// that it only knows from the kernel ("conflicting protocols specified: ip vs. th"), so
/// such a change needs a full sync. The shared chains for 1..=16 endpoints always exist
/// (see `ruleset::PRECREATED`), so in practice only affinity services hit this.
pub fn diff(old: &Ruleset, new: &Ruleset) -> Option<String> {
    let rules_change = new.chains.iter().any(|(n, r)| old.chains.get(n) != Some(r));
    if rules_change {
        return None;
    }
    let mut out = String::new();
    diff_body(old, new, &mut out);
    Some(out)
}

fn diff_body(old: &Ruleset, new: &Ruleset, out: &mut String) {
    for (name, timeout) in &new.affinity_sets {
        if old.affinity_sets.get(name) != Some(timeout) {
            if old.affinity_sets.contains_key(name) {
                // A changed timeout: a set's timeout cannot be altered in place.
                let _ = writeln!(out, "delete set {TABLE} {name}");
            }
            affinity_set(out, name, *timeout);
        }
    }
    for name in new.chains.keys().filter(|n| !old.chains.contains_key(*n)) {
        let _ = writeln!(out, "add chain {TABLE} {name}");
    }
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            Some(r) if r == rules => {}
            Some(_) => {
                let _ = writeln!(out, "flush chain {TABLE} {name}");
                chain_rules(out, name, rules);
            }
            None => chain_rules(out, name, rules),
        }
    }
    let empty = BTreeMap::new();
    for (set, new_items) in &new.elements {
        let old_items = old.elements.get(set).unwrap_or(&empty);
        // Changed values are deleted and added again in the same transaction.
        elements(
            out,
            "delete",
            set,
            str_pairs(old_items).filter(|(k, v)| new_items.get(*k).map(String::as_str) != Some(*v)),
        );
        elements(
            out,
            "add",
            set,
            str_pairs(new_items).filter(|(k, v)| old_items.get(*k).map(String::as_str) != Some(*v)),
        );
    }
    // Chains and sets go last, after the elements and rules that referred to them.
    // All flushed before any is deleted: a removed chain may jump to another removed one.
    let removed: Vec<&String> = old
        .chains
        .keys()
        .filter(|n| !new.chains.contains_key(*n))
        .collect();
    for name in &removed {
        let _ = writeln!(out, "flush chain {TABLE} {name}");
    }
    for name in &removed {
        let _ = writeln!(out, "delete chain {TABLE} {name}");
    }
    for name in old
        .affinity_sets
        .keys()
        .filter(|n| !new.affinity_sets.contains_key(*n))
    {
        let _ = writeln!(out, "delete set {TABLE} {name}");
    }
}

fn str_pairs(m: &BTreeMap<String, String>) -> impl Iterator<Item = (&str, &str)> {
    m.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}

/// An elements-only incremental change: deletions, additions, then removed chains and sets.
pub fn elements_change(
    del: &BTreeMap<&'static str, BTreeMap<String, String>>,
    add: &BTreeMap<&'static str, BTreeMap<String, String>>,
    chains: &[String],
    sets: &[String],
) -> String {
    let mut out = String::new();
    for (set, items) in del {
        elements(&mut out, "delete", set, str_pairs(items));
    }
    for (set, items) in add {
        elements(&mut out, "add", set, str_pairs(items));
    }
    for name in chains {
        let _ = writeln!(out, "flush chain {TABLE} {name}");
    }
    for name in chains {
        let _ = writeln!(out, "delete chain {TABLE} {name}");
    }
    for name in sets {
        let _ = writeln!(out, "delete set {TABLE} {name}");
    }
    out
}
