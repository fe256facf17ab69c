//! keel-bridge against the real kernel: lifecycle and idempotent DEL, CHECK finding damage,
//! rollback of a failed ADD, traffic between pods and through masquerade, dual
//! stack, and 50 concurrent ADDs. Everything runs inside `kcni-` namespaces.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Ns, World, must};
use serde_json::json;

#[test]
fn add_check_del_and_del_again() {
    let w = World::new("life");
    let pod = Ns::new("life-p");
    let c = w.conf("life", "10.70.0.0/16", json!({"hairpinMode": true}));
    let r = w
        .run("keel-bridge", "ADD", "life1", &pod.path(), &c)
        .expect_ok("ADD");
    let ip = r.ip(0);
    assert_eq!(pod.addrs("eth0"), [format!("{ip}/16")]);
    assert!(w.host.addrs("kbr0").contains(&"10.70.0.1/16".to_string()));
    let host_veth = r.json["interfaces"][1]["name"]
        .as_str()
        .expect("host veth")
        .to_string();
    assert!(w.host.has_link(&host_veth));
    let routes = pod.ip_json(&["route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "10.70.0.1", "{routes}");
    assert_eq!(w.reserved("life"), std::slice::from_ref(&ip));
    let prev = World::with_prev(&c, &r);
    w.run("keel-bridge", "CHECK", "life1", &pod.path(), &prev)
        .expect_ok("CHECK");
    // A second ADD of the same attachment is refused and changes nothing.
    w.run("keel-bridge", "ADD", "life1", &pod.path(), &c)
        .expect_code(101, "second ADD");
    assert_eq!(w.reserved("life"), [ip]);
    w.run("keel-bridge", "DEL", "life1", &pod.path(), &prev)
        .expect_ok("DEL");
    assert!(!w.host.has_link(&host_veth) && !pod.has_link("eth0"));
    assert!(w.reserved("life").is_empty());
    w.run("keel-bridge", "DEL", "life1", &pod.path(), &prev)
        .expect_ok("DEL again");
    w.run("keel-bridge", "DEL", "life1", &pod.path(), &c)
        .expect_ok("DEL without prevResult");
    w.run("keel-bridge", "DEL", "life1", "", &c)
        .expect_ok("DEL without netns");
    w.run("keel-bridge", "DEL", "never-added", &pod.path(), &c)
        .expect_ok("DEL of an unknown id");
    w.run("keel-bridge", "CHECK", "life1", &pod.path(), &prev)
        .expect_code(104, "CHECK after DEL");
}

#[test]
fn del_after_the_netns_is_gone_cleans_ipam_and_masquerade() {
    let w = World::new("gone");
    let pod = Ns::new("gone-p");
    let c = w.conf("gone", "10.71.0.0/16", json!({"ipMasq": true}));
    let r = w
        .run("keel-bridge", "ADD", "gone1", &pod.path(), &c)
        .expect_ok("ADD");
    assert_eq!(w.host.cni_nat_rules().len(), 4);
    let path = pod.path();
    drop(pod);
    w.run(
        "keel-bridge",
        "DEL",
        "gone1",
        &path,
        &World::with_prev(&c, &r),
    )
    .expect_ok("DEL after netns deletion");
    assert!(w.reserved("gone").is_empty(), "address leaked");
    assert!(
        w.host.cni_nat_rules().is_empty(),
        "masquerade rules leaked: {:?}",
        w.host.cni_nat_rules()
    );
    assert_eq!(
        w.host.links().len(),
        2,
        "expected lo and the bridge: {:?}",
        w.host.links()
    );
    // Rules flushed behind our back while the interface still exists (the reference's B11).
    let pod = Ns::new("gone-q");
    let r = w
        .run("keel-bridge", "ADD", "gone2", &pod.path(), &c)
        .expect_ok("ADD");
    must(&[
        "ip",
        "netns",
        "exec",
        &w.host.name,
        "iptables",
        "-t",
        "nat",
        "-F",
        "POSTROUTING",
    ]);
    w.run(
        "keel-bridge",
        "DEL",
        "gone2",
        &pod.path(),
        &World::with_prev(&c, &r),
    )
    .expect_ok("DEL after nat flush");
    assert!(
        w.host.cni_nat_rules().is_empty(),
        "{:?}",
        w.host.cni_nat_rules()
    );
    w.run(
        "keel-bridge",
        "DEL",
        "gone2",
        &pod.path(),
        &World::with_prev(&c, &r),
    )
    .expect_ok("DEL again");
}

#[test]
fn failed_add_after_ipam_leaves_nothing() {
    let w = World::new("roll");
    let pod = Ns::new("roll-p");
    let c = w.conf("roll", "10.72.0.0/16", json!({"ipMasq": true}));
    // The bridge exists with an overlapping address: the gateway step fails late, after
    // IPAM, the veth and the pod addresses were already set up.
    must(&[
        "ip",
        "-n",
        &w.host.name,
        "link",
        "add",
        "kbr0",
        "type",
        "bridge",
    ]);
    must(&[
        "ip",
        "-n",
        &w.host.name,
        "addr",
        "add",
        "10.72.9.9/16",
        "dev",
        "kbr0",
    ]);
    let r = w
        .run("keel-bridge", "ADD", "roll1", &pod.path(), &c)
        .expect_code(7, "ADD with a conflicting bridge address");
    assert!(
        r.json["msg"]
            .as_str()
            .unwrap_or("")
            .contains("forceAddress")
            || r.json["details"]
                .as_str()
                .unwrap_or("")
                .contains("forceAddress")
    );
    assert_eq!(pod.links(), ["lo"], "failed ADD left the pod interface");
    assert_eq!(w.host.links(), ["lo", "kbr0"], "failed ADD left a veth");
    assert!(
        w.reserved("roll").is_empty(),
        "failed ADD left a reservation"
    );
    assert!(w.host.cni_nat_rules().is_empty());
    w.run("keel-bridge", "DEL", "roll1", &pod.path(), &c)
        .expect_ok("DEL after failed ADD");
    // forceAddress replaces the conflicting address.
    let force = w.conf("roll", "10.72.0.0/16", json!({"forceAddress": true}));
    w.run("keel-bridge", "ADD", "roll1", &pod.path(), &force)
        .expect_ok("ADD with forceAddress");
    assert_eq!(w.host.addrs("kbr0"), ["10.72.0.1/16"]);
}

#[test]
fn check_reports_missing_address_route_interface() {
    let w = World::new("chk");
    let pod = Ns::new("chk-p");
    let c = w.conf("chk", "10.73.0.0/16", json!({}));
    let r = w
        .run("keel-bridge", "ADD", "chk1", &pod.path(), &c)
        .expect_ok("ADD");
    let prev = World::with_prev(&c, &r);
    let check = |what: &str| {
        w.run("keel-bridge", "CHECK", "chk1", &pod.path(), &prev)
            .expect_code(104, what)
    };
    must(&["ip", "-n", &pod.name, "route", "del", "default"]);
    let e = check("CHECK without the default route");
    assert!(
        e.json["msg"].as_str().unwrap_or("").contains("route"),
        "{}",
        e.stdout
    );
    let ip = format!("{}/16", r.ip(0));
    must(&["ip", "-n", &pod.name, "addr", "del", &ip, "dev", "eth0"]);
    let e = check("CHECK without the address");
    assert!(
        e.json["msg"].as_str().unwrap_or("").contains("address"),
        "{}",
        e.stdout
    );
    must(&["ip", "-n", &pod.name, "link", "del", "eth0"]);
    let e = check("CHECK without the interface");
    assert!(
        e.json["msg"]
            .as_str()
            .unwrap_or("")
            .contains("interface eth0"),
        "{}",
        e.stdout
    );
    w.run("keel-bridge", "DEL", "chk1", &pod.path(), &prev)
        .expect_ok("DEL");
}

#[test]
fn pods_reach_each_other_the_gateway_and_outside_through_masquerade() {
    let w = World::new("net");
    let (a, b) = (Ns::new("net-a"), Ns::new("net-b"));
    let outside = Ns::new("net-o");
    // The "outside" network: a veth from the host namespace; outside has no route back to
    // the pod subnet, so only masqueraded traffic gets answers.
    must(&[
        "ip",
        "-n",
        &w.host.name,
        "link",
        "add",
        "kup",
        "type",
        "veth",
        "peer",
        "name",
        "kdown",
        "netns",
        &outside.name,
    ]);
    must(&[
        "ip",
        "-n",
        &w.host.name,
        "addr",
        "add",
        "192.168.250.1/24",
        "dev",
        "kup",
    ]);
    must(&["ip", "-n", &w.host.name, "link", "set", "kup", "up"]);
    must(&[
        "ip",
        "-n",
        &outside.name,
        "addr",
        "add",
        "192.168.250.2/24",
        "dev",
        "kdown",
    ]);
    must(&["ip", "-n", &outside.name, "link", "set", "kdown", "up"]);
    let c = w.conf("net", "10.74.0.0/16", json!({"ipMasq": true}));
    let ra = w
        .run("keel-bridge", "ADD", "neta", &a.path(), &c)
        .expect_ok("ADD a");
    let rb = w
        .run("keel-bridge", "ADD", "netb", &b.path(), &c)
        .expect_ok("ADD b");
    let t = Duration::from_secs(5);
    assert!(a.can_ping(&rb.ip(0), t), "pod a cannot reach pod b");
    assert!(b.can_ping(&ra.ip(0), t), "pod b cannot reach pod a");
    assert!(a.can_ping("10.74.0.1", t), "pod a cannot reach the gateway");
    assert!(
        a.can_ping("192.168.250.2", t),
        "pod a cannot reach outside through masquerade"
    );
    assert_eq!(w.host.cni_nat_rules().len(), 8);
    // Without masquerade the outside cannot answer: the control that makes the above mean
    // something.
    let plain = w.conf("plain", "10.75.0.0/16", json!({"bridge": "kbr1"}));
    let p = Ns::new("net-p");
    w.run("keel-bridge", "ADD", "netp", &p.path(), &plain)
        .expect_ok("ADD plain");
    assert!(p.can_ping("10.75.0.1", t));
    assert!(
        !p.exec(&["ping", "-c", "1", "-W", "1", "192.168.250.2"])
            .status
            .success(),
        "reached outside without masquerade"
    );
    w.run(
        "keel-bridge",
        "DEL",
        "neta",
        &a.path(),
        &World::with_prev(&c, &ra),
    )
    .expect_ok("DEL a");
    w.run(
        "keel-bridge",
        "DEL",
        "netb",
        &b.path(),
        &World::with_prev(&c, &rb),
    )
    .expect_ok("DEL b");
    assert!(
        w.host.cni_nat_rules().is_empty(),
        "rules left after DEL: {:?}",
        w.host.cni_nat_rules()
    );
}

#[test]
fn dual_stack_pods_talk_over_ipv4_and_ipv6() {
    let w = World::new("v6");
    let (a, b) = (Ns::new("v6-a"), Ns::new("v6-b"));
    let c = w.conf(
        "v6",
        "10.78.0.0/16",
        json!({"ipMasq": true, "ipam": {"ranges": [[{"subnet": "10.78.0.0/16"}], [{"subnet": "fd78::/64"}]],
                        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}}),
    );
    let ra = w
        .run("keel-bridge", "ADD", "v6a", &a.path(), &c)
        .expect_ok("ADD a");
    let rb = w
        .run("keel-bridge", "ADD", "v6b", &b.path(), &c)
        .expect_ok("ADD b");
    assert!(ra.ip(1).starts_with("fd78::"), "{}", ra.stdout);
    let t = Duration::from_secs(5);
    assert!(a.can_ping(&rb.ip(1), t), "no IPv6 between pods");
    assert!(a.can_ping("fd78::1", t), "no IPv6 to the gateway");
    assert!(a.can_ping(&rb.ip(0), t), "no IPv4 between pods");
    w.run(
        "keel-bridge",
        "CHECK",
        "v6a",
        &a.path(),
        &World::with_prev(&c, &ra),
    )
    .expect_ok("CHECK");
    let v6_rules = |ns: &Ns| {
        let o = ns.exec(&["ip6tables", "-t", "nat", "-S"]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains("CNI-"))
            .count()
    };
    assert_eq!(v6_rules(&w.host), 8, "IPv6 masquerade chains for both pods");
    assert_eq!(
        w.host.cni_nat_rules().len(),
        8,
        "IPv4 masquerade chains for both pods"
    );
    w.run(
        "keel-bridge",
        "DEL",
        "v6a",
        &a.path(),
        &World::with_prev(&c, &ra),
    )
    .expect_ok("DEL");
    assert_eq!(w.reserved("v6").len(), 2);
    assert_eq!(v6_rules(&w.host), 4, "DEL removed a's IPv6 chain only");
    w.run("keel-bridge", "DEL", "v6b", &b.path(), &c)
        .expect_ok("DEL without prevResult");
    assert_eq!(
        v6_rules(&w.host),
        0,
        "DEL without prevResult found the IPv6 chain"
    );
    assert!(w.host.cni_nat_rules().is_empty());
}

#[test]
fn fifty_concurrent_adds_get_distinct_addresses() {
    let w = World::new("many");
    let pods: Vec<Ns> = (0..50).map(|i| Ns::new(&format!("many{i}"))).collect();
    let c = w.conf("many", "10.79.0.0/24", json!({}));
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (w, c) = (&w, &c);
                s.spawn(move || w.run("keel-bridge", "ADD", &format!("many{i}"), &p.path(), c))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut ips = HashSet::new();
    for r in &results {
        assert!(r.ok, "concurrent ADD failed: {} {}", r.stdout, r.stderr);
        assert!(ips.insert(r.ip(0)), "address {} handed out twice", r.ip(0));
    }
    assert_eq!(w.reserved("many").len(), 50);
    std::thread::scope(|s| {
        for (i, p) in pods.iter().enumerate() {
            let (w, c) = (&w, &c);
            s.spawn(move || {
                w.run("keel-bridge", "DEL", &format!("many{i}"), &p.path(), c)
                    .expect_ok("DEL")
            });
        }
    });
    assert!(w.reserved("many").is_empty());
    assert_eq!(w.host.links(), ["lo", "kbr0"]);
}

#[test]
fn failed_add_removes_the_bridge_it_created() {
    let w = World::new("rb");
    let pod = Ns::new("rb-p");
    // The gateway of this route is not on-link: adding it in the pod fails after the bridge,
    // the veth and the addresses exist.
    let c = w.conf(
        "rb",
        "10.81.0.0/16",
        json!({"ipam": {"routes": [{"dst": "192.168.5.0/24", "gw": "10.200.0.1"}]}}),
    );
    let r = w.run("keel-bridge", "ADD", "rb1", &pod.path(), &c);
    let r = r.expect_code(102, "ADD with an unreachable route gateway");
    assert!(
        r.json["msg"]
            .as_str()
            .unwrap_or("")
            .contains("192.168.5.0/24"),
        "{}",
        r.stdout
    );
    assert_eq!(
        w.host.links(),
        ["lo"],
        "failed ADD left the bridge or a veth"
    );
    assert_eq!(pod.links(), ["lo"]);
    assert!(w.reserved("rb").is_empty());
}
